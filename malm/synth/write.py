"""Writing the deterministic synthetic dataset in Recipe1M's exact file format (the CPU default of the suite).

Each recipe is a dish type (the semantic class) with ``min..max_ingredients`` visible ingredients drawn
from a long-tailed (Zipf) popularity biased by the dish's preferences, plus invisible pantry lines. Its
images are renderings of the same dish (:mod:`malm.synth.render`); its text is Recipe1M-like
(:mod:`malm.synth.wording`). Files written under ``out``::

    layer1.json  layer2.json  det_ingrs.json        Recipe1M format (layer2 lists recipes with images)
    <partition>/<c0>/<c1>/<c2>/<c3>/<image id>      JPEG images
    synth_truth.json    {"generator": {config, seed, signatures, look-alike pairs, dish frequencies},
                         "images": {image id: {recipe_id, partition, dish,
                                               ingredients: [{ingredient, box, visible}]}},
                         "recipes": {recipe id: {dish, partition, ingredients, pantry, images}}}
                        box: [x0, y0, x1, y1] pixels (x1/y1 exclusive) around the visible part;
                        visible: fraction of the drawn ingredient left unoccluded
    synth_classes.json  {recipe id: dish type}; titles also contain the dish word
    .synth_complete     the summary, written last: its presence means the dataset is complete. It
                        records the key of the files: the output config and the generator's
                        fingerprint (:func:`malm.synth.generator_fingerprint`: GENERATOR_VERSION,
                        data files, code), and ``output``, the sha256 digest of every file written
                        (what the data cache takes as this root's identity)

Difficulty knobs: ``min/max_ingredients``, ``lookalike_frac`` (ingredient pairs whose signatures
differ only by a small colour shift), ``noise``, ``color_jitter``, ``occlusion``, ``zipf_a``,
``multi_image_frac``, ``text_only_frac``. Randomness comes from numpy Generators keyed by
(seed, stream, split, recipe, image), so output is byte-identical for a config whatever ``workers``
(given the same numpy and Pillow/libjpeg builds).

Staleness (the rule is in :mod:`malm.io`): this module owns it for the files above. A folder whose
marker records the same output config and the same generator fingerprint is reused as is; the same
config made by another generator (an edited ``ingredients.txt``, ``text_templates.json`` or
``malm/synth/*.py``, or a bumped GENERATOR_VERSION) is written again, whoever calls (``malm data
synth``, ``malm data prepare``, ``malm pretrain``, ``dvc repro``). Writing it again gives the same
bytes unless the generator really changed, so the digest in the marker, and everything downstream
of it, stays the same after an edit that does not change the output.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from malm.config import SynthConfig
from malm.io import SYNTH_COMPLETE, atomic_write_bytes, digest, sha256_bytes
from malm.synth import generator_changes, generator_fingerprint
from malm.synth.plan import SPLITS, RecipePlan, Vocabulary, build_vocabulary, plan_recipes
from malm.synth.render import Look, Renderer
from malm.synth.vocab import DISHES, INGREDIENTS

VERSION = 1  # of the file format, recorded in synth_truth.json (the generator's: GENERATOR_VERSION)
URL = "https://example.com/malm-synth"
GENERATOR = "malm.data.synth"  # the format name recorded in synth_truth.json (kept stable)
COMPLETE, INCOMPLETE = SYNTH_COMPLETE, ".synth_incomplete"
OUTPUT_FILES = ("layer1.json", "layer2.json", "det_ingrs.json", "synth_truth.json", "synth_classes.json")
log = logging.getLogger(__name__)


def image_path(root: Path, partition: str, image_id: str) -> Path:
    return root / partition / image_id[0] / image_id[1] / image_id[2] / image_id[3] / image_id


# ----------------------------------------------------------------------------------- rendering
_WORKER: dict = {}


def _init_worker(looks: list[Look], cfg: SynthConfig, out: str) -> None:
    _WORKER["renderer"] = Renderer(looks, cfg.image_size, cfg.noise, cfg.color_jitter, cfg.occlusion,
                                   cfg.seed, piece_scale=cfg.piece_scale)
    _WORKER["cfg"], _WORKER["out"], _WORKER["dirs"] = cfg, Path(out), set()


def _render_task(task: tuple) -> tuple[str, list, int, str]:
    image_id, split, dish, base, ings, key = task
    cfg, out = _WORKER["cfg"], _WORKER["out"]
    rng = np.random.default_rng([cfg.seed, 2, *key])
    data, truth = _WORKER["renderer"].render(rng, DISHES[dish], base, list(ings), cfg.jpeg_quality)
    path = image_path(out, split, image_id)
    if path.parent not in _WORKER["dirs"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        _WORKER["dirs"].add(path.parent)
    path.write_bytes(data)
    return image_id, truth, len(data), sha256_bytes(data)


def _render_all(plans: list[RecipePlan], cfg: SynthConfig, pool, progress: bool) -> tuple[dict, int, dict]:
    """({image id: truth}, bytes written, {image id: sha256})"""
    tasks = [(img, p.partition, p.dish, p.base, tuple(p.ingredients), (*p.key, m))
             for p in plans for m, img in enumerate(p.images)]
    truth, nbytes, shas = {}, 0, {}
    results = pool.imap_unordered(_render_task, tasks, chunksize=32) if pool else map(_render_task, tasks)
    for image_id, t, n, sha in tqdm(results, total=len(tasks), disable=not progress, desc="synth images",
                                    unit="img", smoothing=0.1):
        truth[image_id], nbytes, shas[image_id] = t, nbytes + n, sha
    return truth, nbytes, shas


# ------------------------------------------------------------------------------------- writing
def _write_json(path: Path, obj) -> tuple[int, str]:
    """Write ``obj``; return (bytes, sha256)."""
    data = json.dumps(obj).encode()
    return atomic_write_bytes(path, data), sha256_bytes(data)


def _records(plans: list[RecipePlan], truth: dict, vocab: Vocabulary, cfg: SynthConfig) -> dict[str, object]:
    names = [i.name for i in INGREDIENTS]
    plans = sorted(plans, key=lambda p: p.id)
    layer1 = [{"id": p.id, "title": p.text["title"],
               "ingredients": [{"text": t} for t in p.text["ingredients"]],
               "instructions": [{"text": t} for t in p.text["instructions"]],
               "partition": p.partition, "url": f"{URL}/recipes/{p.id}"} for p in plans]
    layer2 = [{"id": p.id, "images": [{"id": m, "url": f"{URL}/images/{m}"} for m in p.images]}
              for p in plans if p.images]
    det = [{"id": p.id, "ingredients": [{"text": c} for c in p.text["clean"]],
            "valid": [True] * len(p.text["clean"])} for p in plans]
    images = {m: {"recipe_id": p.id, "partition": p.partition, "dish": DISHES[p.dish].name,
                  "ingredients": [{"ingredient": names[i], "box": box, "visible": vis}
                                  for i, box, vis in truth[m]]}
              for p in plans for m in p.images}
    recipes = {p.id: {"dish": DISHES[p.dish].name, "partition": p.partition,
                      "ingredients": [names[i] for i in p.ingredients],
                      "pantry": [c for c in p.text["clean"] if c not in {names[i] for i in p.ingredients}],
                      "images": p.images} for p in plans}
    generator = {
        "name": GENERATOR, "version": VERSION, "seed": cfg.seed, "config": cfg.output_config(),
        "lookalike_pairs": [list(x) for x in vocab.lookalikes],
        "ingredients": {i.name: {"category": i.category, "color": list(lk.color), "color2": list(lk.color2),
                                 "texture": lk.texture, "shape": lk.shape, "size": lk.size,
                                 "popularity": round(float(pp), 6)}
                        for i, lk, pp in zip(INGREDIENTS, vocab.looks, vocab.popularity)},
        "dishes": {d.name: {"vessel": d.vessel, "layout": d.layout, "method": d.method,
                            "probability": round(float(pd), 6)} for d, pd in zip(DISHES, vocab.dish_probs)},
    }
    return {"layer1.json": layer1, "layer2.json": layer2, "det_ingrs.json": det,
            "synth_classes.json": {p.id: DISHES[p.dish].name for p in plans},
            "synth_truth.json": {"generator": generator, "images": images, "recipes": recipes}}


def _prepare(out: Path, cfg: SynthConfig, generator: dict, overwrite: bool) -> dict | None:
    """Return the stored summary if ``out`` already holds this dataset, made by this ``generator``
    (its fingerprint); clear stale output otherwise."""
    done = out / COMPLETE
    if done.exists():
        summary = json.loads(done.read_text())
        if summary.get("config") == cfg.output_config():
            changed = generator_changes(summary.get("generator"), generator)
            if not changed:
                return {**summary, "cached": True}
            # the same dataset, made by another generator: stale, written again
            log.info("%s: made by another generator (%s differ); writing it again", out, ", ".join(changed))
        elif not overwrite:
            diff = sorted(k for k, v in cfg.output_config().items() if summary.get("config", {}).get(k) != v)
            raise FileExistsError(f"{out} holds a synthetic dataset made with another config (differs in "
                                  f"{', '.join(diff)}); use another folder or overwrite=True")
    elif not (out / INCOMPLETE).exists() and not overwrite:
        found = [f for f in ("layer1.json", "layer2.json", "det_ingrs.json") if (out / f).exists()]
        if found:
            raise FileExistsError(f"{out} holds {', '.join(found)} not written by malm.synth (a real "
                                  "Recipe1M?); refusing to overwrite without overwrite=True")
    for name in (COMPLETE, *OUTPUT_FILES):
        (out / name).unlink(missing_ok=True)
    for split in SPLITS:
        if (out / split).is_dir():
            shutil.rmtree(out / split)
    return None


def generate(out_dir: str | Path, cfg: SynthConfig, progress: bool = True, overwrite: bool = False) -> dict:
    """Write the dataset to ``out_dir``; return a summary (recipes, pairs, text-only and images per
    split, seconds, bytes).

    The summary is written last to ``.synth_complete``. A folder that already has it for the same
    output config and the same generator (:func:`malm.synth.generator_fingerprint`) is returned as
    is (``"cached": True``) without regenerating; the same config made by another generator is
    regenerated; a different config raises ``FileExistsError`` unless ``overwrite``. A folder left
    by a crashed run (``.synth_incomplete``) is regenerated; Recipe1M files from elsewhere are never
    overwritten without ``overwrite``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator = generator_fingerprint()  # before writing: the generator these files come from
    cached = _prepare(out, cfg, generator, overwrite)
    if cached is not None:
        return cached
    t0 = time.time()
    (out / INCOMPLETE).write_text(json.dumps(cfg.output_config()))
    vocab = build_vocabulary(cfg)
    initargs = (vocab.looks, cfg, str(out))
    if cfg.workers > 1:
        with mp.get_context().Pool(cfg.workers, _init_worker, initargs) as pool:
            plans = plan_recipes(cfg, vocab, pool)
            truth, nbytes, shas = _render_all(plans, cfg, pool, progress)
    else:
        _init_worker(*initargs)
        try:
            plans = plan_recipes(cfg, vocab)
            truth, nbytes, shas = _render_all(plans, cfg, None, progress)
        finally:
            _WORKER.clear()
    files = {}
    for name, obj in _records(plans, truth, vocab, cfg).items():
        n, files[name] = _write_json(out / name, obj)
        nbytes += n
    count = lambda f: {s: sum(f(p) for p in plans if p.partition == s) for s in SPLITS}  # noqa: E731
    summary = {"config": cfg.output_config(), "version": VERSION, "generator": generator,
               "output": digest({"files": files, "images": shas}),
               "recipes": count(lambda p: 1), "pairs": count(lambda p: bool(p.images)),
               "text_only": count(lambda p: not p.images), "images": count(lambda p: len(p.images)),
               "seconds": round(time.time() - t0, 1), "bytes": nbytes}
    _write_json(out / COMPLETE, summary)
    (out / INCOMPLETE).unlink()
    return summary
