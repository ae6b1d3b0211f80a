"""Files and folders: results written so that nothing half-written is ever left on disk,
output folders checked before a long job starts, folder locks and resumable job states."""

from __future__ import annotations

import fcntl
import glob
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gandissect.errors import UserError


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # as a plain open() would (mkstemp uses 0600)
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # A job killed (SIGKILL) while writing this file left its temporary behind: remove it now
    # that the file is whole again (jobs lock their folders, so no one else is writing it).
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON: to a temporary file, then renamed into place."""
    text = json.dumps(data, indent=1).encode()
    _atomic(Path(path), lambda stream: stream.write(text))


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8): to a temporary file, then renamed into place."""
    data = text.encode()
    _atomic(Path(path), lambda stream: stream.write(data))


def image_format(path: str | Path) -> str:
    """The PIL format that ``path``'s suffix names; a ``UserError`` saying what to use when it
    names none (check output paths with it before a long job)."""
    from PIL import Image

    suffix = Path(path).suffix.lower()
    known = Image.registered_extensions()
    if suffix not in known:
        raise UserError(f"cannot tell the image format of {path}: end it in .png or .jpg")
    return known[suffix]


def save_image(path: str | Path, image) -> None:
    """Save a PIL image atomically, in the format its suffix names."""
    format_ = image_format(path)
    _atomic(Path(path), lambda stream: image.save(stream, format=format_))


def save_state(path: str | Path, state: Any) -> None:
    """``torch.save`` atomically; read back with ``load_state`` (no code runs on load)."""
    _atomic(Path(path), lambda stream: torch.save(state, stream))


class DamagedFile(UserError):
    """A file this project wrote cannot be read back (truncated or altered since)."""


def load_state(path: str | Path) -> Any:
    """Load a file written by ``save_state`` with ``weights_only=True``; ``DamagedFile`` (a
    ``UserError`` naming the file) when it cannot be read."""
    import pickle
    import zipfile

    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise DamagedFile(f"cannot read {path}: it is damaged or truncated ({error})") from None


def writable_folder(path: str | Path, what: str = "output folder") -> Path:
    """``path`` if this process can write there: an existing folder that takes a file, or a
    missing one whose nearest existing parent is a writable folder. Nothing is created, so a
    command that fails on its inputs afterwards leaves no empty folder behind; a ``UserError``
    says what is wrong. Check output folders with it before a long job starts."""
    path = Path(path)
    if path.is_dir():
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
                pass
        except OSError as error:
            raise UserError(f"cannot write to {what} {path}: {error}") from None
        return path
    if path.exists():
        raise UserError(f"cannot write to {what} {path}: it is a file, not a folder")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {what} {path}: {parent} is not a folder this process "
                        "can write to")
    return path


def empty_folder(path: str | Path) -> Path:
    """``path`` if it is missing or an empty folder; a ``UserError`` otherwise (for outputs
    that must not mix with older files)."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"output directory {path} exists and is not empty; "
                        "choose a new directory or remove it")
    return path


class FolderLock:
    """An exclusive lock on a folder (``flock`` on ``folder/name``) for one job's lifetime.

    A second job that would write to the same folder is refused at once with a clear error,
    instead of interleaving its files with the first one's. The lock goes with the process:
    a job killed with SIGKILL leaves no stale lock behind (the lock file itself stays, empty).
    """

    def __init__(self, folder: str | Path, name: str = ".lock", what: str = "folder") -> None:
        self.folder, self.name, self.what = Path(folder), name, what
        self._stream = None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        stream = open(self.folder / self.name, "w")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            stream.close()
            raise UserError(f"another job is writing to {self.folder}; wait for it to finish "
                            f"or choose another {self.what}") from None
        self._stream = stream
        return self

    def release(self) -> None:
        if self._stream is not None:
            fcntl.flock(self._stream, fcntl.LOCK_UN)
            self._stream.close()
            self._stream = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class JobCheckpoint:
    """A long job's state in one file, written atomically.

    ``load()`` gives back the last state saved under the same ``key`` (None for a fresh start,
    when the file belongs to other settings, or when it is damaged); ``due()`` says whether
    ``seconds`` have passed since the last save, so that a job builds its state only then;
    ``save(state)`` writes it. A job killed at any point restarts from its last save, and a job
    that resumes exactly (same batches, same random state) ends with the same result. With
    ``path`` None nothing is kept (``due()`` is never true, ``save`` does nothing).
    """

    def __init__(self, path: str | Path | None, key: str, seconds: float = 30.0) -> None:
        self.path = Path(path) if path is not None else None
        self.key, self.seconds = key, seconds
        self._last = time.monotonic()

    def load(self) -> Any:
        if self.path is None or not self.path.is_file():
            return None
        try:
            saved = load_state(self.path)
        except DamagedFile:
            return None  # progress only: start again
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            return None
        return saved["state"]

    def due(self) -> bool:
        return self.path is not None and time.monotonic() - self._last >= self.seconds

    def save(self, state: Any) -> None:
        if self.path is None:
            return
        save_state(self.path, {"key": self.key, "state": state})
        self._last = time.monotonic()

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
