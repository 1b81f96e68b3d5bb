from __future__ import annotations

import math

import pytest

from hmcam.core.validate import (
    check_flag,
    check_int,
    check_non_negative_int,
    check_number,
    check_positive_float,
    check_string_keys,
    check_text,
    choose,
)


def test_integers_are_checked_for_type_and_range() -> None:
    assert check_int("epochs", 3, 1) == 3
    assert check_int("limit", None, 1, optional=True) is None
    with pytest.raises(TypeError, match="epochs must be an integer, got True"):
        check_int("epochs", True, 1)
    with pytest.raises(TypeError, match="limit must be an integer or None"):
        check_int("limit", 2.0, 1, optional=True)
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        check_int("epochs", 0, 1)
    with pytest.raises(ValueError, match="num_classes must be at most 100000, got 100001"):
        check_int("num_classes", 100_001, 2, 100_000)
    with pytest.raises(ValueError, match="restart_every must be an integer >= 0"):
        check_non_negative_int("restart_every", -1)


def test_numbers_name_the_interval_in_the_usual_notation() -> None:
    assert check_number("lr", 1, 0.0, open_low=True) == 1.0
    assert check_number("eps", None, 0.0, optional=True) is None
    with pytest.raises(ValueError, match=r"lr must lie in \(0.0, inf\], got 0.0"):
        check_number("lr", 0.0, 0.0, open_low=True)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0.0, 1.0\)"):
        check_number("momentum", 1.0, 0.0, 1.0, open_high=True)
    for bad in (math.nan, math.inf, False, "1"):
        with pytest.raises(TypeError, match="must be a finite number"):
            check_number("x", bad, 0.0)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        check_positive_float("eps", math.inf)


def test_flags_text_and_keyword_dicts() -> None:
    assert check_flag("amp", False) is False
    with pytest.raises(TypeError, match="amp must be True or False, got 'False'"):
        check_flag("amp", "False")
    assert check_text("model", "lenet") == "lenet"
    with pytest.raises(TypeError, match="model must be a non-empty string"):
        check_text("model", "")
    assert check_string_keys("options", {"a": 1}) == {"a": 1}
    with pytest.raises(TypeError, match="options must be a dict with string keys"):
        check_string_keys("options", {1: 2})


def test_choose_lists_the_known_names() -> None:
    table = {"small": 1, "smoke": 0}
    assert choose("scale", "smoke", table) == 0
    with pytest.raises(ValueError, match=r"unknown scale 'huge'; choose one of \['small', 'smoke'\]"):
        choose("scale", "huge", table)
