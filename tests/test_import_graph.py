"""Layering: control/ imports nothing from supervisor/; worker processes never load the supervisor."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mimocorb2

PACKAGE = Path(mimocorb2.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative ones resolved against its package)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_control_imports_nothing_from_supervisor():
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(n for n in imported_modules(path) if n.startswith("mimocorb2.supervisor"))
        for path in (PACKAGE / "control").rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_control_and_worker_side_load_no_supervisor_at_run_time():
    code = (
        "import sys\n"
        "import mimocorb2.control.mimoctl, mimocorb2.control.client, mimocorb2.control.server\n"
        "import mimocorb2.runtime, mimocorb2.worker_templates, mimocorb2.functions\n"
        "print(sorted(m for m in sys.modules if m.startswith('mimocorb2.supervisor')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_every_command_has_one_handler():
    from mimocorb2.control.protocol import COMMAND_HELP, COMMANDS
    from mimocorb2.supervisor.handlers import Handlers

    assert COMMANDS == tuple(COMMAND_HELP)
    handlers = {name[4:] for name in dir(Handlers) if name.startswith("cmd_")}
    assert handlers == set(COMMANDS)


def test_protocol_states_are_the_run_phases():
    from mimocorb2.control.protocol import STATES
    from mimocorb2.supervisor.run import Phase

    assert STATES == tuple(p.value for p in Phase)
