"""Tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens",
arXiv 2303.08112): one affine translator per layer, applied to the residual stream before the model's own
final norm and head, trained to minimise KL(final distribution || lens distribution).

Layers follow the readout's convention: 0 is the embedding output (a pre-hook on the first block), 1..L the
block outputs (forward hooks), so the result does not depend on a family's ``output_hidden_states`` layout.
Translators are identity-initialised (``h + W h + b`` with ``W = 0``, ``b = 0``: training starts at the logit
lens); layer L has none (it already reproduces the model's logits). Training text is the zoo corpus' TRAIN
split (offline, for zoo and real models alike), never the held-out workloads (which read the test split).
Trained translators are cached as safetensors keyed by the model's weights digest, the text and the settings,
with a checksum of their tensors in the file's metadata: a truncated, zeroed or foreign file is named in a warning
and retrained, never read as numbers. The translators the notebooks use ship with the package (data/lenses,
trained once by `python -m eeutils.notebook.lenses ship` from data/lenses/recipe.json) and are used only when
their recorded key (weights, text, settings, version) is the one asked for; otherwise a one-line warning says
why and the translators are trained. While it trains, `tuned_lens` keeps the trainer's resumable state beside the
cache file (written atomically every STATE_SECONDS): a run killed midway continues from it and ends with exactly the
translators an uninterrupted run gives; the state is removed once the translators are cached.

The pip package ``tuned-lens`` (0.2.0, 2023) was checked with transformers 5.24: it loads for GPT-2 and Llama
but raises ``NotImplementedError: Unknown model type`` for Qwen3-MoE, Mamba2 and Bamba (a fixed list of model
classes), and its training CLI needs torchdata and wandb; so this module implements the method for every
family the kit's adapter table knows.

``TunedLens.transform_hidden(h, layer)`` maps a layer's hidden state to its translated state, for the readout to
decode through the final norm and head (one extra d x d product per layer and token); a TunedLens is a `Lens`
(`eeutils.lens.lenses`), which `readout`, the decoder and the notebooks take as it is.
"""
from __future__ import annotations

import json
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from ..core.checks import check_integer, check_real
from ..core.env import eeutils_cache_dir
from ..core.io import atomic_write
from ..core.keys import cache_key as settings_key
from ..core.keys import state_dict_digest, weights_digest
from ..core.resources import data_path
from ..workloads import corpus as C
from .capture import capture_forward

LENS_VERSION = 1  # bump when the training procedure changes a number
LENSES = ("logit", "tuned")  # what `readout(lens=...)` accepts by name (`lenses.as_lens`; or a Lens object)
SHIPPED = "lenses"  # data/lenses/<model name>[@revision].safetensors: translators trained once, shipped


@dataclass(frozen=True)
class TunedLensSettings:
    """Training budget (small: the zoo models have about a million parameters) and optimiser.

    Default: 150 Adam steps of 8 windows x 128 tokens from 256 train-split windows, about 1-2 min per zoo
    model on one CPU thread; `SMOKE_LENS` is the smoke-mode budget (seconds)."""

    n_windows: int = 256  # training windows from the corpus train split
    context: int = 128
    steps: int = 150
    batch: int = 8
    lr: float = 3e-3  # Adam, linear decay to 0 (the paper uses SGD+Nesterov on far larger models)
    seed: int = 0

    def __post_init__(self):
        for k in ("n_windows", "context", "steps", "batch"):
            check_integer(k, getattr(self, k), 1, integral_floats=False)
        check_integer("seed", self.seed, 0, integral_floats=False)
        check_real("lr", self.lr, 0, lo_open=True)


class TunedLens(nn.Module):
    """The tuned lens: per-layer affine translators for layers 0..L-1 (layer L is the identity), decoded through
    the model's own unembedding. A `Lens` (`eeutils.lens.lenses`) once bound to a model (`bind`; `as_lens` and
    `readout(lens=...)` bind it); the translators alone make its state dict and its `digest`."""

    name = "tuned"

    def __init__(self, n_layers: int, d_model: int):
        super().__init__()
        self.n_layers, self.d_model = n_layers, d_model
        self.translators = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n_layers))
        for t in self.translators:
            nn.init.zeros_(t.weight)
            nn.init.zeros_(t.bias)
        self.unembed = None  # the model's `lenses.Unembed` once bound (a plain attribute: not in the state dict)
        self.lens_settings = None  # asdict(TunedLensSettings) it was trained with, when resolved from "tuned"

    def check_depth(self, model) -> "TunedLens":
        """Itself, after checking it has one translator per block of ``model`` (a ValueError if not)."""
        if self.n_layers != model.n_layers:
            raise ValueError(f"the TunedLens has {self.n_layers} translators, {model.name} has {model.n_layers} blocks")
        return self

    def bind(self, unembed, lens_settings: dict | None = None) -> "TunedLens":
        """Decode through `unembed` (a model's `lenses.Unembed`) from now on; record `lens_settings` if given."""
        self.unembed = unembed
        if lens_settings is not None:
            self.lens_settings = lens_settings
        return self

    def digest(self) -> str:
        """sha256 of the translators (what a readout made with them records and is cached under)."""
        return state_dict_digest(self)

    def record(self) -> dict:
        """The readout metadata of this lens: {lens, lens_digest, lens_settings}."""
        return {"lens": self.name, "lens_digest": self.digest(), "lens_settings": self.lens_settings}

    def transform_hidden(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """The translated residual state of ``layer`` (0..L), to decode with the final norm and head."""
        if not 0 <= layer <= self.n_layers:
            raise IndexError(f"layer must be in 0..{self.n_layers}, got {layer}")
        if layer == self.n_layers:
            return h
        t = self.translators[layer]
        if t.weight.device != h.device:
            self.to(h.device)
        return h + t(h.to(t.weight.dtype)).to(h.dtype)

    def translate(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """`transform_hidden(h, layer)`: the translated residual state of ``layer``."""
        return self.transform_hidden(h, layer)

    def transform_macs(self, d: int, layer: int) -> float:
        """Weight multiply-adds of one translation at ``layer`` per token: d x d + d below the last layer."""
        return translator_macs(d) if layer < self.n_layers else 0.0

    def forward(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """fp32 tuned-lens logits of ``layer``'s states h (bound lenses: `bind`)."""
        if self.unembed is None:
            raise ValueError("this TunedLens is not bound to a model: use eeutils.lens.as_lens(model, lens)")
        return self.unembed(self.transform_hidden(h, layer))

    def logits(self, model, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Tuned-lens logits of ``layer`` for a LoadedModel: final norm, head and logit transforms, as
        ``model.layer_logits`` computes them but differentiable (layer_logits runs in inference mode)."""
        z = self.transform_hidden(h.to(model.device), layer)
        return model.logit_fn(model.head(model.final_norm(z.to(model.dtype))).float())


def translator_macs(d: int) -> float:
    """Weight multiply-adds of one affine translator per token: a d x d product and a bias."""
    return float(d * d + d)


SMOKE_LENS = TunedLensSettings(n_windows=32, steps=12, batch=4)


def _d_model(model) -> int:
    return model.final_norm.weight.shape[-1] if hasattr(model.final_norm, "weight") else model.describe()["d_model"]


# ------------------------------------------------------------------ data and hidden states
def corpus_windows(model, split: str = "train", n: int = 512, context: int = 128, seed: int = 0) -> torch.Tensor:
    """``n`` token windows [n, context] of the zoo corpus (all sources, one split), tokenised by the model's tokenizer,
    documents packed in a fixed shuffled order (``seed``) and windows chosen evenly."""
    if model.tokenizer is None:
        raise ValueError(f"{model.name} has no tokenizer: pass token windows to train_tuned_lens instead")
    c = C.build_corpus()
    texts = [t for s in C.SOURCES for t in c.texts(s, split)]
    random.Random(seed).shuffle(texts)
    eos = model.tokenizer.eos_token_id
    ids: list[int] = []
    for t in texts:
        ids += model.tokenizer(t, verbose=False)["input_ids"] + ([eos] if eos is not None else [])
        if len(ids) >= 4 * n * context:
            break
    m = len(ids) // context
    if m < 1:
        raise ValueError(f"the {split} split gives fewer than {context} tokens")
    wins = torch.tensor(ids[: m * context]).view(m, context)
    return wins[torch.linspace(0, m - 1, min(n, m)).round().long()]


def _states(model, x: torch.Tensor):
    """(final log-probabilities [tokens, vocab], hidden states of layers 0..L each [tokens, d]) of one batch."""
    with torch.no_grad():
        out, states = capture_forward(model, x)
        final = F.log_softmax(out.logits.float().reshape(-1, out.logits.shape[-1]), dim=-1)
    # clone: the capture may run under inference mode, whose tensors cannot enter autograd
    return final.clone(), [s.float().reshape(-1, s.shape[-1]).clone() for s in states]


def _kl(final_logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(final || lens), nats."""
    return (final_logp.exp() * (final_logp - F.log_softmax(logits.float(), dim=-1))).sum(-1).mean()


# ------------------------------------------------------------------ training, evaluation, cache
def train_tuned_lens(model, windows: torch.Tensor, settings: TunedLensSettings = TunedLensSettings(),
                     progress: bool = True, state=None) -> TunedLens:
    """Fit the translators of a LoadedModel (frozen) on token ``windows`` [n, context]. Runs with autograd on
    even when called under inference mode (e.g. from inside `readout`), whose tensors cannot be trained.

    state: a file for the trainer's resumable state (translators, optimiser, schedule, batch sampler, step),
    written atomically every STATE_SECONDS; a run killed at any moment and rerun with the same file continues
    from it and ends with exactly the translators an uninterrupted run gives (`tuned_lens` keeps one beside
    its cache file while it trains)."""
    windows = _check_windows(model, windows)
    if not isinstance(settings, TunedLensSettings):
        raise TypeError(f"settings must be a TunedLensSettings, got {type(settings).__name__}")
    with torch.inference_mode(False), torch.enable_grad():
        torch.manual_seed(settings.seed)
        lens = TunedLens(model.n_layers, _d_model(model))
        opt = torch.optim.Adam(lens.parameters(), lr=settings.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / settings.steps)
        g = torch.Generator().manual_seed(settings.seed)
        parts = (lens, opt, sched, g)
        tag = settings_key(settings=asdict(settings), windows=windows.to(torch.int64).tolist(),
                           shape=[lens.n_layers, lens.d_model])
        start, saved = (_resume(Path(state), tag, *parts) if state is not None else 0), time.monotonic()
        model.model.eval()
        for p in model.model.parameters():
            p.requires_grad_(False)
        for step in tqdm(range(start, settings.steps), initial=start, total=settings.steps,
                         desc=f"tuned lens {model.name}", disable=not progress, mininterval=5):
            idx = torch.randint(0, len(windows), (min(settings.batch, len(windows)),), generator=g)
            final, states = _states(model, windows[idx])
            opt.zero_grad(set_to_none=True)
            for l in range(model.n_layers):  # one layer at a time: each translator's gradient comes from its own
                _kl(final, lens.logits(model, l, states[l])).backward()  # layer's KL only, so this equals the
            opt.step()  # gradient of the sum, and memory holds one [tokens x vocab] graph, not L
            sched.step()
            if state is not None and step + 1 < settings.steps and time.monotonic() - saved >= STATE_SECONDS:
                _save_state(Path(state), tag, step + 1, *parts)
                saved = time.monotonic()
    return lens.eval()


STATE_SECONDS = 20.0  # how often `train_tuned_lens` saves its resumable state (0: after every step)
STATE_KEYS = ("tag", "step", "lens", "opt", "sched", "generator")


def _check_windows(model, windows) -> torch.Tensor:
    """windows as they are if a non-empty 2-D integer tensor of ids in the model's vocabulary, else TypeError /
    ValueError naming `windows`."""
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.is_floating_point() \
            or windows.is_complex() or windows.dtype == torch.bool:
        got = f"a {windows.dim()}-D tensor of {windows.dtype}" if isinstance(windows, torch.Tensor) \
            else type(windows).__name__
        raise TypeError(f"windows must be a 2-D integer tensor [n, context] of token ids, got {got}")
    if windows.numel() == 0:
        raise ValueError(f"windows has no tokens (shape {tuple(windows.shape)})")
    lo, hi = int(windows.min()), int(windows.max())
    if lo < 0 or hi >= model.vocab_size:
        raise ValueError(f"windows holds token ids {lo}..{hi}, outside the vocabulary [0, {model.vocab_size}) of "
                         f"{model.name}")
    return windows


def _save_state(path: Path, tag: str, step: int, lens, opt, sched, gen) -> None:
    """The trainer's state after `step` steps, written atomically (a kill leaves the previous state whole)."""
    blob = {"tag": tag, "step": step, "lens": lens.state_dict(), "opt": opt.state_dict(),
            "sched": sched.state_dict(), "generator": gen.get_state()}
    atomic_write(path, lambda tmp: torch.save(blob, tmp))


def _resume(path: Path, tag: str, lens, opt, sched, gen) -> int:
    """The step to continue from: the state saved at `path` (loaded without unpickling code) put back into the
    trainer, or 0 (nothing there; a damaged file or one of another training run is named in a warning)."""
    if not path.is_file():
        return 0
    try:
        st = torch.load(path, weights_only=True, map_location="cpu")
        if not isinstance(st, dict) or any(k not in st for k in STATE_KEYS):
            raise ValueError(f"it lacks {[k for k in STATE_KEYS if not isinstance(st, dict) or k not in st]}")
        if st["tag"] != tag:
            raise ValueError("it belongs to another training run (other settings, windows or model shape)")
        lens.load_state_dict(st["lens"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        gen.set_state(st["generator"])
        return int(st["step"])
    except Exception as err:  # noqa: BLE001 - unpickling, zip and shape errors alike: start afresh
        warnings.warn(f"tuned-lens training state {path} not used ({type(err).__name__}: {err}); training from "
                      "step 0", stacklevel=3)
        return 0


@torch.no_grad()
def heldout_kl(model, windows: torch.Tensor, lens: TunedLens | None = None, batch: int = 16) -> np.ndarray:
    """Mean KL(final || layer l) for l = 0..L over ``windows``: the logit lens when ``lens`` is None."""
    tot = np.zeros(model.n_layers + 1)
    n = 0
    for i in range(0, len(windows), batch):
        final, states = _states(model, windows[i:i + batch])
        for l, h in enumerate(states):
            logits = lens.logits(model, l, h) if lens is not None else model.layer_logits(h)
            tot[l] += float(_kl(final, logits)) * len(h)
        n += len(states[0])
    return tot / n


def key_parts(model, windows: torch.Tensor, settings: TunedLensSettings) -> dict:
    """What a model's translators depend on: its weights (core.keys.weights_digest), the training windows,
    the settings and the lens version (`cache_key` hashes them; shipped files record each, to say which differs)."""
    return {"kind": "tuned_lens", "weights": weights_digest(model),
            "windows": settings_key(windows=windows.to(torch.int64).tolist()), "settings": asdict(settings),
            "version": LENS_VERSION}


def parts_key(parts: dict) -> str:
    """The cache key of `key_parts`: a hash of them."""
    return settings_key(**parts)[:32]


def cache_key(model, windows: torch.Tensor, settings: TunedLensSettings) -> str:
    """Key of a model's translators: its weights, the training windows, the settings (`key_parts`)."""
    return parts_key(key_parts(model, windows, settings))


def cache_dir() -> Path:
    return eeutils_cache_dir() / "tuned_lens"


def shipped_path(name: str, revision: str | None = None, root=None) -> Path:
    """Where the package ships a model's translators: data/lenses/<name>[@revision].safetensors (or under root)."""
    *folders, last = str(name).split("/")
    base = Path(root) if root is not None else data_path(SHIPPED)
    return base.joinpath(*folders, f"{last}@{revision}.safetensors" if revision else f"{last}.safetensors")


def _from_tensors(n_layers: int, d: int, tensors: dict) -> TunedLens:
    """A TunedLens (fp32, trainable tensors even under inference mode) holding ``tensors``."""
    with torch.inference_mode(False):
        lens = TunedLens(n_layers, d)
        lens.load_state_dict({k: v.float() for k, v in tensors.items()})
    return lens.eval()


def save_lens(path, lens: TunedLens, meta: dict, dtype: torch.dtype = torch.float32) -> str:
    """Write translators (stored in ``dtype``) atomically with ``meta`` (non-strings as JSON) and their checksum
    ("sha256": `TunedLens.digest` of the translators as they load back, a hash of the stored tensors' names,
    shapes and bytes), so `read_lens` catches a truncated, zeroed or edited file. Returns the checksum."""
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in lens.state_dict().items()}
    digest = _from_tensors(lens.n_layers, lens.d_model, tensors).digest()
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    text.update(sha256=digest, dtype=str(dtype).replace("torch.", ""), version=str(LENS_VERSION))
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=text))
    return digest


def read_lens(path, n_layers: int, d: int) -> tuple[TunedLens, dict]:
    """(translators, metadata) of a file written by `save_lens`; ValueError saying what is wrong when the file
    cannot be read, comes from another lens version, does not fit the model or fails its recorded checksum."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"unreadable ({type(err).__name__}: {err})") from err
    if meta.get("version") != str(LENS_VERSION):
        raise ValueError(f"written by lens version {meta.get('version')!r}, this kit uses {LENS_VERSION}")
    try:
        lens = _from_tensors(n_layers, d, tensors)
    except RuntimeError as err:
        raise ValueError(f"its tensors do not fit {n_layers} layers of width {d}") from err
    if lens.digest() != meta.get("sha256"):
        raise ValueError("its tensors do not match the checksum recorded at write time")
    return lens, meta


def _cached(path: Path, model, key: str) -> TunedLens | None:
    """The cached translators at ``path`` when the file is intact and holds ``key``; else None after a warning."""
    try:
        lens, meta = read_lens(path, model.n_layers, _d_model(model))
        if meta.get("key") != key:
            raise ValueError(f"it holds key {meta.get('key')!r}, not {key!r}")
    except ValueError as err:
        warnings.warn(f"tuned-lens cache file {path} not used: {err}; retraining", stacklevel=3)
        return None
    return lens


def _shipped(model, parts: dict, key: str) -> TunedLens | None:
    """The shipped translators of ``model`` when they were trained for exactly this key; None when none ship,
    after a one-line warning saying which part differs (weights, settings, text) or what is wrong with the file."""
    path = shipped_path(model.name, getattr(model, "revision", None))
    if not path.is_file():
        return None
    try:
        lens, meta = read_lens(path, model.n_layers, _d_model(model))
    except ValueError as err:
        warnings.warn(f"shipped tuned-lens file {path} not used: {err}; training instead", stacklevel=3)
        return None
    if meta.get("key") == key:
        return lens
    differ = [what for what, field in (("weights", "weights"), ("training windows", "windows"))
              if meta.get(field) != parts[field]]
    if json.loads(meta.get("settings", "null")) != parts["settings"]:
        differ.append(f"settings (shipped {meta.get('settings')})")
    warnings.warn(f"shipped tuned lens {path.name} not used: {model.name} asks for other "
                  f"{' and '.join(differ or ['key'])}; training instead", stacklevel=3)
    return None


def tuned_lens(model, settings: TunedLensSettings = TunedLensSettings(), windows: torch.Tensor | None = None,
               cache: bool = True, progress: bool = True, shipped: bool = True) -> TunedLens:
    """The tuned lens of a LoadedModel: from the cache, else the package's shipped translators (``shipped``;
    only those trained for exactly this key), else trained on the corpus train split (and cached)."""
    if windows is None:
        windows = corpus_windows(model, "train", settings.n_windows, settings.context, settings.seed)
    parts = key_parts(model, windows, settings)
    key = parts_key(parts)
    path = cache_dir() / f"{key}.safetensors"
    lens = _cached(path, model, key) if cache and path.is_file() else None
    if lens is None and shipped:
        lens = _shipped(model, parts, key)
    if lens is not None:
        return lens
    state = path.with_name(f"{key}.state.pt") if cache else None
    lens = train_tuned_lens(model, windows, settings, progress=progress, state=state)
    if cache:
        save_lens(path, lens, {"model": str(model.name), "revision": str(model.revision or ""),
                               "settings": asdict(settings), "key": key})
        state.unlink(missing_ok=True)
    return lens


def resolve_lens(model, lens="logit", settings: TunedLensSettings | None = None,
                 progress: bool = False) -> tuple[TunedLens | None, dict]:
    """(translators or None, the readout metadata recording the lens) for ``lens`` = "logit", "tuned" or a
    TunedLens: the checks of the string form behind `eeutils.lens.lenses.as_lens`, which turns the pair into a
    lens object (use that). "tuned" loads the model's cached translators or trains them (``settings``,
    default budget)."""
    if isinstance(lens, TunedLens):
        return lens.check_depth(model).eval(), {"lens": "tuned", "lens_digest": lens.digest(), "lens_settings": None}
    if lens not in LENSES:
        raise ValueError(f"lens must be one of {LENSES} or a TunedLens, got {lens!r}")
    if lens == "logit":
        if settings is not None:
            raise ValueError("lens_settings is for lens='tuned'; the logit lens has no settings")
        return None, {"lens": "logit", "lens_digest": "", "lens_settings": None}
    if settings is not None and not isinstance(settings, TunedLensSettings):
        raise TypeError(f"lens_settings must be an eeutils.lens.tuned.TunedLensSettings (or None), got "
                        f"{type(settings).__name__}")
    settings = settings or TunedLensSettings()
    t = tuned_lens(model, settings, progress=progress)
    return t, {"lens": "tuned", "lens_digest": t.digest(), "lens_settings": asdict(settings)}
