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


def test_the_peers_get_their_published_settings_in_the_paper_profile():
    """T-Food's ITM weight and H-T's training (configs/paper.yaml variant_overrides) win over
    params.yaml's CPU choices; on the CPU default the peers share every training setting."""
    tfood = resolve_from_files("tfood", [PARAMS, PAPER])
    assert tfood.loss.lambda_itm == 1.0 and tfood.loss.lambda_gc == tfood.loss.lambda_lc == 0.0
    assert tfood.model.matching.psi_prime_layers == 4 and tfood.model.recipe.decoder_layers == 2
    ht = resolve_from_files("ht", [PARAMS, PAPER])
    assert (ht.loss.retrieval, ht.loss.ht_margin, ht.loss.lambda_recipe) == ("ht", 0.3, 1.0)
    assert ht.model.recipe.decoder_layers == 0 and not ht.model.recipe.norm_first
    assert ht.model.recipe.activation == "relu" and ht.model.recipe.width == 512
    assert (ht.train.lr, ht.train.lr_image, ht.train.batch_size, ht.train.epochs) == (1e-4, 1e-4, 128, 100)
    assert (ht.train.lr_schedule, ht.train.lr_step_epochs, ht.train.lr_step_gamma) == ("step", 30, 0.1)
    assert ht.train.freeze_image_epochs == 0 and ht.train.grad_clip == 0.0
    cpu_ht, cpu_base = resolve_from_files("ht", [PARAMS]), resolve_from_files("baseline", [PARAMS])
    assert cpu_ht.train == cpu_base.train and cpu_ht.model.image == cpu_base.model.image
    assert resolve_from_files("tfood", [PARAMS]).train == cpu_base.train
