"""The one typed config tree: the command sections (pipeline, grounding, converge), unknown and
removed keys, old stored configs, the CPU default's documented overrides of the package defaults,
one KEY=VALUE grammar for every command, and the inline stage path that passes the config object."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from conftest import REPO, SMOKE
from malm import config as C

PARAMS = REPO / "params.yaml"
CONVERGE = REPO / "configs" / "converge.yaml"


# ------------------------------------------------------------------ the command sections
def test_pipeline_grounding_and_converge_sections_parse_from_the_params_files():
    raw = yaml.safe_load(PARAMS.read_text())
    cfg = C.from_files([PARAMS, CONVERGE])
    assert cfg.pipeline.variants == raw["pipeline"]["variants"]
    assert cfg.pipeline.seeds == raw["pipeline"]["seeds"] and all(type(s) is int for s in cfg.pipeline.seeds)
    assert cfg.grounding.pairs == raw["grounding"]["pairs"] == 1000  # dvc exp run -S grounding.pairs=...
    assert cfg.converge.out == "converge"
    # today's `malm grounding` flag defaults, and no pipeline without a params file
    g = C.Config().grounding
    assert (g.pairs, g.rule, g.min_visible, g.checkpoint, g.batch_size, g.examples, g.device) == (
        None, "centre", 0.0, "best", 64, 4, "auto")
    assert g.split is None and C.Config().eval.split == "test"  # null = eval.split: test, as --split did
    assert C.Config().pipeline.variants == [] and C.Config().pipeline.seeds == []
    # malm converge's profile settings are these typed sections
    from malm.launch.converge import profile_settings

    assert profile_settings([PARAMS, CONVERGE]) == {"variants": raw["pipeline"]["variants"],
                                                    "seeds": raw["pipeline"]["seeds"], "out": "converge"}
    assert profile_settings([SMOKE]) == {"variants": None, "seeds": None, "out": "converge"}


def test_every_new_field_has_help():
    for section in (C.PipelineConfig, C.GroundingConfig, C.ConvergeConfig):
        for f in section.__dataclass_fields__.values():
            assert f.metadata.get("help"), (section.__name__, f.name)


@pytest.mark.parametrize("overlay, key", [
    ({"grounding": {"pairz": 10}}, "grounding.pairz"),
    ({"converge": {"outt": "x"}}, "converge.outt"),
    ({"pipeline": {"variant": ["malm"]}}, "pipeline.variant"),
    ({"pipeline": {"seeds": ["zero"]}}, r"pipeline.seeds\[0\]"),
    ({"grounding": {"rule": "middle"}}, "grounding.rule"),
    ({"grounding": {"split": "dev"}}, "grounding.split"),
])
def test_unknown_or_mistyped_keys_name_the_key(overlay, key):
    with pytest.raises(C.ConfigError, match=key):
        C.merge(C.Config(), overlay)


def test_an_unknown_top_level_key_in_a_file_names_it_and_the_file(tmp_path):
    f = tmp_path / "typo.yaml"
    f.write_text("pipline: {variants: [malm]}\n")
    with pytest.raises(C.ConfigError, match=r"typo.yaml.*unknown config key 'pipline'"):
        C.from_files([f])
    from malm.variants import resolve_from_files

    with pytest.raises(C.ConfigError, match="pipline"):
        resolve_from_files("malm", [f])
    # variant_overrides is the one key outside the tree
    f.write_text("variant_overrides: {malm: {train: {epochs: 1}}}\n")
    assert C.from_files([f]) == C.Config()
    assert resolve_from_files("malm", [f]).train.epochs == 1


def test_the_runtime_sections_do_not_change_what_a_run_is():
    cfg = C.from_files([PARAMS])
    other = C.merge(cfg, {"pipeline": {"variants": ["malm"], "seeds": [7]},
                          "grounding": {"pairs": 5, "rule": "overlap"}, "converge": {"out": "/tmp/x"}})
    assert C.identity(other) == C.identity(cfg)
    assert {"pipeline", "grounding", "converge"} <= set(C.RUNTIME_KEYS)


# ------------------------------------------------------------------------ data.image_size
def test_data_image_size_in_a_config_file_or_override_is_a_clear_error(tmp_path):
    f = tmp_path / "old_params.yaml"
    f.write_text("data: {image_size: 32}\nmodel: {image: {img_size: 32}}\n")
    msg = r"'data.image_size' was removed.*model.image.img_size"
    with pytest.raises(C.ConfigError, match=msg):
        C.from_files([f])
    from malm.variants import resolve_from_files

    with pytest.raises(C.ConfigError, match=msg):
        resolve_from_files("malm", [f])
    with pytest.raises(C.ConfigError, match=msg):
        C.from_files([], C.parse_overrides(["data.image_size=32"]))
    assert "image_size" not in C.DataConfig.__dataclass_fields__
    for path in (SMOKE, PARAMS, REPO / "configs" / "paper.yaml", CONVERGE):  # the shipped files load
        C.from_files([path])


def test_an_old_stored_config_with_data_image_size_still_loads_and_compares_equal(tmp_path):
    """A run's config.yaml written before this change: data.image_size in it, none of the pipeline /
    grounding / converge sections. It loads, and equals the same run resolved now (runtime keys aside)."""
    from malm.variants import resolve_from_files

    now = resolve_from_files("malm", [PARAMS], {"train": {"seed": 1}})
    old = C.to_dict(now)
    for section in ("pipeline", "grounding", "converge"):
        del old[section]
    old["data"] = {**old["data"], "image_size": now.model.image.img_size}
    stored = tmp_path / "config.yaml"
    stored.write_text(yaml.safe_dump(old, sort_keys=False))
    loaded = C.load(stored)
    assert C.identity(loaded) == C.identity(now)
    from malm.launch.grid import config_diff

    assert config_diff(C.identity(loaded), C.identity(now)) == []
    # a checkpoint's dict: the same, and the dict itself is left as it is
    assert C.identity(C.from_dict(old)) == C.identity(now) and "image_size" in old["data"]


# ----------------------------------------------------- params.yaml: the CPU default, documented
# Every value params.yaml sets that differs from the package default (malm/config.py's dataclass
# defaults), with the reason its comment gives. A new override must be added here, with its reason,
# and explained in params.yaml; one that no longer differs must be removed.
DOCUMENTED_OVERRIDES = {
    "pipeline.variants": "what dvc repro / malm converge run: the peers, the baseline, the component steps, MALM",
    "pipeline.workers": "two 1-thread runs side by side: 1.2-1.6x the samples/s of one 2-thread run",
    "pipeline.seeds": "3 seeds for the paired differences and their bootstrap CIs",
    "synth.image_size": "rendered at 80 px, above the 72 px image cache, which only downsamples",
    "synth.n_ingredients": "synthetic data eased for the CPU budget: 48 ingredients",
    "synth.min_ingredients": "eased: 3-6 ingredients per dish",
    "synth.max_ingredients": "eased: 3-6 ingredients per dish",
    "synth.lookalike_frac": "eased: no look-alikes",
    "synth.zipf_a": "eased: flatter ingredient popularity",
    "synth.occlusion": "eased: light occlusion",
    "synth.noise": "eased: light noise",
    "synth.piece_scale": "eased: larger pieces",
    "pretrain.n_ingredients": "the stand-in's corpus uses the benchmark's 48 ingredients",
    "pretrain.caption_keep": "at 0.8 the stand-in learnt too slowly for the CPU budget",
    "pretrain.epochs": "10 epochs, set with the 64 px CPU default (~7 min)",
    "model.image.pretrained": "every run starts from the CLIP stand-in's weights",
    "model.recipe.width": "48: the CPU recalibration for the stand-in (cheaper encoders, 2 cores)",
    "model.recipe.dropout": "0.0: the same CPU recalibration (no measurement recorded)",
    "model.matching.width": "48: the same CPU recalibration",
    "loss.lambda_gc": "0.03: chosen on validation by the sweep (at 1 the matching terms swamp L_itc)",
    "loss.lambda_lc": "0.03: chosen on validation by the sweep",
    "loss.itc_view": "full: chosen on validation by the sweep (masked view ~9 points lower)",
    "train.epochs": "3 epochs (2 left the baseline at 17 %, R@1 still climbing)",
    "train.freeze_image_epochs": "the stand-in frozen 2 epochs, as the paper freezes CLIP (tie with 1)",
    "train.lr_image": "the pretrained ViT at a 10x lower rate",
    "train.lr_word_embedding": "word embeddings learnt from scratch at a 10x higher rate",
    "train.threads": "2: the 2-core CPU the default is sized for",
    "train.log_every": "gradient norms sampled every 50 steps (each sample costs a backward per term)",
    "eval.protocols": "both protocols, read against T-Food's and H-T's",
    "eval.rerank_protocols": "re-ranking every bag would add 8-10 min per run on 2 cores",
    "eval.rerank_bags": "the CPU default re-ranks T-Food's 1k bags only",
    "grounding.pairs": "1000 pairs keep the stage at 6-11 s per run",
}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> {dotted key: value} (dict-valued fields such as data.max_pairs stay whole)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not k.startswith("max_pairs"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _commented_sections(text: str) -> set[str]:
    """Top-level sections of a YAML file with a comment right above them or inside their block."""
    out, comment, current = set(), False, None
    for line in text.splitlines():
        if line.startswith("#"):
            comment = True
        elif re.match(r"^[A-Za-z_]\w*:", line):
            current = line.split(":")[0]
            if comment:
                out.add(current)
            comment = False
        elif "#" in line and current:
            out.add(current)
    return out


def test_every_value_params_yaml_changes_is_documented():
    params = yaml.safe_load(PARAMS.read_text())
    defaults = _flat(C.to_dict(C.Config()))
    cfg = _flat(C.to_dict(C.from_files([PARAMS])))
    overrides = {k for k, v in _flat(C.config_sections(params)).items() if cfg[k] != defaults[k]}
    assert overrides - set(DOCUMENTED_OVERRIDES) == set(), (
        "params.yaml overrides package defaults without a documented reason (add it to "
        "DOCUMENTED_OVERRIDES and to the comment in params.yaml)")
    assert set(DOCUMENTED_OVERRIDES) - overrides == set(), "no longer overridden: remove from the list"
    assert all(len(r) > 10 for r in DOCUMENTED_OVERRIDES.values())
    undocumented = {k.split(".")[0] for k in overrides} - _commented_sections(PARAMS.read_text())
    assert not undocumented, f"params.yaml sections with overrides but no comment: {undocumented}"


def test_the_dvc_assess_stage_tracks_every_grounding_and_eval_key_of_params_yaml():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["assess"]
    keys = [f"grounding.{f}" for f in C.GroundingConfig.__dataclass_fields__]
    assert set(stage["params"]) == {*keys, "eval"}
    assert set(yaml.safe_load(PARAMS.read_text())["grounding"]) == set(C.GroundingConfig.__dataclass_fields__)
    assert "--config params.yaml" in stage["cmd"] and "--limit" not in stage["cmd"]


# ----------------------------------------------------------------- one KEY=VALUE grammar
def test_data_synth_takes_synth_keys(tmp_path):
    """`malm data synth --out DIR [--config ...] synth.KEY=VALUE ...` (a fresh process)."""
    out = tmp_path / "synth"
    keys = ["synth.n_train=5", "synth.n_val=2", "synth.n_test=2", "synth.image_size=16",
            "synth.max_images=1", "synth.multi_image_frac=0.0", "synth.workers=1", "synth.seed=3"]
    p = subprocess.run([sys.executable, "-m", "malm.cli", "data", "synth", "--out", str(out), "--quiet",
                        *keys], capture_output=True, text=True, timeout=300, cwd=REPO,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout)
    assert summary["config"]["n_train"] == 5 and summary["config"]["seed"] == 3
    assert summary["config"]["image_size"] == 16
    assert (out / "layer1.json").is_file()


def test_data_synth_config_and_refusals(capsys):
    from malm.cli import build_base_config, main, make_parser

    a = make_parser().parse_args(["data", "synth", "--out", "x", "--config", str(PARAMS), "synth.n_train=7"])
    synth = build_base_config(a, ("synth",)).synth
    assert synth == C.merge(C.from_files([PARAMS]).synth, {"n_train": 7})
    assert main(["data", "synth", "--out", "x", "train.epochs=3"]) == 2
    assert "reads only the synth.* config keys; got train.epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the old flags are gone
        main(["data", "synth", "--out", "x", "--n-train", "5"])


def _emb(tmp_path: Path, n: int = 60, d: int = 8) -> Path:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(n, d)).astype(np.float32)
    recipe = (image + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    path = tmp_path / "emb.npz"
    np.savez(path, image=image, recipe=recipe, ids=np.arange(n))
    return path


def test_evaluate_single_file_mode_evaluates_what_eval_says(tmp_path, capsys):
    from malm.cli import main
    from malm.eval.emb_file import load_embeddings
    from malm.eval.protocol import evaluate

    emb, out = _emb(tmp_path), tmp_path / "m.json"
    assert main(["evaluate", "--emb", str(emb), "--out", str(out), "eval.bags=[[20,3]]"]) == 0
    res = json.loads(out.read_text())
    image, recipe, ids = load_embeddings(emb)
    want = evaluate(image, recipe, ids, protocol="tfood", bag_size=20, n_bags=3, seed=1234)
    assert (res["protocol"], res["bag_size"], res["n_bags"]) == ("tfood", 20, 3)
    assert res["img2rec"] == json.loads(json.dumps(want["img2rec"])) and res["embeddings"] == str(emb)
    assert "protocol=tfood bag=20 x3" in capsys.readouterr().out

    assert main(["evaluate", "--emb", str(emb), "--out", str(out), "eval.protocols=[ht]",
                 "eval.bags=[[10,4]]", "eval.seed=7"]) == 0
    res = json.loads(out.read_text())
    want = evaluate(image, recipe, ids, protocol="ht", bag_size=10, n_bags=4, seed=7)
    assert (res["protocol"], res["seed"]) == ("ht", 7)
    assert res["rec2img"] == json.loads(json.dumps(want["rec2img"]))

    # without --out: every protocol x bag, printed
    capsys.readouterr()
    assert main(["evaluate", "--emb", str(emb), "eval.protocols=[tfood,ht]", "eval.bags=[[20,3],[30,2]]"]) == 0
    assert len(re.findall(r"^protocol=", capsys.readouterr().out, re.M)) == 4
    # --out holds one result; the old flags and the positional file are gone
    assert main(["evaluate", "--emb", str(emb), "--out", str(out)]) == 2
    assert "--out holds one result" in capsys.readouterr().err
    assert main(["evaluate", "--emb", str(emb), "train.epochs=1"]) == 2
    for old in (["--protocol", "ht"], ["--bag-size", "10"], ["--n-bags", "2"], ["--seed", "3"]):
        with pytest.raises(SystemExit):
            main(["evaluate", "--emb", str(emb), *old])
    with pytest.raises(SystemExit):
        main(["evaluate", str(emb)])


def test_evaluate_out_dir_mode_reads_eval_without_a_variant(tmp_path, monkeypatch):
    import malm.launch.stage as stage
    from malm.cli import main

    seen = []
    monkeypatch.setattr(stage, "run_stage", lambda name, cfg, executor, **kw: seen.append((name, cfg, kw)) or [])
    emb = _emb(tmp_path)
    assert main(["evaluate", "--emb", str(emb), "--config", str(SMOKE), "--out-dir", str(tmp_path / "m"),
                 "eval.rerank_k=0"]) == 0
    [(name, cfg, kw)] = seen
    assert name == "evaluate" and kw["emb"] == str(emb)
    assert cfg.eval == C.merge(C.from_files([SMOKE]).eval, {"rerank_k": 0})


def test_grounding_reads_its_settings_from_the_config(monkeypatch, capsys):
    """`malm grounding --config params.yaml` (the DVC stage) scores what `--split test --limit 1000`
    scored before; grounding.* overrides change it."""
    import malm.eval.grounding as grounding
    from malm.cli import main

    seen = []
    monkeypatch.setattr(grounding, "run_grounding", lambda *a, **kw: seen.append((a, kw)) or
                        {"has_matching": False, "reason": "stub"})
    assert main(["grounding", "--run-dir", "R", "--config", str(PARAMS), "--quiet"]) == 0
    assert main(["grounding", "--run-dir", "R", "grounding.pairs=64", "grounding.rule=overlap",
                 "grounding.split=val", "grounding.examples=3", "grounding.min_visible=0.5"]) == 0
    (a1, k1), (a2, k2) = seen
    assert a1 == ("R", None, None, None)
    assert k1 == {"split": "test", "limit": 1000, "rule": "centre", "min_visible": 0.0,
                  "checkpoint": "best", "batch_size": 64, "n_examples": 4, "device": "auto",
                  "progress": False}
    assert (k2["split"], k2["limit"], k2["rule"], k2["n_examples"], k2["min_visible"]) == (
        "val", 64, "overlap", 3, 0.5)
    with pytest.raises(SystemExit):
        main(["grounding", "--run-dir", "R", "--limit", "5"])


def test_grounding_help_lists_the_grounding_keys(capsys):
    from malm.cli import main

    with pytest.raises(SystemExit):
        main(["grounding", "--help"])
    text = capsys.readouterr().out
    for f in C.GroundingConfig.__dataclass_fields__:
        assert f"grounding.{f}=" in text, f
    for cmd, section, cls in ((["data", "synth"], "synth", C.SynthConfig), (["evaluate"], "eval", C.EvalConfig)):
        with pytest.raises(SystemExit):
            main([*cmd, "--help"])
        text = capsys.readouterr().out
        assert all(f"{section}.{f}=" in text for f in cls.__dataclass_fields__), cmd


def test_tables_takes_the_variant_order_from_the_typed_pipeline_section(monkeypatch):
    import malm.report.write as write
    from malm.cli import main

    seen = []
    monkeypatch.setattr(write, "build_tables", lambda *a, **kw: seen.append(kw["order"]) or {})
    assert main(["tables", "--config", str(PARAMS), "--config", str(CONVERGE)]) == 0
    assert main(["tables", "--config", str(SMOKE)]) == 0
    assert seen == [yaml.safe_load(PARAMS.read_text())["pipeline"]["variants"], None]


# ----------------------------------------------------------------------------- run_stage
def test_an_inline_stage_gets_the_config_object_itself(monkeypatch, tmp_path):
    """Inline, run_stage hands the stage the caller's Config: no dict round-trip (malm.config is
    not entered); a submitted job still carries a plain dict (parsed back once, in the job)."""
    import malm.train.trainer as trainer
    from malm.launch import stage

    cfg = C.merge(C.Config(), {"variant": "baseline"})
    seen = []
    monkeypatch.setattr(trainer, "train", lambda c, run_dir, **kw: seen.append(c) or "trained")

    def forbidden(*a, **kw):
        raise AssertionError("the inline path entered malm.config")

    for name in ("to_dict", "from_dict", "merge"):
        monkeypatch.setattr(C, name, forbidden)
    assert stage.run_stage("train", cfg, "inline", run_dir=str(tmp_path)) == "trained"
    assert seen[0] is cfg
