"""Relays TCP connections between two network namespaces' loopbacks through a Unix socket (the filesystem is shared
across namespaces): `unix-to-tcp` runs on this machine in front of a loopback service, `tcp-to-unix` inside the
pods' namespace, so pods reach the apiserver or Prometheus at the same 127.0.0.1 address without anything here
listening beyond loopback.

    python loopback_bridge.py unix-to-tcp SOCKET PORT     # accept on SOCKET, connect to 127.0.0.1:PORT
    python loopback_bridge.py tcp-to-unix SOCKET PORT     # accept on 127.0.0.1:PORT, connect to SOCKET
"""

import asyncio
import os
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def relay(open_other, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        other_reader, other_writer = await open_other()
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, other_writer), pipe(other_reader, writer))


async def main(mode: str, socket_path: str, port: int) -> None:
    if mode == "unix-to-tcp":
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        server = await asyncio.start_unix_server(
            lambda r, w: relay(lambda: asyncio.open_connection("127.0.0.1", port), r, w), socket_path)
    else:
        server = await asyncio.start_server(
            lambda r, w: relay(lambda: asyncio.open_unix_connection(socket_path), r, w), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
