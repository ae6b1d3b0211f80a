"""What style channels as units cost: StyleGAN2Generator's forward (256 px, the released
channels, batch 4, one thread) with its modulated convolutions computed as conv(x * s) then
demodulation (the ``style`` module that hooks trace and edit), against the same generator
computing them the usual way, as one grouped convolution with per-sample modulated weights.
Both run alternately in one process; prints the largest difference of their images, each one's
median and minimum time and the ratio of the medians.

    python benchmarks/bench_stylespace.py [--repeats 5]
"""
import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from gandissect.models import stylegan2 as sg


def grouped_forward(self, x, w, *args, **kwargs):
    """Weight modulation: one grouped convolution, a kernel per sample."""
    n, c, h, width = x.shape
    _, out, _, k, _ = self.weight.shape
    style = self.modulation(w)
    weight = self.scale * self.weight * style[:, None, :, None, None]
    if self.demodulate:
        norm = torch.rsqrt(weight.pow(2).sum((2, 3, 4)) + 1e-8)
        weight = weight * norm[..., None, None, None]
    x = x.reshape(1, n * c, h, width)
    if self.upsample:
        weight = weight.transpose(1, 2).reshape(n * c, out, k, k)
        x = F.conv_transpose2d(x, weight, stride=2, groups=n)
        return self.blur(x.reshape(n, out, *x.shape[2:]))
    x = F.conv2d(x, weight.reshape(n * out, c, k, k), padding=k // 2, groups=n)
    return x.reshape(n, out, *x.shape[2:])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = sg.StyleGAN2Generator(512, 8, sg.stylegan2_channels(args.resolution)).eval()
    z = torch.randn(args.batch, 512)
    new_forward = sg.ModulatedConv2d.forward
    times = {"new": [], "old": []}  # new: the style module; old: grouped
    with torch.no_grad():
        g(z)
        sg.ModulatedConv2d.forward = grouped_forward
        reference = g(z)
        sg.ModulatedConv2d.forward = new_forward
        current = g(z)
        print("max |new - old| / max |old|:",
              float((current - reference).abs().max() / reference.abs().max()))
        for _ in range(args.repeats):  # interleaved: both see the same machine load
            for name, forward in (("new", new_forward), ("old", grouped_forward)):
                sg.ModulatedConv2d.forward = forward
                start = time.perf_counter()
                g(z)
                times[name].append(time.perf_counter() - start)
        sg.ModulatedConv2d.forward = new_forward
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.3f} s, min {min(values):.3f} s "
              f"(batch {args.batch}, {args.resolution} px, 1 thread)")
    ratio = statistics.median(times["new"]) / statistics.median(times["old"])
    print(f"style module / grouped (medians): {ratio:.3f}")


if __name__ == "__main__":
    main()
