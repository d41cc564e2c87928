"""Our models as Hugging Face models: the classes a self-contained export loads with `trust_remote_code=True`.

`foundry export --format hf` writes a model that no `transformers` class computes exactly (a hybrid,
an LSTM, a finetuned classifier, ...) as a directory holding this module as `modeling_foundry.py`,
the modules of ours it imports flattened beside it (`inference/remote_code.py`), a `config.json`
whose `auto_map` names the classes below, and the weights under `foundry.` + our own names. Nothing
here computes a model a second time: every class holds the very model `BaseLanguageModel` builds
from the same description, and only adapts inputs and outputs to transformers' conventions
(labels shifted inside a causal LM, a score as a (batch, 1) logit, `id2label` from our label names).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import (BaseModelOutput, CausalLMOutput, MaskedLMOutput, SequenceClassifierOutput,
                                           TokenClassifierOutput)

from model_foundry.config.choices import default_pooler
from model_foundry.errors import UserError
from model_foundry.models.base import (BaseLanguageModel, build_described_model, init_normal, masked_lm_logits,
                                       token_loss)
from model_foundry.models.bert import Bert
from model_foundry.models.cross_entropy import IGNORE_INDEX
from model_foundry.models.electra import Electra
from model_foundry.models.gpt import GPT
from model_foundry.models.hf_backbone import HFModel
from model_foundry.models.hybrid import HybridLM
from model_foundry.models.recurrent import GRU, LSTM, RNN
from model_foundry.models.task_model import (SEQUENCE_TASKS, TaskHeadConfig, TaskModel, to_original_scale,
                                             to_unit_scale)

# Imported for their registration: a description names its architecture, and these are the ones an export holds.
ARCHITECTURES = (Bert, Electra, GPT, HFModel, HybridLM, GRU, LSTM, RNN)
DESCRIPTION = Path("config.json")  # where a bad description is reported
# transformers' problem_type -> our task and criterion, for a head made on a pretrained export.
PROBLEM_TYPES = {"single_label_classification": ("sequence_classification", "cross_entropy"),
                 "multi_label_classification": ("sequence_classification", "bce"),
                 "regression": ("sequence_scoring", "mse")}


class FoundryConfig(PretrainedConfig):
    """`foundry_model`: the model's description, as our `model_config.json` records it."""

    model_type = "model_foundry"

    def __init__(self, foundry_model: dict | None = None, **kwargs: Any):
        self.foundry_model = foundry_model or {}
        super().__init__(**kwargs)


def is_causal_lm(model: nn.Module) -> bool:
    return model.architecture_name == "hybrid" or getattr(model.config, "attention_type", None) == "causal"


def is_masked_lm(model: nn.Module) -> bool:
    return hasattr(model, "masked_lm_logits") or getattr(model.config, "attention_type", None) == "bidirectional"


class FoundryPreTrainedModel(PreTrainedModel):
    """`self.foundry`: our model, built from `config.foundry_model` (`build_foundry` adapts it per task)."""

    config_class = FoundryConfig
    base_model_prefix = "foundry"
    _no_split_modules: list[str] = []

    def __init__(self, config: FoundryConfig):
        super().__init__(config)
        self.foundry = self.build_foundry(config)
        self.post_init()

    def build_foundry(self, config: FoundryConfig) -> BaseLanguageModel:
        return build_described_model(config.foundry_model, DESCRIPTION)

    def _init_weights(self, module: nn.Module) -> None:
        """Our initialisation, for weights the directory does not hold (a new head on a pretrained export)."""
        init_normal(module)
        if isinstance(module, (nn.LayerNorm, nn.RMSNorm)) and module.weight is not None:
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def tie_weights(self, *args: Any, **kwargs: Any) -> None:
        """Our model's own tying, and its computed tables (rotary angles, sinusoids, class weights).

        transformers may build the model on the meta device and load each tensor by name, which
        unties shared weights and leaves non-persistent buffers empty; it calls this when loading
        ends, so here both are put back.
        """
        self.foundry.tie_weights()
        restore_computed_buffers(self.foundry, lambda: self.build_foundry(self.config))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.foundry.get_input_embeddings()

    def model_inputs(self, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None) -> dict:
        """Our forward's arguments; token types only where the backbone has segment embeddings."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and getattr(self.foundry.config, "type_vocab_size", 0):
            inputs["token_type_ids"] = token_type_ids
        return inputs


def restore_computed_buffers(model: nn.Module, build_fresh) -> None:
    """Copy the non-persistent buffers of a freshly built twin (on the CPU) into `model`, on its devices."""
    persistent = set(model.state_dict())
    with torch.device("cpu"):
        fresh = dict(build_fresh().named_buffers())
    for name, buffer in list(model.named_buffers()):
        if name not in persistent and name in fresh:
            owner_name, _, attribute = name.rpartition(".")
            owner = model.get_submodule(owner_name)
            owner._buffers[attribute] = fresh[name].to(buffer.device if buffer.device.type != "meta" else "cpu")


class FoundryModel(FoundryPreTrainedModel):
    """`AutoModel`: the backbone's hidden states (for a hybrid, its bidirectional stack's)."""

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                output_hidden_states: bool | None = None, **unused: Any) -> BaseModelOutput:
        inputs = self.model_inputs(input_ids, attention_mask, token_type_ids)
        hidden, all_hidden = self.foundry.backbone(inputs["input_ids"], inputs["attention_mask"],
                                                   inputs.get("token_type_ids"), bool(output_hidden_states))
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=all_hidden)


class FoundryForCausalLM(FoundryPreTrainedModel, GenerationMixin):
    """`AutoModelForCausalLM`: next-token logits (a hybrid's causal stack). `labels` are the input ids, shifted
    here as transformers' causal LMs do. Generation re-reads the whole sequence at each step (no cache)."""

    def build_foundry(self, config: FoundryConfig) -> BaseLanguageModel:
        return checked_language_model(super().build_foundry(config), is_causal_lm, "causal")

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool | None = None,
                **unused: Any) -> CausalLMOutput:
        output = self.foundry(**self.model_inputs(input_ids, attention_mask, token_type_ids),
                              output_hidden_states=bool(output_hidden_states))
        loss = None
        if labels is not None:
            shifted = torch.full_like(labels, IGNORE_INDEX)
            shifted[:, :-1] = labels[:, 1:]
            loss = token_loss(output.logits, shifted)
        return CausalLMOutput(loss=loss, logits=output.logits, hidden_states=output.hidden_states)

    def prepare_inputs_for_generation(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                                      **unused: Any) -> dict:
        return {"input_ids": input_ids, "attention_mask": attention_mask}


class FoundryForMaskedLM(FoundryPreTrainedModel):
    """`AutoModelForMaskedLM`: vocabulary logits at every position (a hybrid's bidirectional stack)."""

    def build_foundry(self, config: FoundryConfig) -> BaseLanguageModel:
        return checked_language_model(super().build_foundry(config), is_masked_lm, "masked")

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, **unused: Any) -> MaskedLMOutput:
        logits = masked_lm_logits(self.foundry, input_ids, attention_mask)
        loss = token_loss(logits, labels) if labels is not None else None
        return MaskedLMOutput(loss=loss, logits=logits)


class FoundryTaskModel(FoundryPreTrainedModel):
    """A task model: the finetuned one the export holds, or a new head of `config.num_labels` outputs on a
    pretrained export's backbone (what evaluation pipelines that finetune with their own head load); each
    subclass names its `task_kinds` and makes that head in `new_head_config`."""

    task_kinds: tuple[str, ...]

    def build_foundry(self, config: FoundryConfig) -> TaskModel:
        model = super().build_foundry(config)
        if isinstance(model, TaskModel):
            if model.head_config.task not in self.task_kinds:
                raise UserError(f"This export holds a {model.head_config.task} model; load it with "
                                f"{suggested_auto_class(model)}.")
            return model
        head = self.new_head_config(config, model)
        return TaskModel(model.architecture_name, model.config, head)


class FoundryForSequenceClassification(FoundryTaskModel):
    """`AutoModelForSequenceClassification`: class logits (batch, classes), or a score as (batch, 1) in the
    scale of the training targets."""

    task_kinds = SEQUENCE_TASKS

    def new_head_config(self, config: FoundryConfig, model: BaseLanguageModel) -> TaskHeadConfig:
        problem = config.problem_type or "single_label_classification"
        task, criterion = PROBLEM_TYPES[problem]
        labels = None if task == "sequence_scoring" else [config.id2label[i] for i in range(config.num_labels)]
        return TaskHeadConfig(task=task, num_outputs=1 if labels is None else len(labels), labels=labels,
                              multi_label=criterion == "bce", criterion=criterion,
                              pooler=default_pooler(model.config.attention_type))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool | None = None,
                **unused: Any) -> SequenceClassifierOutput:
        head = self.foundry.head_config
        scoring = head.task == "sequence_scoring"
        if labels is not None:
            labels = to_unit_scale(labels.float().view(-1), head.target_range) if scoring else labels
            labels = labels.float() if head.multi_label else labels
        output = self.foundry(**self.model_inputs(input_ids, attention_mask, token_type_ids), labels=labels,
                              output_hidden_states=bool(output_hidden_states))
        logits = to_original_scale(output.logits, head.target_range)[:, None] if scoring else output.logits
        return SequenceClassifierOutput(loss=output.loss, logits=logits, hidden_states=output.hidden_states)


class FoundryForTokenClassification(FoundryTaskModel):
    """`AutoModelForTokenClassification`: tag logits (batch, time, tags)."""

    task_kinds = ("token_classification",)

    def new_head_config(self, config: FoundryConfig, model: BaseLanguageModel) -> TaskHeadConfig:
        labels = [config.id2label[i] for i in range(config.num_labels)]
        return TaskHeadConfig(task="token_classification", num_outputs=len(labels), labels=labels)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool | None = None,
                **unused: Any) -> TokenClassifierOutput:
        output = self.foundry(**self.model_inputs(input_ids, attention_mask, token_type_ids), labels=labels,
                              output_hidden_states=bool(output_hidden_states))
        return TokenClassifierOutput(loss=output.loss, logits=output.logits, hidden_states=output.hidden_states)


def checked_language_model(model: BaseLanguageModel, fits, kind: str) -> BaseLanguageModel:
    """`model`, when it is a `kind` ("causal" or "masked") language model; else an error naming the Auto class
    that fits it."""
    if isinstance(model, TaskModel) or not fits(model):
        raise UserError(f"This export holds a {describe(model)}, not a {kind} language model; load it with "
                        f"{suggested_auto_class(model)}.")
    return model


def describe(model: nn.Module) -> str:
    if isinstance(model, TaskModel):
        return f"{model.head_config.task} model"
    return f"{model.architecture_name} language model"


def suggested_auto_class(model: nn.Module) -> str:
    """The Auto class that fits what `model` is."""
    if isinstance(model, TaskModel):
        kind = "Sequence" if model.head_config.task in SEQUENCE_TASKS else "Token"
        return f"AutoModelFor{kind}Classification"
    return "AutoModelForCausalLM" if is_causal_lm(model) else "AutoModelForMaskedLM"


# auto_map of an export: transformers' Auto class -> the class here that it loads.
AUTO_CLASSES = {"AutoConfig": FoundryConfig, "AutoModel": FoundryModel, "AutoModelForCausalLM": FoundryForCausalLM,
                "AutoModelForMaskedLM": FoundryForMaskedLM,
                "AutoModelForSequenceClassification": FoundryForSequenceClassification,
                "AutoModelForTokenClassification": FoundryForTokenClassification}
