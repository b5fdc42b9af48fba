"""Fixtures shared by several test files."""

from __future__ import annotations

from pathlib import Path

import pytest
from workflow_helpers import carried_subset


@pytest.fixture
def gpu_host_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder is a fresh one holding the GPU-host configs' stand-in dataset."""
    carried_subset(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path
