"""The classifier side of the app: Network Dissection, attribution and feature visualisation,
as calls into ``gandissect.netdissect``, ``gandissect.attribute`` and
``gandissect.visualize``.

Classifiers are the ones named on the command line (the page never loads a model by a name
typed into it), and so is the probe set of Network Dissection (held-out SceneWorld scenes, or
a ``--dataset`` such as ``masks:DIR``). Each classifier is loaded once, with its declared input
mapping put in front as a forward pre-hook, so that every tool hands it images in [-1, 1], the
probe's range, and attributions stay with respect to those images.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gandissect.attribute.evaluate import METHODS, pixel_maps
from gandissect.classifier_domain import check_classifier_domain
from gandissect.dissect import Dissection, LayerDissection
from gandissect.errors import UserError
from gandissect.hooks import layer_shapes
from gandissect.models.inputs import preprocess_inside
from gandissect.models.specs import resolve_classifier_and_preprocess
from gandissect.netdissect import ProbeSet, SceneWorldProbe, netdissect, probe_samples
from gandissect.netdissect.formulas import label_formulas
from gandissect.report.images import top_image_strips
from gandissect.spatial import map_layers
from gandissect.torchutil import model_device
from gandissect.units_relevance import UnitContributions, unit_contributions
from gandissect.visualize import channel, class_logit, sceneworld_top_images, visualize

__all__ = ["Classifier", "ClassifierModels", "METHOD_NAMES", "MAX_SCENE", "PROBE_SEED",
           "SLOW_METHODS", "Explanation", "dissection_key"]

PROBE_SEED = 1001  # SceneWorld's held-out evaluation world (never a training seed)
METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam_plus_plus": "Grad-CAM++", "cam": "CAM",
                "scorecam": "Score-CAM", "saliency": "Saliency",
                "input_x_gradient": "Input x gradient", "smoothgrad": "SmoothGrad",
                "integrated_gradients": "Integrated gradients",
                "guided_backprop": "Guided backprop", "deconvolution": "Deconvolution",
                "occlusion": "Occlusion", "lrp": "LRP", "deeplift": "DeepLIFT",
                "gradient_shap": "GradientSHAP", "feature_ablation": "Feature ablation",
                "kernel_shap": "Kernel SHAP", "lime": "LIME (superpixels)"}
# The methods that take seconds per image (one forward per perturbed image): a bar in the page
SLOW_METHODS = ("occlusion", "feature_ablation", "kernel_shap", "lime")
MAX_SCENE = 2**31 - 1
_KEPT_RESULTS = 8  # Network Dissection results kept in memory


@dataclass
class Classifier:
    """A loaded classifier: its spelling, the model (taking [-1, 1] images), input size, class
    names, the layers with (N, units, h, w) maps (``gandissect.spatial.map_layers``: token
    sequences read on the patch grid) and the layer giving the class scores."""

    spec: str
    model: nn.Module
    input_size: int
    class_names: list[str]
    layers: dict[str, tuple[int, ...]]  # name -> (units, h, w)
    logits: str | None  # the last layer whose output is the class scores


@dataclass
class Explanation:
    """An attribution: the ``(H, W)`` pixel map, whether it has negative values, the class
    explained, every class's probability, and the warning line when the image looks unlike
    the classifier's training images (``gandissect.classifier_domain``; else None)."""

    pixel_map: torch.Tensor
    signed: bool
    target: int
    probabilities: dict[str, float]
    domain_warning: str | None = None


def _describe(spec: str, model: nn.Module) -> Classifier:
    size = int(getattr(model, "input_size", None) or 64)
    probe = torch.zeros(1, 3, size, size, device=model_device(model))
    shapes = layer_shapes(model, probe)
    with torch.no_grad():
        classes = model(probe).shape[-1]
    layers = map_layers(model, probe)  # token sequences too, as maps on the patch grid
    logits = [name for name, shape in shapes.items() if shape == (1, classes)]
    names = getattr(model, "scene_names", None) or getattr(model, "class_names", None)
    if not names or len(names) != classes:
        names = [f"class {i}" for i in range(classes)]
    return Classifier(spec, model, size, list(names), layers, logits[-1] if logits else None)


def dissection_key(spec: str, layer: str, n: int, formulas: int = 0) -> tuple:
    """The key of a kept Network Dissection: ``(spec, layer, n)``, and the formula length
    after them when units are labelled by formulas."""
    return (spec, layer, n, formulas) if formulas else (spec, layer, n)


class ClassifierModels:
    """The classifiers the app was started with, loaded on first use, and the Network
    Dissection results computed so far (the last few, shared by all sessions)."""

    def __init__(self, specs: Sequence[str], device: str = "cpu",
                 weights: dict[str, str] | None = None, dataset: str = "sceneworld") -> None:
        if not specs:
            raise UserError("name at least one classifier")
        self.specs = list(dict.fromkeys(specs))
        self.weights = dict(weights or {})  # spec -> state dict file
        self.device = device
        self.dataset = dataset  # the probe set, as ``gandissect netdissect --dataset`` spells it
        self._probes: dict[tuple[int, int], ProbeSet] = {}
        self.lock = threading.RLock()
        self._loaded: dict[str, Classifier] = {}
        self._results: OrderedDict[tuple, Dissection] = OrderedDict()

    def get(self, spec: str) -> Classifier:
        """The classifier ``spec`` (one of ``specs``), loaded once."""
        if spec not in self.specs:
            raise UserError(f"unknown classifier {spec!r}; this app serves "
                            f"{', '.join(self.specs)} (add others with --classifier)")
        with self.lock:
            if spec not in self._loaded:
                model = preprocess_inside(*resolve_classifier_and_preprocess(
                    spec, self.weights.get(spec), device=self.device))
                self._loaded[spec] = _describe(spec, model.eval())
            return self._loaded[spec]

    def check_layer(self, classifier: Classifier, layer: str) -> None:
        if layer not in classifier.layers:
            raise UserError(f"{classifier.spec} has no convolutional layer or token map "
                            f"{layer!r}; choose one of {', '.join(classifier.layers)}")

    # ------------------------------------------------------------------ Network Dissection

    def probe(self, classifier: Classifier, n: int) -> ProbeSet:
        """The first ``n`` images of the probe set at the classifier's input size (SceneWorld:
        the held-out world's scenes)."""
        if self.dataset == "sceneworld":
            return SceneWorldProbe(PROBE_SEED, n, classifier.input_size)
        key = (classifier.input_size, n)
        if key not in self._probes:
            from gandissect.netdissect.datasets import resolve_probe

            self._probes[key] = resolve_probe(self.dataset, n, PROBE_SEED, None,
                                              device=self.device,
                                              input_size=classifier.input_size)
        return self._probes[key]

    def dissect(self, spec: str, layer: str, n: int, progress: bool = True,
                formulas: int = 0) -> Dissection:
        """Network Dissection of ``layer`` on the first ``n`` probe images (kept, so a second
        request is immediate); with ``formulas``, every unit also labelled by a formula of up
        to that many concepts (``gandissect.netdissect.formulas``), kept under its own key
        (``dissection_key``)."""
        classifier = self.get(spec)
        self.check_layer(classifier, layer)
        key = dissection_key(spec, layer, n, formulas)
        with self.lock:
            if key not in self._results and formulas:
                plain = copy.deepcopy(self.dissect(spec, layer, n, progress))
                self._results[key] = label_formulas(plain, classifier.model,
                                                    self.probe(classifier, n), formulas,
                                                    progress=progress)
            elif key not in self._results:
                self._results[key] = netdissect(classifier.model, [layer],
                                                self.probe(classifier, n), progress=progress)
                while len(self._results) > _KEPT_RESULTS:
                    self._results.popitem(last=False)
            self._results.move_to_end(key)
            return self._results[key]

    def result(self, key: tuple) -> Dissection | None:
        """A Network Dissection computed before (``dissection_key``), if still kept."""
        return self._results.get(key)

    def top_images(self, spec: str, layer: LayerDissection, n: int, unit: int,
                   count: int = 6) -> np.ndarray:
        """Unit ``unit``'s top ``count`` probe images side by side, its mask outlined."""
        classifier = self.get(spec)
        only = LayerDissection(layer.layer, layer.shape, [layer.units[unit]])
        with self.lock:
            samples = probe_samples(classifier.model, self.probe(classifier, n))
            return top_image_strips(samples, only, count)[unit]

    # ------------------------------------------------------------------ attribution

    def scene(self, spec: str, index: int) -> torch.Tensor:
        """Held-out SceneWorld scene ``index`` as a ``(3, H, W)`` image in [-1, 1] at the
        classifier's input size."""
        from gandissect.world import render_batch
        from gandissect.world.dataset import image_to_tensor

        size = self.get(spec).input_size
        return image_to_tensor(render_batch(PROBE_SEED, [index], size)["image"][0])

    def explain(self, spec: str, image: torch.Tensor, method: str, layer: str,
                target: int | None) -> Explanation:
        """Attribution of class ``target`` (None: the predicted class) for one ``(3, H, W)``
        image in [-1, 1] by ``method`` (a ``METHODS`` name; CAM-family maps at ``layer``)."""
        if method not in METHODS:
            raise UserError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        classifier = self.get(spec)
        spec_ = METHODS[method]
        if spec_.layer:
            self.check_layer(classifier, layer)
        x = image[None].to(model_device(classifier.model))
        with self.lock:
            with torch.no_grad():
                probabilities = torch.softmax(classifier.model(x)[0], 0).cpu()
            chosen = int(probabilities.argmax()) if target is None else int(target)
            if not 0 <= chosen < len(classifier.class_names):
                raise UserError(f"class {chosen} is out of range (0 .. "
                                f"{len(classifier.class_names) - 1})")
            options = {k: v for k, v in spec_.options.items() if k != "return_error"}
            if method in SLOW_METHODS:
                options["show_progress"] = True
            raw = spec_.build(classifier.model, layer).attribute(x, target=chosen, **options)
            domain = check_classifier_domain(classifier.model, x, classifier.spec)
        pixel_map = pixel_maps(raw.detach().cpu(), tuple(image.shape[-2:]), spec_.pixel_map)[0]
        return Explanation(pixel_map, bool((pixel_map < 0).any()), chosen,
                           dict(zip(classifier.class_names, probabilities.tolist())),
                           domain.warning(0))

    def units(self, spec: str, image: torch.Tensor, layer: str, target: int | None,
              top: int = 8) -> tuple[UnitContributions, list[int], torch.Tensor]:
        """The class score of one ``(3, H, W)`` image decomposed over ``layer``'s units
        (``gandissect.units_relevance``): the contributions, the ``top`` units and their
        activation maps upsampled to the image."""
        classifier = self.get(spec)
        self.check_layer(classifier, layer)
        with self.lock:
            found = unit_contributions(classifier.model, image[None], layer, target)
        units = found.top(min(top, found.contributions.shape[1]))
        return found, units, found.heatmaps(units, tuple(image.shape[-2:])).cpu()

    # ------------------------------------------------------------------ feature visualisation

    def visualize(self, spec: str, layer: str, unit: int | None, target_class: int | None,
                  steps: int = 128, seed: int = 0) -> torch.Tensor:
        """The ``(3, H, W)`` image optimised to excite ``unit`` of ``layer`` (mean over
        positions) or, with ``target_class``, that class's logit."""
        classifier = self.get(spec)
        if target_class is not None:
            objective = class_logit(target_class)
        else:
            self.check_layer(classifier, layer)
            objective = channel(layer, unit)
        with self.lock:
            images, _ = visualize(classifier.model, objective, steps=steps,
                                  size=classifier.input_size, seed=seed)
        return images[0].cpu()

    def top_scenes(self, spec: str, layer: str, unit: int | None, target_class: int | None,
                   n: int, k: int = 6) -> np.ndarray:
        """``(k, H, W, 3)`` uint8: the held-out SceneWorld scenes (of the first ``n``) that
        excite the unit, or the class's logit, most."""
        classifier = self.get(spec)
        if target_class is not None:
            if classifier.logits is None:
                raise UserError(f"{spec} has no layer that outputs its class scores")
            layer, unit = classifier.logits, target_class
        with self.lock:
            found = sceneworld_top_images(classifier.model, layer, n=n, seed=PROBE_SEED, k=k,
                                          units=[unit], size=classifier.input_size)
        return found.images[0]

    # ------------------------------------------------------------------ concepts and factors

    def tcav(self, spec: str, layer: str, class_name: str, concepts: Sequence[str], runs: int,
             n: int, progress=None):
        """TCAV of SceneWorld ``concepts`` for class ``class_name`` at ``layer``
        (``gandissect.tcav``, with the examples ``gandissect tcav`` draws: the class's held-out
        scenes, concept scenes and counterexamples from its concept world); ``progress``, if
        given, is called as ``progress(fraction, desc=...)`` between the steps."""
        from gandissect.tcav import (
            CLASS_SEED,
            CONCEPT_SEED,
            sceneworld_class_images,
            sceneworld_concept,
            sceneworld_examples,
            tcav,
        )
        from gandissect.world import concepts as world_concepts

        classifier = self.get(spec)
        self.check_layer(classifier, layer)
        if class_name not in classifier.class_names:
            raise UserError(f"unknown class {class_name!r}; choose one of "
                            f"{', '.join(classifier.class_names)}")
        if class_name not in [c.name for c in world_concepts("scene")]:
            raise UserError(f"class {class_name!r} is no SceneWorld scene; run `gandissect "
                            "tcav --class-dir DIR` for it")
        for name in concepts:
            sceneworld_concept(name)  # one line naming the valid concepts, before the work
        step = progress or (lambda *_, **__: None)
        size = classifier.input_size
        step(0.0, desc="rendering the class's scenes")
        class_images = sceneworld_class_images(class_name, n, size, CLASS_SEED)
        step(0.2, desc="rendering concept examples and counterexamples")
        drawn = sceneworld_examples(concepts, n, 4 * n, size, CONCEPT_SEED)
        step(0.5, desc="training concept vectors")
        with self.lock:
            return tcav(classifier.model, layer, classifier.class_names.index(class_name),
                        class_images, drawn.concepts, drawn.randoms, runs=runs, n=n,
                        null_images=drawn.scenes)

    def factors(self, spec: str, layer: str, n: int):
        """The factor study of ``layer`` on held-out scenes ``0 .. n - 1``
        (``gandissect.factors.factor_study``, as ``gandissect factors`` runs it)."""
        from gandissect.factors import factor_study

        classifier = self.get(spec)
        self.check_layer(classifier, layer)
        with self.lock:
            return factor_study(classifier.model, layer, PROBE_SEED, n, classifier.input_size)
