"""Sentence-level objectives: text units, the span split, InfoNCE and bag of words against hand-computed
losses, training that learns, every backbone, and checkpoints that finetune and fill masks."""
from __future__ import annotations

import json
import math
import random
import string
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import model_foundry
from model_foundry.config.loading import load_config
from model_foundry.data.span_pairs import SpanPairCollator, inverse_cloze_split
from model_foundry.data.text_units import TextUnits, tokenize_units
from model_foundry.errors import UserError
from model_foundry.inference.fill_mask import fill_mask
from model_foundry.inference.loading import load_tokenizer
from model_foundry.models import Bert, BertConfig
from model_foundry.models.heads.sentence import bag_of_words_loss, info_nce, recall_at_k, retrieval_hits
from model_foundry.models.sentence_objective import SentenceHeadConfig, SentenceObjectiveModel
from model_foundry.tasks import build_task
from model_foundry.tokenizer.training import train_tokenizer
from tests.conftest import tiny_config
from tests.test_finetuning import finetune_config, ft_dir, write_sentiment

TOPICS = [string.ascii_letters[i * 3:i * 3 + 3] for i in range(16)]


@pytest.fixture(scope="module")
def char_tokenizer():
    return train_tokenizer("char", 64, texts=["the cat sat", "a dog ran far", "abcdefghijklmnop"])


def topic_corpus(path, units: int = 400, seed: int = 0):
    """Units of 10-20 letters, each drawn from one of 16 disjoint three-letter topics: a unit's two
    spans share a topic, two units of a batch mostly do not."""
    rng = random.Random(seed)
    lines = []
    for _ in range(units):
        topic = rng.choice(TOPICS)
        lines.append("".join(rng.choice(topic) for _ in range(rng.randint(10, 20))))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sentence_config(corpus, tmp_path, name: str, arch: str = "bert", task: dict | None = None, **sections) -> dict:
    config = tiny_config(corpus, tmp_path / "experiments", arch, task={"type": "span_contrastive", **(task or {})},
                         **sections)
    config["tokenizer"]["vocab_size"] = 80
    config["experiment"]["name"] = name
    return config


# ---- losses by hand -----------------------------------------------------------------------------

def hand_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE written out: -log(exp(s_ii) / sum_j exp(s_ij)), rows and columns averaged."""
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    s = torch.exp(a @ b.T / temperature)
    rows = -torch.log(torch.diagonal(s) / s.sum(dim=1))
    columns = -torch.log(torch.diagonal(s) / s.sum(dim=0))
    return (rows.mean() + columns.mean()) / 2


def test_info_nce_equals_the_hand_computed_loss():
    a = torch.tensor([[1.0, 0.0, 0.5], [0.2, 1.0, 0.0], [0.0, -0.3, 1.0]])
    b = torch.tensor([[0.9, 0.1, 0.4], [0.0, 1.0, 0.3], [0.5, 0.5, 0.5]])
    loss, logits = info_nce(a, b, temperature=0.5)
    assert abs(float(loss) - float(hand_info_nce(a, b, 0.5))) < 1e-6
    assert torch.allclose(logits[0, 1], (a[0] @ b[1]) / (a[0].norm() * b[1].norm()) / 0.5)


def test_retrieval_hits_count_both_directions():
    # Rows 0 and 1 pick their partners, row 2 picks column 0; column 1 picks row 1, column 0 row 2
    # and column 2 row 0.
    logits = torch.tensor([[5.0, 0.0, 2.0], [0.0, 5.0, 0.0], [7.0, 0.0, 1.0]])
    assert int(retrieval_hits(logits)) == 2 + 1


def test_bag_of_words_loss_equals_the_hand_computed_loss():
    logits = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, 0.5, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    words = torch.tensor([[True, True, False, False], [False, False, True, False], [False] * 4])
    log_p = torch.log_softmax(logits, dim=1)
    # Row 0 predicts words {0, 1}, row 1 word {2}; row 2 has no word and counts for nothing.
    hand = (-(log_p[0, 0] + log_p[0, 1]) / 2 - log_p[1, 2]) / 2
    assert abs(float(bag_of_words_loss(logits, words)) - float(hand)) < 1e-6


def test_recall_at_k_is_the_share_of_words_among_the_top_k():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    words = torch.tensor([[True, False, False, True]])
    assert recall_at_k(logits, words, k=2).tolist() == [0.5]
    assert recall_at_k(logits, words, k=4).tolist() == [1.0]


@torch.no_grad()
def test_the_model_pools_each_view_over_its_real_tokens_and_its_loss_is_info_nce():
    torch.manual_seed(0)
    bert = Bert(BertConfig(vocab_size=20, n_layer=1, n_head=2, n_embd=8, block_size=16))
    model = SentenceObjectiveModel(bert, SentenceHeadConfig(objective="span_contrastive", pooler="mean",
                                                            temperature=0.1)).eval()
    a_ids = torch.tensor([[1, 5, 6, 0], [1, 7, 8, 9]])
    a_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    b_ids = torch.tensor([[1, 10, 11], [1, 12, 0]])
    b_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    output = model(view_a_input_ids=a_ids, view_a_attention_mask=a_mask, view_b_input_ids=b_ids,
                   view_b_attention_mask=b_mask)

    def pooled(ids, mask):
        hidden = bert.backbone(ids, mask, None, False)[0]
        return torch.stack([hidden[i, mask[i].bool()].mean(dim=0) for i in range(len(ids))])

    expected = hand_info_nce(pooled(a_ids, a_mask), pooled(b_ids, b_mask), 0.1)
    assert abs(float(output.loss) - float(expected)) < 1e-6
    assert set(model.state_dict()) == set(bert.state_dict()), "no projection: the plain bert's weights only"


# ---- data ---------------------------------------------------------------------------------------

def test_the_inverse_cloze_split_cuts_a_span_and_keeps_the_rest():
    unit = torch.arange(100, 112)
    for seed in range(50):
        span, rest = inverse_cloze_split(unit, 3, torch.Generator().manual_seed(seed))
        assert len(span) >= 3 and len(rest) >= 3 and len(span) + len(rest) == len(unit)
        assert not set(span.tolist()) & set(rest.tolist()), "the views share no position"
        start = span[0] - 100
        assert torch.equal(torch.cat([rest[:start], span, rest[start:]]), unit), "a contiguous span, the rest in order"
    again = inverse_cloze_split(unit, 3, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(again, inverse_cloze_split(unit, 3, torch.Generator().manual_seed(7))))


def test_the_collator_adds_cls_pads_and_marks_the_other_views_words(char_tokenizer):
    tok = char_tokenizer
    collate = SpanPairCollator(pad_id=tok.pad_id, cls_id=tok.cls_id, vocab_size=tok.vocab_size,
                               special_ids=tok.special_ids, min_span=2, bag_of_words=True)
    items = [{"input_ids": torch.tensor(tok.encode("abcdef"))}, {"input_ids": torch.tensor(tok.encode("the cat"))}]
    batch = collate(items, torch.Generator().manual_seed(3))
    assert (batch["view_a_input_ids"][:, 0] == tok.cls_id).all() and (batch["view_b_input_ids"][:, 0] == tok.cls_id).all()
    for row in range(2):
        rest = batch["view_b_input_ids"][row][batch["view_b_attention_mask"][row].bool()][1:]
        assert set(batch["view_a_words"][row].nonzero().squeeze(1).tolist()) == set(rest.tolist())
    assert not batch["view_a_words"][:, sorted(tok.special_ids)].any()
    assert torch.equal(batch["input_ids"][0, 1:7], items[0]["input_ids"]), "the whole unit rides along"


def test_text_units_are_whole_lines_truncated_and_short_ones_left_out(char_tokenizer, tmp_path, capsys):
    corpus = tmp_path / "units.txt"
    corpus.write_text("abcdefgh\n\nab\nthe cat sat\n", encoding="utf-8")
    ids, offsets = tokenize_units([corpus], char_tokenizer, tmp_path / "cache", fmt="text")
    units = TextUnits(ids, offsets, range(len(offsets) - 1), max_tokens=6, min_tokens=4)
    texts = [char_tokenizer.decode(units[i]["input_ids"].tolist()) for i in range(len(units))]
    assert texts == ["abcdef", "the ca"] and units.skipped == 1
    assert "Tokenizing" in capsys.readouterr().err
    again = tokenize_units([corpus], char_tokenizer, tmp_path / "cache", fmt="text")
    assert "Tokenizing" not in capsys.readouterr().err, "the second read maps the cache"
    assert again[1].tolist() == offsets.tolist()


# ---- training -----------------------------------------------------------------------------------

def final_val(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())["val"]


@pytest.fixture(scope="module")
def topic_runs(tmp_path_factory):
    """A contrastive and a bag-of-words bert trained on the topic corpus, and an untrained control of each
    (one step at a learning rate of 1e-9), evaluated on the same validation units."""
    root = tmp_path_factory.mktemp("topics")
    corpus = topic_corpus(root / "topics.txt")
    runs = {}
    for task in ("span_contrastive", "span_bag_of_words"):
        for name, steps, rate in (("trained", 60, 3e-3), ("untrained", 1, 1e-9)):
            config = sentence_config(corpus, root, f"{task}_{name}", task={"type": task},
                                     training={"max_steps": steps, "learning_rate": rate, "eval_interval": steps})
            model_foundry.train(config)
            runs[task, name] = final_val(root / "experiments" / "pretraining" / f"{task}_{name}")
    return runs


@pytest.mark.slow
def test_contrastive_training_lowers_the_loss_and_retrieves_far_above_chance(topic_runs):
    trained, untrained = topic_runs["span_contrastive", "trained"], topic_runs["span_contrastive", "untrained"]
    assert trained["loss"] < 0.5 * untrained["loss"]
    # Chance is 1 / batch size (8); this corpus's letters make even a random encoder retrieve well,
    # so the trained model must at least keep up with it as well as beat chance by far.
    assert trained["retrieval_accuracy"] > 1 / 8 + 0.5
    assert trained["retrieval_accuracy"] >= untrained["retrieval_accuracy"]


@pytest.mark.slow
def test_bag_of_words_training_predicts_the_other_spans_letters(topic_runs):
    trained, untrained = topic_runs["span_bag_of_words", "trained"], topic_runs["span_bag_of_words", "untrained"]
    assert trained["bow_loss"] < untrained["bow_loss"] - 1.0
    # The other span's (at most three) topic letters are among the ten best guesses; an untrained head
    # guesses about 10 of the ~50 letters at random.
    assert trained["bow_recall_at_10"] > 0.9
    assert untrained["bow_recall_at_10"] < 0.4


SENTENCE_BACKBONES = {
    "bert": ("bert", {}, "mean"),
    "electra": ("electra", {}, "mean"),
    "hybrid": ("hybrid", {}, "mean"),
    "gpt_causal": ("gpt", {}, "last"),
    "gpt_bidirectional": ("gpt", {"attention_type": "bidirectional"}, "mean"),
    "lstm_bidirectional": ("lstm", {"bidirectional": True}, "mean"),
    "gru_causal": ("gru", {}, "last"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", SENTENCE_BACKBONES)
def test_every_backbone_trains_with_both_objectives_beside_its_own(tmp_path, case):
    arch, model, pooler = SENTENCE_BACKBONES[case]
    corpus = topic_corpus(tmp_path / "topics.txt", units=120)
    config = sentence_config(corpus, tmp_path, case, arch, task={"type": "span_bag_of_words", "lm_weight": 0.5},
                             model=model, training={"max_steps": 3, "eval_interval": 3})
    val = model_foundry.train(config)["val"]
    assert all(math.isfinite(val[key]) for key in ("loss", "bow_loss", "bow_recall_at_10", "lm_loss"))
    assert abs(val["loss"] - (val["bow_loss"] + 0.5 * val["lm_loss"])) < 1e-4
    saved = json.loads((tmp_path / "experiments" / "pretraining" / case / "checkpoints" / "best"
                        / "model_config.json").read_text())
    assert saved["architecture"] == arch and saved["sentence_objective"]["pooler"] == pooler


@pytest.mark.slow
def test_a_checkpoint_fills_masks_and_a_classifier_starts_from_its_backbone(tmp_path):
    corpus = topic_corpus(tmp_path / "topics.txt", units=120)
    config = sentence_config(corpus, tmp_path, "sentence", task={"lm_weight": 1.0, "projection_size": 16},
                             training={"max_steps": 4, "eval_interval": 4})
    model_foundry.train(config)
    run = tmp_path / "experiments" / "pretraining" / "sentence"
    model = model_foundry.load_model(run)
    assert isinstance(model, SentenceObjectiveModel)
    tokenizer = load_tokenizer(run)
    candidates = fill_mask(model, tokenizer, f"ab{tokenizer.mask_token}c", top_k=3)
    assert len(candidates) == 1 and len(candidates[0]) == 3
    # It exports as the language model it wraps (the sentence head is for pretraining only): a RoFormer.
    from model_foundry.cli.main import main

    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    transformers = pytest.importorskip("transformers")
    exported = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([tokenizer.encode_for_model("abcab")])
    with torch.no_grad():
        assert (exported(ids).logits - model(ids).logits).abs().max() < 1e-4
    for split, rows, seed in (("train", 64, 1), ("dev", 16, 2), ("test", 16, 3)):
        write_sentiment(tmp_path / f"{split}.tsv", rows, seed)
    model_foundry.train(finetune_config(tmp_path, run, tmp_path, transfer={"init_from_checkpoint": str(run),
                                                                           "freeze_transformer": True},
                                        training={"max_steps": 2, "eval_interval": 2}))
    pretrained = load_file(run / "checkpoints" / "best" / "model.safetensors")
    finetuned = load_file(ft_dir(tmp_path) / "checkpoints" / "best" / "model.safetensors")
    backbone = [key for key in pretrained if key.startswith("backbone.")]
    assert backbone and all(torch.equal(pretrained[key], finetuned[key]) for key in backbone)
    assert not any(key.startswith("sentence_head.") for key in finetuned), "the projection is left behind"


def test_an_architecture_without_a_sentence_backbone_is_refused_before_anything_is_written(tmp_path):
    corpus = topic_corpus(tmp_path / "topics.txt", units=20)
    config = sentence_config(corpus, tmp_path, "refused", "hf")
    with pytest.raises(UserError) as refused:
        model_foundry.train(config)
    assert "model.architecture is 'hf'" in " ".join(str(refused.value).split())
    assert not (tmp_path / "experiments").exists()


@pytest.mark.slow
def test_a_resumed_run_cuts_the_spans_the_uninterrupted_one_cut(tmp_path):
    corpus = topic_corpus(tmp_path / "topics.txt", units=120)
    training = {"lr_schedule": "constant", "warmup_steps": 0, "eval_interval": 4}
    whole = sentence_config(corpus, tmp_path, "whole", task={"type": "span_bag_of_words"},
                            training={**training, "max_steps": 8})
    model_foundry.train(whole)
    halves = sentence_config(corpus, tmp_path, "halves", task={"type": "span_bag_of_words"},
                             training={**training, "max_steps": 4})
    model_foundry.train(halves)
    model_foundry.train(halves, overrides={"training.max_steps": 8, "training.resume": True})
    runs = tmp_path / "experiments" / "pretraining"
    expected = load_file(runs / "whole" / "checkpoints" / "last" / "model.safetensors")
    resumed = load_file(runs / "halves" / "checkpoints" / "last" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)


def test_resizing_the_vocabulary_resizes_the_bag_of_words_decoder_and_keeps_its_rows():
    bert = Bert(BertConfig(vocab_size=20, n_layer=1, n_head=2, n_embd=8, block_size=16))
    model = SentenceObjectiveModel(bert, SentenceHeadConfig(objective="span_bag_of_words", pooler="mean"))
    before = model.sentence_head.decoder.weight.detach().clone()
    model.resize_token_embeddings(24)
    decoder = model.sentence_head.decoder
    assert decoder.out_features == 24 and model.get_input_embeddings().num_embeddings == 24
    assert torch.equal(decoder.weight[:20], before) and not decoder.weight[20:].any()


def test_masked_lm_beside_needs_a_mask_token_and_the_message_names_lm_weight(tmp_path):
    config = load_config(sentence_config(tmp_path / "units.txt", tmp_path, "no_mask", task={"lm_weight": 0.5})).config
    tokenizer = SimpleNamespace(vocab_size=30, pad_id=0, cls_id=1, mask_id=None, special_ids={0, 1})
    with pytest.raises(UserError) as refused:
        build_task(config, tokenizer).collator()
    assert "task.lm_weight is 0.5" in " ".join(str(refused.value).split())


def test_the_units_of_a_jsonl_file_are_its_rows_text_column(char_tokenizer, tmp_path):
    corpus = tmp_path / "units.jsonl"
    rows = [{"body": "the cat sat", "id": 1}, {"body": "  ", "id": 2}, {"body": "a dog\nran far", "id": 3}]
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    ids, offsets = tokenize_units([corpus], char_tokenizer, tmp_path / "cache", fmt="jsonl", text_column="body")
    units = TextUnits(ids, offsets, range(len(offsets) - 1), max_tokens=32)
    texts = [char_tokenizer.decode(units[i]["input_ids"].tolist()) for i in range(len(units))]
    assert texts == ["the cat sat", char_tokenizer.decode(char_tokenizer.encode("a dog\nran far"))]
