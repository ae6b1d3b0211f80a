"""Adversarial training of the SceneWorld generator (ProGAN-style), resumable.

Generator: ``ProGANGenerator`` (pixel norm, equalised learning rate, nearest upsampling,
LeakyReLU(0.2)), grown progressively as ProGAN was: from 8 px, each resolution is faded in and
then trained alone (``GANConfig.grow_kimg``), through temporary to-RGB layers that are not part
of the shipped generator. Discriminator, by ``GANConfig.loss``:

- ``logistic`` (the default): an equalised-learning-rate pixel-space discriminator with
  minibatch stddev and from-RGB layers per resolution, non-saturating logistic loss with lazy
  R1 on real images.
- ``hinge``: the same layout spectrally normalised, hinge loss.
- ``projected``: a Projected GAN discriminator (Sauer et al. 2021) over the frozen encoder of
  the shipped SceneWorld segmenter, hinge loss.

Without growing, the pixel discriminators fell behind or the generator collapsed within 30,000
images on the CPU, and the projected one overpowered the generator (all samples alike); with
growing, the logistic pair drew varied 8 px scenes within 10,000 images.

Adam with beta1 = 0; an exponential moving average of the generator's weights is what gets
shipped. Real images are SceneWorld scenes rendered on the fly from world ``SEEDS['generator']``,
scene indices continuing where the last checkpoint stopped.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from gandissect.models.discriminator import Discriminator, segmenter_projected_discriminator
from gandissect.models.proggan import OutputBlock, ProGANGenerator
from gandissect.models.registry import SEEDS, save_weights
from gandissect.train.common import Every, RunFolder, run_training
from gandissect.world.dataset import image_to_tensor, tensor_to_image


@dataclass
class GANConfig:
    """Everything that defines a generator training run (stored in its checkpoint)."""

    resolution: int = 64
    z_dim: int = 256
    channels: list[int] = field(default_factory=lambda: [256, 256, 128, 64, 32])
    d_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    batch: int = 32
    # "logistic" (equalised-LR pixel D with R1), "hinge" (spectral-norm pixel D) or
    # "projected" (Projected GAN over the frozen segmenter encoder, hinge)
    loss: str = "logistic"
    lr: float = 0.002  # generator (equalised learning rate: steps are relative to weight scale)
    d_lr: float = 0.002
    r1_gamma: float = 0.05
    r1_every: int = 4
    ema_halflife_kimg: float = 5.0
    ema_rampup: float = 0.05
    kimg: float = 400
    # Progressive growing (ProGAN): from ``grow_start`` px, each resolution is faded in over
    # ``grow_kimg`` thousand images and trained alone for as many more; 0 trains at full size.
    grow_kimg: float = 15.0
    grow_start: int = 8
    world_seed: int = SEEDS["generator"]
    seed: int = 0


def stand_in_generator(seed: int = 0) -> ProGANGenerator:
    """The shipped generator's architecture (``GANConfig``'s defaults) with fixed random
    weights, in eval mode: for benchmarks, whose costs do not depend on the weights."""
    config = GANConfig()
    torch.manual_seed(seed)
    return ProGANGenerator(config.z_dim, config.channels).eval()


class SceneBatches(IterableDataset):
    """Endless batches of SceneWorld images in [-1, 1], scenes ``start, start + 1, ...``."""

    def __init__(self, seed: int, size: int, batch: int, start: int) -> None:
        self.seed, self.size, self.batch, self.start = seed, size, batch, start

    def __iter__(self):
        from gandissect.world import render_batch

        index = self.start
        while True:
            images = render_batch(self.seed, range(index, index + self.batch), self.size)["image"]
            yield image_to_tensor(images)
            index += self.batch


def _ignore_stop_signals(worker_id: int) -> None:
    """The rendering worker leaves SIGTERM and Ctrl-C to the trainer, which checkpoints first
    (``pkill -f`` reaches the worker too)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def image_grid(images: torch.Tensor, columns: int = 8) -> np.ndarray:
    """(N, 3, H, W) images in [-1, 1] -> one (rows*H, columns*W, 3) uint8 grid."""
    n, _, h, w = images.shape
    rows = math.ceil(n / columns)
    grid = torch.full((3, rows * h, columns * w), -1.0)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    return tensor_to_image(grid[None])[0]


class GrowingGenerator(nn.Module):
    """A ``ProGANGenerator`` plus temporary to-RGB layers at 4, 8, ... R/2 px for progressive
    growing. ``forward(z, level, alpha)`` draws at ``4 * 2**level`` px, fading from the
    upsampled lower resolution while ``alpha < 1``; at the top level it is the generator's own
    output layer, so the shipped generator is exactly ``.generator``."""

    def __init__(self, generator: ProGANGenerator) -> None:
        super().__init__()
        self.generator = generator
        self.to_rgb = nn.ModuleList(OutputBlock(c) for c in generator.channels[:-1])
        self.levels = len(generator.channels)

    def forward(self, z: torch.Tensor, level: int | None = None,
                alpha: float = 1.0) -> torch.Tensor:
        top = self.levels - 1
        level = top if level is None else level
        if level == top and alpha >= 1:
            return self.generator(z)
        blocks = list(self.generator.children())
        x, before = z[:, :, None, None], None
        for i in range(level + 1):
            before = x
            x = blocks[2 * i + 1](blocks[2 * i](x))
        rgb = blocks[-1] if level == top else self.to_rgb[level]
        image = rgb(x)
        if alpha < 1 and level > 0:
            low = F.interpolate(self.to_rgb[level - 1](before), scale_factor=2, mode="nearest")
            image = torch.lerp(low, image, alpha)
        return image


def growth_stage(config: GANConfig, images_seen: int) -> tuple[int, float]:
    """(level, alpha) of progressive growing after ``images_seen`` images; level ``L`` draws at
    ``4 * 2**L`` px; the top level with alpha 1 is the full generator."""
    top = round(math.log2(config.resolution / 4))
    if not config.grow_kimg:
        return top, 1.0
    level = round(math.log2(config.grow_start / 4))
    phase = images_seen / (config.grow_kimg * 1000)  # 0-1 stable, then fade/stable pairs
    if phase < 1:
        return level, 1.0
    step, within = divmod(phase - 1, 2)
    level += int(step) + 1
    if level >= top:
        return (top, 1.0) if level > top or within >= 1 else (top, within)
    return level, min(within, 1.0)


class GANTrainer:
    """Holds the networks and optimisers; ``train`` runs until ``config.kimg`` thousand images."""

    def __init__(self, config: GANConfig, run: RunFolder) -> None:
        self.config, self.run = config, run
        torch.manual_seed(config.seed)
        self.generator = GrowingGenerator(ProGANGenerator(config.z_dim, config.channels))
        if self.generator.generator.resolution != config.resolution:
            raise ValueError("channels do not match the resolution")
        if config.loss not in ("hinge", "logistic", "projected"):
            raise ValueError(f"loss must be 'hinge', 'logistic' or 'projected', "
                             f"got {config.loss!r}")
        hinge = config.loss in ("hinge", "projected")
        if config.loss == "projected":
            from gandissect.models.registry import load_segmenter

            self.discriminator = segmenter_projected_discriminator(
                load_segmenter("sceneworld"), config.resolution, seed=config.seed)
        else:
            self.discriminator = Discriminator(config.resolution, config.d_channels,
                                               spectral_norm=hinge)
        self.d_parameters = [p for p in self.discriminator.parameters() if p.requires_grad]
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), config.lr,
                                            betas=(0.0, 0.99))
        if hinge:
            self.d_optimizer = torch.optim.Adam(self.d_parameters, config.d_lr,
                                                betas=(0.0, 0.9))
        else:
            r1_ratio = config.r1_every / (config.r1_every + 1)  # lazy regularisation correction
            self.d_optimizer = torch.optim.Adam(self.d_parameters, config.d_lr * r1_ratio,
                                                betas=(0.0, 0.99 ** r1_ratio))
        self.images_seen, self.step, self.seconds = 0, 0, 0.0
        self.latents = torch.Generator().manual_seed(config.seed + 1)
        self.fixed_z = torch.randn(32, config.z_dim, generator=torch.Generator().manual_seed(7))

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "ema": self.ema.state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "images_seen": self.images_seen,
            "step": self.step,
            "seconds": self.seconds,
            "latents": self.latents.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.ema.load_state_dict(state["ema"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.images_seen, self.step = state["images_seen"], state["step"]
        self.seconds = state["seconds"]
        self.latents.set_state(state["latents"])

    # -- one step ----------------------------------------------------------------------
    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.z_dim, generator=self.latents)

    def _score(self, images: torch.Tensor, alpha: float) -> torch.Tensor:
        """The discriminator's scores; images below full size are upsampled (nearest) for the
        projected discriminator, and scored at their size by the growing pixel one."""
        if self.config.loss == "projected":
            size = self.config.resolution
            if images.shape[-1] != size:
                images = F.interpolate(images, size=(size, size), mode="nearest")
            return self.discriminator(images)
        return self.discriminator(images, alpha)

    def train_step(self, real: torch.Tensor) -> dict[str, float]:
        c, n = self.config, real.shape[0]
        G = self.generator
        level, alpha = growth_stage(c, self.images_seen)
        size = 4 * 2**level
        if size != real.shape[-1]:
            real = F.adaptive_avg_pool2d(real, size)
        if alpha < 1 and level > 0:  # fade real images the way the generator's output fades
            low = F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="nearest")
            real = torch.lerp(low, real, alpha)
        # Discriminator
        with torch.no_grad():
            fake = G(self._z(n), level, alpha)
        hinge = c.loss != "logistic"
        regularise = not hinge and self.step % c.r1_every == 0
        real.requires_grad_(regularise)
        real_score = self._score(real, alpha)
        fake_score = self._score(fake, alpha)
        if hinge:
            d_loss = F.relu(1 + fake_score).mean() + F.relu(1 - real_score).mean()
        else:
            d_loss = F.softplus(fake_score).mean() + F.softplus(-real_score).mean()
        r1 = torch.zeros(())
        if regularise:
            (grad,) = torch.autograd.grad(real_score.sum(), real, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            d_loss = d_loss + r1 * (c.r1_gamma / 2 * c.r1_every)
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        # Generator
        for p in self.d_parameters:
            p.requires_grad_(False)
        fake_score = self._score(G(self._z(n), level, alpha), alpha)
        g_loss = -fake_score.mean() if hinge else F.softplus(-fake_score).mean()
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optimizer.step()
        for p in self.d_parameters:
            p.requires_grad_(True)
        self._update_ema(n)
        self.images_seen += n
        self.step += 1
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "r1": r1.item()}

    @torch.no_grad()
    def _update_ema(self, n: int) -> None:
        c = self.config
        halflife = c.ema_halflife_kimg * 1000
        if c.ema_rampup:
            halflife = min(halflife, self.images_seen * c.ema_rampup)
        beta = 0.5 ** (n / max(halflife, 1e-8))
        for averaged, current in zip(self.ema.parameters(), self.generator.parameters()):
            averaged.lerp_(current, 1 - beta)

    # -- the loop ----------------------------------------------------------------------
    def save(self) -> None:
        self.run.save(self.state_dict())
        shipped = self.ema.generator
        save_weights(shipped, self.run.path / "sceneworld_generator.safetensors",
                     shipped.config(), images_seen=str(self.images_seen),
                     training_seconds=str(round(self.seconds)))
        with torch.no_grad():
            samples = self.ema(self.fixed_z, *growth_stage(self.config, self.images_seen))
            size = self.config.resolution
            grid = image_grid(F.interpolate(samples, size=(size, size), mode="nearest"))
        from PIL import Image

        Image.fromarray(grid).save(self.run.path / "samples.png")

    def train(self, checkpoint_minutes: float = 5.0, progress: bool = True) -> None:
        c = self.config
        total = int(c.kimg * 1000)
        batches = DataLoader(SceneBatches(c.world_seed, c.resolution, c.batch, self.images_seen),
                             batch_size=None, num_workers=1, prefetch_factor=4,
                             worker_init_fn=_ignore_stop_signals)
        checkpoint, log = Every(checkpoint_minutes * 60), Every(30)
        bar = tqdm(total=total, initial=self.images_seen, unit="img", disable=not progress,
                   desc="generator", smoothing=0.05)
        started, seconds_before = time.monotonic(), self.seconds
        for real in batches:
            if self.images_seen >= total or self.run.stop_requested:
                break
            losses = self.train_step(real)
            self.seconds = seconds_before + time.monotonic() - started
            bar.update(real.shape[0])
            if log():
                self.run.log({"images_seen": self.images_seen, "seconds": round(self.seconds),
                              **{k: round(v, 4) for k, v in losses.items()}})
                bar.set_postfix(d=f"{losses['d_loss']:.3f}", g=f"{losses['g_loss']:.3f}")
            if checkpoint():
                self.save()
        bar.close()
        self.save()


def train_generator(run_dir: str, config: GANConfig | None = None, threads: int | None = None,
                    checkpoint_minutes: float = 5.0, kimg: float | None = None) -> GANTrainer:
    """Train (or continue training) the generator in ``run_dir``; returns the trainer."""
    return run_training(GANTrainer, GANConfig, run_dir, config, threads, checkpoint_minutes, kimg)
