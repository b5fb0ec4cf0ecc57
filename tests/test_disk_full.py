"""A full disk: every writer that hits ENOSPC says so in one line naming its file, then fails normally.

The test mounts a 3 MB tmpfs as the run's target directory (root only, as in CI)
and lets a mimo file export, a CSV exporter, a histogram exporter and an
oscilloscope writing PNGs fill it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FUNCS = '''
import time
import numpy as np
from mimocorb2.worker_templates import Importer, Processor

def source(io):
    imp = Importer(io)
    def gen():
        for i in range(io["n_events"]):
            yield np.full(imp.data_example.shape, i % 1000, imp.data_example.dtype)
            time.sleep(0.002)
        yield None
    imp(gen)

def height(io):
    Processor(io)(lambda data: [np.array([(float(data["x"][0]),)], dtype=[("h", "f8")])])
'''

WRITERS = ("export", "table", "hist", "scope")


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: this test needs root to mount a small tmpfs")
        pytest.skip("needs root to mount a 3 MB tmpfs (runs as root in CI)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_writers_that_fill_the_disk_each_say_so_once_and_fail_normally(small_disk, tmp_path):
    (tmp_path / "funcs.py").write_text(FUNCS)
    setup = tmp_path / "setup.yaml"
    setup.write_text(textwrap.dedent(f"""\
        target_directory: {small_disk}
        min_free_disk: 0  # no guard: this test is about writers that hit ENOSPC anyway
        Buffers:
          raw: {{slot_count: 32, data_length: 2000, data_dtype: {{x: float64}}}}
          heights: {{slot_count: 32, data_length: 1, data_dtype: {{h: float64}}}}
        Workers:
          src: {{file: funcs.py, function: source, sinks: [raw], config: {{n_events: 2500}}}}
          hgt: {{file: funcs.py, function: height, sources: [raw], sinks: [heights]}}
          export: {{function: data.export, sources: [raw]}}
          table: {{function: exporters.csv, sources: [heights], config: {{save_interval: 0.02}}}}
          hist: {{function: exporters.histogram, sources: [heights],
                 config: {{update_interval: 0.05, bins: {{h: [0, 1000, 4000]}}}}}}
          scope: {{function: observers.oscilloscope, observes: [raw], config: {{update_interval: 0.05}}}}
        """))
    env = {**os.environ, "MIMOCORB2_HEADLESS": "1"}
    done = subprocess.run([sys.executable, "-m", "mimocorb2", "run", str(setup)], env=env,
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "disk full" in line]
    failed = set(re.findall(r"worker '(\w+)' failed", done.stderr))
    assert "export" in failed, output
    assert failed <= set(WRITERS), output
    for worker in failed:
        said = [line for line in lines if line.startswith(f"worker '{worker}' (pid")]
        assert len(said) == 1, (worker, output)
        # the file, then the free space of its filesystem
        assert re.search(rf"disk full writing {re.escape(str(small_disk))}/\S+: .*free of 3\.\d MB", said[0]), said[0]
