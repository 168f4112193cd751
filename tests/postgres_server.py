"""A throwaway PostgreSQL server on 127.0.0.1 for the tests (Debian's ``postgresql`` package)."""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SETUP_HINT = "run `bash scripts/setup.sh` (it installs Debian's postgresql package)"


class PostgresNotInstalled(RuntimeError):
    """initdb/pg_ctl could not be found."""


def find_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl: the newest /usr/lib/postgresql/*/bin, else the PATH."""
    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    for initdb in candidates:
        bin_dir = Path(initdb).parent
        if (bin_dir / "pg_ctl").is_file():
            return bin_dir
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    raise PostgresNotInstalled(f"PostgreSQL's initdb/pg_ctl not found (no /usr/lib/postgresql/*/bin, none on PATH): "
                               f"{SETUP_HINT}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A private cluster (trust auth, superuser ``postgres``) in a temporary directory.

    The constructor runs initdb; ``start()``/``stop()`` may be called repeatedly (the data survives);
    ``close()`` stops the server and deletes the directory. Also usable as a context manager (started on entry).
    """

    def __init__(self, *, bin_dir: str | Path | None = None, port: int | None = None,
                 timeout: float = 60.0) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir is not None else find_bin_dir()
        for tool in ("initdb", "pg_ctl"):
            if not (self.bin_dir / tool).is_file():
                raise PostgresNotInstalled(f"{self.bin_dir / tool} not found: {SETUP_HINT}")
        self.port = port if port is not None else free_port()
        self.timeout = timeout
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self._as_postgres:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresNotInstalled(f"running as root but there is no `postgres` user: {SETUP_HINT}") from None
        # Not pytest's tmp_path: that is mode 700 under root, so the postgres user could not enter it.
        self.data_dir = Path(tempfile.mkdtemp(prefix="autotune-pg-"))
        self.log_path = self.data_dir / "server.log"
        self.running = False
        try:
            if self._as_postgres:
                os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
            self._run("initdb", "--auth=trust", "-U", "postgres", "--no-locale", "--encoding=UTF8",
                      "-D", str(self.data_dir), what="initdb")
        except BaseException:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        """SQLAlchemy URL of database ``name`` on this server."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections (no-op when running)."""
        if self.running:
            return
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {shlex.quote(str(self.data_dir))}"
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
                  "-t", str(int(self.timeout)), "-o", options, "start", what="pg_ctl start")
        self.running = True

    def stop(self) -> None:
        """Stop the server (fast shutdown) and wait for it to exit (no-op when stopped)."""
        if not self.running:
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(int(self.timeout)), "stop",
                  what="pg_ctl stop")
        self.running = False

    def create_database(self, name: str) -> str:
        """Create a fresh database ``name`` and return its SQLAlchemy URL."""
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                connect_timeout=10)
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.database_url(name)

    def close(self) -> None:
        """Stop the server if it runs and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of server.log ('' when there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, tool: str, *args: str, what: str) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        try:
            # cwd: the postgres user may not be allowed into the caller's working directory.
            proc = subprocess.run(cmd, cwd=self.data_dir, capture_output=True, text=True,
                                  timeout=self.timeout + 30)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{what} timed out after {exc.timeout:.0f}s; server.log tail:\n{self.log_tail()}") from None
        if proc.returncode != 0:
            raise RuntimeError(f"{what} failed (exit {proc.returncode}): {shlex.join(cmd)}\n"
                               f"{(proc.stdout + proc.stderr).strip()}\nserver.log tail:\n{self.log_tail()}")
