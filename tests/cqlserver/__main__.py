"""Run the CQL test server by hand: ``python -m tests.cqlserver --port 9042``."""
from __future__ import annotations

import argparse
import logging
import signal
import threading

from .server import CqlTestServer


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.cqlserver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9042)
    parser.add_argument("--username", help="require PasswordAuthenticator credentials")
    parser.add_argument("--password")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    server = CqlTestServer(host=args.host, port=args.port, username=args.username, password=args.password)
    server.start()
    print("CQL test server listening on %s:%d (Ctrl-C to stop)" % (args.host, server.port), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
