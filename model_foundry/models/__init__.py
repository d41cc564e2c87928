"""Models: GPT, BERT, ELECTRA, the GPT+BERT hybrid and recurrent (LSTM, GRU, RNN) language models,
task heads and poolers, the registry and factory.

Importing this package imports every module in it, so each architecture registers itself: adding
one is one new file here with `@register_architecture("name")` on its class (see docs/models.md,
"Adding an architecture"). `create_model("gpt", ...)` and `BaseLanguageModel.from_pretrained(dir)`
then work right away.
"""
import importlib
import pkgutil

from model_foundry.models.backbones.transformer import TransformerConfig
from model_foundry.models.base import BaseLanguageModel, ModelOutput
from model_foundry.models.bert import Bert, BertConfig
from model_foundry.models.electra import Electra, ElectraConfig
from model_foundry.models.gpt import GPT, GPTConfig
from model_foundry.models.hf_backbone import HFConfig, HFModel
from model_foundry.models.hf_formats import read_checkpoint_config
from model_foundry.models.hybrid import HybridConfig, HybridLM
from model_foundry.models.recurrent import GRU, LSTM, RNN, GRUConfig, LSTMConfig, RNNConfig, RecurrentConfig
from model_foundry.models.registry import (ARCHITECTURES, PRESETS, create_config, create_model, get_architecture,
                                           register_architecture)
from model_foundry.models.task_model import TaskHeadConfig, TaskModel

for module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{module.name}")

__all__ = ["ARCHITECTURES", "PRESETS", "BaseLanguageModel", "Bert", "BertConfig", "GPT", "GPTConfig", "HFConfig", "HFModel",
           "Electra", "ElectraConfig", "HybridConfig", "HybridLM", "GRU", "GRUConfig", "LSTM", "LSTMConfig", "RNN", "RNNConfig",
           "RecurrentConfig", "ModelOutput", "TaskHeadConfig", "TaskModel", "TransformerConfig",
           "create_config", "create_model", "get_architecture", "read_checkpoint_config", "register_architecture"]
