"""Loss modules: each returns a dict of named ``*_loss`` terms; the criterion weights them."""

from malm.losses.contrastive import GlobalContrastiveLoss, LocalContrastiveLoss
from malm.losses.criterion import MALMCriterion
from malm.losses.distill import MaskedDistillLoss
from malm.losses.ht import HTTripletLoss, RecipeComponentLoss
from malm.losses.itm import ITMLoss
from malm.losses.triplet import SemanticTripletLoss

__all__ = ["GlobalContrastiveLoss", "HTTripletLoss", "ITMLoss", "LocalContrastiveLoss",
           "MALMCriterion", "MaskedDistillLoss", "RecipeComponentLoss", "SemanticTripletLoss"]
