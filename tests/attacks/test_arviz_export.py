"""ArviZ export of attack chains: layout, a netCDF round trip whose ESS and R-hat are hmcam's, the CLI flag."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from hmcam.attacks import HMCAM, ChainResult
from hmcam.attacks.arviz_export import chains_draws_examples, check_export, read_netcdf, write_netcdf
from hmcam.cli import main
from hmcam.evaluation.sampling import diagnose

with warnings.catch_warnings():  # ArviZ 0.23 announces its 1.0 refactor with a FutureWarning on import
    warnings.simplefilter("ignore", FutureWarning)
    az = pytest.importorskip("arviz", reason="the ArviZ export needs the extra: pip install 'hmcam[arviz]'")


@pytest.fixture(scope="module")
def chains(digits_model, digits_correct) -> ChainResult:
    """Four chains of 12 HMCAM transitions on six digits (random momentum, so the chains differ)."""
    x, y = digits_correct
    attack = HMCAM(digits_model, 0.1, steps=2, samples=12, chains=4, momentum_refresh=1.0, seed=0)
    return attack.sample(x[:6], y[:6])


def test_layout_is_chain_draw_example() -> None:
    values = torch.arange(24.0).reshape(4, 3, 2)  # [S, C, B]
    arranged = chains_draws_examples(values, chains=3)
    assert arranged.shape == (3, 4, 2)
    assert arranged[2, 1, 0] == values[1, 2, 0]
    assert chains_draws_examples(values[:, 0], chains=1).shape == (1, 4, 2)
    with pytest.raises(ValueError, match="trace"):
        chains_draws_examples(values, chains=1)


def test_inference_data_groups_and_dims(chains: ChainResult) -> None:
    data = chains.to_inference_data(examples=[10, 11, 12, 13, 14, 15], attrs={"eps": 0.1, "note": None, "ok": True})
    assert set(data.groups()) == {"posterior", "sample_stats"}
    assert data.posterior["loss"].dims == ("chain", "draw", "example")
    assert dict(data.posterior.sizes) == {"chain": 4, "draw": 12, "example": 6}
    assert data.posterior["example"].values.tolist() == [10, 11, 12, 13, 14, 15]
    assert set(data.sample_stats.data_vars) == {"energy", "acceptance_rate", "accepted"}
    # chain c, draw s, example b is the state of chain c after transition s of example b.
    expected = chains.objective[5, 2, 3].double().item()
    assert data.posterior["loss"].values[2, 5, 3] == expected
    assert data.posterior["success"].values.sum() == int(chains.success.sum())
    assert data.posterior.attrs["eps"] == 0.1 and data.posterior.attrs["ok"] == 1 and "note" not in data.posterior.attrs
    with pytest.raises(ValueError, match="label the 6 examples"):
        chains.to_inference_data(examples=[0, 1])


def test_netcdf_round_trip_gives_hmcams_ess_and_rhat(chains: ChainResult, tmp_path) -> None:
    path = write_netcdf(chains.to_inference_data(), tmp_path / "chains.nc")
    assert [p.name for p in tmp_path.iterdir()] == ["chains.nc"], "no temporary file is left behind"
    data = read_netcdf(path)
    ours = diagnose(chains)
    ess = az.ess(data, method="bulk")
    rhat = az.rhat(data, method="rank")
    for name, (our_ess, our_rhat) in {
        "loss": (ours.loss_ess, ours.loss_rhat),
        "success": (ours.success_ess, ours.success_rhat),
    }.items():
        assert not torch.isnan(our_ess).all(), f"the {name} traces must give defined ESS values to compare"
        np.testing.assert_allclose(ess[name].values, our_ess.numpy(), rtol=1e-9, equal_nan=True)
        np.testing.assert_allclose(rhat[name].values, our_rhat.numpy(), rtol=1e-9, equal_nan=True)
    assert not math.isnan(float(rhat["loss"].values[0])), "R-hat of a moving loss trace is defined"


def test_concatenate_joins_batches_in_order(digits_model, digits_correct) -> None:
    x, y = digits_correct
    attack = HMCAM(digits_model, 0.1, steps=1, samples=4, chains=2, seed=0)
    first, second = attack.sample(x[:3], y[:3]), attack.sample(x[3:5], y[3:5])
    joined = ChainResult.concatenate([first, second])
    assert joined.objective.shape == (4, 2, 5) and joined.samples.shape[:3] == (4, 2, 5)
    assert torch.equal(joined.objective[:, :, 3:], second.objective)
    single = HMCAM(digits_model, 0.1, steps=1, samples=4, seed=0).sample(x[:2], y[:2])
    with pytest.raises(ValueError, match="differ"):
        ChainResult.concatenate([first, single])


def test_check_export_refuses_before_any_work(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"end in \.nc"):
        check_export(tmp_path / "chains.json", "hmcam", True)
    with pytest.raises(ValueError, match="has none"):
        check_export(tmp_path / "chains.nc", "pgd", False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        check_export(tmp_path / "file" / "chains.nc", "hmcam", True)
    assert check_export(tmp_path / "new" / "chains.nc", "hmcam", True) == tmp_path / "new" / "chains.nc"


def test_cli_writes_the_chains(capsys, lenet_checkpoint, tmp_path) -> None:
    target = tmp_path / "export" / "chains.nc"
    argv = ["attack", str(lenet_checkpoint), "--attack", "hmcam", "--steps", "1", "--samples", "6", "--chains", "2"]
    argv += ["--limit", "10", "--batch-size", "4", "--out", str(tmp_path / "run"), "--arviz", str(target)]
    assert main(argv) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert str(target) in files
    data = read_netcdf(target)
    assert dict(data.posterior.sizes) == {"chain": 2, "draw": 6, "example": 10}
    assert data.posterior.attrs["attack"] == "hmcam" and data.posterior.attrs["chains"] == 2
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    ess = sorted(value for value in az.ess(data, method="bulk")["loss"].values.tolist() if not math.isnan(value))
    # The summary's median is torch's: the lower middle value of an even count.
    assert ess[(len(ess) - 1) // 2] == pytest.approx(
        summary["loss_ess_median"], rel=1e-6
    )  # the summary rounds to float32


def test_cli_refuses_an_attack_without_chains(capsys, lenet_checkpoint, tmp_path) -> None:
    argv = ["attack", str(lenet_checkpoint), "--attack", "pgd", "--limit", "4", "--out", str(tmp_path / "run")]
    assert main([*argv, "--arviz", str(tmp_path / "chains.nc")]) == 2
    assert "has none" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "chains.nc").exists()
