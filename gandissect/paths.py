"""Where gandissect keeps its caches: ``$XDG_CACHE_HOME/gandissect`` (``~/.cache/gandissect``
when the variable is unset or empty, as the XDG base-directory specification says).

Read when called, never at import, so that a test or a user can point ``XDG_CACHE_HOME``
elsewhere at any time.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["app_cache_dir", "cache_dir"]


def cache_dir() -> Path:
    """The root of gandissect's caches (dissections, learned causal weights, ...)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "gandissect"


def app_cache_dir() -> Path:
    """The app's cache: its dissection, learned causal weights and log (``app.log``)."""
    return cache_dir() / "app"
