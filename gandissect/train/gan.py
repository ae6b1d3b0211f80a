"""Adversarial training of the SceneWorld generator (ProGAN-style), resumable.

Generator: ``ProGANGenerator`` (pixel norm, equalised learning rate, nearest upsampling,
LeakyReLU(0.2)), grown progressively as ProGAN was: from 8 px, each resolution is faded in and
then trained alone (``GANConfig.grow_kimg``), through temporary to-RGB layers that are not part
of the shipped generator. Discriminator: an equalised-learning-rate pixel-space discriminator
with minibatch stddev and from-RGB layers per resolution, non-saturating logistic loss with
lazy R1 on real images. Without growing, the generator collapsed within 30,000 images; with
growing, the pair drew varied 8 px scenes within 10,000 (``docs/experiments/generator.md``).

Latent classes: the unconditional pair drew churches less and less (10.7% of scenes at 172,000
images, 5.6% at 307,000, against 19.5%). So the latent space is cut into one region per scene
class, ``argmax_k(z_k + b_k)`` over the first K coordinates, with offsets ``b`` solved so that a
standard-normal z falls in class k as often as real scenes are of class k
(``latent_class_offsets``); the generator adds a learnt vector per class to z
(``ProGANGenerator(class_offsets=...)``), and from ``GANConfig.condition_kimg`` on (off by
default; the shipped run's recipe, ``RECIPES["sceneworld"]``, sets it) the discriminator also
sees each image's class (projection, ``Discriminator(classes=K)``):
SceneWorld's exact label for a real image, its latent's class for a generated one. The
generator keeps its interface (a standard-normal z in, an image out), and the class mixture
of its images is pinned to the real one as far as it honours the regions. (Splitting church,
house and street further by main facade material, 15 classes, was tried for 80,000 images
against the brick excess and did not lower it; see the generator's model card.)

Semantic critic (``GANConfig.semantic_kimg``, ``--branch OLD --semantic`` or ``--from-weights
FILE --semantic``): a second ``Discriminator`` that scores, instead of pixels, the frozen
shipped segmenter's label probabilities of the image (object, part and material softmaxes
stacked), with its own logistic loss and R1; added to a trained run, it first learns alone
(``semantic_warmup_kimg``), then enters the generator's loss with a weight that ramps up.
It is aimed at what the pixel critics let through: generated walls that the segmenter reads
as a patchwork of brick, plaster and stone where every real wall is one material (the
generator's model card, "Why brick misses"); its gradient reaches the generator through the
frozen segmenter.

Runs from weights (``start_from_weights``, ``gandissect train generator --from-weights FILE``):
a generator weights file (the shipped one included; training checkpoints are not shipped)
starts a run with fresh critics; the generator stays fixed while they learn
(``GANConfig.generator_frozen_until_kimg``), then trains on.

Adam with beta1 = 0; an exponential moving average of the generator's weights is what gets
shipped. Real images are SceneWorld scenes rendered on the fly from world ``SEEDS['generator']``,
scene indices continuing where the last checkpoint stopped.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from gandissect.errors import UserError
from gandissect.models.discriminator import Discriminator
from gandissect.models.proggan import OutputBlock, ProGANGenerator
from gandissect.models.registry import SEEDS, save_weights
from gandissect.report.images import image_grid
from gandissect.train.common import (
    Every,
    RenderedBatches,
    RunFolder,
    rendered_batches,
    run_training,
)


@dataclass
class GANConfig:
    """Everything that defines a generator training run (stored in its checkpoint)."""

    resolution: int = 64
    z_dim: int = 256
    channels: list[int] = field(default_factory=lambda: [256, 256, 128, 64, 32])
    d_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    batch: int = 32
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
    # Latent classes, and a class-conditional discriminator from this many thousand images on
    # (None: neither; the shipped run's recipe, ``RECIPES["sceneworld"]``, sets it).
    condition_kimg: float | None = None
    # Scene-class frequencies of the real images (``scene_prior`` of the world when None),
    # fixed for the run so that the latent regions never move.
    class_prior: list[float] | None = None
    # A semantic critic (``Discriminator`` over the frozen shipped segmenter's label
    # probabilities, object, part and material softmaxed and stacked) beside the main one, on
    # full-size images only, from ``semantic_kimg`` thousand images on (None: none). It trains
    # alone for ``semantic_warmup_kimg``, then its loss enters the generator's with a weight
    # rising linearly to ``semantic_weight`` over ``semantic_ramp_kimg`` (so that a trained
    # generator is not pushed around by a random critic). It sees what the pixel critic lets
    # through: a wall that the segmenter reads as a patchwork of materials where a real wall
    # is one.
    semantic_kimg: float | None = None
    semantic_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128, 128])
    semantic_warmup_kimg: float = 5.0
    semantic_ramp_kimg: float = 10.0
    semantic_weight: float = 1.0
    # The generator stays as it is until this many thousand images (None: it trains from the
    # start), so that the fresh critics of a run started from trained weights
    # (``start_from_weights``) catch up with it first.
    generator_frozen_until_kimg: float | None = None

    @classmethod
    def from_dict(cls, values: dict) -> GANConfig:
        """The configuration stored in a checkpoint or given with ``--config``. Settings of
        discriminators this version no longer trains are dropped where the run did not use
        them (older checkpoints store them); a run that used one is refused, since it cannot
        continue as it was."""
        values = dict(values)
        retired = {key: values.pop(key) for key in _RETIRED if key in values}
        if retired.get("loss", "logistic") != "logistic" or retired.get("patch_kimg") is not None:
            raise UserError("this run trains with the hinge loss, the projected discriminator or "
                            "the texture (patch) critic, which are no longer part of gandissect; "
                            "start a new run")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown GANConfig fields {unknown}; it has {sorted(known)}")
        return cls(**values)


# Settings of discriminators no longer trained, which older checkpoints store.
_RETIRED = ("loss", "patch_kimg", "patch_channels", "patch_warmup_kimg", "patch_ramp_kimg",
            "patch_weight")

# Named configurations: ``sceneworld`` is the shipped generator's run (latent classes and a
# class-conditional discriminator from its saved state at 311,712 images on).
RECIPES = {"sceneworld": {"condition_kimg": 311.712}}


def scene_prior(world_seed: int, n: int = 20_000) -> list[float]:
    """Scene-class frequencies of ``n`` SceneWorld layouts (scene indices from 10**9 on, which
    training never reaches), in the order of ``concepts("scene")``."""
    from gandissect.world.compose import compose
    from gandissect.world.concepts import concepts
    from gandissect.world.render import scene_rng

    names = [c.name for c in concepts("scene")]
    counts = np.zeros(len(names))
    for index in range(10**9, 10**9 + n):
        counts[names.index(compose(scene_rng(world_seed, index), 1 / 64).scene)] += 1
    return (counts / n).tolist()


def _log_argmax_probabilities(offsets: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """log P(argmax_k (z_k + b_k) = k) for z ~ N(0, I): the log of the integral over t of
    phi(t) * prod_{j != k} Phi(t + b_k - b_j), by the trapezoid rule in log space (float64,
    so that rare classes do not underflow)."""
    log_density = -grid**2 / 2 - 0.5 * math.log(2 * math.pi)
    gaps = offsets[:, None] - offsets[None, :]  # b_k - b_j
    log_cdf = torch.special.log_ndtr(grid[None, None, :] + gaps[:, :, None])  # (k, j, t)
    log_cdf = log_cdf * (1 - torch.eye(len(offsets), dtype=log_cdf.dtype))[:, :, None]
    weights = torch.full_like(grid, float(grid[1] - grid[0]))
    weights[0] = weights[-1] = weights[0] / 2
    return torch.logsumexp(log_density + log_cdf.sum(1) + weights.log(), dim=1)


def latent_class_offsets(prior: list[float]) -> torch.Tensor:
    """Offsets ``b`` such that ``argmax_k(z_k + b_k)`` over a standard normal z is class k with
    probability ``prior[k]`` (fixed-point iteration on log p / q; float64, to 1e-9)."""
    target = torch.tensor(prior, dtype=torch.float64)
    if target.dim() != 1 or len(target) < 2 or (target <= 0).any():
        raise UserError(f"class_prior needs two or more positive frequencies, got {prior}")
    target = (target / target.sum()).log()
    grid = torch.linspace(-12, 12, 6001, dtype=torch.float64)
    offsets = torch.zeros_like(target)
    for _ in range(1000):
        gap = target - _log_argmax_probabilities(offsets, grid)
        if gap.abs().max() < 1e-9:
            break
        offsets = offsets + 0.5 * gap  # damped: full steps overshoot with rare classes
        offsets = offsets - offsets.mean()
    if not torch.isfinite(offsets).all():
        raise UserError(f"could not place latent classes of frequencies {prior}")
    return offsets.float()


def stand_in_generator(seed: int = 0) -> ProGANGenerator:
    """The shipped generator's architecture (``GANConfig``'s defaults) with fixed random
    weights, in eval mode: for benchmarks, whose costs do not depend on the weights."""
    config = GANConfig()
    torch.manual_seed(seed)
    return ProGANGenerator(config.z_dim, config.channels).eval()


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
        x, before = self.generator.condition(z), None
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


def _embedding_last(module: nn.Module, name: str) -> list[nn.Parameter]:
    """``module``'s trainable parameters with ``name`` (a class embedding, if present) moved
    last, so that the optimiser indices of checkpoints from before it existed still hold."""
    named = dict(module.named_parameters())
    embedding = named.pop(name, None)
    return [p for p in named.values() if p.requires_grad] + ([embedding] if embedding is not
                                                             None else [])


def _with_one_more_parameter(optimizer_state: dict) -> dict:
    """An optimiser state dict with one parameter (no moments yet) appended to its group."""
    (group,) = optimizer_state["param_groups"]
    group = {**group, "params": [*group["params"], max(group["params"]) + 1]}
    return {"state": optimizer_state["state"], "param_groups": [group]}


def _r1(real_scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The R1 penalty's mean squared gradient norm of per-image scores on real images (kept
    in the graph, so that it trains the critic)."""
    (grad,) = torch.autograd.grad(real_scores.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


class GANTrainer:
    """Holds the networks and optimisers; ``train`` runs until ``config.kimg`` thousand images.

    ``device`` is where the networks train (latents are still drawn on the CPU, so a run's
    latents do not depend on it); ``workers`` is the number of rendering processes (0: render
    in the training process)."""

    def __init__(self, config: GANConfig, run: RunFolder, device: str | torch.device = "cpu",
                 workers: int = 1) -> None:
        self.config, self.run = config, run
        self.device, self.workers = torch.device(device), workers
        torch.manual_seed(config.seed)
        offsets = None
        if config.condition_kimg is not None:
            if config.class_prior is None:
                config.class_prior = scene_prior(config.world_seed)
            offsets = latent_class_offsets(config.class_prior).tolist()
        self.generator = GrowingGenerator(ProGANGenerator(config.z_dim, config.channels,
                                                          class_offsets=offsets))
        if self.generator.generator.resolution != config.resolution:
            raise UserError("channels do not match the resolution")
        from gandissect.world.concepts import concepts

        classes = len(concepts("scene")) if config.condition_kimg is not None else 0
        self.discriminator = Discriminator(config.resolution, config.d_channels, classes=classes)
        # The class embedding last, so that checkpoints from before it existed keep their
        # optimiser indices (``load_state_dict``).
        self.d_parameters = _embedding_last(self.discriminator, "class_embedding")
        self.generator.to(self.device)
        self.discriminator.to(self.device)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.g_optimizer = torch.optim.Adam(
            _embedding_last(self.generator, "generator.class_embedding"), config.lr,
            betas=(0.0, 0.99))
        r1_ratio = config.r1_every / (config.r1_every + 1)  # lazy regularisation correction
        self.d_optimizer = torch.optim.Adam(self.d_parameters, config.d_lr * r1_ratio,
                                            betas=(0.0, 0.99 ** r1_ratio))
        same = {k: self.d_optimizer.defaults[k] for k in ("lr", "betas")}  # as the main D
        self.semantic = self.semantic_optimizer = self.segmenter = None
        if config.semantic_kimg is not None:
            from gandissect.models.registry import load_segmenter

            self.segmenter = load_segmenter("sceneworld", self.device).requires_grad_(False)
            maps = sum(head.out_channels for head in self.segmenter.heads.values())
            self.semantic = Discriminator(config.resolution, config.semantic_channels,
                                          in_channels=maps).to(self.device)
            self.semantic_optimizer = torch.optim.Adam(self.semantic.parameters(), **same)
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
        } | ({} if self.semantic is None else {
            "semantic_discriminator": self.semantic.state_dict(),
            "semantic_optimizer": self.semantic_optimizer.state_dict(),
        })

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; a checkpoint from before the class embeddings existed gets
        them at zero (so the networks start where it stopped), with fresh Adam moments; a slim
        checkpoint (``slim_checkpoint``: no optimiser state, half precision) continues with
        fresh Adam moments. A run given a semantic critic after its checkpoint was written starts
        that one afresh."""
        g = self.generator.generator
        g_state, ema_state = state["generator"], state["ema"]
        g_optimizer, d_optimizer = state.get("g_optimizer"), state.get("d_optimizer")
        if g.class_embedding is not None and "generator.class_embedding" not in g_state:
            added = {"generator.class_embedding": g.class_embedding.detach(),
                     "generator.class_offsets": g.class_offsets}
            g_state, ema_state = {**g_state, **added}, {**ema_state, **added}
            g_optimizer = g_optimizer and _with_one_more_parameter(g_optimizer)
        d_state = state["discriminator"]
        if getattr(self.discriminator, "classes", 0) and "class_embedding" not in d_state:
            d_state = {**d_state, "class_embedding": self.discriminator.class_embedding.detach()}
            d_optimizer = d_optimizer and _with_one_more_parameter(d_optimizer)
        self.generator.load_state_dict(g_state)  # copies into the float32 parameters
        self.discriminator.load_state_dict(d_state)
        self.ema.load_state_dict(ema_state)
        if g_optimizer is not None:
            self.g_optimizer.load_state_dict(g_optimizer)
        if d_optimizer is not None:
            self.d_optimizer.load_state_dict(d_optimizer)
        if self.semantic is not None and "semantic_discriminator" in state:
            self.semantic.load_state_dict(state["semantic_discriminator"])
            if state.get("semantic_optimizer") is not None:
                self.semantic_optimizer.load_state_dict(state["semantic_optimizer"])
        self.images_seen, self.step = state["images_seen"], state["step"]
        self.seconds = state["seconds"]
        self.latents.set_state(state["latents"])

    # -- one step ----------------------------------------------------------------------
    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.z_dim, generator=self.latents).to(self.device)

    def conditioned(self) -> bool:
        """Whether the discriminator sees scene classes at this point of training."""
        at = self.config.condition_kimg
        return at is not None and self.images_seen >= at * 1000

    def _critic_weight(self, start_kimg: float | None, warmup_kimg: float, ramp_kimg: float,
                       weight: float, level: int, alpha: float) -> float | None:
        """The semantic critic's weight in the generator's loss at this point: 0 while it warms up
        (``warmup_kimg`` after ``start_kimg``), then rising linearly to ``weight`` over
        ``ramp_kimg``; None where it does not train: not configured, not reached yet, or
        images below full size."""
        top = round(math.log2(self.config.resolution / 4))
        if start_kimg is None or level < top or alpha < 1:
            return None
        kimg = self.images_seen / 1000 - start_kimg
        if kimg < 0:
            return None
        ramp = (kimg - warmup_kimg) / ramp_kimg if ramp_kimg else 1.0
        return weight * min(max(ramp, 0.0), 1.0)

    def semantic_weight(self, level: int, alpha: float) -> float | None:
        """The semantic critic's weight in the generator's loss (``_critic_weight``)."""
        c = self.config
        return self._critic_weight(c.semantic_kimg, c.semantic_warmup_kimg,
                                   c.semantic_ramp_kimg, c.semantic_weight, level, alpha)

    def generator_frozen(self) -> bool:
        """Whether the generator waits for its critics at this point of training."""
        until = self.config.generator_frozen_until_kimg
        return until is not None and self.images_seen < until * 1000

    def semantic_maps(self, images: torch.Tensor) -> torch.Tensor:
        """What the semantic critic scores: the frozen segmenter's per-pixel probabilities of
        every learned category, stacked, ``(N, sum of label counts, H, W)``."""
        return torch.cat([logits.softmax(1) for logits in self.segmenter(images).values()], 1)

    def train_step(self, real: torch.Tensor,
                   labels: torch.Tensor | None = None) -> dict[str, float]:
        """One discriminator and one generator step on a batch of real images and, once
        conditioned, their scene classes (0 .. K-1)."""
        c, n = self.config, real.shape[0]
        real = real.to(self.device, non_blocking=True)
        labels = None if labels is None else labels.to(self.device, non_blocking=True)
        conditioned = self.conditioned()
        if conditioned and labels is None:
            raise UserError("class-conditional training needs the real images' labels")
        real_labels = labels if conditioned else None
        G = self.generator
        level, alpha = growth_stage(c, self.images_seen)
        size = 4 * 2**level
        if size != real.shape[-1]:
            real = F.adaptive_avg_pool2d(real, size)
        if alpha < 1 and level > 0:  # fade real images the way the generator's output fades
            low = F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="nearest")
            real = torch.lerp(low, real, alpha)
        # Discriminator
        z = self._z(n)
        with torch.no_grad():
            fake = G(z, level, alpha)
        fake_labels = G.generator.latent_classes(z) if conditioned else None
        regularise = self.step % c.r1_every == 0
        real.requires_grad_(regularise)
        real_score = self.discriminator(real, alpha, real_labels)
        fake_score = self.discriminator(fake, alpha, fake_labels)
        d_loss = F.softplus(fake_score).mean() + F.softplus(-real_score).mean()
        r1 = torch.zeros((), device=self.device)
        if regularise:
            r1 = _r1(real_score, real)
            d_loss = d_loss + r1 * (c.r1_gamma / 2 * c.r1_every)
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        semantic_weight = self.semantic_weight(level, alpha)
        if semantic_weight is not None:  # the semantic critic, its own logistic loss and R1
            with torch.no_grad():
                real_maps, fake_maps = self.semantic_maps(real.detach()), self.semantic_maps(fake)
            real_maps.requires_grad_(regularise)
            real_semantic = self.semantic(real_maps)
            s_loss = (F.softplus(self.semantic(fake_maps)).mean()
                      + F.softplus(-real_semantic).mean())
            if regularise:
                s_loss = s_loss + _r1(real_semantic, real_maps) * (c.r1_gamma / 2 * c.r1_every)
            self.semantic_optimizer.zero_grad(set_to_none=True)
            s_loss.backward()
            self.semantic_optimizer.step()
        losses = {"d_loss": d_loss.item(), "r1": r1.item()}
        if semantic_weight is not None:
            losses["semantic_loss"] = s_loss.item()
        if not self.generator_frozen():
            losses["g_loss"] = self._generator_step(n, level, alpha, conditioned,
                                                    semantic_weight)
        self.images_seen += n
        self.step += 1
        return losses

    def _generator_step(self, n: int, level: int, alpha: float, conditioned: bool,
                        semantic_weight: float | None) -> float:
        """One generator step against every critic (weights frozen meanwhile), then the moving
        average; returns the generator's loss."""
        G = self.generator
        critics = [*self.d_parameters,
                   *(() if self.semantic is None else self.semantic.parameters())]
        for p in critics:
            p.requires_grad_(False)
        z = self._z(n)
        fake_labels = G.generator.latent_classes(z) if conditioned else None
        fake = G(z, level, alpha)
        g_loss = F.softplus(-self.discriminator(fake, alpha, fake_labels)).mean()
        if semantic_weight:
            g_loss = g_loss + semantic_weight * F.softplus(
                -self.semantic(self.semantic_maps(fake))).mean()
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optimizer.step()
        for p in critics:
            p.requires_grad_(True)
        self._update_ema(n)
        return g_loss.item()

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
            samples = self.ema(self.fixed_z.to(self.device),
                               *growth_stage(self.config, self.images_seen)).cpu()
            size = self.config.resolution
            grid = image_grid(F.interpolate(samples, size=(size, size), mode="nearest"))
        from PIL import Image

        Image.fromarray(grid).save(self.run.path / "samples.png")

    def train(self, checkpoint_minutes: float = 5.0, progress: bool = True) -> None:
        c = self.config
        total = int(c.kimg * 1000)
        batches = rendered_batches(
            RenderedBatches(c.world_seed, c.resolution, c.batch, self.images_seen, ("scene",)),
            self.workers, self.device)
        checkpoint, log = Every(checkpoint_minutes * 60), Every(30)
        bar = tqdm(total=total, initial=self.images_seen, unit="img", disable=not progress,
                   desc="generator", smoothing=0.05)
        started, seconds_before = time.monotonic(), self.seconds
        for batch in batches:
            if self.images_seen >= total or self.run.stop_requested:
                break
            real, labels = batch["image"], batch["scene"] - 1
            losses = self.train_step(real, labels)
            self.seconds = seconds_before + time.monotonic() - started
            bar.update(real.shape[0])
            if log():
                self.run.log({"images_seen": self.images_seen, "seconds": round(self.seconds),
                              **{k: round(v, 4) for k, v in losses.items()}})
                bar.set_postfix(d=f"{losses['d_loss']:.3f}",
                                g=f"{losses.get('g_loss', float('nan')):.3f}")
            if checkpoint():
                self.save()
        bar.close()
        self.save()


def slim_checkpoint(run_dir: str | Path, out: str | Path,
                    dtype: torch.dtype = torch.float16) -> Path:
    """Write ``out``: the run's checkpoint without optimiser state and with its weights in
    ``dtype``, about a fifth of its size, to carry a run to another machine (a GPU one, whose
    uploads are capped). Copied to ``NEWRUN/checkpoint.pt`` it continues there with fresh Adam
    moments (``GANTrainer.load_state_dict``); the weights round to ``dtype`` once."""
    from gandissect.fileio import load_state, save_state

    source = Path(run_dir) / "checkpoint.pt"
    if not source.exists():
        raise UserError(f"no checkpoint in {run_dir}: train first (gandissect train "
                        f"generator --run {run_dir})")
    state = load_state(source)
    for key in ("g_optimizer", "d_optimizer", "semantic_optimizer"):
        state.pop(key, None)
    networks = {"generator", "discriminator", "ema", "semantic_discriminator"}
    for key in networks & state.keys():
        state[key] = {name: value.to(dtype) if value.is_floating_point() else value
                      for name, value in state[key].items()}
    out = Path(out)
    save_state(out, state)
    return out


def branch_run(source: str | Path, run_dir: str | Path, semantic: bool = False) -> Path:
    """Start run ``run_dir`` from the checkpoint of run ``source`` (which is left as it is);
    ``semantic``: the new run adds the semantic critic (``GANConfig.semantic_kimg``) from the
    checkpoint's point on. Returns the new checkpoint's path."""
    from gandissect.fileio import load_state, save_state

    source, run_dir = Path(source), Path(run_dir)
    if not (source / "checkpoint.pt").exists():
        raise UserError(f"no checkpoint in {source} to branch from: train it first "
                        f"(gandissect train generator --run {source})")
    if (run_dir / "checkpoint.pt").exists():
        raise UserError(f"{run_dir} already holds a run: continue it without --branch, "
                        f"or branch into a new folder")
    state = load_state(source / "checkpoint.pt")
    GANConfig.from_dict(state["config"])  # a run this version cannot continue fails now
    if semantic:
        if state["config"].get("semantic_kimg") is not None:
            raise UserError(f"{source} already trains a semantic critic")
        state["config"]["semantic_kimg"] = state["images_seen"] / 1000
    run_dir.mkdir(parents=True, exist_ok=True)
    save_state(run_dir / "checkpoint.pt", state)
    return run_dir / "checkpoint.pt"


def start_from_weights(weights: str | Path, run_dir: str | Path,
                       config: GANConfig | None = None, warmup_kimg: float = 20.0,
                       semantic: bool = False) -> Path:
    """Start run ``run_dir`` from a generator weights file written by this project (a run's
    ``sceneworld_generator.safetensors``, the shipped one included) with fresh critics: the
    generator and its moving average start as those weights, at full size (no growing), with
    the latent classes the weights have, counting images from the ones stored with them; the
    generator then waits ``warmup_kimg`` thousand images while the critics learn. ``config``
    gives the other settings (the architecture comes from the weights); ``semantic`` adds the
    semantic critic from the start. Returns the new checkpoint's path."""
    from gandissect.models.registry import read_weights

    run_dir = Path(run_dir)
    if (run_dir / "checkpoint.pt").exists():
        raise UserError(f"{run_dir} already holds a run: continue it without "
                        f"--from-weights, or start a new --run folder")
    state, architecture, metadata = read_weights(weights)
    if architecture.get("architecture") != "proggan":
        raise UserError(f"{weights} holds a {architecture.get('architecture')!r}, not a "
                        f"generator trained by gandissect (a 'proggan' weights file)")
    if warmup_kimg < 0:
        raise UserError(f"the critics' warm-up must be 0 or more thousand images, got "
                        f"{warmup_kimg}")
    config = copy.deepcopy(config) if config is not None else GANConfig()
    config.z_dim, config.channels = architecture["z_dim"], list(architecture["channels"])
    config.resolution = 4 * 2 ** (len(config.channels) - 1)
    config.grow_kimg = 0.0
    images_seen = int(metadata.get("images_seen", 0))
    kimg_now = images_seen / 1000
    offsets = architecture.get("class_offsets")
    config.condition_kimg = None if offsets is None else min(config.condition_kimg or 0.0,
                                                             kimg_now)
    config.generator_frozen_until_kimg = kimg_now + warmup_kimg
    if semantic:
        config.semantic_kimg = kimg_now
    steps = len(config.channels)  # the critics' channel counts: one per resolution from 4 px
    for name in ("d_channels",) + (("semantic_channels",) if config.semantic_kimg is not None
                                   else ()):
        if len(getattr(config, name)) != steps:
            raise UserError(f"{weights} draws {config.resolution} px: give {name} with "
                            f"{steps} channel counts in --config")
    if config.kimg * 1000 <= images_seen:
        raise UserError(f"{weights} has seen {images_seen:,} images already: give a --kimg "
                        f"above {kimg_now:g}")
    with RunFolder(run_dir) as run:
        trainer = GANTrainer(config, run)
        for generator in (trainer.generator.generator, trainer.ema.generator):
            generator.load_state_dict(state)
        trainer.images_seen = images_seen
        trainer.seconds = float(metadata.get("training_seconds", 0))
        run.save(trainer.state_dict())
    return run.checkpoint_path


def train_generator(run_dir: str, config: GANConfig | None = None, threads: int | None = None,
                    checkpoint_minutes: float = 5.0, kimg: float | None = None,
                    device: str | torch.device = "cpu", workers: int = 1) -> GANTrainer:
    """Train (or continue training) the generator in ``run_dir`` on ``device`` with ``workers``
    rendering processes; returns the trainer. On a CUDA device, matrix products and
    convolutions may use TF32 while it trains (``torch.backends``' flags, restored after): on
    an H100 it doubled the shipped architecture's training steps (1,521 to 2,723 images/s at
    batch 64, ``benchmarks/bench_gan_steps.py``)."""
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    before = [flag.allow_tf32 for flag in flags]
    try:
        if torch.device(device).type == "cuda":
            for flag in flags:
                flag.allow_tf32 = True
        return run_training(GANTrainer, GANConfig, run_dir, config, threads, checkpoint_minutes,
                            kimg, device=device, workers=workers)
    finally:
        for flag, value in zip(flags, before):
            flag.allow_tf32 = value
