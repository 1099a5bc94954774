"""Token-tagging data: the offline sources (WNUT-16, Turkish Web Treebank, text as words) and the CoNLL-2003 loader
on small files in the shared task's layout written here."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data import conll
from bench.data.base import SOURCES, MissingData
from bench.data.tagging import CONLL2003_TAGS, TWT_GENRES, TWT_UPOS, WNUT16_TAGS, iob2, tag_names
from bench.errors import BenchError

ROOT = Path(__file__).resolve().parents[1]
SPLIT = SplitConfig()


def _task(name: str, target: str = "token_classification", label: str | None = None) -> TaskConfig:
    return TaskConfig(name=name, input="words", target=target, label=label)


def _load(source: str, task: TaskConfig, **options) -> dict:
    return SOURCES.get(source)(DataSpec(source=source, options=options), [task], SPLIT)


def _content_hash(split, name: str) -> str:
    """Words and tag ids, not object pointers: equal for equal data."""
    h = hashlib.sha256()
    for words, y in zip(split.inputs, split.targets[name]):
        h.update("\x1f".join(words).encode())
        h.update(np.asarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()


def _check_tokens(split, name: str, names: tuple[str, ...]) -> None:
    y = split.targets[name]
    assert y.dtype == object and y.shape == (len(split),)
    assert all(isinstance(w, tuple) and all(isinstance(t, str) for t in w) for w in split.inputs)
    for words, ids in zip(split.inputs, y):
        assert ids.dtype == np.int64 and len(ids) == len(words)
        assert ids.min() >= 0 and ids.max() < len(names)


def _is_iob2(tags: list[str]) -> bool:
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            return False
        prev = tag
    return True


# ------------------------------------------------------------------------------------------------ tag sets


def test_tag_names_are_fixed_tables_in_id_order():
    assert len(WNUT16_TAGS) == 21 and WNUT16_TAGS[:3] == ("O", "B-company", "I-company")
    assert tag_names("wnut16") is WNUT16_TAGS
    assert tag_names("turkish_web_pos") == TWT_UPOS and len(TWT_UPOS) == 14
    assert tag_names("turkish_web_genre") == ("blog", "forum", "guide", "howto", "review", "wiki")
    assert tag_names("conll2003", "ner") == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC",
                                             "I-MISC")
    assert len(tag_names("conll2003", "pos")) == 47 and len(tag_names("conll2003", "chunk")) == 23
    with pytest.raises(BenchError, match=r"unknown tagging source 'wnut17'.*valid: conll2003, turkish_web_genre"):
        tag_names("wnut17")
    with pytest.raises(BenchError, match=r"unknown CoNLL-2003 column 'ners' \(did you mean 'ner'\?\)"):
        tag_names("conll2003", "ners")


def test_iob1_to_iob2():
    # IOB1: I- opens a chunk; B- only splits two adjacent chunks of one type
    assert iob2(["I-ORG", "O", "I-PER", "I-PER", "B-PER", "I-LOC", "I-MISC"]) == \
        ["B-ORG", "O", "B-PER", "I-PER", "B-PER", "B-LOC", "B-MISC"]
    already = ["B-NP", "I-NP", "B-VP", "O", "B-NP"]
    assert iob2(already) == already


# ------------------------------------------------------------------------------------------- offline sources


def test_wnut16_sentences_tags_and_determinism():
    task = _task("ner")
    split = _load("wnut16", task)["train"]
    assert len(split) == 2281  # 2,394 tweets, 2,295 distinct, 14 of them labelled two ways and dropped
    _check_tokens(split, "ner", WNUT16_TAGS)
    tags = [[WNUT16_TAGS[i] for i in y] for y in split.targets["ner"]]
    assert all(_is_iob2(t) for t in tags)
    assert len({t for row in tags for t in row}) == 21  # every tag occurs
    first = split.inputs.index(next(w for w in split.inputs if w[:2] == ("@paulwalk", "It")))
    words, ids = split.inputs[first], split.targets["ner"][first]
    at = words.index("Empire")
    assert words[at:at + 3] == ("Empire", "State", "Building")
    assert [WNUT16_TAGS[i] for i in ids[at:at + 3]] == ["B-facility", "I-facility", "I-facility"]
    assert split.inputs == sorted(split.inputs)
    again = _load("wnut16", task)["train"]
    assert _content_hash(again, "ner") == _content_hash(split, "ner")


def test_turkish_web_treebank_words_pos_and_genre():
    pos = _load("turkish_web_pos", _task("pos"))["train"]
    assert len(pos) == 4851
    _check_tokens(pos, "pos", TWT_UPOS)
    assert sum(len(w) for w in pos.inputs) == 66466
    # inflectional groups joined back into words; the last group's part of speech tags the word
    sent = next(i for i, w in enumerate(pos.inputs) if w[:2] == ("Açıklanmayan", "soruların"))
    assert pos.inputs[sent] == ("Açıklanmayan", "soruların", "müfredata", "uygun", "olup", "olmadığını", "bilmek",
                                "imkansız", ".")
    assert [TWT_UPOS[i] for i in pos.targets["pos"][sent]] == \
        ["ADJ", "NOUN", "NOUN", "ADJ", "ADV", "NOUN", "NOUN", "VERB", "PUNCT"]
    genre = _load("turkish_web_genre", _task("genre", "classification"))["train"]
    y = genre.targets["genre"]
    assert y.dtype == np.int64 and genre.inputs == pos.inputs
    assert dict(zip(TWT_GENRES, np.bincount(y).tolist())) == \
        {"blog": 524, "forum": 1243, "guide": 373, "howto": 180, "review": 221, "wiki": 2310}
    assert _content_hash(_load("turkish_web_pos", _task("pos"))["train"], "pos") == _content_hash(pos, "pos")


def test_text_words_splits_a_text_source_on_whitespace():
    task = _task("sentiment", "classification")
    words = _load("text_words", task, of="tweet_sentiment")["train"]
    text = _load("tweet_sentiment", task)["train"]
    assert len(words) == len(text) == 37185
    assert words.inputs[:50] == [tuple(t.split()) for t in text.inputs[:50]]
    np.testing.assert_array_equal(words.targets["sentiment"], text.targets["sentiment"])
    with pytest.raises(BenchError, match="text_words needs the option 'of'"):
        _load("text_words", task)


# ------------------------------------------------------------------------------------------------ CoNLL-2003

# IOB1 as in the distributed eng.* files: I- opens chunks, B- only between two adjacent same-type chunks
TRAIN = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- O O

Paris NNP I-NP I-LOC
Berlin NNP B-NP B-LOC
"""
TESTA = "-DOCSTART- -X- O O\n\nJapan NNP I-NP I-LOC\nwins VBZ I-VP O\n"
TESTB = "SOCCER NN I-NP O\n- : O O\nJAPAN NNP I-NP I-LOC\n\n"


def _write(folder: Path, names: tuple[str, str, str] = ("eng.train", "eng.testa", "eng.testb")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in zip(names, (TRAIN, TESTA, TESTB)):
        (folder / name).write_text(text)
    return folder


def _names(y: np.ndarray, column: str) -> list[list[str]]:
    return [[CONLL2003_TAGS[column][i] for i in row] for row in y]


def test_conll2003_reads_the_distributed_files_with_iob2_tags(tmp_path):
    folder = _write(tmp_path / "conll")
    out = _load("conll2003", _task("ner"), data_dir=str(folder))
    assert set(out) == {"train", "validation", "test"}
    train = out["train"]
    assert train.inputs == [("EU", "rejects", "German", "call", "."), ("Peter", "Blackburn"), ("Paris", "Berlin")]
    for column in ("ner", "pos", "chunk"):
        _check_tokens(train, column, CONLL2003_TAGS[column])
    assert _names(train.targets["ner"], "ner") == [["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"],
                                                   ["B-LOC", "B-LOC"]]
    assert _names(train.targets["chunk"], "chunk") == [["B-NP", "B-VP", "B-NP", "I-NP", "O"], ["B-NP", "I-NP"],
                                                       ["B-NP", "B-NP"]]
    assert _names(train.targets["pos"], "pos")[0] == ["NNP", "VBZ", "JJ", "NN", "."]
    assert train.targets["ner"][1].tolist() == [1, 2]  # ids index the hub's order: B-PER 1, I-PER 2
    assert out["validation"].inputs == [("Japan", "wins")] and out["test"].inputs == [("SOCCER", "-", "JAPAN")]
    assert _names(out["test"].targets["ner"], "ner") == [["O", "O", "B-LOC"]]
    (folder / "eng.testb").write_bytes("Müller NNP I-NP I-PER\n".encode("latin-1"))  # a latin-1 copy reads too
    test = _load("conll2003", _task("ner"), data_dir=str(folder))["test"]
    assert test.inputs == [("Müller",)] and _names(test.targets["ner"], "ner") == [["B-PER"]]


def test_conll2003_hub_file_names_and_column_choice(tmp_path):
    folder = _write(tmp_path / "hub", ("train.txt", "valid.txt", "test.txt"))
    by_option = _load("conll2003", _task("tags"), data_dir=str(folder), column="chunk")["train"]
    assert by_option.targets["tags"] is by_option.targets["chunk"]
    by_label = _load("conll2003", _task("syntax", label="pos"), path=str(folder))["train"]
    assert _names(by_label.targets["syntax"], "pos")[1] == ["NNP", "NNP"]
    with pytest.raises(BenchError, match=r"unknown CoNLL-2003 column 'lemma'; valid: chunk, ner, pos"):
        _load("conll2003", _task("lemma"), data_dir=str(folder / "absent"))  # before any file is read


def test_conll2003_missing_or_malformed_files_fail_in_one_line(tmp_path, monkeypatch):
    folder = _write(tmp_path / "partial")
    (folder / "eng.testb").unlink()
    with pytest.raises(MissingData, match=r"^CoNLL-2003: no eng.testb or test.txt in .*partial; .*data_dir") as e:
        _load("conll2003", _task("ner"), data_dir=str(folder))
    assert "\n" not in str(e.value)
    with pytest.raises(MissingData, match="is not a folder"):
        _load("conll2003", _task("ner"), data_dir=str(tmp_path / "nowhere"))
    bad = _write(tmp_path / "bad")
    (bad / "eng.testa").write_text("Japan NNP I-LOC\n")
    with pytest.raises(BenchError, match=r"eng.testa:1: 3 columns, expected 4 \(word POS chunk NER\)"):
        _load("conll2003", _task("ner"), data_dir=str(bad))
    # no local copy and no hub: one line that names data_dir=
    monkeypatch.delenv(conll.ENV_DIR, raising=False)
    monkeypatch.setattr(conll, "hub_reachable", lambda: False)
    monkeypatch.setattr(conll, "hub_offline_requested", lambda: False)
    with pytest.raises(MissingData, match=r"hub is unreachable .*data_dir=<dir> holding eng.train") as e:
        _load("conll2003", _task("ner"))
    assert "\n" not in str(e.value)


def test_conll2003_from_the_hub_maps_ids_through_the_dataset_names(monkeypatch):
    """The hub path on a real ``datasets.DatasetDict`` with the hub's schema (the hub itself is unreachable here);
    its NER names are deliberately in another order, and in IOB1, to show ids go through names and IOB2."""
    import datasets

    ner_names = ["I-PER", "O", "B-PER", "I-LOC"]
    features = datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")),
        "pos_tags": datasets.Sequence(datasets.ClassLabel(names=list(CONLL2003_TAGS["pos"]))),
        "chunk_tags": datasets.Sequence(datasets.ClassLabel(names=list(CONLL2003_TAGS["chunk"]))),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=ner_names)),
    })
    pos, chunk = CONLL2003_TAGS["pos"].index("NNP"), CONLL2003_TAGS["chunk"].index("I-NP")
    rows = {"tokens": [["-DOCSTART-"], ["Peter", "Blackburn", "Paris"]], "pos_tags": [[pos], [pos] * 3],
            "chunk_tags": [[chunk], [chunk] * 3], "ner_tags": [[1], [0, 0, 3]]}  # a mirror's document mark row
    ds = datasets.DatasetDict({s: datasets.Dataset.from_dict(rows, features=features)
                               for s in ("train", "validation", "test")})
    seen = []
    monkeypatch.setattr(conll, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id: seen.append(hub_id) or ds)
    out = _load("conll2003", _task("ner"), hub_id="someone/conll2003")
    assert seen == ["someone/conll2003"]
    assert _names(out["test"].targets["ner"], "ner") == [["B-PER", "I-PER", "B-LOC"]]
    assert _names(out["train"].targets["chunk"], "chunk") == [["B-NP", "I-NP", "I-NP"]]


# --------------------------------------------------------------------------------------------- draft suites


@pytest.mark.parametrize("path", ["suites/tagging.yaml", "suites/conll2003.yaml"])
def test_suites_list_the_sources_tag_names(path):
    suite = yaml.safe_load((ROOT / path).read_text())
    token_tasks = [t for t in suite["tasks"] if t["target"] == "token_classification"]
    assert len(token_tasks) >= (2 if "tagging" in path else 3)
    for t in suite["tasks"]:
        assert t["input"] == "words"
        source = (t.get("data") or suite["data"])["source"]
        if t["target"] == "token_classification":
            column = t.get("label") or (t.get("data") or {}).get("options", {}).get("column")
            assert tuple(t["classes"]) == tag_names(source, column) and t["num_classes"] == len(t["classes"])
