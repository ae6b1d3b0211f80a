"""The one exception for a user's mistake.

``UserError`` says "this input cannot work, and here is what to do": the command line prints
it as one line (``gandissect: error: ...``, exit status 2), the app shows it in the page, and
neither shows a traceback (``--debug`` or ``GANDISSECT_DEBUG=1`` does). Everything else that is
raised is a bug and keeps its traceback. It is a ``ValueError``, so code that caught the
library's ``ValueError`` before still catches it.
"""

from __future__ import annotations

import warnings

__all__ = ["Caution", "UserError", "caution"]


class UserError(ValueError):
    """Bad input from the user: shown as one clear line that says what to do."""


class Caution(UserWarning):
    """A result that runs but may mislead (a segmenter outside its domain, a probe set too
    small for its statistics): a ``warnings`` category that the command line prints as one
    line, ``gandissect: warning: ...``; a dissection also records it in its settings."""


def caution(line: str) -> None:
    """Emit ``line`` as a ``Caution`` (the command line prints it once, as one line)."""
    warnings.warn(line, Caution, stacklevel=2)
