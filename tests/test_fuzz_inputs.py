"""Fuzzing the library with bad inputs, one table row per case: NaN or infinite activations,
empty and full masks, unit ids out of range, unknown concepts, tensors of the wrong shape,
images of the wrong size, mode or type, and zero samples.

Each case either fails with an error whose message says what is wrong (and, where there is
something to do, what), or is a documented no-op whose result is checked (an empty mask edits
nothing, a full mask edits everywhere). The models are small: the app's toy generator and
segmenter (``conftest``), a toy whose traced layer goes bad (``poisoned_generator``) and a
one-layer classifier. The command-line side of the same inputs is in ``test_fuzz_cli``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    INF,
    NAN,
    UNITS,
    TinyClassifier,
    flat_generator,
    nan_classifier,
    poisoned_generator,
    rgb_pixels,
    toy_generator,
    toy_segmenter,
    tuple_generator,
)
from PIL import Image

from gandissect.attribute import (
    GradCAM,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Occlusion,
    Saliency,
    ScoreCAM,
    SmoothGrad,
)
from gandissect.causal import ConceptRef, insertion_by_context, removal, select_by_ace
from gandissect.dissect import dissect
from gandissect.hooks import Edit, Trace, edit_alpha, partial_forward
from gandissect.intervene import Stroke, render_edited
from gandissect.netdissect import FolderProbe, SceneWorldProbe, netdissect
from gandissect.netdissect.folder import load_image
from gandissect.netdissect.probe import ProbeSet
from gandissect.stats import ConditionalMean, IoUTally, Quantile, TopK

BAD_VALUES = [pytest.param(NAN, id="nan"), pytest.param(INF, id="inf"),
              pytest.param(-INF, id="-inf")]


# ---------------------------------------------------------------------------- small models
@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    return toy_generator(), toy_segmenter(), torch.randn(3, 16)


# ------------------------------------------------------------- NaN or infinite activations
def _quantile_large(values):
    Quantile().add(values.expand(Quantile.flush_values, 3))  # the unpooled path


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("add", [
    pytest.param(lambda v: Quantile().add(v), id="Quantile.add"),
    pytest.param(_quantile_large, id="Quantile.add-large-batch"),
    pytest.param(lambda v: Quantile().add_maps(v[:, :, None, None]), id="Quantile.add_maps"),
    pytest.param(lambda v: ConditionalMean().add(v[:, :, None, None],
                                                 torch.ones(1, 2, 1, 1, dtype=torch.bool)),
                 id="ConditionalMean.add"),
])
def test_statistics_refuse_non_finite_activations(add, value):
    values = torch.tensor([[0.5, value, 1.0]])
    with pytest.raises(ValueError, match="NaN or infinite.*(check the model|activations)"):
        add(values)


def test_top_k_refuses_nan_scores():
    with pytest.raises(ValueError, match="TopK.add: scores contain NaN"):
        TopK(2).add(torch.tensor([[0.5, NAN]]), [0])


@pytest.mark.parametrize("value", BAD_VALUES)
def test_dissect_refuses_a_layer_with_non_finite_activations(toy, tmp_path, value):
    _, segmenter, _ = toy
    with pytest.raises(ValueError, match="NaN or infinite values; check the model's activ"):
        dissect(poisoned_generator(value), segmenter, ["layer4.1"], n=8, batch=4,
                cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("intervene", [
    pytest.param(lambda g, s, z: render_edited(g, z, "layer4.1", [Stroke([1])]), id="ablate"),
    pytest.param(lambda g, s, z: render_edited(g, z, "layer4.1", [Stroke([1], "insert")],
                                               torch.ones(UNITS)), id="insert"),
    pytest.param(lambda g, s, z: removal(g, s, "layer4.1", [1], ConceptRef.find(s, "tree"),
                                         n=2, progress=False), id="removal"),
])
def test_interventions_refuse_a_layer_with_non_finite_activations(toy, intervene, value):
    _, segmenter, z = toy  # no edit can repair NaN (x * 0 is NaN): say so instead of drawing it
    with pytest.raises(ValueError, match="edited layer outputs NaN or infinite values"):
        intervene(poisoned_generator(value), segmenter, z)


def test_netdissect_refuses_a_layer_with_non_finite_activations():
    probe = SceneWorldProbe(seed=1001, n=4, size=32)
    with pytest.raises(ValueError, match="NaN or infinite values"):
        netdissect(nan_classifier(), "layer4", probe, batch=4)


@pytest.mark.parametrize("q", [NAN, -0.1, 1.5, [0.5, NAN]])
def test_quantile_levels_outside_zero_one_are_refused(q):
    sketch = Quantile()
    sketch.add(torch.randn(50, 2))
    with pytest.raises(ValueError, match=r"quantiles must lie in \[0, 1\]"):
        sketch.quantiles(q)


# ------------------------------------------------------------------- empty and full masks
NO_OPS = {  # documented in Stroke: these edit nothing
    "all-zero mask": Stroke([0, 1, 2], mask=torch.zeros(64, 64)),
    "all-zero mask per image": Stroke([0, 1, 2], mask=torch.zeros(3, 64, 64)),
    "strength 0": Stroke([0, 1, 2], mask=torch.ones(64, 64), strength=0.0),
    "no units": Stroke([], mask=torch.ones(64, 64)),
    "insert no units": Stroke([], "insert"),
}


@pytest.mark.parametrize("stroke", NO_OPS)
def test_empty_edits_leave_the_images_unchanged(toy, stroke):
    generator, _, z = toy
    with torch.no_grad():
        clean = generator(z)
    edited = render_edited(generator, z, "layer4", [NO_OPS[stroke]], torch.ones(UNITS))
    assert torch.equal(edited, clean)


@pytest.mark.parametrize("mask", [
    pytest.param(torch.ones(64, 64), id="image-size"),
    pytest.param(torch.ones(8, 8), id="layer-size"),
    pytest.param(torch.ones(3, 64, 64), id="per-image"),
    pytest.param(torch.ones(1, 64, 64), id="one-for-all"),
])
@pytest.mark.parametrize("mode", ["ablate", "insert"])
def test_a_full_mask_edits_exactly_as_no_mask(toy, mask, mode):
    generator, _, z = toy
    values = torch.linspace(0.5, 2.0, UNITS)
    trees = list(range(10))  # the toy's tree units: ablating them all removes its trees
    everywhere = render_edited(generator, z, "layer4", [Stroke(trees, mode)], values)
    masked = render_edited(generator, z, "layer4", [Stroke(trees, mode, mask)], values)
    assert torch.equal(masked, everywhere)
    with torch.no_grad():
        assert not torch.equal(everywhere, generator(z))  # the edit does change the images


@pytest.mark.parametrize("mask, message", [
    (torch.full((64, 64), NAN), r"mask values must lie in \[0, 1\]"),
    (torch.full((64, 64), 255.0), r"\[0, 1\] \(divide 8-bit masks by 255\)"),
    (-torch.ones(64, 64), r"mask values must lie in \[0, 1\]"),
    (torch.ones(64), r"mask must be \(H, W\) or \(N, H, W\), got shape \(64,\)"),
    (torch.ones(1, 1, 64, 64), r"mask must be \(H, W\) or \(N, H, W\)"),
    (torch.ones(63, 63), r"63x63 mask does not divide into the layer's 8x8 cells"),
    (torch.ones(2, 64, 64), r"2 masks for a batch of 3 images; give one \(H, W\) mask or one"),
], ids=["nan", "0-255", "negative", "1-D", "4-D", "not-divisible", "batch-mismatch"])
def test_bad_masks_say_what_is_wrong(toy, mask, message):
    generator, _, z = toy
    with pytest.raises(ValueError, match=message):
        render_edited(generator, z, "layer4", [Stroke([1], mask=mask)])


@pytest.mark.parametrize("alpha", [
    pytest.param(edit_alpha([], UNITS), id="no-units"),
    pytest.param(edit_alpha([1, 2], UNITS, mask=torch.zeros(8, 8)), id="zero-mask"),
    pytest.param(edit_alpha(None, UNITS, strength=0.0), id="strength-0"),
])
def test_empty_edit_hooks_leave_the_output_unchanged(toy, alpha):
    generator, _, z = toy
    with torch.no_grad():
        clean = generator(z)
        with Edit(generator, "layer4", alpha=alpha, value=5.0):
            edited = generator(z)
    assert torch.equal(edited, clean)


# --------------------------------------------------------------------- unit ids out of range
@pytest.mark.parametrize("units, message", [
    ([-1], r"unit ids must lie in \[0, 31\], got \[-1\]"),
    ([UNITS], r"unit ids must lie in \[0, 31\], got \[32\]"),
    ([0, 999], r"unit ids must lie in \[0, 31\]"),
    ([1.5], r"unit ids must be integers, got \[1.5\]"),
    (["3"], r"unit ids must be integers"),
    ([None], r"unit ids must be integers"),
])
def test_unit_ids_out_of_range_or_not_integers(toy, units, message):
    generator, _, z = toy
    with pytest.raises(ValueError, match=message):
        render_edited(generator, z, "layer4", [Stroke(units)])


@pytest.mark.parametrize("call, message", [
    (lambda g, s, z: edit_alpha([UNITS], UNITS), r"unit ids must lie in \[0, 31\]"),
    (lambda g, s, z: _edit(g, z, value=torch.ones(5)),
     r"value has 5 entries but layer 'layer4' has 32 units"),
    (lambda g, s, z: _edit(g, z, alpha=torch.ones(3, 3)),
     r"edit alpha of shape \(3, 3\) does not broadcast against the output of 'layer4'"),
    (lambda g, s, z: render_edited(g, z, "layer4", [Stroke([1], "insert")], torch.ones(5)),
     r"insert_values has 5 entries for 32 units"),
    (lambda g, s, z: render_edited(g, z, "layer4", [Stroke([1], "insert")],
                                   torch.full((UNITS,), NAN)),
     r"insert_values holds NaN or infinite values"),
    (lambda g, s, z: removal(g, s, "layer4", [UNITS], ConceptRef.find(s, "tree"), n=2,
                             progress=False), r"unit ids must lie in \[0, 31\]"),
    (lambda g, s, z: insertion_by_context(g, s, "layer4", [1], ConceptRef.find(s, "tree"),
                                          torch.ones(UNITS), contexts=("sky",), n=2, cell=9,
                                          progress=False),
     r"cell must lie in \[1, 8\] for the 8x8 layer"),
], ids=["edit_alpha", "Edit-value", "Edit-alpha", "insert-values-length", "insert-values-nan",
        "removal", "insertion-cell"])
def test_units_and_their_values_must_fit_the_layer(toy, call, message):
    generator, segmenter, z = toy
    with pytest.raises(ValueError, match=message):
        call(generator, segmenter, z)


def _edit(generator, z, alpha=1.0, value=0.0):
    with torch.no_grad(), Edit(generator, "layer4", alpha=alpha, value=value):
        return generator(z)


# -------------------------------------------------------------------------- unknown concepts
class TwoWaterSegmenter:
    """A segmenter with "water" both as an object and as a material."""

    categories = ["object", "material"]
    concepts = {"object": ["none", "tree", "water"], "material": ["none", "water", "brick"]}


@pytest.mark.parametrize("name, category, message", [
    ("unicorn", None, r"unknown concept 'unicorn'; the segmenter knows: grass, sky, tree"),
    ("none", None, r"unknown concept 'none'; the segmenter knows"),
    ("", None, r"unknown concept ''"),
    ("Tree", None, r"unknown concept 'Tree'; the segmenter knows: grass, sky, tree"),
    ("tree", "part", r"unknown concept 'tree'"),
])
def test_unknown_concepts_list_the_known_ones(toy, name, category, message):
    with pytest.raises(ValueError, match=message):
        ConceptRef.find(toy[1], name, category)


def test_an_ambiguous_concept_asks_for_its_category():
    with pytest.raises(ValueError, match=r"'water' is in several categories "
                                         r"\(object, material\); say which"):
        ConceptRef.find(TwoWaterSegmenter(), "water")
    assert ConceptRef.find(TwoWaterSegmenter(), "water", "material").code == 1


def test_unknown_context_objects_are_named(toy):
    generator, segmenter, _ = toy
    with pytest.raises(ValueError, match=r"unknown context objects \['castle'\]"):
        insertion_by_context(generator, segmenter, "layer4", [1], ConceptRef.find(
            segmenter, "tree"), torch.ones(UNITS), contexts=("sky", "castle"), n=2,
            progress=False)


# ------------------------------------------------------------------ tensors of wrong shape
@pytest.mark.parametrize("call, message", [
    (lambda: Quantile().add(torch.ones(5)), r"Quantile.add expects \(N, units\), got shape"),
    (lambda: Quantile().add(torch.ones(2, 3, 4)), r"Quantile.add expects \(N, units\)"),
    (lambda: Quantile().add_maps(torch.ones(5)), r"expected \(batch, units, ...\) activations"),
    (lambda: Quantile(units=4).add(torch.ones(2, 3)), r"this statistic has 4 units, the batch"),
    (lambda: TopK(2).add(torch.ones(3, 4), [0, 1]), r"need one id per row of scores"),
    (lambda: TopK(2).add(torch.ones(4), [0]), r"TopK.add expects \(N, units\) scores"),
    (lambda: IoUTally([0, 0]).add(torch.ones(1, 2, 4, 4), torch.ones(1, 2, 8, 8)),
     r"unit masks are \(4, 4\) but concept masks are \(8, 8\); upsample"),
    (lambda: IoUTally([0, 0]).add(torch.ones(1, 2, 4, 4), torch.ones(1, 3, 4, 4)),
     r"3 concept masks for 2 concepts"),
    (lambda: ConditionalMean().add(torch.ones(2, 3, 4, 4), torch.ones(2, 1, 8, 8)),
     r"must share batch and spatial shape"),
], ids=["quantile-1d", "quantile-3d", "maps-1d", "unit-count", "topk-ids", "topk-1d",
        "iou-spatial", "iou-concepts", "conditional-mean"])
def test_statistics_name_the_shape_they_expect(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("call, message", [
    (lambda z: partial_forward(tuple_generator(), "layer4.1", z),
     r"layer 'layer4.1' returns tuple, not a tensor; trace a submodule whose output is a"),
    (lambda z: render_edited(tuple_generator(), z, "layer4.1", [Stroke([1])]),
     r"layer 'layer4.1' returns tuple, not a tensor"),
    (lambda z: render_edited(flat_generator(), z, "layer4.1", [Stroke([1])]),
     r"edits need a \(N, units, h, w\) layer output, got \(3, 2048\)"),
    (lambda z: dissect(flat_generator(), toy_segmenter(), ["layer4.1"], n=4, progress=False),
     r"outputs shape \(1, 2048\); dissection needs a convolutional \(N, units, H, W\)"),
    (lambda z: partial_forward(toy_generator(), "layer5", z),
     r"no layer named 'layer5' in ToyScenes. Did you mean layer4\? Valid layers: layer4"),
], ids=["trace-tuple", "edit-tuple", "edit-flat", "dissect-flat", "unknown-layer"])
def test_layers_of_the_wrong_kind_say_so(toy, call, message):
    with pytest.raises(ValueError, match=message):
        call(toy[2])


def test_a_tuple_layer_leaves_no_hook_behind(toy):
    generator = tuple_generator()
    with pytest.raises(ValueError), Trace(generator, "layer4.1"):
        generator(toy[2])
    assert not any(m._forward_hooks for m in generator.modules())


# --------------------------------------------------------- images of wrong size, mode, type
SIZE = 32
RNG = np.random.default_rng(0)
RGB = rgb_pixels()
WIDE = RNG.integers(0, 65536, (40, 60), dtype=np.uint16)
ODD_IMAGES = {  # name: (file name, the image, save options)
    "grey": ("grey.png", lambda: Image.fromarray(RGB[..., 0]), {}),
    "grey+alpha": ("la.png", lambda: Image.fromarray(RGB[..., :2].copy()).convert("LA"), {}),
    "RGBA": ("rgba.png", lambda: Image.fromarray(np.dstack([RGB, RGB[..., :1]])), {}),
    "palette": ("palette.png", lambda: Image.fromarray(RGB).convert("P"), {}),
    "1-bit": ("bits.png", lambda: Image.fromarray(RGB[..., 0] > 127), {}),
    "16-bit grey": ("wide.png", lambda: Image.fromarray(WIDE), {}),
    "CMYK JPEG": ("cmyk.jpg", lambda: Image.fromarray(RGB).convert("CMYK"), {}),
    "1x1": ("dot.png", lambda: Image.fromarray(RGB[:1, :1]), {}),
    "1x300 strip": ("strip.png", lambda: Image.fromarray(np.tile(RGB[:1, :60], (1, 5, 1))), {}),
    "300x1 column": ("column.png",
                     lambda: Image.fromarray(np.tile(RGB[:60, :1], (5, 1, 1))), {}),
    "odd size 17x23": ("odd.png", lambda: Image.fromarray(RGB[:23, :17]), {}),
    "GIF named .png": ("gif.png", lambda: Image.fromarray(RGB), {"format": "GIF"}),
    "upper-case suffix": ("UPPER.PNG", lambda: Image.fromarray(RGB), {}),
}


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("odd_images")
    paths = {}
    for name, (file, image, options) in ODD_IMAGES.items():
        image().save(folder / file, **options)
        paths[name] = folder / file
    return paths


@pytest.mark.parametrize("name", ODD_IMAGES)
def test_images_of_any_mode_and_size_load_as_rgb_at_the_size_asked(odd_images, name):
    image = load_image(odd_images[name], SIZE)
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert bool(torch.isfinite(image).all()) and -1 <= float(image.min()) <= float(image.max()) <= 1


def test_a_16_bit_image_reads_as_its_8_bit_version_not_saturated(odd_images, tmp_path):
    Image.fromarray((WIDE // 257).astype(np.uint8)).save(tmp_path / "narrow.png")
    wide, narrow = (load_image(p, SIZE) for p in (odd_images["16-bit grey"],
                                                  tmp_path / "narrow.png"))
    assert float((wide - narrow).abs().max()) <= 2 / 255 + 1e-6  # rounding, not clipping


@pytest.mark.parametrize("name", ODD_IMAGES)
def test_attribution_runs_on_any_image_file_once_loaded(odd_images, name):
    model = TinyClassifier().eval()
    maps = GradCAM(model, "layer4").attribute(load_image(odd_images[name], SIZE)[None], 0)
    assert maps.shape == (1, SIZE, SIZE) and bool(torch.isfinite(maps).all())


METHODS = {
    "saliency": lambda m: Saliency(m),
    "input x gradient": lambda m: InputXGradient(m),
    "smoothgrad": lambda m: SmoothGrad(m),
    "integrated gradients": lambda m: IntegratedGradients(m),
    "guided backprop": lambda m: GuidedBackprop(m),
    "occlusion": lambda m: Occlusion(m),
    "grad-cam": lambda m: GradCAM(m, "layer4"),
    "score-cam": lambda m: ScoreCAM(m, "layer4"),
}
BAD_INPUTS = {  # name: (input, exception, message)
    "uint8 pixels": (torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8), TypeError,
                     r"floating-point inputs, got torch.uint8; .*x.float\(\) / 127.5 - 1"),
    "numpy array": (np.zeros((1, 3, SIZE, SIZE), np.float32), TypeError,
                    r"batched input tensor \(N, ...\), got ndarray"),
    "PIL image": (Image.new("RGB", (SIZE, SIZE)), TypeError,
                  r"batched input tensor \(N, ...\), got Image"),
    "one number per sample": (torch.zeros(3), TypeError,
                              r"batched input tensor \(N, ...\), got \(3,\); .*x\[None\]"),
    "empty batch": (torch.zeros(0, 3, SIZE, SIZE), ValueError,
                    r"empty input of shape \(0, 3, 32, 32\)"),
    "empty image": (torch.zeros(1, 3, 0, 0), ValueError, r"empty input of shape \(1, 3, 0, 0\)"),
    "NaN pixels": (torch.full((1, 3, SIZE, SIZE), NAN), ValueError, r"NaN or infinite values"),
    "infinite pixels": (torch.full((1, 3, SIZE, SIZE), INF), ValueError, r"NaN or infinite"),
    "RGBA tensor": (torch.zeros(1, 4, SIZE, SIZE), RuntimeError,
                    r"expected input\[.*\] to have 3 channels, but got 4 channels"),
}


@pytest.mark.parametrize("bad", BAD_INPUTS)
@pytest.mark.parametrize("method", METHODS)
def test_attribution_refuses_inputs_it_cannot_explain(method, bad):
    x, error, message = BAD_INPUTS[bad]
    with pytest.raises(error, match=message):
        METHODS[method](TinyClassifier().eval()).attribute(x, target=0)


# ----------------------------------------------------------- folders of odd files
def _good(folder, name="good.png"):
    Image.fromarray(RGB).save(folder / name)


BAD_FILES = {  # name: (file name, bytes)
    "empty file": ("empty.png", lambda: b""),
    "text named .jpg": ("notes.jpg", lambda: b"just some notes"),
    "web page named .jpeg": ("page.jpeg", lambda: b"<html><body>403</body></html>"),
    "truncated PNG": ("cut.png", lambda: _png_bytes()[:200]),
}


def _png_bytes() -> bytes:
    import io

    stream = io.BytesIO()
    Image.fromarray(RGB).save(stream, format="PNG")
    return stream.getvalue()


@pytest.mark.parametrize("bad", BAD_FILES)
def test_a_folder_with_an_unreadable_image_fails_before_any_work(tmp_path, bad):
    _good(tmp_path)
    name, data = BAD_FILES[bad]
    (tmp_path / name).write_bytes(data())
    with pytest.raises(ValueError, match=rf"1 of 2 images cannot be read: .*{name}.*; remove or "
                                         r"convert them \(JPEG or PNG\)"):
        FolderProbe(tmp_path, toy_segmenter(), size=SIZE)


def test_files_that_are_not_images_and_folders_named_like_images_are_skipped(tmp_path):
    _good(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "album.png").mkdir()  # a folder with an image suffix
    probe = FolderProbe(tmp_path, toy_segmenter(), size=SIZE)
    assert [p.name for p in probe.files] == ["good.png"]
    probe.close()


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, r"holds no images \(.jpg, .jpeg, .png files, searched recursively\)"),
    (lambda d: (d / "readme.txt").write_text("x"), r"holds no images"),
    (lambda d: d.rmdir(), r"image folder .* does not exist"),
], ids=["empty folder", "no image files", "missing folder"])
def test_folders_without_images_say_so(tmp_path, setup, message):
    folder = tmp_path / "photos"
    folder.mkdir()
    setup(folder)
    with pytest.raises(ValueError, match=message):
        FolderProbe(folder, toy_segmenter(), size=SIZE)


# --------------------------------------------------------------------------- zero samples
class EmptyProbe(ProbeSet):
    """A probe set with no samples."""

    categories = ("object",)
    concepts = {"object": ["none", "tree"]}

    def __len__(self) -> int:
        return 0

    def batches(self, size: int, start: int = 0):
        return iter(())

    def images(self, ids):
        return torch.zeros(0, 3, SIZE, SIZE)


def _evaluate(kind: str):
    from gandissect.evaluate.classifier import evaluate_classifier
    from gandissect.evaluate.segmenter import evaluate_segmenter
    from gandissect.models.classifier import SceneClassifier
    from gandissect.models.segmenter import Segmenter

    if kind == "segmenter":
        return evaluate_segmenter(Segmenter((4, 4, 4, 4)), n=0, progress=False)
    return evaluate_classifier(SceneClassifier((4, 4, 4, 4)), n=0, progress=False)


@pytest.mark.parametrize("call, message", [
    (lambda g, s: dissect(g, s, ["layer4"], n=0, progress=False),
     r"need at least one sample \(n >= 1\), got 0"),
    (lambda g, s: removal(g, s, "layer4", [1], ConceptRef.find(s, "tree"), n=0),
     r"need at least one sample"),
    (lambda g, s: select_by_ace(g, s, "layer4", ConceptRef.find(s, "tree"), torch.zeros(UNITS),
                                torch.ones(UNITS), n=0, progress=False),
     r"ACE selection needs n >= 1 samples"),
    (lambda g, s: netdissect(TinyClassifier(), "layer4", EmptyProbe()),
     r"need at least one sample \(n >= 1\), got 0"),
    (lambda g, s: SceneWorldProbe(n=0), r"need at least one scene \(n >= 1\), got 0"),
    (lambda g, s: _evaluate("segmenter"), r"need at least one scene \(n >= 1\), got 0"),
    (lambda g, s: _evaluate("classifier"), r"need at least one scene \(n >= 1\), got 0"),
    (lambda g, s: Quantile().quantiles(0.5), r"no values added yet: call add\(\) before"),
    (lambda g, s: TopK(3).result(), r"no values added yet"),
    (lambda g, s: IoUTally([0]).result(), r"no masks added yet"),
], ids=["dissect", "removal", "ace-selection", "netdissect", "sceneworld-probe",
        "eval-segmenter", "eval-classifier", "quantile", "topk", "iou"])
def test_zero_samples_are_refused_with_the_count_needed(toy, call, message):
    with pytest.raises(ValueError, match=message):
        call(toy[0], toy[1])


def test_a_folder_probe_of_zero_images_is_refused(tmp_path):
    _good(tmp_path)
    with pytest.raises(ValueError, match=r"need at least one image \(n >= 1\), got 0"):
        FolderProbe(tmp_path, toy_segmenter(), size=SIZE, n=0)


def test_an_empty_batch_adds_nothing_to_a_quantile_sketch():
    sketch = Quantile()
    sketch.add(torch.tensor([[1.0, 2.0]]))
    before = sketch.state_dict()
    sketch.add(torch.zeros(0, 2))  # documented no-op
    after = sketch.state_dict()
    assert sketch.count == 1 and all(torch.equal(before[k], after[k]) for k in ("index",
                                                                                 "values"))
