"""Make the host's control-plane endpoints reachable from pods on the real nodes.

The API server and Prometheus listen on the host's loopback. Pods on the real
nodes live in the cluster's network namespace, whose only way out is the veth
to the host (``100.64.<slot>.1``). This process listens on that address and
forwards each connection to the same port on 127.0.0.1, byte for byte (TLS
passes through untouched). With the DNAT rule ``dev/cluster`` puts in the
cluster's namespace (the ``kubernetes`` Service's ClusterIP:443 to this
forwarder), in-cluster clients find the API server as they would in any
cluster: through ``KUBERNETES_SERVICE_HOST``, with the service account's
token and CA. That one rule is the part of kube-proxy this cluster needs.

    python -m zopilot_dev.hostproxy --listen 100.64.7.1 --port 36443 --port 39090
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

log = logging.getLogger("zopilot.hostproxy")
CHUNK = 1 << 16


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _forward(port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        log.warning("127.0.0.1:%d refused a connection: %s", port, e)
        writer.close()
        return
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(OSError, ConnectionError):
                await w.wait_closed()


async def serve(listen: str, ports: list[int]) -> None:
    servers = []
    for port in ports:

        async def handle(
            r: asyncio.StreamReader, w: asyncio.StreamWriter, port: int = port
        ) -> None:
            await _forward(port, r, w)

        servers.append(await asyncio.start_server(handle, listen, port))
        log.info("forwarding %s:%d to 127.0.0.1:%d", listen, port, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="address to listen on (the host's veth)")
    ap.add_argument("--port", type=int, action="append", required=True, help="port (repeat)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args.listen, args.port))


if __name__ == "__main__":
    main()
