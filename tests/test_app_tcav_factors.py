"""The Classifiers tab's panels "Concept vectors (TCAV)" and "Factors of the world", called
directly on the shipped classifier with tiny settings."""

import gradio as gr
import numpy as np
import pytest
from conftest import app_config

from gandissect.app import classifiers
from gandissect.app.workspace import Workspace
from gandissect.factors import factor_study
from gandissect.world.factors import FACTORS


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    workspace = Workspace.open(app_config("toy", tmp_path_factory.mktemp("cache")))
    yield workspace
    workspace.close()


def test_tcav_panel_gives_a_row_per_concept_and_the_correction(ws):
    steps = []
    table, text = classifiers.concept_vectors(
        ws, "sceneworld", "layer3", "church", "dome, water, dome", 3, 10,
        progress=lambda fraction, desc: steps.append(fraction))
    assert list(table.columns) == classifiers.TCAV_HEADERS
    assert table["concept"].tolist() == ["dome", "water"]
    assert table["TCAV"].between(0, 1).all() and table["std"].ge(0).all()
    assert set(table["significant"]) <= {"yes", "no"}
    assert "bonferroni over 2 concepts" in text and "3 runs" in text
    assert steps == sorted(steps) and len(steps) == 3


def test_tcav_panel_refuses_bad_input_in_one_line(ws):
    def refused(*args):
        with pytest.raises(gr.Error) as error:
            classifiers.concept_vectors(ws, "sceneworld", "layer3", *args)
        assert "\n" not in str(error.value)
        return str(error.value)

    assert "'unicorn' is not a SceneWorld concept" in refused("church", "dome, unicorn", 3, 10)
    assert "at least one concept" in refused("church", " , ", 3, 10)
    assert "unknown class" in refused("castle", "dome", 3, 10)
    assert "number of runs" in refused("church", "dome", 1, 10)


def test_factors_panel_matches_the_library_study(ws):
    figure, table = classifiers.world_factors(ws, "sceneworld", "layer4", 12)
    assert figure.ndim == 3 and figure.shape[2] == 3
    assert table["factor"].tolist() == list(FACTORS)
    model = ws.classifiers.get("sceneworld")
    study = factor_study(model.model, "layer4", 1001, 12, model.input_size)
    for _, row in table.iterrows():
        f = row["factor"]
        for column, value in ((1, study.sensitivity[f]), (2, study.probability_shift[f]),
                              (3, study.class_mi[f])):
            assert row.iloc[column] == pytest.approx(value, abs=5e-4, nan_ok=True)
    with pytest.raises(gr.Error, match="no convolutional layer"):
        classifiers.world_factors(ws, "sceneworld", "fc", 12)
    assert np.isfinite(table["class MI (bits)"]).all()
