"""Fuzzing the command line: every command given bad input, one table row per case.

A failing call must return 2 with one clear line on stderr that says what is wrong and what to
do (no traceback: in process, an uncaught exception fails the test), and leave nothing
half-written: its ``--out`` folder holds no result file (``dissect.json``, ``report.html``,
``stats_*.pt``, ``edit.png``, ...; the empty ``.lock`` file and the resumable ``cache/`` are
not results), no ``*.tmp`` file is left anywhere, and no pickle's code has run. The rows cover
damaged checkpoints in each spelling (``FILE.safetensors``, ``proggan:PATH``,
``stylegan2:PATH``, ``torchvision:ARCH --weights PATH``), pickles with code, NaN activations,
empty and out-of-image masks, unit ids out of range, unknown concepts and layers, folders of
unreadable images and zero samples. Models: the toy generator and segmenter (``conftest``),
the fakes of ``test_fuzz_inputs`` and the files of ``test_fuzz_checkpoints``, as plug-ins.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    ARCH,
    DAMAGES,
    legacy_pickle,
    proggan_state,
    rgb_pixels,
    save_state,
    torchvision_state,
    toy_generator,
    write_project_file,
    zip_pickle,
)
from PIL import Image

from gandissect.cli import main

TOY = ["--generator", "conftest:toy_generator", "--segmenter", "conftest:toy_segmenter"]
NAN_GENERATOR = "conftest:nan_generator"
TINY_CLASSIFIER = "conftest:tiny_classifier"
QUICK_DISSECT = ["--samples", "16", "--batch", "8", "--top-k", "2", "--images", "1",
                 "--no-html", "--device", "cpu"]
NOT_RESULTS = re.compile(r"^\.lock")  # the lock file stays (empty) by design


def results_in(folder: Path) -> list[str]:
    """Result files under ``folder``: everything but lock files and the resumable cache."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and not NOT_RESULTS.match(p.name)
                  and "cache" not in p.relative_to(folder).parts)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every file the rows read: a toy dissection, image folders, masks and checkpoints (intact,
    damaged, booby-trapped), by name; ``marker`` is what a pickle's code would create."""
    root = tmp_path_factory.mktemp("fuzz_cli")
    paths = {"root": root, "marker": root / "code_ran.txt"}
    dissection = root / "dissection"
    assert main(["dissect", *TOY, "--layer", "layer4", *QUICK_DISSECT,
                 "--out", str(dissection)]) == 0
    paths["dissection"] = dissection

    images = root / "images"
    images.mkdir()
    with torch.no_grad():
        pictures = ((toy_generator()(torch.randn(4, 16)) + 1) * 127.5).round().byte()
    for i, picture in enumerate(pictures.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(picture).save(images / f"scene_{i}.png")
    paths["images"] = images
    broken = root / "broken_images"
    broken.mkdir()
    Image.fromarray(rgb_pixels()).save(broken / "good.png")
    (broken / "download.jpg").write_bytes(b"<html>403 Forbidden</html>")
    paths["broken_images"] = broken
    (root / "no_images").mkdir()
    paths["no_images"] = root / "no_images"

    masks = {"black": np.zeros((64, 64), np.uint8), "white": np.full((64, 64), 255, np.uint8),
             "small": np.full((32, 32), 255, np.uint8),
             "rgba_white": np.full((64, 64, 4), 255, np.uint8)}
    for name, pixels in masks.items():
        Image.fromarray(pixels).save(root / f"mask_{name}.png")
        paths[f"mask_{name}"] = root / f"mask_{name}.png"
    (root / "mask_text.png").write_text("not a picture")
    paths["mask_text"] = root / "mask_text.png"
    paths["mask_cut"] = root / "mask_cut.png"
    paths["mask_cut"].write_bytes(paths["mask_white"].read_bytes()[:60])

    truncate = DAMAGES["truncated to half"]
    generator_file = write_project_file("generator", root / "generator.safetensors")
    paths["generator_file_cut"] = root / "generator_cut.safetensors"
    paths["generator_file_cut"].write_bytes(truncate(generator_file.read_bytes()))
    segmenter_file = write_project_file("segmenter", root / "segmenter.safetensors")
    paths["segmenter_file"] = segmenter_file
    paths["segmenter_file_empty"] = root / "segmenter_empty.safetensors"
    paths["segmenter_file_empty"].write_bytes(b"")
    proggan = save_state(proggan_state(), root / "church.pth")
    paths["proggan_cut"] = root / "church_cut.pth"
    paths["proggan_cut"].write_bytes(truncate(proggan.read_bytes()))
    paths["proggan_nan"] = save_state({k: torch.full_like(v, float("nan"))
                                       for k, v in proggan_state().items()},
                                      root / "church_nan.pth")
    weights = save_state(torchvision_state(), root / "places.pth")
    paths["weights"] = weights
    paths["weights_cut"] = root / "places_cut.pth"
    paths["weights_cut"].write_bytes(truncate(weights.read_bytes()))
    paths["weights_html"] = root / "places_html.pth"
    paths["weights_html"].write_bytes(DAMAGES["a web page instead"](b""))
    for name, write in (("evil_zip", zip_pickle), ("evil_legacy", legacy_pickle)):
        write(root / f"{name}.pt", paths["marker"])
        paths[name] = root / f"{name}.pt"
    assert not paths["marker"].exists()
    return paths


def _argv(row: Callable[[dict, Path], list[str]], world: dict, out: Path) -> list[str]:
    return [str(a) for a in row(world, out)]


# Each row: (argv from the world's files and the --out folder, what stderr must say).
ROWS: dict[str, tuple[Callable[[dict, Path], list], str]] = {
    # ----------------------------------------------------------- damaged checkpoints
    "dissect --generator FILE.safetensors, truncated": (
        lambda w, o: ["dissect", "--generator", w["generator_file_cut"], "--segmenter",
                      "conftest:toy_segmenter", *QUICK_DISSECT, "--out", o],
        r"cannot read .*generator_cut.safetensors as safetensors .*damaged or truncated; "
        r"download or export it again"),
    "dissect --generator proggan:PATH, truncated": (
        lambda w, o: ["dissect", "--generator", f"proggan:{w['proggan_cut']}", "--segmenter",
                      "conftest:toy_segmenter", *QUICK_DISSECT, "--out", o],
        r"cannot read .*church_cut.pth as a PyTorch checkpoint .*damaged or truncated; "
        r"download it again"),
    "dissect --generator stylegan2:PATH, a pickle with code": (
        lambda w, o: ["dissect", "--generator", f"stylegan2:{w['evil_zip']}", "--segmenter",
                      "conftest:toy_segmenter", *QUICK_DISSECT, "--out", o],
        r"refusing to load .*evil_zip.pt: it is a pickle that would run Python code.*re-save"),
    "dissect --segmenter FILE.safetensors, empty": (
        lambda w, o: ["dissect", "--generator", "conftest:toy_generator", "--segmenter",
                      w["segmenter_file_empty"], *QUICK_DISSECT, "--out", o],
        r"cannot read .*segmenter_empty.safetensors as safetensors .*damaged or truncated"),
    "edit --generator proggan:PATH, a legacy pickle with code": (
        lambda w, o: ["edit", "--generator", f"proggan:{w['evil_legacy']}", "--units", "1",
                      "--samples", "1", "--out", o],
        r"refusing to load .*evil_legacy.pt: it is a pickle that would run Python code"),
    "ace --generator proggan:PATH, NaN weights": (
        lambda w, o: ["ace", "--generator", f"proggan:{w['proggan_nan']}", "--segmenter",
                      "conftest:toy_segmenter", "--concept", "tree", "--samples", "2",
                      "--cache", o / "cache", "--quiet"],
        r"church_nan.pth holds NaN or infinite weights .*use an earlier checkpoint"),
    "netdissect --weights PATH, a pickle with code": (
        lambda w, o: ["netdissect", "--classifier", f"torchvision:{ARCH}", "--weights",
                      w["evil_zip"], "--out", o, "--quiet", "--device", "cpu"],
        r"refusing to load .*evil_zip.pt: it is a pickle that would run Python code"),
    "netdissect --weights PATH, truncated": (
        lambda w, o: ["netdissect", "--classifier", f"torchvision:{ARCH}", "--weights",
                      w["weights_cut"], "--out", o, "--quiet", "--device", "cpu"],
        r"cannot read .*places_cut.pth as a PyTorch checkpoint .*damaged or truncated"),
    "netdissect --classifier FILE.safetensors of a segmenter": (
        lambda w, o: ["netdissect", "--classifier", w["segmenter_file"], "--out", o, "--quiet",
                      "--device", "cpu"],
        r"segmenter.safetensors holds a segmenter, not a classifier"),
    "evaluate-attribution --weights PATH, a web page": (
        lambda w, o: ["evaluate-attribution", "--classifier", f"torchvision:{ARCH}",
                      "--weights", w["weights_html"], "--n", "1", "--quiet"],
        r"cannot read .*places_html.pth: not a PyTorch checkpoint, or a damaged one; download"),
    # ------------------------------------------------------------ NaN activations
    "dissect, a layer that outputs NaN": (
        lambda w, o: ["dissect", "--generator", NAN_GENERATOR, "--segmenter",
                      "conftest:toy_segmenter", "--layer", "layer4.1", *QUICK_DISSECT,
                      "--out", o],
        r"NaN or infinite values; check the model's activations"),
    "edit, a layer that outputs NaN": (
        lambda w, o: ["edit", "--generator", NAN_GENERATOR, "--layer", "layer4.1", "--units",
                      "1", "--samples", "1", "--out", o],
        r"the edited layer outputs NaN or infinite values; check the generator's weights"),
    "ace, a layer that outputs NaN": (
        lambda w, o: ["ace", "--generator", NAN_GENERATOR, "--segmenter",
                      "conftest:toy_segmenter", "--layer", "layer4.1", "--concept", "tree",
                      "--samples", "2", "--dissect-samples", "8", "--cache", o / "cache",
                      "--quiet"],
        r"NaN or infinite values; check the model's activations"),
    "netdissect, a layer that outputs NaN": (
        lambda w, o: ["netdissect", "--classifier", "conftest:nan_classifier",
                      "--layer", "layer4", "--dataset", f"folder:{w['images']}", "--segmenter",
                      "conftest:toy_segmenter", "--out", o, "--quiet", "--device", "cpu"],
        r"NaN or infinite values; check the model's activations"),
    # ------------------------------------------------------------------- masks
    "edit --mask all black": (
        lambda w, o: ["edit", *TOY, "--units", "1", "--samples", "1", "--mask",
                      w["mask_black"], "--out", o],
        r"mask_black.png is all black, so it edits nothing; paint the region to edit in white"),
    "edit --mask of the wrong size": (
        lambda w, o: ["edit", *TOY, "--units", "1", "--samples", "1", "--mask",
                      w["mask_small"], "--out", o],
        r"mask_small.png is 32x32; paint it at the generator's 64x64"),
    "edit --mask that is not an image": (
        lambda w, o: ["edit", *TOY, "--units", "1", "--samples", "1", "--mask",
                      w["mask_text"], "--out", o],
        r"cannot read the mask .*mask_text.png .*; give a grayscale PNG"),
    "edit --mask truncated": (
        lambda w, o: ["edit", *TOY, "--units", "1", "--samples", "1", "--mask",
                      w["mask_cut"], "--out", o],
        r"cannot read the mask .*mask_cut.png .*; give a grayscale PNG"),
    "edit --mask missing": (
        lambda w, o: ["edit", *TOY, "--units", "1", "--samples", "1", "--mask",
                      w["root"] / "nothing.png", "--out", o],
        r"the mask .*nothing.png does not exist"),
    "edit --box empty": (
        lambda w, o: ["edit", *TOY, "--units", "1", "--samples", "1", "--box", "0,0,0,0",
                      "--out", o],
        r"--box 0,0,0,0 is empty: bottom must exceed top and right exceed left"),
    "edit --box upside down": (
        lambda w, o: ["edit", *TOY, "--units", "1", "--samples", "1", "--box", "30,10,20,40",
                      "--out", o],
        r"--box 30,10,20,40 is empty"),
    "edit --box outside the image": (
        lambda w, o: ["edit", *TOY, "--units", "1", "--samples", "1", "--box", "0,0,65,64",
                      "--out", o],
        r"--box must lie inside the 64x64 image"),
    "edit --box of three numbers": (
        lambda w, o: ["edit", *TOY, "--units", "1", "--samples", "1", "--box", "1,2,3",
                      "--out", o],
        r"--box takes four integers: top,left,bottom,right"),
    "edit --strength above 1": (
        lambda w, o: ["edit", *TOY, "--units", "1", "--samples", "1", "--strength", "2",
                      "--out", o],
        r"stroke strength must lie in \[0, 1\], got 2.0"),
    # ---------------------------------------------------------- unit ids out of range
    "edit --units beyond the layer": (
        lambda w, o: ["edit", *TOY, "--units", "3,99", "--samples", "1", "--out", o],
        r"unit ids must lie in \[0, 31\], got \[3, 99\]"),
    "edit --units negative": (
        lambda w, o: ["edit", *TOY, "--units", "-1", "--samples", "1", "--out", o],
        r"unit ids must lie in \[0, 31\], got \[-1\]"),
    "edit --units not numbers": (
        lambda w, o: ["edit", *TOY, "--units", "tree,sky", "--samples", "1", "--out", o],
        r"--units takes comma-separated unit ids, e.g. 3,17,42"),
    "edit --units fractional": (
        lambda w, o: ["edit", *TOY, "--units", "1.5", "--samples", "1", "--out", o],
        r"--units takes comma-separated unit ids"),
    "ace --units beyond the layer": (
        lambda w, o: ["ace", *TOY, "--concept", "tree", "--units", "999", "--samples", "2",
                      "--dissection", w["dissection"], "--cache", o / "cache", "--quiet"],
        r"--units must lie in \[1, 32\] for layer 'layer4'"),
    # ------------------------------------------------------ unknown concepts and layers
    "edit --concept unknown": (
        lambda w, o: ["edit", *TOY, "--concept", "unicorn", "--dissection", w["dissection"],
                      "--samples", "1", "--out", o],
        r"unknown concept 'unicorn'; the segmenter knows: grass, sky, tree"),
    "ace --concept unknown": (
        lambda w, o: ["ace", *TOY, "--concept", "unicorn", "--samples", "2", "--dissection",
                      w["dissection"], "--cache", o / "cache", "--quiet"],
        r"unknown concept 'unicorn'; the segmenter knows: grass, sky, tree"),
    "ace --keep -1": (
        lambda w, o: ["ace", *TOY, "--concept", "tree", "--keep", "-1", "--samples", "2",
                      "--dissection", w["dissection"], "--cache", o / "cache", "--quiet"],
        r"--keep must be a finite number >= 0, got -1.0"),
    "ace --keep nan": (
        lambda w, o: ["ace", *TOY, "--concept", "tree", "--keep", "nan", "--samples", "2",
                      "--dissection", w["dissection"], "--cache", o / "cache", "--quiet"],
        r"--keep must be a finite number >= 0, got nan"),
    "ace --concept none": (
        lambda w, o: ["ace", *TOY, "--concept", "none", "--samples", "2", "--dissection",
                      w["dissection"], "--cache", o / "cache", "--quiet"],
        r"unknown concept 'none'; the segmenter knows"),
    "edit --concept, a layer the dissection lacks": (
        lambda w, o: ["edit", *TOY, "--layer", "output_64x64", "--concept", "tree",
                      "--dissection", w["dissection"], "--samples", "1", "--out", o],
        r"dissection .* has no layer 'output_64x64' \(it has layer4\); use --layer layer4, or "
        r"dissect this layer with `gandissect dissect --layer output_64x64`"),
    "edit --mode insert, a layer the dissection lacks": (
        lambda w, o: ["edit", *TOY, "--layer", "output_64x64", "--units", "1", "--mode",
                      "insert", "--dissection", w["dissection"], "--samples", "1", "--out", o],
        r"dissection .* has no layer 'output_64x64'"),
    "edit --dissection of another generator": (
        lambda w, o: ["edit", *TOY, "--latent", "uniform", "--concept", "tree", "--dissection",
                      w["dissection"], "--samples", "1", "--out", o],
        r"dissection in .* was computed for another generator"),
    "edit --dissection labelled by another segmenter": (
        lambda w, o: ["edit", "--generator", "conftest:toy_generator", "--segmenter",
                      "conftest:labels_only_segmenter", "--concept", "tree", "--dissection",
                      w["dissection"], "--samples", "1", "--out", o],
        r"dissection in .* was labelled by another segmenter; make one .* same --segmenter"),
    "ace, a plug-in segmenter without probabilities": (
        lambda w, o: ["ace", "--generator", "conftest:toy_generator", "--segmenter",
                      "conftest:labels_only_segmenter", "--concept", "tree", "--cache",
                      o / "cache", "--quiet"],
        r"the segmenter LabelsOnly cannot learn causal effects: it needs probabilities\(images\)"),
    "app --weights that do not fit": (
        lambda w, o: ["app", "--classifier", "torchvision:resnet34", "--weights",
                      w["weights"], "--cache", o / "cache"],
        r"places.pth does not fit ResNet; missing keys: conv1.weight"),
    "edit --dissection without one": (
        lambda w, o: ["edit", *TOY, "--concept", "tree", "--dissection", w["root"] / "none",
                      "--samples", "1", "--out", o],
        r"no dissect.json in .*none; run `gandissect dissect` first"),
    "dissect --layer unknown": (
        lambda w, o: ["dissect", *TOY, "--layer", "layer9", *QUICK_DISSECT, "--out", o],
        r"no layer named 'layer9' in ToyScenes. Did you mean layer4\?"),
    "dissect --layer that returns a tuple": (
        lambda w, o: ["dissect", "--generator", "conftest:tuple_generator",
                      "--segmenter", "conftest:toy_segmenter", "--layer", "layer4.1",
                      *QUICK_DISSECT, "--out", o],
        r"layer 'layer4.1' returns tuple, not a tensor; trace a submodule whose output"),
    # -------------------------------------------------------------- folders of images
    "netdissect --dataset folder:DIR with an unreadable file": (
        lambda w, o: ["netdissect", "--classifier", TINY_CLASSIFIER, "--layer", "layer4",
                      "--dataset", f"folder:{w['broken_images']}", "--segmenter",
                      "conftest:toy_segmenter", "--out", o, "--quiet", "--device", "cpu"],
        r"1 of 2 images cannot be read: .*download.jpg.*; remove or convert them"),
    "netdissect --dataset folder:DIR without images": (
        lambda w, o: ["netdissect", "--classifier", TINY_CLASSIFIER, "--layer", "layer4",
                      "--dataset", f"folder:{w['no_images']}", "--segmenter",
                      "conftest:toy_segmenter", "--out", o, "--quiet", "--device", "cpu"],
        r"no_images holds no images \(.jpg, .jpeg, .png files, searched recursively\)"),
    "netdissect --dataset folder:DIR missing": (
        lambda w, o: ["netdissect", "--classifier", TINY_CLASSIFIER, "--layer", "layer4",
                      "--dataset", f"folder:{w['root'] / 'elsewhere'}", "--segmenter",
                      "conftest:toy_segmenter", "--out", o, "--quiet", "--device", "cpu"],
        r"image folder .*elsewhere does not exist"),
    # ------------------------------------------------------------------ zero samples
    "dissect --samples 0": (
        lambda w, o: ["dissect", *TOY, "--samples", "0", "--out", o],
        r"need at least one sample \(n >= 1\), got 0"),
    "ace --samples 0": (
        lambda w, o: ["ace", *TOY, "--concept", "tree", "--samples", "0", "--dissection",
                      w["dissection"], "--cache", o / "cache", "--quiet"],
        r"--samples, --units, --selection-samples and --dissect-samples must be positive"),
    "ace --selection-samples 0": (
        lambda w, o: ["ace", *TOY, "--concept", "tree", "--samples", "2", "--selection-samples",
                      "0", "--dissection", w["dissection"], "--cache", o / "cache", "--quiet"],
        r"--selection-samples and --dissect-samples must be positive"),
    "ace --dissect-samples 0": (
        lambda w, o: ["ace", *TOY, "--concept", "tree", "--samples", "2", "--dissect-samples",
                      "0", "--cache", o / "cache", "--quiet"],
        r"--selection-samples and --dissect-samples must be positive"),
    "ace --epochs -1": (
        lambda w, o: ["ace", *TOY, "--concept", "tree", "--samples", "2", "--epochs", "-1",
                      "--dissection", w["dissection"], "--cache", o / "cache", "--quiet"],
        r"--epochs must be 0 or more, got -1"),
    "edit --samples 0": (
        lambda w, o: ["edit", *TOY, "--units", "1", "--samples", "0", "--out", o],
        r"--samples, --k and --scale must be positive"),
    "edit --k 0": (
        lambda w, o: ["edit", *TOY, "--concept", "tree", "--k", "0", "--dissection",
                      w["dissection"], "--samples", "1", "--out", o],
        r"--samples, --k and --scale must be positive"),
    "netdissect --n 0": (
        lambda w, o: ["netdissect", "--classifier", TINY_CLASSIFIER, "--layer", "layer4",
                      "--n", "0", "--out", o, "--quiet", "--device", "cpu"],
        r"--n must be at least 1, got 0"),
    "netdissect-experiment layers --n 0": (
        lambda w, o: ["netdissect-experiment", "layers", "--n", "0", "--out", o, "--quiet"],
        r"need at least one sample \(n >= 1\), got 0"),
    "eval segmenter --n 0": (
        lambda w, o: ["eval", "segmenter", "--n", "0", "--quiet"],
        r"--n must be at least 1, got 0"),
    "eval classifier --n -3": (
        lambda w, o: ["eval", "classifier", "--n", "-3", "--quiet"],
        r"--n must be at least 1, got -3"),
    "train generator --workers -1": (
        lambda w, o: ["train", "generator", "--run", o, "--workers", "-1", "--device", "cpu"],
        r"--workers must be 0 or more, got -1"),
    "train generator --semantic without --branch": (
        lambda w, o: ["train", "generator", "--run", o, "--semantic", "--device", "cpu"],
        r"--semantic adds a critic to a run started here: give --branch OLD_RUN or "
        r"--from-weights FILE"),
    "train generator --from-weights of no file": (
        lambda w, o: ["train", "generator", "--run", o, "--from-weights",
                      w["root"] / "none.safetensors", "--device", "cpu"],
        r"no weights at .*none.safetensors"),
    "train generator --branch from no run": (
        lambda w, o: ["train", "generator", "--run", o, "--branch", w["root"] / "no_run",
                      "--semantic", "--device", "cpu"],
        r"no checkpoint in .*no_run to branch from: train it first"),
    "evaluate-attribution --n 0": (
        lambda w, o: ["evaluate-attribution", "--n", "0", "--json", "--quiet"],
        r"need n >= 1, batch >= 1"),
}


# Rows whose problem shows only once the job runs (activations, a layer's output type, units
# counted from the dissection): their folder may hold the job's lock and cache, never a result.
# Every other row is refused before its output folder is made.
SEEN_WHILE_RUNNING = {"dissect, a layer that outputs NaN", "ace, a layer that outputs NaN",
                      "netdissect, a layer that outputs NaN", "ace --units beyond the layer",
                      "dissect --layer that returns a tuple"}


@pytest.mark.parametrize("row", ROWS)
def test_bad_input_fails_clearly_and_leaves_no_result(world, tmp_path, capsys, row):
    make_argv, message = ROWS[row]
    out = tmp_path / "out"
    assert main(_argv(make_argv, world, out)) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "gandissect: error: " in err and "Traceback" not in err
    assert results_in(out) == []
    assert row in SEEN_WHILE_RUNNING or not out.exists(), "made before the inputs were checked"
    assert not list(tmp_path.rglob("*.tmp")) and not list(world["root"].rglob("*.tmp"))
    assert not world["marker"].exists()


@pytest.mark.parametrize("command", [["train", "generator", "--run", "RUN"],
                                     ["eval", "generator"], ["dissect"], ["app"]])
def test_an_unknown_or_absent_device_is_refused_before_any_work(tmp_path, capsys, command):
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in command]
    for device, message in [("gpu", "unknown device 'gpu': use cpu, cuda or cuda:N"),
                            ("cuda:0", "torch sees no CUDA GPU on this machine")]:
        if device.startswith("cuda") and torch.cuda.is_available():
            continue
        with pytest.raises(SystemExit) as stop:
            main([*argv, "--device", device])
        assert stop.value.code == 2
        assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_dissection_the_rows_use_is_whole(world):
    # rows that fail on a concept, a layer or a unit must not fail for want of a dissection
    assert {p.name for p in world["dissection"].iterdir()} >= {"dissect.json",
                                                                "stats_layer4.pt"}


# ------------------------------------------------------ masks that work: full and RGBA
def _edit_picture(world, out, *mask):
    assert main(["edit", *TOY, "--units", ",".join(map(str, range(10))), "--samples", "2",
                 *mask, "--out", str(out)]) == 0
    return np.asarray(Image.open(out / "edit.png"))


@pytest.mark.parametrize("mask", ["mask_white", "mask_rgba_white"])
def test_a_full_mask_edits_as_no_mask_does(world, tmp_path, capsys, mask):
    everywhere = _edit_picture(world, tmp_path / "everywhere")
    masked = _edit_picture(world, tmp_path / "masked", "--mask", str(world[mask]))
    assert np.array_equal(masked, everywhere)
    boxed = _edit_picture(world, tmp_path / "boxed", "--box", "0,0,32,32")
    assert not np.array_equal(boxed, everywhere)  # a mask does matter when it is not full


def test_eval_generator_writes_no_grid_when_the_evaluation_fails(tmp_path, capsys,
                                                                 monkeypatch):
    from gandissect.models import registry

    monkeypatch.setattr(registry, "load_generator", lambda name="sceneworld", device="cpu":
                        toy_generator())
    for name in ("load_segmenter", "load_classifier"):  # not reached: the count fails first
        monkeypatch.setattr(registry, name, lambda *_, **__: None)
    grid = tmp_path / "grid.png"
    assert main(["eval", "generator", "--n", "5", "--grid", str(grid), "--quiet"]) == 2
    assert "need n >= 10 images" in capsys.readouterr().err
    assert not grid.exists()


# --------------------------------- damaged results and caches (files outside this territory)
def _dissect_again(world, out, capsys):
    code = main(["dissect", *TOY, "--layer", "layer4", *QUICK_DISSECT, "--out", str(out)])
    return code, capsys.readouterr().err


def _fresh_dissection(world, tmp_path) -> Path:
    import shutil

    out = tmp_path / "dissection"
    shutil.copytree(world["dissection"], out)
    return out


def _recomputed(code, err, out, reference) -> None:
    """A damaged cache file is a cache: it is computed again, to the same result."""
    assert code == 0, err
    assert (out / "dissect.json").read_text() == reference


def test_a_truncated_statistics_checkpoint_in_the_cache(world, tmp_path, capsys):
    out = _fresh_dissection(world, tmp_path)
    reference = (out / "dissect.json").read_text()
    (state,) = (out / "cache").rglob("state.pt")
    state.write_bytes(state.read_bytes()[:len(state.read_bytes()) // 2])
    code, err = _dissect_again(world, out, capsys)
    _recomputed(code, err, out, reference)


def test_a_garbled_label_store_in_the_cache(world, tmp_path, capsys):
    import shutil

    out = _fresh_dissection(world, tmp_path)
    reference = (out / "dissect.json").read_text()
    for layer_cache in (out / "cache").glob("layer-*"):
        shutil.rmtree(layer_cache)  # so that the labels are read again
    (meta,) = (out / "cache").rglob("meta.json")
    meta.write_text("{garbage")
    code, err = _dissect_again(world, out, capsys)
    _recomputed(code, err, out, reference)


def test_a_truncated_dissect_json(world, tmp_path, capsys):
    out = _fresh_dissection(world, tmp_path)
    text = (out / "dissect.json").read_text()
    (out / "dissect.json").write_text(text[:len(text) // 2])
    assert main(["edit", *TOY, "--concept", "tree", "--dissection", str(out), "--samples", "1",
                 "--out", str(tmp_path / "edit")]) == 2
    err = capsys.readouterr().err
    assert "dissect.json" in err and "gandissect dissect" in err, err
    assert results_in(tmp_path / "edit") == []


def test_truncated_layer_statistics(world, tmp_path, capsys):
    out = _fresh_dissection(world, tmp_path)
    stats = out / "stats_layer4.pt"
    stats.write_bytes(stats.read_bytes()[:len(stats.read_bytes()) // 2])
    assert main(["edit", *TOY, "--concept", "tree", "--dissection", str(out), "--samples", "1",
                 "--out", str(tmp_path / "edit")]) == 2
    err = capsys.readouterr().err
    assert "stats_layer4.pt" in err and "gandissect dissect" in err, err
    assert results_in(tmp_path / "edit") == []
