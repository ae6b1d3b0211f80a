"""Adversarial training of the SceneWorld generator (ProGAN-style), resumable.

Generator: ``ProGANGenerator`` (pixel norm, equalised learning rate, nearest upsampling,
LeakyReLU(0.2)); discriminator: ``Discriminator`` (equalised learning rate, minibatch stddev).
Loss: non-saturating logistic with lazy R1 regularisation on real images; Adam with
beta1 = 0, beta2 = 0.99; an exponential moving average of the generator's weights is what gets
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
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from gandissect.models.discriminator import Discriminator
from gandissect.models.proggan import ProGANGenerator
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
    loss: str = "hinge"  # "hinge" (spectral-norm D) or "logistic" (equalised-LR D with R1)
    lr: float = 0.001  # generator (equalised learning rate: steps are relative to weight scale)
    d_lr: float = 0.0004
    r1_gamma: float = 0.05
    r1_every: int = 4
    ema_halflife_kimg: float = 5.0
    ema_rampup: float = 0.05
    kimg: float = 400
    world_seed: int = SEEDS["generator"]
    seed: int = 0


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


class GANTrainer:
    """Holds the networks and optimisers; ``train`` runs until ``config.kimg`` thousand images."""

    def __init__(self, config: GANConfig, run: RunFolder) -> None:
        self.config, self.run = config, run
        torch.manual_seed(config.seed)
        self.generator = ProGANGenerator(config.z_dim, config.channels)
        if self.generator.resolution != config.resolution:
            raise ValueError("channels do not match the resolution")
        if config.loss not in ("hinge", "logistic"):
            raise ValueError(f"loss must be 'hinge' or 'logistic', got {config.loss!r}")
        hinge = config.loss == "hinge"
        self.discriminator = Discriminator(config.resolution, config.d_channels,
                                           spectral_norm=hinge)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.g_optimizer = torch.optim.Adam(self.generator.parameters(), config.lr,
                                            betas=(0.0, 0.99))
        if hinge:
            self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), config.d_lr,
                                                betas=(0.0, 0.9))
        else:
            r1_ratio = config.r1_every / (config.r1_every + 1)  # lazy regularisation correction
            self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(),
                                                config.d_lr * r1_ratio,
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

    def train_step(self, real: torch.Tensor) -> dict[str, float]:
        c, n = self.config, real.shape[0]
        G, D = self.generator, self.discriminator
        # Discriminator
        with torch.no_grad():
            fake = G(self._z(n))
        hinge = c.loss == "hinge"
        regularise = not hinge and self.step % c.r1_every == 0
        real.requires_grad_(regularise)
        real_score = D(real)
        if hinge:
            d_loss = F.relu(1 + D(fake)).mean() + F.relu(1 - real_score).mean()
        else:
            d_loss = F.softplus(D(fake)).mean() + F.softplus(-real_score).mean()
        r1 = torch.zeros(())
        if regularise:
            (grad,) = torch.autograd.grad(real_score.sum(), real, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            d_loss = d_loss + r1 * (c.r1_gamma / 2 * c.r1_every)
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        # Generator
        D.requires_grad_(False)
        fake_score = D(G(self._z(n)))
        g_loss = -fake_score.mean() if hinge else F.softplus(-fake_score).mean()
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optimizer.step()
        D.requires_grad_(True)
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
        save_weights(self.ema, self.run.path / "sceneworld_generator.safetensors",
                     self.ema.config(), images_seen=str(self.images_seen),
                     training_seconds=str(round(self.seconds)))
        with torch.no_grad():
            grid = image_grid(self.ema(self.fixed_z))
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
