"""nanoGPT-style training loop for the zoo (one torch thread by default).

Data: every train document of every corpus source, in a fixed shuffled order (data seed 0, the
same for every model), as ``<|bos|> text <|eos|>``, concatenated and cut into non-overlapping
windows of ``CONTEXT`` tokens; windows are visited in a fixed permutation. The model seed only
changes the initialisation. Optimiser: AdamW (betas 0.9/0.95, weight decay 0.1 on matrices),
linear warmup then cosine decay to 10% of the peak rate, gradient clipping at 1.0.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from eeutils.arch.params import count_params, moe_shape  # noqa: F401  (count_params: the cards' parameter counts)
from eeutils.zoo.layerskip import LayerSkipConfig, LayerSkipObjective
from eeutils.zoo.recipes import CONTEXT, EOS_ID, Recipe

DATA_SEED = 0
N_VAL_WINDOWS_PERIODIC = 64
N_VAL_WINDOWS_FINAL = 256
EVAL_EVERY = 50
STATE_EVERY = 50
STATE_KEYS = ("model", "opt", "step", "history", "elapsed")


class TrainingStateError(RuntimeError):
    """A saved training state cannot be resumed from (unsafe, damaged or from another run)."""


def load_state(state_file: Path) -> dict:
    """The resumable state saved by `train`, loaded with ``weights_only=True`` (tensors, dicts, lists,
    numbers and strings only), so a crafted file cannot run code."""
    try:
        st = torch.load(state_file, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - UnpicklingError, EOFError, RuntimeError (zip), ...
        raise TrainingStateError(
            f"cannot resume from {state_file}: it is not a plain training state ({type(err).__name__}: {err}). "
            "Delete it to restart this model's training from step 0.") from err
    missing = [k for k in STATE_KEYS if not isinstance(st, dict) or k not in st]
    if missing:
        raise TrainingStateError(f"cannot resume from {state_file}: it lacks {missing}. "
                                 "Delete it to restart this model's training from step 0.")
    return st


# ------------------------------------------------------------------ data
def encode_docs(tokenizer, texts: list[str]) -> list[list[int]]:
    """``<|bos|> text <|eos|>`` per document (BOS comes from the tokenizer's post-processor)."""
    enc = tokenizer.backend_tokenizer if hasattr(tokenizer, "backend_tokenizer") else tokenizer
    return [e.ids + [EOS_ID] for e in enc.encode_batch(texts)]


def token_stream(tokenizer, texts: list[str], shuffle_seed: int | None = DATA_SEED) -> torch.Tensor:
    docs = encode_docs(tokenizer, texts)
    order = list(range(len(docs)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    return torch.tensor([t for i in order for t in docs[i]], dtype=torch.long)


def windows(stream: torch.Tensor, context: int = CONTEXT) -> torch.Tensor:
    n = len(stream) // context
    return stream[: n * context].view(n, context)


def stream_sha256(stream: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(stream.to(torch.int32).numpy().tobytes()).hexdigest()


class Batches:
    """Deterministic batches of windows: a fixed permutation per epoch (seed = DATA_SEED + epoch)."""

    def __init__(self, wins: torch.Tensor, batch: int, seed: int = DATA_SEED):
        self.wins, self.batch, self.seed = wins, batch, seed
        self._perm_epoch, self._perm = -1, None

    def get(self, step: int) -> torch.Tensor:
        per_epoch = len(self.wins) // self.batch
        epoch, i = divmod(step, per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.wins), generator=g), epoch
        return self.wins[self._perm[i * self.batch:(i + 1) * self.batch]]


def val_subset(val_wins: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` evenly spaced validation windows (all of them if fewer)."""
    if len(val_wins) <= n:
        return val_wins
    idx = torch.linspace(0, len(val_wins) - 1, n).round().long()
    return val_wins[idx]


def unigram_loss(train_stream: torch.Tensor, val_wins: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of the add-one-smoothed train unigram distribution on the
    same validation targets the models are scored on (every window position but the first)."""
    counts = torch.bincount(train_stream, minlength=vocab_size).double() + 1.0
    logp = torch.log(counts / counts.sum())
    return float(-logp[val_wins[:, 1:].reshape(-1)].mean())


# ------------------------------------------------------------------ model helpers
def build_model(recipe: Recipe, vocab_size: int):
    import transformers

    torch.manual_seed(recipe.seed)
    cls = getattr(transformers, recipe.class_name)
    return cls(recipe.config(vocab_size))


def lm_forward(model, x: torch.Tensor, train: bool = False):
    kwargs = {}
    if train and moe_shape(model.config):
        kwargs["output_router_logits"] = True  # adds the load-balancing loss during training only
    return model(input_ids=x, labels=x, use_cache=False, **kwargs)


def make_objective(model, recipe: Recipe):
    """``objective(x, step) -> loss``: the plain next-token loss, or the LayerSkip objective when the
    recipe has ``layerskip`` settings (eeutils.zoo.layerskip). Call ``objective.close()`` when done."""
    if not recipe.layerskip:
        def plain(x, step):
            return lm_forward(model, x, train=True).loss

        plain.close = lambda: None
        return plain
    return LayerSkipObjective(model, LayerSkipConfig(**recipe.layerskip), recipe.steps, recipe.seed,
                              forward=lambda m, x: lm_forward(m, x, train=True))


@torch.no_grad()
def evaluate(model, val_wins: torch.Tensor, batch: int = 16) -> float:
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(val_wins), batch):
        x = val_wins[i:i + batch]
        out = lm_forward(model, x)
        m = x[:, 1:].numel()
        tot += out.loss.item() * m
        n += m
    model.train()
    return tot / n


def lr_at(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    frac = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def make_optimizer(model, recipe: Recipe):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=recipe.lr, betas=(0.9, 0.95), eps=1e-8)


def half_copy(model):
    """fp16 copy of the weights (what ships), as a model object."""
    import copy

    return copy.deepcopy(model).to(torch.float16)


def save_hf(model, folder: Path, tokenizer_dir: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    half_copy(model).save_pretrained(str(folder))
    for f in Path(tokenizer_dir).iterdir():
        if f.is_file():
            shutil.copy2(f, folder / f.name)
    leftovers = list(folder.glob("*.bin"))
    if leftovers:
        raise RuntimeError(f"unexpected non-safetensors weights: {leftovers}")


# ------------------------------------------------------------------ the loop
@dataclass
class TrainResult:
    model: object
    history: list
    seconds: float
    tokens: int


def train(recipe: Recipe, train_wins: torch.Tensor, val_wins: torch.Tensor, vocab_size: int,
          state_dir: Path | None = None, checkpoint_cb=None, batches=None, progress: bool = True) -> TrainResult:
    """Train ``recipe`` from its initialisation for ``recipe.steps`` steps.

    ``state_dir``: where a resumable state (model, optimiser, step, history) is kept every
    ``STATE_EVERY`` steps; a run restarted with the same arguments continues from it.
    ``checkpoint_cb(step, model)`` is called at the steps in ``recipe.checkpoints`` (step 0 = init).
    """
    from tqdm.auto import tqdm

    model = build_model(recipe, vocab_size)
    model.train()
    opt = make_optimizer(model, recipe)
    batches = batches or Batches(train_wins, recipe.batch, seed=DATA_SEED + recipe.data_seed)
    val_small = val_subset(val_wins, N_VAL_WINDOWS_PERIODIC)
    start, history, elapsed = 0, [], 0.0
    state_file = Path(state_dir) / "state.pt" if state_dir else None
    if state_file and state_file.is_file():
        st = load_state(state_file)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        start, history, elapsed = st["step"], st["history"], st["elapsed"]
    torch.manual_seed(recipe.seed + 1000 + start)
    t0 = time.time() - elapsed
    bar = tqdm(range(start, recipe.steps), desc=recipe.name, disable=not progress, mininterval=10)
    objective = make_objective(model, recipe)  # plain loss or LayerSkip (its randomness is keyed by seed and step)
    for step in bar:
        if checkpoint_cb and step in recipe.checkpoints:
            checkpoint_cb(step, model)
        if step % EVAL_EVERY == 0:
            history.append({"step": step, "val_loss": evaluate(model, val_small), "seconds": time.time() - t0})
        for g in opt.param_groups:
            g["lr"] = lr_at(step, recipe)
        x = batches.get(step)
        loss = objective(x, step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{recipe.name}: non-finite loss at step {step}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr_at(step, recipe):.1e}")
        if state_file and (step + 1) % STATE_EVERY == 0 and step + 1 < recipe.steps:
            _save_state(state_file, model, opt, step + 1, history, time.time() - t0)
    if checkpoint_cb and recipe.steps in recipe.checkpoints:
        checkpoint_cb(recipe.steps, model)
    objective.close()
    seconds = time.time() - t0
    return TrainResult(model, history, seconds, recipe.steps * recipe.batch * train_wins.shape[1])


def _save_state(state_file: Path, model, opt, step: int, history: list, elapsed: float) -> None:
    """The resumable training state (model, optimiser, next step, history, seconds so far), written atomically."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "history": history, "elapsed": elapsed}, tmp)
    os.replace(tmp, state_file)


def micro_run(recipe: Recipe, steps: int = 8, vocab_size: int = 256, seed: int = 0) -> list[float]:
    """Tiny synthetic run of one recipe family (for tests): returns the training losses.
    The data is a repeated random sequence, which any working model learns in a few steps."""
    from dataclasses import replace

    r = replace(recipe, d=32, layers=2, steps=steps, batch=4, warmup=1, lr=3e-3, checkpoints=())
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(3, vocab_size, (33,), generator=g)
    x = seq.repeat(4, 1)
    model = build_model(r, vocab_size)
    model.config.max_position_embeddings = getattr(model.config, "max_position_embeddings", 64)
    opt = make_optimizer(model, r)
    losses = []
    for step in range(steps):
        loss = lm_forward(model, x, train=True).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses
