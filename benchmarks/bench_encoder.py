"""How well the encoder alone inverts held-out SceneWorld scenes into the shipped generator.

    python benchmarks/bench_encoder.py [ENCODER.safetensors] [--n 100] [--seed 1000] [--starts 8]

For ``--n`` scenes of world ``--seed`` (by default 1000, the seed for tuning inversion; never
the encoder's training seed 104 nor the evaluation seed 1001): the mean PSNR (over the [0, 1]
range, ``gandissect.invert.psnr``) of G(E(x)) against x, against the best of ``--starts``
random latents per scene (no optimisation), and the same for generated images G(z), whose true
latent is known. ENCODER defaults to the shipped ``models/sceneworld_encoder.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gandissect.invert import psnr
from gandissect.models.registry import (
    SEEDS,
    load_generator,
    load_weights_file,
    read_weights,
    shipped_path,
)
from gandissect.world import render_batch
from gandissect.world.dataset import image_to_tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoder", nargs="?", default=str(shipped_path("encoder")))
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--starts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.seed in SEEDS.values() or args.seed == 1001:
        parser.error(f"seed {args.seed} is a training seed or the evaluation seed")
    torch.set_num_threads(args.threads)

    generator = load_generator("sceneworld")
    encoder = load_weights_file(args.encoder, kind="encoder")
    started = time.perf_counter()
    real = image_to_tensor(render_batch(args.seed, range(args.n), generator.resolution)["image"])
    draws = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        encoded = generator(encoder(real))
        encoder_psnr = [psnr(encoded[i:i + 1], real[i:i + 1]) for i in range(args.n)]
        best_random = []
        for i in range(args.n):
            starts = generator(torch.randn(args.starts, generator.z_dim, generator=draws))
            best_random.append(max(psnr(s[None], real[i:i + 1]) for s in starts))
        z = torch.randn(args.n, generator.z_dim, generator=draws)
        generated = generator(z)
        regenerated = generator(encoder(generated))
        generated_psnr = [psnr(regenerated[i:i + 1], generated[i:i + 1]) for i in range(args.n)]
    metadata = read_weights(args.encoder)[2]
    figures = {
        "encoder": args.encoder, "images_seen": int(metadata.get("images_seen", 0)),
        "n": args.n, "seed": args.seed,
        "psnr_encoder": sum(encoder_psnr) / args.n,
        f"psnr_best_of_{args.starts}_random": sum(best_random) / args.n,
        "psnr_encoder_on_generated": sum(generated_psnr) / args.n,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"encoder {args.encoder} ({figures['images_seen']:,} training scenes)")
    print(f"{args.n} scenes of world seed {args.seed}, PSNR of the reconstruction (dB, mean):")
    print(f"  G(E(x))                      {figures['psnr_encoder']:.2f}")
    print(f"  best of {args.starts} random z           "
          f"{figures[f'psnr_best_of_{args.starts}_random']:.2f}")
    print(f"  G(E(G(z))) vs G(z), generated {figures['psnr_encoder_on_generated']:.2f}")


if __name__ == "__main__":
    main()
