"""Architecture `hf`: tiny random Hugging Face models (built locally, nothing downloaded) as backbones."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import model_foundry
from model_foundry.errors import UserError
from model_foundry.models import BaseLanguageModel, TaskHeadConfig, TaskModel, create_config, create_model
from model_foundry.models.heads.poolers import LastTokenPooler
from model_foundry.tokenizer import HFTokenizer, load_any_tokenizer
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parent.parent


def example_script():
    spec = importlib.util.spec_from_file_location("make_tiny_hf_models", REPO / "examples" / "make_tiny_hf_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return example_script().write_tiny_models(tmp_path_factory.mktemp("tiny_hf"))


@pytest.fixture
def sentiment(tmp_path) -> Path:
    example_script().write_sentiment(tmp_path)
    return tmp_path


def hf_config(tmp_path, model_dir, data_dir, **sections) -> dict:
    config = {
        "experiment": {"name": "hf_ft", "kind": "finetuning", "seed": 1, "output_dir": str(tmp_path / "experiments")},
        "data": {"train": str(data_dir / "train.tsv"), "val": str(data_dir / "dev.tsv"), "text_column": "sentence"},
        "model": {"architecture": "hf", "hf_name_or_path": str(model_dir)},
        "task": {"type": "sequence_classification", "head_dropout": 0.0},
        "training": {"max_steps": 30, "batch_size": 16, "learning_rate": 5e-3, "warmup_steps": 0,
                     "eval_interval": 30, "log_interval": 1, "device": "cpu", "precision": "fp32"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def run_dir(tmp_path) -> Path:
    return tmp_path / "experiments" / "finetuning" / "hf_ft"


def train_losses(tmp_path) -> list[float]:
    with open(run_dir(tmp_path) / "metrics" / "train.csv", newline="") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def task_model(model_dir: Path, pooler: str = "last", **values) -> tuple[TaskModel, HFTokenizer]:
    tokenizer = HFTokenizer.load(model_dir)
    cls, config = create_config("hf", hf_name_or_path=str(model_dir), vocab_size=tokenizer.vocab_size,
                                 pad_token_id=tokenizer.pad_id, **values)
    head = TaskHeadConfig(task="sequence_classification", num_outputs=2, labels=["0", "1"], pooler=pooler)
    return TaskModel(cls.architecture_name, config, head).eval(), tokenizer


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "llama", "gpt2"])
def test_finetune_reload_and_rebuild_without_the_source(tiny, sentiment, tmp_path, name):
    source = tmp_path / "source"
    shutil.copytree(tiny[name], source)
    results = model_foundry.train(hf_config(tmp_path, source, sentiment))
    losses = train_losses(tmp_path)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    assert results["val"]["accuracy"] == 1.0
    saved = json.loads((run_dir(tmp_path) / "checkpoints" / "last" / "model_config.json").read_text())
    assert saved["architecture"] == "hf" and saved["config"]["n_layer"] == 2
    assert saved["task_head"]["pooler"] == ("cls" if name == "bert" else "last")

    model = model_foundry.load_model(run_dir(tmp_path))
    tokenizer = load_any_tokenizer(run_dir(tmp_path) / "tokenizer")
    assert isinstance(tokenizer, HFTokenizer) and tokenizer.vocab_size == HFTokenizer.load(tiny[name]).vocab_size
    ids = torch.tensor([tokenizer.encode_for_model("good movie"), tokenizer.encode_for_model("bad movie")])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.argmax(-1).tolist() == [1, 0]
    shutil.rmtree(source)  # a saved run rebuilds from its recorded HF config, not from the source directory
    model.save_pretrained(tmp_path / "copy")
    with torch.no_grad():
        assert torch.equal(BaseLanguageModel.from_pretrained(tmp_path / "copy")(ids).logits, logits)


@pytest.mark.slow
def test_decoder_without_pad_token_pads_with_eos(tiny):
    for name in ("llama", "gpt2"):
        tokenizer = HFTokenizer.load(tiny[name])
        assert tokenizer.pad_id == tokenizer.eos_id is not None
        assert tokenizer.encode_for_model("good movie")[-1] == tokenizer.eos_id  # the pooled token
        # No token was added: the vocabulary is still the one the model's embedding matrix was built for.
        model_vocab = json.loads((tiny[name] / "config.json").read_text())["vocab_size"]
        assert tokenizer.vocab_size == model_vocab == len(tokenizer.hf.get_vocab())
    bert = HFTokenizer.load(tiny["bert"])
    assert (bert.pad_token, bert.cls_token, bert.sep_token) == ("[PAD]", "[CLS]", "[SEP]")
    assert bert.encode_for_model("good movie", "bad plot") == [2, 5, 18, 3, 12, 20, 3]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_last_token_pooling_is_the_same_with_left_and_right_padding(tiny, name):
    model, tokenizer = task_model(tiny[name])
    short, long = tokenizer.encode_for_model("good movie"), tokenizer.encode_for_model("the plot was very nice")
    pad = [tokenizer.pad_id] * (len(long) - len(short))
    assert tokenizer.pad_id == short[-1]  # pad == eos: only the mask tells them apart
    right = torch.tensor([short + pad, long]), torch.tensor([[1] * len(short) + [0] * len(pad), [1] * len(long)])
    left = torch.tensor([pad + short, long]), torch.tensor([[0] * len(pad) + [1] * len(short), [1] * len(long)])
    alone = torch.tensor([short])
    with torch.no_grad():
        expected = model(alone).logits[0]
        for ids, mask in (right, left):
            torch.testing.assert_close(model(ids, attention_mask=mask).logits[0], expected, atol=1e-5, rtol=1e-5)
    assert isinstance(model.pooler, LastTokenPooler)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_bidirectional_decoder_lets_later_tokens_change_earlier_states(tiny, name):
    def first_position_changes(attention_type: str | None) -> bool:
        model, _ = task_model(tiny[name], attention_type=attention_type)
        with torch.no_grad():
            a = model.backbone(torch.tensor([[5, 6, 7, 8]]))[0]
            b = model.backbone(torch.tensor([[5, 6, 7, 9]]))[0]
        assert not torch.allclose(a[0, 3], b[0, 3])
        return not torch.allclose(a[0, :3], b[0, :3], atol=1e-6)

    assert not first_position_changes(None)
    assert first_position_changes("bidirectional")
    with pytest.raises(UserError, match="encoder"):
        create_config("hf", hf_name_or_path=str(tiny["bert"]), attention_type="causal")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "llama"])
def test_gradient_checkpointing_with_frozen_embeddings_still_trains_the_layers(tiny, sentiment, tmp_path, name):
    config = hf_config(tmp_path, tiny[name], sentiment, model={"gradient_checkpointing": True},
                       transfer={"freeze_embeddings": True}, training={"max_steps": 2, "eval_interval": 2})
    model_foundry.train(config)
    from safetensors.torch import load_file

    trained = load_file(run_dir(tmp_path) / "checkpoints" / "last" / "model.safetensors")
    original, _ = task_model(tiny[name])
    before = original.state_dict()
    embeddings = [k for k in trained if k.startswith("backbone.embeddings.") and k.endswith("weight")]
    layers = [k for k in trained if k.startswith("backbone.blocks.") and k.endswith("weight")]
    assert embeddings and layers
    assert all(torch.equal(trained[k], before[k]) for k in embeddings)
    assert all(not torch.equal(trained[k], before[k]) for k in layers), "a layer did not train"


@pytest.mark.slow
def test_transfer_controls_apply_to_hf_layers(tiny, sentiment, tmp_path):
    def train_llama(name: str, **transfer) -> BaseLanguageModel:
        config = hf_config(tmp_path, tiny["llama"], sentiment, experiment={"name": name},
                           transfer={"remove_n_layers": 1, "reinit_n_layers": 0, **transfer},
                           training={"max_steps": 2, "eval_interval": 2})
        model_foundry.train(config)
        return model_foundry.load_model(tmp_path / "experiments" / "finetuning" / name)

    def changed_block0_weights(model: BaseLanguageModel) -> list[str]:
        original, _ = task_model(tiny["llama"])
        kept = dict(original.named_parameters())
        block0 = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.blocks.0.")}
        assert len(block0) >= 7, sorted(block0)  # attention and MLP projections, norms: none may be missed
        return [k for k, v in block0.items() if not torch.equal(v, kept[k])]

    model = train_llama("frozen", freeze_layer_indices=[0])
    saved = json.loads((tmp_path / "experiments" / "finetuning" / "frozen" / "checkpoints" / "last"
                        / "model_config.json").read_text())
    assert saved["config"]["n_layer"] == 1 and saved["config"]["hf_config"]["num_hidden_layers"] == 1
    assert len(model.backbone.blocks) == 1 and model.backbone.model.layers is model.backbone.blocks
    assert changed_block0_weights(model) == [], "block 0 is frozen and must not change"
    # The control: the same two steps without the freeze do change block 0, so the check above can fail.
    unfrozen = changed_block0_weights(train_llama("unfrozen"))
    assert any(k.endswith("q_proj.weight") for k in unfrozen) and any(k.endswith("down_proj.weight") for k in unfrozen)


@pytest.mark.slow
def test_reinit_redraws_the_top_layer(tiny):
    from model_foundry.training.transfer import reinit_last_layers

    model, _ = task_model(tiny["bert"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reinit_last_layers(model, 1)
    after = model.state_dict()
    assert not torch.equal(after["backbone.blocks.1.attention.self.query.weight"],
                           before["backbone.blocks.1.attention.self.query.weight"])
    assert torch.equal(after["backbone.blocks.0.attention.self.query.weight"],
                       before["backbone.blocks.0.attention.self.query.weight"])


@pytest.mark.slow
def test_dtype_bfloat16_loads_and_heads_get_float32(tiny):
    model, tokenizer = task_model(tiny["llama"], dtype="bfloat16")
    assert model.backbone.token_embedding.weight.dtype == torch.bfloat16
    with torch.no_grad():
        hidden, _ = model.backbone(torch.tensor([tokenizer.encode_for_model("good movie")]))
    assert hidden.dtype == torch.float32
    with pytest.raises(UserError, match="float64"):
        create_config("hf", hf_name_or_path=str(tiny["llama"]), dtype="float64")


@pytest.mark.slow
def test_trust_remote_code_is_passed_only_when_set(tiny, monkeypatch):
    import transformers

    calls = []
    real = transformers.AutoConfig.from_pretrained

    def recording(path, **kwargs):
        calls.append(kwargs)
        return real(path)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", recording)
    create_config("hf", hf_name_or_path=str(tiny["bert"]))
    create_config("hf", hf_name_or_path=str(tiny["bert"]), trust_remote_code=True)
    assert calls == [{}, {"trust_remote_code": True}]


def test_missing_model_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="hf_name_or_path"):
        create_model("hf", hf_name_or_path=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="needs model.hf_name_or_path"):
        create_model("hf")


HIDE_HF = """
import sys

class HideHuggingFace:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("transformers", "peft"):
            raise ImportError(f"{name} is hidden for this test")
        return None

sys.meta_path.insert(0, HideHuggingFace())
"""


@pytest.mark.slow
def test_core_imports_and_trains_without_transformers(tmp_path):
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text(HIDE_HF, encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n" * 50, encoding="utf-8")
    config = tiny_config(corpus, tmp_path / "experiments", training={"max_steps": 2, "eval_interval": 2})
    script = textwrap.dedent(f"""
        import sys
        import model_foundry
        assert "transformers" not in sys.modules and "peft" not in sys.modules
        try:
            import transformers
        except ImportError:
            pass
        else:
            raise SystemExit("transformers was not hidden")
        model_foundry.train({config!r})
        assert "transformers" not in sys.modules
        print("trained without transformers")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "hide"), str(REPO)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained without transformers" in done.stdout
