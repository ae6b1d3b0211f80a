"""Layer hooks: tracing, partial forward and editing leave no trace and do what they say."""

import pytest
import torch
from conftest import Tripwire
from torch import nn

from gandissect.hooks import (
    Edit,
    Trace,
    TraceDict,
    apply_edit,
    edit_alpha,
    forward_from,
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


def test_a_stop_inside_nested_traces_ends_the_forward_once(model, x):
    """The inner trace's stop ends the forward (the head never runs); the outer trace, which
    has no stop of its own, keeps its layer's output, and the code after the inner block
    runs: the stop is swallowed where it was raised, not further out."""
    model.head = nn.Sequential(nn.Flatten(), Exploding())
    after = []
    with Trace(model, "conv1") as outer:
        with Trace(model, "conv2", stop=True) as inner:
            model(x)
            after.append("inside")  # the forward raised: never reached
        after.append("outside")
    assert after == ["outside"]
    with torch.no_grad():
        first = model.conv1(x)
        assert torch.equal(outer.output, first)
        assert torch.equal(inner.output, model.conv2(torch.relu(first)))
    assert no_hooks(model)


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


def test_edit_alpha_weighs_each_unit():
    weights = torch.tensor([0.25, 1.0, 0.0])
    mask = torch.zeros(2, 2)
    mask[0, 1] = 1
    alpha = edit_alpha([0, 1], 3, mask, strength=0.5, weights=weights)
    for unit in range(3):
        expected = (unit in (0, 1)) * 0.5 * float(weights[unit]) * mask
        assert torch.equal(alpha[unit], expected)
    for bad in (torch.ones(2), torch.tensor([0.5, 1.5, 0.0]), torch.full((3,), float("nan"))):
        with pytest.raises(ValueError, match=r"3 values in \[0, 1\]"):
            edit_alpha(None, 3, weights=bad)


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


def test_apply_edit_is_the_formula_element_by_element():
    """``apply_edit`` restated with loops, for every broadcast the library uses: alpha per
    unit, per unit and cell, per sample; value per unit and per sample and unit."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 4, 5, generator=g)
    alphas = [torch.rand(3, 1, 1, generator=g), torch.rand(3, 4, 5, generator=g),
              torch.rand(2, 3, 4, 5, generator=g), torch.tensor(0.25)]
    values = [0.0, torch.randn(3, generator=g), torch.randn(2, 3, 1, 1, generator=g)]
    for alpha in alphas:
        for value in values:
            out = apply_edit(x, alpha, value)
            a = alpha.expand(2, 3, 4, 5)
            v = torch.as_tensor(value, dtype=torch.float32)
            v = v.view(1, 3, 1, 1) if v.dim() == 1 else v
            v = v.expand(2, 3, 4, 5)
            for index in torch.cartesian_prod(*(torch.arange(n) for n in x.shape)).tolist():
                b, u, i, j = index
                expected = x[b, u, i, j] * (1 - a[b, u, i, j]) + v[b, u, i, j] * a[b, u, i, j]
                assert torch.isclose(out[b, u, i, j], expected, atol=1e-6)


def test_apply_edit_keeps_gradients_and_refuses_what_would_grow_the_output():
    x = torch.randn(1, 3, 2, 2)
    a = torch.full((3, 1, 1), 0.5, requires_grad=True)
    apply_edit(x, a, 2.0).sum().backward()  # d/da [x (1 - a) + 2 a] = 2 - x
    torch.testing.assert_close(a.grad, (2 - x).sum((0, 2, 3)).view(3, 1, 1))
    with pytest.raises(ValueError, match="does not broadcast"):
        apply_edit(x, torch.ones(2, 3, 2, 2))  # two masks for one image
    with pytest.raises(ValueError, match="edit value .* does not broadcast"):
        apply_edit(x, 1.0, torch.ones(2, 3, 1, 1))


class NotSequential(nn.Module):
    """The same layers as a plain module, whose second layer also reads the input (as a
    StyleGAN2 layer reads w): ``forward_from`` must run it again from the input."""

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x):
        h = self.layers[0](x)
        h = self.layers[1](h) + 0.1 * x.mean()
        return self.layers[2](h)


def test_forward_from_a_layer_equals_the_edit_hook():
    """From a layer's own output, ``forward_from`` gives the model's output; from an edited
    output, what ``Edit`` gives: on a sequential model (only the later children run: the
    earlier one is armed to fail) and on a model that must run again from its input."""
    torch.manual_seed(0)
    sequential = nn.Sequential(Tripwire(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1),
                               nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(2, 3, 6, 6)
    alpha = edit_alpha([1, 2], 4, torch.eye(6))
    for model, layer in ((sequential, "1"), (NotSequential(sequential), "layers.1")):
        with torch.no_grad():
            features = partial_forward(model, layer, x)
            whole = model(x)
            with Edit(model, layer, alpha=alpha, value=3.0):
                edited = model(x)
            sequential[0].armed = model is sequential
            try:
                assert torch.equal(forward_from(model, layer, features, x), whole)
                assert torch.equal(forward_from(model, layer, apply_edit(features, alpha, 3.0),
                                                x), edited)
            finally:
                sequential[0].armed = False
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
