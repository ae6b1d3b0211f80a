"""The shared torch helpers: where a model computes, and the context that restores modes."""

import pytest
import torch
from torch import nn

from gandissect.attribute.base import attribution_mode
from gandissect.torchutil import eval_mode, model_device


class BufferOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.zeros(3))

    def forward(self, x):
        return x + self.table.sum()


class Plain:
    """A plug-in segmenter that is no ``nn.Module``."""

    def segment(self, images):
        return {}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_model_device_for_every_kind_of_model():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(BufferOnly()) == torch.device("cpu")
    assert model_device(nn.Identity()) == torch.device("cpu")  # nothing: the CPU
    assert model_device(Plain()) == torch.device("cpu")
    scripted = torch.jit.script(nn.Sequential(nn.Identity()))  # no parameters at all
    assert model_device(scripted) == torch.device("cpu")
    meta = nn.Linear(2, 2, device="meta")
    assert model_device(meta) == torch.device("meta")  # taken from the model, not assumed
    only_buffer = BufferOnly().to("meta")
    assert model_device(only_buffer) == torch.device("meta")


def mixed() -> nn.Sequential:
    """Submodules in different modes, parameters with different flags, an in-place ReLU."""
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.ReLU(inplace=True),
                          nn.Dropout(0.5), nn.Linear(3, 1))
    model[1].eval()
    model[4].weight.requires_grad_(False)
    return model


def flags(model: nn.Module):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [m.inplace for m in model.modules() if hasattr(m, "inplace")])


@pytest.mark.parametrize("options", [{}, {"freeze": True}, {"freeze": True,
                                                             "out_of_place": True}])
def test_eval_mode_restores_every_flag_even_after_an_error(options):
    first, second = mixed(), mixed().train()
    before = flags(first), flags(second)
    with pytest.raises(RuntimeError, match="inside"), eval_mode(first, second, Plain(),
                                                                 **options):
        for model in (first, second):
            assert not any(m.training for m in model.modules())
            frozen = not any(p.requires_grad for p in model.parameters())
            assert frozen == options.get("freeze", False)
            assert model[2].inplace == (not options.get("out_of_place", False))
        raise RuntimeError("inside")
    assert (flags(first), flags(second)) == before


def test_attribution_mode_is_eval_mode_frozen_out_of_place_with_gradients():
    model = mixed()
    before = flags(model)
    with torch.no_grad(), attribution_mode(model):
        assert torch.is_grad_enabled()
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
        assert not model[2].inplace
    assert flags(model) == before
