"""What a migration reports, whatever the backend: progress samples and the result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MigrationProgress:
    """One look at the running job."""

    elapsed_s: float
    data_total: int
    data_processed: int
    data_remaining: int
    memory_dirty_rate: int  # pages/s
    iteration: int

    @property
    def percent(self) -> float:
        if self.data_total <= 0:
            return 0.0
        return 100.0 * self.data_processed / max(self.data_total, 1)


@dataclass
class MigrationResult:
    """What a finished migration cost."""

    source_uri: str
    dest_uri: str
    total_time_ms: int
    downtime_ms: int | None
    data_transferred: int
    wall_time_s: float
    progress: list[MigrationProgress] = field(default_factory=list)
    state_hashes: tuple[str, str] | None = None


ProgressCallback = Callable[[MigrationProgress], None]
