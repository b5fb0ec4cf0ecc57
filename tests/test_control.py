"""The control socket against a real daemon process: framing, errors, peers, many clients."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from mimocorb2 import logsetup
from mimocorb2.control import protocol as P
from mimocorb2.control import server as control_server
from mimocorb2.control.client import Client, DaemonUnreachable, RequestFailed, acall
from mimocorb2.testing import DaemonProcess


@pytest.fixture(scope="module")
def daemon():
    # a directory others may traverse, for the permission tests
    base = Path(tempfile.mkdtemp(prefix="mimocorb2-test-ctl-"))
    os.chmod(base, 0o755)
    d = DaemonProcess(base / "run" / "control.sock").start()
    yield d
    assert d.stop() == 0
    for p in sorted(base.rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() else p.rmdir()
    base.rmdir()


def raw_exchange(path: Path, payload: bytes, read_lines: int = 1) -> list[dict]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(path))
        s.sendall(payload)
        buf = b""
        while buf.count(b"\n") < read_lines:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return [json.loads(line) for line in buf.splitlines() if line.strip()]


# ------------------------------------------------------------------------ protocol units
def test_parse_request_rules():
    ok = P.parse_request(P.encode(P.make_request("status")))
    assert ok["cmd"] == "status" and ok["args"] == {}
    for line, code in [
        (b"{nope\n", P.E_BAD_REQUEST),
        (b"[1,2]\n", P.E_BAD_REQUEST),
        (b'{"v": 99, "cmd": "status"}\n', P.E_VERSION),
        (b'{"v": 1}\n', P.E_BAD_REQUEST),
        (b'{"v": 1, "cmd": "status", "args": [1]}\n', P.E_BAD_REQUEST),
        (b'{"v": 1, "cmd": "fly"}\n', P.E_UNKNOWN_COMMAND),
        (b"\xff\xfe\n", P.E_BAD_REQUEST),
        (b"x" * (P.MAX_REQUEST_BYTES + 1), P.E_TOO_LARGE),
        (b'{"v": true, "cmd": "status"}\n', P.E_VERSION),  # a bool is not the version 1
        (b'{"v": 1.0, "cmd": "status"}\n', P.E_VERSION),
        (b'{"v": 1, "cmd": "status", "id": ' + b"1" + b"0" * 400 + b"}\n", P.E_BAD_REQUEST),
        (b'{"v": 1, "cmd": "status", "id": ' + b"9" * 5000 + b"}\n", P.E_BAD_REQUEST),
        (b'{"v": 1, "cmd": "status", "id": [1]}\n', P.E_BAD_REQUEST),
        (b'{"v": 1, "cmd": "status", "id": true}\n', P.E_BAD_REQUEST),
        (b'{"v": 1, "cmd": "status", "args": {"x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}\n",
         P.E_BAD_REQUEST),
    ]:
        with pytest.raises(P.ProtocolError) as err:
            P.parse_request(line)
        assert err.value.code == code, line[:40]


def test_socket_path_resolution_order(tmp_path):
    uid = os.getuid()
    env = {}
    assert P.default_socket_path(env) == Path(f"/tmp/mimocorb2-{uid}/control.sock")
    env["XDG_RUNTIME_DIR"] = "/run/user/7"
    assert P.default_socket_path(env) == Path("/run/user/7/mimocorb2/control.sock")
    env["RUNTIME_DIRECTORY"] = "/run/mimocorb2"
    assert P.default_socket_path(env) == Path("/run/mimocorb2/control.sock")
    env["MIMOCORB2_SOCKET"] = str(tmp_path / "x.sock")
    assert P.default_socket_path(env) == tmp_path / "x.sock"
    assert P.resolve_socket_path(tmp_path / "cli.sock", env) == tmp_path / "cli.sock"


# ------------------------------------------------------------------------ against the daemon
def test_socket_mode_is_0660(daemon):
    st = daemon.socket_path.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_malformed_requests_get_errors_and_connection_survives(daemon):
    replies = raw_exchange(
        daemon.socket_path,
        b"this is not json\n"
        b'{"v": 1, "cmd": "warp", "id": 2}\n'
        b'{"v": 7, "cmd": "status", "id": 3}\n'
        b'["v", 1]\n'
        b'{"v": 1, "cmd": "start", "id": 5, "args": {}}\n'
        b'{"v": 1, "cmd": "ping", "id": 6}\n',
        read_lines=6,
    )
    codes = [r.get("error", {}).get("code") for r in replies]
    assert codes == [P.E_BAD_REQUEST, P.E_UNKNOWN_COMMAND, P.E_VERSION, P.E_BAD_REQUEST,
                     P.E_BAD_REQUEST, None]
    assert replies[-1]["ok"] and replies[-1]["id"] == 6 and replies[-1]["v"] == P.PROTOCOL_VERSION
    assert daemon.status()["state"] == "idle"


def test_oversized_request_is_refused(daemon):
    big = b'{"v": 1, "cmd": "status", "args": {"pad": "' + b"x" * (2 * P.MAX_REQUEST_BYTES) + b'"}}\n'
    replies = raw_exchange(daemon.socket_path, big)
    assert replies[0]["ok"] is False
    assert replies[0]["error"]["code"] == P.E_TOO_LARGE
    # just under the limit is fine
    pad = P.MAX_REQUEST_BYTES - 200
    near = b'{"v": 1, "cmd": "ping", "args": {"pad": "' + b"y" * pad + b'"}}\n'
    assert raw_exchange(daemon.socket_path, near)[0]["ok"] is True
    assert daemon.call("ping")["pong"] is True


def test_client_disconnecting_mid_request_does_not_disturb(daemon):
    for payload in (b'{"v": 1, "cmd": "sta', b"x" * 500_000, b""):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(daemon.socket_path))
            if payload:
                s.sendall(payload)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # sends, never reads the reply
        s.connect(str(daemon.socket_path))
        s.sendall(P.encode(P.make_request("status")))
    assert daemon.call("status")["state"] == "idle"


def test_last_request_without_newline_is_answered(daemon):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(daemon.socket_path))
        s.sendall(P.encode(P.make_request("ping"))[:-1])
        s.shutdown(socket.SHUT_WR)
        reply = json.loads(s.makefile("rb").readline())
    assert reply["ok"] and reply["result"]["pong"]


def test_idle_status_schema(daemon):
    st = daemon.status()
    assert st["state"] == "idle" and st["run"] is None
    assert st["buffers"] == {} and st["workers"] == {}
    assert st["daemon"]["pid"] == daemon.pid and st["daemon"]["protocol"] == P.PROTOCOL_VERSION


async def test_many_clients_at_once(daemon):
    results = await asyncio.gather(*(acall("status", path=daemon.socket_path) for _ in range(64)))
    assert all(r["state"] == "idle" for r in results)


def test_one_connection_many_requests(daemon):
    with Client(daemon.socket_path) as c:
        for _ in range(100):
            assert c.call("ping")["pid"] == daemon.pid


def test_commands_refused_without_a_run(daemon):
    for cmd in ("stop", "abort", "pause", "resume", "logs"):
        with pytest.raises(RequestFailed) as err:
            daemon.call(cmd)
        assert err.value.code == P.E_REFUSED, cmd


def test_start_of_a_broken_setup_lists_every_problem(daemon, tmp_path):
    setup = tmp_path / "broken.yaml"
    setup.write_text(
        "Buffers:\n  raw: {slot_count: 0, data_length: 10, data_dtype: {x: float64}}\n"
        "Workers:\n  src: {function: nope, sinks: [raww]}\n"
    )
    with pytest.raises(RequestFailed) as err:
        daemon.call("start", {"setup": str(setup)})
    assert err.value.code == P.E_REFUSED
    assert len(err.value.problems) >= 2, err.value.problems
    text = "\n".join(err.value.problems)
    assert "slot_count" in text and "raww" in text
    with pytest.raises(RequestFailed) as err2:
        daemon.call("check", {"setup": str(setup)})
    assert err2.value.problems == err.value.problems
    with pytest.raises(RequestFailed):
        daemon.call("start", {"setup": str(tmp_path / "missing.yaml")})
    with pytest.raises(RequestFailed) as err3:
        daemon.call("start", {"setup": "relative.yaml"})
    assert err3.value.code == P.E_BAD_REQUEST
    assert daemon.status()["state"] == "idle"


def test_hostile_requests_answer_bad_request_not_internal(daemon):
    nested = b"[" * 10_000 + b"]" * 10_000
    requests = [
        b'{"v": 1, "cmd": "status", "id": ' + b"1" + b"0" * 400 + b"}\n",  # 10**400
        b'{"v": 1, "cmd": "status", "args": {"deep": ' + nested + b"}}\n",
        b'{"v": true, "cmd": "status"}\n',
        b'{"v": 1, "cmd": "logs", "args": {"offsets": {"src": -1}}}\n',
        b'{"v": 1, "cmd": "logs", "args": {"offsets": {"src": "0"}}}\n',
        b'{"v": 1, "cmd": "logs", "args": {"offsets": {"src": ' + b"9" * 40 + b"}}}\n",
        b'{"v": 1, "cmd": "logs", "args": {"offsets": {"src": true}}}\n',
        b'{"v": 1, "cmd": "logs", "args": {"max_bytes": -5}}\n',
        b'{"v": 1, "cmd": "start", "args": {"setup": "/x.yaml", "max_seconds": 1e400}}\n',
        b'{"v": 1, "cmd": "start", "args": {"setup": "/x.yaml", "max_seconds": NaN}}\n',
        b'{"v": 1, "cmd": "start", "args": {"setup": "/x.yaml", "max_events": ' + b"9" * 30 + b"}}\n",
        b'{"v": 1, "cmd": "ping", "id": 8}\n',
    ]
    replies = raw_exchange(daemon.socket_path, b"".join(requests), read_lines=len(requests))
    codes = [r.get("error", {}).get("code") for r in replies]
    assert codes == [P.E_BAD_REQUEST, P.E_BAD_REQUEST, P.E_VERSION] + [P.E_BAD_REQUEST] * 8 + [None]
    assert replies[-1]["id"] == 8  # the connection survived every one of them
    assert daemon.status()["state"] == "idle"


def test_client_retries_while_the_accept_queue_is_full(tmp_path):
    path = tmp_path / "busy.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(0)  # queue of one: the next connect fails with EAGAIN until we accept
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.connect(str(path))
    client = Client(path, timeout=20)
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(_connect_or_error(client)))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while client.connect_attempts < 2:  # it was turned away and is retrying
            assert thread.is_alive() and time.monotonic() < deadline, outcome
            time.sleep(0.005)
        server.accept()[0].close()  # make room: the retry gets in
        thread.join(20)
        assert outcome == [True]
    finally:
        client.close()
        held.close()
        server.close()


def _connect_or_error(client: Client) -> object:
    try:
        client.connect()
        return True
    except Exception as exc:  # reported to the test thread
        return exc


def test_client_gives_up_on_a_queue_that_stays_full(tmp_path, monkeypatch):
    path = tmp_path / "full.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(0)
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.connect(str(path))
    try:
        client = Client(path, timeout=0.5)  # the retry budget never exceeds the timeout
        with pytest.raises(DaemonUnreachable) as err:
            client.connect()
        assert "accept queue stayed full" in str(err.value)
        assert client.connect_attempts >= 2
    finally:
        held.close()
        server.close()


def test_connect_storm_every_client_gets_its_answer(daemon):
    results: list[object] = []

    def one() -> None:
        try:
            results.append(Client(daemon.socket_path, timeout=60).call("status")["state"])
        except Exception as exc:  # collected and shown by the assertion
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(1000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == ["idle"] * 1000


def test_connections_over_the_cap_are_told_busy(daemon):
    limit = control_server.MAX_CONNECTIONS
    held: list[socket.socket] = []
    try:
        for _ in range(limit):  # each answered once, so each is being served
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(20)
            s.connect(str(daemon.socket_path))
            held.append(s)
            s.sendall(P.encode(P.make_request("ping")))
            assert s.makefile("rb").readline()
        reply = raw_exchange(daemon.socket_path, P.encode(P.make_request("ping")))[0]
        assert reply["error"]["code"] == P.E_BUSY
        assert f"already serves {limit} connections" in reply["error"]["message"]
        held.pop().close()
        # a client retries a busy answer: it gets in once a slot is free
        assert daemon.call("ping")["pong"] is True
    finally:
        for s in held:
            s.close()


async def test_idle_connection_is_told_and_closed(tmp_path):
    async def dispatch(cmd, args, peer):
        return {"cmd": cmd}

    server = control_server.ControlServer(tmp_path / "idle.sock", dispatch, idle_timeout=0.3)
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "idle.sock"))
        writer.write(P.encode(P.make_request("ping")))
        assert json.loads(await reader.readline())["result"] == {"cmd": "ping"}
        reply = json.loads(await asyncio.wait_for(reader.readline(), 20))  # then silence
        assert reply["error"] == {"code": P.E_IDLE,
                                  "message": "no request for 0.3 s: closing the connection"}
        assert await asyncio.wait_for(reader.read(), 20) == b""  # closed
        writer.close()
    finally:
        await server.close()


def test_exceptions_are_logged_with_type_message_and_traceback():
    code = (
        "import structlog\n"
        "from mimocorb2 import logsetup\n"
        "logsetup.configure_daemon_logging('INFO')\n"
        "try:\n"
        "    {}['missing']\n"
        "except KeyError:\n"
        "    structlog.get_logger('mimocorb2.test').exception('handler failed')\n"
        "logsetup.shutdown_logging()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    record = json.loads(out.stderr.strip().splitlines()[-1])
    assert record["event"] == "handler failed"
    assert record["error"] == "KeyError: 'missing'"
    assert "Traceback (most recent call last)" in record["exception"]
    assert 'line 5, in <module>' in record["exception"]


# ------------------------------------------------------------------------ peer credentials
_CONNECT_AS = r"""
import json, os, socket, sys
gid, uid, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(path)
except PermissionError:
    print("EACCES"); sys.exit(0)
try:
    s.sendall(b'{"v": 1, "id": 1, "cmd": "ping"}\n')
except BrokenPipeError:
    pass  # refused before we finished sending: the reply is still there to read
line = s.makefile("rb").readline()
reply = json.loads(line)
print("OK" if reply.get("ok") else reply["error"]["code"])
"""


def _connect_as(gid: int, uid: int, path: Path) -> str:
    out = subprocess.run([sys.executable, "-c", _CONNECT_AS, str(gid), str(uid), str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _can_switch_users() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run a client under another uid (running as uid %d)" % os.geteuid()
    probe = subprocess.run([sys.executable, "-c", "import os; os.setgid(65534); os.setuid(65534)"],
                           capture_output=True)
    if probe.returncode != 0:
        return "this environment does not allow setuid() to another user"
    return None


def test_other_uid_is_refused(daemon):
    why = _can_switch_users()
    if why:
        pytest.skip(why)
    path = daemon.socket_path
    os.chmod(path.parent, 0o755)
    try:
        # the file mode (0660, our group) already keeps strangers out
        assert _connect_as(65534, 65534, path) == "EACCES"
        # and with the file opened up, the SO_PEERCRED check still refuses them
        os.chmod(path, 0o666)
        assert _connect_as(65534, 65534, path) == P.E_PERMISSION
        # a member of the socket's group is allowed
        os.chown(path, -1, 4242)
        assert _connect_as(4242, 65534, path) == "OK"
    finally:
        os.chown(path, -1, os.getegid())
        os.chmod(path, 0o660)
        os.chmod(path.parent, 0o750)
    assert daemon.call("ping")["pong"]


def test_foreground_terminal_leaves_out_timing_notes_and_what_it_echoes(tmp_path):
    """`mimocorb2 run`'s stderr: no late loop, slow fork or doubled exit line; daemon.log has all."""
    run_log = tmp_path / "daemon.log"
    code = (
        "import structlog\n"
        "from mimocorb2 import logsetup\n"
        "logsetup.configure_daemon_logging('INFO', stderr_level='WARNING',\n"
        "                                  stderr_hides=logsetup.FOREGROUND_HIDDEN)\n"
        f"logsetup.attach_run_log({str(run_log)!r})\n"
        "log = structlog.get_logger('mimocorb2.daemon')\n"
        "log.warning(logsetup.LOOP_LATE, seconds=0.4)\n"
        "log.warning(logsetup.SLOW_SPAWN, worker='w', seconds=0.1)\n"
        "structlog.get_logger('mimocorb2.run').error(logsetup.WORKER_FAILED, worker='w')\n"
        "log.warning('disk is getting full')\n"
        "logsetup.detach_run_log(wait=10)\n"
        "logsetup.shutdown_logging()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    shown = [json.loads(line)["event"] for line in out.stderr.strip().splitlines()]
    assert shown == ["disk is getting full"]
    kept = [json.loads(line)["event"] for line in run_log.read_text().splitlines()]
    assert kept == [logsetup.LOOP_LATE, logsetup.SLOW_SPAWN, logsetup.WORKER_FAILED,
                    "disk is getting full"]


def test_readable_lines_without_colors_when_asked_for_off_a_terminal(tmp_path):
    """The foreground runner's stderr piped into a file: readable lines, no JSON, no escapes."""
    code = (
        "import structlog\n"
        "from mimocorb2 import logsetup\n"
        "logsetup.configure_daemon_logging('INFO', stderr_level='WARNING', console=True)\n"
        "structlog.get_logger('mimocorb2.run').warning('disk is getting full', free='90 MB')\n"
        "logsetup.shutdown_logging()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = out.stderr.strip()
    assert "[warning" in line and "disk is getting full" in line and "free='90 MB'" in line, line
    assert not line.startswith("{") and "\x1b[" not in line, line


def test_a_reply_that_comes_after_the_timeout_is_never_taken_for_the_next_one(tmp_path):
    """The client gives up a connection whose reply it did not read: the late reply to the
    first request cannot answer the second (a peer that is slow once, then prompt)."""
    path = tmp_path / "slow.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    release = threading.Event()

    def reply(conn: socket.socket, result: str) -> None:
        request = json.loads(conn.makefile("rb").readline())
        conn.sendall(json.dumps({"v": P.PROTOCOL_VERSION, "id": request["id"], "ok": True,
                                 "result": result}).encode() + b"\n")

    def serve() -> None:
        first, _ = listener.accept()
        release.wait(30)
        try:
            reply(first, "late answer to the first request")  # what a slow daemon sends after all
        except OSError:
            pass  # the client hung up on it, as it should
        second, _ = listener.accept()
        reply(second, "answer to the second request")
        for conn in (first, second):
            conn.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        client = Client(path, timeout=0.3)
        with pytest.raises(TimeoutError):
            client.call("status")
        release.set()
        assert client.call("status") == "answer to the second request"
        client.close()
    finally:
        release.set()
        server.join(30)
        listener.close()
