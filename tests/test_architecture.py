"""The layer rule of docs/architecture.md, enforced on every import in agekit/ (function-level ones too).

The doc's ```layers block lists the units of agekit (its sub-packages and top-level modules) from the top
layer to the bottom, one layer a line. A unit may import units of the layers below its own; units that share
a line do not import each other. The test reads the rule from the doc, so the picture and the check cannot
drift apart. A second rule: the units marked torch-free in the doc never import torch.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "agekit"
DOC = ROOT / "docs" / "architecture.md"


def layers() -> list[list[str]]:
    block = re.search(r"```layers\n(.+?)\n```", DOC.read_text(), re.S)
    assert block, f"{DOC} has no ```layers block"
    rows = []
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            rows.append([name.strip() for name in line.split(",") if name.strip()])
    return rows


def torch_free_units() -> set[str]:
    found = re.search(r"^Torch-free: (.+)$", DOC.read_text(), re.M)
    assert found, f"{DOC} has no 'Torch-free: ...' line"
    return {name.strip(" .`") for name in found.group(1).split(",")}


def upward_by_design() -> set[tuple[str, str]]:
    """(file, unit) pairs the doc allows to import upwards: 'Upward by design: FILE -> unit, unit; FILE -> ...'."""
    found = re.search(r"^Upward by design: (.+)$", DOC.read_text(), re.M)
    pairs = set()
    for part in (found.group(1).rstrip(".").split(";") if found else []):
        path, _, units = part.partition("->")
        pairs |= {(path.strip(), unit.strip()) for unit in units.split(",")}
    return pairs


def unit_of(module: str) -> str:
    """agekit.runtime.cli -> runtime; agekit.crop -> crop; agekit -> agekit."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "agekit"


def source_units() -> dict[str, list[Path]]:
    units: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        units.setdefault(unit_of(module), []).append(path)
    return units


def imports(path: Path, root: Path = ROOT) -> list[tuple[str, int]]:
    """Absolute module names `path` imports (relative imports resolved), with their line numbers."""
    rel = path.relative_to(root).with_suffix("").parts
    package = rel[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1])
                if node.module is None:  # from . import a, b
                    found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
                    continue
                name = f"{base}.{node.module}"
            elif node.module == "agekit":  # from agekit import X: X is a unit or a name of the facade
                found += [(f"agekit.{alias.name}", node.lineno) for alias in node.names]
                continue
            else:
                name = node.module or ""
            found.append((name, node.lineno))
    return found


def test_every_unit_of_agekit_is_placed_in_a_layer():
    placed = {name for row in layers() for name in row}
    missing = sorted(set(source_units()) - placed)
    assert not missing, f"units of agekit/ not in the layers of {DOC.name}: {missing}"


def test_imports_point_down_the_layers():
    rank = {name: i for i, row in enumerate(layers()) for name in row}  # 0 = top
    allowed, used = upward_by_design(), set()
    wrong = []
    for unit, paths in source_units().items():
        for path in paths:
            for module, line in imports(path):
                if not (module == "agekit" or module.startswith("agekit.")):
                    continue
                target = unit_of(module)
                if target in (unit, "__version__"):
                    continue
                if (str(path.relative_to(ROOT)), target) in allowed:
                    used.add((str(path.relative_to(ROOT)), target))
                    continue
                if unit in rank and rank.get(target, -1) <= rank[unit]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} ({unit}) imports {module} ({target})")
    assert not wrong, "imports against the layers of docs/architecture.md:\n" + "\n".join(wrong)
    assert used == allowed, f"'Upward by design' names imports that no longer exist: {sorted(allowed - used)}"


def test_torch_free_units_do_not_import_torch():
    units = source_units()
    wrong = []
    for unit in sorted(torch_free_units()):
        assert unit in units, f"{DOC.name} names torch-free unit {unit!r}, which does not exist"
        for path in units[unit]:
            for module, line in imports(path):
                if module == "torch" or module.startswith(("torch.", "timm", "torchvision")):
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "torch imported by a torch-free unit:\n" + "\n".join(wrong)


def test_the_rule_catches_an_upward_import(tmp_path):
    # the checker itself: an import of a higher layer from a lower one is reported
    rank = {name: i for i, row in enumerate(layers()) for name in row}
    low, high = layers()[-1][0], "commands"
    assert rank[high] < rank[low]
    bad = tmp_path / "agekit" / low / "x.py"
    bad.parent.mkdir(parents=True)
    bad.write_text(f"import agekit.{high}\nfrom . import y\n")
    found = [m for m, _ in imports(bad, tmp_path)]
    assert f"agekit.{high}" in found and f"agekit.{low}.y" in found
    assert rank[unit_of(f"agekit.{high}")] <= rank[low]  # what test_imports_point_down_the_layers reports
