"""The `ppmi` reference: the count-based mark a pretrained backbone has to pass with few labels.

Token vectors from co-occurrence within a sentence of the unlabelled training texts (PPMI-SVD,
model_foundry.data.cooccurrence), a sentence vector the mean of its tokens' vectors, and a
logistic regression trained on the N labelled sentences. It is a reference, not a pretrained
backbone: it trains no network and takes seconds. The last round's script
(benchmarks/quickstart_transfer/ppmi_baseline.py, words, scikit-learn) measured 0.674 with 200
labels on the quickstart's reviews against 0.593 for bag of words; this one reads the run's tokens.

The regression is multinomial, fp32, full-batch L-BFGS from zero weights (so it is deterministic),
with the L2 penalty of scikit-learn's `C` (the script's C = 10): mean loss + |W|^2 / (2 C N).
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from model_foundry.data.cooccurrence import mean_vectors, ppmi_svd_vectors
from model_foundry.data.token_cache import TokenizerLike

# The inverse L2 strength the measurement used for the PPMI-SVD features.
DEFAULT_C = 10.0
LBFGS_STEPS = 200


class PpmiReference:
    """The PPMI-SVD vectors of one unlabelled corpus, reused for every labelled subset (see the module)."""

    def __init__(self, unlabelled_texts: Sequence[str], tokenizer: TokenizerLike, dim: int = 100,
                 window: int | None = None):
        self.special = tokenizer.special_ids
        self.tokenizer = tokenizer
        self.vectors = ppmi_svd_vectors(self.encode(unlabelled_texts), tokenizer.vocab_size, dim=dim, window=window)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [[i for i in ids if i not in self.special] for ids in self.tokenizer.encode_batch(list(texts))]

    def accuracy(self, train_texts: Sequence[str], train_labels: Sequence[Hashable], test_texts: Sequence[str],
                 test_labels: Sequence[Hashable], c: float = DEFAULT_C) -> float:
        """Test accuracy of the regression fit on the labelled texts; a test label never seen in training counts as wrong."""
        classes = sorted(set(train_labels), key=str)
        index = {label: i for i, label in enumerate(classes)}
        weights, bias = fit_logistic_regression(mean_vectors(self.encode(train_texts), self.vectors),
                                                torch.tensor([index[label] for label in train_labels]), len(classes), c)
        predicted = (mean_vectors(self.encode(test_texts), self.vectors) @ weights + bias).argmax(dim=1).tolist()
        correct = sum(classes[p] == label for p, label in zip(predicted, test_labels))
        return correct / len(test_labels)


def ppmi_reference_accuracy(train_texts: Sequence[str], train_labels: Sequence[Hashable],
                            unlabelled_texts: Sequence[str], test_texts: Sequence[str],
                            test_labels: Sequence[Hashable], tokenizer: TokenizerLike, dim: int = 100,
                            window: int | None = None, c: float = DEFAULT_C) -> float:
    """Test accuracy of logistic regression on mean PPMI-SVD vectors of `unlabelled_texts` (their labels,
    if any, are never seen); `window` None counts co-occurrence within the whole sentence."""
    reference = PpmiReference(unlabelled_texts, tokenizer, dim=dim, window=window)
    return reference.accuracy(train_texts, train_labels, test_texts, test_labels, c=c)


def fit_logistic_regression(features: torch.Tensor, targets: torch.Tensor, num_classes: int,
                            c: float = DEFAULT_C) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights (dim, classes), bias (classes)) minimising mean cross-entropy + |weights|^2 / (2 c N)."""
    features = features.to(torch.float32)
    weights = torch.zeros(features.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    penalty = 1.0 / (2.0 * c * len(features))
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=LBFGS_STEPS, tolerance_grad=1e-6,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(features @ weights + bias, targets) + penalty * weights.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach(), bias.detach()
