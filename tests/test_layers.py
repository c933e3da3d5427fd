"""The package's layers point one way: a module imports only from its own layer or layers below.

    io <- config <- variants <- synth/data <- models <- losses <- eval <- train <- report <- launch <- cli

Every import counts, also one inside a function (a lazy import is still a dependency: DVC's
stages and the code fingerprint of a run see it). ``malm/io.py`` is the leaf every writer goes
through; ``malm/config.py`` is the schema and imports nothing from the package but it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "malm"
LAYERS = [
    ("malm.seeds",),
    ("malm.io",),
    ("malm.config",),
    ("malm.variants",),
    ("malm.synth", "malm.data"),
    ("malm.models",),
    ("malm.losses",),
    ("malm.eval",),
    ("malm.train",),
    ("malm.report",),
    ("malm.launch",),
    ("malm.search",),
    ("malm.cli",),
]
# the package root holds the version only: any module may import it
ROOT = "malm"
# what a module may import besides its layer's rule
ONLY = {"malm.config": {"malm.io"}, "malm.io": set(), "malm.seeds": set()}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int | None:
    """Index of ``module``'s layer (longest matching prefix); None when it is in none."""
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    return None


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every ``malm`` import in ``source``, at any depth (functions included).
    ``from malm.x import y`` counts as ``malm.x.y`` when that is a module, else ``malm.x``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == ROOT]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            if base.split(".")[0] != ROOT:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                    (PACKAGE.parent / Path(*sub.split(".")) / "__init__.py").is_file()
                out.append((node.lineno, sub if is_module else base))
    return out


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """What is wrong with ``module``'s imports, one line each ('' when nothing)."""
    own = layer(module)
    if own is None:
        return [f"{module} is in no layer: add it to LAYERS in tests/test_layers.py"]
    bad = []
    for line, target in imported_modules(source, module, is_package):
        if target == ROOT or target == module:
            continue
        allowed = ONLY.get(module)
        if allowed is not None and target not in allowed:
            bad.append(f"{module}:{line} imports {target}; {module} may import only "
                       f"{sorted(allowed) or 'nothing'} from the package")
            continue
        theirs = layer(target)
        if theirs is None:
            bad.append(f"{module}:{line} imports {target}, which is in no layer")
        elif theirs > own:
            bad.append(f"{module}:{line} imports {target} (layer {'/'.join(LAYERS[theirs])}) from "
                       f"the layer below it ({'/'.join(LAYERS[own])}): imports must point down")
    return bad


def package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_imports_point_down_the_layers(path):
    module = module_name(path)
    if module == ROOT:
        return
    assert violations(module, path.read_text(encoding="utf-8"), path.name == "__init__.py") == []


def test_every_package_is_in_a_layer():
    packages = {module_name(p) for p in package_modules()} - {ROOT}
    assert [m for m in sorted(packages) if layer(m) is None] == []


@pytest.mark.parametrize("module, source, expect", [
    ("malm.config", "from malm.data.synth import SynthConfig", "may import only"),
    ("malm.data.cache", "import malm.config\nfrom malm import config as C", None),
    ("malm.models.malm", "def f():\n    from malm.train.ema import EMATeacher", "imports must point down"),
    ("malm.losses.contrastive", "from malm.models.matching import x", None),
    ("malm.eval.protocol", "from malm.report import collect", "imports must point down"),
    ("malm.report.tables", "from . import figures\nfrom .collect import pick", None),
    ("malm.eval.embed", "from ..train import trainer", "imports must point down"),
    ("malm.brand_new", "import os", "in no layer"),
])
def test_the_checker_catches_an_upward_import(module, source, expect):
    found = violations(module, source)
    if expect is None:
        assert found == []
    else:
        assert found and all(expect in v for v in found), found
