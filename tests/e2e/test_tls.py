"""The TCP listener over TLS, with a certificate made for the test by openssl."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import Daemon

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")

SPECS = {
    "s.yaml": "sequences:\n  q:\n    request: true\n    nodes:\n"
    "      n: {category: job, type: noop}\n"
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_https_listener(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    cfg = tmp_path / "spind.yaml"
    cfg.write_text(f"tls: {{cert: {cert}, key: {key}}}\n")
    d = Daemon(
        tmp_path, SPECS, env={"SPIND_CONFIG": str(cfg), "SPIND_LISTEN": f"127.0.0.1:{port}"}
    ).start()
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        conn.request("POST", "/api/v1/requests", body=json.dumps({"type": "q", "args": {}}))
        resp = conn.getresponse()
        assert resp.status == 201, resp.read()
        assert json.loads(resp.read())["type"] == "q"
        conn.close()
        # plain HTTP on the TLS port is not served
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            plain.request("GET", "/api/v1/version")
            plain.getresponse().read()
        plain.close()
    finally:
        d.close()
