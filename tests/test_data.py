"""The data pipeline: sources, token cache, windows, collators, .pt files and the batch stream."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from model_foundry.data import (BatchStream, CausalLMCollator, CausalWindows, MaskedLMCollator, MaskedWindows,
                                TrimmingCollator, guess_format, iter_texts, load_tensor_file, resolve_paths,
                                split_train_val, tokenize_to_cache)
from model_foundry.data import sources, token_cache
from model_foundry.errors import UserError


class CharTokenizer:
    """One id per character (its code point below 256), four specials after them; counts its calls."""

    pad_id, cls_id, eos_id, mask_id = 256, 257, 258, 259
    special_ids = [256, 257, 258, 259]
    vocab_size = 260

    def __init__(self, vocab_size: int = 260):
        self.vocab_size = vocab_size
        self.encode_calls = 0

    def encode(self, text: str) -> list[int]:
        return [min(ord(c), 255) for c in text]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        self.encode_calls += 1
        return [self.encode(t) for t in texts]

    def get_vocab(self) -> dict[str, int]:
        return {chr(i): i for i in range(256)} | {"[PAD]": 256, "[CLS]": 257, "[EOS]": 258, "[MASK]": 259}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---- sources -------------------------------------------------------------------------------------
def test_resolve_paths_files_globs_and_lists(tmp_path):
    for name in ("b.txt", "a.txt", "c.md"):
        write(tmp_path / name, name)
    assert resolve_paths(str(tmp_path / "*.txt"), "data.train.path") == [tmp_path / "a.txt", tmp_path / "b.txt"]
    assert resolve_paths([str(tmp_path / "c.md"), str(tmp_path / "?.txt")], "k") == [
        tmp_path / "c.md", tmp_path / "a.txt", tmp_path / "b.txt"]


@pytest.mark.parametrize("spec, fragment", [("missing.txt", "does not exist"), ("nothing*.txt", "matches no files"),
                                            (".", "is a directory")])
def test_resolve_paths_errors_name_the_key_and_path(tmp_path, monkeypatch, spec, fragment):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=fragment) as error:
        resolve_paths(spec, "data.val.path")
    assert "data.val.path" in str(error.value) and spec in str(error.value)


def test_guess_format_from_extension():
    guesses = {name: guess_format(name) for name in ("a.txt", "a.md", "README", "a.jsonl", "a.json", "a.CSV",
                                                      "a.tsv", "a.conllu", "a.pt")}
    assert guesses == {"a.txt": "text", "a.md": "text", "README": "text", "a.jsonl": "jsonl", "a.json": "jsonl",
                       "a.CSV": "csv", "a.tsv": "tsv", "a.conllu": "conllu", "a.pt": "pt"}
    with pytest.raises(UserError, match="data.format"):
        guess_format("corpus.parquet")


def test_text_chunks_are_whole_lines_and_rebuild_the_file(tmp_path):
    text = "".join(f"line {i} with some words\n" for i in range(200)) + "no newline at the end"
    path = write(tmp_path / "c.txt", text)
    chunks = list(sources.iter_text_chunks(path, chunk_chars=500))
    assert len(chunks) > 5 and "".join(chunks) == text
    assert all(chunk.endswith("\n") for chunk in chunks[:-1])
    assert all(len(chunk) >= 500 for chunk in chunks[:-1])


def test_jsonl_rows_and_errors(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "first", "id": 1}\n\n{"text": "second"}\n')
    assert list(iter_texts(path, "jsonl", "text")) == ["first", "second"]
    bad = write(tmp_path / "bad.jsonl", '{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        list(iter_texts(bad, "jsonl", "text"))
    with pytest.raises(UserError, match=r"d.jsonl:1: .*no 'body'.*'text', 'id'"):
        list(iter_texts(path, "jsonl", "body"))


def test_csv_and_tsv_columns_and_errors(tmp_path):
    csv_path = write(tmp_path / "d.csv", 'label,sentence\n1,"hello, world"\n0,"multi\nline"\n')
    assert list(iter_texts(csv_path, "csv", "sentence")) == ["hello, world", "multi\nline"]
    tsv_path = write(tmp_path / "d.tsv", "sentence\tlabel\na film\t1\nshort\n")
    with pytest.raises(UserError, match=r"d.tsv:3: the row has no 'label'"):
        list(iter_texts(tsv_path, "tsv", "label"))
    with pytest.raises(UserError, match=r"d.csv:1: .*no column 'text'.*'label', 'sentence'"):
        list(iter_texts(csv_path, "csv", "text"))


def test_conllu_sentences(tmp_path):
    path = write(tmp_path / "d.conllu", "# text = Hello there.\n1\tHello\n2\tthere\n3\t.\n\n"
                                        "1-2\tdon't\n1\tdo\n2\tn't\n3\tgo\n\n")
    assert list(iter_texts(path, "conllu")) == ["Hello there.", "do n't go"]


# ---- token cache ---------------------------------------------------------------------------------
def test_token_cache_builds_once_and_maps_uint16(tmp_path):
    corpus = write(tmp_path / "d.jsonl", '{"text": "ab"}\n{"text": "c"}\n')
    tokenizer = CharTokenizer()
    first = tokenize_to_cache([corpus], tokenizer, tmp_path / "cache", fmt="jsonl", separator_id=258)
    assert first.dtype == np.uint16 and first.array().dtype == np.uint16
    assert first.array().tolist() == [97, 98, 258, 99, 258]
    calls = tokenizer.encode_calls
    again = tokenize_to_cache([corpus], tokenizer, tmp_path / "cache", fmt="jsonl", separator_id=258)
    assert tokenizer.encode_calls == calls and again == first
    assert not again.array().flags.writeable


def test_token_cache_key_follows_content_and_settings(tmp_path):
    corpus = write(tmp_path / "d.txt", "hello\n")
    tokenizer = CharTokenizer()
    original = tokenize_to_cache([corpus], tokenizer, tmp_path, fmt="text")
    assert tokenize_to_cache([corpus], tokenizer, tmp_path, fmt="text", separator_id=258).path != original.path
    write(corpus, "hellO\n")
    changed = tokenize_to_cache([corpus], tokenizer, tmp_path, fmt="text")
    assert changed.path != original.path and changed.array().tolist() == [ord(c) for c in "hellO\n"]
    wide = tokenize_to_cache([corpus], CharTokenizer(vocab_size=70_000), tmp_path, fmt="text")
    assert wide.dtype == np.uint32 and wide.path != changed.path


def test_streamed_text_tokenizes_like_the_whole_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "TEXT_CHUNK_CHARS", 300)
    monkeypatch.setattr(token_cache, "ENCODE_BATCH_TEXTS", 3)
    first = "".join(f"First file, line {i}: the quick brown fox.\n" for i in range(150))
    paths = [write(tmp_path / "a.txt", first), write(tmp_path / "b.txt", "second file\n")]
    tokenizer = CharTokenizer()
    tokens = tokenize_to_cache(paths, tokenizer, tmp_path / "cache", fmt="text", separator_id=258)
    expected = tokenizer.encode(first) + [258] + tokenizer.encode("second file\n") + [258]
    assert tokens.array().tolist() == expected
    assert tokenizer.encode_calls > 5  # the big file really was streamed in many pieces


def test_failed_build_leaves_nothing_that_looks_done(tmp_path):
    corpus = write(tmp_path / "d.txt", "hello\n")

    class Failing(CharTokenizer):
        def encode_batch(self, texts):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tokenize_to_cache([corpus], Failing(), tmp_path / "cache", fmt="text")
    # Only the partial file, its journal and the lock stay, for the next build to continue from.
    assert not [name for name in os.listdir(tmp_path / "cache") if name.endswith((".bin", ".json"))
                and not name.endswith(".journal.json")]
    assert tokenize_to_cache([corpus], CharTokenizer(), tmp_path / "cache", fmt="text").num_tokens == 6


def test_empty_corpus_is_a_user_error(tmp_path):
    corpus = write(tmp_path / "d.txt", "")
    with pytest.raises(UserError, match="gave no tokens"):
        tokenize_to_cache([corpus], CharTokenizer(), tmp_path, fmt="text")


def test_split_train_val_takes_the_tail_for_val():
    assert split_train_val(1000, 0.1) == (range(0, 900), range(900, 1000))
    assert split_train_val(7, 0.0) == (range(0, 7), range(7, 7))


# ---- windows -------------------------------------------------------------------------------------
def test_causal_windows_cover_the_span_and_shift_labels():
    tokens = np.arange(1000, 1103, dtype=np.uint16)
    span = range(3, 103)
    windows = CausalWindows(tokens, span, block=8)
    assert len(windows) == (len(span) - 1) // 8
    inputs = torch.cat([windows[i]["input_ids"] for i in range(len(windows))])
    labels = torch.cat([windows[i]["labels"] for i in range(len(windows))])
    covered = len(windows) * 8
    assert inputs.tolist() == tokens[3:3 + covered].tolist()
    assert labels.tolist() == tokens[4:4 + covered].tolist()
    assert windows[0]["input_ids"].dtype == torch.int64
    with pytest.raises(IndexError):
        windows[len(windows)]


def test_masked_windows_start_with_cls_and_do_not_overlap():
    tokens = np.arange(50, dtype=np.uint16)
    windows = MaskedWindows(tokens, range(0, 50), block=6, cls_id=999)
    assert len(windows) == 10
    rows = [windows[i]["input_ids"] for i in range(len(windows))]
    assert all(row[0] == 999 and len(row) == 6 for row in rows)
    assert torch.cat([row[1:] for row in rows]).tolist() == list(range(50))


# ---- collators -----------------------------------------------------------------------------------
def test_causal_collator_stacks_packed_windows_without_mask():
    windows = CausalWindows(np.arange(41, dtype=np.uint16), range(41), block=10)
    batch = CausalLMCollator(pad_id=0)([windows[i] for i in range(4)])
    assert set(batch) == {"input_ids", "labels"}
    assert torch.equal(batch["labels"][:, :-1], batch["input_ids"][:, 1:])
    assert batch["input_ids"].flatten().tolist() == list(range(40))


def test_causal_collator_pads_variable_rows():
    items = [{"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([6, 7, 8])},
             {"input_ids": torch.tensor([9]), "labels": torch.tensor([10])}]
    batch = CausalLMCollator(pad_id=1, pad_to_multiple_of=4)(items)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1], [9, 1, 1, 1]]
    assert batch["labels"].tolist() == [[6, 7, 8, -100], [10, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]


SPECIALS = [0, 1, 2, 3]  # pad, cls, sep, mask


def mlm_collator(**kwargs) -> MaskedLMCollator:
    return MaskedLMCollator(pad_id=0, mask_id=3, vocab_size=500, special_ids=SPECIALS, **kwargs)


def mlm_items(rows: int, length: int, seed: int = 0) -> list[dict]:
    """Rows of random ordinary tokens framed by [CLS] ... [SEP], of varying lengths."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for i in range(rows):
        body = torch.randint(4, 500, (length - 2 - i % 7,), generator=generator)
        items.append({"input_ids": torch.cat([torch.tensor([1]), body, torch.tensor([2])])})
    return items


def test_mlm_masking_statistics_and_invariants():
    items = mlm_items(rows=200, length=128)
    batch = mlm_collator(pad_to_multiple_of=64)(items, generator=torch.Generator().manual_seed(1))
    original = CausalLMCollator(pad_id=0, pad_to_multiple_of=64)(
        [{"input_ids": it["input_ids"], "labels": it["input_ids"]} for it in items])["input_ids"]
    assert batch["input_ids"].shape == (200, 128) == batch["attention_mask"].shape
    selected = batch["labels"] != -100
    maskable = (original >= 4)
    assert not (selected & ~maskable).any()  # specials and pad never selected
    assert torch.equal(batch["labels"][selected], original[selected])
    assert torch.equal(batch["input_ids"][~selected], original[~selected])
    assert abs(selected.sum() / maskable.sum() - 0.15) < 0.01
    picked, was = batch["input_ids"][selected], original[selected]
    masked = picked == 3
    kept = picked == was
    randomised = ~masked & ~kept
    assert abs(masked.float().mean() - 0.8) < 0.03
    assert abs(kept.float().mean() - 0.1) < 0.025 and abs(randomised.float().mean() - 0.1) < 0.025
    assert (picked[randomised] >= 4).all()  # random replacements are never special tokens
    assert batch["attention_mask"].sum() == sum(len(it["input_ids"]) for it in items)


def test_mlm_is_deterministic_given_the_generator_and_never_empty():
    items = mlm_items(rows=4, length=16)
    first = mlm_collator()(items, generator=torch.Generator().manual_seed(5))
    second = mlm_collator()(items, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(first[k], second[k]) for k in first)
    tiny = [{"input_ids": torch.tensor([1, 42, 2])}]
    for seed in range(20):
        batch = mlm_collator(mlm_probability=0.01)(tiny, generator=torch.Generator().manual_seed(seed))
        assert batch["labels"].tolist() == [[-100, 42, -100]]


def test_mlm_matches_transformers_statistics():
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3} | {f"w{i}": i for i in range(4, 500)}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[PAD]"))
    hf_tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]",
                                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    items = mlm_items(rows=200, length=128, seed=3)
    torch.manual_seed(0)
    theirs = transformers.DataCollatorForLanguageModeling(hf_tokenizer, mlm_probability=0.15)(
        [{"input_ids": it["input_ids"].tolist()} for it in items])
    ours = mlm_collator()(items, generator=torch.Generator().manual_seed(0))
    rates = {}
    for name, batch in (("theirs", theirs), ("ours", ours)):
        selected = batch["labels"] != -100
        rates[name] = (float(selected.sum() / batch["attention_mask"].sum()),
                       float((batch["input_ids"][selected] == 3).float().mean()))
    assert abs(rates["ours"][0] - rates["theirs"][0]) < 0.015  # share of real tokens selected
    assert abs(rates["ours"][1] - rates["theirs"][1]) < 0.05  # share of selected turned into [MASK]


# ---- .pt files -----------------------------------------------------------------------------------
def save_seed_dataset(path: Path, with_labels: bool = False) -> Path:
    input_ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0], [4, 4, 4, 4, 0]])
    pad = input_ids == 0  # the `.pt` format: BOOL mask, True = PAD
    tensors = (input_ids, pad, torch.tensor([1, 0, 1])) if with_labels else (input_ids, pad)
    torch.save(TensorDataset(*tensors), path)
    return path


def test_tensor_file_flips_the_seed_mask(tmp_path):
    dataset = load_tensor_file(save_seed_dataset(tmp_path / "train.pt", with_labels=True))
    assert len(dataset) == 3
    row = dataset[1]
    assert row["attention_mask"].tolist() == [1, 1, 0, 0, 0] and row["attention_mask"].dtype == torch.int64
    assert row["input_ids"].dtype == torch.int64 and int(row["labels"]) == 0


def test_trimming_collator_trims_to_longest_real_row(tmp_path):
    dataset = load_tensor_file(save_seed_dataset(tmp_path / "train.pt", with_labels=True))
    batch = TrimmingCollator(pad_id=0)([dataset[0], dataset[1]])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]
    capped = TrimmingCollator(pad_id=0, max_length=2)([dataset[i] for i in range(3)])
    assert capped["input_ids"].tolist() == [[5, 6], [8, 9], [4, 4]]


def test_tensor_file_accepts_dicts_and_tuples(tmp_path):
    ids = torch.tensor([[3, 4, 0]])
    torch.save({"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 0]])}, tmp_path / "d.pt")
    torch.save((ids, ids == 0), tmp_path / "t.pt")
    for name in ("d.pt", "t.pt"):
        assert load_tensor_file(tmp_path / name)[0]["attention_mask"].tolist() == [1, 1, 0]


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_tensor_file_refuses_code_and_odd_layouts(tmp_path):
    torch.save(Exploit(), tmp_path / "evil.pt")
    with pytest.raises(UserError, match="evil.pt could not be loaded safely"):
        load_tensor_file(tmp_path / "evil.pt")
    torch.save({"ids": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(UserError, match=r"odd.pt holds a dict with keys \['ids'\]; accepted: .*TensorDataset"):
        load_tensor_file(tmp_path / "odd.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt"):
        load_tensor_file(tmp_path / "junk.pt")


# ---- batch stream --------------------------------------------------------------------------------
class Numbers(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"input_ids": torch.tensor([1, 10 + i, 20 + i, 30 + i, 2])}


class IndexCollator:
    """Collates items to their dataset indices, so tests can see exactly which items a batch holds."""

    def __call__(self, items, generator=None):
        return [int(item["input_ids"][1]) - 10 for item in items]


def test_batch_stream_resumes_exactly_including_masking():
    stream = BatchStream(Numbers(50), 4, mlm_collator(), seed=3)
    for _ in range(17):  # past the end of epoch 0 (12 batches)
        next(stream)
    state = stream.state_dict()
    expected = [next(stream) for _ in range(10)]
    resumed = BatchStream(Numbers(50), 4, mlm_collator(), seed=3)
    resumed.load_state_dict(state)
    assert state == {"epoch": 1, "batch_index": 5}
    for want, got in zip(expected, (next(resumed) for _ in range(10))):
        assert all(torch.equal(want[k], got[k]) for k in want)


def test_epochs_roll_over_and_reshuffle_without_touching_global_rng():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    stream = BatchStream(Numbers(10), 3, IndexCollator(), seed=1)
    assert stream.batches_per_epoch == 3
    epochs = [[i for _ in range(3) for i in next(stream)] for _ in range(2)]
    assert stream.epoch == 1
    assert all(len(set(e)) == 9 for e in epochs) and epochs[0] != epochs[1]
    assert torch.equal(before, torch.get_rng_state())


def test_rank_shards_are_disjoint_and_cover_the_epoch():
    shards = []
    for rank in range(3):
        stream = BatchStream(Numbers(31), 2, IndexCollator(), seed=9, rank=rank, world_size=3)
        assert stream.batches_per_epoch == 5
        shards.append([i for _ in range(5) for i in next(stream)])
    everything = sum(shards, [])
    assert len(set(everything)) == 30 and set(everything) <= set(range(31))


def test_one_pass_is_ordered_keeps_the_tail_and_allows_small_datasets():
    stream = BatchStream(Numbers(7), 3, IndexCollator(), seed=0, shuffle=False, drop_last=False)
    assert list(stream.one_pass()) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(stream.one_pass()) == [[0, 1, 2], [3, 4, 5], [6]] and stream.state_dict()["batch_index"] == 0
    small = BatchStream(Numbers(2), 8, IndexCollator(), seed=0, shuffle=False, drop_last=False)
    assert list(small.one_pass()) == [[0, 1]]


def test_too_few_items_for_a_batch_says_what_to_lower():
    with pytest.raises(UserError, match=r"has 5 items .* batch of 8; lower training.batch_size or model.block_size"):
        BatchStream(Numbers(5), 8, IndexCollator(), seed=0)


def test_length_bucketing_groups_similar_lengths_and_resumes_exactly():
    lengths = [random.Random(i).randint(1, 60) for i in range(1000)]
    dataset = [{"input_ids": torch.ones(n, dtype=torch.long)} for n in lengths]

    def collate(items, generator=None):
        return {"lengths": torch.tensor([len(item["input_ids"]) for item in items])}

    plain = BatchStream(dataset, 16, collate, seed=3)
    bucketed = BatchStream(dataset, 16, collate, seed=3, lengths=lengths)
    def spread(batch):
        return int(batch["lengths"].max() - batch["lengths"].min())

    plain_spread = sum(spread(next(plain)) for _ in range(62))
    bucketed_batches = [next(bucketed) for _ in range(62)]
    assert sum(spread(b) for b in bucketed_batches) < plain_spread / 5
    seen = torch.cat([b["lengths"] for b in bucketed_batches])
    assert len(seen) == 62 * 16 and sorted(seen.tolist()) != seen.tolist()  # not simply sorted
    resumed = BatchStream(dataset, 16, collate, seed=3, lengths=lengths)
    resumed.load_state_dict({"epoch": 0, "batch_index": 30})
    assert torch.equal(next(resumed)["lengths"], bucketed_batches[30]["lengths"])
