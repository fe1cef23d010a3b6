"""A small TCP proxy in its own process, to cut the network between a worker and its queue.

`python -m tests.faults.proxy UPSTREAM_PORT PORT_FILE` forwards 127.0.0.1:<free port> to
127.0.0.1:UPSTREAM_PORT and writes the port it listens on to PORT_FILE. SIGSTOP of the
proxy is a silent partition (bytes stop, no reset), SIGCONT heals it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def _serve(upstream_port: int, port_file: Path) -> None:
    async def pair(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    server = await asyncio.start_server(pair, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.rename(port_file)
    async with server:
        await server.serve_forever()


class Proxy:
    """The proxy process: started by this test, stopped by its PID."""

    def __init__(self, upstream_port: int, folder: Path) -> None:
        from tests.conftest import wait_for

        port_file = folder / f"proxy-{upstream_port}.port"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.proxy", str(upstream_port), str(port_file)],
            start_new_session=True, cwd=Path(__file__).parents[2])
        wait_for(lambda: port_file.exists() or self.proc.poll() is not None, 30,
                 message="the proxy to listen")
        assert self.proc.poll() is None, "the proxy exited at start"
        self.port = int(port_file.read_text())

    def partition(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def heal(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]), Path(sys.argv[2])))
