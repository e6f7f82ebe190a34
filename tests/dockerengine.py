"""A private Docker engine: for the container tests, and for trying ``[sut] runtime = "docker"`` by hand on a machine
where no engine runs (Debian's ``docker.io`` package installs one; tests/provision.sh does).

    engine = DockerEngine.start()        # dockerd as root: data and exec roots in a temp folder, its own socket
    os.environ["DOCKER_HOST"] = engine.address
    ...
    engine.stop()                         # dockerd, its containerd and every container gone; the folder removed

    python -m tests.dockerengine          # starts one, prints the DOCKER_HOST line to export, runs until Ctrl-C

It touches nothing of the machine's: no bridge, no iptables or NAT rules, no userland proxy (containers use the
host's network), a containerd of its own under the exec root, nothing pulled from a registry. If the process that
started it dies, even by -9, the kernel sends dockerd SIGTERM (it stops its containers and containerd), and the next
``start`` removes whatever such an engine left: its processes (dockerd, containerd, shims), its mounts, its folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sut.procs import pid_alive

PREFIX = "chat-soak-dockerd-"  # + the starting process's pid + "-": a later start can tell whether its owner is gone
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
POLL = 0.1
SHUTDOWN_TIMEOUT = 3  # dockerd --shutdown-timeout: seconds a container still running at stop gets after SIGTERM


class EngineError(RuntimeError):
    """The engine cannot start here; the message is one line that says why."""


def unavailable_reason() -> str:
    """Why no private engine can start on this machine ('' when it can)."""
    if sys.platform != "linux":
        return f"a Docker engine needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "dockerd must run as root (rootless Docker is not set up here)"
    for tool in ("dockerd", "containerd", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install docker.io, as tests/provision.sh does)"
    return ""


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends dockerd SIGTERM when the process that started it dies, even by kill -9."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _processes_using(root: Path) -> list[int]:
    """Pids whose command line names ``root``: the engine's dockerd, containerd and shims."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(str(root) in part for part in proc.info["cmdline"] or ()):
            found.append(proc.info["pid"])
    return found


def _container_cgroups(root: Path) -> list[Path]:
    """The cgroup folders of the engine's containers (cgroup v1 per controller, or v2), named by container id."""
    ids = [entry.name for entry in (root / "data" / "containers").glob("*") if entry.is_dir()]
    base = Path("/sys/fs/cgroup")
    return [
        folder for cid in ids for folder in [*base.glob(f"*/docker/{cid}"), base / "docker" / cid] if folder.is_dir()
    ]


def _kill_containers(root: Path) -> None:
    """The processes left in the containers of an engine whose dockerd and shims died without stopping them."""
    groups = _container_cgroups(root)
    for group in groups:
        if (group / "freezer.state").exists():  # a paused container: a frozen process never takes its SIGKILL
            (group / "freezer.state").write_text("THAWED")
    for group in groups:
        for pid in (group / "cgroup.procs").read_text().split() if (group / "cgroup.procs").exists() else ():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_TIMEOUT / 3
    for group in groups:
        while (group / "cgroup.procs").exists() and (group / "cgroup.procs").read_text().strip():
            if time.monotonic() > deadline:
                break
            time.sleep(POLL)
        try:
            group.rmdir()
        except OSError:
            pass  # dockerd removed it, or it still holds a process: nothing more to do from here


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1].encode().decode("unicode_escape") for line in mounts]
    return sorted((p for p in points if p == str(root) or p.startswith(f"{root}/")), key=len, reverse=True)


def _clear(root: Path) -> None:
    """Everything of an engine rooted at ``root``: its processes (gently, then not), its mounts, the folder."""
    pids = _processes_using(root)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT / 3
        while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(POLL)
        pids = [pid for pid in pids if pid_alive(pid)]
        if not pids:
            break
    _kill_containers(root)
    for point in _mounts_under(root):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    shutil.rmtree(root, ignore_errors=True)


def sweep_stale() -> list[Path]:
    """Remove what engines of processes that are gone left behind (their owner was killed); the folders removed."""
    removed = []
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        owner = root.name[len(PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and int(owner) != os.getpid() and not pid_alive(int(owner)):
            _clear(root)
            removed.append(root)
    return removed


class DockerEngine:
    """One running dockerd of ours. ``address`` is its DOCKER_HOST, ``version`` what it says it is."""

    def __init__(self, root: Path, process: subprocess.Popen) -> None:
        self.root = root
        self.process = process
        self.address = f"unix://{root}/docker.sock"
        self.version = ""

    @classmethod
    def start(cls, timeout: float = START_TIMEOUT) -> DockerEngine:
        """A healthy engine, or EngineError (one line) with nothing left behind."""
        why = unavailable_reason()
        if why:
            raise EngineError(why)
        sweep_stale()
        root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        command = [
            "dockerd",
            f"--data-root={root}/data",
            f"--exec-root={root}/exec",
            f"--pidfile={root}/dockerd.pid",
            f"--host=unix://{root}/docker.sock",
            "--bridge=none",  # containers run on the host's network: no bridge, no NAT, no rules to leave behind
            "--iptables=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            f"--shutdown-timeout={SHUTDOWN_TIMEOUT}",
            "--log-level=warn",
        ]
        with open(root / "dockerd.log", "ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
                preexec_fn=_die_with_parent,
            )
        engine = cls(root, process)
        try:
            engine._wait_ready(timeout)
        except BaseException:
            engine.stop()
            raise
        return engine

    def _wait_ready(self, timeout: float) -> None:
        import docker

        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineError(f"dockerd exited with code {self.process.returncode}: {self.log_tail()}")
            if (self.root / "docker.sock").exists():
                try:
                    client = docker.DockerClient(base_url=self.address, timeout=5)
                    self.version = client.version()["Version"]
                    client.close()
                    return
                except Exception as exc:  # noqa: BLE001 - not ready yet; said if it never is
                    last = " ".join(str(exc).split())[:200]
            time.sleep(POLL)
        raise EngineError(f"dockerd did not answer within {timeout:g} s ({last}): {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            lines = (self.root / "dockerd.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " ".join((lines[-1] if lines else "(empty log)").split())[:300]

    def stop(self) -> None:
        """dockerd stopped (it stops its containers and containerd), then whatever is left of it removed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _clear(self.root)

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def engine_or_skip() -> DockerEngine:
    """For a test: a private engine; without one, skip saying why in one line. Under CI (``CI`` set) fail instead:
    provisioning installs docker.io there, and a container test that quietly skipped would prove nothing."""
    import pytest

    try:
        return DockerEngine.start()
    except EngineError as exc:
        message = f"no Docker engine for the container tests: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def main() -> int:
    try:
        engine = DockerEngine.start()
    except EngineError as exc:
        print(f"dockerengine: error: {exc}", file=sys.stderr)
        return 1
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    print(f"Docker {engine.version} (pid {engine.process.pid}), data in {engine.root}", flush=True)
    print(f"export DOCKER_HOST={engine.address}", flush=True)
    print("Ctrl-C or SIGTERM stops it and removes everything it made", flush=True)
    try:
        while not stop and engine.process.poll() is None:
            time.sleep(0.5)
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
