"""TCAV (``gandissect.tcav``): the directional derivative restated by finite differences, the
TCAV score by a loop, the CAV against scikit-learn's logistic regression, Welch's test against
scipy's, a planted concept found significant and a control concept not, and the command's
one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gandissect import tcav as T
from gandissect.cli import main
from gandissect.hooks import Trace


def _tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))


def test_directional_derivative_is_the_slope_of_the_logit_along_the_cav():
    torch.manual_seed(0)
    model = _tiny_cnn().double().eval()
    images = torch.rand(3, 3, 16, 16, dtype=torch.float64) * 2 - 1
    gradients = T.layer_gradients(model, "3", images.float().double(), target=1)
    cav = torch.randn(gradients.shape[1], dtype=torch.float64)
    cav /= cav.norm()
    fast = T.directional_derivatives(gradients.double(), cav)
    eps = 1e-4

    def logit(shift: float) -> torch.Tensor:
        def edit(out: torch.Tensor) -> torch.Tensor:
            return out + shift * cav.view(out.shape[1:])

        with Trace(model, "3", edit=edit), torch.no_grad():
            return model(images)[:, 1]

    slow = (logit(eps) - logit(-eps)) / (2 * eps)
    assert torch.allclose(fast, slow, rtol=1e-4, atol=1e-6)


def test_tcav_score_counts_positive_derivatives():
    torch.manual_seed(1)
    derivatives = torch.randn(4, 30)
    derivatives[0, :5] = 0.0  # zero is not positive
    fast = T.tcav_score(derivatives)
    for row in range(4):
        count = sum(1 for value in derivatives[row].tolist() if value > 0)
        assert fast[row].item() == pytest.approx(count / 30)


def test_cav_is_the_normal_of_scikit_learns_logistic_regression():
    sklearn = pytest.importorskip("sklearn.linear_model")
    generator = torch.Generator().manual_seed(2)
    concept = torch.randn(30, 200, generator=generator) + 0.3
    random = torch.randn(40, 200, generator=generator)
    l2 = 1e-2
    cav = T.train_cav(concept, random, l2=l2)
    x = torch.cat([concept, random]).double()
    x = (x - x.mean(0)) / (x - x.mean(0)).norm(dim=1).mean()
    labels = np.r_[np.ones(30), np.zeros(40)]
    # scikit-learn minimises |w|^2 / 2 + C * sum(loss): the same optimum for C = 1 / (l2 * N)
    fitted = sklearn.LogisticRegression(C=1 / (l2 * 70), tol=1e-10, max_iter=10000)
    fitted.fit(x.numpy(), labels)
    reference = torch.from_numpy(fitted.coef_[0])
    assert torch.dot(cav.double(), reference / reference.norm()).item() > 1 - 1e-6
    assert torch.dot(cav, concept.mean(0) - random.mean(0)).item() > 0  # points to the concept


def test_welch_t_test_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    a, b = rng.random(20), rng.random(25) * 0.5 + 0.2
    t, p = T.welch_t_test(a, b)
    reference = stats.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(reference.statistic, rel=1e-10)
    assert p == pytest.approx(reference.pvalue, rel=1e-8)
    assert T.welch_t_test([1.0, 1.0], [1.0, 1.0]) == (0.0, 1.0)
    assert T.welch_t_test([1.0, 1.0], [0.0, 0.0])[1] == 0.0


def _planted_pairs(n: int, red: torch.Tensor, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """32 px noise images with a red square where ``red`` (in the right half), each without and
    with a blue disc (in the left half, so the two never overlap)."""
    plain = torch.rand(n, 3, 32, 32, generator=generator) * 0.6 - 0.3
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    with_disc = plain.clone()
    for k in range(n):
        cy, cx = (torch.randint(low, high, (1,), generator=generator).item()
                  for low, high in ((6, 26), (5, 11)))
        disc = (rows - cy) ** 2 + (cols - cx) ** 2 <= 16
        with_disc[k, :, disc] = torch.tensor([-0.9, -0.9, 0.9])[:, None]
        if red[k]:
            y, x = (torch.randint(low, high, (1,), generator=generator).item()
                    for low, high in ((0, 25), (17, 25)))
            for images in (plain, with_disc):
                images[k, :, y:y + 7, x:x + 7] = torch.tensor([0.9, -0.9, -0.9])[:, None, None]
    return plain, with_disc


def _either(plain: torch.Tensor, with_disc: torch.Tensor, disc: torch.Tensor) -> torch.Tensor:
    return torch.where(disc[:, None, None, None], with_disc, plain)


def test_planted_concept_is_significant_and_the_control_is_not():
    """The class is a red square; a blue disc is in half of each class's images and the network
    is trained to ignore it (a penalty on the logits' change when the disc is added: a freely
    trained network picks up small incidental sensitivities, which TCAV, counting signs only,
    rightly reports). The square must be significant with TCAV near 1, the disc not."""
    generator = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    n = 400
    labels = torch.arange(n) % 2
    plain, with_disc = _planted_pairs(n, labels.bool(), generator)
    model = _tiny_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        batch = torch.randint(0, n, (64,), generator=generator)
        without, beside = model(plain[batch]), model(with_disc[batch])
        loss = nn.functional.cross_entropy(torch.cat([without, beside]), labels[batch].repeat(2)) \
            + 10 * (without - beside).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    held_red = torch.arange(60) % 2 == 1
    held = _either(*_planted_pairs(60, held_red, generator), torch.rand(60, generator=generator)
                   < 0.5)
    with torch.no_grad():
        assert (model(held).argmax(1) == held_red.long()).float().mean() > 0.95
    # as SceneWorld's examples: images with the concept against images without it, the other
    # object present in half of both (so neither CAV learns the other's absence)
    red, disc = (torch.rand(400, generator=generator) < 0.5 for _ in range(2))
    world = _either(*_planted_pairs(400, red, generator), disc)
    result = T.tcav(model, "5", 1, held[held_red],
                    {"red square": world[red], "blue disc": world[disc]},
                    {"red square": world[~red], "blue disc": world[~disc]},
                    null_images=world[:160], runs=20, n=40, seed=0)
    square, control = result.scores["red square"], result.scores["blue disc"]
    assert square.tcav > 0.9 and square.significant, square
    assert not control.significant, control
    assert result.correction == "bonferroni over 2 concepts"
    assert len(result.random_runs) == 20


@pytest.mark.parametrize("options, message", [
    (["--class", "airport", "--concepts", "dome"], "unknown class"),
    (["--class", "church", "--concepts", "unicorn"], "not a SceneWorld concept"),
    (["--class", "church", "--concepts", "dome", "--n", "3"], "at least"),
    (["--class", "church", "--concepts", "dome", "--concept-dir", "dome"], "NAME=DIR"),
])
def test_command_refuses_mistakes_in_one_line(options, message, capsys):
    status = main(["tcav", "--classifier", "sceneworld", "--layer", "layer4", "--device", "cpu",
                   *options])
    error = capsys.readouterr().err.strip()
    assert status == 2
    assert message in error and "\n" not in error


def test_command_with_user_folders_prints_the_scores(tmp_path, capsys):
    import json

    from PIL import Image

    from gandissect.world import concept, render_batch

    rendered = render_batch(3, range(120), 64)
    dome = (rendered["object"] == concept("dome", "object").code).any((1, 2))
    folders = {"domes": rendered["image"][dome][:10], "random": rendered["image"][~dome][:20]}
    for name, images in folders.items():
        (tmp_path / name).mkdir()
        for k, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / name / f"{k}.png")
    status = main(["tcav", "--classifier", "sceneworld", "--layer", "layer3", "--class",
                   "church", "--concepts", "water", "--concept-dir",
                   f"my dome={tmp_path / 'domes'}", "--random-dir", str(tmp_path / "random"),
                   "--n", "10", "--runs", "3", "--device", "cpu", "--json"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["scores"]) == {"water", "my dome"}
    assert result["correction"] == "bonferroni over 2 concepts"
    assert result["concepts"]["my dome"].startswith("folder ")
    for score in result["scores"].values():
        assert 0 <= score["tcav"] <= 1 and 0 <= score["p"] <= 1 and len(score["runs"]) == 3
    assert len(result["random"]["runs"]) == 3


def test_figure_draws_one_bar_per_concept(tmp_path):
    from PIL import Image

    scores = {"dome": T.ConceptScore(0.9, 0.05, 1e-4, True, [0.85, 0.95]),
              "tree": T.ConceptScore(0.4, 0.2, 0.6, False, [0.2, 0.6])}
    result = T.TCAVResult(scores, [0.3, 0.7, 0.5], 0.05, "bonferroni over 2 concepts")
    path = tmp_path / "tcav.png"
    T.tcav_figure(result, str(path))
    image = Image.open(path).convert("RGB")
    assert 150 <= image.width <= 600 and 150 <= image.height <= 600
    colours = set(image.getdata())
    assert (40, 90, 200) in colours and (170, 190, 230) in colours  # significant, and not
    assert (225, 225, 225) in colours  # the random-vs-random band
