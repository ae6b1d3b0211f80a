"""The app served on a free local port and driven through its API with ``gradio_client``; and
``python -m gandissect.app`` started as a user starts it."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    EXPECT,
    app_config,
    canvas_pictures,
    edit_effect,
    free_port,
    kinds,
    tree_scene,
)
from PIL import Image

from gandissect.app.canvas import paint_value
from gandissect.app.ui import build_app, launch
from gandissect.app.workspace import Workspace

gradio_client = pytest.importorskip("gradio_client")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=kinds())
def served(request, tmp_path_factory):
    ws = Workspace.open(app_config(request.param, tmp_path_factory.mktemp("cache")))
    assert ws.problem is None, ws.problem
    demo = launch(build_app(ws), "127.0.0.1", free_port(), block=False)
    yield request.param, ws, demo
    demo.close()
    ws.close()


def client(demo):
    return gradio_client.Client(demo.local_url, analytics_enabled=False, verbose=False)


def read(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def canvas_with(tmp_path, ws, mask) -> str:
    """The paint a browser would send with ``mask`` painted (an API client sends the same)."""
    return paint_value(mask, ws.scale)


def test_paint_and_undo_through_the_api(served, tmp_path):
    kind, ws, demo = served
    api = client(demo)
    seed, tree = tree_scene(ws)
    canvas, used, status, download, native = api.predict(seed, api_name="/show_scene")
    assert f"Scene {seed}" in status and "0 strokes" in status
    before = canvas_pictures(canvas)["after"]
    assert np.array_equal(read(native), before)
    canvas, used, status, download, native = api.predict(
        canvas_with(tmp_path, ws, tree), "object/tree", 1.0, 15, api_name="/remove")
    after = canvas_pictures(canvas)["after"]
    effect = edit_effect(ws, before, after, tree)
    assert effect["tree_after"] <= (1 - EXPECT[kind]["removed"]) * effect["tree_before"]
    assert effect["outside_change"] <= EXPECT[kind]["outside_change"]
    assert np.array_equal(read(native), after)  # the downloads are the edited scene
    assert np.array_equal(read(download)[::ws.scale, ::ws.scale], after)
    assert [row[0] for row in used["data"]] == ws.scenes.brush_units("object/tree", 15)[0]
    undone = api.predict(api_name="/undo")
    assert np.array_equal(canvas_pictures(undone[0])["after"], before)


def test_each_client_has_its_own_session(served, tmp_path):
    _, ws, demo = served
    first, second = client(demo), client(demo)
    seed, tree = tree_scene(ws)
    first.predict(seed, api_name="/show_scene")
    first.predict(canvas_with(tmp_path, ws, tree), "object/tree", 1.0, 15, api_name="/remove")
    second.predict(seed + 1, api_name="/show_scene")
    assert f"Scene {seed + 1}" in second.predict(api_name="/reset")[2]
    status = first.predict(api_name="/undo")[2]
    assert f"Scene {seed}" in status and "0 strokes" in status


def test_bad_input_comes_back_as_a_message(served, tmp_path):
    _, ws, demo = served
    api = client(demo)
    for seed in (-5, 2**31):  # refused by the number box, or by the callback
        with pytest.raises(gradio_client.exceptions.AppError,
                           match="(minimum|maximum) value|whole number from 0"):
            api.predict(seed, api_name="/show_scene")
    with pytest.raises(gradio_client.exceptions.AppError, match="pick a scene first"):
        api.predict(canvas_with(tmp_path, ws, np.ones((ws.scenes.resolution,) * 2, bool)),
                    "object/tree", 1.0, 15, api_name="/draw")
    with pytest.raises(gradio_client.exceptions.AppError, match="not a unit number"):
        api.predict("3, x", True, api_name="/ablate")
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(gradio_client.exceptions.AppError,
                       match="notes.txt is not an image that can be read; upload a PNG or JPEG"):
        api.predict("sceneworld", "layer4", "Upload", 0, gradio_client.handle_file(str(text)),
                    "saliency", -1, api_name="/explain")


def test_python_m_app_serves_the_page(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "gandissect.app", "--generator", "conftest:toy_generator",
               "--segmenter", "conftest:toy_segmenter", "--samples", "64", "--cache",
               str(tmp_path), "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.monotonic() + 60, None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
                    page = reply.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert page is not None and "gandissect" in page, "the app did not serve its page"
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "computed from 64 samples" in output and f"127.0.0.1:{port}" in output
    assert "share=True" not in output and "public link" not in output  # no web-server hints


def test_a_port_in_use_is_refused_in_words_before_the_models_load(capsys):
    import socket

    from gandissect.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["app", "--port", str(port), "--generator", "conftest:no_such_factory"]) == 2
    err = capsys.readouterr().err
    assert f"port {port} is in use" in err and "use --port" in err
    assert "loading" not in err and "Traceback" not in err


def test_gandissect_app_refuses_bad_options_in_one_line(capsys):
    from gandissect.cli import main

    assert main(["app", "--port", "70000"]) == 2
    assert "--port must lie in [1, 65535]" in capsys.readouterr().err
