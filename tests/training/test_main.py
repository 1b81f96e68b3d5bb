"""The script entry point's parsing: one flag per TrainConfig field, JSON values, --config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hmcam.training import TrainConfig
from hmcam.training.__main__ import parse_config


def test_flags_map_to_fields_with_json_values() -> None:
    config, resume = parse_config(
        [
            "--method",
            "pgd",
            "--method-kwargs",
            '{"eps": 0.1, "steps": 3}',
            "--epochs",
            "3",
            "--lr",
            "0.05",
            "--milestones",
            "[0.5]",
            "--train-limit",
            "512",
            "--deterministic",
            "true",
            "--eval-eps",
            "null",
            "--out",
            "runs/x",
            "--resume",
        ]
    )
    assert resume is True
    assert config == TrainConfig(
        method="pgd",
        method_kwargs={"eps": 0.1, "steps": 3},
        epochs=3,
        lr=0.05,
        milestones=(0.5,),
        train_limit=512,
        deterministic=True,
        out="runs/x",
    )


def test_config_file_and_inline_json_with_flags_overriding(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"model": "mlp", "epochs": 7, "seed": 3}))
    config, resume = parse_config(["--config", str(path), "--epochs", "2"])
    assert (config.model, config.epochs, config.seed, resume) == ("mlp", 2, 3, False)
    config, _ = parse_config(["--config", '{"model": "lenet"}'])
    assert config.model == "lenet"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "three"], "Expecting value"),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--config", '{"learning_rate": 1}'], "unknown training configuration field"),
        (["--config", "/nonexistent/run.json"], "No such file"),
    ],
)
def test_bad_values_exit_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as raised:
        parse_config(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err
