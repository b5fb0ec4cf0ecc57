"""The web layer without a browser: configuration, tokens, Host check, alarms, history, mimoctl web."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mimocorb2.control.alarms import AlarmMonitor, AlarmThresholds
from mimocorb2.testing import DaemonProcess
from mimocorb2.web import WebConfigError, apply_flags, config_from_file, parse_listen
from mimocorb2.web._config import WebConfig
from mimocorb2.web._history import RateHistory
from mimocorb2.web._tokens import TOKENS_FILE


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    work = tmp_path_factory.mktemp("webhttp")
    d = DaemonProcess(work / "run" / "control.sock", extra_args=["--web", "127.0.0.1:0"]).start()
    try:
        yield d
    finally:
        assert d.stop() == 0


def exchange(url: str, path: str, headers: dict[str, str] | None = None, method: str = "GET",
             body: bytes | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTP request to the server at ``url`` (``Host`` may be overridden): status, headers, body."""
    host, port = url.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True)
        all_headers = {"Host": f"{host}:{port}", **(headers or {})}
        for key, value in all_headers.items():
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def request(url: str, path: str, headers: dict[str, str] | None = None, method: str = "GET",
            body: bytes | None = None) -> tuple[int, bytes]:
    status, _, data = exchange(url, path, headers, method, body)
    return status, data


# ---------------------------------------------------------------------------- configuration
def test_listen_addresses_parse_and_bad_ones_name_the_flag():
    assert parse_listen("8000") == ("127.0.0.1", 8000)
    assert parse_listen("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_listen("[::1]:9001") == ("::1", 9001)
    with pytest.raises(WebConfigError, match="--web"):
        parse_listen("host:port")


def test_config_file_keys_are_checked(tmp_path):
    path = tmp_path / "daemon.yaml"
    path.write_text("web:\n  listen: 9100\n  setups: [/srv/a.yaml]\n  colour: red\n")
    with pytest.raises(WebConfigError, match="colour"):
        config_from_file(path)
    path.write_text("web:\n  listen: 9100\n  setups: [/srv/a.yaml]\n  tokens: {viewer: short, operator: x}\n")
    with pytest.raises(WebConfigError, match="web.tokens.viewer"):
        apply_flags(config_from_file(path), listen=None, disabled=False, setups=None)
    path.write_text("web:\n  listen: 9100\n  setups: [/srv/a.yaml]\n")
    cfg = apply_flags(config_from_file(path), listen=None, disabled=False, setups=None)
    assert (cfg.host, cfg.port, cfg.setups, cfg.explicit) == ("127.0.0.1", 9100, [Path("/srv/a.yaml")], True)
    assert apply_flags(WebConfig(), listen=None, disabled=True, setups=None).enabled is False


def test_daemon_refuses_a_public_bind_without_tokens(tmp_path):
    config = tmp_path / "daemon.yaml"
    config.write_text("web:\n  listen: 0.0.0.0:0\n  tokens: off\n")
    result = subprocess.run([sys.executable, "-m", "mimocorb2.supervisor.cli", "--socket",
                             str(tmp_path / "s" / "control.sock"), "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "requires tokens" in result.stderr


def test_an_explicit_port_already_taken_stops_the_daemon_with_the_address(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = DaemonProcess(tmp_path / "s" / "control.sock", extra_args=["--web", f"127.0.0.1:{port}"])
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}"):
            d.start()
        d.stop()


# ---------------------------------------------------------------------------- tokens, Host, API
def test_tokens_file_is_private_and_mimoctl_web_prints_the_urls(daemon):
    path = daemon.socket_path.parent / TOKENS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tokens = json.loads(path.read_text())
    out = subprocess.run([sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket", str(daemon.socket_path),
                          "web"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip().endswith(f"?token={tokens['viewer']}")
    out = subprocess.run([sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket", str(daemon.socket_path),
                          "web", "--operator"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip().endswith(f"?token={tokens['operator']}")


def test_host_header_is_checked_on_loopback(daemon):
    url = daemon.call("web")["url"]
    assert request(url, "/healthz")[0] == 200
    status, body = request(url, "/healthz", {"Host": "attacker.example:80"})
    assert status == 421 and b"Host" in body
    port = url.rsplit(":", 1)[1].strip("/")
    assert request(url, "/healthz", {"Host": f"attacker.example:{port}"})[0] == 421
    assert request(url, "/healthz", {"Host": "localhost:9000"})[0] == 200  # through a tunnel


def test_json_api_needs_a_token_and_answers_with_one(daemon):
    web = daemon.call("web")
    assert request(web["url"], "/api/status")[0] == 401
    status, body = request(web["url"], "/api/status", {"Authorization": f"Bearer {web['viewer_token']}"})
    assert status == 200 and json.loads(body)["state"] == "idle"
    status, body = request(web["url"], "/api/history?window=all", {"Authorization": f"Bearer {web['viewer_token']}"})
    assert status == 200 and json.loads(body)["t"] == []
    # a viewer may not act even with the page's header and origin
    origin = web["url"].rstrip("/")
    status, _ = request(web["url"], "/api/action/pause", {"Authorization": f"Bearer {web['viewer_token']}",
                        "X-Mimocorb2-Action": "1", "Origin": origin}, method="POST", body=b"{}")
    assert status == 403
    # an operator without the header is refused; with it, a verb outside the fixed set is unknown
    status, _ = request(web["url"], "/api/action/pause", {"Authorization": f"Bearer {web['operator_token']}",
                        "Origin": origin}, method="POST", body=b"{}")
    assert status == 403
    status, _ = request(web["url"], "/api/action/shutdown", {"Authorization": f"Bearer {web['operator_token']}",
                        "X-Mimocorb2-Action": "1", "Origin": origin}, method="POST", body=b"{}")
    assert status == 404
    status, body = request(web["url"], "/api/action/start", {"Authorization": f"Bearer {web['operator_token']}",
                           "X-Mimocorb2-Action": "1", "Origin": origin}, method="POST",
                           body=json.dumps({"setup": "/etc/passwd"}).encode())
    assert status == 400 and b"not one of the setups" in body
    status, _ = request(web["url"], "/", {})
    assert status == 401


def test_responses_carry_a_csp_without_inline_scripts(daemon):
    url = daemon.call("web")["url"]
    host, port = url.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/static/app.js")
    response = conn.getresponse()
    response.read()
    csp = response.getheader("Content-Security-Policy")
    conn.close()
    assert response.status == 200 and "script-src 'self'" in csp and "unsafe-inline" not in csp


# ---------------------------------------------------------------------------- alarms and history
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def running_status(rate: float = 10.0, fill: float = 0.1, restarts: int = 0, worker_state: str = "running",
                   lost: int = 0) -> dict:
    return {
        "state": "running",
        "run": {"directory": "/", "roots": ["raw"], "lost": lost, "error": None},
        "buffers": {"raw": {"rate": rate, "filled_slots": fill, "ended": False, "paused": False}},
        "workers": {"w": {"state": worker_state, "restarts": restarts, "last_exit": "killed by SIGKILL"}},
    }


def ids(alarms: list[dict]) -> set[str]:
    return {a["id"] for a in alarms}


def test_alarms_need_their_condition_to_last_and_acknowledge_holds_until_the_value_changes():
    clock = Clock()
    monitor = AlarmMonitor(AlarmThresholds(zero_rate_after=30, full_after=30, disk_free_bytes=0,
                                           disk_free_fraction=0.0), clock=clock)
    assert monitor.evaluate(running_status()) == []
    assert monitor.evaluate(running_status(rate=0.0, fill=0.99)) == []  # not for a while yet
    clock.now += 31
    assert ids(monitor.evaluate(running_status(rate=0.0, fill=0.99))) == {"no_events:raw", "buffer_full:raw"}
    assert monitor.evaluate(running_status()) == []  # conditions gone, alarms gone
    alarms = monitor.evaluate(running_status(restarts=1))
    assert [a["severity"] for a in alarms] == ["warning"] and "restarted 1 time" in alarms[0]["message"]
    assert monitor.acknowledge("worker_restarts:w") == ["worker_restarts:w"]
    assert monitor.evaluate(running_status(restarts=1))[0]["acknowledged"] is True
    alarms = monitor.evaluate(running_status(restarts=3))  # it keeps restarting: back, and an error
    assert alarms[0]["acknowledged"] is False and alarms[0]["severity"] == "error"
    alarms = monitor.evaluate(running_status(worker_state="failed", restarts=3, lost=2))
    assert {"worker_failed:w", "events_lost"} <= ids(alarms)


def test_disk_alarm_when_free_space_is_below_the_threshold(tmp_path):
    monitor = AlarmMonitor(AlarmThresholds(disk_free_bytes=1 << 62))
    status = running_status()
    status["run"]["directory"] = str(tmp_path)
    assert "disk_nearly_full" in ids(monitor.evaluate(status))


def test_rate_history_keeps_a_whole_night_in_bounded_memory():
    history = RateHistory(["raw"], started=0.0)
    for t in range(0, 12 * 3600):  # twelve hours, one sample a second
        history.add(float(t), {"raw": 5.0 if t % 2 else 0.0})
    last_minute = history.query(60, 12 * 3600.0)
    assert last_minute["resolution"] == 1.0 and 55 <= len(last_minute["t"]) <= 62
    night = history.query(None, 12 * 3600.0)
    assert night["resolution"] == 60.0 and night["t"][0] <= 120
    assert all(v == pytest.approx(2.5) for v in night["rates"]["raw"][:-1])
    hour = history.query(3600, 12 * 3600.0)
    assert hour["resolution"] == 10.0


def test_runtime_dir_tokens_with_loose_mode_are_replaced(tmp_path):
    from mimocorb2.web._tokens import load_or_create

    first = load_or_create(tmp_path)
    assert load_or_create(tmp_path) == first
    os.chmod(tmp_path / TOKENS_FILE, 0o644)
    second = load_or_create(tmp_path)
    assert second != first and stat.S_IMODE((tmp_path / TOKENS_FILE).stat().st_mode) == 0o600


def test_mimoctl_ack_refuses_an_unknown_alarm(daemon):
    ctl = [sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket", str(daemon.socket_path)]
    out = subprocess.run([*ctl, "ack"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "acknowledged: nothing" in out.stdout
    out = subprocess.run([*ctl, "ack", "worker_failed:nobody"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "no current alarm" in out.stderr


def test_mimoctl_web_says_when_the_daemon_serves_no_page(tmp_path):
    with DaemonProcess(tmp_path / "s" / "control.sock") as d:  # the test harness passes --no-web
        out = subprocess.run([sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket", str(d.socket_path),
                              "web"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "--no-web" in out.stderr


class StalledSocket:
    """An aiohttp WebSocketResponse stand-in whose peer never reads: every send waits forever."""

    closed = False

    def __init__(self) -> None:
        self.sent: list = []

    async def send_str(self, data: str) -> None:
        self.sent.append(data)
        await asyncio.Event().wait()

    send_bytes = send_str


async def test_a_stalled_page_keeps_one_frame_per_kind_and_bounded_log_lines():
    from mimocorb2.web._hub import MAX_PENDING_LINES, Page

    ws = StalledSocket()
    page = Page(ws, "viewer", "test")
    sender = asyncio.create_task(page.sender())
    try:
        page.offer("status", "first")
        while not ws.sent:  # the sender took the first frame and is now stuck sending it
            await asyncio.sleep(0)
        for i in range(10_000):  # producers never wait for the stuck page
            page.offer("status", f"status {i}")
            page.offer("scope:Raw", bytes([i % 256]))
        page.offer_lines([{"text": str(i)} for i in range(3 * MAX_PENDING_LINES)])
        assert page._latest == {"status": "status 9999", "scope:Raw": bytes([9999 % 256])}
        assert len(page._lines) == MAX_PENDING_LINES and page._dropped == 2 * MAX_PENDING_LINES
        assert ws.sent == ["first"]
    finally:
        sender.cancel()


def test_tokens_and_setups_from_the_configuration_file(tmp_path):
    from mimocorb2.web._config import allowed_setups

    folder = tmp_path / "setups"
    (folder / "muon").mkdir(parents=True)
    (folder / "muon" / "setup.yaml").write_text("Buffers: {}\nWorkers: {}\n")
    (folder / "notes.yaml").write_text("just: notes\n")
    config = tmp_path / "daemon.yaml"
    config.write_text(f"web:\n  listen: 127.0.0.1:0\n  setups: [{folder}]\n"
                      "  tokens: {viewer: viewer-token-0123456789, operator: operator-token-0123456789}\n")
    assert list(allowed_setups(config_from_file(config))) == [str(folder / "muon" / "setup.yaml")]
    with DaemonProcess(tmp_path / "s" / "control.sock", extra_args=["--config", str(config)]) as d:
        web = d.call("web")
    assert web["viewer_token"] == "viewer-token-0123456789"
    assert web["operator_url"].endswith("?token=operator-token-0123456789")
    assert not (tmp_path / "s" / TOKENS_FILE).exists()  # configured tokens are not written anywhere


# ---------------------------------------------------------------------------- behind a reverse proxy
PUBLIC = "https://daq.example:8443/"
PUBLIC_ORIGIN = "https://daq.example:8443"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """A daemon whose page users reach through an HTTPS proxy at PUBLIC (the proxy itself is not needed:
    the requests carry the Host and Origin a browser behind it would send)."""
    work = tmp_path_factory.mktemp("webproxy")
    d = DaemonProcess(work / "run" / "control.sock",
                      extra_args=["--web", "127.0.0.1:0", "--web-public-url", PUBLIC]).start()
    try:
        yield d
    finally:
        assert d.stop() == 0


def test_public_url_is_validated_and_errors_name_the_key_or_flag(tmp_path):
    from mimocorb2.web import parse_public_url

    url = parse_public_url("HTTPS://Daq.Example:443")
    assert (url.origin, url.url, url.secure) == ("https://daq.example", "https://daq.example/", True)
    assert parse_public_url(PUBLIC).origin == PUBLIC_ORIGIN
    for bad, why in [("ftp://daq.example/", "http or https"), ("https://daq.example/daq/", "path prefix"),
                     ("https://daq.example/?a=1", "query"), ("https://daq.example/#top", "fragment"),
                     ("https:///", "no host"), ("https://user:pw@daq.example/", "no user"),
                     ("daq.example:8443", "http or https"), ("https://daq_example/", "not a host name"),
                     ("https://daq.example:99999/", "URL")]:
        with pytest.raises(WebConfigError, match=f"--web-public-url.*{why}"):
            apply_flags(WebConfig(), listen=None, disabled=False, setups=None, public_url=bad)
    path = tmp_path / "daemon.yaml"
    path.write_text("web:\n  public_url: https://daq.example/daq/\n")
    with pytest.raises(WebConfigError, match="web.public_url"):
        config_from_file(path)
    path.write_text("web:\n  public_url: [https://daq.example/]\n")
    with pytest.raises(WebConfigError, match="web.public_url"):
        config_from_file(path)
    path.write_text("web:\n  public_url: https://daq.example/\n  tokens: off\n")
    with pytest.raises(WebConfigError, match="web.public_url.*requires tokens"):
        apply_flags(config_from_file(path), listen=None, disabled=False, setups=None)
    result = subprocess.run([sys.executable, "-m", "mimocorb2.supervisor.cli", "--socket",
                             str(tmp_path / "s" / "control.sock"), "--web-public-url", "https://daq.example/x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--web-public-url" in result.stderr


def test_mimoctl_web_prints_the_public_address(proxied):
    web = proxied.call("web")
    assert web["url"].startswith("http://127.0.0.1:")  # where it listens, for scripts on the lab PC
    assert web["public_url"] == PUBLIC
    out = subprocess.run([sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket", str(proxied.socket_path),
                          "web", "--operator"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == f"{PUBLIC}?token={web['operator_token']}"


def test_public_host_passes_the_host_check_and_its_login_cookie_is_secure(proxied):
    web = proxied.call("web")
    url = web["url"]
    assert request(url, "/healthz", {"Host": "daq.example:8443"})[0] == 200
    assert request(url, "/healthz", {"Host": "daq.example"})[0] == 200  # nginx's $host drops the port
    assert request(url, "/healthz", {"Host": "attacker.example:8443"})[0] == 421
    assert request(url, "/healthz", {"Host": "daq.example.attacker.example"})[0] == 421
    status, headers, _ = exchange(url, f"/?token={web['viewer_token']}", {"Host": "daq.example:8443"})
    cookie = headers["Set-Cookie"]
    assert status == 303 and "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, headers, _ = exchange(url, f"/?token={web['viewer_token']}")  # directly (ssh tunnel): plain http
    assert status == 303 and "Secure" not in headers["Set-Cookie"]


def test_actions_are_accepted_from_the_public_origin_only(proxied):
    web = proxied.call("web")
    operator = {"Authorization": f"Bearer {web['operator_token']}", "X-Mimocorb2-Action": "1"}

    def ack(host: str, origin: str) -> int:
        return request(web["url"], "/api/action/ack", {**operator, "Host": host, "Origin": origin},
                       method="POST", body=b"{}")[0]

    assert ack("daq.example:8443", PUBLIC_ORIGIN) == 200
    assert ack("daq.example", PUBLIC_ORIGIN) == 200
    assert ack("daq.example:8443", "https://attacker.example") == 403
    assert ack("daq.example:8443", "http://daq.example:8443") == 403  # not the https page
    assert ack("daq.example:8443", "https://daq.example") == 403  # another port, another origin
    direct = web["url"].rstrip("/")
    assert ack(direct.split("//")[1], direct) == 200  # the direct page still works
    assert ack(direct.split("//")[1], PUBLIC_ORIGIN) == 200  # a proxy that does not pass Host on
    assert ack(direct.split("//")[1], "https://attacker.example") == 403
    status, _ = request(web["url"], "/api/action/ack", {"Authorization": f"Bearer {web['viewer_token']}",
                        "X-Mimocorb2-Action": "1", "Host": "daq.example:8443", "Origin": PUBLIC_ORIGIN},
                        method="POST", body=b"{}")
    assert status == 403  # the viewer still may not act


async def test_websocket_opens_from_the_public_origin_and_not_from_a_foreign_one(proxied):
    import aiohttp

    web = await asyncio.to_thread(proxied.call, "web")
    headers = {"Host": "daq.example:8443", "Authorization": f"Bearer {web['viewer_token']}"}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{web['url']}ws", headers={**headers, "Origin": PUBLIC_ORIGIN}) as ws:
            frame = await ws.receive_json(timeout=20)
            assert frame["type"] in ("status", "setup")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{web['url']}ws", headers={**headers, "Origin": "https://attacker.example"})
        assert refused.value.status == 403
