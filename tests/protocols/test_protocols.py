import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from osrkit.cli import main
from osrkit.data.catalog import load_dataset
from osrkit.errors import ConfigError, DataError
from osrkit.protocols import (
    MNIST_SPLITS,
    cache_key,
    gaussian_noise,
    mnist_noise,
    split_classes,
    uniform_noise,
)
from osrkit.training.config import TrainConfig
from tests.conftest import synthetic_set


def test_uniform_noise_is_seeded_uniform_uint8():
    a, b = uniform_noise(2000, seed=3), uniform_noise(2000, seed=3)
    assert a.images.shape == (2000, 1, 28, 28) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, uniform_noise(2000, seed=4).images)
    x = a.images.float() / 255
    assert abs(x.mean().item() - 0.5) < 0.01 and abs(x.var().item() - 1 / 12) < 0.005


def test_gaussian_noise_is_clipped_normal():
    x = gaussian_noise(2000, seed=0).images.float() / 255
    # N(0.5, 1) clipped to [0, 1]: P(x <= 0) = P(x >= 1) = Phi(-0.5) = 0.3085
    assert abs((x == 0).float().mean().item() - 0.3085) < 0.01
    assert abs((x == 1).float().mean().item() - 0.3085) < 0.01


def test_mnist_noise_replaces_only_zero_pixels():
    data = synthetic_set(50)
    data.images[:, :, :2] = 0  # make sure there are zero pixels (the first two rows)
    noisy = mnist_noise(data, seed=0)
    keep = data.images != 0
    assert keep.any() and (~keep).any()
    assert noisy.images.shape == data.images.shape
    assert torch.equal(noisy.images[keep], data.images[keep])
    assert torch.equal(noisy.labels, data.labels) and noisy.name == "MNIST-Noise"
    replaced = noisy.images[~keep].float() / 255
    assert (replaced > 0).float().mean() > 0.99 and abs(replaced.mean().item() - 0.5) < 0.02


def test_split_classes_relabels_known_and_keeps_unknown():
    data = synthetic_set(500)
    known, unknown = split_classes(data, (2, 4, 5, 9, 8, 3))
    assert known.class_names == ["2", "4", "5", "9", "8", "3"]
    orig = data.labels[torch.isin(data.labels, torch.tensor([2, 4, 5, 9, 8, 3]))]
    assert torch.equal(torch.tensor([2, 4, 5, 9, 8, 3])[known.labels], orig)
    assert set(unknown.labels.tolist()) == {0, 1, 6, 7}
    assert len(known) + len(unknown) == len(data)
    with pytest.raises(ConfigError):
        split_classes(data, (1, 1, 2))


def test_mnist_splits_are_the_literature_ones():
    assert len(MNIST_SPLITS) == 5 and all(len(set(s)) == 6 for s in MNIST_SPLITS)
    assert MNIST_SPLITS[0] == (2, 4, 5, 9, 8, 3) and MNIST_SPLITS[4] == (6, 3, 4, 9, 8, 2)


def _omniglot_folder(root, n=3):
    folder = root / "omniglot-py" / "images_evaluation"
    for a in range(2):
        d = folder / f"Alphabet{a}" / "character01"
        d.mkdir(parents=True)
        for i in range(n):
            img = np.full((105, 105), 255, np.uint8)  # white page
            img[20:80, 50 + i : 56 + i] = 0  # a black stroke
            Image.fromarray(img).convert("1").save(d / f"{i}.png")
    return folder


def test_omniglot_is_inverted_to_white_strokes_on_black(tmp_path):
    _omniglot_folder(tmp_path)
    data = load_dataset("omniglot", tmp_path)
    assert len(data) == 6 and data.class_names == ["Alphabet0", "Alphabet1"]
    assert tuple(data.images.shape) == (6, 1, 28, 28)  # the seed's 1x28x28, not the pages' 105x105
    img = data.images[0, 0]
    assert img[0, 0] == 0 and img[:, 13:16].max() > 200  # black background, bright stroke


def test_omniglot_missing_gives_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match="Omniglot evaluation images not found"):
        load_dataset("omniglot", tmp_path)


def test_omniglot_zip_with_an_escaping_path_is_refused(tmp_path):
    from osrkit.data.catalog import _extract_zip

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images_evaluation/ok.png", b"x")
        zf.writestr("images_evaluation/../../evil.txt", b"x")
    with pytest.raises(DataError, match="unsafe path"):
        _extract_zip(archive, tmp_path / "out", "images_evaluation")
    assert not (tmp_path / "evil.txt").exists()


def test_real_omniglot_evaluation_set(shared_data):
    data = load_dataset("omniglot", shared_data)
    assert len(data) == 13180 and len(data.class_names) == 20
    assert data.images.float().mean() < 60  # mostly black after inversion


def test_cache_key_tracks_data_config_and_seed():
    a, b = synthetic_set(100), synthetic_set(100, seed=1)
    cfg = TrainConfig()
    assert cache_key(a, cfg) == cache_key(a, TrainConfig())
    assert cache_key(a, cfg) != cache_key(b, cfg)
    assert cache_key(a, cfg) != cache_key(a, TrainConfig(seed=1))
    assert cache_key(a, cfg) != cache_key(a, TrainConfig(epochs=2))


def test_cache_key_tracks_the_default_networks_options(monkeypatch):
    """A change of the default network's registered options (colour_cnn's stem, for one)
    is a new model: the cache must not hand back the network trained before it."""
    import dataclasses

    from osrkit.models import registry

    a, cfg = synthetic_set(100), TrainConfig()
    before = cache_key(a, cfg)
    entry = registry.backbone_entry("small_cnn")
    changed = dataclasses.replace(entry, options={"dropout": 0.1})
    monkeypatch.setitem(registry.BACKBONES._entries, "small_cnn", changed)
    assert cache_key(a, cfg) != before


TINY = ["--max-train", "3000", "--max-test", "300", "--epochs", "1", "--ae-epochs", "1", "--val-size", "500"]


def test_benchmark_seed_end_to_end_and_cache_reuse(tmp_path, shared_data, capsys):
    args = ["protocol", "seed", "--out", str(tmp_path), "--data-root", str(shared_data), *TINY]
    assert main(args) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "seed.json").read_text())
    md = (tmp_path / "seed.md").read_text()
    targets = [line for line in md.splitlines() if line.startswith("target ")]
    assert len(targets) == 4 and all(t.endswith((" ok", " short")) for t in targets)
    assert targets[0] in out
    assert set(result["sets"]["CIFAR-10"]["scorers"]) >= {"msp", "reconstruction", "combined"}
    cached = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(cached) == 1 and (cached[0] / "config.json").is_file()
    # how it was trained goes beside it, and the protocol reports its training compute
    assert json.loads(cached[0].with_suffix(".fit.json").read_text())["classifier"]["history"]
    (model,) = result["training"]["models"]
    assert model["epochs"] == 1 and model["pflop"] > 0 and not model["from_cache"]
    assert result["training"]["mm_gflops"] > 0 and "Training compute: 1 network(s), 1 trained" in md
    # Stale scorer state in the cache (as after a change to a scorer) must not be reused:
    # the networks are, the scorers and thresholds are fitted again.
    cfg_path = cached[0] / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["thresholds"]["msp"] = 123.0
    cfg_path.write_text(json.dumps(cfg))
    stamp = cfg_path.stat().st_mtime_ns
    assert main(args) == 0  # second run reuses the cached networks
    assert cfg_path.stat().st_mtime_ns == stamp
    again = json.loads((tmp_path / "seed.json").read_text())
    assert again["sets"] == result["sets"]
    assert again["training"]["models"][0]["from_cache"] and again["training"]["train_s_here"] == 0


def test_protocol_budget_reaches_the_colour_recipe(monkeypatch, tmp_path):
    from osrkit.cli import commands

    seen = {}

    def run_protocol(name, ctx):
        seen["overrides"] = ctx.colour_overrides
        (tmp_path / f"{name}.md").write_text("")

    monkeypatch.setattr(commands, "run_protocol", run_protocol)
    assert main(["protocol", "cifar10-train-speed", "--out", str(tmp_path), "--budget", "0.4"]) == 0
    assert seen["overrides"] == {"budget_pflop": 0.4}


def test_protocol_budget_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["protocol", "cifar10-train-speed", "--budget", "-1"])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_benchmark_unknown_name_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["protocol", "imagenet"])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_benchmark_mnist_splits_tiny(tmp_path, shared_data):
    """Five 6-class models; the report names the context's decision scorer (it once fell
    back to 'combined' because the split results did not carry it)."""
    args = ["protocol", "mnist-splits", "--out", str(tmp_path), "--data-root", str(shared_data)]
    args += ["--max-train", "1500", "--max-test", "400", "--epochs", "1", "--ae-epochs", "1"]
    assert main([*args, "--val-size", "300"]) == 0
    r = json.loads((tmp_path / "mnist-splits.json").read_text())
    assert [s["known_classes"] for s in r["splits"]] == [list(s) for s in MNIST_SPLITS]
    assert all(s["known_count"] + s["unknown_count"] == 400 for s in r["splits"])
    md = (tmp_path / "mnist-splits.md").read_text()
    assert "pre-declared): `fusion`" in md
    assert md.rstrip().splitlines()[-1].startswith("target mnist-splits-closed-set-accuracy")
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 5
    assert len(r["training"]["models"]) == 5


def test_benchmark_bad_decision_scorer_fails_before_training(tmp_path, capsys):
    assert main(["protocol", "seed", "--out", str(tmp_path), "--decision-scorer", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "fusion" in err
    assert not (tmp_path / "cache").exists()


def test_interrupted_omniglot_extraction_leaves_no_folder(tmp_path, monkeypatch):
    import osrkit.data.catalog as catalog

    archive = tmp_path / "images_evaluation.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        buf = __import__("io").BytesIO()
        Image.fromarray(np.zeros((105, 105), np.uint8)).save(buf, "PNG")
        zf.writestr("images_evaluation/A/character01/1.png", buf.getvalue())
        zf.writestr("images_evaluation/../escape.png", b"x")  # stops the extraction midway
    (tmp_path / "omniglot-py").mkdir()
    monkeypatch.setattr(catalog, "ensure_file", lambda *a, **k: archive)
    with pytest.raises(DataError):
        load_dataset("omniglot", tmp_path, download=True)
    assert not (tmp_path / "omniglot-py" / "images_evaluation").exists()
    assert list((tmp_path / "omniglot-py").iterdir()) == []  # no temporary folder left either
