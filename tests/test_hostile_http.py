"""Malformed and hostile HTTP, against a real `otp-service serve` over raw sockets (issue 15, parts 2 to 6).

Every answer is the envelope with a 4xx, quickly, and without a traceback in the log: bodies gunicorn cannot read as
framed (chunked), requests gunicorn refuses before the app sees them (its own error pages), header-hostile msgids.
No log line carries the request line, the query string or a header value. Each test runs under gunicorn's gthread
and gevent workers: the refusals are answered in the envelope whichever worker class is configured.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from .support import API_KEY, unique_email
from .test_metrics import ServeProcess

PROJECT = Path(__file__).resolve().parents[1]
WORKER_CLASSES = ["gthread", "gevent"]
ANSWER_WITHIN = 5.0  # seconds; a worker left waiting shows up as a timeout



def fresh_body() -> bytes:
    """A valid generate, for a key of its own (a key sent to more than the send limit would be refused)."""
    return json.dumps({"request": {"key": unique_email(), "type": "email"}}).encode()


BODY = fresh_body()  # for requests refused before the app reads them
HEAD = (b"POST /v1/otp/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + API_KEY.encode() + b"\r\n")
# What the PII probes carry; none of it may appear in any log line.
LEAKY_EMAIL = "leaky.line@example.com"
LEAKY_PHONE = "98765 77777"


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def server(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"hostile-{request.param}")
    config = folder / "gunicorn.conf.py"
    # The project's gunicorn.conf.py, with only the worker class changed.
    config.write_text(
        "from runpy import run_path as _run_path\n"
        f"globals().update({{k: v for k, v in _run_path({str(PROJECT / 'gunicorn.conf.py')!r}).items()"
        " if not k.startswith('__')})\n"
        f"worker_class = {request.param!r}\n"
    )
    serve = ServeProcess(folder, workers=1, env={"OTP_GUNICORN_CONFIG": str(config), "OTP_ACCESS_LOG": "true"})
    try:
        serve.wait_healthy()
        assert any(f"Using worker: {request.param}" in r["message"] for r in serve.records()), serve.log()
        yield serve
    finally:
        log = serve.stop()
    leaked = [line for line in log.splitlines() if LEAKY_EMAIL in line or LEAKY_PHONE in line
              or "leaky" in line.lower()]
    assert not leaked, "a log line carried what the caller sent:\n" + "\n".join(leaked)


class Answer:
    def __init__(self, raw: bytes, seconds: float):
        self.raw, self.seconds = raw, seconds
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else None
        self.headers = {name.strip().lower(): value.strip()
                        for name, _, value in (line.partition(":") for line in lines[1:])}

    def envelope(self) -> dict:
        assert self.headers.get("content-type") == "application/json", self.raw[:300]
        return json.loads(self.body)


def exchange(port: int, data: bytes, *, half_close: bool = False) -> Answer:
    """Send `data` (from a thread, so a server that answers before reading it all is heard) and read one answer."""
    started = time.monotonic()
    conn = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN)

    def send():
        try:
            conn.sendall(data)
            if half_close:
                conn.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before taking everything: what a limit does
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = b""
    try:
        while True:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                raise AssertionError(f"no complete answer within {ANSWER_WITHIN} s: {received[:200]!r}") from None
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            head, sep, body = received.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break
    finally:
        conn.close()
    assert received, "the connection closed without an answer"
    return Answer(received, time.monotonic() - started)


def assert_refused(answer: Answer, status: int, api_id: str | None = None) -> dict:
    """An envelope refusal: the status, INVALID_REQUEST, CLIENT_ERROR, nothing cached."""
    assert answer.status == status, answer.raw[:400]
    body = answer.envelope()
    assert body["params"]["err"] == body["params"]["status"] == "INVALID_REQUEST"
    assert body["responseCode"] == "CLIENT_ERROR" and body["result"] == {}
    if api_id:
        assert body["id"] == api_id
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-request-id"] == body["params"]["msgid"]
    return body


def no_traceback_since(server: ServeProcess, mark: int) -> None:
    time.sleep(0.05)  # the worker writes its log line after it answered
    new = server.records()[mark:]
    assert not [r for r in new if "exc" in r or r["level"] == "error"], new


def chunked(body: bytes) -> bytes:
    return HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body


# -- part 2: chunked bodies ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size_line", [b"ZZ", b"-1", b"0x10", b" 37"], ids=["ZZ", "minus-1", "0x10", "space-37"])
def test_a_malformed_chunk_size_is_a_400_envelope_without_a_traceback(server, size_line):
    mark = len(server.records())
    answer = exchange(server.port, chunked(size_line + b"\r\n" + BODY + b"\r\n0\r\n\r\n"))
    assert_refused(answer, 400, "api.otp.generate")
    no_traceback_since(server, mark)


@pytest.mark.parametrize("body, half_close", [
    (b"5\r\n" + BODY + b"\r\n0\r\n\r\n", False),  # a chunk longer than its size
    (b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n", True),  # the stream ends before the last CRLF
    (b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\nX-Trailer: " + b"t" * 65536 + b"\r\n\r\n", False),  # 64 KiB trailer
], ids=["chunk-longer-than-its-size", "missing-final-crlf", "64-kib-trailer"])
def test_a_chunked_body_that_cannot_be_read_as_framed_is_a_400_envelope(server, body, half_close):
    mark = len(server.records())
    assert_refused(exchange(server.port, chunked(body), half_close=half_close), 400, "api.otp.generate")
    no_traceback_since(server, mark)


@pytest.mark.parametrize("size_line", [b"FFFFFFFFFFFFFFFFFFFF", b"F" * 1000, b"4001"], ids=["20-hex-digits",
                                                                                             "1000-hex-digits",
                                                                                             "16-kib-plus-1"])
def test_a_chunk_declared_larger_than_the_body_limit_is_a_413_at_once(server, size_line):
    """The worker does not wait for bytes the caller never sends: the declared size alone is over 16 KiB."""
    mark = len(server.records())
    answer = exchange(server.port, chunked(size_line + b"\r\n" + BODY + b"\r\n0\r\n\r\n"))
    assert_refused(answer, 413, "api.otp.generate")
    no_traceback_since(server, mark)


def test_a_10_mb_chunked_body_is_a_413(server):
    piece = b"%x\r\n%s\r\n" % (8192, b" " * 8192)  # JSON whitespace: only its size is wrong
    answer = exchange(server.port, chunked(piece * 1280 + b"0\r\n\r\n"))
    assert_refused(answer, 413, "api.otp.generate")


def test_a_chunked_body_within_the_limit_still_works(server):
    body = fresh_body()
    pieces = body[:20], body[20:]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    answer = exchange(server.port, chunked(body))
    assert answer.status == 200 and answer.envelope()["result"] == {"response": "SUCCESS"}


def test_an_unknown_transfer_coding_is_a_400_envelope_not_a_501_page(server):
    answer = exchange(server.port, HEAD + b"Transfer-Encoding: xchunked\r\n\r\n" + b"%x\r\n" % len(BODY) + BODY
                      + b"\r\n0\r\n\r\n")
    assert_refused(answer, 400, "api.otp")


# -- part 4: what gunicorn refuses before the app -------------------------------------------------------------------

GUNICORN_REFUSALS = {
    "malformed-request-line": (b"GARBAGE\r\n\r\n", 400),
    "no-version": (b"GET /health\r\n\r\n", 400),
    "http-9.9": (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    "nul-in-a-header": (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Note: a\x00b\r\n\r\n", 400),
    "del-in-a-header": (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Note: a\x7fb\r\n\r\n", 400),
    "lowercase-method": (b"get /health HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "post-star": (b"POST * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "10-kb-request-line": (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "64-kib-header": (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n", 431),
    "1000-headers": (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: a\r\n" % i for i in range(1000))
                     + b"\r\n", 431),
}


@pytest.mark.parametrize("name", list(GUNICORN_REFUSALS))
def test_a_request_gunicorn_refuses_is_answered_in_the_envelope_with_its_status(server, name):
    data, status = GUNICORN_REFUSALS[name]
    mark = len(server.records())
    answer = exchange(server.port, data)
    assert b"<html" not in answer.raw.lower()
    body = assert_refused(answer, status, "api.otp")
    assert body["ver"] == "v1" and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3}\+0000", body["ts"])
    assert answer.headers["connection"] == "close"
    no_traceback_since(server, mark)


# -- part 5: nothing the caller sent, in the log --------------------------------------------------------------------

def test_no_log_line_carries_the_request_line_query_string_or_a_header_value(server):
    """The issue's probe (an unencoded space in the request line), and the same values in a query string, a header
    and a path; the module's fixture then greps the whole log for them."""
    mark = len(server.records())
    probes = [
        b"GET /v1/otp/generate?phone=+91 98765 77777&email=leaky.line@example.com HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/otp/generate?phone=+91%2098765%2077777&email=leaky.line@example.com HTTP/1.1\r\nHost: x\r\n"
        b"User-Agent: leaky.line@example.com\r\nX-Request-ID: leaky.line@example.com\r\n\r\n",
        b"GET /v1/otp/leaky.line@example.com/98765%2077777 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"LEAKYLINE /v1/otp/generate HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Note: leaky.line@example.com\x00\r\n\r\n",
    ]
    statuses = [exchange(server.port, probe).status for probe in probes]
    assert statuses == [400, 405, 404, 405, 400]
    time.sleep(0.1)
    records = server.records()[mark:]
    access = [r for r in records if r["message"] == "access"]
    assert access and all(r["route"] in ("<unmatched>", "/v1/otp/generate", "/health") for r in access)
    assert all("path" not in r and "user_agent" not in r for r in access)
    for record in records:
        line = json.dumps(record)
        assert "leaky" not in line.lower() and "98765" not in line, line


# -- part 3: header-hostile msgids ----------------------------------------------------------------------------------

HOSTILE_MSGIDS = {
    "trailing-newline": "abc\n",
    "crlf-and-a-header": "abc\r\nX-Injected: 1",
    "several-hundred-characters": "m" * 500,
    "space-inside": "abc def",
    "line-separator": "abc\u2028def",
    "non-ascii": "abcé",
}


@pytest.mark.parametrize("name", list(HOSTILE_MSGIDS))
def test_a_header_hostile_msgid_in_the_body_is_replaced_by_a_new_uuid(server, name):
    body = json.dumps({"params": {"msgid": HOSTILE_MSGIDS[name]},
                       "request": {"key": unique_email(), "type": "email"}}).encode()
    answer = exchange(server.port, HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert answer.status == 200, answer.raw[:300]
    msgid = answer.envelope()["params"]["msgid"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", msgid)
    assert answer.headers["x-request-id"] == msgid


@pytest.mark.parametrize("value", [b"m" * 500, b"abc def", b"abc\xe9", b"abc;def", b"a" * 129],
                         ids=["500-characters", "space-inside", "latin-1-byte", "semicolon", "129-characters"])
def test_a_header_hostile_x_request_id_is_replaced_by_a_new_uuid(server, value):
    body = fresh_body()
    answer = exchange(server.port, HEAD + b"X-Request-ID: " + value + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
                      + body)
    assert answer.status == 200, answer.raw[:300]
    msgid = answer.envelope()["params"]["msgid"]
    assert msgid.encode() != value and len(msgid) == 36 and answer.headers["x-request-id"] == msgid


def test_a_plain_msgid_is_still_echoed(server):
    body = fresh_body()
    answer = exchange(server.port, HEAD + b"X-Request-ID: req-42.a:b\r\nContent-Length: %d\r\n\r\n" % len(body)
                      + body)
    assert answer.envelope()["params"]["msgid"] == "req-42.a:b" == answer.headers["x-request-id"]


# -- part 6: no-store on every API answer ----------------------------------------------------------------------------

def test_api_answers_through_gunicorn_carry_cache_control_no_store(server):
    body = fresh_body()
    answers = [
        exchange(server.port, HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body),
        exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"),
        exchange(server.port, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"),
    ]
    assert [a.status for a in answers] == [200, 200, 404]
    assert all(a.headers.get("cache-control") == "no-store" for a in answers)
