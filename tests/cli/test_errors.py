"""Bad input on the command line: one clear line on stderr, exit status 2, no traceback, nothing half-written."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch

from hmcam.cli import main
from hmcam.models import build_model, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mlp.safetensors"
    save_checkpoint(
        path, build_model("mlp", num_classes=10, in_channels=1, hidden=[8]), architecture="mlp",
        dataset="fashion-mnist", input_shape=(1, 28, 28), num_classes=10, mean=None, std=None,
        options={"hidden": [8]}, training={}, metrics={},
    )  # fmt: skip
    return path


def fails_cleanly(capsys, argv: list[str], *fragments: str) -> str:
    """Run ``hmcam argv``: exit 2 and one stderr line holding every fragment, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_out_under_a_file_is_refused_before_any_work(capsys, checkpoint, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    fails_cleanly(capsys, ["train", "--out", str(blocker / "run"), "--epochs", "1"], f"{blocker} is a file")
    fails_cleanly(capsys, ["attack", str(checkpoint), "--out", str(blocker), "--limit", "2"], "is a file")
    fails_cleanly(capsys, ["demo", "--out", str(blocker / "demo")], "is a file")
    assert blocker.read_text() == "not a folder"


def test_batch_size_zero_is_refused(capsys, checkpoint) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["attack", str(checkpoint), "--out", "x", "--batch-size", "0"])
    assert raised.value.code == 2 and "expected an integer >= 1, got 0" in capsys.readouterr().err


def test_a_missing_optional_dependency_is_named(capsys, tmp_path) -> None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        fails_cleanly(capsys, ["train", "--model", "resnet50", "--out", str(tmp_path / "r")], "torchvision")
    else:
        pytest.skip("torchvision is installed here")


def test_a_malicious_cifar_pickle_is_refused_in_one_line(capsys, tmp_path) -> None:
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    root = tmp_path / "data" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}, protocol=2))
    argv = ["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    fails_cleanly(capsys, [*argv, "--no-download"], "refusing to load global")
    assert not (tmp_path / "pwned").exists()


def rewrite_header(path: Path, target: Path, metadata_text: str) -> None:
    """Copy the safetensors file at ``path`` to ``target`` with its hmcam metadata replaced."""
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"]["hmcam"] = metadata_text
    text = json.dumps(header).encode()
    target.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size :])


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ("[1, 2, 3]", "metadata must be a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "unreadable metadata"),
        ("{not json", "unreadable metadata"),
    ],
)
def test_damaged_checkpoint_headers(capsys, checkpoint, tmp_path, metadata, message) -> None:
    damaged = tmp_path / "damaged.safetensors"
    rewrite_header(checkpoint, damaged, metadata)
    fails_cleanly(
        capsys, ["attack", str(damaged), "--out", str(tmp_path / "out"), "--limit", "2"], str(damaged), message
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [({"hidden": [1] * 300_000}, "1 to 32 layer widths"), ({"hidden": [10**9]}, "widths must be integers in"),
     ({"hidden": "8"}, "list of layer widths"), ({"depth": 3}, "takes no option(s) ['depth']")],
)  # fmt: skip
def test_untrusted_build_options_are_checked_against_the_schema(capsys, checkpoint, tmp_path, options, message) -> None:
    data = checkpoint.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    metadata = json.loads(json.loads(data[8 : 8 + size])["__metadata__"]["hmcam"])
    metadata["build"]["options"] = options
    forged = tmp_path / "forged.safetensors"
    rewrite_header(checkpoint, forged, json.dumps(metadata))
    fails_cleanly(capsys, ["attack", str(forged), "--out", str(tmp_path / "out"), "--limit", "2"], message)


def test_a_diverging_run_stops_with_a_message(capsys, tmp_path) -> None:
    argv = ["train", "--model", "mlp", "--lr", "1e12", "--epochs", "1", "--train-limit", "512", "--test-limit", "32",
            "--batch-size", "64", "--eval-subset", "0", "--no-progress", "--out", str(tmp_path / "run")]  # fmt: skip
    fails_cleanly(capsys, argv, "training loss became nan", "Lower the learning rate")


def test_unexpected_errors_are_one_line_too(capsys, monkeypatch, checkpoint, tmp_path) -> None:
    import hmcam.cli.attack

    def broken(*args, **kwargs):
        raise RuntimeError("something internal")

    monkeypatch.setattr(hmcam.cli.attack, "checkpoint_and_data", broken)
    assert main(["attack", str(checkpoint), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "internal error (RuntimeError; rerun with --traceback): something internal" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["--traceback", "attack", str(checkpoint), "--out", str(tmp_path / "o")]) == 1
    assert "Traceback" in capsys.readouterr().err


def refused(capsys, argv: list[str], out: Path, *fragments: str) -> None:
    """``hmcam argv`` (parsing included) exits 2 with one stderr line holding every fragment, and writes no ``out``."""
    try:
        status = main([*argv, "--out", str(out)])
    except SystemExit as exit_:  # argparse refuses a malformed flag before any command runs
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["eval", "--attacks", "pgd,,pgd"], ["--attacks 'pgd,,pgd' has an empty entry"]),
        (["eval", "--attacks", ""], ["--attacks '' has an empty entry"]),
        (["eval", "--attacks", "fgsm,pgd, PGD", "--eps", "0.1"], ["--attacks 'fgsm,pgd, PGD' names pgd more than"]),
        (["attack", "--chains", "0"], ["hmcam attack: error: argument --chains: expected an integer >= 1, got 0"]),
        (["attack", "--samples", "0"], ["argument --samples: expected an integer >= 1, got 0"]),
        (["attack", "--momentum-refresh", "-1", "--limit", "2"], ["momentum_refresh", ">= 0", "-1"]),
    ],
)  # fmt: skip
def test_attack_flags_that_make_no_sense_are_refused(capsys, checkpoint, tmp_path, argv, fragments) -> None:
    refused(capsys, [argv[0], str(checkpoint), *argv[1:]], tmp_path / "out", *fragments)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--method", "pgd", "--eps", "-0.1"], ["eps must be a finite number > 0, got -0.1"]),
        (["--method", "pgd", "--steps", "0"], ["steps must be >= 1, got 0"]),
        (["--method", "free", "--replays", "0"], ["replays must be >= 1, got 0"]),
        (["--batch-size", "64", "--train-limit", "16"], ["16 examples, fewer than one batch of 64"]),
        (["--epochs", "1", "--batch-size", "0"], ["batch_size must be >= 1, got 0"]),
    ],
)  # fmt: skip
def test_training_hyper_parameters_that_make_no_sense_are_refused(
    capsys, monkeypatch, tmp_path, argv, fragments
) -> None:
    from hmcam.data import ImageDataset, dataset_info
    from hmcam.training import datasets as training_datasets

    loaded: list[str] = []

    def sixteen_examples(name: str, split: str, **kwargs: object) -> ImageDataset:
        loaded.append(split)
        images, labels = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
        return ImageDataset(images, labels, dataset_info("fashion-mnist"))

    monkeypatch.setattr(training_datasets, "load_dataset", sixteen_examples)
    base = ["train", "--dataset", "fashion-mnist", "--model", "mlp", "--eval-subset", "0", "--no-progress"]
    refused(capsys, [*base, *argv], tmp_path / "run", *fragments)
    # The method's hyper-parameters are checked before any data is fetched; the batch against the data once loaded.
    assert loaded == (["train", "test"] if "--train-limit" in argv else [])
