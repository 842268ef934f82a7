"""The open-set recognizer: the estimator users fit and call (``estimator``), its
parameters checked (``params``), its networks trained (``fitting``), how it scores images
(``inference``, ``engine``) and how it is saved to and loaded from a model folder
(``persistence``)."""

from osrkit.recognizer.engine import FastPaths, InferenceEngine
from osrkit.recognizer.estimator import UNKNOWN, OpenSetRecognizer

__all__ = ["UNKNOWN", "FastPaths", "InferenceEngine", "OpenSetRecognizer"]
