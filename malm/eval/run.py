"""Running the evaluation of one embeddings file (the pipeline's ``evaluate`` stage, ``malm evaluate``):
every protocol x bag of the ``eval`` section (:mod:`malm.eval.protocol`), the re-ranked readings of a
run with a matching module (:mod:`malm.eval.rerank`), one JSON file per result.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

from malm import config as C
from malm.eval.emb_file import embedding_provenance, load_embeddings
from malm.eval.names import bag_label
from malm.eval.protocol import evaluate
from malm.io import atomic_write_json

log = logging.getLogger(__name__)


def evaluate_bags(emb: str | os.PathLike, eval_cfg: C.EvalConfig) -> Iterator[tuple[dict, tuple[str, int, int]]]:
    """Every protocol x bag of ``eval_cfg`` on one embeddings file, in order: (result, (protocol,
    bag_size, n_bags)). tfood with ``eval.clamp_bags``: a split too small for n_bags consecutive bags
    gets as many as it holds (recorded as the result's n_bags)."""
    image, recipe, ids = load_embeddings(emb)
    for protocol in eval_cfg.protocols:
        for bag_size, n_bags in eval_cfg.bags:
            if protocol == "tfood" and eval_cfg.clamp_bags and len(ids) < bag_size * n_bags:
                fit = len(ids) // bag_size
                if fit == 0:
                    raise ValueError(f"{emb}: {len(ids)} pairs cannot hold one bag of {bag_size}")
                log.warning("%s: %d pairs hold %d consecutive bag(s) of %d, not %d (recorded as n_bags)",
                            emb, len(ids), fit, bag_size, n_bags)
                n_bags = fit
            result = evaluate(image, recipe, ids, protocol=protocol, bag_size=bag_size, n_bags=n_bags,
                              seed=eval_cfg.seed)
            result["embeddings"] = str(emb)
            yield result, (protocol, bag_size, n_bags)


def evaluate_all(emb: str | os.PathLike, eval_cfg: C.EvalConfig, out_dir: str | os.PathLike,
                 run_dir: str | os.PathLike | None = None, progress: bool = True) -> list[Path]:
    """Every protocol x bag of ``eval_cfg`` on one embeddings file -> ``out_dir/<protocol>_<bag>.json``.

    With ``run_dir`` (the run the embeddings came from), ``eval.rerank_k`` > 0 and a model that has
    a matching module, also ``out_dir/<protocol>+rerank<k>_<bag>.json`` for each bag size of
    ``eval.rerank_bags`` (``malm.eval.rerank``); otherwise a log line says why there are none.
    """
    written, settings = evaluate_dual(emb, eval_cfg, out_dir)
    if run_dir is None:
        log.info("no --run-dir: no re-ranked results (the matching module needs the trained run)")
        return written
    from malm.eval.rerank import rerank_run

    results, why = rerank_run(emb, run_dir, eval_cfg, settings, progress=progress)
    log.info("%s", why)
    return written + write_results(results, out_dir)


def evaluate_dual(emb: str | os.PathLike, eval_cfg: C.EvalConfig, out_dir: str | os.PathLike
                  ) -> tuple[list[Path], list[tuple[str, int, int]]]:
    """The dual-encoder results of every protocol x bag -> (files written, their settings)."""
    written, settings = [], []
    for result, setting in evaluate_bags(emb, eval_cfg):
        result.update(embedding_provenance(emb))
        written.append(_write_result(result, out_dir))
        settings.append(setting)
    return written, settings


def write_results(results: list[dict], out_dir: str | os.PathLike) -> list[Path]:
    """``out_dir/<protocol>_<bag>.json`` for each result (atomically), with a log line each."""
    return [_write_result(r, out_dir) for r in results]


def _write_result(result: dict, out_dir: str | os.PathLike) -> Path:
    """``out_dir/<protocol>_<bag>.json``, and its log line."""
    path = Path(out_dir) / f"{result['protocol']}_{bag_label(result['bag_size'])}.json"
    atomic_write_json(path, result)
    log.info("%s %s x%d: img2rec R@1 %.2f medR %.1f | rec2img R@1 %.2f medR %.1f", result["protocol"],
             bag_label(result["bag_size"]), result["n_bags"], result["img2rec"]["R@1"]["mean"],
             result["img2rec"]["medR"]["mean"], result["rec2img"]["R@1"]["mean"],
             result["rec2img"]["medR"]["mean"])
    return path
