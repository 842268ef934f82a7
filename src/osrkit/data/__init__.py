"""Data sources: MNIST-family IDX files, CIFAR-10, image folders, and preprocessing."""

from .catalog import DATASET_NAMES, IDX_DATASETS, load_cifar10, load_dataset, load_idx_dataset
from .folder import load_images, read_image_folder
from .idx import read_idx, write_idx
from .imageset import ImageSet
from .root import resolve_data_root
from .spec import CIFAR10_SPEC, IMAGENET_SPEC, MNIST_SPEC, InputSpec
from .transforms import as_input_tensor, load_image, preprocess_image, to_gray28_uint8

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
