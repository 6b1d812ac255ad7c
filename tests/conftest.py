"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """The Omniglot zips: $PCMETA_DATA_DIR, else ../shared/data/omniglot. Missing data fails (not skips)."""
    d = Path(os.environ.get("PCMETA_DATA_DIR", SHARED / "data" / "omniglot"))
    if not (d / "images_background.zip").exists() and not (d / "images_background").is_dir():
        pytest.fail(f"Omniglot data not found in {d}: set PCMETA_DATA_DIR or place the zips in ../shared/data/omniglot")
    return d


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The authors' released weights (../shared/reference)."""
    d = SHARED / "reference"
    if not d.is_dir():
        pytest.fail(f"reference weights not found in {d}")
    return d


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread: small per-step tensor work is many times faster so on the shared 2-core machines
    (test_snn.py: 115 s with the default threads, 11 s with one)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
