"""Token vectors from co-occurrence within a text unit: PPMI, then a truncated SVD (PPMI-SVD).

A unit is one sentence, line or document as token ids. Two positions of a unit co-occur when they
are different positions of it (`window=None`, the default) or at most `window` positions apart;
every such ordered pair adds one to `counts[a, b]`, so a token repeated in a unit co-occurs with
itself. The sentence-wide count is the one that holds polarity at small budgets (docs/models.md,
"Co-occurrence-initialised embeddings"): counted within +-2 words, the same vectors lose most of
their lead over bag of words.

PPMI(a, b) = max(0, log(P(a, b) / (P(a) P_alpha(b)))), P_alpha(b) = count(b)^alpha / sum_c count(c)^alpha,
the context-distribution smoothing of Levy, Goldberg and Dagan (2015): alpha = 0.75 raises rare
contexts' probability, so pairs with a rare token no longer get the largest PMI by chance.
The vectors are U S^0.5 of the rank-`dim` SVD of the PPMI matrix (the symmetric split of the
singular values that word-similarity work found best); a token that never co-occurs gets zeros.

Counting is vectorised over distances: for each d, every pair of positions d apart in the same unit
at once, so the cost is the number of pairs (a few seconds for 10k sentences, the SVD included; see
docs/models.md). Whole-unit counting is quadratic in a unit's length: units are sentences or lines;
give long documents a `window`.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch

# Context-distribution smoothing of PPMI (Levy, Goldberg and Dagan 2015).
DEFAULT_ALPHA = 0.75
# Extra components the randomized SVD computes and drops: they make the kept ones accurate.
SVD_OVERSAMPLING = 10
SVD_POWER_ITERATIONS = 4


def flatten_units(units: Iterable[Sequence[int]], ignore_ids: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, unit index of each) of all units back to back, `ignore_ids` (special tokens) dropped."""
    pieces, owners = [], []
    for index, unit in enumerate(units):
        ids = np.asarray(unit, dtype=np.int64).reshape(-1)
        pieces.append(ids)
        owners.append(np.full(len(ids), index, dtype=np.int64))
    if not pieces:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ids, owner = np.concatenate(pieces), np.concatenate(owners)
    ignored = np.asarray(sorted(set(ignore_ids)), dtype=np.int64)
    keep = ~np.isin(ids, ignored)
    return ids[keep], owner[keep]


def longest_units_first(ids: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tokens reordered so that longer units come first (each unit's tokens in their order), with
    the length of each token's unit: counting then costs the number of pairs, whatever the longest unit."""
    lengths = np.bincount(owner) if len(owner) else np.zeros(0, dtype=np.int64)
    order = np.lexsort((owner, -lengths[owner]))  # stable: a unit's tokens keep their order
    return ids[order], owner[order], lengths[owner[order]]


def cooccurrence_counts(units: Iterable[Sequence[int]], vocab_size: int, window: int | None = None,
                        ignore_ids: Iterable[int] = ()) -> torch.Tensor:
    """The (vocab_size, vocab_size) sparse, coalesced float64 matrix of co-occurrence counts (see the module)."""
    if window is not None and window < 1:
        raise ValueError(f"window must be at least 1 (or None for the whole unit), got {window}")
    ids, owner = flatten_units(units, ignore_ids)
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), found {ids.min()}..{ids.max()}")
    ids, owner, unit_length = longest_units_first(ids, owner)
    longest = int(unit_length[0]) if len(unit_length) else 0
    reach = longest - 1 if window is None else min(window, longest - 1)
    firsts, seconds = [], []
    for distance in range(1, reach + 1):
        # only units longer than `distance` hold such pairs: with the longest first, a prefix
        end = int(np.searchsorted(-unit_length, -distance, side="left"))
        near, near_owner = ids[:end], owner[:end]
        same_unit = near_owner[:-distance] == near_owner[distance:]
        firsts.append(near[:-distance][same_unit])
        seconds.append(near[distance:][same_unit])
    left = np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int64)
    right = np.concatenate(seconds) if seconds else np.zeros(0, dtype=np.int64)
    return symmetric_counts(np.minimum(left, right), np.maximum(left, right), vocab_size)


def symmetric_counts(low: np.ndarray, high: np.ndarray, vocab_size: int) -> torch.Tensor:
    """The count matrix of unordered pairs (low <= high), each pair counted in both orders: a pair
    of two different tokens adds one to [a, b] and to [b, a], a token with itself two to [a, a].

    Counting unique pair keys is several times faster than coalescing a sparse tensor of ones.
    """
    keys, occurrences = torch.unique(torch.from_numpy(low * vocab_size + high), return_counts=True)
    first, second = keys // vocab_size, keys % vocab_size
    occurrences = occurrences.to(torch.float64)
    off_diagonal = first != second
    rows = torch.cat([first, second[off_diagonal]])
    cols = torch.cat([second, first[off_diagonal]])
    values = torch.cat([torch.where(off_diagonal, occurrences, 2 * occurrences), occurrences[off_diagonal]])
    return sparse_matrix(rows, cols, values, (vocab_size, vocab_size))


def sparse_matrix(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A coalesced sparse COO matrix; the indices are built here, so the invariant checks are skipped."""
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape, check_invariants=False).coalesce()


def ppmi(counts: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """Positive PMI of a sparse count matrix (rows: tokens, columns: contexts), with context smoothing
    `alpha` (1.0: none); zero counts stay zero. Sparse and coalesced, in the counts' dtype."""
    counts = counts.coalesce()
    rows, cols = counts.indices()
    values = counts.values()
    row_totals = torch.zeros(counts.shape[0], dtype=values.dtype).index_add_(0, rows, values)
    col_totals = torch.zeros(counts.shape[1], dtype=values.dtype).index_add_(0, cols, values)
    smoothed = col_totals ** alpha
    context_probability = smoothed / smoothed.sum()
    total = values.sum()
    pmi = torch.log(values / total) - torch.log(row_totals[rows] / total) - torch.log(context_probability[cols])
    keep = pmi > 0
    return sparse_matrix(rows[keep], cols[keep], pmi[keep], counts.shape)


def svd_vectors(matrix: torch.Tensor, dim: int, seed: int = 0) -> torch.Tensor:
    """U S^0.5 of the rank-`dim` SVD of a sparse square matrix, in float32; rows and columns that are
    all zero get zero vectors, and components beyond the matrix's rank come out as zeros.

    The SVD runs on the non-zero rows and columns only (`randomized_svd`), its random draws from a
    generator seeded with `seed`, so the same matrix gives the same vectors.
    """
    matrix = matrix.coalesce()
    rows, cols = matrix.indices()
    used = torch.unique(torch.cat([rows, cols]))
    vectors = torch.zeros(matrix.shape[0], dim, dtype=torch.float32)
    if len(used) == 0:
        return vectors
    position = torch.full((matrix.shape[0],), -1, dtype=torch.long)
    position[used] = torch.arange(len(used))
    compact = sparse_matrix(position[rows], position[cols], matrix.values().to(torch.float32), (len(used), len(used)))
    rank = min(dim, len(used))
    u, s = randomized_svd(compact, rank, torch.Generator().manual_seed(seed))
    vectors[used, :rank] = u * s.sqrt()
    return vectors


def randomized_svd(matrix: torch.Tensor, rank: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The top `rank` left singular vectors and values of a sparse matrix (Halko, Martinsson and
    Tropp 2011: a random range finder with power iterations). Products run on CSR copies of the
    matrix and its transpose, several times faster than `torch.svd_lowrank` on a COO matrix."""
    with warnings.catch_warnings():  # CSR is "in beta"; these two products are all it is used for
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        forward, backward = matrix.to_sparse_csr(), matrix.t().coalesce().to_sparse_csr()
    width = min(rank + SVD_OVERSAMPLING, matrix.shape[1])
    basis = torch.linalg.qr(forward @ torch.randn(matrix.shape[1], width, generator=generator)).Q
    for _ in range(SVD_POWER_ITERATIONS):
        basis = torch.linalg.qr(forward @ torch.linalg.qr(backward @ basis).Q).Q
    small = (backward @ basis).t()  # basis^T A, (width, n)
    u_small, s, _ = torch.linalg.svd(small, full_matrices=False)
    return (basis @ u_small)[:, :rank], s[:rank]


def ppmi_svd_vectors(units: Iterable[Sequence[int]], vocab_size: int, dim: int = 100, window: int | None = None,
                     alpha: float = DEFAULT_ALPHA, ignore_ids: Iterable[int] = (), seed: int = 0) -> torch.Tensor:
    """(vocab_size, dim) float32 token vectors: counts -> PPMI -> U S^0.5 (see the module)."""
    counts = cooccurrence_counts(units, vocab_size, window=window, ignore_ids=ignore_ids)
    return svd_vectors(ppmi(counts, alpha), dim, seed=seed)


def mean_vectors(units: Iterable[Sequence[int]], vectors: torch.Tensor) -> torch.Tensor:
    """One vector per unit: the mean of its tokens' vectors, over the tokens that have one (a token
    whose vector is all zeros never co-occurred); a unit with none gets zeros."""
    known = vectors.abs().sum(dim=1) > 0
    means = torch.zeros(0, vectors.shape[1], dtype=vectors.dtype)
    rows = []
    for unit in units:
        ids = torch.as_tensor(np.asarray(unit, dtype=np.int64).reshape(-1))
        ids = ids[known[ids]]
        rows.append(vectors[ids].mean(dim=0) if len(ids) else torch.zeros(vectors.shape[1], dtype=vectors.dtype))
    return torch.stack(rows) if rows else means
