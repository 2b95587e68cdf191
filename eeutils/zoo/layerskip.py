"""The LayerSkip training objective (Elhoushi et al. 2024, arXiv 2404.16710) for the zoo's Llama rows.

Two parts, both added to an unchanged model (no new parameters, so the result is a normal HF folder):

1. **Layer dropout** (stochastic depth per sequence): at step ``t`` block ``l`` (0-based, ``L`` blocks) is
   skipped for a sequence with probability ``p(l, t) = p_max * S(t) * D(l)``.
   Depth scale ``D``: ``exp`` is the paper's ``D(l) = 2^(l/(L-1)) - 1`` (0 at the first block, 1 at the
   last); ``linear`` is ``l/(L-1)``. Time scale ``S``: ``exp`` is the paper's choice for pretraining from
   scratch, ``S(t) = 2^(t/T) - 1`` (no dropout at the start, rising to ~1 at the end); ``constant`` (1) is
   its choice for continual pretraining and fine-tuning. A skipped block passes its input through unchanged.
2. **Early-exit loss** through the one shared final norm and LM head: ``loss = sum_l w(l, t) CE_l`` with
   ``w(l, t) = C(t, l) e(l) / sum_i C(t, i) e(i)``. Per-layer scale ``e`` grows quadratically with depth,
   the paper's form counted from 1 (as the authors' torchtune code does with ``layer_id + 1``) so the first
   block's exit is trained too: ``e(l) = e_scale * (l+1)(l+2)/2`` for ``l < L-1`` and
   ``e(L-1) = L + e_scale * (L-1)L/2`` for the last block. The curriculum ``C`` decides which early exits
   are on at step ``t`` (the last layer's loss is always on):
   ``rotational`` (the paper's C_rot,R): exit ``l`` on when ``l mod R == t mod R``;
   ``gradual`` (the paper's C_grad): exits switched on from the deepest down, one every ``T/(2L)`` steps;
   ``none``: every exit on at every step.

Hidden states come from forward hooks on the blocks (the block's output is the residual stream), never from
``output_hidden_states``, whose layout differs by family. The last layer's loss is the model's own loss, so with
``p_max=0`` and exit losses off a step is exactly the plain training step (tested). Dropout draws come from a
generator seeded by (seed, step): a run is deterministic per seed and resumes without extra state.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

# Where the blocks, the final norm and the head sit, per config.model_type (the zoo trains LayerSkip on Llama only).
PARTS = {"llama": ("model.layers", "model.norm", "lm_head")}
DEPTH_SCALES = ("exp", "linear")
TIME_SCALES = ("exp", "constant")
CURRICULA = ("rotational", "gradual", "none")


@dataclass(frozen=True)
class LayerSkipConfig:
    """Hyper-parameters of the recipe (see the module docstring for the formulas)."""

    p_max: float = 0.2
    depth_scale: str = "exp"
    time_scale: str = "exp"
    e_scale: float = 1.0
    curriculum: str = "rotational"
    rotation: int = 2
    exit_losses: bool = True

    def __post_init__(self):
        if not 0.0 <= self.p_max < 1.0:
            raise ValueError(f"p_max must be in [0, 1), got {self.p_max}")
        for name, value, allowed in (("depth_scale", self.depth_scale, DEPTH_SCALES),
                                     ("time_scale", self.time_scale, TIME_SCALES),
                                     ("curriculum", self.curriculum, CURRICULA)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.rotation < 1:
            raise ValueError(f"rotation must be >= 1, got {self.rotation}")
        if self.e_scale < 0:
            raise ValueError(f"e_scale must be >= 0, got {self.e_scale}")

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ schedules (pure functions, unit-tested)
def depth_scale(cfg: LayerSkipConfig, n_layers: int) -> list[float]:
    """D(l) for l = 0..L-1: 0 at the first block, 1 at the last."""
    if n_layers == 1:
        return [1.0]
    if cfg.depth_scale == "linear":
        return [l / (n_layers - 1) for l in range(n_layers)]
    return [math.exp(l * math.log(2) / (n_layers - 1)) - 1 for l in range(n_layers)]


def time_scale(cfg: LayerSkipConfig, step: int, total_steps: int) -> float:
    """S(t): the paper's exponential rise 2^(t/T) - 1 for pretraining from scratch, or 1."""
    if cfg.time_scale == "constant":
        return 1.0
    return math.exp(step * math.log(2) / max(1, total_steps)) - 1


def dropout_rates(cfg: LayerSkipConfig, n_layers: int, step: int, total_steps: int) -> list[float]:
    """p(l, t) = p_max * S(t) * D(l) for every block."""
    s = time_scale(cfg, step, total_steps)
    return [cfg.p_max * s * d for d in depth_scale(cfg, n_layers)]


def loss_scales(cfg: LayerSkipConfig, n_layers: int) -> list[float]:
    """Unnormalised per-layer scales e(l) (quadratic in depth, counted from 1; the last layer gets extra weight)."""
    L = n_layers
    e = [cfg.e_scale * (l + 1) * (l + 2) / 2 for l in range(L - 1)]
    return e + [L + cfg.e_scale * (L - 1) * L / 2]


def curriculum_mask(cfg: LayerSkipConfig, n_layers: int, step: int, total_steps: int) -> list[bool]:
    """C(t, l): which exits' losses are on at ``step`` (the last layer is always on)."""
    L = n_layers
    if not cfg.exit_losses:
        on = [False] * (L - 1)
    elif cfg.curriculum == "none":
        on = [True] * (L - 1)
    elif cfg.curriculum == "rotational":
        on = [l % cfg.rotation == step % cfg.rotation for l in range(L - 1)]
    else:  # gradual: one more exit (from the deepest down) every T / (2L) steps
        k = min(L - 1, int(step // max(1e-9, total_steps / (2 * L))))
        on = [l >= L - 1 - k for l in range(L - 1)]
    return on + [True]


def exit_weights(cfg: LayerSkipConfig, n_layers: int, step: int, total_steps: int) -> list[float]:
    """Normalised loss weights w(l, t) = C(t, l) e(l) / sum_i C(t, i) e(i); they sum to 1."""
    mask = curriculum_mask(cfg, n_layers, step, total_steps)
    e = [s if m else 0.0 for s, m in zip(loss_scales(cfg, n_layers), mask)]
    total = sum(e)
    return [v / total for v in e]


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(1_000_003 * (seed + 1) + step)


def _get(root, dotted: str):
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


# ------------------------------------------------------------------ the objective
class LayerSkipObjective:
    """``objective(x, step) -> loss`` for one batch of token windows ``x`` [batch, context].

    Registers hooks on the model's blocks (removed by ``close()``); they act only in training mode, so
    evaluation in between steps sees the plain model. ``last`` holds the step's per-layer losses,
    weights and dropped blocks (for logging and tests).
    """

    def __init__(self, model, cfg: LayerSkipConfig, total_steps: int, seed: int, forward=None):
        mt = model.config.model_type
        if mt not in PARTS:
            raise ValueError(f"LayerSkip training knows the layout of {sorted(PARTS)}, not {mt!r}; add a row to "
                             "eeutils.zoo.layerskip.PARTS (blocks, final norm, head paths)")
        blocks, norm, head = PARTS[mt]
        self.model, self.cfg, self.total_steps, self.seed = model, cfg, total_steps, seed
        self.blocks, self.norm, self.head = _get(model, blocks), _get(model, norm), _get(model, head)
        self.n_layers = len(self.blocks)
        self._forward = forward or (lambda m, x: m(input_ids=x, labels=x, use_cache=False))
        self._drop = None  # [L, batch] bool while a step's forward runs
        self._drop_now = None  # the last step's draws (kept for ``last``)
        self._keep_states: set[int] = set()
        self._states: dict[int, torch.Tensor] = {}
        self._inputs: dict[int, torch.Tensor] = {}
        self.last: dict = {}
        self._handles = []
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_pre_hook(self._pre_hook(i), with_kwargs=True))
            self._handles.append(block.register_forward_hook(self._post_hook(i)))

    def _pre_hook(self, i):
        def hook(module, args, kwargs):
            if module.training and self._drop is not None and bool(self._drop[i].any()):
                self._inputs[i] = args[0] if args else kwargs["hidden_states"]
        return hook

    def _post_hook(self, i):
        def hook(module, args, output):
            if not module.training:
                return None
            h = output[0] if isinstance(output, tuple) else output
            new = None
            if i in self._inputs:  # layer dropout: skipped sequences keep the block's input
                keep_in = self._drop[i].to(h.device).view(-1, *([1] * (h.dim() - 1)))
                new = torch.where(keep_in, self._inputs.pop(i).to(h.dtype), h)
                h = new
            if i in self._keep_states:
                self._states[i] = h
            if new is None:
                return None
            return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new
        return hook

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        L = self.n_layers
        rates = dropout_rates(self.cfg, L, step, self.total_steps)
        if any(r > 0 for r in rates):
            u = torch.rand((L, x.shape[0]), generator=_step_generator(self.seed, step))
            self._drop = u < torch.tensor(rates).unsqueeze(1)
        else:
            self._drop = None
        weights = exit_weights(self.cfg, L, step, self.total_steps)
        self._keep_states = {l for l in range(L - 1) if weights[l] > 0}
        self._states, self._inputs = {}, {}
        try:
            out = self._forward(self.model, x)
        finally:
            self._drop_now, self._drop = self._drop, None
        losses = {L - 1: out.loss}
        targets = x[:, 1:].reshape(-1)
        for l in sorted(self._keep_states):
            logits = self.head(self.norm(self._states[l]))[:, :-1]
            losses[l] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets)
        self._states = {}
        loss = out.loss if weights[L - 1] == 1.0 else sum(weights[l] * losses[l] for l in losses)
        self.last = {"losses": {l: float(v.detach()) for l, v in losses.items()}, "weights": weights, "rates": rates,
                     "dropped": None if self._drop_now is None else self._drop_now.clone()}
        return loss

    def close(self) -> None:
        """Remove the hooks (the model is then the plain model again)."""
        for h in self._handles:
            h.remove()
        self._handles = []
