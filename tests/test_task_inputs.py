"""What a task needs is passed to it, not left behind by an earlier call: the finetuning model's head
is sized to the labels of the splits it is given, whatever the task object has seen before."""
from __future__ import annotations

import torch

from model_foundry.config import load_config
from model_foundry.data.labelled import LabelSet
from model_foundry.tasks import DatasetSplits, build_task
from model_foundry.tokenizer import train_tokenizer


def classification_task():
    tokenizer = train_tokenizer("char", 64, texts=iter(["good bad fine movie plot"]), min_frequency=1)
    config = load_config({"experiment": {"kind": "finetuning"}, "task": {"type": "sequence_classification"},
                          "model": {"architecture": "bert", "n_layer": 1, "n_head": 2, "n_embd": 16,
                                    "block_size": 16}}).config
    return build_task(config, tokenizer)


def test_the_head_is_sized_to_the_labels_of_the_splits_passed_in():
    task = classification_task()
    assert task.label_set is None, "a fresh task has read no data"
    labels = LabelSet(["negative", "neutral", "positive"])
    model = task.build_model(DatasetSplits(train=[], labels=labels))
    assert model.head_config.labels == labels.labels and model.head_config.num_outputs == 3
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[2, 5, 6, 3]])).logits
    assert logits.shape == (1, 3)
    two = task.build_model(DatasetSplits(train=[], labels=LabelSet(["bad", "good"])))
    assert two.head_config.num_outputs == 2, "the second model follows its own splits, not the first call"
