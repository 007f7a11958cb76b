"""A minimal query-migrate poller, the control for figure 3: is an observer effect migtui's or any poller's?

    python benchmarks/raw_poller.py INTERVAL NAME=unix:PATH...

One raw asyncio JSON-lines connection per socket, one query-migrate each per
round, one NDJSON line per target per round (like `migtui watch --json`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def _open(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(path)
    await reader.readline()
    writer.write(b'{"execute":"qmp_capabilities"}\n')
    await reader.readline()
    return reader, writer


async def _query(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict:
    writer.write(b'{"execute":"query-migrate"}\n')
    while True:
        msg = json.loads(await reader.readline())
        if "return" in msg or "error" in msg:
            return msg


async def main(interval: float, targets: list[str]) -> None:
    paths = [t.split("=", 1)[-1].removeprefix("unix:") for t in targets]
    conns = [await _open(p) for p in paths]
    while True:
        began = time.monotonic()
        replies = await asyncio.gather(*(_query(r, w) for r, w in conns))
        for target, reply in zip(targets, replies):
            print(json.dumps({"target": target, "migration": reply.get("return"), "error": reply.get("error")}),
                  flush=True)
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))


if __name__ == "__main__":
    try:
        asyncio.run(main(float(sys.argv[1]), sys.argv[2:]))
    except (KeyboardInterrupt, BrokenPipeError, ConnectionError):
        pass
