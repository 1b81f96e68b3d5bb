"""The training-method registry: lookup by name, argument checking, registration rules."""

from __future__ import annotations

import pytest

from hmcam.training.methods import METHODS, NaturalTraining, PGDTraining, TrainingMethod, build_method, register_method


def test_shipped_methods_are_registered_by_name() -> None:
    assert METHODS["natural"] is NaturalTraining
    assert METHODS["pgd"] is PGDTraining
    assert isinstance(build_method("natural", dataset="fashion-mnist"), NaturalTraining)


def test_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown training method 'catt'; choose one of \[.*'natural'.*'pgd'"):
        build_method("catt")


def test_unknown_argument_names_the_method_and_what_it_accepts() -> None:
    with pytest.raises(
        TypeError, match=r"'pgd' takes no argument\(s\) \['epsilon'\]; it accepts \['eps', 'alpha', 'steps'\]"
    ):
        build_method("pgd", dataset="mnist", epsilon=0.3)
    with pytest.raises(TypeError, match=r"'natural' takes no argument\(s\) \['eps'\]"):
        build_method("natural", eps=0.3)


def test_registration_rejects_duplicates_and_non_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hmcam.training.methods.registry.METHODS", dict(METHODS))

    class Impostor(TrainingMethod):
        name = "pgd"

        def loss(self, model, images, labels, context):  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(ValueError, match="already registered"):
        register_method(Impostor)
    with pytest.raises(TypeError, match="only TrainingMethod subclasses"):
        register_method(dict)

    class Nameless(TrainingMethod):
        def loss(self, model, images, labels, context):  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(ValueError, match="non-empty string `name`"):
        register_method(Nameless)
