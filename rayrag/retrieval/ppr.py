"""Personalized PageRank solvers over a cached column-stochastic transition matrix.

Both solve the fixed point `GraphRetriever` ranks passages with (HippoRAG, damping 0.5):

    x = alpha (T x + mass_dangling(x) * r) + (1 - alpha) r

T[i, j] = w_ij / deg_j (column-stochastic), r the restart distribution (sums to 1), and the
mass on dangling (edgeless) nodes restarts at the seeds, as `nx.pagerank` does.

* `power_iteration` — global: every iteration multiplies the whole matrix, so a query costs
  O(edges) (~27 iterations to an L1 change of 1e-8 at damping 0.5).
* `push` — local forward push (Andersen, Chung & Lang 2006, "Local graph partitioning using
  PageRank vectors"): residual mass starts on the seeds and is pushed outward only where it
  is large, so a query costs O(1 / ((1 - alpha) epsilon)) edges whatever the graph's size.

Push invariant: with P(v) = (1 - alpha)(I - alpha M)^-1 v, M = T plus the dangling-to-restart
columns, the exact answer is x = p + P(res) at every step (pushing u moves (1 - alpha) res_u
into p and alpha res_u along M's column u, which is exactly P's own expansion). P keeps sums
and signs and P(v) >= (1 - alpha) v, so after folding (1 - alpha) res into p at the end

    0 <= x_i - p_i   and   sum_i (x_i - p_i) = alpha * ||res||_1,

i.e. every node's error is at most `alpha * ||res||_1`, which `push` reports as `bound`.

Threshold: a node is pushed while res_u >= epsilon * max(edges_u, 1) (ACL's degree scaling,
counted in stored edges rather than weight). Each push then turns at least
(1 - alpha) * epsilon * edges_u of residual into score, and scores sum to at most 1, so the
edges touched over a whole query are <= 1 / ((1 - alpha) epsilon) — the size-free cost bound.
An unscaled threshold would push every hub that gets any mass, and Zipf hubs' degrees grow
with the corpus. The price: a hub may keep residual up to epsilon * its degree, which the
reported bound includes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from rayrag.errors import ConfigError

PPR_TOLERANCE = 1e-8  # L1 change between iterations; damping 0.5 halves the error each step
PPR_MAX_ITER = 200


@dataclass(frozen=True)
class PushStats:
    """What one `push` call did: its cost (never timing) and its error bound."""

    rounds: int  # frontier rounds (vectorised batches of pushes)
    pushes: int  # node pushes
    edges_touched: int  # stored transition entries read (plus restart entries for dangling pushes)
    nodes_touched: int  # nodes that ever held residual
    bound: float  # max over nodes of |push - exact| <= this (alpha * leftover residual mass)


def power_iteration(
    transition: sp.csr_array,
    dangling: np.ndarray,
    restart: np.ndarray,
    alpha: float,
    tol: float = PPR_TOLERANCE,
    max_iter: int = PPR_MAX_ITER,
) -> np.ndarray:
    """PPR fixed point x = alpha (T x + mass_dangling * r) + (1 - alpha) r, as nx.pagerank.

    Dangling mass restarts at the seeds (nx's default when `dangling` is None), so the two
    solvers agree to the tolerance.
    """
    x = restart.copy()
    for _ in range(max_iter):
        nxt = alpha * (transition @ x + x[dangling].sum() * restart) + (1 - alpha) * restart
        err = float(np.abs(nxt - x).sum())
        x = nxt
        if err < tol:
            break
    return x


def push(
    columns: sp.csc_array, dangling: np.ndarray, restart: np.ndarray, alpha: float, epsilon: float
) -> tuple[np.ndarray, PushStats]:
    """Local forward-push PPR: (dense scores like `power_iteration`, `PushStats`).

    `columns` is the transition matrix in CSC form (column u = where u's walk goes),
    `restart` the dense restart distribution. Work is bounded by the seeds' neighbourhood
    and `epsilon` (module docstring), apart from one scan of `restart` for its support and
    three length-n zero allocations: calloc'd pages, cheap even at 300k nodes (a dict
    accumulator would only add Python per-edge cost). Per-edge cost still rises with graph
    size as its arrays fall out of cache (measured: docs/DECISIONS.md).
    """
    if not (np.isfinite(epsilon) and 0 < epsilon < 1):
        raise ConfigError(
            f"ppr_push_epsilon must be in (0, 1), got {epsilon!r} (kg.ppr_push_epsilon)"
        )
    if not 0 < alpha < 1:
        raise ConfigError(f"ppr_damping must be in (0, 1), got {alpha!r} (kg.ppr_damping)")
    n = restart.shape[0]
    indptr, indices, data = columns.indptr, columns.indices, columns.data
    seeds = np.flatnonzero(restart)
    seed_mass = restart[seeds]
    p = np.zeros(n)
    res = np.zeros(n)
    # scratch for `_distinct`; calloc'd, so only touched pages cost
    slot = np.zeros(n, dtype=np.int64)
    res[seeds] = seed_mass
    candidates = seeds
    touched = [seeds]
    rounds = pushes = edges = 0
    while candidates.size:
        starts, ends = indptr[candidates], indptr[candidates + 1]
        degree = ends - starts
        hot = res[candidates] >= epsilon * np.maximum(degree, 1)
        frontier = candidates[hot]
        if not frontier.size:
            break
        starts, lens = starts[hot], degree[hot]
        mass = res[frontier]
        res[frontier] = 0.0  # before spreading: a frontier node may also receive this round
        p[frontier] += (1 - alpha) * mass
        rounds += 1
        pushes += frontier.size
        total = int(lens.sum())
        edges += total
        # Gather every frontier column's entries in one go: positions start_k .. start_k+len_k-1.
        offsets = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(total)
        targets = indices[offsets]
        spread = data[offsets] * np.repeat(alpha * mass, lens)
        stuck = dangling[frontier]  # no (weighted) edges: the walk restarts at the seeds
        if stuck.any():
            targets = np.concatenate([targets, seeds])
            spread = np.concatenate([spread, alpha * float(mass[stuck].sum()) * seed_mass])
            edges += seeds.size
        np.add.at(res, targets, spread)
        candidates = _distinct(targets, slot)
        touched.append(candidates)
    support = _distinct(np.concatenate(touched), slot)
    leftover = res[support]
    p[support] += (1 - alpha) * leftover  # P(v) >= (1 - alpha) v: still a lower bound, closer
    stats = PushStats(
        rounds=rounds,
        pushes=pushes,
        edges_touched=edges,
        nodes_touched=int(support.size),
        bound=float(alpha * leftover.sum()),
    )
    return p, stats


def _distinct(indices: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """`indices` without repeats, in O(len) with no sort (np.unique's sort was half of push's
    time): each index writes its position into `slot`; whichever write lands, exactly one
    position per index reads itself back."""
    order = np.arange(indices.size)
    slot[indices] = order
    return indices[slot[indices] == order]
