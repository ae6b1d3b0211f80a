"""Segmenters of real images from their published files (``upp:DIR``, ``semseg:DIR``,
``torchvision:ARCH``) and annotated folders (``masks:DIR``).

Every file is written here in its authors' layout, key by key (CSAIL's synchronised BatchNorm
buffers included), with random weights and widths small enough for a fast test where the
loader reads widths from the shapes. Each loaded model is checked against a slow restatement of
its key step: the input convention, the pooling, the label mapping.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import torch
from conftest import end_to_end
from PIL import Image
from torch.nn import functional as F

from gandissect.cli import main
from gandissect.errors import UserError
from gandissect.models.inputs import IMAGENET_MEAN, IMAGENET_STD
from gandissect.models.loaders.segmenters import SEMSEG_ARCHS, ade20k_names
from gandissect.models.scene_parsing import POOL_SCALES, precise_pool
from gandissect.models.specs import resolve_segmenter

BGR_MEAN = (102.9801, 115.9465, 122.7717)


# ----------------------------------------------------------------- published layouts
class Weights:
    """Random tensors under published key names (a seeded generator)."""

    def __init__(self, seed: int = 0) -> None:
        self.state: dict[str, torch.Tensor] = {}
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0):
        return torch.randn(*shape, generator=self.g) * scale

    def conv(self, key, c_out, c_in, k, bias=False, groups=1):
        fan_in = c_in // groups * k * k
        self.state[f"{key}.weight"] = self.randn(c_out, c_in // groups, k, k,
                                                 scale=(2 / fan_in) ** 0.5)
        if bias:
            self.state[f"{key}.bias"] = self.randn(c_out, scale=0.1)

    def bn(self, key, c, sync=True):
        """BatchNorm as CSAIL's SynchronizedBatchNorm2d saves it (PyTorch >= 0.4.1)."""
        self.state.update({f"{key}.weight": 1 + self.randn(c, scale=0.1),
                           f"{key}.bias": self.randn(c, scale=0.1),
                           f"{key}.running_mean": self.randn(c, scale=0.1),
                           f"{key}.running_var": 1 + self.randn(c, scale=0.1).abs(),
                           f"{key}.num_batches_tracked": torch.tensor(1000)})
        if sync:
            self.state.update({f"{key}._tmp_running_mean": self.randn(c),
                               f"{key}._tmp_running_var": self.randn(c).abs(),
                               f"{key}._running_iter": torch.ones(1)})

    def cbr(self, key, c_out, c_in, k=3):
        """``conv3x3_bn_relu`` (and its 1x1 siblings): ``key.0`` conv, ``key.1`` BN."""
        self.conv(f"{key}.0", c_out, c_in, k)
        self.bn(f"{key}.1", c_out)


def resnet_state(w: Weights, bottleneck=True, depths=(3, 4, 6, 3), stem=(4, 4, 8),
                 planes=(2, 4, 8, 16)) -> list[int]:
    """CSAIL's deep-stem ResNet (``resnet.py``; published widths stem (64, 64, 128), planes
    (64, 128, 256, 512)); returns each layer's output width."""
    w.conv("conv1", stem[0], 3, 3), w.bn("bn1", stem[0])
    w.conv("conv2", stem[1], stem[0], 3), w.bn("bn2", stem[1])
    w.conv("conv3", stem[2], stem[1], 3), w.bn("bn3", stem[2])
    inplanes, expansion, outs = stem[2], 4 if bottleneck else 1, []
    for i, (blocks, p) in enumerate(zip(depths, planes), start=1):
        for j in range(blocks):
            key = f"layer{i}.{j}"
            if bottleneck:
                w.conv(f"{key}.conv1", p, inplanes, 1), w.bn(f"{key}.bn1", p)
                w.conv(f"{key}.conv2", p, p, 3), w.bn(f"{key}.bn2", p)
                w.conv(f"{key}.conv3", p * 4, p, 1), w.bn(f"{key}.bn3", p * 4)
            else:
                w.conv(f"{key}.conv1", p, inplanes, 3), w.bn(f"{key}.bn1", p)
                w.conv(f"{key}.conv2", p, p, 3), w.bn(f"{key}.bn2", p)
            if j == 0 and (i > 1 or inplanes != p * expansion):
                w.conv(f"{key}.downsample.0", p * expansion, inplanes, 1)
                w.bn(f"{key}.downsample.1", p * expansion)
            inplanes = p * expansion
        outs.append(inplanes)
    return outs


MOBILENET = [(1, 2, 1), (6, 3, 2), (6, 4, 3), (6, 6, 4), (6, 8, 3), (6, 10, 3), (6, 20, 1)]


def mobilenet_state(w: Weights, stem=4) -> list[int]:
    """``MobileNetV2Dilated``'s ``features[:-1]`` (published: stem 32, widths 16 .. 320; the
    t, n of each group as published, widths small); returns its tapped widths."""
    w.conv("features.0.0", stem, 3, 3), w.bn("features.0.1", stem)
    c_in, index, widths = stem, 1, []
    for t, c, n in MOBILENET:
        for _ in range(n):
            key, hidden = f"features.{index}.conv", c_in * t
            if t == 1:
                w.conv(f"{key}.0", hidden, hidden, 3, groups=hidden), w.bn(f"{key}.1", hidden)
                w.conv(f"{key}.3", c, hidden, 1), w.bn(f"{key}.4", c)
            else:
                w.conv(f"{key}.0", hidden, c_in, 1), w.bn(f"{key}.1", hidden)
                w.conv(f"{key}.3", hidden, hidden, 3, groups=hidden), w.bn(f"{key}.4", hidden)
                w.conv(f"{key}.6", c, hidden, 1), w.bn(f"{key}.7", c)
            widths.append(c)
            c_in, index = c, index + 1
    return widths


def pyramid_state(w: Weights, fc, ppm, fpn, laterals):
    """The PPM + FPN trunk shared by both UPerNets."""
    for i in range(len(POOL_SCALES)):
        w.cbr(f"ppm_conv.{i}", ppm, fc, 1)
    w.cbr("ppm_last_conv", fpn, fc + len(POOL_SCALES) * ppm)
    for i, c in enumerate(laterals):
        w.cbr(f"fpn_in.{i}", fpn, c, 1)
        w.cbr(f"fpn_out.{i}.0", fpn, fpn)


def upp_decoder_state(w: Weights, outs, heads, ppm=6, fpn=8):
    """Unified Perceptual Parsing's ``UPerNet`` (published: ppm 512, fpn 512)."""
    pyramid_state(w, outs[-1], ppm, fpn, outs[:-1])
    w.cbr("conv_fusion", fpn, len(outs) * fpn)
    w.cbr("scene_head.0", fpn, fpn)
    w.conv("scene_head.2", heads["scene"], fpn, 1, bias=True)
    for name in ("object", "part", "material"):
        w.cbr(f"{name}_head.0", fpn, fpn)
        w.conv(f"{name}_head.1", heads[name], fpn, 1, bias=True)


def semseg_decoder_state(w: Weights, decoder, outs, classes=150, width=8):
    """``ppm_deepsup``, ``upernet`` or ``c1_deepsup`` of semantic-segmentation-pytorch."""
    fc = outs[-1]
    if decoder == "ppm_deepsup":
        for i in range(len(POOL_SCALES)):
            w.conv(f"ppm.{i}.1", 6, fc, 1), w.bn(f"ppm.{i}.2", 6)
        w.cbr("cbr_deepsup", fc // 4, fc // 2)
        w.conv("conv_last.0", width, fc + 4 * 6, 3), w.bn("conv_last.1", width)
        w.conv("conv_last.4", classes, width, 1, bias=True)
        w.conv("conv_last_deepsup", classes, fc // 4, 1, bias=True)
    elif decoder == "c1_deepsup":
        w.cbr("cbr", fc // 4, fc)
        w.cbr("cbr_deepsup", fc // 4, fc // 2)
        w.conv("conv_last", classes, fc // 4, 1, bias=True)
        w.conv("conv_last_deepsup", classes, fc // 4, 1, bias=True)
    else:
        pyramid_state(w, fc, 6, width, outs[:-1])
        w.cbr("conv_last.0", width, len(outs) * width)
        w.conv("conv_last.1", classes, width, 1, bias=True)


UPP_OBJECTS = ["-", "sky", "building", "person", "door", "tree"] + [f"thing {k}"
                                                                     for k in range(6, 300)]
UPP_PARTS = {"person": ["-", "head", "leg"], "sky": ["-", "cloud"],  # not in object order
             "building": ["-", "window", "door"]}
UPP_LABELS = {"object": UPP_OBJECTS, "material": ["-", "brick", "glass", "wood"],
              "part": ["-", "head", "leg", "cloud", "window", "door"],
              "scene": ["-", "street", "church"], "object_part": UPP_PARTS}


def write_upp(folder, labels=UPP_LABELS, epoch=40):
    """GAN Dissection's ``segmodel/upp-resnet50-upernet/`` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    w = Weights(1)
    outs = resnet_state(w)
    torch.save(w.state, folder / f"encoder_epoch_{epoch}.pth")
    w = Weights(2)
    upp_decoder_state(w, outs, {"scene": 3, "object": 300, "material": 4,
                                "part": sum(map(len, UPP_PARTS.values()))})
    # random features are large: small object weights and a bias make objects 1-5 (three with
    # parts, two without) the likely ones, so that both cases of the part rule occur
    w.state["object_head.1.weight"] *= 1e-3
    w.state["object_head.1.bias"][1:6] += 5
    torch.save(w.state, folder / f"decoder_epoch_{epoch}.pth")
    (folder / "labels.json").write_text(json.dumps(labels))
    return folder


SEMSEG_CONFIG = """DATASET:
  root_dataset: "./data/"
  list_train: "./data/training.odgt"
  list_val: "./data/validation.odgt"
  num_class: 150
  imgSizes: (300, 375, 450, 525, 600)
  imgMaxSize: 1000
  padding_constant: {padding}
  segm_downsampling_rate: 8
  random_flip: True

MODEL:
  arch_encoder: "{encoder}"
  arch_decoder: "{decoder}"
  fc_dim: {fc_dim}

TRAIN:
  batch_size_per_gpu: 2
  num_epoch: {epoch}
  start_epoch: 0
  epoch_iters: 5000
  optim: "SGD"
  lr_encoder: 0.02
  lr_decoder: 0.02
  lr_pow: 0.9
  beta1: 0.9
  weight_decay: 1e-4
  deep_sup_scale: 0.4
  fix_bn: False
  workers: 16
  disp_iter: 20
  seed: 304

VAL:
  visualize: False
  checkpoint: "epoch_{epoch}.pth"

TEST:
  checkpoint: "epoch_{epoch}.pth"
  result: "./"

DIR: "ckpt/ade20k-{encoder}-{decoder}"
"""


def write_semseg(folder, arch, config=True, epoch=20):
    """A model folder of sceneparsing.csail.mit.edu/model/pytorch/ with its config YAML."""
    encoder, decoder = arch.split("-")
    folder.mkdir(parents=True, exist_ok=True)
    w = Weights(3)
    if encoder.startswith("mobilenet"):
        outs = mobilenet_state(w)
    else:
        base = encoder.removesuffix("dilated")
        bottleneck, depths = {"resnet18": (False, (2, 2, 2, 2)),
                              "resnet50": (True, (3, 4, 6, 3)),
                              "resnet101": (True, (3, 4, 23, 3))}[base]
        outs = resnet_state(w, bottleneck, depths)
    torch.save(w.state, folder / f"encoder_epoch_{epoch}.pth")
    w = Weights(4)
    semseg_decoder_state(w, decoder, outs)
    torch.save(w.state, folder / f"decoder_epoch_{epoch}.pth")
    if config:
        padding = 32 if decoder == "upernet" else 8
        (folder / f"ade20k-{arch}.yaml").write_text(SEMSEG_CONFIG.format(
            encoder=encoder, decoder=decoder, fc_dim=outs[-1], epoch=epoch, padding=padding))
    return folder


@pytest.fixture(scope="module")
def upp_dir(tmp_path_factory):
    return write_upp(tmp_path_factory.mktemp("segmodel") / "upp-resnet50-upernet")


@pytest.fixture(scope="module")
def upp(upp_dir):
    return resolve_segmenter(f"upp:{upp_dir}")


def images(n=2, size=(32, 40), seed=0):
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def check_contract(segmenter, x):
    """probabilities: one channel per code, at the input size, summing to 1, differentiable;
    segment: their argmax."""
    x = x.clone().requires_grad_(True)
    found = segmenter.probabilities(x)
    labels = segmenter.segment(x.detach())
    for category in segmenter.categories:
        p = found[category]
        assert p.shape == (len(x), len(segmenter.concepts[category]), *x.shape[2:])
        assert torch.allclose(p.sum(1), torch.ones(()), atol=1e-5)
        assert torch.equal(labels[category], p.argmax(1))
    first = found[segmenter.categories[0]]
    (first * torch.arange(first.shape[1])[:, None, None]).sum().backward()  # expected code
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and x.grad.abs().sum() > 0


def captured_input(module):
    """The input of ``module``'s next call (a forward pre-hook, removed after one call)."""
    seen = []

    def hook(_, inputs):
        seen.append(inputs[0].detach().clone())
        handle.remove()

    handle = module.register_forward_pre_hook(hook)
    return seen


# ----------------------------------------------------------------- precise RoI pooling
def test_precise_pool_is_the_mean_of_the_bilinear_map():
    """PrRoI pooling, restated: integrate the bilinear interpolation (zero outside the samples)
    numerically over each bin of the whole map."""
    x = torch.randn(1, 2, 5, 7, dtype=torch.float64)
    fine = 60  # midpoints per unit of length

    def bilinear(values, y, x_):
        total = 0.0
        for i in (int(np.floor(y)), int(np.floor(y)) + 1):
            for j in (int(np.floor(x_)), int(np.floor(x_)) + 1):
                if 0 <= i < values.shape[0] and 0 <= j < values.shape[1]:
                    total += values[i, j] * max(0, 1 - abs(y - i)) * max(0, 1 - abs(x_ - j))
        return total

    for cells in (1, 2, 3):
        fast = precise_pool(x, cells)
        h, w = 5 / cells, 7 / cells
        for p in range(cells):
            for q in range(cells):
                ys = p * h + (np.arange(int(fine * h)) + 0.5) / fine
                xs = q * w + (np.arange(int(fine * w)) + 0.5) / fine
                values = x[0, 1].numpy()
                slow = np.mean([[bilinear(values, y, x_) for x_ in xs] for y in ys])
                assert abs(fast[0, 1, p, q].item() - slow) < 2e-2


# ----------------------------------------------------------------- upp:DIR
def test_upp_reads_gan_dissections_folder(upp):
    assert upp.categories == ["object", "part", "material"]
    assert upp.concepts["object"][:6] == ["none", "sky", "building", "person", "door", "tree"]
    assert len(upp.concepts["object"]) == 300
    assert upp.concepts["material"] == ["none", "brick", "glass", "wood"]
    # every part once, in the order of its object's code (sky, building, person)
    assert upp.concepts["part"] == ["none", "cloud", "window", "door", "head", "leg"]
    assert upp.sizes == (256,)


def test_upp_input_is_bgr_minus_the_mean_averaged_down(upp):
    """An image twice the segmentation size reaches the encoder as BGR in 0..255 minus the
    mean, averaged over 2x2 blocks (GAN Dissection's adaptive average pooling)."""
    upp.sizes = (64,)
    try:
        x = images(1, (128, 128))
        seen = captured_input(upp.encoder)
        with torch.no_grad():
            upp.probabilities(x)
    finally:
        upp.sizes = (256,)
    (fed,) = seen
    assert fed.shape == (1, 3, 64, 64)
    for y, x_ in ((0, 0), (17, 50), (63, 63)):
        block = x[0, :, 2 * y:2 * y + 2, 2 * x_:2 * x_ + 2].mean((1, 2))
        for channel in range(3):
            expected = (block[2 - channel].item() + 1) * 127.5 - BGR_MEAN[channel]
            assert abs(fed[0, channel, y, x_].item() - expected) < 1e-3


def test_upp_parts_compete_within_the_pixels_object(upp):
    """Labels restated pixel by pixel from the decoder's logits: the object and material
    argmax; the part argmax within the most probable object's own parts, none elsewhere."""
    upp.sizes = (64,)
    try:
        x = images(1, (24, 32), seed=3)
        with torch.no_grad():
            logits = upp.decoder(upp.encoder(F.interpolate(
                upp.network_input(x), size=(64, 64), mode="bilinear", align_corners=False,
                antialias=True)))
            logits = {k: F.interpolate(v, size=(24, 32), mode="bilinear", align_corners=False)
                      for k, v in logits.items()}
        labels = upp.segment(x)
        check_contract(upp, x)
    finally:
        upp.sizes = (256,)
    objects, parts = UPP_LABELS["object"], upp.concepts["part"]
    slices, start = {}, 0
    for owner in sorted(UPP_PARTS, key=objects.index):
        slices[objects.index(owner)] = (start, UPP_PARTS[owner])
        start += len(UPP_PARTS[owner])
    owners_seen, without_parts = set(), 0
    for y in range(24):
        for x_ in range(32):
            owner = int(logits["object"][0, :, y, x_].argmax())
            assert labels["object"][0, y, x_] == owner
            assert labels["material"][0, y, x_] == int(logits["material"][0, :, y, x_].argmax())
            expected = 0
            if owner in slices:
                first, names = slices[owner]
                local = int(logits["part"][0, first:first + len(names), y, x_].argmax())
                expected = 0 if names[local] == "-" else parts.index(names[local])
                owners_seen.add(owner)
            else:
                without_parts += 1
            assert labels["part"][0, y, x_] == expected
    assert len(owners_seen) >= 2 and without_parts > 0  # both cases occur
    assert len(set(labels["part"].flatten().tolist())) >= 3


def test_upp_labels_from_unifiedparsings_csv_files(upp_dir, upp, tmp_path):
    """unifiedparsing's meta_file/joint_dataset csv files name the same classes."""
    folder = tmp_path / "upp"
    folder.mkdir()
    for name in ("encoder_epoch_40.pth", "decoder_epoch_40.pth"):
        (folder / name).write_bytes((upp_dir / name).read_bytes())

    def rows(names):
        return "label,name\n" + "".join(f"{k},{n}\n" for k, n in enumerate(names))

    (folder / "object.csv").write_text(rows(UPP_OBJECTS))
    (folder / "material.csv").write_text(rows(UPP_LABELS["material"]))
    (folder / "part.csv").write_text(rows(UPP_LABELS["part"]))
    part_code = {n: k for k, n in enumerate(UPP_LABELS["part"])}
    hierarchy = "object_label,object_name,part_labels,part_names\n" + "".join(
        f"{UPP_OBJECTS.index(o)},{o},{';'.join(str(part_code[p]) for p in ps)},{';'.join(ps)}\n"
        for o, ps in sorted(UPP_PARTS.items(), key=lambda item: UPP_OBJECTS.index(item[0])))
    (folder / "object_part_hierarchy.csv").write_text(hierarchy)
    assert resolve_segmenter(f"upp:{folder}").concepts == upp.concepts


@pytest.mark.parametrize("change, message", [
    (lambda d: (d / "labels.json").write_text(json.dumps({**UPP_LABELS,
                                                          "object": UPP_OBJECTS[:-1]})),
     r"label list does not fit the decoder \(object: 299 names, 300 outputs\)"),
    (lambda d: (d / "labels.json").unlink(), "has no label list: put GAN Dissection's labels"),
    (lambda d: (d / "decoder_epoch_40.pth").rename(d / "decoder_epoch_39.pth"),
     "no encoder_epoch_N.pth and decoder_epoch_N.pth pair"),
    (lambda d: torch.save({k: v for k, v in torch.load(d / "decoder_epoch_40.pth",
                                                       weights_only=True).items()
                           if not k.startswith("part_head")}, d / "decoder_epoch_40.pth"),
     "is not a Unified Perceptual Parsing UPerNet decoder: it has no part_head.1.weight"),
])
def test_upp_folders_that_do_not_fit_are_refused_in_one_line(upp_dir, tmp_path, change,
                                                              message):
    folder = tmp_path / "upp"
    folder.mkdir()
    for path in upp_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    change(folder)
    with pytest.raises(UserError, match=message) as caught:
        resolve_segmenter(f"upp:{folder}")
    assert "\n" not in str(caught.value)


def test_dissect_a_generator_with_the_upp_segmenter(upp_dir, tmp_path, capsys):
    """GAN Dissection's setting in one command: 300 object codes are stored as int16."""
    out = tmp_path / "out"
    assert main(["dissect", "--generator", "conftest:toy_generator", "--segmenter",
                 f"upp:{upp_dir}", "--layer", "layer4", "--samples", "8", "--batch", "8",
                 "--top-k", "2", "--images", "1", "--no-html", "--out", str(out),
                 "--device", "cpu"]) == 0
    data = json.loads((out / "dissect.json").read_text())
    assert data["settings"]["segmenter_name"] == f"upp:{upp_dir}"
    assert data["settings"]["categories"] == ["object", "part", "material"]
    (meta,) = [json.loads(p.read_text()) for p in (out / "cache").glob("labels-*/meta.json")]
    assert meta["dtype"] == "int16" and meta["done"] == 8
    assert "layer4: " in capsys.readouterr().out


# ----------------------------------------------------------------- semseg:DIR
@pytest.mark.parametrize("arch", SEMSEG_ARCHS)
def test_semseg_loads_each_published_model(arch, tmp_path):
    folder = write_semseg(tmp_path / f"ade20k-{arch}", arch)
    segmenter = resolve_segmenter(f"semseg:{folder}")
    assert segmenter.concepts["object"][:4] == ["none", "wall", "building", "sky"]
    assert segmenter.concepts["object"][45] == "chest of drawers"
    assert segmenter.padding == (32 if arch.endswith("upernet") else 8)
    x = images(1, (24, 36), seed=1)
    seen = captured_input(segmenter.encoder)
    check_contract(segmenter, x)
    # CSAIL's test: shorter side 300, the other scaled alike, both up to the padding multiple
    height = -(-300 // segmenter.padding) * segmenter.padding
    width = -(-int(36 * 300 / 24) // segmenter.padding) * segmenter.padding
    assert seen[0].shape == (1, 3, height, width)
    assert segmenter.probabilities(x)["object"][:, 0].abs().max() == 0  # "none": never
    # dilated encoders: output stride 8; the others 32
    with torch.no_grad():
        top = segmenter.encoder(torch.zeros(1, 3, 64, 64))[-1]
    assert top.shape[-1] == (8 if "dilated" in arch else 2)


@pytest.mark.parametrize("arch", ["resnet50dilated-ppm_deepsup", "mobilenetv2dilated-c1_deepsup"])
def test_dilated_encoders_follow_csails_rule(arch, tmp_path):
    """Every 3x3 convolution's stride and dilation, restated from the published rule: in the
    dilated stages a stride-2 convolution gets stride 1 and dilation rate/2, the others rate."""
    segmenter = resolve_segmenter(f"semseg:{write_semseg(tmp_path / 'm', arch)}")
    mobile = arch.startswith("mobilenet")
    checked = 0
    for name, conv in segmenter.encoder.named_modules():
        if not isinstance(conv, torch.nn.Conv2d) or conv.kernel_size != (3, 3):
            continue
        if mobile:
            block = int(name.split(".")[1])
            strided = (block in (2, 4, 7, 14) and name.endswith("conv.3")) or block == 0
            rate = 2 if 7 <= block < 14 else 4 if block >= 14 else 1
        else:
            layer = int(name[5]) if name.startswith("layer") else 0
            strided = name in ("conv1", "layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2")
            rate = {3: 2, 4: 4}.get(layer, 1)
        expected = ((2 if strided else 1), 1) if rate == 1 else (1, rate // 2 if strided else rate)
        assert (conv.stride[0], conv.dilation[0]) == expected, name
        assert conv.padding[0] == conv.dilation[0], name
        checked += 1
    assert checked > 10


def _bn(x, state, key):
    return F.batch_norm(x, state[f"{key}.running_mean"], state[f"{key}.running_var"],
                        state[f"{key}.weight"], state[f"{key}.bias"], False, 0.0, 1e-5)


def _cbr(x, state, key):
    weight = state[f"{key}.0.weight"]
    return F.relu(_bn(F.conv2d(x, weight, padding=weight.shape[-1] // 2), state, f"{key}.1"))


def _mean_pool(x, cells):
    """Adaptive average pooling by its definition: cell i covers rows floor(i H / n) up to
    ceil((i + 1) H / n)."""
    h, w = x.shape[-2:]
    out = torch.zeros(*x.shape[:2], cells, cells, dtype=x.dtype)
    for i in range(cells):
        for j in range(cells):
            rows = slice(i * h // cells, -(-(i + 1) * h // cells))
            columns = slice(j * w // cells, -(-(j + 1) * w // cells))
            out[:, :, i, j] = x[:, :, rows, columns].mean((2, 3))
    return out


def _up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("decoder", ["ppm_deepsup", "upernet"])
def test_semseg_decoders_restated_from_the_file(decoder, tmp_path):
    """The decoders' forward, restated with the file's tensors: pyramid pooling (average over
    cells, then conv for ppm_deepsup; average, upsample, then conv for upernet), the feature
    pyramid and the classifier."""
    arch = "resnet50dilated-ppm_deepsup" if decoder == "ppm_deepsup" else "resnet50-upernet"
    folder = write_semseg(tmp_path / "m", arch)
    segmenter = resolve_segmenter(f"semseg:{folder}")
    state = torch.load(folder / "decoder_epoch_20.pth", weights_only=True)
    torch.manual_seed(0)
    features = [torch.randn(1, c, s, s) for c, s in ((8, 12), (16, 6), (32, 5), (64, 3))]
    top = features[-1]
    with torch.no_grad():
        fast = segmenter.decoder(features)
    if decoder == "ppm_deepsup":
        pooled = [top]
        for i, cells in enumerate(POOL_SCALES):
            x = F.conv2d(_mean_pool(top, cells), state[f"ppm.{i}.1.weight"])
            pooled.append(_up(F.relu(_bn(x, state, f"ppm.{i}.2")), top.shape[2:]))
        x = F.conv2d(torch.cat(pooled, 1), state["conv_last.0.weight"], padding=1)
        x = F.relu(_bn(x, state, "conv_last.1"))
        slow = F.conv2d(x, state["conv_last.4.weight"], state["conv_last.4.bias"])
    else:
        pooled = [top] + [_cbr(_up(_mean_pool(top, cells), top.shape[2:]), state,
                               f"ppm_conv.{i}") for i, cells in enumerate(POOL_SCALES)]
        f = _cbr(torch.cat(pooled, 1), state, "ppm_last_conv")
        levels = [f]
        for i in (2, 1, 0):
            lateral = _cbr(features[i], state, f"fpn_in.{i}")
            f = lateral + _up(f, lateral.shape[2:])
            levels.insert(0, _cbr(f, state, f"fpn_out.{i}.0"))
        fused = torch.cat([levels[0]] + [_up(v, levels[0].shape[2:]) for v in levels[1:]], 1)
        slow = F.conv2d(_cbr(fused, state, "conv_last.0"), state["conv_last.1.weight"],
                        state["conv_last.1.bias"])
    assert torch.allclose(fast, slow, atol=1e-4)


def test_semseg_input_is_rgb_with_imagenet_mean_and_std(tmp_path):
    segmenter = resolve_segmenter(f"semseg:{write_semseg(tmp_path / 'm', SEMSEG_ARCHS[0])}")
    x = torch.tensor([-1.0, 0.2, 0.9]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    seen = captured_input(segmenter.encoder)
    with torch.no_grad():
        segmenter.probabilities(x)
    for channel, value in enumerate((-1.0, 0.2, 0.9)):  # a flat image stays flat when resized
        expected = ((value + 1) / 2 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        assert torch.allclose(seen[0][0, channel], torch.tensor(expected), atol=1e-5)


def test_semseg_names_from_the_folder_csv_and_its_architecture_from_the_folder_name(tmp_path):
    folder = write_semseg(tmp_path / "ade20k-resnet18dilated-ppm_deepsup",
                          "resnet18dilated-ppm_deepsup", config=False)
    table = ade20k_names()
    published = resources.files("gandissect.models.loaders").joinpath("ade20k_object150.tsv")
    cells = [line.split("\t")[0] for line in published.read_text().splitlines()]
    rows = ["Idx,Ratio,Train,Val,Stuff,Name"] + [f"{k + 1},0.01,10,1,0,{cell}"
                                                 for k, cell in enumerate(cells)]
    rows[2] = "2,0.01,10,1,1,edifice;building"  # a row of another list: its first word
    (folder / "object150_info.csv").write_text("\n".join(rows) + "\n")
    segmenter = resolve_segmenter(f"semseg:{folder}")
    names = segmenter.concepts["object"][1:]
    assert names[0] == "wall" and names[1] == "edifice" and names[44] == "chest of drawers"
    assert names[2:] == table[2:] and len(set(names)) == 150


@pytest.mark.parametrize("text, message", [
    ("MODEL:\n  arch_encoder: hrnetv2\n  arch_decoder: c1\n",
     "encoder hrnetv2 with decoder c1 is not supported; supported: resnet18dilated-ppm_deepsup"),
    ("MODEL: {}\n", "is not one of CSAIL's configs"),
])
def test_semseg_configs_that_do_not_fit(tmp_path, text, message):
    folder = write_semseg(tmp_path / "m", SEMSEG_ARCHS[0], config=False)
    (folder / "config.yaml").write_text(text)
    with pytest.raises(UserError, match=message):
        resolve_segmenter(f"semseg:{folder}")


def test_semseg_without_config_or_published_name(tmp_path):
    folder = write_semseg(tmp_path / "mine", SEMSEG_ARCHS[0], config=False)
    with pytest.raises(UserError, match="names no architecture: put the model's config YAML"):
        resolve_segmenter(f"semseg:{folder}")


def test_semseg_config_naming_another_encoder(tmp_path):
    folder = write_semseg(tmp_path / "m", "resnet18dilated-ppm_deepsup", config=False)
    (folder / "c.yaml").write_text(SEMSEG_CONFIG.format(
        encoder="resnet50dilated", decoder="ppm_deepsup", fc_dim=16, epoch=20, padding=8))
    with pytest.raises(UserError, match="is not a resnet50 encoder"):
        resolve_segmenter(f"semseg:{folder}")


# ----------------------------------------------------------------- torchvision:ARCH
def torchvision_file(path, arch, aux):
    """A torchvision segmentation model's state dict, as torchvision releases them (with the
    ``aux_classifier.*`` keys of a model trained with the auxiliary loss, when ``aux``)."""
    import torchvision

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torchvision.models.get_model(arch, weights=None, weights_backbone=None,
                                             num_classes=21, **({"aux_loss": True} if aux
                                                                else {}))
    torch.save(model.eval().state_dict(), path)
    return model


@pytest.mark.parametrize("arch, aux", [("lraspp_mobilenet_v3_large", False),
                                       ("deeplabv3_mobilenet_v3_large", True)])
def test_torchvision_segmenter_from_a_released_state_dict(tmp_path, arch, aux):
    model = torchvision_file(tmp_path / "weights.pth", arch, aux)
    if aux:
        assert any(k.startswith("aux_classifier.") for k in torch.load(tmp_path / "weights.pth",
                                                                weights_only=True))
    segmenter = resolve_segmenter(f"torchvision:{arch}", weights=tmp_path / "weights.pth")
    names = segmenter.concepts["object"]
    assert names[0] == "none" and names[1] == "aeroplane" and names[15] == "person"
    assert len(names) == 21 and segmenter.size == 520  # torchvision's resize_size
    segmenter.size = 48  # (the check below at a small size, for speed)
    x = images(1, (20, 30), seed=2)
    check_contract(segmenter, x)
    # restated: shorter side to 48, ImageNet normalisation, ``out`` upsampled, softmax
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    resized = F.interpolate(x, size=(48, 72), mode="bilinear", align_corners=False,
                            antialias=True)
    with torch.no_grad():
        out = model.eval()(((resized + 1) / 2 - mean) / std)["out"]
        slow = F.interpolate(out, size=(20, 30), mode="bilinear",
                             align_corners=False).softmax(1)
        assert torch.allclose(segmenter.probabilities(x)["object"], slow, atol=1e-5)


def test_torchvision_segmenter_input_convention(tmp_path):
    """A flat image: every pixel ((value + 1) / 2 - mean) / std, the shorter side 520."""
    torchvision_file(tmp_path / "w.pth", "lraspp_mobilenet_v3_large", False)
    segmenter = resolve_segmenter("torchvision:lraspp_mobilenet_v3_large",
                                  weights=str(tmp_path / "w.pth"))
    x = torch.tensor([0.5, -0.25, -1.0]).view(1, 3, 1, 1).expand(1, 3, 10, 8)
    seen = captured_input(segmenter.model)
    with torch.no_grad():
        segmenter.probabilities(x)
    assert seen[0].shape == (1, 3, 650, 520)
    for channel, value in enumerate((0.5, -0.25, -1.0)):
        expected = ((value + 1) / 2 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        assert torch.allclose(seen[0][0, channel], torch.tensor(expected), atol=1e-5)


def test_segmenter_weights_where_they_do_not_apply(upp_dir, tmp_path, capsys):
    with pytest.raises(UserError, match=r"torchvision:fcn_resnet50 needs its weights: "
                                        r"--segmenter-weights FILE"):
        resolve_segmenter("torchvision:fcn_resnet50")
    with pytest.raises(UserError, match="unknown torchvision segmenter 'resnet18'; known: fcn"):
        resolve_segmenter("torchvision:resnet18", weights=tmp_path / "w.pth")
    with pytest.raises(UserError, match="segmenter weights apply to torchvision:ARCH and "
                                        "plug-in segmenters, not 'upp:"):
        resolve_segmenter(f"upp:{upp_dir}", weights=tmp_path / "w.pth")
    assert main(["dissect", "--generator", "conftest:toy_generator", "--segmenter",
                 "sceneworld", "--segmenter-weights", str(tmp_path / "w.pth"), "--samples",
                 "8", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "segmenter weights apply to torchvision:ARCH" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_plug_in_segmenter_takes_weights(tmp_path):
    from conftest import ToySegmenter

    trained = ToySegmenter()
    trained.sharpness.data.fill_(3.0)
    torch.save(trained.state_dict(), tmp_path / "toy.pth")
    segmenter = resolve_segmenter("conftest:toy_segmenter", weights=tmp_path / "toy.pth")
    assert segmenter.sharpness.item() == 3.0


# ----------------------------------------------------------------- masks:DIR
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (252 * 3) + [224, 224, 192]


def write_masks(folder, n=4, size=(40, 30), categories=None):
    """Pascal VOC style: JPEG images, palette PNG labels (255 on the borders), labels.txt;
    with ``categories``, one label folder per category and labels.json."""
    rng = np.random.default_rng(0)
    (folder / "images" / "sub").mkdir(parents=True)
    names = categories or {"object": ["background", "tree", "sky"]}
    for i in range(n):
        stem = f"sub/img_{i}" if i % 2 else f"img_{i}"
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{stem}.jpg")
        for category, listed in names.items():
            codes = rng.integers(0, len(listed), (size[1], size[0])).astype(np.uint8)
            codes[0, :] = 255  # the void border
            label = Image.frombytes("P", size, codes.tobytes())
            label.putpalette(VOC_PALETTE)
            target = folder / "labels" / (category if categories else "") / f"{stem}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            label.save(target)
    if categories:
        (folder / "labels.json").write_text(json.dumps(categories))
    else:
        (folder / "labels.txt").write_text("\n".join(names["object"]) + "\n")
    return folder


def test_masks_probe_reads_index_pngs(tmp_path):
    from gandissect.netdissect.masks import MaskProbe

    folder = write_masks(tmp_path / "voc")
    probe = MaskProbe(folder, size=16)
    assert probe.categories == ("object",)
    assert probe.concepts == {"object": ["none", "tree", "sky"]}
    assert [p.name for p in probe.files] == ["img_0.jpg", "img_2.jpg", "img_1.jpg", "img_3.jpg"]
    (batch,) = list(probe.batches(8))
    assert batch.images.shape == (4, 3, 16, 16) and batch.labels.shape == (4, 1, 16, 16)
    # restated: shorter side 30 -> 16 (so 40 -> 21), centre crop columns 2..17, nearest pixel
    codes = np.asarray(Image.open(folder / "labels" / "img_0.png")).astype(np.int64)
    codes[codes == 255] = 0
    for y in range(16):
        for x in range(16):
            source_y = min(int((y + 0.5) * 30 / 16), 29)
            source_x = min(int((x + 2 + 0.5) * 40 / 21), 39)
            assert batch.labels[0, 0, y, x] == codes[source_y, source_x]
    assert batch.labels.max() == 2 and batch.labels[:, :, 0].max() == 0  # void -> none


def test_masks_probe_with_several_categories(tmp_path):
    from gandissect.netdissect.masks import MaskProbe

    folder = write_masks(tmp_path / "ade", categories={"object": ["-", "wall", "door"],
                                                       "part": ["-", "knob"]})
    probe = MaskProbe(folder, size=24, n=2)
    assert probe.categories == ("object", "part") and len(probe) == 2
    assert probe.concepts["part"] == ["none", "knob"]
    assert next(probe.batches(2)).labels.shape == (2, 2, 24, 24)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "labels" / "img_0.png").unlink(),
     r"1 label files are missing: labels/img_0.png"),
    (lambda d: Image.new("RGB", (40, 30)).save(d / "labels" / "img_0.png"),
     "img_0.png is RGB, not one code per pixel"),
    (lambda d: Image.new("L", (20, 30)).save(d / "labels" / "img_0.png"),
     "img_0.png is 20x30, its image 40x30"),
    (lambda d: (d / "labels.txt").unlink(), "has no label list: write labels.txt"),
    (lambda d: (d / "labels.txt").write_text("bg\ntree\ntree\n"), "names tree twice"),
])
def test_masks_folders_that_do_not_fit(tmp_path, damage, message):
    from gandissect.netdissect.masks import MaskProbe

    folder = write_masks(tmp_path / "voc")
    damage(folder)
    with pytest.raises(UserError, match=message):
        MaskProbe(folder, size=16)


def test_masks_code_beyond_the_list(tmp_path):
    from gandissect.netdissect.masks import MaskProbe

    folder = write_masks(tmp_path / "voc")
    Image.fromarray(np.full((30, 40), 7, np.uint8)).save(folder / "labels" / "img_0.png")
    probe = MaskProbe(folder, size=16)
    with pytest.raises(UserError, match="img_0.png holds code 7, but the label list names "
                                        "codes 0-2 of 'object'"):
        next(probe.batches(4))


def test_netdissect_on_annotated_masks(tmp_path, capsys):
    folder = write_masks(tmp_path / "voc")
    out = tmp_path / "nd"
    assert main(["netdissect", "--classifier", "conftest:tiny_classifier", "--layer", "layer4",
                 "--dataset", f"masks:{folder}", "--batch", "2", "--images", "1", "--no-html",
                 "--quiet", "--device", "cpu", "--out", str(out)]) == 0
    settings = json.loads((out / "dissect.json").read_text())["settings"]
    assert settings["dataset"] == f"masks:{folder}" and settings["n"] == 4
    assert settings["size"] == 64 and settings["categories"] == ["object"]
    assert "layer4: " in capsys.readouterr().out


def test_the_apps_classifier_dissection_on_masks(tmp_path):
    from gandissect.app.explain import ClassifierModels
    from gandissect.cli import build_parser
    from gandissect.cli.app import config_from_args

    folder = write_masks(tmp_path / "voc")
    config = config_from_args(build_parser().parse_args(
        ["app", "--classifier", "conftest:tiny_classifier", "--dataset", f"masks:{folder}"]))
    assert config.dataset == f"masks:{folder}"
    models = ClassifierModels(config.classifiers, "cpu", dataset=config.dataset)
    result = models.dissect("conftest:tiny_classifier", "layer4", 10, progress=False)
    assert result.settings["dataset"] == f"masks:{folder}" and result.settings["n"] == 4
    strip = models.top_images("conftest:tiny_classifier", result.layers[0], 10, 0, count=2)
    assert strip.ndim == 3 and strip.shape[-1] == 3
    with pytest.raises(UserError, match="masks:.*missing: no such folder"):
        config_from_args(build_parser().parse_args(
            ["app", "--dataset", f"masks:{tmp_path / 'missing'}"]))


# ----------------------------------------------------------------- a new user's first commands
def test_upp_end_to_end(upp_dir, tmp_path):
    """layers, dissect, edit, ace and the app's Paint tab with GAN Dissection's segmenter."""
    end_to_end("conftest:toy_generator", f"upp:{upp_dir}", "layer4", tmp_path)


def test_semseg_end_to_end(tmp_path):
    folder = write_semseg(tmp_path / "ade20k-resnet18dilated-ppm_deepsup",
                          "resnet18dilated-ppm_deepsup")
    end_to_end("conftest:toy_generator", f"semseg:{folder}", "layer4", tmp_path)


def test_torchvision_segmenter_end_to_end(tmp_path):
    torchvision_file(tmp_path / "lraspp.pth", "lraspp_mobilenet_v3_large", False)
    end_to_end("conftest:toy_generator", "torchvision:lraspp_mobilenet_v3_large", "layer4",
               tmp_path, segmenter_weights=tmp_path / "lraspp.pth")
