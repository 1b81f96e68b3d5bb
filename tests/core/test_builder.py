"""The one builder: lookup by name, accepted arguments, and one-line errors naming what was given and what is known."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from hmcam.attacks import ATTACK_REGISTRY, CW, FGSM, HMCAM, PGD, attack_arguments
from hmcam.core.builder import Registry, accepted_arguments, build
from hmcam.evaluation.suites import attack_list
from hmcam.experiments.attack_run import AttackSettings
from hmcam.models.registry import ARCHITECTURES, build_model
from hmcam.training.methods import PGDTraining
from hmcam.training.methods.registry import METHOD_REGISTRY


class Base:
    def __init__(self, a: int, *, b: int = 0) -> None:
        self.a, self.b = a, b


class Forwards(Base):
    def __init__(self, c: int = 0, *args: Any, d: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.c, self.d = c, d


class Closed(Base):
    def __init__(self, e: int = 0) -> None:
        super().__init__(e)


class Inherits(Forwards):
    pass


def factory(x: int, /, y: int, *, z: int = 0, **rest: Any) -> tuple[int, int, int]:
    return x, y, z


MODEL = torch.nn.Linear(2, 2)


def test_accepted_arguments_follow_the_constructors_that_forward_keywords() -> None:
    assert accepted_arguments(Base) == ("a", "b")
    assert accepted_arguments(Forwards) == ("c", "d", "a", "b")  # **kwargs reach Base
    assert accepted_arguments(Inherits) == ("c", "d", "a", "b")  # no __init__ of its own
    assert accepted_arguments(Closed) == ("e",)  # Base's arguments cannot be given through Closed
    assert accepted_arguments(factory) == ("y", "z")  # positional-only and ** are not names
    assert accepted_arguments(object) == ()


def test_build_calls_the_factory_and_refuses_unknown_arguments() -> None:
    registry = Registry("widget", {"forwards": Forwards, "closed": Closed}, supplied=("a",))
    built = build(registry, "forwards", c=2, a=5, b=3)
    assert (built.a, built.b, built.c, built.d) == (5, 3, 2, 1)
    assert registry.accepts("forwards") == ("c", "d", "b")  # supplied arguments are not listed
    with pytest.raises(TypeError, match=r"^widget 'closed' takes no argument\(s\) \['b', 'f'\]; it accepts \['e'\]$"):
        build(registry, "closed", f=1, b=2)
    with pytest.raises(ValueError, match=r"^unknown widget 'open'; choose one of \['closed', 'forwards'\]$"):
        build(registry, "open")
    with pytest.raises(TypeError, match="widget name must be a string, got int"):
        build(registry, 3)  # type: ignore[arg-type]
    nothing = Registry("gadget", {"bare": object}, noun="option")
    with pytest.raises(TypeError, match=r"^gadget 'bare' takes no option\(s\) \['x'\]; it accepts none$"):
        nothing.check("bare", ["x"])


def test_build_takes_name_and_registry_positionally_so_arguments_may_share_their_names() -> None:
    def named(name: str, registry: str) -> tuple[str, str]:
        return name, registry

    assert build(Registry("thing", {"named": named}), "named", name="n", registry="r") == ("n", "r")


def test_attack_registry() -> None:
    attack = build(ATTACK_REGISTRY, "PGD", MODEL, eps=0.1, steps=3, seed=1)
    assert isinstance(attack, PGD) and attack.steps == 3 and attack.seed == 1  # names in any case
    assert "steps" not in ATTACK_REGISTRY.accepts("fgsm") and "model" not in ATTACK_REGISTRY.accepts("fgsm")
    assert {"samples", "chains", "momentum_refresh", "temperature"} <= set(ATTACK_REGISTRY.accepts("hmcam"))
    assert "momentum_refresh" not in ATTACK_REGISTRY.accepts("hmc")
    # CW has no eps-ball and fixes its own L2 norm.
    assert {"eps", "norm"} & set(attack_arguments(CW)) == set() and "eps" in attack_arguments(HMCAM)
    with pytest.raises(
        TypeError, match=r"^attack 'fgsm' takes no argument\(s\) \['steps'\]; it accepts \['eps', 'norm',"
    ):
        build(ATTACK_REGISTRY, "fgsm", MODEL, eps=0.1, steps=3)
    with pytest.raises(TypeError, match=r"attack 'cw' takes no argument\(s\) \['eps'\]; it accepts \['c', 'kappa'"):
        build(ATTACK_REGISTRY, "cw", MODEL, eps=0.1)
    with pytest.raises(ValueError, match=r"unknown attack 'pgdx'; choose one of \[.*'pgd'"):
        build(ATTACK_REGISTRY, "pgdx", MODEL)


def test_training_method_registry() -> None:
    method = build(METHOD_REGISTRY, "pgd", dataset="mnist", steps=3)
    assert isinstance(method, PGDTraining) and method.steps == 3
    assert METHOD_REGISTRY.accepts("pgd") == ("eps", "alpha", "steps")  # the dataset is supplied
    with pytest.raises(TypeError, match=r"^training method 'pgd' takes no argument\(s\) \['epsilon'\]; it accepts"):
        build(METHOD_REGISTRY, "pgd", dataset="mnist", epsilon=0.3)
    with pytest.raises(ValueError, match=r"^unknown training method 'catt'; choose one of \["):
        build(METHOD_REGISTRY, "catt")


def test_architecture_registry() -> None:
    assert ARCHITECTURES.accepts("smallcnn") == ("dropout",) and ARCHITECTURES.accepts("lenet") == ()
    net = build(ARCHITECTURES, "mlp", num_classes=3, in_channels=1, hidden=(4,))
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    with pytest.raises(
        TypeError, match=r"^architecture 'smallcnn' takes no option\(s\) \['width'\]; it accepts \['dropout'\]$"
    ):
        build_model("smallcnn", width=3)
    with pytest.raises(TypeError, match=r"^architecture 'lenet' takes no option\(s\) \['dropout'\]; it accepts none$"):
        build_model("lenet", dropout=0.1)
    with pytest.raises(ValueError, match=r"^unknown architecture 'resnet33'; choose one of \["):
        build(ARCHITECTURES, "resnet33")


def test_an_attack_list_passes_steps_only_where_taken() -> None:
    fgsm_spec, pgd_spec = attack_list(["fgsm", "pgd"], 7, 1)
    fgsm = fgsm_spec.build(MODEL, eps=0.2, norm="l2", seed=4)
    assert isinstance(fgsm, FGSM) and fgsm.eps == 0.2 and fgsm.seed == 4
    pgd = pgd_spec.with_options(alpha=0.5).build(MODEL, eps=0.2, norm="linf", seed=4)
    assert isinstance(pgd, PGD) and (pgd.steps, pgd.alpha) == (7, 0.5)
    assert pgd_spec.build(MODEL, eps=0.2, norm="linf", seed=4).alpha is None


def test_attack_settings_send_each_field_where_it_is_taken() -> None:
    assert AttackSettings("fgsm").arguments() == {"eps": 0.1, "norm": "linf", "targeted": False, "seed": 0}
    assert AttackSettings("fgsm", steps=1).arguments() == AttackSettings("fgsm").arguments()  # FGSM's one step
    pgd = AttackSettings("pgd", eps=0.2, steps=3, seed=None).arguments()
    assert pgd == {"eps": 0.2, "steps": 3, "alpha": None, "norm": "linf", "targeted": False, "seed": None}
    chain = AttackSettings("hmcam", samples=3, chains=2, momentum_refresh=0.5, options=(("beta1", 0.9),))
    attack = chain.build(MODEL)
    assert isinstance(attack, HMCAM)
    assert (attack.samples, attack.chains, attack.momentum_refresh, attack.moments.beta1) == (3, 2, 0.5, 0.9)
    cw = AttackSettings("cw", steps=5).build(MODEL)
    assert isinstance(cw, CW) and cw.steps == 5 and cw.eps is None


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        (AttackSettings("pgd", samples=4), r"attack 'pgd' takes no argument\(s\) \['samples'\]"),
        (AttackSettings("mpgd", chains=2), r"attack 'mpgd' takes no argument\(s\) \['chains'\]"),
        (AttackSettings("hmc", momentum_refresh=1.0), r"attack 'hmc' takes no argument\(s\) \['momentum_refresh'\]"),
        (AttackSettings("fgsm", steps=5, alpha=0.1), r"attack 'fgsm' takes no argument\(s\) \['alpha', 'steps'\]"),
        (AttackSettings("cw", eps=0.3, norm="l2"), r"attack 'cw' takes no argument\(s\) \['eps', 'norm'\]"),
        (AttackSettings("pgd", options=(("width", 2),)), r"attack 'pgd' takes no argument\(s\) \['width'\]"),
    ],
)
def test_attack_settings_refuse_a_value_the_attack_cannot_take(settings: AttackSettings, refused: str) -> None:
    with pytest.raises(TypeError, match=refused + "; it accepts"):
        settings.build(MODEL)
