"""The package's shape (issue 11): no import cycle, imports that run down the declared floors (issue 23),
torch only for commands that calibrate."""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
import tokenize
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
                targets = [f"{base}.{a.name}" for a in node.names]
                # `from pkg import module` needs the module; pkg itself only for a name defined in it
                targets += [base] if any(t not in modules for t in targets) else []
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
    assert "fp8stream.methods.registry" in graph and len(graph) > 40
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


FLOORS = Path(__file__).parent / "data" / "floors.txt"


def declared_floors() -> list[list[str]]:
    """The rooms of each floor, top first, as tests/data/floors.txt declares them."""
    lines = (line.partition("#")[0].split() for line in FLOORS.read_text(encoding="utf-8").splitlines())
    return [rooms for rooms in lines if rooms]


def room_of(module: str) -> str:
    """The folder ('io/') or top-level module ('rewrite.py', '__init__.py') a module lives in."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__.py"
    return parts[1] + "/" if (PACKAGE / parts[1]).is_dir() else parts[1] + ".py"


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Room -> the other rooms its modules import."""
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        rooms.setdefault(room_of(module), set()).update(room_of(t) for t in targets)
    return {room: targets - {room} for room, targets in rooms.items()}


def imports_up(graph: dict[str, set[str]], floors: list[list[str]]) -> list[str]:
    """Every import of a module from a room on a higher floor than its own."""
    height = {room: len(floors) - i for i, rooms in enumerate(floors) for room in rooms}
    return sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                  if height[room_of(target)] > height[room_of(module)])


def test_every_room_is_on_one_declared_floor() -> None:
    declared = [room for rooms in declared_floors() for room in rooms]
    assert len(declared) == len(set(declared)), "a room declared twice"
    assert set(declared) == set(room_graph(import_graph())), f"rooms and {FLOORS.name} differ"


def test_imports_run_down_the_floors_and_no_two_rooms_import_each_other() -> None:
    graph = import_graph()
    assert imports_up(graph, declared_floors()) == []
    cycle = find_cycle(room_graph(graph))
    assert cycle is None, " -> ".join(cycle)


def test_the_floor_rule_finds_an_import_back_up_and_rooms_importing_each_other() -> None:
    graph = import_graph()
    floors = declared_floors()
    planted = {**graph, "fp8stream.io.reader": graph["fp8stream.io.reader"] | {"fp8stream.rewrite"}}
    assert imports_up(planted, floors) == ["fp8stream.io.reader -> fp8stream.rewrite"]
    assert find_cycle(room_graph(planted)) is not None  # rewrite.py imports io/ too
    # scales/ sits below methods/: a shared rule that reached into a method runs back up
    fp8_maths, forward_pass = "fp8stream.scales.fp8_maths", "fp8stream.methods.forward.forward_pass"
    planted = {**graph, fp8_maths: graph[fp8_maths] | {forward_pass}}
    assert imports_up(planted, floors) == [f"{fp8_maths} -> {forward_pass}"]
    # two rooms of one floor may import each other only one way: plant the way back
    module, target = next((m, t) for m, ts in sorted(graph.items()) for t in sorted(ts)
                          if room_of(m) != room_of(t) and any({room_of(m), room_of(t)} <= set(f) for f in floors))
    planted = {**graph, target: graph[target] | {module}}
    assert imports_up(planted, floors) == [] and find_cycle(room_graph(planted)) is not None


def test_no_method_module_imports_the_registry() -> None:
    from fp8stream.methods.registry import METHODS

    graph = import_graph()
    for entry in METHODS.values():
        assert "fp8stream.methods.registry" not in graph[entry.module], entry.module


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


# runs the CLI with the probe's argv and leaves its exit status in `code`; both probes share it
_RUN_CLI = """
sys.argv = ["fp8stream", *sys.argv[1:]]
try:
    runpy.run_module("fp8stream", run_name="__main__")
except SystemExit as e:
    code = e.code or 0
else:
    code = 0
"""

_PROBE = """
import runpy, sys
""" + _RUN_CLI + """
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
    from fp8stream.methods.registry import METHODS

    for name in METHODS:
        assert name in result.stdout


def _flux_with_full_precision_producers(path: Path) -> None:
    """A tiny Flux whose embedders (held whole by the bound) and input projections are BF16 and
    whose final modulation is F16, every other linear FP8: each kind of producer the bound reads."""
    import torch

    from fp8stream.synthetic.checkpoint import SyntheticTensor, bf16_tensor, comfy_fp8_linear
    from tests.architectures import flux_linears

    g = torch.Generator().manual_seed(0)
    tensors = []
    for name, (rows, cols) in flux_linears().items():
        w = torch.randn(rows, cols, generator=g) / cols ** 0.5
        if name.endswith("_in") or "_in." in name:
            tensors += [bf16_tensor(name + ".weight", w), bf16_tensor(name + ".bias", torch.randn(rows, generator=g))]
        elif name == "final_layer.adaLN_modulation.1":
            tensors.append(SyntheticTensor(name + ".weight", "F16", (rows, cols), w.half().numpy().tobytes()))
        else:
            tensors += comfy_fp8_linear(name, w, bias=True)
    write_checkpoint(str(path), tensors)


_NO_TORCH_PROBE = """
import runpy, sys, traceback
first = []

class Watch:  # the first import of torch, with where it came from
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not first:
            first.append("".join(traceback.format_stack(limit=8)))
        return None

sys.meta_path.insert(0, Watch())
""" + _RUN_CLI + """
sys.stderr.write(f"\\n{first[0] if first else ''}\\nPROBE code={code} torch={'torch' in sys.modules}\\n")
"""


@pytest.mark.parametrize("mode", ["bound", "hybrid"])
def test_the_bound_on_the_cpu_never_imports_torch(tmp_path: Path, mode: str) -> None:
    """Issue 24: `--method simulate --device cpu` is the one read and the bound's small maths in
    numpy; importing torch took 1.6-2.5 s of a 5 s run on a 1.4 GB file."""
    model = tmp_path / "m.safetensors"
    _flux_with_full_precision_producers(model)
    args = ["calibrate", str(model), str(tmp_path / "o.safetensors"), "--method", "simulate", "--sim-mode", mode,
            "--device", "cpu", "--no-progress", "--json"]
    result = subprocess.run([sys.executable, "-c", _NO_TORCH_PROBE, *args], capture_output=True, text=True,
                            env=subprocess_env())
    assert result.stderr.strip().splitlines()[-1] == "PROBE code=0 torch=False", result.stderr[-3000:]
    layers = {layer["name"]: layer for layer in json.loads(result.stdout.splitlines()[-1])["layers"]}
    # the BF16 embedders were held and swept, the F16 modulation's rows read: no input assumed missing
    assert "held timestep/guidance/pooled embedders" in layers["double_blocks.0.img_mod.lin"]["assumption"]
    assert "final_layer.adaLN_modulation.1" in layers["final_layer.linear"]["assumption"]
    assert not any("missing" in w for layer in layers.values() for w in layer["warnings"]), layers


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


def _family_keys() -> tuple[set[tuple[str, ...]], re.Pattern]:
    """Every spelling of a family the tool uses as a key: the registry's names (`z-image`), the
    same with underscores (`z_image`), its module names (`hunyuan_video15`) and bench keys
    (`sd35`, `t5xxl`). As identifier words (lowercased), and as one pattern for text."""
    from fp8stream import families

    modules = {name for name, value in vars(families).items()
               if getattr(value, "FAMILY", None) in families.FAMILIES}
    spellings = modules | {key for f in families.FAMILIES for key, _ in f.inventories}
    spellings |= {s for f in families.FAMILIES for s in (f.name, f.name.replace("-", "_"))}
    words = {tuple(re.split(r"[-_.]", s)) for s in spellings}
    text = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(map(re.escape, sorted(spellings, key=len, reverse=True)))
                      + r")(?![A-Za-z0-9])")
    return words, text


def _identifier_words(name: str) -> list[str]:
    """`FluxTransformer2DModel` -> flux, transformer2, d, model; `z_image_keys` -> z, image, keys."""
    return [w.lower() for part in name.split("_")
            for w in re.findall(r"[A-Z]+[0-9]*(?![a-z])|[A-Z]?[a-z]+[0-9]*|[0-9]+", part)]


def family_mentions(source: str) -> list[str]:
    """Where a family's key appears in code: an identifier (any case) whose words hold a key's words in
    a row (`flux_shapes`, `ZImageModel`, `clip` in `x.clip()` too: one rule, no exceptions; write
    clamp), or a string or comment (docstrings too) holding a key as the registry spells it, in
    lowercase, not inside a longer word (`"flux"`, `"z-image"`, `families.wan`, "flux-dev"). A
    capitalised name in prose (a docstring's "as Flux's converter does", ComfyUI's "Load CLIP" node)
    is a name, not a key, and ordinary words that contain a key (clipping, swan) are other words."""
    words, text = _family_keys()
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME:
            parts = _identifier_words(token.string)
            if any(tuple(parts[i:i + len(key)]) == key for key in words for i in range(len(parts))):
                found.append(f"{token.start[0]}: {token.string}")
        elif token.type in (tokenize.STRING, tokenize.COMMENT):
            found += [f"{token.start[0] + token.string[:m.start()].count(chr(10))}: {m.group(0)}"
                      for m in text.finditer(token.string)]
    return found


def test_no_family_key_appears_outside_families_and_the_harness() -> None:
    """Everything the tool knows about a family lives in its module under families/ (the quality
    harness keeps its own models); every other part asks the registry."""
    found = {f"{p.relative_to(PACKAGE)}:{where}" for p in PACKAGE.rglob("*.py")
             if p.relative_to(PACKAGE).parts[0] not in ("families", "harness")
             for where in family_mentions(p.read_text(encoding="utf-8"))}
    assert sorted(found) == []


def test_the_family_key_finder_finds_keys_and_not_words() -> None:
    source = ('def flux_shapes(model: ZImageModel):  # the sd3 layout\n'
              '    """As Flux\'s converter does, clipping nothing; Load CLIP."""\n'
              '    return x.clip(0), {"z-image": families.hunyuan_video15}, "t5xxl", "T5-ish", "swan"\n')
    assert family_mentions(source) == ["1: flux_shapes", "1: ZImageModel", "1: sd3", "3: clip", "3: z-image",
                                       "3: hunyuan_video15", "3: t5xxl"]
