"""Command-line arguments: value types, the option groups, and the conversion of parsed
arguments into the Python API's objects (``JobData``, ``ModelOptions``, training options)."""

from __future__ import annotations

import argparse
import math

from osrkit.data.split import VAL_FRACTION, VAL_MAX, VAL_MIN_PER_CLASS
from osrkit.errors import ConfigError
from osrkit.jobs.pipeline import JobData, ModelOptions
from osrkit.models import list_backbones
from osrkit.scorers.selection import DEFAULT_SCORERS, parse_scorer_names, report_order
from osrkit.training.config import TrainConfig

DEFAULTS = TrainConfig()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _float_in(lo: float, hi: float, lo_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
            bracket = "(" if lo_open else "["
            raise argparse.ArgumentTypeError(f"must be in {bracket}{lo:g}, {hi:g}], got {text}")
        return value

    return parse


_positive_float = _float_in(0.0, math.inf, lo_open=True)


def _add_data_root(p: argparse.ArgumentParser | argparse._ArgumentGroup, top: bool = False) -> None:
    """``--data-root``: given before the subcommand (``top``, default None) or after it (the
    default suppressed, so that the subcommand keeps the value given before it)."""
    p.add_argument(
        "--data-root",
        metavar="DIR",
        default=None if top else argparse.SUPPRESS,
        help="folder holding the datasets (default: $OSRKIT_DATA, else ./data, else ../shared/data)",
    )


def _add_data_args(p: argparse.ArgumentParser, train: bool, test: bool) -> None:
    g = p.add_argument_group("data")
    _add_data_root(g)
    g.add_argument(
        "--download",
        action="store_true",
        help="download missing datasets from their official URLs (md5-verified)",
    )
    if train:
        g.add_argument(
            "--train",
            default="mnist:train",
            metavar="DATA",
            help="known-class training data: a dataset name (mnist:train, "
            "fashion-mnist:train, kmnist:train) or an image folder <class>/<image> "
            "(default: %(default)s)",
        )
        g.add_argument(
            "--max-train",
            type=_positive_int,
            metavar="N",
            help="use a seeded random sample of N training images",
        )
        g.add_argument(
            "--memory-budget",
            type=_float_in(0, math.inf),
            metavar="GB",
            help="an image folder whose decoded images exceed this many GiB is read lazily, batch by "
            "batch in DataLoader workers, instead of into memory (0: always lazily; default: a quarter "
            "of this machine's memory, shared by the ranks torchrun starts on it)",
        )
    if test:
        g.add_argument(
            "--known",
            default="mnist:test",
            metavar="DATA",
            help="known-class test data, same classes as training (default: %(default)s)",
        )
        g.add_argument(
            "--unknown",
            default="cifar10",
            metavar="DATA",
            help="unknown test data: cifar10, fashion-mnist, kmnist, notmnist, or an "
            "image folder (default: %(default)s)",
        )
        g.add_argument(
            "--max-known",
            type=_positive_int,
            metavar="N",
            help="use a seeded random sample of N known test images",
        )
        g.add_argument(
            "--max-unknown",
            type=_positive_int,
            metavar="N",
            help="use a seeded random sample of N unknown test images",
        )


# Training options that override the backbone's recipe: (flag, TrainConfig field, type,
# metavar, help). Unset options keep the recipe's value (TrainConfig.for_backbone).
_RECIPE_OPTIONS = (
    ("--epochs", "epochs", "int", None, "classifier epochs"),
    ("--ae-epochs", "ae_epochs", "int", None, "autoencoder epochs"),
    ("--batch-size", "batch_size", "int", None, "images per training step"),
    ("--lr", "lr", "float", None, "classifier peak learning rate, one-cycle schedule"),
    ("--ae-lr", "ae_lr", "float", None, "autoencoder peak learning rate"),
    (
        "--val-size",
        "val_size",
        "int",
        None,
        "known training images held out (stratified, seeded) for early stopping and threshold calibration",
    ),
    ("--patience", "patience", "int", None, "stop after this many epochs without validation improvement"),
    (
        "--rotation",
        "rotation_degrees",
        "degrees",
        "DEGREES",
        "random rotation by up to this many degrees; 0: off",
    ),
    ("--hflip", "hflip_prob", "prob", "P", "probability of a random horizontal flip; 0: off"),
    (
        "--crop-padding",
        "crop_padding",
        "int0",
        "PIXELS",
        "random crop of the image padded by this many pixels",
    ),
    ("--label-smoothing", "label_smoothing", "smoothing", "EPS", "label smoothing of the cross-entropy"),
    (
        "--budget",
        "budget_pflop",
        "float",
        "PFLOP",
        "classifier training budget in PFLOP (forward and backward): sets the epochs, the same on any CPU",
    ),
)
_PARSERS = {
    "int": _positive_int,
    "int0": _nonneg_int,
    "float": _positive_float,
    "degrees": _float_in(0, 180),
    "prob": _float_in(0, 1),
    "smoothing": _float_in(0, 0.99),
}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--backbone",
        choices=list_backbones(),
        metavar="NAME",
        help=f"classifier network: {', '.join(list_backbones())} (default: small_cnn for grayscale "
        "images up to 32 px, otherwise the ImageNet-pretrained efficientnet_lite0, or colour_cnn "
        "where its weights are not installed)",
    )
    g.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start from ImageNet weights (default: where the backbone has them); --no-pretrained "
        "trains from scratch (colour images then get colour_cnn)",
    )
    g.add_argument(
        "--image-size",
        type=_image_size,
        metavar="N|HxW",
        help="input size of the model (default: the data's own; an image folder's from its images)",
    )
    g.add_argument(
        "--channels",
        type=_channels,
        help="1 (grayscale) or 3 (RGB) (default: the data's own)",
    )
    g.add_argument(
        "--autoencoder",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the autoencoder whose reconstruction error flags unknowns (default: on for "
        "small_cnn, off for colour_cnn)",
    )
    g.add_argument(
        "--decision-scorer",
        choices=report_order(),
        metavar="SCORER",
        help="scorer whose threshold decides (default: fusion with an autoencoder, else max_logit; "
        "combined is the seed's rule)",
    )
    g.add_argument(
        "--scorers",
        type=_scorer_names,
        metavar="A,B,C",
        help=f"scorers to fit, comma-separated, or 'all' (default: {', '.join(DEFAULT_SCORERS)} and "
        f"the decision scorer with its members); registered: {', '.join(report_order())}",
    )


def _scorer_names(text: str) -> list[str] | str:
    try:
        return parse_scorer_names(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_device_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto, cpu, cuda, cuda:N or mps (default: auto = CUDA, then MPS, then CPU)",
    )


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(values) not in (1, 2) or any(v < 1 or v > 4096 for v in values):
        raise argparse.ArgumentTypeError(f"image size must be N or HxW with sides in [1, 4096], got {text!r}")
    return (values[0], values[-1])


def _channels(text: str) -> int:
    if text not in ("1", "3"):
        raise argparse.ArgumentTypeError(f"must be 1 (grayscale) or 3 (RGB), got {text!r}")
    return int(text)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    _add_model_args(p)
    g = p.add_argument_group("training (unset options keep the backbone's recipe; digits: see defaults)")
    for flag, field, kind, metavar, text in _RECIPE_OPTIONS:
        g.add_argument(
            flag,
            dest=field,
            type=_PARSERS[kind],
            default=None,
            metavar=metavar,
            help=f"{text} (small_cnn default: {_default_text(field)})",
        )
    g.add_argument(
        "--seed",
        type=_nonneg_int,
        default=DEFAULTS.seed,
        help="seed for the split, initialisation, shuffling and augmentation (default: %(default)s)",
    )
    g.add_argument(
        "--no-channels-last",
        action="store_true",
        help="train in the default NCHW memory layout instead of channels-last",
    )
    _add_device_arg(g)
    _add_fast_arg(g)
    g.add_argument(
        "--accept-rate",
        type=_float_in(0, 1, lo_open=True),
        default=0.95,
        help="fraction of known validation images each threshold accepts (default: %(default)s)",
    )


def _add_output_args(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--out",
        default=default,
        required=default is None,
        metavar="DIR",
        help="output folder" + (" (default: %(default)s)" if default else ""),
    )
    p.add_argument("--overwrite", action="store_true", help="replace what --out already holds")


def _add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--embed-samples",
        type=_positive_int,
        default=2000,
        metavar="N",
        help="test images in the t-SNE/PCA plot, 2/3 known and 1/3 unknown (default: %(default)s)",
    )


def _add_fast_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup, top: bool = False) -> None:
    p.add_argument(
        "--no-fast",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="turn off the CPU fast paths (channels-last, folded batch norm, bfloat16): "
        "the plain float32 path, as OSRKIT_FAST=0 does",
    )


def _train_overrides(args: argparse.Namespace) -> dict:
    """The training options given on the command line, over the backbone's recipe."""
    overrides = {
        field: getattr(args, field) for _, field, *_ in _RECIPE_OPTIONS if getattr(args, field) is not None
    }
    overrides["seed"] = args.seed
    if args.no_channels_last or args.no_fast:
        overrides["channels_last"] = False
    if args.no_fast:
        overrides["bf16"] = False
    return overrides


def _default_text(field: str) -> str:
    value = getattr(DEFAULTS, field)
    if field == "val_size" and value is None:
        share = round(100 * VAL_FRACTION)  # '%%': argparse formats help with %
        return f"{share}%% of the images, at least {VAL_MIN_PER_CLASS} per class, at most {VAL_MAX}"
    if field == "budget_pflop" and value is None:
        return "none, the recipe's epochs"
    return str(value)


def _model_options(args: argparse.Namespace) -> ModelOptions:
    return ModelOptions(
        backbone=args.backbone,
        autoencoder=args.autoencoder,
        decision_scorer=args.decision_scorer,
        device=args.device,
        scorers=args.scorers,
        pretrained=args.pretrained,
    )


def _job_data(args: argparse.Namespace) -> JobData:
    return JobData(
        train=getattr(args, "train", "mnist:train"),
        known=getattr(args, "known", "mnist:test"),
        unknown=getattr(args, "unknown", "cifar10"),
        root=args.data_root,
        download=args.download,
        max_train=getattr(args, "max_train", None),
        memory_budget=None
        if getattr(args, "memory_budget", None) is None
        else int(args.memory_budget * 2**30),
        max_known=getattr(args, "max_known", None),
        max_unknown=getattr(args, "max_unknown", None),
        seed=args.seed,
        image_size=getattr(args, "image_size", None),
        channels=getattr(args, "channels", None),
    )
