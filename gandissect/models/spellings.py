"""How models are spelled on the command line and in the app, without loading torch (so that
``gandissect --help`` lists them in well under a second). ``gandissect.models.specs`` resolves a
spelling to a model; its loader tables must name the same schemes (a test checks it).

    sceneworld                 a shipped model
    FILE.safetensors           weights written by this project
    SCHEME:PATH                a format the library reads (proggan:, stylegan2:, ...)
    package.module:factory     a function returning the model, imported with importlib
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SCHEMES", "SHIPPED", "spellings"]

SHIPPED = ("sceneworld",)  # names of the shipped models

# kind of model -> the schemes ``gandissect.models.specs`` has loaders for
SCHEMES = {
    "generator": ("dcgan", "nvidia", "proggan", "stylegan2", "torchscript"),
    "classifier": ("torchvision", "timm", "hf"),
    "segmenter": ("hf", "upp", "semseg", "torchvision"),
}

# what follows the colon, when not a PATH
_TARGET = {"torchvision": "ARCH", "timm": "NAME_OR_DIR", "hf": "NAME_OR_DIR", "upp": "DIR",
           "semseg": "DIR"}


def target(scheme: str) -> str:
    """What a scheme's spelling names after the colon (``PATH``, or ``ARCH``)."""
    return _TARGET.get(scheme, "PATH")


def spellings(kind: str, schemes: Iterable[str] | None = None) -> str:
    """The valid spellings of a ``kind`` of model, for help texts and error messages
    (``schemes``: the loader table's names, when it has more than the built-in ones)."""
    names = SCHEMES[kind] if schemes is None else schemes
    return ", ".join([*SHIPPED, "FILE.safetensors", *(f"{s}:{target(s)}" for s in names),
                      "package.module:factory"])
