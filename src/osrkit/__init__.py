"""osrkit: open-set recognition that says "I don't know" for inputs of unseen classes."""

__version__ = "0.1.0"

from .data import ImageSet, load_dataset, preprocess_image  # noqa: E402
from .recognizer import UNKNOWN, OpenSetRecognizer  # noqa: E402
from .runtime import FastPaths  # noqa: E402
from .training import TrainConfig  # noqa: E402

__all__ = [
    "UNKNOWN",
    "FastPaths",
    "ImageSet",
    "OpenSetRecognizer",
    "TrainConfig",
    "__version__",
    "load_dataset",
    "preprocess_image",
]
