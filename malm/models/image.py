"""CLIP ViT image encoder: a thin wrapper of timm's VisionTransformer with MAE-style masking.

Spec "Mask augmentation": the student sees only the visible patches (gathered after the patch and
position embeddings; CLS kept), so its blocks cost ~ (1 - r) of a full forward. The hidden positions
are then filled with one learnable mask token plus their position embedding, giving the full token
set I_f [B, 1+P, C].
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from malm.config import ImageEncoderConfig
from malm.models.ops import gather_tokens, scatter_tokens, visible_indices

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar")


def create_vit(cfg: ImageEncoderConfig) -> VisionTransformer:
    """timm ViT with the config's widths, no classifier head (num_classes=0)."""
    vit = timm.create_model(
        cfg.arch, pretrained=False, img_size=cfg.img_size, patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, num_classes=0,
        drop_path_rate=cfg.drop_path_rate,
    )
    if not isinstance(vit, VisionTransformer):
        raise ValueError(f"model.image.arch={cfg.arch!r} is not a timm VisionTransformer")
    return vit


class ImageEncoder(nn.Module):
    """timm ViT returning CLS + patch tokens, with optional MAE-style patch masking.

    ``forward(images, mask)`` -> I_f [B, 1+P, C] (final-norm tokens; hidden positions = mask token
    + position embedding). ``mask_token`` exists only when the owner needs the full token set of a
    masked image (a part that consumes patch tokens is built).
    """

    def __init__(self, cfg: ImageEncoderConfig, *, with_mask_token: bool = False,
                 load_weights: bool = True):
        super().__init__()
        self.vit = create_vit(cfg)
        if self.vit.num_prefix_tokens != 1 or self.vit.cls_token is None:
            raise ValueError("the image encoder expects a ViT with exactly one CLS prefix token")
        if getattr(self.vit, "dynamic_img_size", False):
            raise ValueError("dynamic_img_size ViTs are not supported")
        self.embed_dim: int = self.vit.embed_dim
        self.num_patches: int = self.vit.patch_embed.num_patches
        if with_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        else:
            self.mask_token = None
        if load_weights:
            load_pretrained(self.vit, cfg.pretrained, allow_random_init=cfg.allow_random_init)

    # ------------------------------------------------------------------ pieces
    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] -> tokens with position embeddings [B, 1+P, C]"""
        return self.vit._pos_embed(self.vit.patch_embed(images))

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> last block output [B, N, C] (before the final norm)"""
        return self.vit.blocks(self.vit.norm_pre(self.vit.patch_drop(x)))

    def _patch_pos_embed(self) -> torch.Tensor:
        """Position embedding of the patch positions: [1, P, C]."""
        pos = self.vit.pos_embed
        return pos if self.vit.no_embed_class else pos[:, self.vit.num_prefix_tokens:]

    @staticmethod
    def num_visible(mask: torch.Tensor) -> int:
        """Visible patches per row of ``mask`` [B, P] (one host sync); rows must agree."""
        hidden = mask.sum(dim=1)
        lo, hi = torch.aminmax(hidden)
        lo, hi = int(lo), int(hi)
        if lo != hi:
            raise ValueError("every mask row must hide the same number of patches "
                             f"(got {lo}..{hi})")
        return mask.shape[1] - hi

    # ------------------------------------------------------------------ forward
    def forward_visible(self, images: torch.Tensor, mask: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the blocks on CLS + visible patches only.

        images: [B, 3, H, W], mask: [B, P] bool (True = hidden) or None
        -> tokens [B, 1+V, C] after the final norm, ids_keep [B, V] (None when nothing is hidden)
        """
        x = self._embed(images)
        ids_keep = None
        if mask is not None:
            if mask.shape != (x.shape[0], self.num_patches):
                raise ValueError(f"mask shape {tuple(mask.shape)} != (B, P)=({x.shape[0]}, "
                                 f"{self.num_patches})")
            n_vis = self.num_visible(mask)
            if n_vis < self.num_patches:
                ids_keep = visible_indices(mask, n_vis)  # [B, V]
                x = torch.cat([x[:, :1], gather_tokens(x[:, 1:], ids_keep)], dim=1)
        return self.vit.norm(self._blocks(x)), ids_keep

    def fill(self, tokens: torch.Tensor, ids_keep: torch.Tensor | None) -> torch.Tensor:
        """Full token set I_f from the visible tokens: hidden positions = mask token + pos embed.

        tokens: [B, 1+V, C], ids_keep: [B, V] -> [B, 1+P, C]
        """
        if ids_keep is None:
            return tokens
        if self.mask_token is None:
            raise RuntimeError("this image encoder was built without a mask token")
        B = tokens.shape[0]
        base = (self.mask_token + self._patch_pos_embed()).to(tokens.dtype).expand(B, -1, -1)
        patches = scatter_tokens(base, ids_keep, tokens[:, 1:])
        return torch.cat([tokens[:, :1], patches], dim=1)

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, 3, H, W], mask [B, P] bool or None -> I_f [B, 1+P, C]"""
        tokens, ids_keep = self.forward_visible(images, mask)
        return self.fill(tokens, ids_keep)

    def target_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Distillation targets: last-block tokens of the full image, layer-normed without affine.

        images [B, 3, H, W] -> [B, 1+P, C]
        """
        x = self._blocks(self._embed(images))
        return F.layer_norm(x, x.shape[-1:])


# -------------------------------------------------------------------------- weights
def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            is_jit = any(n.endswith("constants.pkl") for n in zf.namelist())
        if is_jit:  # OpenAI's released CLIP files are TorchScript archives
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept our own checkpoints (a MALM / ImageEncoder state dict: the student's
    ``image_encoder.vit.*`` / ``vit.*`` keys are taken) as well as plain timm ones."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    for prefix in ("image_encoder.vit.", "vit."):
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_pretrained(vit: VisionTransformer, spec: str | None, *, allow_random_init: bool = False
                    ) -> str:
    """Load weights into ``vit`` from ``model.image.pretrained``; returns what was loaded.

    ``spec``: a local file (timm / safetensors state dict, or an OpenAI CLIP checkpoint: JIT
    archive or state dict with ``visual.*`` keys, converted by timm's ``checkpoint_filter_fn`` which
    also resamples the position embedding to this model's grid), or a timm hub name such as
    ``vit_base_patch16_clip_224.openai`` (needs network or the HF cache). None -> random init if
    ``allow_random_init`` else a ValueError naming the field.
    """
    if not spec:
        if not allow_random_init:
            raise ValueError("model.image.pretrained is not set and model.image.allow_random_init "
                             "is false: give a local CLIP/timm weight file (or a hub name when "
                             "online), or set model.image.allow_random_init=true")
        log.warning("image encoder: no pretrained weights (model.image.pretrained is null); "
                    "starting from random init")
        return "random"
    path = Path(os.path.expanduser(spec))
    if path.is_file():
        state = checkpoint_filter_fn(_strip_prefix(_read_state_dict(path)), vit)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}  # num_classes=0
        missing, unexpected = vit.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"model.image.pretrained={spec}: weights do not fit the "
                             f"{type(vit).__name__} built from model.image (missing: "
                             f"{list(missing)[:8]}, unexpected: {list(unexpected)[:8]})")
        log.info("image encoder: loaded %s", path)
        return str(path)
    if path.suffix in _WEIGHT_SUFFIXES or os.sep in spec:
        raise FileNotFoundError(f"model.image.pretrained={spec}: no such file")
    try:  # a timm hub name
        hub = timm.create_model(spec, pretrained=True, num_classes=0,
                                img_size=vit.patch_embed.img_size)
    except Exception as exc:  # noqa: BLE001 - offline, unknown name, HF errors: one clear message
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        why = f"{'HF_HUB_OFFLINE=1; ' if offline else ''}{type(exc).__name__}: {exc}"
        raise RuntimeError(f"model.image.pretrained={spec}: could not get hub weights ({why}). "
                           "Point the field at a local weight file instead.") from exc
    vit.load_state_dict(hub.state_dict())
    log.info("image encoder: loaded hub weights %s", spec)
    return spec
