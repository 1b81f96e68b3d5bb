"""``hmcam eval`` end to end on real Fashion-MNIST: files, eps from the checkpoint, bad input, resume, torchrun."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from hmcam.cli import main
from hmcam.data import ImageDataset, load_dataset
from hmcam.models import build_model, save_checkpoint


def write_checkpoint(path: Path, training: dict[str, Any], seed: int = 0) -> Path:
    """A small MLP trained for a few seconds on 1000 Fashion-MNIST images, saved with ``training`` metadata."""
    train = load_dataset("fashion-mnist", "train", limit=1000)
    assert isinstance(train, ImageDataset)
    torch.manual_seed(seed)
    model = build_model("mlp", num_classes=10, in_channels=1, hidden=[32])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        for start in range(0, 1000, 100):
            optimizer.zero_grad()
            images, labels = train.images[start : start + 100], train.labels[start : start + 100]
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    save_checkpoint(
        path, model.eval(), architecture="mlp", dataset="fashion-mnist", input_shape=(1, 28, 28), num_classes=10,
        mean=None, std=None, options={"hidden": [32]}, training=training, metrics={},
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Trained with PGD at eps 0.05, as far as its metadata says."""
    folder = tmp_path_factory.mktemp("ckpt")
    return write_checkpoint(folder / "mlp.safetensors", {"method": {"name": "pgd", "eps": 0.05}})


FAST = ["--steps", "3", "--limit", "32", "--batch-size", "16", "--check-examples", "16", "--no-progress"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fails_cleanly(capsys, argv: list[str], *fragments: str) -> str:
    """Run ``hmcam argv``: exit 2 and one stderr line holding every fragment, no traceback."""
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("hmcam eval: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_eval_writes_the_summary_the_attack_table_and_every_example(capsys, checkpoint, tmp_path) -> None:
    out = tmp_path / "eval"
    argv = ["eval", str(checkpoint), "--attacks", "pgd,fgsm", "--steps", "3", "--limit", "32", "--out", str(out)]
    code, printed, err = run(capsys, *argv)
    assert code == 0, err
    result = json.loads(printed)
    assert result["robust_accuracy"] <= result["clean_accuracy"] and result["examples"] == 32
    assert result["eps"] == 0.05  # the checkpoint's training eps
    assert [row["name"] for row in result["attacks"]] == ["fgsm", "pgd"]  # cheapest first
    assert "eval" in err and "stage" in err  # the progress bar
    files = result.pop("files")
    written = json.loads((out / "results.json").read_text())
    assert written.pop("run")["kind"] == "evaluation" and written == result
    assert (out / "report.html").is_file() and (out / "robustness.png").is_file()
    with open(files["attacks_csv"]) as handle:
        assert [row["name"] for row in csv.DictReader(handle)] == ["fgsm", "pgd"]
    with open(files["examples_csv"]) as handle:
        examples = list(csv.DictReader(handle))
    assert len(examples) == 32 and sum(int(row["robust"]) for row in examples) == round(32 * result["robust_accuracy"])
    assert (out / "state" / "rank0.safetensors").is_file()


def test_eps_comes_from_the_checkpoint_or_the_command_line(capsys, checkpoint, tmp_path) -> None:
    code, printed, _ = run(capsys, "eval", str(checkpoint), "--eps", "0.02", "--attacks", "fgsm", *FAST)
    assert code == 0 and json.loads(printed)["eps"] == 0.02
    evaluated = write_checkpoint(tmp_path / "evaluated.safetensors", {"evaluation": {"eps": 0.03}})
    code, printed, _ = run(capsys, "eval", str(evaluated), "--attacks", "fgsm", *FAST)
    assert code == 0 and json.loads(printed)["eps"] == 0.03
    bare = write_checkpoint(tmp_path / "bare.safetensors", {})
    fails_cleanly(capsys, ["eval", str(bare), *FAST, "--attacks", "fgsm"], "records no training eps", "pass --eps")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--limit", "0"], "--limit must be >= 1, got 0"),
        (["--restarts", "0"], "--restarts must be >= 1, got 0"),
        (["--steps", "-2"], "--steps must be >= 1, got -2"),
        (["--attacks", "pgd,nope"], "unknown attack 'nope'"),
        (["--attacks", "pgd,,fgsm"], "comma-separated attack names"),
        (["--attacks", "cw"], "cw searches for a minimal perturbation"),
        (["--eps", "-1"], "eps must be a finite number > 0"),
        (["--eps", "nan"], "eps must be a finite number > 0"),
        (["--suite", "nope"], "unknown suite 'nope'; choose one of"),
        (["--suite", "autoattack", "--steps", "5"], "suite autoattack fixes its attacks' settings"),
        (["--steps", "5"], "suite autoattack fixes its attacks' settings"),
        (["--suite", "paper", "--attacks", "pgd"], "give --suite or --attacks, not both"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(capsys, checkpoint, options, fragment) -> None:
    fails_cleanly(capsys, ["eval", str(checkpoint), *FAST, *options], fragment)


def test_out_must_be_a_folder(capsys, checkpoint, tmp_path) -> None:
    blocker = tmp_path / "file.json"
    blocker.write_text("not a folder")
    fails_cleanly(
        capsys, ["eval", str(checkpoint), *FAST, "--attacks", "fgsm", "--out", str(blocker)], f"{blocker} is a file"
    )
    fails_cleanly(
        capsys,
        ["eval", str(checkpoint), *FAST, "--attacks", "fgsm", "--out", str(blocker / "run")],
        f"{blocker} is a file",
    )
    assert blocker.read_text() == "not a folder"
    fails_cleanly(
        capsys, ["eval", str(tmp_path / "missing.safetensors"), *FAST, "--attacks", "fgsm"], "missing.safetensors"
    )


def test_device_option(capsys, checkpoint) -> None:
    code, _, err = run(capsys, "eval", str(checkpoint), "--attacks", "fgsm", *FAST, "--device", "cpu")
    assert code == 0, err
    if not torch.cuda.is_available():
        fails_cleanly(
            capsys, ["eval", str(checkpoint), *FAST, "--attacks", "fgsm", "--device", "cuda"], "CUDA is not available"
        )


def test_standalone_numbers_and_the_transfer_check(capsys, checkpoint, tmp_path) -> None:
    source = write_checkpoint(tmp_path / "source.safetensors", {}, seed=1)
    argv = ["eval", str(checkpoint), "--attacks", "fgsm,pgd", *FAST, "--standalone", "--source", str(source)]
    code, printed, err = run(capsys, *argv)
    assert code == 0, err
    result = json.loads(printed)
    assert result["mode"] == "standalone"
    assert all(row["standalone_robust_accuracy"] is not None for row in result["attacks"])
    assert set(result["checks"]["transfer"]) == {"attack", "robust_accuracy", "white_box_robust_accuracy"}
    assert set(result["checks"]["half_steps"]) >= {"steps", "robust_accuracy", "full_steps_robust_accuracy"}


def test_warnings_are_printed_and_kept_in_the_json(capsys, checkpoint, tmp_path) -> None:
    # A step size of 1e-5 leaves PGD at its random start, weaker than FGSM: the masking check must say so.
    argv = ["eval", str(checkpoint), "--attacks", "fgsm,pgd", *FAST, "--alpha", "1e-5", "--eps", "0.1"]
    code, printed, err = run(capsys, *argv, "--out", str(tmp_path / "out"))
    assert code == 0
    warnings = json.loads(printed)["warnings"]
    assert any("fgsm (one step) is stronger than pgd" in text for text in warnings)
    assert "hmcam eval: warning: fgsm (one step) is stronger than pgd" in err
    assert json.loads((tmp_path / "out" / "results.json").read_text())["warnings"] == warnings


def test_a_rerun_resumes_and_a_changed_run_is_refused(capsys, checkpoint, tmp_path) -> None:
    argv = ["eval", str(checkpoint), "--attacks", "fgsm,pgd", *FAST, "--out", str(tmp_path / "out")]
    code, first, _ = run(capsys, *argv)
    assert code == 0 and json.loads(first)["resumed"] is False
    code, again, _ = run(capsys, *argv)
    assert code == 0 and json.loads(again)["resumed"] is True
    assert json.loads(again)["robust_accuracy"] == json.loads(first)["robust_accuracy"]
    fails_cleanly(capsys, [*argv, "--restarts", "2"], "holds the state of a different", "restarts: saved 1, now 2")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _numbers(folder: Path) -> dict[str, Any]:
    summary = json.loads((folder / "results.json").read_text())
    for key in ("seconds", "world_size", "resumed", "run"):
        summary.pop(key)
    for row in summary["attacks"]:
        row.pop("seconds")
    return summary


@pytest.mark.slow
def test_two_gloo_processes_gather_exactly_the_numbers_of_one_process(checkpoint, tmp_path) -> None:
    options = ["eval", str(checkpoint), "--attacks", "fgsm,pgd,mpgd", "--steps", "3", "--restarts", "2", "--limit",
               "80", "--batch-size", "16", "--check-examples", "40", "--no-progress", "--device", "cpu"]  # fmt: skip
    # One thread per process in both runs (torchrun's default), so that every chunk meets the same kernels.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "hmcam", *options, "--out", str(tmp_path / "one")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "hmcam", *options, "--out", str(tmp_path / "two")]  # fmt: skip
    double = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert double.returncode == 0, double.stderr[-3000:]
    printed = json.loads(double.stdout)  # rank 0 alone prints
    assert printed["world_size"] == 2
    assert sorted(path.name for path in (tmp_path / "two" / "state").glob("*.safetensors")) == [
        "rank0.safetensors",
        "rank1.safetensors",
    ]
    assert _numbers(tmp_path / "two") == _numbers(tmp_path / "one")
    for name in ("examples.csv", "results.csv"):
        one, two = (tmp_path / "one" / name).read_text(), (tmp_path / "two" / name).read_text()
        if name == "results.csv":  # its last column is seconds
            one, two = ([line.rsplit(",", 1)[0] for line in text.splitlines()] for text in (one, two))
        assert one == two, name
