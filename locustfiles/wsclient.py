"""A gevent WebSocket client on websocket-client: one reader greenlet per connection.

Two greenlets reading one socket raise ConcurrentObjectUseError, so each connection has exactly one reader, which
hands every event to the connection's Inbox (see exchange.py); sends come from the user's greenlet. The reader also
answers server pings (websocket-client does that only while reading), so quiet users are not disconnected.
"""

from __future__ import annotations

import json
import socket
import time
from json.encoder import c_make_encoder, encode_basestring_ascii
from json.scanner import make_scanner
from typing import Any

import gevent
import websocket
from websocket import ABNF, WebSocketBadStatusException, WebSocketException

from locustfiles.exchange import (
    CHAT_NAMES,
    CHAT_STEPS,
    EVENTS_NAME,
    REFRESH_NAMES,
    REFRESH_STEPS,
    Exchange,
    Inbox,
    Reporter,
    new_id,
)

CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 1.0
CONNECT_NAME = "WS connect"

# json.loads/dumps build a decoder or an encoder per call (more than the rest of our handling of an event): these are
# made once. The scanner parses one value from a str; anything it does not take whole (a BOM, UTF-16, whitespace
# around, bad JSON) goes to json.loads, so results and errors are json.loads's own.
_scan = make_scanner(json.JSONDecoder())
_encoder = json.JSONEncoder(separators=(",", ":"))
if c_make_encoder is not None:  # payloads are our own flat dicts: no circular check, so the encoder is reusable
    _chunks = c_make_encoder(None, _encoder.default, encode_basestring_ascii, None, ":", ",", False, False, True)

    def _dumps(payload: dict) -> str:
        return "".join(_chunks(payload, 0))

else:  # pragma: no cover - CPython without its _json accelerator
    _dumps = _encoder.encode


class WsConnection:
    """One WebSocket with its reader greenlet. Sends come from the user's greenlet; the reader only reads."""

    def __init__(self, url: str, token: str, report: Reporter, inbox: Inbox | None = None) -> None:
        self.url = url
        self.token = token
        self.report = report
        self.inbox = inbox or Inbox(report)
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.closing = False
        self.close_reason: str | None = None

    @property
    def open(self) -> bool:
        return self.ws is not None and self.close_reason is None and not self.closing

    def connect(self) -> bool:
        """Open the socket (timed as WS connect) and start its reader; False (and a failure fired) if refused."""
        started = time.perf_counter()
        try:
            ws = websocket.create_connection(
                self.url,
                timeout=CONNECT_TIMEOUT,
                header=[f"Authorization: Bearer {self.token}"],
                skip_utf8_validation=True,  # pure-Python UTF-8 checks cost more than the rest of a receive
                enable_multithread=True,  # the reader answers pings while the user greenlet sends
            )
        except WebSocketBadStatusException as exc:
            self.close_reason = "refused"
            self.report.failure(CONNECT_NAME, f"handshake refused with HTTP {exc.status_code}", _ms_since(started))
            return False
        except (OSError, WebSocketException) as exc:
            self.close_reason = "refused"
            self.report.failure(CONNECT_NAME, f"cannot connect: {type(exc).__name__}", _ms_since(started))
            return False
        ws.settimeout(None)  # the connect timeout would otherwise end a quiet stream
        self.ws = ws
        self.report.success(CONNECT_NAME, _ms_since(started))
        self.reader = gevent.spawn(self._read)
        return True

    def _read(self) -> None:
        ws, inbox, handle, scan, clock = self.ws, self.inbox, self.inbox.handle, _scan, time.perf_counter
        recv_data, opcode_close = ws.recv_data, ABNF.OPCODE_CLOSE
        reason = "connection closed by the server before {step}"
        try:
            while True:
                opcode, data = recv_data()  # answers pings itself
                if opcode == opcode_close:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    reason = f"connection closed by the server (code {code}) before {{step}}"
                    break
                now = clock()
                try:
                    text = data.decode()
                    event, end = scan(text, 0)
                    if end != len(text):
                        event = json.loads(data)
                except (StopIteration, ValueError, RecursionError):
                    try:
                        event = json.loads(data)
                    except (ValueError, RecursionError):  # nested too deep is a bad event, not a dead reader
                        self.report.failure(EVENTS_NAME, "event is not JSON")
                        continue
                if type(event) is not dict:
                    self.report.failure(EVENTS_NAME, "event is not a JSON object")
                    continue
                try:
                    handle(event, now)
                except Exception as exc:  # noqa: BLE001 - a client bug must show in the stats, not kill the reader
                    self.report.failure(EVENTS_NAME, f"client error handling an event: {type(exc).__name__}")
        except (OSError, WebSocketException) as exc:
            reason = f"connection lost ({type(exc).__name__}) before {{step}}"
        if not self.closing:
            self.close_reason = reason
            inbox.fail_all(reason)
            self._close_socket()

    def send(self, payload: dict) -> bool:
        """Send one JSON message; False if the connection is gone (the caller decides what failed)."""
        if not self.open:
            return False
        try:
            self.ws.send(_dumps(payload))
        except (OSError, WebSocketException):
            return False
        return True

    def start(self, exchange: Exchange, payload: dict) -> Exchange:
        """Expect replies to ``payload`` as ``exchange``, then send it (replies can come before send returns)."""
        if self.inbox.expect(exchange) and not self.send(payload):
            exchange.fail(self.close_reason or "connection closed before {step}")
        return exchange

    def chat(self, thread_id: Any, content: str, timed: bool = True, refusable: bool = False) -> Exchange:
        message_id = new_id()
        exchange = Exchange(message_id, CHAT_STEPS, CHAT_NAMES, self.report, timed=timed, refusable=refusable)
        payload = {"type": "chat_message", "id": message_id, "thread_id": thread_id, "content": content}
        return self.start(exchange, payload)

    def refresh_token(self, token: str, timeout: float) -> bool:
        """In-band refresh: the connection carries on with ``token``; True once the server confirmed it."""
        message_id = new_id()
        exchange = Exchange(message_id, REFRESH_STEPS, REFRESH_NAMES, self.report)
        self.start(exchange, {"type": "refresh_token", "id": message_id, "token": token})
        if exchange.wait(timeout):
            self.token = token
            return True
        return False

    def close(self) -> None:
        """Close politely (close frame, then the socket) and stop the reader; safe to call twice."""
        self.closing = True
        self._stop_reader()
        if self.ws is not None:
            try:
                self.ws.send_close()
            except (OSError, WebSocketException):
                pass
        self._close_socket()

    def drop(self) -> None:
        """Lose the connection without a close frame, as a network failure would."""
        self.closing = True
        self._stop_reader()
        if self.ws is not None and self.ws.sock is not None:
            try:
                self.ws.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._close_socket()

    def _stop_reader(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=True, timeout=CLOSE_TIMEOUT)

    def _close_socket(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.shutdown()
            except (OSError, WebSocketException):
                pass


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def ws_url(http_base: str, last_event_id: int | None = None) -> str:
    """The backend's /ws URL from its HTTP base URL, resuming after ``last_event_id`` if given."""
    base = http_base.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    url = f"{base}/ws"
    return url if last_event_id is None else f"{url}?last_event_id={last_event_id}"
