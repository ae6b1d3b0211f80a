"""gandissect: dissect and edit image GANs, dissect and explain CNN classifiers."""

__version__ = "0.1.0"
