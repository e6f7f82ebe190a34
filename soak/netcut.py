"""Real network cuts on loopback with nftables: a TCP port's packets dropped (blackhole) or answered with a TCP
reset (reset), in both directions, and restored.

Every rule lives in a table of our own, ``inet chat_soak_<pid>_<n>``, rebuilt atomically (``nft -f``) on each
change, so a restore never leaves half a rule set and ``close()`` is one ``delete table``. Rules match only
``lo``: a cut never touches traffic that leaves this machine. A runner killed with -9 leaves its table behind;
``cleanup_stale()`` (called at the next start) deletes the tables of processes that are gone.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import shutil
import subprocess
import weakref

from sut.procs import pid_alive  # the same liveness test the sut launcher uses for its own leftovers

NFT = "nft"
NFT_TIMEOUT = 10.0  # seconds for one nft call; it takes milliseconds unless the kernel is in trouble
TABLE_PREFIX = "chat_soak_"
TABLE_PATTERN = re.compile(rf"^{TABLE_PREFIX}(\d+)(?:_[0-9a-z]+)?$")
PRIORITY = -10  # ahead of the usual filter chains; a drop in any base chain is final anyway
MODES = ("blackhole", "reset")

_counter = itertools.count(1)
_live: weakref.WeakSet[NetCut] = weakref.WeakSet()
_probe: str | None = None  # cached unavailable_reason(); '' = nft works


class NetCutError(RuntimeError):
    """An nft call failed; the message is one line with nft's own reason."""


def _nft(*args: str, script: str | None = None) -> str:
    try:
        done = subprocess.run(
            [NFT, *args], input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetCutError(f"nft {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        reason = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise NetCutError(f"nft {' '.join(args)}: {reason[:300]}")
    return done.stdout


def _drop_table(table: str) -> None:
    # 'add' then 'delete' in one batch: deleting a table that is not there is not an error (nft < 1.0.8 has no
    # 'destroy').
    _nft("-f", "-", script=f"add table inet {table}\ndelete table inet {table}\n")


def unavailable_reason(refresh: bool = False) -> str:
    """Why nft cannot cut here ('' when it can): not root, no nft binary, or the kernel refuses a table."""
    global _probe
    if _probe is not None and not refresh:
        return _probe
    if os.geteuid() != 0:
        _probe = "not root (nftables needs CAP_NET_ADMIN)"
    elif shutil.which(NFT) is None:
        _probe = "no nft command (apt-get install nftables)"
    else:
        table = f"{TABLE_PREFIX}{os.getpid()}_probe"
        try:
            _nft("-f", "-", script=f"add table inet {table}\n")
            _drop_table(table)
            _probe = ""
        except NetCutError as exc:
            _probe = str(exc)
    return _probe


def available() -> bool:
    """Whether nft works here: root, the nft binary, and a table of ours can be made and removed."""
    return unavailable_reason() == ""


def tables() -> list[str]:
    """The names of every ``inet chat_soak_*`` table present now (any process's)."""
    listing = json.loads(_nft("-j", "list", "tables", "inet") or "{}")
    names = [item["table"]["name"] for item in listing.get("nftables", []) if "table" in item]
    return sorted(name for name in names if TABLE_PATTERN.match(name))


def cleanup_stale() -> list[str]:
    """Delete the ``chat_soak_<pid>`` tables whose process is gone (a runner killed with -9); returns their names.

    Does nothing (returns []) where nft is not available. A pid reused by an unrelated process keeps its table
    until that process ends too: pids wrap slowly enough that this is a corner we accept.
    """
    if not available():
        return []
    removed = []
    for name in tables():
        match = TABLE_PATTERN.match(name)
        if match and not pid_alive(int(match.group(1))):
            _drop_table(name)
            removed.append(name)
    return removed


def _rules(port: int, mode: str) -> tuple[list[str], list[str]]:
    # A reset we send comes back through these chains with the port as its sport or dport: resets are let through,
    # or the rule would eat its own answer and a reset cut would look like a blackhole.
    verdict = "drop" if mode == "blackhole" else "tcp flags & rst == 0 reject with tcp reset"
    # A loopback packet passes the output hook on its way out, so both directions are matched there: the client's
    # packets by dport, the server's by sport. The input rules cover what arrives on lo some other way.
    return [
        f'oifname "lo" tcp dport {port} {verdict}',
        f'oifname "lo" tcp sport {port} {verdict}',
    ], [
        f'iifname "lo" tcp dport {port} {verdict}',
        f'iifname "lo" tcp sport {port} {verdict}',
    ]


class NetCut:
    """The cuts of one runner process: ``cut(port, mode)``, ``restore(port)``, ``close()``.

    One cut per port: cutting a port again replaces its mode. ``close()`` is idempotent, takes no lock (a signal
    handler may call it while the main thread is inside ``cut``), and also runs at interpreter exit.
    """

    def __init__(self) -> None:
        self.table = f"{TABLE_PREFIX}{os.getpid()}_{next(_counter)}"
        self.cuts: dict[int, str] = {}
        self.closed = False
        self.made = False  # the table may exist: close() has something to delete
        _live.add(self)

    def _apply(self) -> None:
        if not self.cuts:
            _drop_table(self.table)
            return
        output, inputs = [], []
        for port, mode in sorted(self.cuts.items()):
            out_rules, in_rules = _rules(port, mode)
            output += out_rules
            inputs += in_rules
        body = "\n".join(
            [
                f"table inet {self.table} {{",
                f"  chain output {{ type filter hook output priority {PRIORITY}; policy accept;",
                *(f"    {rule}" for rule in output),
                "  }",
                f"  chain input {{ type filter hook input priority {PRIORITY}; policy accept;",
                *(f"    {rule}" for rule in inputs),
                "  }",
                "}",
            ]
        )
        # One batch: the old table goes and the new one comes in a single kernel transaction.
        _nft("-f", "-", script=f"add table inet {self.table}\ndelete table inet {self.table}\n{body}\n")

    def cut(self, port: int, mode: str) -> None:
        """Drop (blackhole) or reset (reset) every TCP packet to or from ``port`` on loopback, until restored."""
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if not 0 < port < 65536:
            raise ValueError(f"port: expected 1-65535, got {port!r}")
        if self.closed:
            raise NetCutError(f"{self.table}: closed")
        previous = self.cuts.get(port)
        self.cuts[port] = mode
        self.made = True
        try:
            self._apply()
        except NetCutError:
            if previous is None:
                self.cuts.pop(port, None)
            else:
                self.cuts[port] = previous
            raise
        if self.closed:  # close() ran meanwhile (a signal): it must win
            _drop_table(self.table)

    def restore(self, port: int) -> None:
        """The port's packets pass again; a port that is not cut is left alone (idempotent)."""
        if self.closed or self.cuts.pop(port, None) is None:
            return
        self._apply()

    def close(self) -> None:
        """Remove every rule of ours (the whole table); idempotent, safe at exit and from a signal handler."""
        self.closed = True
        self.cuts = {}
        _live.discard(self)
        if not self.made:
            return
        try:
            _drop_table(self.table)
        except NetCutError:
            pass  # nft is gone or refuses: cleanup_stale at the next start removes the table

    def __enter__(self) -> NetCut:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@atexit.register
def _close_all() -> None:
    for netcut in list(_live):
        netcut.close()
