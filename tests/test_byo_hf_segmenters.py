"""Hugging Face transformers segmenters (``hf:DIR``) against transformers' own pipeline.

Each architecture is built tiny with its transformers config class and random weights, saved
with ``save_pretrained`` beside its image processor (and, for OneFormer, a CLIP tokenizer):
exactly the folder layout the Hub publishes. The slow path is transformers' image processor,
the model and the processor's ``post_process_semantic_segmentation``.
"""

from __future__ import annotations

import json
import math
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import end_to_end
from torch.nn import functional as F

transformers = pytest.importorskip("transformers")

from gandissect.cli import main  # noqa: E402
from gandissect.errors import UserError  # noqa: E402
from gandissect.models.loaders.files import UnsafeCheckpointError  # noqa: E402
from gandissect.models.specs import resolve_segmenter  # noqa: E402

LABELS = {  # per architecture: a face parser with background, scenes without, one unlabeled
    "segformer": ["background", "skin", "nose", "eye_g", "hair", "cloth"],
    "upernet": ["wall", "building", "sky", "floor", "tree"],
    "mask2former": ["wall", "person", "sky", "unlabeled", "car"],
    "oneformer": ["road", "building", "sky", "car", "person"],
}
ARCHITECTURES = tuple(LABELS)
QUERY_MODELS = ("mask2former", "oneformer")
SIZES = [(24, 40), (56, 72)]  # upsampled and downsampled by the processors
TASK_LENGTH = 32


def _labels(names):
    return {"id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)}}


def _lively(model):
    """Random weights with unit gain, so that the tiny models' labels vary over an image."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2:
                fan_in = parameter[0].numel()
                parameter.copy_(torch.randn(parameter.shape, generator=generator)
                                / math.sqrt(fan_in))
            elif name.endswith("bias"):
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def _swin():
    return transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                                   num_heads=[1, 1, 2, 2], window_size=2,
                                   out_features=["stage1", "stage2", "stage3", "stage4"])


def _tokenizer():
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[f"{letter}</w>"] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[])


def _build(kind):
    t = transformers
    labels = _labels(LABELS[kind])
    if kind == "segformer":
        config = t.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                   hidden_sizes=[8, 16], patch_sizes=[7, 3], strides=[4, 2],
                                   num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                                   decoder_hidden_size=16, **labels)
        return (t.SegformerForSemanticSegmentation(config),
                t.SegformerImageProcessor(size={"height": 32, "width": 32}))
    if kind == "upernet":
        backbone = t.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                    out_features=["stage1", "stage2", "stage3", "stage4"])
        config = t.UperNetConfig(backbone_config=backbone, hidden_size=16, pool_scales=[1, 2],
                                 auxiliary_in_channels=24, auxiliary_channels=8, **labels)
        # mean and std on [0, 255] pixels, without rescaling: another published convention
        return (t.UperNetForSemanticSegmentation(config),
                t.SegformerImageProcessor(size={"height": 32, "width": 32}, do_rescale=False,
                                          image_mean=[123.675, 116.28, 103.53],
                                          image_std=[58.395, 57.12, 57.375]))
    common = dict(backbone_config=_swin(), hidden_dim=32, dim_feedforward=32,
                  encoder_feedforward_dim=32, num_queries=6, decoder_layers=2, encoder_layers=1,
                  num_attention_heads=2, **labels)
    size = {"shortest_edge": 64, "longest_edge": 128}  # GroupNorm needs more than 1x1 maps
    if kind == "mask2former":
        config = t.Mask2FormerConfig(feature_size=32, mask_feature_size=32, **common)
        return (t.Mask2FormerForUniversalSegmentation(config),
                t.Mask2FormerImageProcessor(size=size, size_divisor=32))
    config = t.OneFormerConfig(conv_dim=32, mask_dim=32, text_encoder_width=32,
                               text_encoder_num_layers=1, text_encoder_context_length=8,
                               text_encoder_vocab_size=64, text_encoder_proj_layers=1,
                               task_seq_len=TASK_LENGTH, max_seq_len=TASK_LENGTH, **common)
    processor = t.OneFormerProcessor(t.OneFormerImageProcessor(size=size), _tokenizer(),
                                     task_seq_length=TASK_LENGTH, max_seq_length=TASK_LENGTH)
    return t.OneFormerForUniversalSegmentation(config), processor


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{architecture: (folder, model)}: each tiny model saved with its processor."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    found = {}
    for kind in ARCHITECTURES:
        model, processor = _build(kind)
        model = _lively(model)
        folder = root / kind
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        found[kind] = folder, model
    # UperNet as an older release ships it: a pickled state dict instead of safetensors
    upernet = found["upernet"][0]
    torch.save(found["upernet"][1].state_dict(), upernet / "pytorch_model.bin")
    (upernet / "model.safetensors").unlink()
    return found


@pytest.fixture(scope="module")
def segmenters(folders):
    return {kind: resolve_segmenter(f"hf:{folder}") for kind, (folder, _) in folders.items()}


def _images(height, width, n=2, seed=0):
    """Smooth 8-bit images (the slow path's input) and the same images in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 5, 7, generator=generator) * 255
    pixels = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    pixels = pixels.clamp(0, 255).round().to(torch.uint8)
    return pixels, pixels.float() / 127.5 - 1


def _slow(kind, folder, model, pixels):
    """transformers' own pipeline: (class ids (N, H, W), class scores (N, K, H, W)) at the
    input size, and its pixel values."""
    processor_class = (transformers.OneFormerProcessor if kind == "oneformer"
                       else transformers.AutoImageProcessor)
    processor = processor_class.from_pretrained(folder)
    arrays = [image.permute(1, 2, 0).numpy() for image in pixels]
    task = {"task_inputs": ["semantic"] * len(arrays)} if kind == "oneformer" else {}
    inputs = processor(images=arrays, return_tensors="pt", **task)
    with torch.no_grad():
        outputs = model(**inputs)
    size = tuple(pixels.shape[-2:])
    post = getattr(processor, "image_processor", processor)
    results = post.post_process_semantic_segmentation(outputs, target_sizes=[size] * len(arrays),
                                                      return_segmentation_scores=True)
    labels = torch.stack([result.segmentation for result in results])
    scores = torch.stack([result.segmentation_scores for result in results])
    return labels, scores, inputs["pixel_values"]


def _codes_of(names):
    """The documented code rule, restated: background-like classes are 0, the others 1..K."""
    codes, next_code = [], 1
    for name in names:
        if name in ("background", "unlabeled"):
            codes.append(0)
        else:
            codes.append(next_code)
            next_code += 1
    return torch.tensor(codes)


def test_class_names_become_concepts_with_background_as_none(segmenters):
    assert segmenters["segformer"].concepts == {
        "object": ["none", "skin", "nose", "eye_g", "hair", "cloth"]}
    assert segmenters["upernet"].concepts["object"] == ["none", *LABELS["upernet"]]
    assert segmenters["mask2former"].concepts["object"] == ["none", "wall", "person", "sky",
                                                            "car"]
    for kind, segmenter in segmenters.items():
        assert segmenter.categories == ["object"]
        assert segmenter.codes.tolist() == _codes_of(LABELS[kind]).tolist()


@pytest.mark.parametrize("kind", ARCHITECTURES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_labels_agree_with_the_transformers_pipeline(folders, segmenters, kind, size,
                                                     monkeypatch):
    folder, model = folders[kind]
    segmenter = segmenters[kind]
    pixels, images = _images(*size)
    slow_labels, slow_scores, slow_pixel_values = _slow(kind, folder, model, pixels)

    # preprocessing: the same size, and the same values up to the processor's 8-bit resize
    ours = segmenter.pixel_values(images)
    assert ours.shape == slow_pixel_values.shape
    one_level = segmenter.preprocessing.scale / min(segmenter.preprocessing.std)  # of 8 bits
    assert (ours - slow_pixel_values).abs().max() <= 1.01 * one_level
    assert (ours - slow_pixel_values).abs().mean() < 0.4 * one_level

    if kind in QUERY_MODELS:
        # random tiny query models are chaotic: the processor's rounding of the resized image
        # to 8 bits flips their queries' classes, so they get the processor's exact input
        monkeypatch.setattr(segmenter, "pixel_values", lambda images: slow_pixel_values)
    labels = segmenter.segment(images)["object"]
    assert labels.shape == (2, *size) and labels.dtype == torch.long
    expected = _codes_of(LABELS[kind])[slow_labels]
    agreement = (labels == expected).float().mean().item()
    assert agreement >= 0.98, agreement
    if kind in QUERY_MODELS:
        return
    assert len(torch.unique(expected)) >= 4  # the comparison sees several labels
    with torch.no_grad():
        fast = segmenter.probabilities(images)["object"]
    slow = slow_scores.softmax(1)  # the slow scores are the logits resized to the input
    merged = torch.zeros_like(fast).index_add_(1, _codes_of(LABELS[kind]), slow)
    assert (fast - merged).abs().mean() < 0.005


class QueryOutputs(torch.nn.Module):
    """Stands in for a query model: fixed, varied class and mask logits (masks at a quarter of
    the input size), the same for the same input size."""

    def __init__(self, classes: int, queries: int = 10) -> None:
        super().__init__()
        self.classes, self.queries = classes, queries

    def forward(self, pixel_values, task_inputs=None, pixel_mask=None):
        n, _, height, width = pixel_values.shape
        generator = torch.Generator().manual_seed(height * 1000 + width)
        class_logits = 4 * torch.randn(n, self.queries, self.classes + 1, generator=generator)
        coarse = 4 * torch.randn(n, self.queries, 4, 6, generator=generator)
        masks = F.interpolate(coarse, size=(-(-height // 4), -(-width // 4)), mode="bicubic",
                              align_corners=False)
        return SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=masks)


@pytest.mark.parametrize("kind", QUERY_MODELS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_query_post_processing_agrees_with_transformers(folders, segmenters, kind, size):
    """Mask2Former's and OneFormer's semantic post-processing on varied query outputs."""
    from gandissect.models.loaders.huggingface import HuggingFaceSegmenter

    real = segmenters[kind]
    stub = QueryOutputs(len(LABELS[kind]))
    segmenter = HuggingFaceSegmenter(stub, real.kind, real.concepts["object"],
                                     real.codes.tolist(), real.preprocessing, real.task_tokens)
    pixels, images = _images(*size)
    slow_labels, slow_scores, _ = _slow(kind, folders[kind][0], stub, pixels)
    expected = _codes_of(LABELS[kind])[slow_labels]
    assert len(torch.unique(expected)) >= 4
    labels = segmenter.segment(images)["object"]
    # Mask2Former: transformers resizes the masks to 384 x 384 first, we straight to the input
    assert (labels == expected).float().mean() >= (0.99 if kind == "oneformer" else 0.97)
    with torch.no_grad():
        fast = segmenter.probabilities(images)["object"]
    slow = slow_scores / slow_scores.sum(1, keepdim=True)
    merged = torch.zeros_like(fast).index_add_(1, _codes_of(LABELS[kind]), slow)
    assert (fast - merged).abs().mean() < 0.005


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_probabilities_are_differentiable_and_segment_is_their_argmax(segmenters, kind):
    segmenter = segmenters[kind]
    _, images = _images(30, 44, seed=3)
    images.requires_grad_(True)
    probabilities = segmenter.probabilities(images)["object"]
    assert probabilities.shape == (2, len(segmenter.concepts["object"]), 30, 44)
    assert torch.allclose(probabilities.sum(1), torch.ones(2, 30, 44), atol=1e-5)
    assert torch.equal(probabilities.argmax(1), segmenter.segment(images.detach())["object"])
    probabilities[:, 1:].pow(2).sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in segmenter.parameters())  # the model stays frozen
    log_probabilities = segmenter(images.detach())["object"]  # what older callers softmax
    assert torch.allclose(log_probabilities.softmax(1), probabilities.detach(), atol=1e-5)


def test_any_input_size_and_the_segmenters_device(segmenters):
    segmenter = segmenters["segformer"]
    for size in [(7, 9), (64, 33)]:
        _, images = _images(*size, n=1)
        assert segmenter.segment(images)["object"].shape == (1, *size)
    assert segmenter.to("cpu").mean.device.type == "cpu"
    assert segmenter.fingerprint() != segmenters["upernet"].fingerprint()


def test_a_pickled_folder_is_read_with_weights_only_and_a_hostile_one_refused(folders,
                                                                             tmp_path):
    from conftest import Payload

    source, model = folders["upernet"]
    assert (source / "pytorch_model.bin").is_file() and not (source / "model.safetensors").exists()
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (hostile / name).write_bytes((source / name).read_bytes())
    marker = tmp_path / "ran"
    torch.save({**model.state_dict(), "hook": Payload(marker)}, hostile / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="would run Python code"):
        resolve_segmenter(f"hf:{hostile}")
    assert not marker.exists()


def _copy(source, target, drop=()):
    target.mkdir()
    for path in source.iterdir():
        if path.name not in drop:
            (target / path.name).write_bytes(path.read_bytes())
    return target


def test_folders_that_cannot_work_fail_in_one_line(folders, tmp_path):
    segformer = folders["segformer"][0]
    with pytest.raises(UserError, match="has no config.json"):
        resolve_segmenter(f"hf:{tmp_path}")
    with pytest.raises(UserError, match="has no preprocessor_config.json"):
        resolve_segmenter(f"hf:{_copy(segformer, tmp_path / 'a', {'preprocessor_config.json'})}")
    with pytest.raises(UserError, match="holds no weights"):
        resolve_segmenter(f"hf:{_copy(segformer, tmp_path / 'b', {'model.safetensors'})}")
    tokenizer = {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"}
    with pytest.raises(UserError, match="OneFormer needs them"):
        resolve_segmenter(f"hf:{_copy(folders['oneformer'][0], tmp_path / 'c', tokenizer)}")

    classifier = _copy(segformer, tmp_path / "d")
    config = json.loads((classifier / "config.json").read_text())
    config["architectures"] = ["SegformerForImageClassification"]
    (classifier / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="not a SegformerForSemanticSegmentation"):
        resolve_segmenter(f"hf:{classifier}")
    config.update(model_type="beit", architectures=["BeitForSemanticSegmentation"],
                  auto_map={"AutoModel": "modeling_mine.Mine"})
    (classifier / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="not a semantic-segmentation model hf: reads"):
        resolve_segmenter(f"hf:{classifier}")

    from safetensors.torch import load_file, save_file

    headless = _copy(segformer, tmp_path / "e")
    state = load_file(headless / "model.safetensors")
    del state["decode_head.classifier.weight"]
    save_file(state, headless / "model.safetensors")
    with pytest.raises(UserError, match="do not fit its config.json: missing "
                                        "decode_head.classifier.weight"):
        resolve_segmenter(f"hf:{headless}")
    with pytest.raises(UserError, match="does not exist"):
        resolve_segmenter(f"hf:{tmp_path / 'absent' / '..' / 'x'}")


def test_a_hub_name_offline_and_not_cached_says_how_to_get_the_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as error:
        resolve_segmenter("hf:gandissect-tests/not-a-cached-model")
    message = str(error.value)
    assert "cannot fetch gandissect-tests/not-a-cached-model" in message and "no network" in message
    assert "hf download gandissect-tests/not-a-cached-model --local-dir DIR" in message
    assert "\n" not in message


def test_without_transformers_the_spelling_says_what_to_install(folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now fails
    with pytest.raises(UserError, match=r"pip install 'gandissect\[hf\]'"):
        resolve_segmenter(f"hf:{folders['segformer'][0]}")


def test_dissect_with_a_face_parser_in_one_command(folders, tmp_path, capsys):
    spec = f"hf:{folders['segformer'][0]}"
    out = tmp_path / "out"
    assert main(["dissect", "--generator", "conftest:toy_generator", "--segmenter", spec,
                 "--layer", "layer4", "--samples", "16", "--batch", "8", "--no-html",
                 "--out", str(out), "--device", "cpu"]) == 0
    data = json.loads((out / "dissect.json").read_text())
    assert data["settings"]["segmenter_name"] == spec
    assert data["settings"]["categories"] == ["object"]
    (layer,) = data["layers"]
    names = {name for unit in layer["units"] for name, _ in unit["concepts"]}
    assert names and names <= set(LABELS["segformer"][1:])
    assert "layer4: " in capsys.readouterr().out


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_every_architecture_end_to_end(folders, tmp_path, kind):
    """layers, dissect, edit, ace and the app's Paint tab with the segmenter."""
    end_to_end("conftest:toy_generator", f"hf:{folders[kind][0]}", "layer4", tmp_path)


def test_the_preprocessing_reads_legacy_and_current_configs(tmp_path):
    from gandissect.models.loaders.huggingface import read_preprocessing

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"feature_extractor_type": "SegformerFeatureExtractor", "reduce_labels": True,
         "size": 512, "resample": 2, "image_mean": [0.5, 0.5, 0.5],
         "image_std": [0.5, 0.5, 0.5]}))
    legacy = read_preprocessing(tmp_path, "segformer")
    assert legacy.input_size(300, 200) == (512, 512) and legacy.scale == pytest.approx(1 / 255)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"size": 384, "max_size": 600, "size_divisor": 32, "resample": 3}))
    mask = read_preprocessing(tmp_path, "mask2former")
    assert mask.mode == "bicubic" and mask.mean == pytest.approx((0.485, 0.456, 0.406))
    # shorter side 384 unless the longer passes 600; then rounded up to multiples of 32
    assert mask.input_size(256, 256) == (384, 384)
    assert mask.input_size(200, 500) == (256, 608)
    assert mask.input_size(384, 500) == (384, 512)
