"""``hmcam attack CHECKPOINT --out DIR``: attack a checkpoint and write the examples, results, figures and report."""

from __future__ import annotations

import argparse
import time
from typing import Any

from hmcam.cli.common import (
    add_attack_options,
    add_data_options,
    add_model_options,
    attack_settings,
    check_output_folder,
    checkpoint_and_data,
)

#: Chain samples larger than this are streamed to disk even without --stream.
STREAM_ABOVE_BYTES = 512 * 2**20


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``attack`` subcommand."""
    parser = commands.add_parser("attack", help="attack a checkpoint and write examples, summary and figures")
    add_model_options(parser)
    add_data_options(parser)
    add_attack_options(parser, "hmcam")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="write chain samples to OUT/samples in chunks as they are drawn (memory flat in S); automatic above "
        f"{STREAM_ABOVE_BYTES // 2**20} MiB of samples",
    )
    parser.add_argument(
        "--arviz", metavar="FILE.nc", help="also write the chains' traces for ArviZ (netCDF; needs the extra arviz)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Attack the checkpoint's test images and write the run folder (``attack_run.write_attack_folder``)."""
    # Deferred: torch and the attacks load only when the command runs, not for `hmcam --help`.
    from hmcam.attacks.arviz_export import check_export, write_netcdf
    from hmcam.experiments.attack_run import run_attack, write_attack_folder

    started = time.time()
    out = check_output_folder(args.out)
    model, _, test = checkpoint_and_data(args)
    settings = attack_settings(args)
    if args.arviz is not None:  # before the attack runs: ArviZ installed, an attack with chains
        check_export(args.arviz, settings.name, "chains" in settings.arguments())
    size = test.images.numel() * test.images.element_size() * settings.samples * settings.chains
    stream = args.stream or (settings.name in ("hmcam", "hmc") and size > STREAM_ABOVE_BYTES)
    run = run_attack(
        model,
        settings,
        test.images,
        test.labels,
        batch_size=args.batch_size,
        stream_to=out / "samples" if stream else None,
    )
    extra = {
        "checkpoint": args.checkpoint,
        "dataset": test.info.name,
        "limit": args.limit,
        "batch_size": args.batch_size,
    }
    names = list(test.info.class_names or [str(i) for i in range(test.info.num_classes)])
    files = write_attack_folder(out, model, settings, run, test.images, test.labels, names, extra, started)
    if args.arviz is not None and run.traces is not None:
        files.append(str(write_netcdf(run.traces.to_inference_data(attrs={**extra, **run.summary}), args.arviz)))
    return {"out": str(out), "files": files + (["samples/"] if stream else []), **run.summary}
