"""Replaced token detection (ELECTRA): the loss by hand, the replaced/original targets, padding,
a training run the discriminator learns from, and every consumer of its checkpoint (finetuning,
load_model, fill-mask, Hugging Face export); causal and recurrent models are refused."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

import model_foundry
from model_foundry.cli.main import main
from model_foundry.config import load_config
from model_foundry.data import MaskedLMCollator
from model_foundry.data.batches import seeded_generator
from model_foundry.errors import UserError
from model_foundry.inference.evaluate import evaluate_run
from model_foundry.inference.fill_mask import fill_mask
from model_foundry.inference.loading import load_model, load_tokenizer
from model_foundry.models import Electra, ElectraConfig, create_model
from model_foundry.training.run import build_trainer, resolved_config
from tests.conftest import tiny_config
from tests.test_finetuning import finetune_config, write_sentiment

VOCAB = 30
PAD, MASK, CLS = 0, 1, 2
TINY = {"vocab_size": VOCAB, "n_layer": 2, "n_head": 4, "n_embd": 32, "block_size": 24}
IGNORE = -100


def tiny(**values) -> Electra:
    torch.manual_seed(0)
    return create_model("electra", **{**TINY, **values}).eval()


def padded_batch(seed: int = 1) -> dict:
    """Three rows of 12, 9 and 5 tokens, masked by the masked-LM collator (padding at the end)."""
    rows = torch.randint(3, VOCAB, (3, 12), generator=torch.Generator().manual_seed(seed))
    items = [{"input_ids": torch.cat([torch.tensor([CLS]), row[:length - 1]])} for row, length in zip(rows, (12, 9, 5))]
    collate = MaskedLMCollator(pad_id=PAD, mask_id=MASK, vocab_size=VOCAB, special_ids=[PAD, MASK, CLS],
                               mlm_probability=0.3)
    return collate(items, seeded_generator(seed))


def always_sample(model: Electra, token: int) -> None:
    """Make the generator's every draw `token` (its output bias dwarfs the logits)."""
    with torch.no_grad():
        model.generator.head.bias.zero_()
        model.generator.head.bias[token] = 1e4


# ---- the objective ---------------------------------------------------------------------------------
def test_loss_is_generator_cross_entropy_plus_weighted_discriminator_bce():
    model = tiny(rtd_weight=7.0)
    batch = padded_batch()
    masked, real = batch["labels"] != IGNORE, batch["attention_mask"].bool()
    assert masked.any() and not real.all()
    with torch.no_grad():
        output = model(**batch, sampling_generator=torch.Generator().manual_seed(5))
        generator_logits = model.masked_lm_logits(batch["input_ids"], batch["attention_mask"])[masked]
        drawn = torch.multinomial(generator_logits.softmax(-1), 1, generator=torch.Generator().manual_seed(5))[:, 0]
        original = torch.where(masked, batch["labels"], batch["input_ids"])
        corrupted = original.clone()
        corrupted[masked] = drawn
        discriminator_logits = model(corrupted, attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(output.mlm_logits, generator_logits, atol=1e-5)
    assert torch.equal(output.corrupted_ids, corrupted) and torch.equal(output.replaced, corrupted != original)
    assert torch.allclose(output.logits, discriminator_logits, atol=1e-5)
    mlm = F.cross_entropy(generator_logits, batch["labels"][masked])
    rtd = F.binary_cross_entropy_with_logits(discriminator_logits[real], (corrupted != original)[real].float())
    assert output.mlm_loss.item() == pytest.approx(mlm.item(), rel=1e-5)
    assert output.rtd_loss.item() == pytest.approx(rtd.item(), rel=1e-5)
    assert output.loss.item() == pytest.approx(mlm.item() + 7.0 * rtd.item(), rel=1e-5)


def test_a_sampled_token_equal_to_the_original_counts_as_original():
    model = tiny()
    batch = padded_batch()
    masked = batch["labels"] != IGNORE
    token = int(batch["labels"][masked][0])
    always_sample(model, token)
    with torch.no_grad():
        output = model(**batch)
    assert torch.all(output.corrupted_ids[masked] == token)
    assert torch.equal(output.replaced, masked & (batch["labels"] != token))
    assert not output.replaced[masked & (batch["labels"] == token)].any()


def test_padding_positions_are_ignored():
    model = tiny()
    always_sample(model, 5)  # deterministic replacements, so two forward passes see the same input
    with torch.no_grad():  # logits far from 0, so that counting the padding would change the mean
        model.discriminator_head.out.bias.fill_(3.0)
    batch = padded_batch()
    padding = batch["attention_mask"] == 0
    garbage = {**batch, "input_ids": torch.where(padding, 7, batch["input_ids"])}
    with torch.no_grad():
        output, again = model(**batch), model(**garbage)
    assert output.loss.item() == pytest.approx(again.loss.item(), rel=1e-6)
    assert torch.allclose(output.logits[~padding], again.logits[~padding], atol=1e-5)
    assert not output.replaced[padding].any()
    real = ~padding
    by_hand = F.binary_cross_entropy_with_logits(output.logits[real], output.replaced[real].float())
    every = F.binary_cross_entropy_with_logits(output.logits, output.replaced.float())
    assert output.rtd_loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert output.rtd_loss.item() != pytest.approx(every.item(), rel=1e-2)


def test_generator_is_narrower_with_whole_heads_and_shares_the_embeddings():
    assert (ElectraConfig(n_embd=768, n_head=12).generator_config().n_embd,
            ElectraConfig(n_embd=768, n_head=12).generator_config().n_head) == (192, 3)
    small = ElectraConfig(n_embd=32, n_head=4, generator_size=0.25).generator_config()
    assert (small.n_embd, small.n_head, small.n_layer, small.mlp_size) == (8, 1, 12, 32)
    model = tiny(positional="learned")
    embedding = model.get_input_embeddings().weight
    assert model.generator.head.decoder.weight is embedding and model.generator.project.weight.shape == (8, 32)
    assert not any("embedding" in name for name, _ in model.generator.named_parameters())
    model.resize_token_embeddings(VOCAB + 3)
    assert model.generator.head.decoder.weight is model.get_input_embeddings().weight
    assert model.masked_lm_logits(torch.tensor([[CLS, 5, MASK]])).shape == (1, 3, VOCAB + 3)


@pytest.mark.parametrize("values, message", [({"generator_size": 0.0}, "generator_size"),
                                             ({"generator_size": 1.5}, "generator_size"),
                                             ({"rtd_weight": 0.0}, "rtd_weight")])
def test_task_keys_are_validated(values, message):
    with pytest.raises(UserError, match=message):
        load_config({"task": {"type": "replaced_token_detection", **values}})


@pytest.mark.parametrize("model", [{"architecture": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32},  # causal
                                   {"architecture": "lstm", "n_layer": 1, "n_embd": 32, "bidirectional": True}])
def test_causal_and_recurrent_models_are_refused_with_exit_2(make_config, tmp_path, capsys, model):
    config = make_config(task={"type": "replaced_token_detection"})
    config["model"] = dict(model)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["train", str(path)]) == 2
    error = capsys.readouterr().err
    assert "task.type replaced_token_detection" in error and "model.architecture" in error


# ---- a trained run and its consumers ------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """300 steps on one sentence repeated: enough for the discriminator to leave the constant answer."""
    root = tmp_path_factory.mktemp("rtd")
    corpus = root / "corpus.txt"
    corpus.write_text("the cat sat on the mat .\n" * 300, encoding="utf-8")
    config = tiny_config(corpus, root / "experiments", "bert", experiment={"name": "rtd"},
                         model={"n_head": 4, "positional": "rotary"},
                         task={"type": "replaced_token_detection", "mlm_probability": 0.3},
                         training={"max_steps": 300, "batch_size": 16, "learning_rate": 5e-3, "warmup_steps": 10,
                                   "lr_schedule": "constant", "eval_interval": 150, "eval_iters": 4})
    results = model_foundry.train(config)
    return results, root / "experiments" / "pretraining" / "rtd"


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_discriminator_beats_the_constant_answer(trained):
    results, run_dir = trained
    val = results["val"]
    assert results["task"] == "replaced_token_detection"
    assert set(val) == {"loss", "mlm_loss", "mlm_accuracy", "rtd_loss", "rtd_accuracy", "replaced_share"}
    assert val["loss"] == pytest.approx(val["mlm_loss"] + 50.0 * val["rtd_loss"])
    evals = [row.split(",") for row in (run_dir / "metrics" / "eval.csv").read_text().splitlines()[1:]]
    assert [int(row[0]) for row in evals] == [150, 300] and float(evals[1][2]) < float(evals[0][2]), evals
    assert val["rtd_accuracy"] > 1 - val["replaced_share"] + 0.02, val
    meta = json.loads((run_dir / "checkpoints" / "best" / "model_config.json").read_text())
    assert meta["architecture"] == "electra" and meta["config"]["generator_size"] == 0.25
    assert meta["config"]["rtd_weight"] == 50.0 and meta["config"]["norm_position"] == "post"


@pytest.mark.slow
def test_eval_of_the_saved_run_reproduces_its_results(trained):
    results, run_dir = trained
    assert evaluate_run(run_dir) == pytest.approx(results["val"])


@pytest.mark.slow
def test_load_model_gives_the_discriminator_and_fill_mask_the_generator(trained):
    run_dir = trained[1]
    model, tokenizer = load_model(run_dir), load_tokenizer(run_dir)
    assert isinstance(model, Electra) and not model.training
    ids = torch.tensor([[tokenizer.cls_id, *tokenizer.encode("the cat sat"), tokenizer.sep_id]])
    assert model(ids).logits.shape == ids.shape
    [candidates] = fill_mask(model, tokenizer, "the cat [MASK]at on the mat", top_k=3)
    probabilities = [c["probability"] for c in candidates]
    assert len(candidates) == 3 and probabilities == sorted(probabilities, reverse=True)
    masked = torch.tensor([[tokenizer.cls_id, *tokenizer.encode(f"the cat {tokenizer.mask_token}at on the mat"),
                            tokenizer.sep_id]])
    position = masked[0].tolist().index(tokenizer.mask_id)
    expected = model.masked_lm_logits(masked)[0, position].softmax(-1).max().item()
    assert probabilities[0] == pytest.approx(expected, rel=1e-5)
    assert main(["fill-mask", str(run_dir), "--text", "the [MASK]at", "--top-k", "2"]) == 0


@pytest.mark.slow
def test_finetuning_loads_exactly_the_discriminator_backbone(trained, tmp_path):
    run_dir = trained[1]
    for name, rows, seed in (("train", 64, 1), ("dev", 16, 2), ("test", 16, 3)):
        write_sentiment(tmp_path / f"{name}.tsv", rows, seed)
    config = finetune_config(tmp_path, run_dir, tmp_path, training={"max_steps": 4, "eval_interval": 4})
    loaded = resolved_config(load_config(config).config)
    model = build_trainer(loaded, tmp_path / "inspect").model
    stored = load_file(run_dir / "checkpoints" / "best" / "model.safetensors")
    backbone = {k: v for k, v in stored.items() if k.startswith("backbone.")}
    own = model.state_dict()
    assert {k for k in own if k.startswith("backbone.")} == set(backbone)
    assert all(torch.equal(own[k], v) for k, v in backbone.items())
    assert not any(k.startswith(("generator", "discriminator_head")) for k in own)
    results = model_foundry.train(config)
    assert 0.0 <= results["test"]["accuracy"] <= 1.0
    saved = tmp_path / "experiments" / "finetuning" / "ft" / "checkpoints" / "best"
    assert json.loads((saved / "model_config.json").read_text())["architecture"] == "electra"
    assert not any(k.startswith("generator") for k in load_file(saved / "model.safetensors"))


@pytest.mark.slow
def test_hf_export_of_rotary_positions_is_self_contained(trained, tmp_path, capsys):
    """Native ELECTRA has learned positions only: a rotary one is written with our own code, and the message
    names the key that kept it from the native classes (tests/test_hf_remote_export.py checks its logits)."""
    pytest.importorskip("transformers")
    assert main(["export", str(trained[1]), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    said = capsys.readouterr().out
    assert "self-contained" in said and "positional" in said and not (tmp_path / "hf" / "discriminator").exists()
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "model_foundry"


@pytest.mark.slow
def test_hf_export_gives_electra_discriminator_and_generator_with_equal_logits(make_config, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = make_config("bert", model={"n_head": 4, "positional": "learned"},
                         task={"type": "replaced_token_detection"}, training={"max_steps": 2, "eval_interval": 2})
    model_foundry.train(config)
    run_dir = tmp_path / "experiments" / "pretraining" / "tiny_bert"
    ours = load_model(run_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # large random weights, so a mapping mistake cannot hide behind a small initialisation
        for param in ours.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    ours.save_pretrained(run_dir / "checkpoints" / "best")
    assert main(["export", str(run_dir), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    discriminator = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "hf" / "discriminator").eval()
    hf_generator = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf" / "generator").eval()
    tokenizer = load_tokenizer(run_dir)
    ids = torch.tensor([tokenizer.encode_for_model("the cat sat on the mat .")])
    with torch.no_grad():
        assert (discriminator(ids).logits - ours(ids).logits).abs().max() < 1e-4
        expected = ours.masked_lm_logits(ids)
        assert expected.std() > 0.5 and (hf_generator(ids).logits - expected).abs().max() < 1e-4
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf" / "generator")
    assert hf_tokenizer("the cat sat on the mat .")["input_ids"] == ids[0].tolist()


@pytest.mark.parametrize("task", ["masked_lm", "causal_lm"])
def test_electra_architecture_with_another_objective_is_refused_with_exit_2(make_config, tmp_path, capsys, task):
    config = make_config("bert", task={"type": task})
    config["model"]["architecture"] = "electra"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["train", str(path)]) == 2
    error = capsys.readouterr().err
    assert "model.architecture 'electra'" in error and f"task.type {task}" in error
    assert not any((tmp_path / "experiments").rglob("model.safetensors"))
