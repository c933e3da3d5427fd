"""Everything a trained run is measured by, in one process (the pipeline's ``assess`` stage,
``malm assess``): embed ``eval.split`` with the run's best checkpoint, evaluate every protocol x
bag of ``eval`` (the dual encoder), re-rank with the matching module where ``eval`` asks for it,
and score grounding on the synthetic data.

The same files as ``malm embed`` + ``malm evaluate --run-dir`` + ``malm grounding``, byte for
byte in the arrays and numbers (``tests/test_assess.py``), for one start-up, one model load and one
forward over the split instead of three, three and two: the embeddings and the matching module's
token sets come from the same forward (``embed_split_tokens``), which ``malm evaluate --run-dir``
has to recompute from the file's checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from malm import config as C
from malm.eval.emb_file import save_embeddings
from malm.eval.embed import (embed_split, embed_split_tokens, eval_loader, load_trained,
                             resolve_device)
from malm.eval.run import evaluate_dual, write_results

log = logging.getLogger(__name__)


def assess(run_dir: str | os.PathLike, cfg: C.Config, emb_out: str | os.PathLike,
           metrics_dir: str | os.PathLike, grounding_out: str | os.PathLike | None = None,
           figure: str | os.PathLike | None = None, *, checkpoint: str = "best",
           progress: bool = True) -> dict:
    """Embed, evaluate (+ re-rank) and, with ``grounding_out``, ground one trained run.

    ``cfg`` supplies the ``eval`` and ``grounding`` sections (params.yaml's); the model, data and
    cache are the run's own (its config.yaml). Writes ``emb_out`` (.npz, as ``malm embed``),
    ``metrics_dir/<protocol>_<bag>.json`` (as ``malm evaluate --out-dir --run-dir``) and
    ``grounding_out`` / ``figure`` (as ``malm grounding``). Returns the files written and the
    seconds each part took.
    """
    from malm.eval.rerank import no_matching_reason, rerank_scored, rerank_selection

    t0 = time.perf_counter()
    device = resolve_device("auto")
    trained = load_trained(run_dir, device, checkpoint)
    model, run_cfg, cache_dir, info = trained
    amp = run_cfg.train.amp and device.type == "cuda"
    seconds = {"load": time.perf_counter() - t0}

    # which re-ranked settings `eval` asks for (they decide whether the forward keeps token sets)
    every = [(p, int(b), int(n)) for p in cfg.eval.protocols for b, n in cfg.eval.bags]
    wanted, why = rerank_selection(cfg.eval, every)
    if wanted and model.matching is None:
        wanted, why = [], no_matching_reason(run_dir, run_cfg.variant)

    t0 = time.perf_counter()
    loader = eval_loader(run_cfg.data, run_cfg.model.image, cache_dir, cfg.eval.split,
                         max(run_cfg.train.batch_size, 128), device)
    tokens = None
    if wanted:
        image, recipe, ids, tokens = embed_split_tokens(
            model, loader, device, amp=run_cfg.train.amp, progress=progress,
            token_dtype=torch.bfloat16 if amp else torch.float32)
    else:
        image, recipe, ids = embed_split(model, loader, device, amp=run_cfg.train.amp, progress=progress)
    save_embeddings(emb_out, image, recipe, ids, **info)
    seconds["embed"] = time.perf_counter() - t0
    log.info("wrote %s: %d pairs, dim %d, from the %s checkpoint (epoch %d)", emb_out, len(ids),
             image.shape[1], checkpoint, info["checkpoint_epoch"])

    t0 = time.perf_counter()
    written, settings = evaluate_dual(emb_out, cfg.eval, metrics_dir)
    seconds["evaluate"] = time.perf_counter() - t0
    if tokens is not None:
        t0 = time.perf_counter()
        # the settings actually evaluated (tfood bags clamped to what the split holds)
        settings, why = rerank_selection(cfg.eval, settings)
        results, why = rerank_scored(model, info, image, recipe, ids, tokens, cfg.eval, settings,
                                     emb=emb_out, run_dir=run_dir, device=device, amp=amp,
                                     token_pass_seconds=seconds["embed"])
        written += write_results(results, metrics_dir)
        seconds["rerank"] = time.perf_counter() - t0
    log.info("%s", why)
    del tokens

    files = {"embeddings": str(emb_out), "metrics": [str(p) for p in written]}
    if grounding_out is not None:
        from malm.eval.grounding import run_grounding

        t0 = time.perf_counter()
        g = cfg.grounding
        same = g.checkpoint == checkpoint and resolve_device(g.device) == device
        run_grounding(run_dir, None, grounding_out, figure, split=g.split or cfg.eval.split,
                      limit=g.pairs, rule=g.rule, min_visible=g.min_visible, checkpoint=g.checkpoint,
                      batch_size=g.batch_size, n_examples=g.examples, device=g.device,
                      progress=progress, trained=trained if same else None)
        files["grounding"] = str(grounding_out)
        seconds["grounding"] = time.perf_counter() - t0
    log.info("assessed %s in %s", run_dir, ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return {"files": files, "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "run_dir": str(Path(run_dir))}
