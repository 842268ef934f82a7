"""Training the networks: the configuration and loop, the recipe sized from the data, the
optimiser and schedule, augmentation, resumable checkpoints and torchrun collectives."""

from osrkit.training.config import TrainConfig
from osrkit.training.loop import train_autoencoder, train_classifier
from osrkit.training.recipe import size_recipe

__all__ = ["TrainConfig", "size_recipe", "train_autoencoder", "train_classifier"]
