"""The hybrid GPT+BERT: both designs' forward modes, loss weighting, attention direction, the shared
design's objective draws, training end to end, save/load and finetuning through a task head."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import model_foundry
from model_foundry.config import load_config
from model_foundry.data import CausalLMCollator, MaskedLMCollator
from model_foundry.data.batches import seeded_generator
from model_foundry.errors import UserError
from model_foundry.inference.evaluate import evaluate_run
from model_foundry.inference.fill_mask import fill_mask
from model_foundry.inference.generation import generate
from model_foundry.inference.loading import load_tokenizer
from model_foundry.models import BaseLanguageModel, HybridLM, TaskHeadConfig, TaskModel, create_model
from model_foundry.models.hybrid import DESIGNS
from model_foundry.tasks import build_task, check_compatibility
from model_foundry.tasks.hybrid import HybridCollator, HybridTask
from model_foundry.training.transfer import load_backbone_weights
from tests.conftest import tiny_config
from tests.test_finetuning import NEGATIVE, POSITIVE, finetune_config, write_sentiment

VOCAB = 41
TINY = {"vocab_size": VOCAB, "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 24}
PAD, MASK = 0, 1
# [mlm, clm] loss weights of the trained runs: two_stack's default, and shared's draw probabilities
# at causal_ratio 0.75.
WEIGHTS = {"two_stack": (0.5, 0.5), "shared": (0.25, 0.75)}


def tiny(design: str = "two_stack", **values) -> HybridLM:
    torch.manual_seed(0)
    return create_model("hybrid", **{**TINY, "hybrid_design": design, **values}).eval()


def random_ids(batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def collator(causal_ratio: float | None) -> HybridCollator:
    masked = MaskedLMCollator(pad_id=PAD, mask_id=MASK, vocab_size=VOCAB, special_ids=[PAD, MASK, 2])
    return HybridCollator(CausalLMCollator(pad_id=PAD), masked, causal_ratio)


def window_items(count: int = 4, length: int = 12) -> list[dict]:
    ids = random_ids(count, length + 1, seed=3)
    return [{"input_ids": row[:-1], "labels": row[1:]} for row in ids]


# ---- forward modes and the loss --------------------------------------------------------------------
@pytest.mark.parametrize("design", DESIGNS)
def test_both_loss_is_the_weighted_sum_of_the_objectives_computed_separately(design):
    model = tiny(design, loss_weights=[0.3, 0.7])
    batch = collator(None)(window_items(), seeded_generator(1))
    with torch.no_grad():
        both = model(**batch)  # a masked copy in the batch: the default objective is both
        mlm, clm = model(**batch, objective="mlm").loss.item(), model(**batch, objective="clm").loss.item()
    assert both.loss.item() == pytest.approx(0.3 * mlm + 0.7 * clm, rel=1e-6)
    assert both.mlm_loss.item() == pytest.approx(mlm) and both.clm_loss.item() == pytest.approx(clm)
    assert mlm != pytest.approx(clm)


@pytest.mark.parametrize("design", DESIGNS)
def test_forward_modes_return_their_own_logits(design):
    model = tiny(design)
    ids = random_ids()
    plain = model(ids, output_hidden_states=True)  # no masked copy, no objective: next-token logits
    assert plain.mlm_logits is None and plain.logits is plain.clm_logits and plain.logits.shape == (2, 12, VOCAB)
    assert len(plain.hidden_states) == 3 and plain.loss is None
    mlm = model(ids, objective="mlm")
    assert mlm.clm_logits is None and mlm.logits is mlm.mlm_logits and mlm.logits.shape == (2, 12, VOCAB)
    both = model(ids, task="both")  # the older keyword: both stacks read the same ids
    assert torch.equal(both.clm_logits, plain.logits) and torch.equal(both.mlm_logits, mlm.logits)
    assert torch.equal(model.masked_lm_logits(ids), mlm.logits)
    assert not torch.allclose(mlm.logits, plain.logits)
    with pytest.raises(UserError, match="did you mean 'clm'"):
        model(ids, objective="clmm")


def test_mlm_objective_scores_only_the_masked_positions():
    model = tiny()
    ids = random_ids(1, 12)
    labels = torch.full_like(ids, -100)
    labels[0, 4] = ids[0, 4]
    masked = ids.clone()
    masked[0, 4] = MASK
    with torch.no_grad():
        output = model(masked, labels=labels, objective="mlm")
    expected = torch.nn.functional.cross_entropy(output.logits[0, 4:5], ids[0, 4:5])
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_both_without_masked_targets_is_refused():
    model = tiny()
    ids = random_ids()
    with pytest.raises(UserError, match="mlm_labels"):
        model(ids, labels=ids, objective="both")


@torch.no_grad()
@pytest.mark.parametrize("design", DESIGNS)
def test_causal_path_never_looks_ahead_and_masked_path_does(design):
    model = tiny(design)
    ids = random_ids(1, 12)
    edited = ids.clone()
    edited[0, 8] = 3 + (edited[0, 8] - 2) % (VOCAB - 3)
    assert torch.allclose(model(ids).logits[:, :8], model(edited).logits[:, :8], atol=1e-6)
    assert not torch.allclose(model(ids).logits[:, 8:], model(edited).logits[:, 8:], atol=1e-6)
    assert not torch.allclose(model.masked_lm_logits(ids)[:, :8], model.masked_lm_logits(edited)[:, :8], atol=1e-6)


def test_shared_design_is_one_stack_and_two_stack_shares_only_the_embedding():
    shared, two = tiny("shared"), tiny("two_stack")
    backbone_params = {id(p) for p in shared.backbone.parameters()}
    assert all(id(p) in backbone_params for p in shared.causal_backbone.parameters())
    assert {id(p) for p in two.causal_backbone.parameters()} & {id(p) for p in two.backbone.parameters()} == \
        {id(two.backbone.token_embedding.weight)}
    stack = sum(p.numel() for n, p in two.backbone.named_parameters() if "token_embedding" not in n)
    assert two.get_parameter_count() - shared.get_parameter_count() == stack
    embedding = two.get_input_embeddings().weight
    assert two.clm_head.weight is embedding and two.mlm_head.decoder.weight is embedding


@pytest.mark.parametrize("design", DESIGNS)
def test_resize_keeps_every_tie(design):
    model = tiny(design)
    old = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(VOCAB + 5)
    embedding = model.get_input_embeddings().weight
    assert torch.equal(embedding[:VOCAB], old) and embedding.shape[0] == VOCAB + 5
    assert model.causal_backbone.token_embedding.weight is embedding
    assert model.clm_head.weight is embedding and model.mlm_head.decoder.weight is embedding
    assert model.mlm_head.bias.shape == (VOCAB + 5,)
    assert model(random_ids()).logits.shape[-1] == model.masked_lm_logits(random_ids()).shape[-1] == VOCAB + 5


def test_config_values_are_checked():
    with pytest.raises(UserError, match="hybrid_design.*did you mean 'shared'"):
        tiny("sharde")
    with pytest.raises(UserError, match="attention_type"):
        tiny(attention_type="causal")
    with pytest.raises(UserError, match="two non-negative numbers"):
        tiny(loss_weights=[1.0, -1.0])


def test_config_loss_weights_are_checked_before_the_run_starts():
    config = load_config({"model": {"architecture": "hybrid"}, "task": {"loss_weights": [1.0]}}).config
    with pytest.raises(UserError, match=r"task\.loss_weights in a config\) is \[1\.0\]; it must be two non-negative"):
        check_compatibility(config)


@pytest.mark.parametrize("values, message", [
    ({"task": {"causal_ratio": 1.5}}, "task.causal_ratio = 1.5"),
    ({"model": {"architecture": "hybrid", "hybrid_design": "both"}}, "'two_stack' or 'shared'")])
def test_config_keys_are_validated(values, message):
    with pytest.raises(UserError, match=message):
        load_config(values)


# ---- the shared design's objective draws -------------------------------------------------------------
def draws(causal_ratio: float, batches: int) -> list[str]:
    collate = collator(causal_ratio)
    return [collate(window_items(), seeded_generator(7, 0, i))["objective"] for i in range(batches)]


@pytest.mark.parametrize("ratio, objective", [(0.0, "mlm"), (1.0, "clm")])
def test_ratio_zero_and_one_give_only_one_objective(ratio, objective):
    assert set(draws(ratio, 50)) == {objective}


def test_causal_share_follows_the_ratio():
    share = draws(0.25, 600).count("clm") / 600
    assert abs(share - 0.25) < 0.055  # 3 standard deviations of a binomial share over 600 draws


def test_draws_and_masks_are_deterministic_given_the_generator():
    collate = collator(0.5)
    first = collate(window_items(), seeded_generator(11))
    again = collate(window_items(), seeded_generator(11))
    assert first.keys() == again.keys() >= {"input_ids", "labels", "mlm_input_ids", "mlm_labels", "objective"}
    assert all(first[k] == again[k] if isinstance(first[k], str) else torch.equal(first[k], again[k]) for k in first)
    other = collate(window_items(), seeded_generator(12))
    assert not torch.equal(first["mlm_labels"], other["mlm_labels"])


def test_every_batch_carries_both_views_of_the_same_text():
    batch = collator(None)(window_items(), seeded_generator(2))
    assert "objective" not in batch
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])
    masked = batch["mlm_labels"] != -100
    assert masked.any() and torch.equal(batch["mlm_labels"][masked], batch["input_ids"][masked])
    assert torch.equal(batch["mlm_input_ids"][~masked], batch["input_ids"][~masked])


# ---- end to end --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short hybrid pretraining run per design, shared by the tests below (two_stack ignores causal_ratio)."""
    root = tmp_path_factory.mktemp("hybrid")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join((POSITIVE + NEGATIVE) * 12) + "\n", encoding="utf-8")
    runs = {}
    for design in DESIGNS:
        config = hybrid_config(corpus, root, design)
        runs[design] = (model_foundry.train(config), root / "experiments" / "pretraining" / design, config)
    return runs


def hybrid_config(corpus, root, design: str) -> dict:
    return tiny_config(corpus, root / "experiments", "hybrid", experiment={"name": design},
                       model={"hybrid_design": design}, task={"causal_ratio": 0.75},
                       training={"max_steps": 40, "eval_interval": 20, "save_interval": 20, "learning_rate": 1e-2})


@pytest.mark.slow
@pytest.mark.parametrize("design", DESIGNS)
def test_training_lowers_the_loss_and_reports_both_objectives(trained, design):
    results, run_dir, _ = trained[design]
    val = results["val"]
    assert results["task"] == "hybrid"
    assert set(val) == {"loss", "perplexity", "bits_per_token", "mlm_accuracy", "mlm_loss", "clm_loss"}
    assert val["perplexity"] == pytest.approx(math.exp(val["clm_loss"]))
    assert val["bits_per_token"] == pytest.approx(val["clm_loss"] / math.log(2))
    mlm_weight, clm_weight = WEIGHTS[design]
    assert val["loss"] == pytest.approx(mlm_weight * val["mlm_loss"] + clm_weight * val["clm_loss"])
    evals = [row.split(",") for row in (run_dir / "metrics" / "eval.csv").read_text().splitlines()[1:]]
    assert [int(row[0]) for row in evals] == [20, 40] and float(evals[1][2]) < float(evals[0][2]), evals
    uniform = math.log(json.loads((run_dir / "checkpoints" / "last" / "model_config.json").read_text())
                       ["config"]["vocab_size"])
    assert val["clm_loss"] < uniform - 0.8


@pytest.mark.slow
@pytest.mark.parametrize("design", DESIGNS)
def test_eval_of_the_saved_run_reproduces_its_results(trained, design):
    results, run_dir, _ = trained[design]
    assert evaluate_run(run_dir) == pytest.approx(results["val"])


@pytest.mark.slow
def test_shared_design_resumes_exactly(trained, tmp_path):
    _, run_dir, config = trained["shared"]
    resumed = {**config, "experiment": {**config["experiment"], "name": "resumed"},
               "training": {**config["training"], "resume_from": str(run_dir / "checkpoints" / "step_20")}}
    model_foundry.train(resumed)
    final = load_file(run_dir / "checkpoints" / "last" / "model.safetensors")
    again = load_file(run_dir.parent / "resumed" / "checkpoints" / "last" / "model.safetensors")
    assert final.keys() == again.keys() and all(torch.equal(final[k], again[k]) for k in final)


@pytest.mark.slow
def test_micro_batches_weigh_by_tokens_whichever_objective(trained):
    run_dir = trained["shared"][1]
    task = build_task(load_config(run_dir / "resolved_config.yaml").config, load_tokenizer(run_dir))
    assert isinstance(task, HybridTask)
    collate = task.collator()
    batches = [collate(window_items(), seeded_generator(7, 0, i)) for i in range(20)]
    assert {b["objective"] for b in batches} == {"clm", "mlm"}
    assert {task.count_targets(b) for b in batches} == {4 * 12}


@pytest.mark.slow
@pytest.mark.parametrize("design", DESIGNS)
def test_checkpoint_records_the_design_and_its_loss_weights(trained, design):
    config = json.loads((trained[design][1] / "checkpoints" / "last" / "model_config.json").read_text())
    assert config["architecture"] == "hybrid" and config["config"]["hybrid_design"] == design
    assert config["config"]["loss_weights"] == list(WEIGHTS[design])


@pytest.mark.slow
@pytest.mark.parametrize("design", DESIGNS)
def test_save_and_load_round_trip(trained, tmp_path, design):
    model = model_foundry.load_model(trained[design][1])
    assert isinstance(model, HybridLM) and model.config.hybrid_design == design
    ids = random_ids(2, 10) % model.config.vocab_size
    model.save_pretrained(tmp_path)
    again = BaseLanguageModel.from_pretrained(tmp_path)
    assert torch.equal(again(ids).logits, model(ids).logits)
    assert torch.equal(again.masked_lm_logits(ids), model.masked_lm_logits(ids))
    stored = load_file(tmp_path / "model.safetensors")
    assert "backbone.token_embedding.weight" in stored and "clm_head.weight" not in stored
    assert any(k.startswith("causal_backbone.blocks") for k in stored) == (design == "two_stack")


@pytest.mark.slow
@pytest.mark.parametrize("design", DESIGNS)
def test_generates_with_the_causal_path_and_fills_masks_with_the_bidirectional_one(trained, design):
    run_dir = trained[design][1]
    model, tokenizer = model_foundry.load_model(run_dir), load_tokenizer(run_dir)
    prompt = tokenizer.encode("the cat sat")
    new = generate(model, [prompt], max_new_tokens=6, top_k=1)[0]
    ids = torch.tensor([prompt])
    for _ in range(6):  # greedy decoding by hand, through plain forward calls
        ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=1)
    assert new == ids[0, len(prompt):].tolist()
    [candidates] = fill_mask(model, tokenizer, "the cat [MASK]at on the mat", top_k=3)
    probabilities = [c["probability"] for c in candidates]
    assert len(candidates) == 3 and probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("design", DESIGNS)
def test_finetuning_takes_the_bidirectional_stack(trained, design):
    checkpoint = trained[design][1] / "checkpoints" / "last"
    config = BaseLanguageModel.from_pretrained(checkpoint).config
    head = TaskHeadConfig(task="sequence_classification", num_outputs=2, pooler="cls")
    model = TaskModel("hybrid", config, head)
    load_backbone_weights(model, checkpoint, strict=True)
    stored = load_file(checkpoint / "model.safetensors")
    assert torch.equal(model.backbone.blocks[1].mlp.fc.weight, stored["backbone.blocks.1.mlp.fc.weight"])
    assert not any(name.startswith(("causal_backbone", "clm_head", "mlm_head")) for name, _ in model.named_parameters())
    assert model.backbone.config.attention_type == "bidirectional"
    ids = random_ids(3, 9) % config.vocab_size
    output = model(ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 1]))
    assert output.logits.shape == (3, 2) and torch.isfinite(output.loss)
    output.loss.backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_finetuning_run_from_a_hybrid_checkpoint(trained, tmp_path):
    for name, rows, seed in (("train", 160, 1), ("dev", 40, 2), ("test", 40, 3)):
        write_sentiment(tmp_path / f"{name}.tsv", rows, seed)
    results = model_foundry.train(finetune_config(tmp_path, trained["shared"][1], tmp_path))
    assert results["test"]["accuracy"] > 0.9, results["test"]
    saved = json.loads((tmp_path / "experiments" / "finetuning" / "ft" / "checkpoints" / "best" /
                        "model_config.json").read_text())
    assert saved["architecture"] == "hybrid" and saved["task_head"]["pooler"] == "cls"


def test_shared_design_refuses_loss_weights(make_config):
    config = make_config("hybrid", model={"hybrid_design": "shared"}, task={"loss_weights": [0.2, 0.8]})
    with pytest.raises(UserError, match="causal_ratio"):
        model_foundry.train(config)


def test_hybrid_task_needs_the_hybrid_architecture(make_config):
    with pytest.raises(UserError, match="model.architecture: hybrid"):
        model_foundry.train(make_config("gpt", task={"type": "hybrid"}))
