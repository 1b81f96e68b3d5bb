"""``hmcam attack CHECKPOINT --out DIR``: attack a checkpoint, write the examples, a summary and a grid."""

from __future__ import annotations

import argparse
from typing import Any

from hmcam.cli.common import (
    add_attack_options,
    add_data_options,
    attack_settings,
    check_output_folder,
    checkpoint_and_data,
)

#: Chain samples larger than this are streamed to disk even without --stream.
STREAM_ABOVE_BYTES = 512 * 2**20


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``attack`` subcommand."""
    parser = commands.add_parser("attack", help="attack a checkpoint and write examples, summary and figures")
    parser.add_argument("checkpoint")
    add_data_options(parser)
    add_attack_options(parser, "hmcam")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="write chain samples to OUT/samples in chunks as they are drawn (memory flat in S); automatic above "
        f"{STREAM_ABOVE_BYTES // 2**20} MiB of samples",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Attack the checkpoint's test images; write ``adversarial.safetensors``, ``summary.json``, ``grid.png``."""
    from hmcam.evaluation import predict
    from hmcam.experiments.attack_run import run_attack
    from hmcam.reporting.figures import first_changed, save_adversarial_grid
    from hmcam.storage import atomic_write_json, save_tensors

    out = check_output_folder(args.out)
    model, _, test = checkpoint_and_data(args)
    settings = attack_settings(args)
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
    tensors = {"adversarial": run.adversarial, "labels": test.labels}
    if run.samples is not None:
        tensors["samples"] = run.samples
    save_tensors(out / "adversarial.safetensors", tensors, {"checkpoint": args.checkpoint, **run.summary})
    atomic_write_json(out / "summary.json", {"checkpoint": args.checkpoint, **run.summary})
    clean_prediction = predict(model, test.images)
    adversarial_prediction = predict(model, run.adversarial)
    shown = first_changed(clean_prediction, adversarial_prediction, 8)
    save_adversarial_grid(
        out / "grid.png",
        test.images[shown].cpu(),
        run.adversarial[shown].cpu(),
        clean_prediction[shown].cpu(),
        adversarial_prediction[shown].cpu(),
        test.info.class_names or [str(i) for i in range(test.info.num_classes)],
        f"{settings.name}, {settings.norm} eps = {settings.eps}",
    )
    files = ["adversarial.safetensors", "summary.json", "grid.png"] + (["samples/"] if stream else [])
    return {"out": str(out), "files": files, **run.summary}
