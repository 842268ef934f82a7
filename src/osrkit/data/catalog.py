"""The named datasets osrkit knows: where their files live, their md5s and official URLs."""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from osrkit.data.cifar import TEST_BATCH_MD5, TRAIN_BATCHES, read_cifar10
from osrkit.data.download import RemoteFile, ensure_file, verify_md5
from osrkit.data.folder import folder_images, infer_spec, read_image_folder
from osrkit.data.idx import read_idx
from osrkit.data.imageset import ImageSet
from osrkit.data.root import resolve_data_root
from osrkit.data.spec import CIFAR10_SPEC, MNIST_SPEC, InputSpec
from osrkit.errors import DataError

log = logging.getLogger(__name__)

_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_KMNIST_URLS = ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",)


@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-layout dataset: ``<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``."""

    title: str
    folder: str
    class_names: tuple[str, ...]
    md5: dict  # (split, kind) -> md5 or None
    base_urls: tuple[str, ...] = ()

    def remote(self, split: str, kind: str) -> RemoteFile:
        prefix = "train" if split == "train" else "t10k"
        suffix = "images-idx3" if kind == "images" else "labels-idx1"
        fname = f"{prefix}-{suffix}-ubyte.gz"
        if (split, kind) not in self.md5:
            raise DataError(f"{self.title} has no {split} split in osrkit's catalogue")
        return RemoteFile(
            f"{self.folder}/raw/{fname}",
            self.md5[(split, kind)],
            tuple(base + fname for base in self.base_urls),
        )


IDX_DATASETS: dict[str, IdxDataset] = {
    "mnist": IdxDataset(
        "MNIST",
        "MNIST",
        tuple(str(d) for d in range(10)),
        {
            ("train", "images"): "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            ("train", "labels"): "d53e105ee54ea40749a09fcbcd1e9432",
            ("test", "images"): "9fb629c4189551a2d022fa330f9573f3",
            ("test", "labels"): "ec29112dd5afa0611ce80d1b7f02629c",
        },
        _MNIST_URLS,
    ),
    "fashion-mnist": IdxDataset(
        "FashionMNIST",
        "FashionMNIST",
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        {
            ("train", "images"): "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            ("train", "labels"): "25c81989df183df01b3e8a0aad5dffbe",
            ("test", "images"): "bef4ecab320f06d8554ea6380940ec79",
            ("test", "labels"): "bb300cfdad3c16e7a12a480ee83cd310",
        },
        _FASHION_URLS,
    ),
    "kmnist": IdxDataset(
        "KMNIST",
        "KMNIST",
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        {
            ("train", "images"): "bdb82020997e1d708af4cf47b453dcf7",
            ("train", "labels"): "e144d726b3acfaa3e44228e80efcd344",
            ("test", "images"): "5c965bf0a639b31b8f53240b1b52f4d7",
            ("test", "labels"): "7320c461ea6c1c855c0b718fb2a4b134",
        },
        _KMNIST_URLS,
    ),
    # A derived 10,000-image sample of notMNIST_small in IDX layout; no official URL, so
    # it is pinned by the md5 of the copy osrkit was tested with and never downloaded.
    "notmnist": IdxDataset(
        "notMNIST",
        "notMNIST",
        tuple("ABCDEFGHIJ"),
        {
            ("test", "images"): "2c87c839a4ef9b238846600eec8c35b7",
            ("test", "labels"): "7ea9118cbafd0f6e3ee2ad771d782a01",
        },
    ),
}

CIFAR10_ARCHIVE = RemoteFile(
    "cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
)
CIFAR10_TEST_BATCH = RemoteFile("cifar-10-batches-py/test_batch", TEST_BATCH_MD5)

OMNIGLOT_EVALUATION_DIR = "omniglot-py/images_evaluation"
OMNIGLOT_EVALUATION_ZIP = RemoteFile(
    "omniglot-py/images_evaluation.zip",
    "6b91aef0f799c5bb55b94e3f2daec811",
    ("https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_evaluation.zip",),
)

DATASET_NAMES = (*IDX_DATASETS, "cifar10", "omniglot")


def load_idx_dataset(
    name: str,
    split: str = "test",
    root: str | os.PathLike | None = None,
    download: bool = False,
    spec: InputSpec | None = None,
) -> ImageSet:
    """Load an MNIST-layout dataset (``mnist``, ``fashion-mnist``, ``kmnist``, ``notmnist``),
    1x28x28 grayscale (or brought to ``spec``)."""
    entry = IDX_DATASETS[name]
    base = resolve_data_root(root)
    images = read_idx(ensure_file(base, entry.remote(split, "images"), download), ndim=3)
    labels = read_idx(ensure_file(base, entry.remote(split, "labels"), download), ndim=1)
    if len(images) != len(labels):
        raise DataError(
            f"{entry.title} {split}: {len(images)} images but {len(labels)} labels; "
            "the files do not belong together"
        )
    if images.shape[1:] != (28, 28):
        raise DataError(f"{entry.title} {split}: images are {images.shape[1:]}, expected 28x28")
    if labels.max(initial=0) >= len(entry.class_names):
        raise DataError(f"{entry.title} {split}: label {labels.max()} out of range")
    data = ImageSet(
        torch.from_numpy(images),
        torch.from_numpy(labels.astype("int64")),
        list(entry.class_names),
        f"{entry.title} {split}",
        spec=MNIST_SPEC,
    )
    return data.to_spec(spec) if spec is not None else data


def _extract_cifar_archive(archive: Path, root: Path) -> None:
    """Extract the CIFAR-10 batches safely (no absolute paths, links or path escapes)."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.isfile() and m.name.startswith("cifar-10-batches-py/") and ".." not in m.name
        ]
        tar.extractall(root, members=members, filter="data")


def load_cifar10(
    split: str = "test",
    root: str | os.PathLike | None = None,
    download: bool = False,
    spec: InputSpec | None = None,
    progress: bool = False,
) -> ImageSet:
    """CIFAR-10 ``train`` or ``test`` in colour, 3x32x32 (or brought to ``spec``)."""
    if split not in ("train", "test"):
        raise DataError(f"CIFAR-10 has train and test splits, not {split!r}")
    base = resolve_data_root(root)
    batches = (
        [CIFAR10_TEST_BATCH.relpath]
        if split == "test"
        else [f"cifar-10-batches-py/{b}" for b in TRAIN_BATCHES]
    )
    has_local = all((base / b).is_file() for b in batches) or (base / "CIFAR10" / split).is_dir()
    if not has_local and download:
        archive = ensure_file(base, CIFAR10_ARCHIVE, allow_download=True)
        _extract_cifar_archive(archive, base)
        verify_md5(base / CIFAR10_TEST_BATCH.relpath, CIFAR10_TEST_BATCH.md5)
    return read_cifar10(base, split, spec, progress)


def _extract_zip(archive: Path, dest: Path, top: str) -> None:
    """Extract the members of ``archive`` under ``top/`` into ``dest``, refusing absolute
    paths, ``..`` components and links (zip-slip)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = Path(info.filename).parts
            if info.is_dir() or not parts or parts[0] != top:
                continue
            if info.filename.startswith(("/", "\\")) or ".." in parts or (info.external_attr >> 28) == 0xA:
                raise DataError(f"{archive} holds an unsafe path {info.filename!r}; delete it and retry")
            zf.extract(info, dest)


def load_omniglot(
    split: str = "test",
    root: str | os.PathLike | None = None,
    download: bool = False,
    spec: InputSpec | None = None,
) -> ImageSet:
    """Every image of the Omniglot evaluation set (Lake et al. 2015), resized to 28x28 (or
    to ``spec``) and inverted to white strokes on black like MNIST; one class per alphabet.

    Read from ``omniglot-py/images_evaluation/<alphabet>/<character>/*.png``; with
    ``download`` the official ``images_evaluation.zip`` is fetched, md5-checked and
    extracted safely.
    """
    if split != "test":
        raise DataError("osrkit reads only the Omniglot evaluation set (use omniglot or omniglot:test)")
    base = resolve_data_root(root)
    folder = base / OMNIGLOT_EVALUATION_DIR
    if not folder.is_dir() and download:
        archive = ensure_file(base, OMNIGLOT_EVALUATION_ZIP, allow_download=True)
        # Extracted beside the final folder and renamed into place only when complete, so an
        # interrupted extraction never passes for the whole evaluation set.
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".omniglot-") as tmp:
            _extract_zip(archive, Path(tmp), "images_evaluation")
            os.replace(Path(tmp) / "images_evaluation", folder)
    if not folder.is_dir():
        raise DataError(f"Omniglot evaluation images not found at {folder}; pass --data-root or --download")
    return read_image_folder(folder, invert=True, name="Omniglot evaluation", spec=spec or MNIST_SPEC)


def _parse(dataset: str) -> tuple[str | None, str]:
    """``(catalogue key, split)`` of a dataset name; key is None for anything else (a path)."""
    name, _, split = dataset.partition(":")
    key = name.lower().replace("_", "-")
    key = "cifar10" if key == "cifar-10" else key
    if key not in IDX_DATASETS and key not in ("cifar10", "omniglot"):
        return None, ""
    if split and split not in ("train", "test"):
        raise DataError(f"unknown split {split!r} in {dataset!r}: use :train or :test")
    return key, split


def folder_of(dataset: str) -> Path | None:
    """The image folder that ``dataset`` names, or None for a catalogued dataset name."""
    return Path(dataset) if _parse(dataset)[0] is None and Path(dataset).is_dir() else None


def canonical_name(dataset: str, default_split: str = "test") -> str:
    """``name:split`` for a catalogue dataset (``MNIST`` -> ``mnist:test``); a folder's full path."""
    key, split = _parse(dataset)
    if key is not None:
        return f"{key}:{split or default_split}"
    return str(Path(dataset).resolve()) if Path(dataset).is_dir() else dataset


def native_spec(dataset: str, root: str | os.PathLike | None = None) -> InputSpec:
    """The input spec a dataset suggests: 1x28x28 for the MNIST family and Omniglot,
    3x32x32 for CIFAR-10, and for an image folder the one chosen from its images."""
    key, _ = _parse(dataset)
    if key == "cifar10":
        return CIFAR10_SPEC
    if key is not None:
        return MNIST_SPEC
    path = Path(dataset)
    if path.is_dir():
        return infer_spec(folder_images(path)[0])  # the images read_image_folder reads
    raise _unknown_dataset(dataset)


def _unknown_dataset(dataset: str) -> DataError:
    """One line on a dataset name that is neither catalogued nor an existing folder: no
    such folder, no such dataset, and the nearest folder or dataset name where one is close."""
    path = Path(dataset)
    if path.exists():  # a file
        return DataError(f"{dataset} is a file; give an image folder laid out as <class>/<image>")
    name, _, split = dataset.partition(":")
    close = difflib.get_close_matches(name.lower(), DATASET_NAMES, n=2)
    names = [n + (f":{split}" if split else "") for n in close]
    parent = path.parent
    if parent.is_dir() and not (split and close):  # 'mnst:train' is a mistyped name, not a folder
        with contextlib.suppress(OSError):  # an unreadable parent: no folder to suggest
            folders = [p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
            names += [str(parent / n) for n in difflib.get_close_matches(path.name, folders, n=2)]
    nearest = f" (did you mean {' or '.join(repr(n) for n in names)}?)" if names else ""
    if any(sep in dataset for sep in ("/", "\\")) or dataset.startswith("."):
        return DataError(f"image folder {dataset} does not exist{nearest or '; check the path'}")
    return DataError(
        f"there is no folder {dataset!r} here and no dataset of that name{nearest}; datasets: "
        f"{', '.join(DATASET_NAMES)} (with :train or :test), or give the path of an image folder "
        "laid out as <class>/<image>"
    )


def load_dataset(
    spec: str,
    root: str | os.PathLike | None = None,
    download: bool = False,
    progress: bool = False,
    default_split: str = "test",
    input_spec: InputSpec | None = None,
) -> ImageSet:
    """Load a dataset by ``name[:split]`` (``mnist:train``, ``cifar10``) or an image-folder path.

    A name without a split gets ``default_split`` (osrkit's CLI passes ``train`` for
    training data and ``test`` for test data). ``input_spec``: the channels and size to
    load into (grayscale sets become RGB, colour becomes luma, sizes are resized), as a
    model expects; default: the dataset's own (``native_spec``).
    """
    key, split = _parse(spec)
    if key == "cifar10":
        return load_cifar10(split or default_split, root, download, input_spec, progress)
    if key == "omniglot":
        return load_omniglot(split or "test", root, download, input_spec)
    if key is not None:
        return load_idx_dataset(key, split or default_split, root, download, input_spec)
    path = Path(spec)
    if path.is_dir():
        return read_image_folder(path, progress=progress, spec=input_spec)
    raise _unknown_dataset(spec)
