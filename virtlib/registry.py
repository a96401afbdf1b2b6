"""Which backend serves which ``vm_type``: the only place that knows the list.

Built-in backends are dotted paths imported on first use (a backend's
dependencies load only when it is asked for); third-party backends register
through the ``virtlib.backends`` entry-point group, each entry pointing at a
BaseVM subclass.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from virtlib.errors import VMParamsError
from virtlib.params import Params

if TYPE_CHECKING:
    from virtlib.contract import BaseVM
    from virtlib.image_types import ImageTool

ENTRY_POINT_GROUP = "virtlib.backends"
DEFAULT_VM_TYPE = "libvirt"

BUILTIN_BACKENDS: dict[str, str] = {
    "libvirt": "virtlib.backends.libvirt.domain:LibvirtVM",
}
#: The image driver behind virtlib.images (qemu-img, run as argv lists).
IMAGE_DRIVER = "virtlib.backends.qemu_img:QemuImg"


def known_backends() -> dict[str, str]:
    """Every vm_type and where its class lives (built-ins win over plugins of the same name)."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return found | BUILTIN_BACKENDS


def backend_class(vm_type: str) -> type[BaseVM]:
    """The BaseVM subclass for ``vm_type``; an unknown name lists the known ones."""
    from virtlib.contract import BaseVM

    backends = known_backends()
    if vm_type not in backends:
        raise VMParamsError(
            f"unknown vm_type {vm_type!r}; known vm_types: {', '.join(sorted(backends))}"
        )
    module_name, _, attr = backends[vm_type].partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, BaseVM)):
        raise VMParamsError(f"backend {vm_type!r} ({backends[vm_type]}) is not a BaseVM subclass")
    return cls


def new_vm(name: str, params: dict[str, str], root_dir: str | Path = ".") -> BaseVM:
    """An unstarted VM of the class ``params["vm_type"]`` names (default ``libvirt``).

    ``vm.create()`` starts it.
    """
    params = params if isinstance(params, Params) else Params(params)
    return backend_class(params.get("vm_type", DEFAULT_VM_TYPE))(name, params, root_dir)


def image_tool(binary: str = "qemu-img") -> ImageTool:
    """The image driver (:data:`IMAGE_DRIVER`) for ``binary``.

    :raises VMParamsError: the binary is not found.
    """
    module_name, _, attr = IMAGE_DRIVER.partition(":")
    tool: ImageTool = getattr(importlib.import_module(module_name), attr)(binary)
    return tool
