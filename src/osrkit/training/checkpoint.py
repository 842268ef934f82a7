"""Resumable training state: one atomically written ``torch.save`` file per stage."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from osrkit.errors import ConfigError
from osrkit.files.atomic import atomic_write_bytes
from osrkit.training import distributed


class Checkpointer:
    """Saves training state after every epoch so an interrupted run resumes where it stopped.

    Files are written atomically with ``torch.save`` and read back with
    ``torch.load(weights_only=True)`` (no arbitrary unpickling). ``config`` identifies the
    run; under torchrun the number of ranks joins it, since the shards depend on it.
    """

    def __init__(self, folder: str | Path, config: dict) -> None:
        self.folder = Path(folder)
        ranks = distributed.world_size()
        self.config = config | {"world_size": ranks} if ranks > 1 else config

    def path(self, stage: str) -> Path:
        return self.folder / f"{stage}.pt"

    def load(self, stage: str) -> dict | None:
        path = self.path(stage)
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt checkpoint: say so, do not crash deep inside
            raise ConfigError(
                f"checkpoint {path} is unreadable ({exc.__class__.__name__}); delete it to start over"
            ) from None
        if state.get("config") != self.config:
            raise ConfigError(
                f"checkpoint {path} was written with other training options or data; "
                "rerun with the same options or delete the folder to start over"
            )
        return state

    def save(self, stage: str, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state | {"config": self.config}, buf)
        atomic_write_bytes(self.path(stage), buf.getvalue())
