"""A throwaway PostgreSQL cluster: initdb in a temporary folder, its own port, stopped at will.

For tests that take the database away from a running server, so that the machine's shared
server is never stopped. initdb and postgres refuse to run as root: as root they run as the
``postgres`` user. Durability is traded for speed (``fsync=off``), but commits stay synchronous,
so a commit that was answered survives any stop, ``immediate`` included.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.loopback import free_port

INSTALLS = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL binaries here, or no user that may run them."""


def bin_dir() -> Path:
    """The newest installed version's ``bin`` folder, else the folder of ``initdb`` on PATH."""
    versions = sorted(
        (p for p in INSTALLS.glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: [int(part) for part in p.parent.name.split(".") if part.isdigit()],
    )
    if versions:
        return versions[-1]
    initdb = shutil.which("initdb")
    if initdb is None:
        raise ClusterUnavailable(f"no PostgreSQL binaries (nothing in {INSTALLS}, no initdb)")
    return Path(initdb).resolve().parent


@dataclass(frozen=True)
class PgCluster:
    root: Path
    port: int
    bin: Path
    as_user: tuple[str, ...]
    """The command prefix that runs the server's programs as their user (empty: as we are)."""

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c full_page_writes=off -c shared_buffers=32MB"
        )
        done = self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log), "-o", options)
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stdout}{done.stderr}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: end the sessions; ``immediate``: as if it crashed)."""
        done = self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {done.stdout}{done.stderr}")

    @property
    def running(self) -> bool:
        return self._pg_ctl("status").returncode == 0

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), *args]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=90)


def _server_user() -> tuple[str, ...]:
    if os.geteuid() != 0:
        return ()
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ClusterUnavailable(
            f"running as root, and there is no {SERVER_USER!r} user to run PostgreSQL as"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ClusterUnavailable("running as root, and there is no runuser to drop root with")
    return (runuser, "-u", SERVER_USER, "--")


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A new cluster, started, on a free port (user ``postgres``, trust auth, loopback only);
    stopped and deleted afterwards. ``ClusterUnavailable`` says why there can be none."""
    binaries, as_user = bin_dir(), _server_user()
    # As root, the folder must be the server user's, in a place that user can reach.
    root = Path(tempfile.mkdtemp(prefix="waimai-pg-", dir="/tmp" if as_user else None))
    try:
        if as_user:
            shutil.chown(root, SERVER_USER)
        cluster = PgCluster(root, free_port(), binaries, as_user)
        initdb = [str(binaries / "initdb"), "-D", str(cluster.data), "-U", "postgres"]
        initdb += ["-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        done = subprocess.run(
            [*as_user, *initdb], capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0:
            failure = f"initdb failed: {done.stderr.strip()[-1000:]}"
            if not as_user:
                raise ClusterUnavailable(failure)
            raise RuntimeError(failure)
        cluster.start()
        try:
            yield cluster
        finally:
            if cluster.running:
                cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)
