"""Shared fixtures: every test must leave no shared memory segment behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mimocorb2.testing import DaemonProcess

SHM_DIR = Path("/dev/shm")


def _our_segments() -> set[str]:
    """Segments created by this test process (their names carry the creator's pid)."""
    prefix = f"mimocorb2-{os.getpid()}-"
    return {p.name for p in SHM_DIR.glob("mimocorb2-*") if p.name.startswith(prefix)}


@pytest.fixture(autouse=True)
def no_leaked_shared_memory():
    """Fail a test that leaves a segment of this process in /dev/shm."""
    before = _our_segments()
    yield
    import gc

    gc.collect()
    leaked = _our_segments() - before
    assert not leaked, f"test leaked shared memory segments: {sorted(leaked)}"


@pytest.fixture
def daemon_env() -> dict[str, str] | None:
    """The environment of the ``daemon`` fixture's process (None: this one's); a test file may override it."""
    return None


@pytest.fixture
def daemon(tmp_path: Path, daemon_env: dict[str, str] | None) -> Iterator[DaemonProcess]:
    """A daemon of its own for one test, on a socket under ``tmp_path``.

    After the test it must stop with exit code 0 (else the tail of its log is shown) and
    leave no shared memory behind. Test files with other needs define their own ``daemon``.
    """
    from mimocorb2.testing import DaemonProcess, segments_of

    d = DaemonProcess(tmp_path / "sock" / "control.sock", env=daemon_env).start()
    yield d
    assert d.stop() == 0, d.log_text()[-3000:]
    assert segments_of(d.pid) == [], "the daemon left shared memory behind"
