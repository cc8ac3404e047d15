"""Test and bench helper: a real full filesystem (a small tmpfs), filled and freed on demand."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path


def mount_tmpfs(where: Path, size: str = "12m") -> bool:
    """Mount a tmpfs of `size` at `where` (created); False where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                         capture_output=True, check=False)
    return run.returncode == 0


def unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(directory: Path) -> None:
    """Take every free byte of the filesystem (new filler files, until ENOSPC even for one byte)."""
    chunk = b"\0" * 65536
    index = 0
    while True:
        index += 1
        try:
            with (directory / f"filler-{index}").open("wb", buffering=0) as handle:
                while True:
                    handle.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            if len(chunk) == 1:
                return
            chunk = chunk[: len(chunk) // 16] or b"\0"


def free(directory: Path) -> None:
    for filler in directory.glob("filler-*"):
        filler.unlink()
