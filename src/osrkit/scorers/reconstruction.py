"""Pixel-space scorers: ``reconstruction`` (the autoencoder's error) and
``class_reconstruction`` (per-class linear decoders)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from osrkit.errors import ConfigError, ModelFormatError
from osrkit.scorers.base import ModelOutputs, Scorer, Signals, labels_or_predictions, register_scorer

# class_reconstruction keeps classes x pixels x 32 float64 values and fits a P x P
# eigendecomposition per class, whose time grows with the cube of the pixels: images
# over this size leave it out.
MAX_PCA_PIXELS = 4096


@register_scorer
class ReconstructionScorer(Scorer):
    """Per-image mean squared reconstruction error of an autoencoder trained on knowns.

    Japkowicz, Myers and Gluck, "A Novelty Detection Approach to Classification", IJCAI
    1995; used for open-set recognition by e.g. Yoshihashi et al., CROSR, CVPR 2019.
    """

    name = "reconstruction"
    label = "reconstruction MSE"
    signals = frozenset({"recon_error"})
    log_scale = True

    def forward(self, signals: Signals) -> torch.Tensor:
        return signals["recon_error"].to(torch.float64)


def top_principal_directions(centred: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` leading principal directions ``(P, k)`` of centred rows ``(N, P)``.

    Only the top ``k`` are needed, so the eigenvectors of the smaller of the Gram matrices
    ``X^T X`` (P x P) or ``X X^T`` (N x N) are used instead of a full SVD, whose cost grows
    with N P^2 (too slow per class at CIFAR-10's 3,072 pixel values); they span the same
    subspace (the right singular vectors of X).
    """
    n, p = centred.shape
    if p <= n:
        _, vectors = np.linalg.eigh(centred.T @ centred)
        return vectors[:, ::-1][:, :k]
    values, vectors = np.linalg.eigh(centred @ centred.T)
    values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
    return centred.T @ vectors / np.sqrt(np.maximum(values, 1e-300))


@register_scorer
class ClassReconstructionScorer(Scorer):
    """Class-conditional reconstruction error: the smallest, over the known classes, of
    the mean squared error of reconstructing the image with that class's decoder.

    Follows the test-time rule of C2AE (Oza and Patel, "C2AE: Class Conditioned
    Auto-Encoder for Open-set Recognition", CVPR 2019): reconstruct the input conditioned
    on each known class and keep the best match; an unknown input is reconstructed
    poorly under every class. Instead of C2AE's trained conditional decoder, each class's
    decoder is linear: the PCA subspace of that class's known TRAINING pixels (PCA is the
    optimal linear autoencoder, Baldi and Hornik, "Neural networks and principal component
    analysis: learning from examples without local minima", Neural Networks 1989), so
    nothing more is trained and the fit is closed-form and deterministic.

    ``n_components = 32`` per class (fewer for a class with fewer images), fixed a priori
    to the width of the shared autoencoder's code (``AutoencoderConfig.latent_dim``), so
    each class decoder has the capacity of the unconditional one and what differs is the
    conditioning. Score: ``min_c (|x - mu_c|^2 - |U_c^T (x - mu_c)|^2) / P`` (P pixel
    values), all in float64: the squares are expanded (one matrix product of the pixels
    with ``[U_1 .. U_C, mu_1 .. mu_C]``), and the difference of two large sums that is a
    small residual for a well-explained image needs float64 (float32 loses ~1e-4 relative).
    """

    name = "class_reconstruction"
    label = "class-conditional reconstruction MSE"
    signals = frozenset({"pixels"})
    params = ("n_components",)
    arrays = {"means": (2, np.float64), "bases": (3, np.float64)}
    log_scale = True
    fits_on_reference = True
    chunk_size = 1024  # rows per product (stays in the CPU caches)

    def __init__(self, n_components: int = 32) -> None:
        super().__init__()
        self.n_components = int(n_components)
        if self.n_components < 1:
            raise ConfigError(f"class_reconstruction needs n_components >= 1, got {n_components}")
        self.classes_: list[int] = []
        self.components_: list[int] = []
        self.reference_size_: int = 0
        self.register_buffer("weights", None, persistent=False)  # (P, C*n + C): [U_1 .. U_C, means^T]
        self.register_buffer("proj_means", None, persistent=False)  # (1, C*n): U_c^T mu_c
        self.register_buffer("mean_sq", None, persistent=False)  # (1, C): |mu_c|^2

    def fit(
        self, known: ModelOutputs, *, labels: np.ndarray | None = None, head: Any = None
    ) -> ClassReconstructionScorer:
        """Per-class mean and top principal directions of known training pixels;
        ``labels`` default to the classifier's predictions."""
        x = known.signal("pixels")
        if x is None:
            raise ConfigError(
                "class_reconstruction needs the input pixels; compute outputs with signals={'pixels', ...}"
            )
        y = labels_or_predictions(known, labels)
        classes = np.unique(y)
        p = x.shape[1]
        means = np.zeros((len(classes), p))
        bases = np.zeros((len(classes), p, self.n_components))
        counts = []
        for i, c in enumerate(classes):
            xc = x[y == c].astype(np.float64)
            means[i] = xc.mean(axis=0)
            n = min(self.n_components, len(xc) - 1, p)
            if n > 0:
                bases[i, :, :n] = top_principal_directions(xc - means[i], n)
            counts.append(int(max(n, 0)))
        self.means_, self.bases_ = torch.from_numpy(means), torch.from_numpy(bases)
        self.classes_ = [int(c) for c in classes]
        self.components_ = counts
        self.reference_size_ = len(x)
        self._prepare()
        return self

    def _prepare(self) -> None:
        c, p, n = self.bases_.shape
        flat = self.bases_.permute(1, 0, 2).reshape(p, c * n)
        self.weights = torch.cat([flat, self.means_.T], dim=1).contiguous()
        self.proj_means = torch.einsum("cp,cpn->cn", self.means_, self.bases_).reshape(1, c * n)
        self.mean_sq = (self.means_ * self.means_).sum(dim=1).unsqueeze(0)

    def forward(self, signals: Signals) -> torch.Tensor:
        c, p, n = self.bases_.shape
        x = signals["pixels"].to(torch.float64)
        prod = x @ self.weights
        proj = (prod[:, : c * n] - self.proj_means).reshape(-1, c, n)
        sq = x.square().sum(dim=1, keepdim=True)
        residual = sq - 2.0 * prod[:, c * n :] + self.mean_sq - proj.square().sum(dim=2)
        return torch.clamp(residual.amin(dim=1), min=0.0) / p

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        pixels = outputs.signal("pixels")
        p = self.bases_.shape[1] if self.bases_ is not None else None
        if pixels is not None and p is not None and (pixels.ndim != 2 or pixels.shape[1] != p):
            raise ConfigError(f"class_reconstruction was fitted on {p} pixels, got {tuple(pixels.shape)}")
        return super().score(outputs)

    def fitted_state(self) -> dict[str, Any]:
        return {
            "classes": self.classes_,
            "components": self.components_,
            "reference_size": self.reference_size_,
            "decoder": "per-class PCA (linear autoencoder)",
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        if tuple(self.bases_.shape[:2]) != tuple(self.means_.shape):
            raise ModelFormatError(f"scorer {self.name!r}: bases do not match the class means")
        self.classes_ = [int(c) for c in state["classes"]]
        self.components_ = [int(c) for c in state.get("components", [])]
        self.reference_size_ = int(state.get("reference_size", 0))
