"""Bad input becomes a clear message in the page, never a stack trace.

Every callback the page calls is wrapped in ``user_errors``: the library's ``ValueError`` (its
way of saying "this input cannot work, and here is why") becomes a ``gr.Error`` with that text;
anything unexpected is logged with its traceback on the server and shown as one line.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

__all__ = ["PROGRESS", "nothing_to_do", "user_errors", "whole_number"]

log = logging.getLogger("gandissect.app")
# The default of a callback's ``progress`` argument: Gradio then mirrors the library's tqdm bars
# into the page while it runs.
PROGRESS = gr.Progress(track_tqdm=True)


def _text(message: object) -> str:
    # Gradio shows messages as HTML: markup in them (a file name, a spelling) must stay text.
    return html.escape(str(message), quote=False)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a callback so that every failure reaches the page as a ``gr.Error`` message."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, FileNotFoundError) as error:
            raise gr.Error(_text(error), print_exception=False) from None
        except Exception as error:  # a bug, not bad input: keep the traceback for the log
            log.exception("callback %s failed", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(error).__name__}): "
                           f"{_text(error)}", print_exception=False) from None

    return wrapper


def nothing_to_do(message: str, outputs: int) -> tuple:
    """Show ``message`` as a warning and leave ``outputs`` outputs as they are."""
    gr.Warning(_text(message))
    return tuple(gr.skip() for _ in range(outputs))


def whole_number(value: Any, what: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``; ``ValueError`` saying what ``what`` must be."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or number != int(number) or not low <= number <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)
