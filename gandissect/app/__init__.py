"""The gandissect Gradio app: paint to add or remove objects, browse units, explain classifiers.

    gandissect app                                   # http://127.0.0.1:7860, the shipped models
    gandissect app --generator proggan:church.pth    # any generator spelling
    python -m gandissect.app --port 7861

The app holds no algorithm: every action is a call into the ``gandissect`` library, and it
imports nothing from the command line (``gandissect.cli``). Modules, along the page:
``workspace`` (the models, the dissection and the caches every session shares; the dissection
comes from ``gandissect.dissect.sources``), ``scenes`` (generator-side actions), ``explain``
(classifier-side actions), ``session`` (what each browser session keeps), ``pictures`` (pixels
for display), ``unit_table`` (the unit tables and bar chart both dissection tabs show), one
module per tab (``paint``, ``units``, ``classifiers``), ``messages`` (mistakes shown in the
page, bugs logged) and ``ui`` (the page, its launch and ``serve``).

Importing this package switches Gradio's analytics and every Hugging Face call off: the app
never touches the network.
"""

from __future__ import annotations

import os

_OFFLINE = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_TELEMETRY_ENABLED": "False"}


def _stay_offline() -> None:
    for name, value in _OFFLINE.items():
        os.environ.setdefault(name, value)
    # With a proxy configured, Gradio's start-up check of its own local URL goes to the proxy
    # and fails; local addresses must bypass it.
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in os.environ.get(name, "").split(",") if h]
        os.environ[name] = ",".join(dict.fromkeys([*hosts, "127.0.0.1", "localhost"]))


_stay_offline()
