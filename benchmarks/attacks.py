"""Attack speed against its floor, measured in the same run: prints JSON.

The floor of an attack that evaluates N gradients is N x (forward + backward to the input) of the
same model on the same batch, plus S forward passes for HMCAM's Metropolis-Hastings test. Ratios,
not absolute times, are the targets: <= 1.05 for every attack. When torchattacks is installed
(``pip install --no-deps torchattacks``; it needs scipy), our PGD is also timed against its PGD on
the same model and batch, alternately, in the same run (target <= 1.05).

Parallel chains: HMCAM's ``sample()`` with C chains per image (``--chains``, on ``--chain-batch``
images) against its floor, the same gradient and forward passes on a batch of C x images; the time
per chain-transition (seconds / (C x images x S)) should fall, then stay flat, as C grows, and the
ratio to the floor stay near 1 for every C.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from hmcam.attacks import AIFGSM, DAA, FGSM, HMCAM, IFGSM, MIFGSM, MPGD, PGD, CWLinf
from hmcam.attacks.hygiene import attack_mode


def small_cnn() -> nn.Module:
    """A Fashion-MNIST-size CNN (two conv blocks and two dense layers)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    ).eval()


def paired(attack, floor, repeats: int) -> tuple[list[float], list[float]]:
    """Times of the attack and of its floor, measured alternately so that both see the same load."""
    attack()
    floor()
    attack_times, floor_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        floor()
        middle = time.perf_counter()
        attack()
        floor_times.append(middle - start)
        attack_times.append(time.perf_counter() - middle)
    return attack_times, floor_times


def main() -> None:
    """Time every attack against its floor (and PGD against torchattacks when installed); print JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 2, 4, 8], help="chain counts C to time")
    parser.add_argument("--chain-batch", type=int, default=32, help="images per call in the chain timing")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = small_cnn()
    x = torch.rand(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    steps, eps = args.steps, 0.1
    samples, inner = 2, args.steps // 2

    def forward_backward() -> None:
        probe = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(probe), y, reduction="none").sum()
        torch.autograd.grad(loss, probe)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    attacks = {
        "fgsm": (FGSM(model, eps), 1, 0),
        "ifgsm": (IFGSM(model, eps, steps=steps), steps, 0),
        "pgd": (PGD(model, eps, steps=steps, seed=0), steps, 0),
        "mifgsm": (MIFGSM(model, eps, steps=steps), steps, 0),
        "mpgd": (MPGD(model, eps, steps=steps, seed=0), steps, 0),
        "aifgsm": (AIFGSM(model, eps, steps=steps), steps, 0),
        "hmcam": (HMCAM(model, eps, steps=inner, samples=samples, seed=0), inner * samples, samples),
        "cwlinf": (CWLinf(model, eps, steps=steps, seed=0), steps, 0),
        "daa": (DAA(model, eps, steps=steps, seed=0), steps, 0),
    }
    results = {}
    for name, (attack, gradients, forwards) in attacks.items():

        def floor(gradients: int = gradients, forwards: int = forwards) -> None:
            with attack_mode(model):
                for _ in range(gradients):
                    forward_backward()
                for _ in range(forwards):
                    forward()

        attack_times, floor_times = paired(lambda attack=attack: attack(x, y), floor, args.repeats)
        # The fastest of several runs is the least disturbed by other processes; the median is shown too.
        results[name] = {
            "seconds": round(min(attack_times), 4),
            "floor_seconds": round(min(floor_times), 4),
            "ratio": round(min(attack_times) / min(floor_times), 3),
            "median_ratio": round(statistics.median(attack_times) / statistics.median(floor_times), 3),
            "gradient_evaluations": gradients,
            "extra_forwards": forwards,
        }
    chain_results = {}
    for chains in args.chains:
        images, labels = x[: args.chain_batch], y[: args.chain_batch]
        tiled = images.repeat(chains, 1, 1, 1)
        tiled_labels = labels.repeat(chains)
        sampler = HMCAM(model, eps, steps=inner, samples=samples, seed=0, chains=chains, momentum_refresh=1.0)

        def chain_floor(tiled: torch.Tensor = tiled, tiled_labels: torch.Tensor = tiled_labels) -> None:
            with attack_mode(model):
                for _ in range(inner * samples):
                    probe = tiled.clone().requires_grad_(True)
                    loss = nn.functional.cross_entropy(model(probe), tiled_labels, reduction="none").sum()
                    torch.autograd.grad(loss, probe)
                for _ in range(samples):
                    with torch.no_grad():
                        model(tiled)

        sample_times, floor_times = paired(
            lambda sampler=sampler, images=images, labels=labels: sampler.sample(images, labels),
            chain_floor,
            args.repeats,
        )
        chain_results[str(chains)] = {
            "seconds": round(min(sample_times), 4),
            "floor_seconds": round(min(floor_times), 4),
            "ratio": round(min(sample_times) / min(floor_times), 3),
            "microseconds_per_chain_transition": round(1e6 * min(sample_times) / (chains * len(images) * samples), 1),
        }
    report = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "input": [1, 28, 28],
        "targets": {"every_attack_over_floor": 1.05, "pgd_over_torchattacks": 1.05},
        "attacks": results,
        "hmcam_chains": {"images": args.chain_batch, "samples": samples, "steps": inner, "by_chains": chain_results},
    }
    try:
        import torchattacks
    except ImportError:
        report["torchattacks"] = "not installed: pip install --no-deps torchattacks (needs scipy)"
    else:
        theirs = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
        ours = PGD(model, eps, steps=steps, seed=0)
        our_times, their_times = paired(lambda: ours(x, y), lambda: theirs(x, y), args.repeats)
        report["torchattacks"] = {
            "version": torchattacks.__version__,
            "pgd_seconds": round(min(our_times), 4),
            "torchattacks_pgd_seconds": round(min(their_times), 4),
            "ratio": round(min(our_times) / min(their_times), 3),
            "median_ratio": round(statistics.median(our_times) / statistics.median(their_times), 3),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
