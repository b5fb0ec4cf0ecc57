"""What workers print reaches the terminal of `mimocorb2 run`, once per line, with a prefix."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from mimocorb2.runtime import LogEcho

LINES = 3000  # per process

TALKER = """\
import logging
import sys


def talk(io):
    index = io.process_index
    for i in range(io.config["lines"]):
        print(f"line {index} {i}")
    print(f"complaint {index}", file=sys.stderr)
    logging.getLogger("user.analysis").warning("careful %d", index)
    print(f"last words {index}", end="")  # no newline: still shown, at the end
"""

SETUP = """\
Buffers:
  raw: {slot_count: 8, data_length: 1, data_dtype: {x: float64}}
Workers:
  talker:
    file: talker.py
    function: talk
    number_of_processes: 2
    config: {lines: %d}
    sinks: [raw]
  sink:
    function: exporters.drain
    sources: [raw]
"""


def run_cli(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "talker.py").write_text(TALKER)
    setup = tmp_path / "setup.yaml"
    setup.write_text(SETUP % LINES)
    proc = subprocess.run([sys.executable, "-m", "mimocorb2", "run", *flags, str(setup)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    return proc


def test_run_shows_each_printed_line_once_with_its_prefix(tmp_path: Path) -> None:
    proc = run_cli(tmp_path)
    shown = Counter(proc.stdout.splitlines())
    for index in (0, 1):
        prefix = f"talker#{index} | "
        missing = [i for i in range(LINES) if shown[f"{prefix}line {index} {i}"] != 1]
        assert not missing, f"process {index}: lines shown != once: {missing[:10]}"
        assert shown[f"{prefix}complaint {index}"] == 1
        assert shown[f"{prefix}last words {index}"] == 1
        assert shown[f"{prefix}[warning] careful {index} [user.analysis]"] == 1
    # aligned: the single-process worker's prefix is padded to the widest one
    assert not any(line.startswith("sink") and not line.startswith("sink     | ")
                   for line in shown)
    # mimocorb2's own info records stay in the log file
    assert "worker process started" not in proc.stdout
    # the summary comes after everything the workers wrote
    assert proc.stdout.index("last words") < proc.stdout.index("run directory:")
    # and every line is still in the worker's log file, once
    run_dir = Path(re.search(r"run directory: (\S+)", proc.stdout).group(1))
    logged = Counter(re.sub(r"^\S+ \[stdout\s*\] (.*) \[stdout\] pid=\d+ worker=talker$", r"\1", line)
                     for line in (run_dir / "logs" / "talker.log").read_text().splitlines())
    assert all(logged[f"line {p} {i}"] == 1 for p in (0, 1) for i in range(LINES))


def test_quiet_shows_no_worker_output(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "--quiet")
    assert "talker" not in proc.stdout and "line 0 " not in proc.stdout
    assert "run directory:" in proc.stdout


def _wait_shown(echo: LogEcho, count: int) -> None:
    deadline = time.monotonic() + 30
    while echo.lines_shown < count:
        assert time.monotonic() < deadline, f"echo showed {echo.lines_shown} of {count} lines"
        time.sleep(0.01)


def test_echo_follows_lines_written_in_pieces(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    out = io.StringIO()
    echo = LogEcho({"acq": 1, "fit": 2}, out=out, color=False, interval=0.01)
    echo.start(logs)
    stamp = "2026-11-27T18:00:00.000001Z"
    echo.register(41, "fit", 0)
    with open(logs / "fit.log", "a", encoding="utf-8") as fit:
        fit.write(f"{stamp} [stdout   ] hel")
        fit.flush()
        fit.write(f"lo [stdout] pid=41 worker=fit\n{stamp} [info     ] worker process started "
                  f"[mimocorb2.worker] function=f index=1 pid=42 worker=fit\n")
        fit.write(f"{stamp} [stdout   ] from the second [stdout] pid=42 worker=fit\n")
        fit.flush()
        _wait_shown(echo, 2)
        fit.write(f"{stamp} [error    ] worker function failed [mimocorb2.worker] pid=42 "
                  f"worker=fit\nTraceback (most recent call last):\nZeroDivisionError\n")
        fit.write(f"{stamp} [info     ] process note [mimocorb2.worker] pid=42 worker=fit\n"
                  "hidden continuation\n")
        fit.write(f"{stamp} [info     ] io.logger says hi [mimocorb2.worker.fit] pid=42 "
                  "worker=fit\n")
    (logs / "acq.log").write_text(f"{stamp} [stderr   ] unfinished")
    echo.stop()
    lines = out.getvalue().splitlines()
    assert [line for line in lines if line.startswith("acq")] == ["acq   | unfinished"]
    assert [line for line in lines if line.startswith("fit")] == [
        "fit#0 | hello",
        "fit#1 | from the second",
        "fit#1 | [error] worker function failed [mimocorb2.worker]",
        "fit#1 | Traceback (most recent call last):",
        "fit#1 | ZeroDivisionError",
        "fit#1 | [info] io.logger says hi",
    ]
    assert len(lines) == 7


def test_echo_colours_prefixes_on_request(tmp_path: Path) -> None:
    (tmp_path / "w.log").write_text("raw line from C\n")
    out = io.StringIO()
    echo = LogEcho({"w": 1}, out=out, color=True)
    echo.start(tmp_path)
    echo.stop()
    assert out.getvalue() == "\x1b[36mw |\x1b[0m raw line from C\n"
    assert LogEcho({"w": 1}, out=io.StringIO()).color is False  # not a terminal: plain
