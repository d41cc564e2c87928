"""Hybrid GPT+BERT: one model trained on causal (next-token) and masked (cloze) language modelling.

Two designs behind one architecture, chosen by `hybrid_design`:

- `two_stack`: a bidirectional stack and a causal stack that share the token
  embedding. Every batch trains both: the causal stack predicts the next token of the text, the
  bidirectional one the masked tokens of a masked copy of the same text, and the loss is
  `loss_weights[0] * mlm_loss + loss_weights[1] * clm_loss`. `n_layer` is the depth of EACH
  stack, so the model has 2 * n_layer blocks, about twice the parameters of a GPT of that size.
- `shared` (GPT-BERT, Charpentier & Samuel, the BabyLM 2024 winner): ONE stack, run with either
  attention mask. Each batch is causal or masked (the task draws which), so the same weights
  learn both to generate and to fill in. `n_layer` is the depth of that one stack.

Both designs have the same modules, so the forward pass is one piece of code: `backbone`, the
bidirectional stack; `causal_backbone`, the causal stack (for `shared`, the very same embeddings
and blocks seen through a causal mask); and two heads tied to the token embedding, `mlm_head`
(BERT's transform and decoder) and `clm_head` (GPT's linear output).

Finetuning uses `backbone`, the bidirectional stack: classification and tagging want every token
to see the whole input (the BERT side is the one for understanding), and the transfer
controls address its blocks as `backbone.blocks.<i>`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace

from torch import Tensor, nn

from model_foundry.errors import UserError, did_you_mean
from model_foundry.models.backbones.attention import KeyValueCache
from model_foundry.models.backbones.transformer import (MODERN_RECIPE, TRANSFORMER_PRESETS, OutputProjection,
                                                        TransformerBackbone, TransformerConfig)
from model_foundry.models.base import (INIT_STD, BaseLanguageModel, ModelOutput, init_normal, init_residual_projections,
                                       resized_parameter, token_loss)
from model_foundry.models.bert import MaskedLMHead
from model_foundry.models.registry import register_architecture

DESIGNS = ("two_stack", "shared")
OBJECTIVES = ("both", "mlm", "clm")
DEFAULT_LOSS_WEIGHTS = (0.5, 0.5)  # [mlm, clm]: both objectives count equally
# What one path returns: logits, the loss (None without labels), all hidden states (when asked).
PathOutput = tuple[Tensor, Tensor | None, tuple[Tensor, ...] | None]


@dataclass
class HybridConfig(TransformerConfig):
    """The transformer settings of each stack, the design, and the [mlm, clm] loss weights.

    `attention_type` describes `backbone`, the stack that finetuning uses, so it is always
    bidirectional; the causal stack is causal by construction. Positions are rotary: with learned
    ones the bidirectional stack learns masked LM far more slowly at small budgets (docs/measurements.md,
    "Defaults that learn at small budgets"). The other defaults are GPT-2's (pre-LN, tanh GELU, no
    segment embeddings).
    """

    hybrid_design: str = "two_stack"
    loss_weights: list[float] = field(default_factory=lambda: list(DEFAULT_LOSS_WEIGHTS))
    attention_type: str = "bidirectional"
    positional: str = "rotary"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hybrid_design not in DESIGNS:
            raise UserError(f"model.hybrid_design is {self.hybrid_design!r}; "
                            f"{did_you_mean(str(self.hybrid_design), DESIGNS)}")
        if self.attention_type != "bidirectional":
            raise UserError(f"model.attention_type is {self.attention_type!r}, but a hybrid model has a causal and a "
                            "bidirectional path already (its finetuning backbone is the bidirectional one); "
                            "remove model.attention_type.")
        weights = list(self.loss_weights)
        if len(weights) != 2 or min(weights) < 0 or sum(weights) <= 0:
            raise UserError(f"loss_weights (task.loss_weights in a config) is {weights}; it must be two "
                            "non-negative numbers [mlm, clm], not both 0, for example [0.5, 0.5].")
        self.loss_weights = [float(w) for w in weights]


@dataclass
class HybridOutput(ModelOutput):
    """`ModelOutput` plus each objective's logits and loss (None for an objective that did not run).

    `logits` are the causal ones unless only the masked objective ran; `loss` is the objective trained.
    """

    mlm_logits: Tensor | None = None
    clm_logits: Tensor | None = None
    mlm_loss: Tensor | None = None
    clm_loss: Tensor | None = None


def stack_config(config: HybridConfig, attention_type: str) -> TransformerConfig:
    """The plain transformer settings of one stack, with the given attention."""
    values = {f.name: getattr(config, f.name) for f in fields(TransformerConfig)}
    return TransformerConfig(**{**values, "attention_type": attention_type})


def causal_view(stack: TransformerBackbone) -> TransformerBackbone:
    """`stack` seen through a causal mask: the same embeddings and blocks, so the same parameters.

    A shallow copy shares the stack's tables of submodules, parameters and buffers (the very same
    dicts, so even a later resize of the embedding shows in both); only its config, which decides
    the attention pattern, is its own.
    """
    view = copy.copy(stack)
    view.config = replace(stack.config, attention_type="causal")
    return view


def resolve_objective(objective: str | None, mlm_input_ids: Tensor | None) -> str:
    """The objective asked for; by default `both` when the batch has a masked copy, else `clm`."""
    if objective is None:
        return "both" if mlm_input_ids is not None else "clm"
    if objective not in OBJECTIVES:
        raise UserError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}; "
                        f"{did_you_mean(str(objective), OBJECTIVES)}")
    return objective


@register_architecture("hybrid")
class HybridLM(BaseLanguageModel):
    model_type = "hybrid"
    default_task = "hybrid"
    supports_generation = True
    config_class = HybridConfig
    presets = TRANSFORMER_PRESETS  # per stack
    recipes = {"classic": {}, "modern": MODERN_RECIPE}

    def __init__(self, config: HybridConfig):
        super().__init__(config)
        self.backbone = TransformerBackbone(stack_config(config, "bidirectional"))
        if config.hybrid_design == "shared":
            self.causal_backbone = causal_view(self.backbone)
        else:
            self.causal_backbone = TransformerBackbone(stack_config(config, "causal"))
        self.mlm_head = MaskedLMHead(config)
        self.clm_head = OutputProjection(config)
        self.apply(init_normal)
        init_residual_projections(self, config)
        if config.zero_init_projections and not config.tie_weights:
            nn.init.zeros_(self.mlm_head.decoder.weight)
        self.tie_weights()

    # ---- weights shared with the token embedding -----------------------------------------------
    def get_output_embeddings(self) -> OutputProjection:
        """The causal head: the one generation reads."""
        return self.clm_head

    def tie_weights(self) -> None:
        """One token embedding for both stacks, and (unless `model.tie_weights: false`) for both heads' output
        projections."""
        embedding = self.backbone.token_embedding
        self.causal_backbone.token_embedding = embedding
        if self.config.tie_weights:
            self.clm_head.weight = embedding.weight
            self.mlm_head.decoder.weight = embedding.weight

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        embedding = super().resize_token_embeddings(new_num_tokens)
        decoder = self.mlm_head.decoder
        decoder.out_features = new_num_tokens
        if not self.config.tie_weights:  # the masked head's own output projection needs its own new rows
            decoder.weight = resized_parameter(decoder.weight, new_num_tokens, INIT_STD)
        if self.mlm_head.bias is not None:
            self.mlm_head.bias = resized_parameter(self.mlm_head.bias, new_num_tokens, 0.0)
        return embedding

    def transformer_modules(self) -> list[nn.Module]:
        """Both stacks (for `shared` they are one), so freezing leaves only the heads training."""
        return [self.backbone, self.causal_backbone]

    # ---- forward ---------------------------------------------------------------------------------
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool = False, *,
                objective: str | None = None, task: str | None = None, mlm_input_ids: Tensor | None = None,
                mlm_attention_mask: Tensor | None = None, mlm_labels: Tensor | None = None) -> HybridOutput:
        """Run the causal path (`clm`), the masked path (`mlm`) or both, and their weighted loss.

        `input_ids` / `labels` are the text and its next tokens; `mlm_input_ids` / `mlm_labels` a
        masked copy and its cloze targets (-100 where nothing was masked). With `objective='mlm'`
        and no masked copy, `input_ids` / `labels` are the masked batch. With `both` and no masked
        copy, both stacks read `input_ids`. `objective` defaults to `both` when a
        masked copy is given, else `clm`, so `model(input_ids)` gives next-token logits;
        `task` is an older name for it.
        """
        objective = resolve_objective(objective if objective is not None else task, mlm_input_ids)
        output = HybridOutput()
        if objective in ("clm", "both"):
            output.clm_logits, output.clm_loss, causal_hidden = self.causal_pass(
                input_ids, attention_mask, labels, token_type_ids, output_hidden_states)
        if objective in ("mlm", "both"):
            if mlm_input_ids is None:
                mlm_input_ids, mlm_attention_mask = input_ids, attention_mask
                mlm_labels = labels if objective == "mlm" else None
            output.mlm_logits, output.mlm_loss, masked_hidden = self.masked_pass(
                mlm_input_ids, mlm_attention_mask, mlm_labels, token_type_ids, output_hidden_states)
        if objective == "mlm":
            output.logits, output.loss, output.hidden_states = output.mlm_logits, output.mlm_loss, masked_hidden
        else:
            output.logits, output.hidden_states = output.clm_logits, causal_hidden
            output.loss = output.clm_loss if objective == "clm" else self.weighted_loss(output)
        return output

    def decode_step(self, input_ids: Tensor, attention_mask: Tensor,
                    cache: list[KeyValueCache] | None = None) -> tuple[Tensor, list[KeyValueCache]]:
        """Generation through the causal stack with its key/value cache (see GPT.decode_step)."""
        hidden, _, cache = self.causal_backbone(input_ids, attention_mask, past_key_values=cache, use_cache=True)
        return self.clm_head(hidden[:, -1]), cache

    def causal_pass(self, input_ids: Tensor, attention_mask: Tensor | None, labels: Tensor | None,
                    token_type_ids: Tensor | None, output_hidden_states: bool) -> PathOutput:
        """(next-token logits, loss or None, hidden states or None) of the causal stack."""
        hidden, all_hidden = self.causal_backbone(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits = self.clm_head(hidden)
        return logits, token_loss(logits, labels) if labels is not None else None, all_hidden

    def masked_pass(self, input_ids: Tensor, attention_mask: Tensor | None, labels: Tensor | None,
                    token_type_ids: Tensor | None, output_hidden_states: bool) -> PathOutput:
        """(vocabulary logits at every position, loss or None, hidden states or None) of the bidirectional stack."""
        hidden, all_hidden = self.backbone(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits = self.mlm_head(hidden)
        return logits, token_loss(logits, labels) if labels is not None else None, all_hidden

    def weighted_loss(self, output: HybridOutput) -> Tensor | None:
        """mlm_weight * mlm_loss + clm_weight * clm_loss; None when neither objective had labels."""
        if output.mlm_loss is None and output.clm_loss is None:
            return None
        if output.mlm_loss is None or output.clm_loss is None:
            raise UserError("objective 'both' needs the targets of both objectives: `labels` (the next tokens) "
                            "and `mlm_labels` (the masked tokens, with `mlm_input_ids`); pass both, or choose "
                            "objective='clm' or 'mlm'.")
        mlm_weight, clm_weight = self.config.loss_weights
        return mlm_weight * output.mlm_loss + clm_weight * output.clm_loss

    def masked_lm_logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Vocabulary logits (batch, time, vocab) of the bidirectional path, for filling in masks."""
        return self.masked_pass(input_ids, attention_mask, None, None, False)[0]
