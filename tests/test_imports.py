"""Every module of the package imports (issue 22: a module of `fp8stream/synthetic/` failed
with an ImportError that no test saw, which broke the README's UMT5 recipe)."""

from __future__ import annotations

import importlib
import pkgutil

import fp8stream


def test_every_module_of_the_package_imports() -> None:
    names = [m.name for m in pkgutil.walk_packages(fp8stream.__path__, prefix="fp8stream.")]
    # the walk must see the modules in subfolders (harness, families, forward families) too
    assert {"fp8stream.families.t5", "fp8stream.harness.demo", "fp8stream.methods.forward.forward_pass"} <= set(names)
    failed = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # every failure named at once, not the first only
            failed[name] = f"{type(e).__name__}: {e}"
    assert not failed, failed


def test_the_demo_installs_what_the_default_method_needs() -> None:
    """`scripts/demo.sh` installs the `demo` extra; the README's recipes then run the default
    method, whose packages are the `forward` extra (transformers for text encoders)."""
    from pathlib import Path

    import tomllib

    extras = tomllib.loads((Path(fp8stream.__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert "setup.sh demo" in (Path(fp8stream.__file__).parents[1] / "scripts" / "demo.sh").read_text()
    assert set(extras["forward"]) <= set(extras["demo"]), (extras["forward"], extras["demo"])
