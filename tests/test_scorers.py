import numpy as np
import pytest

from osrkit.errors import ConfigError, ModelFormatError
from osrkit.scorers import (
    CombinedScorer,
    ModelOutputs,
    MSPScorer,
    ReconstructionScorer,
    make_scorer,
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
    again = make_scorer("combined").set_state(comb.get_state())
    out = known_outputs(seed=3)
    np.testing.assert_array_equal(comb.score(out), again.score(out))
    with pytest.raises(ConfigError, match="not fitted"):
        CombinedScorer().score(out)


def test_unknown_scorer_name():
    with pytest.raises(ModelFormatError, match="unknown scorer"):
        make_scorer("nope")


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
