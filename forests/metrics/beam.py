"""Beam search over a grown forest, and the answers it gives. Pure: no Django.

A beam is a path from the root; it is named by its last node. Its score aggregates the values of its nodes below the
root: ``min``, ``mean``, ``last`` or ``product``. A node without a value (no rollout or label reaches it) makes the
score of ``min``, ``mean`` and ``product`` undefined, and that of ``last`` when it is the last node; a beam without a
score ranks below every beam with one.

Beam search with N beams starts at the root; each round replaces every unfinished beam (one whose last node has
children) by all its one-step extensions, keeps finished beams as they are, and keeps the N best by score (ties: the
lower node id first); it stops when every kept beam ends at a node without children. The tree's answer is the
prediction of the best beam's last node; a rollout that ends at a node with children counts in the values but is
never an answer.
"""

from __future__ import annotations

import heapq
from enum import StrEnum

import numpy as np

from forests.metrics.forest import ForestArrays


class Aggregation(StrEnum):
    MIN = "min"
    MEAN = "mean"
    LAST = "last"
    PRODUCT = "product"


def path_scores(forest: ForestArrays, values: np.ndarray, aggregation: Aggregation | str) -> np.ndarray:
    """The score of the beam ending at each node (NaN for roots and beams without a score), top down, one
    vectorised step per depth."""
    aggregation = Aggregation(aggregation)
    scores = np.full(forest.size, np.nan)
    levels = forest.levels
    if len(levels) < 2:
        return scores
    if aggregation is Aggregation.LAST:
        scores[:] = values
        scores[levels[0]] = np.nan
        return scores
    scores[levels[1]] = values[levels[1]]
    for level in levels[2:]:
        above = scores[forest.parent[level]]
        if aggregation is Aggregation.MIN:
            scores[level] = np.minimum(above, values[level])  # NaN propagates, as it must
        else:  # running sum (mean) or running product
            scores[level] = above * values[level] if aggregation is Aggregation.PRODUCT else above + values[level]
    if aggregation is Aggregation.MEAN:
        below_root = forest.depth > 0
        scores[below_root] = scores[below_root] / forest.depth[below_root]
    return scores


def score_ranks(scores: np.ndarray) -> np.ndarray:
    """Each node's position in the order of beam search's preference: scored before unscored, higher score first,
    then lower node id (= lower index). Comparing two ranks compares two beams."""
    missing = np.isnan(scores)
    negated = np.where(missing, 0.0, -scores)
    order = np.lexsort((np.arange(scores.size), negated, missing))
    ranks = np.empty(scores.size, dtype=np.int64)
    ranks[order] = np.arange(scores.size)
    return ranks


def beam_search(forest: ForestArrays, ranks: np.ndarray, num_beams: int, roots: np.ndarray) -> np.ndarray:
    """The last node of the best beam of each tree rooted in ``roots`` (same order), by ``ranks``."""
    if num_beams < 1:
        raise ValueError("num_beams must be at least 1")
    # Numpy arrays indexed with Python ints: a tree's search touches a few nodes, so converting whole arrays to lists
    # would cost more time and memory than it saves.
    rank_of = ranks.__getitem__
    starts = forest.child_start
    kids = forest.child_index
    answers = np.empty(len(roots), dtype=np.int64)
    for position, root in enumerate(roots.tolist()):
        beams = [root]
        while True:
            candidates: list[int] = []
            grew = False
            for beam in beams:
                first, last = int(starts[beam]), int(starts[beam + 1])
                if first < last:
                    candidates.extend(kids[first:last].tolist())
                    grew = True
                else:
                    candidates.append(beam)
            if not grew:
                break
            beams = heapq.nsmallest(num_beams, candidates, key=rank_of)
        answers[position] = beams[0]
    return answers
