"""Time GAN training steps at full resolution (no rendering) for several configurations.

python benchmarks/bench_gan_steps.py --device cuda [--steps 30] [CONFIG.json ...]
Prints images per second for the shipped generator's recipe (``--config sceneworld``) and each
configuration given, with cudnn autotuning off and on, and with TF32 matmuls allowed; the real
images are random tensors, so only the networks are timed."""

import argparse
import json
import time
from pathlib import Path

import torch

from gandissect.train.gan import RECIPES, GANConfig, GANTrainer
from gandissect.world.concepts import concepts


def rate(config: GANConfig, device: str, steps: int) -> float:
    trainer = GANTrainer(config, run=None, device=device, workers=0)
    trainer.images_seen = 10**7  # past growing and conditioning: full size, with classes
    real = torch.rand(config.batch, 3, config.resolution, config.resolution) * 2 - 1
    labels = torch.randint(0, len(concepts("scene")), (config.batch,))
    for _ in range(5):
        trainer.train_step(real, labels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(real, labels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * config.batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("configs", nargs="*")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    for path in ["sceneworld"] + args.configs:
        values = RECIPES[path] if path in RECIPES else json.loads(Path(path).read_text())
        for batch in (32, 64, 128):
            for bench, tf32 in ((False, False), (True, False), (True, True)):
                torch.backends.cudnn.benchmark = bench
                torch.backends.cuda.matmul.allow_tf32 = tf32
                torch.backends.cudnn.allow_tf32 = tf32
                config = GANConfig(**{**values, "batch": batch})
                print(f"{path} batch {batch} cudnn.benchmark {bench} tf32 {tf32}: "
                      f"{rate(config, args.device, args.steps):.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
