"""``python -m tests.otherchat --accounts-port 8101 --chat-port 8102 [--leak-bytes-per-message N]``: both services,
until Ctrl-C (logs in ./otherchat-logs)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tests.otherchat import start


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.otherchat")
    parser.add_argument("--accounts-port", type=int, default=8101)
    parser.add_argument("--chat-port", type=int, default=8102)
    parser.add_argument("--token-ttl", type=float, default=60.0)
    parser.add_argument("--rate-limit", type=int, default=3)
    parser.add_argument("--rate-window", type=float, default=3.0)
    parser.add_argument("--leak-bytes-per-message", type=int, default=0)
    parser.add_argument("--logs", type=Path, default=Path("otherchat-logs"))
    args = parser.parse_args()
    running = start(
        args.accounts_port,
        args.chat_port,
        args.logs,
        token_ttl=args.token_ttl,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        leak_bytes_per_message=args.leak_bytes_per_message,
    )
    print(f"accounts {running.accounts_url}  pid {running.pids['accounts']}")
    print(f"chat     {running.chat_url}  pid {running.pids['chat']}")
    try:
        while all(proc.poll() is None for proc in running.processes.values()):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()


if __name__ == "__main__":
    main()
