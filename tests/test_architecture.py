"""The layers stay layers (docs/ARCHITECTURE.md): what each folder may import, checked on every
import statement in the tree (function-level ones too), and the Ray-free core checked live."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("ray", "fastapi", "starlette", "uvicorn", "gradio", "boto3", "botocore")
# folder -> imports it must never make (a module or any of its submodules)
RULES: dict[str, tuple[str, ...]] = {
    "serve_app/core": (
        *FRAMEWORKS,
        "serve_app.artifacts",
        "serve_app.shell",
        "serve_app.app",
        "jobs",
        "loadtest",
        "ui",
    ),
    # S3 through boto3 is what artifacts are for; serving frameworks are not
    "serve_app/artifacts": (
        "ray",
        "fastapi",
        "starlette",
        "uvicorn",
        "gradio",
        "serve_app.shell",
        "serve_app.app",
        "jobs",
        "loadtest",
        "ui",
    ),
    "serve_app/shell": ("serve_app.app", "jobs", "loadtest", "ui"),
    "jobs": ("serve_app.shell", "serve_app.app", "loadtest", "ui", "fastapi", "gradio"),
    "loadtest": ("jobs", "ui"),
    "ui": ("jobs", "loadtest", "serve_app", "ray"),
}


def imported(source: str) -> set[str]:
    """Every module name an import statement in ``source`` names (``from a import b`` gives ``a``
    and ``a.b``: ``b`` may be a submodule)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def breaks(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names for f in forbidden if n == f or n.startswith(f + "."))


def violations(folder: str) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in breaks(imported(path.read_text()), RULES[folder])
    ]


@pytest.mark.parametrize("folder", sorted(RULES))
def test_each_layer_imports_only_what_it_may(folder: str) -> None:
    assert (ROOT / folder).is_dir()
    assert violations(folder) == []


def test_the_checker_sees_every_kind_of_import() -> None:
    src = "import ray.serve\nfrom boto3 import client\ndef f():\n    from jobs import catalog\n"
    assert breaks(imported(src), RULES["serve_app/core"]) == [
        "boto3",
        "boto3.client",
        "jobs",
        "jobs.catalog",
        "ray.serve",
    ]
    assert breaks(imported("import rayon\nfrom jobsite import x\n"), RULES["serve_app/core"]) == []


def test_the_core_loads_without_any_framework() -> None:
    """Importing every core module pulls in none of the serving frameworks."""
    modules = sorted(f"serve_app.core.{p.stem}" for p in (ROOT / "serve_app/core").glob("*.py"))
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(f for f in {FRAMEWORKS!r} if f in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
