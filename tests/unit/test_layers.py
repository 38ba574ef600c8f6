"""The layers, as the code states them: `ingest/` is the base every process uses, `models/` and
`tasks/` stand on it, the API on those, and the CLI on top of everything. Imports that go the
other way, or in a circle, fail here; so does a base module that drags in an app or the models."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What each top-level package may import from the project, itself included.
MAY_IMPORT = {
    "ingest": {"ingest"},
    "models": {"ingest", "models"},
    "tasks": {"ingest", "models", "tasks"},
    "ingest_api": {"ingest", "models", "tasks", "ingest_api"},
    "ingest_cli": {"ingest", "models", "tasks", "ingest_api", "ingest_cli"},
}
# Modules a base module must never load, directly or through another: an app, the models, a
# database driver's layer or a web framework.
NOT_IN_THE_BASE = ("tasks", "models", "ingest_api", "ingest_cli", "celery", "flask", "sqlalchemy")


def modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def project_imports(name: str, path: Path, top_level_only: bool) -> set[str]:
    """The project modules that `name` imports: every import, or those run at import time."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            # `from package import module` imports the module too.
            named = (f"{node.module}.{alias.name}" for alias in node.names)
            found.update(module for module in named if module in ALL_MODULES)
    return {module for module in found if module.split(".")[0] in MAY_IMPORT} - {name}


ALL_MODULES = dict(item for package in MAY_IMPORT for item in modules(package))
BASE_MODULES = [name for name, _ in modules("ingest")]


def loaded_by(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded once it ran `statement`."""
    script = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout))


def offending(loaded: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(name for name in loaded if name.split(".")[0] in prefixes)


def test_no_package_imports_one_above_it() -> None:
    wrong: dict[str, list[str]] = {}
    for name, path in ALL_MODULES.items():
        allowed = MAY_IMPORT[name.split(".")[0]]
        imports = project_imports(name, path, top_level_only=False)
        above = sorted(target for target in imports if target.split(".")[0] not in allowed)
        if above:
            wrong[name] = above
    assert wrong == {}


def test_no_module_imports_itself_through_others_at_import_time() -> None:
    graph = {
        name: {target for target in project_imports(name, path, True) if target in ALL_MODULES}
        for name, path in ALL_MODULES.items()
    }
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycles.append([*trail[trail.index(name) :], name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


@pytest.mark.parametrize("module", BASE_MODULES)
def test_a_base_module_loads_no_app_and_no_models(module: str) -> None:
    assert offending(loaded_by(f"import {module}"), NOT_IN_THE_BASE) == []


def test_importing_the_tasks_package_builds_no_celery_app() -> None:
    loaded = loaded_by("import tasks")
    assert offending(loaded, ("celery", "models")) == []
    assert "tasks.celery" not in loaded


def test_the_api_server_loads_none_of_the_app_before_its_workers_start() -> None:
    # The server sets PROMETHEUS_MULTIPROC_DIR for its workers: a prometheus_client imported
    # before that would count each worker in its own memory.
    loaded = loaded_by("import ingest_api.server")
    assert offending(loaded, ("prometheus_client", "flask", "celery", "models", "tasks")) == []
    assert offending(loaded, ("ingest_api",)) == [
        "ingest_api",
        "ingest_api.on_loop",
        "ingest_api.rsgi",
        "ingest_api.server",
    ]
