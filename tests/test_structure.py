"""The package's shape (issue 11): no import cycle, torch only for commands that calibrate."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, small_model_tensors, subprocess_env
from fp8stream.synthetic.checkpoint import write_checkpoint

PACKAGE = Path(REPO_ROOT) / "fp8stream"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, from every import statement (those inside
    functions too: a cycle through a lazy import is still a cycle in the design)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "fp8stream.calibration.registry" in graph and len(graph) > 40
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_method_module_imports_the_registry() -> None:
    from fp8stream.calibration.registry import METHODS

    graph = import_graph()
    for entry in METHODS.values():
        assert "fp8stream.calibration.registry" not in graph[entry.module], entry.module


# The entry floors: they resolve what the user gave and may hand remote/ to the storage seam.
ENTRY_FLOORS = ("fp8stream.rewrite", "fp8stream.batch", "fp8stream.cli", "fp8stream.__main__", "fp8stream.commands",
                "fp8stream.zoo")


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_nothing_below_the_entry_floors_imports_remote() -> None:
    """remote/ is the URL side of the storage seam (io.storage): io/, formats/, pipeline/ and
    the rest ask a Location and never a store (issue 23)."""
    graph = import_graph()
    assert any(_within(t, "fp8stream.remote") for t in graph["fp8stream.rewrite"])  # the rule looks at real edges
    below = sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                   if _within(target, "fp8stream.remote") and not _within(module, "fp8stream.remote", *ENTRY_FLOORS))
    assert below == []


def _names_used(path: Path) -> set[str]:
    """Every name a module defines, imports, reads or takes as an attribute."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, (ast.alias, ast.FunctionDef)):
            names.add(node.name)
    return names


def test_only_the_storage_seam_tells_a_url_from_a_path() -> None:
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "is_remote" in _names_used(p))
    assert users == ["io/storage.py"]


_PROBE = """
import runpy, sys
sys.argv = ["fp8stream", *sys.argv[1:]]
try:
    runpy.run_module("fp8stream", run_name="__main__")
except SystemExit as e:
    code = e.code or 0
else:
    code = 0
heavy = sorted(m for m in ("torch", "numpy") if m in sys.modules)
sys.stderr.write(f"\\nPROBE code={code} heavy={','.join(heavy)}\\n")
"""


@pytest.mark.parametrize("command", ["help", "inspect", "verify"])
def test_commands_that_do_not_calibrate_never_import_torch(tmp_path: Path, command: str) -> None:
    model = tmp_path / "m.safetensors"
    write_checkpoint(str(model), small_model_tensors())
    args = {"help": ["--help"], "inspect": ["inspect", str(model)],
            "verify": ["verify", str(model), str(model)]}[command]
    result = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=subprocess_env())
    probe = result.stderr.strip().splitlines()[-1]
    assert probe == "PROBE code=0 heavy=", result.stderr[-2000:]


def test_calibrate_help_lists_every_registered_method_without_torch() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE, "calibrate", "--help"], capture_output=True, text=True,
                            env=subprocess_env())
    assert result.stderr.strip().splitlines()[-1] == "PROBE code=0 heavy="
    from fp8stream.calibration.registry import METHODS

    for name in METHODS:
        assert name in result.stdout


_SUFFIXES = (".weight_scale", ".input_scale", ".comfy_quant", ".scale_weight", ".scale_input", "scaled_fp8")


def suffix_spellings(tree: ast.AST) -> list[str]:
    """String constants (f-string parts too) that spell an FP8 layer's tensor suffix."""
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(_SUFFIXES)]


def test_tensor_name_suffixes_are_spelled_only_in_names() -> None:
    home = PACKAGE / "names" / "suffixes.py"
    assert suffix_spellings(ast.parse(home.read_text(encoding="utf-8")))
    found = {str(p.relative_to(PACKAGE)): spelled for p in PACKAGE.rglob("*.py") if p != home
             if (spelled := suffix_spellings(ast.parse(p.read_text(encoding="utf-8"))))}
    assert found == {}


def test_the_suffix_check_finds_a_spelling() -> None:
    assert suffix_spellings(ast.parse('k = f"{name}.weight_scale"; m = prefix + "scaled_fp8"')) == [
        ".weight_scale", "scaled_fp8"]


def test_names_import_nothing_from_the_package() -> None:
    graph = import_graph()
    for module in ("fp8stream.names.prefixes", "fp8stream.names.suffixes"):
        assert graph[module] == set(), module
