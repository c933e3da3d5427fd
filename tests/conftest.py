"""Shared fixtures: a tiny synthetic Recipe1M tree + its cache, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, str]:
    """data.* overrides pointing at a tiny synthetic tree and its prepared cache."""
    from malm import config as C
    from malm.data.cache import prepare
    from malm.synth.write import generate

    root = tmp_path_factory.mktemp("tiny")
    smoke = C.merge(C.Config(), C.load_yaml(SMOKE))
    generate(root / "synth", smoke.synth, progress=False)
    data = C.merge(smoke.data, {"root": str(root / "synth"), "cache_dir": str(root / "cache"),
                                "synthetic": False})
    prepare(data, progress=False)
    return {"data.root": data.root, "data.cache_dir": data.cache_dir, "data.synthetic": "false"}


def overrides(d: dict[str, str], **extra: object) -> list[str]:
    return [f"{k}={v}" for k, v in {**d, **extra}.items()]
