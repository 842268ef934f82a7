"""osrkit: open-set recognition that says "I don't know" for inputs of unseen classes."""

__version__ = "0.2.0"

from .data import ImageSet, InputSpec, load_dataset, preprocess_image  # noqa: E402
from .models import create_backbone, list_backbones, register_backbone  # noqa: E402
from .recognizer import UNKNOWN, OpenSetRecognizer  # noqa: E402
from .runtime import FastPaths  # noqa: E402
from .scorers import list_scorers, make_scorer, register_scorer  # noqa: E402
from .training import TrainConfig  # noqa: E402

__all__ = [
    "UNKNOWN",
    "FastPaths",
    "ImageSet",
    "InputSpec",
    "OpenSetRecognizer",
    "TrainConfig",
    "__version__",
    "create_backbone",
    "list_backbones",
    "list_scorers",
    "load_dataset",
    "make_scorer",
    "preprocess_image",
    "register_backbone",
    "register_scorer",
]
