"""A user's mistake and a bug are told apart: a ``UserError`` is one clear line (exit status
2 on the command line, a message in the app, a problem the page explains); anything else is a
bug, which keeps its traceback (``--debug`` / ``GANDISSECT_DEBUG=1`` show a mistake's too) and
which the app logs and asks to report."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from conftest import toy_segmenter

import gandissect.cli.layers as layers_command
from gandissect.app import messages
from gandissect.app.workspace import AppConfig, Workspace
from gandissect.cli import main
from gandissect.errors import UserError


def mistake(args):
    raise UserError("--size must be positive; give --size 64")


def numpy_bug(args):
    np.empty((2, 3)).reshape(4, 4)  # numpy's own ValueError: a bug, not bad input


@pytest.fixture
def layers_runs(monkeypatch):
    """``gandissect layers`` with its work replaced by ``run``."""

    def use(run):
        monkeypatch.setattr(layers_command, "_run", run)

    monkeypatch.delenv("GANDISSECT_DEBUG", raising=False)
    return use


def test_a_mistake_is_one_line_without_a_traceback(layers_runs, capsys):
    layers_runs(mistake)
    assert main(["layers", "sceneworld"]) == 2
    err = capsys.readouterr().err
    assert err == "gandissect: error: --size must be positive; give --size 64\n"


@pytest.mark.parametrize("how", ["--debug first", "--debug last", "GANDISSECT_DEBUG=1"])
def test_debug_shows_the_traceback_of_a_mistake(layers_runs, capsys, monkeypatch, how):
    layers_runs(mistake)
    argv = ["layers", "sceneworld"]
    if how == "--debug first":
        argv = ["--debug", *argv]
    elif how == "--debug last":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("GANDISSECT_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in mistake" in err
    assert err.endswith("gandissect: error: --size must be positive; give --size 64\n")


def test_a_bug_keeps_its_traceback_and_asks_to_be_reported(layers_runs, capsys):
    layers_runs(numpy_bug)
    assert main(["layers", "sceneworld"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in numpy_bug" in err
    assert "ValueError: cannot reshape array" in err
    assert "internal error" in err and "please report" in err
    assert "gandissect: error:" not in err  # never dressed as the user's mistake


def test_the_app_shows_a_mistake_and_logs_a_bug(tmp_path):
    @messages.user_errors
    def wrong_input():
        raise UserError("choose one unit")

    @messages.user_errors
    def broken():
        np.empty((2, 3)).reshape(4, 4)

    with pytest.raises(gr.Error) as shown:
        wrong_input()
    assert shown.value.message == "choose one unit"
    with messages.log_to(tmp_path / "app.log") as log, pytest.raises(gr.Error) as shown:
        broken()
    assert shown.value.message.startswith("Internal error (ValueError: cannot reshape")
    assert "please report it" in shown.value.message and str(log) in shown.value.message
    logged = log.read_text()
    assert "callback broken failed" in logged and "Traceback" in logged
    assert "np.empty((2, 3)).reshape(4, 4)" in logged
    assert not messages.log.handlers  # the log file is let go when the context ends


def test_the_workspace_explains_a_mistake_and_lets_a_bug_through(tmp_path, monkeypatch):
    import gandissect.app.workspace as workspace

    config = AppConfig(generator="conftest:toy_generator", segmenter="conftest:toy_segmenter",
                       layer="layer9", cache=tmp_path, progress=False)
    opened = Workspace.open(config)
    assert opened.scenes is None and "no layer named 'layer9'" in opened.problem

    def broken(spec, device):
        raise ValueError("a bug inside a loader")

    monkeypatch.setattr(workspace, "resolve_generator", broken)
    with pytest.raises(ValueError, match="a bug inside a loader"):
        Workspace.open(config, segmenter=toy_segmenter())
