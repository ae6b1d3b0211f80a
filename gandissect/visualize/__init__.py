"""Pictures for people: attribution heatmap overlays with a colour bar."""

from .overlay import COLORMAPS, apply_colormap, overlay

__all__ = ["COLORMAPS", "apply_colormap", "overlay"]
