"""A lean HTTP/1.1 load generator: persistent connections over asyncio streams, one request in flight
per connection, JSON bodies prepared up front. The gateways under test share the machine's cores with
the client, so the client must cost as little as possible: httpx's async client spends more CPU per
request than the gateway being measured.

Used by bench/gateway_overhead.py: ``await run(urls, bodies, conc, headers)`` -> (wall seconds, statuses).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit


async def _one_connection(host: str, port: int, path: str, jobs: asyncio.Queue[bytes | None], extra: bytes,
                          codes: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            body = await jobs.get()
            if body is None:
                return
            writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nhost: " + f"{host}:{port}".encode() +
                         b"\r\ncontent-type: application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n" +
                         extra + b"\r\n" + body)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length, chunked = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length:
                await reader.readexactly(length)
            codes.append(status)
    finally:
        writer.close()


async def run(urls: list[str], bodies: list[bytes], conc: int, headers: dict[str, str]) -> tuple[float, list[int]]:
    """Send every body, ``conc`` connections spread round-robin over ``urls``; (wall seconds, statuses)."""
    extra = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
    queues: list[asyncio.Queue[bytes | None]] = [asyncio.Queue() for _ in urls]
    for i, b in enumerate(bodies):
        queues[i % len(urls)].put_nowait(b)
    codes: list[int] = []
    tasks = []
    for i in range(conc):
        u = urlsplit(urls[i % len(urls)])
        tasks.append((u.hostname or "127.0.0.1", u.port or 80, u.path, queues[i % len(urls)]))
    for q in queues:
        for _ in range(sum(1 for t in tasks if t[3] is q)):
            q.put_nowait(None)
    t0 = time.perf_counter()
    await asyncio.gather(*(_one_connection(h, p, path, q, extra, codes) for h, p, path, q in tasks))
    return time.perf_counter() - t0, codes
