"""Layer hooks: tracing, partial forward and editing leave no trace and do what they say."""

import pytest
import torch
from torch import nn

from gandissect.hooks import (
    Edit,
    StopForward,
    Trace,
    TraceDict,
    edit_alpha,
    get_layer,
    partial_forward,
)


class TwoReLU(nn.Module):
    """A block that reuses one in-place ReLU module twice (as torchvision's BasicBlock does)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 5))

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x) - 0.1)
        return self.head(x)


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TwoReLU().eval()


@pytest.fixture
def x():
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_output_unchanged_by_hooks_coming_and_going(model, x):
    before = model(x)
    with TraceDict(model, ["conv1", "relu", "conv2", "head.1"]):
        during = model(x)
    after = model(x)
    assert torch.equal(before, during) and torch.equal(before, after)
    assert no_hooks(model)


def test_hooks_removed_on_exception(model, x):
    with pytest.raises(RuntimeError, match="boom"), Trace(model, "conv1"), Edit(
        model, "conv2", alpha=1.0
    ):
        raise RuntimeError("boom")
    assert no_hooks(model)
    with pytest.raises(RuntimeError), Trace(model, "conv1"):
        model(torch.randn(2, 5, 8, 8))  # wrong channel count fails inside the forward
    assert no_hooks(model)


def test_retained_output_survives_inplace_relu(model, x):
    with Trace(model, "conv1") as trace:
        model(x)
    expected = model.conv1(x)
    assert torch.equal(trace.output, expected)
    assert (trace.output < 0).any(), "the in-place ReLU after conv1 must not alter the trace"


def test_reused_module_keeps_every_call(model, x):
    with Trace(model, "relu") as trace:
        model(x)
    first = torch.relu(model.conv1(x))
    second = torch.relu(model.conv2(first) - 0.1)
    assert len(trace.outputs) == 2
    assert torch.equal(trace.outputs[0], first) and torch.equal(trace.output, second)


def test_partial_forward_stops_at_layer(model, x):
    model.head = nn.Sequential(nn.Flatten(), Exploding())
    out = partial_forward(model, "conv2", x)
    assert torch.equal(out, model.conv2(torch.relu(model.conv1(x))))
    with Trace(model, "conv1", stop=True) as trace:
        model(x)
    assert torch.equal(trace.output, model.conv1(x))
    assert no_hooks(model)


class Exploding(nn.Module):
    def forward(self, x):
        raise AssertionError("a partial forward must not reach this layer")


def test_tracedict_stops_after_all_layers_whatever_the_order(model, x):
    model.head = nn.Sequential(nn.Flatten(), Exploding())
    with TraceDict(model, ["conv2", "conv1"], stop=True) as traces:
        model(x)
    assert set(traces) == {"conv2", "conv1"}
    assert torch.equal(traces["conv1"].output, model.conv1(x))


def test_stop_forward_outside_trace_propagates(model, x):
    with pytest.raises(StopForward):
        raise StopForward("x")


def test_edit_alpha_zero_is_identity(model, x):
    before = model(x)
    with Edit(model, "conv2", alpha=torch.zeros(4, 8, 8), value=torch.full((4,), 7.0)):
        assert torch.equal(model(x), before)


def test_edit_alpha_one_value_zero_zeroes_chosen_units_and_pixels(model, x):
    mask = torch.zeros(8, 8)
    mask[2:5, 1:7] = 1
    alpha = edit_alpha([0, 3], 4, mask)
    with Trace(model, "conv2", clone=True) as clean:
        model(x)
    with Edit(model, "conv2", alpha=alpha, value=0.0, retain_output=True) as edited:
        model(x)
    out, ref = edited.output, clean.output
    chosen = torch.zeros(4, 8, 8, dtype=torch.bool)
    chosen[[0, 3]] = mask.bool()
    assert (out[:, chosen] == 0).all()
    assert torch.equal(out[:, ~chosen], ref[:, ~chosen])


def test_edit_rule_matches_formula_per_unit_and_pixel(model, x):
    torch.manual_seed(3)
    alpha = torch.rand(4, 8, 8)
    value = torch.randn(4)
    with Trace(model, "conv2") as clean:
        model(x)
    with Edit(model, "conv2", alpha=alpha, value=value, retain_output=True) as edited:
        model(x)
    x0 = clean.output
    for b in range(2):
        for u in range(4):
            for i in range(8):
                for j in range(8):
                    a = alpha[u, i, j]
                    expected = x0[b, u, i, j] * (1 - a) + value[u] * a
                    assert torch.isclose(edited.output[b, u, i, j], expected, atol=1e-6)


def test_edit_alpha_shapes_and_errors():
    assert edit_alpha(None, 3).shape == (3, 1, 1)
    assert edit_alpha([1], 3, torch.ones(2, 5, 5)).shape == (2, 3, 5, 5)
    with pytest.raises(ValueError, match="unit ids"):
        edit_alpha([3], 3)


def test_edit_bad_shapes_give_clear_errors(model, x):
    with pytest.raises(ValueError, match="does not broadcast"), Edit(
        model, "conv2", alpha=torch.ones(5, 8, 8)
    ):
        model(x)
    with pytest.raises(ValueError, match="units"), Edit(
        model, "conv2", alpha=1.0, value=torch.ones(3)
    ):
        model(x)
    assert no_hooks(model)


def test_unknown_layer_lists_valid_names(model):
    with pytest.raises(ValueError, match="conv1"):
        get_layer(model, "conv3")


def test_trace_on_torchvision_resnet_leaves_output_unchanged():
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    before = net(x)
    with TraceDict(net, ["layer1.0.relu", "layer4", "layer3.1.conv2"]) as traces:
        net(x)
    assert torch.equal(net(x), before)
    assert len(traces["layer1.0.relu"].outputs) == 2  # BasicBlock calls its ReLU twice
    assert traces["layer4"].output.shape == (1, 512, 2, 2)
    assert no_hooks(net)


@pytest.mark.parametrize("compile_with", ["script", "trace"])
def test_torchscript_submodules_are_not_offered_as_layers(model, x, compile_with):
    """Scripted modules refuse forward hooks and traced submodules silently never call them:
    neither is listed, and asking for one says why."""
    import warnings

    from gandissect.hooks import layer_names, layer_shapes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = (torch.jit.script(model.head) if compile_with == "script"
                    else torch.jit.trace(model.head, torch.randn(1, 4, 8, 8)))
    model.head = compiled
    assert layer_names(model) == ["conv1", "conv2", "relu"]
    for name in ("head", "head.1"):
        with pytest.raises(ValueError, match=f"layer '{name}' is a TorchScript module"):
            get_layer(model, name)
    assert set(layer_shapes(model, x)) == {"conv1", "conv2", "relu"}
    with Trace(model, "conv2") as trace:
        model(x)
    assert trace.output.shape == (2, 4, 8, 8) and no_hooks(model)
