"""MALM assembled from the typed config (spec "Model" .. "Masked self-distillation").

The model returns features only; the losses (``malm.losses``) turn them into named terms. Parts
whose loss weight is 0 are not built: no matching module when lambda_gc == lambda_lc == 0, no
predictor / teacher when lambda_dist == 0 or mask.ratio == 0, no mask token when nothing consumes
the patch tokens of a masked image.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn

from malm.config import LossConfig, ModelConfig
from malm.models.ema import EMATeacher
from malm.models.heads import EmbeddingHead
from malm.models.image import ImageEncoder
from malm.models.matching import TwoLevelMatching
from malm.models.predictor import Predictor
from malm.models.recipe import COMPONENT_PAIRS, RecipeEncoder

_NO_DECAY = ("pos_embed", "cls_token", "mask_token", "logit_scale", "pos.weight", "embedding.")


class ComponentProjectors(nn.Module):
    """H-T's ``projector_recipes``: for every ordered pair of recipe components (a, b), a linear map
    of a's embedding into b's space (H-T src/models.py ``JointEmbedding``).

    pooled [B, 3W] (the title / ingredient / instruction means, ``RecipeEncoder``) -> dict
      rec_components [3, B, W]  the three component embeddings
      rec_projected  [6, B, W]  component a mapped into b's space, for (a, b) in
                                ``malm.models.recipe.COMPONENT_PAIRS`` order
    """

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.maps = nn.ModuleList(nn.Linear(width, width) for _ in COMPONENT_PAIRS)

    def forward(self, pooled: torch.Tensor) -> dict:
        comps = pooled.view(pooled.shape[0], 3, self.width).transpose(0, 1)  # [3, B, W]
        proj = torch.stack([fc(comps[a]) for (a, _), fc in zip(COMPONENT_PAIRS, self.maps)])
        return {"rec_components": comps, "rec_projected": proj}


class MALM(nn.Module):
    """CLIP-ViT image encoder + T-Food recipe encoder (+ matching module, predictor, EMA teacher).

    ``forward(batch, generator=None) -> dict`` (training features; batch keys: image, title, ingrs,
    instrs, mask; ``generator`` draws the matching module's hard negatives):
      img_emb [B, E], rec_emb [B, E]               fp32 unit vectors; the image side from the masked
                                                   student when masking is on and loss.itc_view is
                                                   masked, from an extra full-image forward when full
      with matching:  the fused candidate pairs (``TwoLevelMatching``: pair_i_att, pair_attn,
                      pair_r_att, pair_rec_pad, cand_i2r/r2i, target_i2r/r2i, logit_scale_*)
      with distill:   dist_pred [B, P, C], dist_target [B, P, C] (no grad), mask [B, P]
      with T-Food's ITM (loss.lambda_itm): pair_itm [U, 2], the fused pairs' match logits
      with H-T's recipe loss (loss.lambda_recipe): rec_components, rec_projected
                      (``ComponentProjectors``)

    The baselines of Table 1 are this class with parts switched off or on: ``baseline`` (T-Food
    without ITM) has none of the optional parts, ``tfood`` the matching module with an ITM head and
    no L_GC / L_LC, ``ht`` no cross-component decoder and the component projectors.
    """

    def __init__(self, cfg: ModelConfig, loss: LossConfig, vocab_size: int):
        super().__init__()
        self.use_mask = cfg.mask.ratio > 0
        self.use_matching = loss.lambda_gc > 0 or loss.lambda_lc > 0 or loss.lambda_itm > 0
        self.use_distill = loss.lambda_dist > 0 and self.use_mask
        needs_patch_tokens = self.use_matching or self.use_distill
        self.image_encoder = ImageEncoder(cfg.image,
                                          with_mask_token=self.use_mask and needs_patch_tokens)
        self.recipe_encoder = RecipeEncoder(cfg.recipe, vocab_size)
        C = self.image_encoder.embed_dim
        self.image_head = EmbeddingHead(C, cfg.embed_dim)
        self.recipe_head = EmbeddingHead(self.recipe_encoder.out_dim, cfg.embed_dim)
        self.matching = (TwoLevelMatching(cfg.matching, C, cfg.recipe.width,
                                          global_loss=loss.lambda_gc > 0,
                                          local_loss=loss.lambda_lc > 0,
                                          itm=loss.lambda_itm > 0)
                         if self.use_matching else None)
        # H-T's self-supervised recipe loss: component a's embedding mapped into component b's space
        self.recipe_projectors = (ComponentProjectors(cfg.recipe.width)
                                  if loss.lambda_recipe > 0 else None)
        self.predictor = Predictor(cfg.distill, C) if self.use_distill else None
        # the teacher copies the (already weight-loaded) student; it is frozen and never trained
        self.teacher = EMATeacher(self.image_encoder) if self.use_distill else None
        self.needs_patch_tokens = needs_patch_tokens
        self.itc_full_view = loss.itc_view == "full" and self.use_mask
        self.image_trainable = True

    # ------------------------------------------------------------------ training forward
    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        images = batch["image"]
        mask = batch.get("mask") if self.use_mask else None
        grad_image = torch.is_grad_enabled() and self.image_trainable
        with torch.set_grad_enabled(grad_image):
            tokens, ids_keep = self.image_encoder.forward_visible(images, mask)
        if self.itc_full_view:  # loss.itc_view=full: L_itc sees the whole image (one more forward)
            with torch.set_grad_enabled(grad_image):
                full_view, _ = self.image_encoder.forward_visible(images, None)
            out = {"img_emb": self.image_head(full_view[:, 0])}
        else:
            out = {"img_emb": self.image_head(tokens[:, 0])}
        rec = self.recipe_encoder(batch["title"], batch["ingrs"], batch["instrs"])
        out["rec_emb"] = self.recipe_head(rec["pooled"])
        if self.recipe_projectors is not None:
            out.update(self.recipe_projectors(rec["pooled"]))
        if not self.needs_patch_tokens:
            return out
        full = self.image_encoder.fill(tokens, ids_keep)  # I_f [B, 1+P, C]
        if self.matching is not None:
            # bound to a name first: updating `out` from a temporary that crosses a torch.compile
            # graph break recompiled the rest of forward on every step
            matched = self.matching(full, rec["tokens"], rec["pad"], out["img_emb"], out["rec_emb"],
                                    generator)
            out.update(matched)
        if self.predictor is not None:
            out["dist_pred"] = self.predictor(full)[:, 1:]
            out["dist_target"] = self.teacher_targets(images)
            out["mask"] = (mask if mask is not None
                           else torch.zeros(images.shape[0], self.image_encoder.num_patches,
                                            dtype=torch.bool, device=images.device))
        return out

    @torch.no_grad()
    def teacher_targets(self, images: torch.Tensor) -> torch.Tensor:
        """EMA teacher on the full image: layer-normed last-layer patch tokens [B, P, C]."""
        return self.teacher.module.target_tokens(images)[:, 1:]

    # ------------------------------------------------------------------ inference
    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        """Full image, no mask: images [B, 3, H, W] -> [B, E]"""
        tokens, _ = self.image_encoder.forward_visible(images, None)
        return self.image_head(tokens[:, 0])

    def embed_recipe(self, batch: dict) -> torch.Tensor:
        """batch with title / ingrs / instrs -> [B, E]"""
        rec = self.recipe_encoder(batch["title"], batch["ingrs"], batch["instrs"])
        return self.recipe_head(rec["pooled"])

    @property
    def patch_size(self) -> int:
        """Side in pixels of the image encoder's square patches."""
        p = self.image_encoder.vit.patch_embed.patch_size
        return int(p[0] if isinstance(p, (tuple, list)) else p)

    @property
    def num_patches(self) -> int:
        """P: patches of the image encoder's input (a square grid of ``sqrt(P)`` per side)."""
        return self.image_encoder.num_patches

    def pair_attention(self, batch: dict) -> dict:
        """The matching module's image-patch <-> recipe-token attention of the aligned pairs of
        ``batch``: image b with recipe b, on the full image (no mask), no candidate sampling. Ask
        for a pair (image i, recipe j) by putting both in one row. Grounding reads this
        (``malm.eval.grounding``); call it in ``eval()`` and under ``torch.no_grad()`` there.

        batch: image [B, 3, H, W], title [B, Lt], ingrs [B, I, L], instrs [B, J, L] (0 = pad)
        -> dict
          attn [B, 1+P, S] float32   A_I (``TwoLevelMatching.pair_attention``): psi's last-layer,
                                     head-averaged cross-attention; row 0 = the image CLS token,
                                     row 1 + p = patch p (row-major: grid row p // sqrt(P), column
                                     p % sqrt(P), ``patch_size`` px squares); each row sums to 1
                                     over the recipe's non-pad tokens
          pad [B, S] bool            the recipe tokens' pad mask (True = pad; such columns get 0)
          ingredient_cols [B, I] long  the column of ingredient line k of row b, -1 when the line is
                                     absent (``RecipeEncoder.ingredient_columns``)
        Raises ValueError without a matching module (loss.lambda_gc = loss.lambda_lc = loss.lambda_itm = 0).
        """
        if self.matching is None:
            raise ValueError("this model has no two-level matching module (loss.lambda_gc = "
                             "loss.lambda_lc = 0), so no pair attention")
        title, ingrs, instrs = batch["title"], batch["ingrs"], batch["instrs"]
        tokens, _ = self.image_encoder.forward_visible(batch["image"], None)
        rec = self.recipe_encoder(title, ingrs, instrs)
        attn = self.matching.pair_attention(tokens, rec["tokens"], rec["pad"])
        cols, pad = self.recipe_encoder.ingredient_columns(title, ingrs, instrs)
        if pad.shape != rec["pad"].shape or not torch.equal(pad, rec["pad"]):
            raise RuntimeError("RecipeEncoder.ingredient_columns no longer matches the encoder's token "
                               "layout (pad masks differ); update malm.models.recipe.ingredient_columns")
        return {"attn": attn.float(), "pad": rec["pad"], "ingredient_cols": cols}

    # ------------------------------------------------------------------ training helpers
    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA step of the teacher towards the student image encoder (explicit, not in forward)."""
        if self.teacher is not None:
            self.teacher.update(self.image_encoder, momentum)

    def clamp_logit_scales(self) -> None:
        """After each optimiser step: keep the learnable temperatures in CLIP's range."""
        if self.matching is not None:
            self.matching.clamp_logit_scales()

    def set_image_trainable(self, trainable: bool) -> None:
        """Freeze / unfreeze the ViT backbone (paper: frozen for the first 20 epochs). The mask
        token is new (not CLIP) and stays trainable. Frozen, the ViT runs without autograd."""
        self.image_trainable = bool(trainable)
        self.image_encoder.vit.requires_grad_(self.image_trainable)

    def student_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Named parameters the optimizer owns (everything but the EMA teacher)."""
        for name, p in self.named_parameters():
            if not name.startswith("teacher."):
                yield name, p

    def param_groups(self, lr: float, lr_image: float, weight_decay: float = 0.0,
                     lr_word_embedding: float | None = None) -> list[dict]:
        """Adam groups: the ViT backbone at ``lr_image`` (paper 1e-6), the recipe encoder's word
        embedding at ``lr_word_embedding`` (None = ``lr``), the rest at ``lr`` (1e-5); no weight
        decay on biases, norms, embeddings, tokens and logit scales. Frozen backbone parameters are
        included so unfreezing needs no new optimizer."""
        groups: dict[tuple[str, bool], list] = {}
        for name, p in self.student_parameters():
            part = ("image" if name.startswith("image_encoder.vit.")
                    else "word_embedding" if name.startswith("recipe_encoder.embedding.") else "rest")
            decay = p.ndim >= 2 and not any(k in name for k in _NO_DECAY)
            groups.setdefault((part, decay), []).append(p)
        lrs = {"image": lr_image, "rest": lr,
               "word_embedding": lr if lr_word_embedding is None else lr_word_embedding}
        out = []
        for (part, decay), params in sorted(groups.items()):
            out.append({"name": f"{part}{'' if decay else '_no_decay'}", "params": params,
                        "lr": lrs[part], "weight_decay": weight_decay if decay else 0.0})
        return out


def build_model(cfg: ModelConfig, loss: LossConfig, vocab_size: int) -> MALM:
    return MALM(cfg, loss, vocab_size)
