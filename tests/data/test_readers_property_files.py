"""Property-based tests of the file readers (issue 22): IDX files, CIFAR-10 python
batches and a model folder's config.json give a correct read or one ``OsrkitError`` line
for any bytes and any JSON. Profiles: tests/conftest.py."""

from __future__ import annotations

import gzip
import json
import math
import pickle
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
# Pillow warns of what damaged files hold (truncated TIFF tags, sizes near its bomb limit)
pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning:PIL", "ignore::PIL.Image.DecompressionBombWarning"
)

from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402
from PIL import Image  # noqa: E402

from osrkit import OpenSetRecognizer  # noqa: E402
from osrkit.cli import main  # noqa: E402
from osrkit.data.cifar import CLASSES, read_cifar_batch  # noqa: E402
from osrkit.data.idx import parse_idx, read_idx, write_idx  # noqa: E402
from osrkit.data.spec import InputSpec  # noqa: E402
from osrkit.errors import ModelFormatError, OsrkitError  # noqa: E402
from tests.data.test_readers_property import assert_one_line  # noqa: E402

FIXTURES = Path(__file__).parents[1] / "fixtures" / "legacy_models"


# ---------------------------------------------------------------------------- IDX
def _idx_header(dims: list[int]) -> bytes:
    return struct.pack(">HBB", 0, 8, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


@example(b"\x00\x00\x08\x01")
@example(_idx_header([65536] * 4))  # numpy's int64 product wrapped to 0: reshape's ValueError escaped
@example(_idx_header([2**32 - 1, 2**32 - 1]) + b"\x00")
@example(_idx_header([0, 5, 0x68000000, 0x3F040000]))  # empty, but numpy's reshape: "array is too big"
@given(
    st.binary(max_size=64)
    | st.builds(
        lambda d, tail: _idx_header(d) + tail,
        st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 4), min_size=1, max_size=5),
        st.binary(max_size=32),
    )
)
def test_idx_any_bytes_read_or_one_line(data):
    try:
        array = parse_idx(data, "x.idx")
    except OsrkitError as exc:
        assert_one_line(exc)
        assert "x.idx" in str(exc)
        return
    assert array.dtype == np.uint8 and array.ndim == data[3]
    assert 4 + 4 * array.ndim + array.size == len(data)


@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)), st.data())
def test_idx_round_trip_and_every_truncation(array, data):
    raw = _idx_header(list(array.shape)) + array.tobytes()
    assert np.array_equal(parse_idx(raw), array)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(OsrkitError) as info:
        parse_idx(raw[:cut])
    assert_one_line(info.value)


@given(st.binary(max_size=64), st.booleans())
def test_idx_gzip_files_of_any_bytes(payload, compress):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x-idx1-ubyte.gz"
        path.write_bytes(gzip.compress(payload) if compress else payload)
        try:
            array = read_idx(path)
        except OsrkitError as exc:
            assert_one_line(exc)
            return
        assert np.array_equal(read_idx(write_idx(Path(tmp) / "again.gz", array)), array)


# ---------------------------------------------------------------------------- CIFAR-10
def _values(dtype: np.dtype) -> st.SearchStrategy:
    side = st.sampled_from([0, 1, 2])
    rows = st.one_of(
        hnp.arrays(dtype, st.tuples(side, st.sampled_from([3072, 3071, 1]))),
        hnp.arrays(dtype, hnp.array_shapes(max_dims=3, max_side=3)),
    )
    return rows


PY_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.binary(max_size=4) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.binary(max_size=3), inner, max_size=3),
    max_leaves=6,
)
BATCH_VALUES = st.one_of(
    PY_VALUES,
    st.sampled_from([np.uint8, np.int64, np.float64, np.bool_, np.int8]).flatmap(_values),
    st.lists(st.integers(-2, 12) | st.integers(), max_size=3),
)


@st.composite
def pickled_batches(draw: st.DrawFn) -> bytes:
    batch = draw(
        st.fixed_dictionaries(
            {}, optional={b"data": BATCH_VALUES, b"labels": BATCH_VALUES, b"batch_label": PY_VALUES}
        )
        | PY_VALUES
    )
    return pickle.dumps(batch, protocol=draw(st.integers(0, 5)))


@example(pickle.dumps({b"data": np.arange(6144).astype(np.uint8).reshape(2, 3072), b"labels": [0, 9]}))
@example(pickle.dumps({b"data": [[300] * 3072], b"labels": [0]}))  # OverflowError escaped
@example(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": 5}))  # TypeError: len()
@example(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [57]}))  # read as label 57
@example(pickle.dumps({b"data": np.full((1, 3072), 3.7), b"labels": [1]}))  # read as pixels 3
@given(pickled_batches() | st.binary(max_size=256))
def test_cifar_batch_of_any_pickle_or_bytes_reads_or_one_line(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_batch"
        path.write_bytes(raw)
        try:
            images, labels = read_cifar_batch(path)
        except OsrkitError as exc:
            assert_one_line(exc)
            assert str(path) in str(exc)
            return
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
    assert labels.dtype == np.int64 and labels.shape == (len(images),)
    assert ((labels >= 0) & (labels < len(CLASSES))).all()
    batch = pickle.loads(raw)  # what was read is what was written: no value wrapped or cut
    planar = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    assert np.array_equal(planar, np.asarray(batch[b"data"])), "pixels changed"
    assert np.array_equal(labels, np.asarray(batch[b"labels"])), "labels changed"


# ---------------------------------------------------------------------------- config.json
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-3, 40)
    | st.integers(min_value=2**62)  # out of any size the networks or scorers accept
    | st.floats()  # NaN and infinities written as NaN / Infinity literals
    | st.text(max_size=6)
    | st.sampled_from(["msp", "knn", "combined", "small_cnn", "colour_cnn", "stretch", "L2"])
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["channels", "height", "name", "members", "k", "a"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)


def _paths(value: object, here: tuple = ()) -> list[tuple]:
    out = [here]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        out += _paths(item, (*here, key))
    return out


@st.composite
def damaged_configs(draw: st.DrawFn) -> tuple[str, str]:
    """A fixture model folder's config.json with one to three values replaced or removed."""
    folder = draw(st.sampled_from(["v1", "v2", "v3-colour"]))
    cfg = json.loads((FIXTURES / folder / "config.json").read_text())
    for _ in range(draw(st.integers(1, 3))):
        *parent, key = draw(st.sampled_from(_paths(cfg)[1:]))
        holder = cfg
        for step in parent:
            holder = holder[step]
        if isinstance(holder, dict) and draw(st.booleans()):
            del holder[key]
        else:
            holder[key] = draw(JSON_VALUES)
    return folder, json.dumps(cfg)


def _load(folder: str, text: str | bytes) -> OpenSetRecognizer | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        shutil.copytree(FIXTURES / folder, path)
        config = path / "config.json"
        config.write_bytes(text if isinstance(text, bytes) else text.encode())
        try:
            return OpenSetRecognizer.from_pretrained(path, device="cpu")
        except OsrkitError as exc:
            assert_one_line(exc)
            return None


V1 = json.loads((FIXTURES / "v1" / "config.json").read_text())
V3 = json.loads((FIXTURES / "v3-colour" / "config.json").read_text())


def _deep(depth: int) -> str:
    return json.dumps(V1)[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"


@example(("v1", _deep(100_000)))  # RecursionError escaped (the CLI printed a traceback)
@example(("v1", _deep(200)))  # parses, but a recursive walk over it could overflow the stack
@example(("v1", json.dumps(V1)[:-1] + ', "x": ' + "9" * 5000 + "}"))  # ValueError escaped
@example(("v3-colour", json.dumps({**V3, "runtime": "x"})))  # AttributeError escaped
@example(("v1", json.dumps({**V1, "class_names": "abc"})))  # loaded with classes a, b, c
@example(("v1", json.dumps({**V1, "format_version": True})))  # read as format 1
@example(("v1", json.dumps({**V1, "preprocessing": {"size": []}})))  # IndexError escaped
@example(("v3-colour", json.dumps({**V3, "input_spec": {**V3["input_spec"], "height": 28.7}})))  # read as 28
@given(damaged_configs())
def test_config_json_of_any_values_loads_or_one_line(case):
    folder, text = case
    model = _load(folder, text)
    if model is not None:  # a correct load: what the file says, in the types it says it
        cfg = json.loads(text)
        assert model.class_names == cfg["class_names"] and all(isinstance(c, str) for c in model.class_names)
        assert all(math.isfinite(v) for v in model.thresholds_.values())
        assert model.decision_scorer in model.scorers_
        if "input_spec" in cfg:
            saved = tuple(cfg["input_spec"][k] for k in ("channels", "height", "width"))
            assert model.input_spec_.shape == saved and all(type(v) is int for v in saved)


SPEC_KEYS = ["channels", "height", "width", "resize", "mean", "std", "invert", "size"]


@example({"size": [28]})  # IndexError escaped from_legacy
@example({"channels": True, "height": 28, "width": 28})  # read as 1 channel
@given(st.dictionaries(st.sampled_from(SPEC_KEYS), JSON_VALUES | st.integers(1, 64)))
def test_input_spec_from_any_dict_or_one_line(d):
    for legacy in (False, True):
        try:
            spec = InputSpec.from_legacy(d) if legacy else InputSpec.from_dict(d)
        except OsrkitError as exc:
            assert_one_line(exc)
            continue
        if legacy:
            given_ = (d.get("channels", 1), *d.get("size", [28, 28]))
        else:
            given_ = (d["channels"], d["height"], d["width"])
        assert spec.shape == given_ and all(type(v) is int for v in given_), (spec, d)


@given(st.text(max_size=80) | st.binary(max_size=80) | JSON_VALUES.map(json.dumps))
def test_config_json_of_any_text_is_one_line(text):
    assert _load("v1", text) is None


@pytest.mark.parametrize(
    "literal, needle",
    [("NaN", "NaN"), ("-Infinity", "-Infinity"), ("1e400", "out of float range"), ("9" * 5000, "digits")],
)
def test_config_json_numbers_osrkit_never_writes_are_refused(literal, needle):
    text = json.dumps(V1).replace('"accept_rate": 0.95', f'"accept_rate": {literal}')
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(FIXTURES / "v1", Path(tmp) / "m")
        (Path(tmp) / "m" / "config.json").write_text(text)
        with pytest.raises(ModelFormatError, match=needle) as info:
            OpenSetRecognizer.from_pretrained(Path(tmp) / "m", device="cpu")
    assert_one_line(info.value)


def test_config_asking_for_a_huge_network_is_refused_before_allocating(tmp_path):
    """channels [4000, 8000] built and initialised a 1.2 GB network (20 s) before the weights
    failed to fit; the shapes are now compared on the meta device first."""
    shutil.copytree(FIXTURES / "v1", tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["classifier"]["channels"] = [40_000, 80_000, 8]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match=r"'body.0.weight' has shape \(40000, 1, 3, 3\)") as info:
        OpenSetRecognizer.from_pretrained(tmp_path / "m", device="cpu")
    assert_one_line(info.value)


def test_cli_deeply_nested_config_is_one_line_not_a_traceback(tmp_path, capsys):
    shutil.copytree(FIXTURES / "v1", tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(_deep(100_000))
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    assert main(["-q", "predict", str(tmp_path / "m"), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("osrkit: error: ") and "\n" not in err and "nested too deeply" in err
