"""Quantise a model's weights to a real model's GGUF format and back, to measure what quantisation alone
does to a readout.

The two real models reach the kit as llama.cpp GGUF files (Gemma 3 270M in Q4_K_M, SmolLM2-135M-Instruct in
Q4_1) and are dequantised to fp32 on load (`eeutils.arch.real`); the zoo models are fp16. `quantised_folder`
gives a zoo model (or any local safetensors folder) the same treatment: every weight matrix gets the GGML
type llama.cpp's ``llama-quantize`` would give it (`plan`, from the tables below), is encoded into that
type's blocks (gguf-py's encoders; `eeutils.arch.kquants` for the K-quants, which gguf-py only decodes) and
decoded with gguf-py's reference decoder. The result is an ordinary fp32 safetensors folder under
``$EEUTILS_CACHE/quant/``, keyed by the source's weights digest and the format, so `load_model(folder)` and
the readout pipeline run unchanged.

Type assignment, after llama.cpp (src/llama-quant.cpp, ``llama_tensor_get_type``) for the two formats:

- Only weight matrices are quantised: norms, biases and other 1-D tensors, the MoE router
  (``ffn_gate_inp``), learned position embeddings and Mamba's ``conv1d`` keep their type (fp16 here).
- The output head, or the token embedding when the head is tied to it: Q8_0 when its row is not a multiple
  of the format's default block, else Q6_K.
- Q4_K_M: Q4_K by default; ``attn_v`` and ``ffn_down`` get Q6_K in the layers ``use_more_bits`` picks (the
  first and last eighth of the layers and every third one between); a fused ``attn_qkv`` gets Q5_K.
  Rules for 8-expert MoE, 70B and Falcon models are left out: no zoo or real model has them.
- Q4_1: Q4_1 everywhere else.
- A row (the input dimension: GGUF blocks run along it) that is not a multiple of the type's block falls
  back as llama.cpp does: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and F16 when the fallback's block of
  32 does not fit either. Zoo rows of 128 weights are not multiples of 256, so most zoo matrices take the
  fallback types, as most of Gemma's (width 640) do.
- A row that fits no block and has no llama.cpp fallback (Q4_1 on the 344-wide down projections of
  dense-mid): llama.cpp refuses the model ("Unsupported tensor size"). Here such a row is quantised with a
  shorter last block holding the remaining weights (for these min/max types, the same as padding the row
  with copies of its last weight), and the plan says so (``short_block``).

tests/test_quant.py checks the table against the tensor types inside the real models' GGUF files.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..core.env import eeutils_cache_dir
from ..core.keys import cache_key, folder_digest
from .kquants import ENCODERS
from .names import model_folder

QUANT_VERSION = 1  # bump when the written folder or the type table changes (it is in the cache key)
QUANT_FILE = "quant.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class Format:
    """One llama.cpp file type: its default GGML type and the per-role exceptions (role -> (type, when))."""

    default: str
    rules: dict
    real_model: str  # the real model of the kit that ships in this format


FORMATS = {
    "Q4_K_M": Format("Q4_K", {"attn_v": ("Q6_K", "more_bits"), "ffn_down": ("Q6_K", "more_bits"),
                              "attn_qkv": ("Q5_K", "always")}, "real/gemma-3-270m"),
    "Q4_1": Format("Q4_1", {}, "real/smollm2-135m-instruct"),
}
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}  # llama.cpp, for rows not a multiple of 256
SHORT_BLOCK_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")  # min/max types: a short block = edge padding
KEEP_ROLES = ("ffn_gate_inp", "position_embd", "ssm_conv1d")
# Hugging Face parameter name (regex) -> llama.cpp tensor role, for the zoo's families and the common hub ones
ROLE_PATTERNS = (
    (r"(embed_tokens|embeddings|wte)\.weight$", "token_embd"), (r"lm_head\.weight$", "output"),
    (r"wpe\.weight$", "position_embd"), (r"\.q_proj\.weight$", "attn_q"), (r"\.k_proj\.weight$", "attn_k"),
    (r"\.v_proj\.weight$", "attn_v"), (r"\.o_proj\.weight$", "attn_output"),
    (r"\.attn\.c_attn\.weight$", "attn_qkv"), (r"\.attn\.c_proj\.weight$", "attn_output"),
    (r"\.gate_proj\.weight$", "ffn_gate"), (r"\.up_proj\.weight$", "ffn_up"), (r"\.mlp\.c_fc\.weight$", "ffn_up"),
    (r"\.down_proj\.weight$", "ffn_down"), (r"\.mlp\.c_proj\.weight$", "ffn_down"),
    (r"\.mlp\.gate\.weight$", "ffn_gate_inp"), (r"\.in_proj\.weight$", "ssm_in"),
    (r"\.out_proj\.weight$", "ssm_out"), (r"\.conv1d\.weight$", "ssm_conv1d"),
)
# a GGUF tensor name ("blk.3.attn_v.weight", "token_embd.weight"): the role is in the name
GGUF_ROLE = re.compile(r"^(?:blk\.\d+\.)?(token_embd|output|position_embd|attn_qkv|attn_q|attn_k|attn_v|attn_output|"
                       r"ffn_gate_inp|ffn_gate|ffn_up|ffn_down|ssm_in|ssm_out|ssm_conv1d)(?:_exps)?\.weight$")
# model_type -> parameters stored [in, out] (transformers' Conv1D), whose GGUF rows run along the first axis
IN_OUT_WEIGHTS = {"gpt2": r"\.(c_attn|c_proj|c_fc)\.weight$"}
LAYER_PATTERN = re.compile(r"(?:^|\.)(?:layers|h|blocks|blk)\.(\d+)\.")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


class QuantError(ValueError):
    """A model or format the round trip cannot handle (the message says why)."""


@dataclass(frozen=True)
class TensorPlan:
    """What one tensor becomes: its llama.cpp role, layer, GGUF row length and GGML type ("keep": unchanged)."""

    name: str
    role: str
    layer: int | None
    shape: tuple
    row: int
    in_out: bool
    qtype: str
    short_block: bool
    why: str

    @property
    def n_weights(self) -> int:
        return int(np.prod(self.shape))


def block_size(qtype: str) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[qtype]][0]


def bits_per_weight(qtype: str, source_bits: int = 16) -> float:
    """Stored bits per weight of a GGML type (`source_bits` for a kept tensor)."""
    if qtype == "keep":
        return float(source_bits)
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    return 8.0 * size / block


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of the layers that get more bits: the first and last eighth, every third between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def tensor_role(name: str) -> str:
    """The llama.cpp role of a Hugging Face parameter name or a GGUF tensor name ("other" when none matches)."""
    gguf_name = GGUF_ROLE.match(name)
    if gguf_name:
        return gguf_name.group(1)
    return next((role for pattern, role in ROLE_PATTERNS if re.search(pattern, name)), "other")


def _fit(qtype: str, row: int) -> tuple[str, bool, str]:
    """(type, short_block, why) for a row of `row` weights: llama.cpp's fallback when the block does not fit."""
    if row % block_size(qtype) == 0:
        return qtype, False, ""
    if qtype in FALLBACK:
        fb = FALLBACK[qtype]
        if row % block_size(fb) == 0:
            return fb, False, f"row {row} not a multiple of {block_size(qtype)}: {qtype} -> {fb} (llama.cpp fallback)"
        return "F16", False, f"row {row} fits neither {qtype} nor {fb}: F16 (llama.cpp's last resort)"
    if qtype not in SHORT_BLOCK_TYPES:
        raise QuantError(f"a row of {row} weights fits no {qtype} block and the table has no fallback for it")
    return qtype, True, (f"row {row} not a multiple of {block_size(qtype)} and llama.cpp has no fallback for "
                         f"{qtype} (it refuses the model): last block of {row % block_size(qtype)} weights")


def _chosen_type(fmt: Format, role: str, head: bool, row: int, rank: tuple[int, int]) -> str:
    """The type llama.cpp picks before the row-size fallback (head rule, per-role rule, or the default)."""
    if head:
        if row % block_size(fmt.default):
            return "Q8_0"
        return "Q6_K" if fmt.default != "Q8_0" else "Q8_0"
    qtype, when = fmt.rules.get(role, (fmt.default, "always"))
    return qtype if when == "always" or use_more_bits(*rank) else fmt.default


def plan(shapes: dict, fmt: str, *, n_layers: int, model_type: str = "") -> list[TensorPlan]:
    """The type of every tensor (name -> shape) of a model in format `fmt` ("Q4_K_M" or "Q4_1")."""
    if fmt not in FORMATS:
        raise QuantError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    spec, in_out_re = FORMATS[fmt], IN_OUT_WEIGHTS.get(model_type)
    tied = not any(tensor_role(n) == "output" for n in shapes)
    order = sorted(shapes, key=lambda n: (_layer(n) if _layer(n) is not None else -1, n))
    wv = [n for n in order if tensor_role(n) == "attn_v"]
    n_wv = len(wv) + sum(tensor_role(n) == "attn_qkv" for n in order)
    out = []
    for name in order:
        role, layer, shape = tensor_role(name), _layer(name), tuple(int(s) for s in shapes[name])
        in_out = bool(in_out_re and re.search(in_out_re, name))
        row = shape[0] if in_out else shape[-1]
        if len(shape) < 2 or role in KEEP_ROLES or not name.endswith("weight"):
            out.append(TensorPlan(name, role, layer, shape, row, in_out, "keep", False, "not quantised"))
            continue
        head = role == "output" or (tied and role == "token_embd")
        rank = (wv.index(name), n_wv) if role == "attn_v" else (layer or 0, n_layers)
        qtype, short, why = _fit(_chosen_type(spec, role, head, row, rank), row)
        out.append(TensorPlan(name, role, layer, shape, row, in_out, qtype, short, why))
    return out


def _layer(name: str) -> int | None:
    m = LAYER_PATTERN.search(name)
    return int(m.group(1)) if m else None


def encode(rows: np.ndarray, qtype: str) -> np.ndarray:
    """GGML blocks (uint8) of float rows [..., n] in type `qtype` (gguf-py's encoder, or kquants')."""
    import gguf

    if qtype in ENCODERS:
        return ENCODERS[qtype](rows)
    return gguf.quants.quantize(np.ascontiguousarray(rows, dtype=np.float32), gguf.GGMLQuantizationType[qtype])


def round_trip(weights: np.ndarray, qtype: str, *, in_out: bool = False, short_block: bool = False) -> np.ndarray:
    """The float32 values `weights` take after encoding in `qtype` and decoding with gguf-py's reference
    decoder. Blocks run along the last axis (the first for an [in, out] weight: in_out=True); short_block
    quantises a row that is not a multiple of the block with a shorter last block."""
    import gguf

    x = np.asarray(weights, dtype=np.float32)
    if qtype == "keep":
        return x
    if qtype == "F16":
        return x.astype(np.float16).astype(np.float32)
    x = x.T if in_out else x
    shape, row = x.shape, x.shape[-1]
    x = np.ascontiguousarray(x).reshape(-1, row)
    pad = (-row) % block_size(qtype)
    if pad and not short_block:
        raise QuantError(f"rows of {row} weights are not a multiple of the {qtype} block ({block_size(qtype)})")
    if pad:
        x = np.concatenate([x, np.repeat(x[:, -1:], pad, axis=1)], axis=1)
    y = gguf.quants.dequantize(encode(x, qtype), gguf.GGMLQuantizationType[qtype])[:, :row].reshape(shape)
    return np.ascontiguousarray(y.T if in_out else y, dtype=np.float32)


def quantise_weights(state: dict, plans: list[TensorPlan]) -> tuple[dict, dict]:
    """({name: float32 array after the round trip}, {name: relative RMS error}) for a state dict of arrays."""
    out, err = {}, {}
    for p in plans:
        x = np.asarray(state[p.name], dtype=np.float32)
        y = round_trip(x, p.qtype, in_out=p.in_out, short_block=p.short_block)
        norm = float(np.sqrt((x.astype(np.float64) ** 2).sum()))
        err[p.name] = float(np.sqrt(((y - x).astype(np.float64) ** 2).sum())) / norm if norm > 0 else 0.0
        out[p.name] = y
    return out, err


def source_folder(name: str, revision: str | None = None) -> Path:
    """The local folder of a zoo name or path, holding a single model.safetensors (else QuantError)."""
    folder = model_folder(name, revision)
    if folder is None or not (folder / WEIGHTS_FILE).is_file():
        raise QuantError(f"{name!r}{'@' + revision if revision else ''} is not a zoo model or a local folder "
                         f"with a {WEIGHTS_FILE}; the quantisation round trip reads local safetensors weights only")
    return folder


def quant_key(folder: Path, fmt: str) -> str:
    """Cache key of a quantised copy: the source's weights digest (weights, config, tokenizer) and the format."""
    return cache_key(kind="quantised", source=folder_digest(folder), format=fmt, version=QUANT_VERSION)


def quantised_folder(name: str, fmt: str, *, revision: str | None = None, cache_dir=None) -> Path:
    """Folder of `name` (a zoo name or a local safetensors folder) quantised to `fmt` and decoded to fp32,
    built once under <cache>/quant/ and reused while the source weights and the format are unchanged.
    Load it with `load_model(str(folder))`; its quant.json holds the plan and per-tensor errors."""
    if fmt not in FORMATS:
        raise QuantError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    src = source_folder(name, revision)
    root = Path(cache_dir) if cache_dir is not None else eeutils_cache_dir()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{name.removeprefix('zoo/')}{'@' + revision if revision else ''}")
    target = root / "quant" / f"{slug.strip('-')[-40:]}-{fmt}-{quant_key(src, fmt)[:16]}"
    if (target / QUANT_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        _write_folder(src, work, fmt, name)
        try:
            os.replace(work, target)
        except OSError:  # another process finished first: keep its folder
            if not (target / QUANT_FILE).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _write_folder(src: Path, out: Path, fmt: str, name: str) -> None:
    """Write the round-tripped weights, the source's config and tokenizer files, and quant.json into `out`."""
    import gguf
    from safetensors.numpy import load_file, save_file

    config = json.loads((src / "config.json").read_text())
    n_layers = next((int(config[k]) for k in LAYER_KEYS if k in config), None)
    if n_layers is None:
        raise QuantError(f"{src / 'config.json'} names no layer count (one of {', '.join(LAYER_KEYS)})")
    state = load_file(str(src / WEIGHTS_FILE))
    plans = plan({k: v.shape for k, v in state.items()}, fmt, n_layers=n_layers,
                 model_type=config.get("model_type", ""))
    weights, errors = quantise_weights(state, plans)
    save_file(weights, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix != ".safetensors" and f.name not in ("card.json", "CARD.md"):
            shutil.copyfile(f, out / f.name)
    rows = [dict(asdict(p), n_weights=p.n_weights, rel_rmse=errors[p.name]) for p in plans]
    info = dict(source=name, source_folder=str(src), source_digest=folder_digest(src), format=fmt,
                real_model=FORMATS[fmt].real_model, quant_version=QUANT_VERSION, kit_version=__version__,
                gguf=getattr(gguf, "__version__", None) or _dist_version("gguf"), tensors=rows)
    (out / QUANT_FILE).write_text(json.dumps(info, indent=1) + "\n")


def _dist_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def read_plan(folder) -> list[dict]:
    """The per-tensor rows (plan, weights, relative RMS error) of a quantised folder's quant.json."""
    return json.loads((Path(folder) / QUANT_FILE).read_text())["tensors"]
