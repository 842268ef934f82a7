"""Every registered scorer, checked the same way (parametrized over ``list_scorers()``,
so a new scorer is picked up by registering it): sign, shape and dtype, save/load
bit-identity, ONNX agreement, fitting on known data only, fusion normalisation."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from osrkit.errors import ConfigError
from osrkit.export.onnx import _quiet_export
from osrkit.scorers import (
    SIGNALS,
    FusionScorer,
    ModelOutputs,
    Scorer,
    create_scorer,
    is_fusion,
    list_scorers,
    scorer_from_state,
)

K, D, P = 3, 16, 64  # classes, feature width, pixel values
HEAD_W = np.zeros((K, D))
HEAD_W[np.arange(K), np.arange(K)] = 2.0  # the class layer reads the first K units
HEAD_B = np.array([0.1, -0.2, 0.05])
CLASS_PIXELS = np.random.default_rng(99).random((K, P))


def synthetic(n: int, seed: int, far: bool = False) -> tuple[ModelOutputs, np.ndarray]:
    """Known-like outputs (class blobs, confident linear logits, small reconstruction
    errors, pixels near their class's image) or far-away ones (features in units the
    class layer ignores, flat logits, large errors, random pixels)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % K
    if far:
        feats = np.abs(rng.normal(0, 0.3, (n, D)))
        feats[:, 8:] += 3.0
        recon = rng.lognormal(-1, 0.3, n)
        pixels = rng.random((n, P))
    else:
        feats = np.abs(rng.normal(0, 0.3, (n, D)))
        feats[:, :8] += 1.0  # active units, as ReLU features are (not one-hot)
        feats[np.arange(n), labels] += 3.0 + rng.normal(0, 0.3, n)
        recon = rng.lognormal(-5, 0.3, n)
        pixels = np.clip(CLASS_PIXELS[labels] + rng.normal(0, 0.05, (n, P)), 0, 1)
    feats = feats.astype(np.float32)
    logits = (feats.astype(np.float64) @ HEAD_W.T + HEAD_B).astype(np.float32)
    out = ModelOutputs(logits, feats, recon.astype(np.float32), pixels.astype(np.float32))
    return out, labels


def only(out: ModelOutputs, signals: frozenset[str]) -> ModelOutputs:
    """``out`` without the optional signals a scorer did not declare (as the recognizer
    computes them: logits and features always, the others only when read)."""
    return ModelOutputs(
        out.logits,
        out.features,
        out.recon_error if "recon_error" in signals else None,
        out.images if "pixels" in signals else None,
    )


def fit_all(names: list[str]) -> dict[str, Scorer]:
    """``names`` fitted as the recognizer fits them (members first, fusions bound), each
    seeing only the signals it declares."""
    train, labels = synthetic(900, seed=0)
    val, _ = synthetic(600, seed=1)
    head = (torch.from_numpy(HEAD_W), torch.from_numpy(HEAD_B))
    fitted: dict[str, Scorer] = {}
    wanted = list(names)
    for name in names:
        if is_fusion(name):
            wanted += [m for m in create_scorer(name).members if m not in wanted]
    for name in wanted:
        if not is_fusion(name):
            s = create_scorer(name)
            if s.fits_on_reference:
                s.fit(only(train, s.needs()), labels=labels, head=head if s.needs_head else None)
            else:
                s.fit(only(val, s.needs()))
            fitted[name] = s
    for name in wanted:
        if is_fusion(name):
            fitted[name] = create_scorer(name).bind(fitted).fit(val, accept_rate=0.95)
    return fitted


@functools.cache
def fitted_scorers() -> dict[str, Scorer]:
    return fit_all(list_scorers())


def scores_of(scorer: Scorer, out: ModelOutputs, fitted: dict[str, Scorer]) -> np.ndarray:
    if isinstance(scorer, FusionScorer):
        return scorer.score(None, {m: fitted[m].score(only(out, fitted[m].needs())) for m in scorer.members})
    return scorer.score(only(out, scorer.needs()))


@pytest.mark.parametrize("name", list_scorers())
def test_known_inputs_score_lower_than_far_away_ones(name):
    fitted = fitted_scorers()
    scorer = fitted[name]
    known = scores_of(scorer, synthetic(300, seed=5)[0], fitted)
    far = scores_of(scorer, synthetic(300, seed=6, far=True)[0], fitted)
    assert np.median(known) < np.median(far)
    auroc = (far[:, None] > known[None, :]).mean()
    assert auroc > 0.9, f"{name}: AUROC {auroc:.3f} on far-away synthetic inputs"


@pytest.mark.parametrize("name", list_scorers())
def test_shape_dtype_and_documentation(name):
    scorer = fitted_scorers()[name]
    for n in (1, 7, 300):
        s = scores_of(scorer, synthetic(n, seed=7)[0], fitted_scorers())
        assert s.shape == (n,) and s.dtype == np.float64 and np.isfinite(s).all()
    cls = type(scorer)
    assert cls.__doc__ and len(cls.__doc__.strip()) > 80
    assert scorer.needs() and scorer.needs() <= set(SIGNALS)  # a fusion: its members' signals


@pytest.mark.parametrize("name", list_scorers())
def test_save_and_load_give_bit_identical_scores(name):
    fitted = fitted_scorers()
    scorer = fitted[name]
    state = json.loads(json.dumps(scorer.get_state()))  # JSON-serialisable
    arrays = {k: np.array(v) for k, v in scorer.get_arrays().items()}
    again = scorer_from_state(name, state, arrays)
    assert again.get_params() == scorer.get_params()
    if isinstance(again, FusionScorer):
        again.bind(fitted)
    test = synthetic(200, seed=8)[0]
    np.testing.assert_array_equal(scores_of(again, test, fitted), scores_of(scorer, test, fitted))


@pytest.mark.parametrize("name", list_scorers())
def test_fit_reads_known_data_only_and_scoring_changes_nothing(name):
    """``fit`` takes outputs of known images (and their labels) and nothing else; scoring
    unknown inputs afterwards leaves the fitted state as it was."""
    fitted = fit_all([name])
    scorer = fitted[name]
    state, arrays = json.dumps(scorer.get_state()), scorer.get_arrays()
    scores_of(scorer, synthetic(200, seed=9, far=True)[0], fitted)
    assert json.dumps(scorer.get_state()) == state
    for k, v in scorer.get_arrays().items():
        np.testing.assert_array_equal(v, arrays[k])


@pytest.mark.parametrize("name", [n for n in list_scorers() if not is_fusion(n)])
def test_fusion_normalisation_of_each_base_scorer(name):
    """As the only member of a fusion: 0 at the known median, 1 at the threshold, so
    ``> 1`` is exactly the member's own threshold rule; log-scale members are positive."""
    fitted = fitted_scorers()
    val = synthetic(601, seed=1)[0]  # an odd count: the median is one of the scores
    fusion = FusionScorer([name]).bind(fitted).fit(val, accept_rate=0.9)
    member = fitted[name].score(val)
    if fitted[name].log_scale:
        assert (member > 0).all(), f"{name} declares log_scale but gives non-positive scores"
    norm = fusion.normalised(val)[:, 0]
    assert abs(np.median(norm)) < 1e-6
    test = synthetic(400, seed=10)[0]
    t = fusion.member_thresholds()[name]
    np.testing.assert_array_equal(fusion.score(test) > 1.0, fitted[name].score(test) > t)


class _Standalone(torch.nn.Module):
    """One scorer as a graph of its own: base scorers on the signals, fusions on the
    members' scores."""

    def __init__(self, scorer: Scorer) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, logits, features, recon_error, pixels, member_scores):
        if isinstance(self.scorer, FusionScorer):
            return self.scorer(member_scores)
        signals = {"logits": logits, "features": features, "recon_error": recon_error, "pixels": pixels}
        return self.scorer({k: signals[k] for k in self.scorer.signals})


@pytest.mark.parametrize("name", list_scorers())
def test_onnx_graph_runs_the_same_forward(name, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    fitted = fitted_scorers()
    scorer = fitted[name]
    test = synthetic(50, seed=11)[0]
    members = [fitted[m].score(test) for m in getattr(scorer, "members", [name])]
    inputs = (
        torch.from_numpy(test.logits),
        torch.from_numpy(test.features),
        torch.from_numpy(test.recon_error),
        torch.from_numpy(test.images),
        torch.from_numpy(np.stack(members, axis=1)),
    )
    batch = torch.export.Dim("batch")
    with _quiet_export(), torch.no_grad():
        program = torch.onnx.export(
            _Standalone(scorer).eval(),
            inputs,
            dynamo=True,
            input_names=["logits", "features", "recon_error", "pixels", "member_scores"],
            dynamic_shapes=tuple({0: batch} for _ in inputs),
            verbose=False,
        )
    path = tmp_path / f"{name}.onnx"
    program.save(str(path))
    ort.disable_telemetry_events()  # as osrkit does wherever it builds a session
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    names = [i.name for i in session.get_inputs()]
    onnx_scores = session.run(None, {k: feed[k] for k in names})[0]
    np.testing.assert_allclose(onnx_scores, scores_of(scorer, test, fitted), rtol=1e-4, atol=1e-6)


def test_scorer_hyper_parameters_are_constructor_arguments_saved_with_it():
    knn = create_scorer("knn", k=7, bank_size=400, seed=3)
    train, _ = synthetic(900, seed=0)
    knn.fit(train)
    assert knn.get_state()["k"] == 7 and len(knn.bank_) == 400
    again = scorer_from_state("knn", json.loads(json.dumps(knn.get_state())), knn.get_arrays())
    assert (again.k, again.bank_size, again.seed) == (7, 400, 3)
    assert create_scorer("energy", temperature=2.0).get_params() == {"temperature": 2.0}
    assert create_scorer("fusion", members=["msp", "knn"]).members == ["msp", "knn"]
    with pytest.raises(ConfigError, match="no parameter 'kk'.*its parameters: k, bank_size, seed"):
        create_scorer("knn", kk=3)


def test_a_fusion_member_that_was_not_fitted_is_one_line():
    fusion = create_scorer("fusion", members=["msp", "knn"])
    with pytest.raises(ConfigError, match="its member 'knn' is not fitted"):
        fusion.fit(synthetic(100, seed=1)[0])
