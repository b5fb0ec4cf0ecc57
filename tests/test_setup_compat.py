"""Setups written for the original mimoCoRB2 load unchanged; typos are still refused.

Also: warnings and notes reach `mimocorb2 check`, `mimoctl check`/`start` (against a
real daemon) and the run's daemon.log.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from mimocorb2 import cli
from mimocorb2.errors import SetupError
from mimocorb2.setup import check_setup, inspect_setup, load_setup
from mimocorb2.testing import DaemonProcess

FUNCS = """\
import numpy as np
from mimocorb2.worker_templates import Exporter, Importer


def source(io):
    importer = Importer(io)

    def events():
        for _ in range(io.config.get("events", 10 ** 9)):
            yield np.zeros(importer.data_example.shape, importer.data_example.dtype)

    importer(events)


def analyse(io):
    for _ in Exporter(io):
        pass
"""

# in the style of the original's examples: templates and an Options block at the top,
# keys the original ignores inside a buffer and a worker
ORIGINAL_STYLE = """\
osc_template: &osc_template
  slot_count: 8
  data_length: 16
  data_dtype:
    chA: 'f4'
    chB: 'f4'
  overwrite: True

Options:
  output_directory: somewhere

base_config: [common.yaml, {threshold: 5, unit: mV}]
target_directory: ~/mimo_runs

Buffers:
  InputBuffer: *osc_template
  AcceptedPulses: *osc_template

Workers:
  input:
    file: funcs.py
    function: source
    sinks: [InputBuffer]
    config: [source.yaml, {rate: 20}]
  filter:
    file: funcs.py
    function: analyse
    number_of_processes: 2
    sources: [InputBuffer]
    sinks: [AcceptedPulses]
    config: {threshold: 7}
    comment: the filter of the muon example
  save:
    function: exporters.drain
    sources: [AcceptedPulses]
"""


def write_setup(directory: Path, text: str = ORIGINAL_STYLE) -> Path:
    """The setup, its function file and its config files in ``directory``."""
    (directory / "funcs.py").write_text(FUNCS)
    (directory / "common.yaml").write_text("threshold: 1\ncommon: yes\nunit: V\n")
    (directory / "source.yaml").write_text("rate: 10\nevents: 50\n")
    path = directory / "setup.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch home directory, so that `~` in a setup points into the test's tmp_path."""
    directory = tmp_path / "home"
    directory.mkdir()
    monkeypatch.setenv("HOME", str(directory))
    return directory


def test_original_style_setup_loads(tmp_path: Path, home: Path) -> None:
    path = write_setup(tmp_path)
    setup = load_setup(path)
    assert list(setup.buffers) == ["InputBuffer", "AcceptedPulses"]
    assert setup.buffers["AcceptedPulses"].data_dtype.names == ("chA", "chB")
    assert setup.target_directory == home / "mimo_runs"
    assert setup.notes == [f"{path}: not used by mimocorb2: Options"]
    # the template's 'overwrite' reaches both buffers through the alias: one warning each
    assert setup.warnings == [
        f"{path}: Buffers.InputBuffer.overwrite: unknown key, ignored "
        "(known keys: slot_count, data_length, data_dtype)",
        f"{path}: Buffers.AcceptedPulses.overwrite: unknown key, ignored "
        "(known keys: slot_count, data_length, data_dtype)",
        f"{path}: Workers.filter.comment: unknown key, ignored (known keys: file, function, "
        "config, number_of_processes, sources, sinks, observes, restart, max_restarts, "
        "stall_timeout)",
    ]


def test_base_config_is_merged_under_every_worker(tmp_path: Path, home: Path) -> None:
    setup = load_setup(write_setup(tmp_path))
    base = {"threshold": 5, "common": True, "unit": "mV"}  # the dict overrides common.yaml
    assert setup.workers["save"].config == base
    assert setup.workers["filter"].config == {**base, "threshold": 7}  # the worker's keys win
    # a mixed list: file first, then a dict overriding it
    assert setup.workers["input"].config == {**base, "rate": 20, "events": 50}
    # the run directory's copy is self-contained: base_config is merged in, not repeated
    assert "base_config" not in setup.resolved
    assert setup.resolved["Workers"]["filter"]["config"]["common"] is True


@pytest.mark.parametrize("value", ["common.yaml", "{common: yes, threshold: 1, unit: V}"])
def test_base_config_as_file_or_mapping(tmp_path: Path, home: Path, value: str) -> None:
    text = ORIGINAL_STYLE.replace("base_config: [common.yaml, {threshold: 5, unit: mV}]",
                                  f"base_config: {value}")
    setup = load_setup(write_setup(tmp_path, text))
    assert setup.workers["save"].config == {"threshold": 1, "common": True, "unit": "V"}
    assert setup.workers["filter"].config["threshold"] == 7


def test_bad_base_config_is_refused(tmp_path: Path, home: Path) -> None:
    text = ORIGINAL_STYLE.replace("[common.yaml, {threshold: 5, unit: mV}]", "[nope.yaml, 3]")
    problems = check_setup(write_setup(tmp_path, text))
    assert [p.split(": ", 1)[1].split(" (")[0] for p in problems] == [
        "base_config[0]: config file 'nope.yaml': not found",
        "base_config[1]: must be a config file name or a mapping, got 3",
    ]


@pytest.mark.parametrize("target, expected", [
    ("~/runs", "HOME/runs"), ("ABS/elsewhere", "ABS/elsewhere"), ("out/runs", "SETUP/out/runs"),
])
def test_target_directory_forms(tmp_path: Path, home: Path, target: str, expected: str) -> None:
    absolute = tmp_path / "abs"
    text = ORIGINAL_STYLE.replace("target_directory: ~/mimo_runs",
                                  f"target_directory: {target.replace('ABS', str(absolute))}")
    setup = load_setup(write_setup(tmp_path, text))
    want = expected.replace("HOME", str(home)).replace("ABS", str(absolute))
    assert setup.target_directory == Path(want.replace("SETUP", str(tmp_path)))


@pytest.mark.parametrize("old, new, problem", [
    ("number_of_processes: 2", "number_of_process: 2",
     "Workers.filter.number_of_process: unknown key (did you mean 'number_of_processes'?)"),
    ("function: analyse", "Function: analyse",
     "Workers.filter.Function: unknown key (did you mean 'function'?)"),
    ("  data_dtype:\n", "  data_dtyp:\n",
     "Buffers.InputBuffer.data_dtyp: unknown key (did you mean 'data_dtype'?)"),
    ("Buffers:", "Buffer:", "Buffer: unknown key (did you mean 'Buffers'?)"),
    ("Workers:", "workers:", "workers: unknown key (did you mean 'Workers'?)"),
    ("base_config:", "base_conf:", "base_conf: unknown key (did you mean 'base_config'?)"),
    ("target_directory:", "targetdirectory:",
     "targetdirectory: unknown key (did you mean 'target_directory'?)"),
])
def test_misspellings_are_still_refused(tmp_path: Path, home: Path, old: str, new: str,
                                        problem: str) -> None:
    assert old in ORIGINAL_STYLE
    path = write_setup(tmp_path, ORIGINAL_STYLE.replace(old, new, 1))
    with pytest.raises(SetupError) as info:
        load_setup(path)
    assert f"{path}: {problem}" in info.value.problems, info.value.problems
    # the typo is not also listed among the keys that are merely not used
    assert all(new.split(":")[0] not in note for note in inspect_setup(path).notes)


def test_x_prefixed_anchor_holders_stay_silent(tmp_path: Path, home: Path) -> None:
    path = write_setup(tmp_path, "x-workers: {a: 1}\n" + ORIGINAL_STYLE)
    assert check_setup(path) == []
    assert inspect_setup(path).notes == [f"{path}: not used by mimocorb2: Options"]


def test_cli_check_prints_warnings_and_the_note_once(tmp_path: Path, home: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write_setup(tmp_path)
    assert cli.main(["check", str(path)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ok\n")
    assert out.count("not used by mimocorb2: Options") == 1
    assert out.count("  warning: ") == 3 and "Workers.filter.comment" in out
    broken = write_setup(tmp_path, ORIGINAL_STYLE.replace("sources: [InputBuffer]",
                                                          "sorces: [InputBuffer]"))
    assert cli.main(["check", str(broken)]) == cli.EXIT_FAILED
    out = capsys.readouterr().out
    assert "Workers.filter.sorces: unknown key (did you mean 'sources'?)" in out
    assert "  warning: " in out  # the warnings are still listed next to the problems


def test_daemon_replies_carry_warnings(tmp_path: Path, home: Path) -> None:
    path = write_setup(tmp_path)
    with DaemonProcess(tmp_path / "sock" / "control.sock") as daemon:
        reply = daemon.call("check", {"setup": str(path)})
        assert reply["ok"] is True
        assert len(reply["warnings"]) == 3 and "Workers.filter.comment" in reply["warnings"][2]
        assert reply["notes"] == [f"{path}: not used by mimocorb2: Options"]

        ctl = [sys.executable, "-m", "mimocorb2.control.mimoctl", "--socket",
               str(daemon.socket_path)]
        checked = subprocess.run([*ctl, "check", str(path)], capture_output=True, text=True,
                                 timeout=60)
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.count("  warning: ") == 3, checked.stdout
        assert checked.stdout.count("  note: ") == 1
        started = subprocess.run([*ctl, "start", str(path)], capture_output=True, text=True,
                                 timeout=60)
        assert started.returncode == 0, started.stderr
        assert started.stdout.count("  warning: ") == 3, started.stdout
        assert "note: " in started.stdout and "not used by mimocorb2: Options" in started.stdout
        run_dir = Path(started.stdout.split("run started: ", 1)[1].split("\n", 1)[0])
        assert run_dir.parent == home / "mimo_runs"
        daemon.wait_for(lambda s: s["state"] in ("finished", "failed"), 90, "end of the run")
        assert daemon.status()["state"] == "finished"
        run_log = (run_dir / "daemon.log").read_text()
        assert run_log.count("setup warning") == 3 and "Workers.filter.comment" in run_log
        assert "not used by mimocorb2: Options" in run_log
        assert "setup warning" in daemon.log_text()
        copy = yaml.safe_load((run_dir / "setup.yaml").read_text())
        assert copy["Workers"]["filter"]["config"]["threshold"] == 7


def test_cli_check_import_names_the_setup_as_typed(tmp_path: Path, home: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_setup(tmp_path)
    (tmp_path / "funcs.py").write_text("raise RuntimeError('no scope attached')\n" + FUNCS)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check", path.name, "--import"]) == cli.EXIT_FAILED
    out = capsys.readouterr().out
    assert out.startswith(f"{path.name}: 2 problem(s)\n"), out  # the two workers of funcs.py
    assert (f"\n  - {path.name}: Workers.input.file: importing {tmp_path / 'funcs.py'} failed: "
            "RuntimeError: no scope attached (line 1)") in out, out


def test_a_template_is_silent_but_an_unused_or_misspelled_key_is_not(tmp_path: Path, home: Path) -> None:
    """A top-level key holding an anchor is a template; without an anchor it is noted; a typo
    of a section is a problem even when it holds an anchor."""
    (tmp_path / "funcs.py").write_text("def src(io):\n    pass\n")
    body = textwrap.dedent("""\
        Workers:
          w: {file: funcs.py, function: src, sinks: [b]}
          d: {function: exporters.drain, sources: [b]}
        """)
    path = tmp_path / "setup.yaml"
    path.write_text("buf_template: &t {slot_count: 4, data_length: 2, data_dtype: {x: f8}}\n"
                    "Buffers: {b: *t}\nplain_extra: 3\n" + body)
    assert load_setup(path).notes == [f"{path}: not used by mimocorb2: plain_extra"]
    path.write_text("Buffer: &t {b: {slot_count: 4, data_length: 2, data_dtype: {x: f8}}}\nBuffers: *t\n" + body)
    with pytest.raises(SetupError, match="Buffer"):
        load_setup(path)
