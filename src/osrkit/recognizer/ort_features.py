"""A network's feature extractor run by ONNX Runtime, an inference fast path.

PyTorch's CPU kernels run EfficientNet's depthwise convolutions, batch norms and ReLU6
as separate passes over memory; ONNX Runtime fuses them (BENCHMARKS.md, "Pretrained
backbones", has the ratio). A backbone asks for this path with ``onnx_features = True``;
the inference engine exports its folded ``forward_features`` once (float32, any batch
size) and runs it in an ``onnxruntime.InferenceSession`` on the CPU. The class head and
every scorer stay in PyTorch, so nothing about the scores' maths moves.

onnxruntime is optional (the ``onnx`` extra): without it, or if the export fails, the
engine runs the network in PyTorch and a debug line says why.

osrkit imports onnxruntime only through ``import_onnxruntime``, with its telemetry off.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from types import ModuleType

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def import_onnxruntime() -> ModuleType:
    """onnxruntime with its telemetry off (ImportError without the ``onnx`` extra).

    Its Linux builds write a device id and an event database under
    ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` as the library loads, unless
    ``ORT_DISABLE_TELEMETRY`` is set before the first import: it is set here (a value the
    user set is kept), and ``disable_telemetry_events()`` turns off the event stream. An
    onnxruntime imported before osrkit keeps the settings of that import.
    """
    if "onnxruntime" not in sys.modules:
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime  # the onnx extra

    onnxruntime.disable_telemetry_events()
    return onnxruntime


class _Features(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


class OnnxFeatures:
    """``forward_features`` of ``net`` (in eval mode, float32) in ONNX Runtime, with as
    many threads as torch uses."""

    def __init__(self, net: nn.Module, sample: torch.Tensor) -> None:
        ort = import_onnxruntime()  # optional extra: the caller falls back without it
        buf = io.BytesIO()
        wrapper = _Features(net).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            # The TorchScript-based exporter: seconds for this graph where torch.export takes
            # several times longer, paid on every engine build.
            torch.onnx.export(
                wrapper,
                (sample,),
                buf,
                input_names=["x"],
                output_names=["features"],
                dynamic_axes={"x": {0: "n"}, "features": {0: "n"}},
                opset_version=18,
                dynamo=False,
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.float().numpy())
        return torch.from_numpy(self.session.run(None, {"x": x})[0])


def onnx_features(net: nn.Module, sample: torch.Tensor) -> OnnxFeatures | None:
    """``OnnxFeatures`` of ``net``, or None where onnxruntime is missing or the export
    fails (the engine then runs ``net`` in PyTorch)."""
    try:
        return OnnxFeatures(net, sample)
    except ImportError:
        log.debug("onnxruntime is not installed: %s runs in PyTorch", type(net).__name__)
    except Exception as exc:  # an export or session failure: PyTorch still works
        log.debug("%s stays in PyTorch: its ONNX export failed (%s)", type(net).__name__, exc)
    return None
