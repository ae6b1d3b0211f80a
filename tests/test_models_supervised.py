"""The segmenter and scene classifier: architectures, metrics, shipped weights, training."""

from pathlib import Path

import numpy as np
import pytest
import torch

from gandissect.evaluate.classifier import evaluate_classifier
from gandissect.evaluate.metrics import (
    accuracy,
    confusion_matrix,
    iou_per_label,
    recall_per_label,
)
from gandissect.evaluate.segmenter import evaluate_segmenter, segmentation_scores
from gandissect.models.classifier import SceneClassifier
from gandissect.models.registry import (
    SEEDS,
    build,
    load_classifier,
    load_segmenter,
    models_dir,
    read_weights,
    save_weights,
)
from gandissect.models.segmenter import Segmenter


def images(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def round_trip(model: torch.nn.Module, tmp_path: Path) -> torch.nn.Module:
    save_weights(model, tmp_path / "m.safetensors", model.config())
    state, config, _ = read_weights(tmp_path / "m.safetensors")
    rebuilt = build(config)
    rebuilt.load_state_dict(state)
    return rebuilt.eval()


# -- architectures ------------------------------------------------------------------------
def test_segmenter_shapes_codes_and_round_trip(tmp_path):
    model = Segmenter([8, 16, 24, 32]).eval()
    x = images()
    logits = model(x)
    assert {k: tuple(v.shape) for k, v in logits.items()} == {
        "object": (2, 13, 64, 64), "part": (2, 4, 64, 64), "material": (2, 7, 64, 64)}
    labels = model.segment(x)
    assert set(labels) == set(model.categories) == {"object", "part", "material", "color"}
    assert all(v.shape == (2, 64, 64) and v.dtype == torch.long for v in labels.values())
    assert model.concepts["part"] == ["none", "window", "door", "roof"]
    assert len(model.concepts["color"]) == 12
    rebuilt = round_trip(model, tmp_path)
    assert rebuilt.config() == model.config()
    assert torch.equal(rebuilt(x)["part"], logits["part"])


def test_segmenter_color_is_the_world_rule():
    from gandissect.world import render_batch
    from gandissect.world.colors import color_labels

    rendered = render_batch(1000, range(2), 64)
    x = torch.from_numpy(rendered["image"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    color = Segmenter([8, 16, 24, 32]).eval().segment(x)["color"]
    assert np.array_equal(color.numpy(), color_labels(rendered["image"]))


def test_classifier_shapes_names_features_and_round_trip(tmp_path):
    model = SceneClassifier().eval()
    x = images(3)
    logits = model(x)
    assert logits.shape == (3, 6)
    assert model.scene_names[0] == "church" and len(model.scene_names) == 6
    features = model.features(x)
    assert features.shape == (3, model.fc.in_features)
    assert torch.allclose(model.fc(features), logits, atol=1e-6)
    for name in ["conv1", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]:
        assert hasattr(model, name)
    rebuilt = round_trip(model, tmp_path)
    assert torch.equal(rebuilt(x), logits)


def test_models_follow_their_parameters_device():
    # device comes from the input / parameters; on a CPU-only machine "meta" stands in
    model = SceneClassifier().to("meta")
    assert model(torch.empty(2, 3, 64, 64, device="meta")).device.type == "meta"
    seg = Segmenter([8, 16, 24, 32]).to("meta")
    assert seg(torch.empty(1, 3, 64, 64, device="meta"))["object"].device.type == "meta"


# -- metrics against the definition -------------------------------------------------------
def slow_iou(truth: np.ndarray, predicted: np.ndarray, label: int) -> float | None:
    intersection = union = 0
    for t, p in zip(truth.ravel(), predicted.ravel()):
        intersection += int(t == label and p == label)
        union += int(t == label or p == label)
    return intersection / union if union else None


def test_confusion_iou_and_accuracy_match_a_pixel_loop():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=(3, 7, 6))
    predicted = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, 5, truth.shape))
    predicted[predicted == 4] = 3  # label 4: true somewhere, never predicted
    confusion = confusion_matrix(torch.from_numpy(truth), torch.from_numpy(predicted), 6)
    for label in range(6):
        expected = slow_iou(truth, predicted, label)
        got = iou_per_label(confusion)[label]
        assert (got is None) if expected is None else got == pytest.approx(expected)
    assert iou_per_label(confusion)[5] is None  # label 5 never occurs
    assert accuracy(confusion) == pytest.approx((truth == predicted).mean())
    for label in range(5):
        expected = (predicted[truth == label] == label).mean()
        assert recall_per_label(confusion)[label] == pytest.approx(expected)


def test_segmentation_scores_leave_none_out_of_the_means():
    truth = torch.tensor([[0, 1, 1, 2]])
    predicted = torch.tensor([[1, 1, 2, 2]])
    concepts = {c: ["none", "a", "b"] for c in ("object", "part", "material")}
    confusions = {c: confusion_matrix(truth, predicted, 3) for c in concepts}
    scores = segmentation_scores(confusions, concepts)
    iou_a, iou_b = slow_iou(truth.numpy(), predicted.numpy(), 1), slow_iou(
        truth.numpy(), predicted.numpy(), 2)
    assert scores["object_miou"] == pytest.approx((iou_a + iou_b) / 2)
    assert scores["per_concept_iou"]["part/b"] == pytest.approx(iou_b)
    assert scores["object_pixel_accuracy"] == pytest.approx(0.5)


def test_evaluations_refuse_training_seeds():
    for seed in SEEDS.values():
        with pytest.raises(ValueError, match="trained"):
            evaluate_segmenter(Segmenter([8, 16, 24, 32]), n=2, seed=seed, progress=False)
        with pytest.raises(ValueError, match="trained"):
            evaluate_classifier(SceneClassifier(), n=2, seed=seed, progress=False)


# -- the shipped models -------------------------------------------------------------------
SHIPPED_SEED = 5000  # fresh scenes: neither a training seed nor the model cards' eval seeds


def test_shipped_segmenter_meets_a_relaxed_bar():
    scores = evaluate_segmenter(load_segmenter("sceneworld"), n=200, seed=SHIPPED_SEED,
                                progress=False)
    assert scores["object_pixel_accuracy"] >= 0.93
    assert scores["object_miou"] >= 0.80
    assert scores["part_miou"] >= 0.55
    assert scores["material_miou"] >= 0.75


def test_shipped_classifier_meets_a_relaxed_bar():
    scores = evaluate_classifier(load_classifier("sceneworld"), n=200, seed=SHIPPED_SEED,
                                 progress=False)
    assert scores["top1"] >= 0.94


def test_classifier_training_snapshots_are_shipped_and_load():
    from gandissect.models.registry import load_weights_file

    paths = sorted((models_dir() / "classifier_checkpoints").glob("*.safetensors"))
    assert len(paths) >= 5
    seen = []
    for path in paths:
        _, _, metadata = read_weights(path)
        seen.append(int(metadata["images_seen"]))
        assert isinstance(load_weights_file(path), SceneClassifier)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


# -- resumable training -------------------------------------------------------------------
def test_training_stops_and_resumes_where_it_left_off(tmp_path, monkeypatch):
    from gandissect.train.classifier import ClassifierConfig, ClassifierTrainer, train_classifier
    from gandissect.train.segmenter import SegmenterConfig, train_segmenter

    def stop_after_two_steps(trainer):  # what SIGTERM does: the run folder's flag
        trainer.run.stop_requested = trainer.step >= 2

    config = ClassifierConfig(channels=[8, 8, 8, 8], batch=10, kimg=0.04, snapshots=[10])
    with monkeypatch.context() as patch:
        patch.setattr(ClassifierTrainer, "after_step", stop_after_two_steps)
        first = train_classifier(str(tmp_path / "cls"), config, progress=False)
    assert (first.images_seen, first.step) == (20, 2)
    again = train_classifier(str(tmp_path / "cls"), progress=False)
    assert (again.images_seen, again.step) == (40, 4)
    assert again.config.channels == [8, 8, 8, 8]  # the checkpoint's config wins
    snapshots = sorted(p.name for p in (tmp_path / "cls" / "snapshots").iterdir())
    assert snapshots == ["images_00000040.safetensors"]  # the stop skipped the 10-image one
    assert (tmp_path / "cls" / "sceneworld_classifier.safetensors").is_file()

    seg_config = SegmenterConfig(channels=[4, 8], batch=4, kimg=0.004)
    train_segmenter(str(tmp_path / "seg"), seg_config, progress=False)
    resumed = train_segmenter(str(tmp_path / "seg"), kimg=0.008, progress=False)
    assert (resumed.images_seen, resumed.step) == (8, 2)
    _, config, metadata = read_weights(tmp_path / "seg" / "sceneworld_segmenter.safetensors")
    assert config == {"architecture": "segmenter", "channels": [4, 8]}
    assert metadata["images_seen"] == "8"


def test_rendering_workers_train_the_same_weights(tmp_path):
    """Batches rendered by two worker processes are the scenes rendered in the training process,
    in the same order, so the weights come out identical."""
    from gandissect.train.classifier import ClassifierConfig, train_classifier

    config = dict(channels=[8, 8, 8, 8], batch=10, kimg=0.03, snapshots=[])
    inline = train_classifier(str(tmp_path / "inline"), ClassifierConfig(**config),
                              progress=False, workers=0)
    workers = train_classifier(str(tmp_path / "workers"), ClassifierConfig(**config),
                               progress=False, workers=2)
    assert inline.images_seen == workers.images_seen == 30
    for name, value in inline.model.state_dict().items():
        assert torch.equal(value, workers.model.state_dict()[name]), name
    with pytest.raises(ValueError, match="workers must be 0 or more"):
        train_classifier(str(tmp_path / "bad"), ClassifierConfig(**config), workers=-1)


def test_training_commands_parse():
    import argparse

    from gandissect.cli.train import register_models

    parser = argparse.ArgumentParser()
    register_models(parser.add_subparsers(dest="model"))
    for model in ("generator", "segmenter", "classifier"):
        args = parser.parse_args([model, "--run", "runs/x", "--kimg", "2", "--threads", "1",
                                  "--checkpoint-minutes", "3"])
        assert (args.run_dir, args.kimg, args.threads, args.checkpoint_minutes) == (
            "runs/x", 2.0, 1, 3.0)
        assert args.workers == (1 if model == "generator" else 0)  # as before: one, in-process
        assert args.device in ("cpu", "cuda")
        assert callable(args.run)


def test_train_help_states_each_config_default_kimg():
    """``gandissect train MODEL --help`` names the default that the model's config applies."""
    from gandissect.cli.train import TRAINERS
    from gandissect.train.classifier import ClassifierConfig
    from gandissect.train.encoder import EncoderConfig
    from gandissect.train.gan import GANConfig
    from gandissect.train.segmenter import SegmenterConfig

    configs = {"generator": GANConfig, "segmenter": SegmenterConfig,
               "classifier": ClassifierConfig, "encoder": EncoderConfig}
    assert set(configs) == set(TRAINERS)
    for name, config in configs.items():
        assert TRAINERS[name][3] == config().kimg, name
