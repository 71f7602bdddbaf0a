"""A TCP proxy between a replica and its primary, so drills can stall, slow or heal the link
(`tc netem` is not available everywhere). Its mode is read from a small JSON control file:
{"mode": "ok"} | {"mode": "stall"} | {"mode": "delay", "delay_ms": 300} | {"mode": "cut"}.

stall holds every byte on open connections (the link hangs); cut resets them and refuses new
ones (the link is down).

Run as `python -m certstatus.cluster.proxy LISTEN_PORT TARGET_PORT CONTROL_FILE`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

CHUNK = 65536


class Link:
    def __init__(self, control: Path) -> None:
        self.control = control
        self.mode = "ok"
        self.delay = 0.0
        self._mtime = 0.0
        self.changed = asyncio.Event()
        self.writers: set[asyncio.StreamWriter] = set()

    def refresh(self) -> None:
        try:
            mtime = self.control.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            state = json.loads(self.control.read_text() or "{}")
        except (OSError, ValueError):
            return
        self.mode = state.get("mode", "ok")
        self.delay = float(state.get("delay_ms", 0)) / 1000.0
        if self.mode == "cut":
            for writer in list(self.writers):
                writer.transport.abort()
            self.writers.clear()
        self.changed.set()
        self.changed = asyncio.Event()

    async def watch(self) -> None:
        while True:
            self.refresh()
            await asyncio.sleep(0.05)

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                while (
                    self.mode == "stall"
                ):  # hold the bytes: the connection hangs, like a WAN fault
                    await self.changed.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                while self.mode == "stall":
                    await self.changed.wait()
                if self.mode == "delay" and self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def serve(listen_port: int, target_port: int, control: Path) -> None:
    link = Link(control)
    link.refresh()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if link.mode == "cut":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        link.writers.update((writer, up_writer))
        try:
            await asyncio.gather(link.pipe(reader, up_writer), link.pipe(up_reader, writer))
        finally:
            link.writers.difference_update((writer, up_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    watcher = asyncio.create_task(link.watch())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    watcher.cancel()


def main() -> None:
    listen_port, target_port, control = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    asyncio.run(serve(listen_port, target_port, control))


if __name__ == "__main__":
    main()
