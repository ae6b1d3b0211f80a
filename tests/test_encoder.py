"""The image -> latent encoder: architecture, file round trip, its training loss and resume."""

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from gandissect.errors import UserError
from gandissect.models.encoder import LatentEncoder
from gandissect.models.proggan import ProGANGenerator
from gandissect.models.registry import (
    SEEDS,
    build,
    load_encoder,
    load_weights_file,
    read_weights,
    save_weights,
)


def images(n: int, size: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.fixture
def tiny_generator(tmp_path) -> Path:
    """A 32 px ProGAN generator with latent classes, as a project weights file."""
    torch.manual_seed(0)
    generator = ProGANGenerator(16, [8, 8, 8, 4], class_offsets=[0.0, 0.2, -0.2])
    with torch.no_grad():
        generator.class_embedding.normal_()
    path = tmp_path / "tiny_generator.safetensors"
    save_weights(generator, path, generator.config())
    return path


def test_encoder_shapes_size_and_round_trip(tmp_path):
    encoder = LatentEncoder().eval()
    x = images(2, 64)
    z = encoder(x)
    assert z.shape == (2, 256)
    assert sum(p.numel() for p in encoder.parameters()) < 2_000_000
    # four stride-2 stages: 64 -> 4 px before the linear head
    assert encoder.features(x).shape == (2, 192, 4, 4)
    # on the sphere of radius sqrt(z_dim), in the head's direction
    head = encoder.head(encoder.features(x).flatten(1))
    assert torch.allclose(z.norm(dim=1), torch.full((2,), 16.0))
    assert torch.allclose(z, head / head.norm(dim=1, keepdim=True) * 16, atol=1e-5)
    save_weights(encoder, tmp_path / "e.safetensors", encoder.config())
    state, config, _ = read_weights(tmp_path / "e.safetensors")
    assert config == {"architecture": "encoder", "z_dim": 256, "resolution": 64,
                      "channels": [32, 64, 128, 192]}
    rebuilt = build(config)
    rebuilt.load_state_dict(state)
    assert torch.equal(rebuilt.eval()(x), z)
    assert torch.equal(load_weights_file(tmp_path / "e.safetensors")(x), z)
    small = LatentEncoder(16, 32, [8, 8, 8])
    assert small(images(3, 32)).shape == (3, 16)
    with pytest.raises(UserError, match=r"\(N, 3, 64, 64\)"):
        encoder(images(1, 32))
    with pytest.raises(UserError, match="power of two"):
        LatentEncoder(resolution=48)
    with pytest.raises(UserError, match="stages"):
        LatentEncoder(resolution=64, channels=[8, 8])
    with pytest.raises(UserError, match="not a generator"):
        load_weights_file(tmp_path / "e.safetensors", kind="generator")


def test_load_encoder_says_how_to_train_a_missing_one(tmp_path, monkeypatch):
    monkeypatch.setenv("GANDISSECT_MODELS", str(tmp_path))
    with pytest.raises(UserError, match="gandissect train encoder --run DIR") as error:
        load_encoder("sceneworld")
    assert str(tmp_path / "sceneworld_encoder.safetensors") in str(error.value)
    assert "\n" not in str(error.value)
    encoder = LatentEncoder(16, 32, [8, 8, 8])
    save_weights(encoder, tmp_path / "sceneworld_encoder.safetensors", encoder.config())
    assert isinstance(load_encoder("sceneworld"), LatentEncoder)
    with pytest.raises(UserError, match="unknown encoder"):
        load_encoder("nowhere")


def test_training_loss_is_its_definition(tmp_path, tiny_generator):
    """The trainer's loss restated: latent MSE on generated images, pixel MSE through the
    generator on both halves; the real half is world 104's scenes 0.."""
    from gandissect.train.common import RunFolder
    from gandissect.train.encoder import EncoderConfig, EncoderTrainer
    from gandissect.world import render_batch
    from gandissect.world.dataset import image_to_tensor

    config = EncoderConfig(generator=str(tiny_generator), channels=[8, 8, 8], batch=3)
    assert config.world_seed == SEEDS["encoder"] == 104
    with RunFolder(tmp_path / "run") as run:
        trainer = EncoderTrainer(config, run)
    real = image_to_tensor(render_batch(104, range(3), 32)["image"])
    total, numbers = trainer.loss({"image": real})

    generator, encoder = trainer.generator, trainer.model
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))  # seed 0, step 0
    fake = generator(z)
    predicted_fake, predicted_real = encoder(fake), encoder(real)
    latent = ((predicted_fake - z) ** 2).mean()
    pixel_fake = ((generator(predicted_fake) - fake) ** 2).mean()
    pixel_real = ((generator(predicted_real) - real) ** 2).mean()
    expected = latent + 2.0 * (pixel_fake + pixel_real)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert numbers["latent"] == pytest.approx(F.mse_loss(predicted_fake, z).item(), rel=1e-5)
    assert numbers["pixel_real"] == pytest.approx(pixel_real.item(), rel=1e-5)
    # only the encoder learns
    total.backward()
    assert all(p.grad is None for p in generator.parameters())
    assert all(p.grad is not None for p in encoder.parameters())


def test_training_resumes_exactly_and_leaves_the_generator_alone(tmp_path, tiny_generator):
    from gandissect.train.encoder import EncoderConfig, EncoderTrainer, train_encoder

    def config():
        return EncoderConfig(generator=str(tiny_generator), channels=[8, 8, 8], batch=4,
                             kimg=0.016, warmup_kimg=0.004)

    straight = train_encoder(str(tmp_path / "straight"), config(), progress=False)
    assert (straight.images_seen, straight.step) == (16, 4)

    def stop_after_two_steps(trainer):  # what SIGTERM does: the run folder's flag
        trainer.run.stop_requested = trainer.step >= 2

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EncoderTrainer, "after_step", stop_after_two_steps)
        first = train_encoder(str(tmp_path / "stopped"), config(), progress=False)
    assert (first.images_seen, first.step) == (8, 2)
    resumed = train_encoder(str(tmp_path / "stopped"), progress=False)
    assert (resumed.images_seen, resumed.step) == (16, 4)
    assert resumed.config.channels == [8, 8, 8]  # the checkpoint's config wins
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name

    weights = tmp_path / "stopped" / "sceneworld_encoder.safetensors"
    state, encoder_config, metadata = read_weights(weights)
    assert encoder_config == {"architecture": "encoder", "z_dim": 16, "resolution": 32,
                              "channels": [8, 8, 8]}
    assert (metadata["images_seen"], metadata["world_seed"]) == ("16", "104")
    assert metadata["generator"] == str(tiny_generator)
    for name, value in straight.model.state_dict().items():
        assert torch.equal(state[name], value), name
    original, _, _ = read_weights(tiny_generator)
    for name, value in resumed.generator.state_dict().items():
        assert torch.equal(value, original[name]), name


def test_train_encoder_command_parses():
    import argparse

    from gandissect.cli.train import TRAINERS, register_models
    from gandissect.train.encoder import EncoderConfig

    parser = argparse.ArgumentParser()
    register_models(parser.add_subparsers(dest="model"))
    args = parser.parse_args(["encoder", "--run", "runs/e", "--kimg", "3", "--threads", "1"])
    assert (args.run_dir, args.kimg, args.threads, args.workers) == ("runs/e", 3.0, 1, 0)
    assert TRAINERS["encoder"][3] == EncoderConfig().kimg
