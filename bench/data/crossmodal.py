"""An offline image+text task: a yes/no question about a real digit image (``source: digit_questions``).

Each example is ``(image, question)``, the image a real MNIST-5k (or scikit-learn digits) image as ``(H, W)``
uint8 and the question one of :data:`QUESTIONS`; the target is the answer, 0 ``no`` or 1 ``yes``, decided by the
image's true digit label. The rule (docs/cross_modal.md) makes neither modality enough alone:

* every question is true for exactly five of the ten digits (even / odd, above 4 / below 5, two phrasings each),
  so each digit has four yes-questions and four no-questions;
* the images of each digit take the eight questions in turn, in an order shuffled once per digit by ``seed``, so
  every (digit, question) pair occurs equally often, up to one.

So the answer given the question alone is yes for half the examples (five digits of ten, equally often), and given
the digit alone yes for half (four questions of eight): a text-only model, whose best guess is the majority answer
of each question, and an image-only model, whose best guess is the majority answer of each digit, are both at
chance (:func:`best_single_modality`, checked in the tests); only reading both answers it.

The splits are the image source's, carved here exactly as a task of that source alone carves them (the suite's split
seed and fractions, stratified by digit): an image tested in the suite's ``mnist`` task is never a training image
of the question task, nor the other way round.

Example (the rule on five images of the digits 0..4):
    >>> texts, answers = ask(np.array([0, 1, 2, 3, 4]), seed=0)
    >>> all(int(rule(q)(d)) == a for q, d, a in zip(texts, range(5), answers))
    True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import Split, register_source, stratified_carve
from bench.data.vision import mnist5k_arrays
from bench.errors import BenchError

#: the questions and the digits each is true for (five of ten each; every digit answers four yes, four no)
QUESTIONS: tuple[tuple[str, Callable[[int], bool]], ...] = (
    ("Is the digit even?", lambda d: d % 2 == 0),
    ("Is this an even number?", lambda d: d % 2 == 0),
    ("Is the digit odd?", lambda d: d % 2 == 1),
    ("Is this an odd number?", lambda d: d % 2 == 1),
    ("Is the digit greater than 4?", lambda d: d > 4),
    ("Is the number at least five?", lambda d: d >= 5),
    ("Is the digit less than 5?", lambda d: d < 5),
    ("Is the number at most four?", lambda d: d <= 4),
)
ANSWERS = ("no", "yes")


def rule(question: str) -> Callable[[int], bool]:
    """The digits a question is true for, as a predicate."""
    return dict(QUESTIONS)[question]


def ask(digits: np.ndarray, seed: int) -> tuple[list[str], np.ndarray]:
    """A question per image (by its digit label) and the answer (1 yes, 0 no): the images of each digit take the
    questions in turn, in an order drawn once per digit from ``seed``."""
    rng = np.random.default_rng(seed)
    orders = {d: rng.permutation(len(QUESTIONS)) for d in range(10)}
    seen = dict.fromkeys(range(10), 0)
    texts, answers = [], np.empty(len(digits), dtype=np.int64)
    for i, d in enumerate(int(v) for v in digits):
        text, true_for = QUESTIONS[orders[d][seen[d] % len(QUESTIONS)]]
        seen[d] += 1
        texts.append(text)
        answers[i] = int(true_for(d))
    return texts, answers


def best_single_modality(texts: list[str], digits: np.ndarray, answers: np.ndarray) -> dict[str, float]:
    """The accuracy of the best text-only and the best image-only predictor on these examples: the majority answer
    of each question, and of each digit (an image-only model can know no more than the digit). Both near 0.5."""
    def majority(keys: list) -> float:
        hits = 0
        for k in set(keys):
            a = answers[[i for i, x in enumerate(keys) if x == k]]
            hits += max(int(a.sum()), len(a) - int(a.sum()))
        return hits / len(answers)

    return {"text": majority(list(texts)), "image": majority([int(d) for d in digits])}


def _images(which: str) -> tuple[np.ndarray, np.ndarray]:
    if which == "mnist5k":
        return mnist5k_arrays()
    if which == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return np.rint(d.images * (255.0 / 16.0)).astype(np.uint8), d.target.astype(np.int64)
    raise BenchError(f"digit_questions option images={which!r}: use mnist5k or digits")


@register_source("digit_questions")
def digit_questions(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """Yes/no questions about real digit images (options: ``images: mnist5k|digits``, ``seed``); the image source's
    own split, carved as its single-modality task carves it."""
    x, y = _images(str(spec.options.get("images", "mnist5k")))
    seed = int(spec.options.get("seed", 0))
    whole = Split(x, {"digit": y})
    # the carving of bench.data.base._complete_splits for a task of the image source (stratified by digit)
    rest, test = stratified_carve(whole, split_cfg.test, split_cfg.seed, whole.targets["digit"])
    train, validation = stratified_carve(rest, split_cfg.validation, split_cfg.seed + 1, rest.targets["digit"])
    out = {}
    for name, part in (("train", train), ("validation", validation), ("test", test)):
        digits = part.targets["digit"]
        texts, answers = ask(digits, seed + {"train": 0, "validation": 1, "test": 2}[name])
        inputs = [(image, text) for image, text in zip(part.inputs, texts)]
        out[name] = Split(inputs, {t.name: answers for t in tasks} | {"digit": digits})
    return out
