"""The gateway (OpenAI-compatible HTTP API) and its dashboard."""

from __future__ import annotations

from ..engine import Engine
from .app import Gateway, stream_chunks

__all__ = ["Gateway", "serve", "stream_chunks"]


def serve(engine: Engine, host: str, port: int, preload: bool = False, log_level: str = "warning") -> None:
    """Run the gateway under uvicorn (uvloop + httptools when available)."""
    import uvicorn

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    uvicorn.run(Gateway(engine, preload=preload), host=host, port=port, loop=loop, http="httptools",
                log_level=log_level, access_log=False, lifespan="on",
                proxy_headers=False, server_header=False, date_header=False)
