"""The colour protocols: ``cifar10-splits``, ``cifar10-far`` and ``cifar10-train-speed``.

Every model is trained on the JPEG copy of the CIFAR-10 training set (``cifar10:train``)
and tested on the lossless PNG test set (``cifar10:test``), with the colour backbone's
default recipe (``TrainConfig.for_backbone("colour_cnn")``; ``--budget`` sets its epochs
from a PFLOP budget) and its default decision scorer (``max_logit_knn``, declared before
the protocols ran with this network; ``max_logit`` before it).
"""

from __future__ import annotations

import dataclasses
import time

import torch

from osrkit.data.spec import CIFAR10_SPEC
from osrkit.errors import OsrkitError
from osrkit.evaluation.report import target_line
from osrkit.protocols.context import Context
from osrkit.protocols.mnist import splits_comparison
from osrkit.protocols.registry import register_protocol
from osrkit.protocols.results import run_splits, score_sets, table
from osrkit.training.config import TrainConfig
from osrkit.training.flops import training_flops

# Known classes of the five CIFAR-10 6/4 splits, as class indices in the order of
# batches.meta (airplane 0 ... truck 9), from the public split files of ARPL (Chen et al.
# 2021) and Vaze et al. 2022. Splits 0 and 1 hold the same six classes: a known error in
# those files, kept as published; the class lists are sorted before training, so the
# model cache trains that class set once.
CIFAR10_SPLITS: tuple[tuple[int, ...], ...] = (
    (0, 6, 4, 9, 1, 7),
    (7, 6, 4, 9, 0, 1),
    (1, 5, 7, 3, 9, 4),
    (8, 6, 1, 9, 0, 7),
    (2, 4, 1, 7, 9, 6),
)

# AUROC (%) on CIFAR-10 6/4, as quoted by the issue, each checked against a later paper
# that reproduces it (the source column's [N] or [L]):
# [N] Cevikalp et al., "Reaching Nirvana: maximizing the margin in both Euclidean and
#     angular spaces" (NeurIPS 2022 submission), Table 1, CIFAR10 column;
# [L] Lee and AlRegib, "Open-set recognition with gradient-based representations"
#     (ICIP 2021), Table 1 (its baselines taken from the CROSR and CGDL papers).
# ARPL+CS and MLS are in neither: kept as quoted, marked unchecked.
CIFAR10_SPLITS_PUBLISHED = [
    ("Softmax", 67.7, "Neal et al., ECCV 2018 (same in [N] and [L])"),
    ("OpenMax", 69.5, "Neal et al., ECCV 2018 (same in [N] and [L])"),
    ("G-OpenMax", 67.5, "Neal et al., ECCV 2018 (same in [N] and [L])"),
    ("OSRCI", 69.9, "Neal et al., ECCV 2018 (same in [N] and [L])"),
    ("C2AE", 89.5, "Oza and Patel, CVPR 2019 (same in [N] and [L])"),
    ("CROSR", 88.3, "Yoshihashi et al., CVPR 2019 (same in [N])"),
    ("RPL", 82.7, "Chen et al., ECCV 2020 (same in [N])"),
    ("CGDL", 90.3, "Sun et al., CVPR 2020 (same in [L])"),
    ("ARPL+CS", 91.0, "Chen et al., TPAMI 2021 (as quoted by the issue, unchecked)"),
    ("MLS", 93.6, "Vaze et al., ICLR 2022 (as quoted by the issue, unchecked)"),
]

FAR_SETS = {
    "MNIST": "mnist:test",
    "FashionMNIST": "fashion-mnist:test",
    "KMNIST": "kmnist:test",
    "notMNIST": "notmnist:test",
    "Omniglot": "omniglot",
    "Gaussian noise": "gaussian-noise",
    "uniform noise": "uniform-noise",
}
# For context only (other sets: MNIST, SVHN, Textures, Places365; OpenOOD tunes some
# hyper-parameters on OOD validation data, osrkit does not): OpenOOD v1.5's far-OOD AUROC
# averages for a CIFAR-10 ResNet-18.
OPENOOD_FAR = [("KNN", 92.96), ("ViM", 93.48), ("MSP", 90.73), ("Energy", 91.21)]


def _cifar_splits_comparison(r: dict) -> list[str]:
    lines = splits_comparison(r, CIFAR10_SPLITS_PUBLISHED)
    return lines + [
        "",
        "Splits 0 and 1 of the published split files hold the same classes; both are reported, as "
        "published, from one trained model.",
        "",
        "[N]: Cevikalp et al., Reaching Nirvana (NeurIPS 2022 submission), Table 1; [L]: Lee and "
        "AlRegib, Open-set recognition with gradient-based representations (ICIP 2021), Table 1: "
        "later papers that reproduce the numbers (the originals could not be read here).",
    ]


def per_image_budget(config: TrainConfig, share: float) -> TrainConfig:
    """``config`` for a model trained on ``share`` of the images its budget is set for: the
    same FLOPs per training image (so the same epochs), as ``--budget`` means for the splits."""
    if config.budget_pflop is None:
        return config
    return dataclasses.replace(config, budget_pflop=config.budget_pflop * share)


@register_protocol(
    "cifar10-splits",
    "cifar10",
    _cifar_splits_comparison,
    "AUROC (%), mean over the five splits",
)
def run_cifar10_splits(ctx: Context) -> dict:
    """CIFAR-10, 6 known / 4 unknown classes, the literature's five splits: AUROC and OSCR
    of every scorer, closed-set accuracy and macro-F1 at the calibrated threshold (trained
    on the JPEG copy of the training set, tested on the lossless PNG test set)."""
    t0 = time.perf_counter()
    train, test = ctx.data("cifar10:train", CIFAR10_SPEC), ctx.data("cifar10:test", CIFAR10_SPEC)
    # splits 0 and 1 hold one class set: sorted, it is trained once
    metrics = ("auroc", "oscr", "macro_f1")
    r = run_splits(
        ctx, train, test, CIFAR10_SPLITS, per_image_budget(ctx.colour_config, 6 / 10), metrics, True
    )
    summary, d, accs = r["summary"], r["decision_scorer"], r["closed_set_accuracy"]
    wall = time.perf_counter() - t0
    return r | {
        "protocol_wall_s": wall,
        "targets": [
            target_line(f"cifar10-splits-mean-auroc ({d}, pre-declared)", summary[d]["auroc"][0], 0.91),
            target_line(f"cifar10-splits-mean-auroc-moonshot ({d})", summary[d]["auroc"][0], 0.936),
            target_line("cifar10-splits-closed-set-accuracy", accs[0], 0.95),
            target_line("cifar10-splits-wall-time", wall / 60, 45, "max", ".1f", " min"),
        ],
    }


PRETRAINED_NOTE = [
    "",
    "Pretrained track: the networks start from ImageNet weights (efficientnet_lite0, fine-tuned "
    "with its recipe sized from the data). Not comparable with the from-scratch literature above: "
    "ImageNet holds classes close to CIFAR-10's unknowns, so the unknowns are not wholly unseen "
    "(Fort et al., NeurIPS 2021; Miyai et al. 2023 on such 'PT-OOD' classes).",
]


@register_protocol(
    "cifar10-splits-pretrained",
    "cifar10-pretrained",
    lambda r: _cifar_splits_comparison(r) + PRETRAINED_NOTE,
    "AUROC (%), mean over the five splits",
)
def run_cifar10_splits_pretrained(ctx: Context) -> dict:
    """CIFAR-10 6/4, the pretrained track: as ``cifar10-splits``, each split's network
    fine-tuned from ImageNet weights (``efficientnet_lite0``) with its recipe sized from
    the data, and its declared decision rule (``max_logit_knn``)."""
    t0 = time.perf_counter()
    track = dataclasses.replace(ctx, pretrained=True)
    train, test = track.data("cifar10:train", CIFAR10_SPEC), track.data("cifar10:test", CIFAR10_SPEC)
    metrics = ("auroc", "oscr", "macro_f1")
    r = run_splits(track, train, test, CIFAR10_SPLITS, None, metrics, sort_classes=True)
    summary, d, split0 = r["summary"], r["decision_scorer"], r["splits"][0]
    return r | {
        "track": "pretrained (ImageNet weights)",
        "protocol_wall_s": time.perf_counter() - t0,
        "targets": [
            target_line(f"pretrained-splits-mean-auroc ({d}, pre-declared)", summary[d]["auroc"][0], 0.93),
            target_line(f"pretrained-split0-auroc ({d})", split0["scorers"][d]["auroc"], 0.93),
            target_line(f"pretrained-split0-auroc-moonshot ({d})", split0["scorers"][d]["auroc"], 0.95),
            target_line("pretrained-split0-closed-set-accuracy", split0["closed_set_accuracy"], 0.97),
        ],
    }


def _far_comparison(r: dict) -> list[str]:
    d = r["decision_scorer"]
    ours = {s: 100 * v for s, v in r["mean"].items()}  # mean AUROC over the sets
    rows = [
        [f"OpenOOD v1.5 {m} (ResNet-18; MNIST, SVHN, Textures, Places365)", f"{v:.2f}"]
        for m, v in OPENOOD_FAR
    ]
    for s in dict.fromkeys([d, "knn", "vim", "msp", "energy"]):
        if s in ours:
            rows.append([f"osrkit `{s}` (mean over our {len(r['sets'])} sets)", f"{ours[s]:.2f}"])
    return table(["method", "far-OOD AUROC % (mean)"], rows) + [
        "",
        "For context only: the sets differ, and OpenOOD tunes some hyper-parameters on OOD "
        "validation data; osrkit tunes nothing on unknowns.",
    ]


@register_protocol("cifar10-far", "cifar10", _far_comparison, "far-OOD AUROC, for context")
def run_cifar10_far(ctx: Context) -> dict:
    """CIFAR-10 (all 10 classes known) vs far unknowns: MNIST, FashionMNIST, KMNIST,
    notMNIST, Omniglot (each turned into 3x32x32 colour, gray repeated in each channel),
    Gaussian and uniform noise; AUROC, FPR@95%TPR, AUPR-in, AUPR-out per set."""
    return far_sets(ctx, ctx.colour_config, "cifar10-far")


@register_protocol(
    "cifar10-far-pretrained",
    "cifar10-pretrained",
    lambda r: _far_comparison(r) + PRETRAINED_NOTE,
    "far-OOD AUROC, for context",
)
def run_cifar10_far_pretrained(ctx: Context) -> dict:
    """CIFAR-10 vs far unknowns, the pretrained track: as ``cifar10-far``, the network
    fine-tuned from ImageNet weights (``efficientnet_lite0``) with its recipe sized from
    the data, and its declared decision rule (``max_logit_knn``)."""
    return far_sets(dataclasses.replace(ctx, pretrained=True), None, "pretrained-far") | {
        "track": "pretrained (ImageNet weights)"
    }


def far_sets(ctx: Context, config: TrainConfig | None, slug_prefix: str) -> dict:
    """CIFAR-10's 10 classes known against each far set: a recognizer trained with
    ``config`` (None: the context's sized recipe), every scorer, the targets."""
    model = ctx.recognizer(ctx.data("cifar10:train", CIFAR10_SPEC), config)
    unknowns = {name: ctx.data(source, CIFAR10_SPEC) for name, source in FAR_SETS.items()}
    sets = score_sets(model, ctx.data("cifar10:test", CIFAR10_SPEC), unknowns)
    d = model.decision_scorer_
    targets = []
    for name in unknowns:
        s = sets[name]["scorers"][d]
        slug = name.lower().replace(" ", "-")
        targets.append(target_line(f"{slug_prefix}-{slug}-auroc ({d})", s["auroc"], 0.99))
        targets.append(
            target_line(f"{slug_prefix}-{slug}-fpr-at-95-tpr ({d})", s["fpr_at_95_tpr"], 0.05, "max")
        )
    mean = {
        s: sum(v["scorers"][s]["auroc"] for v in sets.values()) / len(sets)
        for s in next(iter(sets.values()))["scorers"]
    }
    return {"sets": sets, "decision_scorer": d, "mean": mean, "targets": targets}


@torch.inference_mode()
def classification_accuracy(
    net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig | None = None
) -> float:
    """Closed-set accuracy of ``net`` (eval mode) on uint8 ``images``, in batches of 1,000."""
    cfg = cfg or TrainConfig()
    net.eval()
    correct = 0
    for i in range(0, len(images), 1000):
        x = images[i : i + 1000].float().div_(255.0).contiguous(memory_format=cfg.memory_format)
        correct += int((net(x).argmax(1) == labels[i : i + 1000]).sum())
    return correct / len(images)


@register_protocol("cifar10-train-speed", "cifar10")
def run_cifar10_train_speed(ctx: Context) -> dict:
    """Accuracy against training compute of the colour backbone on all 10 CIFAR-10
    classes: the recipe's network (``--budget``: its epochs from a PFLOP budget) trained on
    45,000 training images (5,000 held out for validation, as every osrkit model; the
    recognizer ``cifar10-far`` scores, cached), tested on the 10,000 test PNGs at the end
    with the network's test-time views and with one view. Reports the training PFLOP
    (``osrkit.training.flops``), each epoch's validation error against cumulative PFLOP and
    training seconds, and the share of this run's ``torch.mm`` rate, measured in the same
    run, in the dtype training ran in (bfloat16 where the CPU has it natively, else
    float32). Checkpointed after every epoch, so an interrupted run resumes."""
    cfg = ctx.colour_config
    train, test = ctx.data("cifar10:train", CIFAR10_SPEC), ctx.data("cifar10:test", CIFAR10_SPEC)
    rate_bf16, rate_fp32 = ctx.matrix_rate(True), ctx.matrix_rate(False)
    # the model cifar10-far decides with: trained once, cached (and resumable) in out/cache
    model = ctx.recognizer(train, cfg)
    report = ctx.fit_report(train, cfg)
    if report is None:
        raise OsrkitError(f"no fit report beside the cached model in {ctx.out / 'cache'}: delete the cache")
    net = model.classifier_
    n_train = report["train_size"]
    per_image = training_flops(net, CIFAR10_SPEC.shape)
    epochs, seconds = [], 0.0
    for h in report["classifier"]["history"]:
        seconds += h.get("train_s", 0.0)
        epochs.append(
            {
                "epoch": h["epoch"],
                "train_s": seconds,
                "pflop": per_image * n_train * h["epoch"] / 1e15,
                "val_error": h["val_metric"],
            }
        )
    accuracy = classification_accuracy(net, test.images, test.labels, cfg)
    net.test_views = False
    one_view = classification_accuracy(net, test.images, test.labels, cfg)
    net.test_views = True
    total = per_image * n_train * len(epochs)
    # the perfect CPU runs at the matrix-multiply rate of the dtype training ran in: where
    # bfloat16 is emulated (no AMX or AVX-512 BF16), training runs in float32
    dtype = "bfloat16" if cfg.use_bf16 else "float32"
    rate = rate_bf16 if cfg.use_bf16 else rate_fp32
    flop_bound_s = total / (rate * 1e9)
    share = flop_bound_s / seconds if seconds > 0 else 0.0
    pflop = total / 1e15
    reached = accuracy >= 0.94
    return {
        "epochs": epochs,
        "train_images": n_train,
        "flops_per_image": per_image,
        "training_flops": total,
        "test_accuracy": accuracy,
        "test_accuracy_one_view": one_view,
        "backbone_options": net.backbone_options,
        "mm_bf16_gflops": rate_bf16,
        "mm_fp32_gflops": rate_fp32,
        "flop_bound_s": flop_bound_s,
        "flop_bound_dtype": dtype,
        "flop_bound_bf16_s": total / (rate_bf16 * 1e9),
        "train_s": seconds,
        "matrix_rate_share": share,
        "recipe": cfg.to_dict(),
        "decision_scorer": "n/a",
        "targets": [
            target_line("cifar10-train-speed-test-accuracy", accuracy, 0.94),
            target_line("cifar10-train-speed-training-pflop (94% at most 0.4)", pflop, 0.4, "max", ".3f"),
            f"target cifar10-train-speed-94%-at-0.3-pflop-moonshot: {pflop:.3f} PFLOP, "
            f"accuracy {accuracy:.4f} (goal 0.94 with <= 0.3) "
            + ("met" if reached and pflop <= 0.3 else "short"),
            target_line(f"cifar10-train-speed-share-of-{dtype}-matrix-rate", share, 0.6),
        ],
    }


def speed_table(r: dict) -> list[str]:
    """The ``cifar10-train-speed`` report: validation error per epoch against PFLOP and
    seconds, the test accuracy, then the FLOP-bound time."""
    dtype = r["flop_bound_dtype"]
    rate = r["mm_bf16_gflops"] if dtype == "bfloat16" else r["mm_fp32_gflops"]
    rows = [
        [str(e["epoch"]), f"{e['pflop']:.3f}", f"{e['train_s']:.0f}", f"{e['val_error']:.4f}"]
        for e in r["epochs"]
    ]
    lines = table(
        ["epoch", "training PFLOP (cumulative)", "training wall s (cumulative)", "validation error"], rows
    )
    return lines + [
        "",
        f"Test accuracy (10,000 test images): **{r['test_accuracy']:.4f}** with the network's test-time "
        f"views, {r['test_accuracy_one_view']:.4f} with one view. Network: colour_cnn "
        f"{r['backbone_options']}.",
        "",
        f"{r['train_images']:,} training images; {r['flops_per_image'] / 1e6:.1f} MFLOP per image "
        f"(forward and backward); the whole run {r['training_flops'] / 1e15:.3f} PFLOP. Training ran in "
        f"{dtype}; at this run's {dtype} `torch.mm` rate ({rate:.0f} GFLOP/s; bfloat16 "
        f"{r['mm_bf16_gflops']:.0f}, float32 {r['mm_fp32_gflops']:.0f}) a perfect CPU would need "
        f"{r['flop_bound_s']:.0f} s"
        + (f" ({r['flop_bound_bf16_s']:.0f} s at the bfloat16 rate)" if dtype == "float32" else "")
        + f"; training took {r['train_s']:.0f} s ({100 * r['matrix_rate_share']:.0f}% of the rate). "
        "Anchor: airbench94 (Jordan 2024) reaches 94.01% with 0.36 PFLOP of training.",
    ]
