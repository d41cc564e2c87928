"""The modern recipe (`model.recipe: modern`) and each of its pieces as its own key: RMSNorm, QK-norm, ReLU^2,
an untied head, zero-initialised projections and soft-capped logits."""
from __future__ import annotations

import csv
import math

import pytest
import torch

import model_foundry
from model_foundry.errors import UserError
from model_foundry.models.backbones.transformer import MODERN_RECIPE, ReLUSquared
from model_foundry.models.base import BaseLanguageModel, masked_lm_logits
from model_foundry.models.registry import create_model

TINY = {"vocab_size": 40, "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 12}
ARCHITECTURES = ("gpt", "bert", "hybrid")


def ids(batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, TINY["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(seed))


def logits_of(model: BaseLanguageModel, input_ids: torch.Tensor) -> torch.Tensor:
    return masked_lm_logits(model, input_ids, None) if model.architecture_name == "bert" else model(input_ids).logits


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_recipe_sets_its_keys_and_explicit_keys_win(arch):
    model = create_model(arch, recipe="modern", **TINY)
    for key, value in MODERN_RECIPE.items():
        assert getattr(model.config, key) == value, key
    assert isinstance(model.backbone.blocks[0].norm1, torch.nn.RMSNorm)
    assert isinstance(model.backbone.blocks[0].mlp.activation, ReLUSquared)
    assert model.backbone.blocks[0].attn.q_norm is not None
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    explicit = create_model(arch, recipe="modern", norm="layernorm", tie_weights=True, **TINY)
    assert isinstance(explicit.backbone.blocks[0].norm1, torch.nn.LayerNorm)
    assert explicit.get_output_embeddings().weight is explicit.get_input_embeddings().weight
    classic = create_model(arch, recipe="classic", **TINY)
    assert classic.config == create_model(arch, **TINY).config


def test_a_recipe_is_refused_where_there_is_none_and_a_misspelt_one_is_named():
    with pytest.raises(UserError, match="model.recipe is 'modern', but architecture 'lstm' has no recipes"):
        create_model("lstm", recipe="modern", vocab_size=40)
    with pytest.raises(UserError, match="did you mean 'modern'"):
        create_model("gpt", recipe="modrn", **TINY)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_zero_initialised_projections_start_every_block_as_the_identity_and_the_head_uniform(arch):
    model = create_model(arch, recipe="modern", **TINY).eval()
    for name, param in model.named_parameters():
        if name.endswith(("attn.proj.weight", "mlp.proj.weight")):
            assert not param.any(), name
    x = ids()
    # Every block adds zero to the residual stream, and the head, all zeros, gives every token the same logit.
    assert torch.equal(logits_of(model, x), torch.zeros(2, 12, TINY["vocab_size"]))
    out = model(x, labels=x)
    assert out.loss.item() == pytest.approx(math.log(TINY["vocab_size"]), abs=1e-5)
    out.loss.backward()
    assert model.get_output_embeddings().weight.grad.abs().sum() > 0  # and it learns from the first step


def test_gpt2_scaling_stays_the_classic_initialisation():
    model = create_model("gpt", **TINY)
    proj = model.backbone.blocks[0].attn.proj.weight
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * TINY["n_layer"]), rel=0.3)


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    """Scaling the query and key projections by 10 changes plain attention, and leaves QK-normed attention as it
    was (RMSNorm divides the scale out): the norm is applied to what attention reads."""
    def change_from_scaling(qk_norm: bool) -> float:
        torch.manual_seed(0)
        model = create_model("gpt", qk_norm=qk_norm, **TINY).eval()
        x = ids()
        before = model(x).logits
        with torch.no_grad():
            for block in model.backbone.blocks:
                block.attn.qkv.weight[: 2 * TINY["n_embd"]] *= 10
                block.attn.qkv.bias[: 2 * TINY["n_embd"]] *= 10
        return (model(x).logits - before).abs().max().item()

    assert change_from_scaling(qk_norm=True) < 1e-4
    assert change_from_scaling(qk_norm=False) > 1e-2


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_soft_capped_logits_stay_below_the_cap(arch):
    model = create_model(arch, logit_softcap=2.0, tie_weights=False, **TINY).eval()
    with torch.no_grad():
        for head in (model.get_output_embeddings(), getattr(getattr(model, "mlm_head", None), "decoder", None)):
            if head is not None:
                head.weight.normal_(std=50.0)
    logits = logits_of(model, ids())
    assert logits.abs().max() <= 2.0 and logits.abs().max() > 1.9  # tanh may round to exactly 1 in fp32
    uncapped = create_model(arch, logit_softcap=0.0, tie_weights=False, **TINY).eval()
    with torch.no_grad():
        uncapped.get_output_embeddings().weight.normal_(std=50.0)
        if arch != "gpt":
            uncapped.mlm_head.decoder.weight.normal_(std=50.0)
    assert logits_of(uncapped, ids()).abs().max() > 10.0


def test_relu_squared_is_relu_then_square():
    x = torch.linspace(-3, 3, 13)
    assert torch.equal(ReLUSquared()(x), torch.where(x > 0, x * x, torch.zeros_like(x)))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_an_untied_model_round_trips_and_resizes_with_its_own_head_rows(arch, tmp_path):
    torch.manual_seed(0)
    model = create_model(arch, recipe="modern", zero_init_projections=False, **TINY).eval()
    model.save_pretrained(tmp_path / "model")
    back = BaseLanguageModel.from_pretrained(tmp_path / "model")
    assert torch.equal(logits_of(back, ids()), logits_of(model, ids()))
    assert back.get_output_embeddings().weight is not back.get_input_embeddings().weight
    head_before = model.get_output_embeddings().weight.detach().clone()
    model.resize_token_embeddings(TINY["vocab_size"] + 8)
    head = model.get_output_embeddings().weight
    assert head.shape[0] == TINY["vocab_size"] + 8 and torch.equal(head[: TINY["vocab_size"]], head_before)
    assert head is not model.get_input_embeddings().weight
    assert logits_of(model, ids()).shape[-1] == TINY["vocab_size"] + 8


def test_an_invalid_softcap_names_the_key():
    with pytest.raises(UserError, match="model.logit_softcap is -1"):
        create_model("gpt", logit_softcap=-1.0, **TINY)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_modern_run_trains_and_its_loss_falls_from_the_uniform_start(make_config, tmp_path, arch):
    config = make_config(arch, training={"max_steps": 30, "log_interval": 1})
    config["model"]["recipe"] = "modern"
    model_foundry.train(config)
    run = tmp_path / "experiments" / "pretraining" / f"tiny_{arch}"
    with open(run / "metrics" / "train.csv", newline="") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    # A zero head predicts the uniform distribution over the vocabulary at step 1, exactly.
    assert losses[0] == pytest.approx(math.log(model_foundry.load_model(run).config.vocab_size), abs=1e-3)
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5
