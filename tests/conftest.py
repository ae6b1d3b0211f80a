"""What the tests share: small models with known answers, the files users bring written in
their published layouts (damaged on purpose where a test says so), and the fixtures.

- The app's toy world (``ToyScenes``, ``ToySegmenter``): 64 px scenes, sky above a horizon, grass
  below it and up to two trees on it; its painting layer ``layer4`` has 32 units at 8x8 (units
  0-9 draw trees, 10-17 sky and 18-25 grass, strong on the open cells of their region and weak
  under trees, so that removing a tree reveals what is behind it; 26-31 are faint patterns that
  draw nothing). The output layer paints each layer cell as an 8x8 block (nearest upsampling),
  so an edit under a stroke changes exactly the cells it touches. The segmenter labels pixels
  by their nearest palette colour; its logits are differentiable (for the ACE selection).
- Dissection fakes (``PlantedGenerator`` / ``PlantedSegmenter`` with planted answers,
  ``TinyGenerator``, ``ChannelSegmenter``).
- Models whose activations go bad (``poisoned_generator``, ``nan_classifier``, ...) and a
  one-layer plug-in classifier (``TinyClassifier``).
- Checkpoints in published layouts: ProGAN, rosinality's StyleGAN2 (``rosinality_state``),
  torchvision, this project's safetensors; pickles that would run code (``Payload``); ways to
  damage a file (``DAMAGES``).
- Layer-hook helpers (``Tripwire``, ``hook_count``).

Plug-in spellings of the factories, with ``tests/`` on ``PYTHONPATH`` (as pytest puts it):
``conftest:toy_generator``, ``conftest:toy_segmenter``, ``conftest:tiny_classifier``,
``conftest:nan_generator``, ``conftest:tuple_generator``, ``conftest:nan_classifier``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from gandissect.models.classifier import SceneClassifier
from gandissect.models.proggan import ProGANGenerator
from gandissect.models.registry import save_weights
from gandissect.models.segmenter import Segmenter
from gandissect.models.specs import resolve_classifier, resolve_generator, resolve_segmenter


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The suite runs torch on one thread (restored after): results are then the same from run
    to run, and the app's server threads do not compete with torch's for the two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------- layer hooks
class Tripwire(nn.Conv2d):
    """A convolution that raises inside the forward once armed (for the cleanup tests)."""

    armed = False

    def forward(self, x):
        if self.armed:
            raise RuntimeError("tripwire")
        return super().forward(x)


def hook_count(model: nn.Module) -> int:
    """Hooks of every kind registered on ``model`` and its submodules."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


# ---------------------------------------------------------------------- the app's toy world
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

    def probabilities(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"object": self(images)["object"].softmax(1)}

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"object": self(images)["object"].argmax(1)}


class LabelsOnly:
    """A plug-in segmenter with the labelling interface only (``segment``, no probabilities)."""

    concepts = ToySegmenter.concepts
    categories = ToySegmenter.categories

    def __init__(self) -> None:
        self.model = ToySegmenter().eval()

    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.segment(images)


def labels_only_segmenter() -> LabelsOnly:
    """Plug-in factory ``conftest:labels_only_segmenter``."""
    return LabelsOnly()


def toy_generator() -> ToyScenes:
    """Plug-in factory ``conftest:toy_generator``."""
    return ToyScenes().eval()


def toy_segmenter() -> ToySegmenter:
    """Plug-in factory ``conftest:toy_segmenter``."""
    return ToySegmenter().eval()


# ------------------------------------------------- helpers of the app's tests (toy and shipped)
# The same test runs on the toy and on the shipped SceneWorld generator.

SHIPPED_REASON = ("the shipped SceneWorld generator is missing "
                  "(models/sceneworld_generator.safetensors)")


def shipped_generator_missing() -> bool:
    from gandissect.models.registry import shipped_path

    return not shipped_path("generator").exists()


def kinds():
    """``pytest.param`` for each generator the app's tests run on."""
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
    from gandissect.app.workspace import AppConfig

    if kind == "toy":
        return AppConfig(generator="conftest:toy_generator",
                         segmenter="conftest:toy_segmenter", samples=200, cache=cache,
                         canvas=canvas, progress=False)
    return AppConfig(samples=1000, cache=cache, canvas=canvas, progress=False)


def tree_label(ws) -> int:
    """The segmenter's code of tree (category object)."""
    return ws.scenes.concept("object/tree").code


def tree_scene(ws, seeds=range(64), least: float = 0.06) -> tuple[int, np.ndarray]:
    """The first scene whose tree covers at least ``least`` of the image, and its ``(H, W)``
    tree mask (segmented in the picture the app shows, 8 bits a channel, as ``edit_effect``
    segments it: a real generator's float image can differ there by a pixel or two)."""
    from gandissect.app.pictures import pixels
    from gandissect.world.dataset import image_to_tensor

    code = tree_label(ws)
    for seed in seeds:
        shown = image_to_tensor(pixels(ws.scenes.render(ws.scenes.latent(seed))))[None]
        labels = ws.scenes.segment(shown)["object"][0]
        tree = (labels == code).numpy()
        if tree.mean() >= least:
            return seed, tree
    raise AssertionError(f"no scene among {seeds} shows enough tree")



def canvas_pictures(html: str) -> dict[str, np.ndarray]:
    """The pictures a canvas reply shows, ``(H, W, 3)`` uint8 at the generator's resolution:
    ``after`` (the edited scene) and ``before`` (the original, edited cells tinted); and its
    ``applied`` stroke ids and whether it ``clear``s the paint."""
    import base64
    import io
    import re

    from PIL import Image

    def decoded(uri: str) -> np.ndarray:
        data = base64.b64decode(uri.partition(",")[2])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    uris = dict(re.findall(r'class="gd-(after|before)"[^>]*><img alt="[^"]*" src="([^"]+)"',
                           html))
    applied = re.search(r'data-applied="([^"]*)"', html).group(1)
    return {"after": decoded(uris["after"]), "before": decoded(uris["before"]),
            "applied": [int(i) for i in applied.split(",") if i],
            "clear": 'data-clear="all"' in html}


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


# ---------------------------------------------------------------------- dissection fakes
def _rect(x0, y0, w, h, size=8):
    cells = torch.arange(size)
    cols = (cells >= x0[:, None]) & (cells < (x0 + w)[:, None])
    rows = (cells >= y0[:, None]) & (cells < (y0 + h)[:, None])
    return rows[:, :, None] & cols[:, None, :]  # (N, 8, 8)


class PlantedGenerator(nn.Module):
    """Draws a rectangle of concept A (left half) and one of B (right half) on an 8x8 grid.

    Layer ``units`` (8x8): unit 0 is +1 on A's cells and -1 on the ring around them (a
    centre-surround detector of A), unit 1 the same for B, unit 2 noise on the bottom row
    (never covered by a rectangle). Layer ``mirror`` is ``units`` flipped left-right (other
    numbers, for cache tests). Images are 32x32: channel 0 = A, 1 = B, 2 = A's top row when
    z[9] > 0 (a "part" present in some images only).
    """

    z_dim = 10
    resolution = 32

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))  # gives the module a device and an identity
        self.units = nn.Identity()
        self.mirror = nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = torch.special.ndtr(z)
        step = lambda v, k: (v * k).long().clamp(max=k - 1)  # noqa: E731
        a = _rect(step(u[:, 0], 2), step(u[:, 2], 5), 2 + step(u[:, 1], 2), 2 + step(u[:, 3], 2))
        b = _rect(4 + step(u[:, 4], 2), step(u[:, 6], 5), 2 + step(u[:, 5], 2),
                  2 + step(u[:, 7], 2))
        maps = []
        for rect in (a, b):
            inside = rect.float()[:, None]
            ring = (F.max_pool2d(inside, 3, 1, 1) > 0).float() - inside
            maps.append(inside - ring)
        noise = torch.zeros(z.shape[0], 1, 8, 8)
        noise[:, 0, 7] = torch.sin(z[:, 8:9] * 3 + torch.arange(8) * 1.7 + z[:, 9:10])
        units = self.units(torch.cat([*maps, noise], 1) * self.gain)
        self.mirror(units.flip(-1))
        top_row = a & (a.cumsum(1) == 1)
        part = top_row & (z[:, 9] > 0)[:, None, None]
        planes = torch.stack([a, b, part], 1).float() * 2 - 1
        return planes.repeat_interleave(4, 2).repeat_interleave(4, 3)


class PlantedSegmenter:
    """Reads the rectangles back from the images: object A / B, and part P."""

    concepts = {"object": ["none", "A", "B"], "part": ["none", "P"]}
    categories = ["object", "part"]

    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        objects = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.long)
        objects[images[:, 0] > 0] = 1
        objects[images[:, 1] > 0] = 2
        return {"object": objects, "part": (images[:, 2] > 0).long()}


class TinyGenerator(nn.Module):
    """A random small conv generator: z (8) -> 4x4 -> ``units`` (6 units, 8x8) -> 32x32."""

    z_dim = 8

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():  # the same weights every time, the global stream untouched
            torch.manual_seed(3)
            self.fc = nn.Linear(8, 4 * 4 * 4)
            self.units = nn.Sequential(nn.Upsample(scale_factor=2),
                                       nn.Conv2d(4, 6, 3, padding=1), nn.LeakyReLU(0.2))
            self.head = nn.Sequential(nn.Upsample(scale_factor=4),
                                      nn.Conv2d(6, 3, 3, padding=1), nn.Tanh())

    def forward(self, z):
        return self.head(self.units(self.fc(z).view(-1, 4, 4, 4)))


class ChannelSegmenter:
    """Labels from pixel values: object red/green by channel; part "bright" only in images
    whose mean blue is positive (so the part category is absent from some images)."""

    concepts = {"object": ["none", "red", "green"], "part": ["none", "bright"]}
    categories = ["object", "part"]

    def segment(self, images):
        objects = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.long)
        objects[images[:, 1] > images[:, 1].median()] = 2
        objects[images[:, 0] > images[:, 0].quantile(0.7)] = 1
        blue = images[:, 2]
        bright = (blue > blue.mean((1, 2), keepdim=True)) & (blue.mean((1, 2)) > blue.mean())[
            :, None, None]
        return {"object": objects, "part": bright.long()}


# ------------------------------------------------------------- models whose layers go bad
NAN, INF = float("nan"), float("inf")


class Poison(nn.Module):
    """Writes ``value`` into unit 0 of its input: a layer whose activations go bad."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, 0] = self.value
        return x


class Repair(nn.Module):
    """Makes the poisoned activations finite again, so the images pass the generator check."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)


def poisoned_generator(value: float = NAN) -> ToyScenes:
    """The toy generator with ``layer4`` = (units, Poison, Repair): layer ``layer4.1`` outputs
    ``value`` in unit 0, its images stay finite."""
    generator = ToyScenes().eval()
    generator.layer4 = nn.Sequential(generator.layer4, Poison(value), Repair())
    return generator


def nan_generator() -> ToyScenes:
    """Plug-in factory ``conftest:nan_generator``."""
    return poisoned_generator(NAN)


class Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class First(nn.Module):
    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return pair[0]


class Flat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class Unflat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(-1, UNITS, 8, 8)


def tuple_generator() -> ToyScenes:
    """Plug-in factory ``conftest:tuple_generator``: layer ``layer4.1`` returns a
    tuple; ``layer4.2`` unpacks it again."""
    generator = ToyScenes().eval()
    generator.layer4 = nn.Sequential(generator.layer4, Pair(), First())
    return generator


def flat_generator() -> ToyScenes:
    """The toy whose layer ``layer4.1`` outputs ``(N, 2048)`` vectors, not feature maps."""
    generator = ToyScenes().eval()
    generator.layer4 = nn.Sequential(generator.layer4, Flat(), Unflat())
    return generator


def nan_classifier() -> TinyClassifier:
    """Plug-in factory ``conftest:nan_classifier``: layer ``layer4`` outputs NaN."""
    classifier = TinyClassifier().eval()
    classifier.layer4 = nn.Sequential(classifier.layer4, Poison(NAN))
    return classifier


# ---------------------------------------------------------- checkpoints in published layouts
ARCH = "squeezenet1_1"  # the smallest torchvision classifier: fast to build and to save


class TinyClassifier(nn.Module):
    """A plug-in classifier (``conftest:tiny_classifier``): one conv layer
    ``layer4`` (4 units) and a linear head over 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.layer4(images))).flatten(1))


def tiny_classifier() -> TinyClassifier:
    """Plug-in factory ``conftest:tiny_classifier``."""
    return TinyClassifier().eval()


def seeded(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with torch's global generator seeded 0 inside (restored after), in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build().eval()


def proggan_state() -> dict[str, torch.Tensor]:
    """A tiny ProGAN (32 px, z_dim 16) in the GAN Dissection layout."""
    return seeded(lambda: ProGANGenerator(16, [8, 8, 8, 4])).state_dict()


def torchvision_state() -> dict[str, torch.Tensor]:
    """A torchvision ``ARCH`` with 5 classes, as its state dict."""
    import torchvision

    return seeded(lambda: torchvision.models.get_model(ARCH, weights=None,
                                                       num_classes=5)).state_dict()


def save_state(state: dict[str, torch.Tensor], path: Path) -> Path:
    """``state`` as ``path``: safetensors by suffix, else ``torch.save``."""
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


PROJECT_MODELS = {  # FILE.safetensors written by this project, config in the metadata
    "generator": (lambda: ProGANGenerator(16, [8, 8, 8, 4]), resolve_generator),
    "segmenter": (lambda: Segmenter((4, 4, 4, 4)), resolve_segmenter),
    "classifier": (lambda: SceneClassifier((4, 4, 4, 4)), resolve_classifier),
}


def write_project_file(kind: str, path: Path) -> Path:
    """A ``FILE.safetensors`` of this project's ``kind`` of model (its config in the metadata)."""
    model = seeded(PROJECT_MODELS[kind][0])
    save_weights(model, path, model.config())
    return path


STYLE_DIM, N_MLP, CHANNELS = 16, 2, [8, 8, 6, 4]  # 4x4, 8x8, 16x16, 32x32
LR_MUL = 0.01


def fir_kernel(gain: float) -> torch.Tensor:
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = taps[:, None] * taps[None, :]
    return kernel / kernel.sum() * gain


def rosinality_state(style_dim=STYLE_DIM, n_mlp=N_MLP, channels=CHANNELS, seed=0) -> dict:
    """Random weights under the exact key names and shapes of the format's ``g_ema``."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    def modulated(prefix, c_in, c_out, k):
        return {f"{prefix}.conv.weight": randn(1, c_out, c_in, k, k),
                f"{prefix}.conv.modulation.weight": randn(c_in, style_dim),
                f"{prefix}.conv.modulation.bias": 1 + randn(c_in, scale=0.1)}

    def styled(prefix, c_in, c_out, upsample):
        state = modulated(prefix, c_in, c_out, 3)
        if upsample:
            state[f"{prefix}.conv.blur.kernel"] = fir_kernel(4.0)
        state[f"{prefix}.noise.weight"] = randn(1, scale=0.3)
        state[f"{prefix}.activate.bias"] = randn(c_out, scale=0.1)
        return state

    def to_rgb(prefix, c_in, upsample):
        state = {f"{prefix}.upsample.kernel": fir_kernel(4.0)} if upsample else {}
        state.update(modulated(prefix, c_in, 3, 1))
        state[f"{prefix}.bias"] = randn(1, 3, 1, 1, scale=0.1)
        return state

    state = {}
    for i in range(1, n_mlp + 1):
        state[f"style.{i}.weight"] = randn(style_dim, style_dim) / LR_MUL
        state[f"style.{i}.bias"] = randn(style_dim, scale=10.0)
    state["input.input"] = randn(1, channels[0], 4, 4)
    state.update(styled("conv1", channels[0], channels[0], False))
    state.update(to_rgb("to_rgb1", channels[0], False))
    for j, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        state.update(styled(f"convs.{2 * j}", c_in, c_out, True))
        state.update(styled(f"convs.{2 * j + 1}", c_out, c_out, False))
    for j, c in enumerate(channels[1:]):
        state.update(to_rgb(f"to_rgbs.{j}", c, True))
    for i in range(2 * len(channels) - 1):
        size = 2 ** ((i + 5) // 2)
        state[f"noises.noise_{i}"] = randn(1, 1, size, size)
    return state


# ------------------------------------------------------------- pickles that would run code
class Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


class TouchPayload:
    """Unpickling this creates ``marker`` through ``pathlib`` (another global than ``exec``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return Path.touch, (self.marker,)


def zip_pickle(path: Path, marker: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": Payload(marker)}, path)


def legacy_pickle(path: Path, marker: Path) -> None:
    torch.save({"w": torch.zeros(2), "hook": TouchPayload(marker)}, path,
               _use_new_zipfile_serialization=False)


# ------------------------------------------------------------------------ damaged files
DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "truncated to half": lambda data: data[:len(data) // 2],
    "truncated to 10 bytes": lambda data: data[:10],
    "empty": lambda data: b"",
    "header zeroed": lambda data: bytes(64) + data[64:],
    "a web page instead": lambda data: b"<html><body>404 Not Found</body></html>\n",
    "random bytes": lambda data: torch.randint(0, 256, (len(data),), dtype=torch.uint8,
                                               generator=torch.Generator().manual_seed(0)
                                               ).numpy().tobytes(),
}


# --------------------------------------------------------------------------------- images
def rgb_pixels(seed: int = 0) -> np.ndarray:
    """A (40, 60, 3) uint8 picture of random colours."""
    return np.random.default_rng(seed).integers(0, 256, (40, 60, 3), dtype=np.uint8)


# ------------------------------------------------------------------ a new user's first commands
_OPTION_FLAGS = {"truncation": "--truncation", "latent": "--latent", "class_index": "--class"}


def end_to_end(generator: str, segmenter: str, layer: str, folder: Path,
               segmenter_weights: Path | None = None, **options) -> dict:
    """What a new user runs first on a generator and segmenter of theirs, each step asserted to
    succeed: ``layers``, ``dissect`` (16 samples), ``edit`` (ablation, and insertion from the
    dissection), ``ace`` on the concept the segmenter sees most, and the app's Paint tab (a
    scene, one remove stroke over the whole picture). ``options``: the generator's
    ``truncation``, ``latent`` or ``class_index``; ``segmenter_weights`` for a
    ``torchvision:`` segmenter. Returns the dissection's JSON."""
    import json

    from gandissect.app import paint
    from gandissect.app.canvas import paint_value
    from gandissect.app.session import Session
    from gandissect.app.workspace import AppConfig, Workspace
    from gandissect.cli import main
    from gandissect.dissect.latents import sample_latents
    from gandissect.models.specs import configure_generator, resolve_generator, resolve_segmenter

    flags = [text for key, value in options.items() for text in (_OPTION_FLAGS[key], str(value))]
    models = ["--generator", generator, *flags]
    segmenting = ["--segmenter", segmenter, *(["--segmenter-weights", str(segmenter_weights)]
                                              if segmenter_weights else [])]
    assert main(["layers", generator, "--kind", "generator",
                 *(text for key, value in options.items() if key != "truncation"
                   for text in (_OPTION_FLAGS[key], str(value)))]) == 0
    out = folder / "dissection"
    assert main(["dissect", *models, *segmenting, "--layer", layer, "--samples",
                 "16", "--batch", "8", "--top-k", "2", "--images", "1", "--no-html", "--out",
                 str(out), "--device", "cpu"]) == 0
    data = json.loads((out / "dissect.json").read_text())
    assert main(["edit", *models, "--layer", layer, "--units", "0,1", "--samples", "2",
                 "--out", str(folder / "edit")]) == 0
    assert main(["edit", *models, "--layer", layer, "--units", "0", "--mode", "insert",
                 "--dissection", str(out), "--samples", "2", "--out", str(folder / "insert")]) == 0
    # ace on the concept the segmenter finds most in a few samples
    model = configure_generator(resolve_generator(generator), **options)
    seg = resolve_segmenter(segmenter, weights=segmenter_weights)
    with torch.no_grad():
        found = seg.probabilities(model(sample_latents(model, 5, range(4))))
    category = next(iter(found))
    counts = torch.bincount(found[category].argmax(1).flatten(),
                            minlength=len(seg.concepts[category]))
    counts[0] = 0
    concept = seg.concepts[category][int(counts.argmax())]
    assert main(["ace", *models, *segmenting, "--layer", layer, "--concept",
                 concept, "--category", category, "--dissection", str(out), "--units", "2",
                 "--samples", "4", "--selection-samples", "4", "--epochs", "1", "--no-refine",
                 "--cache", str(folder / "cache"), "--json", "--quiet"]) == 0
    workspace = Workspace.open(AppConfig(
        generator=generator, segmenter=segmenter, layer=layer, dissection=str(out), samples=16,
        segmenter_weights=None if segmenter_weights is None else str(segmenter_weights),
        cache=folder / "app", canvas=128, progress=False, **options))
    try:
        assert workspace.problem is None, workspace.problem
        session = Session()
        paint.choose_scene(workspace, session, 0)
        brush = f"{category}/{concept}"  # (a random model's 16 samples may label no unit)
        size = workspace.scenes.resolution
        view = paint.apply_brush(workspace, session,
                                 paint_value(np.ones((size, size), bool), workspace.scale),
                                 brush, "remove", 1.0, 2)
        assert len(session.strokes) == 1 and "1 stroke" in view.status
    finally:
        workspace.close()
    return data
