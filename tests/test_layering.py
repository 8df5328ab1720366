"""Configuration flows one way: otp_service.config builds the adapters' settings, never the other way round.

The domain and the adapters read the environment through otp_service.envreader (a leaf), so importing any of them
never imports otp_service.config, and no module of the package imports another in a circle.
"""
import ast
from itertools import pairwise
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "otp_service"


def _imports(path: Path) -> set[str]:
    """The otp_service modules `path` imports at module level or in a function (TYPE_CHECKING blocks excepted)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped = {id(node) for node in ast.walk(tree) if isinstance(node, ast.If)
               and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
               for node in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            found.update(n for n in [target, *names] if n.startswith("otp_service"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("otp_service"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    return {name: {t for t in _imports(path) if t in modules and t != name} for name, path in modules.items()}


def test_no_adapter_or_domain_module_imports_the_configuration():
    offenders = sorted(name for name, targets in _graph().items()
                       if name.startswith(("otp_service.adapters", "otp_service.domain"))
                       and "otp_service.config" in targets)
    assert not offenders, f"these import otp_service.config; read the environment through envreader: {offenders}"


def test_no_import_circles():
    graph = _graph()
    circles = []

    def visit(name: str, trail: list[str]) -> None:
        for target in sorted(graph[name]):
            if target in trail:
                circles.append(trail[trail.index(target):] + [target])
            elif target not in done:
                visit(target, trail + [target])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    # A package importing its own submodule (for re-export) is not a circle of code.
    real = [c for c in circles if not any(b.startswith(a + ".") for a, b in pairwise(c))]
    assert not real, "import circles: " + "; ".join(" -> ".join(c) for c in real)
