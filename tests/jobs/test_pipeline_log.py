"""What the jobs log at the default level: the data each one found, in one line."""

from __future__ import annotations

import numpy as np

from osrkit.jobs.pipeline import JobData
from tests.conftest import synthetic_digits, write_folder


def test_loading_data_logs_images_classes_size_and_where_it_is_held(tmp_path, caplog):
    images, _ = synthetic_digits(30)
    labels = np.array([0] * 10 + [1] * 20)
    write_folder(tmp_path / "mine", images, labels, ["cat", "dog"])
    data = JobData(train=str(tmp_path / "mine"), known=str(tmp_path / "mine"))
    with caplog.at_level("INFO", logger="osrkit.jobs.pipeline"):
        data.load("train", spec=data.input_spec())
        data.load("known", spec=data.input_spec())
    train, known = [r.getMessage() for r in caplog.records]
    size = data.input_spec().describe()
    assert train == f"training data mine: 30 images in 2 classes (cat: 10, dog: 20), {size}, held in memory"
    assert known == f"known test data mine: 30 images in 2 classes, {size}"
    data.memory_budget = 0  # read lazily, batch by batch
    caplog.clear()
    with caplog.at_level("INFO", logger="osrkit.jobs.pipeline"):
        data.load("train", spec=data.input_spec())
    assert caplog.records[0].getMessage().endswith(", read lazily by DataLoader workers")
