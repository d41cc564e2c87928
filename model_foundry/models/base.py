"""What every architecture offers: the `ModelOutput` it returns and the `BaseLanguageModel` interface.

`save_pretrained` and `from_pretrained` write and read a model directory through
`model_foundry.checkpoint_files` (the file names and formats live there). Loading never runs code
from the directory: the architecture name picks a registered class, the config is plain JSON, and
the entries other modules own (`task_head`, `lora`) pick what they registered here.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import math

import torch
from torch import Tensor, nn

from model_foundry.checkpoint_files import CONFIG_FILE, load_weights, read_model_config, write_model_directory
from model_foundry.errors import UserError
from model_foundry.models.cross_entropy import IGNORE_INDEX, summed_cross_entropy
from model_foundry.models.registry import get_architecture

INIT_STD = 0.02
# The weights of the projections that write into a transformer's residual stream.
RESIDUAL_PROJECTIONS = ("attn.proj.weight", "mlp.proj.weight")


@dataclass
class ModelOutput:
    """What `forward` returns. There are no attention weights: fused attention never materialises them."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None


def token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the positions whose label is not -100, computed in float32.

    `labels` are aligned with `logits` already (the data pipeline shifts them for causal LM).
    A batch without any target gives 0 rather than NaN, so it adds no gradient.
    """
    total = summed_cross_entropy(logits.flatten(0, -2), labels.flatten())
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


def masked_lm_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Vocabulary logits (batch, time, vocab) of the model's masked-LM head: its `masked_lm_logits` when it has
    another objective too (hybrid, electra), else its forward pass (a masked LM)."""
    if hasattr(model, "masked_lm_logits"):
        return model.masked_lm_logits(input_ids, attention_mask)
    return model(input_ids, attention_mask=attention_mask).logits


def init_normal(module: nn.Module, std: float = INIT_STD) -> None:
    """GPT-2 / BERT initialisation: weights of Linear and Embedding ~ N(0, std), biases zero."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def init_residual_projections(model: nn.Module, config: Any) -> None:
    """Start the residual projections (and an untied output projection) as the config says.

    By default GPT-2's scaling: N(0, 0.02 / sqrt(2 * n_layer)), so the stream's variance does not grow with
    depth (two residual branches per block). With `zero_init_projections` they start at zero: every block
    starts as the identity and an untied head predicts the uniform distribution, so early steps are not
    spent undoing random projections.
    """
    zero = getattr(config, "zero_init_projections", False)
    residual_std = INIT_STD / math.sqrt(2 * config.n_layer)
    for name, param in model.named_parameters():
        if name.endswith(RESIDUAL_PROJECTIONS):
            nn.init.zeros_(param) if zero else nn.init.normal_(param, mean=0.0, std=residual_std)
    output = model.get_output_embeddings()
    if zero and output is not None and not getattr(config, "tie_weights", True):
        nn.init.zeros_(output.weight)


def resized_rows(tensor: Tensor, num_rows: int, std: float) -> Tensor:
    """`tensor` with `num_rows` rows: existing rows kept, new ones ~ N(0, std) (or zero when std is 0)."""
    resized = torch.zeros((num_rows, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    if std > 0:
        nn.init.normal_(resized, std=std)
    kept = min(num_rows, tensor.shape[0])
    resized[:kept] = tensor.detach()[:kept]
    return resized


def resized_parameter(param: nn.Parameter, num_rows: int, std: float) -> nn.Parameter:
    """`param` as a new parameter of `num_rows` rows (`resized_rows`), frozen if it was frozen."""
    return nn.Parameter(resized_rows(param, num_rows, std), requires_grad=param.requires_grad)


class BaseLanguageModel(nn.Module, ABC):
    """The interface the trainer, tasks and inference rely on; every architecture implements it.

    Subclasses set the class attributes below, build `self.backbone` (with `hidden_size`,
    `blocks` and `token_embedding`) and implement `forward`.
    """

    architecture_name: ClassVar[str]  # set by @register_architecture
    model_type: ClassVar[str]
    default_task: ClassVar[str]
    # True when `default_task` is the only objective this model can train (its forward is built for it).
    only_default_task: ClassVar[bool] = False
    # The tokenizer a pretraining template trains for it (`tokenizer.type`).
    default_tokenizer: ClassVar[str] = "bpe"
    supports_generation: ClassVar[bool]
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # Named sets of defaults (`model.recipe`): "classic" is the config class's own, "modern" the faster one.
    recipes: ClassVar[dict[str, dict[str, Any]]] = {}

    backbone: nn.Module

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    @abstractmethod
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool = False) -> ModelOutput:
        """`attention_mask`: 1 = real token, 0 = padding. `labels`: aligned with input_ids, -100 ignored."""

    def decode_step(self, input_ids: Tensor, attention_mask: Tensor, cache: Any = None) -> tuple[Tensor, Any]:
        """The next-token logits (batch, vocab) after each row, and the cache for the next step.

        Generation calls this first with the whole (left-padded) prompt and `cache=None`, then
        with one new token per row (batch, 1) and the cache it got back; `attention_mask`
        always covers every position so far (1 = real, 0 = padding). This fallback caches
        only the tokens and re-runs `forward` on the whole sequence at every step: correct for
        any causal model, and slow; architectures with a real cache override it.
        """
        sequence = input_ids if cache is None else torch.cat((cache, input_ids), dim=1)
        logits = self(sequence, attention_mask=attention_mask).logits
        return logits[:, -1], sequence

    def head_output(self, head: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, labels: Tensor | None,
                    token_type_ids: Tensor | None, output_hidden_states: bool,
                    score_targets_only: bool = False) -> ModelOutput:
        """backbone -> `head` -> token loss: the forward pass of every single-head language model.

        `score_targets_only` (with labels) projects only the target positions to the vocabulary, and
        `logits` is then (num_targets, vocab) in row-major order of the targets. Masked LM asks for
        it in training: 85% of its positions have no target, and the vocabulary projection at them
        is most of the step's work.
        """
        hidden, all_hidden = self.backbone(input_ids, attention_mask, token_type_ids, output_hidden_states)
        if labels is not None and score_targets_only:
            targets = labels != IGNORE_INDEX
            hidden, labels = hidden[targets], labels[targets]
        logits = head(hidden)
        loss = token_loss(logits, labels) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits, hidden_states=all_hidden)

    @property
    def num_layers(self) -> int:
        return len(self.backbone.blocks)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.token_embedding

    def get_output_embeddings(self) -> nn.Linear | None:
        """The output projection tied to the input embeddings; None for models without one."""
        return None

    def tie_weights(self) -> None:
        """Make the output projection share its weight with the token embedding (one parameter), unless the
        config unties them (`model.tie_weights: false`)."""
        output = self.get_output_embeddings()
        if output is not None and getattr(self.config, "tie_weights", True):
            output.weight = self.get_input_embeddings().weight

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        """Change the vocabulary size, keeping the rows of surviving tokens and the weight tying.

        New rows are drawn from the initialisation distribution; a frozen embedding stays frozen.
        """
        old = self.get_input_embeddings()
        new = nn.Embedding(new_num_tokens, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(resized_rows(old.weight, new_num_tokens, INIT_STD))
        new.weight.requires_grad_(old.weight.requires_grad)
        self.backbone.token_embedding = new
        self.config.vocab_size = new_num_tokens
        output = self.get_output_embeddings()
        if output is not None:
            output.out_features = new_num_tokens
        if output is not None and not getattr(self.config, "tie_weights", True):  # an untied head's own new rows
            output.weight = resized_parameter(output.weight, new_num_tokens, INIT_STD)
        self.tie_weights()
        return new

    # ---- freezing (the nanoGPT-compatible API's methods, on every model) ----------------------------
    def transformer_modules(self) -> list[nn.Module]:
        """What `freeze_transformer_weights` freezes: the backbone (a model with a second stack adds it)."""
        return [self.backbone]

    def freeze_transformer_weights(self) -> None:
        """Freeze the transformer: only the head (and anything outside the transformer) trains."""
        for module in self.transformer_modules():
            module.requires_grad_(False)

    def unfreeze_transformer_weights(self) -> None:
        for module in self.transformer_modules():
            module.requires_grad_(True)

    def get_frozen_status(self) -> bool:
        """True while the whole transformer is frozen: the nanoGPT-compatible API's boolean, the same
        here as on `compat.nanogpt.GPT`. `frozen_parts()` gives the per-part detail."""
        return not any(p.requires_grad for module in self.transformer_modules() for p in module.parameters())

    def frozen_parts(self) -> dict[str, Any]:
        """Which parts are frozen: embeddings, each block, the transformer, the rest (the heads); and parameter
        counts."""
        blocks = [not any(p.requires_grad for p in block.parameters()) for block in self.backbone.blocks]
        embeddings = [p for n, p in self.backbone.named_parameters() if "embedding" in n.split(".")[0]]
        transformer = {id(p) for module in self.transformer_modules() for p in module.parameters()}
        rest = [p for p in self.parameters() if id(p) not in transformer]
        return {"embeddings_frozen": bool(embeddings) and not any(p.requires_grad for p in embeddings),
                "frozen_blocks": [i for i, frozen in enumerate(blocks) if frozen],
                "backbone_frozen": self.get_frozen_status(),
                "head_frozen": bool(rest) and not any(p.requires_grad for p in rest),
                "trainable_params": self.get_parameter_count(trainable_only=True),
                "frozen_params": self.get_parameter_count() - self.get_parameter_count(trainable_only=True)}

    def get_parameter_count(self, trainable_only: bool = False) -> int:
        """Number of parameters; a tied weight counts once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def get_memory_footprint(self) -> int:
        """Bytes taken by parameters and buffers."""
        tensors = [*self.parameters(), *self.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def description(self) -> dict[str, Any]:
        """What `model_config.json` records to rebuild this model (a task model adds its head)."""
        return {"architecture": self.architecture_name, "config": asdict(self.config)}

    def save_pretrained(self, directory: str | Path) -> None:
        """Write `model.safetensors` and `model_config.json` into `directory` (created if needed), and
        the files of each attached part (a LoRA adapter) with its entry in `model_config.json`."""
        directory = Path(directory)
        entries = {key: part.describe(self) for key, part in ATTACHMENTS.items()}
        entries = {key: entry for key, entry in entries.items() if entry is not None}
        write_model_directory(directory, self, {**self.description(), **entries})
        for key in entries:
            ATTACHMENTS[key].save(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> BaseLanguageModel:
        """The model saved in `directory`, in eval mode.

        On the base class this returns whichever model the directory records; on a subclass the
        directory must hold that architecture (or a subclass of it).
        """
        directory = Path(directory)
        meta = read_model_config(directory)
        model = build_described_model(meta, directory / CONFIG_FILE)
        if not isinstance(model, cls):
            raise UserError(f"{directory / CONFIG_FILE} holds a {meta['architecture']!r} model, "
                            f"not a {cls.__name__}; load it with BaseLanguageModel.from_pretrained.")
        for key, part in ATTACHMENTS.items():
            if key in meta:
                part.attach(model, directory)
        load_weights(model, directory)
        return model.eval()


@dataclass(frozen=True)
class Attachment:
    """A part added onto a built model (a LoRA adapter), saved with it under its `model_config.json` key."""

    describe: Callable[[nn.Module], Any]  # the entry for model_config.json; None: the model has no such part
    save: Callable[[nn.Module, Path], None]  # its own files, into the model directory
    attach: Callable[[nn.Module, Path], None]  # rebuild it (untrained) on a model built from the directory


# model_config.json key -> what builds (without weights) the model a directory with that key holds, and
# -> the part attached to it. The module that owns a key registers it, so this one imports none of them.
MODEL_KINDS: dict[str, Callable[[dict, Path], BaseLanguageModel]] = {}
ATTACHMENTS: dict[str, Attachment] = {}


def build_described_model(meta: dict, path: Path) -> BaseLanguageModel:
    """A freshly initialised model of the kind the parsed `model_config.json` at `path` describes."""
    for key, build in MODEL_KINDS.items():
        if key in meta:
            return build(meta, path)
    arch = get_architecture(meta["architecture"])
    return arch(config_from_dict(arch, meta["config"], path))


def config_from_dict(arch: type[BaseLanguageModel], values: dict, path: Path) -> Any:
    try:
        return arch.config_class(**values)
    except TypeError as exc:  # an unknown or missing field
        raise UserError(f"{path}: the 'config' does not fit architecture {arch.architecture_name!r} "
                        f"({exc}).") from None


def part_config(meta: dict, key: str, config_class: type, path: Path, what: str) -> Any:
    """`config_class` built from the `key` entry of a parsed `model_config.json` (a head's settings);
    an unknown or missing field is an error naming the file, the entry and `what` it should describe."""
    try:
        return config_class(**meta[key])
    except TypeError as exc:
        raise UserError(f"{path}: {key!r} does not describe {what} ({exc}).") from None
