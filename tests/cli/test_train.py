"""``hmcam train``: flags generated from TrainConfig and the methods, --config files, --resume from the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hmcam.cli import build_parser, main
from hmcam.cli.train import training_config
from hmcam.training import TrainConfig


def parse(*argv: str) -> tuple[TrainConfig, bool]:
    return training_config(build_parser().parse_args(["train", *argv]))


def test_every_config_field_is_a_typed_flag() -> None:
    config, resume = parse(
        "--method", "pgd", "--eps", "0.1", "--steps", "3", "--epochs", "3", "--lr", "0.05",
        "--milestones", "0.5", "--train-limit", "512", "--deterministic", "--no-channels-last",
        "--eval-eps", "none", "--model-options", '{"dropout": 0.0}', "--out", "runs/x",
    )  # fmt: skip
    assert resume is False
    assert config == TrainConfig(
        method="pgd", method_kwargs={"eps": 0.1, "steps": 3}, epochs=3, lr=0.05, milestones=(0.5,),
        train_limit=512, deterministic=True, channels_last=False, model_options={"dropout": 0.0}, out="runs/x",
    )  # fmt: skip


def test_help_shows_every_field_with_its_default(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name in TrainConfig().to_dict():
        assert "--" + name.replace("_", "-") in text or name == "sync_batchnorm", name
    assert "(default: 0.9)" in text and "--weight-decay" in text and "--eps" in text


def test_config_file_with_flags_overriding(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"model": "mlp", "epochs": 7, "seed": 3}))
    config, _ = parse("--config", str(path), "--epochs", "2")
    assert (config.model, config.epochs, config.seed) == ("mlp", 2, 3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "three"], "invalid int value"),
        (["--model", "resnet9"], "invalid choice"),
        (["--model-options", "{oops"], "not valid JSON"),
    ],
)
def test_malformed_flags_exit_with_a_message(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["train", *argv])
    assert raised.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--method", "natural", "--eps", "0.1"], "takes no argument(s) ['eps']"),
    ],
)
def test_invalid_values_are_one_line_errors(argv, message, capsys, tmp_path) -> None:
    assert main(["train", *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_invalid_json_config_names_the_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"epochs": 2,')
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert str(path) in capsys.readouterr().err


def write_saved_run(folder: Path, **fields: object) -> TrainConfig:
    config = TrainConfig(out=str(folder), **fields)  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"config": config.to_dict()}))
    return config


def test_resume_reads_the_saved_configuration(tmp_path: Path) -> None:
    saved = write_saved_run(tmp_path / "run", model="mlp", lr=0.05, method="pgd", method_kwargs={"eps": 0.2})
    config, resume = parse("--out", str(tmp_path / "run"), "--resume")
    assert resume and config == saved
    # Flags that agree with the run, and those that change nothing (progress), are accepted.
    config, _ = parse("--out", str(tmp_path / "run"), "--resume", "--lr", "0.05", "--no-progress", "--eps", "0.2")
    assert config == saved.replace(progress=False)


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--lr", "0.1"], "--lr 0.1"), (["--eps", "0.3"], "--method-kwargs"), (["--epochs", "5"], "--epochs 5")],
)
def test_a_flag_that_contradicts_the_saved_run_is_named(flags, named, tmp_path: Path) -> None:
    write_saved_run(tmp_path / "run", model="mlp", lr=0.05, epochs=2, method="pgd", method_kwargs={"eps": 0.2})
    with pytest.raises(ValueError, match="contradicts the run") as raised:
        parse("--out", str(tmp_path / "run"), "--resume", *flags)
    assert named in str(raised.value)
