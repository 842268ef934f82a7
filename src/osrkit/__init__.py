"""osrkit: open-set recognition that says "I don't know" for inputs of unseen classes."""

from osrkit._version import __version__
from osrkit.data import ImageSet, InputSpec, load_dataset, preprocess_image  # noqa: E402
from osrkit.jobs.predictions import explain
from osrkit.models import create_backbone, list_backbones, register_backbone  # noqa: E402
from osrkit.recognizer.engine import FastPaths  # noqa: E402
from osrkit.recognizer.estimator import UNKNOWN, OpenSetRecognizer  # noqa: E402
from osrkit.scorers import create_scorer, list_scorers, make_scorer, register_scorer  # noqa: E402
from osrkit.training.config import TrainConfig

__all__ = [
    "UNKNOWN",
    "FastPaths",
    "ImageSet",
    "InputSpec",
    "OpenSetRecognizer",
    "TrainConfig",
    "__version__",
    "create_backbone",
    "create_scorer",
    "explain",
    "list_backbones",
    "list_scorers",
    "load_dataset",
    "make_scorer",
    "preprocess_image",
    "register_backbone",
    "register_scorer",
]
