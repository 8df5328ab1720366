"""`otp-service`: serve (gunicorn), migrate (apply cql/), new-api-key, new-encryption-key."""
from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otp-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service under gunicorn")
    serve.add_argument("--bind", default=os.environ.get("OTP_BIND", "127.0.0.1:8080"), help="HOST:PORT")
    serve.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: 2 x CPUs + 1, max 8)")

    migrate = commands.add_parser("migrate", help="apply the cql/ files to Cassandra, each once")
    migrate.add_argument("--keyspace", default=None, help="target keyspace (default: OTP_CASSANDRA_KEYSPACE)")
    migrate.add_argument("--cql-dir", default=None, help="folder of numbered .cql files (default: the project's)")
    migrate.add_argument("--dry-run", action="store_true", help="say what would be applied, apply nothing")

    commands.add_parser("new-api-key", help="print a new API key and the SHA-256 digest for OTP_API_KEYS")
    commands.add_parser("new-encryption-key", help="print a new key for OTP_ENCRYPTION_KEYS")

    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"otp-service: configuration error: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    """gunicorn with gunicorn.conf.py (see server.py); every line it and the workers log is a JSON object."""
    import logging

    from .logs import configure_from, new_api_key
    from .server import run

    settings = Settings.from_env()
    configure_from(settings)
    say = logging.getLogger("otp_service.serve")
    if not settings.api_key_hashes:
        # One key for every worker: made here, before the fork, and handed down as its digest.
        key, digest = new_api_key()
        os.environ["OTP_API_KEYS"] = digest
        say.warning("development: OTP_API_KEYS is unset; accepting the API key %s (Authorization: Bearer <key>)", key,
                    extra={"_highlight": True})
    if settings.store == "sqlite":
        from ..bootstrap import load_keys

        load_keys(settings)  # creates the development key file once, before workers race for it
    return run(bind=args.bind, workers=args.workers)


def _migrate(args: argparse.Namespace) -> int:
    from ..adapters.cassandra_migrate import migrate_from_settings

    settings = Settings.from_env()
    return migrate_from_settings(settings.cassandra, keyspace=args.keyspace, cql_dir=args.cql_dir, dry_run=args.dry_run)


def _new_api_key(args: argparse.Namespace) -> int:
    from .logs import new_api_key

    key, digest = new_api_key()
    print(f"api key (give to the caller):   {key}")
    print(f"OTP_API_KEYS entry (sha256):    {digest}")
    return 0


def _new_encryption_key(args: argparse.Namespace) -> int:
    from ..adapters.crypto import new_key

    print(new_key())
    return 0


_COMMANDS = {
    "serve": _serve,
    "migrate": _migrate,
    "new-api-key": _new_api_key,
    "new-encryption-key": _new_encryption_key,
}

if __name__ == "__main__":
    sys.exit(main())
