"""A real PostgreSQL server for the tests: Debian's `postgresql` package (`.ci/run` installs it),
started in a temporary folder on a free loopback port, trust authentication, fsync off (the tests
check behaviour, not durability). Each test gets a fresh database on it."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def server_bin() -> Path | None:
    """The folder of initdb/pg_ctl/postgres: Debian keeps them off PATH, per major version."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One postgres process; ``stop``/``start`` let a test take the database away and bring it back."""

    def __init__(self) -> None:
        # its own folder under /tmp: pytest's are private to root, and postgres runs as another user there
        root = Path(tempfile.mkdtemp(prefix="smallfleet-pg-"))
        bin_dir = server_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL's server is not installed: apt-get install postgresql (.ci/run does)")
        self.bin, self.root, self.port = bin_dir, root, _free_port()
        self.data = root / "data"
        # postgres refuses to run as root: there, run it as the package's own user
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = "postgres" if _has_user("postgres") else "nobody"
            self._as = ["runuser", "-u", user, "--"]
            shutil.chown(root, user=user)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "smallfleet", "--no-sync",
                   "-E", "UTF8"])
        self.start()

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(self._as + cmd, check=True, capture_output=True, cwd="/", timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://smallfleet@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off -c max_connections=200")
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start"])

    @property
    def pid(self) -> int:
        """The postmaster's process id (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # a test left it stopped
        shutil.rmtree(self.root, ignore_errors=True)

    def database(self, name: str) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + "/" + name


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
