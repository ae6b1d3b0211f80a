"""NVIDIA's StyleGAN2-ADA and StyleGAN3 network pickles -> ``StyleGAN2Generator`` /
``StyleGAN3Generator``, read without running anything from the file.

The files of NVlabs/stylegan2-ada-pytorch and NVlabs/stylegan3 (training snapshots
``network-snapshot-*.pkl``, the released ``stylegan2-*.pkl``, ``stylegan3-t-*.pkl`` and
``stylegan3-r-*.pkl``) are plain pickles of a dict ``{'G', 'D', 'G_ema', 'augment_pipe',
'training_set_kwargs', ...}``. Their networks are persistent objects: each is pickled as the
call ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, ``meta = {'type': 'class',
'version', 'module_src', 'class_name', 'state'}``, where ``module_src`` is the Python source of
the module defining the class (NVIDIA's loader executes it) and ``state`` the module's
``__dict__``: ``_parameters``, ``_buffers``, ``_modules`` (more persistent objects),
``_init_args``, ``_init_kwargs`` and plain attributes, NumPy scalars and arrays among them.
Tensors are pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``
(parameters wrapped in ``_rebuild_parameter``), each storage as
``torch.storage._load_from_bytes(data)`` with ``data`` a ``torch.save`` stream.

``read_network_pickle`` unpickles with ``find_class`` limited to a short list: the reconstruct
call becomes a ``PersistentObject`` (class name, source text, state; the source is never
imported or executed), tensors and storages are rebuilt by equivalents that only build tensors
(storage bytes through ``torch.load(weights_only=True)``), and the rest are containers
(``collections.OrderedDict``, sets, ``dnnlib.util.EasyDict`` read as a dict) and NumPy
scalars, dtypes and arrays (never of Python objects). Any other global is refused before it is
called: "refusing to load FILE: the pickle would run Python code (module.name)".

``describe_generator`` reads ``G_ema`` into a ``NetworkDescription``: class name, family
(``networks_stylegan2`` or ``networks_stylegan3``, told by the class and child names),
constructor arguments and the flat state dict. The builders rename NVIDIA's keys:

    StyleGAN2-ADA                              StyleGAN2Generator
    mapping.fc{i}.*                            mapping.{i+1}.*
    mapping.embed.*, mapping.w_avg             embed.*, w_avg
    synthesis.b4.const (C, 4, 4)               input.input (1, C, 4, 4)
    synthesis.b4.conv1, b{R}.conv0, .conv1     layer1, layer2, layer3, ...
      .weight / .affine / .bias                  .conv.weight / .conv.modulation / .activate.bias
      .noise_const / .noise_strength             .noise.fixed / .noise.weight
      .resample_filter (conv0)                   .conv.blur.kernel (x 4, the upsampling gain)
    synthesis.b{R}.torgb.*                     to_rgb_{R}x{R}.* (the last: output_{R}x{R}.*)
    synthesis.b{R}.resample_filter             to_rgb_{R}x{R}.upsample.kernel (x 4)

    StyleGAN3                                  StyleGAN3Generator
    mapping.*                                  mapping.*
    synthesis.input.*                          input.*
    synthesis.L{K}_{size}_{units}.*            layer{K}.* (the last, to-RGB: output.*)

StyleGAN2-ADA specifics kept: the mapping's learning-rate multiplier (read from the file), the
2nd-moment normalisation of z and of the embedded class, the activation clamp (``conv_clamp``,
256 in the released models), the noise as the stored constant maps (NVIDIA's ``noise_mode
='const'``). Only the ``skip`` generator architecture (every released model's) is read.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gandissect.errors import UserError
from gandissect.models.loaders.files import UnsafeCheckpointError, existing_file, fit_state_dict
from gandissect.models.loaders.plugins import check_generator
from gandissect.models.stylegan2 import StyleGAN2Generator
from gandissect.models.stylegan3 import StyleGAN3Generator

__all__ = ["NetworkDescription", "PersistentObject", "describe_generator", "describe_network",
           "load_nvidia", "nvidia_generator", "read_network_pickle", "stylegan2_from_nvidia",
           "stylegan3_from_nvidia"]

_PERSISTENCE = ("torch_utils.persistence", "_reconstruct_persistent_obj")
_TENSORFLOW = ("dnnlib.tflib.network", "Network")


class _Refused(Exception):
    """A global or payload the restricted unpickler will not build (its name in args[0])."""


@dataclass
class PersistentObject:
    """What NVIDIA's persistence stored for one object: its class name, the source of the
    module that defines it (text only, never run) and its ``__dict__``."""

    class_name: str
    module_src: str
    state: dict
    version: int | None = None

    def _table(self, name: str) -> Mapping:
        table = self.state.get(name) or {}
        if not isinstance(table, Mapping):
            raise UserError(f"{self.class_name}.{name} is a {type(table).__name__}, not a "
                            "dict: not a network pickle gandissect can read")
        return table

    def children(self) -> dict[str, PersistentObject]:
        """The submodules (``_modules``) that are persistent objects, by name."""
        return {str(k): v for k, v in self._table("_modules").items()
                if isinstance(v, PersistentObject)}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The object's own parameters and persistent buffers (None entries left out)."""
        transient = self.state.get("_non_persistent_buffers_set") or ()
        transient = set(transient) if isinstance(transient, set | frozenset | list) else set()
        found = dict(self._table("_parameters"))
        found.update({k: v for k, v in self._table("_buffers").items() if k not in transient})
        out = {}
        for name, value in found.items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise UserError(f"{self.class_name}.{name} is a {type(value).__name__}, not a "
                                "tensor: not a network pickle gandissect can read")
            out[str(name)] = value
        return out


@dataclass
class NetworkDescription:
    """A persistent network read from a pickle: class, family (``"stylegan2"``,
    ``"stylegan3"``, or None for any other), constructor arguments, flat state dict and every
    submodule by dotted name (``""``: the network), for attribute look-ups."""

    class_name: str
    family: str | None
    init_args: list
    init_kwargs: dict
    state_dict: dict[str, torch.Tensor]
    modules: dict[str, PersistentObject] = field(repr=False)

    def attribute(self, module: str, name: str, default: Any = None) -> Any:
        """A plain attribute of a submodule (NumPy values as Python ones), or ``default``."""
        found = self.modules.get(module)
        if found is None or name not in found.state:
            return default
        return _plain(found.state[name])


# ------------------------------------------------------------------- the restricted unpickler
class _EasyDict(dict):
    """``dnnlib.util.EasyDict`` as the unpickler builds it: a dict (with a ``__dict__`` for
    the state pickle may set)."""


def _persistent_object(meta: object) -> PersistentObject:
    if not isinstance(meta, Mapping) or meta.get("type") != "class":
        raise _Refused("a persistent object that is not a class instance")
    class_name, source, state = meta.get("class_name"), meta.get("module_src"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(source, str) \
            or not isinstance(state, Mapping):
        raise _Refused("a persistent object without class name, source or state")
    return PersistentObject(class_name, source, dict(state), meta.get("version"))


def _load_storage(data: object) -> torch.TypedStorage | torch.UntypedStorage:
    if not isinstance(data, bytes | bytearray):
        raise _Refused(f"torch.storage._load_from_bytes of a {type(data).__name__}")
    try:
        storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise _Refused(f"{found.group(1) if found else 'code'} inside a tensor's storage") \
            from None
    if not isinstance(storage, torch.TypedStorage | torch.UntypedStorage):
        raise _Refused(f"a {type(storage).__name__} where a tensor's storage belongs")
    return storage


def _rebuild_tensor(storage: object, offset: object, size: object, stride: object,
                    *_: object) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2``'s tensor, without gradients or hooks."""
    if not isinstance(storage, torch.TypedStorage) \
            or not isinstance(offset, int) or not isinstance(size, tuple | list) \
            or not isinstance(stride, tuple | list) \
            or not all(isinstance(v, int) for v in (*size, *stride)):
        raise _Refused("torch._utils._rebuild_tensor_v2 with arguments that are not a tensor's")
    return torch._utils._rebuild_tensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: object, *_: object) -> torch.Tensor:
    """``torch._utils._rebuild_parameter``'s data: a plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise _Refused("torch._utils._rebuild_parameter of something other than a tensor")
    return data


_NUMPY_SCALAR = np.float64(0).__reduce__()[0]  # numpy's own rebuild functions
_NUMPY_ARRAY = np.zeros(1).__reduce__()[0]


def _numpy_dtype(spec: object, align: object = False, copy: object = False) -> np.dtype:
    dtype = np.dtype(spec) if isinstance(spec, str) else None
    if dtype is None or dtype.hasobject:
        raise _Refused(f"numpy.dtype({spec!r}) (Python objects)")
    return np.dtype(spec, bool(align), bool(copy))


def _numpy_scalar(dtype: object, data: object = None) -> np.generic:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise _Refused("a NumPy scalar of Python objects")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_array(subtype: object, shape: object, typecode: object) -> np.ndarray:
    if subtype is not np.ndarray:
        raise _Refused("a NumPy array of a subclass")
    return _NUMPY_ARRAY(np.ndarray, shape, typecode)


_ALLOWED: dict[tuple[str, str], Any] = {
    _PERSISTENCE: _persistent_object,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): np.ndarray,
    **{(f"numpy.{core}.multiarray", name): function for core in ("core", "_core")
       for name, function in (("scalar", _numpy_scalar), ("_reconstruct", _numpy_array))},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only what ``_ALLOWED`` names; never imports a module."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found

    def persistent_load(self, pid: object) -> Any:
        raise _Refused("a persistent id (an external object)")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def read_network_pickle(path: str | Path) -> object:
    """The unpickled content of an NVIDIA network pickle, its networks as ``PersistentObject``
    (see the module docstring); nothing from the file is executed."""
    path = existing_file(path, "network pickle")
    with open(path, "rb") as file:
        head = file.read(4)
    if head.startswith(b"PK"):
        raise UserError(f"{path} is a PyTorch zip checkpoint (torch.save), not an NVIDIA network "
                        "pickle; rosinality's stylegan2-pytorch files load as stylegan2:PATH")
    try:
        with open(path, "rb") as file, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's TypedStorage deprecation
            return _RestrictedUnpickler(file).load()
    except _Refused as refused:
        what = refused.args[0]
        if what == ".".join(_TENSORFLOW):
            raise UserError(
                f"{path} is a TensorFlow StyleGAN pickle (NVlabs/stylegan or stylegan2): convert "
                "it once, on a machine where you trust it, with python legacy.py --source=FILE "
                "--dest=NEW.pkl in a clone of NVlabs/stylegan2-ada-pytorch, then load NEW.pkl"
            ) from None
        raise UnsafeCheckpointError(f"refusing to load {path}: the pickle would run Python "
                                    f"code ({what})") from None
    except UserError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, RuntimeError, struct.error, OverflowError) as error:
        raise UserError(f"cannot read {path} as an NVIDIA network pickle ({_first_line(error)}):"
                        " it is damaged, truncated or not a pickle; download it again") from None


# ------------------------------------------------------------------------------ description
def _plain(value: Any) -> Any:
    """NumPy scalars and arrays as Python numbers and lists; EasyDicts as dicts."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping) and not isinstance(value, PersistentObject):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


def _walk(obj: PersistentObject, prefix: str, state: dict, modules: dict) -> None:
    if any(seen is obj for seen in modules.values()):
        raise UserError(f"{prefix.rstrip('.')} ({obj.class_name}) appears twice in the network "
                        "(a cycle or a shared part): not a network pickle gandissect can read")
    modules[prefix.rstrip(".")] = obj
    for name, tensor in obj.tensors().items():
        state[prefix + name] = tensor
    for name, child in obj.children().items():
        _walk(child, f"{prefix}{name}.", state, modules)


def _family(network: PersistentObject) -> str | None:
    children = network.children()
    synthesis, mapping = children.get("synthesis"), children.get("mapping")
    if network.class_name != "Generator" or synthesis is None or mapping is None \
            or synthesis.class_name != "SynthesisNetwork" or mapping.class_name != "MappingNetwork":
        return None
    layers = synthesis.children()
    if getattr(layers.get("input"), "class_name", None) == "SynthesisInput" and any(
            re.fullmatch(r"L\d+_\d+_\d+", n) and c.class_name == "SynthesisLayer"
            for n, c in layers.items()):
        return "stylegan3"
    if layers and all(re.fullmatch(r"b\d+", n) and c.class_name == "SynthesisBlock"
                      for n, c in layers.items()):
        return "stylegan2"
    return None


def describe_network(network: PersistentObject) -> NetworkDescription:
    """The description of one persistent network (see ``NetworkDescription``)."""
    state: dict[str, torch.Tensor] = {}
    modules: dict[str, PersistentObject] = {}
    _walk(network, "", state, modules)
    args = network.state.get("_init_args")
    kwargs = network.state.get("_init_kwargs")
    args = list(_plain(tuple(args))) if isinstance(args, list | tuple) else []
    kwargs = _plain(dict(kwargs)) if isinstance(kwargs, Mapping) else {}
    return NetworkDescription(network.class_name, _family(network), args, kwargs, state,
                              modules)


def describe_generator(path: str | Path) -> NetworkDescription:
    """``G_ema`` of an NVIDIA network pickle (``G`` when it has no ``G_ema``; the network
    itself for a pickle of one network), described."""
    data = read_network_pickle(path)
    if isinstance(data, Mapping):
        network = data.get("G_ema", data.get("G"))
        if not isinstance(network, PersistentObject):
            keys = ", ".join(map(str, list(data)[:8]))
            raise UserError(f"{path} holds no G_ema generator (top-level keys: {keys}); "
                            "expected a StyleGAN2-ADA or StyleGAN3 network pickle")
    elif isinstance(data, PersistentObject):
        network = data
    else:
        raise UserError(f"{path} holds a {type(data).__name__}, not an NVIDIA network pickle "
                        "(a dict with G_ema)")
    return describe_network(network)


# --------------------------------------------------------------------------- StyleGAN2-ADA
def _mapping_options(network: NetworkDescription, source: str) -> dict[str, Any]:
    """z_dim, c_dim, w_dim, depth and learning-rate multiplier of the mapping network."""
    sizes = {name: network.attribute("mapping", name) for name in
             ("z_dim", "c_dim", "w_dim", "num_layers")}
    sizes = {k: network.init_kwargs.get(k) if v is None else v for k, v in sizes.items()}
    if any(not isinstance(v, int) for v in sizes.values()) or sizes["z_dim"] < 1:
        raise UserError(f"{source}: the mapping network declares no latent size (z_dim "
                        f"{sizes['z_dim']!r}, c_dim {sizes['c_dim']!r}); not a generator "
                        "gandissect can sample")
    activation = network.attribute("mapping.fc0", "activation", "lrelu")
    if activation != "lrelu":
        raise UserError(f"{source}: the mapping network uses {activation!r}; gandissect "
                        "implements the released models' leaky ReLU only")
    lr_multiplier = float(network.attribute("mapping.fc0", "bias_gain", 0.01))
    return {**sizes, "lr_multiplier": lr_multiplier}


def _rgb_name(size: int, resolution: int) -> str:
    return f"output_{size}x{size}" if size == resolution else f"to_rgb_{size}x{size}"


def _kernel_2d(filter_: torch.Tensor) -> torch.Tensor:
    """A resampling filter as our 2-D blur kernel: the outer product of a separable one, times
    the upsampling gain 4."""
    kernel = torch.outer(filter_, filter_) if filter_.dim() == 1 else filter_
    return kernel * 4


_LAYER_NAMES = {"weight": "conv.weight", "affine.weight": "conv.modulation.weight",
                "affine.bias": "conv.modulation.bias", "bias": "activate.bias",
                "noise_const": "noise.fixed", "noise_strength": "noise.weight"}
_RGB_NAMES = {"weight": "conv.weight", "affine.weight": "conv.modulation.weight",
              "affine.bias": "conv.modulation.bias", "bias": "bias"}


def _stylegan2_name(key: str, layers: Mapping[str, int], resolution: int) -> str | None:
    """Our name for one of NVIDIA's StyleGAN2 keys (see the module docstring): None for the
    filters of layers that do not resample, the key itself when unknown."""
    found = re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", key)
    if found:
        return f"mapping.{int(found[1]) + 1}.{found[2]}"
    if key == "mapping.w_avg" or key.startswith("mapping.embed."):
        return key.removeprefix("mapping.")
    if key == "synthesis.b4.const":
        return "input.input"
    found = re.fullmatch(r"synthesis\.(b\d+\.conv[01])\.(.+)", key)
    if found and found[1] in layers:
        prefix = f"layer{layers[found[1]]}"
        if found[2] == "resample_filter":  # used by the upsampling layer only
            return f"{prefix}.conv.blur.kernel" if found[1].endswith("conv0") else None
        return f"{prefix}.{_LAYER_NAMES[found[2]]}" if found[2] in _LAYER_NAMES else key
    found = re.fullmatch(r"synthesis\.b(\d+)\.(torgb\.(.+)|resample_filter)", key)
    if found:
        rgb = _rgb_name(int(found[1]), resolution)
        if found[2] == "resample_filter":  # upsamples the RGB so far
            return f"{rgb}.upsample.kernel" if int(found[1]) > 4 else None
        return f"{rgb}.{_RGB_NAMES[found[3]]}" if found[3] in _RGB_NAMES else key
    return key


def _stylegan2_state(state: Mapping[str, torch.Tensor], blocks: list[int],
                     generator: StyleGAN2Generator) -> dict[str, torch.Tensor]:
    """NVIDIA's StyleGAN2 state dict under our names and shapes."""
    expected = generator.state_dict()
    layers = {"b4.conv1": 1}
    for j, size in enumerate(blocks[1:], start=1):
        layers.update({f"b{size}.conv0": 2 * j, f"b{size}.conv1": 2 * j + 1})
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _stylegan2_name(key, layers, generator.resolution)
        if name is None:
            continue
        if name.endswith((".blur.kernel", ".upsample.kernel")):
            value = _kernel_2d(value)
        elif name in expected and value.numel() == expected[name].numel():
            value = value.reshape(expected[name].shape)  # e.g. (O, I, k, k) -> (1, O, I, k, k)
        renamed[name] = value
    for index in layers.values():  # generators trained without noise (use_noise=False)
        for name in ("noise.fixed", "noise.weight"):
            key = f"layer{index}.{name}"
            renamed.setdefault(key, torch.zeros_like(expected[key]))
    return renamed


def stylegan2_from_nvidia(network: NetworkDescription,
                          source: str = "the pickle") -> StyleGAN2Generator:
    """A ``StyleGAN2Generator`` sized by and loaded with a StyleGAN2-ADA ``G_ema``."""
    state = network.state_dict
    blocks = sorted(int(m[1]) for m in (re.fullmatch(r"synthesis\.b(\d+)", n)
                                        for n in network.modules) if m)
    if not blocks or blocks != [4 * 2 ** k for k in range(len(blocks))] \
            or "synthesis.b4.const" not in state:
        raise UserError(f"{source}: the synthesis blocks are {blocks}; expected b4, b8, ... "
                        "with the 4x4 constant in b4")
    architectures = {network.attribute(f"synthesis.b{r}", "architecture", "skip")
                     for r in blocks}
    if architectures != {"skip"}:
        raise UserError(f"{source}: a generator of architecture "
                        f"{', '.join(sorted(map(str, architectures - {'skip'})))}; gandissect "
                        "reads the 'skip' architecture of the released StyleGAN2-ADA models only")
    activation = network.attribute("synthesis.b4.conv1", "activation", "lrelu")
    if activation != "lrelu":
        raise UserError(f"{source}: synthesis layers with {activation!r}; gandissect implements "
                        "the released models' leaky ReLU only")
    mapping = _mapping_options(network, source)
    last = blocks[-1]
    if f"synthesis.b{last}.torgb.weight" not in state:
        raise UserError(f"{source}: no synthesis.b{last}.torgb.weight; not a StyleGAN2-ADA "
                        "generator")
    img_channels = int(state[f"synthesis.b{last}.torgb.weight"].shape[0])
    if img_channels not in (1, 3):
        raise UserError(f"{source}: images of {img_channels} channels; gandissect reads RGB "
                        "and grey generators")
    filter_ = state.get(f"synthesis.b{last}.resample_filter")
    embed = state.get("mapping.embed.weight")
    channels = [int(state["synthesis.b4.const"].shape[0])] + [
        int(state[f"synthesis.b{r}.conv0.weight"].shape[0]) for r in blocks[1:]
        if f"synthesis.b{r}.conv0.weight" in state]
    conv_clamp = network.attribute("synthesis.b4.conv1", "conv_clamp")
    generator = StyleGAN2Generator(
        style_dim=mapping["w_dim"], n_mlp=mapping["num_layers"], channels=channels,
        lr_mul=mapping["lr_multiplier"],
        blur_size=int(filter_.shape[0]) if filter_ is not None else 4,
        z_dim=mapping["z_dim"], c_dim=mapping["c_dim"],
        embed_dim=int(embed.shape[0]) if embed is not None else None,
        conv_clamp=None if conv_clamp is None else float(conv_clamp),
        img_channels=img_channels)
    fit_state_dict(generator, _stylegan2_state(state, blocks, generator), source)
    return generator


# ------------------------------------------------------------------------------- StyleGAN3
_STYLEGAN3_OPTIONS = {  # NVIDIA's keyword -> StyleGAN3Generator's
    "img_resolution": "resolution", "img_channels": "img_channels", "conv_clamp": "conv_clamp",
    "output_scale": "output_scale", "channel_base": "channel_base",
    "channel_max": "channel_max", "num_layers": "num_layers", "num_critical": "num_critical",
    "first_cutoff": "first_cutoff", "first_stopband": "first_stopband",
    "last_stopband_rel": "last_stopband_rel", "margin_size": "margin_size",
    "conv_kernel": "conv_kernel", "filter_size": "filter_size",
    "lrelu_upsampling": "lrelu_upsampling", "use_radial_filters": "use_radial_filters",
}
# options that change training or speed only
_STYLEGAN3_IGNORED = {"z_dim", "c_dim", "w_dim", "mapping_kwargs", "num_fp16_res",
                      "magnitude_ema_beta"}
_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def _stylegan3_options(network: NetworkDescription, source: str) -> dict[str, Any]:
    kwargs = {**dict(zip(_POSITIONAL, network.init_args)), **network.init_kwargs}
    unknown = sorted(set(kwargs) - set(_STYLEGAN3_OPTIONS) - _STYLEGAN3_IGNORED)
    if unknown:
        raise UserError(f"{source}: G_ema was built with options gandissect does not implement "
                        f"({', '.join(unknown)}); it reads the StyleGAN3 T and R configurations")
    if "img_resolution" not in kwargs:
        raise UserError(f"{source}: G_ema's constructor arguments name no img_resolution")
    mapping = _mapping_options(network, source)
    options = {ours: kwargs[theirs] for theirs, ours in _STYLEGAN3_OPTIONS.items()
               if theirs in kwargs}
    return {**options, "z_dim": mapping["z_dim"], "c_dim": mapping["c_dim"],
            "w_dim": mapping["w_dim"], "mapping_layers": mapping["num_layers"],
            "lr_multiplier": mapping["lr_multiplier"]}


def _check_layout(network: NetworkDescription, generator: StyleGAN3Generator,
                  names: list[str], source: str) -> None:
    """The file's stored layer geometry must be the one the paper's layout gives."""
    for name, spec in zip(names, generator.specs):
        stored = {key: network.attribute(f"synthesis.{name}", key) for key in
                  ("padding", "up_factor", "down_factor", "in_size", "out_size")}
        ours = {"padding": list(spec.padding), "up_factor": spec.up, "down_factor": spec.down,
                "in_size": [spec.in_size] * 2, "out_size": [spec.out_size] * 2}
        wrong = [key for key, value in stored.items()
                 if value is not None and list(np.ravel(value)) != list(np.ravel(ours[key]))]
        if wrong:
            raise UserError(f"{source}: layer {name} stores {wrong[0]} {stored[wrong[0]]}, the "
                            f"StyleGAN3 layout gives {ours[wrong[0]]}; not a T or R generator "
                            "gandissect can rebuild")


def stylegan3_from_nvidia(network: NetworkDescription,
                          source: str = "the pickle") -> StyleGAN3Generator:
    """A ``StyleGAN3Generator`` built from a StyleGAN3 ``G_ema``'s constructor arguments and
    loaded with its weights and filters."""
    options = _stylegan3_options(network, source)
    if options.get("img_channels", 3) not in (1, 3):
        raise UserError(f"{source}: images of {options['img_channels']} channels; gandissect "
                        "reads RGB and grey generators")
    generator = StyleGAN3Generator(**options)
    found = {int(m[1]): m[0] for m in (re.fullmatch(r"L(\d+)_\d+_\d+", n.removeprefix(
        "synthesis.")) for n in network.modules if n.startswith("synthesis.")) if m}
    names = [found.get(k, f"L{k}") for k in range(len(generator.specs))]
    if sorted(found) != list(range(len(generator.specs))):
        raise UserError(f"{source}: the synthesis layers are {sorted(found.values())}; the "
                        f"arguments give {len(generator.specs)} layers")
    _check_layout(network, generator, names, source)
    last = len(generator.specs) - 1
    renamed = {}
    for key, value in network.state_dict.items():
        head, _, rest = key.partition(".")
        if head == "synthesis":
            layer, _, rest = rest.partition(".")
            index = next((k for k, n in enumerate(names) if n == layer), None)
            head = "input" if layer == "input" else (
                "output" if index == last else f"layer{index}" if index is not None else layer)
            key = f"{head}.{rest}"
        renamed[key] = value
    fit_state_dict(generator, renamed, source)
    return generator


# ------------------------------------------------------------------------------- entry points
def load_nvidia(path: str | Path, device: str | torch.device = "cpu",
                truncation: float = 1.0) -> nn.Module:
    """The ``G_ema`` generator of a StyleGAN2-ADA or StyleGAN3 pickle, in eval mode, with
    truncation psi ``truncation`` (1: none)."""
    if not 0 <= truncation <= 1:
        raise UserError(f"truncation must lie in [0, 1], got {truncation}")
    network = describe_generator(path)
    if network.family == "stylegan2":
        generator = stylegan2_from_nvidia(network, str(path))
    elif network.family == "stylegan3":
        generator = stylegan3_from_nvidia(network, str(path))
    else:
        children = ", ".join(f"{n} ({o.class_name})" for n, o in
                             list(network.modules[""].children().items())[:3])
        raise UserError(f"{path}: G_ema is a {network.class_name} with {children or 'no parts'},"
                        " not a StyleGAN2-ADA or StyleGAN3 generator (networks_stylegan2 / "
                        "networks_stylegan3), the two that gandissect reads")
    generator.truncation = float(truncation)
    return generator.to(device).eval()


def nvidia_generator(target: str, device: str | torch.device = "cpu",
                     z_dim: int | None = None) -> nn.Module:
    """``nvidia:PATH``: ``load_nvidia``'s generator, checked on a latent (a class-conditional
    one with class 0 for the check; it is left with no class chosen)."""
    generator = load_nvidia(target, device)
    if generator.n_classes:
        generator.class_index = 0
    try:
        return check_generator(generator, z_dim, check_range=False, name=f"nvidia:{target}")
    finally:
        generator.class_index = None
