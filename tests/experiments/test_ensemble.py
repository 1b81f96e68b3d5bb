"""Table 3 on the framework: its jobs keep the cache stems of earlier runs, its settings cover every scale."""

from hmcam.experiments.ensemble import CLAIMS, EXPERIMENT, SETTINGS
from hmcam.experiments.registry import EXPERIMENTS, SCALE_NAMES


def test_registered_with_its_claims_and_a_setting_per_scale() -> None:
    assert EXPERIMENTS["ensemble"].load() is EXPERIMENT
    assert EXPERIMENT.name == "ensemble" and EXPERIMENT.claims == CLAIMS
    assert set(SETTINGS) == set(SCALE_NAMES)


def test_cache_keys_are_those_of_earlier_runs() -> None:
    assert EXPERIMENT.key(("LeNet_A", "mpgd")) == "without-LeNet_A-mpgd"
