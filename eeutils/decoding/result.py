"""What one generation produced and what it cost (`GenerationResult`), and the decoder's refusal error."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STRATEGIES = ("propagate", "defer")


class DecodingUnsupported(NotImplementedError):
    """The model's architecture (or this strategy on it) is not supported by the early-exit decoder."""


@dataclass
class GenerationResult:
    """What one generation produced and what it cost.

    tokens: generated ids (the prompt excluded); prompt_ids; text: decoded tokens (None without a
    tokenizer). exit_layers: per generated token, the block after which it was predicted (1..L; L =
    the full model). Cost (in block-rows: one block applied to one position): layers_run = sum of
    exit layers (each token's own blocks); deferred_rows = blocks run later for earlier positions
    (defer); state_rows = skipped SSM blocks run on the copied state (propagate on SSM);
    kv_writes = skipped attention blocks that only wrote K/V (propagate); owed_rows = blocks the
    pending positions still owed when generation stopped (defer: work deferred but never needed by
    a later token); flush_rows = the end-of-run completion of the cache that pays it (defer with
    complete_cache; not part of the timing). lens_calls = full layer
    readouts (final norm + full head) evaluated for exit decisions, verifications and predictions.
    Checks (`eeutils.decoding.checks`): check_macs = weight multiply-adds of the checks that are not a
    full readout, by check kind ("state", "candidates"); verify_calls = full readouts run to confirm a
    firing candidate-set check, failed_verifies = those that refuted it; host_syncs = device-to-host
    reads of decisions (one per check, verification and prediction).
    Times in seconds: prefill_seconds (prompt[:-1]), decode_seconds (the per-token loop),
    wall_time = prefill + decode. cache: the model's cache object after generation.
    """

    tokens: list[int]
    prompt_ids: list[int]
    exit_layers: np.ndarray
    n_layers: int
    strategy: str
    rule: object = None
    text: str | None = None
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    flush_seconds: float = 0.0
    layers_run: int = 0
    deferred_rows: int = 0
    state_rows: int = 0
    kv_writes: int = 0
    owed_rows: int = 0
    flush_rows: int = 0
    lens_calls: int = 0
    check_macs: dict = field(default_factory=dict)
    verify_calls: int = 0
    failed_verifies: int = 0
    host_syncs: int = 0
    cache: object = field(default=None, repr=False)
    cache_lengths: list[int] | None = None
    trace: list[dict] | None = field(default=None, repr=False)
    backend: str = "driver"
    meta: dict = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def wall_time(self) -> float:
        return self.prefill_seconds + self.decode_seconds

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of the decode loop (prefill excluded)."""
        return self.n_tokens / self.decode_seconds if self.decode_seconds > 0 else float("nan")

    @property
    def mean_exit_layer(self) -> float:
        return float(np.mean(self.exit_layers)) if len(self.exit_layers) else float("nan")

    @property
    def skip_ratio(self) -> float:
        """Mean (L - exit) / L over generated tokens: what the exits skip, before any cache repair."""
        if not len(self.exit_layers):
            return float("nan")
        return float(np.mean((self.n_layers - np.asarray(self.exit_layers)) / self.n_layers))

    @property
    def layers_computed(self) -> int:
        """Whole-block rows actually run during decoding: own layers + deferred + SSM state updates."""
        return int(self.layers_run + self.deferred_rows + self.state_rows)

    @property
    def mean_layers_computed(self) -> float:
        """layers_computed per generated token (L for the full model; K/V-only writes not counted)."""
        return self.layers_computed / self.n_tokens if self.n_tokens else float("nan")

    @property
    def compute_ratio(self) -> float:
        """layers_computed / (n_tokens * L): the share of full-model block work that was done."""
        return self.mean_layers_computed / self.n_layers if self.n_tokens else float("nan")

    def summary(self) -> dict:
        return dict(strategy=self.strategy, rule=getattr(self.rule, "label", str(self.rule)), n_tokens=self.n_tokens,
                    n_layers=self.n_layers, mean_exit_layer=self.mean_exit_layer, skip_ratio=self.skip_ratio,
                    mean_layers_computed=self.mean_layers_computed, compute_ratio=self.compute_ratio,
                    deferred_rows=self.deferred_rows, state_rows=self.state_rows, kv_writes=self.kv_writes,
                    owed_rows=self.owed_rows, flush_rows=self.flush_rows, lens_calls=self.lens_calls,
                    check_macs=sum(self.check_macs.values()), verify_calls=self.verify_calls,
                    failed_verifies=self.failed_verifies, host_syncs=self.host_syncs,
                    tokens_per_s=self.tokens_per_s, wall_time=self.wall_time, backend=self.backend)
