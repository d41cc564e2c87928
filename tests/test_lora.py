"""LoRA through peft: what trains, what is saved, and that a saved LoRA run reloads and resumes exactly."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("peft")

import model_foundry  # noqa: E402
from model_foundry.config import load_config  # noqa: E402
from model_foundry.errors import UserError  # noqa: E402
from model_foundry.inference.predict import predict_run  # noqa: E402
from model_foundry.models import BaseLanguageModel  # noqa: E402
from model_foundry.models.gpt import GPTConfig  # noqa: E402
from model_foundry.models.task_model import TaskHeadConfig, TaskModel  # noqa: E402
from model_foundry.models.lora import apply_lora, has_lora, merge_lora  # noqa: E402
from model_foundry.training.run import build_trainer  # noqa: E402
from tests.test_finetuning import finetune_config, ft_dir, write_sentiment  # noqa: E402

SETTINGS = {"r": 4, "alpha": 8.0, "dropout": 0.0, "is_trainable": True}


def classifier() -> TaskModel:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=16, block_size=16, dropout=0.0)
    return TaskModel("gpt", config, TaskHeadConfig(task="sequence_classification", num_outputs=3,
                                                   pooler="attention"))


def inputs() -> dict:
    ids = torch.randint(0, 40, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def pretend_training(model: torch.nn.Module) -> None:
    """Move every trainable weight (adapters, head, pooler) as training would."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)


def test_only_adapters_head_and_pooler_train_and_loss_works():
    model = apply_lora(classifier(), {**SETTINGS, "layers_to_transform": [1]})
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith(("head.", "pooler.")) for n in trainable)
    adapted = {n.split(".lora_")[0] for n in trainable if ".lora_" in n}
    assert adapted == {f"backbone.blocks.1.{m}" for m in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")}
    output = model(**inputs(), labels=torch.tensor([0, 2, 1]))
    output.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)  # the base stays frozen
    # lora_B starts at zero, so lora_A's first gradient is zero too; B, the head and pooler must get one.
    assert all(g.abs().sum() > 0 for n, g in grads.items() if ".lora_A." not in n), \
        [n for n, g in grads.items() if ".lora_A." not in n and not g.abs().sum() > 0]


def test_lora_save_reload_predicts_identically_with_the_trained_head(tmp_path):
    model = apply_lora(classifier(), SETTINGS).eval()
    initial_head = model.head.modules_to_save["default"].out_proj.weight.detach().clone()
    pretend_training(model)
    trained_head = model.head.modules_to_save["default"].out_proj.weight.detach().clone()
    before = model(**inputs()).logits
    model.save_pretrained(tmp_path / "ckpt")

    saved = load_file(tmp_path / "ckpt" / "model.safetensors")
    # The trap: the head used for predictions must be the trained one, not the initial random head.
    assert torch.equal(saved["head.modules_to_save.default.out_proj.weight"], trained_head)
    assert not torch.equal(trained_head, initial_head)
    assert any(".lora_A." in key for key in saved)
    adapter_config = json.loads((tmp_path / "ckpt" / "adapter" / "adapter_config.json").read_text())
    assert {"head", "pooler"} <= set(adapter_config["modules_to_save"])
    adapter = load_file(tmp_path / "ckpt" / "adapter" / "adapter_model.safetensors")
    assert torch.equal(adapter["base_model.model.head.out_proj.weight"], trained_head)
    meta = json.loads((tmp_path / "ckpt" / "model_config.json").read_text())
    assert meta["lora"]["r"] == 4 and meta["task_head"]["num_outputs"] == 3

    reloaded = BaseLanguageModel.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(reloaded(**inputs()).logits, before)
    assert not torch.allclose(classifier()(**inputs()).logits, before)  # the adapters and head matter


def test_lora_keeps_the_models_class_and_merging_only_removes_peft_state():
    """The adapters are peft's state on the model, not a class built at run time."""
    model = apply_lora(classifier(), SETTINGS)
    assert type(model) is TaskModel and has_lora(model)
    merged = merge_lora(model)
    assert type(merged) is TaskModel and not has_lora(merged) and not hasattr(merged, "peft_config")


def test_the_lora_entry_records_the_adapter_and_older_entries_still_load(tmp_path):
    model = apply_lora(classifier(), {**SETTINGS, "layers_to_transform": [1]}).eval()
    pretend_training(model)
    before = model(**inputs()).logits
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "model_config.json").read_text())
    assert meta["lora"]["target_modules"] == ["attn.proj", "attn.qkv", "mlp.fc", "mlp.proj"]
    assert meta["lora"]["layers_to_transform"] == [1] and meta["lora"]["alpha"] == 8.0
    # A checkpoint of an earlier version recorded the config's `lora` section instead.
    meta["lora"] = {"enabled": True, **SETTINGS, "target_modules": None, "layers_to_transform": [1],
                    "modules_to_save": [], "pretrained_adapter_path": None}
    (tmp_path / "model_config.json").write_text(json.dumps(meta))
    reloaded = BaseLanguageModel.from_pretrained(tmp_path)
    assert type(reloaded) is TaskModel and has_lora(reloaded)
    assert torch.equal(reloaded(**inputs()).logits, before)


def test_merge_gives_the_same_predictions_without_adapters(tmp_path):
    model = apply_lora(classifier(), SETTINGS).eval()
    pretend_training(model)
    before = model(**inputs()).logits
    merged = merge_lora(model)
    assert type(merged) is TaskModel and not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(merged(**inputs()).logits, before, atol=1e-5)
    merged.save_pretrained(tmp_path / "merged")
    assert "lora" not in json.loads((tmp_path / "merged" / "model_config.json").read_text())
    assert torch.allclose(BaseLanguageModel.from_pretrained(tmp_path / "merged")(**inputs()).logits, before,
                          atol=1e-5)


def test_bad_targets_and_layers_are_user_errors():
    with pytest.raises(UserError, match=r"attn\.qkv"):
        apply_lora(classifier(), {**SETTINGS, "target_modules": ["q_proj"]})
    with pytest.raises(UserError, match="layers_to_transform"):
        apply_lora(classifier(), {**SETTINGS, "layers_to_transform": [5]})


# ---- through training runs -------------------------------------------------------------------------
@pytest.fixture
def sentiment(tmp_path):
    for name, rows, seed in (("train", 64, 1), ("dev", 16, 2), ("test", 16, 3)):
        write_sentiment(tmp_path / f"{name}.tsv", rows, seed)
    return tmp_path


def lora_run_config(tmp_path, data_dir, name: str, max_steps: int, **lora) -> dict:
    config = finetune_config(tmp_path, None, data_dir,
                             model={"architecture": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 16,
                                    "block_size": 32},
                             tokenizer={"type": "char", "vocab_size": 48},
                             training={"max_steps": max_steps, "eval_interval": 4, "lr_schedule": "constant",
                                       "batch_size": 8},
                             lora={"enabled": True, "r": 2, **lora})
    config["transfer"] = {}
    config["experiment"]["name"] = name
    return config


def run_dir(tmp_path, name: str):
    return tmp_path / "experiments" / "finetuning" / name


@pytest.mark.slow
def test_lora_run_resumes_exactly_and_reloads(sentiment, tmp_path):
    model_foundry.train(lora_run_config(tmp_path, sentiment, "straight", 8))
    model_foundry.train(lora_run_config(tmp_path, sentiment, "split", 4))
    model_foundry.train(lora_run_config(tmp_path, sentiment, "split", 8), overrides=["training.resume=true"])
    for kind in ("model.safetensors", "adapter/adapter_model.safetensors"):
        straight = load_file(run_dir(tmp_path, "straight") / "checkpoints" / "last" / kind)
        split = load_file(run_dir(tmp_path, "split") / "checkpoints" / "last" / kind)
        assert straight.keys() == split.keys()
        assert all(torch.equal(straight[k], split[k]) for k in straight)
    # `predict` from the saved run gives what the trained model computes in process: the training code's
    # own model (rebuilt, LoRA applied, checkpoints/last loaded by the trainer) on the test split.
    straight = run_dir(tmp_path, "straight")
    config = load_config(straight / "resolved_config.yaml", {"training.resume": True}).config
    trainer = build_trainer(config, straight)
    assert trainer.counters.step == 8
    trainer.model.eval()
    with torch.no_grad():
        expected = torch.cat([torch.softmax(trainer.model(**batch).logits, -1)
                              for batch in trainer.eval_streams["test"].one_pass()])
    predictions = predict_run(straight, input_path=sentiment / "test.tsv", checkpoint="last")
    assert len(predictions) == len(expected) == 16
    labels = trainer.task.label_set.labels
    assert labels == ["0", "1"]
    got = torch.tensor([[row["probabilities"][label] for label in labels] for row in predictions])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert [row["label"] for row in predictions] == [labels[i] for i in expected.argmax(-1).tolist()]
    assert (expected.max(-1).values > 0.55).any()  # the trained head is not indifferent


@pytest.mark.slow
def test_frozen_pretrained_adapter_stays_fixed_while_the_head_trains(sentiment, tmp_path):
    model_foundry.train(lora_run_config(tmp_path, sentiment, "source", 4))
    source = run_dir(tmp_path, "source") / "checkpoints" / "last"
    frozen = lora_run_config(tmp_path, sentiment, "frozen", 4, pretrained_adapter_path=str(source / "adapter"),
                             is_trainable=False)
    frozen["tokenizer"] = {"path": str(run_dir(tmp_path, "source") / "tokenizer")}
    model_foundry.train(frozen)
    before = load_file(source / "adapter" / "adapter_model.safetensors")
    after = load_file(run_dir(tmp_path, "frozen") / "checkpoints" / "last" / "adapter" / "adapter_model.safetensors")
    lora_keys = [k for k in before if "lora_" in k]
    assert lora_keys and all(torch.equal(before[k], after[k]) for k in lora_keys)
    head = "base_model.model.head.out_proj.weight"
    assert not torch.equal(before[head], after[head])


@pytest.mark.slow
def test_lora_on_a_hugging_face_decoder_targets_its_projections_and_reloads(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_backbone = pytest.importorskip("model_foundry.models.hf_backbone")
    config = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, vocab_size=50)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    model = TaskModel("hf", hf_backbone.HFConfig(hf_name_or_path=str(tmp_path / "llama")),
                      TaskHeadConfig(task="sequence_classification", num_outputs=2, pooler="last"))
    model = apply_lora(model, {**SETTINGS, "layers_to_transform": [0]}).eval()
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if ".lora_" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not any(".lora_" in n and ".1." in n for n, _ in model.named_parameters())
    pretend_training(model)
    before = model(**inputs()).logits
    model.save_pretrained(tmp_path / "ckpt")
    assert torch.equal(BaseLanguageModel.from_pretrained(tmp_path / "ckpt")(**inputs()).logits, before)
