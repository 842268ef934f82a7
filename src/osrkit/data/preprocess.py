"""The seed's preprocessing names, kept as aliases of ``osrkit.data.transforms``."""

from .transforms import load_image, preprocess_image, to_gray28_uint8

SIZE = 28

__all__ = ["SIZE", "load_image", "preprocess_image", "to_gray28_uint8"]
