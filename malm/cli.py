"""``malm``: the one command-line entry point. Each subcommand is a thin wrapper around a function.

Heavy modules (torch, timm, submitit) are imported inside the subcommands so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from malm import config as C

log = logging.getLogger("malm")


# ------------------------------------------------------------------------- config <-> argparse
def config_help(cfg: Any = None, prefix: str = "") -> str:
    """Every config field with its default and help, as ``section.key=DEFAULT  help`` lines."""
    cfg = C.Config() if cfg is None else cfg
    lines = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(config_help(value, f"{prefix}{f.name}."))
        else:
            lines.append(f"  {prefix}{f.name}={json.dumps(value)}\n      {f.metadata.get('help', '')}")
    return "\n".join(lines)


def build_config(args: argparse.Namespace) -> C.Config:
    """--config files (params.yaml) <- variant overlay <- variant_overrides <- key=value overrides."""
    from malm import variants

    overrides = C.parse_overrides(getattr(args, "overrides", None) or [])
    seed = getattr(args, "seed", None)
    if seed is not None:
        overrides.setdefault("train", {})["seed"] = seed
    return variants.resolve_from_files(args.variant, getattr(args, "config", None) or [], overrides)


def build_base_config(args: argparse.Namespace, sections: Sequence[str] | None = None,
                      hint: str = "") -> C.Config:
    """--config files <- key=value overrides, no variant: for commands whose config does not depend
    on it (data prepare, pretrain, data synth, evaluate, grounding), so a variant edit does not make
    DVC rebuild their outputs. ``sections``: the only sections the command reads; an override of
    another one is refused (it would be silently ignored), ``hint`` added to a non KEY=VALUE item."""
    items = getattr(args, "overrides", None) or []
    for item in items:
        if "=" not in item:
            raise C.ConfigError(f"'{item}' is not a KEY=VALUE override{hint}")
    if sections is not None:
        other = [i.split("=", 1)[0] for i in items if i.split("=", 1)[0].split(".")[0] not in sections]
        if other:
            raise C.ConfigError(f"`malm {args.command_name}` reads only the "
                                f"{', '.join(s + '.*' for s in sections)} config keys; "
                                f"got {', '.join(other)}")
    return C.from_files(getattr(args, "config", None) or [], C.parse_overrides(items))


def _add_config_args(p: argparse.ArgumentParser, variant: bool = True, keys: str = "") -> None:
    if variant:
        p.add_argument("--variant", default="malm", help="Registered variant name (see `malm variants`).")
    p.add_argument("--config", action="append", metavar="YAML",
                   help="Config overlay file(s) applied in order, e.g. params.yaml or configs/paper.yaml.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help=f"Dotted config overrides{keys or ', e.g. train.epochs=3 model.mask.ratio=0.5'} "
                        "(all keys listed below), applied after the --config files.")


def section_help(*sections: str) -> str:
    """``config_help`` of the named top-level sections only (``section.key=DEFAULT  help`` lines)."""
    cfg = C.Config()
    return "\n".join(config_help(getattr(cfg, s), f"{s}.") for s in sections)


def _add_executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=["inline", "local", "slurm", "debug"], default=None,
                   help="Override slurm.executor. inline: run in this process (default). slurm: submit "
                        "a Slurm job through submitit with the `slurm` config section and block until "
                        "it ends (a failed or cancelled job fails this command, naming the job and its "
                        "log). local/debug: submitit's local subprocess / in-process executors.")


# ---------------------------------------------------------------------------------- commands
def cmd_data_synth(args: argparse.Namespace) -> int:
    from malm.synth.write import generate

    cfg = build_base_config(args, ("synth",)).synth
    summary = generate(args.out, cfg, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from malm.data.recipe1m import check_root, format_check

    report = check_root(args.root, split_dir=args.split_dir)
    print(json.dumps(report, indent=2) if args.json else format_check(report))
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from malm.data.cache import prepare

    cfg = build_base_config(args)
    if cfg.data.synthetic:  # the embedded default; generate() is a no-op when already complete
        from malm.synth.write import generate

        generate(cfg.data.root, cfg.synth, progress=True)
    path = prepare(cfg.data, progress=True, crop_size=cfg.model.image.img_size)
    print(path)
    return 0


def cmd_variants(args: argparse.Namespace) -> int:
    from malm import variants

    reg = variants.registry()
    width = max(len(n) for n in reg)
    for title, members in variants.by_table(reg).items():
        print(f"{title}")
        for v in members:
            alias = f" (alias of {v.alias_of})" if v.alias_of else ""
            rows = "; ".join(f"{t}: {row}" for t, row in sorted(v.paper.items()))
            print(f"  {v.name:<{width}}  {v.display}{alias}: {v.description}"
                  + (f" [paper {rows}]" if rows else ""))
        print()
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from malm.train.pretrain import pretrain

    summary = pretrain(build_base_config(args))
    print(json.dumps({k: summary[k] for k in ("weights", "corpus", "steps", "samples", "minutes", "final")},
                     indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    from malm.launch.stage import run_stage

    run_stage("train", cfg, args.executor, run_dir=args.run_dir,
              restart_on_config_change=args.restart_on_config_change)
    return 0


def cmd_train_runs(args: argparse.Namespace) -> int:
    from malm.launch.pool import train_runs

    train_runs(args.config or ["params.yaml"], variants=args.variants, seeds=args.seeds,
               runs_dir=args.runs_dir, overrides=args.overrides, workers=args.workers,
               restart_on_config_change=args.restart_on_config_change, executor=args.executor,
               progress=not args.quiet)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from malm.launch.stage import run_stage

    cfg = C.load(Path(args.run_dir) / "config.yaml")
    run_stage("embed", cfg, args.executor, run_dir=args.run_dir, split=args.split, out=args.out,
              checkpoint=args.checkpoint)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    cfg = build_base_config(args, ("eval", "slurm"),
                            hint=" (the embeddings file is given as --emb PATH)")
    from malm.eval.run import evaluate_bags
    from malm.launch.stage import run_stage

    if args.out_dir:  # every protocol x bag of `eval`, one JSON each
        for path in run_stage("evaluate", cfg, args.executor, emb=args.emb, out_dir=args.out_dir,
                              run_dir=args.run_dir):
            print(path)
        return 0
    if args.run_dir:
        raise ValueError("--run-dir (re-ranking) needs --out-dir")
    n = len(cfg.eval.protocols) * len(cfg.eval.bags)
    if args.out and n != 1:
        raise C.ConfigError(f"--out holds one result, but eval.protocols x eval.bags gives {n}: pick "
                            "one, e.g. eval.protocols=[tfood] eval.bags=[[1000,10]], or write every "
                            "one with --out-dir DIR")
    from malm.io import atomic_write_json

    for result, (protocol, bag_size, n_bags) in evaluate_bags(args.emb, cfg.eval):
        if args.out:
            atomic_write_json(args.out, result)
        summary = {d: {k: round(v["mean"], 2) for k, v in result[d].items()} for d in ("img2rec", "rec2img")}
        print(f"protocol={protocol} bag={bag_size} x{n_bags}: {json.dumps(summary)}")
    return 0


def cmd_grounding(args: argparse.Namespace) -> int:
    from malm.eval.grounding import run_grounding

    cfg = build_base_config(args, ("grounding",))
    g = cfg.grounding
    res = run_grounding(args.run_dir, args.truth, args.out, args.figure, split=g.split or cfg.eval.split,
                        limit=g.pairs, rule=g.rule, min_visible=g.min_visible,
                        checkpoint=g.checkpoint, batch_size=g.batch_size,
                        n_examples=g.examples, device=g.device, progress=not args.quiet)
    if "accuracy" not in res:  # a note: no matching module, or no boxes to score against
        print(f"grounding: {res['reason']}" + (f" (recorded in {args.out})" if args.out else ""))
        return 0
    lo, hi = res["accuracy_ci95"]
    print(f"grounding {res['variant']} ({res['split']}, {res['rule']} rule): pointing accuracy "
          f"{res['accuracy']:.3f} [95% CI {lo:.3f}, {hi:.3f}] vs chance {res['chance']:.3f} over "
          f"{res['n_targets']} ingredients in {res['n_pairs']} images"
          + (f"; wrote {args.out}" if args.out else "") + (f", {args.figure}" if args.figure else ""))
    return 0


def cmd_assess(args: argparse.Namespace) -> int:
    cfg = build_base_config(args, ("eval", "grounding", "slurm"))
    from malm.launch.stage import run_stage

    if args.figure and not args.grounding:
        raise C.ConfigError("--grounding-figure needs --grounding (the JSON the score is written to)")
    res = run_stage("assess", cfg, args.executor, run_dir=args.run_dir, emb_out=args.emb,
                    metrics_dir=args.metrics_dir, grounding_out=args.grounding, figure=args.figure,
                    checkpoint=args.checkpoint, progress=not args.quiet)
    if res is None:  # a non-zero rank of a multi-task job
        return 0
    files = res["files"]
    for path in [files["embeddings"], *files["metrics"], *([files["grounding"]] if "grounding" in files else [])]:
        print(path)
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in res["seconds"].items()))
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from malm.report.write import build_tables

    order = args.order
    if order is None and args.config:
        order = list(C.from_files(args.config).pipeline.variants) or None
    written = build_tables(args.results, args.out, args.figures, args.metrics, runs_dir=args.runs,
                           dataset=args.dataset, order=order, grounding_dir=args.grounding)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def cmd_check_results(args: argparse.Namespace) -> int:
    from malm.report import expected as E

    given = {"k": args.k, "floor_recall": args.floor_recall, "floor_medR": args.floor_medr}
    if args.write:
        rule = E.existing_rule(args.expected, E.PAPER_RULE if args.paper else E.Rule())
        rule = dataclasses.replace(rule, **{k: v for k, v in given.items() if v is not None})
        path = (E.write_paper(args.expected, rule) if args.paper else
                E.write_from_results(args.results, args.expected, rule,
                                     E.existing_notes(args.expected) if args.note is None
                                     else args.note))
        print(f"wrote {path} ({', '.join(rule.header())})")
        return 0
    if args.paper or args.note or any(v is not None for v in given.values()):
        raise C.ConfigError("--paper, --note, --k and --floor-* only go with --write (a check "
                            "uses the rule in the file's header)")
    result = E.check_path(args.results, args.expected, args.variants)
    print(E.format_check(result, only_failures=args.failures_only))
    return 0 if result["passed"].all() else 1


def cmd_converge(args: argparse.Namespace) -> int:
    from malm.launch.converge import DEFAULT_CONFIGS, run_converge

    run_converge(args.config or list(DEFAULT_CONFIGS), variants=args.variants, seeds=args.seeds,
                 out=args.out, overrides=args.overrides, executor=args.executor,
                 dataset=args.dataset, tables=not args.no_tables, progress=not args.quiet)
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from malm.launch import grid

    if args.grid_command == "submit":
        grid.submit_grid(args.grid, executor=args.executor, cli_overrides=args.overrides, seeds=args.seeds,
                         rerun_changed=args.rerun_changed)
    elif args.grid_command == "status":
        grid.status(args.grid)
    else:
        for name, path in grid.build_grid_tables(args.grid, dataset=args.dataset).items():
            print(f"{name}: {path}")
    return 0


# ------------------------------------------------------------------------------------ parser
def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def make_parser(data_import: bool = False) -> argparse.ArgumentParser:
    """The ``malm`` parser. ``malm data import``'s own options are added only with ``data_import``
    (:func:`main` asks for them when that command runs), so no pipeline stage reads the importer."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="malm", formatter_class=fmt,
        description="MALM food image <-> recipe retrieval suite: data, training, evaluation, grids.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # data
    data = sub.add_parser("data", help="Recipe1M-format data: synthesise, check, prepare the cache.")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    p = dsub.add_parser("synth", formatter_class=fmt,
                        help="Write the synthetic dataset in Recipe1M's exact file format.",
                        description="Write a deterministic synthetic dataset in Recipe1M's file format "
                                    "(layer1.json, layer2.json, det_ingrs.json, images, synth_truth.json) "
                                    "from the `synth` section of the --config files and synth.* "
                                    "overrides, e.g. `malm data synth --out DIR synth.n_train=500 "
                                    "synth.seed=3`. Size and difficulty knobs below (the generator's "
                                    "own defaults; params.yaml's `synth` section eases them for the "
                                    "CPU default).",
                        epilog="Config keys:\n" + section_help("synth"))
    p.add_argument("--out", required=True, help="Output folder (the Recipe1M-format root).")
    p.add_argument("--quiet", action="store_true", help="No progress bar.")
    _add_config_args(p, variant=False, keys=" of the synth section, e.g. synth.n_train=500 synth.seed=3")
    p.set_defaults(func=cmd_data_synth, command_name="data synth")

    p = dsub.add_parser("check", help="Validate a Recipe1M-format root and count recipes/images/pairs.",
                        description="Validate a Recipe1M-format root (real or synthetic) and report per "
                                    "split: recipes, images listed/found/missing, pairs, text-only recipes.")
    p.add_argument("root", help="Recipe1M-format root folder.")
    p.add_argument("--split-dir", default=None, help="Folder with H-T split id lists (train/val/test.txt).")
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    p.set_defaults(func=cmd_data_check)

    p = dsub.add_parser("prepare", formatter_class=fmt,
                        help="Build the one-off preprocessing cache (vocabulary, token ids, image cache).",
                        epilog="Config keys:\n" + config_help())
    _add_config_args(p, variant=False)
    p.set_defaults(func=cmd_data_prepare)

    # variants
    if data_import:
        from malm.data.importer import add_import_parser

        add_import_parser(dsub)
    else:
        dsub.add_parser("import", add_help=False,
                        help="Your own recipes (CSV/JSONL + an image folder) -> a Recipe1M-format root.")

    p = sub.add_parser("variants", help="List the registered variants, grouped by the paper table "
                       "they have a row in (a variant's `paper:` key; baselines/ = Table 1).")
    p.set_defaults(func=cmd_variants)

    # pretrain
    p = sub.add_parser("pretrain", formatter_class=fmt,
                       help="Pretrain the image encoder once, CLIP-style (the CLIP stand-in).",
                       description="Generate the pretraining corpus (section `pretrain`: its own seed, "
                                   "size and ingredient list; nothing shared with the benchmark), train "
                                   "the model.image ViT against a bag-of-words caption tower with "
                                   "symmetric InfoNCE, and write pretrain.out (point model.image.pretrained "
                                   "at it), pretrain.json (corpus, steps, the val retrieval curve) and "
                                   "pretrain_curve.png beside it.",
                       epilog="Config keys:\n" + config_help())
    _add_config_args(p, variant=False)
    p.set_defaults(func=cmd_pretrain)

    # train
    p = sub.add_parser("train", formatter_class=fmt, help="Train a variant into a run directory.",
                       description="Train a variant. Re-running on an existing run directory resumes from "
                                   "its last checkpoint; a finished run is left as it is.",
                       epilog="Config keys:\n" + config_help())
    p.add_argument("--run-dir", required=True, help="Output folder: config.yaml, checkpoint, dvclive logs.")
    p.add_argument("--restart-on-config-change", action="store_true",
                   help="If RUN_DIR holds a checkpoint of a different config, start afresh instead of "
                        "failing (DVC uses this: its cache keeps the previous run's outputs).")
    p.add_argument("--seed", type=int, default=None, help="Shortcut for train.seed=N.")
    _add_config_args(p)
    _add_executor_args(p)
    p.set_defaults(func=cmd_train)

    # train-runs
    p = sub.add_parser(
        "train-runs", formatter_class=fmt,
        help="Train every variant x seed of the pipeline, pipeline.workers runs side by side (the "
             "pipeline's train stage).",
        description="Train every variant x seed (default: `pipeline` of the config files) into "
                    "RUNS_DIR/<variant>/seed<k>: each run is `malm train --config ... --variant V "
                    "--seed S --run-dir ...` in a process of its own, pipeline.workers at a time, the "
                    "most expensive first, each with train.threads // pipeline.workers torch threads. "
                    "A run resumes, skips or restarts as `malm train` does (a finished run under the "
                    "same config and inputs is left as it is). Each run's output goes to "
                    "RUNS_DIR/<variant>/seed<k>.log; RUNS_DIR/train_runs.json records the invocation. "
                    "A failed run does not stop the others; the command exits non-zero at the end, "
                    "naming each failed run and the tail of its log.",
        epilog="Config keys:\n" + config_help())
    p.add_argument("--config", action="append", metavar="YAML",
                   help="Config overlay file(s) applied in order (repeat the flag). Default: params.yaml.")
    p.add_argument("--variants", type=_str_list, default=None, metavar="V[,V...]",
                   help="Comma-separated variants (default: pipeline.variants of the config files).")
    p.add_argument("--seeds", type=_int_list, default=None, metavar="S[,S...]",
                   help="Comma-separated seeds (default: pipeline.seeds of the config files).")
    p.add_argument("--runs-dir", default="runs", help="Folder of the run directories (default: runs).")
    p.add_argument("--workers", type=int, default=None,
                   help="Runs side by side (default: pipeline.workers of the config files).")
    p.add_argument("--restart-on-config-change", action="store_true",
                   help="A run directory holding a checkpoint of another config starts afresh instead "
                        "of failing that run (DVC uses this: its cache keeps the previous outputs).")
    p.add_argument("--quiet", action="store_true", help="No progress bar (one line per finished run).")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="Dotted config overrides for every run, after the config files and the variant.")
    _add_executor_args(p)
    p.set_defaults(func=cmd_train_runs)

    # embed
    p = sub.add_parser("embed", help="Embed a split with a trained run -> EMB.npz (image, recipe, ids).")
    p.add_argument("--run-dir", required=True, help="A finished training run directory.")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="Split to embed.")
    p.add_argument("--out", required=True, help="Output .npz (rows sorted by recipe id; it records "
                   "which checkpoint and epoch made it).")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help="best = the epoch with the best validation medR, then R@1 (T-Food's saving "
                   "criteria; checkpoint_best.pt); last = the last epoch (checkpoint.pt). Default: best.")
    _add_executor_args(p)
    p.set_defaults(func=cmd_embed)

    # evaluate
    p = sub.add_parser("evaluate", formatter_class=fmt,
                       help="Recipe1M retrieval metrics (medR, R@1/5/10, both directions).",
                       description="Evaluate EMB.npz (arrays image [N,D], recipe [N,D], ids [N]) with "
                                   "the Recipe1M protocol: cosine similarity, 1-based ranks, mean/std over "
                                   "bags, for every protocol x bag of the `eval` section (--config files, "
                                   "then eval.* overrides, e.g. eval.protocols=[ht] "
                                   "eval.bags=[[1000,10]]). With --out-dir and --run-dir, also T-Food's "
                                   "test-time reading: each query's top eval.rerank_k (10) re-ranked by "
                                   "the run's matching module, written as protocol <protocol>+rerank<k>.",
                       epilog="Config keys (and the `slurm` section for --out-dir's executor):\n"
                              + section_help("eval"))
    p.add_argument("--emb", required=True, metavar="EMB", help="Embeddings .npz.")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", default=None,
                     help="Write the one result JSON here (atomically): eval.protocols x eval.bags must "
                          "give exactly one. Without --out or --out-dir, results are printed only.")
    out.add_argument("--out-dir", default=None,
                     help="Write every protocol x bag of `eval` into OUT_DIR/<protocol>_<bag>.json "
                          "(and, with --run-dir, the re-ranked <protocol>+rerank<k>_<bag>.json).")
    p.add_argument("--run-dir", default=None,
                   help="With --out-dir: the training run EMB came from. When eval.rerank_k > 0 and its "
                        "model has a matching module, each query's top k (by cosine) is re-ordered by "
                        "the module's pair score (T-Food's k_test) for eval.rerank_protocols x eval.rerank_bags "
                        "-> OUT_DIR/<protocol>+rerank<k>_<bag>.json, from the checkpoint EMB records "
                        "(the split is run through the model once more for its token sets). Without "
                        "it, or for a model without a matching module, only the dual-encoder results.")
    _add_config_args(p, variant=False, keys=" of the eval (and slurm) sections, e.g. "
                                            "eval.protocols=[tfood] eval.bags=[[1000,10]]")
    _add_executor_args(p)
    p.set_defaults(func=cmd_evaluate, command_name="evaluate")

    # grounding
    p = sub.add_parser(
        "grounding", formatter_class=fmt,
        help="Grounding score of a trained run on the synthetic data: does psi's local attention "
             "point inside the ingredient's box?",
        description="Pointing game on the synthetic boxes (synth_truth.json). For each evaluated pair "
                    "(image i, its recipe i) and each visible ingredient named on one of the recipe's "
                    "ingredient lines, run the matching module psi on the full image and take A_I (the "
                    "patches' cross-attention) on that line's recipe token: the patch with the most "
                    "weight is the pointer, a hit when it lies inside the ingredient's box. Reports "
                    "pointing accuracy against the chance rate (mean share of the patches inside the "
                    "box). A variant without a matching module gets a note, not an error. Settings: "
                    "the `grounding` section of the --config files, then grounding.* overrides, e.g. "
                    "`malm grounding --run-dir R --config params.yaml grounding.pairs=64`.",
        epilog="Config keys:\n" + section_help("grounding"))
    p.add_argument("--run-dir", required=True, help="A trained run directory (config.yaml + checkpoint).")
    p.add_argument("--truth", default=None,
                   help="synth_truth.json of the run's data (det_ingrs.json must sit beside it). "
                        "Default: <data.root>/synth_truth.json of the run's config.")
    p.add_argument("--out", default=None, help="Write the result JSON here (atomically).")
    p.add_argument("--figure", default=None,
                   help="Write a PNG with a few test images (grounding.examples), their boxes and the "
                        "attention maps.")
    p.add_argument("--quiet", action="store_true", help="No progress bar.")
    _add_config_args(p, variant=False, keys=" of the grounding section, e.g. grounding.pairs=64 "
                                            "grounding.rule=overlap")
    p.set_defaults(func=cmd_grounding, command_name="grounding")

    # assess
    p = sub.add_parser(
        "assess", formatter_class=fmt,
        help="Embed, evaluate (+ re-rank) and ground one trained run in one process (the pipeline's "
             "assess stage).",
        description="What `malm embed`, `malm evaluate --out-dir --run-dir` and `malm grounding` do "
                    "for one run, with one start-up, one model load and one forward over the split: "
                    "embed eval.split with the run's checkpoint -> EMB.npz; every protocol x bag of "
                    "`eval` -> METRICS_DIR/<protocol>_<bag>.json, and for a model with a matching "
                    "module each query's top eval.rerank_k re-ranked by it -> "
                    "<protocol>+rerank<k>_<bag>.json (from the token sets of the same forward); with "
                    "--grounding, the pointing game of `malm grounding` (synthetic data only). The "
                    "files are the same as those commands write. Settings: the eval and grounding "
                    "sections of the --config files, then eval.* / grounding.* overrides; the model, "
                    "data and cache are the run's own (its config.yaml).",
        epilog="Config keys:\n" + section_help("eval", "grounding"))
    p.add_argument("--run-dir", required=True, help="A trained run directory (config.yaml + checkpoints).")
    p.add_argument("--emb", required=True, metavar="EMB",
                   help="Write the embeddings of eval.split here (.npz, as `malm embed --out`).")
    p.add_argument("--metrics-dir", required=True,
                   help="Write one JSON per protocol x bag (and re-ranked reading) here, as `malm "
                        "evaluate --out-dir`.")
    p.add_argument("--grounding", default=None, metavar="JSON",
                   help="Also score grounding and write its JSON here (as `malm grounding --out`); a "
                        "variant without a matching module gets a note. Default: no grounding.")
    p.add_argument("--grounding-figure", dest="figure", default=None, metavar="PNG",
                   help="With --grounding: the attention-map figure (as `malm grounding --figure`).")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help="best = the epoch with the best validation medR, then R@1 (checkpoint_best.pt); "
                        "last = checkpoint.pt. Default: best. (Grounding uses grounding.checkpoint.)")
    p.add_argument("--quiet", action="store_true", help="No progress bars.")
    _add_config_args(p, variant=False, keys=" of the eval, grounding (and slurm) sections, e.g. "
                                            "eval.rerank_k=0 grounding.pairs=64")
    _add_executor_args(p)
    p.set_defaults(func=cmd_assess, command_name="assess")

    # tables
    p = sub.add_parser("tables", help="Collect metrics JSON into tidy CSV/parquet, Markdown tables, figures.",
                       description="Collect <results>/<variant>/seed<k>/*.json into one tidy table "
                                   "(variant, seed, protocol, bag size, direction, metric, value), a "
                                   "summary over seeds, Markdown tables and seaborn figures.")
    p.add_argument("--results", default="results/metrics", help="Folder of <variant>/seed<k>/*.json.")
    p.add_argument("--runs", default="runs", help="Folder of training runs (for training curves).")
    p.add_argument("--out", default="results/tables", help="Output folder for tables (CSV, parquet, Markdown).")
    p.add_argument("--figures", default="results/figures", help="Output folder for figures.")
    p.add_argument("--metrics", default="results/summary.json",
                   help="Summary metrics JSON for `dvc metrics show` (variant -> metric -> mean over seeds).")
    p.add_argument("--config", action="append", metavar="YAML",
                   help="Config file(s), e.g. params.yaml: the variant order is their "
                        "pipeline.variants (unless --order).")
    p.add_argument("--dataset", default="synthetic", help="Dataset label printed beside our numbers.")
    p.add_argument("--order", nargs="*", default=None, help="Variant order in tables and figures.")
    p.add_argument("--grounding", default=None, metavar="DIR",
                   help="Folder of <variant>/seed<k>/grounding.json (`malm grounding`): adds "
                        "grounding.csv, a grounding table in tables.md and figures/grounding.png.")
    p.set_defaults(func=cmd_tables)

    # check-results
    p = sub.add_parser(
        "check-results", formatter_class=fmt,
        help="Compare results with expected numbers (exit 1 on a regression); --write the expectations.",
        description="Compare the seed-means of RESULTS with an expected-results file (expected/*.csv) "
                    "row by row (variant, protocol, bag, direction, metric) and print expected, "
                    "measured, difference, tolerance and status. Exits 1 when a row is beyond its "
                    "tolerance (either way), read on other n_bags, or missing from RESULTS; rows "
                    "the file does not list are shown as extra and pass. With --write, derive the "
                    "file from RESULTS instead (after an intended change).",
        epilog="Tolerance of a row: max(k * pooled_std * sqrt(1/n_expected + 1/n_measured), floor), "
               "pooled_std the seed std pooled over the variants, floor per metric (medR in ranks, "
               "R@k in points); the parameters are in the file's header (malm/report/expected.py "
               "says why).\n\n"
               "  malm check-results results                                # against expected/default.csv\n"
               "  malm check-results results --write --note 'make repro of 2026-12-06'\n"
               "  malm check-results results --expected expected/paper.csv --variants baseline,malm\n"
               "  malm check-results --write --paper --expected expected/paper.csv")
    p.add_argument("results", nargs="?", default="results",
                   help="A results directory (results/, converge/ or their tables/: the results.csv "
                        "that `malm tables` wrote) or a results.csv/.parquet file (default: results).")
    p.add_argument("--expected", default="expected/default.csv", metavar="FILE",
                   help="Expected-results file: expected/default.csv (the default pipeline), "
                        "expected/smoke.csv (the smoke profile), expected/paper.csv (the paper).")
    p.add_argument("--variants", type=_str_list, default=None, metavar="V[,V...]",
                   help="Check only these variants of the file, e.g. baseline,malm (the others are "
                        "neither required nor reported).")
    p.add_argument("--failures-only", action="store_true",
                   help="Print only the rows that fail (and the verdict).")
    p.add_argument("--write", action="store_true",
                   help="Write FILE from RESULTS instead of checking: mean and seed std of every "
                        "row, its tolerance by the rule. The rule's parameters are kept from the "
                        "existing FILE unless given below. RESULTS must be complete (every variant "
                        "with the same seeds).")
    p.add_argument("--paper", action="store_true",
                   help="With --write: write FILE from the paper's Tables 1-3 (malm/paper) "
                        "instead of RESULTS.")
    p.add_argument("--note", action="append", metavar="TEXT",
                   help="With --write: a header line saying where RESULTS came from, e.g. "
                        "'make repro of 2026-12-06' (repeat the flag for more lines; without it, "
                        "the existing FILE's notes are kept).")
    p.add_argument("--k", type=float, default=None,
                   help="With --write: multiple of the standard error of the difference "
                        "(default 4, or the existing file's).")
    p.add_argument("--floor-recall", type=float, default=None, metavar="POINTS",
                   help="With --write: smallest tolerance of R@k, in points (default 0.5; paper 2).")
    p.add_argument("--floor-medr", type=float, default=None, metavar="RANKS",
                   help="With --write: smallest tolerance of medR, in ranks (default 0.5; paper 1).")
    p.set_defaults(func=cmd_check_results)

    # converge
    p = sub.add_parser(
        "converge", formatter_class=fmt,
        help="The converge profile: every variant x seed trained long enough for validation to "
             "flatten (a fixed 20 epochs), then embedded, evaluated and tabulated into a folder of its own.",
        description="Train every variant x seed (default: `pipeline` of the config files) with the "
                    "config files (default: params.yaml + configs/converge.yaml: train.epochs = 20 "
                    "epochs, no early stop; with train.patience=P > 0 a run stops once validation "
                    "img2rec medR/R@1 has not improved for P epochs), embed eval.split with each run's best checkpoint "
                    "and evaluate every protocol x bag of `eval` (as the pipeline's `malm train`, "
                    "`malm embed`, `malm evaluate`), then `malm tables` into OUT. Prints each run's "
                    "wall time; OUT/converge.json and OUT/converge.md record them and the total.",
        epilog="Outputs under OUT: runs/<variant>/seed<k>/, embeddings/<variant>/seed<k>/<split>.npz, "
               "metrics/<variant>/seed<k>/*.json, tables/, figures/ (learning_curves.png among "
               "them), summary.json, converge.json, converge.md.\n\n"
               "Re-running resumes: finished runs (metrics.json written, same resolved config) are "
               "not trained again, unfinished ones resume from their last checkpoint, and a run "
               "trained under another config is refused. Embedding and evaluation are redone only "
               "where a run's metrics are missing or older than its best checkpoint.\n\n"
               "Config keys:\n" + config_help())
    p.add_argument("--config", action="append", metavar="YAML",
                   help="Config overlay file(s) applied in order (repeat the flag). Default: "
                        "params.yaml then configs/converge.yaml.")
    p.add_argument("--variants", type=_str_list, default=None, metavar="V[,V...]",
                   help="Comma-separated variants to run, e.g. baseline,malm (default: "
                        "pipeline.variants of the config files).")
    p.add_argument("--seeds", type=_int_list, default=None, metavar="S[,S...]",
                   help="Comma-separated seeds, e.g. 0,1 (default: pipeline.seeds of the config "
                        "files).")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="Output folder of the profile (default: converge.out of the config files, "
                        "else converge). Nothing is written outside it.")
    p.add_argument("--dataset", default="synthetic", help="Dataset label printed beside our numbers.")
    p.add_argument("--no-tables", action="store_true",
                   help="Train, embed and evaluate only; skip `malm tables`.")
    p.add_argument("--quiet", action="store_true", help="No progress bars.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="Dotted config overrides for every run, after the config files and the "
                        "variant, e.g. train.epochs=10 train.patience=2 (keys listed below).")
    _add_executor_args(p)
    p.set_defaults(func=cmd_converge)

    # grid
    grid = sub.add_parser("grid", help="Ablation grids as Slurm job arrays: submit, status, collect.",
                          description="A grid file (ablations/grids/*.yaml) lists variants x seeds x "
                                      "overrides; each cell trains, embeds and evaluates.")
    gsub = grid.add_subparsers(dest="grid_command", required=True, metavar="GRID_COMMAND")
    p = gsub.add_parser("submit", help="Submit the grid's unfinished cells as one job array and return.",
                        description="Submit every cell that is neither finished nor queued/running as ONE "
                                    "job array, then return. Re-submitting skips finished cells: "
                                    "those with metrics whose run was trained under the config the "
                                    "cell resolves to now.")
    p.add_argument("grid", help="Grid file, e.g. ablations/grids/table3.yaml.")
    p.add_argument("--executor", choices=["slurm", "local", "debug"], default="slurm",
                   help="slurm (default): the Slurm cluster; local: subprocesses on this machine.")
    p.add_argument("--seeds", type=_int_list, metavar="S[,S...]",
                   help="Submit only the cells of these seeds, comma-separated (a subset of the "
                        "grid's seeds), e.g. --seeds 0 or --seeds 0,1; re-submit later without it "
                        "for the rest. Put KEY=VALUE overrides before it: "
                        "malm grid submit GRID KEY=VALUE --seeds 0.")
    p.add_argument("--rerun-changed", action="store_true",
                   help="Cells are keyed by their resolved config: a cell whose run was trained under "
                        "another config (the grid's overrides, a config file or a variant changed) "
                        "is refused, naming the keys that differ. With this flag its old run and "
                        "metrics are moved aside (<dir>.stale-<UTC time>) and it is trained again.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="Config overrides for every cell, e.g. train.epochs=4.")
    p.set_defaults(func=cmd_grid)
    p = gsub.add_parser("status", help="Per-cell state: FINISHED, or the scheduler's job state.")
    p.add_argument("grid", help="Grid file.")
    p.set_defaults(func=cmd_grid)
    p = gsub.add_parser("collect", help="Gather the grid's results into the same tables as DVC.")
    p.add_argument("grid", help="Grid file.")
    p.add_argument("--dataset", default="synthetic", help="Dataset label printed beside our numbers.")
    p.set_defaults(func=cmd_grid)

    # a trained model on your own photos and recipes: listed here, parsed by malm/search/cli.py (main
    # hands these commands over before this parser runs, so the pipeline's stages never read malm/search)
    for name, text in SEARCH_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


SEARCH_COMMANDS = {
    "index": "Embed a recipe collection with a trained run -> INDEX.npz for `malm search`.",
    "search": "Find the recipes of your photos (or the images of a recipe) in an index.",
    "serve": "A local web page over an index: drop a photo, see its recipes and attention maps.",
}


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MPLBACKEND", "agg")  # the commands write figures to files, never to a screen
    argv = list(sys.argv[1:] if argv is None else argv)
    if next((a for a in argv if not a.startswith("-")), None) in SEARCH_COMMANDS:
        from malm.search.cli import main as search_main

        return search_main(argv)
    words = [a for a in argv if not a.startswith("-")]
    parser = make_parser(data_import=words[:2] == ["data", "import"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("malm: interrupted", file=sys.stderr)
        return 130
    except (C.ConfigError, OSError, ValueError, RuntimeError) as exc:
        # Data, config and job errors name the file/record/job; the traceback is for --verbose.
        if args.verbose:
            raise
        print(f"malm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
