"""StyleGAN3 generators (Karras et al. 2021, "Alias-Free Generative Adversarial Networks"),
configurations T (translation equivariant) and R (rotation equivariant), as traceable layers.

``z (N, z_dim)`` goes through the mapping network to ``w`` (2nd-moment normalisation of z, and of
the embedded class for conditional models, then ``fc0`` ... equalised linear layers with
learning-rate multiplier 0.01 and leaky ReLU x sqrt 2), optionally truncated towards
``mapping.w_avg``; every layer gets the same ``w``. The synthesis network runs these children
in order::

    input        Fourier features: a bank of sinusoids with fixed frequencies and phases
                 (buffers ``freqs``, ``phases``), rotated and translated per sample by
                 ``affine(w)``, mixed by a learned C x C matrix (``weight``)
    layer0       the first synthesis layer ... (the file's ``L0_<size>_<units>``)
    ...
    layerN-1     the last synthesis layer (N = 14 in the released models)
    output       the to-RGB layer (the file's ``L<N>_<R>_3``): the image, times 0.25

``layerK`` is the file's ``L{K}_*`` (same index), so ``layer0`` ... ``layer13`` and ``output``
for the released models. A synthesis layer: style ``s = affine(w)`` (bias initialised to 1); its
``style`` child (``StyleChannels``) forms ``x * s`` (the StyleSpace units ``layerK.style``); a
convolution with the weights normalised to unit mean square per output unit (kernel 3 in T, 1
in R, padded by k - 1), demodulated per sample and output unit by ``|W s'|`` with ``s'`` the
style normalised to unit mean square (the style the product carries, see
``gandissect.models.stylespace``), times ``magnitude_ema ** -1/2`` (the training's running mean
square of the layer's input); then the filtered leaky ReLU: add the bias, upsample (zero
insertion, the ``up_filter`` FIR, gain up^2), leaky ReLU 0.2 x sqrt 2, clamp to
+-``conv_clamp`` (256), FIR with ``down_filter`` and keep every ``down``-th sample. The to-RGB
layer is a modulated 1x1 convolution without demodulation (weight gain 1 / sqrt(in)), a bias
and the clamp, no activation.

Each layer computes a map of ``size`` samples at its sampling rate ``rate``: the image spans the
centre ``rate x rate`` samples, and a margin of 10 samples each side lies outside it (none in
the last two layers, whose size is the resolution). What a layer and its ``style`` child output
to forward hooks, and what an edit changes, is that image region, ``(N, units, rate, rate)``,
registered with the image like the layers of other generators (``ImageRegion``); the margin
stays in the computation, unedited. Released 1024 px T models: ``layer0``-``layer1`` 16 x 16,
``layer2``-``layer3`` 32, ``layer4`` 64, ``layer5``-``layer6`` 128, ``layer7``-``layer8`` 256,
``layer9`` 512, ``layer10``-``layer13`` 1024.

The low-pass filters are windowed sincs (Kaiser windows; jinc-based radial ones for the R
configuration's non-critical downsampling) designed from the layer's cutoff, transition band
and sampling rate. A fresh model designs them (``lowpass_filter``); a loaded one uses the
file's buffers. The layer sizes, sampling rates, cutoffs and paddings follow the paper's
geometric progression (``layer_specs``). Noise: StyleGAN3 has none, so an image depends on its
``z`` only. Grey generators (``img_channels`` 1) return their image repeated to 3 channels.
Parameter and buffer names are NVIDIA's within each layer (``affine``, ``weight``, ``bias``,
``magnitude_ema``, ``up_filter``, ``down_filter``); ``gandissect.models.loaders.nvidia`` renames
``synthesis.L{K}_*`` to ``layerK`` / ``output`` and ``synthesis.input`` to ``input``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gandissect.errors import UserError
from gandissect.models.stylegan2 import EqualLinear, class_one_hot
from gandissect.models.stylespace import StyleChannels, carried_styles

__all__ = ["CONFIGS", "ImageRegion", "InputSpec", "LayerSpec", "MappingNetwork",
           "StyleGAN3Generator", "SynthesisInput", "SynthesisLayer", "filtered_leaky_relu",
           "image_region", "layer_specs", "lowpass_filter", "upfirdn2d", "with_image_region"]

SQRT2 = math.sqrt(2)

# the two configurations of the paper, as overrides of StyleGAN3Generator's defaults (T's)
CONFIGS = {
    "t": {"conv_kernel": 3, "use_radial_filters": False, "channel_base": 32768,
          "channel_max": 512},
    "r": {"conv_kernel": 1, "use_radial_filters": True, "channel_base": 65536,
          "channel_max": 1024},
}


# --------------------------------------------------------------------------- filtering
def _fir(x: torch.Tensor, taps: torch.Tensor, dim: int, up: int, down: int, before: int,
         after: int) -> torch.Tensor:
    """``upfirdn2d`` along one axis (``dim`` 2: rows, 3: columns) with 1-D ``taps``."""
    channels, length, count = x.shape[1], x.shape[dim], taps.numel()
    shape, stride = [1, 1], [1, 1]
    shape[dim - 2] = count
    kernel = taps.to(x.dtype).reshape(1, 1, *shape).repeat(channels, 1, 1, 1)

    def pad(t: torch.Tensor, low: int, high: int) -> torch.Tensor:  # negative: crop
        return F.pad(t, (low, high, 0, 0) if dim == 3 else (0, 0, low, high))

    if up == 1:  # a true convolution of the padded signal, every `down`-th output
        stride[dim - 2] = down
        return F.conv2d(pad(x, before, after), kernel.flip(dim), stride=stride, groups=channels)
    # zero insertion and the true convolution in one transposed convolution (the full
    # convolution), then the part the padding selects
    stride[dim - 2] = up
    full = F.conv_transpose2d(x, kernel, stride=stride, groups=channels)
    start, size = count - 1 - before, length * up + before + after - count + 1
    out = pad(full, -start, start + size - full.shape[dim])
    if down > 1:
        out = out[:, :, ::down] if dim == 2 else out[:, :, :, ::down]
    return out


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
              padding: tuple[int, int, int, int] = (0, 0, 0, 0),
              gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion (``up``), pad ``(left, right, top, bottom)`` (negative:
    crop), convolve each channel with the FIR ``f`` (1-D: the same taps along both axes; 2-D;
    None: the identity) scaled to total gain ``gain``, then keep every ``down``-th sample.
    Computed without the zeros: a transposed convolution upsamples, a strided one decimates."""
    left, right, top, bottom = padding
    if f is None or f.dim() == 1:
        taps = torch.ones(1, device=x.device) if f is None else f
        taps = taps * gain ** 0.5  # half the gain along each axis
        x = _fir(x, taps, 3, up, down, left, right)
        return _fir(x, taps, 2, up, down, top, bottom)
    channels = x.shape[1]
    if up > 1:
        spread = x.new_zeros(*x.shape[:2], x.shape[2] * up, x.shape[3] * up)
        spread[:, :, ::up, ::up] = x
        x = spread
    kernel = (f * gain).flip(0, 1).to(x.dtype)[None, None].repeat(channels, 1, 1, 1)
    return F.conv2d(F.pad(x, (left, right, top, bottom)), kernel, stride=down, groups=channels)


HIGH_RATE_CHUNK = 2 ** 24  # values of the upsampled map computed at once (64 MB in float32)


def filtered_leaky_relu(x: torch.Tensor, bias: torch.Tensor, up_filter: torch.Tensor | None,
                        down_filter: torch.Tensor | None, up: int, down: int,
                        padding: tuple[int, int, int, int], gain: float = SQRT2,
                        slope: float = 0.2, clamp: float | None = None) -> torch.Tensor:
    """The alias-free nonlinearity: bias, upsample by ``up`` through ``up_filter`` (gain up^2,
    ``padding`` on the upsampled map), ``leaky_relu(., slope) * gain`` clamped to +-``clamp``,
    then ``down_filter`` and every ``down``-th sample. Channels go through in groups, so that
    the upsampled map (four times the output's samples) never fills the memory at once."""
    n, channels, h, w = x.shape
    x = x + bias.to(x.dtype)[None, :, None, None]
    high = n * (h * up + padding[0] + padding[1]) * (w * up + padding[2] + padding[3])
    group = max(1, HIGH_RATE_CHUNK // max(high, 1))
    parts = []
    for first in range(0, channels, group):
        part = upfirdn2d(x[:, first:first + group], up_filter, up=up, padding=padding,
                         gain=up ** 2)
        part = F.leaky_relu(part, slope) * gain if slope != 1 else part * gain
        if clamp is not None:
            part = part.clamp(-clamp, clamp)
        parts.append(upfirdn2d(part, down_filter, down=down))
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def _kaiser_beta(attenuation: float) -> float:
    """Kaiser's empirical window parameter for a stopband attenuation in dB."""
    if attenuation > 50:
        return 0.1102 * (attenuation - 8.7)
    if attenuation > 21:
        return 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    return 0.0


def lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                   radial: bool = False) -> torch.Tensor | None:
    """A Kaiser-windowed low-pass FIR with unit DC gain: ``numtaps`` taps, ``cutoff`` and
    transition ``width`` in the units of the sampling rate ``fs``; separable (1-D, a windowed
    sinc) or ``radial`` (2-D, a windowed jinc). None for a single tap (the identity)."""
    if numtaps == 1:
        return None
    attenuation = 2.285 * (numtaps - 1) * math.pi * (width / (fs / 2)) + 7.95
    window = np.kaiser(numtaps, _kaiser_beta(attenuation))
    centred = np.arange(numtaps) - (numtaps - 1) / 2
    if not radial:
        relative = cutoff / (fs / 2)
        taps = relative * np.sinc(relative * centred) * window
        return torch.as_tensor(taps / taps.sum(), dtype=torch.float32)
    radius = torch.as_tensor(np.hypot(*np.meshgrid(centred / fs, centred / fs)))
    jinc = torch.special.bessel_j1(2 * cutoff * math.pi * radius) / (math.pi * radius)
    taps = jinc.numpy() * np.outer(window, window)
    return torch.as_tensor(taps / taps.sum(), dtype=torch.float32)


# --------------------------------------------------------------------------- the layout
@dataclass(frozen=True)
class InputSpec:
    """The Fourier features: ``channels`` maps of ``size`` samples at ``sampling_rate``,
    frequencies up to ``bandwidth``, ``margin`` samples of them outside the image each side."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float
    margin: int


@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer: units, map sizes and their margins (samples outside the image
    each side), resampling factors, padding (on the upsampled map: left, right, top, bottom)
    and the design of its two filters."""

    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    kernel: int
    up: int
    down: int
    padding: tuple[int, int, int, int]
    in_margin: int
    out_margin: int
    tmp_sampling_rate: float
    up_taps: int
    up_cutoff: float
    up_width: float
    down_taps: int
    down_cutoff: float
    down_width: float
    down_radial: bool
    is_torgb: bool
    is_critically_sampled: bool


def layer_specs(resolution: int, img_channels: int = 3, channel_base: int = 32768,
                channel_max: int = 512, num_layers: int = 14, num_critical: int = 2,
                first_cutoff: float = 2, first_stopband: float = 2 ** 2.1,
                last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10,
                conv_kernel: int = 3, filter_size: int = 6, lrelu_upsampling: int = 2,
                use_radial_filters: bool = False) -> tuple[InputSpec, list[LayerSpec]]:
    """The paper's layout: cutoffs and minimum stopbands grow geometrically from the first
    layer to the last non-critical one, then stay at the output's Nyquist band; each layer's
    sampling rate is the power of two that holds its stopband (at most the resolution), its
    size that rate plus the margin (the last two: the resolution), its units
    ``min(channel_base / 2 / cutoff, channel_max)``. Returns the Fourier features' spec and
    ``num_layers + 1`` layer specs (the last: to-RGB)."""
    last_cutoff = resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin_size * 2
    sizes[-2:] = resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    margins = (sizes - rates).astype(int) // 2  # the image spans `rate` samples of each map
    first = InputSpec(int(channels[0]), int(sizes[0]), float(rates[0]), float(cutoffs[0]),
                      int(margins[0]))
    specs = []
    for k in range(num_layers + 1):
        before = max(k - 1, 0)
        is_torgb = k == num_layers
        in_rate, out_rate = int(rates[before]), int(rates[k])
        tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else lrelu_upsampling)
        kernel = 1 if is_torgb else conv_kernel
        up, down = round(tmp_rate / in_rate), round(tmp_rate / out_rate)
        up_taps = filter_size * up if up > 1 and not is_torgb else 1
        down_taps = filter_size * down if down > 1 and not is_torgb else 1
        in_size, out_size = int(sizes[before]), int(sizes[k])
        # the padding that turns the upsampled, convolved input into the output before
        # downsampling, split so that samples sit at the centres of their cells
        total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
        low = (total + up) // 2
        critical = k >= num_layers - num_critical
        specs.append(LayerSpec(
            int(channels[before]), int(channels[k]), in_size, out_size, kernel, up, down,
            (low, total - low, low, total - low), int(margins[before]), int(margins[k]),
            float(tmp_rate),
            up_taps, float(cutoffs[before]), float(half_widths[before] * 2),
            down_taps, float(cutoffs[k]), float(half_widths[k] * 2),
            use_radial_filters and not critical, is_torgb, critical))
    return first, specs


# --------------------------------------------------------------------------- the modules
def _second_moment_normalised(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)


class MappingNetwork(nn.Module):
    """``z (N, z_dim)`` and the one-hot class ``c`` (conditional models) -> ``w (N, w_dim)``:
    each normalised to unit mean square (``c`` after its ``embed`` layer), concatenated, then
    ``fc0`` ... equalised linear layers with leaky ReLU. ``w_avg``: the training's mean ``w``."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_layers: int = 2,
                 lr_multiplier: float = 0.01) -> None:
        super().__init__()
        if c_dim:
            self.embed = EqualLinear(c_dim, w_dim)
        features = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * num_layers
        for k in range(num_layers):
            self.add_module(f"fc{k}", EqualLinear(features[k], features[k + 1],
                                                  lr_mul=lr_multiplier, activate=True))
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.z_dim, self.c_dim, self.w_dim, self.num_layers = z_dim, c_dim, w_dim, num_layers

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = _second_moment_normalised(z)
        if self.c_dim:
            x = torch.cat([x, _second_moment_normalised(self.embed(c.to(x.dtype)))], 1)
        for k in range(self.num_layers):
            x = getattr(self, f"fc{k}")(x)
        return x


def image_region(x: torch.Tensor, margin: int) -> torch.Tensor:
    """The samples of a map ``(N, C, size, size)`` that lie on the image: ``margin`` cut off
    each side."""
    return x if margin == 0 else x[:, :, margin:x.shape[2] - margin, margin:x.shape[3] - margin]


def with_image_region(full: torch.Tensor, region: torch.Tensor, margin: int) -> torch.Tensor:
    """``full`` with its image region replaced by ``region`` (the margin kept)."""
    if margin == 0:
        return region
    middle = torch.cat([full[:, :, margin:-margin, :margin], region,
                        full[:, :, margin:-margin, -margin:]], 3)
    return torch.cat([full[:, :, :margin], middle, full[:, :, -margin:]], 2)


class ImageRegion(nn.Module):
    """A map computed with a margin around the image, traced over the image only.

    ``synthesize(...)`` computes the whole map; ``forward(full)`` returns its image region,
    the layer's units as forward hooks see and edit them, registered with the image (the
    sampling rate's ``rate x rate`` centre: the margin's samples lie outside it); ``run(...)``
    does both and puts the (perhaps edited) region back into the map the next layer reads.
    """

    margin = 0

    def synthesize(self, *args: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, full: torch.Tensor) -> torch.Tensor:
        return image_region(full, self.margin)

    def run(self, *args: torch.Tensor) -> torch.Tensor:
        """The whole map, its image region as this module's forward hooks leave it."""
        full = self.synthesize(*args)
        return with_image_region(full, self(full), self.margin)


class SynthesisInput(ImageRegion):
    """Fourier features (see the module docstring): ``w (N, w_dim) -> (N, C, size, size)``."""

    def __init__(self, w_dim: int, spec: InputSpec) -> None:
        super().__init__()
        self.channels, self.size, self.margin = spec.channels, spec.size, spec.margin
        self.sampling_rate, self.bandwidth = spec.sampling_rate, spec.bandwidth
        # frequencies spread over the disc of radius `bandwidth`, phases uniform
        freqs = torch.randn(spec.channels, 2)
        radii = freqs.square().sum(1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * spec.bandwidth
        self.weight = nn.Parameter(torch.randn(spec.channels, spec.channels))
        self.affine = EqualLinear(w_dim, 4)
        with torch.no_grad():  # no rotation, no translation until trained
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0, 0, 0]))
        self.register_buffer("transform", torch.eye(3))  # a user transform of the image
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(spec.channels) - 0.5)

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        """The features over the whole map, margin included."""
        t = self.affine(w)  # (cos, sin, tx, ty) of the image's rotation and translation
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        cos, sin, tx, ty = t.unbind(1)
        one, zero = torch.ones_like(cos), torch.zeros_like(cos)
        rotation = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], 1)
        translation = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], 1)
        # the inverse transform of the resulting image: rotate, translate, then the user's
        transform = rotation.view(-1, 3, 3) @ translation.view(-1, 3, 3) @ self.transform
        phases = self.phases + (self.freqs @ transform[:, :2, 2:]).squeeze(2)  # (N, C)
        freqs = self.freqs @ transform[:, :2, :2]  # (N, C, 2)
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        centres = (torch.arange(self.size, device=w.device, dtype=w.dtype) + 0.5
                   - self.size / 2) / self.sampling_rate  # sample positions
        angle = (freqs[:, :, 0, None, None] * centres[None, None, None, :]
                 + freqs[:, :, 1, None, None] * centres[None, None, :, None]
                 + phases[:, :, None, None])
        features = torch.sin(2 * math.pi * angle) * amplitudes[:, :, None, None]
        mixing = self.weight / math.sqrt(self.channels)
        return torch.einsum("dc,nchw->ndhw", mixing.to(features.dtype), features)


class SynthesisLayer(ImageRegion):
    """One modulated layer with its filtered leaky ReLU, or the to-RGB layer (see the module
    docstring): ``synthesize(x (N, in, in_size, in_size), w) -> (N, out, out_size,
    out_size)``; its units (``forward``) and its style channels (``style``) over the image."""

    def __init__(self, w_dim: int, spec: LayerSpec, conv_clamp: float | None = 256,
                 output_scale: float = 1.0) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, spec.in_channels, bias_init=1.0)
        self.style = StyleChannels()
        self.weight = nn.Parameter(torch.randn(spec.out_channels, spec.in_channels, spec.kernel,
                                               spec.kernel))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", lowpass_filter(
            spec.up_taps, spec.up_cutoff, spec.up_width, spec.tmp_sampling_rate))
        self.register_buffer("down_filter", lowpass_filter(
            spec.down_taps, spec.down_cutoff, spec.down_width, spec.tmp_sampling_rate,
            radial=spec.down_radial))
        self.in_channels, self.out_channels = spec.in_channels, spec.out_channels
        self.in_size, self.out_size = spec.in_size, spec.out_size
        self.in_margin, self.margin = spec.in_margin, spec.out_margin
        self.up, self.down, self.padding = spec.up, spec.down, spec.padding
        self.is_torgb, self.conv_clamp, self.output_scale = spec.is_torgb, conv_clamp, output_scale

    def _modulated(self, x: torch.Tensor, styles: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x * s`` over the whole map, its image region through ``style``; and the styles
        that region carries (``stylespace.carried_styles``)."""
        region = image_region(x, self.in_margin)
        product = self.style(region, styles)
        full = with_image_region(x * styles[:, :, None, None].to(x.dtype), product,
                                 self.in_margin)
        return full, carried_styles(region, product, styles)

    def synthesize(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The layer's map over its whole size, margin included."""
        styles = self.affine(w)  # (N, in)
        modulated, carried = self._modulated(x, styles)
        weight = self.weight.to(modulated.dtype)
        k = weight.shape[-1]
        if self.is_torgb:
            out = F.conv2d(modulated, weight, padding=k - 1)
            scale = torch.rsqrt(self.magnitude_ema) / math.sqrt(self.in_channels * k * k)
            out = out * scale.to(out.dtype)
        else:
            weight = weight * weight.square().mean((1, 2, 3), keepdim=True).rsqrt()
            out = F.conv2d(modulated, weight, padding=k - 1)
            carried = carried.to(weight.dtype)
            mean_square = carried.square().mean(1, keepdim=True)  # (N, 1)
            # 1 / |W s'| per output unit, s' = s / rms(s): sum_i s'_i^2 sum_k W_oik^2
            demodulation = torch.rsqrt(carried.square() / mean_square
                                       @ weight.square().sum((2, 3)).T + 1e-8)
            scale = demodulation * mean_square.rsqrt() * torch.rsqrt(self.magnitude_ema)
            out = out * scale[:, :, None, None].to(out.dtype)
        out = filtered_leaky_relu(out, self.bias, self.up_filter, self.down_filter, self.up,
                                  self.down, self.padding, gain=1 if self.is_torgb else SQRT2,
                                  slope=1 if self.is_torgb else 0.2, clamp=self.conv_clamp)
        return out * self.output_scale if self.output_scale != 1 else out


class StyleGAN3Generator(nn.Module):
    """A StyleGAN3 generator: ``z (N, z_dim)`` -> image ``(N, 3, R, R)``, unclamped, about
    [-1, 1].

    The defaults are the T configuration's; ``CONFIGS["r"]`` holds R's overrides (1x1
    kernels, radial downsampling filters, twice the channels). ``truncation`` (psi, default 1:
    none) pulls each ``w`` towards ``mapping.w_avg``. Class-conditional models (``c_dim`` > 0)
    have ``n_classes`` and draw the class ``class_index`` (None until chosen).
    """

    def __init__(self, z_dim: int = 512, w_dim: int = 512, resolution: int = 1024,
                 c_dim: int = 0, img_channels: int = 3, mapping_layers: int = 2,
                 lr_multiplier: float = 0.01, conv_clamp: float | None = 256,
                 output_scale: float = 0.25, channel_base: int = 32768,
                 channel_max: int = 512, num_layers: int = 14, num_critical: int = 2,
                 first_cutoff: float = 2, first_stopband: float = 2 ** 2.1,
                 last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10,
                 conv_kernel: int = 3, filter_size: int = 6, lrelu_upsampling: int = 2,
                 use_radial_filters: bool = False) -> None:
        super().__init__()
        first, specs = layer_specs(
            resolution, img_channels, channel_base, channel_max, num_layers, num_critical,
            first_cutoff, first_stopband, last_stopband_rel, margin_size, conv_kernel,
            filter_size, lrelu_upsampling, use_radial_filters)
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, mapping_layers, lr_multiplier)
        self.input = SynthesisInput(w_dim, first)
        for k, spec in enumerate(specs[:-1]):
            self.add_module(f"layer{k}", SynthesisLayer(w_dim, spec, conv_clamp))
        self.output = SynthesisLayer(w_dim, specs[-1], conv_clamp, output_scale)
        self.specs = specs
        self.z_dim, self.w_dim, self.resolution = z_dim, w_dim, resolution
        self.img_channels, self.conv_clamp = img_channels, conv_clamp
        self.config = "r" if use_radial_filters else "t"
        self.n_classes = c_dim
        self.class_index: int | None = None
        self.truncation = 1.0

    def map(self, z: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        """``z (N, z_dim)`` -> ``w (N, w_dim)``, truncated when psi != 1 (``truncation``,
        None: the generator's own)."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise UserError(f"latent must be (N, {self.z_dim}), got {tuple(z.shape)}")
        classes = class_one_hot(self, z) if self.n_classes else None
        w = self.mapping(z, classes)
        psi = self.truncation if truncation is None else truncation
        if psi != 1:
            w_avg = self.mapping.w_avg.to(w.dtype)
            w = w_avg + psi * (w - w_avg)
        return w

    def styles(self, z: torch.Tensor, truncation: float | None = None
               ) -> dict[str, torch.Tensor]:
        """Every style layer's styles ``s = affine(w) (N, C)`` for latents ``z``, by layer
        name (``"layer0.style"``, ..., ``"output.style"``), from ``w`` alone: no image is drawn.
        ``truncation``: psi instead of the generator's own (1: untruncated)."""
        w = self.map(z, truncation)
        return {f"{name}.style": module.affine(w) for name, module in self.named_children()
                if isinstance(module, SynthesisLayer)}

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        """``w (N, w_dim)`` -> image ``(N, 3, R, R)``, running the children in order."""
        x = self.input.run(w)
        for module in self.children():
            if isinstance(module, SynthesisLayer):
                x = module.run(x, w)
        return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesize(self.map(z))

    def fingerprint(self) -> str:
        """What changes the images besides the tensors (for cache keys)."""
        parts = [f"truncation={float(self.truncation)!r}", f"clamp={self.conv_clamp!r}",
                 "noise=none"]
        if self.n_classes:
            parts.append(f"class={self.class_index!r}")
        return ";".join(parts)
