"""SASRec baseline (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018).

Trained with cross-entropy over all items (see :mod:`recommenders.sasrec`), early stopping on validation.
"""
from __future__ import annotations

from dataclasses import asdict

from benchmark.splits import TrainData
from identifiers.base import BaselineScheme
from identifiers.registry import register
from recommenders.base import Recommender
from recommenders.sasrec import SASRec, SASRecParams


@register("sasrec")
class SASRecScheme(BaselineScheme):
    """Item-ID sequential baseline; its trained model is also the CF encoder of E4SRec, LETTER and SETRec."""

    citation = "Kang & McAuley, Self-Attentive Sequential Recommendation, ICDM 2018."
    Params = SASRecParams
    uses_backbone = False
    profiles = {"smoke": {"hidden": 32, "layers": 1}, "paper": {"hidden": 64, "layers": 2}}
    train_profiles = {"smoke": {"epochs": 15, "lr": 0.005, "patience": 15}, "quick": {"epochs": 60, "patience": 5},
                      "paper": {"epochs": 300, "patience": 20}}

    def recommender(self, data: TrainData) -> Recommender:
        return SASRec(data.n_items, self.ctx.config.max_history, SASRecParams(**asdict(self.params)))
