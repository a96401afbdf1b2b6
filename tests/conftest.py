"""Shared test settings: every test run keeps virtlib's private files in its own directory."""

from __future__ import annotations

import os
import tempfile

# Reservations (MACs, ports) and per-VM directories of this run live apart from a user's.
os.environ.setdefault("VIRTLIB_RUN_DIR", tempfile.mkdtemp(prefix="virtlib-tests-"))
