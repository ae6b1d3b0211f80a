"""A classifier layer's output as a spatial map ``(N, C, h, w)``: the one rule every layer-level
method uses (the CAM family, Network Dissection, the layer listings of the app and of
``gandissect layers``).

    maps = spatial_view(model, "blocks.11.norm1", output, image_size=(224, 224))  # (N, 768, 14, 14)

The rule, by the layer's output:

- a tuple, list or dict-like output (``transformers`` layers return tuples): its first tensor;
- ``(N, C, h, w)``: as is, except in a model that declares channels-last outputs (timm's
  ``output_fmt == "NHWC"``: Swin, SwinV2, ...), where every layer but a convolution gives
  ``(N, h, w, C)``, read channels last;
- ``(N, T, C)``: a token sequence, ``T = prefix + h * w``. ``prefix`` counts the tokens before
  the patch grid (class, distillation and register tokens): timm's ``num_prefix_tokens``, else
  the token parameters of the module that holds the patch embedding (``cls_token``,
  ``dist_token`` / ``distillation_token``, ``reg_token`` / ``register_tokens``: 1 for
  ``transformers``' ViT, 2 for DeiT-distilled, 0 for Swin). The grid ``(h, w)`` is the input
  size over the patch size (timm ``patch_embed.patch_size``, ``transformers``
  ``config.patch_size``); a sequence of exactly ``h * w`` tokens has no prefix (the patch
  embedding's own output), and a hierarchical stage (Swin after ``s`` patch mergings) has
  ``ceil(h / s) * ceil(w / s)`` tokens. Without a patch embedding to read, the grid is the square
  of ``T`` tokens (no prefix) or of ``T - 1`` (a class token). The prefix tokens are dropped,
  the rest reshaped to the grid, channels first;
- in a model with a patch embedding, a 4-D output is a map only when its spatial size is the
  grid or a stage of it (attention weights ``(N, heads, T, T)`` are not);
- anything else (a ``(N, C)`` vector per image, a sequence that fits no grid): one
  ``UserError`` line naming the layer.

The view is a reshape of the layer's tensor, so it applies to that tensor's gradient too: the
gradient of a score with respect to the map is ``spatial_view`` of its gradient with respect to
the output (CAM's ``layer_activations_and_gradients``). ``map_layers`` lists the layers with a
map and their ``(C, h, w)``; ``default_map_layer`` picks the one the CAM family starts with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.hooks import get_layer, layer_names

__all__ = ["TokenLayout", "default_map_layer", "first_tensor", "map_layers", "map_view",
           "spatial_view", "token_layout", "units_view"]

_TOKEN_PARAMETERS = ("cls_token", "dist_token", "distillation_token", "reg_token",
                     "register_tokens")
_CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d)


@dataclass(frozen=True)
class TokenLayout:
    """How a vision transformer lays out its tokens.

    Attributes:
        prefix: tokens before the patch grid (class, distillation, register tokens).
        patch: pixels per patch, ``(height, width)``.
        image: the declared input size, ``(height, width)``; None if the model declares none.
        channels_last: 4-D outputs are ``(N, h, w, C)`` (timm ``output_fmt == "NHWC"``).
        pooling: how the head reads the tokens: ``"token"`` (the class token), ``"avg"`` (the
            mean of the patch tokens) or None (not known).
    """

    prefix: int
    patch: tuple[int, int]
    image: tuple[int, int] | None
    channels_last: bool = False
    pooling: str | None = None

    def grid(self, image_size: Sequence[int] | None = None) -> tuple[int, int] | None:
        """The patch grid ``(h, w)`` at ``image_size`` (default: the declared input size)."""
        size = tuple(image_size) if image_size is not None else self.image
        if size is None:
            return None
        return int(size[-2]) // self.patch[0], int(size[-1]) // self.patch[1]


def _pair(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value, value
    values = tuple(int(v) for v in value)
    return (values[0], values[0]) if len(values) == 1 else values[-2:]


def _prefix_parameters(module: nn.Module) -> int:
    """Tokens in ``module``'s class / distillation / register token parameters."""
    count = 0
    for name, parameter in module.named_parameters():
        if name.rsplit(".", 1)[-1] in _TOKEN_PARAMETERS and parameter.dim() == 3:
            count += parameter.shape[1]
    return count


def token_layout(model: nn.Module) -> TokenLayout | None:
    """The token layout of ``model`` (timm or ``transformers`` vision transformers, found in
    any wrapper around them), or None when it has no patch embedding to read (a CNN)."""
    for module in model.modules():
        embed = getattr(module, "patch_embed", None)
        if isinstance(embed, nn.Module) and getattr(embed, "patch_size", None) is not None:
            prefix = getattr(module, "num_prefix_tokens", None)
            pool = getattr(module, "global_pool", None)
            fmt = getattr(module, "output_fmt", None)
            return TokenLayout(
                prefix if isinstance(prefix, int) else _prefix_parameters(module),
                _pair(embed.patch_size), _pair(getattr(embed, "img_size", None)),
                str(getattr(fmt, "value", fmt)) == "NHWC",
                pool if pool in ("token", "avg") else None)
        config = getattr(module, "config", None)
        if config is not None and getattr(config, "patch_size", None) is not None \
                and getattr(config, "image_size", None) is not None:
            prefix = _prefix_parameters(module)
            # transformers' ViT-style classifiers read the class token(s); Swin pools
            return TokenLayout(prefix, _pair(config.patch_size), _pair(config.image_size),
                               False, "token" if prefix else "avg")
    return None


def first_tensor(output: Any) -> Any:
    """``output`` itself if it is a tensor; else the first tensor of a tuple, list or
    dict-like output (``transformers``' layers and model outputs); else ``output``."""
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, Mapping) else output
    if isinstance(values, (tuple, list)) or isinstance(output, Mapping):
        for value in values:
            if isinstance(value, torch.Tensor):
                return value
    return output


def _stage_grid(grid: tuple[int, int], cells: int) -> tuple[int, int] | None:
    """The grid of ``cells`` cells that ``grid`` becomes after merging ``s x s`` patches."""
    for s in range(1, max(grid) + 1):
        h, w = math.ceil(grid[0] / s), math.ceil(grid[1] / s)
        if h * w == cells:
            return h, w
        if h * w < cells:
            return None
    return None


def _square(cells: int) -> tuple[int, int] | None:
    side = math.isqrt(cells)
    return (side, side) if cells > 0 and side * side == cells else None


def _token_grid(layout: TokenLayout | None, tokens: int, image_size: Sequence[int] | None
                ) -> tuple[int, tuple[int, int]] | None:
    """``(prefix, (h, w))`` for a sequence of ``tokens`` tokens, or None if none fits."""
    grid = layout.grid(image_size) if layout is not None else None
    if layout is None or grid is None:
        prefixes = [layout.prefix] if layout is not None else [0, 1]
        for prefix in dict.fromkeys([*prefixes, 0]):
            square = _square(tokens - prefix)
            if square is not None:
                return prefix, square
        return None
    if tokens - layout.prefix == grid[0] * grid[1]:
        return layout.prefix, grid
    stage = _stage_grid(grid, tokens)  # no prefix: the patch embedding, or a Swin stage
    return (0, stage) if stage is not None else None


def _not_a_map(layer: str, shape: tuple[int, ...], why: str) -> UserError:
    return UserError(f"layer {layer!r} gives {shape}, {why}; choose a layer with (N, C, h, w) "
                     "maps or (N, tokens, C) patch tokens (`gandissect layers MODEL` lists them)")


def spatial_view(model: nn.Module, layer: str, output: Any,
                 image_size: Sequence[int] | None = None,
                 layout: TokenLayout | None | str = "find") -> torch.Tensor:
    """``layer``'s ``output`` (or its gradient) as an ``(N, C, h, w)`` map, by the module's
    rule; a view of the same values, so gradients flow through it.

    Args:
        model: the model ``layer`` belongs to (its token layout is read from it).
        layer: the layer's dotted name (for messages, and to tell a convolution).
        output: what the layer returned, or a tensor of that shape (its gradient).
        image_size: the input's ``(H, W)`` (default: the model's declared input size).
        layout: the model's ``token_layout`` if already known.

    Example::

        with Trace(vit, "blocks.11", view=first_tensor) as trace:
            vit(images)
        spatial_view(vit, "blocks.11", trace.output, images.shape[-2:])   # (N, 768, 14, 14)
    """
    tensor = first_tensor(output)
    if not isinstance(tensor, torch.Tensor):
        raise UserError(f"layer {layer!r} returns {type(output).__name__}, with no tensor; "
                        "choose a layer whose output is a map")
    shape = tuple(tensor.shape)
    if layout == "find":
        layout = token_layout(model)
    if tensor.dim() == 4:
        if layout is None:
            return tensor
        if layout.channels_last and not isinstance(get_layer(model, layer), _CONVOLUTIONS):
            tensor = tensor.permute(0, 3, 1, 2)
        grid = layout.grid(image_size)
        cells = tensor.shape[2] * tensor.shape[3]
        if grid is not None and _stage_grid(grid, cells) != tuple(tensor.shape[2:]):
            raise _not_a_map(layer, shape, f"not a map on the {grid[0]}x{grid[1]} patch grid")
        return tensor
    if tensor.dim() == 3:
        if tensor.shape[2] == 1:  # (N, C, 1): a pooled vector (transformers Swin's pooler)
            raise _not_a_map(layer, shape, "one vector per image, not a map")
        found = _token_grid(layout, tensor.shape[1], image_size)
        if found is None:
            grid = layout.grid(image_size) if layout is not None else None
            where = (f"the {grid[0]}x{grid[1]} patch grid (+{layout.prefix} prefix tokens)"
                     if grid else "a square grid of patches")
            raise _not_a_map(layer, shape, f"a sequence of {shape[1]} tokens that does not fit "
                                           f"{where}")
        prefix, (h, w) = found
        n, _, channels = tensor.shape
        return tensor[:, prefix:].reshape(n, h, w, channels).permute(0, 3, 1, 2)
    if tensor.dim() == 2:
        raise _not_a_map(layer, shape, "one vector per image, not a map")
    raise _not_a_map(layer, shape, "not a map")


def units_view(model: nn.Module, layer: str, output: Any,
               image_size: Sequence[int] | None = None) -> torch.Tensor:
    """``layer``'s units as tools that also take vectors read them: its ``(N, C, h, w)`` map
    when it has one (``spatial_view``), else its first tensor as it is (an ``(N, C)`` vector,
    or a 4-D output that is no map). A ``UserError`` only when it holds no tensor."""
    try:
        return spatial_view(model, layer, output, image_size)
    except UserError:
        tensor = first_tensor(output)
        if not isinstance(tensor, torch.Tensor):
            raise
        return tensor


def map_view(model: nn.Module, layer: str, image_size: Sequence[int] | None = None
             ) -> Callable[[Any], torch.Tensor]:
    """``output -> spatial_view(model, layer, output, image_size)``, with the layout read once
    (for ``Trace(..., view=...)``)."""
    layout = token_layout(model)
    return lambda output: spatial_view(model, layer, output, image_size, layout)


def map_layers(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int, int]]:
    """Every layer of ``model`` with a map when it runs on ``x`` (a batch of images), and its
    ``(C, h, w)``, in registration order. Layers whose first dimension is not the batch
    (windowed attention) are left out. All hooks are removed afterwards."""
    layout = token_layout(model)
    batch = x.shape[0]
    shapes: dict[str, tuple[int, int, int]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            tensor = first_tensor(output)
            if name in shapes or not isinstance(tensor, torch.Tensor) or not tensor.dim() \
                    or tensor.shape[0] != batch:
                return
            with suppress(UserError):  # not a map: left out
                shapes[name] = tuple(spatial_view(model, name, tensor, x.shape[-2:], layout)
                                     .shape[1:])
        return hook

    names = layer_names(model)
    handles = []
    try:
        for name in names:
            handles.append(get_layer(model, name).register_forward_hook(record(name)))
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return {name: shapes[name] for name in names if name in shapes}


def default_map_layer(model: nn.Module, layers: Mapping[str, Sequence[int]]) -> str | None:
    """The layer the CAM family starts with, among ``layers`` (``map_layers``' name ->
    ``(C, h, w)``): ``layer4`` if there is one (ResNets); in a transformer whose head reads a
    class token, the first layer norm of the last block (timm ``blocks.11.norm1``,
    ``transformers`` ``vit.layers.11.layernorm_before``), as pytorch-grad-cam's documentation
    advises: after it the patch tokens reach the class token only through the last attention,
    and the final norm's patch tokens do not reach the scores at all (their gradient is zero);
    otherwise the last layer listed whose map has more than one cell (a CNN's or a Swin's last
    stage), or rather its outermost enclosing layer with a map of the same shape: the last
    part listed is often a residual branch (a ConvNeXt block's ``drop_path``), and the block,
    stage or backbone around it gives the stage's output. None if no layer has a map."""
    if "layer4" in layers:
        return "layer4"
    layout = token_layout(model)
    if layout is not None and layout.prefix and layout.pooling != "avg":
        norms = [name for name in layers if "." in name
                 and isinstance(get_layer(model, name), nn.LayerNorm)]
        blocks = [name.rsplit(".", 1)[0] for name in norms]
        # the last block holding two norms or more (pre-norm attention and MLP)
        owners = [block for block in dict.fromkeys(blocks) if blocks.count(block) >= 2]
        if owners:
            return norms[blocks.index(owners[-1])]
    spread = [name for name, shape in layers.items() if shape[-1] * shape[-2] > 1]
    last = (spread or list(layers) or [None])[-1]
    if last is None:
        return None
    parts = last.split(".")
    enclosing = (".".join(parts[:end]) for end in range(1, len(parts)))
    return next((name for name in enclosing if tuple(layers.get(name, ())) == tuple(layers[last])),
                last)
