"""``python -m tests.otherchat.serve accounts|chat --port N [chat flags]``: one OtherChat service under uvicorn."""

from __future__ import annotations

import argparse

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(prog="otherchat")
    parser.add_argument("service", choices=["accounts", "chat"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-ttl", type=float, default=60.0, help="access token lifetime, seconds")
    parser.add_argument("--rate-limit", type=int, default=3, help="free plan: messages per window; 0 = none")
    parser.add_argument("--rate-window", type=float, default=3.0)
    parser.add_argument("--step", type=float, default=0.01, help="seconds per agent event")
    parser.add_argument("--leak-bytes-per-message", type=int, default=0, help="FAULT: bytes kept per message")
    args = parser.parse_args()
    if args.service == "accounts":
        from tests.otherchat import accounts

        accounts.SETTINGS["token_ttl"] = args.token_ttl
        app = accounts.app
    else:
        from tests.otherchat import chat

        chat.SETTINGS.update(
            rate_limit=args.rate_limit,
            rate_window=args.rate_window,
            step=args.step,
            leak_bytes_per_message=args.leak_bytes_per_message,
        )
        app = chat.app
    # the clients answer pings only while they read; 120 s still ends connections whose peer vanished
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", ws_ping_interval=20, ws_ping_timeout=120)


if __name__ == "__main__":
    main()
