"""``mimocorb2 run SETUP --web``: the daemon's page for a foreground run, in a real browser.

The real CLI runs in a subprocess on the web tests' simulated setup; the test
reads the printed address, checks the JSON API, then stops the run from the page.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from mimocorb2.testing import segments_of
from webtools import launch_browser, poll, require_chromium, write_setup

pytestmark = pytest.mark.timeout(240)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cli:
    """``python -m mimocorb2 ...`` with its stdout collected line by line (by a thread)."""

    def __init__(self, args: list[str], cwd) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mimocorb2", *args], cwd=cwd, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def line_starting(self, prefix: str) -> str | None:
        return next((line for line in self.lines if line.startswith(prefix)), None)

    def output(self) -> str:
        self._reader.join(timeout=30)
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def get_json(url: str, token: str | None = None, method: str = "GET", headers: dict | None = None):
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}),
                                     data=b"{}" if method == "POST" else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if exc.headers.get_content_type() == "application/json" else body


def test_foreground_run_serves_the_page_and_stops_from_it(tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    setup = write_setup(tmp_path / "setup")
    port = free_port()
    cli = Cli(["run", str(setup), "--web", f"127.0.0.1:{port}"], cwd=tmp_path)
    try:
        line = poll(lambda: cli.line_starting("web page: ") or cli.proc.poll() is not None, 60, "the page address")
        assert isinstance(line, str), cli.output()
        url = line.removeprefix("web page: ")
        base, token = url.split("?token=")
        assert base == f"http://127.0.0.1:{port}/"
        assert get_json(base + "healthz")[1]["ok"] is True
        assert get_json(base + "api/status")[0] == 401  # no token, no data
        status = poll(lambda: (s := get_json(base + "api/status", token)[1])["state"] == "running"
                      and s["buffers"]["Heights"]["event_count"] > 0 and s, 60, "a running run with events")
        assert set(status) == {"state", "daemon", "run", "buffers", "workers", "alarms"}
        assert set(status["buffers"]) == {"Raw", "Heights"} and status["buffers"]["Raw"]["root"]
        assert status["daemon"]["pid"] == cli.proc.pid and status["run"]["setup"] == str(setup)
        # the foreground loop has its latency meter too (at the terminal's priority)
        assert status["daemon"]["loop_priority"] == "normal" and status["daemon"]["loop_lag_max"] >= 0.0
        refused = get_json(base + "api/action/start", token, "POST",
                           {"X-Mimocorb2-Action": "1", "Origin": f"http://127.0.0.1:{port}"})
        assert refused[0] == 409 and "Start is not offered" in refused[1]["error"]

        with sync_playwright() as pw:
            browser = launch_browser(pw, tmp_path / "profile")
            try:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector("#role:has-text('operator')")
                poll(lambda: page.text_content("#run-state") == "running", 30, "the run box to show running")
                assert page.get_by_role("button", name="Start").count() == 0
                assert page.locator("#setup-select").count() == 0
                page.get_by_role("button", name="Stop").click()
                assert cli.proc.wait(90) == 0, cli.output()
                # the page's last frame, sent before it closed, shows how the run ended
                poll(lambda: page.text_content("#run-state") == "finished", 10, "the run box to show finished")
            finally:
                browser.close()
        out = cli.output()
        assert "stopped: stop command" in out and "run directory: " in out
        assert "Heights" in out.split("run directory: ")[1]  # the summary's event counts
        assert segments_of(cli.proc.pid) == []
    finally:
        cli.kill()


def test_run_without_web_loads_no_aiohttp(tmp_path):
    setup = write_setup(tmp_path / "setup")
    code = ("import sys\nfrom mimocorb2.cli import main\n"
            f"code = main(['run', {str(setup)!r}, '--max-events', '20', '--quiet'])\n"
            "print('aiohttp loaded:', 'aiohttp' in sys.modules, 'exit', code)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "aiohttp loaded: False exit 0" in out.stdout, out.stdout + out.stderr


def test_foreground_page_behind_a_reverse_proxy(tmp_path):
    """``--web-public-url``: the printed address is the public one, whose host and origin the page accepts."""
    import signal

    public = "https://daq.example:8443/"
    setup = write_setup(tmp_path / "setup")
    port = free_port()
    cli = Cli(["run", str(setup), "--web", f"127.0.0.1:{port}", "--web-public-url", public], cwd=tmp_path)
    try:
        line = poll(lambda: cli.line_starting("web page: ") or cli.proc.poll() is not None, 60, "the page address")
        assert isinstance(line, str), cli.output()
        url, token = line.removeprefix("web page: ").split("?token=")
        assert url == public
        base = f"http://127.0.0.1:{port}/"
        assert get_json(base + "healthz", headers={"Host": "daq.example:8443"})[0] == 200
        assert get_json(base + "healthz", headers={"Host": "attacker.example"})[0] == 421
        acted = get_json(base + "api/action/ack", token, "POST", {"X-Mimocorb2-Action": "1",
                         "Host": "daq.example:8443", "Origin": "https://daq.example:8443"})
        assert acted[0] == 200, acted
        cli.proc.send_signal(signal.SIGINT)
        assert cli.proc.wait(90) == 0, cli.output()
    finally:
        cli.kill()


def test_public_url_without_web_is_refused(tmp_path):
    setup = write_setup(tmp_path / "setup")
    done = subprocess.run([sys.executable, "-m", "mimocorb2", "run", str(setup), "--web-public-url",
                           "https://daq.example/"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--web-public-url needs --web" in done.stderr, done
    done = subprocess.run([sys.executable, "-m", "mimocorb2", "run", str(setup), "--web", "127.0.0.1:0",
                           "--web-public-url", "https://daq.example/daq/"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "--web-public-url" in done.stderr and "path prefix" in done.stderr, done
