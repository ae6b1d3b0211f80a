"""A small deterministic generator and segmenter for the app's tests (plug-in factories).

``ToyScenes`` draws 64 px scenes: sky above a horizon, grass below it, and up to two trees
standing on the horizon. Its painting layer ``layer4`` has 32 units at 8x8:

- units 0-9 draw trees (a bump over each tree's cells, each unit with its own ripple);
- units 10-17 draw sky and 18-25 grass (strong on the open cells of their region, weak under
  trees, so that removing a tree reveals the sky or grass behind it, as a GAN would fill in);
- units 26-31 are faint patterns that draw nothing.

The output layer paints each layer cell as an 8x8 block (nearest upsampling), so an edit under
a stroke changes exactly the cells it touches and nothing else. ``ToySegmenter`` labels pixels by
their nearest palette colour; its logits are differentiable (for the ACE selection).

Spelled as plug-ins: ``app_fixtures:toy_generator`` and ``app_fixtures:toy_segmenter`` (with
``tests/`` on ``PYTHONPATH``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CELLS = 8  # the painting layer's grid
SCALE = 8  # pixels per cell: 64 px images
TREE_UNITS = range(0, 10)
SKY_UNITS = range(10, 18)
GRASS_UNITS = range(18, 26)
UNITS = 32

PALETTE = {  # RGB in [-1, 1]
    "none": (-1.0, -1.0, -1.0),
    "sky": (-0.35, 0.15, 0.9),
    "tree": (-0.75, -0.1, -0.65),
    "grass": (0.2, 0.7, -0.45),
}


def _ripple(unit: int, amplitude: float) -> torch.Tensor:
    """A fixed (8, 8) pattern around 1, different for every unit."""
    yy, xx = torch.meshgrid(torch.arange(CELLS, dtype=torch.float32),
                            torch.arange(CELLS, dtype=torch.float32), indexing="ij")
    return 1 + amplitude * torch.sin(0.9 * xx * (1 + unit % 3) + 0.7 * yy * (1 + unit % 4)
                                     + 1.3 * unit)


class ToyUnits(nn.Module):
    """z (16) -> (N, 32, 8, 8) unit activations of a sky / grass / tree scene."""

    def __init__(self) -> None:
        super().__init__()
        ripples = torch.stack([_ripple(u, 0.3 if u < 26 else 1.0) for u in range(UNITS)])
        self.register_buffer("ripples", ripples)
        # each unit's strength varies from image to image (a fixed projection of z), so that
        # a unit's top 1% of activations covers its concept in the images where it is strong
        mixing = torch.randn(UNITS, 16, generator=torch.Generator().manual_seed(0))
        self.register_buffer("mixing", mixing / 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = torch.special.ndtr(z.float())
        n = z.shape[0]
        rows = torch.arange(CELLS, dtype=torch.float32, device=z.device)
        yy, xx = torch.meshgrid(rows, rows, indexing="ij")
        horizon = 3 + (u[:, 0] * 3).floor().clamp(max=2)  # first grass row: 3, 4 or 5
        sky = (yy[None] < horizon.view(-1, 1, 1)).float()
        bump = torch.zeros(n, CELLS, CELLS, device=z.device)
        for tree in range(2):
            present = (u[:, 1 + 3 * tree] > 0.2).float().view(-1, 1, 1)
            cx = (0.5 + u[:, 2 + 3 * tree] * 6 + 3 * tree).clamp(max=7).view(-1, 1, 1)
            cy = (horizon - 1 + u[:, 3 + 3 * tree]).view(-1, 1, 1)
            d2 = (xx[None] - cx) ** 2 + ((yy[None] - cy) / 1.4) ** 2
            bump = torch.maximum(bump, present * F.relu(1 - d2 / 2.1))
        tree = (bump > 0).float()
        trees = (1 + bump)[:, None] * tree[:, None] * self.ripples[None, TREE_UNITS]
        open_or_hidden = 1 - 0.7 * tree  # background units stay weakly on behind trees
        skies = (sky * open_or_hidden)[:, None] * self.ripples[None, SKY_UNITS]
        grasses = ((1 - sky) * open_or_hidden)[:, None] * self.ripples[None, GRASS_UNITS]
        phase = u[:, 9:15].sum(1).view(-1, 1, 1, 1)
        faint = 0.15 * (1 + torch.sin(self.ripples[None, 26:] * 3 + phase))
        gains = torch.exp(z.float() @ self.mixing.t())[:, :, None, None]
        return torch.cat([trees, skies, grasses, faint], 1) * gains


class ToyDraw(nn.Module):
    """(N, 32, 8, 8) units -> (N, 3, 64, 64) images: trees over a sky or grass background."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))  # gives the model a device and an identity
        colours = torch.tensor([PALETTE["sky"], PALETTE["grass"], PALETTE["tree"]])
        self.register_buffer("colours", colours[:, :, None, None])
        yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        self.register_buffer("texture", 0.04 * torch.sin(xx * 1.7) * torch.cos(yy * 1.3))

    def forward(self, units: torch.Tensor) -> torch.Tensor:
        tree = (4 * units[:, TREE_UNITS].mean(1, keepdim=True)).clamp(0, 1)
        sky = F.relu(units[:, SKY_UNITS].mean(1, keepdim=True))
        grass = F.relu(units[:, GRASS_UNITS].mean(1, keepdim=True))
        background = (sky * self.colours[0] + grass * self.colours[1]) / (sky + grass + 1e-3)
        cells = tree * self.colours[2] + (1 - tree) * background
        image = F.interpolate(cells, scale_factor=SCALE, mode="nearest") * self.gain
        return (image + self.texture).clamp(-1, 1)


class ToyScenes(nn.Sequential):
    """The toy generator: children ``layer4`` (the painting layer) and ``output_64x64``."""

    z_dim = 16
    resolution = 64

    def __init__(self) -> None:
        super().__init__()
        self.add_module("layer4", ToyUnits())
        self.add_module("output_64x64", ToyDraw())


class ToySegmenter(nn.Module):
    """object labels by the nearest palette colour: none, sky, tree, grass."""

    concepts = {"object": list(PALETTE)}
    categories = ["object"]

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("palette", torch.tensor(list(PALETTE.values())))
        self.sharpness = nn.Parameter(torch.tensor(20.0))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        distance = ((images[:, None] - self.palette[None, :, :, None, None]) ** 2).sum(2)
        return {"object": -self.sharpness * distance}

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"object": self(images)["object"].argmax(1)}


def toy_generator() -> ToyScenes:
    """Plug-in factory ``app_fixtures:toy_generator``."""
    return ToyScenes().eval()


def toy_segmenter() -> ToySegmenter:
    """Plug-in factory ``app_fixtures:toy_segmenter``."""
    return ToySegmenter().eval()


# ---------------------------------------------------------------------------------------------
# Helpers of the app's tests: the same test runs on the toy and on the shipped
# SceneWorld generator.

SHIPPED_REASON = ("the shipped SceneWorld generator is missing "
                  "(models/sceneworld_generator.safetensors)")


def shipped_generator_missing() -> bool:
    from gandissect.models.registry import shipped_path

    return not shipped_path("generator").exists()


def kinds():
    """``pytest.param`` for each generator the app's tests run on."""
    import pytest

    return [pytest.param("toy", id="toy"),
            pytest.param("shipped", id="shipped", marks=pytest.mark.skipif(
                shipped_generator_missing(), reason=SHIPPED_REASON))]


# What each generator must do. Toy: its edits touch exactly the painted cells (nearest
# upsampling), so removal is complete and nothing else moves. Shipped: GAN Dissection's figures
# (tree: 0.598 of the pixels removed by ablating the top 20 units everywhere) and the
# convolutions after the layer, which spread an edit about one cell. "removed": the tree mask
# painted whole; "painted": the tree painted over with the editor's brush in strokes 4 px apart
# (fewer of its cells; the shipped model's 15 tree units then remove about 0.3 of it on the test
# scene, and one thin stroke alone about 0.2, as the units around the stroke draw the tree back).
EXPECT = {
    "toy": {"brushes": {"tree", "grass", "sky"}, "removed": 0.95, "painted": 0.95,
            "outside_change": 0.5, "drawn": 0.5},
    "shipped": {"brushes": {"tree", "grass", "door", "sky", "cloud", "brick", "dome"},
                "removed": 0.3, "painted": 0.2, "outside_change": 8.0, "drawn": 0.3},
}


def app_config(kind: str, cache, canvas: int = 256):
    """The ``AppConfig`` of the app's tests on ``kind`` (toy: plug-ins; shipped: the defaults)."""
    from app.workspace import AppConfig

    if kind == "toy":
        return AppConfig(generator="app_fixtures:toy_generator",
                         segmenter="app_fixtures:toy_segmenter", samples=200, cache=cache,
                         canvas=canvas, progress=False)
    return AppConfig(samples=1000, cache=cache, canvas=canvas, progress=False)


def tree_label(ws) -> int:
    """The segmenter's code of tree (category object)."""
    return ws.scenes.concept("object/tree").code


def tree_scene(ws, seeds=range(64), least: float = 0.06) -> tuple[int, np.ndarray]:
    """The first scene whose tree covers at least ``least`` of the image, and its ``(H, W)``
    tree mask (segmented in the picture the app shows, 8 bits a channel, as ``edit_effect``
    segments it: a real generator's float image can differ there by a pixel or two)."""
    from app.pictures import pixels
    from gandissect.world.dataset import image_to_tensor

    code = tree_label(ws)
    for seed in seeds:
        shown = image_to_tensor(pixels(ws.scenes.render(ws.scenes.latent(seed))))[None]
        labels = ws.scenes.segment(shown)["object"][0]
        tree = (labels == code).numpy()
        if tree.mean() >= least:
            return seed, tree
    raise AssertionError(f"no scene among {seeds} shows enough tree")


def rgba_layer(mask: np.ndarray, scale: int) -> np.ndarray:
    """A painted editor layer (H * scale, W * scale, 4) with alpha where ``mask`` is set."""
    big = np.repeat(np.repeat(mask, scale, 0), scale, 1)
    layer = np.zeros((*big.shape, 4), np.uint8)
    layer[big] = (255, 0, 255, 255)
    return layer


def edit_effect(ws, before: np.ndarray, after: np.ndarray, painted: np.ndarray,
                margin_cells: int = 1) -> dict:
    """How an edit changed a scene, from its ``(H, W, 3)`` uint8 pictures ``before`` and
    ``after`` and the ``(H, W)`` painted mask at image resolution.

    ``tree_before`` / ``tree_after``: segmented tree pixels under the paint; ``outside_change``:
    the mean absolute pixel change (0-255) farther than ``margin_cells`` layer cells from it.
    """
    from gandissect.world.dataset import image_to_tensor

    code = tree_label(ws)
    labels = [ws.scenes.segment(image_to_tensor(p)[None])["object"][0].numpy()
              for p in (before, after)]
    cell = before.shape[0] // ws.scenes.cells[0]
    near = torch.from_numpy(painted.astype(np.float32))[None, None]
    reach = 2 * margin_cells * cell + 1
    near = F.max_pool2d(near, reach, stride=1, padding=reach // 2)[0, 0].numpy() > 0
    change = np.abs(before.astype(np.int16) - after.astype(np.int16)).mean(-1)
    return {"tree_before": int((labels[0][painted] == code).sum()),
            "tree_after": int((labels[1][painted] == code).sum()),
            "outside_change": float(change[~near].mean()) if (~near).any() else 0.0}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
