"""The standard open-set benchmark protocols, one call each: ``seed``, ``mnist-splits``,
``crosr`` and ``near-far`` (``osrkit benchmark NAME`` on the command line).

Each protocol trains (or reuses from its cache) a recognizer on known classes only,
scores its unknown sets with every scorer, and writes ``DIR/<name>.json`` and
``DIR/<name>.md``: the tables, the published numbers beside ours, and one line per
target, ``target <name>: <measured> (goal <goal>) ok|short``. Thresholds come from the
known validation split (95% accepted); nothing is chosen by looking at unknown data.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .data.catalog import load_dataset
from .data.imageset import ImageSet
from .data.spec import MNIST_SPEC, InputSpec
from .errors import ConfigError, DataError, OsrkitError
from .evaluation import evaluate
from .io import atomic_write_json, atomic_write_text
from .recognizer import OpenSetRecognizer
from .report import target_line
from .scorers import scorer_class
from .training import TrainConfig, data_fingerprint, stratified_split

log = logging.getLogger(__name__)

# Known classes of the five MNIST 6/4 splits used by Neal et al. 2018 and later work
# (e.g. Vaze et al. 2022, Chen et al. 2021); the other four digits are unknown.
MNIST_SPLITS: tuple[tuple[int, ...], ...] = (
    (2, 4, 5, 9, 8, 3),
    (3, 2, 6, 9, 4, 0),
    (5, 8, 3, 2, 4, 6),
    (3, 7, 8, 4, 0, 5),
    (6, 3, 4, 9, 8, 2),
)
NOISE_IMAGES = 10_000

PUBLISHED = {
    "mnist-splits": {
        "metric": "AUROC (%), mean over the five splits",
        "rows": [
            ("Softmax", 97.8, "Neal et al., ECCV 2018"),
            ("OpenMax", 98.1, "Neal et al., ECCV 2018"),
            ("OSRCI", 98.8, "Neal et al., ECCV 2018"),
            ("C2AE", 98.9, "Oza and Patel, CVPR 2019"),
            ("CROSR", 99.1, "Yoshihashi et al., CVPR 2019"),
            ("MLS", 99.3, "Vaze et al., ICLR 2022"),
            ("ARPL+CS", 99.7, "Chen et al., TPAMI 2021"),
        ],
    },
    "crosr": {
        "metric": "macro-F1 over 11 classes: Omniglot / MNIST-Noise / Noise",
        "rows": [
            ("CROSR", (0.793, 0.827, 0.826), "Yoshihashi et al., CVPR 2019"),
            ("CGDL", (0.850, 0.887, 0.859), "Sun et al., CVPR 2020"),
        ],
    },
    "near-far": {
        "metric": "AUROC (%) with MSP and an MLP (Hendrycks and Gimpel, ICLR 2017)",
        "rows": [
            ("notMNIST", 85, ""),
            ("CIFAR-10 (grayscale)", 95, ""),
            ("Omniglot", 96, ""),
            ("uniform noise", 99, ""),
        ],
    },
}


# ----------------------------------------------------------------------------- unknown sets
def uniform_noise(n: int = NOISE_IMAGES, seed: int = 0, spec: InputSpec = MNIST_SPEC) -> ImageSet:
    """Images of ``spec``'s shape whose pixels are i.i.d. uniform in [0, 1] (as in ODIN,
    Liang et al. 2018), stored as uint8 (``round(255 u)``)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, *spec.shape, generator=g).mul_(255).round_().to(torch.uint8)
    return ImageSet(images, torch.zeros(n, dtype=torch.int64), ["noise"], "uniform noise")


def gaussian_noise(n: int = NOISE_IMAGES, seed: int = 0, spec: InputSpec = MNIST_SPEC) -> ImageSet:
    """Images of ``spec``'s shape whose pixels are i.i.d. N(0.5, 1) clipped to [0, 1] (as in
    ODIN, Liang et al. 2018), stored as uint8."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *spec.shape, generator=g).add_(0.5).clamp_(0, 1)
    return ImageSet(
        x.mul_(255).round_().to(torch.uint8), torch.zeros(n, dtype=torch.int64), ["noise"], "Gaussian noise"
    )


def mnist_noise(mnist: ImageSet, seed: int = 0) -> ImageSet:
    """Each MNIST image with its zero-valued pixels replaced by uniform noise in [0, 1]
    (the CROSR protocol's MNIST-Noise, Yoshihashi et al. 2019), stored as uint8."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(mnist.images.shape, generator=g).mul_(255).round_().to(torch.uint8)
    images = torch.where(mnist.images == 0, noise, mnist.images)
    return ImageSet(images, mnist.labels.clone(), list(mnist.class_names), "MNIST-Noise")


def split_classes(data: ImageSet, known: tuple[int, ...]) -> tuple[ImageSet, ImageSet]:
    """(known, unknown) parts of ``data``: the known part relabelled ``0..len(known)-1`` in
    the order of ``known``, the unknown part with its original labels."""
    if len(set(known)) != len(known) or not all(0 <= k < len(data.class_names) for k in known):
        raise ConfigError(f"known classes {known} must be distinct class indices of {data.name}")
    mapping = torch.full((len(data.class_names),), -1, dtype=torch.int64)
    mapping[list(known)] = torch.arange(len(known))
    new = mapping[data.labels]
    is_known = new >= 0
    names = [data.class_names[k] for k in known]
    k = ImageSet(data.images[is_known], new[is_known], names, f"{data.name} known {list(known)}")
    u = data.subset(~is_known, name=f"{data.name} other classes")
    return k, u


# ----------------------------------------------------------------------------- model cache
@dataclass
class Context:
    """Shared state of a benchmark run: where data and results live, training options,
    and the cache of trained models."""

    out: Path
    data_root: str | None = None
    config: TrainConfig = field(default_factory=TrainConfig)
    download: bool = False
    progress: bool = False
    max_train: int | None = None  # for quick runs and tests: subsample the training data
    max_test: int | None = None  # ... and every test set
    # Pre-declared before any protocol was run: the fusion of every base scorer, the one
    # choice that selects nothing (see osrkit.scorers); never picked by unknown results.
    decision_scorer: str = "fusion"
    # Every dataset and noise set is brought to this input spec: the MNIST protocols' own.
    spec: InputSpec = MNIST_SPEC
    _data: dict[str, ImageSet] = field(default_factory=dict, repr=False)

    def data(self, name: str) -> ImageSet:
        """A dataset in this context's input spec, loaded once per run."""
        if name not in self._data:
            loader = {
                "uniform-noise": lambda: uniform_noise(spec=self.spec),
                "gaussian-noise": lambda: gaussian_noise(spec=self.spec),
            }.get(
                name,
                lambda: load_dataset(
                    name, self.data_root, self.download, self.progress, input_spec=self.spec
                ),
            )
            limit = self.max_train if name == "mnist:train" else self.max_test
            self._data[name] = loader().take(limit, seed=0)
        return self._data[name]

    def __post_init__(self) -> None:
        scorer_class(self.decision_scorer)  # an unknown name: one line, before minutes of training

    def recognizer(self, train: ImageSet) -> OpenSetRecognizer:
        """A recognizer trained on ``train`` with this context's config.

        The networks are cached in ``out/cache/<key>/`` and reused when the same data,
        classes, config, seed and osrkit version were trained before. The scorers and
        thresholds of a cached model are always fitted again (seconds) on the same training
        and validation split, so a change to a scorer never reuses stale scorer state.
        """
        key = cache_key(train, self.config)
        folder = self.out / "cache" / key
        model = None
        if (folder / "config.json").is_file():
            try:
                model = OpenSetRecognizer.from_pretrained(folder)
                log.info("reusing the networks of cached model %s", folder)
            except OsrkitError as exc:  # a damaged cache entry is retrained, not fatal
                log.warning("cached model %s unusable (%s); retraining", folder, exc)
        if model is not None:
            model.scorers, model.decision_scorer = "all", self.decision_scorer
            tr, va = stratified_split(train.labels, self.config.val_size, self.config.seed)
            model.calibrate(train.images[va], reference=train.images[tr], reference_labels=train.labels[tr])
        else:
            t0 = time.perf_counter()
            ckpt = self.out / "cache" / f"{key}.checkpoints"
            model = OpenSetRecognizer(train.class_names, decision_scorer=self.decision_scorer, scorers="all")
            model.fit(train, self.config, ckpt, self.progress)
            log.info("trained on %s in %.1f s", train.name, time.perf_counter() - t0)
            model.save_pretrained(folder, overwrite=True)
            shutil.rmtree(ckpt, ignore_errors=True)
        return model


def cache_key(train: ImageSet, config: TrainConfig) -> str:
    """Identity of a trained model: data, classes, training config (seed included), the
    CPU fast paths in effect and the osrkit version."""
    identity = {
        "data": data_fingerprint(train.images, train.labels),
        "classes": train.class_names,
        "config": config.to_dict() | {"bf16_resolved": config.use_bf16},
        "osrkit": __version__,
    }
    blob = json.dumps(identity, sort_keys=True).encode()
    return hashlib.sha1(blob, usedforsecurity=False).hexdigest()[:16]


# ----------------------------------------------------------------------------- scoring
METRICS = ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out", "oscr", "macro_f1")


def score_sets(recognizer: OpenSetRecognizer, known: ImageSet, unknowns: dict[str, ImageSet]) -> dict:
    """Every scorer's metrics on ``known`` against each unknown set."""
    out = {}
    for name, unknown in unknowns.items():
        m = evaluate(recognizer, known, unknown).metrics
        out[name] = {
            "count": len(unknown),
            "closed_set_accuracy": m["closed_set_accuracy"],
            "scorers": {
                s: {k: v[k] for k in (*METRICS, "known_accept_rate")} for s, v in m["scorers"].items()
            },
        }
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


# ----------------------------------------------------------------------------- protocols
def run_seed(ctx: Context) -> dict:
    """MNIST (10 known classes) vs CIFAR-10 test, the seed issue's protocol."""
    model = ctx.recognizer(ctx.data("mnist:train"))
    sets = score_sets(model, ctx.data("mnist:test"), {"CIFAR-10": ctx.data("cifar10")})
    s = sets["CIFAR-10"]
    d = model.decision_scorer
    return {
        "sets": sets,
        "decision_scorer": d,
        "targets": [
            target_line("seed-closed-set-accuracy", s["closed_set_accuracy"], 0.993),
            target_line(f"seed-{d}-auroc", s["scorers"][d]["auroc"], 0.999),
            target_line(f"seed-{d}-fpr-at-95-tpr", s["scorers"][d]["fpr_at_95_tpr"], 0.005, "max"),
            target_line(f"seed-{d}-macro-f1", s["scorers"][d]["macro_f1"], 0.97),
        ],
    }


def run_mnist_splits(ctx: Context) -> dict:
    """MNIST 6 known / 4 unknown digits, five splits; AUROC, OSCR, closed-set accuracy."""
    train, test = ctx.data("mnist:train"), ctx.data("mnist:test")
    splits = []
    for known in MNIST_SPLITS:
        tr, _ = split_classes(train, known)
        k, u = split_classes(test, known)
        model = ctx.recognizer(tr)
        res = score_sets(model, k, {"other digits": u})["other digits"]
        splits.append({"known_classes": list(known), "unknown_count": len(u), "known_count": len(k)} | res)
    scorers = list(splits[0]["scorers"])
    summary = {}
    for s in scorers:
        for metric in ("auroc", "oscr"):
            vals = [sp["scorers"][s][metric] for sp in splits]
            summary.setdefault(s, {})[metric] = (statistics.mean(vals), statistics.pstdev(vals))
    accs = [sp["closed_set_accuracy"] for sp in splits]
    best = max(scorers, key=lambda s: summary[s]["auroc"][0])
    return {
        "decision_scorer": ctx.decision_scorer,
        "splits": splits,
        "summary": summary,
        "closed_set_accuracy": (statistics.mean(accs), statistics.pstdev(accs)),
        "best_scorer": best,
        "targets": [
            # The metric: the best of all scorers, picked on these unknown digits
            # (post hoc); the pre-declared decision scorer's number is the next line.
            target_line(f"mnist-splits-best-mean-auroc ({best}, post hoc)", summary[best]["auroc"][0], 0.998),
            target_line(
                f"mnist-splits-decision-scorer-mean-auroc ({ctx.decision_scorer})",
                summary[ctx.decision_scorer]["auroc"][0],
                0.998,
            ),
            target_line("mnist-splits-closed-set-accuracy", statistics.mean(accs), 0.995),
        ],
    }


def run_crosr(ctx: Context) -> dict:
    """10 known MNIST classes vs Omniglot, MNIST-Noise and Noise; macro-F1 over 11 classes
    at the threshold accepting 95% of the known validation images."""
    model = ctx.recognizer(ctx.data("mnist:train"))
    test = ctx.data("mnist:test")
    unknowns = {
        "Omniglot": ctx.data("omniglot"),
        "MNIST-Noise": mnist_noise(test, seed=1),
        "Noise": ctx.data("uniform-noise"),
    }
    sets = score_sets(model, test, unknowns)
    d = model.decision_scorer
    goals = {"Omniglot": 0.95, "MNIST-Noise": 0.97, "Noise": 0.97}
    return {
        "sets": sets,
        "decision_scorer": d,
        "targets": [
            target_line(f"crosr-{name.lower()}-macro-f1 ({d})", sets[name]["scorers"][d]["macro_f1"], goal)
            for name, goal in goals.items()
        ],
    }


NEAR = {"FashionMNIST": "fashion-mnist:test", "KMNIST": "kmnist:test", "notMNIST": "notmnist:test"}
FAR = {"CIFAR-10": "cifar10", "Gaussian noise": "gaussian-noise", "uniform noise": "uniform-noise"}


def run_near_far(ctx: Context) -> dict:
    """MNIST vs near (FashionMNIST, KMNIST, notMNIST) and far (CIFAR-10, Gaussian and
    uniform noise) unknowns: AUROC, FPR@95%TPR, AUPR-in, AUPR-out per set."""
    model = ctx.recognizer(ctx.data("mnist:train"))
    unknowns = {name: ctx.data(spec) for name, spec in {**NEAR, **FAR}.items()}
    sets = score_sets(model, ctx.data("mnist:test"), unknowns)
    d = model.decision_scorer
    targets = []
    for name in unknowns:
        s = sets[name]["scorers"][d]
        slug = name.lower().replace(" ", "-")
        targets.append(target_line(f"near-far-{slug}-auroc ({d})", s["auroc"], 0.999))
        targets.append(target_line(f"near-far-{slug}-fpr-at-95-tpr ({d})", s["fpr_at_95_tpr"], 0.005, "max"))
    return {"sets": sets, "decision_scorer": d, "near": list(NEAR), "far": list(FAR), "targets": targets}


PROTOCOLS: dict[str, Callable[[Context], dict]] = {
    "seed": run_seed,
    "mnist-splits": run_mnist_splits,
    "crosr": run_crosr,
    "near-far": run_near_far,
}


# ----------------------------------------------------------------------------- reports
def _fmt(metric: str, value: float) -> str:
    """Five decimals where the targets live near 1 (AUROC, AUPR), four elsewhere."""
    return f"{value:.5f}" if metric.startswith(("auroc", "aupr")) else f"{value:.4f}"


def _sets_table(sets: dict, metrics: tuple[str, ...]) -> list[str]:
    rows = []
    for set_name, s in sets.items():
        for scorer, m in s["scorers"].items():
            rows.append([set_name, scorer, *(_fmt(k, m[k]) for k in metrics)])
    return _table(["unknown set", "scorer", *metrics], rows)


def _comparison(name: str, r: dict) -> list[str]:
    """Published rows, then ours (the decision scorer and the best of ours) in the same units."""
    pub, d = PUBLISHED[name], r["decision_scorer"]
    if name == "mnist-splits":
        rows = [[m, f"{v:.1f}", src] for m, v, src in pub["rows"]]
        best = r["best_scorer"]
        for s in dict.fromkeys([d, best, "msp", "max_logit"]):
            label = " (decision scorer)" if s == d else (" (best of ours)" if s == best else "")
            rows.append([f"osrkit `{s}`", f"{100 * r['summary'][s]['auroc'][0]:.2f}", f"this run{label}"])
        return _table(["method", "AUROC %", "source"], rows)
    if name == "crosr":
        sets = ("Omniglot", "MNIST-Noise", "Noise")
        rows = [[m, *(f"{x:.3f}" for x in v), src] for m, v, src in pub["rows"]]
        for s in dict.fromkeys([d, "combined", "msp"]):
            f1 = [r["sets"][k]["scorers"][s]["macro_f1"] for k in sets]
            rows.append([f"osrkit `{s}`", *(f"{x:.3f}" for x in f1), "this run"])
        return _table(["method", *sets, "source"], rows)
    # near-far: Hendrycks and Gimpel's MSP with an MLP, per set, against our MSP and decision scorer
    names = {"notMNIST": "notMNIST", "CIFAR-10 (grayscale)": "CIFAR-10", "uniform noise": "uniform noise"}
    rows = []
    for label, v, _ in pub["rows"]:
        ours = r["sets"].get(names.get(label, ""), {}).get("scorers")
        cells = [f"{100 * ours[s]['auroc']:.2f}" if ours else "see crosr" for s in ("msp", d)]
        rows.append([label, f"{v}", *cells])
    return _table(["unknown set", "MSP, MLP (published)", "osrkit `msp`", f"osrkit `{d}`"], rows)


def render(name: str, r: dict) -> str:
    """The Markdown report of one protocol's result."""
    lines = [f"# Protocol `{name}`", "", inspect.getdoc(PROTOCOLS[name]).split("\n\n")[0], ""]
    lines.append(
        f"Thresholds accept {r['accept_rate']:.0%} of the known validation split; no threshold, "
        "hyper-parameter or fusion member was chosen by looking at unknown data. Decision "
        f"scorer (pre-declared): `{r['decision_scorer']}`. Wall time {r['wall_s']:.1f} s."
    )
    lines.append("")
    if name == "mnist-splits":
        rows = [
            [
                s,
                f"{100 * v['auroc'][0]:.2f} ± {100 * v['auroc'][1]:.2f}",
                f"{100 * v['oscr'][0]:.2f} ± {100 * v['oscr'][1]:.2f}",
            ]
            for s, v in r["summary"].items()
        ]
        lines += _table(["scorer", "AUROC % (mean ± std)", "OSCR % (mean ± std)"], rows)
        acc = r["closed_set_accuracy"]
        lines += ["", f"Closed-set accuracy {100 * acc[0]:.2f} ± {100 * acc[1]:.2f} %.", ""]
        per = [
            [str(sp["known_classes"]), f"{sp['closed_set_accuracy']:.4f}"]
            + [f"{sp['scorers'][s]['auroc']:.5f}" for s in r["summary"]]
            for sp in r["splits"]
        ]
        lines += _table(["known classes", "closed-set acc", *(f"{s} AUROC" for s in r["summary"])], per)
    else:
        lines += _sets_table(r["sets"], METRICS)
    if name in PUBLISHED:
        pub = PUBLISHED[name]
        lines += ["", f"Ours beside the published numbers ({pub['metric']}):", ""]
        lines += _comparison(name, r)
    lines += ["", *r["targets"]]
    return "\n".join(lines) + "\n"


def run_protocol(name: str, ctx: Context) -> dict:
    """Run one protocol and write ``<out>/<name>.json`` and ``<out>/<name>.md``."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown benchmark {name!r}; choose from {', '.join(PROTOCOLS)} or all")
    ctx.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        result = PROTOCOLS[name](ctx)
    except FileNotFoundError as exc:  # pragma: no cover - readers raise DataError themselves
        raise DataError(f"{exc}") from None
    result |= {
        "protocol": name,
        "wall_s": time.perf_counter() - t0,
        "accept_rate": 0.95,
        "config": ctx.config.to_dict(),
        "subsampled": {"train": ctx.max_train, "test": ctx.max_test},
        "osrkit": __version__,
    }
    atomic_write_json(ctx.out / f"{name}.json", _jsonable(result))
    atomic_write_text(ctx.out / f"{name}.md", render(name, result))
    return result


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x
