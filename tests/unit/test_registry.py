"""The backend registry: built-in libvirt, unknown vm_types, plugins, abstract BaseVM."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

import virtlib
from virtlib import BaseVM, Params, VMParamsError, registry


class FakeVM(BaseVM):
    """A complete (if useless) third-party backend."""

    BACKEND = "fake"

    def create(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    def is_alive(self) -> bool:
        return False

    def is_dead(self) -> bool:
        return True

    def get_address(self, index: int = 0) -> str:
        return "127.0.0.1"

    def get_port(self, port: int, nic_index: int = 0) -> int:
        return port

    def clone(self, name: str | None = None, **params: Any) -> BaseVM:
        return FakeVM(name or self.name, self.params)

    def destroy(self, gracefully: bool = True, free_mac_addresses: bool = True) -> None:
        pass

    def migrate(self, *args: Any, **kwargs: Any) -> None:
        pass

    def reboot(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def send_key(self, keystr: str) -> None:
        pass

    def save_to_file(self, path: str) -> None:
        pass

    def needs_restart(self, name: str, params: dict[str, str], basedir: str | Path) -> bool:
        return False


class NotAVM:
    """Something an entry point might wrongly point at."""


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, **targets: str) -> None:
    eps = [EntryPoint(name, value, registry.ENTRY_POINT_GROUP) for name, value in targets.items()]

    def fake(*, group: str) -> list[EntryPoint]:
        return eps if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", fake)


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"\0" * 16)
    return path


def test_new_vm_libvirt_returns_unstarted_libvirt_vm(kernel: Path, run_dir: Path) -> None:
    from virtlib.backends.libvirt.domain import LibvirtVM

    params = {"vm_type": "libvirt", "connect_uri": "test:///default", "kernel": str(kernel)}
    vm = virtlib.new_vm("vm1", params)
    assert type(vm) is LibvirtVM
    assert isinstance(vm, BaseVM)
    assert vm.name == "vm1"
    assert isinstance(vm.params, Params)
    assert vm.params["connect_uri"] == "test:///default"
    assert vm.spec.kernel == kernel
    assert vm.serial_console is None
    # nothing was reserved or written for it yet
    assert not run_dir.exists() or not any(run_dir.iterdir())


def test_default_vm_type_is_libvirt(kernel: Path) -> None:
    from virtlib.backends.libvirt.domain import LibvirtVM

    vm = virtlib.new_vm("vm1", Params(connect_uri="test:///default", kernel=str(kernel)))
    assert type(vm) is LibvirtVM


def test_new_vm_passes_root_dir(tmp_path: Path, kernel: Path) -> None:
    vm = virtlib.new_vm(
        "vm1",
        {"connect_uri": "test:///default", "kernel": kernel.name},
        root_dir=tmp_path,
    )
    assert vm.spec.kernel == tmp_path / kernel.name


def test_new_vm_bad_params_fail_at_construction(kernel: Path) -> None:
    with pytest.raises(VMParamsError, match="'mem'"):
        virtlib.new_vm("vm1", {"connect_uri": "test:///default", "kernel": str(kernel), "mem": "0"})


def test_backend_class_libvirt() -> None:
    from virtlib.backends.libvirt.domain import LibvirtVM

    assert virtlib.backend_class("libvirt") is LibvirtVM
    assert "libvirt" in virtlib.known_backends()


def test_unknown_vm_type_lists_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, fake=f"{__name__}:FakeVM")
    with pytest.raises(VMParamsError) as info:
        virtlib.new_vm("vm1", {"vm_type": "kvm"})
    message = str(info.value)
    assert "'kvm'" in message
    assert "libvirt" in message
    assert "fake" in message


def test_third_party_backend_through_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, fake=f"{__name__}:FakeVM")
    assert virtlib.known_backends()["fake"] == f"{__name__}:FakeVM"
    assert virtlib.backend_class("fake") is FakeVM
    vm = virtlib.new_vm("plug", {"vm_type": "fake"})
    assert type(vm) is FakeVM
    assert vm.name == "plug"
    assert vm.is_dead()


def test_builtin_wins_over_plugin_of_the_same_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlib.backends.libvirt.domain import LibvirtVM

    _fake_entry_points(monkeypatch, libvirt=f"{__name__}:FakeVM")
    assert virtlib.backend_class("libvirt") is LibvirtVM


def test_plugin_that_is_not_a_basevm_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, bogus=f"{__name__}:NotAVM")
    with pytest.raises(VMParamsError, match="bogus"):
        virtlib.backend_class("bogus")


def test_basevm_itself_cannot_be_instantiated() -> None:
    with pytest.raises(TypeError):
        BaseVM("vm1", Params())  # type: ignore[abstract]


def test_backend_missing_abstract_methods_cannot_be_instantiated() -> None:
    class Incomplete(BaseVM):
        def is_alive(self) -> bool:
            return False

        def is_dead(self) -> bool:
            return True

    with pytest.raises(TypeError, match="abstract"):
        Incomplete("vm1", Params())  # type: ignore[abstract]

    # one missing method is enough
    class AlmostComplete(FakeVM):
        pass

    del_name = "needs_restart"
    namespace = {k: v for k, v in vars(FakeVM).items() if k != del_name}
    Partial = type("Partial", (BaseVM,), namespace)
    with pytest.raises(TypeError, match=del_name):
        Partial("vm1", Params())
    assert isinstance(AlmostComplete("vm1", Params()), BaseVM)
