"""The layers' rules, read from the source with `ast` (nothing is imported, so it is fast):

- no module under services/<svc>/service_layer or services/<svc>/domain imports SQLAlchemy, anywhere in
  the module (top level, inside functions, under `if TYPE_CHECKING:`). The SQL-bound unit of work and
  the repositories live in services/<svc>/adapters;
- no module under services/<svc>/service_layer or services/<svc>/entrypoints catches `IntegrityError`:
  a refused write reaches them as a named error (services.runtime.errors.StorageConflict)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"


def _modules(*layers: str) -> list[Path]:
    return sorted(path for layer in layers for path in SERVICES.glob(f"*/{layer}/**/*.py"))


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def sqlalchemy_imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) of every import of sqlalchemy (or a submodule) anywhere in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if node.module.split(".")[0] == "sqlalchemy":
                yield node.lineno, node.module


def _names_integrity_error(expression: ast.expr | None) -> bool:
    if expression is None:
        return False
    if isinstance(expression, ast.Tuple):
        return any(_names_integrity_error(element) for element in expression.elts)
    if isinstance(expression, ast.Name):
        return expression.id == "IntegrityError"
    if isinstance(expression, ast.Attribute):
        return expression.attr == "IntegrityError"
    return False


def integrity_error_handlers(tree: ast.AST) -> Iterator[int]:
    """The line of every `except` clause in `tree` that names IntegrityError (bare or dotted, alone or
    in a tuple)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and _names_integrity_error(node.type):
            yield node.lineno


def test_the_layers_are_found() -> None:
    # A glob that matched nothing would make every rule below pass vacuously.
    for service in ("payment_core", "insurance_adapter", "reconciliation", "data_aggregation"):
        for layer in ("service_layer", "domain", "entrypoints"):
            assert list((SERVICES / service / layer).glob("*.py")), f"{service}/{layer} has no modules"


@pytest.mark.parametrize("path", _modules("service_layer", "domain"), ids=_name)
def test_no_sqlalchemy_in_service_layer_or_domain(path: Path) -> None:
    found = [f"{_name(path)}:{line} imports {module}" for line, module in sqlalchemy_imports(_parse(path))]
    assert not found, "SQLAlchemy belongs in adapters/:\n" + "\n".join(found)


@pytest.mark.parametrize("path", _modules("service_layer", "entrypoints"), ids=_name)
def test_no_integrity_error_caught_above_adapters(path: Path) -> None:
    found = [f"{_name(path)}:{line}" for line in integrity_error_handlers(_parse(path))]
    rule = "catch the named error (errors.StorageConflict), not IntegrityError"
    assert not found, rule + ":\n" + "\n".join(found)


def test_the_checks_see_what_they_must() -> None:
    # The walkers themselves: every spelling the rules forbid is caught, what they allow is not.
    source = """
import sqlalchemy
import sqlalchemy.ext.asyncio as sa_async
from sqlalchemy.ext.asyncio import AsyncSession
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from sqlalchemy.orm import Session
def f():
    from sqlalchemy import text
    try:
        pass
    except IntegrityError:
        pass
    except (ValueError, sqlalchemy.exc.IntegrityError):
        pass
    except ValueError:
        pass
from services.runtime.errors import StorageConflict
from .sqlalchemy import nothing
import sqlalchemy_utils
"""
    tree = ast.parse(source)
    assert [module for _, module in sqlalchemy_imports(tree)] == [
        "sqlalchemy",
        "sqlalchemy.ext.asyncio",
        "sqlalchemy.ext.asyncio",
        "sqlalchemy.orm",
        "sqlalchemy",
    ]
    assert len(list(integrity_error_handlers(tree))) == 2
