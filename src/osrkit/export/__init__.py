"""ONNX export of a fitted recognizer, and ``OnnxRecognizer`` to run the exported graph."""

from osrkit.export.onnx import OnnxRecognizer, export_onnx

__all__ = ["OnnxRecognizer", "export_onnx"]
