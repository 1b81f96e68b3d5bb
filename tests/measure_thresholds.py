"""Measure every statistic the suite puts a bar on, over several trainings of the digits model.

Float results differ between CPUs, so the digits fixture trains to slightly different weights on
another machine. Retraining from other seeds and with another thread count moves the weights far
more than a change of CPU does; a bar set below the smallest value seen here survives other machines.
Run: ``.venv/bin/python tests/measure_thresholds.py [--seeds 0 1 2 3 4] [--threads 1 2]`` (a few
minutes); it prints one JSON line per training and the minimum and maximum of each statistic.
``--training`` measures the bars of ``tests/training/test_trainer.py`` instead: LeNet on 6000
Fashion-MNIST images, natural and PGD-3 training on the test's budget (about a minute per run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import correctly_classified, load_digits_split, train_digits_model  # noqa: E402
from hmcam.attacks import AIFGSM, CW, DAA, FGSM, HMC, HMCAM, IFGSM, MIFGSM, MPGD, PGD, CWLinf  # noqa: E402
from hmcam.attacks.losses import margin  # noqa: E402
from hmcam.evaluation import robust_accuracy, success_rate  # noqa: E402

EPS = 0.15


def statistics(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The values test_strength, test_ball, test_cw and test_exact_values assert on."""
    out: dict[str, float] = {}
    fgsm = success_rate(model, x, FGSM(model, EPS)(x, y), y)
    out["fgsm_success"] = fgsm
    iterative = {
        "ifgsm": IFGSM(model, EPS, steps=20),
        "pgd": PGD(model, EPS, steps=20, seed=0),
        "mifgsm": MIFGSM(model, EPS, steps=20),
        "mpgd": MPGD(model, EPS, steps=20, seed=0),
        "aifgsm": AIFGSM(model, EPS, steps=20),
        "hmcam": HMCAM(model, EPS, steps=10, samples=2, seed=0),
        "cwlinf": CWLinf(model, EPS, steps=20, seed=0),
        "daa": DAA(model, EPS, steps=20, seed=0),
    }
    out["iterative_minus_fgsm_min"] = min(success_rate(model, x, a(x, y), y) for a in iterative.values()) - fgsm
    out["hmc_robust_accuracy"] = robust_accuracy(
        model, HMC(model, 0.3, steps=10, samples=3, temperature=0.05, seed=0)(x, y), y
    )
    cw = CW(model, steps=100, lr=0.1, binary_search_steps=4)(x, y)
    out["cw_success"] = success_rate(model, x, cw, y)
    out["cw_median_l2"] = float((cw - x).flatten(1).norm(dim=1).median())
    targets = (y + 1) % 10
    for name, attack in {
        "pgd": PGD(model, 0.3, steps=30, targeted=True, seed=0),
        "mpgd": MPGD(model, 0.3, steps=30, targeted=True, seed=0),
        "hmcam": HMCAM(model, 0.3, steps=15, samples=2, targeted=True, seed=0),
        "cw": CW(model, steps=100, lr=0.1, binary_search_steps=4, targeted=True),
    }.items():
        out[f"targeted_{name}"] = success_rate(model, x, attack(x, targets), targets, targeted=True)
    result = HMCAM(model, EPS, alpha=0.1 * EPS / 5, steps=5, samples=4, seed=0).sample(x, y)
    moved = (result.samples[1:] - result.samples[:-1]).flatten(2).abs().amax(dim=2) > 1e-3
    out["hmcam_acceptance"] = result.acceptance_rate
    out["hmcam_moved"] = float(moved[result.accepted[1:]].float().mean())
    distinct = torch.tensor([torch.unique(result.samples[:, i], dim=0).shape[0] for i in range(len(x))])
    out["hmcam_distinct"] = float((distinct >= 2).float().mean())
    out["hmc_leapfrog_acceptance"] = (
        HMC(model, 0.05, alpha=0.001, steps=5, samples=3, seed=0).sample(x[:64], y[:64]).acceptance_rate
    )
    l1 = IFGSM(model, eps=8.0, steps=20, norm="l1")(x, y)
    out["l1_changed_median"] = float(((l1 - x).abs().flatten(1) > 1e-6).sum(1).float().median())
    with torch.no_grad():
        out["l1_fooled"] = float((model(l1).argmax(1) != y).float().mean())
    for kappa in (0.0, 2.0, 5.0):
        adversarial = CW(model, kappa=kappa, steps=100, lr=0.1, binary_search_steps=4)(x[:48], y[:48])
        out[f"cw_kappa{kappa:g}_changed"] = float(((adversarial - x[:48]).flatten(1).abs().amax(1) > 0).float().mean())
    adversarial = CW(model, kappa=3.0, steps=100, lr=0.1, binary_search_steps=4, targeted=True)(x[:32], targets[:32])
    with torch.no_grad():
        out["cw_targeted_kappa3_hit"] = float((model(adversarial).argmax(1) == targets[:32]).float().mean())
        out["cw_targeted_kappa3_min_margin"] = float((-margin(model(adversarial), targets[:32])).min())
    out["targeted_pgd_run_32"] = success_rate(
        model,
        x[:32],
        PGD(model, 0.3, steps=20, targeted=True, seed=0)(x[:32], targets[:32]),
        targets[:32],
        targeted=True,
    )
    return out


def training_statistics(seed: int) -> dict[str, float]:
    """The accuracies test_trainer asserts on, for one seed of its natural and PGD-AT runs."""
    import tempfile

    from hmcam.training import TrainConfig, train

    budget = {
        "dataset": "fashion-mnist",
        "model": "lenet",
        "epochs": 4,
        "batch_size": 64,
        "lr": 0.05,
        "milestones": [0.75],
        "train_limit": 6000,
        "test_limit": 1000,
        "eval_subset": 500,
        "eval_steps": 10,
        "eval_eps": 0.1,
        "progress": False,
        "seed": seed,
    }
    with tempfile.TemporaryDirectory() as root:
        natural = train(TrainConfig(**budget, method="natural", out=f"{root}/natural"))["final"]
        pgd = train(
            TrainConfig(
                **budget, method="pgd", method_kwargs={"eps": 0.1, "alpha": 0.04, "steps": 3}, out=f"{root}/pgd"
            )
        )["final"]
    return {
        "natural_clean": natural["clean_accuracy"],
        "natural_train": natural["train_accuracy"],
        "pgd_clean": pgd["clean_accuracy"],
        "robust_gain": pgd["robust_accuracy"] - natural["robust_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--training", action="store_true", help="measure the trainer's bars instead")
    args = parser.parse_args()
    digits = load_digits_split()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for seed in args.seeds:
            if args.training:
                measured = training_statistics(seed)
            else:
                model = train_digits_model(digits, seed)
                measured = statistics(model, *correctly_classified(digits, model))
            row = {"seed": seed, "threads": threads, **measured}
            print(json.dumps(row), flush=True)
            rows.append(row)
    keys = [k for k in rows[0] if k not in ("seed", "threads")]
    print(
        json.dumps({k: [round(min(r[k] for r in rows), 4), round(max(r[k] for r in rows), 4)] for k in keys}, indent=1)
    )


if __name__ == "__main__":
    main()
