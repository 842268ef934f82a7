"""A model folder proves its integrity, and scores that are not finite never mean known
(issue 22): damaged weights, NaN thresholds, NaN scores, JSON without NaN."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from osrkit import UNKNOWN, OpenSetRecognizer, TrainConfig
from osrkit.errors import ModelFormatError
from osrkit.evaluation.metrics import open_set_predictions
from osrkit.files.atomic import atomic_write_json
from osrkit.files.integrity import (
    CHECKSUMS_KEY,
    onnx_graph_digest,
    onnx_metadata,
    with_onnx_digest,
)
from osrkit.jobs.predictions import prediction_rows
from osrkit.scorers.calibration import rejects
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.conftest import synthetic_set, synthetic_unknowns

TINY = TrainConfig(epochs=1, ae_epochs=1, batch_size=64, val_size=100, lr=3e-3, ae_lr=3e-3)


@pytest.fixture(scope="module")
def small() -> OpenSetRecognizer:
    """A digit recognizer with an autoencoder and the fusion decision, fitted in seconds."""
    return OpenSetRecognizer().fit(synthetic_set(400), TINY)


@pytest.fixture
def folder(small, tmp_path):
    return small.save_pretrained(tmp_path / "model")


def _damage_weights(file) -> None:
    """Flip bytes in the tensor data of a safetensors file, leaving its header intact."""
    data = bytearray(file.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    for i in range(header, len(data), 97):
        data[i] ^= 0xFF
    file.write_bytes(bytes(data))


def test_saved_folder_records_a_sha256_per_weight_file(folder):
    cfg = json.loads((folder / "config.json").read_text())
    weights = sorted(p.name for p in folder.glob("*.safetensors"))
    assert (
        sorted(cfg[CHECKSUMS_KEY])
        == weights
        == [
            "autoencoder.safetensors",
            "classifier.safetensors",
            "scorers.safetensors",
        ]
    )
    assert all(len(h) == 64 for h in cfg[CHECKSUMS_KEY].values())


@pytest.mark.parametrize("name", ["classifier.safetensors", "autoencoder.safetensors", "scorers.safetensors"])
def test_damaged_weights_are_refused_naming_the_file(folder, name):
    _damage_weights(folder / name)
    with pytest.raises(ModelFormatError, match=rf"{name} does not match the SHA-256.*restore it"):
        OpenSetRecognizer.from_pretrained(folder)


def test_damaged_weights_are_one_line_in_predict(folder, tmp_path, capsys):
    _damage_weights(folder / "classifier.safetensors")
    image = tmp_path / "x.npy"
    np.save(image, synthetic_unknowns(1)[0])
    code, out, err = run_cli(capsys, "predict", folder, image)
    assert code == 2 and out == ""
    assert_one_line_error(err, "classifier.safetensors", "SHA-256", "train the model again")


def test_a_weight_file_not_recorded_is_refused(folder):
    cfg = json.loads((folder / "config.json").read_text())
    del cfg[CHECKSUMS_KEY]["scorers.safetensors"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="scorers.safetensors is not recorded"):
        OpenSetRecognizer.from_pretrained(folder)


def test_folder_without_hashes_loads_unverified(folder, small, caplog):
    cfg = json.loads((folder / "config.json").read_text())
    del cfg[CHECKSUMS_KEY]
    (folder / "config.json").write_text(json.dumps(cfg))
    with caplog.at_level("WARNING", logger="osrkit"):
        model = OpenSetRecognizer.from_pretrained(folder)
    assert "unverified" in caplog.text
    x = synthetic_unknowns(20)
    np.testing.assert_array_equal(model.predict(x), small.predict(x))


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["thresholds"].__setitem__("msp", math.nan),
        lambda c: c["thresholds"].__setitem__("fusion", math.inf),
        lambda c: c.__setitem__("accept_rate", math.nan),
        lambda c: c["scorers"]["fusion"]["member_thresholds"].__setitem__(0, -math.inf),
    ],
    ids=["threshold-nan", "threshold-inf", "accept-rate-nan", "member-threshold-minus-inf"],
)
def test_non_finite_calibration_is_refused(folder, edit, capsys):
    """Refused in one line by the config reader: osrkit writes no NaN/Infinity literal, so
    one is damage, and the model never loads."""
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))  # Python writes NaN/Infinity literals
    with pytest.raises(ModelFormatError, match=r"config\.json holds the literal -?(NaN|Infinity)"):
        OpenSetRecognizer.from_pretrained(folder)
    code, _, err = run_cli(capsys, "predict", folder, folder / "config.json")
    assert code == 2
    assert_one_line_error(err, "config.json")


def test_rejects_treats_every_non_finite_score_as_unknown():
    scores = np.array([0.5, 2.0, np.nan, np.inf, -np.inf, 1.0])
    np.testing.assert_array_equal(rejects(scores, 1.0), [False, True, True, True, True, False])


def test_decide_never_calls_a_non_finite_score_known(small):
    outputs = small.outputs(synthetic_unknowns(4))
    name = small.decision_scorer_
    scores = {name: np.array([np.nan, np.inf, -np.inf, -1e9])}
    labels = small.decide(outputs, name, scores)
    assert labels[:3].tolist() == [UNKNOWN] * 3
    assert labels[3] == outputs.predictions[3]


def test_fusion_with_a_non_finite_member_is_unknown(small):
    fusion = small.fusions["fusion"]
    scores = torch.zeros(3, len(fusion.members), dtype=torch.float64)
    scores[0, 0], scores[1, 1], scores[2, 2] = math.nan, -math.inf, math.inf
    assert torch.isinf(fusion(scores)).all()


def test_nan_scores_give_unknown_rows_with_null_not_nan(small, monkeypatch):
    """The issue's damaged folder: every score NaN was "known, class 0"."""
    real = small.scores_from_outputs

    def nan_scores(outputs):
        return {k: np.full_like(v, np.nan) for k, v in real(outputs).items()}

    monkeypatch.setattr(small, "scores_from_outputs", nan_scores)
    rows = prediction_rows(small, torch.from_numpy(synthetic_unknowns(3)))
    for row in rows:
        assert row["known"] is False and row["class_index"] == UNKNOWN and row["label"] == "unknown"
        assert row["decision"]["score"] is None and row["decision"]["margin"] is None
        assert "not finite" in row["decision"]["reason"]
        assert all(v is None for v in row["scores"].values())
        json.dumps(row, allow_nan=False)  # valid JSON


def test_finite_rows_have_no_reason(small):
    rows = prediction_rows(small, torch.from_numpy(synthetic_unknowns(3)))
    assert all("reason" not in row["decision"] for row in rows)


def test_metrics_call_a_non_finite_score_unknown():
    preds = open_set_predictions(np.array([0, 1, 0]), np.array([0.1, np.nan, np.inf]), 1.0, 2)
    assert preds.tolist() == [0, 2, 2]


def test_json_outputs_write_null_for_nan(tmp_path):
    path = atomic_write_json(tmp_path / "metrics.json", {"auroc": math.nan, "x": [1.0, -math.inf]})
    assert json.loads(path.read_text()) == {"auroc": None, "x": [1.0, None]}
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()


def test_onnx_digest_survives_protobuf_and_detects_change():
    onnx = pytest.importorskip("onnx")
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "g", [x], [y]))
    onnx.helper.set_model_props(model, {"osrkit_format": '"osrkit-onnx"'})
    data = with_onnx_digest(model.SerializeToString())
    parsed = onnx.load_from_string(data)  # still a valid model, the digest one more entry
    meta = {p.key: p.value for p in parsed.metadata_props}
    assert meta["osrkit_graph_sha256"] == json.dumps(onnx_graph_digest(data))
    assert onnx_metadata(data) == meta
    changed = data.replace(b"Identity", b"Identitz")
    assert onnx_graph_digest(changed) != onnx_graph_digest(data)


def test_issue_scenario_unverified_damaged_folder_predicts_unknown_in_valid_json(folder, tmp_path, capsys):
    """The issue's folder: damaged weights, intact header; here also without recorded hashes
    (an old folder), so it loads: its NaN scores now print as null and decide unknown."""
    from PIL import Image

    cfg = json.loads((folder / "config.json").read_text())
    del cfg[CHECKSUMS_KEY]
    (folder / "config.json").write_text(json.dumps(cfg))
    data = bytearray((folder / "classifier.safetensors").read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header:] = b"\xff" * (len(data) - header)  # every weight NaN
    (folder / "classifier.safetensors").write_bytes(bytes(data))
    image = tmp_path / "x.png"
    Image.fromarray(synthetic_unknowns(1)[0]).save(image)
    code, out, err = run_cli(capsys, "predict", folder, image)
    assert code == 0, err
    row = json.loads(out)  # valid JSON: a bare NaN would not parse strictly below
    json.dumps(row, allow_nan=False)
    assert not re.search(r"[:,\[]\s*-?(NaN|Infinity)", out), out  # no bare literal
    assert row["known"] is False and row["label"] == "unknown"
    assert row["decision"]["score"] is None and "not finite" in row["decision"]["reason"]
