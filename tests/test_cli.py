"""The `otp-service` command line."""
from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time

import requests

from otp_service.adapters.crypto import parse_key
from otp_service.entrypoints.cli import main


def test_new_api_key_prints_a_key_and_its_sha256(capsys):
    assert main(["new-api-key"]) == 0
    out = capsys.readouterr().out
    key = re.search(r"api key \(give to the caller\):\s+(\S+)", out).group(1)
    digest = re.search(r"OTP_API_KEYS entry \(sha256\):\s+([0-9a-f]{64})", out).group(1)
    assert hashlib.sha256(key.encode()).hexdigest() == digest


def test_new_encryption_key_prints_a_usable_key(capsys):
    assert main(["new-encryption-key"]) == 0
    assert len(parse_key(capsys.readouterr().out.strip())) == 32


def test_a_bad_variable_stops_serve_with_a_message_naming_it(capsys, monkeypatch):
    monkeypatch.setenv("OTP_MAX_SENDS", "many")
    assert main(["serve"]) == 2
    assert "OTP_MAX_SENDS" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_OTHER = b'{"request": {"key": "other@example.com", "type": "email"}}'


def _raw_post(port: int, key: str, headers: list[bytes], body: bytes, half_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        head = [b"POST /v1/otp/generate HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: application/json",
                b"Connection: close", b"Authorization: Bearer " + key.encode(), *headers]
        conn.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        if half_close:
            conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer


def test_serve_runs_gunicorn_workers_that_share_one_development_key(tmp_path):
    """The README's first command: the service on the embedded store, with a printed development API key."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    env.update(OTP_SQLITE_PATH=str(tmp_path / "dev.db"), OTP_RESEND_COOLDOWN_SECONDS="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otp_service.entrypoints.cli", "serve", "--bind", f"127.0.0.1:{port}",
         "--workers", "2"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        key = None
        deadline = time.time() + 30
        while time.time() < deadline and key is None:
            line = proc.stderr.readline()
            found = re.search(r"accepting the API key (\S+)", line)
            key = found.group(1) if found else None
        assert key, "serve did not print a development API key"
        url = f"http://127.0.0.1:{port}"
        while time.time() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or a worker still booting on a busy machine
                time.sleep(0.2)
        statuses = {
            requests.post(f"{url}/v1/otp/generate", json={"request": {"key": "dev@example.com", "type": "email"}},
                          headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code
            for _ in range(4)  # spread over both workers; 4 is the send limit
        }
        assert statuses == {200}
        assert (tmp_path / "dev.db.key").exists()
        # Bodies under a real server: chunked (werkzeug reads it; gunicorn ends the stream), and half a body with
        # the whole one's Content-Length (the client gave up): a 400, not a 500 or a worker left waiting.
        chunked = _raw_post(port, key, [b"Transfer-Encoding: chunked"],
                            b"%x\r\n%s\r\n0\r\n\r\n" % (len(_OTHER), _OTHER))
        assert chunked.startswith(b"HTTP/1.1 200"), chunked
        short = _raw_post(port, key, [b"Content-Length: %d" % len(_OTHER)], _OTHER[:20], half_close=True)
        assert short.startswith(b"HTTP/1.1 400") and b"INVALID_REQUEST" in short, short
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert "dev@example.com" not in out + err
    assert "console" in out + err
