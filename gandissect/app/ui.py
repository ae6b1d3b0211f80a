"""The page: three tabs over one shared ``Workspace``, one ``Session`` per browser tab, a queue
that runs model work one request at a time; its launch; and ``serve``, which does all of it
for ``gandissect app``.

    serve(AppConfig(generator="sceneworld"), host="127.0.0.1", port=7860)
    # or, step by step:
    demo = build_app(Workspace.open(config))
    launch(demo, host="127.0.0.1", port=7860)
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import gradio as gr

from gandissect.app import classifiers, paint, units
from gandissect.app.canvas import STYLE
from gandissect.app.messages import log_to
from gandissect.app.session import Session
from gandissect.app.workspace import AppConfig, Workspace
from gandissect.errors import UserError

__all__ = ["CSS", "build_app", "check_port", "launch", "serve", "MAX_UPLOAD_BYTES"]

MAX_UPLOAD_BYTES = "20mb"
CSS = """
#units-bars svg {max-width: 100%; height: auto;}
.problem {border-left: 4px solid #e15759; padding-left: 10px;}
""" + STYLE
INTRO = """# gandissect
See inside a GAN: **Paint** over a scene and press Remove or Draw to switch off (or on) the
units that draw a concept there; browse the layer's **Units**; dissect and explain
**Classifiers**."""


def _link_units_tab(ws: Workspace, paint_tab: dict[str, Any], units_tab: dict[str, Any],
                    tabs: gr.Tabs, state: gr.State) -> None:
    """Clicking a unit the brush used opens it in the Units tab."""

    def on_used(session, evt: gr.SelectData):
        unit = (evt.row_value or [None])[0]
        return (gr.Tabs(selected="units"), *units_tab["on_unit"](session, unit))

    paint_tab["used"].select(on_used, [state], [tabs, *units_tab["details"]],
                             api_visibility="private", concurrency_id="model")


def build_app(ws: Workspace) -> gr.Blocks:
    """The Blocks app over ``ws`` (not launched)."""
    # delete_cache: every 10 minutes, Gradio removes the pictures it served over an hour ago
    with gr.Blocks(title="gandissect", analytics_enabled=False,
                   delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        state = gr.State(Session())
        if ws.problem:
            gr.Markdown(f"**The Paint and Units tabs need a generator.** {ws.problem}",
                        elem_id="problem", elem_classes=["problem"])
        with gr.Tabs() as tabs:
            with gr.Tab("Paint", id="paint"):
                paint_tab = paint.build(ws, state) if ws.scenes else None
                if paint_tab is None:
                    gr.Markdown(ws.problem or "", elem_classes=["problem"])
            with gr.Tab("Units", id="units") as units_page:
                units_tab = units.build(ws, state) if ws.scenes else None
                if units_tab is None:
                    gr.Markdown(ws.problem or "", elem_classes=["problem"])
            with gr.Tab("Classifiers", id="classifiers"):
                classifiers.build(ws, state)
        if paint_tab is not None:
            _link_units_tab(ws, paint_tab, units_tab, tabs, state)
            # the scene to click on is the Paint tab's, as it is when the tab opens
            units_page.select(units_tab["on_tab"], [state], units_tab["spot"],
                              api_visibility="private", concurrency_id="model")
            demo.load(paint_tab["on_show"], [state, paint_tab["seed"]], paint_tab["outputs"],
                      api_visibility="private", concurrency_id="model")
    # Model work runs one request at a time (hooks on shared modules must not interleave);
    # the rest of a burst waits in the queue, which is bounded.
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo


def check_port(host: str, port: int | None) -> None:
    """A ``UserError`` when something already listens on ``host``:``port`` (say so before the
    models load, in the user's words, not as the web server's traceback)."""
    if port is None:
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((host, port))
        except OSError:
            raise UserError(f"port {port} is in use (another app, or gandissect already "
                            f"running); use --port to choose another") from None


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860,
           block: bool = True, **options: Any) -> gr.Blocks:
    """Serve ``demo`` on ``host``:``port`` (never shared, no analytics, none of the web
    server's own hints printed); ``block=False`` returns at once (tests)."""
    check_port(host, port)
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                prevent_thread_lock=not block, quiet=True, show_error=True, css=CSS,
                max_file_size=MAX_UPLOAD_BYTES, **options)
    return demo


def serve(config: AppConfig, host: str = "127.0.0.1", port: int | None = 7860) -> None:
    """Open the workspace ``config`` describes, say on stderr what was loaded, and serve the
    page until interrupted; bugs' tracebacks go to ``app.log`` in the app's cache folder."""
    check_port(host, port)  # before the models load
    print(f"gandissect app: loading {config.generator} and its dissection ...", file=sys.stderr)
    workspace = Workspace.open(config)
    try:
        if workspace.problem:
            print(f"gandissect app: {workspace.problem}", file=sys.stderr)
        else:
            print(f"gandissect app: dissection {workspace.scenes.source} (cache: {config.cache})",
                  file=sys.stderr)
        with log_to(config.cache / "app.log") as log_file:
            print(f"gandissect app: open http://{host}:{port} in a browser (log: {log_file})",
                  file=sys.stderr)
            launch(build_app(workspace), host, port)
    finally:
        workspace.close()
