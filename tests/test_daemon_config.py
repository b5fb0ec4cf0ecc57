"""The daemon's configuration file: read once, a misspelled key refused, defaults.yaml usable as a start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mimocorb2.supervisor.daemon_config import read_daemon_config
from mimocorb2.supervisor.priority import LoopPriority
from mimocorb2.web import WebConfigError

DEFAULTS = Path(__file__).resolve().parents[1] / "daemon" / "defaults.yaml"


def test_a_copy_of_defaults_yaml_is_a_valid_configuration():
    config = read_daemon_config(DEFAULTS)
    assert config.loop_priority is LoopPriority.REALTIME
    assert (config.web.host, config.web.port, config.web.enabled) == ("127.0.0.1", 8765, True)
    assert config.ignored == ("daemon", "run", "worker")


def test_settings_are_read(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("loop_priority: normal\nweb: {listen: 9000, enabled: false}\n")
    config = read_daemon_config(path)
    assert config.loop_priority is LoopPriority.NORMAL
    assert (config.web.port, config.web.enabled, config.ignored) == (9000, False, ())
    path.write_text("")
    assert read_daemon_config(path).loop_priority is None


@pytest.mark.parametrize(("text", "message"), [
    ("loop_priorty: normal\n", "unknown key 'loop_priorty' (did you mean 'loop_priority'?)"),
    ("Web: {enabled: false}\n", "unknown key 'Web' (did you mean 'web'?)"),
    ("colour: blue\n", "unknown key 'colour' (known: web, loop_priority)"),
    ("- web\n", "expected a mapping at the top"),
    ("web: [1\n", "not valid YAML"),
])
def test_a_bad_file_is_refused_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(WebConfigError) as caught:
        read_daemon_config(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_the_daemon_refuses_to_start_with_a_misspelled_key(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("loop_priority: normal\nweb:\n  enabled: false\nwebb: {listen: 9000}\n")
    done = subprocess.run([sys.executable, "-m", "mimocorb2.supervisor.cli", "--socket", str(tmp_path / "c.sock"),
                           "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert f"{path}: unknown key 'webb' (did you mean 'web'?)" in done.stderr
    assert not (tmp_path / "c.sock").exists()
