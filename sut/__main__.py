"""``python -m sut auth|backend|agent [--host H --port P | --fd N] [settings flags]``: one service, one process."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

import uvicorn

from sut.config import Settings, parse_service_args

PARENT_POLL = 1.0
EXTRA_WORKERS = 8  # threads for work that holds no pool connection (hashing uploads, health pings)
GRACEFUL_SHUTDOWN = 3  # seconds open WebSockets get before they are cut (close code 1012)


def create_app(service: str, settings: Settings):  # noqa: ANN201 - a FastAPI app
    if service == "auth":
        from sut.auth import create_app as build
    elif service == "backend":
        from sut.backend import create_app as build
    else:
        from sut.agent import create_app as build
    return build(settings)


async def _watch_parent(server: uvicorn.Server, parent_pid: int) -> None:
    """Exit when the launcher is gone (killed with SIGKILL, say), rather than live on as an orphan."""
    while not server.should_exit:
        await asyncio.sleep(PARENT_POLL)
        if os.getppid() != parent_pid:
            server.should_exit = True


async def serve(service: str, host: str, port: int, fd: int | None, settings: Settings) -> None:
    config = uvicorn.Config(
        create_app(service, settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        ws_max_size=1024 * 1024,
        ws_ping_interval=settings.ws_ping_interval or None,
        ws_ping_timeout=settings.ws_ping_timeout or None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    if fd is not None:
        sock = socket.socket(fileno=fd)
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    bound = sock.getsockname()
    print(f"sut {service}: listening on http://{bound[0]}:{bound[1]} pid {os.getpid()}", flush=True)
    # blocking SQLAlchemy runs in asyncio's default executor: size it above the pool (plus its overflow), or the
    # executor, not the pool, would cap concurrent queries and db_pool_overflow could never show
    workers = settings.db_pool_size + settings.db_max_overflow + EXTRA_WORKERS
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(workers, thread_name_prefix="sut-db"))
    if settings.parent_pid:
        asyncio.get_running_loop().create_task(_watch_parent(server, settings.parent_pid))
    await server.serve(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    service, host, port, fd, settings = parse_service_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(service, host, port, fd, settings))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"sut {service}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        data_dir = settings.data_dir
        if data_dir and settings.parent_pid and os.getppid() != settings.parent_pid:
            # the launcher was killed and cannot remove the SQLite stand-ins' folder it made: do it for it
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
