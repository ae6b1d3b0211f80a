"""StyleGAN2 generators (Karras et al. 2020) as a sequence of traceable layers.

``z (N, z_dim)`` goes through the mapping network to ``w`` (pixel norm, then ``n_mlp``
equalised linear layers with learning-rate multiplier 0.01 and leaky ReLU x sqrt 2), is
optionally truncated towards ``w_avg`` (``truncation`` psi < 1), and the synthesis network draws
the image with these children, in the order they run::

    input                    the learned 4x4 constant
    layer1                   4x4
    to_rgb_4x4               the first RGB image
    layer2, layer3           8x8 (layer2 upsamples)
    to_rgb_8x8               RGB so far: its own plus the previous one upsampled
    ...
    layerN-1, layerN         R x R
    output_RxR               the last to-RGB: the image, unclamped, about [-1, 1]

Every ``layerK`` is a ``StyledConv`` whose output ``(N, units, h, w)`` is what forward hooks see
and what the next layer and the resolution's to-RGB read, so editing it changes the image.
Each ``layerK`` and to-RGB also has a style layer ``layerK.style`` / ``to_rgb_RxR.style``
(``stylespace.StyleChannels``): its input scaled by the styles, ``x * s``, whose units are the
style channels (StyleSpace), with the units and size of the layer's input.
All layers get the same ``w`` (no style mixing), and the noise is the fixed maps stored with the
weights, so an image depends on its ``z`` only.

A StyledConv: style ``s = A(w)`` (equalised linear, bias initialised to 1), a 3x3 convolution
of ``x * s`` with ``W / sqrt(fan_in)`` (or, for the first layer of a resolution, a stride-2
transposed convolution followed by a [1, 3, 3, 1] blur with gain 4), demodulated: each output
unit divided by ``sqrt(sum_ik (W_oik s_i)^2 / fan_in + 1e-8)`` (the same as modulating and
demodulating the weights per sample), plus ``noise_weight * noise``, then
``leaky_relu(x + b, 0.2) * sqrt 2``. A to-RGB: a modulated 1x1 convolution without
demodulation, plus a bias, plus the previous RGB upsampled (zero insertion, then the blur).
Parameter and buffer names follow rosinality's ``stylegan2-pytorch`` inside each block;
``gandissect.models.loaders.stylegan2`` renames that layout's top-level names to these.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gandissect.errors import UserError
from gandissect.models.stylespace import StyleChannels, carried_styles

__all__ = ["StyleGAN2Generator", "StyledConv", "ToRGB", "class_one_hot", "stylegan2_channels"]

SQRT2 = math.sqrt(2)


def stylegan2_channels(resolution: int, channel_multiplier: int = 2) -> list[int]:
    """The released models' units per resolution (4x4 first) for a given output size."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    sizes = [4 * 2 ** k for k in range(int(math.log2(resolution)) - 1)]
    return [table[s] * (channel_multiplier if s >= 64 else 1) for s in sizes]


class PixelNorm(nn.Module):
    """Normalise each latent to unit root-mean-square; with ``split``, its first ``split``
    values (z) and the rest (an embedded class) each on their own."""

    def __init__(self, split: int | None = None) -> None:
        super().__init__()
        self.split = split

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x] if self.split is None else [x[:, :self.split], x[:, self.split:]]
        parts = [part * torch.rsqrt(part.pow(2).mean(1, keepdim=True) + 1e-8) for part in parts]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


class EqualLinear(nn.Module):
    """A linear layer with equalised learning rate: weights scaled by ``lr_mul / sqrt(in)`` and
    the bias by ``lr_mul`` at run time; optionally ``leaky_relu(., 0.2) * sqrt 2``."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0, bias_init: float = 0.0,
                 activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale)
        out = out + self.bias * self.lr_mul
        return F.leaky_relu(out, 0.2) * SQRT2 if self.activate else out


class Blur(nn.Module):
    """FIR filtering with a stored 2-D ``kernel`` (a true convolution), zero-padded by
    ``pad = (before, after)`` on both axes."""

    def __init__(self, size: int, pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        taps = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float32)
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("kernel", kernel / kernel.sum() * gain)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        before, after = self.pad
        x = F.pad(x, (before, after, before, after))
        weight = self.kernel.flip(0, 1).to(x.dtype).expand(channels, 1, *self.kernel.shape)
        return F.conv2d(x, weight, groups=channels)


class Upsample(Blur):
    """2x upsampling: zeros between the pixels, then the blur (gain 4 keeps the mean)."""

    def __init__(self, size: int) -> None:
        super().__init__(size, ((size - 1) // 2 + 1, (size - 2) // 2), gain=4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        spread = x.new_zeros(n, c, 2 * h, 2 * w)
        spread[:, :, ::2, ::2] = x
        return super().forward(spread)


class ModulatedConv2d(nn.Module):
    """A convolution of its input scaled by each sample's style per input unit, ``conv(x * s,
    W)``; demodulated (unit norm per output unit) in the StyledConvs, not in the to-RGBs.

    The product ``x * s`` is formed by the ``style`` module passed in (the owning layer's
    ``StyleChannels``, whose hooks see and may replace it), and the demodulation uses the
    style it carries (``stylespace.carried_styles``): ``s`` itself unless an edit changed it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, blur_size: int = 4) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size,
                                               kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.demodulate, self.upsample = demodulate, upsample
        if upsample:  # pads that bring the transposed conv's 2h + k - 2 back to 2h
            p = blur_size - 2 - (kernel_size - 1)
            self.blur = Blur(blur_size, ((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor,
                style: nn.Module | None = None) -> torch.Tensor:
        """``(x (N, in, h, w), w (N, style_dim)) -> (N, out, h', w')``; ``style``: the module
        that forms ``x * s`` (None: the plain product, untraceable)."""
        styles = self.modulation(w)  # (N, in)
        modulated = (style(x, styles) if style is not None
                     else x * styles[:, :, None, None].to(x.dtype))
        weight = (self.scale * self.weight[0]).to(modulated.dtype)  # (out, in, k, k)
        if self.upsample:  # the same weights for every sample: one ordinary convolution
            out = self.blur(F.conv_transpose2d(modulated, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(modulated, weight, padding=weight.shape[-1] // 2)
        if self.demodulate:  # |W s| per output unit: sum_i s_i^2 sum_k W_oik^2
            carried = styles if style is None else carried_styles(x, modulated, styles)
            carried = carried.to(weight.dtype)
            norm = torch.rsqrt(carried.pow(2) @ weight.pow(2).sum((2, 3)).T + 1e-8)
            out = out * norm[:, :, None, None]
        return out


class NoiseInjection(nn.Module):
    """Add ``weight * fixed``: the layer's stored noise map, the same for every sample."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.register_buffer("fixed", torch.randn(1, 1, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight * self.fixed


class BiasLeakyReLU(nn.Module):
    """``leaky_relu(x + b, 0.2) * sqrt 2`` with a bias per unit, clamped to +-``clamp``
    when set (NVIDIA's ``conv_clamp``)."""

    def __init__(self, channels: int, clamp: float | None = None) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2) * SQRT2
        return x if self.clamp is None else x.clamp(-self.clamp, self.clamp)


class StyledConv(nn.Module):
    """One synthesis layer (see the module docstring): ``(x, w) -> (N, units, h, w)``."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, size: int,
                 upsample: bool = False, blur_size: int = 4,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim,
                                    upsample=upsample, blur_size=blur_size)
        self.style = StyleChannels()
        self.noise = NoiseInjection(size)
        self.activate = BiasLeakyReLU(out_channels, conv_clamp)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w, self.style)))


class ToRGB(nn.Module):
    """``(x, w, rgb so far) -> RGB``: a modulated 1x1 conv plus a bias (clamped to
    +-``conv_clamp`` when set), plus the previous RGB upsampled (absent for the first one);
    ``img_channels`` 1 for grey generators."""

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True,
                 blur_size: int = 4, conv_clamp: float | None = None,
                 img_channels: int = 3) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_size)
        self.conv = ModulatedConv2d(in_channels, img_channels, 1, style_dim, demodulate=False)
        self.style = StyleChannels()
        self.bias = nn.Parameter(torch.zeros(1, img_channels, 1, 1))
        self.clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor,
                rgb: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w, self.style) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        return out if rgb is None else out + self.upsample(rgb)


class ConstantInput(nn.Module):
    """The learned 4x4 input, the same for every sample."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyleGAN2Generator(nn.Module):
    """A StyleGAN2 generator: ``z (N, style_dim)`` -> image ``(N, 3, R, R)``.

    ``channels`` lists the units at 4x4, 8x8, ... up to the output resolution (one layer at 4x4,
    two per resolution after it). ``truncation`` (psi, default 1: none) pulls each ``w``
    towards ``w_avg``: ``w_avg + psi * (w - w_avg)``.

    Options of NVIDIA's StyleGAN2-ADA models: ``z_dim`` (default ``style_dim``); ``c_dim``
    classes (a class-conditional model: ``n_classes``, and ``class_index`` chooses the class,
    its one-hot vector embedded by ``embed`` to ``embed_dim`` values and normalised apart from
    z); ``conv_clamp`` (activations clamped to +-256 in the released models); ``img_channels``
    1 for grey models, whose image is repeated to 3 channels.
    """

    def __init__(self, style_dim: int = 512, n_mlp: int = 8, channels: list[int] | None = None,
                 lr_mul: float = 0.01, blur_size: int = 4, z_dim: int | None = None,
                 c_dim: int = 0, embed_dim: int | None = None, conv_clamp: float | None = None,
                 img_channels: int = 3) -> None:
        super().__init__()
        channels = [int(c) for c in (channels or stylegan2_channels(256))]
        z_dim = style_dim if z_dim is None else z_dim
        embed_dim = (style_dim if embed_dim is None else embed_dim) if c_dim else 0
        inputs = [z_dim + embed_dim] + [style_dim] * (n_mlp - 1)
        self.mapping = nn.Sequential(PixelNorm(z_dim if c_dim else None), *(
            EqualLinear(width, style_dim, lr_mul=lr_mul, activate=True) for width in inputs))
        if c_dim:
            self.embed = EqualLinear(c_dim, embed_dim)
        self.input = ConstantInput(channels[0])
        layer = {"blur_size": blur_size, "conv_clamp": conv_clamp}
        rgb = {**layer, "img_channels": img_channels}
        self.layer1 = StyledConv(channels[0], channels[0], style_dim, 4, **layer)
        self.to_rgb_4x4 = ToRGB(channels[0], style_dim, upsample=False, **rgb)
        n = 1
        for k, (previous, current) in enumerate(zip(channels[:-1], channels[1:])):
            size = 8 * 2 ** k
            self.add_module(f"layer{n + 1}", StyledConv(previous, current, style_dim, size,
                                                        upsample=True, **layer))
            self.add_module(f"layer{n + 2}", StyledConv(current, current, style_dim, size,
                                                        **layer))
            last = k == len(channels) - 2
            self.add_module(f"output_{size}x{size}" if last else f"to_rgb_{size}x{size}",
                            ToRGB(current, style_dim, **rgb))
            n += 2
        self.register_buffer("w_avg", torch.zeros(style_dim))
        self.style_dim, self.z_dim = style_dim, z_dim
        self.n_mlp, self.channels = n_mlp, channels
        self.resolution = 4 * 2 ** (len(channels) - 1)
        self.conv_clamp, self.img_channels = conv_clamp, img_channels
        self.n_classes = c_dim
        self.class_index: int | None = None
        self.truncation = 1.0

    def map(self, z: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        """``z (N, z_dim)`` -> ``w (N, style_dim)``, truncated when psi != 1 (``truncation``,
        None: the generator's own)."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise UserError(f"latent must be (N, {self.z_dim}), got {tuple(z.shape)}")
        if self.n_classes:
            z = torch.cat([z, self.embed(class_one_hot(self, z))], 1)
        w = self.mapping(z)
        psi = self.truncation if truncation is None else truncation
        if psi != 1:
            w = self.w_avg + psi * (w - self.w_avg)
        return w

    def styles(self, z: torch.Tensor, truncation: float | None = None
               ) -> dict[str, torch.Tensor]:
        """Every style layer's styles ``s = A(w) (N, C)`` for latents ``z``, by layer name
        (``"layer1.style"``, ``"to_rgb_4x4.style"``, ...), from ``w`` alone: no image is drawn.
        ``truncation``: psi instead of the generator's own (1: untruncated)."""
        w = self.map(z, truncation)
        return {f"{name}.style": module.conv.modulation(w)
                for name, module in self.named_children()
                if isinstance(module, (StyledConv, ToRGB))}

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        """``w (N, style_dim)`` -> image ``(N, 3, R, R)``, running the children in order."""
        x, rgb = self.input(w.shape[0]), None
        for module in self.children():
            if isinstance(module, StyledConv):
                x = module(x, w)
            elif isinstance(module, ToRGB):
                rgb = module(x, w, rgb)
        return rgb.repeat(1, 3, 1, 1) if rgb.shape[1] == 1 else rgb

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesize(self.map(z))

    @torch.no_grad()
    def mean_w(self, n: int = 4096, seed: int = 0, batch: int = 1024) -> torch.Tensor:
        """The mean of ``n`` mapped latents (seeded), untruncated: a ``w_avg`` for files that
        do not store one."""
        device = self.w_avg.device
        latents = torch.Generator().manual_seed(seed)
        total = torch.zeros(self.style_dim, dtype=torch.float64, device=device)
        for start in range(0, n, batch):
            z = torch.randn(min(batch, n - start), self.z_dim, generator=latents).to(device)
            total += self.mapping(z).double().sum(0)
        return (total / n).float()

    def fingerprint(self) -> str:
        """What changes the images besides the tensors (for cache keys); the noise is the
        stored maps, which are among the tensors."""
        text = f"truncation={float(self.truncation)!r}"
        if self.conv_clamp is not None:
            text += f";clamp={self.conv_clamp!r}"
        return text + (f";class={self.class_index!r}" if self.n_classes else "")


def class_one_hot(generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The one-hot vectors ``(N, n_classes)`` of a class-conditional generator's chosen
    ``class_index``, for latents ``z (N, z_dim)``; an error when no class is chosen."""
    classes, index = generator.n_classes, generator.class_index
    if index is None:
        raise UserError(f"this generator is class-conditional: pass --class K (0..{classes - 1})")
    if not 0 <= index < classes:
        raise UserError(f"class {index} is not among the generator's classes 0..{classes - 1}")
    one_hot = z.new_zeros(z.shape[0], classes)
    one_hot[:, index] = 1
    return one_hot
