"""Forward/backward over every model variant (timm ``tests/test_models.py`` style) + image encoder
masking cost, inference path, pretrained loading."""

from __future__ import annotations

import copy
import math
import zipfile

import pytest

from malm.variants import registry
import torch
import torch.nn as nn

from malm.config import Config, ImageEncoderConfig, from_dict, merge
from malm.losses import MALMCriterion
from malm.models import MALM, build_model
from malm.models.image import ImageEncoder, create_vit, load_pretrained

# Tiny widths: 32 px images, patch 8 -> P = 16 patches.
TINY = {
    "model": {
        "image": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
        "recipe": {"width": 32, "heads": 2, "layers": 1, "decoder_layers": 1},
        "matching": {"width": 32, "heads": 2, "psi_layers": 1, "psi_prime_layers": 2},
        "distill": {"predictor_width": 24, "predictor_heads": 2, "predictor_layers": 1},
        "embed_dim": 16,
    },
}
VOCAB = 40

_OFF = {"lambda_gc": 0.0, "lambda_lc": 0.0, "lambda_dist": 0.0}
# (name, overlay of the Config tree). To be replaced by the registry ``malm.variants``.
# Every registered variant (baselines/ and ablations/), overlays as the registry resolves them.
VARIANTS: list[tuple[str, dict]] = [(name, dict(v.overlay)) for name, v in sorted(registry().items())]


def _deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        nested = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = _deep_merge(out[k], v) if nested else v
    return out


def variant_config(overlay: dict) -> Config:
    return from_dict(_deep_merge(TINY, overlay))


def make_batch(cfg: Config, B: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    img = cfg.model.image
    P = (img.img_size // img.patch_size) ** 2
    n_hidden = int(round(cfg.model.mask.ratio * P))
    mask = torch.zeros(B, P, dtype=torch.bool)
    for b in range(B):
        mask[b, torch.randperm(P, generator=g)[:n_hidden]] = True
    title = torch.randint(3, VOCAB, (B, 6), generator=g)
    title[:, 4:] = 0
    ingrs = torch.randint(3, VOCAB, (B, 5, 7), generator=g)
    ingrs[:, :, 5:] = 0
    ingrs[1, 2:] = 0  # absent lines
    instrs = torch.randint(3, VOCAB, (B, 4, 7), generator=g)
    instrs[0] = 0  # a recipe without instructions
    instrs[2, :, 3:] = 0
    return {"image": torch.randn(B, 3, img.img_size, img.img_size, generator=g),
            "title": title, "ingrs": ingrs, "instrs": instrs,
            "cls": torch.tensor([1, 1, 2, 0])[:B], "mask": mask}


def expected_parts(cfg: Config) -> dict:
    loss, ratio = cfg.loss, cfg.model.mask.ratio
    matching = loss.lambda_gc > 0 or loss.lambda_lc > 0 or loss.lambda_itm > 0
    distill = loss.lambda_dist > 0 and ratio > 0
    return {"matching": matching, "predictor": distill, "teacher": distill,
            "mask_token": ratio > 0 and (matching or distill),
            "recipe_projectors": loss.lambda_recipe > 0,
            "decoders": cfg.model.recipe.decoder_layers > 0}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name,overlay", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variant_forward_backward(name, overlay):
    cfg = variant_config(overlay)
    model = build_model(cfg.model, cfg.loss, VOCAB)
    model.train()
    batch = make_batch(cfg)
    out = model(batch)
    parts = expected_parts(cfg)

    # parts a variant switches off do not exist
    names = [n for n, _ in model.named_parameters()]
    for part in ("matching", "predictor", "teacher", "recipe_projectors"):
        assert (getattr(model, part) is not None) == parts[part], part
        assert any(n.startswith(part + ".") for n in names) == parts[part], part
    assert (model.image_encoder.mask_token is not None) == parts["mask_token"]
    assert (model.recipe_encoder.decoders is not None) == parts["decoders"]
    if parts["matching"]:
        assert (model.matching.itm_head is not None) == (cfg.loss.lambda_itm > 0)

    B, E, P = 4, cfg.model.embed_dim, 16
    C, D = cfg.model.image.embed_dim, cfg.model.matching.width
    # packed recipe tokens: longest title (4 words) + most ingredient lines (5) + instructions (4)
    S = 4 + 5 + 4
    assert out["img_emb"].shape == (B, E) and out["rec_emb"].shape == (B, E)
    assert torch.allclose(out["img_emb"].norm(dim=-1), torch.ones(B), atol=1e-5)
    if parts["matching"]:
        # fused pairs: the B positives + one hard negative per anchor and direction (some shared)
        U = out["pair_i_att"].shape[0]
        assert B < U <= 3 * B
        assert out["pair_i_att"].shape == (U, 1 + P, D)
        assert out["pair_attn"].shape == (U, 1 + P, S)
        assert out["pair_r_att"].shape == (U, S, D)
        assert out["cand_i2r"].shape == out["cand_r2i"].shape == (B, 2)
        assert torch.equal(out["cand_i2r"][:, 0], out["cand_r2i"][:, 0])  # one fused positive pair
        n_tokens = ((batch["title"] != 0).sum(1) + (batch["ingrs"] != 0).any(-1).sum(1)
                    + (batch["instrs"] != 0).any(-1).sum(1))
        positives = out["cand_i2r"][:, 0]
        assert torch.equal((~out["pair_rec_pad"][positives]).sum(1), n_tokens)
        # A_I rows are distributions over the non-pad recipe tokens
        assert torch.allclose(out["pair_attn"].sum(-1), torch.ones(U, 1 + P), atol=1e-5)
        pad = out["pair_rec_pad"][:, None, :].expand_as(out["pair_attn"])
        assert (out["pair_attn"].masked_select(pad) == 0).all()
        if cfg.loss.lambda_itm > 0:
            assert out["pair_itm"].shape == (U, 2)
    else:
        assert "pair_i_att" not in out
    if parts["recipe_projectors"]:
        W = cfg.model.recipe.width
        assert out["rec_components"].shape == (3, B, W) and out["rec_projected"].shape == (6, B, W)
    if parts["predictor"]:
        assert out["dist_pred"].shape == out["dist_target"].shape == (B, P, C)
        assert not out["dist_target"].requires_grad
        assert torch.equal(out["mask"], batch["mask"])
    else:
        assert "dist_pred" not in out
    for k, v in out.items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), k

    logs = MALMCriterion(cfg.loss)(out, batch, epoch=0)
    assert torch.isfinite(logs["loss"])
    logs["loss"].backward()
    missing = [n for n, p in model.student_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"{name}: no gradient for {missing}"
    if model.teacher is not None:
        assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
        assert not model.teacher.module.training


def _count_block_tokens(encoder: ImageEncoder) -> list[int]:
    seen: list[int] = []
    encoder.vit.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    return seen


def test_student_processes_only_visible_tokens():
    cfg = variant_config(dict(VARIANTS)["malm"])  # ratio 0.75 of 16 patches -> 12 hidden
    model = build_model(cfg.model, cfg.loss, VOCAB)
    student = _count_block_tokens(model.image_encoder)
    teacher = _count_block_tokens(model.teacher.module)
    model(make_batch(cfg))
    assert student == [1 + 4]
    assert teacher == [1 + 16]


def test_embed_image_equals_unmasked_path():
    cfg = variant_config(dict(VARIANTS)["malm"])
    model = build_model(cfg.model, cfg.loss, VOCAB).eval()
    batch = make_batch(cfg)
    batch["mask"] = torch.zeros_like(batch["mask"])
    with torch.no_grad():
        emb = model.embed_image(batch["image"])
        out = model(batch)
        plain = model.image_encoder.vit.forward_features(batch["image"])[:, 0]
        assert torch.allclose(emb, out["img_emb"], atol=1e-6)
        assert torch.allclose(emb, model.image_head(plain), atol=1e-6)
        assert torch.allclose(model.embed_recipe(batch), out["rec_emb"], atol=1e-6)


def test_masked_tokens_keep_visible_positions():
    """I_f: visible tokens at their own positions, mask token + pos embed at hidden ones."""
    cfg = variant_config(dict(VARIANTS)["malm"])
    enc = build_model(cfg.model, cfg.loss, VOCAB).image_encoder.eval()
    batch = make_batch(cfg)
    with torch.no_grad():
        full = enc(batch["image"], batch["mask"])
        fill = enc.mask_token + enc._patch_pos_embed()
        m = batch["mask"]
        assert torch.allclose(full[:, 1:][m], fill.expand(m.shape[0], -1, -1)[m])
        # a visible patch's token = the token from running the blocks on the visible subset
        b, p = 0, int((~m[0]).nonzero()[0])
        x = enc._embed(batch["image"][:1])
        keep = (~m[0]).nonzero().squeeze(1)
        sub = torch.cat([x[:, :1], x[:, 1:][:, keep]], 1)
        ref = enc.vit.norm(enc._blocks(sub))
        assert torch.allclose(full[b, 1 + p], ref[0, 1], atol=1e-5)


def test_pair_attention_answers_grounding():
    """``MALM.pair_attention`` = what grounding computed inline from the model's parts before (full
    image, psi's A_I of the pairs (b, b), the layout of the packed recipe tokens), with hand-checkable
    properties: [B, 1+P, S], rows sum to 1 over the recipe's non-pad tokens, the column of an
    ingredient line holds that line's token; no matching module -> ValueError."""
    from malm.models.recipe import ingredient_columns

    cfg = variant_config(dict(VARIANTS)["malm"])
    model = build_model(cfg.model, cfg.loss, VOCAB).eval()
    batch = make_batch(cfg)
    present = torch.tensor([[1, 0, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 1], [0, 1, 1, 1, 1]])
    batch["ingrs"] = batch["ingrs"] * present[..., None]  # longest row 4 < 5 slots: packed
    with torch.no_grad():
        out = model.pair_attention(batch)
        # the computation malm.eval.grounding did inline before it asked the model
        tokens, _ = model.image_encoder.forward_visible(batch["image"], None)
        rec = model.recipe_encoder(batch["title"], batch["ingrs"], batch["instrs"])
        m = model.matching
        _, inline = m.psi(m.proj_image(tokens), m.proj_recipe(rec["tokens"]), None, rec["pad"],
                          need_weights=True)
    cols, pad = ingredient_columns(batch["title"], batch["ingrs"], batch["instrs"], pack=True)
    B, P = 4, model.num_patches
    assert (model.patch_size, P) == (8, 16)
    assert out["attn"].dtype == torch.float32 and out["attn"].shape == (B, 1 + P, rec["tokens"].shape[1])
    assert torch.equal(out["attn"], inline.float())
    assert torch.equal(out["pad"], rec["pad"]) and torch.equal(out["pad"], pad)
    assert torch.equal(out["ingredient_cols"], cols) and out["ingredient_cols"].shape == (B, 5)
    assert ((out["ingredient_cols"] >= 0) == present.bool()).all()
    torch.testing.assert_close(out["attn"].sum(-1), torch.ones(B, 1 + P))
    assert (out["attn"].masked_select(out["pad"][:, None, :].expand_as(out["attn"])) == 0).all()
    # row 3 lacks line 0: packed, its lines 1..4 take the first 4 ingredient columns after the title
    lt = out["ingredient_cols"][0, 0].item()  # row 0's line 0 sits right after the title words
    assert out["ingredient_cols"][3].tolist() == [-1, lt, lt + 1, lt + 2, lt + 3]

    base = build_model(variant_config(dict(VARIANTS)["baseline"]).model,
                       variant_config(dict(VARIANTS)["baseline"]).loss, VOCAB).eval()
    with pytest.raises(ValueError, match="no two-level matching module"):
        base.pair_attention(batch)


def test_frozen_image_encoder_and_param_groups():
    cfg = variant_config(dict(VARIANTS)["malm"])
    model = build_model(cfg.model, cfg.loss, VOCAB)
    model.set_image_trainable(False)
    batch = make_batch(cfg)
    MALMCriterion(cfg.loss)(model(batch), batch)["loss"].backward()
    assert all(p.grad is None for p in model.image_encoder.vit.parameters())
    assert model.image_encoder.mask_token.grad is not None
    groups = model.param_groups(lr=1e-5, lr_image=1e-6, weight_decay=0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.student_parameters()))
    vit_ids = {id(p) for p in model.image_encoder.vit.parameters()}
    for g in groups:
        assert (g["lr"] == 1e-6) == g["name"].startswith("image")
        assert all((id(p) in vit_ids) == g["name"].startswith("image") for p in g["params"])
    assert not ({id(p) for p in model.teacher.parameters()} & set(ids))
    # the word embedding is its own group, at its own rate when one is given
    groups = model.param_groups(lr=1e-5, lr_image=1e-6, lr_word_embedding=1e-4)
    word = [g for g in groups if g["name"].startswith("word_embedding")]
    assert len(word) == 1 and word[0]["lr"] == 1e-4
    assert [id(p) for p in word[0]["params"]] == [id(model.recipe_encoder.embedding.weight)]
    assert all(g["lr"] == 1e-5 for g in model.param_groups(lr=1e-5, lr_image=1e-6)
               if g["name"].startswith("word_embedding"))


def test_update_teacher_and_train_mode():
    cfg = variant_config(dict(VARIANTS)["malm"])
    model = build_model(cfg.model, cfg.loss, VOCAB)
    model.train()
    assert not model.teacher.module.training
    with torch.no_grad():
        for p in model.image_encoder.parameters():
            p.add_(1.0)
    t0 = [p.clone() for p in model.teacher.parameters()]
    model.update_teacher(0.9)
    for t, before, s in zip(model.teacher.parameters(), t0, model.image_encoder.parameters()):
        assert torch.allclose(t, 0.9 * before + 0.1 * s)


# ------------------------------------------------------------------------------- weights
def _tiny_image_cfg(**kw) -> ImageEncoderConfig:
    return merge(ImageEncoderConfig(), {**TINY["model"]["image"], **kw})


def _to_openai(state: dict) -> dict:
    """timm CLIP ViT state dict -> OpenAI CLIP ``visual.*`` layout (inverse of timm's converter)."""
    out = {}
    for k, v in state.items():
        if k == "cls_token":
            k, v = "class_embedding", v[0, 0]
        elif k == "pos_embed":
            k, v = "positional_embedding", v[0]
        else:
            for a, b in (("patch_embed.proj", "conv1"), ("norm_pre", "ln_pre"),
                         ("blocks.", "transformer.resblocks."), ("norm1", "ln_1"),
                         ("norm2", "ln_2"), ("attn.qkv.", "attn.in_proj_"),
                         ("attn.proj", "attn.out_proj"), ("mlp.fc1", "mlp.c_fc"),
                         ("mlp.fc2", "mlp.c_proj")):
                k = k.replace(a, b)
            if k.startswith("norm."):
                k = k.replace("norm.", "ln_post.")
        out["visual." + k] = v
    out["visual.proj"] = torch.randn(state["pos_embed"].shape[-1], 8)  # CLIP's projection: dropped
    return out


def _assert_same(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "openai", "openai_jit"])
def test_load_pretrained_formats(tmp_path, fmt):
    src = create_vit(_tiny_image_cfg())
    state = src.state_dict()
    path = tmp_path / f"w.{'safetensors' if fmt == 'safetensors' else 'pt'}"
    if fmt == "pt":
        torch.save({"state_dict": state}, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "openai":
        torch.save(_to_openai(state), path)
    else:  # a TorchScript archive holding visual.* parameters, like OpenAI's released files
        torch.jit.save(torch.jit.script(_ParamTree(_to_openai(state))), str(path))
        with zipfile.ZipFile(path) as zf:
            assert any(n.endswith("constants.pkl") for n in zf.namelist())
    enc = ImageEncoder(_tiny_image_cfg(pretrained=str(path), allow_random_init=False))
    _assert_same(enc.vit, src)


class _ParamTree(nn.Module):
    """Nested modules holding a flat state dict (to script a fake OpenAI JIT file)."""

    def __init__(self, state: dict | None = None):
        super().__init__()
        for k, v in (state or {}).items():
            *path, leaf = k.split(".")
            mod = self
            for part in path:
                if not hasattr(mod, part):
                    mod.add_module(part, _ParamTree())
                mod = getattr(mod, part)
            mod.register_parameter(leaf, nn.Parameter(v.clone()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_load_pretrained_from_malm_checkpoint(tmp_path):
    cfg = variant_config(dict(VARIANTS)["malm"])
    model = build_model(cfg.model, cfg.loss, VOCAB)
    torch.save({"model": model.state_dict()}, tmp_path / "ckpt.pt")
    enc = ImageEncoder(_tiny_image_cfg(pretrained=str(tmp_path / "ckpt.pt")))
    _assert_same(enc.vit, model.image_encoder.vit)


def test_load_pretrained_resizes_pos_embed(tmp_path):
    src = create_vit(_tiny_image_cfg())  # 32 px -> 4x4 grid
    torch.save(src.state_dict(), tmp_path / "w.pth")
    enc = ImageEncoder(_tiny_image_cfg(img_size=48, pretrained=str(tmp_path / "w.pth"),
                                       allow_random_init=False))
    assert enc.vit.pos_embed.shape == (1, 1 + 36, 32)
    assert torch.equal(enc.vit.pos_embed[:, 0], src.pos_embed[:, 0])  # CLS position kept
    assert torch.equal(enc.vit.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)


def test_load_pretrained_errors(tmp_path, caplog):
    vit = create_vit(_tiny_image_cfg())
    with pytest.raises(ValueError, match="model.image.pretrained"):
        load_pretrained(vit, None, allow_random_init=False)
    with caplog.at_level("WARNING"):
        assert load_pretrained(vit, None, allow_random_init=True) == "random"
    assert "random init" in caplog.text
    with pytest.raises(FileNotFoundError, match="model.image.pretrained"):
        load_pretrained(vit, str(tmp_path / "missing.pt"))
    with pytest.raises(RuntimeError, match="model.image.pretrained"):
        load_pretrained(vit, "vit_tiny_patch16_224.no_such_tag")
    other = create_vit(_tiny_image_cfg(embed_dim=48))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises((ValueError, RuntimeError)):
        load_pretrained(vit, str(tmp_path / "other.pt"))


def test_recipe_packing_is_exact():
    """Packing / trimming the recipe tokens only removes work on padding."""
    from malm.models.recipe import RecipeEncoder

    cfg = variant_config({})
    enc = RecipeEncoder(cfg.model.recipe, VOCAB).eval()
    ref = RecipeEncoder(cfg.model.recipe, VOCAB, pack=False).eval()
    ref.load_state_dict(enc.state_dict())
    batch = make_batch(cfg)
    batch["ingrs"][0, 4] = 0  # absent lines anywhere: at most 4 of the 5 slots are used per row
    batch["ingrs"][2, 0] = 0
    batch["ingrs"][3, 1] = 0
    long_title = torch.cat([batch["title"], torch.zeros(4, 5, dtype=torch.long)], 1)
    with torch.no_grad():
        a = enc(batch["title"], batch["ingrs"], batch["instrs"])
        b = ref(batch["title"], batch["ingrs"], batch["instrs"])
        c = enc(long_title, batch["ingrs"], batch["instrs"])  # trailing pad columns trimmed
    assert torch.allclose(a["pooled"], b["pooled"], atol=1e-5)
    assert torch.allclose(a["pooled"], c["pooled"], atol=1e-5)
    assert a["tokens"].shape[1] < b["tokens"].shape[1]
    # same non-pad token set per row
    for r in range(4):
        ta, tb = a["tokens"][r][~a["pad"][r]], b["tokens"][r][~b["pad"][r]]
        assert ta.shape == tb.shape
        assert torch.allclose(ta.sort(0).values, tb.sort(0).values, atol=1e-5)


def test_length_buckets_are_exact_and_reach_every_parameter():
    """Grouping lines by length (model.recipe.length_buckets) changes the work, not the output."""
    import copy

    from malm.models.recipe import RecipeEncoder

    cfg = variant_config({})
    cfg_one = copy.deepcopy(cfg.model.recipe)
    cfg_one.length_buckets = 1
    g = torch.Generator().manual_seed(0)
    B, N, L = 6, 7, 12
    lengths = torch.randint(0, L + 1, (B, N, 1), generator=g)  # 0 = absent line
    ingrs = torch.randint(3, VOCAB, (B, N, L), generator=g) * (torch.arange(L) < lengths)
    instrs = torch.randint(3, VOCAB, (B, N, L), generator=g) * (torch.arange(L) < lengths.flip(0))
    title = torch.randint(3, VOCAB, (B, 5), generator=g)
    for k in (2, 3, 50):
        cfg_k = copy.deepcopy(cfg.model.recipe)
        cfg_k.length_buckets = k
        enc = RecipeEncoder(cfg_k, VOCAB).eval()
        ref = RecipeEncoder(cfg_one, VOCAB).eval()
        ref.load_state_dict(enc.state_dict())
        a, b = enc(title, ingrs, instrs), ref(title, ingrs, instrs)
        assert torch.allclose(a["pooled"], b["pooled"], atol=1e-5), k
        assert torch.equal(a["pad"], b["pad"])
        assert torch.allclose(a["tokens"], b["tokens"], atol=1e-5)
        a["pooled"].sum().backward()
        b["pooled"].sum().backward()
        for (name, p), q in zip(enc.named_parameters(), ref.parameters()):
            if q.grad is not None:
                assert torch.allclose(p.grad, q.grad, atol=1e-4), (k, name)


def test_robust_to_all_pad_fields():
    cfg = variant_config(dict(VARIANTS)["malm"])
    model = build_model(cfg.model, cfg.loss, VOCAB)
    batch = make_batch(cfg)
    batch["ingrs"][:] = 0
    batch["instrs"][:] = 0
    batch["title"][3] = 0
    out = model(batch)
    assert all(torch.isfinite(v).all() for v in out.values() if v.is_floating_point())
    assert math.isfinite(float(MALMCriterion(cfg.loss)(out, batch)["loss"]))


def test_model_type():
    cfg = variant_config({})
    assert isinstance(build_model(cfg.model, cfg.loss, VOCAB), MALM)


# ------------------------------------------------------------------ training details (issue: faithful training)
def test_itc_full_view_embeds_the_whole_image_and_trains_the_encoder():
    masked = variant_config({})
    full = variant_config({"loss": {"itc_view": "full"}})
    torch.manual_seed(0)
    m_masked = build_model(masked.model, masked.loss, VOCAB)
    torch.manual_seed(0)
    m_full = build_model(full.model, full.loss, VOCAB)
    batch = make_batch(masked)
    out_m, out_f = m_masked(batch), m_full(batch)
    with torch.no_grad():  # the full view's L_itc embedding is exactly the evaluation embedding
        assert torch.allclose(out_f["img_emb"], m_full.embed_image(batch["image"]), atol=1e-6)
        assert not torch.allclose(out_m["img_emb"], out_f["img_emb"], atol=1e-4)
    logs = MALMCriterion(full.loss)(out_f, batch)
    logs["itc_loss"].backward()
    assert m_full.image_encoder.vit.patch_embed.proj.weight.grad.abs().sum() > 0


def test_heads_and_losses_stay_fp32_under_bf16_autocast():
    cfg = variant_config({})
    model = build_model(cfg.model, cfg.loss, VOCAB)
    batch = make_batch(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        logs = MALMCriterion(cfg.loss)(out, batch)
    assert out["img_emb"].dtype == out["rec_emb"].dtype == torch.float32
    for k in ("itc_loss", "gc_loss", "lc_loss", "dist_loss", "loss"):
        assert logs[k].dtype == torch.float32, k


def test_temperature_is_clamped_on_the_parameter_and_keeps_its_gradient():
    cfg = variant_config({})
    model = build_model(cfg.model, cfg.loss, VOCAB)
    cap = math.log(100.0)
    with torch.no_grad():
        model.matching.logit_scale_gc.fill_(cap + 1.0)  # as if an optimiser step overshot
    model.clamp_logit_scales()
    assert model.matching.logit_scale_gc.item() == pytest.approx(cap)
    batch = make_batch(cfg)
    logs = MALMCriterion(cfg.loss)(model(batch), batch)
    logs["gc_loss"].backward()
    # at the cap the gradient still flows (a clamp on exp(scale) in forward would zero it)
    assert model.matching.logit_scale_gc.grad is not None and model.matching.logit_scale_gc.grad != 0


def test_null_default_fields_are_type_checked():
    """Fields whose default is null still parse their type: YAML reads 1e-2 as a string."""
    from malm import config as C

    cfg = C.merge(C.Config(), C.parse_overrides(["train.lr_word_embedding=1e-2", "slurm.partition=123"]))
    assert cfg.train.lr_word_embedding == 0.01 and cfg.slurm.partition == "123"
    for bad in ("slurm.signal_delay_s=abc", "train.lr_word_embedding=fast", "model.image.pretrained=[1]"):
        with pytest.raises(C.ConfigError, match=bad.split("=")[0]):
            C.merge(C.Config(), C.parse_overrides([bad]))


def test_list_and_dict_fields_are_type_checked():
    """eval.bags=5 or data.max_pairs=[1,2] used to pass the merge and fail deep inside a stage."""
    from malm import config as C

    cfg = C.merge(C.Config(), C.parse_overrides(
        ["eval.bags=[[100,2],[50,1.0]]", "eval.protocols=[ht,tfood]", "data.max_pairs={train: 64}"]))
    assert cfg.eval.bags == [[100, 2], [50, 1]] and cfg.data.max_pairs == {"train": 64}
    for bad in ("eval.bags=5", "eval.bags=[[100]]", "eval.bags=[[100,x]]", "eval.protocols=tfood",
                "eval.protocols=[tfod]", "data.max_pairs=[1,2]", "data.max_pairs={trian: 5}",
                "data.max_pairs={train: many}"):
        with pytest.raises(C.ConfigError, match=bad.split("=")[0]):
            C.merge(C.Config(), C.parse_overrides([bad]))
