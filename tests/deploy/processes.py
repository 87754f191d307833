"""Real ``waimai`` processes for the deployment tests: started on a store, awaited until ready
(their output shown if they are not), stopped whatever happens (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.config import Settings
from tests.support.loopback import free_port

WAIMAI = str(Path(sys.executable).parent / "waimai")


def environment(root: Path, db_url: str, **settings: str) -> dict[str, str]:
    """The test runner's environment without its own settings, plus the store's and
    ``settings``."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name.split("__")[0].lower() not in Settings.model_fields
    }
    return inherited | {
        "PYTHONUNBUFFERED": "1",
        "ENV": "test",
        "LOG_LEVEL": "INFO",
        "DB__URL": db_url,
        "DATA__DIR": str(root / "data"),
        "LOCAL__DIR": str(root / "models"),
        "API__RATE_LIMIT": "1000000/second",
        **settings,
    }


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Services:
    """The processes started so far, for ``wait_until`` to watch and ``supervised`` to stop."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Service] = []

    def start(self, name: str, args: list[str], env: dict[str, str], port: int = 0) -> Service:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [WAIMAI, *args], cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        service = Service(name, process, log, port)
        self.started.append(service)
        return service

    def api(self, name: str, env: dict[str, str]) -> Service:
        port = free_port()
        return self.start(name, ["api", "--port", str(port), "--no-access-log"], env, port)

    def worker(self, name: str, env: dict[str, str]) -> Service:
        return self.start(name, ["worker"], env)

    def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Poll ``predicate``; fail with every process's output if one exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not predicate():
            for service in self.started:
                code = service.process.poll()
                if code is not None:
                    raise AssertionError(
                        f"{service.name} exited ({code}) before {what}:\n{self.outputs()}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} after {timeout:.0f} s:\n{self.outputs()}")
            time.sleep(0.1)

    def wait_ready(self, *apis: Service, timeout: float = 60) -> None:
        self.wait_until(lambda: all(ready(api) for api in apis), "ready", timeout)

    def outputs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.output()[-4000:]}" for s in self.started)

    def stop(self) -> None:
        for service in self.started:
            if service.process.poll() is None:
                service.process.terminate()
        for service in self.started:
            try:
                service.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()


def ready(api: Service) -> bool:
    """``/readyz`` answers 200, and from ``api``'s own process: another test's server may have
    taken the port between ``free_port`` and the bind."""
    try:
        answered = httpx.get(f"{api.url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
    return answered and listens(api.process.pid, api.port)


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on 127.0.0.1:``port`` (Linux's /proc;
    elsewhere, assumed)."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        return True
    listening = {
        f"socket:[{fields[9]}]"
        for fields in (line.split() for line in table.read_text().splitlines()[1:])
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port
    }
    try:
        return any(os.readlink(fd) in listening for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


@contextmanager
def supervised(root: Path) -> Iterator[Services]:
    services = Services(root)
    try:
        yield services
    finally:
        services.stop()
