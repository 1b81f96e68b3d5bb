"""Fixtures of the training-method tests: the shared checks in ``helpers.py``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

#: The name ``helpers.py`` is loaded under: the robustness baseline it caches is then trained once per session.
HELPERS = "hmcam_method_test_helpers"


@pytest.fixture(scope="session")
def helpers() -> ModuleType:
    """``helpers.py`` (resume, torchrun and robustness checks); tests are not an importable package."""
    if HELPERS not in sys.modules:
        spec = importlib.util.spec_from_file_location(HELPERS, Path(__file__).with_name("helpers.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[HELPERS] = module
        spec.loader.exec_module(module)
    return sys.modules[HELPERS]
