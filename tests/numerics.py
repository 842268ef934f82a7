"""Comparing results of different arithmetic (ONNX Runtime against torch, a fast path against
the reference, another CPU's kernels): scores agree within a tolerance, decisions wherever
the score is farther than that tolerance from its threshold."""

from __future__ import annotations

import numpy as np

from osrkit.scorers import is_fusion

# ONNX Runtime's float32 kernels (and its Conv+BatchNorm fusion) round differently from
# torch's reference path, and both differ between CPUs; the scores, computed in float64
# from those outputs, amplify that by their own factors. Per score, 10x the worst
# |onnx - torch| / max(|score|, 1) measured (torch: oneDNN on/off, 1/2 threads; ONNX
# Runtime: 1/2 threads, graph optimisations on/off, batch 7/all; probe images, MNIST and
# CIFAR-10; models trained in float32 and in bfloat16): vim 8.6e-5, fusions 1.2e-5 (combined
# 3.5e-6), mahalanobis 4.4e-6, every other score below 1.5e-6.
ONNX_SCORE_TOL = {"vim": 1e-3, "combined": 5e-5, "mahalanobis": 5e-5}
ONNX_FUSION_TOL, ONNX_DEFAULT_TOL = 2e-4, 2e-5
# logits: 4.8e-6 measured (as above); 10x
ONNX_LOGITS_ATOL = 5e-5


def onnx_tol(score: str) -> float:
    """Tolerance of ``score`` from ONNX Runtime against torch: ``|a - b| <= tol * (1 + |b|)``."""
    if score in ONNX_SCORE_TOL:
        return ONNX_SCORE_TOL[score]
    return ONNX_FUSION_TOL if is_fusion(score) else ONNX_DEFAULT_TOL


def assert_scores_close(actual, expected, tol: float, name: str = "") -> None:
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=name)


def assert_decisions_agree(labels, expected, scores, threshold: float, tol: float) -> float:
    """``labels`` (class index, -1 for unknown) equal ``expected`` wherever ``scores`` (those
    ``expected`` was decided by) are more than ``tol * (1 + |score|)`` from ``threshold``:
    nearer, two computations whose scores agree within that tolerance may fall on either
    side. Returns the fraction of images compared."""
    scores = np.asarray(scores, dtype=np.float64)
    away = np.abs(scores - threshold) > tol * (1 + np.abs(scores))
    np.testing.assert_array_equal(np.asarray(labels)[away], np.asarray(expected)[away])
    return float(away.mean())


def assert_argmax_agree(logits, expected, reference_logits, atol: float = ONNX_LOGITS_ATOL) -> float:
    """Class predictions ``logits.argmax(1)`` equal ``expected`` wherever the two largest of
    ``reference_logits`` are more than ``2 * atol`` apart (logits agreeing within ``atol``
    cannot swap those). Returns the fraction of images compared."""
    top2 = np.sort(np.asarray(reference_logits), axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * atol
    np.testing.assert_array_equal(np.asarray(logits).argmax(1)[clear], np.asarray(expected)[clear])
    return float(clear.mean())
