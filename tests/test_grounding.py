"""Grounding score (malm.eval.grounding, malm.eval.grounding_truth): hand-made cases with known
answers, the token layout (malm.models.recipe.ingredient_columns) against the real recipe encoder,
and a quick end-to-end run on the tiny synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SMOKE
from malm.eval.grounding import NoMatchingModule, check_matching, pointing, summarise, target_weights
from malm.eval.grounding_truth import CropGeometry
from malm.models.recipe import ingredient_columns

# the smoke profile: 40 px synthetic image -> 36 px cache -> centre crop 32 (offset 2)
# -> 4x4 patches of 8 px
SMOKE_GEO = CropGeometry(source_size=40, cache_size=36, crop_size=32, patch_size=8)


# ------------------------------------------------------------------------------ geometry
def test_geometry_maps_a_known_box_to_known_patches():
    g = SMOKE_GEO
    assert (g.scale, g.offset, g.grid, g.num_patches) == (0.9, 2, 4, 16)
    box = np.array([[10, 10, 20, 20]])  # source px -> crop [7, 7, 16, 16)
    np.testing.assert_allclose(g.to_crop(box), [[7, 7, 16, 16]])
    # centres at 4, 12, 20, 28: only x = y = 12 lies in [7, 16) -> patch row 1, col 1 = 5
    centre = g.inside(box, "centre")
    assert centre.shape == (1, 16) and np.flatnonzero(centre[0]).tolist() == [5]
    # overlap: spans [0, 8) and [8, 16) meet [7, 16); [16, 24) does not -> rows/cols 0..1
    assert np.flatnonzero(g.inside(box, "overlap")[0]).tolist() == [0, 1, 4, 5]
    # the whole image holds every patch; chance = share of inside patches
    full = g.inside(np.array([[0, 0, 40, 40]]), "centre")
    assert full.all()
    # a box lying in the 2 px the crop cuts away has no area in the crop
    assert g.in_crop(np.array([[0, 0, 2, 40], [0, 0, 3, 40]])).tolist() == [False, True]
    with pytest.raises(ValueError, match="rule"):
        g.inside(box, "corner")


def test_pointing_game_on_a_fake_attention_tensor():
    """Two pairs, 16 patches, 5 recipe tokens; three ingredients with known boxes and pointers."""
    g = SMOKE_GEO
    P, S = g.num_patches, 5
    attn = torch.full((2, 1 + P, S), 0.01)
    attn[:, 0, :] = 5.0                # CLS row: must be ignored
    attn[0, 1 + 5, 2] = 0.9            # pair 0, column 2 points at patch 5
    attn[0, 1 + 15, 3] = 0.8           # pair 0, column 3 points at patch 15
    attn[1, 1 + 0, 4] = 0.7            # pair 1, column 4 points at patch 0
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([2, 3, 4])
    w = target_weights(attn, rows, cols)
    assert w.shape == (3, P)
    boxes = np.array([[10, 10, 20, 20],    # holds patch 5 only -> hit, chance 1/16
                      [10, 10, 20, 20],    # patch 15 is outside -> miss, chance 1/16
                      [0, 0, 40, 20]])     # top half: centres x 4..28, y 4, 12 -> 8 patches; patch 0 -> hit
    inside = torch.from_numpy(g.inside(boxes, "centre"))
    res = pointing(w, inside)
    assert res["pointer"].tolist() == [5, 15, 0]
    assert res["hit"].tolist() == [True, False, True]
    np.testing.assert_allclose(res["chance"].numpy(), [1 / 16, 1 / 16, 8 / 16])
    np.testing.assert_allclose(res["mass"][0].item(), 0.9 / (0.9 + 15 * 0.01), rtol=1e-6)
    s = summarise(res["hit"].numpy(), res["chance"].numpy(), res["mass"].numpy(), np.array([0, 0, 1]))
    assert s["n_targets"] == 3
    assert s["accuracy"] == pytest.approx(2 / 3) and s["chance"] == pytest.approx((1 + 1 + 8) / 48)
    lo, hi = s["accuracy_ci95"]
    assert 0.0 <= lo <= s["accuracy"] <= hi <= 1.0
    # ties (uniform weights) go to the lowest patch index: patch 0, outside the first box
    flat = pointing(torch.ones(1, P), inside[:1])
    assert flat["pointer"].item() == 0 and not flat["hit"].item()
    assert flat["mass"].item() == pytest.approx(flat["chance"].item())  # uniform weights: mass = chance


# -------------------------------------------------------------------------- token layout
def _ids(B, n, L, present):
    ids = torch.zeros(B, n, L, dtype=torch.long)
    for b, row in enumerate(present):
        for k, on in enumerate(row):
            if on:
                ids[b, k, :2] = 5 + k  # two words per present line
    return ids


def test_ingredient_columns_by_hand():
    title = torch.tensor([[7, 8, 0, 0], [7, 8, 9, 0]])        # title width 3 after trimming
    instrs = _ids(2, 3, 4, [[1, 0, 0], [1, 1, 0]])           # width 2
    # lines [T, F, T, F] / [T, T, F, F]: used 3 slots, longest row 2 < 3 -> packed (re-ordered)
    ingrs = _ids(2, 4, 4, [[1, 0, 1, 0], [1, 1, 0, 0]])
    cols, pad = ingredient_columns(title, ingrs, instrs)
    assert cols.tolist() == [[3, -1, 4, -1], [3, 4, -1, -1]]
    assert pad.shape == (2, 3 + 2 + 2)
    # [T, F, T] / [T, T, T]: the longest row fills the width -> no re-ordering, line 2 stays at 3 + 2
    ingrs = _ids(2, 3, 4, [[1, 0, 1], [1, 1, 1]])
    cols, _ = ingredient_columns(title, ingrs, instrs)
    assert cols.tolist() == [[3, -1, 5], [3, 4, 5]]
    # without packing every slot keeps its place
    ingrs = _ids(2, 4, 4, [[1, 0, 1, 0], [1, 1, 0, 0]])
    cols, pad = ingredient_columns(title, ingrs, instrs, pack=False)
    assert cols.tolist() == [[3, -1, 5, -1], [3, 4, -1, -1]] and pad.shape == (2, 3 + 3 + 2)


@pytest.mark.parametrize("decoder_layers", [0, 1])
def test_ingredient_columns_follow_the_real_recipe_encoder(decoder_layers):
    """The packed encoder's token at cols[b, k] equals the unpacked encoder's token of line k."""
    from malm.config import RecipeEncoderConfig
    from malm.models.recipe import RecipeEncoder

    torch.manual_seed(0)
    cfg = RecipeEncoderConfig(width=16, layers=1, heads=2, decoder_layers=decoder_layers, dropout=0.0)
    enc = RecipeEncoder(cfg, vocab_size=40).eval()
    B, I, J, L = 3, 6, 4, 5
    g = torch.Generator().manual_seed(1)
    title = torch.randint(3, 40, (B, 7), generator=g)
    title[0, 3:] = 0
    title[1, 5:] = 0
    title[:, 6] = 0
    ingrs = torch.randint(3, 40, (B, I, L), generator=g)
    ingrs[..., 3:] = 0
    ingr_present = [[1, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0]]
    ingrs *= torch.tensor(ingr_present)[..., None]
    instrs = torch.randint(3, 40, (B, J, L), generator=g)
    instrs *= torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])[..., None]
    with torch.no_grad():
        packed = enc(title, ingrs, instrs)
        enc.pack = False
        plain = enc(title, ingrs, instrs)
        enc.pack = True
    cols, pad = ingredient_columns(title, ingrs, instrs, pack=True)
    assert torch.equal(pad, packed["pad"])
    own_cols, own_pad = enc.ingredient_columns(title, ingrs, instrs)  # the encoder's own pack (True)
    assert torch.equal(own_cols, cols) and torch.equal(own_pad, pad)
    plain_cols, plain_pad = ingredient_columns(title, ingrs, instrs, pack=False)
    assert torch.equal(plain_pad, plain["pad"])
    for b in range(B):
        for k in range(I):
            assert (cols[b, k] >= 0) == bool(ingr_present[b][k])
            if cols[b, k] >= 0:
                torch.testing.assert_close(packed["tokens"][b, cols[b, k]],
                                           plain["tokens"][b, plain_cols[b, k]], atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------ end to end (tiny)
def _cfg(tiny_data, variant, **extra):
    from malm import config as C
    from malm import variants

    ov = C.parse_overrides([f"{k}={v}" for k, v in {**tiny_data, "train.threads": 1, **extra}.items()])
    return variants.resolve_from_files(variant, [SMOKE], ov)


def test_no_matching_module_is_named():
    class Baseline:  # what MALM builds when lambda_gc = lambda_lc = 0
        matching = None

    with pytest.raises(NoMatchingModule, match="'baseline' has no two-level matching module"):
        check_matching(Baseline(), "baseline")


def test_smoke_run_end_to_end(tmp_path, tiny_data):
    """1-epoch malm smoke run -> `malm grounding` -> JSON with accuracy and chance in [0, 1] + PNG."""
    from malm.cli import main
    from malm.train.trainer import train

    run_dir = tmp_path / "run"
    train(_cfg(tiny_data, "malm", **{"train.epochs": 1}), run_dir, progress=False)
    out, fig = tmp_path / "grounding.json", tmp_path / "grounding.png"
    truth = f"{tiny_data['data.root']}/synth_truth.json"
    assert main(["grounding", "--run-dir", str(run_dir), "--truth", truth, "--out", str(out),
                 "--figure", str(fig), "--quiet", "grounding.pairs=64", "grounding.examples=3"]) == 0
    res = json.loads(out.read_text())
    assert res["has_matching"] and res["variant"] == "malm" and res["split"] == "test"
    assert 0.0 <= res["accuracy"] <= 1.0 and 0.0 < res["chance"] <= 1.0
    assert res["n_targets"] >= res["n_pairs"] > 0 and res["pairs_considered"] == 64
    assert res["geometry"] == {"source_size": 40, "cache_size": 36, "crop_size": 32, "crop_offset": 2,
                               "patch_size": 8, "grid": 4}
    assert fig.stat().st_size > 0 and fig.read_bytes()[:4] == b"\x89PNG"

    # a variant without a matching module: a note in the JSON and exit 0, not a crash
    base_dir = tmp_path / "baseline"
    train(_cfg(tiny_data, "baseline", **{"train.epochs": 1}), base_dir, progress=False)
    assert main(["grounding", "--run-dir", str(base_dir), "--truth", truth, "--out", str(out),
                 "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert res["has_matching"] is False and "no two-level matching module" in res["reason"]


def test_grounding_results_are_collected_per_variant_and_seed(tmp_path):
    """`malm tables --grounding`: runs with a matching module become rows, the baseline's note is
    skipped, and the summary counts the seeds whose interval lies above chance."""
    import json

    from malm import report as results
    from malm.report import figures as plots

    def write(variant, seed, **res):
        d = tmp_path / variant / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "grounding.json").write_text(json.dumps(res))

    write("baseline", 0, has_matching=False, reason="no matching module")
    for seed, (acc, lo) in enumerate([(0.30, 0.25), (0.20, 0.09)]):
        write("malm", seed, has_matching=True, split="test", rule="centre", n_pairs=100,
              n_targets=300, accuracy=acc, chance=0.1, lift=acc / 0.1, mass_in_box=0.2,
              accuracy_ci95=[lo, acc + 0.05])
    df = results.collect_grounding(tmp_path)
    assert sorted(df["variant"]) == ["malm", "malm"] and sorted(df["seed"]) == [0, 1]
    summary = results.grounding_summary(df)
    row = summary.loc["MALM"]
    assert row["pointing accuracy"] == "0.250 ± 0.071"
    assert row["seeds with CI above chance"] == "1/2"  # seed 1's interval starts below 0.1
    assert row["chance"] == 0.1 and row["lift (x chance)"] == 2.5
    assert plots.save(plots.grounding_points(df), tmp_path / "g.png").stat().st_size > 0
    (tmp_path / "bad" / "seed0").mkdir(parents=True)
    (tmp_path / "bad" / "seed0" / "grounding.json").write_text('{"has_matching": true}')
    with pytest.raises(ValueError, match="bad/seed0/grounding.json"):
        results.collect_grounding(tmp_path)
