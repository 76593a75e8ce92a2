"""A stand-in upstream for measuring *gateway overhead only*: answers every POST to
/v1/chat/completions at once with a fixed OpenAI-shaped completion. It is not a model and never
used for anything but overhead benchmarks: bench/gateway_overhead.py starts it.

    python bench/tools/standin_upstream.py PORT      (or: python -m bench.tools.standin_upstream PORT)

Standard library only, so that it starts fast and runs as a plain script.
"""

from __future__ import annotations

import argparse
import asyncio
import json

BODY = json.dumps({
    "id": "chatcmpl-standin", "object": "chat.completion", "created": 0, "model": "standin",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Your parcel is in transit and arrives in 2 days."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 42, "completion_tokens": 12, "total_tokens": 54},
}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + str(len(BODY)).encode()
            + b"\r\n\r\n" + BODY)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("port", type=int, help="port to listen on, 127.0.0.1")
    asyncio.run(main(ap.parse_args().port))
