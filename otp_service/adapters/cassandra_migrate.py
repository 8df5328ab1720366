"""`otp-service migrate`: apply the numbered files of `cql/`, in order, each once.

The files are the ones a DBA applies with `cqlsh -f`; this command runs the same statements through the driver,
records each applied file and its SHA-256 in `<keyspace>.schema_migrations`, skips recorded files, and refuses to
go on if a recorded file has changed since (a schema change is a new numbered file, never an edit).
`--keyspace` retargets the files: their `CREATE KEYSPACE ... otp` and `USE otp` name the target instead.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..envreader import ConfigError
from .cassandra_settings import CassandraSettings

log = logging.getLogger("otp_service.migrate")

_FILE_NAME = re.compile(r"^(\d+)_[\w.-]+\.cql$")
_CREATE_KEYSPACE = re.compile(r"^(CREATE\s+KEYSPACE\s+(?:IF\s+NOT\s+EXISTS\s+)?)(\"?\w+\"?)", re.IGNORECASE)
_USE = re.compile(r"^(USE\s+)(\"?\w+\"?)\s*$", re.IGNORECASE)
_TRACKING = (
    "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations ("
    "filename text PRIMARY KEY, checksum text, applied_on timestamp) "
    "WITH comment = 'otp-service migrate: the cql/ files applied to this keyspace'"
)


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class CqlFile:
    path: Path
    checksum: str
    statements: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.path.name


def default_cql_dir() -> Path:
    configured = os.environ.get("OTP_CQL_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "cql"


def load_files(folder: Path, keyspace: str) -> list[CqlFile]:
    if not folder.is_dir():
        raise MigrationError(f"no cql folder at {folder}")
    numbered = [(int(found.group(1)), p) for p in folder.iterdir() if (found := _FILE_NAME.match(p.name))]
    names = [p for _, p in sorted(numbered, key=lambda pair: pair[0])]
    files = []
    for path in names:
        data = path.read_bytes()
        statements = tuple(_retarget(s, keyspace) for s in split_statements(data.decode()))
        files.append(CqlFile(path, hashlib.sha256(data).hexdigest(), statements))
    return files


def split_statements(text: str) -> list[str]:
    """Statements of a CQL file, without comments; `;` inside quotes or comments does not split."""
    statements, current, i, n = [], [], 0, len(text)
    while i < n:
        two = text[i:i + 2]
        c = text[i]
        if two in ("--", "//"):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif two == "/*":
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c in ("'", '"'):
            end = i + 1
            while end < n:
                if text[end] == c and text[end + 1:end + 2] == c:
                    end += 2
                elif text[end] == c:
                    break
                else:
                    end += 1
            current.append(text[i:end + 1])
            i = end + 1
        elif c == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(c)
            i += 1
    statements.append("".join(current))
    return [" ".join(s.split()) for s in statements if s.strip()]


def _retarget(statement: str, keyspace: str) -> str:
    for pattern in (_CREATE_KEYSPACE, _USE):
        if pattern.match(statement):
            return pattern.sub(lambda m: m.group(1) + keyspace, statement, count=1)
    return statement


_SCHEMA_SETTLE_SECONDS = 60.0


def _execute(session, statement: str, params: tuple | None = None):
    """Run one statement of a migration, after the cluster agrees on the schema so far.

    After a DDL the driver waits for every node to report the same schema version, but that report travels by gossip:
    on a fresh cluster on a busy machine, a node could still be behind when the next statement reached it, which
    answered "Keyspace ... doesn't exist" or INCOMPATIBLE_SCHEMA (seen in tests/test_cluster.py). Such a refusal
    changes nothing, so it is tried again, for up to _SCHEMA_SETTLE_SECONDS; anything else is raised at once."""
    from cassandra import InvalidRequest, WriteFailure

    deadline = time.monotonic() + _SCHEMA_SETTLE_SECONDS
    while True:
        try:
            return session.execute(statement, params)
        except (InvalidRequest, WriteFailure) as exc:
            behind = "doesn't exist" in str(exc) or "INCOMPATIBLE_SCHEMA" in str(exc) or "unconfigured" in str(exc)
            if not behind or time.monotonic() > deadline:
                raise
            session.cluster.control_connection.wait_for_schema_agreement(wait_time=5)
            time.sleep(0.5)


def migrate(session, keyspace: str, files: list[CqlFile], *, dry_run: bool = False,
            say: Callable[[str], None] = print) -> list[str]:
    """Apply what is not yet applied; returns the names applied. `session` is a connected driver Session."""
    applied = _applied(session, keyspace)
    for f in files:
        if f.name in applied and applied[f.name] != f.checksum:
            raise MigrationError(
                f"{f.name} was applied with checksum {applied[f.name][:12]}… but now reads {f.checksum[:12]}…; "
                "applied files must not change: add a new numbered file instead"
            )
    done = []
    for f in files:
        if f.name in applied:
            say(f"skip   {f.name} (applied)")
            continue
        if dry_run:
            say(f"would apply {f.name} ({len(f.statements)} statements)")
            continue
        for statement in f.statements:
            _execute(session, statement)
        _execute(session, _TRACKING.format(ks=keyspace))
        _execute(
            session,
            f"INSERT INTO {keyspace}.schema_migrations (filename, checksum, applied_on) VALUES (%s, %s, %s)",
            (f.name, f.checksum, int(time.time() * 1000)),
        )
        say(f"apply  {f.name} ({len(f.statements)} statements)")
        done.append(f.name)
    return done


def _applied(session, keyspace: str) -> dict[str, str]:
    exists = session.execute(
        "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    ).one()
    if exists is None:
        return {}
    _execute(session, _TRACKING.format(ks=keyspace))
    return {row[0]: row[1] for row in _execute(session, f"SELECT filename, checksum FROM {keyspace}.schema_migrations")}


def migrate_cluster(settings: CassandraSettings, keyspace: str, cql_dir: Path, *, dry_run: bool = False,
                    say: Callable[[str], None] = print) -> list[str]:
    from dataclasses import replace

    from .cassandra_store import build_cluster

    files = load_files(cql_dir, keyspace)
    # DDL waits for schema agreement: give it longer than a request of the service.
    cluster = build_cluster(replace(settings, request_timeout=max(settings.request_timeout, 30.0)))
    # The driver waits this long after each DDL for every node to agree on the schema (default 10 s), then goes on:
    # on a fresh three-node cluster on a busy machine that was too short, and the next write failed with
    # INCOMPATIBLE_SCHEMA from the nodes still behind.
    cluster.max_schema_agreement_wait = 60
    try:
        session = cluster.connect()
        return migrate(session, keyspace, files, dry_run=dry_run, say=say)
    finally:
        cluster.shutdown()


def migrate_from_settings(
    settings: CassandraSettings, *, keyspace: str | None, cql_dir: str | None, dry_run: bool
) -> int:
    if not settings.contact_points:
        raise ConfigError("OTP_CASSANDRA_CONTACT_POINTS is required for migrate")
    target = keyspace or settings.keyspace
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", target):
        raise ConfigError(f"--keyspace must be a plain identifier, got {target!r}")
    try:
        migrate_cluster(settings, target, Path(cql_dir) if cql_dir else default_cql_dir(), dry_run=dry_run)
    except MigrationError as exc:
        print(f"otp-service migrate: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # driver failures: say what, not a trace
        print(f"otp-service migrate: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
