"""How the decoder checks an exit rule at one layer: one implementation per `CHECK_KINDS` row, and the
counters of what the checks cost.

- ``none`` (static): nothing to compute; the exit layer is fixed.
- ``state`` (hidden_saturation): the cosine of consecutive residual states, computed on the device, one
  host sync per checked layer, no head.
- ``full``: final norm + full head + softmax statistics (`token_statistics`); the readout at the exit layer
  doubles as the prediction.
- ``candidates``: final norm + the head restricted to a candidate set S of token ids carried from earlier
  full readouts (the top-k of the previous token's prediction and of the last refuted verification). The
  statistics over S are optimistic whenever the layer's true top-1 is in S (softmax over S: max-prob and
  margin can only be larger; entropy is replaced by -log of that max-prob, a lower bound), so the cheap
  check fires wherever the full rule would. A firing cheap check is verified with the exact full head:
  confirmed, that readout is the prediction; refuted, S is refreshed from it and decoding continues. So
  every exit is one the full rule takes at that layer, with the full rule's token; an exit can only come
  later than the full rule's when the true top-1 was outside S.

Every check adds its weight multiply-adds to `CheckCosts` (`CHECK_KINDS[kind].macs`); full readouts (checks,
verifications and predictions) are counted as ``lens_calls``.

Every check reads through the generation's lens (`CheckCosts.lens`, an `eeutils.lens.lenses.Lens`): the
head-reading checks and an early prediction decode the state the lens transforms (`CheckCosts.lens_state`); under
the tuned lens that is one d x d product more per checked layer and token (`Lens.transform_macs`,
`LENS_EXTRA_MACS`, counted under ``check_macs["translator"]``); hidden-state saturation reads the untransformed
states, as the readout does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..analysis.rules import CHECK_KINDS, ExitRule, rule_fires, update_streak
from ..arch.loading import LoadedModel
from ..lens.statistics import token_statistics
from ..lens.tuned import translator_macs

__all__ = ["CheckCosts", "CHECKS", "LENS_EXTRA_MACS", "make_check"]

# the weight multiply-adds a lens adds to one readout of one token at one layer, over the final norm and head
LENS_EXTRA_MACS = {"logit": lambda d: 0.0, "tuned": translator_macs}


@dataclass
class CheckCosts:
    """What the checks of one generation cost. check_macs: weight multiply-adds of the checks that are not a
    full readout, by check kind ("translator": the tuned lens' d x d products); lens_calls: full readouts (final
    norm + full head), checks, verifications and predictions alike; verify_calls / failed_verifies: full
    readouts run to confirm a firing candidate check, and those that refuted it; host_syncs: device-to-host reads of decisions (one per check, verification and
    prediction)."""

    d: int
    vocab: int
    check_macs: dict = field(default_factory=dict)
    lens_calls: int = 0
    verify_calls: int = 0
    failed_verifies: int = 0
    host_syncs: int = 0
    lens: object = None  # the generation's `Lens` (set by the decoder): what the head-reading checks decode

    def add(self, kind: str, k: int = 0) -> None:
        self.check_macs[kind] = self.check_macs.get(kind, 0) + CHECK_KINDS[kind].macs(self.d, self.vocab, k)

    def lens_state(self, j: int, h: torch.Tensor) -> torch.Tensor:
        """The state the lens decodes at layer j (`Lens.transform_hidden`: h itself under the logit lens and at
        the last layer), the multiply-adds of its transform counted."""
        macs = self.lens.transform_macs(self.d, j)
        if macs:
            self.check_macs["translator"] = self.check_macs.get("translator", 0) + macs
        return self.lens.transform_hidden(h, j)

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """A full readout of a lens state: the model's final norm, head and logit transforms (`Lens.unembed`)."""
        self.lens_calls += 1
        return self.lens.unembed(h)


class _Check:
    """One rule's check. at(j, h, prev) -> (fires, logits or None, stats): the rule's decision at checked layer
    j from the state h (prev = the state after block j-1); logits, when a full readout was made, serve as the
    prediction if the token exits. begin_token / end_token(logits of the prediction) bracket each token."""

    def __init__(self, lm: LoadedModel, rule: ExitRule, costs: CheckCosts):
        self.lm, self.rule, self.costs, self.L = lm, rule, costs, lm.n_layers

    def observes(self, j: int) -> bool:
        return self.rule.checks_at(j)

    def begin_token(self) -> None:
        pass

    def end_token(self, logits: torch.Tensor) -> None:
        pass

    def fires(self, stats: dict, j: int) -> bool:
        return bool(rule_fires(self.rule, {k: stats[k] for k in self.rule.required_stats}, j, self.L)[0])

    def at(self, j, h, prev):
        raise NotImplementedError


class _NoCheck(_Check):
    def at(self, j, h, prev):
        return self.fires({}, j), None, {}


class _StateCheck(_Check):
    def at(self, j, h, prev):
        self.costs.add("state")
        self.costs.host_syncs += 1
        stats = token_statistics(None, self.rule.required_stats, hidden=(h, prev))
        return self.fires(stats, j), None, stats


class _FullCheck(_Check):
    def __init__(self, lm, rule, costs):
        super().__init__(lm, rule, costs)
        self.streak = "top1_streak" in rule.required_stats
        # a streak rule over all layers reads every layer from 1 (its streak counts from there); over a subset,
        # only the checked layers
        self.every_layer = self.streak and not rule.subset

    def observes(self, j):
        return self.every_layer or self.rule.checks_at(j)

    def begin_token(self):
        self.run, self.prev_top1 = None, None

    def at(self, j, h, prev):
        z = self.costs.readout(self.costs.lens_state(j, h))
        self.costs.host_syncs += 1
        stats = token_statistics(z, self.rule.required_stats)
        if self.streak:
            self.run = update_streak(self.run if self.run is not None else 0, self.prev_top1, stats["top1"])
            self.prev_top1 = stats["top1"]
            stats["top1_streak"] = int(self.run[0])
        return self.fires(stats, j), z, stats


class _CandidateCheck(_Check):
    def __init__(self, lm, rule, costs):
        super().__init__(lm, rule, costs)
        self.k = min(rule.candidates, lm.vocab_size)
        self.weight = lm.head.weight
        self.bias = getattr(lm.head, "bias", None)
        self.recent: list[torch.Tensor] = []  # top-k ids of the last two full readouts, newest first
        self.ids = self.w_s = self.b_s = None

    def _refresh(self, z: torch.Tensor) -> None:
        self.recent = [torch.topk(z[0], self.k).indices] + self.recent[:1]
        self.ids = torch.unique(torch.cat(self.recent))
        self.w_s = self.weight.index_select(0, self.ids.to(self.weight.device))
        self.b_s = None if self.bias is None else self.bias.index_select(0, self.ids.to(self.bias.device))

    def end_token(self, logits):
        self._refresh(logits)

    def _verify(self, j, h):
        z = self.costs.readout(h)
        self.costs.host_syncs += 1
        self.costs.verify_calls += 1
        stats = token_statistics(z, self.rule.required_stats)
        fires = self.fires(stats, j)
        if not fires:
            self.costs.failed_verifies += 1
            self._refresh(z)
        return fires, z, stats

    def at(self, j, h, prev):
        h = self.costs.lens_state(j, h)  # once per check: the cheap check and its verification read the same state
        if self.ids is None:  # the first token has no carried set: check with the full head, which seeds it
            return self._verify(j, h)
        self.costs.add("candidates", int(self.ids.numel()))
        n = self.lm.final_norm(h.to(self.w_s.device))
        zs = self.lm.logit_fn(F.linear(n, self.w_s, self.b_s).float())[0]
        lse = torch.logsumexp(zs, dim=-1)
        vals = torch.topk(zs, min(2, zs.numel())).values
        p = torch.exp(vals - lse)
        second = p[1] if p.numel() > 1 else torch.zeros_like(p[0])
        mp, margin, ent = torch.stack([p[0], p[0] - second, (lse - vals[0]).clamp_min(0.0)]).tolist()
        self.costs.host_syncs += 1
        optimistic = {"max_prob": mp, "margin": margin, "entropy": ent}
        if not self.fires(optimistic, j):
            return False, None, optimistic
        return self._verify(j, h)


CHECKS: dict[str, type[_Check]] = {"none": _NoCheck, "state": _StateCheck, "full": _FullCheck,
                                   "candidates": _CandidateCheck}
assert set(CHECKS) == set(CHECK_KINDS), "every CHECK_KINDS row needs an implementation"


def make_check(lm: LoadedModel, rule: ExitRule, costs: CheckCosts) -> _Check:
    """The implementation of the rule's check kind (`ExitRule.check`)."""
    return CHECKS[rule.check](lm, rule, costs)
