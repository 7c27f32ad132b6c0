"""A real redis-server for the scale tests: one TLS cluster node on 127.0.0.1.

The scale profile deploys a Redis *cluster* over TLS (``redis_type: redis_cluster``,
``ssl=true``); so that the profile file stays the one a user deploys, the test server is
the same kind: a single cluster node owning all 16384 slots, TLS only, with a throwaway
CA. Clients trust that CA through SSL_CERT_FILE (Python's default verify paths), so the
profile needs nothing but the address from the environment.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    ca_file: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _write_certs(where: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def cert(subject, issuer, key, signer, ca: bool, san=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("onepiece-test-ca", "onepiece-test-ca", ca_key, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    server = cert(HOST, "onepiece-test-ca", key, ca_key, False,
                  [x509.IPAddress(ipaddress.ip_address(HOST))])
    paths = where / "ca.crt", where / "server.crt", where / "server.key"
    pem = serialization.Encoding.PEM
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(server.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


@contextmanager
def redis_cluster_node(workdir: Path, timeout_s: float = 30.0) -> Iterator[RedisServer]:
    """Start redis-server (TLS, cluster mode) in ``workdir``; always stop it afterwards."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:  # a failure, not a skip: `make setup` installs it
        raise RuntimeError("redis-server is not installed (make setup installs the Debian package)")
    ca, crt, key = _write_certs(workdir)
    port, bus = free_port(), free_port()
    args = [
        binary, "--bind", HOST, "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", str(crt), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
        "--tls-auth-clients", "no", "--tls-cluster", "yes",
        "--cluster-enabled", "yes", "--cluster-port", str(bus),
        "--cluster-config-file", str(workdir / "nodes.conf"),
        "--dir", str(workdir), "--save", "", "--appendonly", "no", "--daemonize", "no",
    ]
    log = (workdir / "redis.log").open("w")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    server = RedisServer(HOST, port, ca)
    try:
        client = redis.Redis(host=HOST, port=port, ssl=True, ssl_ca_certs=str(ca))
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(workdir / 'redis.log').read_text()[-2000:]}")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
            if time.monotonic() > deadline:
                raise RuntimeError("the redis cluster node never reached cluster_state:ok")
            time.sleep(0.1)
        client.close()
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
