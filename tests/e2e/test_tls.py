"""The TCP listener over TLS, with a certificate made for the test by openssl."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import Daemon, eventually, free_port

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")

SPECS = {
    "s.yaml": "sequences:\n  q:\n    request: true\n    nodes:\n"
    "      n: {category: job, type: noop}\n"
}


def make_cert(cert: Path, key: Path, cn: str = "localhost") -> None:
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
            f"/CN={cn}",
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


def https_daemon(tmp_path: Path, cn: str, config: str = "") -> tuple[Daemon, int, Path, Path]:
    """A started daemon serving HTTPS with a fresh certificate for `cn`: (daemon, port, cert
    file, key file)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_cert(cert, key, cn)
    port = free_port()
    cfg = tmp_path / "spind.yaml"
    cfg.write_text(f"{config}tls: {{cert: {cert}, key: {key}}}\n")
    env = {"SPIND_CONFIG": str(cfg), "SPIND_LISTEN": f"127.0.0.1:{port}"}
    return Daemon(tmp_path, SPECS, env=env).start(), port, cert, key


def test_https_listener(tmp_path: Path) -> None:
    d, port, cert, _key = https_daemon(tmp_path, "localhost")
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


def _served(port: int) -> str:
    """The subject of the certificate the listener serves now (a new handshake)."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=10)
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-subject"], input=pem.encode(), capture_output=True
    )
    return out.stdout.decode().strip()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_reload_loads_a_renewed_certificate_and_keeps_it_when_the_new_one_is_bad(
    tmp_path: Path, loop: str
) -> None:
    pytest.importorskip(loop)
    d, port, cert, key = https_daemon(tmp_path, "first", f"event_loop: {loop}\n")
    try:
        assert _served(port).endswith("CN = first")
        open_conn = ssl.create_default_context(cafile=str(cert)).wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1"
        )
        # renewed in place (as certbot or cert-manager do), then SIGHUP
        make_cert(cert, key, "second")
        d.signal(signal.SIGHUP)
        eventually(lambda: d.log().count("TLS certificate loaded") == 1)
        assert _served(port).endswith("CN = second")
        # a connection made before the reload goes on with its own
        assert "first" in str(open_conn.getpeercert())
        open_conn.close()
        # a key that does not match the certificate: refused, the running pair stays
        other_cert, other_key = tmp_path / "other.pem", tmp_path / "other-key.pem"
        make_cert(other_cert, other_key, "third")
        key.write_bytes(other_key.read_bytes())
        d.signal(signal.SIGHUP)
        eventually(lambda: "tls: cannot load certificate" in d.log())
        assert _served(port).endswith("CN = second")
        status, health = d.call("GET", "/api/v1/health")
        assert status == 200 and health["configOk"] is False
        assert "tls: cannot load certificate" in health["configErrors"][0]
        # fixed: the next reload takes it
        cert.write_bytes(other_cert.read_bytes())
        d.signal(signal.SIGHUP)
        eventually(lambda: d.log().count("TLS certificate loaded") == 2)
        assert _served(port).endswith("CN = third")
        assert d.call("GET", "/api/v1/health")[1]["configOk"] is True
    finally:
        d.close()
