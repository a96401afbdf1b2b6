"""Copies through OpenSSH's ssh and virtlib's SFTP client against a paramiko SFTP server.

The server (tests/unit/fake_sftp.py) serves a temporary directory; the real
``ssh`` binary logs in with a password through askpass and checks the host
key against a known_hosts file, as copies to a guest do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from fake_sftp import HOST, PASSWORD, USERNAME, FakeSftpServer, SilentServer

from virtlib import transfer
from virtlib.errors import (
    LoginAuthenticationError,
    LoginError,
    LoginHostKeyError,
    LoginTimeoutError,
    TransferError,
)
from virtlib.transfer import sshproc
from virtlib.transfer.progress import TransferProgress, human_bytes


@pytest.fixture(scope="module")
def host_keys() -> tuple[paramiko.PKey, paramiko.PKey]:
    return paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()


@pytest.fixture
def guest_root(tmp_path: Path) -> Path:
    root = tmp_path / "guest"
    root.mkdir()
    return root


@pytest.fixture
def server(
    guest_root: Path, host_keys: tuple[paramiko.PKey, paramiko.PKey]
) -> Iterator[FakeSftpServer]:
    srv = FakeSftpServer(guest_root, host_keys[0])
    yield srv
    srv.close()


@pytest.fixture
def target(server: FakeSftpServer, tmp_path: Path) -> transfer.Target:
    return transfer.Target(
        host=HOST,
        port=server.port,
        username=USERNAME,
        password=PASSWORD,
        known_hosts=tmp_path / "known_hosts",
        host_key_policy="accept-new",
        timeout=20,
        vm="testvm",
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digests(root: Path) -> dict[str, tuple[str, int]]:
    """Relative path -> (sha256 or 'dir', mode) for everything under ``root``."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        kind = "dir" if path.is_dir() else digest(path)
        out[rel] = (kind, path.stat().st_mode & 0o7777)
    return out


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "empty").write_bytes(b"")
    (root / "big.bin").write_bytes(os.urandom(700_000))
    (root / "sub" / "x.sh").write_bytes(b"#!/bin/sh\necho x\n")
    (root / "sub" / "x.sh").chmod(0o751)
    (root / "sub" / "secret").write_bytes(b"s")
    (root / "sub" / "secret").chmod(0o600)
    for i in range(40):
        (root / "sub" / "deeper" / f"f{i:02d}").write_bytes(os.urandom(i * 37))


# --- files and trees ------------------------------------------------------------------
def test_file_round_trip_keeps_content_and_mode(
    target: transfer.Target, guest_root: Path, tmp_path: Path
) -> None:
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    src.chmod(0o640)
    transfer.copy_files_to(target, str(src), "/payload.bin")
    assert digest(guest_root / "payload.bin") == digest(src)
    assert (guest_root / "payload.bin").stat().st_mode & 0o7777 == 0o640
    back = tmp_path / "back.bin"
    transfer.copy_files_from(target, "/payload.bin", str(back))
    assert digest(back) == digest(src)
    assert back.stat().st_mode & 0o7777 == 0o640


def test_into_an_existing_directory_keeps_the_name(
    target: transfer.Target, guest_root: Path, tmp_path: Path
) -> None:
    (guest_root / "dir").mkdir()
    src = tmp_path / "note.txt"
    src.write_text("hello\n")
    transfer.copy_files_to(target, str(src), "/dir")
    assert (guest_root / "dir" / "note.txt").read_text() == "hello\n"
    here = tmp_path / "here"
    here.mkdir()
    transfer.copy_files_from(target, "/dir/note.txt", str(here))
    assert (here / "note.txt").read_text() == "hello\n"


def test_empty_file_both_ways(target: transfer.Target, guest_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.write_bytes(b"")
    transfer.copy_files_to(target, str(src), "/empty")
    assert (guest_root / "empty").read_bytes() == b""
    back = tmp_path / "empty-back"
    transfer.copy_files_from(target, "/empty", str(back))
    assert back.exists() and back.read_bytes() == b""


def test_tree_round_trip(target: transfer.Target, guest_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    make_tree(src)
    transfer.copy_files_to(target, str(src), "/tree")
    assert tree_digests(guest_root / "tree") == tree_digests(src)
    back = tmp_path / "back"
    transfer.copy_files_from(target, "/tree", str(back))
    assert tree_digests(back) == tree_digests(src)


def test_tree_merges_into_an_existing_directory(
    target: transfer.Target, guest_root: Path, tmp_path: Path
) -> None:
    src = tmp_path / "tree"
    make_tree(src)
    (guest_root / "tree" / "sub").mkdir(parents=True)
    (guest_root / "tree" / "keep").write_text("kept")
    transfer.copy_files_to(target, str(src), "/")  # into /, where tree/ exists: merged
    assert not (guest_root / "tree" / "tree").exists()
    assert (guest_root / "tree" / "keep").read_text() == "kept"
    assert digest(guest_root / "tree" / "sub" / "x.sh") == digest(src / "sub" / "x.sh")


# --- symbolic links: followed, or refused before anything is copied ---------------------------
def test_links_are_followed_to_the_guest(
    target: transfer.Target, guest_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "in-linked-dir").write_text("deep")
    src = tmp_path / "tree"
    src.mkdir()
    (src / "real").write_text("content")
    (src / "to-file").symlink_to("real")
    (src / "to-dir").symlink_to(outside)
    transfer.copy_files_to(target, str(src), "/tree")
    copied = guest_root / "tree"
    assert not (copied / "to-file").is_symlink()
    assert (copied / "to-file").read_text() == "content"
    assert (copied / "to-dir").is_dir() and not (copied / "to-dir").is_symlink()
    assert (copied / "to-dir" / "in-linked-dir").read_text() == "deep"


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_bad_links_to_the_guest_are_refused_before_copying(
    target: transfer.Target, guest_root: Path, tmp_path: Path, kind: str
) -> None:
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_text("a")
    if kind == "dangling":
        (src / "sub" / "bad").symlink_to(tmp_path / "nowhere")
    else:
        (src / "sub" / "bad").symlink_to(src)
    with pytest.raises(TransferError) as err:
        transfer.copy_files_to(target, str(src), "/tree")
    assert err.value.path == str(src / "sub" / "bad")
    assert "testvm" in str(err.value)
    assert ("points nowhere" if kind == "dangling" else "loop") in str(err.value)
    assert not (guest_root / "tree").exists()


def test_fifo_is_refused(target: transfer.Target, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    src.mkdir()
    os.mkfifo(src / "pipe")
    with pytest.raises(TransferError, match="FIFO"):
        transfer.copy_files_to(target, str(src), "/tree")


def test_links_are_followed_from_the_guest(
    target: transfer.Target, guest_root: Path, tmp_path: Path
) -> None:
    tree = guest_root / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_text("in d")
    (tree / "real").write_text("content")
    (tree / "to-file").symlink_to("real")
    (tree / "to-dir").symlink_to("d")
    back = tmp_path / "back"
    transfer.copy_files_from(target, "/tree", str(back))
    assert not (back / "to-file").is_symlink() and (back / "to-file").read_text() == "content"
    assert (back / "to-dir" / "f").read_text() == "in d"


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_bad_links_from_the_guest_are_refused_before_copying(
    target: transfer.Target, guest_root: Path, tmp_path: Path, kind: str
) -> None:
    tree = guest_root / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a").write_text("a")
    (tree / "sub" / "bad").symlink_to("/nowhere" if kind == "dangling" else "..")
    back = tmp_path / "back"
    with pytest.raises(TransferError) as err:
        transfer.copy_files_from(target, "/tree", str(back))
    assert err.value.path == "/tree/sub/bad"
    assert ("points nowhere" if kind == "dangling" else "loop") in str(err.value)
    assert not back.exists()


# --- errors -------------------------------------------------------------------------------
def test_missing_paths(target: transfer.Target, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="no such file or directory on the host"):
        transfer.copy_files_to(target, str(tmp_path / "nope"), "/x")
    with pytest.raises(TransferError, match="no such file or directory on the guest") as err:
        transfer.copy_files_from(target, "/nope", str(tmp_path / "x"))
    assert err.value.path == "/nope"
    assert not (tmp_path / "x").exists()


def test_refused_write_names_vm_and_path(
    target: transfer.Target, server: FakeSftpServer, guest_root: Path, tmp_path: Path
) -> None:
    (guest_root / "ro").mkdir()
    server.readonly = "/ro"
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(TransferError) as err:
        transfer.copy_files_to(target, str(src), "/ro/f")
    assert err.value.path == "/ro/f"
    assert "VM testvm" in str(err.value) and "permission denied" in str(err.value)


def test_cut_connection_fails_and_removes_partial_host_files(
    target: transfer.Target, server: FakeSftpServer, guest_root: Path, tmp_path: Path
) -> None:
    (guest_root / "big").write_bytes(os.urandom(4 * 1024 * 1024))
    server.cut_after = 1024 * 1024
    dest = tmp_path / "big"
    with pytest.raises(TransferError) as err:
        transfer.copy_files_from(target, "/big", str(dest))
    assert "interrupted" in str(err.value) and err.value.path == "/big"
    assert not dest.exists()


def test_silent_guest_mid_copy_fails_after_the_timeout(
    target: transfer.Target,
    server: FakeSftpServer,
    tmp_path: Path,
) -> None:
    target = transfer.Target(**{**target.__dict__, "timeout": 1.5})
    server.stall_after = 256 * 1024
    src = tmp_path / "big"
    src.write_bytes(os.urandom(2 * 1024 * 1024))
    started = time.monotonic()
    with pytest.raises(TransferError, match=r"no answer from the guest for 1\.5 s") as err:
        transfer.copy_files_to(target, str(src), "/big")
    assert time.monotonic() - started < 10
    assert err.value.path == "/big"


# --- login and host keys ------------------------------------------------------------------------
def test_accept_new_records_the_key_then_strict_accepts_it(
    target: transfer.Target, host_keys: tuple[paramiko.PKey, paramiko.PKey], tmp_path: Path
) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    transfer.copy_files_to(target, str(src), "/f")
    known = paramiko.HostKeys(str(target.known_hosts))
    entry = known.lookup(f"[{HOST}]:{target.port}")
    assert entry is not None and entry[host_keys[0].get_name()] == host_keys[0]
    strict = transfer.Target(**{**target.__dict__, "host_key_policy": "strict"})
    transfer.copy_files_to(strict, str(src), "/g")


def test_strict_refuses_an_unknown_host(target: transfer.Target, tmp_path: Path) -> None:
    strict = transfer.Target(**{**target.__dict__, "host_key_policy": "strict"})
    with pytest.raises(LoginHostKeyError, match="policy strict"):
        transfer.copy_files_to(strict, str(tmp_path), "/x")


def test_a_changed_host_key_is_refused(
    target: transfer.Target,
    server: FakeSftpServer,
    host_keys: tuple[paramiko.PKey, paramiko.PKey],
    tmp_path: Path,
) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    transfer.copy_files_to(target, str(src), "/f")
    server.host_key = host_keys[1]
    with pytest.raises(LoginHostKeyError, match="changed"):
        transfer.copy_files_to(target, str(src), "/f")


def test_wrong_password(target: transfer.Target, tmp_path: Path) -> None:
    wrong = transfer.Target(**{**target.__dict__, "password": "nope"})
    with pytest.raises(LoginAuthenticationError) as err:
        transfer.copy_files_to(wrong, str(tmp_path), "/x")
    assert not isinstance(err.value, LoginHostKeyError)
    assert "nope" not in str(err.value)


def test_silent_server_is_a_login_timeout(tmp_path: Path) -> None:
    silent = SilentServer()
    try:
        target = transfer.Target(
            HOST, silent.port, USERNAME, PASSWORD, tmp_path / "kh", "accept-new", 2, vm="v"
        )
        started = time.monotonic()
        with pytest.raises(LoginTimeoutError):
            transfer.copy_files_from(target, "/x", str(tmp_path / "x"))
        assert time.monotonic() - started < 8
    finally:
        silent.close()


def test_ssh_command_line_carries_the_policy_not_the_password(tmp_path: Path) -> None:
    endpoint = sshproc.Endpoint(HOST, 2222, "root", "s3cret", tmp_path / "kh", "strict", 10)
    argv = sshproc.ssh_argv(endpoint)
    assert "StrictHostKeyChecking=yes" in argv
    assert f"UserKnownHostsFile={tmp_path / 'kh'}" in argv
    assert "GlobalKnownHostsFile=/dev/null" in argv and "-F" in argv
    assert not any("s3cret" in a for a in argv)
    accept = sshproc.Endpoint(HOST, 2222, "root", "s3cret", tmp_path / "kh", "accept-new", 10)
    assert "StrictHostKeyChecking=accept-new" in sshproc.ssh_argv(accept)
    with pytest.raises(LoginError, match="unknown host key policy"):
        sshproc.ssh_argv(sshproc.Endpoint(HOST, 1, "r", "p", tmp_path / "kh", "trust-all", 1))


# --- progress -------------------------------------------------------------------------------------
def test_progress_reaches_a_watcher_and_the_log(
    target: transfer.Target, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "tree"
    make_tree(src)
    seen: list[TransferProgress] = []
    with caplog.at_level(logging.INFO, logger="virtlib.transfer"), transfer.watching(seen.append):
        transfer.copy_files_to(target, str(src), "/tree", verbose=True)
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert seen[-1].finished and seen[-1].done_bytes == total == seen[-1].total_bytes
    assert seen[-1].done_files == seen[-1].total_files == 45
    assert [p.done_bytes for p in seen] == sorted(p.done_bytes for p in seen)
    summary = [r.getMessage() for r in caplog.records if "copied" in r.getMessage()]
    assert summary and "VM testvm" in summary[0] and "/s)" in summary[0]
    seen.clear()
    transfer.copy_files_to(target, str(src), "/tree2")  # outside the block: nobody watches
    assert not seen


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(16 * 1024 * 1024) == "16.0 MiB"
    assert human_bytes(3 * 1024**4) == "3072.0 GiB"


@pytest.mark.parametrize(
    ("said", "status", "expected"),
    [
        (
            "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n"
            "Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.\n"
            "Host key verification failed.",
            255,
            LoginHostKeyError,
        ),
        (
            "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict "
            "checking.\nHost key verification failed.",
            255,
            LoginHostKeyError,
        ),
        ("root@127.0.0.1: Permission denied (publickey,password).", 255, LoginAuthenticationError),
        ("Connection timed out during banner exchange", 255, LoginTimeoutError),
        ("", None, LoginTimeoutError),
        ("ssh: connect to host 127.0.0.1 port 2222: Connection refused", 255, LoginError),
    ],
)
def test_ssh_failures_map_to_login_errors(
    said: str, status: int | None, expected: type[LoginError], tmp_path: Path
) -> None:
    endpoint = sshproc.Endpoint(HOST, 2222, "root", "pw", tmp_path / "kh", "strict", 10)
    error = sshproc.classify_login_failure(said, status, "SSH to root@127.0.0.1:2222", endpoint)
    assert type(error) is expected or (expected is LoginError and isinstance(error, LoginError))
    assert "SSH to root@127.0.0.1:2222" in str(error)
    if "changed" in said:
        assert "changed" in str(error)
