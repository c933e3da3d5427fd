"""The named profiles resolve as documented: params.yaml's CPU calibration never leaks into the
paper profile layered on top of it."""

from __future__ import annotations

import pytest

from conftest import REPO
from malm.variants import resolve_from_files

PARAMS, PAPER = REPO / "params.yaml", REPO / "configs" / "paper.yaml"


@pytest.mark.parametrize("variant", ["malm", "no_distill", "global_only"])
def test_paper_profile_keeps_the_papers_loss(variant):
    cfg = resolve_from_files(variant, [PARAMS, PAPER])
    base = resolve_from_files(variant, [PAPER])  # the paper profile on the package defaults
    assert cfg.loss == base.loss
    assert cfg.loss.lambda_itc == 1.0 and cfg.loss.itc_view == "masked"
    if variant != "global_only":
        assert cfg.loss.lambda_gc == cfg.loss.lambda_lc == 1.0
    assert cfg.model.distill == base.model.distill
    assert cfg.train.freeze_image_epochs == 20 and cfg.train.epochs == 120
    assert cfg.eval.rerank_k == 10


def test_variant_switches_win_over_the_profiles():
    cfg = resolve_from_files("baseline", [PARAMS, PAPER])
    assert cfg.loss.lambda_gc == cfg.loss.lambda_lc == cfg.loss.lambda_dist == 0.0
    assert cfg.model.mask.ratio == 0.0
