"""Thresholds chosen from known-class validation scores only.

A threshold ``t`` rejects an input as unknown when its score is ``> t``; it is set so
that a chosen fraction of known validation inputs is accepted (score ``<= t``). A score
that is not finite (NaN, +inf or -inf: a damaged model or input) is always unknown
(``rejects``), never known and never an error: one bad image must not fail a batch.
"""

from __future__ import annotations

import math

import numpy as np

from osrkit.errors import ConfigError


def check_accept_rate(accept_rate: float) -> float:
    """Validate a target acceptance rate of known inputs, in (0, 1]."""
    if not (isinstance(accept_rate, (int, float)) and 0.0 < accept_rate <= 1.0):
        raise ConfigError(f"accept rate must be in (0, 1], got {accept_rate!r}")
    return float(accept_rate)


def rejects(scores: np.ndarray, threshold: float) -> np.ndarray:
    """True where an input is unknown: its score exceeds ``threshold`` or is not finite
    (``score > NaN`` and ``NaN > t`` are both False, so a plain comparison would call a
    NaN known). Every decision in osrkit goes through here."""
    scores = np.asarray(scores)
    return ~(np.isfinite(scores) & (scores <= threshold))


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ConfigError("cannot calibrate a threshold on zero known validation scores")
    if not np.isfinite(scores).all():
        raise ConfigError("known validation scores contain NaN or infinity; check the model and data")
    return scores


def threshold_at_accept_rate(known_scores: np.ndarray, accept_rate: float) -> float:
    """The smallest threshold that accepts at least ``accept_rate`` of ``known_scores``."""
    scores = np.sort(_check_scores(known_scores))
    k = max(1, math.ceil(check_accept_rate(accept_rate) * len(scores) - 1e-9))
    return float(scores[k - 1])


def joint_thresholds(known_scores: np.ndarray, accept_rate: float) -> np.ndarray:
    """Thresholds for an OR of several scores (unknown if any score exceeds its threshold).

    ``known_scores`` is ``(n, m)``: n known validation inputs, m scorers. Every scorer
    gets the threshold at the same quantile of its own known distribution, and that
    common quantile is the one at which the OR rule accepts ``accept_rate`` of the
    known inputs. The rejection budget is thus shared equally between the scorers.
    """
    scores = _check_scores(known_scores)
    if scores.ndim != 2:
        raise ConfigError(f"joint calibration needs an (n, m) score matrix, got shape {scores.shape}")
    n = len(scores)
    order = np.sort(scores, axis=0)
    # Rank (1..n) of each score within its own column: an input is accepted at level k
    # iff every one of its ranks is <= k, i.e. iff its largest rank is <= k.
    ranks = np.stack(
        [np.searchsorted(order[:, j], scores[:, j], side="right") for j in range(scores.shape[1])], axis=1
    )
    worst = np.sort(ranks.max(axis=1))
    need = max(1, math.ceil(check_accept_rate(accept_rate) * n - 1e-9))
    k = int(worst[need - 1])
    return order[k - 1].copy()


def accept_rate(scores: np.ndarray, threshold: float) -> float:
    """Fraction of ``scores`` at or below ``threshold`` (accepted as known; a score that is
    not finite is never accepted)."""
    return float(np.mean(~rejects(scores, threshold)))
