"""What every attribution method shares: targets, the model guard, gradients and batching.

A *target* names the score to explain, one per batch element:

- an ``int``: that class of an ``(N, classes)`` output, for every element;
- a list / 1-D tensor of ints: one class per element;
- a callable ``output -> (N,) scores``: any score; it must score each row on its own, because
  perturbation methods also call it on perturbed copies of the batch;
- ``None``: allowed when the model has one output per element (``(N,)`` or ``(N, 1)``).

``resolve_target`` turns a target and a model output into the ``(N,)`` scores; every method
uses it, so the four spellings mean the same thing everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.torchutil import eval_mode

__all__ = [
    "Attribution",
    "Target",
    "attribution_mode",
    "baseline_for",
    "class_indices",
    "either",
    "input_gradient",
    "prepare_target",
    "refuse_unbatched",
    "resolve_target",
    "row_chunks",
]

Target = int | Sequence[int] | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None


def class_indices(target: Target, n: int, device: torch.device | None = None) -> torch.Tensor:
    """The ``(n,)`` class index per batch element of an int or per-element target."""
    if target is None or callable(target):
        raise TypeError("this method needs class indices as target (an int or one per sample), "
                        f"not {type(target).__name__}")
    classes = torch.as_tensor(target, device=device)
    if classes.dtype.is_floating_point or classes.dtype == torch.bool or classes.dim() > 1:
        raise TypeError(f"class targets must be ints, got {classes.dtype} of shape "
                        f"{tuple(classes.shape)}")
    classes = classes.to(torch.int64)
    if classes.dim() == 0:
        return classes.expand(n)
    if classes.shape[0] != n:
        raise UserError(f"{classes.shape[0]} targets for a batch of {n}")
    return classes


def prepare_target(target: Target, n: int, device: torch.device | None = None) -> Target:
    """Check ``target`` against a batch of ``n``; lists become an ``(n,)`` int64 tensor."""
    if target is None or callable(target) or isinstance(target, int):
        return target
    return class_indices(target, n, device)


def resolve_target(output: torch.Tensor, target: Target,
                   owners: torch.Tensor | None = None) -> torch.Tensor:
    """The ``(R,)`` scores that ``target`` picks out of a model ``output`` of R rows.

    ``owners`` maps each row to the batch element it is a (perturbed) copy of, so that
    per-element targets follow their element; None means row i is element i.
    """
    rows = output.shape[0]
    if callable(target):
        scores = target(output)
        if not isinstance(scores, torch.Tensor) or scores.shape != (rows,):
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
            raise UserError(f"a target callable must return one score per row, shape ({rows},);"
                            f" got {shape}")
        return scores
    if target is None:
        if output.dim() == 1:
            return output
        if output.dim() == 2 and output.shape[1] == 1:
            return output[:, 0]
        raise UserError(f"the model returns {tuple(output.shape)}: pass a target (class index,"
                        " one per sample, or a callable)")
    if output.dim() != 2:
        raise UserError(f"class targets index (N, classes) outputs; the model returns "
                        f"{tuple(output.shape)}, so pass a callable target")
    if owners is not None and owners.shape != (rows,):
        raise UserError(f"owners must give one sample per row, shape ({rows},)")
    classes = torch.as_tensor(target, device=output.device)
    if classes.dim() == 1 and owners is not None:
        classes = classes[owners.to(output.device)]
    classes = class_indices(classes, rows, output.device)
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= output.shape[1]):
        raise UserError(f"target classes must lie in [0, {output.shape[1] - 1}], got "
                        f"{sorted(set(classes.tolist()))}")
    return output.gather(1, classes[:, None])[:, 0]


@contextmanager
def attribution_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, frozen parameters, out-of-place activations, gradients on; all restored.

    Eval mode keeps BatchNorm from mixing the batch (and from updating its running statistics);
    frozen parameters skip their gradients; in-place activations (``ReLU(inplace=True)``) are
    made out-of-place because an in-place op would overwrite tensors that hooks and gradients
    need. Everything is put back on exit, also when the forward raises
    (``gandissect.torchutil.eval_mode``).

    A convolution that receives one unbatched sample (a ``(C, H, W)`` image in a ``Conv2d``,
    which torch accepts) raises ``UserError``: the method took the image's C channels for a
    batch of C inputs (see ``refuse_unbatched``).
    """
    with eval_mode(model, freeze=True, out_of_place=True), torch.enable_grad(), \
            refuse_unbatched(model):
        yield model


_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                 nn.ConvTranspose3d)


def _unbatched(shape: tuple[int, ...]) -> str:
    return (f"attribute() takes a batch (N, C, H, W), got {shape}: for one image (C, H, W) "
            "pass x[None]")


@contextmanager
def refuse_unbatched(model: nn.Module) -> Iterator[None]:
    """Within the block, a convolution of ``model`` called on an unbatched input (one dim
    fewer than its batched form: ``(C, H, W)`` for ``Conv2d``) raises ``UserError`` with the
    ``x[None]`` hint. Torch runs such a call as one sample, so an attribution method that
    reads dim 0 as the batch would otherwise explain C "images" of one channel each, or fail
    somewhere deeper. Forward pre-hooks, removed on exit, always."""
    def check(name: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0] if inputs else None
            if isinstance(x, torch.Tensor) and x.dim() == len(module.kernel_size) + 1:
                raise UserError(f"attribute() takes a batch (N, C, H, W): {name or 'the model'} "
                                f"({type(module).__name__}) got an unbatched {x.dim()}-D "
                                "input; for one image (C, H, W) pass x[None]")
        return hook

    handles = []
    try:
        if isinstance(model, nn.Module):
            for name, module in model.named_modules():
                if isinstance(module, _CONVOLUTIONS):
                    handles.append(module.register_forward_pre_hook(check(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def input_gradient(model: nn.Module, x: torch.Tensor, target: Target,
                   owners: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d score / d x, score)`` per row; call inside ``attribution_mode``.

    Rows do not interact in eval mode, so the gradient of the summed scores is each row's own.
    """
    x = x.detach().requires_grad_(True)
    scores = resolve_target(model(x), target, owners)
    (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad, scores.detach()


def either(ours: object, captums: object, names: str) -> object:
    """The argument given under our name or under Captum's (``names``: "ours and captums");
    ``UserError`` when both are given."""
    if ours is not None and captums is not None:
        raise UserError(f"pass one of {names}, not both (they mean the same)")
    return captums if ours is None else ours


def baseline_for(value: float | torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """The baseline (Captum's ``baselines``) for inputs ``x``: a 0-d tensor for a number (None
    is 0), else the tensor broadcast to ``x``'s shape; ``UserError`` when it does not
    broadcast."""
    fill = torch.as_tensor(0.0 if value is None else value, dtype=x.dtype, device=x.device)
    if fill.dim() == 0:
        return fill
    try:
        return torch.broadcast_to(fill, x.shape)
    except RuntimeError:
        raise UserError(f"a baseline tensor must broadcast to the input {tuple(x.shape)}, got "
                        f"{tuple(fill.shape)}; pass baselines as a number or such a tensor"
                        ) from None


def row_chunks(total: int, size: int | None) -> Iterator[torch.Tensor]:
    """Row indices ``0 .. total-1`` in chunks of at most ``size`` (None: one chunk)."""
    if size is not None and size < 1:
        raise UserError(f"internal_batch_size must be a positive int or None, got {size}")
    size = total if size is None else size
    for start in range(0, total, max(size, 1)):
        yield torch.arange(start, min(start + size, total))


def _check_input(x: torch.Tensor, images: bool = False) -> torch.Tensor:
    """``x`` detached, once it is a non-empty batch of finite floats (else a clear error).

    ``images``: the method needs ``(N, C, H, W)`` images (a ``(C, H, W)`` image gets the
    ``x[None]`` hint). Without it any ``(N, ...)`` batch passes here, and a ``(C, H, W)``
    image given to a convolutional model is refused at its first convolution
    (``attribution_mode``), so every method refuses it the same way.
    """
    if images and isinstance(x, torch.Tensor) and x.dim() == 3:
        raise UserError(_unbatched(tuple(x.shape)))
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"attribute() takes a batched input tensor (N, ...), got {got}; for one "
                        "image (C, H, W) pass x[None]")
    if images and x.dim() != 4:
        raise UserError(f"attribute() takes (N, C, H, W) images, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"attribute() takes floating-point inputs, got {x.dtype}; map 8-bit "
                        "images to the model's range first, e.g. x.float() / 127.5 - 1")
    if x.numel() == 0:
        raise UserError(f"attribute() got an empty input of shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise UserError("attribute() got an input with NaN or infinite values")
    return x.detach()


class Attribution(ABC):
    """Base class: ``Method(model).attribute(x, target=..., **options)`` -> raw signed tensor.

    No normalisation ever happens here (see ``gandissect.visualize.overlay`` for display).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @abstractmethod
    def attribute(self, x: torch.Tensor, target: Target = None, **options) -> torch.Tensor:
        """Attribution of ``target`` for the batch ``x``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"
