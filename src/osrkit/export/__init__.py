"""ONNX export of a fitted recognizer (``onnx``), and ``OnnxRecognizer`` to run the
exported graph (``backend``)."""

from osrkit.export.backend import OnnxRecognizer
from osrkit.export.onnx import export_onnx

__all__ = ["OnnxRecognizer", "export_onnx"]
