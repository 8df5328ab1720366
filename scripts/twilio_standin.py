"""A stand-in of Twilio's Messages API for scripts/bench.py: answers every message 201 after a fixed delay.

    python3 scripts/twilio_standin.py --port 0 --delay-ms 300      # prints "listening on 127.0.0.1:<port>"

asyncio, one protocol object per connection and no HTTP library, so that it is never the bottleneck: it holds
thousands of keep-alive connections and answers thousands of messages a second on a few percent of one core (the
delay is a timer, not a sleeping thread). It answers `POST /2010-04-01/Accounts/<sid>/Messages.json` with the
message JSON the real `twilio` client parses (sid, status queued), and anything else 404; it does not check
credentials (tests/standins/twilio_api.py is the faithful stand-in the tests use). On SIGTERM or SIGINT it prints
`served <n> most-waiting <m>` and exits.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

_OK_HEAD = b"HTTP/1.1 201 CREATED\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
_NOT_FOUND = b"HTTP/1.1 404 NOT FOUND\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
_BODY = (
    '{"sid": "SM%032x", "account_sid": "%s", "status": "queued", "num_segments": "1", "direction": "outbound-api", '
    '"api_version": "2010-04-01", "date_created": "Thu, 01 Jan 2026 00:00:00 +0000", "error_code": null, '
    '"error_message": null, "price": null, "uri": "/2010-04-01/Accounts/%s/Messages/SM%032x.json"}'
)


class Stats:
    served = 0
    waiting = 0
    most_waiting = 0


class TwilioProtocol(asyncio.Protocol):
    def __init__(self, delay: float, stats: Stats):
        self.delay = delay
        self.stats = stats
        self.buffer = b""
        self.transport = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            request_line = head.split(b"\r\n", 1)[0].split(b" ")
            path = request_line[1] if len(request_line) > 1 else b""
            parts = path.split(b"/")  # b"", b"2010-04-01", b"Accounts", sid, b"Messages.json"
            if request_line[0] == b"POST" and len(parts) == 5 and parts[4] == b"Messages.json":
                answer = self._message(parts[3].decode("ascii", "replace"))
            else:
                answer = _NOT_FOUND
            self.stats.waiting += 1
            self.stats.most_waiting = max(self.stats.most_waiting, self.stats.waiting)
            if self.delay > 0:
                self.loop.call_later(self.delay, self._send, answer)  # timers fire in order: answers stay in order
            else:
                self._send(answer)

    def _message(self, account_sid: str) -> bytes:
        self.stats.served += 1
        n = self.stats.served
        body = (_BODY % (n, account_sid, account_sid, n)).encode()
        return _OK_HEAD % len(body) + body

    def _send(self, answer: bytes) -> None:
        self.stats.waiting -= 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)

    def connection_lost(self, exc) -> None:
        self.transport = None


async def serve(port: int, delay: float) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: TwilioProtocol(delay, stats), "127.0.0.1", port, backlog=4096)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    print(f"served {stats.served} most-waiting {stats.most_waiting}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="how long each answer takes (default 0)")
    opts = parser.parse_args(argv)
    asyncio.run(serve(opts.port, opts.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
