"""The dissection's report (JSON, statistics, self-contained HTML) and its command line."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch
from conftest import PlantedGenerator, PlantedSegmenter

from gandissect.cli import dissect as dissect_command
from gandissect.dissect import dissect, load_dissection, load_layer_stats
from gandissect.report import write_report
from gandissect.stats import Quantile

PLANTED = dict(n=32, batch=8, quantile=0.8, progress=False)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    generator = PlantedGenerator()
    result = dissect(generator, PlantedSegmenter(), ["units", "mirror"], **PLANTED)
    write_report(result, folder, generator=generator, images=4)
    return folder


def test_report_html_is_self_contained(report_dir):
    html = (report_dir / "report.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)  # every image is inline
    assert html.count('<tr class="unit') == 6  # one row per unit, two layers of 3
    assert html.count('src="data:image/jpeg;base64,') == 6  # top images with masks
    assert html.count('src="data:image/png;base64,') == 6  # heatmaps
    assert "<svg" in html and "<script>" in html and 'data-sort="num"' in html
    # units per concept, counted both ways, each chart saying what it counts
    assert html.count("<h3>Interpretable units per concept, by label</h3>") == 2
    assert html.count("<h3>Units per concept, by best concept in its category</h3>") == 2


def test_report_json_and_statistics(report_dir):
    data = json.loads((report_dir / "dissect.json").read_text())
    assert [layer["layer"] for layer in data["layers"]] == ["units", "mirror"]
    assert load_dissection(report_dir).to_json() == data
    stats = load_layer_stats(report_dir, "units")
    sketch = Quantile()
    sketch.load_state_dict(stats["quantile"])
    assert torch.equal(sketch.quantiles(0.99), stats["insertion"])
    assert stats["mean_map"].shape == (3, 8, 8)


# -- command line --------------------------------------------------------------------------
def parse(argv):
    parser = argparse.ArgumentParser()
    register = parser.add_subparsers(dest="command")
    dissect_command.register(register)
    return parser.parse_args(argv)


@pytest.fixture
def plug_in_models(monkeypatch):
    from gandissect.models import registry

    monkeypatch.setattr(registry, "load_generator", lambda name, device="cpu": PlantedGenerator())
    monkeypatch.setattr(registry, "load_segmenter", lambda name, device="cpu": PlantedSegmenter())


def test_cli_end_to_end(tmp_path, plug_in_models, capsys):
    args = parse(["dissect", "--layer", "units", "--samples", "16", "--batch", "8",
                  "--quantile", "0.8", "--out", str(tmp_path), "--images", "2"])
    assert args.run(args) == 0
    data = json.loads((tmp_path / "dissect.json").read_text())
    assert data["settings"]["generator_name"] == "sceneworld"
    assert [u["label"] for u in data["layers"][0]["units"][:2]] == ["A", "B"]
    assert (tmp_path / "report.html").is_file() and (tmp_path / "stats_units.pt").is_file()
    assert "units: 2 of 3 units interpretable" in capsys.readouterr().out


def test_cli_defaults():
    args = parse(["dissect", "--out", "x"])
    assert (args.generator, args.segmenter, args.layer, args.samples, args.seed) == (
        "sceneworld", "sceneworld", None, 10000, 1)
    assert (args.quantile, args.threshold, args.top_k) == (0.99, "quantile", 12)


@pytest.mark.parametrize("argv, message", [
    (["--layer", "layer4"], "Valid layers: .*units"),
    (["--samples", "0"], "n >= 1"),
    (["--quantile", "1.5"], "quantile"),
])
def test_cli_validates_before_running(tmp_path, plug_in_models, argv, message):
    args = parse(["dissect", "--out", str(tmp_path), *argv])
    with pytest.raises(ValueError, match=message):
        args.run(args)
    assert not (tmp_path / "cache").exists()


def test_cli_refuses_an_unwritable_output(tmp_path, plug_in_models):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = parse(["dissect", "--out", str(blocker / "out"), "--layer", "units"])
    with pytest.raises(ValueError, match="cannot write"):
        args.run(args)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  # any attempt to reach the network goes to a closed local port
                  "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]


def test_report_opens_in_a_browser_offline(report_dir, tmp_path):
    """Headless Chromium renders the page from disk with the network cut off; the table's
    sorting script runs (one click on the IoU header sorts ascending: the worst unit first)."""
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs it)")
    page = report_dir / "report.html"
    sorter = tmp_path / "sorted.html"
    html = page.read_text()
    click = ("<script>document.addEventListener('DOMContentLoaded',()=>{"
             "const th=[...document.querySelectorAll('th')].find(t=>t.textContent==='IoU');"
             "th.click();});</script></body>")
    sorter.write_text(html.replace("</body>", click))
    shot = tmp_path / "shot.png"
    run = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          f"--screenshot={shot}", "--window-size=1000,800", page.as_uri()],
                         capture_output=True, timeout=120)
    assert run.returncode == 0 and shot.stat().st_size > 10_000
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p2'}",
                          "--dump-dom", sorter.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    rows = re.findall(r'<tr class="unit[^"]*"[^>]*>\s*<td[^>]*data-v="(\d+)"', dom)
    assert len(rows) == 6
    data = json.loads((report_dir / "dissect.json").read_text())
    units = data["layers"][0]["units"]
    worst = min(units, key=lambda u: u["iou"])["unit"]
    assert worst != units[0]["unit"]  # so the order on the page must come from the script
    assert int(rows[0]) == worst


@pytest.mark.parametrize("counts", [
    [("material", "brick", 3)],  # one bar under a legend wider than it
    [("object", "tree", 5), ("part", "window", 2), ("material", "brick", 1)],
])
def test_the_bar_graph_is_wide_enough_for_its_bars_and_legend(counts):
    from gandissect.report.svg import concept_bars

    svg = concept_bars(counts, ["object", "part", "material"])
    width = float(re.search(r'<svg[^>]* width="([\d.]+)"', svg).group(1))
    bars = [float(x) + float(w) for x, w in re.findall(r'<rect x="([\d.]+)" y="[\d.]+" '
                                                      r'width="([\d.]+)" height="[\d.]+" fill',
                                                      svg)]
    legend = re.findall(r'<text x="([\d.]+)" y="13" font-size="11">([^<]+)</text>', svg)
    assert len(legend) == len({c for c, _, _ in counts})
    ends = bars + [float(x) + 7 * len(name) for x, name in legend]  # 11 px text: ~7 px a char
    assert max(ends) <= width
