"""The command line's own promises: what its help lists without loading torch matches the
library, and the cache folders follow ``XDG_CACHE_HOME``."""

from __future__ import annotations

from pathlib import Path

import pytest

from gandissect.cli import build_parser
from gandissect.errors import UserError
from gandissect.fileio import empty_folder, writable_folder
from gandissect.paths import app_cache_dir, cache_dir


def test_what_help_lists_is_what_the_library_has():
    from gandissect.attribute.evaluate import METHODS
    from gandissect.causal import ACE_EPOCHS
    from gandissect.cli import ace, attribution, netdissect
    from gandissect.models import specs, spellings
    from gandissect.netdissect import datasets

    assert {"generator": tuple(specs.GENERATOR_SCHEMES),
                                 "classifier": tuple(specs.CLASSIFIER_SCHEMES),
                                 "segmenter": tuple(specs.SEGMENTER_SCHEMES)} == spellings.SCHEMES
    for kind, table in (("generator", specs.GENERATOR_SCHEMES),
                        ("classifier", specs.CLASSIFIER_SCHEMES)):
        assert specs.spellings(table) == spellings.spellings(kind)
    assert tuple(METHODS) == attribution.METHOD_NAMES
    assert ace.REFERENCE_EPOCHS == ACE_EPOCHS
    assert netdissect.DATASETS == datasets.DATASETS


def test_ace_defaults():
    from gandissect.causal import ACE_EPOCHS

    args = build_parser().parse_args(["ace", "--concept", "tree"])
    assert args.epochs == ACE_EPOCHS and args.cache is None  # the cache: XDG, when it runs


@pytest.mark.parametrize("value, expected", [
    (None, Path.home() / ".cache" / "gandissect"),
    ("", Path.home() / ".cache" / "gandissect"),
    ("relative/cache", Path.home() / ".cache" / "gandissect"),  # the spec ignores those
    ("/data/caches", Path("/data/caches/gandissect")),
])
def test_caches_follow_xdg_cache_home(monkeypatch, value, expected):
    from gandissect.app.workspace import AppConfig
    from gandissect.cli.app import config_from_args

    if value is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", value)
    assert cache_dir() == expected and app_cache_dir() == expected / "app"
    assert AppConfig().cache == expected / "app"
    assert config_from_args(build_parser().parse_args(["app"])).cache == expected / "app"


def test_output_folders_are_checked_before_the_work_and_not_made(tmp_path):
    assert writable_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not made
    assert writable_folder(tmp_path) == tmp_path and not any(tmp_path.iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write to output folder .*it is a file"):
        writable_folder(tmp_path / "file")
    with pytest.raises(UserError, match="is not a folder this process can write to"):
        writable_folder(tmp_path / "file" / "below")
    made = tmp_path / "made"
    made.mkdir()
    assert empty_folder(tmp_path / "missing") == tmp_path / "missing"
    assert empty_folder(made) == made
    with pytest.raises(UserError, match="exists and is not empty"):
        empty_folder(tmp_path)
