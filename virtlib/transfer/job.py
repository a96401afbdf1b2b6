"""What the upload and download engines share: the session, the label, the meter, limits."""

from __future__ import annotations

from dataclasses import dataclass

from virtlib.errors import TransferError
from virtlib.transfer.progress import Meter
from virtlib.transfer.sftp import SftpClient, SftpConnectionError, SftpStatusError

# Bytes of file data in flight (sent, not yet acknowledged): like OpenSSH's sftp
# (64 requests of 32 KiB).  Enough to keep any window full; a TCG guest's own
# CPU is the limit long before.
BUDGET = 2 << 20
# Files opened ahead of the one being sent: per-file round trips overlap.
FILES_AHEAD = 32


@dataclass
class Job:
    """One copy in progress."""

    sftp: SftpClient
    label: str  # "VM name" (or host:port) for messages
    meter: Meter

    def error(self, what: str, path: str, exc: BaseException | None = None) -> TransferError:
        """A TransferError naming the VM and the path: ``VM x: cannot ... (reason): path``."""
        reason = ""
        if isinstance(exc, OSError):
            reason = f" ({exc.strerror or exc})"
        elif isinstance(exc, SftpStatusError):
            reason = f" ({exc})"
        elif isinstance(exc, SftpConnectionError):
            reason = f": {exc}"
        return TransferError(f"{self.label}: {what}{reason}", path)
