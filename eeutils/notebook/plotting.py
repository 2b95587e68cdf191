"""Figures drawn from tidy frames with seaborn: colour-blind-safe, labelled, saved as PNG."""
from __future__ import annotations

import functools
from pathlib import Path

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg", "widget"):
    matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

PALETTE = "colorblind"
DEPTH_LABEL = "relative depth (layer / L)"


@functools.lru_cache(maxsize=1)
def _drawable() -> frozenset:
    """Code points the figures' default font can draw (others would be boxes and a matplotlib warning)."""
    from matplotlib import font_manager, ft2font
    return frozenset(ft2font.FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap())


def token_label(text: str, width: int = 8) -> str:
    """A token made printable for a figure: newline as ⏎, a leading space as ␣, other control or
    undecodable bytes as \\xNN / ?, a character the font lacks (e.g. CJK) as its code point \\uNNNN."""
    out = []
    for i, ch in enumerate(text):
        if ch == "\n":
            out.append("⏎")
        elif ch == " " and i == 0:
            out.append("␣")
        elif ch == "\ufffd":
            out.append("?")
        elif not ch.isprintable():
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) not in _drawable():
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)[:width] or "∅"


def set_style(context: str = "notebook") -> None:
    sns.set_theme(context=context, style="whitegrid", palette=PALETTE)


def savefig(fig, name: str, out_dir=None, dpi: int = 120) -> Path | None:
    """Save `fig` as <out_dir>/figures/<name>.png (no-op when out_dir is None)."""
    if out_dir is None:
        return None
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def layer_curves(frame: pd.DataFrame, y: str, ylabel: str, hue: str = "model", x: str = "rel_depth",
                 title: str | None = None, ax=None, band: tuple[str, str] | None = None):
    """Per-layer curves (one line per `hue`), x = relative depth by default; optional (lo, hi) band columns."""
    set_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=frame, x=x, y=y, hue=hue, marker="o", ax=ax, errorbar=None)
    if band is not None:
        colors = dict(zip(frame[hue].unique(), sns.color_palette(PALETTE)))
        for key, g in frame.groupby(hue, sort=False):
            g = g.sort_values(x)
            ax.fill_between(g[x], g[band[0]], g[band[1]], alpha=0.2, color=colors.get(key))
    ax.set_xlabel(DEPTH_LABEL if x == "rel_depth" else x)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if ax.get_legend() is not None:
        ax.legend(title=hue, fontsize=8, title_fontsize=9, loc="best")
    return ax


def logit_lens_heatmap(readout, decode, doc: int = 0, max_positions: int = 16, value: str = "max_prob",
                       ax=None, title: str | None = None):
    """Layers x positions: colour = `value` (e.g. max_prob), text = the layer's top-1 token."""
    set_style()
    sel = np.flatnonzero(readout.doc == doc)[:max_positions]
    vals = readout[value][sel].T  # [L+1, P]
    top = readout["top1"][sel].T
    labels = np.vectorize(lambda t: token_label(decode(int(t))))(top)
    inputs = [token_label(decode(int(t))) for t in readout.token[sel]]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 0.75 * len(sel)), 0.45 * vals.shape[0] + 1.5))
    sns.heatmap(vals, annot=labels, fmt="", cmap="viridis", vmin=0, vmax=1, ax=ax,
                cbar_kws={"label": f"{value} (probability)" if "prob" in value else value},
                annot_kws={"fontsize": 7})
    ax.set_xticks(np.arange(len(sel)) + 0.5, inputs, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(np.arange(vals.shape[0]) + 0.5, [str(i) for i in range(vals.shape[0])], rotation=0)
    ax.set_xlabel("input token (position)")
    ax.set_ylabel("layer (0 = embeddings)")
    ax.invert_yaxis()
    ax.set_title(title or f"logit lens: top-1 token per layer — {readout.meta.get('model', '')}")
    return ax


def tradeoff_plot(frame: pd.DataFrame, y: str = "accuracy", hue: str = "rule", ax=None, title: str | None = None,
                  full: float | None = None):
    """Layers saved vs quality: one curve per exit rule."""
    set_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=frame.sort_values("skip_ratio"), x="skip_ratio", y=y, hue=hue, marker="o", ax=ax,
                 errorbar=None, sort=False)
    if full is not None:
        ax.axhline(full, ls="--", color="grey", lw=1, label="full model")
    ax.set_xlabel("skip ratio (fraction of layers skipped)")
    ax.set_ylabel({"accuracy": "accuracy (fraction correct)",
                   "agreement": "agreement with full model (fraction of tokens)"}.get(y, y))
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    return ax


def bar_with_ci(frame: pd.DataFrame, x: str, y: str, ylabel: str, ax=None, title: str | None = None,
                color_by: str | None = None, interval: tuple[str, str] | None = None):
    """One bar per row with its interval as whiskers (bootstrap or seed spread): the (lo, hi) columns
    `interval`, by default `<y>_lo` and `<y>_hi` (as the EAS tables name them)."""
    lo, hi = interval or (f"{y}_lo", f"{y}_hi")
    set_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5, 0.9 * len(frame) + 2), 4))
    keys = frame[color_by or x].astype(str)
    colors = dict(zip(keys.unique(), sns.color_palette(PALETTE, n_colors=max(len(keys.unique()), 1))))
    pos = np.arange(len(frame))
    vals = frame[y].to_numpy(dtype=float)
    err = np.vstack([vals - frame[lo].to_numpy(dtype=float), frame[hi].to_numpy(dtype=float) - vals])
    ax.bar(pos, vals, color=[colors[k] for k in keys], yerr=np.clip(err, 0, None), capsize=4)
    ax.set_xticks(pos, frame[x].astype(str), rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_xlabel(x)
    if title:
        ax.set_title(title)
    return ax
