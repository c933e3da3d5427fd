"""The trained model behind an index: loading it from the checkpoint the index records, and the
batched forwards that embed recipes (token arrays) and images (evaluation tensors).

The model is rebuilt from the checkpoint's own config and vocabulary size and its weights loaded
from the checkpoint, exactly as :func:`malm.eval.embed.load_trained` does, except that it needs
neither the data cache (the index carries the vocabulary) nor the image encoder's pretrained
weight file (every weight is replaced by the checkpoint's, so it is built without them).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from malm import config as C
from malm.io import load_checkpoint, sha256_file

log = logging.getLogger(__name__)

VOCAB_KEY = "recipe_encoder.embedding.weight"


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence logger ``name`` below ERROR (the 'random init' warning of a model whose weights are
    about to be replaced by a checkpoint's)."""
    lg = logging.getLogger(name)
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


def checkpoint_identity(path: str | os.PathLike, sha256: bool = True) -> dict:
    """Where a checkpoint is and which bytes it holds: absolute path, size, mtime_ns, sha256."""
    path = Path(path).absolute()
    st = path.stat()
    out = {"path": str(path), "file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if sha256:
        out["sha256"] = sha256_file(path)
    return out


def check_checkpoint(recorded: dict, where: str) -> None:
    """Raise unless the checkpoint file ``recorded`` (:func:`checkpoint_identity`) still holds the
    same bytes: same size and mtime, else the same sha256."""
    path = Path(recorded["path"])
    if not path.is_file():
        raise FileNotFoundError(f"{where} was built from {path}, which no longer exists: point the "
                                "index at the run again (malm index --run-dir ...)")
    now = checkpoint_identity(path, sha256=False)
    if (now["size"], now["mtime_ns"]) == (recorded.get("size"), recorded.get("mtime_ns")):
        return
    if sha256_file(path) != recorded.get("sha256"):
        raise ValueError(f"{where} was built from other weights than {path} holds now (the run was "
                         f"trained further or replaced since epoch {recorded.get('epoch')}): rebuild "
                         "the index (malm index)")


def model_from_state(state: dict, cfg: C.Config, device: torch.device | str = "cpu"):
    """A MALM model with ``state["model"]``'s weights, built from ``cfg`` without reading the
    pretrained image weights (the checkpoint replaces them), in eval mode on ``device``."""
    from malm.models.malm import build_model

    weights = state["model"]
    if VOCAB_KEY not in weights:
        raise ValueError(f"the checkpoint has no {VOCAB_KEY}: not a MALM training checkpoint")
    model_cfg = C.merge(cfg.model, {"image": {"pretrained": None, "allow_random_init": True}})
    with _quiet("malm.models.image"):
        model = build_model(model_cfg, cfg.loss, int(weights[VOCAB_KEY].shape[0]))
    model.load_state_dict(weights)
    return model.to(device).eval()


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """(model, cfg, epoch) from a training checkpoint file (config and weights it carries)."""
    state = load_checkpoint(path)
    cfg = C.from_dict(state["config"])
    return model_from_state(state, cfg, device), cfg, int(state.get("epoch", -1))


def _autocast(model, device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


@torch.inference_mode()
def embed_images(model, images: torch.Tensor, *, amp: bool = False, tokens: bool = False):
    """Evaluation tensors [B, 3, s, s] -> unit vectors [B, E] float32 on the CPU (the full image, no
    mask: ``model.embed_image``), and with ``tokens`` the image token set [B, 1+P, C] the matching
    module reads (``forward_visible(images, None)``, the same forward)."""
    device = next(model.parameters()).device
    with _autocast(model, device, amp):
        tok, _ = model.image_encoder.forward_visible(images.to(device), None)
        emb = model.image_head(tok[:, 0]).float().cpu()
    return (emb, tok) if tokens else emb


def _batch(title: np.ndarray, ingrs: np.ndarray, instrs: np.ndarray, device) -> dict:
    return {k: torch.from_numpy(np.asarray(a).astype(np.int64)).to(device)
            for k, a in (("title", title), ("ingrs", ingrs), ("instrs", instrs))}


@torch.inference_mode()
def embed_recipes(model, title: np.ndarray, ingrs: np.ndarray, instrs: np.ndarray, *,
                  batch_size: int = 128, amp: bool = False, progress: bool = False) -> np.ndarray:
    """Token arrays (the cache's layout: title [N, T], ingrs [N, I, T], instrs [N, J, T]) ->
    recipe embeddings [N, E] float32 (``model.embed_recipe``, batch by batch)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    out = []
    for s in tqdm(range(0, len(title), batch_size), desc="embed recipes", disable=not progress,
                  leave=False):
        batch = _batch(title[s:s + batch_size], ingrs[s:s + batch_size], instrs[s:s + batch_size],
                       device)
        with _autocast(model, device, amp):
            out.append(model.embed_recipe(batch).float().cpu())
    if not out:
        return np.zeros((0, model.recipe_head.fc.out_features), np.float32)
    return torch.cat(out).numpy().astype(np.float32)


@torch.inference_mode()
def recipe_tokens(model, title: np.ndarray, ingrs: np.ndarray, instrs: np.ndarray, *,
                  amp: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward of the recipe encoder: (embeddings [N, E] float32 CPU, tokens [N, S, W],
    pad [N, S] on the model's device): what the matching module reads of these recipes."""
    device = next(model.parameters()).device
    with _autocast(model, device, amp):
        rec = model.recipe_encoder(**_batch(title, ingrs, instrs, device))
        emb = model.recipe_head(rec["pooled"]).float().cpu()
    return emb, rec["tokens"], rec["pad"]


@torch.inference_mode()
def match_scores(model, img_tokens: torch.Tensor, img_rows: torch.Tensor, rec_tokens: torch.Tensor,
                 rec_pad: torch.Tensor, rec_rows: torch.Tensor, *, amp: bool = False,
                 chunk: int = 2048) -> torch.Tensor:
    """The matching module's score of U pairs (image ``img_rows[u]`` of ``img_tokens`` [Ni, 1+P, C]
    with recipe ``rec_rows[u]`` of ``rec_tokens`` [Nr, S, W] / ``rec_pad`` [Nr, S]) -> [U] float32
    on the CPU: :func:`malm.eval.rerank.pair_scores` with the run's kind (:func:`score_kind`: the
    global score when trained with L_GC, else the local one), ``chunk`` pairs at a time; the
    test-time re-ranking score of ``malm evaluate --run-dir``."""
    from malm.eval.rerank import pair_scores, score_kind
    from malm.models.recipe import used_length

    if model.matching is None:
        raise ValueError("this run's model has no matching module (lambda_gc = lambda_lc = "
                         "lambda_itm = 0): nothing to re-rank with; search without --rerank")
    if img_rows.shape != rec_rows.shape:
        raise ValueError(f"image rows {tuple(img_rows.shape)} and recipe rows "
                         f"{tuple(rec_rows.shape)} differ in shape")
    kind = score_kind(model.matching)
    device = next(model.parameters()).device
    out = []
    for s in range(0, img_rows.shape[0], chunk):
        ii = img_rows[s:s + chunk].to(img_tokens.device)
        rr = rec_rows[s:s + chunk].to(rec_tokens.device)
        pad = rec_pad.index_select(0, rr.to(rec_pad.device))
        L = max(used_length(~pad), 1)  # this chunk's longest recipe: the rest is padding
        rec = rec_tokens.index_select(0, rr)[:, :L]
        with _autocast(model, device, amp):
            out.append(pair_scores(model.matching, img_tokens.index_select(0, ii).to(device),
                                   rec.to(device), pad[:, :L].to(device), kind).float().cpu())
    return torch.cat(out) if out else torch.empty(0)
