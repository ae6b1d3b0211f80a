"""Trace and edit any layer of any ``nn.Module`` by its dotted name.

Context managers that register forward hooks on entry and always remove exactly their own
hooks on exit, even when the forward raises::

    with Trace(model, "layer4") as trace:
        model(z)
    trace.output                          # the layer's output (a copy, see ``clone``)

    with Trace(model, "layer4", stop=True) as trace:
        model(z)                          # partial forward: stops right after layer4

    with Edit(model, "layer4", alpha=a, value=v):
        image = model(z)                  # layer4's output x becomes x * (1 - a) + v * a

    image = forward_from(model, "layer4", edited_features, z)   # the pass from layer4 on

``alpha`` broadcasts per unit and per pixel against the ``(B, U, H, W)`` output (see
``edit_alpha`` to build it from unit ids and a spatial mask), ``value`` per unit. Every edit in
the library (strokes, causal selection, interventions) goes through ``apply_edit``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from gandissect.errors import UserError

__all__ = [
    "StopForward",
    "Trace",
    "TraceDict",
    "Edit",
    "apply_edit",
    "edit_alpha",
    "forward_from",
    "get_layer",
    "layer_names",
    "partial_forward",
    "layer_shapes",
]


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early; the tracing context swallows it."""


def _scripted(module: nn.Module) -> bool:
    # TorchScript modules refuse forward hooks, or (traced submodules) accept and never call them
    return isinstance(module, torch.jit.ScriptModule)


def layer_names(model: nn.Module) -> list[str]:
    """Dotted names of every traceable submodule, in registration order (the empty root
    excluded); TorchScript modules and everything inside them are left out."""
    names, scripted = [], []
    for name, module in model.named_modules():
        if not name or any(name.startswith(prefix) for prefix in scripted):
            continue
        if _scripted(module):
            scripted.append(name + ".")
        else:
            names.append(name)
    return names


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; a clear error listing close valid names otherwise, or
    saying that a TorchScript module cannot be traced."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        names = layer_names(model)
        close = difflib.get_close_matches(name, names, n=5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
        raise UserError(f"no layer named {name!r} in {type(model).__name__}.{hint} "
                        f"Valid layers: {shown}") from None
    if _scripted(module):
        raise UserError(f"layer {name!r} is a TorchScript module, which takes no forward hooks; "
                        "trace a Python module around it (a TorchScript generator loaded as "
                        "torchscript:PATH has its top-level layers wrapped so)")
    return module


def _as_tensor_output(output: Any, layer: str) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):  # a UserError: the command line reports it
        raise UserError(
            f"layer {layer!r} returns {type(output).__name__}, not a tensor; "
            "trace a submodule whose output is a tensor"
        )
    return output


class Trace:
    """Retain, stop at, or edit the output of one layer during forward passes.

    Args:
        model: any module.
        layer: dotted name of a submodule (``"layer4"``, ``"features.3"``, ``"layer1.0.conv1"``).
        retain_output: keep the output of the last call in ``.output`` (all calls, for a module
            used several times in one forward, are in ``.outputs``).
        retain_input: keep the first positional input in ``.input``.
        clone: keep a copy, so that later in-place operations (``ReLU(inplace=True)``) cannot
            change what was retained. Default True; turn off only to save memory.
        detach: retain detached tensors (default True); False keeps the graph for gradients.
        stop: raise ``StopForward`` after the layer runs; the context swallows it (partial
            forward: nothing after the layer is computed).
        edit: a function ``output -> new output`` applied on every call of the layer.
        view: a function ``output -> tensor``; what it returns is retained instead of the
            output, which may then be of any type (``gandissect.spatial.first_tensor`` keeps
            the first tensor of a ``transformers`` layer's tuple).
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        retain_output: bool = True,
        retain_input: bool = False,
        clone: bool = True,
        detach: bool = True,
        stop: bool = False,
        edit: Any = None,
        view: Any = None,
    ) -> None:
        self.layer = layer
        self.module = get_layer(model, layer)
        self.retain_output, self.retain_input = retain_output, retain_input
        self.clone, self.detach, self.stop, self.edit = clone, detach, stop, edit
        self.view = view
        self.outputs: list[torch.Tensor] = []
        self.input: torch.Tensor | None = None
        self._handle = None
        self._on_stop = None  # set by TraceDict: stop only when every layer has run

    def _keep(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.detach:
            tensor = tensor.detach()
        return tensor.clone() if self.clone else tensor

    def _hook(self, module: nn.Module, inputs: tuple, output: Any) -> Any:
        if self.retain_input and inputs and isinstance(inputs[0], torch.Tensor):
            self.input = self._keep(inputs[0])
        if self.edit is not None:
            output = self.edit(_as_tensor_output(output, self.layer))
        if self.retain_output:
            kept = output if self.view is None else self.view(output)
            self.outputs.append(self._keep(_as_tensor_output(kept, self.layer)))
        if self._on_stop is not None:
            self._on_stop(self)
        elif self.stop:
            raise StopForward(self.layer)
        return output

    @property
    def output(self) -> torch.Tensor:
        """The layer's output on its most recent call."""
        if not self.outputs:
            raise RuntimeError(f"layer {self.layer!r} has not run inside this trace")
        return self.outputs[-1]

    def __enter__(self) -> Trace:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def close(self) -> None:
        """Remove this trace's hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


class TraceDict(dict):
    """Several ``Trace``s at once, keyed by layer name.

    With ``stop=True`` the forward pass stops once every listed layer has run, whatever their
    order in the network.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], stop: bool = False, **kwargs):
        super().__init__()
        layers = list(dict.fromkeys(layers))
        if not layers:
            raise UserError("TraceDict needs at least one layer")
        self.stop = stop
        self._stack = ExitStack()
        for name in layers:
            self[name] = Trace(model, name, **kwargs)
        self._seen: set[str] = set()

    def _on_stop(self, trace: Trace) -> None:
        self._seen.add(trace.layer)
        if len(self._seen) == len(self):
            raise StopForward(trace.layer)

    def __enter__(self) -> TraceDict:
        self._seen = set()
        with ExitStack() as stack:
            for trace in self.values():
                if self.stop:
                    trace._on_stop = self._on_stop
                stack.enter_context(trace)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stack.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


def partial_forward(model: nn.Module, layer: str, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Run ``model(*args, **kwargs)`` only as far as ``layer`` and return its output."""
    with Trace(model, layer, stop=True, clone=False) as trace:
        model(*args, **kwargs)
    return trace.output


def edit_alpha(
    units: Sequence[int] | torch.Tensor | None,
    n_units: int,
    mask: torch.Tensor | None = None,
    strength: float = 1.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Build the edit weight ``a`` of ``x * (1 - a) + v * a`` for a layer of ``n_units`` units.

    ``units`` selects units (None: all); ``mask`` is an ``(H, W)`` or ``(B, H, W)`` spatial weight
    in [0, 1] at the layer's resolution (None: everywhere); ``weights`` ``(U,)`` in [0, 1]
    weighs each unit (a learned edit, e.g. a drawing brush's; None: 1). Returns
    ``(U, 1, 1)``, ``(U, H, W)`` or ``(B, U, H, W)``, ready to broadcast against the layer
    output.
    """
    per_unit = torch.zeros(n_units)
    if units is None:
        per_unit[:] = 1
    else:
        index = torch.as_tensor(units, dtype=torch.int64).reshape(-1)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n_units):
            raise UserError(f"unit ids must lie in [0, {n_units - 1}], got {index.tolist()}")
        per_unit[index] = 1
    if weights is not None:
        weights = torch.as_tensor(weights, dtype=torch.float32).detach().cpu().reshape(-1)
        if weights.numel() != n_units or not bool(((weights >= 0) & (weights <= 1)).all()):
            raise UserError(f"unit weights must be {n_units} values in [0, 1]")
        per_unit = per_unit * weights
    per_unit = per_unit * strength
    if mask is None:
        return per_unit[:, None, None]
    mask = torch.as_tensor(mask, dtype=torch.float32)
    if mask.dim() == 2:
        return per_unit[:, None, None] * mask[None]
    if mask.dim() == 3:
        return per_unit[None, :, None, None] * mask[:, None]
    raise UserError(f"mask must be (H, W) or (B, H, W), got shape {tuple(mask.shape)}")


def apply_edit(output: torch.Tensor, alpha, value=0.0, layer: str = "the layer"
               ) -> torch.Tensor:
    """The library's one edit rule: ``output * (1 - alpha) + value * alpha``.

    ``alpha`` broadcasts against ``output`` (a scalar, per unit ``(U, 1, 1)``, per unit and
    cell ``(U, H, W)``, per sample ``(B, U, H, W)``); ``value`` is a scalar, one value per unit
    ``(U,)``, or any tensor that broadcasts against ``output`` (e.g. ``(B, U, 1, 1)``). Both
    are moved to the output's device and dtype, and gradients flow through both. Ablation is
    ``value=0``; insertion writes each unit's high quantile. ``layer`` names the layer in
    error messages.
    """
    alpha = torch.as_tensor(alpha).to(output.device, output.dtype)
    value = torch.as_tensor(value).to(output.device, output.dtype)
    if value.dim() == 1:
        if output.dim() < 2 or value.numel() != output.shape[1]:
            raise UserError(
                f"value has {value.numel()} entries but layer {layer!r} has "
                f"{output.shape[1] if output.dim() > 1 else 1} units")
        value = value.reshape(1, -1, *([1] * (output.dim() - 2)))
    for name, tensor in (("edit alpha", alpha), ("edit value", value)):
        try:
            if torch.broadcast_shapes(tensor.shape, output.shape) != output.shape:
                raise RuntimeError
        except RuntimeError:
            raise UserError(
                f"{name} of shape {tuple(tensor.shape)} does not broadcast against the output "
                f"of {layer!r}, shape {tuple(output.shape)}; build alpha with edit_alpha(units, "
                "n_units, mask at the layer's resolution)") from None
    return output * (1 - alpha) + value * alpha


class Edit(Trace):
    """Replace a layer's output ``x`` with ``apply_edit(x, alpha, value)`` on every call.

    ``alpha`` broadcasts against the output (per unit ``(U, 1, 1)``, per unit and pixel
    ``(U, H, W)``, per sample ``(B, U, H, W)``, or a scalar); ``value`` is a scalar or ``(U,)``.
    Ablation is ``value=0``; insertion uses each unit's high quantile as ``value``.
    """

    def __init__(self, model: nn.Module, layer: str, alpha, value=0.0, **kwargs: Any) -> None:
        kwargs.setdefault("retain_output", False)
        super().__init__(model, layer, edit=self._apply, **kwargs)
        self.alpha = torch.as_tensor(alpha, dtype=torch.float32)
        self.value = torch.as_tensor(value, dtype=torch.float32)
        if self.value.dim() > 1:
            raise UserError("value must be a scalar or one value per unit")

    def _apply(self, output: torch.Tensor) -> torch.Tensor:
        return apply_edit(output, self.alpha, self.value, self.layer)


def forward_from(model: nn.Module, layer: str, output: torch.Tensor, *inputs: Any,
                 **kwargs: Any) -> torch.Tensor:
    """What ``model(*inputs, **kwargs)`` returns when ``layer`` outputs ``output`` instead of
    what it computes: the rest of the forward pass from a given (e.g. edited) layer output.

    When ``layer`` is a child of an ``nn.Sequential`` model (ProGAN), only the children after
    it run. Any other model (e.g. StyleGAN2, whose layers also read w) runs again from
    ``inputs`` with ``layer``'s output replaced, so ``inputs`` must be those that produced the
    original output.
    """
    if isinstance(model, nn.Sequential) and not model._forward_hooks:  # hooks: run them all
        names = [name for name, _ in model.named_children()]
        if layer in names:
            x = output
            for child in list(model.children())[names.index(layer) + 1:]:
                x = child(x)
            return x
    with Trace(model, layer, retain_output=False, edit=lambda _: output):
        return model(*inputs, **kwargs)


def layer_shapes(model: nn.Module, *inputs: Any) -> dict[str, tuple[int, ...] | str]:
    """Run ``model(*inputs)`` once and return every submodule's output shape, by dotted name, in
    registration order (a layer before its parts).

    Modules that do not output a single tensor report their output's type name; modules that
    did not run, and TorchScript modules (no hooks), are left out. All hooks are removed
    afterwards, even if the forward fails.
    """
    shapes: dict[str, tuple[int, ...] | str] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            is_tensor = isinstance(output, torch.Tensor)
            shapes.setdefault(name, tuple(output.shape) if is_tensor else type(output).__name__)
        return hook

    handles = []
    try:
        for name in layer_names(model):
            handles.append(get_layer(model, name).register_forward_hook(record(name)))
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    order = {name: i for i, name in enumerate(layer_names(model))}
    return dict(sorted(shapes.items(), key=lambda item: order[item[0]]))  # a layer before its parts
