"""Names renamed in 0.2 still import for one release, with a DeprecationWarning."""

import importlib

import pytest

RENAMED = [
    ("osrkit.protocols", "run_seed", "run_digits_baseline"),
    ("osrkit.protocols.mnist", "run_seed", "run_digits_baseline"),
    ("osrkit.perf.speed", "SEED_TARGETS", "DIGITS_BASELINE_TARGETS"),
    ("osrkit.jobs.pipeline", "DataSpec", "JobData"),
]


@pytest.mark.parametrize(("module", "old", "new"), RENAMED)
def test_an_old_name_gives_the_new_object_and_warns(module, old, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{old} is renamed {new}; the old name goes in osrkit 0\.3"):
        assert getattr(mod, old) is getattr(mod, new)


def test_from_import_of_an_old_name_warns():
    with pytest.warns(DeprecationWarning, match="DataSpec is renamed JobData"):
        from osrkit.jobs.pipeline import DataSpec
    from osrkit.jobs.pipeline import JobData

    assert DataSpec is JobData


def test_other_missing_names_still_raise_attribute_error():
    mod = importlib.import_module("osrkit.protocols")
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        mod.nope  # noqa: B018
    assert not hasattr(mod, "nope")
