"""Vision transformers' token maps (``gandissect.spatial``): the view restated by a loop over
tokens, Grad-CAM on a ViT against pytorch-grad-cam's, hooks that leave the model as it was,
Network Dissection of a token map, Swin's channels-last stages, and ``gandissect attribute
--methods all`` skipping the methods that do not apply. Tiny random models only (32 px)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from gandissect.attribute import CAM, EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from gandissect.attribute.applicability import refusal
from gandissect.attribute.base import attribution_mode
from gandissect.attribute.cam import layer_activations_and_gradients
from gandissect.cli import main
from gandissect.errors import UserError
from gandissect.hooks import Trace
from gandissect.spatial import (
    default_map_layer,
    first_tensor,
    map_layers,
    spatial_view,
    token_layout,
)

timm = pytest.importorskip("timm")
SIZE = 32
VIT = dict(img_size=SIZE, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)


def tiny_vit(**changes) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False,
                             **{**VIT, **changes}).eval()


def tiny_swin() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=SIZE,
                             embed_dim=16, depths=(1, 1), num_heads=(2, 2), window_size=2,
                             num_classes=5).eval()


class Logits(nn.Module):
    """A ``transformers`` image classifier as a module that returns its logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    return tiny_vit()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def traced(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), Trace(model, layer, view=first_tensor) as trace:
        model(x)
    return trace.output


def grid_by_loop(tokens: torch.Tensor, prefix: int, h: int, w: int) -> torch.Tensor:
    """The definition: map[n, c, i, j] = tokens[n, prefix + i * w + j, c]."""
    n, _, channels = tokens.shape
    out = torch.empty(n, channels, h, w)
    for b in range(n):
        for c in range(channels):
            for i in range(h):
                for j in range(w):
                    out[b, c, i, j] = tokens[b, prefix + i * w + j, c]
    return out


# ---------------------------------------------------------------- the view, restated


@pytest.mark.parametrize("tokens", [dict(), dict(reg_tokens=2), dict(class_token=False,
                                                                     global_pool="avg")],
                         ids=["class-token", "class+2-registers", "no-prefix"])
def test_token_view_is_the_loop_over_tokens(tokens, images):
    model = tiny_vit(**tokens)
    prefix = 1 * ("class_token" not in tokens) + tokens.get("reg_tokens", 0)
    assert token_layout(model).prefix == prefix == model.num_prefix_tokens
    output = traced(model, "blocks.1", images)
    assert output.shape == (3, prefix + 16, 32)
    view = spatial_view(model, "blocks.1", output, images.shape[-2:])
    assert torch.equal(view, grid_by_loop(output, prefix, 4, 4))


def test_transformers_vit_tuple_and_square_fallback(images):
    config = pytest.importorskip("transformers").ViTConfig(
        image_size=SIZE, patch_size=8, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=5)
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    model = Logits(ViTForImageClassification(config).eval())
    layout = token_layout(model)
    assert (layout.prefix, layout.grid(), layout.pooling) == (1, (4, 4), "token")
    layers = map_layers(model, images)
    layer = default_map_layer(model, layers)
    assert layer.endswith(".1.layernorm_before") and layers[layer] == (32, 4, 4)
    # the whole model's output (a dict-like ModelOutput): its first tensor, last_hidden_state
    with torch.no_grad(), Trace(model, "model.vit", view=first_tensor) as trace:
        model(images)
    assert torch.equal(spatial_view(model, "model.vit", trace.output),
                       grid_by_loop(trace.output, 1, 4, 4))

    class Plain(nn.Module):  # tokens without a patch embedding to read: a square (+1) grid
        def forward(self, x):
            return x

    plain = Plain()
    tokens = torch.randn(2, 10, 3)
    assert torch.equal(spatial_view(plain, "", tokens), grid_by_loop(tokens, 1, 3, 3))
    assert torch.equal(spatial_view(plain, "", tokens[:, 1:]), grid_by_loop(tokens, 1, 3, 3))
    with pytest.raises(UserError, match=r"a sequence of 11 tokens that does not fit a square"):
        spatial_view(plain, "", torch.randn(2, 11, 3))


def test_layers_without_a_map_are_one_line(vit, images):
    head = traced(vit, "fc_norm", images)
    with pytest.raises(UserError, match=r"^layer 'fc_norm' gives \(3, 32\), one vector per "
                                        r"image, not a map; choose a layer with"):
        spatial_view(vit, "fc_norm", head)
    with pytest.raises(UserError, match=r"gives \(3, 12, 32\), a sequence of 12 tokens that "
                                        r"does not fit the 4x4 patch grid \(\+1 prefix"):
        spatial_view(vit, "blocks.1", head[:, None].expand(3, 12, 32))
    with pytest.raises(UserError, match=r"one vector per image"):
        GradCAM(vit, "fc_norm").attribute(images, target=0)
    layers = map_layers(vit, images)
    assert "fc_norm" not in layers and "head" not in layers and "blocks.1.attn.qkv" in layers
    assert layers["blocks.1.attn.qkv"] == (96, 4, 4) and layers["norm"] == (32, 4, 4)
    assert default_map_layer(vit, layers) == "blocks.1.norm1"


# ---------------------------------------------------------------- the CAM family on a ViT


def test_gradcam_on_a_vit_matches_pytorch_grad_cam(vit, images):
    """pytorch-grad-cam with its documented ViT ``reshape_transform``: before its ReLU,
    min-max scaling and resizing (``get_cam_image``) the maps are ours with ``relu=False``;
    after its ReLU, ours."""
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def reshape_transform(tensor, height=4, width=4):
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    classes = [0, 3, 4]
    layer = vit.blocks[-1].norm1
    peer = grad_cam.GradCAM(vit, target_layers=[layer], reshape_transform=reshape_transform)
    targets = [ClassifierOutputTarget(c) for c in classes]
    outputs = peer.activations_and_grads(images)
    sum(t(o) for t, o in zip(targets, outputs)).backward()
    acts = peer.activations_and_grads.activations[0].numpy()
    grads = peer.activations_and_grads.gradients[0].numpy()
    theirs = peer.get_cam_image(images, layer, targets, acts, grads)
    peer.activations_and_grads.release()
    ours = GradCAM(vit, "blocks.1.norm1").attribute(images, target=classes, relu=False)
    assert np.abs(theirs).max() > 1e-4  # the patch tokens do reach the score here
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-6)
    relu = GradCAM(vit, "blocks.1.norm1").attribute(images, target=classes)
    np.testing.assert_allclose(relu.numpy(), np.maximum(theirs, 0), rtol=1e-4, atol=1e-6)
    # after the last attention nothing of the patch tokens reaches the class token
    with attribution_mode(vit):
        maps, grad = layer_activations_and_gradients(vit, "norm", images, classes)
    assert maps.shape == (3, 32, 4, 4) and float(grad.abs().max()) == 0


def test_every_cam_runs_on_tokens_and_cam_refuses_the_class_token(vit, images):
    for method in (GradCAM, GradCAMPlusPlus, ScoreCAM, EigenCAM):
        result = method(vit, "blocks.1.norm1").attribute(images, target=2)
        assert result.shape == (3, 4, 4) and bool(torch.isfinite(result).all())
    with pytest.raises(UserError, match=r"^VisionTransformer computes its class scores from the"
                                        r" class token, not from average-pooled features"):
        CAM(vit, "blocks.1")
    # a GAP head without a norm between the pool and the linear layer: CAM applies
    pooled = tiny_vit(class_token=False, global_pool="avg", fc_norm=False)
    cam = CAM(pooled, "norm").attribute(images, target=[1, 2, 3])
    maps = spatial_view(pooled, "norm", traced(pooled, "norm", images))
    weights = pooled.head.weight[[1, 2, 3]].detach()
    assert torch.allclose(cam, torch.einsum("nk,nkhw->nhw", weights, maps), atol=1e-5)


def test_hooks_leave_the_output_unchanged(vit, images):
    with torch.no_grad():
        before = vit(images)
    GradCAM(vit, "blocks.1.norm1").attribute(images, target=1)
    ScoreCAM(vit, "blocks.1").attribute(images, target=1)
    map_layers(vit, images)
    with torch.no_grad():
        after = vit(images)
    assert torch.equal(before, after)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in vit.modules())
    assert all(p.requires_grad for p in vit.parameters()) and not vit.training


# ---------------------------------------------------------------- Network Dissection, Swin


def test_netdissect_of_a_token_map(vit):
    from gandissect.netdissect import SceneWorldProbe, netdissect

    probe = SceneWorldProbe(seed=1001, n=8, size=SIZE)
    result = netdissect(vit, "blocks.1", probe, batch=4, top_k=3, preprocess=lambda x: x / 2)
    layer = result.layer("blocks.1")
    assert tuple(layer.shape) == (32, 4, 4) and len(layer.units) == 32
    tokens = traced(vit, "blocks.1", probe.images(range(8)) / 2)
    peaks = grid_by_loop(tokens, 1, 4, 4).amax((2, 3))  # (images, units): class token left out
    for unit in layer.units:
        best = int(peaks[:, unit.unit].argmax())
        assert unit.top_images[0] == best
        assert unit.top_scores[0] == pytest.approx(float(peaks[best, unit.unit]), rel=1e-5)
    # feature visualisation's top images rank the same units (channels, not tokens)
    from gandissect.visualize.featurevis import top_activating

    top = top_activating(vit, "blocks.1", probe.images(range(8)) / 2, k=1)
    assert torch.allclose(top.scores[:, 0], peaks.amax(0), rtol=1e-5)
    assert torch.equal(top.indices[:, 0], peaks.argmax(0))


def test_swin_channels_last_and_its_token_stages(images):
    swin = tiny_swin()
    assert token_layout(swin).channels_last
    output = traced(swin, "norm", images)            # (N, h, w, C)
    assert output.shape == (3, 4, 4, 32)
    view = spatial_view(swin, "norm", output)
    loop = torch.empty(3, 32, 4, 4)
    for n, c, i, j in np.ndindex(3, 32, 4, 4):
        loop[n, c, i, j] = output[n, i, j, c]
    assert torch.equal(view, loop)
    conv = traced(swin, "patch_embed.proj", images)   # a convolution stays channels first
    assert torch.equal(spatial_view(swin, "patch_embed.proj", conv), conv)
    layers = map_layers(swin, images)
    assert default_map_layer(swin, layers) == "norm" and layers["layers.0"] == (16, 8, 8)
    assert not any(".attn" in name for name in layers)  # windowed attention is no map
    # Swin pools its last stage into one linear layer: CAM proper applies, and is its definition
    cam = CAM(swin, "norm").attribute(images, target=[0, 1, 2])
    weights = swin.head.fc.weight[[0, 1, 2]].detach()
    assert torch.allclose(cam, torch.einsum("nk,nkhw->nhw", weights, view), atol=1e-5)

    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.SwinConfig(image_size=SIZE, patch_size=4, embed_dim=16, depths=[1, 1],
                                     num_heads=[2, 2], window_size=2, num_labels=5)
    hf = Logits(transformers.SwinForImageClassification(config).eval())
    stage = "model.swin.encoder.layers.0"             # returns a tuple; merged to 4 x 4
    with torch.no_grad(), Trace(hf, stage, view=first_tensor) as trace:
        hf(images)
    assert trace.output.shape == (3, 16, 32)
    assert torch.equal(spatial_view(hf, stage, trace.output), grid_by_loop(trace.output, 0, 4, 4))
    assert GradCAM(hf, stage).attribute(images, target=1).shape == (3, 4, 4)
    assert CAM(hf, "model.swin.layernorm").attribute(images, target=1).shape == (3, 4, 4)


# ---------------------------------------------------------------- what applies, CLI and app


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory, vit):
    """The tiny ViT as a Hub-style timm folder (config.json + model.safetensors)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("vit")
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()},
              str(folder / "model.safetensors"))
    arguments = {k: v for k, v in VIT.items() if k != "num_classes"}
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 5,
              "model_args": arguments,
              "pretrained_cfg": {"input_size": [3, SIZE, SIZE], "mean": [0.5] * 3,
                                 "std": [0.5] * 3}}
    (folder / "config.json").write_text(json.dumps(config))
    pictures = folder / "images"
    pictures.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    from PIL import Image

    Image.fromarray(pixels).save(pictures / "noise.png")
    return folder


def test_refusals_of_what_does_not_apply(vit):
    from gandissect.attribute import GuidedBackprop, GuidedGradCAM, Saliency

    x = torch.zeros(1, 3, SIZE, SIZE)
    assert "GELU" in refusal(GuidedBackprop(vit), x)
    assert "GELU" in refusal(GuidedGradCAM(vit, "blocks.1.norm1"), x)
    assert refusal(GradCAM(vit, "blocks.1.norm1"), x) is None
    assert refusal(ScoreCAM(vit, "blocks.1.norm1"), x) is None
    assert "one vector per image" in refusal(ScoreCAM(vit, "fc_norm"), x)
    assert refusal(Saliency(vit), x) is None


def test_cli_methods_all_skips_what_does_not_apply(vit_folder, tmp_path, capsys):
    spec = f"timm:{vit_folder}"
    out = tmp_path / "maps"
    assert main(["attribute", "--classifier", spec, "--images", str(vit_folder / "images"),
                 "--methods", "all", "--out", str(out), "--json", "--quiet",
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    index = json.loads((out / "attributions.json").read_text())
    assert json.loads(captured.out) == index and index["layer"] == "blocks.1.norm1"
    skipped = index["skipped"]
    assert {"cam", "guided_backprop", "deconvolution", "lrp"} <= set(skipped)
    assert "class token" in skipped["cam"] and "GELU" in skipped["guided_backprop"]
    lines = [line for line in captured.err.splitlines() if line.startswith("skipped ")]
    assert len(lines) == len(skipped) and all("\n" not in r for r in skipped.values())
    maps = index["images"][0]["maps"]
    assert {"gradcam", "gradcam_plus_plus", "scorecam", "saliency"} <= set(maps)
    assert not set(maps) & set(skipped) and all((out / p).is_file() for p in maps.values())

    assert main(["attribute", "--classifier", spec, "--images", str(vit_folder / "images"),
                 "--methods", "gradcam,cam", "--out", str(tmp_path / "no"), "--quiet",
                 "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("gandissect: error: cam does not apply to this classifier: ")
    assert "\n" not in error and not (tmp_path / "no").exists()

    assert main(["layers", spec]) == 0
    listing = capsys.readouterr().out
    assert "blocks.1.norm1" in listing and "-> map (32, 4, 4)" in listing

    out = tmp_path / "nd"  # Network Dissection of a token map, probe at the ViT's 32 px
    assert main(["netdissect", "--classifier", spec, "--layer", "blocks.1", "--n", "8",
                 "--batch", "8", "--images", "1", "--no-html", "--quiet", "--device", "cpu",
                 "--out", str(out)]) == 0
    (layer,) = json.loads((out / "dissect.json").read_text())["layers"]
    assert layer["shape"] == [32, 4, 4] and len(layer["units"]) == 32


def test_app_lists_token_maps_and_refuses_cam(vit_folder):
    from gandissect.app.explain import ClassifierModels

    spec = f"timm:{vit_folder}"
    models = ClassifierModels([spec])
    classifier = models.get(spec)
    assert classifier.layers["blocks.1.norm1"] == (32, 4, 4) and "fc_norm" not in classifier.layers
    image = torch.zeros(3, SIZE, SIZE)
    assert models.explain(spec, image, "gradcam", "blocks.1.norm1", 0).pixel_map.shape == (32, 32)
    with pytest.raises(UserError, match=r"class token"):
        models.explain(spec, image, "cam", "blocks.1.norm1", 0)
