"""Where a config came from: its source text and hash, and the git state of its folder (no Django import)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Provenance:
    source: str
    sha256: str
    git_commit: str  # "" when the folder is not in a git repository (or git is missing)
    git_dirty: bool  # uncommitted changes (untracked files included) under the config's folder


def provenance_of(path: str | Path) -> Provenance:
    """The provenance of the config file at ``path``.

    ``git_dirty`` looks at the config's folder only, so unrelated changes elsewhere in the repository do not count.
    """
    path = Path(path)
    source = path.read_text(encoding="utf-8")
    commit, dirty = git_state(path.parent)
    return Provenance(
        source=source, sha256=hashlib.sha256(source.encode("utf-8")).hexdigest(), git_commit=commit, git_dirty=dirty
    )


def git_state(folder: Path) -> tuple[str, bool]:
    """``(HEAD commit, uncommitted changes under folder)`` of the repository holding ``folder``; ``("", False)``
    when there is none."""
    git = shutil.which("git")
    if git is None or not folder.is_dir():
        return "", False
    try:
        head = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [git, "-C", str(folder), "rev-parse", "--verify", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
        if head.returncode != 0:
            return "", False
        status = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [git, "-C", str(folder), "status", "--porcelain", "--untracked-files=normal", "--", "."],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "", False
    return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else True
