"""What a prediction says about an image (``osrkit.jobs.predictions``): ``decided_by``
only where a fusion has members that decide."""

import pytest
import torch

import osrkit
from osrkit import OpenSetRecognizer
from osrkit.jobs.predictions import prediction_rows
from tests.conftest import synthetic_set, synthetic_unknowns

ROW_KEYS = {"label", "class_index", "known", "decision", "scores", "thresholds", "margins"}


@pytest.fixture(scope="module")
def without_fusion() -> OpenSetRecognizer:
    model = OpenSetRecognizer(
        decision_scorer="msp",
        scorers=["msp", "energy"],
        autoencoder=False,
        backbone_options={"channels": [8, 8, 16], "feature_dim": 32},
    )
    return model.fit(synthetic_set(300), {"epochs": 1, "batch_size": 64, "val_size": 100})


def images():
    return torch.cat([synthetic_set(4, seed=5).images, torch.from_numpy(synthetic_unknowns(4)).unsqueeze(1)])


def test_a_model_without_a_fusion_says_nothing_of_deciding_members(without_fusion):
    """Every row of such a model held ``"decided_by": {}``."""
    assert without_fusion.fusions == {}
    for row in prediction_rows(without_fusion, images()):
        assert set(row) == ROW_KEYS
        assert set(row["decision"]) == {"scorer", "score", "threshold", "margin"}
    row = osrkit.explain(without_fusion, images()[0])
    assert "decided_by" not in row and "decided_by" not in row["decision"]


@pytest.mark.parametrize("scorer", [None, "msp"])
def test_a_model_with_a_fusion_names_the_member_that_decided(fitted, scorer):
    for row in prediction_rows(fitted, images(), scorer):
        assert set(row) == ROW_KEYS | {"decided_by"}
        assert set(row["decided_by"]) == set(fitted.fusions)
        deciding = row["decision"]["scorer"]
        assert (deciding in fitted.fusions) == (scorer is None)  # both branches below are taken
        if deciding in fitted.fusions:
            assert row["decision"]["decided_by"] == row["decided_by"][deciding]
        else:  # the fusion is fitted beside the deciding scorer: its member is still named
            assert "decided_by" not in row["decision"]
