"""A language model trained with a sentence-level objective: its own modules plus a sentence head.

`SentenceObjectiveModel` wraps any architecture's model. It registers the wrapped model's modules
under their own names (`backbone.*`, `mlm_head.*`, ...) and adds `sentence_head.*`, so its
checkpoint holds exactly the weights the plain model holds plus the head's: finetuning loads the
`backbone.*` tensors like those of any pretraining run, and fill-mask, scoring and generation call
the wrapped model as they would call it directly.

A batch with `view_a_input_ids` trains the sentence objective: both views of every unit go
through the backbone, are pooled (`mean` for bidirectional backbones, `last` for causal ones)
and, optionally, projected; the loss is InfoNCE between the views (`span_contrastive`) or the
bag of words of one view predicted from the other (`span_bag_of_words`, both directions
averaged), plus `lm_weight` x the wrapped model's own loss on the batch's `input_ids` / `labels`
(masked LM on the whole units for bidirectional models, causal LM for causal ones). Any other
call is the wrapped model's forward.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model_foundry.errors import UserError
from model_foundry.models.base import (MODEL_KINDS, BaseLanguageModel, ModelOutput, config_from_dict, init_normal,
                                      part_config, resized_rows)
from model_foundry.models.heads import make_pooler
from model_foundry.models.heads.sentence import SentenceHead, bag_of_words_loss, info_nce
from model_foundry.models.registry import get_architecture

OBJECTIVES = ("span_contrastive", "span_bag_of_words")


@dataclass
class SentenceHeadConfig:
    """What the sentence head is and how its loss is made; recorded in `model_config.json`."""

    objective: str
    pooler: str  # "mean" or "last"
    temperature: float = 0.05
    projection_size: int | None = None
    lm_weight: float = 0.0
    # Keyword arguments of the wrapped model's forward for its token objective (the hybrid's
    # {"objective": "mlm"}: its masked stack, the one finetuning keeps).
    lm_arguments: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise UserError(f"sentence objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}.")


@dataclass
class SentenceObjectiveOutput(ModelOutput):
    """`loss` is what training minimises; the parts are kept for the metrics."""

    sentence_loss: Tensor | None = None
    lm_loss: Tensor | None = None
    similarities: Tensor | None = None  # [B, B] cosine / temperature (span_contrastive)
    bow_logits: tuple[Tensor, Tensor] | None = None  # view a's and view b's vocabulary logits


class SentenceObjectiveModel(BaseLanguageModel):
    model_type = "sentence_objective"

    def __init__(self, language_model: BaseLanguageModel, head_config: SentenceHeadConfig):
        super().__init__(language_model.config)
        self.architecture_name = language_model.architecture_name  # the checkpoint records the wrapped one
        self.default_task = language_model.default_task  # fill-mask and scoring treat it as the wrapped model
        self.supports_generation = language_model.supports_generation
        self.head_config = head_config
        for name, module in language_model.named_children():
            self.add_module(name, module)
        for name, parameter in language_model.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        # Not a submodule: its modules are this model's already, registered under their own names.
        object.__setattr__(self, "language_model", language_model)
        hidden = self.backbone.hidden_size
        self.pooler = make_pooler(head_config.pooler, hidden)
        self.sentence_head = SentenceHead(hidden, language_model.config.vocab_size, head_config.projection_size,
                                          head_config.objective == "span_bag_of_words")
        self.sentence_head.apply(init_normal)

    def __getattr__(self, name: str) -> Any:
        """Modules and parameters first, then what the wrapped model offers (`masked_lm_logits`, ...)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            wrapped = self.__dict__.get("language_model")
            if wrapped is None:  # still being built
                raise
            return getattr(wrapped, name)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                labels: Tensor | None = None, token_type_ids: Tensor | None = None,
                output_hidden_states: bool = False, *, view_a_input_ids: Tensor | None = None,
                view_a_attention_mask: Tensor | None = None, view_b_input_ids: Tensor | None = None,
                view_b_attention_mask: Tensor | None = None, view_a_words: Tensor | None = None,
                view_b_words: Tensor | None = None, **language_model_arguments: Any) -> ModelOutput:
        if view_a_input_ids is None:
            return self.language_model(input_ids, attention_mask, labels, token_type_ids, output_hidden_states,
                                       **language_model_arguments)
        a = self.span_vectors(view_a_input_ids, view_a_attention_mask)
        b = self.span_vectors(view_b_input_ids, view_b_attention_mask)
        output = SentenceObjectiveOutput()
        if self.head_config.objective == "span_contrastive":
            output.sentence_loss, output.similarities = info_nce(a, b, self.head_config.temperature)
        else:
            output.bow_logits = (self.sentence_head.decoder(a), self.sentence_head.decoder(b))
            output.sentence_loss = (bag_of_words_loss(output.bow_logits[0], view_a_words)
                                    + bag_of_words_loss(output.bow_logits[1], view_b_words)) / 2
        output.loss = output.sentence_loss
        if self.head_config.lm_weight > 0 and labels is not None:
            output.lm_loss = self.language_model(input_ids, attention_mask, labels, token_type_ids,
                                                 **self.head_config.lm_arguments).loss
            output.loss = output.loss + self.head_config.lm_weight * output.lm_loss
        return output

    def span_vectors(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The pooled (and projected) vector of each row."""
        hidden, _ = self.backbone(input_ids, attention_mask, None, False)
        return self.sentence_head(self.pooler(hidden, attention_mask))

    # The wrapped model's own versions, not BaseLanguageModel's defaults.
    def decode_step(self, input_ids: Tensor, attention_mask: Tensor, cache: Any = None) -> tuple[Tensor, Any]:
        return self.language_model.decode_step(input_ids, attention_mask, cache)

    def get_output_embeddings(self) -> nn.Linear | None:
        return self.language_model.get_output_embeddings()

    def transformer_modules(self) -> list[nn.Module]:
        return self.language_model.transformer_modules()

    def tie_weights(self) -> None:
        self.language_model.tie_weights()

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        """The wrapped model's resize, and the bag-of-words decoder's rows with it (one per token)."""
        embedding = self.language_model.resize_token_embeddings(new_num_tokens)
        old = self.sentence_head.decoder
        if old is not None:  # surviving tokens keep their rows; new ones start at zero
            decoder = nn.Linear(old.in_features, new_num_tokens, device=old.weight.device, dtype=old.weight.dtype)
            with torch.no_grad():
                decoder.weight.copy_(resized_rows(old.weight, new_num_tokens, std=0.0))
                decoder.bias.copy_(resized_rows(old.bias, new_num_tokens, std=0.0))
            self.sentence_head.decoder = decoder
        return embedding

    def description(self) -> dict[str, Any]:
        return {**self.language_model.description(), "sentence_objective": asdict(self.head_config)}

    @classmethod
    def from_description(cls, meta: dict, path: Path) -> SentenceObjectiveModel:
        """A freshly initialised model as the parsed `model_config.json` at `path` describes it."""
        arch = get_architecture(meta["architecture"])
        head_config = part_config(meta, "sentence_objective", SentenceHeadConfig, path, "a sentence head")
        return cls(arch(config_from_dict(arch, meta["config"], path)), head_config)


MODEL_KINDS["sentence_objective"] = SentenceObjectiveModel.from_description
