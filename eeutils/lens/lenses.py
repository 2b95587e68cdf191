"""Lenses: how a layer's residual state becomes logits over the vocabulary.

A lens is an object of the `Lens` protocol: `transform_hidden(h, layer)` is the state it decodes (h itself for
the logit lens, layer l's affine translation of h for the tuned lens, `eeutils.lens.tuned.TunedLens`), and its
`unembed` (`Unembed`) decodes that state the way the model does: final norm, head, then the family's logit
transforms, which the unembedding holds as data (`ops`, from the adapter row). `forward(h, layer)` is the two
in turn. `readout`, `generate_early_exit` and the notebooks take a lens object; `as_lens` is the one place the
string form (lens="logit" | "tuned", plus `lens_settings` for the tuned lens' training) becomes one.

A new lens is one class: subclass `LogitLens`, give it a `name` and a `transform_hidden`, and a `digest` that
changes with every number it changes (readouts are cached under it, `eeutils.lens.cache.readout_key`). The
decoding itself stays the model's, so the readout's statistic kernel and its shortcuts stay exact.
"""
from __future__ import annotations

import weakref
from typing import Protocol, runtime_checkable

import torch

from ..arch.loading import LoadedModel
from ..arch.table import apply_logit_ops
from .fused import lens_gram
from .tuned import TunedLens, TunedLensSettings, resolve_lens

_GRAMS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # head module -> (key, Gram matrix)


class Unembed:
    """A model's own decoding of residual states: final norm, head, then its logit transforms.

    ops: the transforms as data, ((kind, value), ...) (`LoadedModel.logit_ops`, from the adapter row); None
    when the model was given a custom logit_fn, which is then applied as it is."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.final_norm, self.head, self.ops = model.final_norm, model.head, model.logit_ops

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 logits of states x (`LoadedModel.layer_logits`)."""
        return self.model.layer_logits(x)

    @property
    def fp32_linear(self) -> bool:
        """The head is an fp32 torch Linear, so its matmul can write straight into a float32 buffer."""
        w = getattr(self.head, "weight", None)
        return (type(self.head) is torch.nn.Linear and w is not None and w.dtype == torch.float32
                and w.dim() == 2)

    def into(self, x: torch.Tensor, out: torch.Tensor):
        """Write the logits of states x into the fp32 buffer `out` (same numbers as `__call__`); returns the
        normed state that went into an fp32 linear head (the Gram shortcut's input), else None.

        For an fp32 linear head the matmul runs straight into `out` and the logit transforms in place, so no
        [chunk x vocab] tensor is allocated per layer (in inference mode, as the readout runs)."""
        if self.ops is None:  # a custom logit_fn: use it as it is
            out.copy_(self(x))
            return None
        head = self.head
        normed = self.final_norm(x.to(out.device))
        if self.fp32_linear and normed.dtype == torch.float32:
            torch.mm(normed, head.weight.t(), out=out)
            if head.bias is not None:
                out.add_(head.bias)
            apply_logit_ops(out, self.ops, inplace=True)
            return normed
        # the head's dtype, as the model casts it (e.g. Mamba2 keeps an fp32 residual under a bf16 head)
        weight = getattr(head, "weight", None)
        out.copy_(head(normed if weight is None else normed.to(weight.dtype)))
        apply_logit_ops(out, self.ops, inplace=True)
        return None

    def gram(self):
        """The Gram matrix of the decoding after the norm (`fused.lens_gram`) when that is linear (an fp32
        linear head and only mul/div transforms), else None. Cached per head and the weight's in-place version
        counter, so a model whose weights change gets a new one."""
        ops = self.ops
        if ops is None or not self.fp32_linear or any(kind not in ("mul", "div") for kind, _ in ops):
            return None
        scale = 1.0
        for kind, v in ops:
            scale = scale * v if kind == "mul" else scale / v
        w, b = self.head.weight, self.head.bias
        key = (w._version, None if b is None else (b.data_ptr(), b._version), scale, w.data_ptr())
        hit = _GRAMS.get(self.head)
        if hit is None or hit[0] != key:
            hit = _GRAMS[self.head] = (key, lens_gram(w.detach(), None if b is None else b.detach(), scale))
        return hit[1]


@runtime_checkable
class Lens(Protocol):
    """What `readout` and `generate_early_exit` need of a lens.

    name: recorded in the readout's meta["lens"] and cache key. unembed: the model's decoding (`Unembed`).
    transform_hidden(h, layer): the state decoded at `layer` (0..L; h: [n, d_model]).
    digest(): "" or a hash of everything else that changes its numbers (cache keys need one unless name is
    "logit"). record(): the readout metadata {lens, lens_digest, lens_settings}. transform_macs(d, layer):
    weight multiply-adds transform_hidden adds per token at that layer (the decoder's cost model)."""

    name: str
    unembed: Unembed

    def transform_hidden(self, h: torch.Tensor, layer: int) -> torch.Tensor: ...

    def digest(self) -> str: ...

    def record(self) -> dict: ...

    def transform_macs(self, d: int, layer: int) -> float: ...


class LogitLens:
    """The logit lens (nostalgebraist 2020): every layer's state decoded as it is, by the model's own final
    norm, head and logit transforms. The base class of new lenses (see the module docstring)."""

    name = "logit"

    def __init__(self, unembed: Unembed):
        self.unembed = unembed

    @classmethod
    def of(cls, model: LoadedModel) -> "LogitLens":
        """The lens decoding through `model`'s own unembedding."""
        return cls(Unembed(model))

    def transform_hidden(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        return h

    def forward(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """fp32 logits of layer `layer`'s states h under this lens: `unembed(transform_hidden(h, layer))`, what
        the readout and the decoder compute (they call the two parts themselves)."""
        return self.unembed(self.transform_hidden(h, layer))

    def __call__(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        return self.forward(h, layer)

    def digest(self) -> str:
        return ""

    def record(self) -> dict:
        return {"lens": self.name, "lens_digest": self.digest(), "lens_settings": None}

    def transform_macs(self, d: int, layer: int) -> float:
        return 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.unembed.model.name!r})"


def as_lens(model: LoadedModel, lens="logit", settings: TunedLensSettings | None = None,
            progress: bool = False) -> Lens:
    """The lens object for `lens` on `model`: the one place the string form becomes a lens.

    "logit": `LogitLens.of(model)`; "tuned": the model's translators (`tuned_lens`: the cache, the shipped files,
    else trained with `settings`, default `TunedLensSettings()`), recording those settings; a TunedLens: checked
    against the model's depth and bound to its unembedding; any other `Lens`: checked to decode through this
    model. The names and the settings are checked by `tuned.resolve_lens` (settings only with "tuned")."""
    if isinstance(lens, TunedLens):
        return lens.check_depth(model).eval().bind(Unembed(model))
    if isinstance(lens, Lens):
        if lens.unembed.model is not model:
            raise ValueError(f"the {lens.name!r} lens decodes through the head of {lens.unembed.model.name}, "
                             f"not of {model.name}: build it for this model")
        return lens
    translators, record = resolve_lens(model, lens, settings, progress=progress)  # "logit" or "tuned"
    if translators is None:
        return LogitLens.of(model)
    return translators.bind(Unembed(model), record["lens_settings"])


__all__ = ["Lens", "LogitLens", "Unembed", "as_lens"]
