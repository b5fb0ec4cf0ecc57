"""Shared fixtures: every test must leave no shared memory segment behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
