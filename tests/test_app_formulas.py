"""The Classifiers tab's "formulas" checkbox, its callbacks called directly: with it the unit
table gains each unit's formula and formula IoU (never below the unit's label's IoU), without
it the table is as before, and the two dissections are kept under different keys."""

import pytest
from conftest import app_config

from gandissect.app import classifiers
from gandissect.app.session import Session
from gandissect.app.unit_table import FORMULA_HEADERS, HEADERS, TableQuery
from gandissect.app.workspace import Workspace

N = 50  # the fewest scenes the tab accepts


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    workspace = Workspace.open(app_config("toy", tmp_path_factory.mktemp("cache")))
    yield workspace
    workspace.close()


def test_formulas_checkbox_adds_formula_columns(ws):
    session = Session()
    plain = classifiers.run_netdissect(ws, session, "sceneworld", "layer4", N, progress=False)
    assert list(plain[2].columns) == HEADERS
    assert session.netdissect == ("sceneworld", "layer4", N)

    out = classifiers.run_netdissect(ws, session, "sceneworld", "layer4", N, progress=False,
                                     formulas=True)
    table = out[2]
    assert session.netdissect == ("sceneworld", "layer4", N, classifiers.FORMULA_LENGTH)
    assert set(FORMULA_HEADERS) <= set(table.columns) and "formula" in out[1]
    assert len(table) == ws.classifiers.get("sceneworld").layers["layer4"][0]
    assert all(text for text in table["formula"])
    # a formula's search starts from the unit's best single concept, its label
    assert (table["formula IoU"] >= table["IoU"] - 1e-4).all()
    assert any(" AND " in text or " OR " in text for text in table["formula"])
    # the plain dissection is kept apart, untouched by the formulas
    unlabelled = ws.classifiers.result(("sceneworld", "layer4", N))
    assert all(unit.formula is None for unit in unlabelled.layers[0].units)

    filtered = classifiers.table(ws, session, TableQuery(sort="IoU", descending=True))
    assert set(FORMULA_HEADERS) <= set(filtered.columns)
    _, about, _, unit = classifiers.select_unit(ws, session, 5)  # browsing still works
    assert unit == "5" and "Unit 5" in about

    again = classifiers.run_netdissect(ws, session, "sceneworld", "layer4", N, progress=False)
    assert list(again[2].columns) == HEADERS
