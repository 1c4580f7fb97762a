"""Every service has the same modules with the same roles, so learning one is learning all:
only the store touches the database driver, and no service's modules import in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
SERVICES = ("referral", "allocation", "audit", "reporting")
ROLES = ("domain", "ports", "handlers", "store", "app", "settings")
DRIVER = ("pymongo", "bson", "motor", "shared.mongo")


def modules(service: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the service."""
    root = SERVICES_DIR / service
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(SERVICES_DIR.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports, TYPE_CHECKING imports included, resolved to names."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def is_store(name: str, service: str) -> bool:
    store = f"services.{service}.store"
    return name == store or name.startswith(store + ".")


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_the_same_modules(service: str) -> None:
    root = SERVICES_DIR / service
    missing = [
        role
        for role in ROLES
        if not (root / f"{role}.py").is_file() and not (root / role / "__init__.py").is_file()
    ]
    assert missing == [], f"{service} lacks {missing}"


@pytest.mark.parametrize("service", SERVICES)
def test_only_the_store_imports_the_database_driver(service: str) -> None:
    offenders = {
        name: sorted(
            module
            for module in imported(path, name)
            if any(module == driver or module.startswith(driver + ".") for driver in DRIVER)
        )
        for name, path in modules(service).items()
        if not is_store(name, service)
    }
    assert {name: found for name, found in offenders.items() if found} == {}


@pytest.mark.parametrize("service", SERVICES)
def test_a_services_modules_never_import_each_other_in_a_circle(service: str) -> None:
    own = modules(service)
    graph = {
        name: {module for module in imported(path, name) if module in own and module != name}
        for name, path in own.items()
    }
    # A package's __init__ importing its own submodules is how packages are assembled.
    for name in graph:
        graph[name] = {module for module in graph[name] if not module.startswith(name + ".")}

    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycles.append([*path[path.index(name) :], name])
            return
        for module in sorted(graph[name]):
            visit(module, [*path, name])

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


def test_the_check_sees_a_driver_import_and_a_circle(tmp_path: Path) -> None:
    """The checks above would pass vacuously if they read nothing: prove they can fail."""
    module = tmp_path / "app.py"
    module.write_text("from pymongo import AsyncMongoClient\nfrom . import store\n")

    assert {"pymongo", "pymongo.AsyncMongoClient"} <= imported(module, "services.x.app")
    assert "services.x.store" in imported(module, "services.x.app")
