"""Building blocks the notebooks share: cached readouts of several models, tidy per-layer and EAS
frames. Group comparisons under the analysis protocol live in `eeutils.notebook.claims`.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..analysis.bootstrap import bootstrap_eas, layer_curve
from ..arch.loading import load_model
from ..arch.names import card_meta
from ..core.settings import with_settings
from ..core.spec import parse_model_spec
from ..lens.cache import readout_key
from ..lens.files import ReadoutFileError
from ..lens.lenses import as_lens
from ..lens.readout import readout
from ..lens.result import Readout
from ..lens.tuned import TunedLensSettings
from ..workloads.registry import get_workload
from ..workloads.types import Workload


def model_spec(spec) -> tuple[str, str | None]:
    """'name', 'name@revision' or (name, revision) -> (name, revision) (`eeutils.core.spec.parse_model_spec`)."""
    return parse_model_spec(spec)


def label_of(spec) -> str:
    name, rev = model_spec(spec)
    short = name.removeprefix("zoo/")
    return f"{short}@{rev}" if rev else short


def _slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "__".join(str(p) for p in parts))[:60]


@dataclass(frozen=True)
class ReadSettings:
    """What a notebook's cached readout reads and how: documents of the workload (n_docs, None: all), tokens per
    document (max_tokens, capped by the model's context), the top-k size k, the load options (dtype, device,
    device_map), the readout's batch size and its progress bar."""

    n_docs: int | None = 32
    max_tokens: int | None = None
    k: int = 5
    dtype: str = "float32"
    device: object = None
    device_map: object = None
    progress: bool = False
    batch_size: int = 8


def cached_readout(spec, workload="zoo-prose", *, lens="logit", lens_settings: TunedLensSettings | None = None,
                   cache_dir=None, config: ReadSettings | None = None, **settings) -> Readout:
    """Readout of one model on a named workload (or a Workload), saved under cache_dir/readouts for reuse.

    config / settings: a `ReadSettings`, or its fields as keywords (n_docs=32, max_tokens, k=5, dtype="float32",
    device, device_map, progress=False, batch_size=8). lens: "logit", "tuned" (with lens_settings) or a lens
    object, as in `readout`. The file name carries `eeutils.lens.cache.readout_key` (weights digest, documents
    and settings; for any other lens than "logit" also the lens' digest, so the model is loaded and its lens
    resolved first: translators trained or read from their own cache), so a changed model or setting never
    reuses a stale readout."""
    s = with_settings(config, settings, ReadSettings, "cached_readout")
    name, rev = model_spec(spec)
    wl = workload if isinstance(workload, Workload) else get_workload(workload, n_docs=s.n_docs)
    model = chosen = None
    if not (isinstance(lens, str) and lens == "logit"):  # the key needs the lens' digest
        model = _load(name, rev, s)
        chosen = as_lens(model, lens, lens_settings, progress=s.progress)
    path = None if cache_dir is None else _readout_path(cache_dir, name, rev, wl, s, chosen)
    hit = _load_cached(path)
    if hit is not None:
        return hit
    model = model or _load(name, rev, s)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*truncated.*")
        r = readout(model, wl, lens=chosen or "logit", k=s.k, max_length=token_limit(model, s.max_tokens),
                    progress=s.progress, batch_size=s.batch_size)
    r.meta["label"] = label_of(spec)
    r.meta["revision"] = rev
    r.meta.update(card_meta(name))  # seed, recipe, arch from the model card (empty for hub models)
    if path is not None:
        r.save(path)
    return r


def _load(name: str, rev: str | None, s: ReadSettings):
    return load_model(name, revision=rev, dtype=s.dtype, device=s.device, device_map=s.device_map)


def _readout_path(cache_dir, name: str, rev: str | None, wl: Workload, s: ReadSettings, lens) -> Path:
    """cache_dir/readouts/<model, revision, workload[, lens name]>-<key>.npz for a readout with these settings
    under `lens` (None: the logit lens)."""
    rec = lens.record() if lens is not None else {"lens": "logit", "lens_digest": ""}
    key = readout_key(name, rev, wl, max_tokens=s.max_tokens, k=s.k, dtype=s.dtype, batch_size=s.batch_size,
                      device=s.device, device_map=s.device_map, lens=rec["lens"], lens_digest=rec["lens_digest"])
    tag = () if rec["lens"] == "logit" else (rec["lens"],)
    return Path(cache_dir) / "readouts" / f"{_slug(name, rev, wl.name, *tag)}-{key[:16]}.npz"


def _load_cached(path: Path | None) -> Readout | None:
    """The readout saved at `path`, None when there is none (or it is damaged: it is recomputed, with a warning)."""
    if path is None or not path.exists():
        return None
    try:
        return Readout.load(path)
    except ReadoutFileError as err:  # a damaged cache entry: recompute it (and overwrite it)
        warnings.warn(f"{err} Recomputing it.", stacklevel=3)
        return None


def read_models(specs, workload="zoo-prose", **kwargs) -> dict[str, Readout]:
    """{label: Readout} for several models on the same workload (same documents, so pairs are comparable)."""
    out = {}
    for spec in tqdm(list(specs), desc="models", leave=False, disable=not kwargs.pop("bar", True)):
        out[label_of(spec)] = cached_readout(spec, workload, **kwargs)
    return out


def curves(readouts: dict[str, Readout], similarity: str = "logit_cos", n_boot: int = 0, seed: int = 0) -> pd.DataFrame:
    """Per-layer mean similarity for every model, tidy, with the model's label."""
    frames = []
    for label, r in readouts.items():
        f = layer_curve(r, similarity=similarity, n_boot=n_boot, seed=seed)
        f["model"] = label
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def stat_curves(readouts: dict[str, Readout], columns=("kl_to_final", "entropy", "max_prob")) -> pd.DataFrame:
    """Per-layer token means of raw statistics for every model (long format: statistic, value)."""
    frames = []
    for label, r in readouts.items():
        f = r.layer_means(columns)
        f["model"] = label
        frames.append(f.melt(id_vars=["model", "layer", "rel_depth"], value_vars=list(columns),
                             var_name="statistic", value_name="value"))
    return pd.concat(frames, ignore_index=True)


def eas_table(readouts: dict[str, Readout], similarities=("logit_cos", "top1", "kl"), alpha: float = 0.5,
              n_boot: int = 100, seed: int = 0, **eas_kwargs) -> pd.DataFrame:
    """EAS with bootstrap interval for every model x similarity."""
    rows = []
    for label, r in readouts.items():
        for sim in similarities:
            b = bootstrap_eas(r, n_boot=n_boot, seed=seed, alpha=alpha, similarity=sim, **eas_kwargs)
            rows.append({"model": label, "similarity": sim, "alpha": alpha, "eas": b.value, "lo": b.lo,
                         "hi": b.hi, "ceiling": b.ceiling, "normalised": b.normalised,
                         "normalised_lo": b.normalised_lo, "normalised_hi": b.normalised_hi,
                         "n_layers": r.n_layers, "family": r.meta.get("family", ""),
                         "params_active": r.meta.get("params_active"), "params_total": r.meta.get("params_total")})
    return pd.DataFrame(rows)


def results_dir(out_dir) -> Path:
    """<out_dir>/results, created: where notebooks write their tidy tables."""
    path = Path(out_dir) / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def token_limit(model, max_tokens: int | None) -> int | None:
    """Tokens per document for a readout: the smaller of max_tokens and the model's context."""
    limits = [v for v in (max_tokens, model.max_length) if v is not None]
    return min(limits) if limits else None


def unigram_entropy(readout: Readout) -> float:
    """Entropy (nats/token) of the workload's own next-token distribution: the loss of a model that
    knows only how often each token occurs in this text (an in-sample unigram predictor)."""
    t = readout.target[readout.target >= 0]
    if len(t) == 0:
        raise ValueError("the readout has no next-token targets")
    p = np.bincount(t).astype(np.float64)
    p = p[p > 0] / len(t)
    return float(-(p * np.log(p)).sum())
