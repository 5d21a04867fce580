"""The layout rules of docs/design.md, checked on the source: imports run one way, no
cycles, no import-time side effects, no branches on a model kind outside the registry."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "ift6266_vae"

#: layer of a module -> the layers it may import (its own always allowed)
BOTTOM = {"errors", "io", "rules", "threads"}
ALLOWED = {
    "errors": set(),
    "io": {"errors"},
    "rules": {"errors"},
    "threads": set(),
    "checkpoints": BOTTOM,
    "plots": BOTTOM,
    "data": BOTTOM,
    "graph": BOTTOM,
    "nn": BOTTOM | {"graph"},
    "models": BOTTOM | {"checkpoints", "nn", "graph"},
    "config": BOTTOM | {"data", "graph", "models", "nn"},
    "profiling": BOTTOM | {"models", "nn", "graph"},
    "evaluation": BOTTOM | {"checkpoints", "plots", "data", "nn", "graph", "models"},
    "training": BOTTOM | {"checkpoints", "plots", "data", "nn", "graph", "models", "evaluation", "config"},
    "experiments": BOTTOM | {"checkpoints", "plots", "data", "nn", "graph", "models", "evaluation", "config",
                             "training", "profiling"},
    "cli": BOTTOM | {"data", "graph", "models", "config", "evaluation", "training", "experiments", "plots"},
    "__main__": {"cli"},
    "__init__": set(),  # the public API imports lazily (by name), never at import time
}
KINDS = {"feedforward", "conv", "semisupervised"}


def _modules():
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG).with_suffix("")
        yield f, rel.parts


def _layer(parts) -> str:
    return parts[0]


def _imported_layers(f: Path, parts) -> set[str]:
    """First-level names of the package imported by ``f`` (anywhere in the file)."""
    is_pkg = parts[-1] == "__init__"
    here = list(parts[:-1]) if is_pkg else list(parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("ift6266_vae")]
            out |= {n.split(".")[1] for n in names if n.count(".") >= 1}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("ift6266_vae."):
                    out.add(node.module.split(".")[1])
                elif node.module == "ift6266_vae":
                    out |= {a.name for a in node.names}
                continue
            base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
            target = base + (node.module.split(".") if node.module else [])
            if target:
                out.add(target[0])
            else:  # "from . import x" at the package root
                out |= {a.name for a in node.names}
    return out


@pytest.mark.parametrize("f,parts", list(_modules()), ids=lambda v: "/".join(v) if isinstance(v, tuple) else "")
def test_imports_run_one_way(f, parts):
    layer = _layer(parts) if len(parts) > 1 else parts[0]
    assert layer in ALLOWED, f"{f}: module outside the documented layers; add it to docs/design.md and here"
    bad = {m for m in _imported_layers(f, parts) - {layer} if m not in ALLOWED[layer]}
    assert not bad, f"{f.relative_to(PKG.parent)} ({layer}) imports {sorted(bad)}; allowed: {sorted(ALLOWED[layer])}"


def test_no_import_cycles():
    tool = Path(__file__).resolve().parents[2] / "shared" / "tools" / "import_cycles.py"
    if not tool.exists():
        pytest.skip("the shared import-cycle tool is not next to this checkout")
    res = subprocess.run([sys.executable, str(tool), str(PKG)], capture_output=True, text=True)
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout


def test_no_branch_on_a_model_kind_outside_the_registry():
    """cli, training and evaluation ask the registry (models.KINDS) or a capability, never
    compare a config's kind with a kind's name."""
    found = []
    for f in [PKG / "cli.py", *sorted((PKG / "training").rglob("*.py")), *sorted((PKG / "evaluation").rglob("*.py"))]:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Compare):
                consts = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                if any(c in KINDS for c in consts):
                    found.append(f"{f.relative_to(PKG.parent)}:{node.lineno}")
    assert not found, f"branches on a model kind: {found}"


def test_importing_every_module_changes_no_global_state():
    """No BLAS set-up, rewrite registration, JAX dispatch or matplotlib backend at import."""
    code = r"""
import importlib, json, pkgutil, sys
import pytensor
from pytensor.compile import optdb
before = pytensor.config.blas__ldflags
import ift6266_vae
assert "pytensor.tensor" not in sys.modules or True
for m in pkgutil.walk_packages(ift6266_vae.__path__, "ift6266_vae."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
import matplotlib
print(json.dumps({
    "blas_changed": pytensor.config.blas__ldflags != before,
    "fast_sums_registered": "local_fast_sum" in optdb,
    "jax_imported": "jax" in sys.modules,
    "pyplot_imported": "matplotlib.pyplot" in sys.modules,
    "backend_chosen": matplotlib.rcParams._get_backend_or_none() is not None,
}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "MPLBACKEND": ""})
    state = json.loads(res.stdout.strip().splitlines()[-1])
    assert not any(state.values()), state


def test_the_package_imports_without_pytensor():
    res = subprocess.run([sys.executable, "-c", "import sys, ift6266_vae; print('pytensor' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
