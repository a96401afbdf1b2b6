"""copy_files_to / copy_files_from against the bundled guest: content proven by checksums.

The guest computes its own sha256 of what arrived (busybox ``sha256sum``);
links are followed and bad links refused as virtlib.transfer documents; a copy
cut by a guest reset fails with a clear error instead of hanging.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

import virtlib
from virtlib import transfer


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def host_sums(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (links followed)."""
    sums = {}
    for top, _dirs, files in os.walk(root, followlinks=True):
        for name in files:
            path = Path(top) / name
            sums[str(path.relative_to(root))] = sha256(path)
    return sums


def guest_sums(session: virtlib.ShellSession, root: str) -> dict[str, str]:
    out = session.cmd(f"cd {root} && find . -type f -exec sha256sum {{}} +")
    sums = {}
    for line in out.splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.removeprefix("./")] = digest
    return sums


@pytest.fixture
def ssh(vm: virtlib.BaseVM) -> virtlib.ShellSession:
    return vm.wait_for_login(timeout=120)


def test_tree_to_the_guest_and_back(
    vm: virtlib.BaseVM, ssh: virtlib.ShellSession, tmp_path: Path
) -> None:
    src = tmp_path / "payload"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "empty-dir").mkdir()
    (src / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    (src / "empty").write_bytes(b"")
    (src / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "sub" / "run.sh").chmod(0o750)
    for i in range(60):
        (src / "sub" / "deep" / f"small{i:02d}").write_bytes(os.urandom(100 + i))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "via-dir-link").write_text("through a directory link\n")
    (src / "file-link").symlink_to("big.bin")
    (src / "dir-link").symlink_to(outside)

    vm.copy_files_to(str(src), "/tmp/")
    assert guest_sums(ssh, "/tmp/payload") == host_sums(src)
    # Links arrive as what they point to (followed), not as links.
    assert ssh.cmd_status("test -L /tmp/payload/file-link") != 0
    assert ssh.cmd_status("test -d /tmp/payload/dir-link -a ! -L /tmp/payload/dir-link") == 0
    assert ssh.cmd_status("test -d /tmp/payload/empty-dir") == 0
    assert ssh.cmd("stat -c %a /tmp/payload/sub/run.sh").strip() == "750"
    assert ssh.cmd("stat -c %s /tmp/payload/empty").strip() == "0"

    back = tmp_path / "back"
    back.mkdir()
    vm.copy_files_from("/tmp/payload", str(back))
    assert host_sums(back / "payload") == host_sums(src)
    assert (back / "payload" / "empty").stat().st_size == 0
    assert (back / "payload" / "sub" / "run.sh").stat().st_mode & 0o777 == 0o750


def test_single_files_and_empty_files(
    vm: virtlib.BaseVM, ssh: virtlib.ShellSession, tmp_path: Path
) -> None:
    one = tmp_path / "one.bin"
    one.write_bytes(os.urandom(3_000_000))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    vm.copy_files_to(str(one), "/tmp/renamed.bin")
    vm.copy_files_to(str(empty), "/tmp/")
    assert ssh.cmd("sha256sum /tmp/renamed.bin").split()[0] == sha256(one)
    assert ssh.cmd("stat -c %s /tmp/empty").strip() == "0"
    ssh.cmd("dd if=/dev/urandom of=/tmp/made-here bs=1000 count=1500 2>/dev/null; : > /tmp/e2")
    vm.copy_files_from("/tmp/made-here", str(tmp_path / "made-here"))
    vm.copy_files_from("/tmp/e2", str(tmp_path))
    assert sha256(tmp_path / "made-here") == ssh.cmd("sha256sum /tmp/made-here").split()[0]
    assert (tmp_path / "e2").read_bytes() == b""


def test_guest_links_followed_and_bad_ones_refused(
    vm: virtlib.BaseVM, ssh: virtlib.ShellSession, tmp_path: Path
) -> None:
    ssh.cmd(
        "mkdir -p /tmp/g/d && echo inside > /tmp/g/d/f && echo top > /tmp/g/t && "
        "ln -s t /tmp/g/lt && ln -s d /tmp/g/ld"
    )
    vm.copy_files_from("/tmp/g", str(tmp_path))
    assert (tmp_path / "g" / "lt").read_text() == "top\n" and not (
        tmp_path / "g" / "lt"
    ).is_symlink()
    assert (tmp_path / "g" / "ld" / "f").read_text() == "inside\n"

    for name, link in (("dangling", "/nowhere/at/all"), ("loop", "..")):
        ssh.cmd(
            f"mkdir -p /tmp/{name}/sub && echo x > /tmp/{name}/x && "
            f"ln -s {link} /tmp/{name}/sub/bad"
        )
        with pytest.raises(virtlib.TransferError) as err:
            vm.copy_files_from(f"/tmp/{name}", str(tmp_path))
        assert err.value.path == f"/tmp/{name}/sub/bad"
        assert not (tmp_path / name).exists()  # refused before anything was written


def test_a_reset_during_a_copy_fails_clearly(vm: virtlib.BaseVM, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 * 1024 * 1024))
    started = threading.Event()
    outcome: list[BaseException | None] = []

    def copy() -> None:
        def seen(progress: transfer.TransferProgress) -> None:
            if progress.done_bytes >= 1024 * 1024:
                started.set()

        try:
            with transfer.watching(seen):
                vm.copy_files_to(str(big), "/tmp/big.bin", timeout=120)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)
        started.set()

    worker = threading.Thread(target=copy, daemon=True)
    begun = time.monotonic()
    worker.start()
    assert started.wait(60), "the copy never started"
    vm.reboot(method="system_reset", timeout=120).close()
    worker.join(90)
    assert not worker.is_alive(), "the copy hung after the guest reset"
    error = outcome[0]
    assert isinstance(error, virtlib.TransferError | virtlib.LoginError), error
    assert "/tmp/big.bin" in str(error)
    assert "interrupted" in str(error)
    assert time.monotonic() - begun < 100
