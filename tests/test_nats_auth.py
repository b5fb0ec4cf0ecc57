"""Every documented login of exporters.nats / importers.nats against a real nats-server
set up for it: token, TLS (with and without client certificates), creds file (JWT +
NKEY seed, operator mode); each one a round trip, and each refusal a clear failure.

A refused login does not go away by retrying: the worker fails at once (exit 78, no
restarts) with a reason naming the server and the keys to check, its status file
says "login refused". Secrets never reach a log or a status file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_nats import _need_server, assert_identical, write_setup  # the round-trip setup and its checks

from mimocorb2 import SetupError
from mimocorb2.net.testing import NatsServer, OperatorLogin, make_tls_files, read_status
from mimocorb2.runtime import Runner, read_setup_failure
from mimocorb2.testing import wait_until
from mimocorb2.setup import load_setup

N_EVENTS = 300


def run(tmp_path: Path, url: str, send_login: dict, receive_login: dict, more_importers: dict | None = None):
    """The round-trip setup of test_nats (source -> send -> NATS -> receive -> record), in the foreground."""
    setup = write_setup(tmp_path, url, n_events=N_EVENTS, exporter_config=send_login,
                        importers={"receive": dict(receive_login), **(more_importers or {})})
    setup.write_text("run_limits: {max_seconds: 60}\n" + setup.read_text())  # a regression ends, not hangs
    return Runner(load_setup(setup)).run()


def assert_round_trip(report) -> None:
    assert report.ok, report.failed_workers
    assert_identical(report.run_dir, "record_receive", N_EVENTS)
    assert read_status(report.run_dir, "receive")["state"] == "finished"


def assert_refused(report, worker: str, url: str, *reason: str, headline: str = "NATS at {url} refused") -> str:
    """``worker`` failed (no restarts in the foreground) with a reason naming ``url`` and ``reason``;
    its status says "login refused"; returns the reason."""
    assert not report.ok and worker in report.failed_workers, report.failed_workers
    why = read_setup_failure(report.run_dir, worker)
    assert why is not None, f"{worker} left no setup-failure reason"
    assert headline.format(url=url) in why, why
    for text in reason:
        assert text in why, why
    status = read_status(report.run_dir, worker)
    assert status["state"] == "login refused" and url in status["message"], status
    return why


def assert_secret_nowhere(run_dir: Path, *secrets: str) -> None:
    """No log, status file or setup-failure reason of the run holds any of ``secrets``."""
    paths = [*run_dir.rglob("*.log"), *run_dir.rglob("*.json"), *run_dir.rglob("*.setup-failure")]
    assert paths
    for path in paths:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, path


@pytest.fixture
def server_dir(tmp_path):
    _need_server()
    return tmp_path / "server"


# -- token ------------------------------------------------------------------------------------------


def test_token_login_from_a_file_and_inline(tmp_path, server_dir):
    """The exporter reads its token from token_file, the importer has it inline."""
    (tmp_path / "nats.token").write_text("tok-s3cret-42\n")
    with NatsServer(server_dir / "store", token="tok-s3cret-42") as server:
        report = run(tmp_path, server.url, {"token_file": "nats.token"}, {"token": "tok-s3cret-42"})
    assert_round_trip(report)
    assert_secret_nowhere(report.run_dir, "tok-s3cret-42")


def test_a_wrong_or_missing_login_fails_the_worker_at_once_naming_the_server(tmp_path, server_dir):
    """A wrong token (send), no login (receive), a user/password the server does not know (other)."""
    (tmp_path / "wrong.token").write_text("tok-wrong-17\n")
    with NatsServer(server_dir / "store", token="tok-right-99") as server:
        report = run(tmp_path, server.url, {"token_file": "wrong.token"}, {},
                     {"other": {"user": "daq", "password_file": "wrong.token"}})
    assert_refused(report, "send", server.url, "authentication failed", "'token' / 'token_file'")
    assert_refused(report, "receive", server.url, "the server asks for a login")
    assert_refused(report, "other", server.url, "authentication failed", "'user' and 'password' / 'password_file'")
    assert_secret_nowhere(report.run_dir, "tok-wrong-17", "tok-right-99")
    log = (report.run_dir / "logs" / "send.log").read_text()
    assert sum("refused worker 'send'" in line for line in log.splitlines()) == 1, log  # no retry loop


# -- TLS --------------------------------------------------------------------------------------------


def test_tls_with_the_ca_and_a_client_certificate_from_the_config(tmp_path, server_dir):
    """The server requires TLS and client certificates (verify: true); the workers name the
    CA and their certificate in the config, relative to the setup."""
    tls = make_tls_files(tmp_path / "tls", verify_clients=True)
    login = {"tls_ca": "tls/ca.crt", "tls_cert": "tls/client.crt", "tls_key": "tls/client.key"}
    with NatsServer(server_dir / "store", tls=tls) as server:
        assert server.url.startswith("tls://")
        report = run(tmp_path, server.url, login, login)
    assert_round_trip(report)


def test_tls_refuses_a_server_of_another_ca_and_a_client_without_certificate(tmp_path, server_dir):
    tls = make_tls_files(tmp_path / "tls", verify_clients=True)
    make_tls_files(tmp_path / "other")  # a CA that did not sign the server's certificate
    with NatsServer(server_dir / "store", tls=tls) as server:
        report = run(tmp_path, server.url, {"tls_ca": "other/ca.crt", "tls_cert": "tls/client.crt",
                                            "tls_key": "tls/client.key"}, {"tls_ca": "tls/ca.crt"})
    assert_refused(report, "send", server.url, "the server's certificate was refused",
                   f"not signed by the CA in 'tls_ca' ({tmp_path / 'other' / 'ca.crt'})")
    assert_refused(report, "receive", server.url, "asks for a client certificate", "'tls_cert' and 'tls_key'")


def test_tls_files_that_are_no_certificates_are_setup_errors(tmp_path):
    from mimocorb2.net import run_exporter
    from test_nats import _io

    (tmp_path / "ca.crt").write_text("not a certificate\n")
    tls = make_tls_files(tmp_path / "tls")
    for config, key in (({"tls_ca": "ca.crt"}, "tls_ca"),
                        ({"tls_cert": str(tls.client_cert), "tls_key": str(tls.server_key)}, "tls_cert")):
        with pytest.raises(SetupError) as err:
            run_exporter(_io("send", tmp_path, config={"url": "tls://127.0.0.1:1", **config}))
        assert f"Workers.send.config.{key}" in str(err.value), str(err.value)


# -- creds file (JWT + NKEY seed) ---------------------------------------------------------------------


def test_without_nkeys_a_creds_file_is_a_setup_error(tmp_path, monkeypatch):
    """nkeys comes with mimocorb2[nats]; where it is missing (an install without the extra), the
    config check says to install it instead of nats-py failing inside connect."""
    from mimocorb2.net import run_exporter
    from test_nats import _io

    monkeypatch.setitem(sys.modules, "nkeys", None)  # this interpreter cannot import it now
    creds = tmp_path / "daq.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n"
                     "-----BEGIN USER NKEY SEED-----\nSUAX\n------END USER NKEY SEED------\n")
    with pytest.raises(SetupError) as err:
        run_exporter(_io("send", tmp_path, config={"creds": str(creds)}))
    assert "Workers.send.config.creds" in str(err.value) and "pip install nkeys" in str(err.value)


def test_creds_file_login_in_operator_mode_and_a_user_of_another_account_refused(tmp_path, server_dir):
    """A real operator-mode server accepts the user of a creds file and refuses one signed by an
    account it does not know (nkeys, from the nats and test extras, signs the server's challenge)."""
    login = OperatorLogin.make(tmp_path / "keys")
    stranger = OperatorLogin.make(tmp_path / "other-keys", user="stranger")
    with NatsServer(server_dir / "store", extra_config=login.server_config) as server:
        report = run(tmp_path, server.url, {"creds": str(login.creds)}, {"creds": str(login.creds)})
        assert_round_trip(report)
        seed = login.creds.read_text().split("-----BEGIN USER NKEY SEED-----")[1].split()[0]
        assert_secret_nowhere(report.run_dir, seed)
        (tmp_path / "refused").mkdir()
        refused = run(tmp_path / "refused", server.url, {"creds": str(stranger.creds)}, {"creds": str(stranger.creds)})
    for worker in ("send", "receive"):
        assert_refused(refused, worker, server.url, "authentication failed", "'creds'")


def test_a_file_that_is_not_a_creds_file_is_a_setup_error(tmp_path):
    from mimocorb2.net import run_importer
    from test_nats import _io

    (tmp_path / "daq.creds").write_text(json.dumps({"user": "daq"}))
    with pytest.raises(SetupError) as err:
        run_importer(_io("receive", tmp_path, config={"creds": "daq.creds"}))
    assert "Workers.receive.config.creds" in str(err.value) and "not a NATS credentials file" in str(err.value)


# -- under the daemon ---------------------------------------------------------------------------------


def test_under_the_daemon_a_refused_login_fails_the_worker_without_restarts_and_status_says_why(tmp_path, daemon):
    _need_server()
    (tmp_path / "wrong.token").write_text("tok-wrong-17\n")
    with NatsServer(tmp_path / "server" / "store", token="tok-right-99") as server:
        setup = write_setup(tmp_path, server.url, n_events=N_EVENTS, exporter_config={"token_file": "wrong.token"},
                            importers={"receive": {"token_file": "wrong.token"}})
        daemon.call("start", {"setup": str(setup)})
        status = daemon.wait_for(lambda s: s["state"] in ("finished", "failed"), 60, "the run to end")
    assert status["state"] == "failed", status["run"]
    for worker in ("send", "receive"):
        shown = status["workers"][worker]
        assert shown["state"] == "failed" and shown["restarts"] == 0, shown
        assert f"NATS at {server.url} refused the connection" in shown["last_exit"], shown["last_exit"]
        assert "check 'token' / 'token_file'" in shown["last_exit"], shown["last_exit"]
        assert shown["device"]["state"] == "login refused", shown["device"]
    assert "tok-" not in json.dumps(status)


def test_a_config_asking_for_tls_never_logs_in_to_a_server_without_tls(tmp_path, server_dir):
    """nats-py would connect in the clear (it upgrades only when the server asks) and send
    the password unencrypted; the workers refuse instead, before sending their login."""
    tls = make_tls_files(tmp_path / "tls")
    (tmp_path / "nats.secret").write_text("s3cret-pw\n")
    login = {"user": "daq", "password_file": "nats.secret", "tls_ca": str(tls.ca)}
    # -DV: the server logs every protocol line, so a login sent would show as CONNECT
    with NatsServer(server_dir / "store", extra_args=["--user", "daq", "--pass", "s3cret-pw", "-DV"]) as server:
        tls_url = server.url.replace("nats://", "tls://")
        report = run(tmp_path, server.url, login, {**login, "url": tls_url})
        log = server.log_tail(1_000_000)
    for worker, url in (("send", server.url), ("receive", tls_url)):
        assert_refused(report, worker, url, f"the server at {url} does not require it; refusing to log in unencrypted",
                       headline="no login to NATS at {url}")
    assert "CONNECT" not in log, log[-3000:]


def test_a_login_refused_after_a_reconnect_is_waited_out_and_nothing_is_lost(tmp_path, server_dir):
    """The server comes back with another token in the middle of the run: the workers keep
    retrying, their status says the login is refused; with the right token again they go
    on, every event exactly once."""
    from test_nats import ForegroundRun

    n = 3000
    (tmp_path / "nats.token").write_text("tok-first-1\n")
    server = NatsServer(server_dir / "store", token="tok-first-1").start()
    try:
        setup = write_setup(tmp_path, server.url, n_events=n, rate=1000, exporter_config={"token_file": "nats.token"},
                            importers={"receive": {"token_file": "nats.token"}})
        with ForegroundRun(setup) as run:
            run_dir = run.run_dir()
            wait_until(lambda: read_status(run_dir, "send").get("events", 0) >= 300, 60, "events to be sent")
            server.stop()
            server.token = "tok-other-2"
            server.start()
            refused = f"waiting for NATS at {server.url} (login refused)"
            for worker in ("send", "receive"):
                status = wait_until(lambda: read_status(run_dir, worker).get("message") == refused
                                    and read_status(run_dir, worker), 60, f"{worker} to say its login is refused")
                assert "check 'token' / 'token_file'" in status["last_error"], status
            server.stop()
            server.token = "tok-first-1"
            server.start()
            run.finish()
    finally:
        server.stop()
    assert_identical(run_dir, "record_receive", n)
    assert_secret_nowhere(run_dir, "tok-first-1", "tok-other-2")
