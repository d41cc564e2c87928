"""Generation (KV cache, left padding, sampling controls, stops, context limit) and fill-mask."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import model_foundry
from model_foundry.cli.main import main
from model_foundry.errors import UserError
from model_foundry.inference.fill_mask import fill_mask, masked_text_ids
from model_foundry.inference.generation import (choose_next, continuation_text, generate, generate_text, keep_top_k,
                                                keep_top_p, until_stop)
from model_foundry.inference.loading import load_tokenizer
from model_foundry.models import GPT, Bert
from model_foundry.models.backbones.attention import KeyValueCache
from model_foundry.models.bert import BertConfig
from model_foundry.models.gpt import GPTConfig
from model_foundry.models.recurrent import LSTM, LSTMConfig
from model_foundry.tokenizer.training import train_tokenizer
from tests.conftest import train_tiny_runs

VOCAB = 50
PROMPTS = [[5, 17, 3, 42, 8, 9, 11], [7, 1], [30, 31, 32, 33]]
CORPUS_LINES = ["the cat sat on the mat and the dog sat on the log .",
                "to be or not to be , that is the question we ask ."]


def scrambled(model: nn.Module) -> nn.Module:
    """Large random weights (LayerNorm gains around 1), so next-token choices are far from ties and
    vary with the prompt and the position."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            gain = 1.0 if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "ln_1.weight",
                                         "ln_2.weight", "ln_f.weight")) else 0.0
            param.copy_(gain + torch.randn(param.shape, generator=generator) * 0.3)
    return model.eval()


def tiny_gpt(positional: str = "learned", block_size: int = 32) -> GPT:
    config = GPTConfig(vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32, block_size=block_size,
                       positional=positional)
    return scrambled(GPT(config))


def greedy_by_hand(model: nn.Module, prompt: list[int], steps: int, context: int | None = None) -> list[int]:
    """Argmax of the full forward pass on the last `context` tokens (all of them when None), one
    token at a time: the oracle for temperature 0."""
    sequence = list(prompt)
    for _ in range(steps):
        window = sequence if context is None else sequence[-context:]
        with torch.no_grad():
            logits = model(torch.tensor([window])).logits[0, -1]
        sequence.append(int(logits.argmax()))
    return sequence[len(prompt):]


# ---- KV cache and left padding ---------------------------------------------------------------------

@pytest.mark.parametrize("positional", ["learned", "rotary", "sinusoidal"])
def test_cached_and_uncached_greedy_are_identical(positional):
    model = tiny_gpt(positional)
    cached = generate(model, PROMPTS, max_new_tokens=12, temperature=0)
    uncached = generate(model, PROMPTS, max_new_tokens=12, temperature=0, use_cache=False)
    assert cached == uncached
    assert [len(row) for row in cached] == [12, 12, 12]
    assert len({tuple(row) for row in cached}) == 3, "different prompts should continue differently"


@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_past_the_context_the_window_slides_the_same_with_and_without_the_cache(positional):
    """Prompts of 7, 2 and 4 tokens and 30 new ones on a 16-token model: every row slides, at different steps."""
    model = tiny_gpt(positional, block_size=16)
    cached = generate(model, PROMPTS, max_new_tokens=30, temperature=0)
    uncached = generate(model, PROMPTS, max_new_tokens=30, temperature=0, use_cache=False)
    alone = [generate(model, [prompt], max_new_tokens=30, temperature=0)[0] for prompt in PROMPTS]
    assert cached == uncached == alone
    assert cached == [greedy_by_hand(model, prompt, 30, context=16) for prompt in PROMPTS]


@pytest.mark.parametrize("positional", ["learned", "rotary"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_left_padded_batch_generates_what_each_prompt_generates_alone(positional, use_cache):
    model = tiny_gpt(positional)
    batched = generate(model, PROMPTS, max_new_tokens=10, temperature=0, use_cache=use_cache)
    alone = [generate(model, [prompt], max_new_tokens=10, temperature=0, use_cache=use_cache)[0]
             for prompt in PROMPTS]
    assert batched == alone


@pytest.mark.parametrize("positional", ["learned", "rotary", "sinusoidal"])
def test_decode_steps_give_the_logits_of_a_full_forward_pass(positional):
    model = tiny_gpt(positional)
    ids = torch.tensor([[0, 0, 4, 9, 13, 21, 2], [6, 8, 10, 12, 14, 16, 18]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        logits, cache = model.decode_step(ids[:, :4], mask[:, :4], None)
        buffers = [layer.keys.data_ptr() for layer in cache]
        steps = [logits]
        for t in range(4, 7):
            logits, cache = model.decode_step(ids[:, t:t + 1], mask[:, :t + 1], cache)
            steps.append(logits)
    assert torch.allclose(torch.stack(steps, dim=1), full[:, 3:], atol=1e-5)
    assert len(cache) == 2 and [layer.length for layer in cache] == [7, 7]  # per layer, all positions
    # The keys were written into the buffers the prompt allocated (block_size positions), not copied anew each step.
    assert [layer.keys.data_ptr() for layer in cache] == buffers
    assert cache[0].keys.shape == (2, 2, model.config.block_size, 16)


def test_a_bf16_model_on_the_cpu_caches_in_float32_and_returns_bf16_logits():
    model = tiny_gpt("rotary").to(torch.bfloat16)
    with torch.no_grad():
        logits, cache = model.decode_step(torch.tensor([PROMPTS[0]]), None, None)
        logits, cache = model.decode_step(logits.argmax(-1, keepdim=True), None, cache)
    # Decoding attends in float32 on the CPU (faster than its bf16 kernel), so the cache holds float32.
    assert logits.dtype == torch.bfloat16 and cache[0].keys.dtype == torch.float32
    assert cache[0].length == len(PROMPTS[0]) + 1 and torch.isfinite(logits).all()


def test_a_key_value_cache_refuses_more_positions_than_its_capacity():
    cache = KeyValueCache(capacity=4)
    keys, values = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)
    cached_keys, cached_values = cache.extend(keys, values)
    assert torch.equal(cached_keys, keys) and torch.equal(cached_values, values)
    with pytest.raises(ValueError, match="4 positions cannot take 5"):
        cache.extend(torch.randn(1, 2, 2, 8), torch.randn(1, 2, 2, 8))
    assert cache.length == 3  # the refused step wrote nothing


def test_a_left_padded_row_gets_the_positions_it_has_alone():
    model = tiny_gpt("learned")
    with torch.no_grad():
        alone = model(torch.tensor([[4, 9, 13]])).logits
        padded = model(torch.tensor([[0, 0, 4, 9, 13]]), attention_mask=torch.tensor([[0, 0, 1, 1, 1]])).logits
    assert torch.allclose(padded[:, 2:], alone, atol=1e-5)


def test_explicit_position_ids_match_hugging_face_gpt2():
    transformers = pytest.importorskip("transformers")
    from model_foundry.models.hf_conversion import gpt_config_from_hf, gpt_state_dict_from_hf_gpt2

    hf_config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=32,
                                        attn_implementation="eager")
    hf_model = scrambled(transformers.GPT2LMHeadModel(hf_config))
    config = gpt_config_from_hf(hf_model.config.to_dict())
    ours = GPT(config)
    ours.load_state_dict(gpt_state_dict_from_hf_gpt2(hf_model.state_dict(), config))
    ours.eval()
    ids = torch.tensor([[0, 0, 4, 9, 13, 21], [6, 8, 10, 12, 14, 16]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    positions = torch.tensor([[0, 0, 5, 6, 7, 8], [3, 4, 5, 6, 7, 8]])  # not what the mask would give
    with torch.no_grad():
        expected = hf_model(ids, attention_mask=mask, position_ids=positions).logits
        hidden, _ = ours.backbone(ids, mask, position_ids=positions)
        default_positions = ours(ids, attention_mask=mask).logits
    assert (ours.lm_head(hidden) - expected)[mask.bool()].abs().max() < 1e-4
    assert not torch.allclose(default_positions[mask.bool()], expected[mask.bool()], atol=1e-2)


# ---- sampling controls --------------------------------------------------------------------------

def test_temperature_zero_is_the_argmax():
    model = tiny_gpt()
    assert generate(model, [PROMPTS[0]], max_new_tokens=8, temperature=0)[0] == greedy_by_hand(model, PROMPTS[0], 8)


def test_top_k_never_samples_outside_the_k_most_likely():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.9, -1.0, 2.8, 0.5, 2.8])  # ranks: 1, 3, then a tie 5/7
    samples = choose_next(logits.expand(4000, -1), temperature=2.0, top_k=3, top_p=None,
                          generator=torch.Generator().manual_seed(0))
    drawn = set(samples.tolist())
    assert drawn <= {1, 3, 5, 7} and {1, 3} <= drawn
    assert len(drawn) == 3, "exactly k tokens stay even when the k-th is tied"
    kept = keep_top_k(logits[None], 3)[0]
    assert torch.isfinite(kept).sum() == 3 and kept[1] == 3.0


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([0.5, 0.25, 0.15, 0.1]).log()
    for p, kept in [(0.45, [0]), (0.7, [0, 1]), (0.8, [0, 1, 2]), (0.95, [0, 1, 2, 3]), (1.0, [0, 1, 2, 3])]:
        finite = torch.isfinite(keep_top_p(logits[None], p)[0]).nonzero().flatten().tolist()
        assert finite == kept, f"top_p={p}"
    samples = choose_next(logits.expand(6000, -1), temperature=1.0, top_k=None, top_p=0.7,
                          generator=torch.Generator().manual_seed(1))
    share_of_first = float((samples == 0).float().mean())
    assert set(samples.tolist()) == {0, 1} and share_of_first == pytest.approx(2 / 3, abs=0.03)


def test_sampling_is_reproducible_with_a_seeded_generator_and_differs_between_seeds():
    model = tiny_gpt()

    def sample(seed: int) -> list[list[int]]:
        return generate(model, PROMPTS, max_new_tokens=10, temperature=1.5, top_p=0.95,
                        generator=torch.Generator().manual_seed(seed))
    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


# ---- stopping and the context limit ---------------------------------------------------------------

def test_a_row_stops_at_its_stop_token_and_the_others_go_on():
    model = tiny_gpt()
    free = generate(model, PROMPTS, max_new_tokens=12, temperature=0)
    stop = next(token for index, token in enumerate(free[0]) if index >= 2 and token not in free[0][:index])
    stopped = generate(model, PROMPTS, max_new_tokens=12, temperature=0, stop_token_ids=[stop])
    for free_row, stopped_row in zip(free, stopped):
        expected = free_row[:free_row.index(stop)] if stop in free_row else free_row
        assert stopped_row == expected
    assert stop not in stopped[0] and len(stopped[0]) >= 2


@pytest.mark.slow
def test_the_whole_prompt_is_used_however_many_tokens_are_asked_for(capsys):
    model = tiny_gpt(block_size=16)
    prompt = [5, 17, 3, 42, 8, 9, 11, 2, 30, 31, 32, 33]
    generated = generate(model, [prompt], max_new_tokens=40, temperature=0)[0]
    assert generated == greedy_by_hand(model, prompt, 40, context=16)
    first_tokens_matter = [generate(model, [[token, *prompt[1:]]], max_new_tokens=40, temperature=0)[0][0]
                           for token in range(0, VOCAB, 5)]
    assert len(set(first_tokens_matter)) > 1, "the first prompt token still counts when 40 tokens are asked for"
    assert capsys.readouterr().err == "", "nothing was cut, so nothing to warn about"


def test_a_prompt_longer_than_the_context_keeps_its_last_tokens_and_says_so(capsys):
    model = tiny_gpt(block_size=16)
    long_prompt = list(range(1, 21))
    generated = generate(model, [long_prompt, [7, 1]], max_new_tokens=6, temperature=0)
    assert generated == generate(model, [long_prompt[-16:], [7, 1]], max_new_tokens=6, temperature=0)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and "first 4 token(s)" in warnings[0] and "model.block_size: 16" in warnings[0]
    generate(model, [long_prompt, list(range(1, 31))], max_new_tokens=1, temperature=0)
    assert "dropped 2 prompts' first 4, 14 token(s)" in capsys.readouterr().err


def test_recurrent_models_read_prompts_longer_than_their_training_window(capsys):
    model = scrambled(LSTM(LSTMConfig(vocab_size=VOCAB, n_embd=16, n_layer=1, block_size=8)))
    prompt = list(range(1, 21))
    generated = generate(model, [prompt], max_new_tokens=12, temperature=0)[0]
    assert generated == generate(model, [prompt], max_new_tokens=12, temperature=0, use_cache=False)[0]
    assert generated == greedy_by_hand(model, prompt, 12)
    assert capsys.readouterr().err == ""


def test_generation_refuses_models_and_settings_it_cannot_use():
    bert = Bert(BertConfig(vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=16, block_size=16))
    with pytest.raises(UserError, match="does not generate"):
        generate(bert, [[1, 2]])
    model = tiny_gpt()
    for settings, message in [({"top_p": 0.0}, "top_p"), ({"top_k": 0}, "top_k"),
                              ({"temperature": -1.0}, "temperature")]:
        with pytest.raises(UserError, match=message):
            generate(model, [[1, 2]], **settings)
    with pytest.raises(UserError, match="empty"):
        generate(model, [[1, 2], []])


# ---- text in, text out ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def char_tokenizer():
    return train_tokenizer("char", 64, texts=CORPUS_LINES)


def test_generate_text_decodes_the_continuation_and_starts_empty_prompts_at_eos(char_tokenizer):
    tok = char_tokenizer
    model = scrambled(GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=32)))
    texts = generate_text(model, tok, ["the cat", ""], max_new_tokens=8, temperature=0, stop_token_ids=())
    new_ids = generate(model, [tok.encode("the cat"), [tok.eos_id]], max_new_tokens=8, temperature=0)
    assert texts == [tok.decode(ids, skip_special_tokens=True) for ids in new_ids]


# ---- fill-mask ------------------------------------------------------------------------------------

class PositionOracle(nn.Module):
    """A fake masked LM whose logits at input position i single out token id i (by a margin of 10)."""

    default_task = "masked_lm"

    def __init__(self, vocab_size: int):
        super().__init__()
        self.config = SimpleNamespace(block_size=32)
        self.vocab_size = vocab_size
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        positions = torch.arange(input_ids.size(1))
        logits = 10.0 * nn.functional.one_hot(positions, self.vocab_size).float()[None] + self.anchor
        return SimpleNamespace(logits=logits.expand(input_ids.size(0), -1, -1))


def test_fill_mask_reads_each_mask_at_its_own_position(char_tokenizer):
    tok = char_tokenizer
    text = "th[MASK] cat s[MASK]t"
    results = fill_mask(PositionOracle(tok.vocab_size), tok, text, top_k=3)
    # [cls] t h [MASK] ...: the first mask is input position 3, the second position 10.
    assert [mask[0]["token_id"] for mask in results] == [3, 10]
    top_probability = torch.softmax(torch.tensor([10.0] + [0.0] * (tok.vocab_size - 1)), 0)[0].item()
    for candidates in results:
        probabilities = [c["probability"] for c in candidates]
        assert len(candidates) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert probabilities[0] == pytest.approx(top_probability) and sum(probabilities) <= 1
    second = tok.decode([10])
    assert results[1][0]["token"] == second
    assert results[1][0]["sequence"] == f"th{tok.mask_token} cat s{second}t", "other masks stay masked"


def test_mask_is_spelled_as_the_tokenizer_spells_it(char_tokenizer):
    bpe = train_tokenizer("bpe", 300, texts=CORPUS_LINES * 20)
    word = bpe.encode(" sat")
    assert masked_text_ids(bpe, "the [MASK] sat") == [*bpe.encode("the"), bpe.mask_id, *word]
    assert masked_text_ids(bpe, "the <mask> sat") == masked_text_ids(bpe, "the [MASK] sat")
    char = char_tokenizer
    assert masked_text_ids(char, "a [MASK] b") == [char.token_to_id("a"), char.token_to_id(" "), char.mask_id,
                                                   char.token_to_id(" "), char.token_to_id("b")]
    with pytest.raises(UserError, match="no mask"):
        masked_text_ids(char, "the cat sat")


def test_fill_mask_uses_an_extra_mlm_head_and_refuses_causal_models(char_tokenizer):
    class WithMaskedHead(PositionOracle):
        default_task = "hybrid"

        def masked_lm_logits(self, input_ids, attention_mask):
            return -self(input_ids, attention_mask).logits  # token i is now the least likely at i

    candidates = fill_mask(WithMaskedHead(char_tokenizer.vocab_size), char_tokenizer, "a[MASK]", top_k=2)[0]
    assert 2 not in [c["token_id"] for c in candidates]
    with pytest.raises(UserError, match="not trained to fill masks"):
        fill_mask(tiny_gpt(), char_tokenizer, "a[MASK]")


# ---- trained runs and the command line -----------------------------------------------------------

@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """Tiny gpt and bert runs (char tokenizer, a few steps) for the end-to-end tests."""
    runs = train_tiny_runs(tmp_path_factory.mktemp("generation_runs"), CORPUS_LINES, ("gpt", "bert"),
                           training={"max_steps": 15, "eval_interval": 15, "eval_iters": 1})
    return {arch: str(run) for arch, run in runs.items()}


@pytest.mark.slow
def test_fill_mask_on_a_trained_bert(trained_runs):
    model, tok = model_foundry.load_model(trained_runs["bert"]), load_tokenizer(trained_runs["bert"])
    results = fill_mask(model, tok, "the cat [MASK]at on the mat", top_k=4)
    probabilities = [c["probability"] for c in results[0]]
    assert len(results) == 1 and len(probabilities) == 4
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    assert all(c["sequence"] == f"the cat {c['token']}at on the mat" for c in results[0])


@pytest.mark.slow
def test_cli_generate_and_fill_mask(trained_runs, capsys):
    def run(*argv: str) -> tuple[int, str]:
        code = main(list(argv))
        return code, capsys.readouterr().out

    sample = ("generate", trained_runs["gpt"], "--prompt", "the cat", "--max-new-tokens", "12",
              "--temperature", "0.8", "--top-k", "10", "--seed", "5")
    code, out = run(*sample)
    assert code == 0 and out.startswith("the cat")
    assert run(*sample)[1] == out, "--seed makes sampling reproducible"
    code, out = run("generate", trained_runs["gpt"], "--prompt", "to be", "--prompt", "the", "--temperature", "0")
    assert code == 0 and out.startswith("to be") and "\n\nthe" in out
    prompt = "to be or not"  # 12 tokens, then 40 more on a 32-token model: the whole prompt counts
    code, out = run("generate", trained_runs["gpt"], "--prompt", prompt, "--max-new-tokens", "40", "--temperature", "0")
    model, tok = model_foundry.load_model(trained_runs["gpt"]).eval(), load_tokenizer(trained_runs["gpt"])
    by_hand = until_stop(greedy_by_hand(model, tok.encode(prompt), 40, context=32), [tok.eos_id])
    assert code == 0 and out == prompt + continuation_text(tok, tok.encode(prompt), by_hand) + "\n"

    code, out = run("fill-mask", trained_runs["bert"], "--text", "the [MASK]og sat", "--top-k", "3")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3 and all("og sat" in line for line in lines)
    assert run("fill-mask", trained_runs["gpt"], "--text", "the [MASK]og")[0] == 2
    assert run("generate", trained_runs["bert"], "--prompt", "the")[0] == 2
