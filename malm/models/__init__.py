"""MALM model parts: image / recipe encoders, heads, matching module, predictor, EMA teacher."""

from malm.models.malm import MALM, build_model

__all__ = ["MALM", "build_model"]
