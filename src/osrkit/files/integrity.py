"""A saved model proves it is the one that was saved, and holds only finite numbers.

- A model folder's ``config.json`` records the SHA-256 of every weight file under
  ``sha256`` (``{"classifier.safetensors": "<hex>", ...}``); loading reads each file once,
  checks its hash and loads those very bytes. A mismatch is refused in one line. A folder
  saved before the hashes were recorded loads with a warning that it is unverified.
- An ONNX export records the SHA-256 of its graph (every weight, constant and node: the
  ``graph`` field of the ModelProto, as written) in the metadata entry
  ``osrkit_graph_sha256``; ``OnnxRecognizer`` checks it before building a session. The
  graph is located in the protobuf bytes here, so checking needs no ``onnx`` package.
  osrkit writes no external-data files (``external_data=False``), so none are hashed.
- Thresholds, the accept rate and every number of the scorers' calibration state must be
  finite: a NaN threshold accepts nothing as unknown (``score > NaN`` is always False).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from osrkit.errors import ModelFormatError

log = logging.getLogger(__name__)

CHECKSUMS_KEY = "sha256"
ONNX_DIGEST_KEY = "osrkit_graph_sha256"
ONNX_FORMAT_KEY = "osrkit_format"  # the metadata entry naming an osrkit export's format
_GRAPH_FIELD = 7  # ModelProto.graph
_METADATA_FIELD = 14  # ModelProto.metadata_props (StringStringEntryProto: key 1, value 2)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(file: Path, checksums: Mapping[str, str] | None, config: Path) -> bytes:
    """The bytes of weight ``file``, checked against ``checksums`` (None: a folder saved
    before hashes were recorded, read unverified)."""
    if not file.is_file():
        raise ModelFormatError(f"model folder {file.parent} lacks {file.name}")
    data = file.read_bytes()
    if checksums is None:
        return data
    expected = checksums.get(file.name)
    if expected is None:
        raise ModelFormatError(
            f"{file} is not recorded in {config} ({CHECKSUMS_KEY}); restore the folder from a "
            "backup, or save or train the model again"
        )
    if sha256_hex(data) != expected:
        raise ModelFormatError(
            f"{file} does not match the SHA-256 recorded in {config}: it is damaged or was changed "
            "after saving; restore it from a backup, or save or train the model again"
        )
    return data


def checksums_of(cfg: Mapping[str, Any], folder: Path) -> dict[str, str] | None:
    """The recorded weight-file hashes, or None (with a warning) for an older folder."""
    recorded = cfg.get(CHECKSUMS_KEY)
    if recorded is None:
        log.warning(
            "model folder %s records no SHA-256 of its weight files (saved by an older osrkit): "
            "loaded unverified; save it again to record them",
            folder,
        )
        return None
    if not isinstance(recorded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in recorded.items()
    ):
        raise ModelFormatError(
            f"{folder / 'config.json'}: {CHECKSUMS_KEY} is not a map of file names to hashes; "
            "restore the file, or save or train the model again"
        )
    return recorded


# ---------------------------------------------------------------------- finite values
def check_finite_arrays(arrays: Mapping[str, np.ndarray], source: Path) -> None:
    """Refuse fitted scorer arrays (kNN bank, class means, bases) holding NaN or infinity."""
    for name, array in arrays.items():
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ModelFormatError(
                f"{source}: scorer array {name!r} holds NaN or infinity; fit the model again or "
                "restore the file"
            )


# ---------------------------------------------------------------------- ONNX graph hash
def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes | memoryview) -> Iterator[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of the top-level fields of a protobuf message;
    a length-delimited value as a memoryview of its bytes."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        key, pos = _varint(view, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(view, pos)
        elif wire == 1:
            value, pos = view[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(view, pos)
            value, pos = view[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = view[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(view):
            raise ValueError("truncated protobuf field")
        yield number, wire, value


def onnx_graph_digest(model: bytes) -> str:
    """SHA-256 of the ``graph`` field of serialized ONNX ``model``."""
    digest = hashlib.sha256()
    for number, wire, value in _fields(model):
        if number == _GRAPH_FIELD and wire == 2:
            digest.update(value)
    return digest.hexdigest()


def onnx_metadata(model: bytes) -> dict[str, str]:
    """The ``metadata_props`` of serialized ONNX ``model`` (raises ValueError if it is not
    a protobuf message)."""
    out = {}
    for number, wire, value in _fields(model):
        if number == _METADATA_FIELD and wire == 2:
            entry = {n: bytes(v).decode("utf-8", "replace") for n, w, v in _fields(value) if w == 2}
            out[entry.get(1, "")] = entry.get(2, "")
    return out


def _length_delimited(number: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def with_onnx_digest(model: bytes) -> bytes:
    """Serialized ``model`` with the SHA-256 of its graph appended as one more metadata
    entry (protobuf merges a repeated field written again at the end; the graph's bytes
    are untouched)."""
    entry = _length_delimited(1, ONNX_DIGEST_KEY.encode()) + _length_delimited(
        2, json.dumps(onnx_graph_digest(model)).encode()
    )
    return model + _length_delimited(_METADATA_FIELD, entry)


def check_onnx_digest(model: bytes, path: Path) -> None:
    """Refuse an osrkit ONNX export whose graph does not match its recorded hash; warn that
    an export without one (written by an older osrkit) is unverified."""
    try:
        metadata = onnx_metadata(model)
        recorded = metadata.get(ONNX_DIGEST_KEY)
        actual = onnx_graph_digest(model) if recorded else None
    except ValueError:
        raise ModelFormatError(f"{path} is not a loadable ONNX model (damaged protobuf)") from None
    if recorded is None and ONNX_FORMAT_KEY not in metadata:
        return  # not osrkit's: OnnxRecognizer says so once it has read the metadata
    if recorded is None:
        log.warning(
            "%s records no SHA-256 of its graph (exported by an older osrkit): loaded unverified; "
            "export it again to record one",
            path,
        )
    elif json.dumps(actual) != recorded:
        raise ModelFormatError(
            f"{path} does not match the SHA-256 recorded in it: it is damaged or was changed after "
            "export; export it again (osrkit export) or restore it from a backup"
        )
