"""T-Food's image-text matching loss L_itm (mshukor/TFood ``networks/trijoint.py``, after ALBEF), for
the ``tfood`` baseline.

Each fused pair of the matching module (``malm.models.matching``: the positive of every anchor and
its hard negatives, drawn from the softmax of the unimodal similarity) gets two logits from the ITM
head (``pair_itm``, column 1 = match). The loss is the unscaled two-way cross-entropy over the
positive pairs (label 1) and the negatives of both directions (label 0): with one negative per anchor
and direction, T-Food's B positives + B negative recipes + B negative images. A positive pair is
counted once although both directions share it (T-Food fuses it once); a negative that both
directions drew is counted twice, as T-Food does.

What it cannot learn: with images that carry no information, a pair's input depends on its recipe
only, and the loss can fall below the entropy of the labels (ln 3 - 2/3 ln 2 = 0.637 nats at one
negative per direction) only as far as the sampler's bias makes a recipe's label predictable
(``tests/test_itm.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def itm_rows_and_labels(out: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused-pair rows L_itm scores and their labels: each anchor's positive once, then every
    negative of the image -> recipe and the recipe -> image candidates. -> rows [N], labels [N]"""
    cand_i2r, cand_r2i = out["cand_i2r"], out["cand_r2i"]
    B, K = cand_i2r.shape
    cols = torch.arange(K, device=cand_i2r.device).expand(B, K)
    pos = cand_i2r.gather(1, out["target_i2r"][:, None]).squeeze(1)  # [B]
    neg_i2r = cand_i2r[cols != out["target_i2r"][:, None]]  # [B * (K - 1)]
    neg_r2i = cand_r2i[cols != out["target_r2i"][:, None]]
    rows = torch.cat([pos, neg_i2r, neg_r2i])
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg_i2r), torch.zeros_like(neg_r2i)])
    return rows, labels


def label_entropy(out: dict) -> float:
    """The loss of a head that predicts only the share of positives: H(positives / all), nats."""
    rows, labels = itm_rows_and_labels(out)
    p = labels.float().mean().clamp(1e-12, 1 - 1e-12)
    return float(-(p * p.log() + (1 - p) * (1 - p).log()))


class ITMLoss:
    """``__call__(out) -> {"itm_loss", "itm_acc"}``: T-Food's ITM cross-entropy over the fused pairs
    (``out["pair_itm"]`` [U, 2] with ``cand_*`` / ``target_*``); itm_acc (detached) is the share of
    those pairs the head classifies right."""

    def __call__(self, out: dict) -> dict:
        rows, labels = itm_rows_and_labels(out)
        logits = out["pair_itm"].float().index_select(0, rows)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean().detach()
        return {"itm_loss": loss, "itm_acc": acc}
