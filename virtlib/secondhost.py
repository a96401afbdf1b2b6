"""A second libvirt host on this machine: the public name of the libvirt backend's SecondHost.

    from virtlib.secondhost import SecondHost

    with SecondHost.start() as host2:   # its own libvirtd in a mount namespace (root)
        vm.params["migration_dest_uri"] = host2.uri
        vm.migrate()

The code lives in ``virtlib.backends.libvirt.secondhost`` (it talks to
libvirt); this module only names it, loading it on first use.
``python -m virtlib.secondhost start|stop <state dir>`` works from a shell.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

_IMPLEMENTATION = "virtlib.backends.libvirt.secondhost"


def __getattr__(name: str) -> Any:
    return getattr(importlib.import_module(_IMPLEMENTATION), name)


if __name__ == "__main__":
    sys.exit(importlib.import_module(_IMPLEMENTATION).main(sys.argv[1:]))
