"""Writing the export's files all or nothing: every file staged as a temporary first, then renamed into place."""
from __future__ import annotations

import itertools
import os
import stat
import tempfile
import time
from pathlib import Path

from pico_helpers.workbook.notebook_answers import repo_path

__all__ = ["Staged", "new_file_mode", "check_writable"]


def new_file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the umask (mkstemp's temporaries are 0o600 whatever it is)."""
    mask = os.umask(0o022)  # the only way to read the umask is to set it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def check_writable(path: Path) -> None:
    """Refuse (PermissionError) to replace a file whose owner may not write it: someone protected it on purpose."""
    if path.exists() and not path.stat().st_mode & stat.S_IWUSR:
        mode = stat.S_IMODE(path.stat().st_mode)
        raise PermissionError(f"{repo_path(path)} is read-only (mode {mode:04o}) and the export does not replace a file "
                              f"you protected. Nothing was written; make it writable (chmod u+w {repo_path(path)}) "
                              "or export to another --out")


def _stamp() -> str:
    """The time in a kept copy's name (a counter follows when two copies fall within one second)."""
    return time.strftime("%Y%m%d-%H%M%S")


class Staged:
    """Files to write, keep a copy of, or delete; nothing changes until ``commit()``, and ``abort()`` undoes staging.

    Staging writes each new content to a temporary beside its target, so a folder that cannot be written, a full
    disk or a missing permission fails before any existing file changes; commit() then only renames and deletes."""

    def __init__(self) -> None:
        self._writes: list[tuple[str, Path]] = []  # (temporary, target)
        self._copies: list[tuple[str, Path, str, str]] = []  # (temporary, original, label, why)
        self._deletes: list[Path] = []
        self._made: list[Path] = []  # folders staging created, removed again by abort()
        self.kept: list[tuple[Path, Path, str]] = []  # (original, its copy, why), filled by commit()

    def _folder(self, folder: Path) -> None:
        """Create ``folder`` (and missing parents), remembering what was created."""
        missing = [f for f in (folder, *folder.parents) if not f.exists()][::-1]
        for f in missing:
            f.mkdir()
            self._made.append(f)

    def _temporary(self, folder: Path, data: bytes, mode: int) -> str:
        """A fsync'ed temporary in ``folder`` holding ``data`` with ``mode``; a clear error if it cannot be made."""
        tmp = None
        try:
            self._folder(folder)
            fd, tmp = tempfile.mkstemp(prefix=".export.", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)  # mkstemp made it 0o600; the rename would carry that onto the target
            return tmp
        except OSError as err:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise OSError(f"cannot write in {repo_path(folder)}/ ({err.strerror or err}). Nothing was written; make that "
                          "folder writable (chmod u+w), or free some space, and export again") from None

    def write(self, path: Path, data: bytes) -> None:
        """Stage ``path`` to hold ``data``, keeping an existing file's mode (a new file follows the umask)."""
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else new_file_mode()
        self._writes.append((self._temporary(path.parent, data, mode), path))

    def keep_copy(self, path: Path, label: str, why: str) -> None:
        """Stage a copy of ``path`` beside it, named ``<stem>.<label>-<time>[-n]<suffix>`` at commit (``why``: for
        the report)."""
        self._copies.append((self._temporary(path.parent, path.read_bytes(), stat.S_IMODE(path.stat().st_mode)),
                             path, label, why))

    def delete(self, path: Path) -> None:
        """Stage the removal of ``path``."""
        self._deletes.append(path)

    def commit(self) -> None:
        """Put the copies in place first, then the new files, then delete; the temporaries are gone after."""
        stamp = _stamp()
        for tmp, original, label, why in self._copies:
            self.kept.append((original, _link_unique(tmp, original, f"{label}-{stamp}"), why))
        for tmp, path in self._writes:
            os.replace(tmp, path)
        for path in self._deletes:
            path.unlink(missing_ok=True)

    def abort(self) -> None:
        """Remove every temporary and every folder staging made: the tree is as it was."""
        for tmp in [t for t, *_ in self._writes] + [t for t, *_ in self._copies]:
            Path(tmp).unlink(missing_ok=True)
        for folder in reversed(self._made):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _link_unique(tmp: str, original: Path, tag: str) -> Path:
    """Move ``tmp`` to the first free ``<stem>.<tag>[-n]<suffix>`` beside ``original``; never replaces a file."""
    for n in itertools.count(1):
        dest = original.with_name(f"{original.stem}.{tag}{'' if n == 1 else f'-{n}'}{original.suffix}")
        try:
            os.link(tmp, dest)  # fails if dest exists, even if another export made it a moment ago
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links: check, then rename
            if dest.exists():
                continue
            os.replace(tmp, dest)
            return dest
        os.unlink(tmp)
        return dest
