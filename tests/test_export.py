"""foundry export: Hugging Face format with logit and tokenizer parity; LoRA runs merged into plain runs."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

transformers = pytest.importorskip("transformers")

import model_foundry  # noqa: E402
from model_foundry.cli.main import main  # noqa: E402
from model_foundry.inference.loading import load_model, load_tokenizer  # noqa: E402
from model_foundry.inference.predict import predict_run  # noqa: E402
from tests.test_lora import lora_run_config, run_dir, sentiment  # noqa: E402, F401

TEXTS = ["the cat sat on the mat .", "to be or not to be"]


def scramble(model: torch.nn.Module) -> None:
    """Large random weights, so a mapping mistake cannot hide behind a near-zero initialisation."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


@pytest.fixture
def trained_run(make_config, tmp_path):
    def build(arch: str, name: str | None = None, **model):
        config = make_config(arch, training={"max_steps": 2, "eval_interval": 2},
                             tokenizer={"type": "bpe", "vocab_size": 300})
        config["model"].update(model)
        config["experiment"]["name"] = name = name or f"tiny_{arch}"
        model_foundry.train(config)
        directory = tmp_path / "experiments" / "pretraining" / name
        checkpoint = directory / "checkpoints" / "best"
        trained = load_model(directory)
        scramble(trained)
        trained.save_pretrained(checkpoint)
        return directory
    return build


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "positional", "auto_class", "hf_class"), [
    ("gpt", "learned", "AutoModelForCausalLM", "GPT2LMHeadModel"),
    ("gpt", "rotary", "AutoModelForCausalLM", "GPTNeoXForCausalLM"),
    ("bert", "learned", "AutoModelForMaskedLM", "BertForMaskedLM"),
    ("bert", "rotary", "AutoModelForMaskedLM", "RoFormerForMaskedLM")])  # bert's default positions
def test_hf_export_gives_equal_logits_and_tokens(trained_run, tmp_path, arch, positional, auto_class, hf_class):
    run = trained_run(arch, positional=positional)
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    hf_model = getattr(transformers, auto_class).from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    assert type(hf_model).__name__ == hf_class
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours, tokenizer = load_model(run), load_tokenizer(run)
    for text in TEXTS:
        ids = tokenizer.encode_for_model(text)
        assert hf_tokenizer(text)["input_ids"] == ids
        batch = torch.tensor([ids])
        with torch.no_grad():
            expected = ours(batch).logits
            assert expected.std() > 0.5
            assert (hf_model(batch).logits - expected).abs().max() < 1e-4
    assert hf_tokenizer.pad_token == tokenizer.pad_token and hf_tokenizer.mask_token == tokenizer.mask_token
    assert hf_model.config.pad_token_id == tokenizer.pad_id


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "model", "key"), [("gpt", {"positional": "sinusoidal"}, "positional"),
                                                    ("bert", {"norm_position": "pre"}, "norm_position")])
def test_hf_export_of_a_layout_without_native_class_is_self_contained(trained_run, tmp_path, capsys, arch, model, key):
    """Never approximated: a layout no transformers class computes is written with our own code, and the
    message says which key kept it from the native class."""
    run = trained_run(arch, **model)
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    said = capsys.readouterr().out
    assert "self-contained" in said and key in said
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "model_foundry" and "AutoModel" in config["auto_map"]


@pytest.mark.slow
def test_merged_lora_export_predicts_like_the_lora_run(sentiment, tmp_path):  # noqa: F811
    model_foundry.train(lora_run_config(tmp_path, sentiment, "lora", 4))
    source = run_dir(tmp_path, "lora")
    out = tmp_path / "merged"
    assert main(["export", str(source), "--merge-lora", "--out", str(out)]) == 0
    meta = json.loads((out / "checkpoints" / "best" / "model_config.json").read_text())
    assert "lora" not in meta and not (out / "checkpoints" / "best" / "adapter").exists()
    assert "lora" not in yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert (out / "results.json").is_file() and (out / "tokenizer" / "tokenizer.json").is_file()
    expected = predict_run(source, input_path=sentiment / "test.tsv")
    merged = predict_run(out, input_path=sentiment / "test.tsv")
    assert [row["label"] for row in merged] == [row["label"] for row in expected]
    for row, reference in zip(merged, expected):
        assert row["probabilities"] == pytest.approx(reference["probabilities"], abs=1e-5)
    assert main(["export", str(out), "--merge-lora", "--out", str(tmp_path / "again")]) == 2


# ---- import: transfer.init_from_checkpoint: hf:DIR ----------------------------------------------------
def hf_directory(tmp_path, kind: str):
    if kind == "gpt2":
        config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=90, n_positions=64,
                                         bos_token_id=0, eos_token_id=1)
        model, body = transformers.GPT2LMHeadModel(config), "transformer"
    elif kind == "gpt_neox":
        config = transformers.GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                            intermediate_size=64, vocab_size=90, max_position_embeddings=64,
                                            use_parallel_residual=False, tie_word_embeddings=True,
                                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                             "partial_rotary_factor": 1.0})
        model, body = transformers.GPTNeoXForCausalLM(config), "gpt_neox"
    elif kind == "roformer":
        config = transformers.RoFormerConfig(hidden_size=32, embedding_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64, vocab_size=90,
                                             max_position_embeddings=64)
        model, body = transformers.RoFormerForMaskedLM(config), "roformer"
    else:
        config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, vocab_size=90, max_position_embeddings=64)
        model, body = transformers.BertForMaskedLM(config), "bert"
    fixed = {name: tensor.clone() for name, tensor in model.state_dict().items() if "embed_positions" in name}
    scramble(model)
    model.load_state_dict(fixed, strict=False)  # RoFormer's sine table is fixed, not a weight to scramble
    model.save_pretrained(tmp_path / kind)
    return tmp_path / kind, getattr(model.eval(), body)


@pytest.mark.parametrize("kind", ["gpt2", "gpt_neox", "bert", "roformer"])
def test_hf_directory_imports_into_our_backbone_with_equal_hidden_states(tmp_path, kind):
    from model_foundry.models.registry import create_config
    from model_foundry.config.experiments import locate_checkpoint
    from model_foundry.models import read_checkpoint_config
    from model_foundry.training.transfer import load_backbone_weights

    directory, hf_body = hf_directory(tmp_path, kind)
    checkpoint = locate_checkpoint(f"hf:{directory}", "transfer.init_from_checkpoint")
    meta = read_checkpoint_config(checkpoint)
    assert meta["architecture"] == {"gpt2": "gpt", "gpt_neox": "gpt", "bert": "bert", "roformer": "bert"}[kind]
    cls, config = create_config(meta["architecture"], **meta["config"])
    ours = cls(config).eval()
    load_backbone_weights(ours, checkpoint, strict=True)
    ids = torch.randint(0, 90, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf_body(ids).last_hidden_state
        hidden, _ = ours.backbone(ids, None, None, False)
    assert expected.std() > 0.2  # a meaningful scale for the tolerance below
    assert (hidden - expected).abs().max() < 1e-4


def test_hf_directory_with_pickled_weights_only_is_refused(tmp_path):
    from model_foundry.errors import UserError
    from model_foundry.config.experiments import locate_checkpoint

    directory, _ = hf_directory(tmp_path, "gpt2")
    (directory / "model.safetensors").rename(directory / "pytorch_model.bin")
    with pytest.raises(UserError, match="convert it to safetensors"):
        locate_checkpoint(f"hf:{directory}", "transfer.init_from_checkpoint")
