"""Run directories: ``target_directory/run_YYYY-MM-DD_HH-MM-SS/`` with a resolved setup copy."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ._load import to_plain
from ._model import Setup
from ._yaml import dump_yaml

SETUP_COPY = "setup.yaml"


def _make_unique_directory(parent: Path, name: str) -> Path:
    """Create ``parent/name``, or ``name_2``, ``name_3``... if taken (atomic mkdir)."""
    parent.mkdir(parents=True, exist_ok=True)
    candidate, number = parent / name, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1
            candidate = parent / f"{name}_{number}"


def create_run_directory(setup: Setup, now: datetime | None = None) -> Path:
    """Create the run directory of ``setup`` and write the resolved ``setup.yaml`` into it."""
    stamp = (now or datetime.now()).strftime("run_%Y-%m-%d_%H-%M-%S")
    run_dir = _make_unique_directory(Path(setup.target_directory), stamp)
    (run_dir / SETUP_COPY).write_text(dump_yaml(to_plain(setup.resolved)), encoding="utf-8")
    return run_dir
