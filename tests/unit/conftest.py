"""Shared fixtures of the unit tests: every test gets its own private run directory."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point VIRTLIB_RUN_DIR at a fresh directory so MAC/port tables and VM dirs land there."""
    path = tmp_path / "run"
    monkeypatch.setenv("VIRTLIB_RUN_DIR", str(path))
    return path
