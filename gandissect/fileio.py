"""Writing results so that nothing half-written is ever left on disk."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


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


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON: to a temporary file, then renamed into place."""
    text = json.dumps(data, indent=1).encode()
    _atomic(Path(path), lambda stream: stream.write(text))


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8): to a temporary file, then renamed into place."""
    data = text.encode()
    _atomic(Path(path), lambda stream: stream.write(data))


def save_state(path: str | Path, state: Any) -> None:
    """``torch.save`` atomically; read back with ``load_state`` (no code runs on load)."""
    _atomic(Path(path), lambda stream: torch.save(state, stream))


def load_state(path: str | Path) -> Any:
    """Load a file written by ``save_state`` with ``weights_only=True``."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
