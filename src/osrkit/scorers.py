"""Unknown-input scorers: larger score = more likely unknown.

Each scorer is a small class with ``fit(known, accept_rate, labels)`` and
``score(outputs)``. They work on ``ModelOutputs`` computed once per input batch, so
several scorers never repeat a forward pass.

Two kinds of fitting data (``OpenSetRecognizer.calibrate`` keeps them apart):

- scorers with parameters (``fits_on_reference = True``: ``mahalanobis``, ``knn``,
  ``class_reconstruction``) are fitted on outputs of the known TRAINING images, the
  ones the networks learned from;
- thresholds and the fusions (``FusionScorer``) are calibrated on known VALIDATION
  images, which no scorer was fitted on.

Base scorers: ``msp``, ``max_logit``, ``energy`` (classifier outputs), ``mahalanobis``,
``knn`` (penultimate features), ``reconstruction``, ``class_reconstruction`` (pixels).
Fusions (OR rules of calibrated members, ``score > 1`` = unknown), each pre-declared:
``combined`` (msp + reconstruction, the seed's decision rule), ``fusion`` (every base
scorer) and ``fusion_recon`` (mahalanobis + reconstruction + class_reconstruction).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .calibration import joint_thresholds
from .errors import ConfigError, ModelFormatError


@dataclass
class ModelOutputs:
    """What the networks say about a batch: logits ``(N, K)``, penultimate features
    ``(N, D)``, per-image reconstruction error ``(N,)`` and, optionally, the input
    pixels ``images``: float32 ``(N, C*H*W)`` in [0, 1] (flattened), needed by
    pixel-space scorers such as ``class_reconstruction``. ``recon_error`` is None for a
    model without an autoencoder."""

    logits: np.ndarray
    features: np.ndarray
    recon_error: np.ndarray | None = None
    images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.logits)

    @property
    def predictions(self) -> np.ndarray:
        """Closed-set class predictions (argmax of the logits)."""
        return self.logits.argmax(1)

    def subset(self, index: np.ndarray) -> ModelOutputs:
        return ModelOutputs(
            self.logits[index],
            self.features[index],
            None if self.recon_error is None else self.recon_error[index],
            None if self.images is None else self.images[index],
        )

    @staticmethod
    def concat(parts: list[ModelOutputs]) -> ModelOutputs:
        """One ``ModelOutputs`` of all ``parts``; ``images`` only when every part has them."""

        def cat(field: str) -> np.ndarray | None:
            values = [getattr(p, field) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        return ModelOutputs(cat("logits"), cat("features"), cat("recon_error"), cat("images"))


class Scorer:
    """Base class. Subclasses set ``name`` and implement ``score``.

    ``log_scale``: the score is positive and scale-like (spans orders of magnitude), so
    fusions normalise it on a log scale; otherwise on a linear scale.
    ``fits_on_reference``: the scorer has parameters fitted on known TRAINING outputs.
    """

    name: ClassVar[str] = ""
    log_scale: ClassVar[bool] = False
    fits_on_reference: ClassVar[bool] = False
    # The model outputs the scorer reads: "logits", "features", "recon_error" (needs the
    # autoencoder) or "pixels".
    signals: ClassVar[frozenset[str]] = frozenset({"logits"})

    def fit(self, known: ModelOutputs, accept_rate: float = 0.95, labels: np.ndarray | None = None) -> Scorer:
        """Fit on outputs of known inputs (``labels``: their classes, where a scorer needs
        them); returns self. Stateless scorers need nothing."""
        return self

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        raise NotImplementedError

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-serialisable values (small values only)."""
        return {}

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Fitted array state (saved to safetensors beside ``config.json``)."""
        return {}

    def set_state(self, state: dict[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> Scorer:
        return self

    def _check_fitted(self, *attributes: str) -> None:
        if any(getattr(self, a) is None for a in attributes):
            raise ConfigError(f"{type(self).__name__} is not fitted: call fit(known_outputs) first")


def _labels_or_predictions(known: ModelOutputs, labels: np.ndarray | None) -> np.ndarray:
    y = known.predictions if labels is None else np.asarray(labels)
    if y.shape != (len(known),):
        raise ConfigError(f"{len(known)} outputs but labels of shape {y.shape}")
    return y.astype(np.int64)


def _array(arrays: Mapping[str, np.ndarray] | None, key: str, scorer: str, ndim: int) -> np.ndarray:
    """A saved array, checked for presence and rank."""
    if not arrays or key not in arrays:
        raise ModelFormatError(f"saved state of scorer {scorer!r} lacks the array {key!r}")
    value = np.asarray(arrays[key])
    if value.ndim != ndim:
        raise ModelFormatError(f"saved array {key!r} of scorer {scorer!r} has shape {value.shape}")
    return value


# ----------------------------------------------------------------------------- logits
class MSPScorer(Scorer):
    """1 - maximum softmax probability.

    Hendrycks and Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution
    Examples in Neural Networks", ICLR 2017.

    Computed as S / (1 + S) with S = sum over non-top classes of exp(z_k - z_max), in
    float64, so confident inputs keep distinct scores instead of rounding to 0.
    """

    name = "msp"
    log_scale = True

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        z = outputs.logits.astype(np.float64)
        top = z.argmax(axis=1)
        e = np.exp(z - z[np.arange(len(z)), top][:, None])
        e[np.arange(len(z)), top] = 0.0  # drop the top class itself (no 1 + tiny - 1 cancellation)
        rest = e.sum(axis=1)
        return rest / (1.0 + rest)


class MaxLogitScorer(Scorer):
    """Negative maximum logit (MLS).

    Vaze, Han, Vedaldi and Zisserman, "Open-Set Recognition: a Good Closed-Set Classifier
    is All You Need?", ICLR 2022. Unlike MSP it keeps the logits' magnitude, which the
    softmax normalises away. Can be negative, so fusions use a linear scale.
    """

    name = "max_logit"

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        return -outputs.logits.astype(np.float64).max(axis=1)


class EnergyScorer(Scorer):
    """Free energy ``-T * logsumexp(logits / T)`` with ``T = 1`` (larger = unknown).

    Liu, Wang, Owens and Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020
    (their score is the negative energy; this is the energy itself, so larger means more
    likely unknown). Computed in float64 with the max subtracted. Linear fusion scale.
    """

    name = "energy"
    temperature: ClassVar[float] = 1.0

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        z = outputs.logits.astype(np.float64) / self.temperature
        top = z.max(axis=1)
        return -self.temperature * (top + np.log(np.exp(z - top[:, None]).sum(axis=1)))

    def get_state(self) -> dict[str, Any]:
        return {"temperature": self.temperature}


# ----------------------------------------------------------------------------- features
class MahalanobisScorer(Scorer):
    """Smallest Mahalanobis distance of the penultimate features to a class mean.

    Lee, Lee, Lee and Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
    Samples and Adversarial Attacks", NeurIPS 2018: class-conditional Gaussians with one
    shared (tied) covariance, fitted on the known TRAINING features with their labels;
    score ``min_c sqrt((f - mu_c)^T P (f - mu_c))`` (the square root of their score, same
    ranking). Only the penultimate layer: no input preprocessing, no feature ensemble and
    no logistic-regression weighting of layers (those need tuning data).

    The tied covariance of the class-centred features is estimated with Ledoit-Wolf
    shrinkage (``sklearn.covariance.LedoitWolf``) rather than Lee et al.'s empirical
    covariance: ReLU features have dead or nearly constant units, which make the empirical
    covariance singular, and a pseudo-inverse would then silently ignore exactly the
    directions in which an unknown input may differ. The shrunk covariance is positive
    definite, so its inverse P is finite; the scorer stores ``L`` with ``P = L L^T``
    (Cholesky) and computes ``|(f - mu_c) L|`` in float64.
    """

    name = "mahalanobis"
    log_scale = True
    fits_on_reference = True
    signals = frozenset({"features", "logits"})

    def __init__(self) -> None:
        self.means_: np.ndarray | None = None  # (C, D) float64
        self.whitening_: np.ndarray | None = None  # (D, D) float64, L with P = L L^T
        self.classes_: list[int] = []
        self.shrinkage_: float = 0.0
        self.reference_size_: int = 0
        self._white_means: np.ndarray | None = None

    def fit(
        self, known: ModelOutputs, accept_rate: float = 0.95, labels: np.ndarray | None = None
    ) -> MahalanobisScorer:
        """Fit class means and the tied precision on known training outputs; ``labels``
        default to the classifier's predictions."""
        from sklearn.covariance import LedoitWolf

        y = _labels_or_predictions(known, labels)
        f = known.features.astype(np.float64)
        classes = np.unique(y)
        if len(f) <= len(classes):
            raise ConfigError(f"mahalanobis needs more than {len(classes)} known training outputs")
        means = np.stack([f[y == c].mean(axis=0) for c in classes])
        centred = f - means[np.searchsorted(classes, y)]
        lw = LedoitWolf(assume_centered=True).fit(centred)
        try:
            precision = np.linalg.inv(lw.covariance_)
            whitening = np.linalg.cholesky((precision + precision.T) / 2.0)
        except np.linalg.LinAlgError:
            raise ConfigError("mahalanobis: the known training features have no variance") from None
        self.means_ = means
        self.whitening_ = whitening
        self.classes_ = [int(c) for c in classes]
        self.shrinkage_ = float(lw.shrinkage_)
        self.reference_size_ = len(f)
        self._prepare()
        return self

    def _prepare(self) -> None:
        self._white_means = self.means_ @ self.whitening_

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        self._check_fitted("means_", "whitening_")
        w = outputs.features.astype(np.float64) @ self.whitening_
        m = self._white_means
        d2 = (w * w).sum(axis=1)[:, None] - 2.0 * (w @ m.T) + (m * m).sum(axis=1)[None, :]
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0))

    def get_state(self) -> dict[str, Any]:
        self._check_fitted("means_", "whitening_")
        return {
            "classes": self.classes_,
            "covariance": "tied, Ledoit-Wolf shrinkage",
            "shrinkage": self.shrinkage_,
            "reference_size": self.reference_size_,
        }

    def get_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted("means_", "whitening_")
        return {"means": self.means_, "whitening": self.whitening_}

    def set_state(self, state: dict[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> Scorer:
        self.means_ = _array(arrays, "means", self.name, 2).astype(np.float64)
        self.whitening_ = _array(arrays, "whitening", self.name, 2).astype(np.float64)
        d = self.means_.shape[1]
        if self.whitening_.shape != (d, d):
            raise ModelFormatError(f"scorer {self.name!r}: whitening matrix does not match the means")
        self.classes_ = [int(c) for c in state["classes"]]
        self.shrinkage_ = float(state.get("shrinkage", 0.0))
        self.reference_size_ = int(state.get("reference_size", 0))
        self._prepare()
        return self


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (``x / max(|x|, 1e-12)``, float32)."""
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


def kth_largest_column(values: torch.Tensor, k: int, group: int = 8) -> torch.Tensor:
    """Per row of ``values`` ``(n, b)``, the column of its k-th largest entry (up to ties,
    the same value as ``values.topk(k).indices[:, -1]``), in two cheaper stages.

    The columns are cut into ``w = b // group`` interleaved groups (j, j + w, ...,
    j + (group - 1) w) plus the ``b % group`` last columns. The k groups with the largest
    maxima hold at least k entries >= the k-th largest group maximum, and every entry of
    the other groups is <= it; so the k largest entries of the row all lie in those k
    groups or the leftover columns, and one small top-k over those candidates finds them.
    """
    n, b = values.shape
    w = b // group
    if w < k:
        return values.topk(k, dim=1).indices[:, -1]
    main = w * group
    group_max = values[:, :main].reshape(n, group, w).amax(dim=1)  # (n, w)
    best = group_max.topk(k, dim=1, sorted=False).indices  # (n, k)
    offsets = torch.arange(0, main, w, device=values.device).view(1, group, 1)
    cols = (best.unsqueeze(1) + offsets).reshape(n, group * k)
    if main < b:
        cols = torch.cat([cols, torch.arange(main, b, device=values.device).expand(n, -1)], dim=1)
    candidates = values.gather(1, cols)
    return cols.gather(1, candidates.topk(k, dim=1).indices[:, -1:]).squeeze(1)


class KNNScorer(Scorer):
    """Distance to the k-th nearest neighbour among L2-normalised penultimate features
    of known training images.

    Sun, Ming, Zhu and Li, "Out-of-Distribution Detection with Deep Nearest Neighbors",
    ICML 2022 (their score is the negative distance; here the distance itself).

    Bank: a seeded random subsample of ``bank_size = 5,000`` training images (about 500
    per MNIST class; all of them when fewer). Sun et al. show the score keeps its quality
    on a randomly sampled bank (down to 1% of ImageNet) when k is scaled in proportion to
    the sample. The size is set by
    the inference budget: the search costs ``2 * 128 * bank_size`` FLOPs per image plus a
    top-k over ``bank_size`` similarities, and with 5,000 rows the whole recognizer, every
    scorer included, still scores >= 10,000 images/s on a 2-core CPU (with 10,000 rows it
    fell below that); the model folder grows by 2.5 MB.

    k: ``k = 5``, Sun et al.'s ratio k / bank = 50 / 50,000 (CIFAR-10, full training set)
    applied to the 5,000-row bank, as they scale k for sampled banks; fixed a priori.

    Search: float32 cosine similarities by chunked matrix products, then an exact
    two-stage top-k (``kth_largest_column``) that costs about half of ``torch.topk`` over
    the whole bank; the k-th neighbour's distance is then recomputed in float64 from the
    two vectors (no ``2 - 2 cos`` cancellation for close neighbours).
    """

    name = "knn"
    log_scale = True
    fits_on_reference = True
    signals = frozenset({"features"})
    K: ClassVar[int] = 5
    BANK_SIZE: ClassVar[int] = 5_000
    CHUNK: ClassVar[int] = 256  # queries per matrix product (sims stay in the L2 cache)
    GROUP: ClassVar[int] = 8  # columns per group in kth_largest_column

    def __init__(self, k: int | None = None, bank_size: int | None = None, seed: int = 0) -> None:
        self.k = int(k or self.K)
        self.bank_size = int(bank_size or self.BANK_SIZE)
        self.seed = seed
        if self.k < 1 or self.bank_size < 1:
            raise ConfigError(
                f"knn needs k >= 1 and bank_size >= 1, got k={self.k}, bank_size={self.bank_size}"
            )
        self.bank_: torch.Tensor | None = None  # (B, D) float32, unit rows
        self.reference_size_: int = 0
        self.bank_index_: np.ndarray | None = None  # positions in the fitting data (not saved)

    def fit(
        self, known: ModelOutputs, accept_rate: float = 0.95, labels: np.ndarray | None = None
    ) -> KNNScorer:
        """Keep a seeded subsample of the normalised known training features."""
        n = len(known)
        if n < self.k:
            raise ConfigError(f"knn with k={self.k} needs at least {self.k} known training outputs, got {n}")
        index = np.arange(n)
        if n > self.bank_size:
            index = np.sort(np.random.default_rng(self.seed).choice(n, self.bank_size, replace=False))
        feats = torch.from_numpy(np.ascontiguousarray(known.features[index], dtype=np.float32))
        self.bank_ = _unit_rows(feats).contiguous()
        self.bank_index_ = index
        self.reference_size_ = n
        return self

    @torch.inference_mode()
    def score(self, outputs: ModelOutputs) -> np.ndarray:
        self._check_fitted("bank_")
        bank = self.bank_
        q = _unit_rows(torch.from_numpy(np.ascontiguousarray(outputs.features, dtype=np.float32)))
        out = np.empty(len(q), dtype=np.float64)
        for start in range(0, len(q), self.CHUNK):
            chunk = q[start : start + self.CHUNK]
            kth = kth_largest_column(chunk @ bank.T, self.k, self.GROUP)
            diff = chunk.double() - bank[kth].double()
            out[start : start + len(chunk)] = diff.pow(2).sum(dim=1).sqrt().numpy()
        return out

    def get_state(self) -> dict[str, Any]:
        self._check_fitted("bank_")
        return {
            "k": self.k,
            "bank_size": int(len(self.bank_)),
            "reference_size": self.reference_size_,
            "seed": self.seed,
            "normalisation": "L2",
        }

    def get_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted("bank_")
        return {"bank": self.bank_.numpy()}

    def set_state(self, state: dict[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> Scorer:
        bank = _array(arrays, "bank", self.name, 2)
        self.k = int(state["k"])
        if not 1 <= self.k <= len(bank):
            raise ModelFormatError(f"scorer {self.name!r}: k={self.k} for a bank of {len(bank)}")
        self.bank_ = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))
        self.bank_size = int(state.get("bank_size", len(bank)))
        self.reference_size_ = int(state.get("reference_size", 0))
        self.seed = int(state.get("seed", 0))
        self.bank_index_ = None
        return self


# ----------------------------------------------------------------------------- pixels
class ReconstructionScorer(Scorer):
    """Per-image mean squared reconstruction error of an autoencoder trained on knowns.

    Japkowicz, Myers and Gluck, "A Novelty Detection Approach to Classification", IJCAI
    1995; used for open-set recognition by e.g. Yoshihashi et al., CROSR, CVPR 2019.
    """

    name = "reconstruction"
    log_scale = True
    signals = frozenset({"recon_error"})

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        if outputs.recon_error is None:
            raise ConfigError("the reconstruction scorer needs the autoencoder, and this model has none")
        return outputs.recon_error.astype(np.float64)


def top_principal_directions(centred: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` leading principal directions ``(P, k)`` of centred rows ``(N, P)``.

    Only the top ``k`` are needed, so the eigenvectors of the smaller of the Gram matrices
    ``X^T X`` (P x P) or ``X X^T`` (N x N) are used instead of a full SVD, whose cost grows
    with N P^2 and took minutes per class at 3,072 pixel values; they span the same
    subspace (the right singular vectors of X).
    """
    n, p = centred.shape
    if p <= n:
        _, vectors = np.linalg.eigh(centred.T @ centred)
        return vectors[:, ::-1][:, :k]
    values, vectors = np.linalg.eigh(centred @ centred.T)
    values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
    return centred.T @ vectors / np.sqrt(np.maximum(values, 1e-300))


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
    conditioning. Score: ``min_c (|x - mu_c|^2 - |U_c^T (x - mu_c)|^2) / P`` (P pixel values) from the
    flattened pixels ``ModelOutputs.images``, all in float64: the squares are expanded
    (one matrix product of the pixels with ``[U_1 .. U_C, mu_1 .. mu_C]``), and the
    difference of two large sums that is a small residual for a well-explained image
    needs float64 (float32 loses ~1e-4 relative there).
    """

    name = "class_reconstruction"
    log_scale = True
    fits_on_reference = True
    signals = frozenset({"pixels", "logits"})
    N_COMPONENTS: ClassVar[int] = 32
    CHUNK: ClassVar[int] = 1024

    def __init__(self, n_components: int | None = None) -> None:
        self.n_components = int(n_components or self.N_COMPONENTS)
        if self.n_components < 1:
            raise ConfigError(f"class_reconstruction needs n_components >= 1, got {self.n_components}")
        self.means_: np.ndarray | None = None  # (C, P) float64
        self.bases_: np.ndarray | None = None  # (C, P, n) float64, orthonormal columns (zero padded)
        self.classes_: list[int] = []
        self.components_: list[int] = []
        self.reference_size_: int = 0
        self._weights: torch.Tensor | None = None  # (P, C*n + C) float64: [U_1 .. U_C, means^T]
        self._proj_means: torch.Tensor | None = None  # (1, C*n) float64: U_c^T mu_c
        self._mean_sq: torch.Tensor | None = None  # (1, C) float64: |mu_c|^2

    @staticmethod
    def _pixels(outputs: ModelOutputs) -> np.ndarray:
        if outputs.images is None:
            raise ConfigError(
                "class_reconstruction needs the input pixels (ModelOutputs.images); "
                "compute outputs with OpenSetRecognizer.outputs"
            )
        return outputs.images

    def fit(
        self, known: ModelOutputs, accept_rate: float = 0.95, labels: np.ndarray | None = None
    ) -> ClassReconstructionScorer:
        """Per-class mean and top principal directions of known training pixels;
        ``labels`` default to the classifier's predictions."""
        x = self._pixels(known)
        y = _labels_or_predictions(known, labels)
        classes = np.unique(y)
        p = x.shape[1]
        means = np.zeros((len(classes), p))
        bases = np.zeros((len(classes), p, self.n_components))
        counts = []
        for i, c in enumerate(classes):
            xc = x[y == c].astype(np.float64)
            means[i] = xc.mean(axis=0)
            centred = xc - means[i]
            n = min(self.n_components, len(xc) - 1, p)
            if n > 0:
                bases[i, :, :n] = top_principal_directions(centred, n)
            counts.append(int(max(n, 0)))
        self.means_, self.bases_ = means, bases
        self.classes_ = [int(c) for c in classes]
        self.components_ = counts
        self.reference_size_ = len(x)
        self._prepare()
        return self

    def _prepare(self) -> None:
        c, p, n = self.bases_.shape
        flat = self.bases_.transpose(1, 0, 2).reshape(p, c * n)
        weights = np.concatenate([flat, self.means_.T], axis=1)
        self._weights = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float64))
        proj_means = np.einsum("cp,cpn->cn", self.means_, self.bases_).reshape(1, c * n)
        self._proj_means = torch.from_numpy(proj_means)
        self._mean_sq = torch.from_numpy((self.means_ * self.means_).sum(axis=1)[None, :])

    @torch.inference_mode()
    def score(self, outputs: ModelOutputs) -> np.ndarray:
        self._check_fitted("means_", "bases_")
        c, p, n = self.bases_.shape
        pixels = torch.from_numpy(np.asarray(self._pixels(outputs)))
        if pixels.ndim != 2 or pixels.shape[1] != p:
            raise ConfigError(f"class_reconstruction was fitted on {p} pixels, got {tuple(pixels.shape)}")
        out = np.empty(len(pixels), dtype=np.float64)
        for start in range(0, len(pixels), self.CHUNK):  # chunks stay in the CPU caches
            x = pixels[start : start + self.CHUNK].to(torch.float64)
            prod = x @ self._weights
            proj = (prod[:, : c * n] - self._proj_means).reshape(-1, c, n)
            sq = torch.einsum("np,np->n", x, x).unsqueeze(1)
            residual = sq - 2.0 * prod[:, c * n :] + self._mean_sq - proj.square().sum(dim=2)
            out[start : start + len(x)] = (residual.amin(dim=1).clamp(min=0.0) / p).numpy()
        return out

    def get_state(self) -> dict[str, Any]:
        self._check_fitted("means_", "bases_")
        return {
            "classes": self.classes_,
            "n_components": self.n_components,
            "components": self.components_,
            "reference_size": self.reference_size_,
            "decoder": "per-class PCA (linear autoencoder)",
        }

    def get_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted("means_", "bases_")
        return {"means": self.means_, "bases": self.bases_}

    def set_state(self, state: dict[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> Scorer:
        self.means_ = _array(arrays, "means", self.name, 2).astype(np.float64)
        self.bases_ = _array(arrays, "bases", self.name, 3).astype(np.float64)
        if self.bases_.shape[:2] != self.means_.shape:
            raise ModelFormatError(f"scorer {self.name!r}: bases do not match the class means")
        self.n_components = int(state["n_components"])
        self.classes_ = [int(c) for c in state["classes"]]
        self.components_ = [int(c) for c in state.get("components", [])]
        self.reference_size_ = int(state.get("reference_size", 0))
        self._prepare()
        return self


# ----------------------------------------------------------------------------- fusion
class FusionScorer(Scorer):
    """OR of several calibrated scorers, with a continuous score.

    An input is unknown when any member score exceeds its own threshold. The thresholds
    share the rejection budget equally (``joint_thresholds``): every member is cut at the
    same quantile of its known validation distribution, the one at which the OR accepts
    ``accept_rate`` of the known validation inputs.

    The continuous score is the largest member score after normalising each by its known
    validation distribution: 0 at the known median m, 1 at the member's threshold t:
    ``1 + (s - t) / |t - m|``, on a log scale (``log s``, ``log t``, ``log m``) for
    positive, scale-like members (``Scorer.log_scale``: msp, reconstruction, mahalanobis,
    knn, class_reconstruction) and on a linear scale otherwise (max_logit, energy, which
    can be negative). So ``score > 1`` is exactly the OR rule, at any accept rate, and
    AUROC is defined. Fusion of calibrated detectors in the spirit of Bodesheim et al. and
    of conformal p-value combination (Vovk et al., "Algorithmic Learning in a Random
    World").

    Members are used as given: fit members with parameters (``fits_on_reference``) on
    training outputs first, then ``fit`` the fusion on known validation outputs.

    This class, by name ``fusion``, defaults to every base scorer (pre-declared, not
    selected on unknown data): msp, max_logit, energy, mahalanobis, knn, reconstruction,
    class_reconstruction.
    """

    name = "fusion"
    MEMBERS: ClassVar[tuple[str, ...]] = (
        "msp",
        "max_logit",
        "energy",
        "mahalanobis",
        "knn",
        "reconstruction",
        "class_reconstruction",
    )
    FLOOR: ClassVar[float] = 1e-300  # log() floor for exact zeros
    SPAN_FLOOR: ClassVar[float] = 1e-12

    def __init__(self, members: list[Scorer] | None = None) -> None:
        self.members = members if members is not None else [make_scorer(n) for n in self.MEMBERS]
        if not self.members:
            raise ConfigError("a fusion needs at least one member scorer")
        self.thresholds_: np.ndarray | None = None
        self.medians_: np.ndarray | None = None

    @property
    def member_names(self) -> list[str]:
        return [m.name for m in self.members]

    @property
    def log_members(self) -> np.ndarray:
        """Which members are normalised on a log scale."""
        return np.array([m.log_scale for m in self.members], dtype=bool)

    def _member_scores(self, outputs: ModelOutputs, scores: Mapping[str, np.ndarray] | None) -> np.ndarray:
        """``(N, m)`` member scores, taken from ``scores`` (by member name) where given."""
        cols = [
            np.asarray(scores[m.name], dtype=np.float64) if scores and m.name in scores else m.score(outputs)
            for m in self.members
        ]
        return np.stack(cols, axis=1)

    def fit(
        self,
        known: ModelOutputs,
        accept_rate: float = 0.95,
        labels: np.ndarray | None = None,
        *,
        scores: Mapping[str, np.ndarray] | None = None,
    ) -> FusionScorer:
        """Calibrate on known VALIDATION outputs (``scores``: member scores already
        computed on them, by name)."""
        s = self._member_scores(known, scores)
        self.thresholds_ = joint_thresholds(s, accept_rate)
        self.medians_ = np.median(s, axis=0)
        return self

    def member_thresholds(self) -> dict[str, float]:
        self._check_fitted("thresholds_", "medians_")
        return {m.name: float(t) for m, t in zip(self.members, self.thresholds_)}

    def constants(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(log_members, t, span)``: per member, whether it is on a log scale, its
        threshold on that scale and ``|t - m|`` (floored), so that the normalised score is
        ``1 + (s' - t) / span`` with ``s'`` the score on the member's scale."""
        self._check_fitted("thresholds_", "medians_")
        logs = self.log_members
        t = np.where(logs, np.log(np.maximum(self.thresholds_, self.FLOOR)), self.thresholds_)
        m = np.where(logs, np.log(np.maximum(self.medians_, self.FLOOR)), self.medians_)
        return logs, t, np.maximum(np.abs(t - m), self.SPAN_FLOOR)

    def normalise(self, member_scores: np.ndarray) -> np.ndarray:
        """Member scores ``(N, m)`` on the common scale (0 = known median, 1 = threshold).

        ``1 + (s - t) / |t - m|`` (of logs for log-scale members): above 1 exactly when
        ``s > t``, whatever the accept rate (even when a threshold lies below its median).
        """
        logs, t, span = self.constants()
        s = np.array(member_scores, dtype=np.float64)
        if logs.any():
            s[:, logs] = np.log(np.maximum(s[:, logs], self.FLOOR))
        return 1.0 + (s - t) / span

    def normalised(self, outputs: ModelOutputs, scores: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Normalised member scores ``(N, m)`` of ``outputs``."""
        self._check_fitted("thresholds_", "medians_")
        return self.normalise(self._member_scores(outputs, scores))

    def score(self, outputs: ModelOutputs, scores: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Fused score; ``scores`` may hold member scores already computed on ``outputs``."""
        return self.normalised(outputs, scores).max(axis=1)

    def bind(self, scorers: Mapping[str, Scorer]) -> FusionScorer:
        """Use the fitted scorers in ``scorers`` (by name) as members; members with
        parameters must be among them."""
        members = []
        for m in self.members:
            if m.name in scorers:
                members.append(scorers[m.name])
            elif m.fits_on_reference:
                raise ModelFormatError(f"fusion {self.name!r} needs the fitted scorer {m.name!r}")
            else:
                members.append(m)
        self.members = members
        return self

    def get_state(self) -> dict[str, Any]:
        self._check_fitted("thresholds_", "medians_")
        return {
            "members": self.member_names,
            "member_thresholds": [float(t) for t in self.thresholds_],
            "medians": [float(m) for m in self.medians_],
        }

    def set_state(
        self, state: dict[str, Any], arrays: Mapping[str, np.ndarray] | None = None
    ) -> FusionScorer:
        """Restore thresholds and medians; members with parameters are fresh instances
        until ``bind`` replaces them with fitted ones."""
        self.members = [make_scorer(name) for name in state["members"]]
        self.thresholds_ = np.asarray(state["member_thresholds"], dtype=np.float64)
        self.medians_ = np.asarray(state["medians"], dtype=np.float64)
        if self.thresholds_.shape != (len(self.members),) or self.medians_.shape != self.thresholds_.shape:
            raise ModelFormatError(f"fusion {self.name!r}: one threshold and median per member needed")
        return self


class CombinedScorer(FusionScorer):
    """The seed's decision rule: MSP OR reconstruction error (both on a log scale).

    An input is unknown when its softmax confidence is below its threshold or its
    reconstruction error above its threshold (see ``FusionScorer``).
    """

    name = "combined"
    MEMBERS = ("msp", "reconstruction")


class ReconFusionScorer(FusionScorer):
    """Mahalanobis OR reconstruction OR class-conditional reconstruction: one detector on
    the classifier's features plus the two pixel-reconstruction detectors (pre-declared;
    see ``FusionScorer``)."""

    name = "fusion_recon"
    MEMBERS = ("mahalanobis", "reconstruction", "class_reconstruction")


SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls
    for cls in (
        MSPScorer,
        MaxLogitScorer,
        EnergyScorer,
        MahalanobisScorer,
        KNNScorer,
        ReconstructionScorer,
        ClassReconstructionScorer,
        CombinedScorer,
        FusionScorer,
        ReconFusionScorer,
    )
}


# class_reconstruction keeps classes x pixels x 32 float64 values and fits a P x P
# eigendecomposition per class (6 s at 3,072 pixel values on 2 cores); larger images
# leave it out.
MAX_PCA_PIXELS = 4096
SIGNAL_NEEDS = {
    "recon_error": "the autoencoder's reconstruction error, and this model has no autoencoder",
    "pixels": f"images of at most {MAX_PCA_PIXELS} pixel values (its PCA bases grow with them)",
}


def scorer_signals(name: str) -> frozenset[str]:
    """The model outputs a registered scorer reads (a fusion: those of its members)."""
    cls = SCORERS[name]
    if is_fusion(name):
        return frozenset().union(*(SCORERS[m].signals for m in cls.MEMBERS))
    return cls.signals


def is_fusion(name: str) -> bool:
    """Whether the registered scorer ``name`` is a fusion of other scorers."""
    return issubclass(SCORERS[name], FusionScorer)


def make_scorer(name: str) -> Scorer:
    """A new, unfitted scorer by name (see ``SCORERS``)."""
    try:
        return SCORERS[name]()
    except KeyError:
        raise ModelFormatError(f"unknown scorer {name!r}; known scorers: {', '.join(SCORERS)}") from None
