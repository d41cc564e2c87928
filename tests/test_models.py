"""Our transformer models: shapes, masking, padding, variants that learn, save/load, tying, the registry."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from model_foundry.config.schema import FoundryConfig
from model_foundry.errors import UserError
from model_foundry.inference.generation import generate
from model_foundry.models import (PRESETS, BaseLanguageModel, Bert, BertConfig, GPT, GPTConfig,
                                  ModelOutput, create_model, get_architecture, read_checkpoint_config,
                                  register_architecture)
from model_foundry.tasks.registry import default_task
from model_foundry.checkpoint_files import load_weights

VOCAB = 53
TINY = {"vocab_size": VOCAB, "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 24}


def tiny(arch: str = "gpt", **values) -> BaseLanguageModel:
    torch.manual_seed(0)
    return create_model(arch, **{**TINY, **values}).eval()


def random_ids(batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["gpt", "bert"])
def test_forward_shapes_and_hidden_states(arch):
    model = tiny(arch)
    output = model(random_ids(), output_hidden_states=True)
    assert isinstance(output, ModelOutput)
    assert output.logits.shape == (2, 12, VOCAB)
    assert output.loss is None
    assert len(output.hidden_states) == model.num_layers + 1 == 3
    assert all(h.shape == (2, 12, 32) for h in output.hidden_states)
    assert model.backbone.hidden_size == 32 and len(model.backbone.blocks) == 2


@pytest.mark.parametrize("arch, model, objective", [
    ("gpt", {}, "causal_lm"), ("bert", {}, "masked_lm"), ("hybrid", {}, "hybrid"), ("lstm", {"hidden_size": 32}, "causal_lm"),
    ("gpt", {"attention_type": "bidirectional"}, "masked_lm"), ("bert", {"attention_type": "causal"}, "masked_lm")])
def test_a_run_without_task_type_trains_its_architectures_objective(make_config, arch, model, objective):
    """What an architecture declares (`default_task`) decides the objective of a run that names none,
    except that a GPT made bidirectional cannot learn causal LM."""
    config = FoundryConfig.model_validate(make_config(arch, model=model))
    assert config.task.type is None and default_task(config) == objective


def test_what_the_registry_declares_decides_generation_and_saved_names(tmp_path):
    """GPTs generate and BERTs are refused by name; the gpt2 alias builds a GPT saved as "gpt"."""
    prompt = random_ids(1, 4)
    assert [len(row) for row in generate(tiny("gpt"), prompt, max_new_tokens=3)] == [3]
    with pytest.raises(UserError, match="'bert' model does not generate"):
        generate(tiny("bert"), prompt, max_new_tokens=3)
    alias = tiny("gpt2")
    assert type(alias) is GPT
    alias.save_pretrained(tmp_path / "alias")
    assert read_checkpoint_config(tmp_path / "alias")["architecture"] == "gpt"
    assert type(BaseLanguageModel.from_pretrained(tmp_path / "alias")) is GPT


@torch.no_grad()
def changes_earlier_logits(model: BaseLanguageModel) -> bool:
    """Whether changing the token at position 8 changes the logits at positions 0..7."""
    ids = random_ids(1, 12)
    edited = ids.clone()
    edited[0, 8] = (edited[0, 8] + 1) % VOCAB
    return not torch.allclose(model(ids).logits[:, :8], model(edited).logits[:, :8], atol=1e-6)


@pytest.mark.parametrize("arch, attention_type, sees_future", [
    ("gpt", None, False), ("bert", None, True), ("gpt", "bidirectional", True), ("bert", "causal", False)])
def test_attention_direction(arch, attention_type, sees_future):
    overrides = {"attention_type": attention_type} if attention_type else {}
    assert changes_earlier_logits(tiny(arch, **overrides)) is sees_future


@pytest.mark.parametrize("arch, positional", [("gpt", "learned"), ("bert", "learned"), ("gpt", "rotary"),
                                              ("bert", "sinusoidal")])
@torch.no_grad()
def test_right_padding_gives_the_logits_of_unpadded_rows(arch, positional):
    model = tiny(arch, positional=positional)
    long_row, short_row = random_ids(1, 12, seed=1), random_ids(1, 7, seed=2)
    padded = torch.cat([long_row, F.pad(short_row, (0, 5), value=0)])
    mask = torch.tensor([[1] * 12, [1] * 7 + [0] * 5])
    logits = model(padded, attention_mask=mask).logits
    assert torch.allclose(logits[0], model(long_row).logits[0], atol=1e-5)
    assert torch.allclose(logits[1, :7], model(short_row).logits[0], atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_left_padding_leaves_no_nan_and_no_trace_on_the_real_tokens(positional):
    """A left-padded row's real tokens get the logits they get alone (what batched generation relies on)."""
    model = tiny("gpt", positional=positional)
    ids = random_ids(2, 6)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    logits = model(ids, attention_mask=mask).logits
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[0, 3:], model(ids[:1, 3:]).logits[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits[1], model(ids[1:]).logits[0], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch, values", [
    ("gpt", {}), ("gpt", {"positional": "rotary"}), ("gpt", {"positional": "sinusoidal"}),
    ("gpt", {"norm_position": "post", "activation": "relu"}), ("bert", {}),
    ("bert", {"norm_position": "pre", "positional": "rotary", "bias": False, "activation": "silu"})])
def test_variants_overfit_a_tiny_batch(arch, values):
    model = tiny(arch, **values).train()
    ids = random_ids(4, 16, seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model(ids, labels=ids.roll(-1, dims=1)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_loss_is_mean_cross_entropy_over_labelled_positions():
    model = tiny("bert")
    ids = random_ids(2, 10)
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[1, 9] = 7, 11, 3
    output = model(ids, labels=labels)
    picked = output.logits[[0, 1, 1], [2, 5, 9]]
    assert torch.allclose(output.loss, F.cross_entropy(picked, torch.tensor([7, 11, 3])), atol=1e-6)


@pytest.mark.parametrize("arch, values", [("bert", TINY), ("lstm", {"vocab_size": VOCAB, "n_embd": 16, "hidden_size": 24,
                                                                    "bidirectional": True})])
def test_scoring_targets_only_gives_the_same_loss_and_gradients(arch, values):
    torch.manual_seed(0)
    model = create_model(arch, **values, dropout=0.0).train()
    ids = random_ids(2, 10)
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[1, 9] = 7, 11, 3
    full = model(ids, labels=labels)
    full_grads = torch.autograd.grad(full.loss, list(model.parameters()))
    sparse = model(ids, labels=labels, score_targets_only=True)
    sparse_grads = torch.autograd.grad(sparse.loss, list(model.parameters()))
    assert sparse.logits.shape == (3, VOCAB)
    assert torch.allclose(sparse.logits, full.logits[[0, 1, 1], [2, 5, 9]], atol=1e-6)
    assert torch.allclose(sparse.loss, full.loss, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(sparse_grads, full_grads))
    assert model(ids, labels=labels).logits.shape == (2, 10, VOCAB)  # only when asked


def test_loss_is_zero_not_nan_without_targets():
    model = tiny("gpt")
    ids = random_ids()
    loss = model(ids, labels=torch.full_like(ids, -100)).loss
    assert loss.item() == 0.0


@pytest.mark.parametrize("arch, values", [("gpt", {}), ("bert", {}), ("gpt", {"positional": "rotary"}),
                                          ("bert", {"positional": "sinusoidal"})])
@torch.no_grad()
def test_save_and_load_through_the_base_class(tmp_path, arch, values):
    model = tiny(arch, **values)
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "model_config.json").read_text())
    assert meta["format_version"] == 1 and meta["architecture"] == arch
    loaded = BaseLanguageModel.from_pretrained(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    ids = random_ids()
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight


@torch.no_grad()
def test_trainer_weight_loader_accepts_saved_models(tmp_path):
    model = tiny("bert")
    model.save_pretrained(tmp_path)
    torch.manual_seed(1)  # another draw: every random weight of `fresh` differs from the saved ones
    fresh = create_model("bert", **TINY).eval()
    for param in fresh.parameters():
        param.add_(0.01)  # the LayerNorm ones and zero biases too
    saved = model.state_dict()
    assert not any(torch.equal(value, saved[name]) for name, value in fresh.state_dict().items())
    ids = random_ids()
    assert not torch.allclose(fresh(ids).logits, model(ids).logits)
    load_weights(fresh, tmp_path, strict=True)
    not_loaded = [name for name, value in fresh.state_dict().items() if not torch.equal(value, saved[name])]
    assert not not_loaded, not_loaded
    assert torch.equal(fresh(ids).logits, model(ids).logits)
    assert fresh.mlm_head.decoder.weight is fresh.get_input_embeddings().weight  # still tied after loading


def test_from_pretrained_errors_name_the_path(tmp_path):
    with pytest.raises(UserError, match="model_config.json does not exist"):
        BaseLanguageModel.from_pretrained(tmp_path)
    tiny("bert").save_pretrained(tmp_path)
    with pytest.raises(UserError, match="holds a 'bert' model, not a GPT"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="model.safetensors cannot be loaded"):
        Bert.from_pretrained(tmp_path)


@pytest.mark.parametrize("arch", ["gpt", "bert"])
def test_resize_keeps_rows_and_tying(arch):
    model = tiny(arch)
    before = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(VOCAB + 7)
    embedding = model.get_input_embeddings()
    assert embedding.weight.shape == (VOCAB + 7, 32) and model.config.vocab_size == VOCAB + 7
    assert torch.equal(embedding.weight[:VOCAB], before)
    assert model.get_output_embeddings().weight is embedding.weight
    assert model(random_ids()).logits.shape[-1] == VOCAB + 7
    model.resize_token_embeddings(VOCAB - 3)
    assert torch.equal(model.get_input_embeddings().weight, before[:VOCAB - 3])


def test_parameter_count_counts_tied_weights_once():
    model = tiny("gpt")
    d, hidden, layers = 32, 128, 2
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    expected = VOCAB * d + 24 * d + layers * block + 2 * d
    assert model.get_parameter_count() == expected
    model.backbone.token_embedding.weight.requires_grad_(False)
    assert model.get_parameter_count(trainable_only=True) == expected - VOCAB * d
    assert model.get_memory_footprint() == 4 * expected


def test_computed_positions_are_not_saved():
    sinusoidal = tiny("gpt", positional="sinusoidal")
    rotary = tiny("gpt", positional="rotary")
    for model in (sinusoidal, rotary):
        assert model.backbone.position_embedding is None
        assert not any("position" in key or "rotary" in key for key in model.state_dict())


def test_input_longer_than_block_size_is_refused():
    with pytest.raises(UserError, match="longer than the model's block_size"):
        tiny("gpt")(random_ids(1, 25))


def test_token_type_ids_need_segment_embeddings():
    ids = random_ids()
    with pytest.raises(UserError, match="type_vocab_size"):
        tiny("gpt")(ids, token_type_ids=torch.zeros_like(ids))
    bert = tiny("bert")
    assert not torch.allclose(bert(ids).logits, bert(ids, token_type_ids=torch.ones_like(ids)).logits)


def test_dropout_acts_only_in_training():
    model = tiny("gpt", dropout=0.5)
    ids = random_ids()
    assert torch.equal(model(ids).logits, model(ids).logits)
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)


def test_unknown_architecture_lists_registered_names():
    with pytest.raises(UserError, match="'bret'.*did you mean 'bert'.*Registered architectures: bert, electra, gpt, gpt2"):
        get_architecture("bret")


def test_unknown_key_names_it_and_the_valid_keys():
    with pytest.raises(UserError, match=r"model\.n_layers .*Did you mean 'n_layer'\?.*Valid keys: .*n_head"):
        create_model("gpt", n_layers=3)


def test_invalid_values_are_user_errors():
    with pytest.raises(UserError, match=r"n_embd \(30\) must be divisible by model\.n_head \(4\)"):
        create_model("gpt", n_embd=30, n_head=4)
    with pytest.raises(UserError, match="did you mean 'rotary'"):
        create_model("gpt", positional="rotery")
    with pytest.raises(UserError, match="must be even"):
        create_model("gpt", n_embd=12, n_head=4, positional="rotary", n_layer=1)


def test_presets_apply_and_values_override_them():
    assert PRESETS["gpt"]["base"] == {"n_layer": 12, "n_head": 12, "n_embd": 768}
    model = create_model("bert", preset="small", n_layer=1, vocab_size=VOCAB, block_size=8)
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd) == (1, 8, 512)
    assert model.backbone.blocks[0].mlp.fc.out_features == 4 * 512
    with pytest.raises(UserError, match="'medium'"):
        create_model("gpt", preset="medium")


def test_create_model_from_a_config_object():
    config = GPTConfig(**TINY, positional="rotary")
    model = create_model(config)
    assert isinstance(model, GPT) and model.config is config
    wider = create_model(config, n_embd=64)
    assert wider.config.n_embd == 64 and wider.config.positional == "rotary" and config.n_embd == 32


def test_defaults_are_gpt2_and_bert_base():
    gpt, bert = GPTConfig(), BertConfig()
    assert (gpt.norm_position, gpt.activation, gpt.layer_norm_eps, gpt.attention_type, gpt.vocab_size) == \
        ("pre", "gelu_tanh", 1e-5, "causal", 50304)
    assert (bert.norm_position, bert.activation, bert.layer_norm_eps, bert.attention_type) == \
        ("post", "gelu", 1e-12, "bidirectional")
    assert (bert.type_vocab_size, bert.embedding_norm, bert.vocab_size, bert.block_size) == (2, True, 30522, 512)


def test_gpt_residual_projections_use_the_scaled_init():
    model = create_model("gpt", vocab_size=VOCAB, n_layer=8, n_head=4, n_embd=128, block_size=8)
    block = model.backbone.blocks[0]
    assert abs(block.attn.qkv.weight.std().item() - 0.02) < 0.002
    assert abs(block.mlp.proj.weight.std().item() - 0.02 / 4) < 0.0005


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("gpt")(GPT)


@pytest.mark.parametrize("masked", [False, True])
def test_short_bf16_heads_train_their_cpu_attention_in_float32(masked):
    """Below 256 x 64 elements per head, CPU bf16 attention with gradients runs in float32 (its bf16
    backward is several times slower there) and returns bf16; longer heads and inference keep bf16."""
    from model_foundry.models.backbones.attention import attend

    generator = torch.Generator().manual_seed(0)
    short = [torch.randn(2, 2, 16, 8, generator=generator).bfloat16().requires_grad_() for _ in range(3)]
    mask = torch.zeros(16, 16).masked_fill(torch.ones(16, 16, dtype=torch.bool).triu(1), float("-inf")).bfloat16()
    mask, causal = (mask, False) if masked else (None, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained = attend(*short, mask, causal, dropout=0.0)
    exact = F.scaled_dot_product_attention(*(t.float() for t in short), attn_mask=None, is_causal=True)
    assert trained.dtype == torch.bfloat16 and torch.equal(trained, exact.bfloat16())
    trained.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in short)
    with torch.no_grad():
        inferred = attend(*short, mask, causal, dropout=0.0)
    assert torch.equal(inferred, F.scaled_dot_product_attention(*short, attn_mask=mask, is_causal=causal))
    long = [torch.randn(1, 1, 256, 64, generator=generator).bfloat16().requires_grad_() for _ in range(3)]
    assert torch.equal(attend(*long, None, True, dropout=0.0), F.scaled_dot_product_attention(*long, is_causal=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blockwise_cross_entropy_matches_torch_in_value_and_gradient(dtype):
    """Several blocks of rows (the last one short), ignored rows, float32 and bf16 logits; float32 logits
    must come out of the backward unchanged (a block of them is not a copy)."""
    from model_foundry.models.cross_entropy import summed_cross_entropy

    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(23, 11, generator=generator)).to(dtype)
    labels = torch.randint(0, 11, (23,), generator=generator)
    labels[::4] = -100
    ours, reference = (logits.clone().requires_grad_() for _ in range(2))
    kept = ours.detach().clone()
    loss = summed_cross_entropy(ours, labels, block_rows=5)
    expected = F.cross_entropy(reference.float(), labels, ignore_index=-100, reduction="sum")
    (2.5 * loss).backward()
    (2.5 * expected).backward()
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert ours.grad.dtype == dtype
    torch.testing.assert_close(ours.grad.float(), reference.grad.float(), rtol=1e-5 if dtype == torch.float32 else 1e-2,
                               atol=1e-6 if dtype == torch.float32 else 1e-3)
    assert torch.equal(ours.detach(), kept) and not ours.grad[::4].any()


def test_blockwise_cross_entropy_without_targets_is_zero_with_zero_gradient():
    from model_foundry.models.cross_entropy import summed_cross_entropy

    logits = torch.randn(6, 5, requires_grad=True)
    loss = summed_cross_entropy(logits, torch.full((6,), -100), block_rows=4)
    loss.backward()
    assert loss.item() == 0.0 and not logits.grad.any()
