"""Causal effects on a toy generator whose unit 0 draws the concept and nothing else."""

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gandissect.ace import ace_report, units_by_iou
from gandissect.causal import (
    ConceptRef,
    ace_sample,
    context_table,
    insertion_by_context,
    insertion_maps,
    locality,
    refine_by_swaps,
    removal,
    select_by_ace,
)
from gandissect.dissect import dissect, latents
from gandissect.intervene import Stroke, render_edited


class Units(nn.Module):
    """z -> 4 units at 8x8: unit 0 is a blob whose place depends on z, others are noise."""

    def forward(self, z):
        n = z.shape[0]
        yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
        cy = (z[:, 0].tanh() + 1) * 3.5
        cx = (z[:, 1].tanh() + 1) * 3.5
        blob = ((yy - cy.view(-1, 1, 1)) ** 2 + (xx - cx.view(-1, 1, 1)) ** 2 < 4).float()
        blob = blob * (z[:, 2] > -0.5).float().view(-1, 1, 1)  # absent in some images
        noise = (z[:, 3:6, None, None] * torch.ones(n, 3, 8, 8)).abs() * 0.1
        return torch.cat([blob[:, None] * 2, noise], 1)


class Draw(nn.Module):
    """Units -> a 32 px image: red where unit 0 is high, a grey background elsewhere."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        red = torch.nn.functional.interpolate(x[:, :1], scale_factor=4, mode="nearest")
        red = red * self.scale - 1  # unit 0 at 2 -> red 1; at 0 -> red -1 (no saturation)
        grey = torch.zeros_like(red)
        return torch.cat([red, grey, grey], 1)


class Toy(nn.Sequential):
    z_dim = 8
    resolution = 32

    def __init__(self):
        super().__init__()
        self.add_module("layer1", Units())
        self.add_module("output", Draw())


class ToySegmenter(nn.Module):
    """object: 1 = tree where red > 0 else 2 = grass."""

    concepts = {"object": ["none", "tree", "grass"]}

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(10.0))

    def forward(self, images):
        tree = images[:, 0] * self.gain
        return {"object": torch.stack([torch.full_like(tree, -50), tree, -tree], 1)}

    def probabilities(self, images):
        return {"object": self(images)["object"].softmax(1)}

    def segment(self, images):
        return {"object": self(images)["object"].argmax(1)}


@pytest.fixture
def toy():
    return Toy().eval(), ToySegmenter().eval()


class Killed(Exception):
    """A stand-in for the death of the process running a job."""


@contextmanager
def dies_after(owner, name: str, calls: int):
    """Inside the block, ``owner.name`` raises ``Killed`` from its ``calls + 1``-th call on,
    and the block must end by it; the method is restored after."""
    real, count = getattr(owner, name), [0]

    def dying(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise Killed
        return real(*args, **kwargs)

    setattr(owner, name, dying)
    try:
        with pytest.raises(Killed):
            yield
    finally:
        setattr(owner, name, real)

def test_concept_lookup(toy):
    _, seg = toy
    assert ConceptRef.find(seg, "tree") == ConceptRef("object", "tree", 1)
    with pytest.raises(ValueError, match="knows: grass, tree"):
        ConceptRef.find(seg, "dome")


def test_latents_depend_only_on_seed_and_index():
    a = latents(3, [5, 9], 8)
    assert torch.equal(a[1], latents(3, [9], 8)[0])
    assert not torch.equal(a, latents(4, [5, 9], 8))


def test_removal_of_the_drawing_unit_is_complete_and_clean(toy):
    gen, seg = toy
    tree = ConceptRef.find(seg, "tree")
    result = removal(gen, seg, "layer1", [0], tree, n=40, seed=1, batch=16, progress=False)
    assert result["removed_fraction"] == 1.0
    assert result["collateral"] == 0.0
    assert 0 < result["images_with_concept"] < 40
    noise = removal(gen, seg, "layer1", [1, 2], tree, n=40, seed=1, progress=False)
    assert noise["removed_fraction"] == 0.0


def test_ace_selection_finds_the_drawing_unit(toy):
    gen, seg = toy
    tree = ConceptRef.find(seg, "tree")
    alpha = select_by_ace(gen, seg, "layer1", tree, initial=torch.full((4,), 0.5),
                          insert_values=torch.tensor([2.0, 0.1, 0.1, 0.1]), n=32, epochs=10,
                          lr=0.05, batch=8, progress=False)
    assert int(alpha.argmax()) == 0
    assert alpha[0] > 0.8 and alpha[1:].max() < 0.1


def test_learning_leaves_the_callers_models_as_they_were(toy):
    """The ACE selection and the swaps freeze both models while they learn, and give back
    every mode and ``requires_grad`` flag as the caller had them."""
    gen, seg = toy
    gen.train()
    gen.output.scale.requires_grad_(True)
    seg.gain.requires_grad_(False)
    before = ([m.training for m in (*gen.modules(), *seg.modules())],
              [p.requires_grad for p in (*gen.parameters(), *seg.parameters())])
    tree = ConceptRef.find(seg, "tree")
    select_by_ace(gen, seg, "layer1", tree, initial=torch.full((4,), 0.5),
                  insert_values=torch.tensor([2.0, 0.1, 0.1, 0.1]), n=8, epochs=1, batch=8,
                  progress=False)
    refine_by_swaps(gen, seg, "layer1", tree, [2], n=8, tries=1, max_swaps=1, batch=8,
                    progress=False)
    assert before == ([m.training for m in (*gen.modules(), *seg.modules())],
                      [p.requires_grad for p in (*gen.parameters(), *seg.parameters())])
    assert gen.output.scale.grad is None and seg.gain.grad is None  # nothing learned there


def test_drawing_windows_are_where_the_brush_belongs(toy):
    """Every window the drawing selection learns from lies on the context (grass covers more
    than half of it) and holds (almost) none of the concept, restated pixel by pixel; with
    room for all, every such window of every image is taken."""
    from gandissect.causal import drawing_windows

    gen, seg = toy
    tree, grass = ConceptRef.find(seg, "tree"), ConceptRef.find(seg, "grass")
    z = latents(9, range(6), gen.z_dim)
    pairs, windows = drawing_windows(gen, seg, "layer1", tree, grass, z, cell=2,
                                     per_image=1000, min_share=0.5, max_present=0.05)
    with torch.no_grad():
        labels = seg.segment(gen(z))["object"]
    expected = []
    for i in range(len(z)):
        for k, window in enumerate(windows):
            rows, cols = window.nonzero(as_tuple=True)
            y0, x0 = int(rows.min()) * 4, int(cols.min()) * 4  # 4 pixels a layer cell
            patch = labels[i, y0:y0 + 8, x0:x0 + 8]
            if (patch == grass.code).float().mean() > 0.5 and \
                    (patch == tree.code).float().mean() < 0.05:
                expected.append((i, k))
    assert pairs.tolist() == [list(p) for p in expected] and expected
    few, _ = drawing_windows(gen, seg, "layer1", tree, grass, z, per_image=2, seed=3)
    assert {tuple(p) for p in few.tolist()} <= set(expected)
    assert max(few[:, 0].bincount().tolist()) == 2


def test_drawing_selection_finds_the_unit_that_draws_and_learns_its_value(toy):
    """On the toy only unit 0 draws trees, and only where it exceeds 0.5: the selection puts
    it first, and its learned edit draws a tree in a grass window where the quantile given
    (0.4) would not; it learns although the toy segmenter is so confident that a tree's
    probability on grass is about e^-20 (the objective works on log-probabilities)."""
    from gandissect.causal import select_for_drawing
    from gandissect.hooks import apply_edit, edit_alpha, forward_from, partial_forward

    gen, seg = toy
    tree, grass = ConceptRef.find(seg, "tree"), ConceptRef.find(seg, "grass")
    result = select_for_drawing(gen, seg, "layer1", tree, grass, torch.full((4,), 0.5),
                                torch.full((4,), 0.4), n=16, seed=2, epochs=15, lr=0.1,
                                batch=8, progress=False)
    weights, values = result["weights"], result["values"]
    assert int(weights.argmax()) == 0 and weights[0] * values[0] > 0.5 and result["epoch"] > 0
    assert result["validation_pixels"] > 0  # it draws in the held-out windows
    z = latents(5, range(4), gen.z_dim)
    with torch.no_grad():
        features = partial_forward(gen, "layer1", z)
        window = torch.zeros(8, 8)
        window[6:8, 0:2] = 1  # the bottom-left corner: grass in every toy image
        for edit, draws in ((edit_alpha(None, 4, window, weights=weights), True),
                            (edit_alpha(None, 4, window, weights=torch.full((4,), 0.5)), False)):
            value = values if draws else torch.full((4,), 0.4)
            edited = apply_edit(features, edit, value)
            labels = seg.segment(forward_from(gen, "layer1", edited, z))["object"]
            assert bool((labels[:, 24:, :8] == tree.code).all()) is draws


def test_drawing_selection_restates_its_objective_and_resumes_exactly(toy, tmp_path):
    """One step of the selection is Adam on -log(mean concept probability over the window)
    + l2 |a|^2 with x (1 - a) + v a inside the window, v = quantile x exp(s), on the windows
    of all but every fourth image; a killed run resumed from its checkpoint ends with the
    uninterrupted run's weights and values."""
    from gandissect.causal import drawing_windows, select_for_drawing
    from gandissect.fileio import JobCheckpoint
    from gandissect.hooks import forward_from, partial_forward

    gen, seg = toy
    tree, grass = ConceptRef.find(seg, "tree"), ConceptRef.find(seg, "grass")
    initial, base = torch.tensor([0.3, 0.2, 0.1, 0.0]), torch.tensor([0.6, 0.2, 0.2, 0.2])
    settings = dict(n=8, seed=2, lr=0.05, l2=0.01, progress=False)
    step = select_for_drawing(gen, seg, "layer1", tree, grass, initial, base, epochs=1,
                              batch=1000, best=False, **settings)  # one step, every window
    z = latents(2, range(8), gen.z_dim)
    pairs, windows = drawing_windows(gen, seg, "layer1", tree, grass, z, seed=2)
    pairs = pairs[pairs[:, 0] % 4 != 3]  # every fourth image is held out
    a = initial.clone().requires_grad_(True)
    s = torch.zeros(4, requires_grad=True)
    optimizer = torch.optim.Adam([a, s], lr=0.05)
    objective = 0.0
    for image, k in pairs.tolist():  # one window at a time
        x = partial_forward(gen, "layer1", z[image:image + 1])
        where = windows[k][None, None]
        edited = x * (1 - a.view(1, -1, 1, 1) * where) + (base * s.exp()).view(1, -1, 1, 1) \
            * a.view(1, -1, 1, 1) * where
        p = torch.softmax(seg(forward_from(gen, "layer1", edited, z[image:image + 1]))
                          ["object"], 1)[0, tree.code]
        region = torch.nn.functional.interpolate(where, size=p.shape, mode="nearest")[0, 0]
        objective = objective + torch.log((p * region).sum() / region.sum())
    loss = -objective / len(pairs) + 0.01 * a.pow(2).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    torch.testing.assert_close(step["weights"], a.detach().clamp(0, 1))
    torch.testing.assert_close(step["values"], (base * s.exp()).detach())

    whole = select_for_drawing(gen, seg, "layer1", tree, grass, initial, base, epochs=3,
                               batch=4, **settings)
    path = tmp_path / "draw.pt"
    with dies_after(seg, "forward", 12):  # in the second epoch
        select_for_drawing(gen, seg, "layer1", tree, grass, initial, base, epochs=3, batch=4,
                           checkpoint=JobCheckpoint(path, "k", 0), **settings)
    assert JobCheckpoint(path, "k").load() is not None
    resumed = select_for_drawing(gen, seg, "layer1", tree, grass, initial, base, epochs=3,
                                 batch=4, checkpoint=JobCheckpoint(path, "k", 0), **settings)
    assert torch.equal(resumed["weights"], whole["weights"])
    assert torch.equal(resumed["values"], whole["values"])


class DrawWithSpill(Draw):
    """``Draw``, with unit 1 (a weak constant) painting the green channel everywhere."""

    def forward(self, x):
        spill = torch.nn.functional.interpolate(x[:, 1:2], scale_factor=4, mode="nearest")
        image = super().forward(x)
        return torch.cat([image[:, :1], 3 * spill, image[:, 2:]], 1)


class SpillSegmenter(ToySegmenter):
    """``ToySegmenter`` with unsaturated scores, and "none" wherever green is missing: so
    ablating unit 1 of ``DrawWithSpill`` turns grass into none (collateral), barely touching
    the tree."""

    def forward(self, images):
        tree = images[:, 0]
        return {"object": torch.stack([1.5 - 4 * images[:, 1], tree, -tree], 1)}


def test_the_keep_term_is_the_lost_label_probability_of_the_other_pixels(toy):
    """Three Adam steps (each one batch of all samples) restated by hand: the loss is the
    concept's mean probability where it is present, minus it where absent, plus ``keep`` times
    the mean, over the pixels of images with the concept that the clean image labels otherwise,
    of 1 - p(their clean label), plus the L2 penalty."""
    gen, seg = toy[0], SpillSegmenter().eval()
    gen.output = DrawWithSpill()
    tree = ConceptRef.find(seg, "tree")
    initial = torch.tensor([0.5, 0.3, 0.2, 0.1])
    values = torch.tensor([2.0, 0.1, 0.1, 0.1])
    keep, l2, lr, steps = 2.0, 0.005, 0.05, 3
    z, present = ace_sample(gen, seg, tree, 16, 4, batch=16)
    with torch.no_grad():
        clean = seg(gen(z))["object"].argmax(1)
    features = gen.layer1(z)

    def loss_of(alpha):
        a = alpha.view(1, -1, 1, 1)
        edited = torch.where(present.view(-1, 1, 1, 1), features * (1 - a),
                             features * (1 - a) + values.view(1, -1, 1, 1) * a)
        probabilities = torch.softmax(seg(gen.output(edited))["object"], 1)
        p = probabilities[:, tree.code].mean((1, 2))
        lost, pixels = 0.0, 0
        for i in range(len(z)):  # the other pixels, one at a time
            if not present[i]:
                continue
            for y in range(clean.shape[1]):
                for x in range(clean.shape[2]):
                    label = int(clean[i, y, x])
                    if label != tree.code:
                        lost = lost + (1 - probabilities[i, label, y, x])
                        pixels += 1
        assert pixels > 0
        return torch.where(present, p, -p).mean() + keep * lost / pixels + l2 * alpha.pow(
            2).sum()

    alpha = initial.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([alpha], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_of(alpha).backward()
        optimizer.step()
        with torch.no_grad():
            alpha.clamp_(0, 1)

    def learned(keep):
        return select_by_ace(gen, seg, "layer1", tree, initial, values, n=16, seed=4,
                             epochs=steps, lr=lr, l2=l2, batch=len(z), progress=False,
                             keep=keep)

    kept, plain = learned(keep), learned(0.0)
    torch.testing.assert_close(kept, alpha.detach())
    assert kept[1] < initial[1] < plain[1]  # the term spares the unit whose loss spills


class RareUnits(Units):
    """Unit 0's blob only where z[2] > 1 (about one image in six)."""

    def forward(self, z):
        x = super().forward(z)
        x[:, 0] *= (z[:, 2] > 1).float().view(-1, 1, 1)
        return x


def test_ace_sample_tops_up_a_rare_concept_with_the_next_images_that_show_it(toy):
    """Restated latent by latent: the first n, then those after them that show the concept,
    in order, until half of n do; without the top-up, the first n alone."""
    gen, seg = toy
    gen.layer1 = RareUnits()
    tree = ConceptRef.find(seg, "tree")

    def shows(i):
        image = gen(latents(1, [i], 8))
        return bool((seg.segment(image)["object"] == tree.code).any())

    n = 24
    expected = list(range(n))
    present = [shows(i) for i in expected]
    assert sum(present) < n // 2  # rare enough to need the top-up
    i = n
    while sum(present) < n // 2:
        if shows(i):
            expected.append(i)
            present.append(True)
        i += 1
    z, flags = ace_sample(gen, seg, tree, n, seed=1, batch=5)
    assert torch.equal(z, latents(1, expected, 8)) and flags.tolist() == present
    z, flags = ace_sample(gen, seg, tree, n, seed=1, batch=5, top_up=False)
    assert torch.equal(z, latents(1, range(n), 8)) and flags.tolist() == present[:n]
    with pytest.raises(ValueError, match="n >= 1"):
        ace_sample(gen, seg, tree, 0, seed=1)


class HalfUnits(Units):
    """``Units`` with the blob split: unit 0 carries its top half (rows 0-3), unit 1 its bottom
    half, units 2 and 3 are weak noise."""

    def forward(self, z):
        x = super().forward(z)
        blob = x[:, 0]
        top = torch.zeros_like(blob)
        top[:, :4] = blob[:, :4]
        return torch.stack([top, blob - top, x[:, 1], x[:, 2]], 1)


class HalfDraw(Draw):
    """Red where either half-unit is high."""

    def forward(self, x):
        return super().forward(x[:, :1] + x[:, 1:2])


def half_toy():
    gen = Toy()
    gen.layer1, gen.output = HalfUnits(), HalfDraw()
    return gen.eval()


def removed_fraction_by_loop(gen, seg, units, z):
    """The removed fraction of ``removal``, restated pixel by pixel over images with trees."""
    before = removed = 0
    for latent in z:
        clean = seg.segment(gen(latent[None]))["object"][0]
        if not (clean == 1).any():
            continue
        features = gen.layer1(latent[None])
        features[:, units] = 0
        edited = seg.segment(gen.output(features))["object"][0]
        for y in range(clean.shape[0]):
            for x in range(clean.shape[1]):
                before += int(clean[y, x] == 1)
                removed += int(clean[y, x] == 1 and edited[y, x] != 1)
                removed -= int(clean[y, x] != 1 and edited[y, x] == 1)
    return removed / before


def test_swaps_replace_the_units_that_do_not_draw_and_score_as_removal_counts(toy):
    gen, seg = half_toy(), toy[1]
    tree = ConceptRef.find(seg, "tree")
    with torch.no_grad():
        result = refine_by_swaps(gen, seg, "layer1", tree, [2, 3], n=24, seed=4, tries=2,
                                 batch=8, progress=False)
        z, present = ace_sample(gen, seg, tree, 24, 4, batch=8)
        z = z[present]
        # each swap is scored exactly: the removed fraction, as a loop over pixels gives it
        assert result["start_score"] == pytest.approx(
            removed_fraction_by_loop(gen, seg, [2, 3], z), abs=1e-9)
        for out_unit, in_unit, _, collateral in result["history"]:
            assert out_unit in (2, 3) and in_unit in (0, 1) and collateral == 0
        assert sorted(result["units"]) == [0, 1]
        assert result["score"] == pytest.approx(removed_fraction_by_loop(gen, seg, [0, 1], z))
        assert result["score"] == 1.0
        half = removed_fraction_by_loop(gen, seg, [result["history"][0][1], 3], z)
        assert result["history"][0][2] == pytest.approx(half, abs=1e-6)
        assert 0 < half < 1
        assert len(result["history"]) == 2  # then no swap improves: it stops
    with pytest.raises(ValueError, match="distinct"):
        refine_by_swaps(gen, seg, "layer1", tree, [0, 0], n=8, progress=False)


class SpillUnits(HalfUnits):
    """``HalfUnits`` with unit 2 a constant 1: the green that keeps ``SpillSegmenter``'s
    "none" away."""

    def forward(self, z):
        x = super().forward(z)
        x[:, 2] = 1
        return x


class SpillDraw(Draw):
    """Red from the two half-units, green from unit 2."""

    def forward(self, x):
        image = super().forward(x[:, :1] + x[:, 1:2])
        green = torch.nn.functional.interpolate(x[:, 2:3], scale_factor=4, mode="nearest")
        return torch.cat([image[:, :1], 3 * green, image[:, 2:]], 1)


def test_swaps_never_buy_removal_with_collateral_above_the_cap():
    """Ablating unit 2 turns every pixel into "none": all of the tree goes, and all of the
    grass with it. Unit 0 or 1 removes half of the tree and nothing else."""
    gen = Toy()
    gen.layer1, gen.output = SpillUnits(), SpillDraw()
    gen, seg = gen.eval(), SpillSegmenter().eval()
    tree = ConceptRef.find(seg, "tree")
    free = refine_by_swaps(gen, seg, "layer1", tree, [3], n=24, tries=3, batch=8,
                           max_collateral=1.0, progress=False)
    assert free["units"] == [2] and free["score"] == 1.0 and free["collateral"] == 1.0
    capped = refine_by_swaps(gen, seg, "layer1", tree, [3], n=24, tries=3, batch=8,
                             progress=False)
    assert capped["units"] in ([0], [1]) and capped["collateral"] == 0.0
    assert 0.3 < capped["score"] < 0.7 and capped["start_collateral"] == 0.0
    with pytest.raises(ValueError, match="max_collateral"):
        refine_by_swaps(gen, seg, "layer1", tree, [3], n=8, max_collateral=float("nan"),
                        progress=False)


def test_swaps_resume_after_a_kill_to_the_same_result(toy, tmp_path):
    from gandissect.fileio import JobCheckpoint

    gen, seg = half_toy(), toy[1]
    tree = ConceptRef.find(seg, "tree")
    whole = refine_by_swaps(gen, seg, "layer1", tree, [2, 3], n=24, tries=2, batch=8,
                            progress=False)
    path = tmp_path / "swaps.pt"
    with dies_after(seg, "segment", 12):  # after the first swap was saved, in the second step
        refine_by_swaps(gen, seg, "layer1", tree, [2, 3], n=24, tries=2, batch=8,
                        progress=False, checkpoint=JobCheckpoint(path, "k", 0))
    assert len(JobCheckpoint(path, "k").load()["history"]) == 1
    resumed = refine_by_swaps(gen, seg, "layer1", tree, [2, 3], n=24, tries=2, batch=8,
                              progress=False, checkpoint=JobCheckpoint(path, "k", 0))
    assert resumed == whole


class GroundDraw(Draw):
    """Units -> a 32 px image whose lower half is ground (green): unit 0 draws red (a tree)
    there only, so inserting it respects context; the upper half is sky."""

    def forward(self, x):
        n = x.shape[0]
        ground = (torch.arange(32.0) >= 16).float().view(1, 1, 32, 1).expand(n, 1, 32, 32)
        red = torch.nn.functional.interpolate(x[:, :1], scale_factor=4, mode="nearest")
        red = torch.where(ground > 0, red * self.scale - 1, torch.full_like(red, -1.0))
        return torch.cat([red, ground * 2 - 1, torch.zeros_like(red)], 1)


def ground_toy() -> Toy:
    """``Toy`` drawing with ``GroundDraw``."""
    gen = Toy()
    gen.output = GroundDraw()
    return gen.eval()


class GroundSegmenter(nn.Module):
    """object: tree where red > 0, else grass where green > 0, else sky."""

    concepts = {"object": ["none", "tree", "grass", "sky"]}

    def segment(self, images):
        tree, ground = images[:, 0] > 0, images[:, 1] > 0
        return {"object": torch.where(tree, 1, torch.where(ground, 2, 3))}


def test_insertion_maps_restate_one_edit_per_window():
    gen, seg = ground_toy(), GroundSegmenter()
    tree = ConceptRef.find(seg, "tree")
    values = torch.tensor([2.0, 0, 0, 0])
    z = latents(2, range(5), 8)
    added, shares = insertion_maps(gen, seg, "layer1", [0], tree, values, z, cell=3, batch=2)
    assert added.shape == (5, 6, 6) and shares.shape == (5, 4, 6, 6)
    for i in range(5):
        clean = seg.segment(gen(z[i:i + 1]))["object"][0]
        for y in range(6):
            for x in range(6):
                mask = torch.zeros(8, 8)
                mask[y:y + 3, x:x + 3] = 1
                edited = seg.segment(render_edited(gen, z[i:i + 1], "layer1",
                                                   [Stroke([0], "insert", mask)], values))
                expected = int((edited["object"] == 1).sum() - (clean == 1).sum())
                assert int(added[i, y, x]) == expected
                window = clean[y * 4:y * 4 + 12, x * 4:x * 4 + 12]
                for code in range(4):
                    assert float(shares[i, code, y, x]) == pytest.approx(
                        float((window == code).float().mean()))


def test_insertion_respects_context_and_the_table_restates_it():
    gen, seg = ground_toy(), GroundSegmenter()
    tree = ConceptRef.find(seg, "tree")
    values = torch.tensor([2.0, 0, 0, 0])
    result = insertion_by_context(gen, seg, "layer1", [0], tree, values,
                                  contexts=("grass", "sky", "tree"), n=12, seed=5, cell=2,
                                  batch=5, progress=False)
    assert result["sky"]["windows"] == 12 * 3 * 7  # rows 0-2 lie in the sky, row 3 half
    assert result["sky"]["added_pixels"] == 0.0 and result["sky"]["appears"] == 0.0
    assert result["grass"]["added_pixels"] > 30 and result["grass"]["appears"] > 0.9
    added, shares = insertion_maps(gen, seg, "layer1", [0], tree, values,
                                   latents(5, range(12), 8), cell=2)
    grass = [float(added[i, y, x]) for i in range(12) for y in range(7) for x in range(7)
             if shares[i, 2, y, x] > 0.5]
    assert result["grass"]["windows"] == len(grass)
    assert result["grass"]["added_pixels"] == round(sum(grass) / len(grass), 2)
    assert result["grass"]["appears"] == round(sum(a >= 4 for a in grass) / len(grass), 3)
    # windows with no dominant object count nowhere; an absent context reports None
    table = context_table(added, shares, [1], ["tree"], min_share=0.9)
    assert table["tree"]["windows"] == int((shares[:, 1] > 0.9).sum())
    empty = context_table(added[:0], shares[:0], [3], ["sky"])
    assert empty["sky"] == {"windows": 0, "images": 0, "added_pixels": None, "appears": None}
    with pytest.raises(ValueError, match=r"min_share must lie in \[0.5, 1\)"):
        insertion_by_context(gen, seg, "layer1", [0], tree, values, contexts=("sky",),
                             n=2, min_share=0.3, progress=False)


def test_locality_of_a_masked_insertion(toy):
    gen, seg = toy
    mask = torch.zeros(32, 32)
    mask[0:8, 0:8] = 1
    z = latents(0, range(6), 8)
    strokes = [Stroke([0], "insert", mask)]
    outside = locality(gen, "layer1", strokes, z, torch.tensor([2.0, 0, 0, 0]))
    assert outside == 0.0


def test_ace_report_on_a_dissected_toy(toy, tmp_path):
    gen, seg = toy
    tree = ConceptRef.find(seg, "tree")
    result = dissect(gen, seg, ["layer1"], n=64, seed=1, batch=16, progress=False)
    assert units_by_iou(result, "layer1", tree)[0] == 0
    report = ace_report(gen, seg, result, "layer1", tree, k=1, n=40, seed=3, selection_n=32,
                        selection_seed=4, epochs=3, cache_dir=tmp_path, progress=False,
                        refine=False)
    assert report["unit_ids"] == {"iou": [0], "ace": [0], "brush": [0]}
    assert report["removed_fraction"] == {"iou": 1.0, "ace": 1.0, "brush": 1.0}
    assert report["collateral"] == {"iou": 0.0, "ace": 0.0, "brush": 0.0}
    assert report["brush_ranking"] == "ace"  # what the app's brush would paint with now
    assert list(tmp_path.glob("ace_layer1_object_tree_*.pt"))  # the learned weights are cached
    refined = ace_report(gen, seg, result, "layer1", tree, k=1, n=40, seed=3, selection_n=32,
                         selection_seed=4, epochs=3, cache_dir=tmp_path, progress=False)
    assert refined["unit_ids"]["refined"] == [0] and refined["removed_fraction"]["refined"] == 1.0
    assert list(tmp_path.glob("swaps_layer1_object_tree_*.pt"))
    with pytest.raises(ValueError, match="used for selection"):
        ace_report(gen, seg, result, "layer1", tree, k=1, seed=4, selection_seed=4,
                   progress=False)


def test_ace_report_uses_shipped_selections_and_reports_what_the_brush_paints(toy, tmp_path,
                                                                            monkeypatch):
    """Causal weights and a swap set shipped for these very arguments (a folder beside the
    dissection) are read, not learned again; the brush ranking is the app's
    (``ranked_units``): with a shipped set of ``REFINED_K`` units it leads the ranking, so a
    report of that many units says the brush removes what the refined set removes."""
    import gandissect.ace as ace_module

    gen, seg = toy
    tree = ConceptRef.find(seg, "tree")
    result = dissect(gen, seg, ["layer1"], n=64, seed=1, batch=16, progress=False)
    monkeypatch.setattr(ace_module, "REFINED_K", 2)
    common = dict(n=20, seed=3, selection_n=16, selection_seed=4, epochs=1, progress=False)
    shipped = tmp_path / "shipped"
    learned = ace_report(gen, seg, result, "layer1", tree, k=2, cache_dir=shipped, **common)

    def never(*args, **kwargs):
        raise AssertionError("a shipped selection was learned again")

    monkeypatch.setattr(ace_module, "select_by_ace", never)
    monkeypatch.setattr(ace_module, "refine_by_swaps", never)
    again = ace_report(gen, seg, result, "layer1", tree, k=2, cache_dir=tmp_path / "empty",
                       shipped=[shipped], **common)
    assert again["unit_ids"] == learned["unit_ids"]
    assert again["brush_ranking"] == "ace+swaps"
    assert sorted(again["unit_ids"]["brush"]) == sorted(again["unit_ids"]["refined"])
    assert again["removed_fraction"]["brush"] == again["removed_fraction"]["refined"]


@pytest.fixture
def plugged(monkeypatch):
    from gandissect.models import registry

    monkeypatch.setattr(registry, "load_generator", lambda name, device="cpu": Toy().eval())
    monkeypatch.setattr(registry, "load_segmenter",
                        lambda name, device="cpu": ToySegmenter().eval())


def test_cli_edit_and_ace(plugged, tmp_path, capsys):
    import json

    from gandissect.cli import main

    out = tmp_path / "dissection"
    assert main(["dissect", "--layer", "layer1", "--samples", "64", "--batch", "16",
                 "--images", "2", "--top-k", "4", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["edit", "--layer", "layer1", "--concept", "tree", "--k", "1", "--dissection",
                 str(out), "--box", "0,0,16,16", "--samples", "2", "--out",
                 str(tmp_path / "edit")]) == 0
    big = np.asarray(Image.open(tmp_path / "edit" / "edit.png"))
    assert big.shape == (256, 4 * 256, 3)  # 32 px pictures enlarged 8 times: readable
    assert main(["edit", "--layer", "layer1", "--concept", "tree", "--k", "1", "--dissection",
                 str(out), "--box", "0,0,16,16", "--samples", "2", "--scale", "1", "--out",
                 str(tmp_path / "small")]) == 0
    small = np.asarray(Image.open(tmp_path / "small" / "edit.png"))
    assert np.array_equal(big[::8, ::8], small)  # the same pictures, each pixel a block
    assert main(["edit", "--layer", "layer1", "--units", "0", "--mode", "insert",
                 "--samples", "2", "--out", str(tmp_path / "e2")]) == 2
    assert "needs --dissection" in capsys.readouterr().err
    assert main(["ace", "--layer", "layer1", "--concept", "tree", "--units", "1", "--samples",
                 "20", "--dissection", str(out), "--selection-samples", "16", "--epochs", "2",
                 "--cache", str(tmp_path / "cache"), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["concept"] == "tree" and result["units"] == 1
    assert result["removed_fraction"]["refined"] == 1.0  # refined by default, as the app paints
    assert set(result["removed_fraction"]) == {"iou", "ace", "refined", "brush"}
    assert result["removed_fraction"]["iou"] == 1.0 and "collateral" in result


def test_cli_ace_reads_the_shipped_dissection_only_when_it_is_the_one_it_would_compute(
        plugged, tmp_path, monkeypatch, capsys):
    """Without --dissection, `gandissect ace` uses the dissection shipped with the generator if
    its models, layer, sample count and seed are those asked for; else it dissects."""
    import json

    import gandissect.dissect as dissect_module
    from gandissect.cli import main
    from gandissect.models import registry

    shipped = tmp_path / "models" / "sceneworld_generator_dissection"
    assert main(["dissect", "--layer", "layer1", "--samples", "64", "--seed", "1", "--batch",
                 "16", "--images", "2", "--top-k", "4", "--no-html", "--out",
                 str(shipped)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("GANDISSECT_MODELS", str(tmp_path / "models"))
    assert registry.shipped_dissection_dir() == shipped
    calls = []
    real = dissect_module.dissect
    monkeypatch.setattr(dissect_module, "dissect", lambda *a, **k: calls.append(k) or real(*a, **k))
    ace = ["ace", "--layer", "layer1", "--concept", "tree", "--units", "1", "--samples", "20",
           "--selection-samples", "16", "--epochs", "2", "--cache", str(tmp_path / "cache"),
           "--json", "--quiet"]
    assert main(ace + ["--dissect-samples", "64"]) == 0
    assert calls == [] and json.loads(capsys.readouterr().out)["removed_fraction"]["iou"] == 1.0
    assert main(ace + ["--dissect-samples", "48"]) == 0  # not what was shipped: dissect
    assert len(calls) == 1 and calls[0]["n"] == 48


def test_ace_report_learns_the_ace_weights_once_for_both_rankings(toy, monkeypatch):
    """Without a cache, ``refine=True`` refines the ranking ``ace_report`` learned: one ACE
    selection, not two."""
    import gandissect.ace as ace_module

    gen, seg = toy
    tree = ConceptRef.find(seg, "tree")
    result = dissect(gen, seg, ["layer1"], n=64, seed=1, batch=16, progress=False)
    calls = []
    real = ace_module.select_by_ace
    monkeypatch.setattr(ace_module, "select_by_ace",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    report = ace_report(gen, seg, result, "layer1", tree, k=1, n=20, seed=3, selection_n=16,
                        selection_seed=4, epochs=1, progress=False, refine=True)
    assert len(calls) == 1 and report["unit_ids"]["refined"] == [0]
