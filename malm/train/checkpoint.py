"""What a training checkpoint carries besides the weights, and when a run may resume from one.

A checkpoint (written through :func:`malm.io.save_checkpoint`) stores the resolved config, the
identity of what the run reads (:func:`input_fingerprints`: the sha256 of ``model.image.pretrained``
and the digest of the data cache's key, which carries the synthetic generator's content digest) and
the sha256 of every ``malm`` source file the training process imported. This module owns the
staleness of a run (the rule is in :mod:`malm.io`): a run resumed under another config, other
inputs or other code is a different run: :func:`resume_state` refuses it, naming what changed, or
with ``restart_on_config_change`` starts afresh. ``checkpoint_best.pt`` keeps the best epoch on
validation (:func:`is_better`, T-Food's saving criteria) beside ``checkpoint.pt`` (the last);
:func:`patience_exhausted` is the early-stopping rule (``train.patience``) on the same criterion.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from malm import config as C
from malm.io import BEST_CHECKPOINT, CHECKPOINT, digest, fingerprint_files, load_checkpoint
from malm.io import sha256_file as _sha256  # the shared helper (it lived here)

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parents[1]
# files of a run that describe a finished state; removed when a changed run starts afresh
RUN_STATE_FILES = (CHECKPOINT, BEST_CHECKPOINT, "history.json", "metrics.json")


def is_better(val: dict[str, float], best: dict[str, float]) -> bool:
    """T-Food's saving criteria: lower val img2rec medR wins; at equal medR, higher R@1."""
    if val["val/img2rec_medR"] != best["val/img2rec_medR"]:
        return val["val/img2rec_medR"] < best["val/img2rec_medR"]
    return val["val/img2rec_R@1"] > best["val/img2rec_R@1"]


def patience_exhausted(best: dict[str, Any] | None, epochs_done: int, patience: int) -> bool:
    """Early stopping (``train.patience``): True when ``patience`` > 0 and the best epoch
    (``best["epoch"]``, by :func:`is_better`) lies ``patience`` or more epochs before the last one
    done. Both inputs are checkpointed, so a resumed run stops at the same epoch as an uninterrupted
    one."""
    return patience > 0 and best is not None and epochs_done - int(best["epoch"]) >= patience


def input_fingerprints(cfg: C.Config) -> dict[str, str]:
    """The identity of what a run reads, so that a run resumed under the same config but on other
    inputs is recognised as a different run instead of a finished one: the sha256 of the local file
    it starts from (``model.image.pretrained``, e.g. rebuilt by the pretrain stage) and the digest
    of its data cache's key (``data.cache_dir``: :func:`malm.data.cache.cache_key`, the key the
    cache is, or will be, built with; it changes when the data's content does, e.g. synthetic data
    written again by an edited generator)."""
    from malm.data.cache import cache_key  # the owner of the cache's identity

    out = {"data.cache_dir": digest(cache_key(cfg.data))}
    spec = cfg.model.image.pretrained
    if spec and Path(spec).is_file():
        out["model.image.pretrained"] = _sha256(spec)
    return out


def code_fingerprint() -> dict[str, str]:
    """{package-relative path: sha256} of every ``malm`` source file this process has imported:
    the code a run was trained with. A run resumed under changed code is a different run (DVC
    re-runs ``train`` after a code edit, and a finished checkpoint must not count as its result)."""
    files = {Path(f).resolve() for name, module in list(sys.modules.items())
             if (name == "malm" or name.startswith("malm."))
             and (f := getattr(module, "__file__", None)) and Path(f).suffix == ".py"}
    return fingerprint_files(files, PACKAGE)


def changed_code(recorded: dict[str, str]) -> list[str]:
    """The files of a recorded ``code_fingerprint`` that differ (or are gone) now."""
    return [f for f, h in recorded.items() if not (PACKAGE / f).is_file() or _sha256(PACKAGE / f) != h]


def run_changes(cfg: C.Config, run_dir: str | os.PathLike) -> list[str]:
    """Besides the config, what makes the checkpointed run in ``run_dir`` another run than the one
    ``cfg`` would make now (the check :func:`resume_state` makes): ``input <name>`` for each input of
    :func:`input_fingerprints` whose file changed, ``code malm/<file>`` for each changed source file
    the run imported. [] when nothing changed or there is no checkpoint. The checkpoint is
    memory-mapped: its tensors are not read."""
    import torch

    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: the plain loader names the file
        state = load_checkpoint(path)
    inputs = input_fingerprints(cfg)
    recorded = state.get("inputs", {})
    return ([f"input {k}" for k in inputs if recorded.get(k) != inputs[k]]
            + [f"code malm/{f}" for f in changed_code(state.get("code", {}))])


def resume_state(cfg: C.Config, run_dir: Path, inputs: dict[str, str], *,
                 restart_on_config_change: bool = False, rank: int = 0) -> dict[str, Any] | None:
    """The state to resume ``cfg``'s run in ``run_dir`` from: its last checkpoint, or None to start
    afresh. A checkpoint made under another config, other ``inputs`` (``input_fingerprints``) or
    other code raises a ConfigError naming what changed; with ``restart_on_config_change`` rank 0
    removes the old run's state files instead and None is returned."""
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.exists():
        return None
    state = load_checkpoint(ckpt_path)
    saved = C.from_dict(state["config"])
    changed = C.identity(saved) != C.identity(cfg)
    changed_inputs = [k for k in inputs if state.get("inputs", {}).get(k) != inputs[k]]
    code = changed_code(state.get("code", {}))
    if not (changed or changed_inputs or code):
        return state
    what = ("config" if changed else f"the file behind {', '.join(changed_inputs)}" if changed_inputs
            else f"code (malm/{', malm/'.join(code)})")
    if not restart_on_config_change:
        raise C.ConfigError(f"{ckpt_path} was made with a different {what}; use a new --run-dir "
                            f"(see {run_dir / 'config.yaml'} for the config it was made with)")
    log.warning("%s: %s changed; starting afresh", ckpt_path, what)
    if rank == 0:
        for name in RUN_STATE_FILES:
            (run_dir / name).unlink(missing_ok=True)
    return None
