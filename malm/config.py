"""One typed configuration tree for the CLI, ``params.yaml`` (DVC) and the Slurm launcher.

Every field carries a ``help`` string: ``malm train --help`` lists them all. Variants (baselines,
ablations) are YAML overlays of this tree, never copies of code. Where the MALM paper is silent the
default follows T-Food / H-T and the field's help says so (see ``shared/spec/malm.md``).

Overrides are dotted ``key=value`` strings (``train.epochs=3 model.mask.ratio=0.5``); values are
parsed as YAML, so ``null``, numbers and lists work. Every command takes them the same way:
``--config FILE`` (repeatable) then ``KEY=VALUE`` overrides.

Two sets of defaults, on purpose:

* The dataclass defaults below are the *package defaults*: a small, fast model and the generator's
  own (harder) synthetic settings, for the unit tests and ``benchmarks/bench_train_step.py --config
  small``. They are NOT the benchmark's CPU default, and the tests and that bench rely on them: do
  not retune them.
* ``params.yaml`` is the *CPU default* (what ``dvc repro`` and ``malm converge`` run): it overrides
  package defaults, each with its reason in a comment beside it; ``tests/test_config.py`` lists
  every value it overrides with that reason and fails on an override it does not know.

The sections ``pipeline`` (the variants x seeds DVC and ``malm converge`` run), ``grounding``
(``malm grounding``) and ``converge`` (``malm converge``'s output folder) configure commands, not
what a run computes: they are in :data:`RUNTIME_KEYS`. The one key of a params file outside the
tree is ``variant_overrides`` (``{variant: overlay}``, read by
:func:`malm.variants.resolve_from_files`, so that DVC tracks each variant's tweaks on their own);
any other unknown key, at any depth, is a :class:`ConfigError` naming it.

This module is the schema only, the bottom of the package's layers: each section's defaults beside
its fields, merging, overrides and YAML files. It imports nothing from the package but the atomic
writer :mod:`malm.io` (``save``), so every module can read its section without pulling in code.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from malm.io import atomic_write_text


def _f(default: Any, help: str, choices: tuple | None = None,  # noqa: A002 - mirrors argparse
       items: str | None = None) -> Any:
    """A dataclass field with a help string (mutable defaults are copied per instance); ``choices``
    restricts a string field (or a list field's items) to those values, ``items`` types a list's
    items or a dict's values: "int", "str" or "int_pair" (checked when a config is merged)."""
    meta = {"help": help, **({"choices": tuple(choices)} if choices else {}),
            **({"items": items} if items else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    """Where the data is, and how the one-off cache is built and read (section ``data``)."""

    root: str = _f("data/synth", "Recipe1M-format root (layer1.json, layer2.json, images/...). "
                   "Point it at a real Recipe1M download to use the real data.")
    synthetic: bool = _f(True, "Generate the synthetic default (section `synth`) into `root` before "
                         "preparing. Set false and `root` to a Recipe1M download for the real data.")
    cache_dir: str = _f("data/cache", "Where the one-off preprocessing cache is written.")
    min_word_count: int = _f(10, "Vocabulary: keep words seen at least this often in paired "
                             "training recipes (H-T: 10).")
    max_ingrs: int = _f(20, "Keep at most this many ingredient lines (H-T: 20).")
    max_instrs: int = _f(20, "Keep at most this many instruction lines (H-T: 20).")
    max_tokens: int = _f(15, "Keep at most this many tokens per line and in the title (H-T: 15).")
    class_file: str | None = _f(None, "Optional semantic-class file: JSON {recipe_id: class name}, CSV "
                                "id,class, or im2recipe's classes1M.pkl (read by a restricted unpickler: "
                                "plain data only, a pickle that references code is refused). Without it classes are derived from titles (see num_classes).")
    num_classes: int = _f(1047, "Classes derived from titles: the K most frequent title words of paired "
                          "training recipes (classes1M has 1047); a recipe's class is the last class "
                          "word before 'with/in/on/...' in its title, else 0 = background.")
    ingredients: str = _f("raw", "Ingredient text: raw = layer1's lines (H-T); det = det_ingrs.json's "
                          "valid ingredient names.")
    on_bad_record: str = _f("error", "A bad record in layer1/layer2: error (name file and record, stop) "
                            "or skip (drop it and count it in the cache manifest).")
    split_dir: str | None = _f(None, "Optional folder with H-T split id lists "
                               "(train.txt/val.txt/test.txt, one recipe id per line).")
    cache_image_size: int = _f(72, "Side of the pre-resized image cache (paper: 256 as H-T's "
                               "resize before the 224 random crop).")
    max_images_per_recipe: int | None = _f(None, "Cache at most this many images of a recipe (its "
                                           "first ones in layer2 order); null = all of them.")
    image_store: str = _f("raw", "How the cache keeps images: raw = decoded uint8 rows (no decode "
                          "cost; cache_image_size^2 * 3 bytes each: right for the small synthetic "
                          "default), jpeg = re-encoded JPEGs in one file per split with an offset index "
                          "(about a tenth of the bytes; the loader workers decode them: Recipe1M).",
                          choices=("raw", "jpeg"))
    jpeg_quality: int = _f(90, "JPEG quality of the jpeg image store.")
    image_sampling: str = _f("random", "Which cached image of a recipe a training sample shows: random = "
                             "one drawn per recipe and epoch (H-T: a recipe is one pair per epoch, not "
                             "one per image), first = always its first image. Evaluation always uses "
                             "the first.", choices=("random", "first"))
    num_workers: int = _f(0, "DataLoader worker processes (GPU runs: 8-16).")
    max_pairs: dict = _f({}, "Optional cap on pairs per split, e.g. {train: 5000} (debug runs).",
                         choices=("train", "val", "test"), items="int")
    batch_sampler: str = _f("random", "How training batches are drawn: random (shuffled pairs) or "
                            "triplet_classif (T-Food's class-balanced sampler: part of every batch comes "
                            "from non-background classes, `sampler_same_class` items per class, so the "
                            "semantic triplet terms SIRR/SRII have positives; the paper config).",
                            choices=("random", "triplet_classif"))
    sampler_background_frac: float = _f(0.5, "triplet_classif: fraction of each batch drawn from "
                                        "background (class 0) pairs (T-Food pc_noclassif: 0.5).")
    sampler_same_class: int = _f(2, "triplet_classif: items drawn together from one class "
                                 "(T-Food nb_indices_same_class: 2).")


# ---------------------------------------------------------------------------------------- synth
@dataclass
class SynthConfig:
    """Size, difficulty and seed of the synthetic dataset (section ``synth``)."""

    seed: int = _f(0, "Seed of the whole dataset: same seed and config give byte-identical files.")
    n_train: int = _f(10000, "Train recipes with images (text-only recipes come on top).")
    n_val: int = _f(2000, "Val recipes with images.")
    n_test: int = _f(10500, "Test recipes with images (the 10k protocol needs >= 10000).")
    text_only_frac: float = _f(0.1, "Fraction of each split's recipes that have no image (text only).")
    multi_image_frac: float = _f(0.12, "Fraction of recipes with images that have 2..max_images renderings.")
    max_images: int = _f(3, "Most images per recipe.")
    image_size: int = _f(64, "Side of the saved JPEGs in pixels (drawn at twice this, then downsampled).")
    min_ingredients: int = _f(2, "Fewest visible ingredients per dish.")
    max_ingredients: int = _f(8, "Most visible ingredients per dish.")
    max_pantry: int = _f(4, "Most invisible pantry lines (salt, oil, water, ...) per recipe.")
    lookalike_frac: float = _f(0.1, "Fraction of ingredients paired into look-alikes (same texture and "
                               "shape, colour within +-10): harder to tell apart from pixels.")
    noise: float = _f(0.04, "Std of Gaussian pixel noise, as a fraction of 255.")
    color_jitter: float = _f(0.08, "Std of colour / brightness jitter per ingredient and image "
                             "(fraction of 255).")
    occlusion: float = _f(0.3, "0..1: overlap between ingredient groups and chance of sauce drizzled "
                          "over them.")
    n_ingredients: int = _f(0, "Use only this many of the most popular ingredients (0 = all 156): fewer "
                            "ingredients to tell apart make the benchmark easier.")
    piece_scale: float = _f(1.0, "Scale of the ingredient pieces (1 = the vocabulary's sizes; larger "
                            "pieces are easier to see at low resolution). Stacked layers keep their size.")
    zipf_a: float = _f(1.1, "Zipf exponent of ingredient popularity (0 = uniform; larger = longer tail).")
    dish_zipf_a: float = _f(0.5, "Zipf exponent of dish-type frequency (0 = balanced classes).")
    jpeg_quality: int = _f(90, "JPEG quality of the saved images.")
    workers: int = _f(2, "Rendering processes (does not change the output).")

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"SynthConfig: {msg}")
        need(min(self.n_train, self.n_val, self.n_test) >= 0, "split sizes must be >= 0")
        need(0 <= self.text_only_frac < 1 and 0 <= self.multi_image_frac <= 1,
             "text_only_frac must lie in [0, 1) and multi_image_frac in [0, 1]")
        need(self.max_images >= 1, "max_images must be >= 1")
        need(16 <= self.image_size <= 1024, "image_size must lie in [16, 1024]")
        need(1 <= self.min_ingredients <= self.max_ingredients <= 20,
             "need 1 <= min_ingredients <= max_ingredients <= 20")
        need(0 <= self.lookalike_frac <= 1 and 0 <= self.occlusion <= 1,
             "lookalike_frac and occlusion lie in [0, 1]")
        need(min(self.noise, self.color_jitter, self.zipf_a, self.dish_zipf_a, self.max_pantry) >= 0,
             "noise, color_jitter, zipf exponents and max_pantry must be >= 0")
        need(self.n_ingredients == 0 or self.n_ingredients >= self.max_ingredients,
             "n_ingredients must be 0 (all) or >= max_ingredients")
        need(0.25 <= self.piece_scale <= 4, "piece_scale must lie in [0.25, 4]")
        need(1 <= self.jpeg_quality <= 100 and self.workers >= 0, "jpeg_quality in [1, 100], workers >= 0")

    def output_config(self) -> dict:
        """The fields that determine the files (all but ``workers``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "workers"}


# ---------------------------------------------------------------------------------------- model
@dataclass
class ImageEncoderConfig:
    """The CLIP ViT image encoder (section ``model.image``)."""

    arch: str = _f("vit_base_patch16_clip_224", "timm architecture name (paper: CLIP ViT-B/16).")
    img_size: int = _f(64, "Input side in pixels (paper: 224).")
    patch_size: int = _f(8, "Patch side in pixels (paper: 16).")
    embed_dim: int = _f(96, "Token width (paper: 768).")
    depth: int = _f(3, "Transformer blocks (paper: 12).")
    num_heads: int = _f(3, "Attention heads (paper: 12).")
    pretrained: str | None = _f(None, "Local weight file (timm/safetensors state dict or OpenAI CLIP "
                                "checkpoint), or a hub name when online; null = no weights.")
    allow_random_init: bool = _f(True, "With no pretrained weights, start from random init instead of "
                                 "failing (the CPU default; the paper config sets false).")
    drop_path_rate: float = _f(0.0, "Stochastic depth rate.")

    @property
    def num_patches(self) -> int:
        """Patches P of the square input: (img_size // patch_size)^2."""
        return (self.img_size // self.patch_size) ** 2


@dataclass
class RecipeEncoderConfig:
    """T-Food's hierarchical recipe encoder (section ``model.recipe``)."""

    width: int = _f(64, "Transformer width of the T-Food recipe encoder (paper: 512).")
    layers: int = _f(1, "Layers per sentence/merger transformer (paper: 2).")
    heads: int = _f(2, "Attention heads (paper: 4).")
    decoder_layers: int = _f(1, "Cross-component decoder layers (paper: 2; 0 = none, H-T's encoder: "
                             "the three components merged only by the projection head).")
    dropout: float = _f(0.1, "Dropout inside the recipe transformers.")
    norm_first: bool = _f(True, "Pre-norm word- and line-level transformer layers with a final "
                          "LayerNorm (this suite's port); false = post-norm, PyTorch's default, as "
                          "H-T's and T-Food's nn.TransformerEncoderLayer.")
    activation: str = _f("gelu", "Feed-forward activation of the word- and line-level transformer "
                         "layers (H-T and T-Food: relu, PyTorch's default).", choices=("gelu", "relu"))
    length_buckets: int = _f(
        4, "Run the word-level transformer on lines grouped by length into this many buckets, each "
        "trimmed to its longest line, so it does not attend over padding (exact: outputs are "
        "unchanged; 1 = one batch padded to the longest line).")


@dataclass
class MaskConfig:
    """Mask augmentation of the student's input, made on the data side (``model.mask``)."""

    ratio: float = _f(0.75, "Fraction of image patches hidden from the student (paper: 0.75).")
    recipe_ratio: float = _f(0.0, "Fraction of recipe tokens masked ('mask both' ablation: 0.75).")


@dataclass
class MatchingConfig:
    """The two-level matching module psi / psi' (section ``model.matching``)."""

    width: int = _f(64, "Width D of the two-level matching module (paper: 768).")
    psi_layers: int = _f(1, "Layers of psi, the decoder where image tokens query recipe tokens "
                         "(T-Food n_layers_cross_image: 1).")
    psi_prime_layers: int = _f(1, "Layers of psi', the decoder where recipe tokens query the attended "
                               "image tokens I_att (T-Food cross_encoder n_layers: 4; CPU default 1).")
    heads: int = _f(2, "Heads of psi and psi' (T-Food: 4).")
    candidates: str = _f("hard", "Which (image, recipe) pairs L_GC/L_LC contrast; every pair is pushed "
                         "through psi/psi' on its own, so a logit [i, j] sees image i and recipe j only. "
                         "hard = per anchor, the positive + `num_negatives` hard negatives sampled from the "
                         "softmax of the unimodal similarity (T-Food/ALBEF ITM), in both directions; "
                         "batch = every pair of the (global) batch, B^2 pairs (small models only).",
                         choices=("hard", "batch"))
    num_negatives: int = _f(1, "candidates=hard: hard negatives per anchor and direction (T-Food's ITM: 1); "
                            "the contrastive chance level is ln(1 + num_negatives).")
    tau_init: float = _f(0.07, "Initial contrastive temperature (not in the paper; CLIP's 0.07).")
    learn_tau: bool = _f(True, "Learn the temperature (CLIP-style logit scale).")


@dataclass
class DistillConfig:
    """Masked self-distillation: the predictor and the EMA teacher (``model.distill``)."""

    predictor_layers: int = _f(1, "Predictor transformer layers (paper 4.3: 2).")
    predictor_heads: int = _f(2, "Predictor heads (paper 4.3: 2).")
    predictor_width: int = _f(96, "Predictor width (paper: 768).")
    momentum: float = _f(0.999, "EMA momentum at the start (not in the paper; DINO-style).")
    momentum_end: float = _f(1.0, "EMA momentum at the end of training (cosine schedule).")
    beta: float = _f(1.0, "SmoothL1 beta (not in the paper).")


@dataclass
class ModelConfig:
    """The model (section ``model``): its parts, and the joint embedding width."""

    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)      # malm.models.image
    recipe: RecipeEncoderConfig = field(default_factory=RecipeEncoderConfig)   # malm.models.recipe
    mask: MaskConfig = field(default_factory=MaskConfig)                       # malm.data.masking
    matching: MatchingConfig = field(default_factory=MatchingConfig)           # malm.models.matching
    distill: DistillConfig = field(default_factory=DistillConfig)  # malm.models.predictor, .ema
    embed_dim: int = _f(128, "Joint embedding dimension (T-Food dim_emb, paper: 1024).")


# ---------------------------------------------------------------------------------------- losses
@dataclass
class LossConfig:
    """The loss terms: weights, and T-Food's triplet settings (section ``loss``)."""

    lambda_itc: float = _f(1.0, "Weight of the retrieval loss L_itc (its form: loss.retrieval).")
    retrieval: str = _f("tfood", "The retrieval loss L_itc: tfood = T-Food's semantic triplet (margin "
                        "schedule, semantic terms and aggregation below); ht = H-T's bidirectional "
                        "triplet (src/utils/loss.py TripletLoss: every in-batch negative, the fixed "
                        "margin loss.ht_margin, the mean over the B x B cost matrix).",
                        choices=("tfood", "ht"))
    ht_margin: float = _f(0.3, "Margin of H-T's triplet (loss.retrieval=ht and the recipe loss; H-T: 0.3).")
    lambda_recipe: float = _f(0.0, "Weight of H-T's self-supervised recipe loss: each recipe component's "
                              "embedding (title, ingredients, instructions) against each other "
                              "component's, mapped into its space by a linear projection, with H-T's "
                              "triplet, averaged over the 6 ordered pairs (H-T recipe_loss_weight: 1; "
                              "0 = off).")
    lambda_itm: float = _f(0.0, "Weight of T-Food's image-text matching loss L_itm: a linear head on "
                           "the matching module's fused pair says match / no match, unscaled two-way "
                           "cross-entropy over each positive pair and its hard negatives (T-Food "
                           "itm_loss_weight: 1; 0 = off). With an ITM head, test-time re-ranking "
                           "scores a pair by its match logit, as T-Food.")
    lambda_gc: float = _f(1.0, "Weight of the global contrastive loss L_GC (lambda_itm; 0 = off).")
    lambda_lc: float = _f(1.0, "Weight of the local contrastive loss L_LC (lambda_itm; 0 = off).")
    lambda_dist: float = _f(1.0, "Weight of masked self-distillation L_dist (0 = off).")
    margin_start: float = _f(0.18, "Triplet margin at epoch 0 (T-Food: 0.18).")
    margin_step: float = _f(0.005, "Margin increase per epoch (T-Food: 0.005).")
    margin_max: float = _f(0.3, "Margin cap (T-Food: 0.3).")
    semantic_weight: float = _f(0.1, "Weight of the semantic terms SIRR/SRII (T-Food: 0.1).")
    triplet_negatives: int = _f(0, "In-batch negatives per anchor, hardest first. 0 = all of them: "
                                "T-Food's published config is sampling max_negative with nb_samples 9999, "
                                "i.e. every negative ordered by hardness. 1 = only the hardest (VSE++-style; "
                                "collapses from random init on the CPU default).")
    triplet_aggregation: str = _f("valid", "Mean over the triplets that still violate the margin "
                                  "(valid, T-Food/AdaMine) or over all triplets (mean).",
                                  choices=("valid", "mean"))
    itc_view: str = _f("masked", "Which view of the image L_itc sees in training: masked (the student's "
                       "visible patches, as the matching and distillation terms) or full (one extra "
                       "student forward on the whole image). Evaluation always embeds full images.",
                       choices=("masked", "full"))


# ----------------------------------------------------------------------------------------- train
@dataclass
class TrainConfig:
    """The training loop (section ``train``)."""

    epochs: int = _f(2, "Training epochs (paper: 120).")
    batch_size: int = _f(64, "Batch size (paper: 128).")
    lr: float = _f(1e-3, "Adam learning rate for all but the image encoder (paper: 1e-5).")
    lr_image: float = _f(1e-3, "Adam learning rate for the image encoder (paper: 1e-6).")
    lr_word_embedding: float | None = _f(None, "Adam learning rate for the recipe encoder's word "
                                         "embedding, its own optimiser group (null = train.lr).")
    weight_decay: float = _f(0.0, "Adam weight decay.")
    freeze_image_epochs: int = _f(0, "Keep the image encoder frozen for this many epochs (paper: 20).")
    warmup_steps: int = _f(50, "Linear learning-rate warm-up steps.")
    lr_schedule: str = _f("constant", "After warm-up: constant (T-Food), cosine (decay to 0 at the last "
                          "step, as CLIP and MAE) or step (times train.lr_step_gamma every "
                          "train.lr_step_epochs epochs: H-T's StepLR).",
                          choices=("constant", "cosine", "step"))
    lr_step_epochs: int = _f(30, "lr_schedule=step: epochs between decays (H-T lr_decay_patience: 30).")
    lr_step_gamma: float = _f(0.1, "lr_schedule=step: the factor of each decay (H-T lr_decay_factor: 0.1).")
    grad_clip: float = _f(1.0, "Clip the global gradient norm to this value (0 = off; T-Food clip_grad: 8).")
    seed: int = _f(0, "Random seed (model init, data order, masks).")
    device: str = _f("auto", "auto, cpu or cuda.")
    amp: bool = _f(True, "bf16 autocast on CUDA (ignored on CPU).")
    compile: bool = _f(False, "torch.compile the model (GPU).")
    threads: int = _f(0, "torch CPU threads (0 = leave torch's default).")
    deterministic: bool = _f(False, "torch.use_deterministic_algorithms for the whole run, for "
                             "bit-reproducible GPU runs (sets CUBLAS_WORKSPACE_CONFIG); costs speed "
                             "(a CPU step ~10-20 %). CPU runs are bit-reproducible without it: the "
                             "training path uses no kernel that accumulates with atomics.")
    val_pairs: int = _f(1000, "Validation bag size for the per-epoch R@1 (1k).")
    patience: int = _f(0, "Early stopping (0 = off): stop after the epoch at which the validation "
                       "score (T-Food's saving criteria: img2rec medR, then R@1) has not improved "
                       "for this many epochs; train.epochs is then the maximum. The learning-rate "
                       "and momentum schedules are still laid out over train.epochs (a cosine "
                       "schedule does not reach 0 in a run that stops early). checkpoint_best.pt "
                       "keeps the best epoch; metrics.json records stopped_early and epochs_run.")
    log_every: int = _f(20, "Log losses every N steps (and, with log_grad_norms, each loss term's "
                        "gradient norm on the shared encoders).")
    log_grad_norms: bool = _f(True, "Every log_every steps, differentiate each weighted loss term on "
                              "its own and log its gradient norm on the recipe encoder, the word "
                              "embedding and the ViT (grad/<term>/<group>, grad_share/<term>/<group>: "
                              "epoch means in history.json and dvclive). One extra backward per term on "
                              "a logging step; the trained weights do not change.")


@dataclass
class EvalConfig:
    """The protocols and bags ``malm evaluate`` reports (section ``eval``)."""

    protocols: list = _f(["tfood"], "Bag protocols: tfood (consecutive bags) and/or ht (H-T's "
                         "random subsets of the id-sorted set).", choices=("tfood", "ht"), items="str")
    bags: list = _f([[1000, 10], [10000, 5]], "List of [bag_size, n_bags].", items="int_pair")
    seed: int = _f(1234, "Seed of the ht protocol's random subsets (H-T: 1234).")
    clamp_bags: bool = _f(True, "tfood: when the split holds fewer than bag_size x n_bags pairs, use as "
                          "many whole consecutive bags as it holds (the result records n_bags) instead "
                          "of failing.")
    split: str = _f("test", "Split to embed and evaluate.")
    rerank_k: int = _f(10, "Test-time re-ranking (T-Food's k_test: 10): with `malm evaluate --run-dir` "
                       "and a model that has a matching module, each query's top k by cosine is "
                       "re-ordered by the module's pair score and written as protocol "
                       "<protocol>+rerank<k> beside the dual-encoder result; 0 = off.")
    rerank_bags: list | None = _f(None, "Bag sizes to re-rank (each must be a bag size of eval.bags), "
                                  "e.g. [1000]; null = every bag size of eval.bags.", items="int")
    rerank_protocols: list | None = _f(None, "Protocols to re-rank (each must be in eval.protocols), "
                                       "e.g. [tfood]; null = every protocol of eval.protocols.",
                                       choices=("tfood", "ht"), items="str")


# -------------------------------------------------------------------------------------- pretrain
@dataclass
class PretrainConfig:
    """The CLIP stand-in (``malm pretrain``): the image encoder of ``model.image`` trained once,
    CLIP-style, on a synthetic corpus that shares no seed, recipe or image with the benchmark."""
    root: str = _f("data/pretrain/synth", "Where the pretraining corpus is generated (Recipe1M format).")
    cache_dir: str = _f("data/pretrain/cache", "Its preprocessing cache.")
    out: str = _f("data/pretrain/image_encoder.pt", "The weights written (a timm state dict of the "
                  "ViT; point model.image.pretrained at it) with pretrain.json and the curve beside it.")
    seed: int = _f(1, "Corpus seed; must differ from synth.seed (the benchmark's data).")
    n_train: int = _f(20000, "Corpus training recipes with images.")
    n_val: int = _f(1000, "Corpus validation recipes (the image->caption retrieval curve).")
    n_ingredients: int = _f(0, "Ingredients the corpus draws from (0 = all 156 of the generator: a "
                            "wider world than the benchmark's, as CLIP's web data is for Recipe1M).")
    ingredients: str = _f("det", "Ingredient text of the captions: det = the ingredient names of "
                          "det_ingrs.json (clean, like the nouns of web alt-text), raw = layer1's "
                          "lines with their quantities and units.", choices=("raw", "det"))
    caption_keep: float = _f(0.6, "Fraction of a recipe's ingredient lines its caption names (drawn "
                             "per sample and epoch; the title is always in), like partial web alt-text.")
    epochs: int = _f(8, "Training epochs over the corpus (a fixed count, so `dvc repro -f pretrain` "
                     "rebuilds the same weights' quality on any machine).")
    minutes: float | None = _f(None, "Optional wall-time cap in minutes: stop after the epoch that "
                               "crosses it (null = run all epochs).")
    batch_size: int = _f(64, "Batch size.")
    lr: float = _f(1e-3, "Adam learning rate (peak, after warmup).")
    warmup_steps: int = _f(200, "Linear learning-rate warmup steps.")
    schedule: str = _f("cosine", "Learning rate after warmup: cosine = decay to 0 over all epochs "
                       "(CLIP's), constant = stay at pretrain.lr.", choices=("cosine", "constant"))
    embed_dim: int = _f(128, "Width of the shared image-caption space (thrown away after).")
    tau_init: float = _f(0.07, "Initial temperature of the symmetric InfoNCE (learnable, CLIP).")


# -------------------------------------------------------------------------- command settings
@dataclass
class PipelineConfig:
    """What the DVC pipeline (dvc.yaml's ``${pipeline.variants}`` x ``${pipeline.seeds}`` matrices)
    and ``malm converge`` run, and the variant order of ``malm tables`` (section ``pipeline``)."""

    variants: list = _f([], "Variants to train, embed, evaluate and tabulate, in table order "
                        "(`malm variants` lists them); params.yaml sets the pipeline's.", items="str")
    seeds: list = _f([], "Seeds (train.seed) run for every variant; params.yaml sets the pipeline's.",
                     items="int")
    workers: int = _f(1, "Training runs side by side (`malm train-runs`, the pipeline's train stage, "
                      "`malm converge`): separate processes, each with train.threads // workers torch "
                      "threads (at least 1; train.threads=0: the machine's cores // workers). With "
                      "slurm.executor=slurm every run is a job of its own and all are submitted at once.")


@dataclass
class GroundingConfig:
    """``malm grounding``: the pointing game on the synthetic boxes (section ``grounding``)."""

    pairs: int | None = _f(None, "Score only the first N pairs of the split (recipe id order); "
                           "null = all of them.")
    split: str | None = _f(None, "Split to score; null = eval.split (the split the pipeline "
                           "evaluates: test).", choices=("train", "val", "test"))
    rule: str = _f("centre", "When the pointer patch counts as inside the box: centre = its centre "
                   "lies in the box; overlap = it shares any area with the box. The chance rate "
                   "follows the same rule.", choices=("centre", "overlap"))
    min_visible: float = _f(0.0, "Score only ingredients with at least this unoccluded fraction "
                            "(the truth's `visible`); fully hidden ones (0) are never scored.")
    checkpoint: str = _f("best", "Which checkpoint of the run: best (validation) or last.",
                         choices=("best", "last"))
    batch_size: int = _f(64, "Pairs per forward pass.")
    examples: int = _f(4, "Images drawn in the --figure PNG.")
    device: str = _f("auto", "auto, cpu or cuda.")


@dataclass
class ConvergeConfig:
    """``malm converge``, the converge profile (section ``converge``)."""

    out: str = _f("converge", "Output folder of the profile (runs/, embeddings/, metrics/, tables/, "
                  "figures/, converge.json/.md); `malm converge --out` overrides it.")


# ----------------------------------------------------------------------------------------- slurm
@dataclass
class SlurmConfig:
    """Where stages run, and the Slurm resources of a job (section ``slurm``)."""

    executor: str = _f("inline", "How train/assess/embed/evaluate stages run: inline (in this process), slurm "
                       "(a Slurm job through submitit; the command blocks until it ends), local (a "
                       "submitit subprocess on this machine) or debug (submitit in-process).")
    partition: str | None = _f(None, "Slurm partition (null = the cluster's default).")
    nodes: int = _f(1, "Nodes per job (DDP across nodes for the paper config).")
    gpus_per_node: int = _f(0, "GPUs per node (a GPU cluster: 2 for the paper; 0 on CPU nodes, "
                            "where the request is omitted).")
    tasks_per_node: int = _f(1, "Tasks per node (one per GPU for DDP).")
    cpus_per_task: int = _f(1, "CPUs per task (data loader workers + 1).")
    mem_gb: float = _f(2.0, "Memory per node in GB.")
    timeout_min: int = _f(60, "Time limit per job in minutes; jobs requeue from their checkpoint.")
    account: str | None = _f(None, "Slurm account.")
    qos: str | None = _f(None, "Slurm QOS.")
    constraint: str | None = _f(None, "Slurm node constraint, e.g. a100.")
    array_parallelism: int = _f(8, "How many array tasks of a grid run at once.")
    signal_delay_s: int | None = _f(None, "Seconds before the time limit at which Slurm sends USR2 so the "
                                    "job checkpoints and requeues (null = min(90, limit - 40 s)).")
    max_requeues: int = _f(3, "How many times a timed-out/preempted job may requeue.")
    log_dir: str = _f("slurm_logs", "Where submitit writes job logs.")


# ------------------------------------------------------------------------------------------ root
@dataclass
class Config:
    """The whole tree: one field per section, and the variant it was built for."""

    # each section, and the package that reads it
    data: DataConfig = field(default_factory=DataConfig)              # malm.data
    synth: SynthConfig = field(default_factory=SynthConfig)           # malm.synth
    model: ModelConfig = field(default_factory=ModelConfig)           # malm.models
    loss: LossConfig = field(default_factory=LossConfig)              # malm.losses
    train: TrainConfig = field(default_factory=TrainConfig)           # malm.train
    eval: EvalConfig = field(default_factory=EvalConfig)              # malm.eval, malm.launch
    slurm: SlurmConfig = field(default_factory=SlurmConfig)           # malm.launch
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # malm.train.pretrain
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)  # dvc.yaml, malm.launch
    grounding: GroundingConfig = field(default_factory=GroundingConfig)  # malm.cli (grounding)
    converge: ConvergeConfig = field(default_factory=ConvergeConfig)  # malm.launch.converge
    variant: str = _f("malm", "Name of the variant this config was built for.")


# -------------------------------------------------------------------------------------- helpers
class ConfigError(ValueError):
    pass


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


# Keys removed from the tree, with what to use instead. A config file or override that sets one
# fails with this message; a stored config (a run's config.yaml, a checkpoint) drops it on load
# (:func:`from_dict`), so runs made before the removal still load and compare.
REMOVED_KEYS = {
    "data.image_size": "it was a dead alias of the model's input side: set model.image.img_size "
                       "instead (the crop side every loader uses)",
}


def merge(cfg: Any, overlay: Mapping[str, Any], where: str = "") -> Any:
    """Return a copy of dataclass ``cfg`` with the nested mapping ``overlay`` applied (typed)."""
    known = {f.name: f for f in fields(cfg)}
    changes = {}
    for key, value in overlay.items():
        path = f"{where}{key}"
        if key not in known:
            if path in REMOVED_KEYS:
                raise ConfigError(f"config key '{path}' was removed: {REMOVED_KEYS[path]}")
            raise ConfigError(f"unknown config key '{path}' (known: {', '.join(sorted(known))})")
        current = getattr(cfg, key)
        if is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{path}' is a section; give a mapping, not {value!r}")
            changes[key] = merge(current, value, path + ".")
        else:
            changes[key] = (_coerce_optional(value, str(known[key].type), path) if current is None
                            else _coerce(value, current, path))
            choices = known[key].metadata.get("choices")
            if isinstance(changes[key], (list, dict)):
                changes[key] = _check_items(changes[key], known[key].metadata.get("items"), choices, path)
            elif changes[key] is None and "None" in str(known[key].type):
                pass  # an optional field set to null
            elif isinstance(current, (list, dict)):
                raise ConfigError(f"config key '{path}' expects a {type(current).__name__}, got {value!r}")
            elif choices and changes[key] not in choices:
                raise ConfigError(f"config key '{path}' must be one of {', '.join(choices)}; "
                                  f"got {changes[key]!r}")
    return dataclasses.replace(cfg, **changes)


def _coerce(value: Any, current: Any, path: str) -> Any:
    if value is None or current is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{path}' expects true/false, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{path}' expects an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{path}' expects a number, got {value!r}")
    if isinstance(current, str) and not isinstance(value, str):
        return str(value)
    if isinstance(current, list) and not isinstance(value, list):
        raise ConfigError(f"config key '{path}' expects a list, got {value!r}")
    if isinstance(current, dict) and not isinstance(value, Mapping):
        raise ConfigError(f"config key '{path}' expects a mapping, got {value!r}")
    return dict(value) if isinstance(current, dict) else value


def _check_items(value: list | dict, items: str | None, choices: tuple | None, path: str) -> Any:
    """A list field's items / a dict field's values against ``items``; ``choices`` bounds list items
    or dict keys. Returns the value with numbers normalised."""
    def one(v: Any, where: str) -> Any:
        if items == "int":
            return _coerce(v, 0, where)
        if items == "str":
            if not isinstance(v, str):
                raise ConfigError(f"config key '{where}' expects a string, got {v!r}")
            return v
        if items == "int_pair":
            if not (isinstance(v, (list, tuple)) and len(v) == 2):
                raise ConfigError(f"config key '{where}' expects a pair [int, int], got {v!r}")
            return [_coerce(x, 0, where) for x in v]
        return v

    if isinstance(value, dict):
        if choices:
            bad = [k for k in value if k not in choices]
            if bad:
                raise ConfigError(f"config key '{path}' has unknown keys {bad}; known: {', '.join(choices)}")
        return {k: one(v, f"{path}.{k}") for k, v in value.items()}
    out = [one(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if choices:
        bad = [v for v in out if v not in choices]
        if bad:
            raise ConfigError(f"config key '{path}' must hold items of {', '.join(choices)}; got {bad}")
    return out


def _coerce_optional(value: Any, annotation: str, path: str) -> Any:
    """A field whose default is null: check ``value`` against its annotation (``float | None``,
    ``int | None``, ``str | None``, ``list | None``); YAML 1.1 reads "1e-2" as a string, so numbers
    are parsed."""
    if value is None:
        return None
    kinds = {k.strip() for k in annotation.split("|")}
    if "list" in kinds and not isinstance(value, list):
        raise ConfigError(f"config key '{path}' expects a list or null, got {value!r}")
    if "bool" in kinds:
        return _coerce(value, False, path)
    if "float" in kinds:
        return _coerce(value, 0.0, path)
    if "int" in kinds:
        return _coerce(value, 0, path)
    if "str" in kinds and not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a partition or account named 123
        raise ConfigError(f"config key '{path}' expects a string or null, got {value!r}")
    return value


def parse_overrides(overrides: Iterable[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


# Keys that change how a run executes, not what it computes: a checkpoint may resume under new values.
# pipeline / grounding / converge configure the commands around a run (which runs, the pointing
# game after it, where the converge profile writes): runs stored before these sections existed (no
# such keys in their config.yaml) compare equal to the same run resolved now.
RUNTIME_KEYS = ("slurm", "eval", "pretrain", "pipeline", "grounding", "converge", "data.num_workers",
                "train.device", "train.threads", "train.log_every", "train.compile",
                "train.log_grad_norms")


def identity(cfg: Config) -> dict:
    """The config as a dict without RUNTIME_KEYS: two runs with equal identities compute the same."""
    d = to_dict(cfg)
    for key in RUNTIME_KEYS:
        node, *rest = key.split(".")
        if rest:
            d[node].pop(rest[0], None)
        else:
            d.pop(node, None)
    return d


# The one key of a params file outside the tree: ``variant_overrides.<variant>`` (an overlay per
# variant, applied by malm.variants.resolve_from_files after the variant's own overlay).
NON_TREE_KEYS = ("variant_overrides",)


def config_sections(params: Mapping[str, Any], source: str | os.PathLike = "") -> dict:
    """The part of a params file that is config: every key but NON_TREE_KEYS (``variant_overrides``).
    Any other top-level key that is not a section of :class:`Config` is a ConfigError naming it
    (and ``source``, the file)."""
    names = {f.name for f in dataclasses.fields(Config)}
    for key in params:
        if key not in names and key not in NON_TREE_KEYS:
            where = f" in {source}" if source else ""
            if key in REMOVED_KEYS:
                raise ConfigError(f"config key '{key}'{where} was removed: {REMOVED_KEYS[key]}")
            raise ConfigError(f"unknown config key '{key}'{where} (known: "
                              f"{', '.join(sorted(names | set(NON_TREE_KEYS)))})")
    return {k: v for k, v in params.items() if k in names}


def merge_file(cfg: Config, params: Mapping[str, Any], path: str | os.PathLike) -> Config:
    """``cfg`` <- the config sections of the params file ``path`` (read as ``params``); an error
    names the file."""
    try:
        return merge(cfg, config_sections(params))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def from_files(config_files: Iterable[str | os.PathLike] = (), *overlays: Mapping[str, Any]) -> Config:
    """Defaults <- config files <- ``overlays``, with no variant: for the commands whose config does
    not depend on the variant (``data prepare``, ``data synth``, ``pretrain``, ``evaluate``,
    ``grounding``, ``tables``, the profile settings of ``converge``)."""
    cfg = Config()
    for path in config_files:
        cfg = merge_file(cfg, load_yaml(path), path)
    for overlay in overlays:
        cfg = merge(cfg, overlay)
    return cfg


def _drop_removed(d: Mapping[str, Any]) -> Mapping[str, Any]:
    """``d`` without the REMOVED_KEYS it holds, copying only the branches it changes (``d`` itself is
    left as it is). Legacy: a config stored before a key was removed (data.image_size is in every
    run made before it went) must still load, and compare equal to the same run resolved now."""
    def without(node: Mapping[str, Any], path: list[str]) -> Mapping[str, Any]:
        head, *rest = path
        if not isinstance(node, Mapping) or head not in node:
            return node
        if not rest:
            return {k: v for k, v in node.items() if k != head}
        return {**node, head: without(node[head], rest)}

    for dotted in REMOVED_KEYS:
        d = without(d, dotted.split("."))
    return d


def from_dict(d: Mapping[str, Any]) -> Config:
    """A stored config (a run's config.yaml, a checkpoint's, a submitted job's) -> Config; keys
    removed from the tree since it was stored are dropped (:data:`REMOVED_KEYS`)."""
    return merge(Config(), _drop_removed(d))


def save(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load(path: str | os.PathLike) -> Config:
    """A stored config.yaml -> Config (old ones too: see :func:`from_dict`)."""
    return from_dict(load_yaml(path))
