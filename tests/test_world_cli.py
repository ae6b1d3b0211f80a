"""The `gandissect world` commands, end to end."""

from __future__ import annotations

from PIL import Image

from gandissect.cli import main


def test_sample_command(tmp_path, capsys):
    out = tmp_path / "sheet"
    assert main(["world", "sample", "--n", "3", "--size", "32", "--out", str(out)]) == 0
    grid = Image.open(out / "grid.png")
    assert grid.width > 3 * 32 and grid.height > 5 * 32
    assert len(list((out / "images").glob("*.png"))) == 3
    assert "grid.png" in capsys.readouterr().out


def test_export_command(tmp_path):
    out = tmp_path / "probe"
    assert main(["world", "export", "--n", "4", "--size", "16", "--out", str(out)]) == 0
    assert (out / "index.csv").is_file() and (out / "label.csv").is_file()


def test_bad_input_is_reported_cleanly(tmp_path, capsys):
    assert main(["world", "sample", "--n", "0", "--out", str(tmp_path / "a")]) == 2
    assert "--n must be positive" in capsys.readouterr().err
    assert main(["world", "export", "--size", "8", "--out", str(tmp_path / "b")]) == 2
    assert "size" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["world", "sample", "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
