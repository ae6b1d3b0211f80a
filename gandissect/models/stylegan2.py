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
All layers get the same ``w`` (no style mixing), and the noise is the fixed maps stored with the
weights, so an image depends on its ``z`` only.

A StyledConv: style ``s = A(w)`` (equalised linear, bias initialised to 1), weight
``W * s / sqrt(fan_in)`` demodulated to unit norm per output unit (eps 1e-8), a 3x3 convolution
(or, for the first layer of a resolution, a stride-2 transposed convolution followed by a
[1, 3, 3, 1] blur with gain 4), plus ``noise_weight * noise``, then
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

__all__ = ["StyleGAN2Generator", "StyledConv", "ToRGB", "stylegan2_channels"]

SQRT2 = math.sqrt(2)


def stylegan2_channels(resolution: int, channel_multiplier: int = 2) -> list[int]:
    """The released models' units per resolution (4x4 first) for a given output size."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    sizes = [4 * 2 ** k for k in range(int(math.log2(resolution)) - 1)]
    return [table[s] * (channel_multiplier if s >= 64 else 1) for s in sizes]


class PixelNorm(nn.Module):
    """Normalise each latent to unit root-mean-square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


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
    """A convolution whose weights each sample's style scales per input unit; demodulated
    (unit norm per output unit) in the StyledConvs, not in the to-RGBs."""

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

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, c, h, width = x.shape
        _, out, _, k, _ = self.weight.shape
        style = self.modulation(w)
        weight = self.scale * self.weight * style[:, None, :, None, None]  # (N, out, in, k, k)
        if self.demodulate:
            norm = torch.rsqrt(weight.pow(2).sum((2, 3, 4)) + 1e-8)
            weight = weight * norm[..., None, None, None]
        x = x.reshape(1, n * c, h, width)  # one group per sample: its own weights
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(n * c, out, k, k)
            x = F.conv_transpose2d(x, weight, stride=2, groups=n)
            return self.blur(x.reshape(n, out, *x.shape[2:]))
        x = F.conv2d(x, weight.reshape(n * out, c, k, k), padding=k // 2, groups=n)
        return x.reshape(n, out, *x.shape[2:])


class NoiseInjection(nn.Module):
    """Add ``weight * fixed``: the layer's stored noise map, the same for every sample."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.register_buffer("fixed", torch.randn(1, 1, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight * self.fixed


class BiasLeakyReLU(nn.Module):
    """``leaky_relu(x + b, 0.2) * sqrt 2`` with a bias per unit."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2) * SQRT2


class StyledConv(nn.Module):
    """One synthesis layer (see the module docstring): ``(x, w) -> (N, units, h, w)``."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, size: int,
                 upsample: bool = False, blur_size: int = 4) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim,
                                    upsample=upsample, blur_size=blur_size)
        self.noise = NoiseInjection(size)
        self.activate = BiasLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w)))


class ToRGB(nn.Module):
    """``(x, w, rgb so far) -> RGB``: a modulated 1x1 conv plus a bias, plus the previous RGB
    upsampled (absent for the first one)."""

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True,
                 blur_size: int = 4) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_size)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor,
                rgb: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
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
    """

    def __init__(self, style_dim: int = 512, n_mlp: int = 8, channels: list[int] | None = None,
                 lr_mul: float = 0.01, blur_size: int = 4) -> None:
        super().__init__()
        channels = [int(c) for c in (channels or stylegan2_channels(256))]
        self.mapping = nn.Sequential(PixelNorm(), *(
            EqualLinear(style_dim, style_dim, lr_mul=lr_mul, activate=True)
            for _ in range(n_mlp)))
        self.input = ConstantInput(channels[0])
        self.layer1 = StyledConv(channels[0], channels[0], style_dim, 4, blur_size=blur_size)
        self.to_rgb_4x4 = ToRGB(channels[0], style_dim, upsample=False, blur_size=blur_size)
        n = 1
        for k, (previous, current) in enumerate(zip(channels[:-1], channels[1:])):
            size = 8 * 2 ** k
            self.add_module(f"layer{n + 1}", StyledConv(previous, current, style_dim, size,
                                                        upsample=True, blur_size=blur_size))
            self.add_module(f"layer{n + 2}", StyledConv(current, current, style_dim, size,
                                                        blur_size=blur_size))
            last = k == len(channels) - 2
            self.add_module(f"output_{size}x{size}" if last else f"to_rgb_{size}x{size}",
                            ToRGB(current, style_dim, blur_size=blur_size))
            n += 2
        self.register_buffer("w_avg", torch.zeros(style_dim))
        self.style_dim = self.z_dim = style_dim
        self.n_mlp, self.channels = n_mlp, channels
        self.resolution = 4 * 2 ** (len(channels) - 1)
        self.truncation = 1.0

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """``z (N, z_dim)`` -> ``w (N, style_dim)``, truncated when ``truncation`` != 1."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise UserError(f"latent must be (N, {self.z_dim}), got {tuple(z.shape)}")
        w = self.mapping(z)
        if self.truncation != 1:
            w = self.w_avg + self.truncation * (w - self.w_avg)
        return w

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        """``w (N, style_dim)`` -> image ``(N, 3, R, R)``, running the children in order."""
        x, rgb = self.input(w.shape[0]), None
        for module in self.children():
            if isinstance(module, StyledConv):
                x = module(x, w)
            elif isinstance(module, ToRGB):
                rgb = module(x, w, rgb)
        return rgb

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
        """What changes the images besides the tensors (for cache keys)."""
        return f"truncation={float(self.truncation)!r}"
