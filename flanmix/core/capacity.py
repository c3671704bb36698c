"""How much memory and disk this machine has left: preflight checks refuse a plan that cannot fit before it
allocates, saying how much it would need."""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path

from flanmix.core.errors import FlanmixError


def available_memory() -> int | None:
    """Bytes of memory this process can still use: the kernel's MemAvailable, capped by an address-space limit
    (RLIMIT_AS) when one is set; None where neither is known."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        available = soft if available is None else min(available, soft)
    return available


def free_disk(path: str | Path) -> int | None:
    """Free bytes on the filesystem that would hold `path` (its nearest existing folder); None if unknown."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _gib(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB" if size >= 2**28 else f"{size / 2**20:,.0f} MiB"


def check_fits(need_memory: int = 0, need_disk: int = 0, *, what: str, disk_path: str | Path | None = None,
               file: str | Path | None = None, line: int | None = None, field: str | None = None,
               expected: str | None = None) -> None:
    """Refuse `what` when its estimated memory (or disk space under `disk_path`) exceeds what is left."""
    memory = available_memory() if need_memory else None
    if memory is not None and need_memory > memory:
        raise FlanmixError(f"{what} would need about {_gib(need_memory)} of memory; {_gib(memory)} is available",
                           file=file, line=line, field=field, expected=expected)
    disk = free_disk(disk_path) if need_disk and disk_path is not None else None
    if disk is not None and need_disk > disk:
        raise FlanmixError(f"{what} would need at least {_gib(need_disk)} of disk under {disk_path}; "
                           f"{_gib(disk)} is free", file=file, line=line, field=field, expected=expected)
