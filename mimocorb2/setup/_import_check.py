"""``mimocorb2 check --import``: import each worker file for real, in a short-lived child.

Validation is static (see :mod:`._source`); this optional live check catches what
only running the file shows (a missing module, an exception at import). Each file
is imported in its own child process, in its own session, killed with everything it
started when it takes longer than the timeout, so the checking process never runs
user code and never waits without bound.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ._model import Setup, WorkerSpec

#: how long one file may take to import by default
IMPORT_TIMEOUT = 30.0
_RESULT_MARK = "@@mimocorb2-import-check@@ "


def import_check(setup: Setup, timeout: float = IMPORT_TIMEOUT) -> list[str]:
    """Problems found by importing every user file of ``setup`` (empty when all load)."""
    by_file: dict[Path, list[WorkerSpec]] = {}
    for worker in setup.workers.values():
        if worker.file is not None:
            by_file.setdefault(Path(worker.file), []).append(worker)
    problems: list[str] = []
    for path, workers in by_file.items():
        for worker, message in _import_in_child(path, workers, timeout):
            problems.append(f"{setup.path}: Workers.{worker.name}.{message}")
    return problems


def _import_in_child(path: Path, workers: list[WorkerSpec],
                     timeout: float) -> list[tuple[WorkerSpec, str]]:
    """``(worker, 'key: message')`` for each worker whose function did not load."""
    names = list(dict.fromkeys(w.function for w in workers))
    command = [sys.executable, "-m", "mimocorb2.setup._import_check", str(path), *names]
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True, text=True,
                             errors="replace", cwd=path.parent)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(child)
        return [(w, f"file: importing {path} took longer than {timeout:g} s (killed)")
                for w in workers]
    finally:
        _kill_session(child)  # whatever the file started in the background goes too
    found = _result(stdout)
    if found is None:
        last = (stderr.strip().splitlines() or [""])[-1]
        how = f"exited with code {child.returncode}" if child.returncode >= 0 else \
            f"was killed by signal {-child.returncode}"
        detail = f": {last}" if last else ""
        return [(w, f"file: importing {path} {how}{detail}") for w in workers]
    return [(w, found[w.function]) for w in workers if found.get(w.function)]


def _kill_session(child: subprocess.Popen[str]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if child.poll() is None:
        child.wait()


def _result(stdout: str) -> dict[str, str] | None:
    """The child's verdict per function name ('' when fine), None if it never said."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(_RESULT_MARK):
            return json.loads(line[len(_RESULT_MARK):])
    return None


def _child_main(path: str, names: list[str]) -> None:
    """In the child: import ``path`` once, look up every name, print the verdicts."""
    from ._functions import FunctionProblem, find_function

    verdicts: dict[str, str] = {}
    for name in names:
        try:
            find_function(WorkerSpec(name="check", function=name, file=Path(path)))
            verdicts[name] = ""
        except FunctionProblem as err:
            verdicts[name] = f"{err.key}: {err}"
    sys.stdout.write("\n" + _RESULT_MARK + json.dumps(verdicts) + "\n")
    sys.stdout.flush()
    os._exit(0)  # do not run the user's atexit handlers or wait for its threads


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2:])
