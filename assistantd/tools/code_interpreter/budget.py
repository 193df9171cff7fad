"""The memory budget shared by every sandbox of this server (``code_interpreter_memory_budget_mb``).

Each sandbox's cgroup caps it at ``memory_mb``, but 64 sessions of 1 GB each (plus their tmpfs disks)
would still promise far more than a host has. So a sandbox *reserves* its ``memory_mb`` from this budget
before it starts and gives it back once its processes are gone; with the budget used up, the pool stops
refilling and a new session waits for room (see ``CodeInterpreter._reserve``). A total of 0 means no
budget.
"""

from __future__ import annotations

from collections.abc import Callable


class MemoryBudget:
    def __init__(self, total_mb: int, each_mb: int) -> None:
        self.total_mb = total_mb
        self.each_mb = each_mb
        self.used_mb = 0
        self.on_give: Callable[[], None] = lambda: None  # told when room may have appeared

    def take(self) -> bool:
        """Reserve one sandbox's memory if it fits."""
        if self.total_mb and self.used_mb + self.each_mb > self.total_mb:
            return False
        self.used_mb += self.each_mb
        return True

    def give(self) -> None:
        self.used_mb -= self.each_mb
        self.on_give()
