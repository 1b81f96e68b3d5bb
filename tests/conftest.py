"""Shared fixtures: small real datasets and small trained models, built once per test session; a page checker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

from hmcam.models import build_model, save_checkpoint


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)


def digits_cnn() -> nn.Module:
    """A small CNN for scikit-learn's 8x8 digits (1 x 8 x 8 inputs in [0, 1], 10 classes)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 16, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def load_digits_split() -> dict[str, torch.Tensor]:
    """scikit-learn's bundled handwritten digits (1797 real 8x8 images), split 1400 / 397."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.tensor(data.target, dtype=torch.int64)
    return {"x_train": images[:1400], "y_train": labels[:1400], "x_test": images[1400:], "y_test": labels[1400:]}


@pytest.fixture
def one_thread():
    """One intra-op thread: the models are tiny, and on a busy machine a second thread's waits cost up to 30x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> dict[str, torch.Tensor]:
    """The digits split of :func:`load_digits_split`, loaded once per session."""
    return load_digits_split()


def train_digits_model(digits: dict[str, torch.Tensor], seed: int = 0) -> nn.Module:
    """``digits_cnn`` trained with Adam for 15 epochs from ``seed`` (about 90% test accuracy), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = digits_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = digits["x_train"], digits["y_train"]
    for _ in range(15):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def correctly_classified(
    digits: dict[str, torch.Tensor], model: nn.Module, count: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` test digits that ``model`` classifies correctly."""
    with torch.no_grad():
        correct = model(digits["x_test"]).argmax(1) == digits["y_test"]
    return digits["x_test"][correct][:count], digits["y_test"][correct][:count]


@pytest.fixture(scope="session")
def digits_model(digits) -> nn.Module:
    """The digits CNN trained from seed 0 (see ``tests/README.md`` for how other seeds are used)."""
    model = train_digits_model(digits, seed=0)
    with torch.no_grad():
        accuracy = (model(digits["x_test"]).argmax(1) == digits["y_test"]).float().mean()
    assert accuracy > 0.85, f"digits fixture trained to only {accuracy:.3f}"
    return model


def train_robust_digits_model(digits: dict[str, torch.Tensor], eps: float = 0.1, seed: int = 0) -> nn.Module:
    """``digits_cnn`` adversarially trained at L-inf ``eps``, in eval mode.

    Fast AT (one PGD step of 1.25 eps from a random start, Wong et al. 2020), Adam, 10 epochs:
    cheap enough for a session fixture.
    """
    from hmcam.attacks import PGD

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = digits_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    attack = PGD(model, eps, alpha=1.25 * eps, steps=1, seed=seed)
    x, y = digits["x_train"], digits["y_train"]
    for _ in range(10):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            adversarial = attack(x[batch], y[batch])
            model.train()
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(adversarial), y[batch]).backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def digits_robust_model(digits) -> nn.Module:
    """The digits CNN adversarially trained at L-inf 0.1 (robust accuracy well above the natural model's)."""
    return train_robust_digits_model(digits)


@pytest.fixture(scope="session")
def digits_correct(digits, digits_model) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 128 test digits that the trained model classifies correctly."""
    return correctly_classified(digits, digits_model)


class TinyNet(nn.Module):
    """A tiny classifier with BatchNorm and Dropout, to check that attacks handle both modes."""

    def __init__(self, channels: int = 1, side: int = 6, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * side * side, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture
def tiny_net_factory():
    """Build a seeded TinyNet in train mode (the state users leave models in)."""

    def build(seed: int = 0, channels: int = 1, side: int = 6, classes: int = 4) -> TinyNet:
        torch.manual_seed(seed)
        return TinyNet(channels, side, classes).train()

    return build


@pytest.fixture(scope="session")
def lenet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained Fashion-MNIST LeNet (seed 0) saved as an hmcam checkpoint: what the CLI tests load."""
    torch.manual_seed(0)
    model = build_model("lenet", num_classes=10, in_channels=1)
    path = tmp_path_factory.mktemp("ckpt") / "lenet.safetensors"
    save_checkpoint(
        path,
        model,
        architecture="lenet",
        dataset="fashion-mnist",
        input_shape=(1, 28, 28),
        num_classes=10,
        mean=None,
        std=None,
        training={},
        metrics={},
    )
    return path


@pytest.fixture
def tiny_train_config() -> dict[str, Any]:
    """Two epochs of natural training of a 16-unit MLP on 64 Fashion-MNIST images: the run-folder tests' run."""
    return {
        "dataset": "fashion-mnist",
        "model": "mlp",
        "model_options": {"hidden": [16]},
        "method": "natural",
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.05,
        "train_limit": 64,
        "test_limit": 32,
        "eval_subset": 0,
        "seed": 0,
        "progress": False,
        "device": "cpu",
    }


@pytest.fixture(scope="session")
def smoke_models(tmp_path_factory: pytest.TempPathFactory):
    """The folder of the smoke-scale experiment zoo (four small Fashion-MNIST models), trained once per session."""
    from hmcam.experiments.zoo import trained_zoo

    folder = tmp_path_factory.mktemp("smoke-models")
    trained_zoo("smoke", folder, device="cpu")
    return folder


@pytest.fixture(scope="session")
def smoke_reproduction(smoke_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished ``hmcam reproduce --scale smoke`` on the smoke zoo, run once per session."""
    from hmcam.experiments.reproduce import REPRODUCE_SCALES, run_reproduce

    out = tmp_path_factory.mktemp("smoke-reproduction") / "run"
    run_reproduce(REPRODUCE_SCALES["smoke"], out, models_dir=smoke_models, progress=False)
    return out


CHECK_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><pre id="result">pending</pre>
<iframe id="page" src="PAGE" width="1200" height="900"></iframe>
<script>
// The window's load event waits for the frame's, which waits for every image of the page to load or fail.
window.addEventListener("load", () => {
  const images = Array.from(document.getElementById("page").contentDocument.images);
  const states = images.map((image) => (image.complete && image.naturalWidth > 0 ? "ok" : "broken"));
  document.getElementById("result").textContent = JSON.stringify(states);
});
</script></body></html>
"""


@dataclass(frozen=True)
class PageCheck:
    """What headless Chromium made of a page: each image's state, the console messages, the screenshot."""

    images: list[str]
    console: list[str]
    screenshot: Path

    @property
    def shows_something(self) -> bool:
        """Not blank: a good share of dark pixels, and both near-black and near-white ones."""
        grey = Image.open(self.screenshot).convert("L")
        histogram = grey.histogram()  # pixel counts of each grey level, 0 (black) to 255 (white)
        darkest, lightest = grey.getextrema()
        return sum(histogram[:200]) > 0.02 * sum(histogram) and darkest < 60 and lightest > 240


def _check_page(browser: str, page: Path, work: Path) -> PageCheck:
    checker = work / f"check-{page.stem}.html"
    checker.write_text(CHECK_PAGE.replace("PAGE", page.resolve().as_uri()))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    flags += [f"--user-data-dir={work / 'chromium-profile'}", "--allow-file-access-from-files"]
    logging = ["--enable-logging=stderr", "--log-level=0"]
    dom = subprocess.run(
        [*flags, *logging, "--virtual-time-budget=15000", "--dump-dom", checker.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r'<pre id="result">(.*?)</pre>', dom.stdout)
    assert match is not None and match.group(1) != "pending", dom.stderr[-3000:]
    shot = work / f"{page.stem}-screenshot.png"
    subprocess.run(
        [*flags, "--window-size=1280,2400", f"--screenshot={shot}", page.resolve().as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    return PageCheck(json.loads(match.group(1)), console, shot)


@pytest.fixture
def check_page(tmp_path: Path) -> Callable[[Path], PageCheck]:
    """``check_page(page)``: load an HTML file in headless Chromium (Debian's ``chromium``, installed by make test)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (make test installs Debian's chromium package)")
    return lambda page: _check_page(browser, page, tmp_path)
