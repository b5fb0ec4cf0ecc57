"""check_setup never raises, whatever the YAML holds, and every problem names the file."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mimocorb2.setup import check_setup, load_setup
from test_setup import FUNCS, GOOD

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 10), st.floats(-1, 5),
                    st.sampled_from(["", "raw_data", "filtered", "funcs.py", "source", "f8",
                                     "x.y", "on-failure", "nosuch.yaml", "int32"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["slot_count", "data_dtype", "function", "file", "a",
                                     "sources", "config"]), inner, max_size=3)), max_leaves=6)


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into nested dicts of ``data``."""
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found.extend(_paths(value, (*prefix, key)))
    return found


def _replace(data: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


GOOD_DATA = yaml.safe_load(GOOD)
PATHS = _paths(GOOD_DATA)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=3))
def test_mutated_setup_never_crashes(mutations: list[tuple[tuple, Any]]) -> None:
    data = yaml.safe_load(GOOD)
    for path, value in mutations:
        try:
            _replace(data, path, value)
        except (KeyError, TypeError, IndexError):
            pass  # an earlier mutation removed the parent
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "funcs.py").write_text(FUNCS)
        setup_path = Path(tmp) / "setup.yaml"
        setup_path.write_text(yaml.safe_dump(data))
        problems = check_setup(setup_path)
        assert all(isinstance(p, str) and p.startswith(f"{setup_path}: ") for p in problems)
        if not problems:
            load_setup(setup_path)


@settings(max_examples=40, deadline=None)
@given(VALUES)
def test_any_document_never_crashes(document: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        setup_path = Path(tmp) / "setup.yaml"
        setup_path.write_text(yaml.safe_dump(document))
        problems = check_setup(setup_path)
        assert problems and all(p.startswith(f"{setup_path}: ") for p in problems)
