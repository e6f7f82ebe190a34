"""A gevent WebSocket client on websocket-client: one reader greenlet per connection.

Two greenlets reading one socket raise ConcurrentObjectUseError, so each connection has exactly one reader, which
hands every event to the connection's Inbox (see exchange.py); sends come from the user's greenlet. The reader also
answers server pings (websocket-client does that only while reading), so quiet users are not disconnected.
Where the token goes (header, query, subprotocol, a first message), the message types and their fields come from the
connection's Wire (the scenario's [protocol]; the contract by default).
"""

from __future__ import annotations

import json
import random
import socket
import ssl
import struct
import time
from json.encoder import c_make_encoder, encode_basestring_ascii
from json.scanner import make_scanner
from typing import Any
from urllib.parse import urlencode

import gevent
import gevent.socket
import websocket
from gevent import getcurrent
from gevent.hub import get_hub
from websocket import (
    ABNF,
    WebSocketBadStatusException,
    WebSocketConnectionClosedException,
    WebSocketException,
    WebSocketTimeoutException,
)

from locustfiles.exchange import EVENTS_NAME, Exchange, Inbox, Reporter, new_id
from locustfiles.wire import DEFAULT, Wire

CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 1.0
CONNECT_NAME = "WS connect"
AUTH_REPLY_FRAMES = 16  # token = message: frames read while waiting for ws.auth_reply before giving up
# websocket-client reads a frame's header and its payload with a socket receive each (through five Python layers):
# reading up to this much at once serves the rest of a burst (the header's payload, a chat's six replies) from
# memory. Small, because what is left over moves down the buffer at each part of a frame.
READ_AHEAD = 4096
MAX_READ = 16384  # websocket-client's own cap per receive (large receive buffers fragment the heap)

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

    def __init__(
        self, url: str, token: str, report: Reporter, inbox: Inbox | None = None, wire: Wire = DEFAULT
    ) -> None:
        self.url = url  # without the token: _open_socket puts it where the wire says
        self.token = token
        self.report = report
        self.wire = wire
        self.inbox = inbox or Inbox(report, wire)
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.closing = False
        self.close_reason: str | None = None

    @property
    def open(self) -> bool:
        return self.ws is not None and self.close_reason is None and not self.closing

    def connect(self) -> bool:
        """Open the socket (timed as WS connect) and start its reader; False (and a failure fired) if refused."""
        if self._open_socket(CONNECT_TIMEOUT) is not None:
            return False
        self.reader = gevent.spawn(self._read)
        return True

    def _open_socket(self, timeout: float, name: str = CONNECT_NAME) -> str | None:
        """The handshake, timed as ``name``: None once ``self.ws`` is open, else why not (a failure fired)."""
        started = time.perf_counter()
        wire, token = self.wire, self.token
        url = self.url
        if wire.token_place == "query":
            url += ("&" if "?" in url else "?") + urlencode({wire.ws["token_param"]: token})
        try:
            ws = websocket.create_connection(
                url,
                timeout=timeout,
                skip_utf8_validation=True,  # pure-Python UTF-8 checks cost more than the rest of a receive
                enable_multithread=True,  # the reader answers pings while the user greenlet sends
                **wire.ws_handshake(token),
            )
        except WebSocketBadStatusException as exc:
            self.close_reason = "refused"
            self.report.failure(name, f"handshake refused with HTTP {exc.status_code}", _ms_since(started))
            return f"HTTP {exc.status_code}"
        except (OSError, WebSocketException) as exc:
            self.close_reason = "refused"
            self.report.failure(name, f"cannot connect: {type(exc).__name__}", _ms_since(started))
            return type(exc).__name__
        try:
            refused = self._authenticate(ws, timeout)
        except (OSError, WebSocketException) as exc:
            refused = f"token message unanswered: {type(exc).__name__}"
        if refused:
            self.close_reason = "refused"
            self.report.failure(name, refused, _ms_since(started))
            try:
                ws.shutdown()
            except (OSError, WebSocketException):
                pass
            return refused
        ws.settimeout(None)  # the connect timeout would otherwise end a quiet stream
        _read_ahead(ws)
        self.ws = ws
        self.report.success(name, _ms_since(started))
        return None

    def _authenticate(self, ws: websocket.WebSocket, timeout: float) -> str | None:
        """token = message: send the first message and, if the wire names one, wait for its acceptance (frames that
        come before it go to the inbox). None when accepted; else why not (an error event, a close, silence)."""
        wire = self.wire
        first = wire.ws_auth_message(self.token)
        if first is None:
            return None
        ws.send(_dumps(first))
        accept = wire.ws["auth_reply"]
        if not accept:
            return None
        ws.settimeout(timeout)
        for _ in range(AUTH_REPLY_FRAMES):
            opcode, data = ws.recv_data()
            if opcode == ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                return f"token refused: closed with code {code}"
            event = decode_event(data, self.report)
            if event is None:
                continue
            etype = event.get(wire.type_key)
            if etype == accept:
                return None
            if etype == wire.error:
                return f"token refused: {wire.error} {str(event.get(wire.code_key) or '?')[:40]}"
            self.inbox.handle(event, time.perf_counter())
        return f"no {str(accept)[:40]} after the token message"

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
        ws = self.ws
        frame = text_frame(_dumps(payload).encode())
        try:
            with ws.lock:  # the reader's pong must not land inside a frame that went out in parts
                ws.sock.sendall(frame)
        except (OSError, AttributeError):  # AttributeError: the socket was shut down meanwhile (ws.sock is None)
            return False
        return True

    def start(self, exchange: Exchange, payload: dict) -> Exchange:
        """Expect replies to ``payload`` as ``exchange``, then send it (replies can come before send returns)."""
        if self.inbox.expect(exchange) and not self.send(payload):
            exchange.fail(self.close_reason or "connection closed before {step}")
        return exchange

    def chat(self, thread_id: Any, content: str, timed: bool = True, refusable: bool = False) -> Exchange:
        message_id = new_id()
        wire = self.wire
        exchange = Exchange(message_id, wire.chat_steps, wire.chat_names, self.report, timed=timed, refusable=refusable)
        return self.start(exchange, wire.chat_payload(message_id, thread_id, content))

    def refresh_token(self, token: str, timeout: float) -> bool:
        """In-band refresh: the connection carries on with ``token``; True once the server confirmed it."""
        message_id = new_id()
        wire = self.wire
        exchange = Exchange(message_id, wire.refresh_steps, wire.refresh_names, self.report)
        self.start(exchange, wire.refresh_payload(message_id, token))
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


def text_frame(data: bytes) -> bytes:
    """One masked text frame, as websocket-client's ``ABNF.create_frame(...).format()`` makes it, in a quarter of
    its time (0.8 against 3.8 µs: its checks and its array-based masking, on every message sent). The mask
    key comes from ``random``: RFC 6455 asks for an unpredictable key to protect caching proxies from crafted
    payloads; a load generator's own messages to its own server need none, and os.urandom is a system call."""
    length = len(data)
    if length < 126:
        header = bytes((0x81, 0x80 | length))
    elif length < 65536:
        header = _HEADER_16(0x81, 0xFE, length)
    else:
        header = _HEADER_64(0x81, 0xFF, length)
    key = _mask_key(4)
    mask = int.from_bytes(key * (length // 4 + 1), "little") & ((1 << (8 * length)) - 1)
    return header + key + (int.from_bytes(data, "little") ^ mask).to_bytes(length, "little")


_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack
_mask_key = random.Random().randbytes  # a generator of its own: seeding the module's random (tests do) leaves it


def _read_ahead(ws: websocket.WebSocket) -> None:
    """Frames are read READ_AHEAD bytes at a time (or what a larger part asks for), not a header or payload each,
    straight from the (blocking, gevent) socket into one buffer per connection. websocket-client's own receive makes
    a closure per read and a list per frame part, which an idle connection holds until its next frame: with
    thousands of users, work for every young collection (bench_ws.py's GC pauses).

    After a read that emptied the socket, the reader waits for it to be readable before it reads again: a receive
    tried first would almost always find nothing, and that system call and its exception cost about 2 µs per reply
    on this kind of machine (a ping round trip is about 45 µs of client CPU: bench_ws.py). The wait uses a watcher made once per socket (and a timer, for a socket
    timeout), where gevent's makes a Waiter, a bound method and a tuple per wait, which an idle connection keeps
    alive until its next frame. Plain gevent sockets only: an SSL socket may hold decrypted bytes the kernel does
    not know about, so it is read as gevent does. A connection closes its socket only after stopping its reader:
    this watcher is not cancelled by a close, as gevent's own would be."""
    sock = ws.sock
    buffer = bytearray()  # holds no references: the collector never walks it
    waits = type(sock) is gevent.socket.socket
    hub = get_hub()
    readable = hub.loop.io(sock.fileno(), 1) if waits else None
    timer = None
    timer_after = None
    waiting = None  # the greenlet in recv_strict's wait
    drained = False

    def on_readable() -> None:
        waiting.switch()

    def on_timeout() -> None:
        waiting.switch(_TIMED_OUT)

    def wait_readable() -> None:
        nonlocal waiting, timer, timer_after
        timeout = sock.timeout
        if timeout is not None and timeout != timer_after:
            timer, timer_after = hub.loop.timer(timeout, timeout), timeout
        waiting = getcurrent()
        readable.start(on_readable)
        try:
            if timeout is not None:
                timer.again(on_timeout)
            if hub.switch() is _TIMED_OUT:
                raise TimeoutError("timed out")
        finally:
            readable.stop()
            if timeout is not None:
                timer.stop()
            waiting = None

    def recv_strict(size: int) -> bytes:
        nonlocal drained
        while len(buffer) < size:
            want = min(max(size - len(buffer), READ_AHEAD), MAX_READ)
            try:
                if drained and waits:
                    wait_readable()
                data = sock.recv(want)
            except TimeoutError as exc:  # as websocket-client says it: a heartbeat's clock (reconnect.py) reads it
                raise WebSocketTimeoutException("Connection timed out") from exc
            except ssl.SSLError as exc:
                if "timed out" in str(exc):
                    raise WebSocketTimeoutException(str(exc)) from exc
                raise
            if not data:
                raise WebSocketConnectionClosedException("Connection to remote host was lost.")
            drained = len(data) < want
            buffer.extend(data)
        part = bytes(buffer[:size])
        del buffer[:size]
        return part

    ws.frame_buffer.recv_strict = recv_strict
    ws.frame_buffer.lock = _ONE_READER


_TIMED_OUT = object()


class _OneReader:
    """websocket-client's frame_buffer lock, where one greenlet only (the connection's reader) reads frames: its
    ``with`` costs nothing and, unlike a lock's bound __exit__, leaves no new object for the collector per frame."""

    __slots__ = ()

    @staticmethod
    def __enter__() -> None:
        return None

    @staticmethod
    def __exit__(*_exc: object) -> None:
        return None


_ONE_READER = _OneReader()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def decode_event(data: bytes, report: Reporter) -> dict | None:
    """One text frame as an event; None (a ``ws event`` failure fired) if it is not a JSON object.

    WsConnection._read has this inline (a call per event shows in bench_ws); keep the two the same.
    """
    try:
        text = data.decode()
        event, end = _scan(text, 0)
        if end != len(text):
            event = json.loads(data)
    except (StopIteration, ValueError, RecursionError):
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):  # nested too deep is a bad event, not a dead reader
            report.failure(EVENTS_NAME, "event is not JSON")
            return None
    if type(event) is not dict:
        report.failure(EVENTS_NAME, "event is not a JSON object")
        return None
    return event


def ws_url(http_base: str, last_event_id: int | None = None, wire: Wire = DEFAULT) -> str:
    """The backend's WebSocket URL from its HTTP base URL, resuming after ``last_event_id`` if given."""
    return wire.ws_url(http_base, last_event_id)
