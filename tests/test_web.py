"""The web page in a real browser (Debian's Chromium driven by Playwright) against a real daemon.

One daemon and one browser serve the whole module; the tests run in file order
and each brings the run into the state it needs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mimocorb2.testing import DaemonProcess, segments_of
from webtools import PULSE_HEIGHT, launch_browser, poll, require_chromium, write_setup

pytestmark = pytest.mark.timeout(240)
ACTIVE = ("starting", "running", "paused")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_chromium()
    from playwright.sync_api import sync_playwright

    work = tmp_path_factory.mktemp("web")
    setup = write_setup(work / "setup")
    daemon = DaemonProcess(work / "run" / "control.sock",
                           extra_args=["--web", "127.0.0.1:0", "--web-setup", str(setup)])
    daemon.start()
    pw = sync_playwright().start()
    browser = launch_browser(pw, work / "profile")
    state = {"daemon": daemon, "setup": setup, "work": work, "web": daemon.call("web"), "browser": browser}
    try:
        yield state
    finally:
        browser.close()
        pw.stop()
        d = state["daemon"]
        d.stop()
        assert segments_of(d.pid) == []


def operator_page(env):
    page = env["browser"].new_page()
    page.goto(env["web"]["operator_url"])
    page.wait_for_selector("#role:has-text('operator')")
    return page


def ensure_running(env) -> dict:
    d = env["daemon"]
    if d.status()["state"] not in ACTIVE:
        d.call("start", {"setup": str(env["setup"])})
    return d.wait_for(lambda s: s["state"] == "running" and s["buffers"]["Heights"]["event_count"] > 0,
                      timeout=60, what="a running run with events")


def state_text(page) -> str:
    return page.text_content("#run-state")


def record_runbox(page) -> None:
    """Keep every text the run box shows (state and pending), so a test sees short-lived ones."""
    page.evaluate("""() => {
        window.__seen = [];
        const note = () => window.__seen.push(document.querySelector('#run-state').textContent + ' | ' +
            (document.querySelector('#run-pending').hidden ? '' : document.querySelector('#run-pending').textContent));
        new MutationObserver(note).observe(document.querySelector('#runbox'), {subtree: true, childList: true,
            characterData: true, attributes: true});
    }""")


def test_page_refuses_without_token_and_a_viewer_cannot_act(env):
    page = env["browser"].new_page()
    page.context.clear_cookies()
    response = page.goto(env["web"]["url"])
    assert response.status == 401 and "mimoctl web" in page.content()
    response = page.goto(env["web"]["url"] + "?token=wrong-token-0123456789")
    assert response.status == 401
    page.goto(env["web"]["viewer_url"])
    assert "token" not in page.url  # exchanged for a cookie and removed from the address bar
    page.wait_for_selector("#role:has-text('viewer')")
    cookie = [c for c in page.context.cookies() if c["name"].startswith("mimocorb2_")][0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    for name in ("Start", "Pause", "Resume", "Stop", "Abort"):
        assert page.get_by_role("button", name=name).count() == 0
    status = page.evaluate("""async () => (await fetch('/api/action/pause', {method: 'POST',
        headers: {'X-Mimocorb2-Action': '1', 'Content-Type': 'application/json'}, body: '{}'})).status""")
    assert status == 403
    page.context.clear_cookies()
    page.close()


def test_start_from_the_page_with_a_comment(env):
    page = operator_page(env)
    assert env["daemon"].status()["state"] == "idle"
    page.select_option("#setup-select", str(env["setup"]))
    page.fill("#run-comment", "cosmics, HV 1450 V")
    page.get_by_role("button", name="Start").click()
    poll(lambda: state_text(page) == "running" or page.inner_text("#action-error"), 60, "the page to show running")
    assert page.inner_text("#action-error") == ""
    run_dir = Path(env["daemon"].status()["run"]["directory"])
    assert (run_dir / "comment.txt").read_text() == "cosmics, HV 1450 V\n"
    assert "web role=operator remote=127.0.0.1" in env["daemon"].log_text()
    # the page opened before the run gets the new run's panels without a reload
    page.locator(".scope[data-buffer='Raw']").wait_for(timeout=30000)
    assert page.locator("#graph g.node[data-name='victim']").count() == 1
    page.close()


def test_oscilloscope_draws_the_known_pulse(env):
    ensure_running(env)
    page = operator_page(env)
    scope = page.locator(".scope[data-buffer='Raw']").first
    scope.scroll_into_view_if_needed()
    poll(lambda: int(scope.get_attribute("data-frames") or 0) >= 2, 60, "scope frames")
    drawn_max = float(scope.get_attribute("data-max"))
    assert drawn_max == pytest.approx(PULSE_HEIGHT * 1000, rel=1e-3)  # y_scaling 1000 of the scope config
    assert page.locator(".scope [data-channel='ch2']").count() == 0  # channels: [ch1]
    page.get_by_role("button", name="Freeze").first.click()
    frozen_at = scope.get_attribute("data-frames")
    page.wait_for_timeout(1500)  # frames keep arriving; a frozen panel must not draw them
    assert scope.get_attribute("data-frames") == frozen_at
    page.close()


def test_histogram_fills(env):
    ensure_running(env)
    page = operator_page(env)
    card = page.locator(".histogram[data-key='Histograms_Heights/height']")
    card.scroll_into_view_if_needed()
    first = poll(lambda: int(card.get_attribute("data-entries") or 0), 60, "histogram entries")
    poll(lambda: int(card.get_attribute("data-entries") or 0) > first, 60, "more histogram entries")
    href = card.locator("a", has_text="info.csv").get_attribute("href")
    body = page.evaluate("async (h) => (await fetch(h)).text()", href)
    assert body.startswith("channel,min,max,bins,underflow,overflow")
    page.close()


def test_rates_graph_logs_and_a_scope_on_demand(env):
    ensure_running(env)
    page = operator_page(env)
    poll(lambda: int(page.get_attribute("#rates-chart", "data-points") or 0) >= 2, 30, "rate history points")
    legend = page.locator("#rates-chart .u-legend .u-series:not(:first-child) .u-value")
    assert set(legend.all_inner_texts()) == {"--"}  # no cursor: no value (it once said 0)
    box = page.locator("#rates-chart .u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    poll(lambda: "--" not in legend.all_inner_texts(), 30, "the rates under the cursor")
    page.mouse.move(0, 0)
    nodes = {g.get_attribute("data-name"): g.get_attribute("data-state") for g in page.locator("#graph g.node").all()}
    assert set(nodes) == {"source", "heights", "histogram", "scope", "victim", "Raw", "Heights"}
    poll(lambda: page.get_attribute("#graph g.node[data-name='Raw']", "data-state") == "flowing", 30,
         "the root buffer drawn as flowing")
    page.select_option("#log-name", "source")
    poll(lambda: "importer" in page.text_content("#logs") or "worker process started" in page.text_content("#logs"),
         30, "the source worker's log lines")
    page.select_option("#log-level", "error")
    assert page.locator("#logs .line.info").count() == 0
    page.select_option("#scope-add", "Heights")
    panel = page.locator(".scope[data-buffer='Heights']")
    panel.scroll_into_view_if_needed()
    poll(lambda: int(panel.get_attribute("data-frames") or 0) >= 1, 30, "frames of a buffer shown on demand")
    assert float(panel.get_attribute("data-max")) == pytest.approx(PULSE_HEIGHT, rel=1e-3)
    # a device state file in the run's status/ shows in the workers panel
    status_dir = Path(env["daemon"].status()["run"]["directory"]) / "status"
    status_dir.mkdir(exist_ok=True)
    (status_dir / ".source.json.tmp").write_text(json.dumps({"state": "connecting", "message": "dialing the board"}))
    os.replace(status_dir / ".source.json.tmp", status_dir / "source.json")
    cell = page.locator("#workers tr[data-worker='source'] [data-key='device']")
    poll(lambda: cell.inner_text() == "dialing the board", 30, "the device summary in the workers panel")
    page.close()


def test_a_flood_of_log_lines_leaves_the_page_bounded(env):
    """A page stays open all night: however many lines a worker logs, the page shows the newest
    and keeps at most 600 of one log in its DOM (and the daemon's per-page queue drops the
    oldest beyond its bound, saying so)."""
    status = ensure_running(env)
    page = operator_page(env)
    page.select_option("#log-name", "victim")
    log_file = Path(status["run"]["directory"]) / "logs" / "victim.log"
    poll(log_file.exists, 30, "the victim worker's log file")
    with open(log_file, "a") as fh:  # one burst, more than the page and the daemon's queue keep
        fh.write("".join(f"flood line {i:05d}\n" for i in range(5000)))
    poll(lambda: page.locator("#logs .line", has_text="flood line 04999").count() == 1, 30,
         "the newest flood line on the page")
    assert page.locator("#logs .line").count() == 600
    assert page.locator("#logs .line", has_text="flood line 04399").count() == 0
    assert page.locator("#logs .line", has_text="flood line 04400").count() == 1
    page.close()


def test_pause_resume_show_pending_then_confirmed_and_numbers_match_status_json(env):
    ensure_running(env)
    page = operator_page(env)
    poll(lambda: state_text(page) == "running", 30, "running on the page")
    record_runbox(page)
    page.get_by_role("button", name="Pause").click()
    poll(lambda: state_text(page) == "paused", 30, "paused on the page")
    seen = page.evaluate("window.__seen")
    assert any("pause requested" in s for s in seen), seen
    assert env["daemon"].status()["state"] == "paused"

    # paused: the counts settle; the page shows what `mimoctl status --json` says
    def page_matches_cli():
        cli = subprocess.run([sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket",
                              str(env["daemon"].socket_path), "status", "--json"],
                             capture_output=True, text=True, timeout=30)
        status = json.loads(cli.stdout)
        shown = {row.get_attribute("data-buffer"): int(row.locator("[data-key='event_count']").inner_text())
                 for row in page.locator("#buffers tbody tr").all()}
        wanted = {n: b["event_count"] for n, b in status["buffers"].items()}
        slots = {row.get_attribute("data-buffer"): int(row.locator("[data-key='slots']").inner_text())
                 for row in page.locator("#buffers tbody tr").all()}
        return shown == wanted and slots == {"Raw": 16, "Heights": 64} and shown
    poll(page_matches_cli, 30, "the page's buffer counts to equal status --json", interval=0.5)

    page.evaluate("window.__seen = []")
    page.get_by_role("button", name="Resume").click()
    poll(lambda: state_text(page) == "running", 30, "running again on the page")
    seen = page.evaluate("window.__seen")
    assert any("resume requested" in s for s in seen), seen
    page.close()


def test_killed_worker_raises_an_alarm_that_can_be_acknowledged(env):
    status = ensure_running(env)
    if status["workers"]["victim"]["state"] != "failed":
        pid = status["workers"]["victim"]["processes"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
    page = operator_page(env)
    alarm = page.locator(".alarm[data-alarm='worker_failed:victim']")
    alarm.wait_for(timeout=30000)
    assert "victim" in alarm.inner_text()
    alarm.get_by_role("button", name="Acknowledge").click()
    poll(lambda: "acked" in (alarm.get_attribute("class") or ""), 30, "the alarm to show acknowledged")
    alarms = {a["id"]: a for a in env["daemon"].status()["alarms"]}
    assert alarms["worker_failed:victim"]["acknowledged"] is True
    text = subprocess.run([sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket",
                           str(env["daemon"].socket_path), "status"], capture_output=True, text=True, timeout=30)
    assert "ALARM ERROR: worker victim failed" in text.stdout
    page.close()


class _EvilPage(BaseHTTPRequestHandler):
    """Another origin on this machine: a page that tries to act on the daemon."""

    def do_GET(self) -> None:  # noqa: N802
        body = b"<!doctype html><title>elsewhere</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_cross_origin_post_is_refused(env):
    ensure_running(env)
    page = operator_page(env)  # the browser holds the operator cookie
    evil = ThreadingHTTPServer(("127.0.0.1", 0), _EvilPage)
    thread = threading.Thread(target=evil.serve_forever, daemon=True)
    thread.start()
    try:
        other = env["browser"].new_page()
        other.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        target = env["web"]["url"] + "api/action/stop"
        # a simple cross-origin POST (no preflight): the cookie goes along (same site), the Origin gives it away
        other.evaluate("""async (url) => { await fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include',
            body: '{}'}); }""", target)
        # with the custom header the browser must ask first (preflight), and we never allow it
        blocked = other.evaluate("""async (url) => { try { await fetch(url, {method: 'POST', credentials: 'include',
            headers: {'X-Mimocorb2-Action': '1'}, body: '{}'}); return false; } catch (e) { return true; } }""", target)
        assert blocked
        poll(lambda: "web action refused" in env["daemon"].log_text(), 30, "the refusal in the daemon log")
        assert env["daemon"].status()["state"] == "running"
        other.close()
    finally:
        evil.shutdown()
        evil.server_close()
    # a script with the operator token but a foreign Origin is refused too
    request = urllib.request.Request(env["web"]["url"] + "api/action/pause", data=b"{}", method="POST", headers={
        "Authorization": f"Bearer {env['web']['operator_token']}", "X-Mimocorb2-Action": "1",
        "Origin": "http://evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    page.close()


def test_stop_shows_pending_then_finished(env):
    ensure_running(env)
    page = operator_page(env)
    poll(lambda: state_text(page) == "running", 30, "running on the page")
    record_runbox(page)
    page.get_by_role("button", name="Stop").click()
    poll(lambda: state_text(page) in ("finished", "failed"), 60, "the run to end on the page")
    seen = page.evaluate("window.__seen")
    assert any("stop requested" in s or s.startswith("stopping") for s in seen), seen
    assert env["daemon"].status()["state"] == state_text(page)
    page.close()


def test_abort_needs_confirmation(env):
    ensure_running(env)
    page = operator_page(env)
    poll(lambda: state_text(page) == "running", 30, "running on the page")
    page.get_by_role("button", name="Abort", exact=True).click()
    assert page.is_visible("#abort-confirm")
    page.get_by_role("button", name="Cancel").click()
    assert env["daemon"].status()["state"] == "running"
    page.get_by_role("button", name="Abort", exact=True).click()
    page.get_by_role("button", name="Abort now").click()
    poll(lambda: state_text(page) in ("finished", "failed"), 60, "the aborted run to end on the page")
    page.close()


def test_a_worker_importing_its_file_shows_on_the_page(env):
    directory = env["work"] / "slow_import"
    directory.mkdir()
    (directory / "slow.py").write_text("import time\ntime.sleep(3600)\n\ndef wait(buffer_io):\n    pass\n")
    (directory / "setup.yaml").write_text(
        "Buffers:\n  raw: {slot_count: 4, data_length: 1, data_dtype: {x: float64}}\n"
        "Workers:\n  slow: {file: slow.py, function: wait, sinks: [raw]}\n"
        "  drain: {function: exporters.drain, sources: [raw]}\n")
    daemon = env["daemon"]
    daemon.call("start", {"setup": str(directory / "setup.yaml")})
    page = operator_page(env)
    cell = page.locator("#workers tr[data-worker='slow'] [data-key='state']")
    poll(lambda: cell.inner_text().startswith("starting: importing slow.py for "), 30,
         "the import in the workers panel")
    daemon.call("abort", {})
    page.close()


def test_page_reconnects_after_a_daemon_restart(env):
    page = operator_page(env)
    poll(lambda: page.evaluate("document.body.dataset.connection") == "open", 30, "the page's socket")
    old = env["daemon"]
    port = int(env["web"]["url"].rsplit(":", 1)[1].strip("/"))
    assert old.stop() == 0
    poll(lambda: page.evaluate("document.body.dataset.connection") == "closed", 30, "the page to notice")
    new = DaemonProcess(old.socket_path, log_path=old.log_path,
                        extra_args=["--web", f"127.0.0.1:{port}", "--web-setup", str(env["setup"])])
    env["daemon"] = new.start()
    assert new.call("web")["operator_token"] == env["web"]["operator_token"]  # same runtime dir, same tokens
    poll(lambda: page.evaluate("document.body.dataset.connection") == "open", 60, "the page to reconnect")
    poll(lambda: state_text(page) == "idle", 30, "the new daemon's state on the page")
    assert "last update" in page.inner_text("#staleness")
    page.close()


def test_load_older_shows_the_lines_before_the_live_ones_and_they_stay(env):
    """"Load older" brings the lines before what the page holds from the log file, above the live
    ones, and shows every live line after them; later live lines do not push them out again."""
    status = ensure_running(env)
    page = operator_page(env)
    page.select_option("#log-name", "victim")
    log_file = Path(status["run"]["directory"]) / "logs" / "victim.log"
    poll(log_file.exists, 30, "the victim worker's log file")
    with open(log_file, "a") as fh:  # fewer than the daemon's per-page queue holds: none is skipped
        fh.write("".join(f"older line {i:05d}\n" for i in range(1900)))
    poll(lambda: page.locator("#logs .line", has_text="older line 01899").count() == 1, 30,
         "the newest line on the page (once: the recent lines a view change sends again are skipped)")
    assert page.locator("#logs .line", has_text="older line 01299").count() == 0  # following: 600 shown
    page.get_by_role("button", name="Load older").click()
    poll(lambda: page.locator("#logs .line", has_text="loading the worker's function").count() >= 1, 30,
         "the first lines of the file above the live ones")
    for n in (0, 1299, 1899):  # no gap between the loaded lines and the newest
        assert page.locator("#logs .line", has_text=f"older line {n:05d}").count() == 1, n
    with open(log_file, "a") as fh:  # live lines go on arriving and the oldest live ones age out
        fh.write("".join(f"later line {i:05d}\n" for i in range(700)))
    poll(lambda: page.locator("#logs .line", has_text="later line 00699").count() == 1, 30, "the later lines")
    for n in (0, 1299, 1899):  # they joined the loaded lines
        assert page.locator("#logs .line", has_text=f"older line {n:05d}").count() == 1, n
    page.close()
