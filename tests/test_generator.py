"""The ProGAN-style generator, its resumable training, and the generator metrics."""

import math

import numpy as np
import pytest
import torch

from gandissect.errors import UserError
from gandissect.evaluate.generator import (
    frechet_distance,
    precision_recall,
    quantize,
    total_variation,
)
from gandissect.models.discriminator import Discriminator
from gandissect.models.proggan import ProGANGenerator, proggan_channels
from gandissect.models.registry import build, read_weights, save_weights
from gandissect.train.common import RenderedBatches, RunFolder
from gandissect.train.gan import (
    GANConfig,
    GANTrainer,
    GrowingGenerator,
    growth_stage,
    latent_class_offsets,
    slim_checkpoint,
    train_generator,
)


def test_proggan_layout_matches_the_released_checkpoints():
    g = ProGANGenerator(z_dim=512, channels=proggan_channels(256))
    names = [name for name, _ in g.named_children()]
    assert names == [f"layer{i}" for i in range(1, 15)] + ["output_256x256"]
    keys = set(g.state_dict())
    assert "layer1.conv.weight" in keys and "layer4.wscale.b" in keys
    assert "output_256x256.conv.weight" in keys and "output_256x256.wscale.b" in keys
    assert not any("scale" in k and not k.endswith("wscale.b") for k in keys)  # computed
    assert g.layer4.conv.out_channels == 512
    with torch.no_grad():
        assert g.layer4.conv.weight.shape == (512, 512, 3, 3)


def test_block_is_pixelnorm_upsample_conv_wscale_lrelu():
    torch.manual_seed(0)
    g = ProGANGenerator(z_dim=8, channels=[6, 5])
    x = torch.randn(2, 6, 4, 4)
    block = g.layer3
    normed = x / torch.sqrt((x**2).mean(1, keepdim=True) + 1e-8)
    up = normed.repeat_interleave(2, 2).repeat_interleave(2, 3)
    conv = torch.nn.functional.conv2d(up, block.conv.weight, padding=1)
    scaled = conv * (math.sqrt(2) / math.sqrt(6 * 9)) + block.wscale.b.view(1, -1, 1, 1)
    expected = torch.where(scaled > 0, scaled, 0.2 * scaled)
    torch.testing.assert_close(block(x), expected)
    z = torch.randn(3, 8)
    assert g(z).shape == (3, 3, 8, 8)
    torch.testing.assert_close(g(z), g(z[:, :, None, None]))
    with pytest.raises(ValueError, match="latent"):
        g(torch.randn(3, 7))


def test_weights_round_trip_through_safetensors(tmp_path):
    g = ProGANGenerator(z_dim=8, channels=[6, 5, 4])
    save_weights(g, tmp_path / "g.safetensors", g.config())
    state, config, _ = read_weights(tmp_path / "g.safetensors")
    rebuilt = build(config)
    rebuilt.load_state_dict(state)
    z = torch.randn(2, 8)
    assert torch.equal(rebuilt(z), g(z))


TINY = dict(resolution=16, z_dim=8, channels=[8, 8, 8], d_channels=[8, 8, 8], batch=4,
            condition_kimg=None)


def test_training_resumes_exactly(tmp_path):
    """Stopped half-way and continued, training ends where an uninterrupted run ends."""
    tiny = dict(TINY, grow_kimg=0.004, grow_start=8)  # the cut falls inside a fade-in
    whole = train_generator(str(tmp_path / "whole"), GANConfig(**tiny), kimg=0.024)
    train_generator(str(tmp_path / "split"), GANConfig(**tiny), kimg=0.010)
    resumed = train_generator(str(tmp_path / "split"), kimg=0.024)
    assert resumed.images_seen == whole.images_seen == 24
    for a, b in zip(whole.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)
    assert (tmp_path / "split" / "sceneworld_generator.safetensors").exists()
    assert (tmp_path / "split" / "samples.png").exists()


def test_rendering_workers_share_one_stream():
    """Any number of rendering workers yields the scenes of one worker (or of none), in the
    same order."""
    from torch.utils.data import DataLoader

    from gandissect.world import render_batch

    def first(workers, count=5):
        data = RenderedBatches(seed=20, size=16, batch=3, start=7, keys=("scene", "object"))
        loader = data if workers is None else DataLoader(data, batch_size=None,
                                                         num_workers=workers)
        return [batch for batch, _ in zip(loader, range(count))]

    alone = first(None)
    for workers in (0, 1, 2):
        for a, b in zip(alone, first(workers), strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    direct = render_batch(20, range(19, 22), 16)  # the fifth batch: scenes 19-21
    assert torch.equal(alone[4]["scene"], torch.from_numpy(direct["scene"]).long())
    assert torch.equal(alone[4]["object"], torch.from_numpy(direct["object"]).long())


def test_slim_checkpoint_continues_in_a_new_run(tmp_path):
    """A slim checkpoint (no optimiser state, float16) is a fifth of the full one and, copied
    into a new run folder, continues the run from the same images with the weights rounded."""
    with pytest.raises(UserError, match="train first"):
        slim_checkpoint(tmp_path / "none", tmp_path / "slim.pt")
    old = train_generator(str(tmp_path / "old"), GANConfig(**TINY), kimg=0.008)
    slim = slim_checkpoint(tmp_path / "old", tmp_path / "slim.pt")
    assert slim.stat().st_size < (tmp_path / "old" / "checkpoint.pt").stat().st_size / 2
    (tmp_path / "new").mkdir()
    slim.rename(tmp_path / "new" / "checkpoint.pt")
    with RunFolder(tmp_path / "new") as run:
        state = run.load()
        new = GANTrainer(GANConfig.from_dict(state["config"]), run)
        new.load_state_dict(state)
    assert new.images_seen == old.images_seen == 8
    for name, value in old.generator.state_dict().items():
        expected = value.half().float() if value.is_floating_point() else value
        assert torch.equal(new.generator.state_dict()[name], expected), name
    assert not new.g_optimizer.state and not new.d_optimizer.state  # fresh Adam moments
    continued = train_generator(str(tmp_path / "new"), kimg=0.016)
    assert continued.images_seen == 16


PRIOR = [0.2, 0.2, 0.12, 0.16, 0.16, 0.16]


def test_latent_class_regions_have_the_prior_frequencies():
    prior = [0.4, 0.1, 0.3, 0.2]
    offsets = latent_class_offsets(prior)
    generator = ProGANGenerator(z_dim=7, channels=[4], class_offsets=offsets.tolist())
    z = torch.randn(400_000, 7, generator=torch.Generator().manual_seed(3))
    # The definition by a loop: class k where z_k + b_k beats every other class.
    for k in range(4):
        wins = torch.ones(len(z), dtype=torch.bool)
        for j in range(4):
            if j != k:
                wins &= z[:, k] + offsets[k] > z[:, j] + offsets[j]
        assert float(wins.float().mean()) == pytest.approx(prior[k], abs=0.004)  # ~5 sd
        assert torch.equal(generator.latent_classes(z) == k, wins)
    rare = [0.002] + [0.998 / 14] * 14  # 15 classes, one rare: the damped solve converges
    offsets = latent_class_offsets(rare)
    z = torch.randn(1_000_000, 15, generator=torch.Generator().manual_seed(4))
    share = torch.bincount((z + offsets).argmax(1), minlength=15).double() / len(z)
    torch.testing.assert_close(share, torch.tensor(rare, dtype=torch.float64), atol=0.0015,
                               rtol=0)
    equal = latent_class_offsets([1, 1, 1])
    torch.testing.assert_close(equal, torch.zeros(3))
    for bad in ([1.0], [0.5, 0.0, 0.5], [[0.5, 0.5]]):
        with pytest.raises(ValueError, match="class_prior"):
            latent_class_offsets(bad)


def test_projection_discriminator_adds_the_class_term():
    torch.manual_seed(0)
    d = Discriminator(16, [8, 8, 8], classes=3)
    images, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 2, 1, 2])
    torch.testing.assert_close(d(images, labels=labels), d(images))  # starts unconditional
    with torch.no_grad():
        d.class_embedding.normal_()
    hidden = {}
    d.final_dense.register_forward_hook(lambda m, i, o: hidden.setdefault("h", o))
    plain = d(images)
    h = torch.nn.functional.leaky_relu(hidden["h"], 0.2)
    expected = plain + torch.stack([d.class_embedding[c] @ h[i] for i, c in
                                    enumerate(labels.tolist())]) / math.sqrt(8)
    torch.testing.assert_close(d(images, labels=labels), expected)
    with pytest.raises(ValueError, match="classes"):
        Discriminator(16, [8, 8, 8])(images, labels=labels)


def test_latent_class_vectors_are_added_to_z():
    torch.manual_seed(0)
    g = ProGANGenerator(z_dim=8, channels=[6, 5], class_offsets=[0.5, 0.0, -0.5])
    plain = ProGANGenerator(z_dim=8, channels=[6, 5])
    plain.load_state_dict({k: v for k, v in g.state_dict().items() if "class" not in k})
    z = torch.randn(5, 8)
    torch.testing.assert_close(g(z), plain(z))  # zero vectors: the unconditional generator
    with torch.no_grad():
        g.class_embedding.normal_()
    shifted = torch.stack([z[i] + g.class_embedding[int(torch.argmax(
        z[i, :3] + torch.tensor([0.5, 0.0, -0.5])))] for i in range(5)])
    torch.testing.assert_close(g(z), plain(shifted))
    rebuilt = build(g.config())
    rebuilt.load_state_dict(g.state_dict())
    torch.testing.assert_close(rebuilt(z), g(z))
    with pytest.raises(ValueError, match="no latent classes"):
        plain.latent_classes(z)


def test_conditioning_continues_an_unconditional_checkpoint(tmp_path):
    """A checkpoint from before conditioning (no class vectors in either network) loads into
    a conditional trainer: everything it held is kept, the new vectors start at zero and
    then learn."""
    old = train_generator(str(tmp_path / "old"), GANConfig(**TINY),
                          kimg=0.008)
    state = old.state_dict()
    assert "class_embedding" not in state["discriminator"]
    with RunFolder(tmp_path / "new") as run:
        new = GANTrainer(GANConfig(**dict(TINY, condition_kimg=0.008, class_prior=PRIOR)), run)
        new.load_state_dict(state)
        for name, value in state["discriminator"].items():
            assert torch.equal(new.discriminator.state_dict()[name], value)
        for name, value in state["ema"].items():
            assert torch.equal(new.ema.state_dict()[name], value)
        assert not new.discriminator.class_embedding.any()
        assert not new.generator.generator.class_embedding.any()
        for optimizer, key in ((new.d_optimizer, "d_optimizer"), (new.g_optimizer, "g_optimizer")):
            moments = optimizer.state_dict()["state"]
            for index, values in state[key]["state"].items():
                assert torch.equal(moments[index]["exp_avg"], values["exp_avg"])
        assert new.conditioned()
        with pytest.raises(ValueError, match="labels"):
            new.train_step(torch.randn(4, 3, 16, 16))
        new.train_step(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
        assert new.discriminator.class_embedding.any()
        assert new.generator.generator.class_embedding.any()


def test_conditional_training_resumes_exactly(tmp_path):
    tiny = dict(TINY, grow_kimg=0, condition_kimg=0.008, class_prior=PRIOR)
    whole = train_generator(str(tmp_path / "whole"), GANConfig(**tiny), kimg=0.024)
    train_generator(str(tmp_path / "split"), GANConfig(**tiny), kimg=0.012)
    resumed = train_generator(str(tmp_path / "split"), kimg=0.024)
    assert resumed.images_seen == whole.images_seen == 24
    assert whole.discriminator.class_embedding.any()
    for a, b in zip(whole.state_dict()["discriminator"].values(),
                    resumed.state_dict()["discriminator"].values()):
        assert torch.equal(a, b)
    for a, b in zip(whole.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)


def test_run_folder_refuses_a_second_writer(tmp_path):
    from gandissect.train.common import RunFolder

    with RunFolder(tmp_path / "run"), pytest.raises(ValueError, match="another job"):
        RunFolder(tmp_path / "run")


# ---------------------------------------------------------------------- metrics
def test_total_variation():
    assert total_variation(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0])) == 0
    assert total_variation(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])) == 1
    tv = total_variation(torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0]))
    assert tv == pytest.approx(0.25)


def slow_frechet(a, b):
    """The definition with the matrix square root of the (non-symmetric) product by eigvals."""
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.t()), torch.cov(b.t())
    eigenvalues = torch.linalg.eigvals(cov_a @ cov_b).real.clamp(min=0)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + cov_a.trace() + cov_b.trace()
                 - 2 * eigenvalues.sqrt().sum())


def test_frechet_distance_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g)
    b = torch.randn(400, 6, generator=g) @ torch.randn(6, 6, generator=g) + 0.5
    assert frechet_distance(a, b) == pytest.approx(slow_frechet(a, b), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    shift = torch.tensor([1.0, 2.0, 0, 0, 0, 0])
    assert frechet_distance(a, a + shift) == pytest.approx(5.0, rel=1e-6)


def slow_precision_recall(real, fake, k):
    def radius(points, i):
        d = sorted(float(torch.dist(points[i], points[j])) for j in range(len(points)) if j != i)
        return d[k - 1]

    real_r = [radius(real, i) for i in range(len(real))]
    fake_r = [radius(fake, i) for i in range(len(fake))]
    precision = sum(any(float(torch.dist(f, real[j])) <= real_r[j] for j in range(len(real)))
                    for f in fake) / len(fake)
    recall = sum(any(float(torch.dist(r, fake[j])) <= fake_r[j] for j in range(len(fake)))
                 for r in real) / len(real)
    return precision, recall


def test_precision_recall_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(40, 3, generator=g)
    fake = torch.randn(30, 3, generator=g) * 0.5 + 1.0
    p, r = precision_recall(real, fake, k=3)
    sp, sr = slow_precision_recall(real, fake, 3)
    assert p == pytest.approx(sp, abs=1e-6) and r == pytest.approx(sr, abs=1e-6)
    assert precision_recall(real, real, k=3) == (1.0, 1.0)


def test_quantize_to_saved_levels():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.3, 1.0, 5.0])
    q = quantize(x)
    assert q.min() == -1 and q.max() == 1
    levels = (q + 1) * 127.5
    torch.testing.assert_close(levels, levels.round())


def test_growth_schedule_fades_each_resolution_in_then_holds_it():
    config = GANConfig(resolution=64, channels=[8] * 5, grow_kimg=1, grow_start=8)
    stage = {k: growth_stage(config, int(k * 1000)) for k in
             (0, 0.5, 1, 1.5, 2, 2.9, 3, 3.25, 4, 5, 5.5, 6, 50)}
    assert stage == {0: (1, 1.0), 0.5: (1, 1.0), 1: (2, 0.0), 1.5: (2, 0.5), 2: (2, 1.0),
                     2.9: (2, 1.0), 3: (3, 0.0), 3.25: (3, 0.25), 4: (3, 1.0), 5: (4, 0.0),
                     5.5: (4, 0.5), 6: (4, 1.0), 50: (4, 1.0)}
    assert growth_stage(GANConfig(resolution=64, grow_kimg=0), 0) == (4, 1.0)  # full size


def test_growing_generator_fades_between_resolutions():
    torch.manual_seed(0)
    growing = GrowingGenerator(ProGANGenerator(8, [8, 8, 8]))
    z = torch.randn(3, 8)
    assert torch.equal(growing(z), growing.generator(z))  # the top level is the generator
    blocks = list(growing.generator.children())
    h8 = blocks[3](blocks[2](blocks[1](blocks[0](z[:, :, None, None]))))
    assert torch.allclose(growing(z, 1), growing.to_rgb[1](h8))
    low = growing.to_rgb[0](blocks[1](blocks[0](z[:, :, None, None])))
    halfway = growing(z, 1, 0.25)
    expected = 0.75 * low.repeat_interleave(2, 2).repeat_interleave(2, 3) + 0.25 * growing(z, 1)
    assert torch.allclose(halfway, expected, atol=1e-6)


def test_pixel_discriminator_scores_every_growing_size():
    from gandissect.models.discriminator import Discriminator

    d = Discriminator(32, [8, 8, 8, 8])
    for size in (32, 16, 8, 4):
        assert d(torch.randn(4, 3, size, size), alpha=0.5).shape == (4,)
    with pytest.raises(ValueError, match="not 32 / 2\\*\\*k"):
        d(torch.randn(4, 3, 12, 12))


STATIC = dict(TINY, grow_kimg=0)  # full size from the start: every critic trains at once


def test_branch_starts_from_the_old_run_and_keeps_it(tmp_path):
    """A branch starts from the old run's state (left untouched) and refuses what it cannot
    do: an existing run, a missing source, a second semantic critic."""
    from gandissect.fileio import load_state
    from gandissect.train.gan import branch_run

    old = train_generator(str(tmp_path / "old"), GANConfig(**SEMANTIC), kimg=0.008)
    before = (tmp_path / "old" / "checkpoint.pt").read_bytes()
    branch_run(tmp_path / "old", tmp_path / "new", semantic=True)
    assert (tmp_path / "old" / "checkpoint.pt").read_bytes() == before
    with pytest.raises(UserError, match="already holds a run"):
        branch_run(tmp_path / "old", tmp_path / "new")
    with pytest.raises(UserError, match="train it first"):
        branch_run(tmp_path / "none", tmp_path / "other")
    with pytest.raises(UserError, match="already trains a semantic"):
        branch_run(tmp_path / "new", tmp_path / "again", semantic=True)
    state = load_state(tmp_path / "new" / "checkpoint.pt")
    assert state["config"]["semantic_kimg"] == 0.008
    with RunFolder(tmp_path / "new") as run:
        new = GANTrainer(GANConfig.from_dict(state["config"]), run)
        new.load_state_dict(state)
    for name, value in old.state_dict()["discriminator"].items():
        assert torch.equal(new.discriminator.state_dict()[name], value)
    for name, value in old.ema.state_dict().items():
        assert torch.equal(new.ema.state_dict()[name], value)


RETIRED = {"loss": "logistic", "patch_kimg": None, "patch_channels": [32, 64],
           "patch_warmup_kimg": 5.0, "patch_ramp_kimg": 10.0, "patch_weight": 1.0}


def test_checkpoints_from_before_the_retired_critics_continue(tmp_path):
    """A checkpoint written when the configuration still had the hinge / projected losses and
    the texture critic (unused, at their defaults) continues exactly as a current one; a run
    that used one of them is refused before training, and a branch of it too."""
    from gandissect.fileio import load_state, save_state
    from gandissect.train.gan import branch_run

    whole = train_generator(str(tmp_path / "whole"), GANConfig(**STATIC), kimg=0.016)
    train_generator(str(tmp_path / "old"), GANConfig(**STATIC), kimg=0.008)
    state = load_state(tmp_path / "old" / "checkpoint.pt")
    save_state(tmp_path / "old" / "checkpoint.pt",
               {**state, "config": {**state["config"], **RETIRED}})
    resumed = train_generator(str(tmp_path / "old"), kimg=0.016)
    for a, b in zip(whole.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)
    for name, used in {"hinge": {"loss": "hinge"}, "projected": {"loss": "projected"},
                       "patch": {"patch_kimg": 0.004}}.items():
        state = load_state(tmp_path / "old" / "checkpoint.pt")
        folder = tmp_path / name
        folder.mkdir()
        save_state(folder / "checkpoint.pt", {**state, "config": {**state["config"], **RETIRED,
                                                                  **used}})
        with pytest.raises(UserError, match="no longer part of gandissect; start a new run"):
            train_generator(str(folder), kimg=0.024)
        with pytest.raises(UserError, match="no longer part of gandissect"):
            branch_run(folder, tmp_path / f"branch-{name}")
        assert load_state(folder / "checkpoint.pt")["images_seen"] == 16
    with pytest.raises(UserError, match=r"unknown GANConfig fields \['chanels'\]"):
        GANConfig.from_dict({"chanels": [8]})


def test_conditioning_is_off_by_default_and_the_shipped_recipe_sets_it(tmp_path, capsys):
    """``GANConfig()`` trains without latent classes; ``--config sceneworld`` is the shipped
    run's configuration (latent classes and the class-conditional critic from 311,712 images
    on), and a name that is neither a recipe nor a file says both."""
    from gandissect.cli import main
    from gandissect.cli.train import _new_run_config

    assert GANConfig().condition_kimg is None
    assert _new_run_config("sceneworld", str(tmp_path / "run")) == GANConfig(
        condition_kimg=311.712)
    assert main(["train", "generator", "--run", str(tmp_path / "other"), "--config",
                 "sceneworl", "--device", "cpu"]) == 2
    assert "give a JSON file or a recipe (sceneworld)" in capsys.readouterr().err


def test_pixel_shares_count_every_labelled_pixel():
    """The eval's pixel tallies and "appears" counts restated by loops over pixels, on labels
    given outright."""
    from gandissect.evaluate.generator import GANPAINT_CONCEPTS, MIN_PIXELS, _shares, _Tally

    names = {"object": ["none", "sky", "cloud", "tree", "grass", "dome"],
             "part": ["none", "door"], "material": ["none", "brick", "plaster"]}
    generator = torch.Generator().manual_seed(0)
    labels = {category: torch.randint(0, len(values), (3, 5, 6), generator=generator)
              for category, values in names.items()}
    labels["material"][0] = 2  # no brick in the first image
    labels["material"][1, 0, :MIN_PIXELS - 1] = 1  # too little to count as appearing

    class Segmenter:
        concepts = names

        def segment(self, images):
            return labels

    class Classifier:
        scene_names = ["house", "forest"]

        def __call__(self, images):
            return torch.zeros(len(images), 2)

        def features(self, images):
            return torch.zeros(len(images), 4)

    tally = _Tally(Segmenter(), Classifier())
    for _ in range(2):
        tally.add(torch.zeros(3, 3, 5, 6))
    for category in ("object", "material"):
        counts = [0] * len(names[category])
        for value in labels[category].flatten().tolist():
            counts[value] += 2
        shares = _shares(tally.pixels[category], names[category])
        assert shares == {name: round(c / sum(counts), 5)
                          for name, c in zip(names[category], counts)}
    brick_images = sum(1 for image in labels["material"]
                       if sum(v == 1 for v in image.flatten().tolist()) >= MIN_PIXELS)
    assert tally.appears[GANPAINT_CONCEPTS.index(("material", "brick"))] == 2 * brick_images


def test_facade_purity_restated_by_a_loop():
    """The eval's facade purity, per image by counting labels one by one."""
    from gandissect.evaluate.generator import FACADE_MIN_PIXELS, _Tally

    names = {"object": ["none", "sky", "cloud", "tree", "grass", "dome"],
             "part": ["none", "door"], "material": ["none", "brick", "plaster", "stone", "glass"]}
    generator = torch.Generator().manual_seed(3)
    material = torch.randint(0, 5, (4, 12, 12), generator=generator)
    material[1] = 4  # glass only: no facade
    material[2, :, :] = 0
    material[2, :6, :] = 3  # 72 stone pixels: one pure facade
    material[3, :5, :] = 0  # fewer than FACADE_MIN_PIXELS facade pixels
    material[3, 5:, 7:] = 0
    labels = {"object": torch.zeros(4, 12, 12, dtype=torch.long),
              "part": torch.zeros(4, 12, 12, dtype=torch.long), "material": material}

    class Segmenter:
        concepts = names

        def segment(self, images):
            return labels

    class Classifier:
        scene_names = ["house"]

        def __call__(self, images):
            return torch.zeros(len(images), 1)

        def features(self, images):
            return torch.zeros(len(images), 2)

    tally = _Tally(Segmenter(), Classifier())
    tally.add(torch.zeros(4, 3, 12, 12))
    purities = []
    for image in material:
        counts = {code: 0 for code in (1, 2, 3)}
        for value in image.flatten().tolist():
            if value in counts:
                counts[value] += 1
        if sum(counts.values()) >= FACADE_MIN_PIXELS:
            purities.append(max(counts.values()) / sum(counts.values()))
    assert tally.facade_images == len(purities) == 2
    assert tally.facade_purity == pytest.approx(sum(purities))
    assert 1.0 in purities


def test_material_grid_shows_buildings_and_their_segmented_materials():
    from gandissect.evaluate.generator import _real_batches, material_grid
    from gandissect.models.registry import load_generator, load_segmenter
    from gandissect.world.grid import colorize

    generator, segmenter = load_generator("sceneworld"), load_segmenter("sceneworld")
    grid = np.asarray(material_grid(generator, segmenter, seed=2000, n=3, candidates=30))
    size = generator.resolution
    assert grid.shape == (4 * size * 2, 3 * size * 2, 3)
    real = next(_real_batches(2000, 30, 30, size, "cpu"))
    labels = segmenter.segment(real)
    building = segmenter.concepts["object"].index("building")
    first = int(((labels["object"] == building).flatten(1).sum(1) >= 300).nonzero()[0])
    tile = grid[::2, ::2][:, :size]  # undo the 2x zoom; first column
    image = ((real[first].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(tile[:size], image)
    assert np.array_equal(tile[size:2 * size],
                          colorize(labels["material"][first].numpy(), "material"))
    with pytest.raises(ValueError, match="show a building"):
        material_grid(generator, segmenter, seed=2000, n=3, candidates=2)


def test_eval_refuses_a_grid_name_without_an_image_suffix_first(tmp_path, capsys, monkeypatch):
    from gandissect.cli import main
    from gandissect.models import registry

    def never(*_, **__):
        raise AssertionError("the models must not load before the names are checked")

    monkeypatch.setattr(registry, "load_generator", never)
    out = tmp_path / "walls.txt"
    assert main(["eval", "generator", "--material-grid", str(out), "--quiet"]) == 2
    assert "end it in .png" in capsys.readouterr().err
    assert not out.exists()


def test_cli_config_starts_a_new_run_with_those_settings(tmp_path, capsys):
    import json

    from gandissect.cli import main
    from gandissect.fileio import load_state

    settings = dict(TINY, d_channels=[4, 8, 16], grow_kimg=0)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(settings))
    run = tmp_path / "run"
    assert main(["train", "generator", "--run", str(run), "--config", str(config),
                 "--kimg", "0.008", "--workers", "0", "--device", "cpu"]) == 0
    state = load_state(run / "checkpoint.pt")
    assert state["images_seen"] == 8
    expected = {**GANConfig().__dict__, **settings, "kimg": 0.008}
    assert {k: state["config"][k] for k in expected} == expected
    widths = Discriminator(16, [4, 8, 16]).state_dict()
    assert {k: v.shape for k, v in state["discriminator"].items()} == {
        k: v.shape for k, v in widths.items()}
    # a run that exists continues with its own configuration: --config is refused
    assert main(["train", "generator", "--run", str(run), "--config", str(config),
                 "--workers", "0", "--device", "cpu"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert load_state(run / "checkpoint.pt")["images_seen"] == 8


@pytest.mark.parametrize("text, message", [
    ('{"chanels": [8, 8, 8]}', "unknown fields \\['chanels'\\]"),
    ("[1, 2]", "expected a JSON object"),
    ("{not json", "cannot read a JSON object"),
])
def test_cli_config_refuses_bad_files_before_training(tmp_path, capsys, text, message):
    from gandissect.cli import main

    config = tmp_path / "config.json"
    config.write_text(text)
    assert main(["train", "generator", "--run", str(tmp_path / "run"), "--config",
                 str(config), "--workers", "0", "--device", "cpu"]) == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_cli_config_and_branch_are_exclusive(tmp_path, capsys):
    from gandissect.cli import main

    config = tmp_path / "config.json"
    config.write_text("{}")
    assert main(["train", "generator", "--run", str(tmp_path / "new"), "--branch",
                 str(tmp_path / "old"), "--config", str(config), "--device", "cpu"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("device, during", [("cpu", None), ("cuda", (True, True))])
def test_tf32_only_while_training_on_cuda(monkeypatch, device, during):
    """TF32 is allowed while a CUDA run trains, and the flags are restored afterwards (the
    training itself is replaced, as CI has no GPU)."""
    import gandissect.train.gan as gan

    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    seen = []

    def fake_training(*args, **kwargs):
        seen.append(tuple(flag.allow_tf32 for flag in flags))
        raise KeyboardInterrupt  # a run stopped midway restores them too

    monkeypatch.setattr(gan, "run_training", fake_training)
    original = [flag.allow_tf32 for flag in flags]
    try:
        for flag in flags:
            flag.allow_tf32 = False
        with pytest.raises(KeyboardInterrupt):
            gan.train_generator("unused", device=device)
        assert seen == [during or (False, False)]
        assert all(flag.allow_tf32 is False for flag in flags)
    finally:
        for flag, value in zip(flags, original):
            flag.allow_tf32 = value


SEMANTIC = dict(STATIC, semantic_channels=[8, 8, 8], semantic_warmup_kimg=0.004,
                semantic_ramp_kimg=0.008)


def test_semantic_maps_are_the_segmenters_probabilities_stacked(tmp_path):
    from gandissect.models.registry import load_segmenter

    with RunFolder(tmp_path / "run") as run:
        trainer = GANTrainer(GANConfig(**dict(SEMANTIC, semantic_kimg=0)), run)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    maps = trainer.semantic_maps(images)
    logits = load_segmenter("sceneworld")(images)
    start = 0
    for category in ("object", "part", "material"):  # the segmenter's heads, in order
        k = logits[category].shape[1]
        for c in range(k):  # softmax by its formula, one label at a time
            expected = logits[category][:, c].exp() / logits[category].exp().sum(1)
            torch.testing.assert_close(maps[:, start + c], expected, atol=1e-5, rtol=1e-4)
        start += k
    assert maps.shape == (2, start, 16, 16)
    assert trainer.semantic.from_rgb.weight.shape[1] == start
    assert not any(p.requires_grad for p in trainer.segmenter.parameters())
    assert not trainer.segmenter.training  # batch norm on its running statistics


def test_semantic_critic_term_of_the_generator_loss(tmp_path):
    """Past its ramp, the generator's loss is the main one plus softplus(-critic logits): with
    a semantic critic that scores every image 0.7 and does not learn, exactly softplus(-0.7)
    more than the same step without it; its weight is None before it starts and below full
    size, 0 while it warms up, then rises linearly."""
    critic = "semantic"
    from gandissect.train.gan import branch_run

    train_generator(str(tmp_path / "old"), GANConfig(**SEMANTIC), kimg=0.008)
    branch_run(tmp_path / "old", tmp_path / "new", **{critic: True})
    with pytest.raises(ValueError, match=f"already trains a {critic}"):
        branch_run(tmp_path / "new", tmp_path / "again", **{critic: True})
    losses, real = {}, torch.rand(4, 3, 16, 16) * 2 - 1
    for name in ("old", "new"):
        with RunFolder(tmp_path / name) as run:
            state = run.load()
            trainer = GANTrainer(GANConfig.from_dict(state["config"]), run)
            trainer.load_state_dict(state)
        scorer = getattr(trainer, critic)
        if scorer is not None:
            weight, top = getattr(trainer, f"{critic}_weight"), trainer.generator.levels - 1
            weights = []
            for seen in (4, 8, 12, 16, 20, 40):
                trainer.images_seen = seen
                weights.append(weight(top, 1.0))
            assert weights == [None, 0.0, 0.0, 0.5, 1.0, 1.0]
            assert weight(top - 1, 1.0) is None and weight(top, 0.5) is None
            with torch.no_grad():
                scorer.score.weight.zero_()
                scorer.score.bias.fill_(0.7)
            for group in getattr(trainer, f"{critic}_optimizer").param_groups:
                group["lr"] = 0.0
        trainer.images_seen = 24  # past the ramp: weight 1
        losses[name] = trainer.train_step(real.clone())
    assert f"{critic}_loss" not in losses["old"]
    softplus = torch.nn.functional.softplus
    expected = losses["old"]["g_loss"] + float(softplus(torch.tensor(-0.7)))
    assert losses["new"]["g_loss"] == pytest.approx(expected, abs=1e-5)
    assert losses["new"]["d_loss"] == pytest.approx(losses["old"]["d_loss"], abs=1e-6)
    assert losses["new"][f"{critic}_loss"] == pytest.approx(  # real and fake scored alike
        float(softplus(torch.tensor(0.7)) + softplus(torch.tensor(-0.7))), abs=1e-5)


def test_training_with_the_semantic_critic_resumes_exactly(tmp_path):
    """Stopped and continued, a branch with the semantic critic ends where an uninterrupted
    one ends, critic and its optimiser included; its slim checkpoint keeps the critic."""
    critic = "semantic"
    from gandissect.fileio import load_state
    from gandissect.train.gan import branch_run

    train_generator(str(tmp_path / "old"), GANConfig(**SEMANTIC), kimg=0.008)
    branch_run(tmp_path / "old", tmp_path / "whole", **{critic: True})
    branch_run(tmp_path / "old", tmp_path / "split", **{critic: True})
    whole = train_generator(str(tmp_path / "whole"), kimg=0.028)
    train_generator(str(tmp_path / "split"), kimg=0.016)
    resumed = train_generator(str(tmp_path / "split"), kimg=0.028)
    assert resumed.images_seen == whole.images_seen == 28
    key = f"{critic}_discriminator"
    for name in (key, "discriminator", "ema"):
        for a, b in zip(whole.state_dict()[name].values(), resumed.state_dict()[name].values()):
            assert torch.equal(a, b), name
    with RunFolder(tmp_path / "fresh") as run:  # the critic's initial weights
        fresh = GANTrainer(GANConfig(**{**SEMANTIC, f"{critic}_kimg": 0.008}), run)
    for name, value in getattr(fresh, critic).state_dict().items():
        if not name.startswith("from_rgb_at"):  # the from-RGB layers of smaller sizes idle
            assert not torch.equal(whole.state_dict()[key][name], value), name  # it learned
    state = load_state(slim_checkpoint(tmp_path / "whole", tmp_path / "slim.pt"))
    assert f"{critic}_optimizer" not in state
    assert all(v.dtype == torch.float16 for v in state[key].values())


def test_a_run_from_weights_starts_as_they_are_and_waits_for_its_critics(tmp_path):
    """A run started from a weights file: generator and moving average are those weights, the
    image count is theirs, no growing; the generator does not move while the fresh critics
    warm up, and does after."""
    from gandissect.train.gan import start_from_weights

    old = train_generator(str(tmp_path / "old"), GANConfig(**STATIC), kimg=0.008)
    weights = tmp_path / "old" / "sceneworld_generator.safetensors"
    state, _, metadata = read_weights(weights)
    assert metadata["images_seen"] == "8"
    config = GANConfig(**dict(SEMANTIC, grow_kimg=5, d_channels=[4, 8, 8], kimg=0.012))
    start_from_weights(weights, tmp_path / "new", config, warmup_kimg=0.008, semantic=True)
    with pytest.raises(UserError, match="already holds a run"):
        start_from_weights(weights, tmp_path / "new")
    with pytest.raises(ValueError, match="not a generator"):
        start_from_weights("models/sceneworld_segmenter.safetensors", tmp_path / "other")
    with pytest.raises(ValueError, match="give a --kimg above 0.008"):
        start_from_weights(weights, tmp_path / "other", GANConfig(**dict(STATIC, kimg=0.008)))
    assert not (tmp_path / "other").exists()
    new = train_generator(str(tmp_path / "new"), kimg=0.012)  # still warming up at 12 < 16
    c = new.config
    assert (c.grow_kimg, c.semantic_kimg, c.generator_frozen_until_kimg) == (0.0, 0.008, 0.016)
    assert c.d_channels == [4, 8, 8] and c.channels == [8, 8, 8]
    assert new.images_seen == 12
    for name, value in state.items():
        assert torch.equal(new.generator.generator.state_dict()[name], value), name
        assert torch.equal(new.ema.generator.state_dict()[name], value), name
    assert not torch.equal(new.discriminator.state_dict()["from_rgb.weight"],
                           old.discriminator.state_dict()["from_rgb.weight"])  # fresh critic
    new = train_generator(str(tmp_path / "new"), kimg=0.024)
    moved = [not torch.equal(new.generator.generator.state_dict()[name], value)
             for name, value in state.items() if value.is_floating_point()]
    assert any(moved)


def test_cli_from_weights_with_the_semantic_critic(tmp_path, capsys):
    from gandissect.cli import main
    from gandissect.fileio import load_state

    train_generator(str(tmp_path / "old"), GANConfig(**SEMANTIC), kimg=0.008)
    weights = str(tmp_path / "old" / "sceneworld_generator.safetensors")
    run, config = str(tmp_path / "new"), tmp_path / "config.json"
    config.write_text('{"d_channels": [4, 8, 8]}')
    assert main(["train", "generator", "--run", run, "--from-weights", weights, "--semantic",
                 "--config", str(config), "--critic-warmup", "0.004", "--kimg", "0.016",
                 "--workers", "0", "--device", "cpu"]) == 2
    assert "give semantic_channels with 3 channel counts" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    config.write_text('{"d_channels": [4, 8, 8], "semantic_channels": [4, 4, 4], "batch": 4}')
    assert main(["train", "generator", "--run", run, "--from-weights", weights, "--semantic",
                 "--config", str(config), "--critic-warmup", "0.004", "--kimg", "0.016",
                 "--workers", "0", "--device", "cpu"]) == 0
    assert "critics learn alone for 0.004" in capsys.readouterr().out
    state = load_state(tmp_path / "new" / "checkpoint.pt")
    assert state["images_seen"] == 16 and state["config"]["semantic_kimg"] == 0.008
    assert "semantic_discriminator" in state
    assert main(["train", "generator", "--run", str(tmp_path / "x"), "--from-weights",
                 weights, "--branch", str(tmp_path / "old"), "--device", "cpu"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
