"""Imports run one way: numerics <- core <- application <- web.

Each first-party module is assigned a layer by the longest matching prefix in
``LAYERS``; a module may import only from its own layer or the ones below. A module with
no layer fails the test, so a new package has to say where it belongs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("filters", "ilastik_web", "neuroglancer_ext", "hpc")

NUMERICS, CORE, APPLICATION, WEB = range(4)
LAYER_NAMES = {NUMERICS: "numerics", CORE: "core", APPLICATION: "application", WEB: "web"}

#: Longest prefix wins.
LAYERS = {
    "filters": NUMERICS,
    "ilastik_web": CORE,  # the package's __init__ and anything core listed below
    "ilastik_web.abc": CORE,
    "ilastik_web.errors": CORE,
    "ilastik_web.cancel": CORE,
    "ilastik_web.listeners": CORE,
    "ilastik_web.cache": CORE,
    "ilastik_web.resources": CORE,
    "ilastik_web.damage": CORE,
    "ilastik_web.argtypes": CORE,
    "ilastik_web.pyramid": CORE,
    "ilastik_web.ngff": CORE,
    "ilastik_web.sources": CORE,
    "ilastik_web.sources.s3": CORE,
    "ilastik_web.labels": CORE,
    "ilastik_web.classify": CORE,
    "ilastik_web.demo": CORE,
    "ilastik_web.project": APPLICATION,
    "ilastik_web.sam": APPLICATION,
    "ilastik_web.sam.instances": APPLICATION,
    "ilastik_web.sam.instance_geometry": APPLICATION,
    "ilastik_web.sam.instance_edits": APPLICATION,
    "ilastik_web.ilp": APPLICATION,
    "ilastik_web.accounts": APPLICATION,
    "ilastik_web.exports": APPLICATION,
    "ilastik_web.collections": APPLICATION,
    "ilastik_web.collections.objects": APPLICATION,
    "ilastik_web.collections.pixel": APPLICATION,
    "hpc": APPLICATION,
    "hpc.slurm_rest": APPLICATION,
    "hpc.sam_jobs": APPLICATION,
    "ilastik_web.config": WEB,
    "ilastik_web.server": WEB,
    "ilastik_web.server.collection_layers": WEB,
    "ilastik_web.server.collection_instances": WEB,
    "ilastik_web.server.routes_collection": WEB,
    "ilastik_web.server.routes_collection_jobs": WEB,
    "ilastik_web.server.lifecycle": WEB,
    "ilastik_web.server.health": WEB,
    "ilastik_web.server.metrics": WEB,
    "ilastik_web.server.logformat": WEB,
    "ilastik_web.server.routes_instances": WEB,
    "ilastik_web.server.routes_sam_jobs": WEB,
    "ilastik_web.cli": WEB,
    "ilastik_web.cli_sam": WEB,
    "ilastik_web.__main__": WEB,
    "neuroglancer_ext": WEB,
}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            if prefix == "ilastik_web" and n < len(parts):
                return None  # a submodule of ilastik_web that no entry names
            return LAYERS[prefix]
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def first_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found.add(name)
    return found


def imported_layer(name: str) -> int | None:
    """Layer of an imported name; ``from pkg import module`` resolves to the module."""
    layer = layer_of(name)
    if layer is None and "." in name:
        return layer_of(name.rsplit(".", 1)[0])
    return layer


MODULES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_only_downward(path: Path) -> None:
    module = module_name(path)
    own = layer_of(module)
    assert own is not None, f"{module} has no layer: add it to LAYERS in {__file__}"
    upward = sorted(
        f"{name} ({LAYER_NAMES[layer]})"
        for name in first_party_imports(path)
        if (layer := imported_layer(name)) is not None and layer > own
    )
    assert not upward, f"{module} ({LAYER_NAMES[own]}) imports upward: {', '.join(upward)}"


def test_every_imported_first_party_name_has_a_layer() -> None:
    unknown = sorted({name for path in MODULES for name in first_party_imports(path)
                      if imported_layer(name) is None})
    assert not unknown, f"imported modules with no layer: {unknown}"
