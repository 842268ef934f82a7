import functools
import json

import numpy as np
import pytest
import torch

from osrkit.errors import ConfigError, ModelFormatError
from osrkit.scorers import (
    SCORERS,
    ClassReconstructionScorer,
    CombinedScorer,
    EnergyScorer,
    FusionScorer,
    KNNScorer,
    LogitKnnFusionScorer,
    MahalanobisScorer,
    MaxLogitScorer,
    ModelOutputs,
    MSPScorer,
    ReconFusionScorer,
    ReconstructionScorer,
    create_scorer,
    is_fusion,
    kth_largest_column,
    list_scorers,
    scorer_from_state,
)


def outputs(logits, recon=None) -> ModelOutputs:
    logits = np.asarray(logits, dtype=np.float32)
    recon = np.zeros(len(logits)) if recon is None else np.asarray(recon, dtype=np.float32)
    return ModelOutputs(logits, np.zeros((len(logits), 4), np.float32), recon)


def test_msp_sign_shape_and_value():
    out = outputs([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 1.0, 0.0]])
    s = MSPScorer().score(out)
    assert s.shape == (3,)
    p = np.exp([2.0, 1.0, 0.0]) / np.exp([2.0, 1.0, 0.0]).sum()
    assert s[1] == pytest.approx(2 / 3)
    assert s[2] == pytest.approx(1 - p.max())
    assert s[0] < s[2] < s[1]  # confident < unsure < uniform


def test_msp_keeps_saturated_confidences_apart():
    # float32 softmax rounds both to exactly 1.0; the scorer must still order them
    s = MSPScorer().score(outputs([[40.0, 0.0], [30.0, 0.0]]))
    assert 0 < s[0] < s[1]
    assert s[0] == pytest.approx(np.exp(-40.0), rel=1e-6)


def test_reconstruction_passes_error_through():
    s = ReconstructionScorer().score(outputs([[0.0, 1.0]] * 3, recon=[0.1, 0.5, 0.01]))
    np.testing.assert_allclose(s, [0.1, 0.5, 0.01], rtol=1e-6)


def known_outputs(n=4000, seed=0) -> ModelOutputs:
    rng = np.random.default_rng(seed)
    logits = np.zeros((n, 10), np.float32)
    logits[np.arange(n), rng.integers(0, 10, n)] = rng.normal(8, 2, n)
    return outputs(logits, recon=rng.lognormal(-5, 0.4, n))


def test_combined_score_above_one_is_exactly_the_or_rule():
    fit_on = known_outputs()
    comb = CombinedScorer().fit(fit_on, accept_rate=0.95)
    t = comb.member_thresholds()
    test = known_outputs(seed=1)
    or_rule = (MSPScorer().score(test) > t["msp"]) | (
        ReconstructionScorer().score(test) > t["reconstruction"]
    )
    np.testing.assert_array_equal(comb.score(test) > 1.0, or_rule)
    assert abs(np.mean(comb.score(fit_on) <= 1.0) - 0.95) < 0.002


def test_combined_flags_either_kind_of_unknown():
    comb = CombinedScorer().fit(known_outputs())
    confident_but_unfamiliar = outputs([[12.0] + [0.0] * 9], recon=[0.5])
    familiar_but_unsure = outputs([[1.0] * 10], recon=[np.exp(-5)])
    typical = outputs([[8.0] + [0.0] * 9], recon=[np.exp(-5)])
    assert comb.score(confident_but_unfamiliar)[0] > 1
    assert comb.score(familiar_but_unsure)[0] > 1
    assert comb.score(typical)[0] < 1


def test_combined_state_roundtrip_and_unfitted_error():
    comb = CombinedScorer().fit(known_outputs())
    again = create_scorer("combined").set_state(comb.get_state())
    out = known_outputs(seed=3)
    np.testing.assert_array_equal(comb.score(out), again.score(out))
    with pytest.raises(ConfigError, match="not fitted"):
        CombinedScorer().score(out)


def test_unknown_scorer_name():
    with pytest.raises(ConfigError, match="unknown scorer 'nope'; registered scorers: class_reconstruction,"):
        create_scorer("nope")
    with pytest.raises(ConfigError, match="no parameter 'q'"):
        create_scorer("knn", q=3)


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5, 0.95, 0.999])
def test_combined_equals_or_rule_at_any_accept_rate(rate):
    comb = CombinedScorer().fit(known_outputs(), accept_rate=rate)
    t = comb.member_thresholds()
    test = known_outputs(seed=2)
    or_rule = (MSPScorer().score(test) > t["msp"]) | (
        ReconstructionScorer().score(test) > t["reconstruction"]
    )
    np.testing.assert_array_equal(comb.score(test) > 1.0, or_rule)


def test_combined_handles_exact_zero_scores():
    comb = CombinedScorer().fit(known_outputs())
    out = outputs([[1000.0] + [0.0] * 9], recon=[0.0])  # MSP underflows to exactly 0
    assert np.isfinite(comb.score(out)).all() and comb.score(out)[0] < 1


# ----------------------------------------------------------------------------- new scorers
def feature_outputs(features, labels=None, logits=None, images=None) -> ModelOutputs:
    features = np.asarray(features, dtype=np.float32)
    n = len(features)
    if logits is None:
        logits = np.zeros((n, 3), np.float32)
        if labels is not None:
            logits[np.arange(n), labels] = 5.0
    return ModelOutputs(np.asarray(logits, np.float32), features, np.ones(n, np.float32), images)


def test_max_logit_and_energy_by_hand():
    out = outputs([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]])
    np.testing.assert_allclose(MaxLogitScorer().score(out), [-3.0, -0.5], rtol=1e-12)
    by_hand = [
        -np.log(np.exp(1.0) + np.exp(2.0) + np.exp(3.0)),
        -np.log(np.exp(-1.0) + np.exp(0.5) + np.exp(0.0)),
    ]
    np.testing.assert_allclose(EnergyScorer().score(out), by_hand, rtol=1e-12)
    assert EnergyScorer().score(outputs([[1000.0, 0.0]]))[0] == pytest.approx(-1000.0)  # no overflow
    assert not MaxLogitScorer.log_scale and not EnergyScorer.log_scale


def two_clusters(n=600, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    means = np.zeros((2, dim))
    means[1, 0] = 6.0
    scale = np.linspace(0.5, 2.0, dim)  # anisotropic: Mahalanobis differs from Euclidean
    feats = means[labels] + rng.normal(size=(n, dim)) * scale
    return feats, labels, means


def test_mahalanobis_matches_ledoit_wolf_by_hand():
    from sklearn.covariance import LedoitWolf

    feats, labels, means = two_clusters()
    scorer = MahalanobisScorer().fit(feature_outputs(feats, labels), labels=labels)
    probe = np.array([means[0], means[1], means[0] + 3.0, [40.0] * 6])
    s = scorer.score(feature_outputs(probe))
    assert s[0] < s[2] < s[3] and s[1] < s[2]  # at a class mean < off it < far away
    f32 = feats.astype(np.float32).astype(np.float64)
    mu = np.stack([f32[labels == c].mean(0) for c in (0, 1)])
    precision = LedoitWolf(assume_centered=True).fit(f32 - mu[labels]).precision_
    p32 = probe.astype(np.float32).astype(np.float64)
    d = np.stack([np.einsum("nd,de,ne->n", p32 - m, precision, p32 - m) for m in mu], 1)
    np.testing.assert_allclose(s, np.sqrt(d.min(1)), rtol=1e-6, atol=1e-6)
    assert MahalanobisScorer.log_scale and MahalanobisScorer.fits_on_reference


def test_mahalanobis_survives_dead_feature_units():
    feats, labels, means = two_clusters()
    feats[:, 2] = 0.0  # a dead ReLU unit: singular empirical covariance
    scorer = MahalanobisScorer().fit(feature_outputs(feats, labels), labels=labels)
    probe = means[:1].copy()
    awake = probe.copy()
    awake[0, 2] = 1.0
    s = scorer.score(feature_outputs(np.concatenate([probe, awake])))
    assert np.isfinite(s).all() and s[1] > 10 * max(s[0], 1e-3)


def brute_force_knn(bank, queries, k):
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    d = np.linalg.norm(unit(queries)[:, None, :] - unit(bank)[None, :, :], axis=2)
    return np.sort(d, axis=1)[:, k - 1]


def test_knn_equals_brute_force_in_any_chunking():
    rng = np.random.default_rng(0)
    bank = np.abs(rng.normal(size=(300, 8)))
    queries = np.abs(rng.normal(size=(50, 8)))
    scorer = KNNScorer(k=5).fit(feature_outputs(bank))
    expected = brute_force_knn(bank.astype(np.float32), queries.astype(np.float32), 5)
    # float32 in torch against float32 in numpy: 1.6e-7 relative measured (oneDNN on/off,
    # 1/2 torch and BLAS threads); 10x
    np.testing.assert_allclose(scorer.score(feature_outputs(queries)), expected, rtol=2e-6, atol=1e-7)
    scorer.chunk_size = 7  # chunks of 7 and a last one of 1
    np.testing.assert_allclose(scorer.score(feature_outputs(queries)), expected, rtol=2e-6, atol=1e-7)


def test_knn_point_in_the_bank_cloud_scores_lower_than_a_far_one():
    feats, labels, means = two_clusters()
    feats = np.abs(feats)
    scorer = KNNScorer(k=10).fit(feature_outputs(feats))
    far = np.zeros((1, 6))
    far[0, 5] = 1.0  # a direction no known feature points to
    s = scorer.score(feature_outputs(np.concatenate([np.abs(means[1:]), far])))
    assert s[0] < s[1]


def test_knn_bank_is_a_seeded_subsample():
    feats = np.random.default_rng(1).normal(size=(500, 4))
    a = KNNScorer(k=3, bank_size=100, seed=5).fit(feature_outputs(feats))
    b = KNNScorer(k=3, bank_size=100, seed=5).fit(feature_outputs(feats))
    assert len(a.bank_) == 100 and len(np.unique(a.bank_index_)) == 100
    np.testing.assert_array_equal(a.bank_index_, b.bank_index_)
    unit = feats[a.bank_index_] / np.linalg.norm(feats[a.bank_index_], axis=1, keepdims=True)
    np.testing.assert_allclose(a.bank_.numpy(), unit, rtol=2e-6)  # float32: 1.6e-7 measured (as above); 10x
    with pytest.raises(ConfigError, match="at least 3"):
        KNNScorer(k=3).fit(feature_outputs(feats[:2]))


def subspace_images(seed=0, n=200, p=784, dims=5):
    """Two classes, each the mean plus a random mix of its own ``dims`` orthonormal
    directions; returns images, labels, the class means and bases."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(p, 2 * dims + 3)))
    means = np.stack([q[:, -1] * 3 + 0.5, q[:, -2] * 3 + 0.5])
    bases = [q[:, :dims], q[:, dims : 2 * dims]]
    labels = np.arange(n) % 2
    images = np.stack([means[c] + bases[c] @ rng.normal(size=dims) for c in labels])
    return images.astype(np.float32), labels, means, bases, q[:, -3]


def test_class_reconstruction_subspaces():
    images, labels, means, bases, orthogonal = subspace_images()
    out = feature_outputs(np.zeros((len(images), 2)), labels, images=images)
    scorer = ClassReconstructionScorer(n_components=5).fit(out, labels=labels)
    inside = means[0] + bases[0] @ np.array([2.0, -1.0, 0.5, 0.0, 1.0])  # a new image of class 0
    away = means[1] + 4.0 * orthogonal  # orthogonal to both classes' subspaces and means
    probe = np.stack([inside, away]).astype(np.float32)
    s = scorer.score(feature_outputs(np.zeros((2, 2)), images=probe))
    assert s[0] == pytest.approx(0.0, abs=1e-9)
    # the best class is class 1, and its residual is the orthogonal part, 16 / 784
    assert s[1] == pytest.approx(16.0 / 784, rel=1e-4)
    assert scorer.components_ == [5, 5]


def test_class_reconstruction_needs_pixels_and_caps_components():
    images, labels, *_ = subspace_images(n=12)
    with pytest.raises(ConfigError, match="needs the input pixels"):
        ClassReconstructionScorer().fit(feature_outputs(np.zeros((12, 2)), labels), labels=labels)
    out = feature_outputs(np.zeros((12, 2)), labels, images=images)
    scorer = ClassReconstructionScorer().fit(out, labels=labels)  # 6 images per class
    assert scorer.components_ == [5, 5] and scorer.bases_.shape == (2, 784, 32)
    assert np.isfinite(scorer.score(out)).all() and scorer.score(out).max() < 1e-9


def test_model_outputs_subset_and_concat_carry_images():
    a = feature_outputs(np.ones((3, 2)), images=np.zeros((3, 784), np.float32))
    b = feature_outputs(np.ones((2, 2)), images=np.ones((2, 784), np.float32))
    both = ModelOutputs.concat([a, b])
    assert both.images.shape == (5, 784) and both.images[3:].min() == 1.0
    assert both.subset(np.array([4, 0])).images[:, 0].tolist() == [1.0, 0.0]
    assert ModelOutputs.concat([a, feature_outputs(np.ones((1, 2)))]).images is None
    assert feature_outputs(np.ones((2, 2))).subset(np.array([1])).images is None


# ----------------------------------------------------------------------------- fusion
@functools.lru_cache(maxsize=8)
def rich_outputs(n, seed):
    """Known-like outputs for every base scorer: logits, features, errors and pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3)).astype(np.float32)
    logits[np.arange(n), labels] += rng.normal(6, 2, n).astype(np.float32)
    feats = np.abs(rng.normal(0, 1, (n, 5)) + 3 * np.eye(5)[labels]).astype(np.float32)
    images = np.clip(rng.normal(0.3, 0.1, (n, 784)) + 0.3 * (np.arange(784) % 3 == labels[:, None]), 0, 1)
    recon = rng.lognormal(-5, 0.4, n).astype(np.float32)
    return ModelOutputs(logits, feats, recon, images.astype(np.float32)), labels


def fitted_bases(seed=10):
    train, labels = rich_outputs(3000, seed)
    scorers = {name: create_scorer(name) for name in list_scorers() if not is_fusion(name)}
    for s in scorers.values():
        if s.fits_on_reference:
            s.fit(train, labels=labels)
    return scorers


@pytest.fixture(scope="module")
def bases():
    return fitted_bases()


@pytest.mark.parametrize("rate", [0.5, 0.9, 0.95])
def test_fusion_accepts_the_target_rate_of_held_out_knowns(bases, rate):
    fusion = FusionScorer().bind(bases)
    fusion.fit(rich_outputs(20000, seed=1)[0], accept_rate=rate)
    held_out = rich_outputs(20000, seed=2)[0]
    assert abs(np.mean(fusion.score(held_out) <= 1.0) - rate) < 0.01


def test_fusion_above_one_is_exactly_the_or_rule_with_log_and_linear_members(bases):
    names = ["energy", "max_logit", "knn", "class_reconstruction", "reconstruction"]
    members = [bases[m] for m in names]
    fusion = FusionScorer(names).bind(bases).fit(rich_outputs(4000, seed=3)[0], accept_rate=0.9)
    test = rich_outputs(3000, seed=4)[0]
    t = fusion.member_thresholds()
    member_scores = {m.name: m.score(test) for m in members}
    or_rule = np.zeros(len(test), bool)
    for name, s in member_scores.items():
        or_rule |= s > t[name]
    np.testing.assert_array_equal(fusion.score(test) > 1.0, or_rule)
    assert (member_scores["energy"] < 0).mean() > 0.9  # linear members may be negative
    norm = fusion.normalised(test)
    med = dict(zip(fusion.members, fusion.medians_.numpy()))
    for j, m in enumerate(members):
        s, tt, mm = member_scores[m.name], t[m.name], med[m.name]
        if m.log_scale:
            expected = 1 + (np.log(s) - np.log(tt)) / abs(np.log(tt) - np.log(mm))
        else:
            expected = 1 + (s - tt) / abs(tt - mm)
        np.testing.assert_allclose(norm[:, j], expected, rtol=1e-12, err_msg=m.name)
    assert fusion.logs[0].tolist() == [False, False, True, True, True]
    # precomputed member scores give the same fused score
    np.testing.assert_array_equal(fusion.score(test, member_scores), fusion.score(test))


def old_combined_score(known: ModelOutputs, test: ModelOutputs, rate: float) -> np.ndarray:
    """The seed's CombinedScorer, verbatim."""
    from osrkit.scorers.calibration import joint_thresholds

    def member_scores(o):
        return np.stack([MSPScorer().score(o), ReconstructionScorer().score(o)], axis=1)

    scores = member_scores(known)
    thresholds, medians = joint_thresholds(scores, rate), np.median(scores, axis=0)
    log_s = np.log(np.maximum(member_scores(test), 1e-300))
    log_m = np.log(np.maximum(medians, 1e-300))
    log_t = np.log(np.maximum(thresholds, 1e-300))
    span = np.maximum(np.abs(log_t - log_m), 1e-12)
    return (1.0 + (log_s - log_t) / span).max(axis=1)


@pytest.mark.parametrize("rate", [0.5, 0.95])
def test_combined_equals_the_seeds_formula(rate):
    known, test = known_outputs(), known_outputs(seed=5)
    comb = CombinedScorer().fit(known, accept_rate=rate)
    # torch's float64 log and numpy's (glibc's, or numpy's AVX-512 code) may differ in the
    # last bit: every log moved by one ulp moved the scores by up to 1.6e-14; 10x
    seed = old_combined_score(known, test, rate)
    np.testing.assert_allclose(comb.score(test), seed, rtol=2e-13, atol=2e-13)
    assert set(comb.get_state()) == {"members", "member_thresholds", "medians"}
    assert comb.get_state()["members"] == ["msp", "reconstruction"] and comb.get_arrays() == {}


def test_registered_fusions_are_predeclared():
    assert CombinedScorer.DEFAULT_MEMBERS == ("msp", "reconstruction")
    # osrkit 0.1's seven base scorers; later scorers (vim, react) do not change it
    assert FusionScorer.DEFAULT_MEMBERS == (
        "msp",
        "max_logit",
        "energy",
        "mahalanobis",
        "knn",
        "reconstruction",
        "class_reconstruction",
    )
    assert ReconFusionScorer.DEFAULT_MEMBERS == ("mahalanobis", "reconstruction", "class_reconstruction")
    assert LogitKnnFusionScorer.DEFAULT_MEMBERS == ("max_logit", "knn")  # the pretrained backbones'
    assert {n for n in SCORERS if is_fusion(n)} == {"combined", "fusion", "fusion_recon", "max_logit_knn"}
    for name in SCORERS:
        assert SCORERS[name].__doc__


def test_every_scorer_state_roundtrips(bases):
    known, test = rich_outputs(2000, seed=6)[0], rich_outputs(500, seed=7)[0]
    fitted = dict(bases)
    for name in SCORERS:
        if is_fusion(name):
            fitted[name] = create_scorer(name).bind(bases).fit(known)
    for name, scorer in fitted.items():
        state = json.loads(json.dumps(scorer.get_state()))  # JSON-serialisable
        arrays = {k: v.copy() for k, v in scorer.get_arrays().items()}
        again = scorer_from_state(name, state, arrays)
        if is_fusion(name):
            if any(m.fits_on_reference for m in again.member_scorers):
                with pytest.raises(ConfigError, match="not fitted"):
                    again.score(test)
            again.bind(bases)
        np.testing.assert_array_equal(again.score(test), scorer.score(test), err_msg=name)


def test_fusion_bind_and_damaged_state(bases):
    fusion = create_scorer("fusion_recon")
    with pytest.raises(ConfigError, match="needs the fitted scorer 'mahalanobis'"):
        fusion.bind({"reconstruction": bases["reconstruction"]})
    with pytest.raises(ModelFormatError, match="lacks the array 'bank'"):
        create_scorer("knn").set_state({"k": 3}, {})
    with pytest.raises(ModelFormatError, match="one threshold and median per member"):
        create_scorer("combined").set_state({"members": ["msp"], "member_thresholds": [1, 2], "medians": [1]})
    with pytest.raises(ConfigError, match="at least one member"):
        FusionScorer([])
    with pytest.raises(ConfigError, match="is itself a fusion"):
        FusionScorer(["msp", "combined"])


def test_class_reconstruction_expansion_matches_direct_residuals(bases):
    test = rich_outputs(500, seed=8)[0]
    scorer = bases["class_reconstruction"]
    x = test.images.astype(np.float64)
    res = []
    for mean, basis in zip(scorer.means_.numpy(), scorer.bases_.numpy()):
        d = x - mean
        res.append((d * d).sum(1) - ((d @ basis) ** 2).sum(1))
    np.testing.assert_allclose(scorer.score(test), np.min(res, axis=0) / 784, rtol=1e-9)


@pytest.mark.parametrize("b, k, group", [(1000, 5, 8), (1003, 10, 8), (37, 5, 8), (64, 1, 4), (12, 5, 2)])
def test_kth_largest_column_equals_topk(b, k, group):
    rng = np.random.default_rng(b)
    values = torch.from_numpy(rng.random((40, b)).astype(np.float32))
    ties = torch.from_numpy(rng.integers(0, 4, (40, b)).astype(np.float32))  # many exact ties
    for v in (values, ties, -values):
        col = kth_largest_column(v, k, group)
        expected = v.topk(k, dim=1).values[:, -1]
        np.testing.assert_array_equal(v.gather(1, col[:, None])[:, 0].numpy(), expected.numpy())
