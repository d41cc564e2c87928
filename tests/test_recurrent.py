"""Recurrent language models (lstm, gru, rnn): shapes, padding invariance, causality, learning,
tying, save/load, incremental decoding, finetuning heads, and whole runs through model_foundry.train."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import model_foundry
from model_foundry.errors import UserError
from model_foundry.inference.generation import generate
from model_foundry.models import (GRU, LSTM, RNN, BaseLanguageModel, GRUConfig, TaskHeadConfig, TaskModel,
                                  create_model, get_architecture)
from model_foundry.tokenizer import FoundryTokenizer
from tests.conftest import tiny_config

VOCAB = 41
TINY = {"vocab_size": VOCAB, "n_layer": 2, "n_embd": 16, "hidden_size": 24}
CELLS = ["lstm", "gru", "rnn"]
ASSERT = {"atol": 1e-5, "rtol": 1e-5}


def tiny(arch: str = "lstm", **values) -> BaseLanguageModel:
    torch.manual_seed(0)
    return create_model(arch, **{**TINY, **values}).eval()


def random_ids(batch: int = 3, length: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def pad_batch(rows: list[torch.Tensor], side: str, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths in one (ids, mask) batch, padded on `side`."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if side == "left" else slice(0, len(row))
        ids[i, span], mask[i, span] = row, 1
    return ids, mask


@pytest.mark.parametrize("arch", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_forward_shapes_and_one_block_per_layer(arch, bidirectional):
    model = tiny(arch, bidirectional=bidirectional)
    output = model(random_ids(), output_hidden_states=True)
    width = 48 if bidirectional else 24
    assert output.logits.shape == (3, 9, VOCAB) and output.loss is None
    assert [h.shape[-1] for h in output.hidden_states] == [16, width, width]
    assert model.backbone.hidden_size == width and model.num_layers == 2
    # The second layer reads both directions of the first; layer names carry the block index.
    assert model.backbone.blocks[1].rnn.input_size == width
    assert any(name.startswith("backbone.blocks.1.rnn.") for name, _ in model.named_parameters())
    assert type(model) is {"lstm": LSTM, "gru": GRU, "rnn": RNN}[arch] and model.model_type == arch


def run_rows_alone(model: BaseLanguageModel, rows: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(row[None]).logits[0] for row in rows]


@pytest.mark.parametrize("arch", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_equals_each_row_alone(arch, bidirectional, side):
    model = tiny(arch, bidirectional=bidirectional)
    rows = [random_ids(1, n, seed=n)[0] for n in (7, 3, 5)]
    ids, mask = pad_batch(rows, side)
    with torch.no_grad():
        output = model(ids, mask, output_hidden_states=True)
    for i, alone in enumerate(run_rows_alone(model, rows)):
        real = mask[i].bool()
        torch.testing.assert_close(output.logits[i, real], alone, **ASSERT)
        # Padded positions are zeroed, so no pad value can leak into a pooler or a loss.
        assert all(bool((h[i, ~real] == 0).all()) for h in output.hidden_states)


def test_pad_token_values_do_not_matter():
    model = tiny("gru")
    ids, mask = pad_batch([random_ids(1, 6)[0], random_ids(1, 2)[0]], "left")
    other = ids.masked_fill(mask == 0, 7)
    with torch.no_grad():
        real = mask[..., None]
        torch.testing.assert_close(model(ids, mask).logits * real, model(other, mask).logits * real)


def test_padding_inside_a_row_is_refused():
    mask = torch.tensor([[1, 0, 1, 1]])
    with pytest.raises(UserError, match="Row 0 .* one side"):
        tiny()(random_ids(1, 4), mask)


@pytest.mark.parametrize("arch", CELLS)
def test_causal_model_ignores_the_future_and_bidirectional_reads_it(arch):
    ids = random_ids(1, 8)
    changed = ids.clone()
    changed[0, 5] = (ids[0, 5] + 1) % VOCAB
    with torch.no_grad():
        causal = tiny(arch)
        before, after = causal(ids).logits, causal(changed).logits
        torch.testing.assert_close(before[:, :5], after[:, :5])
        assert not torch.allclose(before[:, 5:], after[:, 5:])
        both_ways = tiny(arch, bidirectional=True)
        assert not torch.allclose(both_ways(ids).logits[:, :5], both_ways(changed).logits[:, :5])


@pytest.mark.slow
@pytest.mark.parametrize("arch", CELLS)
def test_loss_falls_when_overfitting_one_batch(arch):
    torch.manual_seed(0)
    model = create_model(arch, **TINY).train()
    ids = random_ids(4, 10)
    labels = torch.cat([ids[:, 1:], torch.full((4, 1), -100)], dim=1)  # the pipeline shifts, not the model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = model(ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(VOCAB), abs=0.1)
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_output_layer_tied_directly_through_a_projection_or_untied():
    same_width = tiny(hidden_size=16)
    assert same_width.lm_head.projection is None
    assert same_width.lm_head.decoder.weight is same_width.get_input_embeddings().weight
    embedding = 16 * VOCAB
    lstm_layers = 4 * 16 * (16 + 16) + 8 * 16 + 4 * 16 * (16 + 16) + 8 * 16
    assert same_width.get_parameter_count() == embedding + lstm_layers  # the tied matrix counts once
    for wider in (tiny(), tiny(hidden_size=16, bidirectional=True)):  # output width 24, then 32
        assert wider.lm_head.projection.out_features == 16
        assert wider.lm_head.decoder.weight is wider.get_input_embeddings().weight
    untied = tiny(tie_weights=False)
    assert untied.lm_head.projection is None and untied.lm_head.decoder.in_features == 24
    assert untied.lm_head.decoder.weight is not untied.get_input_embeddings().weight


@pytest.mark.parametrize("tie_weights", [True, False])
def test_resize_token_embeddings_keeps_rows_and_tying(tie_weights):
    model = tiny(tie_weights=tie_weights)
    old = model.lm_head.decoder.weight.detach().clone()
    model.resize_token_embeddings(VOCAB + 5)
    assert model(random_ids()).logits.shape[-1] == VOCAB + 5
    torch.testing.assert_close(model.lm_head.decoder.weight[:VOCAB], old)
    assert (model.lm_head.decoder.weight is model.get_input_embeddings().weight) == tie_weights


def test_lstm_forget_gates_start_open():
    rnn = tiny().backbone.blocks[0].rnn
    torch.testing.assert_close(rnn.bias_ih_l0[24:48] + rnn.bias_hh_l0[24:48], torch.ones(24))


@pytest.mark.parametrize("arch", CELLS)
def test_save_and_load_round_trip(arch, tmp_path):
    model = tiny(arch, bidirectional=arch == "gru", dropout=0.1)
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "model_config.json").read_text())
    assert meta["architecture"] == arch and meta["config"]["hidden_size"] == 24 and "cell" not in meta["config"]
    assert "lm_head.decoder.weight" not in load_file(tmp_path / "model.safetensors")  # tied: stored once
    loaded = BaseLanguageModel.from_pretrained(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    ids = random_ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_registry_config_classes_and_validation():
    assert create_model(GRUConfig(vocab_size=VOCAB, n_embd=8)).model_type == "gru"
    assert tiny("rnn").config.hidden_size == 24 and create_model("rnn", n_embd=12).config.hidden_size == 12
    assert get_architecture("lstm").presets["base"] == {"n_layer": 3, "n_embd": 768, "hidden_size": 1024}
    assert tiny().config.attention_type == "causal"
    assert tiny(bidirectional=True).config.attention_type == "bidirectional"
    with pytest.raises(UserError, match="model.n_head is not a setting of architecture 'lstm'.*hidden_size"):
        create_model("lstm", n_head=2)
    with pytest.raises(UserError, match="model.dropout is 1.5"):
        create_model("gru", dropout=1.5)
    with pytest.raises(UserError, match="no segment embeddings"):
        tiny()(random_ids(), token_type_ids=torch.zeros(3, 9, dtype=torch.long))


@pytest.mark.parametrize("arch", CELLS)
def test_decode_step_equals_the_full_forward(arch):
    model = tiny(arch)
    prompts, mask = pad_batch([random_ids(1, 5, seed=1)[0], random_ids(1, 2, seed=2)[0]], "left")
    new_tokens = random_ids(2, 4, seed=3)
    with torch.no_grad():
        logits, cache = model.decode_step(prompts, mask, None)
        steps = [logits]
        for t in range(new_tokens.size(1)):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
            logits, cache = model.decode_step(new_tokens[:, t:t + 1], mask, cache)
            steps.append(logits)
        full = model(torch.cat([prompts, new_tokens], dim=1), mask).logits
    torch.testing.assert_close(torch.stack(steps, dim=1), full[:, prompts.size(1) - 1:], **ASSERT)


def test_decode_step_keeps_the_state_of_rows_whose_new_token_is_padding():
    model = tiny("lstm")
    prompts = random_ids(2, 4)
    with torch.no_grad():
        _, cache = model.decode_step(prompts, None, None)
        _, after_pad = model.decode_step(random_ids(2, 1, seed=5), torch.tensor([[1] * 5, [1] * 4 + [0]]), cache)
    h_before, c_before = cache[-1]
    h_after, c_after = after_pad[-1]
    torch.testing.assert_close(h_after[:, 1], h_before[:, 1])
    torch.testing.assert_close(c_after[:, 1], c_before[:, 1])
    assert not torch.allclose(h_after[:, 0], h_before[:, 0])


@pytest.mark.parametrize("arch", CELLS)
def test_cached_and_uncached_generation_agree(arch):
    model = tiny(arch)
    with torch.no_grad():  # large weights: next-token choices far from ties, different per prompt
        for param in model.parameters():
            param.normal_(std=0.5, generator=torch.Generator().manual_seed(param.numel()))
    prompts = [[5, 17, 3, 40, 8], [7, 1], [30, 31, 32]]
    cached = generate(model, prompts, max_new_tokens=6, temperature=0)
    assert cached == generate(model, prompts, max_new_tokens=6, temperature=0, use_cache=False)
    assert cached[0] != cached[1] and all(len(row) == 6 for row in cached)


def test_decode_step_refuses_a_bidirectional_model():
    with pytest.raises(UserError, match="bidirectional.*cannot generate"):
        tiny("gru", bidirectional=True).decode_step(random_ids(), None, None)


@pytest.mark.parametrize("bidirectional, pooler", [(False, "last"), (True, "cls")])
def test_task_model_pools_recurrent_states_regardless_of_padding(bidirectional, pooler):
    torch.manual_seed(0)
    config = get_architecture("lstm").config_class(**TINY, bidirectional=bidirectional)
    model = TaskModel("lstm", config, TaskHeadConfig(task="sequence_classification", num_outputs=3,
                                                     pooler=pooler)).eval()
    rows = [random_ids(1, n, seed=n)[0] for n in (6, 2)]
    ids, mask = pad_batch(rows, "left")
    with torch.no_grad():
        output = model(ids, mask, labels=torch.tensor([0, 2]))
        alone = torch.cat([model(row[None]).logits for row in rows])
    assert output.logits.shape == (2, 3) and output.loss.item() > 0
    torch.testing.assert_close(output.logits, alone, **ASSERT)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_pretraining_run_learns(tiny_corpus, tmp_path, arch):
    config = tiny_config(tiny_corpus, tmp_path / "experiments", arch,
                           training={"max_steps": 40, "learning_rate": 1e-2})
    results = model_foundry.train(config)
    run_dir = tmp_path / "experiments" / "pretraining" / f"tiny_{arch}"
    uniform_loss = math.log(FoundryTokenizer.load(run_dir / "tokenizer").vocab_size)
    assert results["task"] == "causal_lm"
    assert results["val"]["loss"] < uniform_loss - 0.8, (results["val"], uniform_loss)
    loaded = model_foundry.load_model(run_dir)
    assert type(loaded) is get_architecture(arch) and loaded.config.n_embd == 32


@pytest.mark.slow
def test_bidirectional_masked_lm_run_and_finetuning_from_it(tiny_corpus, tmp_path):
    root = tmp_path / "experiments"
    config = tiny_config(tiny_corpus, root, "gru", model={"bidirectional": True}, task={"type": "masked_lm"},
                           training={"max_steps": 20})
    results = model_foundry.train(config)
    assert results["task"] == "masked_lm" and results["val"]["mlm_accuracy"] > 0.1
    data = tmp_path / "sentences.tsv"
    data.write_text("sentence\tlabel\n" + "the cat sat\t0\nthe sun rose over the hill\t1\n" * 20, encoding="utf-8")
    finetune = {
        "experiment": {"name": "ft", "kind": "finetuning", "seed": 1, "output_dir": str(root)},
        "data": {"train": str(data), "val": str(data), "text_column": "sentence"},
        "task": {"type": "sequence_classification"},
        "transfer": {"init_from_checkpoint": str(root / "pretraining" / "tiny_gru"), "freeze_n_layers": 1},
        "training": {"max_steps": 15, "batch_size": 8, "learning_rate": 1e-2, "warmup_steps": 0,
                     "eval_interval": 15, "device": "cpu", "precision": "fp32"},
    }
    results = model_foundry.train(finetune)
    assert results["val"]["accuracy"] == 1.0, results["val"]
    best = root / "finetuning" / "ft" / "checkpoints" / "best"
    assert json.loads((best / "model_config.json").read_text())["task_head"]["pooler"] == "cls"
    pretrained = load_file(root / "pretraining" / "tiny_gru" / "checkpoints" / "best" / "model.safetensors")
    finetuned = load_file(best / "model.safetensors")
    frozen = [k for k in finetuned if k.startswith("backbone.blocks.0.")]
    assert frozen and all(torch.equal(finetuned[k], pretrained[k]) for k in frozen)
    assert not torch.equal(finetuned["backbone.blocks.1.rnn.weight_hh_l0"],
                           pretrained["backbone.blocks.1.rnn.weight_hh_l0"])
