"""The components stand side by side over fleetserve.api: none imports another (read from the source with ast).

operator/cli.py is the composition root: it alone may import the autoscaler, to register its handlers.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> the fleetserve packages its modules must not import
FORBIDDEN = {
    "engine_image": ("fleetserve.operator", "fleetserve.autoscaler", "fleetserve.kube", "fleetserve.router"),
    "autoscaler": ("fleetserve.operator", "fleetserve.engine", "fleetserve.router"),
    "operator": ("fleetserve.autoscaler", "fleetserve.engine", "fleetserve.router"),
    "router": ("fleetserve.operator", "fleetserve.autoscaler", "fleetserve.engine"),
    "src/fleetserve/api": ("fleetserve.operator", "fleetserve.autoscaler", "fleetserve.engine", "fleetserve.kube",
                           "fleetserve.router"),
}
COMPOSITION_ROOT = ROOT / "operator" / "cli.py"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement names, at any depth (function-level imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from fleetserve import operator` imports fleetserve.operator
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def breaks(module: str, forbidden: tuple[str, ...]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("folder", FORBIDDEN)
def test_components_import_only_the_shared_api(folder):
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line, module in imported_modules(path)
        if breaks(module, FORBIDDEN[folder])
        and not (path == COMPOSITION_ROOT and breaks(module, ("fleetserve.autoscaler",)))
    ]
    assert not wrong, "\n".join(wrong)


def test_shared_kube_client_depends_only_on_the_api():
    others = ("fleetserve.operator", "fleetserve.autoscaler", "fleetserve.engine", "fleetserve.router")
    wrong = [m for _, m in imported_modules(ROOT / "src/fleetserve/kube.py") if breaks(m, others)]
    assert not wrong


def test_the_composition_root_imports_the_autoscaler_plainly():
    modules = [m for _, m in imported_modules(COMPOSITION_ROOT)]
    assert "fleetserve.autoscaler.kopf_handlers" in modules and "importlib" not in modules
