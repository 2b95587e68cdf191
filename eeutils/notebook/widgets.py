"""An interactive explorer: type a prompt, pick a model and a layer, see what each layer would say
and where each token would exit under a confidence rule.

The logic lives in `explore` (a pure function, tested headlessly); `Explorer` wires ipywidgets
to it. Under papermill or without a widget front end, `show_explorer(..., interactive=False)`
draws the same content as a static figure.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..analysis.exits import simulate
from ..analysis.rules import WIDGET_RULES, ExitRule
from ..arch.loading import LoadedModel, load_model
from ..lens.readout import readout
from .plotting import token_label

# rule kind -> (min, max, step, default) of the threshold slider: the exit-rule table's widget column
RULES = WIDGET_RULES


@dataclass
class ExplorerState:
    """What the explorer shows for one setting."""

    tokens: list[str]  # input tokens
    layer: int
    top_tokens: pd.DataFrame  # position, input, top-k at `layer` with probabilities
    exit_layers: np.ndarray  # per position, under the rule
    saved: float  # fraction of block computations skipped under the rule
    agreement: float  # exited prediction == final prediction, fraction of positions
    per_layer: pd.DataFrame  # layer x position top-1 token and max_prob (for the heatmap)


def explore(model: LoadedModel, prompt: str, layer: int, rule: str = "max_prob", threshold: float = 0.8,
            k: int = 5, cache: dict | None = None) -> ExplorerState:
    """Read out `prompt` once (cached per model and prompt) and summarise it at `layer` and under the rule."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("type a prompt first")
    key = (model.name, prompt, k)
    if cache is not None and key in cache:
        r = cache[key]
    else:
        r = readout(model, [prompt], k=k, progress=False)
        if cache is not None:
            cache[key] = r
    L = r.n_layers
    if not 0 <= int(layer) <= L:
        raise ValueError(f"layer must be in 0..{L}")
    tokens = [model.decode_token(t) for t in r.token]
    rows = []
    for pos in range(r.n_tokens):
        ids = r.topk[pos, layer]
        rows.append({"position": pos, "input": tokens[pos],
                     "top": " | ".join(model.decode_token(t) for t in ids),
                     "top1_prob": float(r["max_prob"][pos, layer]),
                     "final_top1": model.decode_token(r.final_top1[pos])})
    exits = simulate(r, ExitRule(rule, threshold))
    exited_top1 = r["top1"][np.arange(r.n_tokens), exits]
    per_layer = pd.DataFrame({
        "layer": np.repeat(r.layers, r.n_tokens), "position": np.tile(np.arange(r.n_tokens), L + 1),
        "top1": [model.decode_token(t) for t in r["top1"].T.reshape(-1)],
        "max_prob": r["max_prob"].T.reshape(-1)})
    return ExplorerState(tokens=tokens, layer=int(layer), top_tokens=pd.DataFrame(rows), exit_layers=exits,
                         saved=float(np.mean((L - exits) / L)),
                         agreement=float(np.mean(exited_top1 == r.final_top1)), per_layer=per_layer)


def draw_state(state: ExplorerState, n_layers: int, ax=None, title: str = ""):
    """Static figure: per-layer top-1 heatmap with each token's exit layer marked."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    grid = state.per_layer.pivot(index="layer", columns="position", values="max_prob")
    labels = state.per_layer.pivot(index="layer", columns="position", values="top1").map(
        lambda s: token_label(s, 7))
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 0.8 * grid.shape[1]), 0.45 * grid.shape[0] + 1.8))
    sns.heatmap(grid, annot=labels, fmt="", cmap="viridis", vmin=0, vmax=1, ax=ax,
                cbar_kws={"label": "max probability"}, annot_kws={"fontsize": 7})
    ax.invert_yaxis()
    from matplotlib.patches import Rectangle

    for pos, layer in enumerate(state.exit_layers):
        ax.add_patch(Rectangle((pos, layer), 1, 1, fill=False, edgecolor="#d55e00", lw=2.5))
    ax.axhline(state.layer + 0.5, color="white", lw=1, ls=":")
    ax.set_xticks(np.arange(len(state.tokens)) + 0.5, [token_label(t) for t in state.tokens],
                  rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("input token (position)")
    ax.set_ylabel("layer (0 = embeddings)")
    ax.set_title((title or f"exits save {state.saved:.0%} of layers; agreement with full model "
                           f"{state.agreement:.0%}") + "\n(orange boxes: each token's exit layer; dotted: selected layer)",
                 fontsize=10)
    return ax


class Explorer:
    """ipywidgets front end for `explore`."""

    def __init__(self, models, prompt: str = "In the beginning God created", layer: int | None = None):
        import ipywidgets as w

        self.models = {m.name if isinstance(m, LoadedModel) else m: m for m in models}
        self.cache: dict = {}
        first = self._model(next(iter(self.models)))
        self.prompt = w.Text(value=prompt, description="prompt", layout=w.Layout(width="60%"))
        self.model_box = w.Dropdown(options=list(self.models), description="model")
        self.layer = w.IntSlider(value=first.n_layers // 2 if layer is None else layer, min=0,
                                 max=first.n_layers, description="layer")
        self.rule = w.Dropdown(options=list(RULES), value="max_prob", description="rule")
        lo, hi, step, default = RULES["max_prob"]
        self.threshold = w.FloatSlider(value=default, min=lo, max=hi, step=step, description="threshold")
        self.table = w.Output()
        self.figure = w.Output()
        self.status = w.HTML()
        for ctl in (self.prompt, self.model_box, self.layer, self.rule, self.threshold):
            ctl.observe(self._changed, names="value")
        self.widget = w.VBox([w.HBox([self.model_box, self.rule, self.threshold]), self.prompt, self.layer,
                              self.status, self.table, self.figure])
        self.state: ExplorerState | None = None
        self.refresh()

    def _model(self, name) -> LoadedModel:
        m = self.models[name]
        if not isinstance(m, LoadedModel):
            m = self.models[name] = load_model(m)
        return m

    def _changed(self, change):
        if change["owner"] is self.rule:
            lo, hi, step, default = RULES[self.rule.value]
            self.threshold.min, self.threshold.max, self.threshold.step = lo, hi, step
            self.threshold.value = default
        if change["owner"] is self.model_box:
            self.layer.max = self._model(self.model_box.value).n_layers
        self.refresh()

    def refresh(self):
        import matplotlib.pyplot as plt
        from IPython.display import display

        model = self._model(self.model_box.value)
        try:
            self.state = explore(model, self.prompt.value, self.layer.value, self.rule.value,
                                 self.threshold.value, cache=self.cache)
        except ValueError as err:
            self.status.value = f"<b>{err}</b>"
            return
        s = self.state
        self.status.value = (f"layer {s.layer}/{model.n_layers}: exits skip <b>{s.saved:.0%}</b> of layers, "
                             f"agreement with the full model <b>{s.agreement:.0%}</b>")
        self.table.clear_output(wait=True)
        with self.table:
            display(s.top_tokens)
        self.figure.clear_output(wait=True)
        with self.figure:
            ax = draw_state(s, model.n_layers)
            display(ax.figure)
            plt.close(ax.figure)

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)


def show_explorer(models, prompt: str, layer: int | None = None, rule: str = "max_prob", threshold: float = 0.8,
                  interactive: bool = True):
    """The widget in a live notebook; a static figure (and the state) when interactive=False."""
    if interactive:
        try:
            return Explorer(models, prompt=prompt, layer=layer)
        except ImportError:
            pass
    m = models[0]
    model = m if isinstance(m, LoadedModel) else load_model(m)
    state = explore(model, prompt, model.n_layers // 2 if layer is None else layer, rule, threshold)
    ax = draw_state(state, model.n_layers, title=f"{model.name}: {rule} >= {threshold}: "
                                                 f"{state.saved:.0%} of layers skipped")
    return state, ax
