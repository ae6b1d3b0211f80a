"""Bad input becomes a clear message in the page, never a stack trace; a bug is logged.

Every callback the page calls is wrapped in ``user_errors``: the library's ``UserError`` (its
way of saying "this input cannot work, and here is why") becomes a ``gr.Error`` with that text.
Anything else is a bug: its traceback goes to the log (``app.log`` in the app's cache folder
while ``serve`` runs, see ``log_to``), and the page says "internal error, please report" and
where the log is.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr

from gandissect.errors import UserError

__all__ = ["PROGRESS", "log_to", "nothing_to_do", "user_errors", "whole_number"]

log = logging.getLogger("gandissect.app")
# The default of a callback's ``progress`` argument: Gradio then mirrors the library's tqdm bars
# into the page while it runs.
PROGRESS = gr.Progress(track_tqdm=True)


def _text(message: object) -> str:
    # Gradio shows messages as HTML: markup in them (a file name, a spelling) must stay text.
    return html.escape(str(message), quote=False)


@contextmanager
def log_to(path: str | Path) -> Iterator[Path]:
    """Append the app's log (bugs' tracebacks) to ``path`` while the context is open."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    try:
        yield path
    finally:
        log.removeHandler(handler)
        handler.close()


def _where_logged() -> str:
    files = [h.baseFilename for h in log.handlers if isinstance(h, logging.FileHandler)]
    return f"the traceback is in {files[0]}" if files else "the traceback is in the server's log"


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a callback: a ``UserError`` reaches the page as its message; anything else is
    logged with its traceback and reported as an internal error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as error:
            raise gr.Error(_text(error), print_exception=False) from None
        except Exception as error:  # a bug, not bad input: keep the traceback for the report
            log.exception("callback %s failed", fn.__name__)
            raise gr.Error(f"Internal error ({type(error).__name__}: {_text(error)}), please "
                           f"report it; {_text(_where_logged())}.",
                           print_exception=False) from None

    return wrapper


def nothing_to_do(message: str, outputs: int) -> tuple:
    """Show ``message`` as a warning and leave ``outputs`` outputs as they are."""
    gr.Warning(_text(message))
    return tuple(gr.skip() for _ in range(outputs))


def whole_number(value: Any, what: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``; a ``UserError`` saying what ``what`` must be."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or number != int(number) or not low <= number <= high:
        raise UserError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)
