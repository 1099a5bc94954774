"""Cross-modal suites: the image+text data rule, the cross-modal backbone's routing and shared parameters, a real
``bench run suite=crossmodal`` on a tiny budget, and the ``per_modality`` strategy's one joint stage per modality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.backbones import build_backbone
from bench.cli import main
from bench.config import BackboneConfig, DataSpec, SplitConfig, TaskConfig
from bench.data.crossmodal import QUESTIONS, ask, best_single_modality, digit_questions, rule
from bench.data.vision import mnist5k_arrays
from bench.errors import BenchError

from .conftest import records

TINY = ["train.max_train_samples=24", "train.max_eval_samples=20", "train.epochs=1", "train.batch_size=8",
        "report=false"]


# -- the data rule -------------------------------------------------------------------------------------------------
def test_every_question_is_true_for_five_digits_and_every_digit_answers_half_the_questions():
    table = np.array([[rule(q)(d) for d in range(10)] for q, _ in QUESTIONS])
    assert (table.sum(axis=1) == 5).all() and (table.sum(axis=0) == len(QUESTIONS) // 2).all()


def test_answers_follow_the_rule_are_balanced_and_neither_modality_alone_beats_chance():
    _, digits = mnist5k_arrays()
    texts, answers = ask(digits, seed=0)
    assert all(int(rule(q)(int(d))) == a for q, d, a in zip(texts, digits, answers))
    assert abs(answers.mean() - 0.5) < 0.005
    best = best_single_modality(texts, digits, answers)  # majority answer per question, per digit
    assert best["text"] < 0.51 and best["image"] < 0.51
    # every (digit, question) pair occurs equally often, up to one
    counts = {}
    for q, d in zip(texts, digits):
        counts[(q, int(d))] = counts.get((q, int(d)), 0) + 1
    assert len(counts) == 80 and max(counts.values()) - min(counts.values()) <= 1


def test_question_task_splits_are_the_mnist_tasks_splits():
    """The question task carves MNIST-5k exactly as a task of mnist5k alone does: no image is trained on in one task
    and tested in the other."""
    from bench.config import SuiteConfig
    from bench.data.base import load_suite_data

    suite = SuiteConfig(name="x", backbone={"source": "crossmodal"}, tasks=[
        {"name": "mnist", "input": "image", "target": "classification", "num_classes": 10,
         "data": {"source": "mnist5k"}},
        {"name": "question", "input": "image_text", "target": "classification", "num_classes": 2,
         "data": {"source": "digit_questions"}}])
    data = load_suite_data(suite)
    for split in ("train", "validation", "test"):
        mnist = data.splits["mnist"][split]
        images = np.stack([i for i, _ in data.splits["question"][split].inputs])
        assert np.array_equal(images, mnist.inputs)
        assert np.array_equal(data.splits["question"][split].targets["digit"], mnist.targets["mnist"])


def test_question_source_targets_equal_the_rule_on_the_true_digit():
    task = TaskConfig(name="q", input="image_text", target="classification", num_classes=2)
    out = digit_questions(DataSpec(source="digit_questions", options={"images": "digits"}), [task], SplitConfig())
    for split in out.values():
        assert [int(rule(q)(int(d))) for (_, q), d in zip(split.inputs, split.targets["digit"])] == \
            split.targets["q"].tolist()


# -- the backbone --------------------------------------------------------------------------------------------------
def _backbone(**options):
    opts = {"text": {"source": "transformers", "name": "minilm", "max_length": 16},
            "image": {"source": "cnn", "options": {"width": 4}}, "width": 16, **options}
    return build_backbone(BackboneConfig(source="crossmodal", options=opts), "text", ["a"])


def test_an_input_kind_without_its_encoder_is_refused_in_one_line():
    from bench.backbones.crossmodal import CrossModalPreprocessor

    pre = CrossModalPreprocessor({"text": None}, None, "k")  # a text encoder only
    with pytest.raises(BenchError, match=r"^crossmodal backbone: input 'image_text' needs the image encoder; "
                                         r"declare backbone.options.image$"):
        pre.for_input("image_text")
    with pytest.raises(BenchError, match="input 'words' has no encoder here; it takes text, text_pair, image"):
        pre.for_input("words")


@pytest.mark.integration
def test_frozen_backbone_routes_each_input_kind_through_its_encoders_and_shares_only_the_trunk():
    torch.manual_seed(0)
    module, pre = _backbone()
    images = np.random.default_rng(0).integers(0, 255, (3, 8, 8), dtype=np.uint8).astype(np.float32)
    text = pre.for_input("text").encode(["a cat", "a dog", "a car"])
    image = pre.for_input("image").encode(images)
    both = pre.for_input("image_text").encode([(images[i], t) for i, t in enumerate(["a", "b", "c"])])
    assert (set(text), set(image), set(both)) == ({"f_text"}, {"f_image"}, {"f_image", "f_text"})
    assert text["f_text"].shape == (3, 384) and not any(k.startswith("encoders") for k, _ in module.named_parameters())
    with pytest.raises(BenchError, match="crossmodal backbone: input 'vector'"):
        pre.for_input("vector")
    # a text batch reaches the text projection only; an image+text batch both
    for enc, reached in ((text, {"text"}), (both, {"text", "image"})):
        module.zero_grad()
        module(**pre.collate(enc, np.arange(3))).sum().backward()
        assert {m for m in ("text", "image") if module.proj[m][1].weight.grad is not None} == reached
    # shared by default: every parameter past the encoders (the frozen encoders are not in the module)
    assert {id(p) for p in module.shared_parameters()} == {id(p) for p in module.parameters()}
    assert module.shared_layer == "trunk.1.down"  # GradNorm: the last linear map of the 2-block trunk


@pytest.mark.integration
def test_trained_encoders_are_in_the_module_and_shared_only_with_shared_all():
    module, pre = _backbone(encoders="train")
    enc = pre.for_input("image_text").encode([(np.zeros((8, 8), np.float32), "a b c")])
    assert {k.split("__")[0] for k in enc} == {"text", "image"}
    assert set(pre.collate(enc, np.arange(1))) >= {"text__input_ids", "text__attention_mask", "image__x"}
    encoder_params = {id(p) for p in module.encoders.parameters()}
    assert encoder_params and encoder_params <= {id(p) for p in module.shared_parameters()}
    with pytest.raises(BenchError, match="encoders: train with shared: trunk"):
        _backbone(encoders="train", shared="trunk")


# -- real runs -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_crossmodal_run_with_an_aggregator_and_per_modality_records_every_task(tmp_path: Path):
    base = ["run", "suite=crossmodal", f"results_dir={tmp_path}", *TINY]
    assert main([*base, "strategy=naive_mtl,per_modality", "strategy.weighting=pcgrad"]) == 0
    recs = {r["strategy"]: r for r in records(tmp_path)}
    tasks = ["bbc", "sentiment", "mnist", "digits", "question"]
    for name, row in (("naive_mtl", "naive_mtl"), ("per_modality", "per_modality")):
        metrics = recs[name]["rows"][row]["metrics"]["test"]
        assert sorted(metrics) == sorted(tasks) and all("accuracy" in metrics[t] for t in tasks)
    # per_modality: one joint stage per input kind (text, image, image_text), each on its group's tasks
    keys = [s["key"] for s in recs["per_modality"]["rows"]["per_modality"]["stages"] if s["stage"] == "joint"]
    groups = [json.loads((tmp_path / "crossmodal" / "stages" / "joint" / k / "stage.json").read_text())["tasks"]
              for k in keys]
    assert groups == [["bbc", "sentiment"], ["mnist", "digits"], ["question"]]
