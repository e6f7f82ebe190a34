"""The embedded sut's services as containers of a Docker engine: ``[sut] runtime = "docker"``, ``soak sut --docker``.

No registry is needed and nothing is pulled. The image is a root filesystem of a few mount points and the usual
symlinks into /usr (``docker import``); the host's /usr and /etc, this interpreter's prefixes (the venv and the
Python it was made from) and the source tree are bind-mounted read-only, so a container runs exactly the code and
venv the launcher runs. Each service gets a container of its own on the host's network (it listens on loopback, as
a process does), with an optional memory limit, and the engine's kill, restart, pause and OOM killer act on it.

``ContainerSut`` is the launcher's ``Sut`` with each process replaced by a container seen through the part of
``subprocess.Popen`` the launcher and its supervisor use (``ContainerProcess``), so restarts, kills and supervision
are the same code for both runtimes. A restart starts the same container again: same name, same port, fresh memory.

Everything made here carries a label naming its owner (host, pid and the pid's start time): ``stop`` removes it,
and every start first removes what an owner that is gone (killed with -9) left behind.
"""

from __future__ import annotations

import dataclasses
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from sut.launchenv import SutError
from sut.launcher import STOP_TIMEOUT, Sut

ENGINE_TIMEOUT = 30  # seconds per engine call: a container start on a busy two-core machine takes a few
WAIT_CHUNK = 5.0  # ContainerProcess.wait asks the engine in stretches this long (a wait the caller can time out)
OWNER_LABEL = "chat-soak.owner"  # "<host>:<pid>:<start ticks>" of the process that made it
SUT_LABEL = "chat-soak.sut"  # the sut's id: its containers and its image
IMAGE_REPOSITORY = "chat-soak-rootfs"
MB = 2**20
MEMORY_KEYS = {"auth": "auth_memory_mb", "backend": "backend_memory_mb", "agent": "agent_memory_mb"}
ROOT = Path(__file__).resolve().parent.parent  # the source tree
# The root filesystem: mount points, and the top-level names a usr-merged system links into /usr. Where one of
# those is a real folder on the host (a system that is not usr-merged) it is bind-mounted read-only instead.
MOUNT_POINTS = ("usr", "etc", "proc", "sys", "dev", "tmp", "run", "root", "var/tmp")
TOP_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Of the launcher's environment a container gets only what the service reads: its settings and Python's own.
# The rest (DOCKER_HOST, tokens of the shell) means nothing inside and would show in `docker inspect`.
ENV_PREFIXES = ("SUT_", "PYTHON")
ENV_NAMES = ("PATH", "LANG", "LC_ALL", "TZ", "HOME")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def check_runtime(sut: Any, where: str = "sut") -> None:
    """SutError naming the key when the [sut] table (a dict or SutConfig) asks for what its runtime cannot do."""
    values = sut if isinstance(sut, dict) else dataclasses.asdict(sut)
    if values.get("runtime", "process") == "docker":
        return
    for key in MEMORY_KEYS.values():
        if values.get(key):
            raise SutError(
                f"{where}.{key} = {values[key]}: a memory limit needs {where}.runtime = 'docker' "
                "(a service run as a process has none)"
            )


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect() -> Any:
    """A client of the engine DOCKER_HOST names (else the default socket); SutError in one line if none answers."""
    try:
        import docker

        client = docker.from_env(timeout=ENGINE_TIMEOUT)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - whatever the SDK raises, the answer is the same: no engine
        raise SutError(
            f"sut.runtime = 'docker': no Docker engine answers at {engine_address()} ({_one_line(exc)}); "
            "start one or point DOCKER_HOST at one"
        ) from None
    return client


def engine_facts(client: Any) -> dict[str, str]:
    """What the report's "where it ran" box says of the engine."""
    version, info = client.version(), client.info()
    return {
        "version": str(version.get("Version", "?")),
        "api": str(version.get("ApiVersion", "?")),
        "cgroup": f"v{info.get('CgroupVersion', '?')} ({info.get('CgroupDriver', '?')})",
        "address": engine_address(),
    }


# --- owners, and what a gone one left ---------------------------------------------------------------------------
def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' when there is no such process): with the pid it names
    one process for ever, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command in (...) may hold spaces


def owner_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def owner_gone(tag: str) -> bool:
    """True when the owner ran on this host and is gone. Another host's (a shared engine) is never judged here."""
    parts = tag.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    return _start_ticks(int(parts[1])) != parts[2]


def sweep_stale(client: Any) -> list[str]:
    """Remove the containers and images whose owner is gone (killed with -9: its stop never ran); their names."""
    from docker.errors import APIError

    removed = []
    for found in client.api.containers(all=True, filters={"label": OWNER_LABEL}):
        if owner_gone((found.get("Labels") or {}).get(OWNER_LABEL, "")):
            try:
                client.api.remove_container(found["Id"], force=True)
                removed.append(found["Names"][0].lstrip("/"))
            except APIError:
                pass  # removed meanwhile by another start that swept too
    for image in client.api.images(filters={"label": OWNER_LABEL}):
        if owner_gone((image.get("Labels") or {}).get(OWNER_LABEL, "")):
            try:
                client.api.remove_image(image["Id"], force=True)
                removed.extend(image.get("RepoTags") or [image["Id"]])
            except APIError:
                pass
    return removed


# --- the image and the mounts -------------------------------------------------------------------------------------
def rootfs_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folders = sorted({str(Path(*Path(p).parts[: i + 1])) for p in MOUNT_POINTS for i in range(len(Path(p).parts))})
        for name in folders:
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o1777 if name.endswith("tmp") else 0o755
            tar.addfile(entry)
        for name in TOP_LINKS:
            host = Path("/") / name
            if host.is_symlink():
                entry = tarfile.TarInfo(name)
                entry.type, entry.linkname = tarfile.SYMTYPE, os.readlink(host)
                tar.addfile(entry)
    return buffer.getvalue()


def import_image(client: Any, sut_id: str, owner: str) -> str:
    client.api.import_image_from_data(
        rootfs_tar(),
        repository=IMAGE_REPOSITORY,
        tag=sut_id,
        changes=[f'LABEL {OWNER_LABEL}="{owner}" {SUT_LABEL}="{sut_id}"'],
    )
    return f"{IMAGE_REPOSITORY}:{sut_id}"


def bind_mounts(writable: list[Path]) -> dict[str, dict[str, str]]:
    """Read-only: /usr, /etc, real top-level folders of a system that is not usr-merged, this interpreter's
    prefixes and the source tree; each at its own path, none inside another. Read-write: ``writable`` (logs, data)."""
    read_only = [Path("/usr"), Path("/etc"), ROOT, Path(sys.prefix), Path(sys.base_prefix)]
    read_only += [Path(sys.exec_prefix), Path(sys.base_exec_prefix)]
    read_only += [
        Path("/") / name for name in TOP_LINKS if (Path("/") / name).is_dir() and not (Path("/") / name).is_symlink()
    ]
    kept: list[Path] = []
    for path in sorted({Path(os.path.abspath(p)) for p in read_only if p.exists()}, key=lambda p: len(p.parts)):
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    binds = {str(path): {"bind": str(path), "mode": "ro"} for path in kept}
    for path in writable:
        binds[str(path)] = {"bind": str(path), "mode": "rw"}
    return binds


def container_env(env: dict[str, str], log_path: Path) -> dict[str, str]:
    kept = {k: v for k, v in env.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}
    kept["SOAK_SERVICE_LOG"] = str(log_path)
    return kept


def reserve(host: str, port: int) -> socket.socket:
    """The launcher's hold on a service's port while the service runs in a container, which cannot be handed a
    socket: bound, never listening, with SO_REUSEADDR so the service inside (which binds with SO_REUSEADDR) may
    listen on it. The kernel then gives the port to no one asking for a free one (port 0), so two suts never meet."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SutError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


# --- one container as a process -----------------------------------------------------------------------------------
class ContainerProcess:
    """One start of a service's container, seen as a ``subprocess.Popen``: ``pid`` (the host's pid of the process
    inside), ``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill``, ``returncode``. A container ended by a
    signal reads as Popen's -signal (exit 137 -> -9); ``oom_killed`` says whether the kernel's OOM killer did it.
    A frozen (paused) container is thawed before it is signalled: a frozen process cannot take a signal."""

    def __init__(self, api: Any, container_id: str, state: dict[str, Any]) -> None:
        self.api = api
        self.id = container_id
        self.pid = int(state.get("Pid") or 0)
        self.started_at = state.get("StartedAt", "")
        self.returncode: int | None = None
        self.oom_killed = False

    def _state(self) -> dict[str, Any]:
        from docker.errors import NotFound

        try:
            return self.api.inspect_container(self.id)["State"]
        except NotFound:  # removed under us: as good as killed
            return {"Running": False, "ExitCode": 128 + signal.SIGKILL, "StartedAt": self.started_at}

    def poll(self) -> int | None:
        if self.returncode is None:
            state = self._state()
            # a start after this one (the supervisor's, a restart's) means this one has ended
            if not state.get("Running") or state.get("StartedAt") != self.started_at:
                code = int(state.get("ExitCode") or 0)
                self.returncode = -(code - 128) if code > 128 else code
                self.oom_killed = bool(state.get("OOMKilled"))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import requests

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = WAIT_CHUNK if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(f"container {self.id[:12]}", timeout or 0.0)
            try:
                self.api.wait(self.id, timeout=max(min(left, WAIT_CHUNK), 0.1))
            except requests.exceptions.RequestException:
                pass  # not ended within this stretch: ask again
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        from docker.errors import APIError

        if self.poll() is not None:
            return
        try:
            if self._state().get("Paused"):
                self.api.unpause(self.id)
            self.api.kill(self.id, signal=int(sig))
        except APIError:
            if self.poll() is None:  # refused although it still runs: that is news
                raise

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


# --- the sut ------------------------------------------------------------------------------------------------------
class ContainerSut(Sut):
    """The three services, each in its own container. ``containers[name]`` is the container's name (what the
    sampler's ``docker:NAME`` reads), ``memory_limits[name]`` its limit in bytes (0: none)."""

    def __init__(self, *args: Any, client: Any, limits: dict[str, int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = client
        self.sut_id = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.owner = owner_tag()
        self.memory_limits = limits
        self.containers = {name: f"chat-soak-{self.sut_id}-{name}" for name in limits}
        self.container_ids: dict[str, str] = {}
        try:
            self.engine = engine_facts(client)
            self.swept = sweep_stale(client)  # what a launcher killed with -9 left: its containers and image
            self.image = import_image(client, self.sut_id, self.owner)
        except Exception as exc:  # noqa: BLE001 - the engine's refusal, in one line
            raise SutError(f"sut.runtime = 'docker': the engine at {engine_address()}: {_one_line(exc)}") from None

    def _launch(self, name: str) -> None:
        """Start ``name``'s container (made on its first start, started again on every later one)."""
        api = self.client.api
        try:
            if name not in self.container_ids:
                self.container_ids[name] = self._create(name)
            api.start(self.container_ids[name])
        except Exception as exc:  # noqa: BLE001 - the engine's refusal, in one line, with the service named
            why = _one_line(exc)
            raise SutError(f"{name}: the engine could not start container {self.containers[name]}: {why}") from None
        state = api.inspect_container(self.container_ids[name])["State"]
        self.processes[name] = ContainerProcess(api, self.container_ids[name], state)  # type: ignore[assignment]
        self.pids[name] = self.processes[name].pid

    def _create(self, name: str) -> str:
        # the engine takes absolute paths only, and the same path inside: the log dir may be given relative
        log_path = Path(os.path.abspath(self.log_paths[name]))
        writable = [Path(os.path.abspath(p)) for p in (self.log_dir, self.data_dir) if p is not None]
        limit = self.memory_limits[name] or None
        # sh only to send the output to the service's log (as the process runtime does); exec: python is PID 1
        command = ["/bin/sh", "-c", 'exec "$@" >>"$SOAK_SERVICE_LOG" 2>&1', "sh", sys.executable, "-m", "sut", name]
        command += ["--host", self.host, "--port", str(self.ports[name])]
        made = self.client.api.create_container(
            self.image,
            command,
            name=self.containers[name],
            environment=container_env(self._envs[name], log_path),
            labels={OWNER_LABEL: self.owner, SUT_LABEL: self.sut_id},
            working_dir=str(ROOT),
            host_config=self.client.api.create_host_config(
                network_mode="host",
                binds=bind_mounts(writable),
                mem_limit=limit,
                memswap_limit=limit,  # no swap: the limit is where the OOM killer acts, not where paging starts
            ),
        )
        return made["Id"]

    def pause(self, name: str) -> str:
        """Freeze every process of ``name``'s container (the cgroup freezer): it takes no signal, no packet, no tick."""
        self.client.api.pause(self.container_ids[name])
        return f"container={self.containers[name]} via=docker"

    def unpause(self, name: str) -> None:
        from docker.errors import APIError

        try:
            self.client.api.unpause(self.container_ids[name])
        except APIError:
            if self.processes[name].poll() is None and self._paused(name):
                raise  # still frozen: that must be said

    def _paused(self, name: str) -> bool:
        return bool(self.client.api.inspect_container(self.container_ids[name])["State"].get("Paused"))

    def placement(self) -> dict[str, Any]:
        services = {
            name: {
                "runs_as": "container",
                "container": self.containers[name],
                "pid": self.pids.get(name),
                "memory_limit_bytes": self.memory_limits[name] or None,
            }
            for name in sorted(self.containers)
        }
        return {
            "runtime": "docker",
            "engine": self.engine,
            "image": self.image,
            "network": "host",
            "services": services,
        }

    def describe(self) -> list[str]:
        lines = [f"containers on Docker {self.engine['version']} at {self.engine['address']}, host network:"]
        for name in sorted(self.containers):
            limit = self.memory_limits[name]
            lines.append(f"  {name:8} {self.containers[name]}" + (f"  memory limit {limit // MB} MB" if limit else ""))
        return lines

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
        """Stop the services as the process runtime does, then remove their containers and the image."""
        try:
            return super().stop(timeout)
        finally:
            for container_id in self.container_ids.values():
                try:
                    self.client.api.remove_container(container_id, force=True)
                except Exception:  # noqa: BLE001 - gone already; anything left is swept at the next start
                    pass
            try:
                self.client.api.remove_image(self.image, force=True)
            except Exception:  # noqa: BLE001
                pass
            self.client.close()


def memory_limits(config: Any) -> dict[str, int]:
    """Bytes per service from the [sut] keys ``<service>_memory_mb`` (0: none)."""
    return {name: int(getattr(config, key)) * MB for name, key in MEMORY_KEYS.items()}
