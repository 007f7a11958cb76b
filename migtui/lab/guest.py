"""A tiny multiboot guest that never stops dirtying its memory.

The image is assembled here by hand, so the lab needs no toolchain and no
disk image: QEMU boots it with ``-kernel``. QEMU's multiboot loader enters it
in 32-bit flat protected mode with paging and interrupts off, so the code can
touch physical memory directly, without a GDT, a stack or an IDT.

What the guest does: it loops forever, adding 1 to the first byte of every
4 KiB page from :data:`DIRTY_START` to :data:`DIRTY_END`; after the first
sweep it writes :data:`READY_MARKER` to COM1, so the lab knows it runs.

Under TCG that dirties about 100 MB/s, more than QEMU's default migration
bandwidth (128 MiB/s with a 300 ms downtime limit) can ever catch up with, so
a migration at defaults never converges: a good subject for migtui. The byte
only changes by one per sweep, which makes XBZRLE deltas tiny.

``guest_image(page_delay=N)`` is a paced variant: it spins between pages, so
(with ``-icount``, see :class:`migtui.lab.qemu.QemuVM`) it dirties at a rate
set by virtual time, slow enough for a migration that converges over passes.
"""

from __future__ import annotations

import struct
from pathlib import Path

READY_MARKER = b"MIGTUI-READY\n"
"""Written once to the serial port, after the guest's first full sweep."""

DIRTY_START = 2 * 1024 * 1024
"""First byte of the dirtied range: above the image and QEMU's multiboot info."""

DIRTY_END = 100 * 1024 * 1024
"""End (exclusive) of the dirtied range; the guest needs at least 128 MiB RAM."""

MIN_GUEST_MEM = 128 * 1024 * 1024
"""Smallest guest RAM the lab allows (covers DIRTY_END plus BIOS/ACPI at the top)."""

PAGE_SIZE = 4096

MULTIBOOT_MAGIC = 0x1BADB002
MULTIBOOT_FLAG_MEMINFO = 1 << 1  # ask for mem_lower/mem_upper (harmless, unused)
MULTIBOOT_FLAG_AOUT_KLUDGE = 1 << 16  # addresses come from the header, not ELF
MULTIBOOT_FLAGS = MULTIBOOT_FLAG_MEMINFO | MULTIBOOT_FLAG_AOUT_KLUDGE
LOAD_ADDR = 0x100000  # 1 MiB, the conventional multiboot load address
HEADER_SIZE = 8 * 4  # magic, flags, checksum + the five a.out-kludge addresses

COM1 = 0x3F8  # QEMU's 16550 accepts writes to THR without any UART setup


class _Asm:
    """Just enough of an assembler to resolve short jumps by label."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.code = bytearray()
        self._labels: dict[str, int] = {}
        self._fixups: list[tuple[int, str]] = []  # (offset of rel8 byte, label)

    def emit(self, data: bytes) -> None:
        self.code += data

    def label(self, name: str) -> None:
        self._labels[name] = len(self.code)

    def jump8(self, opcode: int, target: str) -> None:
        """A two-byte jump (``EB``/``7x`` rel8) to a label."""
        self.code += bytes([opcode, 0])
        self._fixups.append((len(self.code) - 1, target))

    def address(self) -> int:
        """Guest physical address of the next byte emitted."""
        return self.base + len(self.code)

    def finish(self) -> bytes:
        for where, target in self._fixups:
            rel = self._labels[target] - (where + 1)  # relative to the next insn
            if not -128 <= rel <= 127:
                raise ValueError(f"short jump to {target} out of range: {rel}")
            self.code[where] = rel & 0xFF
        return bytes(self.code)


def _code(entry: int, marker_addr: int, page_delay: int = 0) -> bytes:
    """Machine code for the guest, starting at guest address ``entry``."""
    a = _Asm(entry)
    a.emit(b"\xfc")  # cld: lodsb must walk forwards (DF is unspecified at entry)
    a.emit(b"\xbe" + struct.pack("<I", marker_addr))  # mov esi, marker (0 = printed)
    if page_delay:
        a.emit(b"\x31\xdb")  # xor ebx, ebx: multiboot leaves its info address there

    a.label("sweep")
    a.emit(b"\xb8" + struct.pack("<I", DIRTY_START))  # mov eax, DIRTY_START
    a.label("page")
    a.emit(b"\xfe\x00")  # inc byte [eax]: dirty this page
    if page_delay:
        # Spin between pages, so the dirty rate is set by instructions per page (and,
        # under -icount, by virtual time) rather than by how fast TCG sweeps. EBX holds
        # the count: 0 on the first sweep, so the marker comes as soon as for the stock guest.
        a.emit(b"\x89\xd9")  # mov ecx, ebx
        a.jump8(0xE3, "paced")  # jecxz paced: no spin yet (loop would wrap to 2**32)
        a.emit(b"\xe2\xfe")  # loop $: dec ecx, jump to itself until ecx is 0
        a.label("paced")
    a.emit(b"\x05" + struct.pack("<I", PAGE_SIZE))  # add eax, 4096: next page
    a.emit(b"\x3d" + struct.pack("<I", DIRTY_END))  # cmp eax, DIRTY_END
    a.jump8(0x72, "page")  # jb page (unsigned below)

    # The marker goes out after the first full sweep, not before: once the
    # lab sees it, every page of the range is non-zero, so a migration started
    # right away has ~98 MiB of real data to send and cannot finish in one
    # quick pass of zero pages.
    a.emit(b"\x85\xf6")  # test esi, esi
    a.jump8(0x74, "sweep")  # jz sweep: marker already printed
    a.emit(b"\x66\xba" + struct.pack("<H", COM1))  # mov dx, 0x3f8: COM1 data port
    a.label("print")
    a.emit(b"\xac")  # lodsb: al = [esi], esi += 1
    a.emit(b"\x84\xc0")  # test al, al: NUL ends the marker
    a.jump8(0x74, "printed")  # jz printed
    a.emit(b"\xee")  # out dx, al: send one byte to the serial port
    a.jump8(0xEB, "print")  # jmp print
    a.label("printed")
    a.emit(b"\x31\xf6")  # xor esi, esi: never print again
    if page_delay:
        a.emit(b"\xbb" + struct.pack("<I", page_delay))  # mov ebx, page_delay: pace from now on
    a.jump8(0xEB, "sweep")  # jmp sweep: dirty the range again, forever
    return a.finish()


def guest_image(page_delay: int = 0) -> bytes:
    """The whole multiboot image: header, code, then the NUL-terminated marker.

    ``page_delay``: after the first sweep, spin this many ``loop`` iterations after
    dirtying each page (0: never, the stock guest that dirties as fast as TCG runs). Each
    page then costs ``page_delay + 6`` instructions: under ``-icount shift=S,align=on`` the
    guest dirties ``1e9 / ((page_delay + 6) * 2**S)`` pages per second of real time, or
    fewer when the host cannot keep up.
    """
    if not 0 <= page_delay < 2**32:
        raise ValueError(f"page_delay must be 0 to {2**32 - 1}, not {page_delay}")
    entry = LOAD_ADDR + HEADER_SIZE
    # The code's length does not depend on the marker's address, so a first
    # pass with a dummy address tells where the marker will land.
    code_len = len(_code(entry, 0, page_delay))
    marker_addr = entry + code_len
    code = _code(entry, marker_addr, page_delay)
    body = code + READY_MARKER + b"\0"
    load_end = entry + len(body)

    checksum = (-(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)) & 0xFFFFFFFF
    header = struct.pack(
        "<8I",
        MULTIBOOT_MAGIC,
        MULTIBOOT_FLAGS,
        checksum,
        LOAD_ADDR,  # header_addr: the header sits at the very start of the image
        LOAD_ADDR,  # load_addr: load the file from its first byte
        load_end,  # load_end_addr: end of the bytes to load
        load_end,  # bss_end_addr: no bss
        entry,  # entry_addr: code right after the header
    )
    return header + body


def build_dirty_guest(path: Path, page_delay: int = 0) -> Path:
    """Write the dirtying guest to ``path`` and return it (boot with ``-kernel``)."""
    path = Path(path)
    path.write_bytes(guest_image(page_delay))
    return path
