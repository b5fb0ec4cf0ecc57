"""Adapter: removal of shared memory left behind by a crashed daemon."""

from __future__ import annotations

import os
import re
from pathlib import Path

_NAME_RE = re.compile(r"^mimocorb2-(\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(shm_dir: Path = Path("/dev/shm")) -> list[str]:
    """Unlink ``mimocorb2-<pid>-*`` segments whose creating process is gone."""
    try:
        from mimocorb2.datapath._shm import remove_stale_segments
    except ImportError:  # the data path's helper is the reference; this is the same rule
        removed = []
        for path in shm_dir.glob("mimocorb2-*"):
            match = _NAME_RE.match(path.name)
            if match and not _alive(int(match.group(1))):
                try:
                    path.unlink()
                    removed.append(path.name)
                except OSError:
                    pass
        return removed
    return remove_stale_segments()
