"""Shared test fixtures: paths to the ground truth in ../shared, read in place (never copied)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SPEC = SHARED / "spec"
REFERENCE_TINY = SHARED / "fixtures" / "reference-tiny"
REFERENCE_MODEL = REFERENCE_TINY / "model"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"ground truth missing: {path} (the tests read ../shared beside the checkout)")
    return path


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    return _require(SPEC)


@pytest.fixture(scope="session")
def reference_model_dir() -> Path:
    return _require(REFERENCE_MODEL)


@pytest.fixture(scope="session")
def golden() -> dict:
    with np.load(_require(REFERENCE_TINY / "golden_A.npz")) as data:
        return {key: data[key] for key in data.files}
