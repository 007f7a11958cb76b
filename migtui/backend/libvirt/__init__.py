"""The libvirt backend: libvirt hosts (qemu:///system, qemu+ssh://, qemu+tcp://, qemu+tls://) and
every domain on them, through libvirt's job-statistics and migration API, never a domain's QMP
monitor. libvirt-python is imported only when a libvirt target is given (the `libvirt` extra)."""

from migtui.backend.libvirt.target import LibvirtTarget, is_libvirt_target, parse_libvirt_target

__all__ = ["LibvirtTarget", "is_libvirt_target", "parse_libvirt_target"]
