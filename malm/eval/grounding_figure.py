"""The grounding figure (``malm grounding --figure``): a few test images with their scored
boxes, and psi's attention on each ingredient's line token over the patches, pointer marked."""

from __future__ import annotations

import os
from pathlib import Path

from malm.io import save_figure


def grounding_figure(examples: list[dict], path: str | os.PathLike, title: str = "",
                     max_ingredients: int = 3) -> Path:
    """PNG: one row per example image -- the crop with its scored boxes, then up to
    ``max_ingredients`` maps of A_I's ingredient column over the patches (on a grey copy of the
    crop, colour scaled per map, patch grid dotted), each with its box and the pointer patch
    (green: hit, red: miss)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if not examples:
        raise ValueError("no example to draw")
    cols = 1 + min(max_ingredients, max(len(e["ingredients"]) for e in examples))
    fig, axes = plt.subplots(len(examples), cols, figsize=(2.4 * cols, 2.5 * len(examples) + 0.5),
                             squeeze=False)
    colours = plt.get_cmap("tab10")
    for r, ex in enumerate(examples):
        img = ex["image"]
        size = img.shape[0]
        grey = img.mean(axis=2)
        ax = axes[r, 0]
        ax.imshow(img, extent=(0, size, size, 0))
        for k, ing in enumerate(ex["ingredients"]):
            x0, y0, x1, y1 = ing["box"]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5, ec=colours(k % 10)))
            ax.text(min(max(x0, 0), size - 1) + 0.4, min(max(y0, 0), size - 1) + 0.4, ing["name"],
                    color="white", fontsize=6, va="top",
                    bbox={"facecolor": colours(k % 10), "alpha": 0.85, "pad": 0.6, "lw": 0})
        ax.set_title(f"recipe {ex['id']}: crop + boxes", fontsize=7)
        for c in range(1, cols):
            ax = axes[r, c]
            if c - 1 >= len(ex["ingredients"]):
                ax.axis("off")
                continue
            ing = ex["ingredients"][c - 1]
            w = ing["weights"]
            grid = w.shape[0]
            ps = size / grid
            ax.imshow(grey, extent=(0, size, size, 0), cmap="gray", vmin=0, vmax=1)
            ax.imshow(w, extent=(0, size, size, 0), cmap="inferno", alpha=0.6, interpolation="nearest",
                      vmin=float(w.min()), vmax=max(float(w.max()), float(w.min()) + 1e-12))
            for t in range(1, grid):
                ax.axhline(t * ps, color="white", lw=0.4, ls=":", alpha=0.6)
                ax.axvline(t * ps, color="white", lw=0.4, ls=":", alpha=0.6)
            x0, y0, x1, y1 = ing["box"]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.6, ec="cyan"))
            pr, pc = divmod(ing["pointer"], grid)
            colour = "lime" if ing["hit"] else "red"
            ax.add_patch(Rectangle((pc * ps, pr * ps), ps, ps, fill=False, lw=2.0, ec=colour))
            ax.plot((pc + 0.5) * ps, (pr + 0.5) * ps, "+", color=colour, ms=6, mew=1.5)
            ax.set_title(f"{ing['name']}: {'HIT' if ing['hit'] else 'miss'} "
                         f"(chance {ing['chance']:.2f})", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlim(0, size)
            ax.set_ylim(size, 0)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
