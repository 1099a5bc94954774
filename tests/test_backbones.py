"""Pretrained backbones that load offline: MiniLM-L6 (transformers) and EfficientNet-Lite0 (timm, positional map)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.backbones import hf, timm_
from bench.config import BackboneConfig
from bench.data import glue
from bench.errors import BenchError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def minilm():
    return hf.build_transformers(BackboneConfig(source="transformers", name="minilm", max_length=24), "text", None)


@pytest.fixture(scope="module")
def lite0():
    cfg = BackboneConfig(source="timm", name="efficientnet_lite0", image_size=32)
    return timm_.build_timm(cfg, "image", np.zeros((2, 28, 28), np.uint8))


def _features(model, pre, inputs):
    model.eval()
    with torch.no_grad():
        return model(**pre.collate(pre.encode(inputs), np.arange(len(inputs))))


def test_minilm_loads_offline_and_separates_meanings(minilm):
    model, pre = minilm
    assert model.out_dim == 384 and pre.key == "hf:minilm:BertTokenizer:v30522:L24:packed"
    f = torch.nn.functional.normalize(_features(model, pre, [
        "A man is playing a guitar.", "Someone plays the guitar.", "Stock markets fell sharply on Monday."]), dim=-1)
    same, other = float(f[0] @ f[1]), float(f[0] @ f[2])
    assert same > 0.6 and other < 0.3  # pretrained sentence embeddings, not random weights
    assert model.shared_layer == "model.encoder.layer.5.output.dense"
    assert model.shared_layer in dict(model.named_modules())


def test_minilm_pairs_get_token_type_ids_and_dynamic_padding(minilm):
    model, pre = minilm
    enc = pre.encode([("a cat", "sat on the mat"), ("a considerably longer first sentence here", "no")])
    assert pre.lengths(enc).tolist() == [9, 10]
    batch = pre.collate(enc, np.array([0]))
    assert batch["input_ids"].shape == (1, 9)  # padded to the longest row of the batch only
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    both = pre.collate(enc, np.array([0, 1]))
    assert both["attention_mask"][0].tolist() == [1] * 9 + [0]
    assert _features(model, pre, [("a cat", "sat on the mat")]).shape == (1, 384)
    long = pre.encode(["word " * 100])
    assert pre.lengths(long).tolist() == [24]  # truncated to max_length


def test_minilm_collate_matches_the_tokenizers_own_padding(minilm):
    # the vectorised cut-and-pad of the packed ids equals the tokenizer padding the same rows itself
    _, pre = minilm
    pairs = [("a cat", "sat on the mat"), ("one", "two three four five six"), ("x " * 30, "y"), ("", "empty first")]
    enc = pre.encode(pairs)
    idx = np.array([2, 0, 3, 1, 0])
    got = pre.collate(enc, idx)
    want = pre.tokenizer([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], truncation=True,
                         max_length=pre.max_length, padding="longest", return_tensors="pt")
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(got[k], want[k].long()), k
    assert pre.lengths(enc).tolist() == want["attention_mask"][[1, 3, 0, 2]].sum(1).tolist()


def test_minilm_padding_does_not_change_mean_pooled_features(minilm):
    model, pre = minilm
    texts = ["short one", "a much longer sentence that needs padding for the other one"]
    together = _features(model, pre, texts)
    alone = _features(model, pre, texts[:1])
    assert torch.allclose(together[0], alone[0], atol=1e-5)


def test_random_init_control_and_text_only(minilm):
    cfg = BackboneConfig(source="transformers", name="minilm", pretrained=False, max_length=24)
    rand, _ = hf.build_transformers(cfg, "text", None)
    a = minilm[0].model.embeddings.word_embeddings.weight
    assert a.shape == rand.model.embeddings.word_embeddings.weight.shape
    assert not torch.equal(a, rand.model.embeddings.word_embeddings.weight)
    with pytest.raises(BenchError, match="takes text, text_pair or words inputs, not 'image'"):
        hf.build_transformers(cfg, "image", None)


def test_unknown_model_offline_is_one_line(monkeypatch):
    monkeypatch.setattr(glue, "hub_reachable", lambda: False)
    with pytest.raises(BenchError) as err:
        hf.build_transformers(BackboneConfig(source="transformers", name="no-such-org/no-such-model"), "text", None)
    msg = str(err.value)
    assert "'no-such-org/no-such-model'" in msg and "minilm" in msg and "\n" not in msg


def test_lite0_weights_load_with_every_key_matched(lite0):
    model, _ = lite0
    state = torch.load(timm_.lite0_weights_path(), map_location="cpu", weights_only=True)
    ours = model.net.state_dict()
    assert len(state) == len(ours) + 2  # + the ImageNet classifier (_fc.weight, _fc.bias), unused
    assert torch.equal(ours["conv_stem.weight"], state["_conv_stem.weight"])
    # stage repeats 1, 2, 2, 3, ...: timm block 3.1 is the 7th block (index 6) of the flat list
    assert torch.equal(ours["blocks.3.1.conv_dw.weight"], state["_blocks.6._depthwise_conv.weight"])
    assert torch.equal(ours["conv_head.weight"], state["_conv_head.weight"])
    assert torch.equal(ours["bn2.running_var"], state["_bn1.running_var"])
    assert model.shared_layer == "net.conv_head" and model.out_dim == 1280


def test_lite0_imagenet_head_recognises_a_building():
    """The positional map is semantically right: the full ImageNet model calls sklearn's china.jpg a building."""
    import timm
    from sklearn.datasets import load_sample_image

    net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000).eval()
    timm_.load_positional(net, torch.load(timm_.lite0_weights_path(), weights_only=True), "lite0")
    enc = timm_.TimmEncoder(net, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()
    img = torch.from_numpy(np.ascontiguousarray(load_sample_image("china.jpg").transpose(2, 0, 1)))[None]
    with torch.no_grad():
        top5 = set(enc(img).topk(5).indices[0].tolist())
    assert top5 & {442, 497, 698, 663, 449}  # bell cote, church, palace, monastery, boathouse


def test_grayscale_and_rgb_batches_go_through(lite0):
    model, pre = lite0
    model.eval()
    gray = pre.encode(np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8))
    assert gray["x"].dtype == torch.uint8 and gray["x"].shape == (3, 1, 28, 28)  # stored small
    with torch.no_grad():
        f = model(**pre.collate(gray, np.array([0, 2])))
        tiny = model(**pre.collate(pre.encode(np.zeros((2, 8, 8), np.uint8)), np.arange(2)))
        rgb = model(**pre.collate(pre.encode(np.zeros((2, 3, 40, 40), np.uint8)), np.arange(2)))
    assert f.shape == (2, 1280) and torch.isfinite(f).all() and tiny.shape == rgb.shape == (2, 1280)


def test_positional_load_rejects_a_shape_mismatch():
    import timm

    net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    state = torch.load(timm_.lite0_weights_path(), weights_only=True)
    state["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(BenchError, match="'_conv_stem.weight' \\(16, 3, 3, 3\\) does not fit 'conv_stem.weight'"):
        timm_.load_positional(net, state, "lite0")


def test_timm_errors_are_one_line(monkeypatch):
    with pytest.raises(BenchError, match="unknown timm model 'efficientnet_lite00'.*did you mean"):
        timm_.build_timm(BackboneConfig(source="timm", name="efficientnet_lite00"), "image", np.zeros((1, 8, 8)))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(glue, "hub_reachable", lambda: False)
    with pytest.raises(BenchError) as err:
        timm_.build_timm(BackboneConfig(source="timm", name="resnet18"), "image", np.zeros((1, 8, 8)))
    assert "hub is unreachable" in str(err.value) and "efficientnet_lite0" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(BenchError, match="takes image inputs, not 'text'"):
        timm_.build_timm(BackboneConfig(source="timm"), "text", ["a"])


def test_random_init_lite0_differs():
    cfg = BackboneConfig(source="timm", name="efficientnet_lite0", pretrained=False, image_size=32)
    model, _ = timm_.build_timm(cfg, "image", np.zeros((1, 28, 28), np.uint8))
    state = torch.load(timm_.lite0_weights_path(), weights_only=True)
    assert not torch.equal(model.net.state_dict()["conv_stem.weight"], state["_conv_stem.weight"])
