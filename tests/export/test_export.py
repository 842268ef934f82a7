"""ONNX export of the whole recognizer and the ONNX Runtime backend, against PyTorch."""

import copy
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from osrkit import OpenSetRecognizer, load_dataset
from osrkit.data.spec import MNIST_SPEC
from osrkit.errors import ConfigError, ModelFormatError, OutputExistsError
from osrkit.export import OnnxRecognizer, export_onnx
from osrkit.export.onnx import ONNX_FORMAT_VERSION, OUTPUT_NAMES
from osrkit.files.integrity import onnx_graph_digest
from osrkit.recognizer.engine import FastPaths
from osrkit.scorers import SCORERS
from osrkit.scorers.selection import report_order
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.conftest import synthetic_digits, synthetic_unknowns
from tests.numerics import (
    ONNX_LOGITS_ATOL,
    assert_argmax_agree,
    assert_decisions_agree,
    assert_scores_close,
    onnx_tol,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exported(fitted, tmp_path_factory):
    """The fitted recognizer saved and exported to ``model/model.onnx``, its float32
    reference path (``FastPaths.off()``) and the ONNX Runtime backend on the export."""
    folder = fitted.save_pretrained(tmp_path_factory.mktemp("export") / "model")
    path = export_onnx(fitted, folder / "model.onnx")
    reference = OpenSetRecognizer.from_pretrained(folder, fast_paths=FastPaths.off())
    return SimpleNamespace(folder=folder, path=path, reference=reference, onnx=OnnxRecognizer(path))


def probe_images() -> torch.Tensor:
    """Known-like digits, unknown textures and the extremes (all black, all white)."""
    digits, _ = synthetic_digits(60, seed=5)
    images = np.concatenate(
        [
            digits,
            synthetic_unknowns(60, seed=6),
            np.zeros((1, 28, 28), np.uint8),
            np.full((1, 28, 28), 255, np.uint8),
        ]
    )
    return torch.from_numpy(images)


def assert_agree(reference: OpenSetRecognizer, backend: OnnxRecognizer, x) -> None:
    """ONNX outputs match the PyTorch reference, within the tolerances of numerics.py."""
    ref_out = reference.outputs(x)
    ref_scores = reference.scores_from_outputs(ref_out)
    out = backend.run(x)
    scores = backend.scores_from_outputs(out)
    assert list(scores) == list(ref_scores)
    for name, ref in ref_scores.items():
        assert_scores_close(scores[name], ref, onnx_tol(name), name)
    name = reference.decision_scorer
    decided = assert_decisions_agree(
        out["label"], reference.decide(ref_out), ref_scores[name], reference.thresholds_[name], onnx_tol(name)
    )
    assert decided > 0.9
    assert assert_argmax_agree(out["logits"], ref_out.predictions, ref_out.logits) > 0.9  # also where unknown
    np.testing.assert_array_equal(out["is_unknown"], out["label"] == -1)
    np.testing.assert_allclose(out["logits"], ref_out.logits, rtol=0, atol=ONNX_LOGITS_ATOL)
    # softmax of those logits: 9.5e-7 measured (as in numerics.py); 10x
    np.testing.assert_allclose(
        out["probabilities"], torch.softmax(torch.from_numpy(ref_out.logits), 1).numpy(), atol=1e-5
    )


def test_export_matches_pytorch_reference(exported):
    x = probe_images()
    assert_agree(exported.reference, exported.onnx, x)
    labels = exported.onnx.predict(x)
    assert (labels[:60] != -1).any() and (labels[60:120] == -1).all()  # both outcomes exercised
    ref_scores = exported.reference.score_all(x)
    for scorer in SCORERS:  # decisions by the other scorers, from the scores
        decided = assert_decisions_agree(
            exported.onnx.predict(x, scorer=scorer),
            exported.reference.predict(x, scorer=scorer),
            ref_scores[scorer],
            exported.reference.thresholds_[scorer],
            onnx_tol(scorer),
        )
        assert decided > 0.9, scorer


def test_fast_paths_decide_as_the_graph_away_from_the_threshold(exported, fitted):
    """The runtime's fast paths (bfloat16 forced, as CPUs with AMX run them) move scores
    by a fraction of their spread; the decision scorer's decisions still agree with the
    exported float32 graph wherever its score is more than 0.2 from the threshold of 1
    (benchmarks/onnx_gap.py measured flips only within 0.003 of it on real digits; on the
    probe images bfloat16 moved it by up to 0.015 near the threshold, with models trained
    in float32 and in bfloat16: ~10x)."""
    x = probe_images()
    graph = exported.onnx.run(x)
    fast = copy.copy(fitted)
    fast.fast_paths = FastPaths(bf16=True)
    outputs = fast.outputs(x)
    name = fitted.decision_scorer
    s = exported.onnx.scores_from_outputs(graph)[name]
    far = np.abs(s - fitted.thresholds_[name]) > 0.2
    assert far.mean() > 0.5
    np.testing.assert_array_equal(fast.decide(outputs)[far], graph["label"][far])


def test_export_on_real_mnist_and_cifar10(exported, shared_data):
    mnist = load_dataset("mnist:test", root=shared_data).take(200, seed=0)
    cifar = load_dataset("cifar10", root=shared_data).take(200, seed=0)
    for images in (mnist, cifar):
        assert_agree(exported.reference, exported.onnx, images)


def test_graph_has_dynamic_batch_typed_outputs_and_metadata(exported, fitted):
    model = onnx.load(str(exported.path))
    (inp,) = model.graph.input
    assert inp.name == "images"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [1, 28, 28]
    T = onnx.TensorProto
    types = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert types == {
        "probabilities": T.FLOAT,
        "logits": T.FLOAT,
        "unknown_scores": T.DOUBLE,
        "label": T.INT64,
        "is_unknown": T.BOOL,
    }
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert meta["class_names"] == fitted.class_names_
    assert meta["scorer_names"] == report_order() == list(fitted.scorers_)
    assert meta["thresholds"] == fitted.thresholds_
    assert meta["decision_scorer"] == "combined"
    assert meta["scorers"]["combined"]["medians"] == fitted.scorers_["combined"].get_state()["medians"]
    assert meta["osrkit_version"] and meta["osrkit_format"] == "osrkit-onnx"
    assert meta["osrkit_format_version"] == ONNX_FORMAT_VERSION == 2
    assert meta["input_spec"] == fitted.input_spec_.to_dict() == MNIST_SPEC.to_dict()
    assert exported.onnx.input_spec == MNIST_SPEC
    backend = exported.onnx
    assert backend.class_names == fitted.class_names_
    assert backend.scorer_names == list(fitted.scorers_)
    assert backend.thresholds == fitted.thresholds_ and backend.decision_scorer == "combined"


def test_any_batch_size_and_input_kind(exported, tmp_path):
    x = probe_images()
    whole = exported.onnx.run(x)
    chunked = exported.onnx.run(x, batch_size=7)  # batches of 7 and a last one of 3
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-6, atol=1e-7)
    one = exported.onnx.run(x[:1])
    assert one["label"].shape == (1,) and one["unknown_scores"].shape == (1, len(SCORERS))
    digits = x[:3].numpy()
    paths = []
    for i, img in enumerate(digits):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(img).save(paths[-1])
    reference = exported.reference
    expected, ref_scores = reference.predict(digits), reference.score_samples(digits)
    name = reference.decision_scorer
    rule = (reference.thresholds_[name], onnx_tol(name))
    for images in (digits, digits[:, None], paths, x[:3].float() / 255):
        assert assert_decisions_agree(exported.onnx.predict(images), expected, ref_scores, *rule) == 1
    pil = exported.onnx.predict(Image.fromarray(digits[0]))
    assert assert_decisions_agree(pil, expected[:1], ref_scores[:1], *rule) == 1
    assert OnnxRecognizer(exported.folder).path == exported.path  # a folder holding model.onnx


def test_export_overwrite_and_decision_scorer(exported, fitted, tmp_path):
    path = tmp_path / "out.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ConfigError, match="already exists.*overwrite"):
        export_onnx(fitted, path)
    # overwrite replaces only an osrkit export (issue 22), never a file of the user's
    with pytest.raises(OutputExistsError, match="not an osrkit ONNX export"):
        export_onnx(fitted, path, overwrite=True)
    assert path.read_bytes() == b"previous"
    path.write_bytes(exported.path.read_bytes())
    other = copy.copy(fitted)
    other.decision_scorer_ = "reconstruction"  # another fitted scorer decides
    assert export_onnx(other, path, overwrite=True) == path
    backend = OnnxRecognizer(path)
    assert backend.decision_scorer == "reconstruction"
    x = probe_images()
    decided = assert_decisions_agree(
        backend.run(x)["label"],
        exported.reference.predict(x, "reconstruction"),
        exported.reference.score_samples(x, "reconstruction"),
        exported.reference.thresholds_["reconstruction"],
        onnx_tol("reconstruction"),
    )
    assert decided > 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]  # no temporary file left


def test_export_errors_write_nothing(fitted, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="not fitted"):
        export_onnx(OpenSetRecognizer(), tmp_path / "a.onnx")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        export_onnx(fitted, tmp_path / "afile" / "m.onnx")
    with pytest.raises(ConfigError, match="is a folder"):
        export_onnx(fitted, tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("exporter broke\nsecond line")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ModelFormatError, match="^ONNX export failed: exporter broke$"):
        export_onnx(fitted, tmp_path / "b.onnx")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"needs the onnx extra: pip install 'osrkit\[onnx\]'"):
        export_onnx(fitted, tmp_path / "c.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_onnx_recognizer_refuses_what_it_cannot_run(exported, tmp_path, monkeypatch):
    with pytest.raises(ModelFormatError, match="not found.*osrkit export"):
        OnnxRecognizer(tmp_path / "missing.onnx")
    with pytest.raises(ModelFormatError, match="has no model.onnx"):
        OnnxRecognizer(tmp_path)
    (tmp_path / "notes.onnx").write_text("not a model")
    with pytest.raises(ModelFormatError, match="not a loadable ONNX model"):
        OnnxRecognizer(tmp_path / "notes.onnx")
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Identity", ["images"], ["y"])],
        "other",
        [h.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", 1, 28, 28])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1, 28, 28])],
    )
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 18)]), tmp_path / "other.onnx")
    with pytest.raises(ModelFormatError, match="not an osrkit export"):
        OnnxRecognizer(tmp_path / "other.onnx")
    with pytest.raises(ConfigError, match="unknown scorer"):
        exported.onnx.predict(probe_images()[:2], scorer="nope")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match="needs the onnx extra"):
        OnnxRecognizer(exported.path)


def test_format_1_export_still_loads(exported, tmp_path):
    """An export of ONNX format 1 (``preprocessing`` in the metadata, no ``input_spec``)
    runs as the 1x28x28 grayscale model it is."""
    model = onnx.load(str(exported.path))
    meta = {p.key: p.value for p in model.metadata_props}
    del meta["input_spec"]
    meta["osrkit_format_version"] = json.dumps(1)
    meta["preprocessing"] = json.dumps({"size": [28, 28], "channels": 1, "invert": False})
    onnx.helper.set_model_props(model, meta)
    onnx.save(model, str(tmp_path / "v1.onnx"))
    old = OnnxRecognizer(tmp_path / "v1.onnx")
    assert old.input_spec == MNIST_SPEC
    x = probe_images()
    np.testing.assert_array_equal(old.run(x)["label"], exported.onnx.run(x)["label"])
    meta["osrkit_format_version"] = json.dumps(ONNX_FORMAT_VERSION + 1)
    onnx.helper.set_model_props(model, meta)
    onnx.save(model, str(tmp_path / "future.onnx"))
    with pytest.raises(ModelFormatError, match="format version"):
        OnnxRecognizer(tmp_path / "future.onnx")


def write_images(folder: Path) -> list[Path]:
    digits, _ = synthetic_digits(4, seed=7)
    paths = []
    for i, img in enumerate([*digits, *synthetic_unknowns(2, seed=8)]):
        paths.append(folder / f"img{i}.png")
        Image.fromarray(img).resize((56, 56)).save(paths[-1])
    Image.fromarray(digits[0]).convert("RGB").save(folder / "rgb.jpg", quality=95)
    return [*paths, folder / "rgb.jpg"]


def predict_rows(capsys, *args) -> list[dict]:
    code, out, err = run_cli(capsys, "predict", *args)
    assert code == 0, err
    return [json.loads(line) for line in out.strip().splitlines()]


def test_cli_export_then_predict_with_onnx_backend(exported, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OSRKIT_FAST", "0")  # the torch backend on its float32 reference path
    out = tmp_path / "cli.onnx"
    out.write_text("keep me")
    code, stdout, err = run_cli(capsys, "export", exported.folder, out)
    assert code == 2 and stdout == ""
    assert_one_line_error(err, "already exists", "--overwrite")
    assert out.read_text() == "keep me"
    code, stdout, err = run_cli(capsys, "export", exported.folder, out, "--overwrite")
    assert code == 2 and out.read_text() == "keep me"  # --overwrite replaces only an osrkit export
    assert_one_line_error(err, "not an osrkit ONNX export", "cli.onnx")
    out.write_bytes(exported.path.read_bytes())
    code, stdout, err = run_cli(capsys, "export", exported.folder, out, "--overwrite")
    assert code == 0, err
    assert stdout.startswith(f"wrote {out}")
    images = write_images(tmp_path)
    for scorer in ([], ["--scorer", "msp"]):
        torch_rows = predict_rows(capsys, exported.folder, *images, *scorer)
        for model in (out, exported.folder):  # the .onnx file, or a folder holding model.onnx
            onnx_rows = predict_rows(capsys, "--backend", "onnx", model, *images, *scorer)
            assert len(onnx_rows) == len(torch_rows) == len(images)
            for o, t in zip(onnx_rows, torch_rows):
                assert o["path"] == t["path"]
                for name, score in t["scores"].items():
                    assert o["scores"][name] == pytest.approx(score, rel=onnx_tol(name), abs=onnx_tol(name))
                assert o["thresholds"] == t["thresholds"]
                name = t["decision"]["scorer"]
                score, threshold = t["scores"][name], t["thresholds"][name]
                if abs(score - threshold) > onnx_tol(name) * (1 + abs(score)):  # nearer, either side
                    assert {k: o[k] for k in ("label", "class_index", "known")} == {
                        k: t[k] for k in ("label", "class_index", "known")
                    }
                    assert o["decided_by"] == t["decided_by"]  # the same fusion member explains it
    assert {r["known"] for r in torch_rows} == {True, False}


def test_explain_runs_on_either_backend(exported):
    """``osrkit.explain`` on the ONNX backend: the torch reference's row, the scores within
    the export's tolerances, and the same cut-offs of the fusion's members."""
    import osrkit

    x = probe_images()[:1]
    t, o = osrkit.explain(exported.reference, x), osrkit.explain(exported.onnx, x)
    assert set(o) == set(t) and o["thresholds"] == t["thresholds"]
    for name, score in t["scores"].items():
        assert o["scores"][name] == pytest.approx(score, rel=onnx_tol(name), abs=onnx_tol(name))
    cuts = t["decision"]["member_thresholds"]  # the decision, "combined", is a fusion
    assert o["decision"]["member_thresholds"] == pytest.approx(cuts)
    assert set(cuts) == set(exported.reference.scorers_[t["decision"]["scorer"]].members)


def test_cli_onnx_errors_are_one_line(exported, tmp_path, capsys):
    img = write_images(tmp_path)[0]
    (tmp_path / "notes.txt").write_text("not a model")
    cases = [
        (["predict", "--backend", "onnx", tmp_path / "missing.onnx", img], "not found"),
        (["predict", "--backend", "onnx", tmp_path / "notes.txt", img], "not a loadable ONNX model"),
        (["predict", "--backend", "onnx", tmp_path, img], "has no model.onnx"),
        (["export", tmp_path, tmp_path / "x.onnx"], "not an osrkit model folder"),
        (["export", exported.folder, tmp_path / "notes.txt" / "x.onnx"], "is not a folder"),
    ]
    before = sorted(tmp_path.iterdir())
    for args, needle in cases:
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and out == "", args
        assert_one_line_error(err, needle)
    assert sorted(tmp_path.iterdir()) == before  # nothing written, not even a temporary file


def test_onnxruntime_runs_as_many_threads_as_torch(exported):
    """onnxruntime takes every core unless told; the service sets torch's thread count
    (--threads) and the ONNX backend must keep to it."""
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            session = OnnxRecognizer(exported.path).session
            assert session.get_session_options().intra_op_num_threads == n
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------- issue 22
def test_export_records_its_graph_hash_and_a_damaged_graph_is_refused(exported, tmp_path, capsys):
    data = exported.path.read_bytes()
    meta = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    assert meta["osrkit_graph_sha256"] == json.dumps(onnx_graph_digest(data))
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF  # inside the weights: still a well-formed protobuf
    (tmp_path / "damaged.onnx").write_bytes(bytes(damaged))
    with pytest.raises(ModelFormatError, match="does not match the SHA-256.*export it again"):
        OnnxRecognizer(tmp_path / "damaged.onnx")
    img = tmp_path / "x.npy"
    np.save(img, synthetic_unknowns(1)[0])
    code, out, err = run_cli(capsys, "predict", "--backend", "onnx", tmp_path / "damaged.onnx", img)
    assert code == 2 and out == ""
    assert_one_line_error(err, "damaged.onnx", "SHA-256")


def test_export_without_a_hash_loads_unverified(exported, tmp_path, caplog):
    model = onnx.load(str(exported.path))
    keep = [p for p in model.metadata_props if p.key != "osrkit_graph_sha256"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.save(model, str(tmp_path / "old.onnx"))
    with caplog.at_level("WARNING", logger="osrkit"):
        OnnxRecognizer(tmp_path / "old.onnx")
    assert "unverified" in caplog.text


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda t: json.dumps(t | {"msp": float("nan")}), "literal NaN"),
        (lambda t: '{"msp": ' + "[" * 5000 + "]" * 5000 + "}", "nested"),
    ],
    ids=["nan", "deep"],
)
def test_onnx_damaged_metadata_is_refused_in_one_line(exported, tmp_path, damage, message):
    """Metadata is read as a model folder's config.json is: NaN and deep nesting (a
    RecursionError in json.loads before) are one line."""
    model = onnx.load(str(exported.path))
    meta = {p.key: p.value for p in model.metadata_props}
    meta["thresholds"] = damage(json.loads(meta["thresholds"]))
    onnx.helper.set_model_props(model, meta)
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelFormatError, match=message) as err:
        OnnxRecognizer(tmp_path / "bad.onnx")
    assert "\n" not in str(err.value)


def test_nan_scores_are_unknown_in_the_graph_and_the_backend(exported):
    """A NaN input makes every score NaN: the graph's own label says unknown, and so does the
    backend's decide for NaN scores (the torch path refuses NaN images before scoring)."""
    x = np.full((2, *MNIST_SPEC.shape), np.nan, np.float32)
    out = exported.onnx.session.run(list(OUTPUT_NAMES), {"images": x})
    assert out[OUTPUT_NAMES.index("is_unknown")].all()
    assert (out[OUTPUT_NAMES.index("label")] == -1).all()
    outputs = exported.onnx.run(probe_images()[:4])
    outputs["unknown_scores"][:, :] = np.nan
    for scorer in (None, "msp"):
        assert (exported.onnx.decide(outputs, scorer) == -1).all()


def test_onnx_backend_turns_telemetry_off(exported, monkeypatch):
    import onnxruntime

    calls = []
    monkeypatch.setattr(onnxruntime, "disable_telemetry_events", lambda: calls.append(1))
    OnnxRecognizer(exported.path)
    assert calls


@pytest.mark.parametrize("module", ["osrkit.export.backend", "osrkit.recognizer.ort_features"])
def test_onnxruntime_writes_nothing_under_home(tmp_path, module):
    """onnxruntime's Linux builds write ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ as
    they load unless ORT_DISABLE_TELEMETRY is set first: osrkit's import sets it."""
    import os
    import subprocess

    code = f"from {module} import import_onnxruntime; import_onnxruntime()"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env |= {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / ".cache")}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()] == []
