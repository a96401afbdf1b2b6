"""Copying files to and from a VM's guest, written once for every backend (SFTP through
:mod:`virtlib.transfer`); mixed into :class:`~virtlib.contract.BaseVM`."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from virtlib import transfer
from virtlib.errors import (
    VMParamsError,
)

if TYPE_CHECKING:
    pass

from virtlib.vmlogin import LoginOperations

log = logging.getLogger("virtlib.contract")  # BaseVM's behaviour logs under one name


class FileCopies(LoginOperations):
    """BaseVM's file copies (see the module docstring)."""

    def copy_files_to(
        self,
        host_path: str,
        guest_path: str,
        nic_index: int = 0,
        limit: str | bool = "",
        verbose: bool | float = False,
        timeout: float = 600,
        username: str | None = None,
        password: str | None = None,
        filesize: float | None = None,
    ) -> None:
        """Copy files or directories from the host to the guest (SFTP).

        :param limit: avocado-vt's speed limit (scp's ``-l``, Kbit/s): checked, but
            SFTP transfers are not throttled (a warning says so).
        :param verbose: log progress (bytes, rate) at INFO, each file at DEBUG.
        :param timeout: seconds the transfer may stall.
        :param username, password: instead of the params' ones.
        :param filesize: the size in MB, to log the throughput (avocado-vt's).
        :raises TransferError: a path is wrong or the transfer failed.
        :raises LoginError: the guest cannot be reached.
        :raises VMParamsError: ``limit`` is not a number of Kbit/s.
        """
        verbose, timeout = self._transfer_options("copy_files_to", limit, verbose, timeout)
        target = self._transfer_target(nic_index, timeout, username, password)
        with self._timed_transfer(f"{host_path} -> {self.name}:{guest_path}", filesize):
            transfer.copy_files_to(target, host_path, guest_path, verbose=verbose)

    def copy_files_from(
        self,
        guest_path: str,
        host_path: str,
        nic_index: int = 0,
        limit: str | bool = "",
        verbose: bool | float = False,
        timeout: float = 600,
        username: str | None = None,
        password: str | None = None,
        filesize: float | None = None,
    ) -> None:
        """Copy files or directories from the guest to the host (SFTP).

        The parameters are copy_files_to()'s.

        :raises TransferError: a path is wrong or the transfer failed.
        :raises LoginError: the guest cannot be reached.
        :raises VMParamsError: ``limit`` is not a number of Kbit/s.
        """
        verbose, timeout = self._transfer_options("copy_files_from", limit, verbose, timeout)
        target = self._transfer_target(nic_index, timeout, username, password)
        with self._timed_transfer(f"{self.name}:{guest_path} -> {host_path}", filesize):
            transfer.copy_files_from(target, guest_path, host_path, verbose=verbose)

    def _transfer_options(
        self, operation: str, limit: str | bool, verbose: bool | float, timeout: float
    ) -> tuple[bool, float]:
        """(verbose, timeout), reading the seed's positional order when ``limit`` is a bool."""
        if isinstance(limit, bool):  # the seed's copy_files_to(h, g, nic_index, verbose, timeout)
            if not isinstance(verbose, bool):
                timeout = float(verbose)
            return limit, timeout
        text = str(limit).strip()
        if text and not (text.isdigit() and int(text) > 0):
            raise VMParamsError(
                f"VM {self.name!r}: {operation}: limit must be a speed in Kbit/s, not {limit!r}"
            )
        if text:
            log.warning("%s: %s: SFTP transfers are not throttled (limit=%s)", self.name,
                        operation, text)  # fmt: skip
        return bool(verbose), timeout

    @contextlib.contextmanager
    def _timed_transfer(self, what: str, filesize: float | None) -> Iterator[None]:
        """Log the time a transfer took and, with ``filesize`` (MB), its throughput."""
        start = time.monotonic()
        yield
        elapsed = max(time.monotonic() - start, 1e-6)
        if filesize is not None:
            log.info("copied %s, estimated throughput: %.2f MB/s", what, filesize / elapsed)
        else:
            log.info("copied %s, elapsed time: %.2f s", what, elapsed)

    def _transfer_target(
        self,
        nic_index: int,
        timeout: float,
        username: str | None = None,
        password: str | None = None,
    ) -> transfer.Target:
        login = self.spec.login
        where = self.guest_route(login.file_transfer_port, nic_index)
        return transfer.Target(
            host=where.host,
            port=where.port,
            via=where.via,
            username=username or login.username,
            password=password or login.password,
            known_hosts=self.known_hosts_file(),
            host_key_policy=login.host_key_policy,
            timeout=timeout,
            vm=self.name,
        )
