"""The variant registry: every baseline and ablation is a named YAML overlay of the config tree.

The variant files live at the top of the repository, sorted by meaning: ``baselines/`` holds the
systems of the paper's Table 1 (H-T, T-Food, T-Food without ITM = ``baseline``, MALM) and
``ablations/`` the component ablations (the Table 2 rows, the Table 3 mask ratios, the design
card's steps; its ``grids/`` are the Slurm grids over them). ``malm/variants/baselines`` and
``malm/variants/ablations`` are links to those two folders, so a plain (non-editable)
``pip install`` ships them as package data. Which table a variant belongs to is its file's
``paper:`` key, never its folder (``tables``, ``by_table``). A variant file holds::

    display: +LLC                 # the name the tables print
    description: ...
    paper: {table2: "+LLC"}       # the paper rows it corresponds to (malm_paper_tables.csv)
    overlay: {loss: {...}}        # applied on top of the base config
    alias_of: no_distill          # optional: the same configuration as another variant

The CLI (``malm variants``, ``malm train --variant``), DVC (``params.yaml``) and the Slurm grids all
resolve names here, so a variant exists in exactly one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from malm.config import Config, ConfigError, load_yaml, merge, merge_file

HERE = Path(__file__).resolve().parent
VARIANT_DIRS = (HERE / "baselines", HERE / "ablations")


@dataclass(frozen=True)
class Variant:
    name: str
    display: str
    description: str
    source: Path
    overlay: Mapping[str, Any] = field(default_factory=dict)
    alias_of: str | None = None
    paper: Mapping[str, str] = field(default_factory=dict)

    @property
    def tables(self) -> list[str]:
        """The paper tables with a row for this variant (``paper:`` keys: table1, table2, ...)."""
        return sorted(k for k in self.paper if k in TABLES)


# the groups of `malm variants`: the paper's tables, then the variants with no paper row
TABLES = {"table1": "Table 1: systems (baselines/)",
          "table2": "Table 2: components",
          "table3": "Table 3: image mask ratio"}
NO_TABLE = "Other ablations (no row in the paper)"


def by_table(reg: Mapping[str, Variant] | None = None) -> dict[str, list[Variant]]:
    """Group heading -> the variants with a row in that table (``paper:`` key), in name order; a
    variant with rows in several tables is listed under each; ``NO_TABLE`` collects the rest."""
    reg = registry() if reg is None else reg
    groups: dict[str, list[Variant]] = {title: [] for title in (*TABLES.values(), NO_TABLE)}
    for name in sorted(reg):
        v = reg[name]
        for t in v.tables or [None]:
            groups[TABLES[t] if t else NO_TABLE].append(v)
    return {k: vs for k, vs in groups.items() if vs}


def registry(dirs: tuple[Path, ...] = VARIANT_DIRS) -> dict[str, Variant]:
    """All variants by name, aliases resolved to their target's overlay."""
    raw: dict[str, Variant] = {}
    for d in dirs:
        for path in sorted(d.glob("*.yaml")):
            spec = load_yaml(path)
            unknown = set(spec) - {"display", "description", "overlay", "alias_of", "paper"}
            if unknown:
                raise ConfigError(f"{path}: unknown variant keys {sorted(unknown)}")
            bad = set(spec.get("paper") or {}) - set(TABLES)
            if bad:
                raise ConfigError(f"{path}: paper: keys must be {', '.join(TABLES)}, got {sorted(bad)}")
            if path.stem in raw:
                raise ConfigError(f"variant '{path.stem}' defined twice: {raw[path.stem].source}, {path}")
            raw[path.stem] = Variant(
                name=path.stem,
                display=str(spec.get("display", path.stem)),
                description=str(spec.get("description", "")),
                source=path,
                overlay=spec.get("overlay") or {},
                alias_of=spec.get("alias_of"),
                paper=spec.get("paper") or {},
            )
    for v in list(raw.values()):
        if v.alias_of is None:
            continue
        target = raw.get(v.alias_of)
        if target is None or target.alias_of is not None:
            raise ConfigError(f"{v.source}: alias_of '{v.alias_of}' is not a registered, non-alias variant")
        if v.overlay:
            raise ConfigError(f"{v.source}: an alias must not carry its own overlay")
        raw[v.name] = Variant(**{**v.__dict__, "overlay": target.overlay})
    return raw


def get(name: str) -> Variant:
    reg = registry()
    if name not in reg:
        raise ConfigError(f"unknown variant '{name}'. Registered: {', '.join(sorted(reg))}")
    return reg[name]


def resolve(name: str, base: Config | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Base config (defaults or params.yaml) <- variant overlay <- command-line overrides."""
    cfg = base if base is not None else Config()
    cfg = merge(cfg, get(name).overlay)
    cfg = merge(cfg, {"variant": name})
    if overrides:
        cfg = merge(cfg, overrides)
    return cfg


def resolve_from_files(name: str, config_files: Iterable[str | os.PathLike] = (),
                       *overlays: Mapping[str, Any]) -> Config:
    """The config of variant ``name`` as every entry point builds it: config files (params.yaml,
    configs/*.yaml) <- the variant's overlay <- each file's ``variant_overrides.<name>`` (the one
    key of a params file outside the config tree) <- ``overlays`` in order (CLI overrides, grid
    cells)."""
    base, per_variant = Config(), []
    for path in config_files:
        params = load_yaml(path)
        base = merge_file(base, params, path)
        per_variant.append((params.get("variant_overrides") or {}).get(name) or {})
    cfg = resolve(name, base)
    for overlay in (*per_variant, *overlays):
        cfg = merge(cfg, overlay)
    return cfg
