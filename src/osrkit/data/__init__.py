"""Data sources: MNIST-family IDX files, CIFAR-10, image folders, and preprocessing."""

from osrkit.data.catalog import DATASET_NAMES, IDX_DATASETS, load_cifar10, load_dataset, load_idx_dataset
from osrkit.data.folder import load_images, read_image_folder
from osrkit.data.idx import read_idx, write_idx
from osrkit.data.imageset import ImageSet
from osrkit.data.inputs import as_input_tensor
from osrkit.data.root import resolve_data_root
from osrkit.data.spec import CIFAR10_SPEC, IMAGENET_SPEC, MNIST_SPEC, InputSpec
from osrkit.data.transforms import load_image, preprocess_image, to_gray28_uint8

__all__ = [
    "CIFAR10_SPEC",
    "IMAGENET_SPEC",
    "MNIST_SPEC",
    "InputSpec",
    "as_input_tensor",
    "DATASET_NAMES",
    "IDX_DATASETS",
    "ImageSet",
    "load_cifar10",
    "load_dataset",
    "load_idx_dataset",
    "load_image",
    "load_images",
    "preprocess_image",
    "read_idx",
    "read_image_folder",
    "resolve_data_root",
    "to_gray28_uint8",
    "write_idx",
]
