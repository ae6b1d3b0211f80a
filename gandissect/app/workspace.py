"""What every session of the app shares: the models, the dissection, the caches.

``Workspace.open(AppConfig(...))`` loads the generator, the segmenter and the dissection (read,
shipped, cached, or computed once with a progress bar) and prepares the classifiers. A problem
with the generator side (the shipped generator missing, a dissection folder made for
another generator) does not stop the app: the page says what is wrong and how to fix it, and
the Classifiers tab still works.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from gandissect.app.explain import ClassifierModels
from gandissect.app.scenes import SceneModels
from gandissect.dissect.sources import open_dissection
from gandissect.errors import UserError
from gandissect.models.registry import shipped_path
from gandissect.models.specs import configure_generator, resolve_generator, resolve_segmenter
from gandissect.paths import app_cache_dir

__all__ = ["AppConfig", "Workspace"]


@dataclass
class AppConfig:
    """How the app is started (the ``gandissect app`` options)."""

    generator: str = "sceneworld"
    segmenter: str = "sceneworld"
    segmenter_weights: str | None = None  # for a torchvision:ARCH or plug-in segmenter
    classifiers: list[str] = field(default_factory=lambda: ["sceneworld"])
    classifier_weights: dict[str, str] = field(default_factory=dict)  # spec -> weights file
    dataset: str = "sceneworld"  # the Classifiers tab's probe set (a --dataset spelling)
    layer: str = "layer4"
    dissection: str | None = None  # a `gandissect dissect` folder; None: shipped or computed
    samples: int = 1000  # latents dissected when the app computes the dissection itself
    seed: int = 1  # their latent seed
    truncation: float | None = None
    latent: str | None = None
    class_index: int | None = None
    cache: Path = field(default_factory=app_cache_dir)  # the dissection, causal weights, log
    device: str = "cpu"
    canvas: int = 512  # about the painting canvas's side in pixels (a whole multiple of the image)
    gallery: int = 8  # scenes shown in the gallery
    progress: bool = True  # tqdm bars while computing at start-up
    invert_steps: dict[str, int] | None = None  # steps per inversion stage; None: the library's


def _missing_shipped_generator(spec: str) -> bool:
    return spec == "sceneworld" and not shipped_path("generator").exists()


MISSING_GENERATOR = (
    "The shipped SceneWorld generator is missing: `models/sceneworld_generator.safetensors` is "
    "not in this install (reinstall gandissect from a full checkout: `pip install -e .`), or "
    "start the app with a generator of your own, e.g. "
    "`gandissect app --generator proggan:church.pth` (or `stylegan2:PATH`, "
    "`torchscript:PATH`, `package.module:factory`). The Classifiers tab works without one.")


class Workspace:
    """The shared models and caches; ``scenes`` is None when the generator side could not be
    opened, and ``problem`` then says why (in words a user can act on)."""

    def __init__(self, config: AppConfig, scenes: SceneModels | None, problem: str | None,
                 classifiers: ClassifierModels) -> None:
        self.config, self.scenes, self.problem = config, scenes, problem
        self.classifiers = classifiers
        self._downloads = tempfile.TemporaryDirectory(prefix="gandissect-app-")

    @property
    def scale(self) -> int:
        """Screen pixels per image pixel on the painting canvas."""
        return max(1, round(self.config.canvas / self.scenes.resolution)) if self.scenes else 1

    @property
    def downloads(self) -> Path:
        """A folder for files offered for download (removed when the workspace goes)."""
        return Path(self._downloads.name)

    @classmethod
    def open(cls, config: AppConfig, generator: nn.Module | None = None,
             segmenter: object | None = None) -> Workspace:
        """Load what ``config`` names (``generator`` / ``segmenter`` objects, when given,
        instead of their spellings)."""
        classifiers = ClassifierModels(config.classifiers, config.device,
                                       config.classifier_weights, config.dataset)
        try:
            scenes = cls._open_scenes(config, generator, segmenter)
        except UserError as error:
            return cls(config, None, str(error), classifiers)
        return cls(config, scenes, None, classifiers)

    @staticmethod
    def _open_scenes(config: AppConfig, generator: nn.Module | None,
                     segmenter: object | None) -> SceneModels:
        from gandissect.dissect import check_layers

        if generator is None:
            if _missing_shipped_generator(config.generator):
                raise UserError(MISSING_GENERATOR)
            generator = configure_generator(resolve_generator(config.generator, config.device),
                                            config.truncation, config.latent, config.class_index)
        if segmenter is None:
            segmenter = resolve_segmenter(config.segmenter, config.device,
                                          config.segmenter_weights)
        check_layers(generator, [config.layer])
        if config.samples < 1:
            raise UserError("--samples must be at least 1")
        dissection, source, folder = open_dissection(
            generator, segmenter, config.layer, folder=config.dissection,
            shipped=config.generator == "sceneworld", samples=config.samples, seed=config.seed,
            cache_dir=Path(config.cache), progress=config.progress)
        return SceneModels(generator, segmenter, dissection, config.layer, source, config.cache,
                           dissection_dir=folder)

    def close(self) -> None:
        """Remove the download folder."""
        self._downloads.cleanup()
