"""Hooks and statistics end to end: unit statistics of a small CNN over SceneWorld scenes."""

import json

import pytest
import torch
from torch import nn

from gandissect.cli import main
from gandissect.fileio import load_state
from gandissect.stats import Quantile
from gandissect.unitstats import collect_unit_stats


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1),
                                      nn.ReLU(inplace=True), nn.Conv2d(6, 5, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny():
    return Tiny().eval()


def test_collect_unit_stats_matches_a_direct_pass():
    from gandissect.world import render_batch
    from gandissect.world.dataset import image_to_tensor

    model = tiny()
    stats = collect_unit_stats(model, ["features.0"], n=10, size=32, batch=4, top_k=3,
                               progress=False)["features.0"]
    rendered = render_batch(0, range(10), 32)
    images = torch.stack([image_to_tensor(i) for i in rendered["image"]])
    with torch.no_grad():
        acts = model.features[0](images)
    reference = Quantile()
    reference.add_maps(acts)
    assert torch.equal(stats.quantile.counts, reference.counts)
    best = acts.amax((2, 3)).argmax(0)
    assert torch.equal(stats.top.result()[1][:, 0], best)


def test_cli_layers_and_unit_stats(tmp_path, capsys):
    assert main(["layers", "tests.test_unitstats:tiny", "--size", "32"]) == 0
    listing = capsys.readouterr().out
    assert "features.2" in listing and "(1, 5, 16, 16)" in listing
    out = tmp_path / "stats"
    code = main(["unit-stats", "tests.test_unitstats:tiny", "--layer", "features.2",
                 "--n", "6", "--size", "32", "--batch", "3", "--top-k", "2", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "unit_stats.json").read_text())
    units = summary["layers"][0]["units"]
    assert len(units) == 5 and len(units[0]["top_scenes"]) == 2
    assert set(units[0]["quantiles"]) == {"0.005", "0.5", "0.99", "0.995"}
    state = load_state(out / "stats_features.2.pt")
    assert state["quantile"]["kind"] == "Quantile"
    assert not list(out.glob(".*tmp"))  # nothing half-written left behind


def test_cli_bad_layer_fails_fast_with_valid_names(tmp_path, capsys):
    code = main(["unit-stats", "tests.test_unitstats:tiny", "--layer", "features.9",
                 "--n", "5", "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no layer named 'features.9'" in err and "features.2" in err
    assert not (tmp_path / "x").exists()


def test_cli_unknown_model_and_unsafe_weights(tmp_path, capsys):
    assert main(["layers", "nonsense"]) == 2
    assert "unknown classifier 'nonsense'; valid spellings" in capsys.readouterr().err

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, path)
    assert main(["layers", "tests.test_unitstats:tiny", "--weights", str(path)]) == 2
    captured = capsys.readouterr()
    assert "would run Python code" in captured.err and "code ran" not in captured.out


@pytest.mark.parametrize("n", [0, -3])
def test_zero_scenes_is_a_clear_error(n):
    with pytest.raises(ValueError, match="at least one scene"):
        collect_unit_stats(tiny(), ["features.0"], n=n)


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from gandissect.fileio import _umask, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    (tmp_path / "b.json").write_text("{}")  # what a plain open() gives
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "b.json").st_mode) == 0o666 & ~_umask()
