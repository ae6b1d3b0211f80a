"""Training of an image -> latent encoder for a frozen generator, resumable.

Each step has two halves of ``batch`` images each:

- generated: z ~ N(0, 1), x = G(z); loss ``MSE(E(x), z)`` (the latent) plus
  ``pixel_weight * MSE(G(E(x)), x)`` (the image it gives back);
- real: SceneWorld scenes of world ``SEEDS['encoder']``, rendered on the fly with indices
  continuing across resumes; loss ``pixel_weight * MSE(G(E(x)), x)``.

The encoder's latents lie on the sphere where a standard normal draw lies (``LatentEncoder``).
The generator's weights stay fixed; only the encoder learns. ``images_seen`` and ``kimg`` count
real scenes (as many generated images go with them). The generated half's latents are drawn
from a seed made of the run's seed and the step, so a resumed run draws what an uninterrupted
one would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from gandissect.models.encoder import LatentEncoder
from gandissect.models.registry import SEEDS, save_weights
from gandissect.train.common import RunFolder, run_training
from gandissect.train.supervised import SupervisedTrainer

WEIGHTS_NAME = "sceneworld_encoder.safetensors"


@dataclass
class EncoderConfig:
    """Everything that defines an encoder training run (stored in its checkpoint)."""

    generator: str = "sceneworld"  # a generator spelling (gandissect.models.specs)
    resolution: int = 64  # the generator's, set when the run starts
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 192])
    batch: int = 16
    lr: float = 0.001
    weight_decay: float = 0.0
    warmup_kimg: float = 0.5
    kimg: float = 36
    pixel_weight: float = 2.0
    world_seed: int = SEEDS["encoder"]
    seed: int = 0


class EncoderTrainer(SupervisedTrainer):
    """Trains a ``LatentEncoder`` against the frozen generator ``config.generator``."""

    name = "encoder"

    def __init__(self, config: EncoderConfig, run: RunFolder, device: str | torch.device = "cpu",
                 workers: int = 0) -> None:
        from gandissect.models.specs import resolve_generator

        generator = resolve_generator(config.generator, device).eval()
        generator.requires_grad_(False)
        self.generator = generator
        config.resolution = generator.resolution  # the size of the real half's scenes
        torch.manual_seed(config.seed)
        super().__init__(config, LatentEncoder(generator.z_dim, generator.resolution,
                                               config.channels), run, device, workers)

    def latents(self) -> torch.Tensor:
        """This step's generated-half latents, ``(batch, z_dim)``: the same for a resumed run."""
        seed = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step)
        z = torch.randn(self.config.batch, self.generator.z_dim, generator=seed)
        return z.to(self.device)

    def loss(self, batch):
        c = self.config
        z = self.latents()
        with torch.no_grad():
            generated = self.generator(z)
        real = batch["image"]
        images = torch.cat([generated, real]).contiguous(memory_format=torch.channels_last)
        predicted = self.model(images)
        reconstructed = self.generator(predicted)
        n = len(z)
        latent = F.mse_loss(predicted[:n], z)
        pixel_generated = F.mse_loss(reconstructed[:n], generated)
        pixel_real = F.mse_loss(reconstructed[n:], real)
        total = latent + c.pixel_weight * (pixel_generated + pixel_real)
        return total, {"latent": latent.item(), "pixel_generated": pixel_generated.item(),
                       "pixel_real": pixel_real.item()}

    def export(self) -> None:
        save_weights(self.model, self.run.path / WEIGHTS_NAME, self.model.config(),
                     generator=self.config.generator, images_seen=str(self.images_seen),
                     step=str(self.step), training_seconds=str(round(self.seconds)),
                     world_seed=str(self.config.world_seed))


def train_encoder(run_dir: str, config: EncoderConfig | None = None,
                  threads: int | None = None, checkpoint_minutes: float = 5.0,
                  kimg: float | None = None, progress: bool = True,
                  device: str | torch.device = "cpu", workers: int = 0) -> EncoderTrainer:
    """Train (or continue training) the encoder in ``run_dir`` on ``device`` with ``workers``
    rendering processes (0: render in this one); returns the trainer."""
    return run_training(EncoderTrainer, EncoderConfig, run_dir, config, threads,
                        checkpoint_minutes, kimg, progress, device=device, workers=workers)
