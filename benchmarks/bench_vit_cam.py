"""Grad-CAM on a vision transformer's token map against pytorch-grad-cam's, on this machine.

    OMP_NUM_THREADS=2 python benchmarks/bench_vit_cam.py [--model vit_small_patch16_224
        --size 224 --batch 4 --repeats 3]

A timm ViT with random weights (``pretrained=False``), layer ``blocks[-1].norm1`` (the layer
pytorch-grad-cam's documentation uses), targets 0..N-1. Ours: ``GradCAM(model,
"blocks.N.norm1").attribute(x, target, relu=False)`` (the class token left out by
``gandissect.spatial``). Theirs: ``GradCAM(model, [layer], reshape_transform=...)`` with the
documented ViT reshape, read before its ReLU, min-max scaling and resizing
(``get_cam_image``), and timed as a whole call (``cam(x, targets)``, which adds those). Prints
the largest difference relative to our map's largest value and our time over theirs (the
fastest of ``--repeats`` calls of each, after a warm-up), as a table line and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gandissect.attribute import GradCAM


def fastest(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    import timm
    from pytorch_grad_cam import GradCAM as PeerGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, img_size=args.size).eval()
    grid = model.patch_embed.grid_size
    prefix = model.num_prefix_tokens
    layer = f"blocks.{len(model.blocks) - 1}.norm1"
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator()
                    .manual_seed(1))
    classes = list(range(args.batch))

    def reshape(tensor):
        tokens = tensor[:, prefix:, :].reshape(tensor.size(0), *grid, tensor.size(2))
        return tokens.permute(0, 3, 1, 2)

    peer = PeerGradCAM(model, target_layers=[model.blocks[-1].norm1], reshape_transform=reshape)
    targets = [ClassifierOutputTarget(c) for c in classes]
    outputs = peer.activations_and_grads(x)
    sum(t(o) for t, o in zip(targets, outputs)).backward()
    acts = peer.activations_and_grads.activations[0].numpy()
    grads = peer.activations_and_grads.gradients[0].numpy()
    theirs = torch.from_numpy(peer.get_cam_image(x, None, targets, acts, grads))
    ours_method = GradCAM(model, layer)
    ours = ours_method.attribute(x, target=classes, relu=False)
    difference = float((ours - theirs).abs().max() / ours.abs().max())
    ours_s = fastest(lambda: ours_method.attribute(x, target=classes), args.repeats)
    theirs_s = fastest(lambda: peer(x, targets), args.repeats)
    peer.activations_and_grads.release()
    row = {"model": args.model, "size": args.size, "batch": args.batch, "layer": layer,
           "grid": list(grid), "prefix_tokens": prefix, "max_relative_difference": difference,
           "ours_s": ours_s, "pytorch_grad_cam_s": theirs_s, "ratio": ours_s / theirs_s}
    print(f"Grad-CAM {args.model} {args.size}px x{args.batch} {layer}: max |diff| / max = "
          f"{difference:.2e}, ours {ours_s:.3f} s, pytorch-grad-cam {theirs_s:.3f} s, "
          f"ratio {ours_s / theirs_s:.2f}")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
