"""Peak memory of HMCAM sampling against S, with the samples kept and streamed to disk: prints JSON.

Each measurement runs in a fresh process (``ru_maxrss`` is a high-water mark) on the same random
model and images: ``run_attack`` with S transitions of C chains, keeping every sample in memory or
streaming them to a temporary folder (``stream_to``). Kept, memory grows with S (S x C x images x
pixels x 4 bytes); streamed, it should stay flat: the target is a peak that does not grow with S.

The children run with ``MALLOC_MMAP_THRESHOLD_`` fixed at 1 MiB. By default glibc raises its mmap
threshold each time a large block is freed, after which blocks of a few MiB (one transition's
states) come from the heap, whose fragmentation makes the high-water mark creep up with the number
of transitions even though nothing is retained (measured: 411 -> 864 MiB over 64 streamed
transitions by default, flat at 260-271 MiB with the threshold fixed). ``--default-malloc`` measures
with glibc's defaults.

Usage: ``python benchmarks/sampling_memory.py [--samples 16 32 64] [--chains 4] [--images 512]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = """
import resource, sys, tempfile, torch
from torch import nn
from hmcam.experiments.attack_run import AttackSettings, run_attack
samples, chains, images, stream = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
x, y = torch.rand(images, 1, 28, 28), torch.randint(0, 10, (images,))
settings = AttackSettings("hmcam", eps=0.1, steps=1, samples=samples, chains=chains, momentum_refresh=0.5)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with tempfile.TemporaryDirectory() as folder:
    run_attack(model, settings, x, y, batch_size=images, progress=False, stream_to=folder if stream else None)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def peak_kib(samples: int, chains: int, images: int, stream: bool, default_malloc: bool) -> int:
    """Growth of the peak resident memory (KiB) of one sampling run in a fresh process."""
    environment = dict(os.environ)
    if not default_malloc:
        environment["MALLOC_MMAP_THRESHOLD_"] = str(2**20)
    output = subprocess.run(
        [sys.executable, "-c", CHILD, str(samples), str(chains), str(images), "1" if stream else "0"],
        check=True,
        capture_output=True,
        text=True,
        env=environment,
    )
    return int(output.stdout.strip().splitlines()[-1])


def main() -> None:
    """Measure and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's dynamic mmap threshold")
    args = parser.parse_args()
    rows = {
        str(s): {
            "kept_mib": round(peak_kib(s, args.chains, args.images, False, args.default_malloc) / 1024, 1),
            "streamed_mib": round(peak_kib(s, args.chains, args.images, True, args.default_malloc) / 1024, 1),
            "samples_mib": round(s * args.chains * args.images * 784 * 4 / 2**20, 1),
        }
        for s in args.samples
    }
    report = {"chains": args.chains, "images": args.images, "default_malloc": args.default_malloc, "by_samples": rows}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
