"""Embedding a split with a trained model: the evaluation loader, the embeddings of a split (and
their one-bag validation score; ``embed_split_tokens`` also keeps the token sets the matching module
reads, for test-time re-ranking), and loading a trained run from its directory (its config,
checkpoint and the cache it was trained on). The ``.npz`` they are written to:
:mod:`malm.eval.emb_file`.

Evaluation always embeds the first image of a pair, centre-cropped, with no mask.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from malm import config as C
from malm.data.cache import require_cache, vocab_size
from malm.data.loader import make_loader, to_device
from malm.eval.protocol import evaluate
from malm.eval.emb_file import save_embeddings
from malm.io import CHECKPOINT, CHECKPOINT_CHOICES, load_checkpoint
from malm.models.malm import build_model

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """The device of a single-process run (train.device: auto, cpu, cuda)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def eval_loader(data: C.DataConfig, image: C.ImageEncoderConfig, cache_dir: str | os.PathLike,
                split: str, batch_size: int, device: torch.device) -> DataLoader:
    """Batches of ``split`` as evaluation sees them: every pair once, in cache order."""
    loader, _, _ = make_loader(data, cache_dir, split, train=False, batch_size=batch_size,
                               image_size=image.img_size, num_patches=image.num_patches,
                               pin_memory=device.type == "cuda")
    return loader


def _eval_batches(model, loader: DataLoader, device: torch.device, amp: bool, progress: bool,
                  tokens: bool):
    """(ids, image emb [b, E], recipe emb [b, E], token sets or None) of each batch of ``loader``
    (full image, no mask), in loader order. ``tokens``: also the image tokens [b, 1+P, C], recipe
    tokens [b, S_b, W] and pad [b, S_b] of the same forward."""
    ds = loader.dataset
    model.eval()
    amp = device.type == "cuda" and amp
    for batch in tqdm(loader, desc=f"embed {ds.split}", disable=not progress, leave=False):
        if batch is None:
            continue
        if batch.pop("n_skipped", 0):
            raise RuntimeError(f"{ds.cache_dir}/{ds.split}: unreadable cached images while embedding; "
                               "rebuild the cache (malm data prepare)")
        batch = to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if not tokens:
                yield batch["id"], model.embed_image(batch["image"]), model.embed_recipe(batch), None
                continue
            # embed_image / embed_recipe, keeping the token sets they pool
            img_tok, _ = model.image_encoder.forward_visible(batch["image"], None)
            rec = model.recipe_encoder(batch["title"], batch["ingrs"], batch["instrs"])
            yield (batch["id"], model.image_head(img_tok[:, 0]), model.recipe_head(rec["pooled"]),
                   (img_tok, rec["tokens"], rec["pad"]))


@torch.no_grad()
def embed_split(model, loader: DataLoader, device: torch.device, *, amp: bool = False,
                limit: int | None = None, progress: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embed every pair of ``loader``'s split -> image [N, E], recipe [N, E] float32, ids [N], rows
    sorted by recipe id. ``limit`` keeps the first ``limit`` ids; ``amp``: bf16 autocast on CUDA."""
    imgs, recs, ids = [], [], []
    for batch_ids, img, rec, _ in _eval_batches(model, loader, device, amp, progress, tokens=False):
        imgs.append(img.float().cpu())
        recs.append(rec.float().cpu())
        ids.extend(batch_ids)
    image, recipe = torch.cat(imgs).numpy(), torch.cat(recs).numpy()
    ids_arr = np.asarray(ids)
    order = np.argsort(ids_arr, kind="stable")
    image, recipe, ids_arr = image[order], recipe[order], ids_arr[order]
    if limit is not None:
        image, recipe, ids_arr = image[:limit], recipe[:limit], ids_arr[:limit]
    return image.astype(np.float32), recipe.astype(np.float32), ids_arr


@dataclass
class SplitTokens:
    """The token sets of a split's pairs, as the matching module reads them (``embed_split_tokens``).

    image [M, 1+P, C], recipe [M, S, W] (every row padded to the split's longest S), pad [M, S]
    bool (True = pad), stored in loader order; ``rows`` [N] int64 maps row ``n`` of the id-sorted
    embeddings to its storage row (no second copy of the tokens is made to sort them).
    """

    image: torch.Tensor
    recipe: torch.Tensor
    pad: torch.Tensor
    rows: torch.Tensor

    def __len__(self) -> int:
        return self.rows.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.image, self.recipe, self.pad, self.rows))

    def to(self, device: torch.device | str) -> "SplitTokens":
        """A copy on ``device`` (e.g. the GPU, so that scoring pairs copies nothing from the host)."""
        return SplitTokens(*(t.to(device) for t in (self.image, self.recipe, self.pad, self.rows)))

    def take_image(self, idx: torch.Tensor) -> torch.Tensor:
        """Id-sorted rows ``idx`` [U] -> image tokens [U, 1+P, C]"""
        return self.image.index_select(0, self.rows.index_select(0, idx.to(self.rows.device)))

    def take_recipe(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Id-sorted rows ``idx`` [U] -> recipe tokens [U, S, W], pad [U, S]"""
        store = self.rows.index_select(0, idx.to(self.rows.device))
        return self.recipe.index_select(0, store), self.pad.index_select(0, store)


@torch.no_grad()
def embed_split_tokens(model, loader: DataLoader, device: torch.device, *, amp: bool = False,
                       limit: int | None = None, progress: bool = True,
                       token_dtype: torch.dtype = torch.float32
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, SplitTokens]:
    """``embed_split`` + the token sets of the same forward (CPU, ``token_dtype``): image tokens of
    ``model.image_encoder.forward_visible(images, None)`` (full image, no mask) and the recipe
    encoder's ``tokens`` / ``pad``. Returns (image [N, E], recipe [N, E], ids [N], SplitTokens),
    rows of the first three sorted by recipe id as ``embed_split``'s.

    Memory: N x (1+P) x C image values (Recipe1M test at ViT-B/16: 51k x 197 x 768, 15 GB in bf16).
    """
    n_max = len(loader.dataset)
    imgs, recs, ids = [], [], []
    img_store = rec_parts = None
    at = 0
    for batch_ids, img, rec, (img_tok, rec_tok, rec_pad) in _eval_batches(
            model, loader, device, amp, progress, tokens=True):
        b = len(batch_ids)
        if img_store is None:  # preallocated: no transient second copy of the image tokens
            img_store = torch.empty(n_max, *img_tok.shape[1:], dtype=token_dtype)
            rec_parts = []
        img_store[at:at + b] = img_tok.to("cpu", token_dtype)
        rec_parts.append((rec_tok.to("cpu", token_dtype), rec_pad.cpu()))
        at += b
        imgs.append(img.float().cpu())
        recs.append(rec.float().cpu())
        ids.extend(batch_ids)
    if img_store is None:
        raise ValueError(f"{loader.dataset.split}: no pairs to embed")
    S = max(t.shape[1] for t, _ in rec_parts)
    W = rec_parts[0][0].shape[2]
    recipe_tok = torch.zeros(at, S, W, dtype=token_dtype)
    pad = torch.ones(at, S, dtype=torch.bool)
    row = 0
    for t, p in rec_parts:
        recipe_tok[row:row + t.shape[0], :t.shape[1]] = t
        pad[row:row + t.shape[0], :t.shape[1]] = p
        row += t.shape[0]
    image, recipe = torch.cat(imgs).numpy(), torch.cat(recs).numpy()
    ids_arr = np.asarray(ids)
    order = np.argsort(ids_arr, kind="stable")
    if limit is not None:
        order = order[:limit]
    tokens = SplitTokens(img_store[:at], recipe_tok, pad, torch.from_numpy(order).long())
    return (image[order].astype(np.float32), recipe[order].astype(np.float32), ids_arr[order],
            tokens)


def validate(model, loader: DataLoader, device: torch.device, *, limit: int, amp: bool = False,
             progress: bool = True) -> dict[str, float]:
    """Validation R@1 / medR on the first ``limit`` pairs of ``loader`` (one bag, tfood protocol)."""
    image, recipe, ids = embed_split(model, loader, device, amp=amp, limit=limit, progress=progress)
    res = evaluate(image, recipe, ids, protocol="tfood", bag_size=len(ids), n_bags=1)
    return {"val/img2rec_R@1": res["img2rec"]["R@1"]["mean"], "val/rec2img_R@1": res["rec2img"]["R@1"]["mean"],
            "val/img2rec_medR": res["img2rec"]["medR"]["mean"], "val/bag_size": float(len(ids))}


# ----------------------------------------------------------------------------------- trained runs
def load_trained(run_dir: str | os.PathLike, device: torch.device | str = "cpu",
                 checkpoint: str = "last"):
    """(model, cfg, cache_dir, info) from a run directory's checkpoint and the config it carries.

    ``checkpoint``: last (checkpoint.pt, the last finished epoch) or best (checkpoint_best.pt, the
    best epoch on validation: medR, then R@1, T-Food's saving criteria). ``info`` says which file
    and epoch were loaded.
    """
    if checkpoint not in CHECKPOINT_CHOICES:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINT_CHOICES)}, got {checkpoint!r}")
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_CHOICES[checkpoint]
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (train the run first; runs made before best "
                                "checkpoints were kept need --checkpoint last)")
    state = load_checkpoint(path)
    cfg = C.from_dict(state["config"])
    last = load_checkpoint(run_dir / CHECKPOINT) if checkpoint == "best" else state
    if not last.get("finished"):
        log.warning("%s is not finished (epoch %d of %d)", run_dir, last["epoch"], cfg.train.epochs)
    cache_dir = require_cache(cfg.data, who=f"loading the trained run {run_dir}")
    model = build_model(cfg.model, cfg.loss, vocab_size(cache_dir))
    model.load_state_dict(state["model"])
    info = {"checkpoint": checkpoint, "checkpoint_file": path.name, "checkpoint_epoch": int(state["epoch"])}
    return model.to(device), cfg, cache_dir, info


def embed(run_dir: str | os.PathLike, split: str, out: str | os.PathLike, progress: bool = True,
          checkpoint: str = "best") -> Path:
    """Embed ``split`` with the trained run's ``checkpoint`` (best|last) -> ``out`` (.npz: image,
    recipe, ids sorted by id, and which checkpoint and epoch made them)."""
    device = resolve_device("auto")
    model, cfg, cache_dir, info = load_trained(run_dir, device, checkpoint)
    loader = eval_loader(cfg.data, cfg.model.image, cache_dir, split, max(cfg.train.batch_size, 128), device)
    image, recipe, ids = embed_split(model, loader, device, amp=cfg.train.amp, progress=progress)
    save_embeddings(out, image, recipe, ids, **info)
    log.info("wrote %s: %d pairs, dim %d, from the %s checkpoint (epoch %d)", out, len(ids),
             image.shape[1], checkpoint, info["checkpoint_epoch"])
    return Path(out)
