"""Setup files: loading, every error message family, config merging, run directories."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
import textwrap
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from mimocorb2.errors import SetupError
from mimocorb2.setup import (Setup, WorkerSpec, check_setup, create_run_directory, did_you_mean,
                             load_setup, resolve_function, validate_setup)

FUNCS = """\
def source(io):
    return "source"

def passthrough(io):
    return "passthrough"

def drain(io):
    return "drain"

NOT_CALLABLE = 3
"""

GOOD = """\
Buffers:
  raw_data:
    slot_count: 8
    data_length: 100
    data_dtype: {ch1: float32, ch2: float64}
  filtered:
    slot_count: 4
    data_length: 100
    data_dtype: {ch1: float32, ch2: float64}
Workers:
  src:
    file: funcs.py
    function: source
    sinks: [raw_data]
  filter:
    file: funcs.py
    function: passthrough
    number_of_processes: 3
    sources: [raw_data]
    sinks: [filtered]
  drain:
    file: funcs.py
    function: drain
    sources: [filtered]
  watch:
    file: funcs.py
    function: drain
    observes: [raw_data]
"""


def write(directory: Path, text: str, name: str = "setup.yaml") -> Path:
    """Write ``text`` (dedented) to ``directory/name`` and the function file next to it."""
    (directory / "funcs.py").write_text(FUNCS)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def edit(old: str, new: str, text: str = GOOD) -> str:
    """GOOD with one exact snippet replaced (asserting it was there)."""
    assert old in text, old
    return text.replace(old, new, 1)


def problems_of(tmp_path: Path, text: str) -> list[str]:
    """The problems of a setup file with ``text``; asserts load_setup raises with them too."""
    path = write(tmp_path, text)
    found = check_setup(path)
    with pytest.raises(SetupError) as info:
        load_setup(path)
    assert info.value.problems == found
    return found


def one_problem(tmp_path: Path, text: str) -> str:
    """The single problem of a setup file; it must start with the file's path."""
    found = problems_of(tmp_path, text)
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'setup.yaml'}: ")
    return found[0].split(": ", 1)[1]


# --- a good setup ------------------------------------------------------------------------


def test_good_setup_loads(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert check_setup(path) == []
    setup = load_setup(path)
    assert isinstance(setup, Setup)
    assert setup.path == path and setup.directory == tmp_path
    assert setup.target_directory == tmp_path / "target"
    assert list(setup.buffers) == ["raw_data", "filtered"]
    assert list(setup.workers) == ["src", "filter", "drain", "watch"]


def test_buffer_spec_fields(tmp_path: Path) -> None:
    text = edit("  drain:\n", "  drain2:\n    file: funcs.py\n    function: drain\n"
                "    sources: raw_data\n  drain:\n")
    setup = load_setup(write(tmp_path, text))
    raw = setup.buffers["raw_data"]
    assert (raw.slot_count, raw.data_length) == (8, 100)
    assert raw.data_dtype == np.dtype([("ch1", "float32"), ("ch2", "float64")])
    assert raw.data_dtype.names == ("ch1", "ch2")
    assert raw.reader_groups == ["filter", "drain2"]
    assert raw.writer_count == 1
    assert raw.observers == ["watch"]
    assert setup.buffers["filtered"].writer_count == 3
    assert setup.buffers["filtered"].observers == []


def test_worker_spec_fields_and_defaults(tmp_path: Path) -> None:
    setup = load_setup(write(tmp_path, GOOD))
    src = setup.workers["src"]
    assert src == WorkerSpec(name="src", function="source", file=tmp_path / "funcs.py",
                             config={}, number_of_processes=1, sources=[],
                             sinks=["raw_data"], observes=[], restart="on-failure",
                             max_restarts=5, stall_timeout=None)
    assert src.file is not None and src.file.is_absolute()
    assert setup.workers["filter"].number_of_processes == 3


def test_top_level_defaults(tmp_path: Path) -> None:
    setup = load_setup(write(tmp_path, GOOD))
    assert setup.run_limits.max_events is None and setup.run_limits.max_seconds is None
    assert setup.on_worker_failure == "stop"
    assert setup.drain_timeout == 30.0 and setup.stats_interval == 1.0


def test_optional_keys_are_read(tmp_path: Path) -> None:
    text = GOOD + textwrap.dedent("""\
        target_directory: ../runs
        run_limits: {max_events: 1000, max_seconds: 2.5}
        on_worker_failure: continue
        drain_timeout: 5
        stats_interval: 0.5
        """)
    text = edit("    function: source\n", "    function: source\n    restart: always\n"
                "    max_restarts: 0\n    stall_timeout: 10\n", text)
    setup = load_setup(write(tmp_path, text))
    assert setup.target_directory == (tmp_path / "../runs").resolve()
    assert (setup.run_limits.max_events, setup.run_limits.max_seconds) == (1000, 2.5)
    assert setup.on_worker_failure == "continue"
    assert setup.drain_timeout == 5.0 and setup.stats_interval == 0.5
    src = setup.workers["src"]
    assert (src.restart, src.max_restarts, src.stall_timeout) == ("always", 0, 10.0)


def test_single_string_is_a_one_element_list(tmp_path: Path) -> None:
    text = edit("    sources: [filtered]", "    sources: filtered")
    assert load_setup(write(tmp_path, text)).workers["drain"].sources == ["filtered"]


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    text = """\
    x-common: &common
      file: funcs.py
      number_of_processes: 2
    Buffers:
      a: &buf
        slot_count: 4
        data_length: 10
        data_dtype: &dt {x: int32, y: float64}
      b: *buf
    Workers:
      src: {<<: *common, function: source, sinks: [a]}
      mid: {<<: *common, function: passthrough, sources: [a], sinks: [b],
            number_of_processes: 1}
      end: {<<: *common, function: drain, sources: [b]}
    """
    setup = load_setup(write(tmp_path, text))
    assert setup.buffers["b"].data_dtype == setup.buffers["a"].data_dtype
    assert setup.buffers["b"].data_dtype.names == ("x", "y")
    assert setup.workers["src"].number_of_processes == 2
    assert setup.workers["mid"].number_of_processes == 1
    assert setup.buffers["b"].writer_count == 1 and setup.buffers["a"].writer_count == 2


def test_did_you_mean() -> None:
    assert did_you_mean("raw_dat", ["raw_data", "filtered"]) == " (did you mean 'raw_data'?)"
    assert did_you_mean("zzz", ["raw_data"]) == ""


# --- file-level problems -----------------------------------------------------------------


def test_missing_setup_file(tmp_path: Path) -> None:
    path = tmp_path / "nothere.yaml"
    with pytest.raises(SetupError) as info:
        load_setup(path)
    assert str(path) in str(info.value)
    assert info.value.problems == [f"{path}: file not found"]


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, "Buffers:\n  a: {slot_count: 3\nWorkers: {}\n")
    assert "YAML syntax error" in problem
    assert problem.startswith("line 3, column ")


def test_a_tab_in_the_indentation_is_named(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, "Buffers:\n\traw:\n    slot_count: 4\n")
    assert problem == ("line 2, column 1: YAML syntax error: found character '\\t' that cannot "
                       "start any token (YAML indents with spaces only)")


def test_empty_setup_file(tmp_path: Path) -> None:
    assert "the setup file is empty" in one_problem(tmp_path, "")


def test_setup_file_not_a_mapping(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, "- Buffers\n- Workers\n")
    assert "must be a mapping with the sections 'Buffers' and 'Workers'" in problem


def test_not_a_setup_file(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, "rate: 5\nthreshold: 0.1\n")
    assert problem == ("not a setup file: it has no 'Buffers' and no 'Workers' section "
                       "(its keys: rate, threshold)")


def test_missing_sections(tmp_path: Path) -> None:
    found = problems_of(tmp_path, "target_directory: out\nBuffers: {}\n")
    assert [p.split(": ", 1)[1] for p in found] == [
        "Workers: missing section (a mapping of worker name -> worker settings)",
    ]
    problem = one_problem(tmp_path, "Workers:" + GOOD.split("Workers:")[1])
    assert problem == "Buffers: missing section (a mapping of buffer name -> buffer settings)"


def test_section_of_wrong_type(tmp_path: Path) -> None:
    text = GOOD.replace("Workers:", "Workers: [a, b]\nunused:", 1)
    found = problems_of(tmp_path, text)
    assert any("Workers: must be a mapping of worker name -> worker settings, "
               "got ['a', 'b'] (a list)" in p for p in found)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, GOOD + "drain_timout: 3\n")
    assert problem == "drain_timout: unknown key (did you mean 'drain_timeout'?)"


def test_x_prefixed_top_level_keys_hold_anchors(tmp_path: Path) -> None:
    assert check_setup(write(tmp_path, "x-anything: {a: 1}\n" + GOOD)) == []


def test_duplicate_key_is_reported_with_line(tmp_path: Path) -> None:
    text = GOOD + "  src:\n    function: drain\n    file: funcs.py\n    sources: [raw_data]\n"
    problems = problems_of(tmp_path, text)
    assert any("line 29: duplicate key 'src'" in p for p in problems)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = edit("slot_count: 8", "slot_count: 0")
    text = edit("ch2: float64}\n  filtered", "ch2: flaot64}\n  filtered", text)
    text = edit("sources: [raw_data]", "sources: [raw_dat]", text)
    text = edit("    function: drain\n    sources", "    functon: drain\n    sources", text)
    found = problems_of(tmp_path, text)
    assert len(found) == 4, found
    prefix = f"{tmp_path / 'setup.yaml'}: "
    assert all(p.startswith(prefix) for p in found)
    text_all = "\n".join(found)
    assert "Buffers.raw_data.slot_count: must be an integer >= 1, got 0" in text_all
    assert "Buffers.raw_data.data_dtype.ch2: unknown numpy dtype 'flaot64'" in text_all
    assert "Workers.filter.sources: unknown buffer 'raw_dat' (did you mean 'raw_data'?)" \
        in text_all
    assert "Workers.drain.functon: unknown key (did you mean 'function'?)" in text_all


def test_problem_count_in_message(tmp_path: Path) -> None:
    path = write(tmp_path, edit("slot_count: 8", "slot_count: -1"))
    with pytest.raises(SetupError) as info:
        load_setup(path)
    assert info.value.message == f"{path}: 1 problem"
    assert isinstance(info.value, ValueError)


# --- Buffers -----------------------------------------------------------------------------


@pytest.mark.parametrize("value, shown", [
    ("0", "0 (an integer)"), ("true", "True (a boolean)"), ("'8'", "'8' (a string)"),
    ("2.5", "2.5 (a number)"), ("null", "None (null)"),
])
def test_slot_count_must_be_positive_int(tmp_path: Path, value: str, shown: str) -> None:
    problem = one_problem(tmp_path, edit("slot_count: 8", f"slot_count: {value}"))
    assert problem == f"Buffers.raw_data.slot_count: must be an integer >= 1, got {shown}"


def test_data_length_must_be_positive_int(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("data_length: 100", "data_length: false"))
    assert problem == ("Buffers.raw_data.data_length: must be an integer >= 1, "
                       "got False (a boolean)")


def test_missing_buffer_key(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("    slot_count: 4\n", ""))
    assert problem == "Buffers.filtered.slot_count: missing"


def test_unknown_buffer_key(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("    slot_count: 4\n", "    slot_count: 4\n"
                                         "    slots_count: 4\n"))
    assert problem == "Buffers.filtered.slots_count: unknown key (did you mean 'slot_count'?)"


def test_unknown_key_without_close_match_is_a_warning_listing_known_keys(tmp_path: Path) -> None:
    path = write(tmp_path, edit("    slot_count: 4\n", "    slot_count: 4\n    zzz: 4\n"))
    assert check_setup(path) == []
    assert load_setup(path).warnings == [
        f"{path}: Buffers.filtered.zzz: unknown key, ignored "
        "(known keys: slot_count, data_length, data_dtype)"]


def test_buffer_not_a_mapping(tmp_path: Path) -> None:
    text = GOOD.replace("  filtered:\n    slot_count: 4\n    data_length: 100\n"
                        "    data_dtype: {ch1: float32, ch2: float64}\n", "  filtered: 12\n")
    problem = one_problem(tmp_path, text)
    assert problem.startswith("Buffers.filtered: must be a mapping of buffer settings")


def test_bad_dtype_string_is_named(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("ch1: float32, ch2: float64}\n  filtered",
                                         "ch1: flot32, ch2: float64}\n  filtered"))
    assert problem == ("Buffers.raw_data.data_dtype.ch1: unknown numpy dtype 'flot32' "
                       "(did you mean 'float32'?)")


def test_dtype_must_be_non_empty_mapping(tmp_path: Path) -> None:
    text = edit("data_dtype: {ch1: float32, ch2: float64}\n  filtered",
                "data_dtype: {}\n  filtered")
    text = edit("data_dtype: {ch1: float32, ch2: float64}\nWorkers",
                "data_dtype: float32\nWorkers", text)
    found = [p.split(": ", 1)[1] for p in problems_of(tmp_path, text)]
    assert found == [
        "Buffers.raw_data.data_dtype: must name at least one field "
        "(field name -> numpy dtype string)",
        "Buffers.filtered.data_dtype: must be a mapping of field name -> numpy dtype string, "
        "got 'float32' (a string)",
    ]


def test_dtype_value_must_be_a_string_and_not_object(tmp_path: Path) -> None:
    text = edit("ch1: float32, ch2: float64}\n  filtered", "ch1: 3, ch2: O}\n  filtered")
    found = [p.split(": ", 1)[1] for p in problems_of(tmp_path, text)]
    assert found[0].startswith("Buffers.raw_data.data_dtype.ch1: must be a numpy dtype string")
    assert found[1].startswith("Buffers.raw_data.data_dtype.ch2: dtype 'O' holds Python objects")


def test_subarray_and_string_dtypes(tmp_path: Path) -> None:
    text = edit("ch1: float32, ch2: float64}\n  filtered",
                "ch1: '(2,)f4', ch2: S10}\n  filtered")
    dtype = load_setup(write(tmp_path, text)).buffers["raw_data"].data_dtype
    assert dtype["ch1"].shape == (2,) and dtype["ch2"] == np.dtype("S10")


def test_invalid_buffer_name(tmp_path: Path) -> None:
    text = GOOD.replace("  raw_data:", "  raw/data:").replace("[raw_data]", "[raw/data]")
    problem = one_problem(tmp_path, text)
    assert problem.startswith("Buffers.raw/data: invalid buffer name 'raw/data'")


# --- graph rules -------------------------------------------------------------------------


def test_buffer_nobody_writes(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("    sinks: [raw_data]\n", ""))
    assert problem == ("Buffers.raw_data: no worker writes this buffer (list it in some "
                       "worker's sinks), so it would never end")


def test_buffer_nobody_reads(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("    sources: [filtered]\n", "    observes: filtered\n"))
    assert problem.startswith("Buffers.filtered: no worker reads this buffer")
    assert "add e.g. exporters.drain" in problem


def test_buffer_listed_twice(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("sources: [filtered]", "sources: [filtered, filtered]"))
    assert problem == "Workers.drain.sources: buffer 'filtered' is listed twice"


def test_buffer_in_two_lists_of_one_worker(tmp_path: Path) -> None:
    text = edit("sinks: [filtered]", "sinks: [filtered]\n    observes: [raw_data]")
    problem = one_problem(tmp_path, text)
    assert problem == "Workers.filter.observes: buffer 'raw_data' is already listed in sources"


# --- Workers -----------------------------------------------------------------------------


def test_unknown_buffer_with_suggestion(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("sources: [raw_data]", "sources: [raw_dat]"))
    assert problem == "Workers.filter.sources: unknown buffer 'raw_dat' (did you mean 'raw_data'?)"


def test_buffer_list_of_wrong_type(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("observes: [raw_data]", "observes: {a: 1}"))
    assert problem == "Workers.watch.observes: must be a list of buffer names, got {'a': 1} (a mapping)"


def test_unknown_worker_key(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("number_of_processes: 3", "number_of_process: 3"))
    assert problem == ("Workers.filter.number_of_process: unknown key "
                       "(did you mean 'number_of_processes'?)")


def test_function_missing(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("    function: source\n", ""))
    assert problem.startswith("Workers.src.function: missing")


def test_function_wrong_type(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("function: source", "function: [source]"))
    assert problem == "Workers.src.function: must be a non-empty string, got ['source'] (a list)"


def test_file_not_found(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("file: funcs.py\n    function: source",
                                         "file: fucns.py\n    function: source"))
    assert problem == (f"Workers.src.file: file 'fucns.py' not found "
                       f"(looked for {tmp_path / 'fucns.py'})")


def test_file_relative_to_setup_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "more.py").write_text("def source(io):\n    return 'sub'\n")
    path = write(tmp_path, edit("file: funcs.py\n    function: source",
                                "file: sub/more.py\n    function: source"))
    monkeypatch.chdir(sub)
    setup = load_setup(path)
    assert setup.workers["src"].file == sub / "more.py"
    assert resolve_function(setup.workers["src"])(None) == "sub"


def test_function_not_in_file(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("function: passthrough", "function: pasthrough"))
    assert problem == (f"Workers.filter.function: function 'pasthrough' not found in "
                       f"{tmp_path / 'funcs.py'} (did you mean 'passthrough'?)")


def test_function_not_callable(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("function: passthrough", "function: NOT_CALLABLE"))
    assert problem == (f"Workers.filter.function: 'NOT_CALLABLE' in {tmp_path / 'funcs.py'} "
                       f"is not callable")


def test_file_that_fails_to_import_is_not_run_by_validation(tmp_path: Path) -> None:
    path = write(tmp_path, edit("file: funcs.py\n    function: source",
                                "file: broken.py\n    function: source"))
    marker = tmp_path / "ran"
    (tmp_path / "broken.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise RuntimeError('no hardware')\n"
        "def source(io):\n    pass\n")
    assert check_setup(path) == []
    assert not marker.exists()  # validation never executes the user's file
    with pytest.raises(SetupError) as info:  # importing it (in a worker) reports the failure
        resolve_function(load_setup(path).workers["src"])
    assert info.value.problems == [f"Workers.src.file: importing {tmp_path / 'broken.py'} "
                                   "failed: RuntimeError: no hardware (line 2)"]


def test_file_with_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, edit("file: funcs.py\n    function: source",
                                "file: broken.py\n    function: source"))
    (tmp_path / "broken.py").write_text("def source(io):\n    return (\n")
    (problem,) = check_setup(path)
    assert f"Workers.src.file: {tmp_path / 'broken.py'}:2: SyntaxError: " in problem


@pytest.mark.parametrize("source", [
    "import numpy as source\n",
    "from os import path as source\n",
    "class source:\n    pass\n",
    "source = print\n",
    "source: object = print\n",
    "a, (b, source) = 1, (2, print)\n",
    "try:\n    from fast import source\nexcept ImportError:\n    def source(io):\n        pass\n",
    "if True:\n    async def source(io):\n        pass\n",
    "with open('x') as source:\n    pass\n",
])
def test_function_bound_at_top_level_in_any_way(tmp_path: Path, source: str) -> None:
    path = write(tmp_path, edit("file: funcs.py\n    function: source",
                                "file: other.py\n    function: source"))
    (tmp_path / "other.py").write_text(source)
    assert check_setup(path) == []


@pytest.mark.parametrize("signature, said", [
    ("()", "takes no positional argument"),
    ("(self, buffer_io)", "requires 2 arguments"),
    ("(buffer_io, *, threshold)", "also requires 1 keyword argument(s)"),
])
def test_worker_function_must_take_the_buffer_io(tmp_path: Path, signature: str, said: str) -> None:
    (tmp_path / "sig.py").write_text(f"def source{signature}:\n    pass\n")
    problem = one_problem(tmp_path, edit("    file: funcs.py\n    function: source",
                                         "    file: sig.py\n    function: source"))
    assert problem == (f"Workers.src.function: function 'source' in {tmp_path / 'sig.py'} (line 1) "
                       f"{said}; a worker function takes one, the worker's BufferIO: "
                       "def source(buffer_io): ...")


@pytest.mark.parametrize("signature", ["(io)", "(io, extra=1)", "(*args)", "(io, *, k=2)", "(io, /)"])
def test_worker_function_signatures_that_take_the_buffer_io(tmp_path: Path, signature: str) -> None:
    (tmp_path / "sig.py").write_text(f"def source{signature}:\n    pass\n"
                                     "def wrap(f):\n    return f\n"
                                     "@wrap\ndef decorated():\n    pass\n")
    assert check_setup(write(tmp_path, edit("    file: funcs.py\n    function: source",
                                            "    file: sig.py\n    function: source"))) == []
    assert check_setup(write(tmp_path, edit("    file: funcs.py\n    function: source",
                                            "    file: sig.py\n    function: decorated"))) == []


def test_function_defined_only_inside_a_function_is_missing(tmp_path: Path) -> None:
    path = write(tmp_path, edit("file: funcs.py\n    function: source",
                                "file: other.py\n    function: source"))
    (tmp_path / "other.py").write_text("def make():\n    def source(io):\n        pass\n"
                                       "def sorce(io):\n    pass\n")
    (problem,) = check_setup(path)
    assert problem.endswith(f"Workers.src.function: function 'source' not found in "
                            f"{tmp_path / 'other.py'} (did you mean 'sorce'?)")


def test_function_defined_only_under_a_main_guard_is_missing(tmp_path: Path) -> None:
    path = write(tmp_path, edit("file: funcs.py\n    function: source",
                                "file: other.py\n    function: source"))
    (tmp_path / "other.py").write_text("if __name__ == '__main__':\n    def source(io):\n"
                                       "        pass\nelse:\n    other = 1\n")
    (problem,) = check_setup(path)
    assert problem.endswith(f"function 'source' not found in {tmp_path / 'other.py'}")


@pytest.mark.parametrize("text", [
    b"def source(io):\n    pass\n\x00\n",  # a null byte
    b"x = " + b"(" * 5000 + b")" * 5000 + b"\n",  # nested too deeply for the parser
    b"x = " + b"-" * 200_000 + b"1\n",  # deep enough to exhaust the compiler's recursion
    b"\xff\xfe garbage \x80\n",  # not UTF-8
])
def test_unparsable_worker_files_are_problems_not_crashes(tmp_path: Path, text: bytes) -> None:
    path = write(tmp_path, edit("file: funcs.py\n    function: source",
                                "file: odd.py\n    function: source"))
    (tmp_path / "odd.py").write_bytes(text)
    (problem,) = check_setup(path)
    assert f"Workers.src.file: {tmp_path / 'odd.py'}" in problem


@pytest.mark.parametrize("source, reason", [
    ("from numpy import *\n", "'from numpy import *' (line 1)"),
    ("globals()['source'] = print\n", "a call of globals() (line 1)"),
    ("import sys\nsetattr(sys.modules[__name__], 'source', print)\n", "a call of setattr() (line 2)"),
    ("def __getattr__(name):\n    return print\n", "a module __getattr__ (line 1)"),
])
def test_dynamic_module_without_the_name_is_a_warning(tmp_path: Path, source: str,
                                                      reason: str) -> None:
    path = write(tmp_path, edit("file: funcs.py\n    function: source",
                                "file: other.py\n    function: source"))
    (tmp_path / "other.py").write_text(source)
    setup, problems, warnings = validate_setup(path)
    assert problems == [] and setup is not None
    assert setup.warnings == warnings
    assert warnings == [f"{path}: Workers.src.function: function 'source' is not visibly "
                        f"defined in {tmp_path / 'other.py'}, which binds names dynamically "
                        f"({reason}); it is looked up when the worker starts"]


def test_worker_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = write(tmp_path, edit("file: funcs.py\n    function: source",
                                "file: pipe.py\n    function: source"))
    os.mkfifo(tmp_path / "pipe.py")
    (problem,) = check_setup(path)
    assert "Workers.src.file" in problem and "pipe.py" in problem


def test_unknown_prebuilt_module(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("    file: funcs.py\n    function: drain",
                                         "    function: nosuchmodule.nothing"))
    assert problem.startswith("Workers.drain.function: unknown prebuilt function "
                              "'nosuchmodule.nothing'")


@pytest.mark.parametrize("given, meant", [
    ("redpitaya.waveform", "importers.redpitaya.waveform"),  # as the manual's heading shows it
    ("pha", "analyzers.pha"),
    ("visualize_histogram", "exporters.visualize_histogram"),
])
def test_prebuilt_name_without_its_first_parts_gets_the_full_name(tmp_path: Path, given: str,
                                                                   meant: str) -> None:
    problem = one_problem(tmp_path, edit("    file: funcs.py\n    function: drain",
                                         f"    function: {given}"))
    assert problem.startswith(f"Workers.drain.function: unknown prebuilt function '{given}'")
    assert problem.endswith(f" (did you mean '{meant}'?)")


def test_prebuilt_name_without_module(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("    file: funcs.py\n    function: drain",
                                         "    file: ''\n    function: drain"))
    assert problem.startswith("Workers.drain.function: unknown prebuilt function 'drain': "
                              "prebuilt names are 'module.function'")


@pytest.mark.parametrize("value, shown", [("0", "0 (an integer)"), ("two", "'two' (a string)"),
                                          ("true", "True (a boolean)")])
def test_number_of_processes(tmp_path: Path, value: str, shown: str) -> None:
    problem = one_problem(tmp_path, edit("number_of_processes: 3", f"number_of_processes: {value}"))
    assert problem == f"Workers.filter.number_of_processes: must be an integer >= 1, got {shown}"


def test_restart_policy(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("function: source", "function: source\n"
                                         "    restart: on_failure"))
    assert problem == ("Workers.src.restart: must be one of on-failure | always | never, "
                       "got 'on_failure' (a string) (did you mean 'on-failure'?)")


def test_max_restarts_and_stall_timeout(tmp_path: Path) -> None:
    text = edit("function: source", "function: source\n    max_restarts: -1\n"
                "    stall_timeout: 0")
    found = [p.split(": ", 1)[1] for p in problems_of(tmp_path, text)]
    assert found == [
        "Workers.src.max_restarts: must be an integer >= 0, got -1 (an integer)",
        "Workers.src.stall_timeout: must be a number > 0, got 0 (an integer)",
    ]


def test_worker_not_a_mapping(tmp_path: Path) -> None:
    text = GOOD + "  extra: just a string\n"
    problem = one_problem(tmp_path, text)
    assert problem.startswith("Workers.extra: must be a mapping of worker settings")


def test_no_workers(tmp_path: Path) -> None:
    found = problems_of(tmp_path, "Buffers: {}\nWorkers: {}\n")
    assert [p.split(": ", 1)[1] for p in found] == ["Workers: no workers defined"]


# --- config ------------------------------------------------------------------------------


def test_config_dict(tmp_path: Path) -> None:
    text = edit("function: source", "function: source\n    config: {rate: 5, name: x}")
    assert load_setup(write(tmp_path, text)).workers["src"].config == {"rate": 5, "name": "x"}


def test_config_file_relative_to_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "a.yaml").write_text("rate: 5\nthreshold: 0.1\n")
    text = edit("function: source", "function: source\n    config: conf/a.yaml")
    path = write(tmp_path, text)
    monkeypatch.chdir(tmp_path / "conf")
    assert load_setup(path).workers["src"].config == {"rate": 5, "threshold": 0.1}


def test_config_list_later_keys_win(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rate: 5\nthreshold: 0.1\nname: a\n")
    (tmp_path / "b.yaml").write_text("rate: 7\n")
    text = edit("function: source", "function: source\n"
                "    config: [a.yaml, b.yaml, {name: inline}]")
    config = load_setup(write(tmp_path, text)).workers["src"].config
    assert config == {"rate": 7, "threshold": 0.1, "name": "inline"}
    assert list(config) == ["rate", "threshold", "name"]


def test_config_empty_file_is_empty_dict(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    text = edit("function: source", "function: source\n    config: empty.yaml")
    assert load_setup(write(tmp_path, text)).workers["src"].config == {}


def test_config_file_missing(tmp_path: Path) -> None:
    text = edit("function: source", "function: source\n    config: [a.yaml, nope.yaml]")
    (tmp_path / "a.yaml").write_text("rate: 1\n")
    problem = one_problem(tmp_path, text)
    assert problem == (f"Workers.src.config[1]: config file 'nope.yaml': not found "
                       f"(looked for {tmp_path / 'nope.yaml'})")


def test_config_file_unparsable(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("rate: 1\n  x: [\n")
    text = edit("function: source", "function: source\n    config: bad.yaml")
    problem = one_problem(tmp_path, text)
    assert problem.startswith("Workers.src.config: config file 'bad.yaml': line ")
    assert "YAML syntax error" in problem


def test_config_file_not_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    text = edit("function: source", "function: source\n    config: list.yaml")
    problem = one_problem(tmp_path, text)
    assert problem == ("Workers.src.config: config file 'list.yaml' must hold a mapping of keys "
                       "to values, got [1, 2] (a list)")


def test_config_wrong_type(tmp_path: Path) -> None:
    text = edit("function: source", "function: source\n    config: [a.yaml, 3]\n")
    (tmp_path / "a.yaml").write_text("rate: 1\n")
    problem = one_problem(tmp_path, text)
    assert problem == "Workers.src.config[1]: must be a config file name or a mapping, got 3 (an integer)"
    problem = one_problem(tmp_path, edit("function: source", "function: source\n    config: 3"))
    assert problem.startswith("Workers.src.config: must be a mapping, a config file name")


# --- top-level options -------------------------------------------------------------------


def test_bad_top_level_options(tmp_path: Path) -> None:
    text = GOOD + textwrap.dedent("""\
        target_directory: 5
        run_limits: {max_events: 0, max_seconds: -1, max_event: 3}
        on_worker_failure: ignore
        drain_timeout: 0
        stats_interval: fast
        """)
    found = [p.split(": ", 1)[1] for p in problems_of(tmp_path, text)]
    assert found == [
        "target_directory: must be a directory name (string), got 5 (an integer)",
        "run_limits.max_event: unknown key (did you mean 'max_events'?)",
        "run_limits.max_events: must be an integer >= 1, got 0 (an integer)",
        "run_limits.max_seconds: must be a number > 0, got -1 (an integer)",
        "on_worker_failure: must be one of stop | continue, got 'ignore' (a string)",
        "drain_timeout: must be a number > 0, got 0 (an integer)",
        "stats_interval: must be a number > 0, got 'fast' (a string)",
    ]


def test_run_limits_not_a_mapping(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, GOOD + "run_limits: 100\n")
    assert problem == "run_limits: must be a mapping of max_events / max_seconds, got 100 (an integer)"


# --- resolve_function --------------------------------------------------------------------


def test_resolve_function_from_user_file(tmp_path: Path) -> None:
    setup = load_setup(write(tmp_path, GOOD))
    assert resolve_function(setup.workers["filter"])(None) == "passthrough"


def test_resolve_function_imports_helpers_next_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "helper_mod_for_setup_test.py").write_text("VALUE = 42\n")
    (tmp_path / "uses_helper.py").write_text(
        "import helper_mod_for_setup_test as h\ndef source(io):\n    return h.VALUE\n")
    worker = WorkerSpec(name="w", function="source", file=tmp_path / "uses_helper.py")
    assert resolve_function(worker)(None) == 42
    assert str(tmp_path) not in __import__("sys").path


def test_resolve_function_missing_function(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    worker = WorkerSpec(name="w", function="nothing", file=tmp_path / "funcs.py")
    with pytest.raises(SetupError) as info:
        resolve_function(worker)
    text = str(info.value)
    assert "worker 'w'" in text and "nothing" in text and str(tmp_path / "funcs.py") in text
    assert info.value.problems == [
        f"Workers.w.function: function 'nothing' not found in {tmp_path / 'funcs.py'}"]


def test_resolve_function_missing_file(tmp_path: Path) -> None:
    worker = WorkerSpec(name="w", function="f", file=tmp_path / "gone.py")
    with pytest.raises(SetupError) as info:
        resolve_function(worker)
    assert info.value.problems == [f"Workers.w.file: file not found: {tmp_path / 'gone.py'}"]


def test_resolve_function_unknown_prebuilt() -> None:
    worker = WorkerSpec(name="w", function="nosuchmodule.nothing")
    with pytest.raises(SetupError) as info:
        resolve_function(worker)
    assert "worker 'w'" in str(info.value)
    assert "unknown prebuilt function 'nosuchmodule.nothing'" in info.value.problems[0]


def test_resolve_function_sees_edited_file(tmp_path: Path) -> None:
    file = tmp_path / "changing.py"
    file.write_text("def f(io):\n    return 1\n")
    worker = WorkerSpec(name="w", function="f", file=file)
    assert resolve_function(worker)(None) == 1
    file.write_text("def f(io):\n    return 22\n")
    assert resolve_function(worker)(None) == 22


def _call_in_child(worker: WorkerSpec, queue: multiprocessing.Queue) -> None:
    queue.put(resolve_function(worker)(None))


def test_resolve_function_in_spawned_process(tmp_path: Path) -> None:
    setup = load_setup(write(tmp_path, GOOD))
    worker = pickle.loads(pickle.dumps(setup.workers["drain"]))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_call_in_child, args=(worker, queue))
    process.start()
    assert queue.get(timeout=30) == "drain"
    process.join(timeout=30)
    assert process.exitcode == 0


# --- run directories ---------------------------------------------------------------------


def test_run_directory_name_and_collision(tmp_path: Path) -> None:
    setup = load_setup(write(tmp_path, GOOD))
    now = datetime(2026, 3, 4, 5, 6, 7)
    first = create_run_directory(setup, now)
    second = create_run_directory(setup, now)
    third = create_run_directory(setup, now)
    assert first == tmp_path / "target" / "run_2026-03-04_05-06-07"
    assert second.name == "run_2026-03-04_05-06-07_2"
    assert third.name == "run_2026-03-04_05-06-07_3"
    assert all((d / "setup.yaml").is_file() for d in (first, second, third))


def test_run_directory_default_time(tmp_path: Path) -> None:
    setup = load_setup(write(tmp_path, GOOD))
    run_dir = create_run_directory(setup)
    assert run_dir.parent == tmp_path / "target" and run_dir.name.startswith("run_20")


def test_run_copy_is_self_contained_and_reloadable(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rate: 5\nthreshold: 0.1\n")
    text = edit("function: source", "function: source\n    config: [a.yaml, {rate: 9}]")
    text = text + "run_limits: {max_seconds: 3}\ntarget_directory: out\n"
    setup = load_setup(write(tmp_path, text))
    run_dir = create_run_directory(setup, datetime(2026, 1, 1))
    (tmp_path / "a.yaml").unlink()
    copy = run_dir / "setup.yaml"
    assert "a.yaml" not in copy.read_text() and "&" not in copy.read_text()
    again = load_setup(copy)
    assert again.workers["src"].config == {"rate": 9, "threshold": 0.1}
    assert again.workers == setup.workers
    assert again.buffers == setup.buffers
    assert again.target_directory == tmp_path / "out"
    assert again.run_limits == setup.run_limits
    assert again.resolved == setup.resolved


def test_resolved_is_plain_data(tmp_path: Path) -> None:
    setup = load_setup(write(tmp_path, GOOD))
    resolved = setup.resolved
    assert resolved["Buffers"]["raw_data"]["data_dtype"] == {"ch1": "float32", "ch2": "float64"}
    assert resolved["Workers"]["src"]["file"] == str(tmp_path / "funcs.py")
    assert resolved["Workers"]["filter"]["number_of_processes"] == 3
    assert resolved["target_directory"] == str(tmp_path / "target")


def test_run_copy_converts_numpy_values(tmp_path: Path) -> None:
    setup = load_setup(write(tmp_path, GOOD))
    setup.resolved["Workers"]["src"]["config"] = {"gain": np.float32(2.0), "n": np.int64(3),
                                                  "arr": np.arange(2), "where": tmp_path}
    run_dir = create_run_directory(setup)
    config = load_setup(run_dir / "setup.yaml").workers["src"].config
    assert config == {"gain": 2.0, "n": 3, "arr": [0, 1], "where": str(tmp_path)}


# --- odds and ends -----------------------------------------------------------------------


def test_setup_pickles(tmp_path: Path) -> None:
    setup = load_setup(write(tmp_path, GOOD))
    again = pickle.loads(pickle.dumps(setup))
    assert again.buffers == setup.buffers and again.workers == setup.workers


def test_misspelled_section_reported_once(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, GOOD.replace("Workers:", "Worker:"))
    assert problem == "Worker: unknown key (did you mean 'Workers'?)"


def test_misspelled_required_buffer_key_reported_once(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, edit("slot_count: 4", "slotcount: 4"))
    assert problem == "Buffers.filtered.slotcount: unknown key (did you mean 'slot_count'?)"


def test_anchored_config_is_not_shared(tmp_path: Path) -> None:
    text = edit("function: source", "function: source\n    config: &cfg {limits: {a: 1}}")
    text = edit("function: drain\n    sources", "function: drain\n    config: *cfg\n    sources",
                text)
    setup = load_setup(write(tmp_path, text))
    setup.workers["src"].config["limits"]["a"] = 2
    assert setup.workers["drain"].config == {"limits": {"a": 1}}
    assert "&" not in (create_run_directory(setup) / "setup.yaml").read_text()


def test_cycle_is_reported(tmp_path: Path) -> None:
    text = GOOD.replace("Workers:", "  back:\n    slot_count: 2\n    data_length: 1\n"
                        "    data_dtype: {x: f8}\nWorkers:", 1)
    text = edit("    function: source\n    sinks: [raw_data]",
                "    function: source\n    sinks: [raw_data]\n    sources: [back]", text)
    text = edit("sinks: [filtered]", "sinks: [filtered, back]", text)
    problem = one_problem(tmp_path, text)
    assert problem == ("Workers.src.sinks: the workers form a cycle (src -[raw_data]-> filter "
                       "-[back]-> src), so end of stream could never propagate through it")


# --- bounded reading of setup and config files ---------------------------------------------


def test_setup_path_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "setup.yaml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    assert check_setup(fifo) == [f"{fifo}: is a FIFO (named pipe), not a regular file; refused"]


def test_setup_path_that_is_a_device_is_refused() -> None:
    assert check_setup("/dev/zero") == [
        "/dev/zero: is a character device, not a regular file; refused"]


def test_setup_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with open(path, "a") as fh:  # a sparse tail: big on paper, nothing to read
        fh.truncate(5 * 1024 * 1024)
    assert check_setup(path) == [f"{path}: file is 5.0 MiB, more than the 1.0 MiB limit; refused"]


def test_config_file_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "cfg.yaml")
    problem = one_problem(tmp_path, edit("function: drain\n    sources: [filtered]",
                                         "function: drain\n    sources: [filtered]\n"
                                         "    config: cfg.yaml"))
    assert problem == ("Workers.drain.config: config file 'cfg.yaml': is a FIFO (named pipe), "
                       "not a regular file; refused")


def _alias_bomb(levels: int = 9) -> str:
    lines = ['x-a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    names = "abcdefghijklmnop"
    for prev, name in zip(names, names[1:levels]):
        lines.append(f"x-{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    bomb = _alias_bomb()  # 9**9 = 387 million strings once expanded
    text = edit("function: drain\n    sources: [filtered]",
                "function: drain\n    sources: [filtered]\n    config: {table: *i}", bomb + GOOD)
    path = write(tmp_path, text)
    cpu = time.process_time()
    (problem,) = check_setup(path)
    assert time.process_time() - cpu < 1.0
    assert problem == (f"{path}: line 6: the document grows past 250,000 values when its "
                       "aliases (*name) are expanded; refused (an alias bomb?)")


def test_modest_aliases_are_fine(tmp_path: Path) -> None:
    text = edit("function: drain\n    sources: [filtered]",
                "function: drain\n    sources: [filtered]\n    config: {table: *c}",
                _alias_bomb(3) + GOOD)
    setup = load_setup(write(tmp_path, text))
    assert len(setup.workers["drain"].config["table"]) == 9


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, "x-loop: &loop [1, *loop]\n" + GOOD)
    assert problem == "line 1: an anchor (&name) is used inside itself (a recursive alias); refused"


# --- buffer counts of prebuilt functions' templates ------------------------------------------


def test_prebuilt_filter_without_sinks_fails_validation(tmp_path: Path) -> None:
    text = GOOD + "  copy:\n    function: misc.copy\n    sources: [raw_data]\n    sinks: []\n"
    problem = one_problem(tmp_path, text)
    assert problem == "Workers.copy.sinks: misc.copy is a Filter worker: it takes at least 1 buffer in sinks, got 0"


def test_prebuilt_observer_with_a_source_fails_validation(tmp_path: Path) -> None:
    text = GOOD + ("  scope:\n    function: observers.oscilloscope\n    sources: [filtered]\n"
                   "    observes: [raw_data]\n")
    problem = one_problem(tmp_path, text)
    assert problem == ("Workers.scope.sources: observers.oscilloscope is an Observer worker: "
                       "it takes no buffer in sources, got 1")


# --- config values of prebuilt functions, checked by the functions themselves ----------------

PREBUILT_VIEWS = """\
  scope:
    function: observers.oscilloscope
    config: {channels: [ch1], ylim: [-1, 1]}
    observes: [raw_data]
  view:
    function: exporters.visualize_histogram
    config: {plot_type: step}
    observes: [filtered]
"""


def test_prebuilt_config_values_are_checked_at_validation(tmp_path: Path) -> None:
    assert check_setup(write(tmp_path, GOOD + PREBUILT_VIEWS)) == []
    wrong = edit("plot_type: step", "plot_type: bars", GOOD + PREBUILT_VIEWS)
    wrong = edit("channels: [ch1]", "channels: [ch3]", wrong)
    found = [p.split(": ", 1)[1] for p in problems_of(tmp_path, wrong)]
    assert found == [
        "Workers.scope.config.channels: channels ['ch3'] are not fields of the observed buffer "
        "(fields: ['ch1', 'ch2'])",
        "Workers.view.config.plot_type: expected one of ['line', 'bar', 'step'], got 'bars'",
    ]


def test_prebuilt_checks_need_the_rest_of_the_setup_valid_and_never_run_the_function(tmp_path: Path) -> None:
    # a histogram of a field that does not exist is only reported once the graph is sound
    text = GOOD + ("  hist:\n    function: exporters.histogram\n    config: {bins: {ch9: [0, 1, 10]}}\n"
                   "    sources: [heights]\n")
    text = edit("Workers:", "  heights:\n    slot_count: 4\n    data_length: 1\n"
                "    data_dtype: {ch1: float32}\nWorkers:", text)
    assert problems_of(tmp_path, text) == [
        f"{tmp_path / 'setup.yaml'}: Buffers.heights: no worker writes this buffer (list it in some "
        "worker's sinks), so it would never end"]
    text = edit("    sinks: [filtered]\n", "    sinks: [filtered, heights]\n", text)
    assert one_problem(tmp_path, text).startswith(
        "Workers.hist.config.bins.ch9: channel 'ch9' is not a field of the source buffer")
    fixed = write(tmp_path, text.replace("ch9: [0, 1, 10]", "ch1: [0, 1, 10]"))
    assert check_setup(fixed) == []
    assert not (tmp_path / "target").exists()  # nothing was written, no run directory made
