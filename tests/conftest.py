"""Shared test settings: every test run keeps virtlib's private files in its own directory."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

# Reservations (MACs, ports) and per-VM directories of this run live apart from a user's.
os.environ.setdefault("VIRTLIB_RUN_DIR", tempfile.mkdtemp(prefix="virtlib-tests-"))


# --- keeping a module's group on one worker ---------------------------------------------------
# A module marked ``pytestmark = pytest.mark.xdist_group("name")`` shares one slow VM (the
# Debian guest) between its tests, and modules of one group share it too.  xdist's own
# loadgroup puts the group into the worker's node ids, which pytest >= 9.2 no longer lets it
# do (node ids are structured): the marks were ignored and the Debian modules ran on both
# workers at once.  The controller reads each module's mark itself instead.
_GROUP_MARK = re.compile(
    r"""^pytestmark\s*=\s*pytest\.mark\.xdist_group\(\s*["']([^"']+)["']""", re.M
)


def _module_group(root: Path, module: str, cache: dict[str, str | None]) -> str | None:
    if module not in cache:
        try:
            found = _GROUP_MARK.search((root / module).read_text())
        except OSError:
            found = None
        cache[module] = found.group(1) if found else None
    return cache[module]


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    root, cache = config.rootpath, {}

    class ModuleGroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        """loadgroup, the group read from the module's mark (one scope per other test)."""

        def _split_scope(self, nodeid: str) -> str:
            group = _module_group(root, nodeid.split("::", 1)[0], cache)
            return f"group:{group}" if group else nodeid

    return ModuleGroupScheduling(config, log)
