"""Interleaved timing rounds: the one loop `compare_decoding` and `self_speculative_speed` time decoders with.

Every decoder decodes every prompt once per round; round r starts at decoder r mod n and wraps around, so a
background load that drifts over time hits all decoders alike. A decoder's speed relative to a reference
decoder is the median over rounds of the ratio of their tokens/s in the same round.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

__all__ = ["Rounds", "timed_rounds"]


@dataclass
class Rounds:
    """seconds[i]: decoder i's decode time over all prompts, one entry per round; results[i]: its results
    (`GenerationResult`, one per prompt) of the last round."""

    seconds: list[list[float]]
    results: list[list]

    def n_tokens(self, i: int) -> int:
        """Tokens decoder i generated over all prompts (one round)."""
        return sum(r.n_tokens for r in self.results[i])

    def median_seconds(self, i: int) -> float:
        return statistics.median(self.seconds[i])

    def tokens_per_s(self, i: int) -> float:
        """Decoder i's tokens over its median decode time."""
        return self.n_tokens(i) / self.median_seconds(i)

    def speed_ratio(self, i: int, reference: int = 0) -> float:
        """Median over rounds of (decoder i's tokens/s) / (the reference's tokens/s in the same round)."""
        n, n_ref = self.n_tokens(i), self.n_tokens(reference)
        return statistics.median((n / t) / (n_ref / t_ref)
                                 for t, t_ref in zip(self.seconds[i], self.seconds[reference]))


def timed_rounds(decoders: Sequence[Callable], prompts: Sequence, repeats: int) -> Rounds:
    """Run `repeats` interleaved rounds: each decoder (a function prompt -> GenerationResult) decodes every
    prompt once per round, the order rotated by one decoder per round. Decode time is the results'
    ``decode_seconds`` (prefill and, for defer, the end-of-run flush excluded)."""
    n = len(decoders)
    seconds: list[list[float]] = [[] for _ in range(n)]
    results: list[list] = [[] for _ in range(n)]
    for rep in range(repeats):
        k = rep % n
        for i in list(range(k, n)) + list(range(k)):
            res = [decoders[i](p) for p in prompts]
            seconds[i].append(sum(r.decode_seconds for r in res))
            results[i] = res
    return Rounds(seconds, results)
