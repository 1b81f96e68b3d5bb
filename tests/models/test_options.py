"""Architecture options are checked against a schema with limits (checkpoint headers are untrusted)."""

from __future__ import annotations

import pytest

from hmcam.models import MODELS, build_model
from hmcam.models.registry import OPTION_SCHEMAS, check_options


def test_every_option_of_the_zoo_has_a_schema() -> None:
    assert {option for spec in MODELS.values() for option in spec.options} <= set(OPTION_SCHEMAS)


@pytest.mark.parametrize(
    ("name", "options", "error", "message"),
    [
        ("mlp", {"hidden": [1] * 300_000}, ValueError, "1 to 32 layer widths"),
        ("mlp", {"hidden": [0]}, ValueError, r"widths must be integers in \[1, 65536\]"),
        ("mlp", {"hidden": [True]}, ValueError, "widths must be integers"),
        ("mlp", {"hidden": "256"}, TypeError, "list of layer widths"),
        ("smallcnn", {"dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\)"),
        ("smallcnn", {"dropout": "0.5"}, ValueError, "dropout must be in"),
        ("lenet", {"dropout": 0.1}, TypeError, r"architecture 'lenet' takes no option\(s\) \['dropout'\]"),
    ],
)
def test_bad_options_are_named(name, options, error, message) -> None:
    with pytest.raises(error, match=message):
        build_model(name, **options)


def test_valid_options_pass_and_sizes_are_bounded() -> None:
    assert check_options("mlp", {"hidden": [8, 4]}) == {"hidden": (8, 4)}
    assert check_options("wrn34_10", {"dropout": 0.3}) == {"dropout": 0.3}
    with pytest.raises(ValueError, match="num_classes must be at most 100000"):
        build_model("lenet", num_classes=10**9)
