"""Self-contained Hugging Face exports: every model no transformers class computes (hybrid, LSTM/GRU/RNN,
other layouts, every finetuned model) loads with `trust_remote_code=True`, gives our logits, runs in
transformers' pipelines as `foundry predict` does, and needs no `model_foundry` to load."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

import model_foundry  # noqa: E402
from model_foundry.cli.main import main  # noqa: E402
from model_foundry.inference.generation import generate  # noqa: E402
from model_foundry.inference.loading import load_model, load_tokenizer  # noqa: E402
from model_foundry.inference.predict import predict_run  # noqa: E402
from model_foundry.inference.remote_code import flat_name, module_closure  # noqa: E402
from model_foundry.models.base import masked_lm_logits  # noqa: E402
from tests.test_export import scramble, trained_run  # noqa: E402, F401
from tests.test_finetuning import CONLLU, finetune_config, write_sentiment  # noqa: E402

TEXTS = ["a good film", "i hated it , a dull story"]
TINY = {"n_layer": 2, "n_embd": 16, "block_size": 48}
BACKBONES = {"bert": {"architecture": "bert", "n_head": 2, **TINY},
             "gpt": {"architecture": "gpt", "n_head": 2, **TINY},
             "lstm": {"architecture": "lstm", "hidden_size": 16, **TINY}}
TASKS = ("classifier", "multi_label", "tagger", "scorer")
AUTO_CLASS = {"classifier": "AutoModelForSequenceClassification", "multi_label": "AutoModelForSequenceClassification",
              "scorer": "AutoModelForSequenceClassification", "tagger": "AutoModelForTokenClassification"}


def write_task_data(root, task: str) -> dict:
    """Train/val files for `task` under `root`, and the data section that reads them."""
    root.mkdir(parents=True, exist_ok=True)
    if task == "tagger":
        (root / "train.conllu").write_text(CONLLU * 4, encoding="utf-8")
        return {"train": str(root / "train.conllu"), "val": str(root / "train.conllu")}
    if task == "multi_label":
        rows = [("a good film", "good,film"), ("a bad film", "bad,film"), ("great fun", "good"), ("dull fun", "bad")]
        (root / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(f"{t}\t{l}" for t, l in rows * 8) + "\n")
    else:
        write_sentiment(root / "train.tsv", 32, 1, scores=task == "scorer")
    return {"train": str(root / "train.tsv"), "val": str(root / "train.tsv")}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """{(backbone, task): (run directory, export directory)}: two-step runs from random weights, weights
    scrambled so that predictions differ between texts, each exported with `foundry export --format hf`."""
    root = tmp_path_factory.mktemp("finetuned")
    runs = {}
    for backbone, model in BACKBONES.items():
        for task in TASKS:
            name = f"{backbone}_{task}"
            data = write_task_data(root / "data" / name, task)
            task_section = {"type": {"tagger": "token_classification", "scorer": "sequence_scoring"}.get(
                task, "sequence_classification"), **({"multi_label": True} if task == "multi_label" else {})}
            config = finetune_config(root, None, root, model=model, task=task_section, data=data,
                                     tokenizer={"type": "char", "vocab_size": 48},
                                     training={"max_steps": 2, "eval_interval": 2, "batch_size": 8})
            del config["data"]["test"]
            config["transfer"] = {}
            config["experiment"]["name"] = name
            model_foundry.train(config)
            run = root / "experiments" / "finetuning" / name
            trained = load_model(run)
            scramble(trained)
            trained.save_pretrained(run / "checkpoints" / "best")
            assert main(["export", str(run), "--format", "hf", "--out", str(root / "hf" / name)]) == 0
            runs[backbone, task] = run, root / "hf" / name
    return runs


CASES = [(backbone, task) for backbone in BACKBONES for task in TASKS]


def our_logits(run, input_ids, attention_mask) -> torch.Tensor:
    model = load_model(run)
    with torch.no_grad():
        logits = model(input_ids, attention_mask=attention_mask).logits
    head = model.head_config
    if head.task == "sequence_scoring":
        low, high = head.target_range or (0.0, 1.0)
        logits = (logits * (high - low) + low)[:, None]
    return logits


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "task"), CASES)
def test_finetuned_export_gives_our_logits_and_labels(finetuned, backbone, task):
    run, export = finetuned[backbone, task]
    theirs = getattr(transformers, AUTO_CLASS[task]).from_pretrained(export, trust_remote_code=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(export, trust_remote_code=True)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    # Only a backbone with segment embeddings is sent token types (GPT-2 would add them to its input).
    assert ("token_type_ids" in batch) == bool(getattr(load_model(run).config, "type_vocab_size", 0))
    with torch.no_grad():
        logits = theirs(**batch).logits
    expected = our_logits(run, batch["input_ids"], batch["attention_mask"])
    assert logits.shape == expected.shape and (expected[0] - expected[1]).abs().max() > 1e-3  # texts told apart
    assert (logits - expected).abs().max() < 1e-4
    head = load_model(run).head_config
    if task == "scorer":
        assert theirs.config.problem_type == "regression" and theirs.config.num_labels == 1
    else:
        assert [theirs.config.id2label[i] for i in range(theirs.config.num_labels)] == head.labels
        assert theirs.config.label2id == {label: i for i, label in enumerate(head.labels)}
    if task in ("classifier", "multi_label"):
        wanted = "multi_label_classification" if task == "multi_label" else "single_label_classification"
        assert theirs.config.problem_type == wanted


def pipeline_rows(task: str, export, texts: list[str]) -> list:
    """What transformers' pipeline says of each text, in the shape `foundry predict` reports it."""
    if task == "tagger":
        tagger = transformers.pipeline("token-classification", model=str(export), trust_remote_code=True,
                                       aggregation_strategy="none", ignore_labels=[])
        rows = []
        for text, tokens in zip(texts, tagger(texts)):
            word_starts = [i for i, char in enumerate(text) if char != " " and (i == 0 or text[i - 1] == " ")]
            first_token = {start: next(t for t in tokens if t["start"] >= start) for start in word_starts}
            rows.append([first_token[start]["entity"] for start in word_starts])
        return rows
    classify = transformers.pipeline("text-classification", model=str(export), trust_remote_code=True, top_k=None)
    if task == "scorer":
        return [float(result[0]["score"]) for result in classify(texts, function_to_apply="none")]
    scores = [{item["label"]: item["score"] for item in result} for result in classify(texts)]
    if task == "multi_label":
        return [(sorted(label for label, score in row.items() if score > 0.5), row) for row in scores]
    return [(max(row, key=row.get), row) for row in scores]


def predicted_rows(task: str, run, texts: list[str]) -> list:
    rows = [predict_run(run, text=text)[0] for text in texts]
    if task == "tagger":
        return [row["tags"] for row in rows]
    if task == "scorer":
        return [row["score"] for row in rows]
    probabilities = [row["probabilities"] for row in rows]
    labels = [sorted(row["labels"]) if task == "multi_label" else row["label"] for row in rows]
    return list(zip(labels, probabilities))


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "task"), CASES)
def test_pipeline_predicts_what_foundry_predict_does(finetuned, backbone, task):
    run, export = finetuned[backbone, task]
    texts = ["the dog runs", "a cat sleeps"] if task == "tagger" else [*TEXTS, "great fun", "terrible acting"]
    assert_same_predictions(task, export, run, texts)


def assert_same_predictions(task: str, export, run, texts: list[str]) -> None:
    """The pipeline on `export` and `foundry predict` on `run`: the same labels, and probabilities within 1e-4."""
    theirs, ours = pipeline_rows(task, export, texts), predicted_rows(task, run, texts)
    if task in ("tagger", "scorer"):
        assert theirs == (ours if task == "tagger" else pytest.approx(ours, abs=1e-4))
        return
    assert [labels for labels, _ in theirs] == [labels for labels, _ in ours]
    for (_, their_probabilities), (_, our_probabilities) in zip(theirs, ours):
        assert their_probabilities == pytest.approx(our_probabilities, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "model", "auto_class"), [
    ("hybrid", {"hybrid_design": "two_stack"}, "AutoModelForCausalLM"),
    ("hybrid", {"hybrid_design": "two_stack"}, "AutoModelForMaskedLM"),
    ("hybrid", {"hybrid_design": "shared"}, "AutoModelForCausalLM"),
    ("hybrid", {"hybrid_design": "shared"}, "AutoModelForMaskedLM"),
    ("lstm", {}, "AutoModelForCausalLM"),
    ("gru", {}, "AutoModelForCausalLM"),
    ("rnn", {}, "AutoModelForCausalLM"),
    ("electra", {}, "AutoModelForMaskedLM"),  # rotary positions (the default): the generator fills masks
    ("gpt", {"positional": "sinusoidal"}, "AutoModelForCausalLM"),  # no native class has sinusoids
    ("gpt", {"norm_position": "post"}, "AutoModelForCausalLM"),
    ("gpt", {"recipe": "modern"}, "AutoModelForCausalLM"),  # RMSNorm, QK-norm, ReLU^2, untied, soft-capped
    ("bert", {"recipe": "modern"}, "AutoModelForMaskedLM"),
    ("hybrid", {"recipe": "modern"}, "AutoModelForMaskedLM")])
def test_language_model_exports_self_contained_with_our_logits(trained_run, tmp_path, arch, model, auto_class):
    run = trained_run(arch, **model)
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    theirs = getattr(transformers, auto_class).from_pretrained(tmp_path / "hf", trust_remote_code=True).eval()
    assert type(theirs).__name__ == auto_class.replace("AutoModel", "Foundry")
    ours, tokenizer = load_model(run), load_tokenizer(run)
    rows = [tokenizer.encode(text) for text in ("the cat sat on the mat", "to be or not to be")]
    ids = torch.tensor([row[:min(map(len, rows))] for row in rows])
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    with torch.no_grad():
        expected = ours(ids, attention_mask=mask).logits if auto_class.endswith("CausalLM") \
            else masked_lm_logits(ours, ids, mask)
        logits = theirs(input_ids=ids, attention_mask=mask).logits
        hidden = transformers.AutoModel.from_pretrained(tmp_path / "hf", trust_remote_code=True)(ids).last_hidden_state
        assert torch.allclose(hidden, ours.backbone(ids)[0], atol=1e-5)
    assert expected.std() > 0.1 and (logits - expected).abs().max() < 1e-4
    back = load_model(f"hf:{tmp_path / 'hf'}")  # and back in, as exactly what it was
    assert type(back) is type(ours) and back.description() == ours.description()
    assert all(torch.equal(tensor, ours.state_dict()[name]) for name, tensor in back.state_dict().items())
    embedding, output = theirs.foundry.get_input_embeddings(), theirs.foundry.get_output_embeddings()
    tied = getattr(ours.config, "tie_weights", True)
    assert output is None or (output.weight is embedding.weight) == tied  # tied again after loading, if it was


@pytest.mark.slow
def test_generation_and_fill_mask_pipelines_run_on_the_exports(trained_run, tmp_path):
    lstm = trained_run("lstm")
    assert main(["export", str(lstm), "--format", "hf", "--out", str(tmp_path / "lstm")]) == 0
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "lstm", trust_remote_code=True)
    tokenizer = load_tokenizer(lstm)
    prompt = tokenizer.encode("the cat")
    greedy = theirs.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                             eos_token_id=None, pad_token_id=tokenizer.pad_id)[0, len(prompt):].tolist()
    assert greedy == generate(load_model(lstm), [prompt], max_new_tokens=8, top_k=1)[0]
    # auto_map names only the classes that fit, so transformers refuses AutoModelForMaskedLM itself; the class
    # used directly says which one fits.
    masked_class = sys.modules[type(theirs).__module__].FoundryForMaskedLM
    with pytest.raises(Exception, match="not a masked language model; load it with AutoModelForCausalLM"):
        masked_class.from_pretrained(tmp_path / "lstm")
    generator = transformers.pipeline("text-generation", model=str(tmp_path / "lstm"), trust_remote_code=True)
    assert generator("the cat", max_new_tokens=4, do_sample=False)[0]["generated_text"].startswith("the cat")

    hybrid = trained_run("hybrid")
    assert main(["export", str(hybrid), "--format", "hf", "--out", str(tmp_path / "hybrid")]) == 0
    filler = transformers.pipeline("fill-mask", model=str(tmp_path / "hybrid"), trust_remote_code=True)
    hf_tokenizer = filler.tokenizer
    assert hf_tokenizer.mask_token == load_tokenizer(hybrid).mask_token
    [best, *_] = filler(f"the c{hf_tokenizer.mask_token}t sat")
    ids = hf_tokenizer(f"the c{hf_tokenizer.mask_token}t sat", return_tensors="pt")["input_ids"]
    position = (ids[0] == hf_tokenizer.mask_token_id).nonzero()[0, 0]
    with torch.no_grad():
        expected = masked_lm_logits(load_model(hybrid), ids, None)[0, position].argmax().item()
    assert best["token"] == expected


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "model"), [("hybrid", {}), ("gpt", {"positional": "rotary"})])
def test_foundry_eval_reads_an_export_as_it_reads_the_run(trained_run, tmp_path, capsys, arch, model):
    run = trained_run(arch, **model)
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    pairs = tmp_path / "pairs.jsonl"
    rows = [("the cat sat on the mat .", "the cat sat the on mat ."), ("to be or not to be", "to be not or to be"),
            ("the mat sat", "mat the sat")]
    pairs.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b}) + "\n" for g, b in rows))
    reports = []
    for source in (str(run), f"hf:{tmp_path / 'hf'}"):
        assert main(["eval", source, "--minimal-pairs", str(pairs), "--json", str(tmp_path / "report.json")]) == 0
        reports.append(json.loads((tmp_path / "report.json").read_text()))
        assert reports[-1].pop("model") == source
    assert reports[0] == reports[1] and reports[0]["pairs"] == 3
    assert main(["eval", f"hf:{tmp_path / 'hf'}", "--split", "val"]) == 2  # no data to rebuild: says so
    assert "zero-shot evaluations" in capsys.readouterr().err


@pytest.mark.slow
def test_a_lora_classifier_exports_merged_and_predicts_like_the_lora_run(tmp_path):
    from tests.test_lora import lora_run_config, run_dir

    data = tmp_path / "data"
    data.mkdir()
    write_sentiment(data / "train.tsv", 32, 1)
    write_sentiment(data / "dev.tsv", 8, 2)
    write_sentiment(data / "test.tsv", 8, 3)
    model_foundry.train(lora_run_config(tmp_path, data, "lora", 4))
    run = run_dir(tmp_path, "lora")
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert "lora" not in config["foundry_model"]  # merged into the weights, not an adapter to apply
    assert_same_predictions("classifier", tmp_path / "hf", run, [*TEXTS, "great fun", "terrible acting"])


@pytest.mark.slow
def test_a_classifier_on_a_hugging_face_backbone_exports_too(tmp_path):
    from tests.test_hf_backbone import example_script, hf_config

    script = example_script()
    tiny, data = script.write_tiny_models(tmp_path / "tiny"), tmp_path / "data"
    data.mkdir()
    script.write_sentiment(data)
    model_foundry.train(hf_config(tmp_path, tiny["llama"], data, training={"max_steps": 2}))
    run = tmp_path / "experiments" / "finetuning" / "hf_ft"
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", trust_remote_code=True)
    batch = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", trust_remote_code=True)(
        ["good movie", "a bad movie"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = theirs.eval()(**batch).logits
    assert (logits - our_logits(run, batch["input_ids"], batch["attention_mask"])).abs().max() < 1e-4


@pytest.mark.slow
def test_the_loading_contract_of_the_babylm_and_lm_eval_pipelines(trained_run, tmp_path):
    """What those pipelines do with a model directory (we cannot run them here, offline): the tokenizer
    through AutoProcessor with right padding and character offsets, the model through AutoModelForCausalLM
    (backend `causal`) or AutoModelForMaskedLM (`mlm`) with trust_remote_code, and AutoModel's hidden
    states under the head their finetuning adds."""
    run = trained_run("hybrid")
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    processor = transformers.AutoProcessor.from_pretrained(tmp_path / "hf", padding_side="right",
                                                           trust_remote_code=True)
    sentence = "the cat sat on the mat ."
    encoded = processor(text=sentence, return_offsets_mapping=True)
    assert encoded["input_ids"] == load_tokenizer(run).encode_for_model(sentence)
    assert all(0 <= start <= end <= len(sentence) for start, end in encoded["offset_mapping"])
    ids = torch.tensor([encoded["input_ids"]])
    ours = load_model(run)
    with torch.no_grad():
        for auto_class, expected in (("AutoModelForCausalLM", ours(ids).logits),
                                     ("AutoModelForMaskedLM", masked_lm_logits(ours, ids, None)),
                                     ("AutoModel", ours.backbone(ids)[0])):
            model = getattr(transformers, auto_class).from_pretrained(tmp_path / "hf", trust_remote_code=True,
                                                                      revision=None).to("cpu").eval()
            output = model(input_ids=ids, attention_mask=torch.ones_like(ids))
            got = output.last_hidden_state if auto_class == "AutoModel" else output.logits
            assert (got - expected).abs().max() < 1e-4, auto_class


FRESH_PROCESS = """
import json, sys
sys.modules["model_foundry"] = None  # `import model_foundry` now raises ImportError, as where it is not installed
try:
    import model_foundry
except ImportError:
    pass
else:
    raise SystemExit("model_foundry is importable")
import torch, transformers
results = {}
for directory, auto_class, ids in json.loads(sys.argv[1]):
    model = getattr(transformers, auto_class).from_pretrained(directory, trust_remote_code=True).eval()
    with torch.no_grad():
        results[directory] = model(torch.tensor(ids)).logits.tolist()
print(json.dumps(results))
"""


# Every architecture and layout, native or self-contained: (name, architecture, model settings, Auto class).
LANGUAGE_MODELS = [("gpt_learned", "gpt", {"positional": "learned"}, "AutoModelForCausalLM"),
                   ("gpt_rotary", "gpt", {"positional": "rotary"}, "AutoModelForCausalLM"),
                   ("bert_rotary", "bert", {}, "AutoModelForMaskedLM"),
                   ("bert_learned", "bert", {"positional": "learned"}, "AutoModelForMaskedLM"),
                   ("electra", "electra", {}, "AutoModelForMaskedLM"),
                   ("hybrid_two_stack", "hybrid", {"hybrid_design": "two_stack"}, "AutoModelForMaskedLM"),
                   ("hybrid_shared", "hybrid", {"hybrid_design": "shared"}, "AutoModelForCausalLM"),
                   ("lstm", "lstm", {}, "AutoModelForCausalLM"), ("gru", "gru", {}, "AutoModelForCausalLM"),
                   ("rnn", "rnn", {}, "AutoModelForCausalLM")]


@pytest.mark.slow
def test_exports_load_in_a_process_without_model_foundry(finetuned, trained_run, tmp_path):
    cases = []
    for name, arch, model, auto_class in LANGUAGE_MODELS:
        run = trained_run(arch, name=name, **model)
        assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf" / name)]) == 0
        cases.append((str(tmp_path / "hf" / name), auto_class, run))
    cases += [(str(export), AUTO_CLASS[task], run) for (backbone, task), (run, export) in finetuned.items()]
    ids = {directory: [load_tokenizer(run).encode_for_model("a good film")] for directory, _, run in cases}
    request = json.dumps([(directory, auto_class, ids[directory]) for directory, auto_class, _ in cases])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    assert len(cases) == 22
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, request], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for directory, auto_class, run in cases:
        batch = torch.tensor(ids[directory])
        if auto_class == "AutoModelForMaskedLM":
            expected = masked_lm_logits(load_model(run), batch, None)
        elif auto_class == "AutoModelForCausalLM":
            expected = load_model(run)(batch).logits
        else:
            expected = our_logits(run, batch, None)
        assert (torch.tensor(results[directory]) - expected).abs().max() < 1e-4, directory


def test_model_code_is_flattened_with_relative_imports_only(tmp_path):
    from model_foundry.inference.remote_code import flattened_source

    modules = module_closure()
    assert "model_foundry.inference.remote_model" in modules and "model_foundry.training.trainer" not in modules
    for module in modules:
        source = flattened_source(module)
        assert "from model_foundry" not in source and "import model_foundry" not in source, module
        for line in source.splitlines():
            if line.strip().startswith("from ."):
                target = line.split()[1][1:]
                assert target in {flat_name(m) for m in modules}, (module, line)
