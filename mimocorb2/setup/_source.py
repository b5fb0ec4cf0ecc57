"""Checking a worker's Python file without running it.

Validation (``mimocorb2 check``, ``mimoctl start``) never imports user code: a file
that exits, sleeps or spins at import would take the supervisor with it. Instead
the file is parsed with :mod:`ast` and its top-level bindings are read. Importing
happens only in the worker processes (and in ``mimocorb2 check --import``, in a
short-lived child).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from ._files import FileProblem, read_small_file
from ._problems import did_you_mean

#: calls at module level that may bind names we cannot see
_DYNAMIC_CALLS = ("globals", "setattr", "exec", "eval", "vars", "__import__")
#: expressions that are certainly not callable when bound to a name
_NOT_CALLABLE = (ast.Constant, ast.List, ast.Dict, ast.Set, ast.Tuple, ast.JoinedStr,
                 ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp)


class SourceProblem(Exception):
    """The file or the function in it is wrong; ``key`` is 'file' or 'function'."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class ModuleBindings:
    """What a module binds at top level, as far as its source says."""

    #: name -> True if some binding may be callable (def, class, import, any expression)
    names: dict[str, bool] = field(default_factory=dict)
    #: why the module may bind names we cannot see (star import, globals(), ...), or ""
    dynamic: str = ""

    def bind(self, name: str, callable_: bool) -> None:
        """Record one binding of ``name``."""
        self.names[name] = self.names.get(name, False) or callable_


def parse_source(path: Path) -> ast.Module:
    """The syntax tree of ``path``; SourceProblem naming file and line when it does not parse."""
    try:
        data = read_small_file(path)
    except FileProblem as err:
        raise SourceProblem("file", f"{path}: {err}") from None
    try:
        return ast.parse(data, filename=str(path))
    except SyntaxError as err:
        line = f":{err.lineno}" if err.lineno else ""
        raise SourceProblem("file", f"{path}{line}: {type(err).__name__}: {err.msg}") from None
    except (RecursionError, MemoryError):  # the parser gives up on extreme nesting
        raise SourceProblem("file", f"{path}: cannot parse: nested too deeply") from None
    except ValueError as err:
        raise SourceProblem("file", f"{path}: cannot parse: {err}") from None


def _targets(target: ast.expr) -> list[str]:
    """The names an assignment target binds (``a``, ``a, b``, ``[a, *b]``)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        return [n for element in target.elts for n in _targets(element)]
    if isinstance(target, ast.Starred):
        return _targets(target.value)
    return []


def _dynamic_reason(statement: ast.stmt) -> str:
    """Why top-level ``statement`` may bind module names we cannot see, or ""."""
    if isinstance(statement, ast.ImportFrom) and any(a.name == "*" for a in statement.names):
        return f"'from {statement.module} import *' (line {statement.lineno})"
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef) \
            and statement.name == "__getattr__":
        return f"a module __getattr__ (line {statement.lineno})"
    runs_now = not isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    for node in ast.walk(statement):
        if isinstance(node, ast.Global):  # a function binding module names when called
            return f"a 'global' statement (line {node.lineno})"
        if runs_now and isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in _DYNAMIC_CALLS:
            return f"a call of {node.func.id}() (line {node.lineno})"
        if runs_now and isinstance(node, ast.Attribute) and node.attr == "modules" \
                and isinstance(node.value, ast.Name) and node.value.id == "sys":
            return f"a use of sys.modules (line {node.lineno})"
    return ""


def _bind_statement(bindings: ModuleBindings, statement: ast.stmt) -> None:
    """Record what one top-level statement binds (conditional bodies included)."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        bindings.bind(statement.name, True)
    elif isinstance(statement, ast.Assign):
        literal = isinstance(statement.value, _NOT_CALLABLE)
        for target in statement.targets:  # an unpacked literal may hold callables
            for name in _targets(target):
                bindings.bind(name, not (literal and isinstance(target, ast.Name)))
    elif isinstance(statement, ast.AnnAssign | ast.AugAssign):
        value = statement.value
        for name in _targets(statement.target):
            bindings.bind(name, value is not None and not isinstance(value, _NOT_CALLABLE))
    elif isinstance(statement, ast.Import):
        for alias in statement.names:
            bindings.bind(alias.asname or alias.name.split(".")[0], True)
    elif isinstance(statement, ast.ImportFrom):
        for alias in statement.names:
            if alias.name != "*":
                bindings.bind(alias.asname or alias.name, True)
    elif isinstance(statement, ast.For | ast.AsyncFor):
        for name in _targets(statement.target):
            bindings.bind(name, True)
    elif isinstance(statement, ast.With | ast.AsyncWith):
        for item in statement.items:
            if item.optional_vars is not None:
                for name in _targets(item.optional_vars):
                    bindings.bind(name, True)
    for body in _nested_bodies(statement):
        for inner in body:
            _bind_statement(bindings, inner)


def _is_main_guard(test: ast.expr) -> bool:
    """Whether ``test`` is ``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and \
        any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)


def _nested_bodies(statement: ast.stmt) -> list[list[ast.stmt]]:
    """Statement lists run at module level inside ``statement`` (if/try/with/for/while)."""
    if isinstance(statement, ast.If) and _is_main_guard(statement.test):
        return [statement.orelse]  # the body never runs when the file is imported
    if isinstance(statement, ast.If | ast.For | ast.AsyncFor | ast.While):
        return [statement.body, statement.orelse]
    if isinstance(statement, ast.With | ast.AsyncWith):
        return [statement.body]
    if isinstance(statement, ast.Try | ast.TryStar):
        return [statement.body, *(h.body for h in statement.handlers), statement.orelse,
                statement.finalbody]
    if isinstance(statement, ast.Match):
        return [case.body for case in statement.cases]
    return []


def module_bindings(tree: ast.Module) -> ModuleBindings:
    """Every name ``tree`` binds at module level."""
    bindings = ModuleBindings()
    for statement in tree.body:
        _bind_statement(bindings, statement)
        bindings.dynamic = bindings.dynamic or _dynamic_reason(statement)
    return bindings


def check_source_function(path: Path, function: str) -> list[str]:
    """Check statically that ``path`` parses and binds ``function`` at top level.

    Returns warnings (the module binds names dynamically and ``function`` is not among
    the visible ones); raises SourceProblem for a file that cannot be read or parsed,
    a name that is surely missing, or a name bound only to a non-callable literal.
    """
    tree = parse_source(path)
    bindings = module_bindings(tree)
    if function in bindings.names:
        if not bindings.names[function]:
            raise SourceProblem("function", f"'{function}' in {path} is not callable")
        _check_signature(tree, path, function)
        return []
    if bindings.dynamic:
        return [f"function '{function}' is not visibly defined in {path}, which binds names "
                f"dynamically ({bindings.dynamic}); it is looked up when the worker starts"]
    visible = [n for n, maybe_callable in bindings.names.items()
               if maybe_callable and not n.startswith("_")]
    raise SourceProblem("function", f"function '{function}' not found in {path}"
                                    f"{did_you_mean(function, visible)}")


def _check_signature(tree: ast.Module, path: Path, function: str) -> None:
    """A worker function defined once at top level must take the BufferIO as its one argument."""
    binders = []
    for statement in tree.body:
        found = ModuleBindings()
        _bind_statement(found, statement)
        if function in found.names:
            binders.append(statement)
    if (len(binders) != 1 or not isinstance(binders[0], ast.FunctionDef | ast.AsyncFunctionDef)
            or binders[0].decorator_list):
        return  # bound in another way, more than once or through a decorator: its start will tell
    args = binders[0].args
    positional = [*args.posonlyargs, *args.args]
    required = len(positional) - len(args.defaults)
    required_keywords = sum(default is None for default in args.kw_defaults)
    if (positional or args.vararg) and required <= 1 and not required_keywords:
        return
    if not positional and not args.vararg:
        given = "takes no positional argument"
    elif required_keywords:
        given = f"also requires {required_keywords} keyword argument(s)"
    else:
        given = f"requires {required} arguments"
    raise SourceProblem("function", f"function '{function}' in {path} (line {binders[0].lineno}) "
                        f"{given}; a worker function takes one, the worker's BufferIO: "
                        f"def {function}(buffer_io): ...")
