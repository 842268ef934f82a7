import copy
import json

import numpy as np
import pytest
import torch

from osrkit import ImageSet
from osrkit.errors import ConfigError, OutputExistsError
from osrkit.evaluation import ReportOptions
from osrkit.evaluation.evaluate import evaluate
from osrkit.jobs.pipeline import check_output_dir, evaluate_to_folder
from osrkit.recognizer.health import Finding, ModelHealth
from tests.conftest import synthetic_set, synthetic_unknowns


def unknown_set(n=150):
    return ImageSet(
        torch.from_numpy(synthetic_unknowns(n)), torch.zeros(n, dtype=torch.long), ["noise"], "noise"
    )


def test_evaluate_metrics_are_consistent(fitted):
    known = synthetic_set(300, seed=11)
    ev = evaluate(fitted, known, unknown_set())
    m = ev.metrics
    assert m["counts"] == {"known": 300, "unknown": 150}
    acc = np.mean(ev.known_outputs.predictions == known.labels.numpy())
    assert m["closed_set_accuracy"] == acc
    for name, sm in m["scorers"].items():
        t = fitted.thresholds_[name]
        assert sm["known_accept_rate"] == np.mean(ev.known_scores[name] <= t)
        assert sm["unknown_reject_rate"] == np.mean(ev.unknown_scores[name] > t)
        cm = np.asarray(sm["confusion_matrix"])
        assert cm.shape == (11, 11) and cm.sum() == 450
        assert cm[10].sum() == 150  # the "unknown" row holds every unknown input
        assert cm[10, 10] == round(sm["unknown_reject_rate"] * 150)
    assert m["thresholds"]["combined_members"].keys() == {"msp", "reconstruction"}


def test_evaluate_to_folder_writes_everything(fitted, tmp_path):
    m = evaluate_to_folder(
        fitted, synthetic_set(200, seed=12), unknown_set(), tmp_path, ReportOptions(embed_samples=120)
    )
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "report.html").is_file()
    assert len(list((tmp_path / "plots").glob("*.png"))) == 5
    assert m["timing_s"]["evaluate"] >= 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["health"] == fitted.health_.to_dict()
    assert ("class='health'" in (tmp_path / "report.html").read_text()) == (not fitted.health_.ok)


@pytest.mark.parametrize("findings", [(), (Finding("accuracy", "at chance", "train longer"),)])
def test_metrics_say_whether_the_model_is_healthy(fitted, findings):
    model = copy.copy(fitted)  # the same networks, another health
    model.health_ = ModelHealth(findings, ("accuracy",), {"validation_accuracy": 0.5})
    health = evaluate(model, synthetic_set(50, seed=12), unknown_set(30)).metrics["health"]
    assert health["ok"] is (not findings)
    assert health["warnings"] == [f.to_dict() for f in findings]
    model.health_ = None  # a model folder saved before the checks existed
    assert "health" not in evaluate(model, synthetic_set(50, seed=12), unknown_set(30)).metrics


def test_check_output_dir(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_output_dir(tmp_path, overwrite=False)
    with pytest.raises(OutputExistsError, match="not in an osrkit run folder"):  # not osrkit's metrics
        check_output_dir(tmp_path, overwrite=True)
    (tmp_path / "metrics.json").write_text('{"closed_set_accuracy": 1.0, "counts": {}, "scorers": {}}')
    check_output_dir(tmp_path, overwrite=True)
    assert (tmp_path / "metrics.json").exists()  # old outputs stay until new ones are complete
    deep = check_output_dir(tmp_path / "new" / "deep", overwrite=False)
    assert deep == tmp_path / "new" / "deep" and not (tmp_path / "new").exists()  # nothing created yet
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_output_dir(tmp_path / "file", overwrite=True)
    with pytest.raises(ConfigError, match="cannot write"):
        check_output_dir(tmp_path / "file" / "sub", overwrite=True)


def test_evaluate_refuses_other_classes(fitted):
    other = ImageSet(torch.zeros(5, 28, 28, dtype=torch.uint8), torch.zeros(5), ["a"], "other")
    with pytest.raises(ConfigError, match="differ"):
        evaluate(fitted, other, unknown_set())
