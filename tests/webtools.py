"""Helpers of the web tests: a daemon serving the page, a real Chromium, a test setup."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

#: the source writes this pulse: a triangle of height PULSE_HEIGHT on ch1 (ch2 holds half of it)
PULSE_HEIGHT = 0.5
FUNCS = '''
import numpy as np
from mimocorb2.sim.pulses import paced
from mimocorb2.worker_templates import Importer, Processor, Exporter

PULSE_HEIGHT = %r

def known_pulses(buffer_io):
    imp = Importer(buffer_io)
    example = imp.data_example
    n = len(example)
    shape = np.clip(1.0 - np.abs(np.arange(n) - n // 4) / 10.0, 0.0, None).astype(np.float32)
    def events():
        i = 0
        while True:
            d = np.zeros(example.shape, example.dtype)
            d["ch1"] = PULSE_HEIGHT * shape
            d["ch2"] = 0.5 * PULSE_HEIGHT * shape
            yield d
            i += 1
    def ufunc():
        yield from paced(events(), float(buffer_io.get("rate", 100)))
    imp(ufunc)

def heights(buffer_io):
    proc = Processor(buffer_io)
    out = buffer_io.data_out_examples[0]
    def ufunc(data):
        o = np.zeros(out.shape, out.dtype)
        o["height"] = float(data["ch1"].max())
        return [o]
    proc(ufunc)

def idle_reader(buffer_io):
    for data, meta in Exporter(buffer_io):
        pass
''' % PULSE_HEIGHT

SETUP = """\
Buffers:
  Raw: {slot_count: 16, data_length: 200, data_dtype: {ch1: float32, ch2: float32}}
  Heights: {slot_count: 64, data_length: 1, data_dtype: {height: float32}}
Workers:
  source:
    file: web_functions.py
    function: known_pulses
    sinks: [Raw]
    config: {rate: 100}
  heights:
    file: web_functions.py
    function: heights
    sources: [Raw]
    sinks: [Heights]
  histogram:
    function: exporters.histogram
    sources: [Heights]
    config: {update_interval: 0.5, bins: {height: [0.0, 1.0, 50]}}
  scope:
    function: observers.oscilloscope
    observes: [Raw]
    config: {channels: [ch1], y_scaling: [1000, 0, "mV"], t_scaling: [0.008, 0, "us"], update_interval: 0.5,
             trigger_level: 0.1}
  victim:
    file: web_functions.py
    function: idle_reader
    sources: [Raw]
    restart: never
on_worker_failure: continue
stats_interval: 0.5
drain_timeout: 20
"""


def write_setup(directory: Path) -> Path:
    """The web tests' setup in ``directory``; returns the setup file."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "web_functions.py").write_text(FUNCS)
    path = directory / "setup.yaml"
    path.write_text(SETUP)
    return path


def require_chromium() -> None:
    """Skip without Chromium, except under CI (there the browser tests must run)."""
    if os.path.exists(CHROMIUM):
        return
    message = f"{CHROMIUM} missing: install Debian's chromium package (`make test` does it as root)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def launch_browser(playwright: Any, user_data: Path) -> Any:
    """A fresh headless Chromium (its own profile directory), as a persistent context."""
    return playwright.chromium.launch_persistent_context(
        str(user_data), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1600})


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Call ``predicate`` until it returns something true; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
