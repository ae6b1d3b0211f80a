"""NVIDIA's StyleGAN2-ADA and StyleGAN3 network pickles, loaded as ``nvidia:PATH``.

The files are pickled here with the structure NVIDIA's ``torch_utils.persistence`` writes: every
network a call of the global ``torch_utils.persistence._reconstruct_persistent_obj`` on
``{'type': 'class', 'version': 6, 'module_src': <source text>, 'class_name': ..., 'state': <the
module's __dict__>}``, tensors pickled by torch's own reducers (``_rebuild_parameter``,
``_rebuild_tensor_v2``, ``torch.storage._load_from_bytes``), NumPy scalars and arrays among the
attributes and ``dnnlib.util.EasyDict`` among the constructor arguments. The modules
``torch_utils`` and ``dnnlib`` exist only while a file is written. The networks have NVIDIA's
class names, child names, attributes and shapes (tiny: 32 px, 8 units, random weights).

Loaded generators are compared with slow restatements of NVIDIA's description, computed sample
by sample from the file's own tensors and attributes: for StyleGAN2-ADA, per-sample modulated
and demodulated weights, the upsampling layers as zero insertion, padding (3, 2), the FIR
[1, 3, 3, 1] x 4 and a true convolution, the constant noise, bias, leaky ReLU x sqrt 2 and the
clamp, the to-RGB skips upsampled the same way; for StyleGAN3, the Fourier features on
``affine_grid``'s sampling grid, weights and styles normalised, modulated and demodulated, the
input gain, then bias, zero insertion, padding, the file's up filter, leaky ReLU, clamp, the
file's down filter and decimation, written as loops.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import re
import sys
import types

import numpy as np
import pytest
import torch
from conftest import end_to_end
from torch import nn
from torch.nn import functional as F

from gandissect.hooks import Edit, Trace, layer_names, partial_forward
from gandissect.models import stylegan3
from gandissect.models.loaders.files import UnsafeCheckpointError
from gandissect.models.loaders.nvidia import describe_generator, load_nvidia
from gandissect.models.registry import shipped_path
from gandissect.models.specs import resolve_generator
from gandissect.models.stylegan3 import CONFIGS, layer_specs, lowpass_filter

needs_segmenter = pytest.mark.skipif(not shipped_path("segmenter").is_file(),
                                     reason="the shipped segmenter is not in models/")
SQRT2 = math.sqrt(2)
SOURCE = '"""Network architectures (the source text the pickle carries; never run)."""\n'


# ------------------------------------------------------------- NVIDIA's persistence, restated
def _reconstruct_persistent_obj(meta):
    raise AssertionError("only NVIDIA's own loader calls this")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})


@contextlib.contextmanager
def nvidia_modules():
    """``torch_utils.persistence`` and ``dnnlib.util`` as NVIDIA's pickles name them, present
    in ``sys.modules`` only while a file is written."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    added = {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
             "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    assert not set(added) & set(sys.modules)
    sys.modules.update(added)
    try:
        yield EasyDict
    finally:
        for name in added:
            sys.modules.pop(name, None)


class Persistent(nn.Module):
    """A module pickled the way ``persistence.persistent_class`` pickles one: the reconstruct
    call on the meta dict, whose ``state`` is what ``object.__reduce__`` gives (the
    ``__dict__``)."""

    source = SOURCE

    def __reduce__(self):
        fields = list(super().__reduce__())
        fields += [None] * max(3 - len(fields), 0)
        meta = dict(type="class", version=6, module_src=self.source,
                    class_name=type(self).__name__, state=fields[2])
        return (_reconstruct_persistent_obj, (meta,), None)


_CLASSES: dict[str, type] = {}


def network(class_name, args=(), kwargs=None, params=None, buffers=None, children=None,
            **attributes):
    """A persistent module named like NVIDIA's class, with its parameters, buffers, children,
    plain attributes and constructor arguments (``_init_args`` / ``_init_kwargs``)."""
    cls = _CLASSES.setdefault(class_name, type(class_name, (Persistent,), {}))
    module = cls()
    for name, value in (params or {}).items():
        module.register_parameter(name, nn.Parameter(value, requires_grad=False))
    for name, value in (buffers or {}).items():
        module.register_buffer(name, value)
    for name, child in (children or {}).items():
        module.add_module(name, child)
    for name, value in attributes.items():
        setattr(module, name, value)
    module._init_args, module._init_kwargs = tuple(args), dict(kwargs or {})
    return module


def write_pickle(path, generator, **extra):
    """A training snapshot as NVIDIA's training loops write it."""
    with nvidia_modules() as easy:
        snapshot = dict(G=generator, D=None, G_ema=generator, augment_pipe=None,
                        training_set_kwargs=easy(class_name="training.dataset.ImageFolderDataset",
                                                 path="data.zip", use_labels=True, xflip=False,
                                                 resolution=32))
        snapshot.update(extra)
        with open(path, "wb") as file:
            pickle.dump(snapshot, file)
    return path


# ------------------------------------------------------------------- the networks, NVIDIA's way
def randn(g, *shape, scale=1.0):
    return torch.randn(shape, generator=g) * scale


def fully_connected(g, in_features, out_features, activation="linear", lr=1.0, bias_init=0.0,
                    weight_scale=1.0):
    return network("FullyConnectedLayer", (in_features, out_features),
                   dict(activation=activation, lr_multiplier=lr, bias_init=bias_init),
                   params={"weight": randn(g, out_features, in_features, scale=weight_scale / lr),
                           "bias": bias_init + randn(g, out_features, scale=0.2)},
                   in_features=in_features, out_features=out_features, activation=activation,
                   weight_gain=np.float64(lr / np.sqrt(in_features)), bias_gain=lr)


def mapping_network(g, z_dim, c_dim, w_dim, num_ws, num_layers, embed=None):
    lr = 0.01
    embed = w_dim if embed is None else embed
    widths = [z_dim + (embed if c_dim else 0)] + [w_dim] * num_layers
    children = {"embed": fully_connected(g, c_dim, embed)} if c_dim else {}
    children.update({f"fc{k}": fully_connected(g, widths[k], widths[k + 1], "lrelu", lr)
                     for k in range(num_layers)})
    return network("MappingNetwork", (), dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim,
                                              num_ws=num_ws, num_layers=num_layers),
                   buffers={"w_avg": randn(g, w_dim)}, children=children, z_dim=z_dim,
                   c_dim=c_dim, w_dim=w_dim, num_ws=num_ws, num_layers=num_layers,
                   w_avg_beta=0.998)


BINOMIAL = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64


def stylegan2_layer(g, in_channels, out_channels, w_dim, resolution, up, conv_clamp):
    return network(
        "SynthesisLayer", (in_channels, out_channels),
        dict(w_dim=w_dim, resolution=resolution, up=up, conv_clamp=conv_clamp),
        params={"weight": randn(g, out_channels, in_channels, 3, 3),
                "noise_strength": randn(g, scale=0.3),
                "bias": randn(g, out_channels, scale=0.2)},
        buffers={"resample_filter": BINOMIAL.clone(),
                 "noise_const": randn(g, resolution, resolution)},
        children={"affine": fully_connected(g, w_dim, in_channels, bias_init=1.0)},
        in_channels=in_channels, out_channels=out_channels, w_dim=w_dim, resolution=resolution,
        up=up, use_noise=True, activation="lrelu", conv_clamp=conv_clamp, padding=1,
        act_gain=np.float64(SQRT2))


def stylegan2_generator(seed=0, z_dim=8, c_dim=0, w_dim=8, channels=(8, 8, 6, 4),
                        img_channels=3, conv_clamp=256, architecture="skip", mapping_layers=2):
    """A StyleGAN2-ADA ``Generator`` (networks_stylegan2) with NVIDIA's names and attributes."""
    g = torch.Generator().manual_seed(seed)
    resolution = 4 * 2 ** (len(channels) - 1)
    blocks, num_ws = {}, 0
    for k, out_channels in enumerate(channels):
        size = 4 * 2 ** k
        children, params = {}, {}
        if k == 0:
            params["const"] = randn(g, out_channels, 4, 4)
        else:
            children["conv0"] = stylegan2_layer(g, channels[k - 1], out_channels, w_dim, size, 2,
                                                conv_clamp)
        children["conv1"] = stylegan2_layer(g, out_channels, out_channels, w_dim, size, 1,
                                            conv_clamp)
        children["torgb"] = network(
            "ToRGBLayer", (out_channels, img_channels), dict(w_dim=w_dim, conv_clamp=conv_clamp),
            params={"weight": randn(g, img_channels, out_channels, 1, 1),
                    "bias": randn(g, img_channels, scale=0.2)},
            children={"affine": fully_connected(g, w_dim, out_channels, bias_init=1.0)},
            in_channels=out_channels, out_channels=img_channels, w_dim=w_dim,
            conv_clamp=conv_clamp, weight_gain=np.float64(1 / np.sqrt(out_channels)))
        num_conv = len(children) - 1
        blocks[f"b{size}"] = network(
            "SynthesisBlock", (channels[k - 1] if k else 0, out_channels),
            dict(w_dim=w_dim, resolution=size, img_channels=img_channels,
                 is_last=size == resolution, architecture=architecture, use_fp16=False,
                 conv_clamp=conv_clamp),
            params=params, buffers={"resample_filter": BINOMIAL.clone()}, children=children,
            in_channels=channels[k - 1] if k else 0, w_dim=w_dim, resolution=size,
            img_channels=img_channels, is_last=size == resolution, architecture=architecture,
            use_fp16=False, channels_last=False, fused_modconv_default=True,
            num_conv=num_conv, num_torgb=1)
        num_ws += num_conv
    num_ws += 1
    synthesis = network("SynthesisNetwork", (), dict(w_dim=w_dim, img_resolution=resolution,
                                                     img_channels=img_channels),
                        children=blocks, w_dim=w_dim, img_resolution=resolution,
                        img_resolution_log2=int(np.log2(resolution)), img_channels=img_channels,
                        num_fp16_res=0, block_resolutions=[4 * 2 ** k for k in
                                                           range(len(channels))], num_ws=num_ws)
    with nvidia_modules() as easy:  # constructor arguments carry EasyDicts
        kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=resolution,
                      img_channels=img_channels, mapping_kwargs=easy(num_layers=mapping_layers),
                      channel_base=256, channel_max=8, num_fp16_res=0, conv_clamp=conv_clamp)
    return network("Generator", (), kwargs, children={
        "synthesis": synthesis,
        "mapping": mapping_network(g, z_dim, c_dim, w_dim, num_ws, mapping_layers)},
        z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=resolution,
        img_channels=img_channels, num_ws=num_ws)


TINY3 = {"channel_base": 256, "channel_max": 8}  # 8 units in every layer at 32 px


def perturbed(g, taps):
    """A designed filter, changed a little: the loader must use the file's, not redesign."""
    return None if taps is None else taps * (1 + randn(g, *taps.shape, scale=0.05))


def stylegan3_generator(config="t", seed=0, z_dim=8, c_dim=0, w_dim=8, img_channels=3,
                        num_layers=14, conv_clamp=256, resolution=32):
    """A StyleGAN3 ``Generator`` (networks_stylegan3) with NVIDIA's names and attributes; its
    layout from the paper's formulas (checked against NVIDIA's names below)."""
    g = torch.Generator().manual_seed(seed)
    options = {**CONFIGS[config], **TINY3}
    first, specs = layer_specs(resolution, img_channels, num_layers=num_layers, **options)
    channels, size = first.channels, first.size
    input_affine = fully_connected(g, w_dim, 4, weight_scale=0.3)
    input_affine.bias.copy_(torch.tensor([1.0, 0, 0, 0]) + randn(g, 4, scale=0.1))
    turn = 0.1 * randn(g, 3, 3)
    turn[2] = torch.tensor([0.0, 0, 1])
    layers = {"input": network(
        "SynthesisInput", (), dict(w_dim=w_dim, channels=channels, size=size,
                                   sampling_rate=np.float64(first.sampling_rate),
                                   bandwidth=np.float64(first.bandwidth)),
        params={"weight": randn(g, channels, channels)},
        buffers={"transform": torch.eye(3) + turn, "freqs": randn(g, channels, 2),
                 "phases": torch.rand(channels, generator=g) - 0.5},
        children={"affine": input_affine}, w_dim=w_dim, channels=channels,
        size=np.broadcast_to(np.asarray(size), [2]),
        sampling_rate=np.float64(first.sampling_rate), bandwidth=np.float64(first.bandwidth))}
    names = []
    for k, spec in enumerate(specs):
        name = f"L{k}_{spec.out_size}_{spec.out_channels}"
        up = lowpass_filter(spec.up_taps, spec.up_cutoff, spec.up_width, spec.tmp_sampling_rate)
        down = lowpass_filter(spec.down_taps, spec.down_cutoff, spec.down_width,
                              spec.tmp_sampling_rate, spec.down_radial)
        layers[name] = network(
            "SynthesisLayer", (), dict(w_dim=w_dim, is_torgb=spec.is_torgb,
                                       in_channels=spec.in_channels,
                                       out_channels=spec.out_channels,
                                       in_size=spec.in_size, out_size=spec.out_size),
            params={"weight": randn(g, spec.out_channels, spec.in_channels, spec.kernel,
                                    spec.kernel),
                    "bias": randn(g, spec.out_channels, scale=0.2)},
            buffers={"magnitude_ema": 0.5 + torch.rand([], generator=g),
                     "up_filter": perturbed(g, up), "down_filter": perturbed(g, down)},
            children={"affine": fully_connected(g, w_dim, spec.in_channels, bias_init=1.0)},
            w_dim=w_dim, is_torgb=spec.is_torgb, is_critically_sampled=spec.is_critically_sampled,
            use_fp16=False, in_channels=spec.in_channels, out_channels=spec.out_channels,
            in_size=np.broadcast_to(np.asarray(spec.in_size), [2]),
            out_size=np.broadcast_to(np.asarray(spec.out_size), [2]),
            in_sampling_rate=spec.in_size - 2 * spec.in_margin,
            out_sampling_rate=spec.out_size - 2 * spec.out_margin,
            tmp_sampling_rate=np.float64(spec.tmp_sampling_rate), conv_kernel=spec.kernel,
            conv_clamp=conv_clamp, magnitude_ema_beta=0.999, up_factor=spec.up,
            up_taps=spec.up_taps, down_factor=spec.down, down_taps=spec.down_taps,
            down_radial=spec.down_radial, padding=[int(p) for p in spec.padding])
        names.append(name)
    synthesis = network("SynthesisNetwork", (), {}, children=layers, w_dim=w_dim,
                        num_ws=num_layers + 2, img_resolution=resolution,
                        img_channels=img_channels, num_layers=num_layers, num_critical=2,
                        margin_size=10, output_scale=0.25, num_fp16_res=0, layer_names=names)
    with nvidia_modules() as easy:
        kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=resolution,
                      img_channels=img_channels, mapping_kwargs=easy(num_layers=2),
                      channel_base=options["channel_base"], channel_max=options["channel_max"],
                      magnitude_ema_beta=np.float64(0.5 ** (32 / 20000)), num_fp16_res=0,
                      conv_clamp=conv_clamp, num_layers=num_layers)
        if config == "r":
            kwargs.update(conv_kernel=1, use_radial_filters=True)
    return network("Generator", (), kwargs, children={
        "synthesis": synthesis,
        "mapping": mapping_network(g, z_dim, c_dim, w_dim, num_layers + 2, 2)},
        z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=resolution,
        img_channels=img_channels, num_ws=num_layers + 2)


# ----------------------------------------------------------------------- the slow definitions
def upfirdn_slow(x, f, up=1, down=1, pad=(0, 0, 0, 0), gain=1.0):
    """Zeros between the samples (``up``), pad or crop (left, right, top, bottom), a true
    convolution channel by channel with ``f`` (1-D: the outer product) times ``gain``, then
    every ``down``-th sample."""
    n, c, h, w = x.shape
    spread = x.clone()
    if up > 1:
        spread = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
        for i in range(h):
            for j in range(w):
                spread[:, :, i * up, j * up] = x[:, :, i, j]
    left, right, top, bottom = pad
    padded = F.pad(spread, (max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)))
    padded = padded[:, :, max(-top, 0):padded.shape[2] - max(-bottom, 0),
                    max(-left, 0):padded.shape[3] - max(-right, 0)]
    kernel = torch.ones(1, 1) if f is None else torch.outer(f, f) if f.dim() == 1 else f
    flipped = (torch.flip(kernel, [0, 1]) * gain)[None, None].to(x.dtype)
    out = torch.cat([F.conv2d(padded[:, k:k + 1], flipped) for k in range(c)], 1)
    return out[:, :, ::down, ::down]


def norm2(x):
    return x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-8)


def dense(state, prefix, x, lr=1.0, activate=False):
    weight = state[f"{prefix}.weight"]
    y = x @ (weight * lr / math.sqrt(weight.shape[1])).T + state[f"{prefix}.bias"] * lr
    return F.leaky_relu(y, 0.2) * SQRT2 if activate else y


def mapping_reference(state, z, c=None, psi=1.0, lr=0.01):
    x = norm2(z)
    if c is not None:
        x = torch.cat([x, norm2(dense(state, "mapping.embed", c))], 1)
    k = 0
    while f"mapping.fc{k}.weight" in state:
        x = dense(state, f"mapping.fc{k}", x, lr, activate=True)
        k += 1
    w_avg = state["mapping.w_avg"]
    return w_avg + psi * (x - w_avg)


def stylegan2_reference(state, z, c=None, psi=1.0, clamp=256.0):
    """NVIDIA's StyleGAN2 synthesis, one sample at a time (see the module docstring)."""
    ws = mapping_reference(state, z, c, psi)
    sizes = sorted(int(key.split(".")[1][1:]) for key in state
                   if key.startswith("synthesis.b") and key.endswith(".torgb.bias"))
    f = state["synthesis.b4.resample_filter"]
    images = []
    for w in ws:
        def layer(x, prefix, up, w=w):
            style = dense(state, f"{prefix}.affine", w)
            weight = state[f"{prefix}.weight"] * style[None, :, None, None]
            weight = weight / torch.sqrt((weight ** 2).sum((1, 2, 3), keepdim=True) + 1e-8)
            if up == 2:  # zeros, pad, the FIR x 4, then a true convolution
                x = upfirdn_slow(x, f, up=2, pad=(3, 2, 3, 2), gain=4)
                x = F.conv2d(x, torch.flip(weight, [2, 3]))
            else:
                x = F.conv2d(x, weight, padding=1)
            x = x + state[f"{prefix}.noise_const"] * state[f"{prefix}.noise_strength"]
            x = F.leaky_relu(x + state[f"{prefix}.bias"][None, :, None, None], 0.2) * SQRT2
            return x.clamp(-clamp, clamp) if clamp is not None else x

        def to_rgb(x, prefix, w=w):
            style = dense(state, f"{prefix}.affine", w) / math.sqrt(x.shape[1])
            y = F.conv2d(x, state[f"{prefix}.weight"] * style[None, :, None, None])
            y = y + state[f"{prefix}.bias"][None, :, None, None]
            return y.clamp(-clamp, clamp) if clamp is not None else y

        x, image = state["synthesis.b4.const"][None], None
        for size in sizes:
            block = f"synthesis.b{size}"
            if size > 4:
                x = layer(x, f"{block}.conv0", 2)
            x = layer(x, f"{block}.conv1", 1)
            y = to_rgb(x, f"{block}.torgb")
            image = y if image is None else upfirdn_slow(image, f, 2, pad=(2, 1, 2, 1),
                                                         gain=4) + y
        images.append(image)
    return torch.cat(images)


def fourier_features(state, w, attributes):
    prefix = "synthesis.input"
    size, rate = attributes["size"], attributes["sampling_rate"]
    bandwidth = attributes["bandwidth"]
    t = dense(state, f"{prefix}.affine", w[None])[0]
    t = t / t[:2].norm()
    rotation, translation = torch.eye(3, dtype=w.dtype), torch.eye(3, dtype=w.dtype)
    rotation[0, 0], rotation[0, 1], rotation[1, 0], rotation[1, 1] = t[0], -t[1], t[1], t[0]
    translation[0, 2], translation[1, 2] = -t[2], -t[3]
    transform = rotation @ translation @ state[f"{prefix}.transform"]
    freqs, phases = state[f"{prefix}.freqs"], state[f"{prefix}.phases"]
    phases = phases + freqs @ transform[:2, 2]
    freqs = freqs @ transform[:2, :2]
    amplitudes = (1 - (freqs.norm(dim=1) - bandwidth) / (rate / 2 - bandwidth)).clamp(0, 1)
    theta = torch.tensor([[0.5 * size / rate, 0, 0], [0, 0.5 * size / rate, 0]], dtype=w.dtype)
    grid = F.affine_grid(theta[None], [1, 1, size, size], align_corners=False)[0]  # (H, W, xy)
    x = torch.sin(2 * math.pi * (grid @ freqs.T + phases)) * amplitudes  # (H, W, C)
    weight = state[f"{prefix}.weight"]
    return (x @ (weight / math.sqrt(weight.shape[0])).T).permute(2, 0, 1)[None]


def modulated_conv_reference(x, weight, style, magnitude_ema, torgb, style_map=None):
    """NVIDIA's modulated convolution of one sample: the weights normalised to unit mean
    square, times the style normalised likewise, demodulated (the to-RGB instead: the style
    times 1 / sqrt(fan_in), no demodulation), times ``magnitude_ema`` ** -1/2, padding k - 1.
    With ``style_map`` (a style per input position), it scales the input instead and ``style``
    serves the normalisation and the demodulation only."""
    k = weight.shape[-1]
    if torgb:
        gain, demodulation = 1 / math.sqrt(weight.shape[1] * k ** 2), 1.0
    else:
        weight = weight / torch.sqrt((weight ** 2).mean((1, 2, 3), keepdim=True))
        gain = 1 / torch.sqrt((style ** 2).mean())
        modulated = weight * style[None, :, None, None] * gain
        demodulation = 1 / torch.sqrt((modulated ** 2).sum((1, 2, 3)) + 1e-8)[:, None, None,
                                                                                None]
    scale = gain * demodulation / torch.sqrt(magnitude_ema)
    if style_map is None:
        return F.conv2d(x, weight * style[None, :, None, None] * scale, padding=k - 1)
    return F.conv2d(x * style_map, weight * scale, padding=k - 1)


def stylegan3_reference(state, layers, z, c=None, psi=1.0, styles_set=None):
    """NVIDIA's StyleGAN3 synthesis, one sample at a time; ``layers``: (name, attributes) in
    order; ``styles_set``: {name: (channel, value)}, a style set over the image (the layer
    input's centre ``in_sampling_rate`` samples; its margin keeps the style) and in the
    demodulation."""
    ws = mapping_reference(state, z, c, psi)
    images = []
    for w in ws:
        x = fourier_features(state, w, layers[0][1])
        for name, attributes in layers[1:]:
            prefix = f"synthesis.{name}"
            torgb = attributes["is_torgb"]
            style = dense(state, f"{prefix}.affine", w[None])[0]
            style_map = None
            if styles_set and name in styles_set:
                channel, value = styles_set[name]
                margin = (first_of(attributes["in_size"]) - attributes["in_sampling_rate"]) // 2
                style_map = style[None, :, None, None] * torch.ones_like(x)
                style_map[0, channel, margin:x.shape[2] - margin,
                          margin:x.shape[3] - margin] = value
                style = style.clone()
                style[channel] = value
            x = modulated_conv_reference(x, state[f"{prefix}.weight"], style,
                                         state[f"{prefix}.magnitude_ema"], torgb, style_map)
            x = x + state[f"{prefix}.bias"][None, :, None, None]
            up, down = attributes["up_factor"], attributes["down_factor"]
            x = upfirdn_slow(x, state.get(f"{prefix}.up_filter"), up=up,
                             pad=attributes["padding"], gain=up ** 2)
            if not torgb:
                x = F.leaky_relu(x, 0.2) * SQRT2
            x = x.clamp(-attributes["conv_clamp"], attributes["conv_clamp"])
            x = upfirdn_slow(x, state.get(f"{prefix}.down_filter"), down=down)
        images.append(x * 0.25)
    return torch.cat(images)


def layer_attributes(description):
    """(name, attributes) of the input and every layer, in NVIDIA's order."""
    names = description.attribute("synthesis", "layer_names")
    return [("input", {key: description.attribute("synthesis.input", key)
                       for key in ("size", "sampling_rate", "bandwidth")})] + [
        (name, {key: description.attribute(f"synthesis.{name}", key) for key in
                ("is_torgb", "up_factor", "down_factor", "padding", "conv_clamp", "in_size",
                 "in_sampling_rate")})
        for name in names]


def close(images, expected):
    """StyleGAN2 in float64: equal but for where the demodulation's epsilon 1e-8 goes (added
    to |W s|^2 / fan_in in our modules, as in rosinality's, to |W s|^2 in NVIDIA's): a relative
    difference of order 1e-8."""
    return torch.allclose(images, expected, rtol=0, atol=1e-7 * float(expected.abs().max()))


def first_of(value):
    return value[0] if isinstance(value, list) else value


def double(state):
    return {k: v.double() for k, v in state.items()}


def latents(n=2, z_dim=8, seed=1):
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def one_hot(n, classes, index):
    c = torch.zeros(n, classes, dtype=torch.float64)
    c[:, index] = 1
    return c


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nvidia")
    return {
        "sg2": write_pickle(folder / "network-snapshot-000100.pkl", stylegan2_generator()),
        "sg2c": write_pickle(folder / "conditional.pkl", stylegan2_generator(
            seed=1, z_dim=6, c_dim=4, conv_clamp=0.5, mapping_layers=3)),
        "sg3t": write_pickle(folder / "stylegan3-t-tiny-32x32.pkl", stylegan3_generator("t")),
        "sg3r": write_pickle(folder / "stylegan3-r-tiny-32x32.pkl", stylegan3_generator(
            "r", seed=2, c_dim=3, img_channels=1, num_layers=6)),
    }


# ------------------------------------------------------------------------------ StyleGAN2-ADA
def test_a_stylegan2_ada_pickle_reproduces_the_definition(files):
    generator = resolve_generator(f"nvidia:{files['sg2']}")
    state = double(describe_generator(files["sg2"]).state_dict)
    z = latents()
    with torch.no_grad():
        images = generator.double()(z.double())
        truncated = load_nvidia(files["sg2"], truncation=0.6).double()(z.double())
    assert images.shape == (2, 3, 32, 32)
    assert close(images, stylegan2_reference(state, z.double()))
    assert close(truncated, stylegan2_reference(state, z.double(), psi=0.6))
    names = [name for name, _ in generator.named_children()]
    assert names == ["mapping", "input", "layer1", "to_rgb_4x4", "layer2", "layer3",
                     "to_rgb_8x8", "layer4", "layer5", "to_rgb_16x16", "layer6", "layer7",
                     "output_32x32"]
    assert "layer3.style" in layer_names(generator)


def test_a_class_conditional_stylegan2_ada_pickle(files):
    generator = resolve_generator(f"nvidia:{files['sg2c']}").double()
    state = double(describe_generator(files["sg2c"]).state_dict)
    assert (generator.n_classes, generator.class_index, generator.z_dim) == (4, None, 6)
    z = latents(z_dim=6).double()
    with pytest.raises(ValueError, match=r"class-conditional: pass --class K \(0\.\.3\)"):
        generator(z)
    generator.class_index = 2
    with torch.no_grad():
        images = generator(z)
    expected = stylegan2_reference(state, z, one_hot(2, 4, 2), clamp=0.5)
    assert close(images, expected)
    assert float(expected.abs().max()) > 0.5  # the clamp of 0.5 binds, in the to-RGB sums
    fingerprints = {generator.fingerprint()}
    generator.class_index = 3
    assert generator.fingerprint() not in fingerprints


def test_architectures_other_than_skip_are_refused_in_one_line(tmp_path):
    path = write_pickle(tmp_path / "resnet.pkl", stylegan2_generator(architecture="resnet"))
    with pytest.raises(ValueError, match="architecture resnet; gandissect reads the 'skip'") \
            as error:
        load_nvidia(path)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------- StyleGAN3
def test_the_layout_is_nvidias_for_the_released_configurations():
    """The layer names NVIDIA's networks_stylegan3 gives (L{index}_{size}_{units}) for the
    released 1024 px T and R models (channel_base 32768 / 65536), and their paddings."""
    def names(config):
        _, specs = layer_specs(1024, **CONFIGS[config])
        return [f"L{k}_{s.out_size}_{s.out_channels}" for k, s in enumerate(specs)], specs

    t_names, t_specs = names("t")
    assert t_names == ["L0_36_512", "L1_36_512", "L2_52_512", "L3_52_512", "L4_84_512",
                       "L5_148_512", "L6_148_512", "L7_276_323", "L8_276_203", "L9_532_128",
                       "L10_1044_81", "L11_1044_51", "L12_1044_32", "L13_1024_32",
                       "L14_1024_3"]
    r_names, r_specs = names("r")
    assert r_names == ["L0_36_1024", "L1_36_1024", "L2_52_1024", "L3_52_1024", "L4_84_1024",
                       "L5_148_1024", "L6_148_1024", "L7_276_645", "L8_276_406", "L9_532_256",
                       "L10_1044_161", "L11_1044_102", "L12_1044_64", "L13_1024_64",
                       "L14_1024_3"]
    assert [s.padding[:2] for s in t_specs[:3]] == [(9, 8), (9, 8), (-6, -9)]
    assert t_specs[13].padding[:2] == (-11, -12) and r_specs[13].padding[:2] == (-9, -10)
    assert [s.down_radial for s in r_specs] == [True] * 12 + [False] * 3
    assert not any(s.down_radial for s in t_specs)


def test_designed_filters_are_kaisers_windowed_sinc_and_jinc():
    scipy_signal = pytest.importorskip("scipy.signal")
    special = pytest.importorskip("scipy.special")
    _, specs = layer_specs(1024, **CONFIGS["r"])
    spec = specs[3]
    expected = scipy_signal.firwin(numtaps=spec.up_taps, cutoff=spec.up_cutoff,
                                   width=spec.up_width, fs=spec.tmp_sampling_rate)
    ours = lowpass_filter(spec.up_taps, spec.up_cutoff, spec.up_width, spec.tmp_sampling_rate)
    assert np.allclose(ours.numpy(), expected, atol=1e-7)
    taps, cutoff, fs = spec.down_taps, spec.down_cutoff, spec.tmp_sampling_rate
    x = (np.arange(taps) - (taps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    jinc = special.j1(2 * cutoff * np.pi * r) / (np.pi * r)
    beta = scipy_signal.kaiser_beta(scipy_signal.kaiser_atten(taps, spec.down_width / (fs / 2)))
    window = np.kaiser(taps, beta)
    radial = jinc * np.outer(window, window)
    ours = lowpass_filter(taps, cutoff, spec.down_width, fs, radial=True)
    assert np.allclose(ours.numpy(), radial / radial.sum(), atol=1e-7)
    assert lowpass_filter(1, 2.0, 1.0, 16.0) is None


@pytest.mark.parametrize("key", ["sg3t", "sg3r"])
def test_a_stylegan3_pickle_reproduces_the_definition(files, key):
    description = describe_generator(files[key])
    assert description.family == "stylegan3"
    state, layers = double(description.state_dict), layer_attributes(description)
    layers[0][1]["size"] = first_of(layers[0][1]["size"])
    generator = resolve_generator(f"nvidia:{files[key]}").double()
    conditional = key == "sg3r"
    classes = one_hot(2, 3, 1) if conditional else None
    if conditional:
        generator.class_index = 1
    z = latents().double()
    with torch.no_grad():
        images = generator(z)
        generator.truncation = 0.5
        truncated = generator(z)
    expected = stylegan3_reference(state, layers, z, classes)
    if conditional:  # a grey generator: the image repeated to 3 channels
        assert expected.shape[1] == 1
        expected = expected.repeat(1, 3, 1, 1)
    assert images.shape == (2, 3, 32, 32)
    assert torch.allclose(images, expected, rtol=0, atol=1e-9)
    half = stylegan3_reference(state, layers, z, classes, psi=0.5)
    assert torch.allclose(truncated, half.repeat(1, 3 // half.shape[1], 1, 1), rtol=0, atol=1e-9)


def test_stylegan3_layers_and_style_units(files):
    generator = resolve_generator(f"nvidia:{files['sg3t']}")
    top = [name for name, _ in generator.named_children()]
    assert top == ["mapping", "input", *(f"layer{k}" for k in range(14)), "output"]
    assert {"layer3.style", "output.style", "layer3.affine"} <= set(layer_names(generator))
    z = latents()
    with torch.no_grad():
        shapes = {name: tuple(partial_forward(generator, name, z).shape)
                  for name in ("input", "layer0", "layer5", "layer5.style", "layer13", "output")}
    # the image regions: 16 x 16 samples at rate 16, 32 x 32 at rate 32 (margins cut off)
    assert shapes == {"input": (2, 8, 16, 16), "layer0": (2, 8, 16, 16),
                      "layer5": (2, 8, 32, 32), "layer5.style": (2, 8, 16, 16),
                      "layer13": (2, 8, 32, 32), "output": (2, 3, 32, 32)}
    styles = generator.styles(z)
    assert set(styles) == {*(f"layer{k}.style" for k in range(14)), "output.style"}


def test_an_edit_of_a_style_channel_is_an_edit_of_the_style(files):
    """Switching style channel 3 of layer4 off over the image draws the image of style 3 set
    to 0 there (the margin outside the image keeps it) and in the demodulation."""
    description = describe_generator(files["sg3t"])
    state, layers = double(description.state_dict), layer_attributes(description)
    layers[0][1]["size"] = first_of(layers[0][1]["size"])
    generator = resolve_generator(f"nvidia:{files['sg3t']}").double()
    z = latents().double()
    with torch.no_grad():
        before = generator(z)
        with Trace(generator, "layer4.style") as trace:
            assert torch.equal(generator(z), before)
        alpha = torch.zeros(8, 1, 1)
        alpha[3] = 1
        with Edit(generator, "layer4.style", alpha=alpha, value=0.0):
            edited = generator(z)
        assert torch.equal(generator(z), before)
    assert trace.output.shape == (2, 8, 16, 16)
    assert all(not m._forward_hooks for m in generator.modules())
    name = description.attribute("synthesis", "layer_names")[4]
    expected = stylegan3_reference(state, layers, z, styles_set={name: (3, 0.0)})
    assert (edited - before).abs().max() > 1e-4
    assert torch.allclose(edited, expected, rtol=0, atol=1e-9)


def test_an_image_depends_on_its_latent_only(files, monkeypatch):
    generator = resolve_generator(f"nvidia:{files['sg3t']}")
    z = latents(3)
    with torch.no_grad():
        batch = generator(z)
        alone = generator(z[1:2])
        monkeypatch.setattr(stylegan3, "HIGH_RATE_CHUNK", 5000)  # filter a channel at a time
        in_groups = generator(z)
    assert torch.allclose(alone[0], batch[1], rtol=0, atol=1e-6 * float(batch.abs().max()))
    assert torch.allclose(in_groups, batch, rtol=0, atol=1e-6 * float(batch.abs().max()))


# ------------------------------------------------------------------------------------ safety
MARKER = "payload_ran"


class SystemCall:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class Exec:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


class _Call:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


def hostile_storage(marker):
    """A tensor whose storage bytes are a torch.save stream that calls os.system."""
    class Tensorish:
        def __reduce__(self):
            stream = io.BytesIO()
            torch.save(SystemCall(f"touch {marker}"), stream,
                       _use_new_zipfile_serialization=False)
            loader = torch.storage._load_from_bytes
            return (torch._utils._rebuild_tensor_v2, (
                _Call(loader, stream.getvalue()), 0, (1,), (1,), False, {}))

    return Tensorish()


@pytest.mark.parametrize("payload", ["system", "exec", "storage"])
def test_a_pickle_that_runs_code_is_refused_and_its_payload_never_runs(tmp_path, payload):
    marker = tmp_path / MARKER
    evil = {"system": lambda: SystemCall(f"touch {marker}"),
            "exec": lambda: Exec(f"open({str(marker)!r}, 'w').close()"),
            "storage": lambda: hostile_storage(marker)}[payload]()
    path = write_pickle(tmp_path / "evil.pkl", stylegan2_generator(), augment_pipe=evil)
    with pytest.raises(UnsafeCheckpointError, match="would run Python code") as error:
        resolve_generator(f"nvidia:{path}")
    assert "\n" not in str(error.value)
    culprit = {"system": r"\((posix|os)\.system\)", "exec": r"\(builtins\.exec\)",
               "storage": r"system inside a tensor's storage"}[payload]
    assert re.search(culprit, str(error.value)), str(error.value)
    assert not marker.exists()
    with contextlib.suppress(Exception):  # the payload is live: plain pickle runs it
        pickle.loads(pickle.dumps(evil))
    assert marker.exists()


def test_the_module_source_is_never_run(tmp_path):
    marker = tmp_path / MARKER
    hostile = f"open({str(marker)!r}, 'w').close()\nimport os\nos.system('true')\n"
    try:
        Persistent.source = hostile  # what every network of the file carries as its source
        path = write_pickle(tmp_path / "source.pkl", stylegan2_generator())
    finally:
        Persistent.source = SOURCE
    before = set(sys.modules)
    loaded = resolve_generator(f"nvidia:{path}")
    assert loaded.resolution == 32 and not marker.exists()
    added = set(sys.modules) - before
    assert not any(name.startswith(("torch_utils", "dnnlib", "_imported_module_"))
                   for name in added), added
    source = describe_generator(path).modules[""].module_src
    exec(source)  # what NVIDIA's loader does with it: the payload is live
    assert marker.exists()


def test_unknown_classes_and_other_files_are_refused_in_one_line(tmp_path):
    with nvidia_modules(), open(tmp_path / "plain.pkl", "wb") as file:
        pickle.dump({"G_ema": nn.Linear(2, 2)}, file)  # a G_ema pickled as a plain module
    unknown = network("TriPlaneGenerator", children={"backbone": network("StyleGAN2Backbone")})
    write_pickle(tmp_path / "eg3d.pkl", unknown)
    (tmp_path / "half.pkl").write_bytes((tmp_path / "eg3d.pkl").read_bytes()[:300])
    torch.save({"g_ema": {}}, tmp_path / "rosinality.pt")
    # NVlabs/stylegan2's TensorFlow pickles: a tuple (G, D, Gs) of dnnlib.tflib.network.Network
    network_object = b"cdnnlib.tflib.network\nNetwork\n)\x81"  # GLOBAL, EMPTY_TUPLE, NEWOBJ
    (tmp_path / "tf.pkl").write_bytes(b"\x80\x02" + network_object * 3 + b"\x87.")
    expected = {
        "plain.pkl": r"refusing to load .*plain\.pkl: the pickle would run Python code "
                     r"\(torch\.nn\.modules\.linear\.Linear\)",
        "eg3d.pkl": "G_ema is a TriPlaneGenerator with backbone \\(StyleGAN2Backbone\\), not a "
                    "StyleGAN2-ADA or StyleGAN3 generator",
        "half.pkl": "cannot read .* as an NVIDIA network pickle .*damaged, truncated",
        "rosinality.pt": "PyTorch zip checkpoint .* stylegan2:PATH",
        "tf.pkl": "TensorFlow StyleGAN pickle .*legacy.py",
        "missing.pkl": "does not exist",
    }
    for name, message in expected.items():
        with pytest.raises(ValueError, match=message) as error:
            resolve_generator(f"nvidia:{tmp_path / name}")
        assert "\n" not in str(error.value), name


def test_a_latent_of_the_wrong_size_is_refused(files):
    with pytest.raises(ValueError, match="declares z_dim = 8"):
        resolve_generator(f"nvidia:{files['sg3t']}", z_dim=16)


# -------------------------------------------------------------------------- the command line
@needs_segmenter
def test_dissect_and_edit_a_stylegan3_pickle_in_one_command(files, tmp_path, capsys):
    from gandissect.cli import main

    spec = f"nvidia:{files['sg3t']}"
    assert main(["layers", spec]) == 0
    listing = capsys.readouterr().out
    assert "layer5.style" in listing and "output" in listing
    for layer, units in (("layer5", 8), ("layer5.style", 8)):
        out = tmp_path / layer
        assert main(["dissect", "--generator", spec, "--layer", layer, "--samples", "16",
                     "--batch", "8", "--top-k", "2", "--images", "1", "--no-html",
                     "--out", str(out), "--device", "cpu"]) == 0
        data = json.loads((out / "dissect.json").read_text())
        assert data["settings"]["generator_name"] == spec
        (result,) = data["layers"]
        assert result["layer"] == layer and len(result["units"]) == units
        assert main(["edit", "--generator", spec, "--layer", layer, "--units", "0,3",
                     "--box", "0,0,16,16", "--samples", "2",
                     "--out", str(tmp_path / f"edit_{layer}")]) == 0
        assert (tmp_path / f"edit_{layer}" / "edit.png").is_file()
    capsys.readouterr()


def test_a_conditional_pickle_on_the_command_line_needs_a_class(files, tmp_path, capsys):
    from gandissect.cli import main

    edit = ["edit", "--generator", f"nvidia:{files['sg2c']}", "--layer", "layer3",
            "--units", "0", "--samples", "1"]
    assert main([*edit, "--out", str(tmp_path / "none")]) == 2
    assert "pass --class K" in capsys.readouterr().err
    assert main([*edit, "--class", "2", "--out", str(tmp_path / "two")]) == 0
    assert (tmp_path / "two" / "edit.png").is_file()


# ------------------------------------------------------------------ a new user's first commands
@needs_segmenter
@pytest.mark.parametrize("key, layer, options", [
    ("sg2c", "layer3", {"class_index": 2, "truncation": 0.7}),
    ("sg3t", "layer5.style", {}),
    ("sg3r", "layer3", {"class_index": 1}),
])
def test_end_to_end(files, tmp_path, key, layer, options):
    """layers, dissect, edit, ace and the app's Paint tab on each kind of pickle."""
    data = end_to_end(f"nvidia:{files[key]}", "sceneworld", layer, tmp_path, **options)
    assert data["layers"][0]["layer"] == layer
