"""Checks of a local model folder before transformers reads it: each problem names its file and the fix.

transformers reports a broken local folder in words that read like a missing download, so the loader
checks first (`folder_problem`): config.json is a JSON object whose model_type transformers knows;
custom code (config.json's auto_map) is refused unless trust_remote_code; the weights are safetensors
(a pickle checkpoint such as pytorch_model.bin is refused, never unpickled: unpickling runs code); every
safetensors file is complete (its header's byte ranges cover the file exactly) and every shard an index
names exists. After loading, `weights_problem` turns transformers' loading report into an error when a
weight is missing (it would be left randomly initialised) or unused.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

SHOW = 5  # keys named in a message
# buffers older checkpoints saved that current transformers recomputes (causal masks, rotary frequencies,
# position ids): not weights, so their being unused changes nothing (transformers drops most of them itself)
BENIGN_UNUSED = re.compile(r"(^|\.)(masked_bias|attn\.bias|attention\.bias|inv_freq|position_ids)$")


def _first(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:SHOW]) + (f", ... ({len(keys)} in all)" if len(keys) > SHOW else "")


def config_problem(folder: Path, trust_remote_code: bool) -> str | None:
    """Why config.json cannot describe a model transformers builds here (None when it can)."""
    from transformers import __version__ as tf_version
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        return f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); it is not a model config"
    except json.JSONDecodeError as err:
        return (f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); fix it, or copy "
                "the config.json that came with the weights")
    if not isinstance(config, dict):
        return f"{path} holds a JSON {type(config).__name__}, not the object save_pretrained writes"
    if config.get("auto_map"):
        if not trust_remote_code:
            code = sorted({str(v).split(".")[0] + ".py" for v in config["auto_map"].values()})
            return (f"{folder} needs its own Python code ({path} has an auto_map naming {', '.join(code)}): the kit "
                    "runs no code from a model folder unless you pass trust_remote_code=True, after reading that code")
        return None
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        return f"{path} has no model_type (e.g. \"llama\", \"gpt2\"): add the one the weights were trained as"
    if model_type not in CONFIG_MAPPING:
        return (f"{path} has model_type {model_type!r}, which transformers {tf_version} does not know: check the "
                "spelling (e.g. \"llama\", \"gpt2\", \"qwen3\"), or upgrade transformers if the architecture is newer")
    return None


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is incomplete or not safetensors (None when its header covers it exactly)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or n > size - 8:
            return (f"{path} is truncated or not a safetensors file: it has {size} bytes, too few for the header it "
                    "announces; copy or download it again")
        try:
            header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            return f"{path} has a damaged safetensors header ({type(err).__name__}: {err}); copy or download it again"
    if 8 + n + end != size:
        return (f"{path} is {'truncated' if size < 8 + n + end else 'longer than its header says'}: it has {size} "
                f"bytes, its header describes {8 + n + end}; copy or download it again (an interrupted copy?)")
    return None


def weights_file_problem(folder: Path) -> str | None:
    """Why the folder's weights cannot be loaded safely and completely (None when they can)."""
    tensors = sorted(folder.glob("*.safetensors"))
    if not tensors:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if pickles:
            return (f"{folder} holds only pickle weights ({', '.join(pickles)}), which the kit refuses to load: "
                    "unpickling a file runs code. Convert them to safetensors once, in an environment you trust "
                    "(load the model there, then model.save_pretrained(folder, safe_serialization=True))")
        return None  # no weights at all: `core.spec.local_folder_problem` says so
    for index in folder.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            return f"{index} is not a readable shard index ({type(err).__name__}: {err})"
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            return f"{index} names weight shards that are not in {folder}: {_first(missing)}; copy them too"
    return next((p for p in map(safetensors_problem, tensors) if p), None)


def folder_problem(folder, trust_remote_code: bool = False) -> str | None:
    """The first problem of a local model folder with a config.json and weights (None when it looks loadable)."""
    folder = Path(folder)
    return config_problem(folder, trust_remote_code) or weights_file_problem(folder)


def weights_problem(info: dict, name: str, config) -> str | None:
    """Why transformers' loading report (output_loading_info) means the weights do not fit the model."""
    missing = list(info.get("missing_keys") or ())
    unexpected = [k for k in info.get("unexpected_keys") or () if not BENIGN_UNUSED.search(k)]
    mismatched = [k[0] if isinstance(k, (tuple, list)) else k for k in info.get("mismatched_keys") or ()]
    if not (missing or unexpected or mismatched):
        return None
    parts = [f"{len(missing)} weight(s) the model needs are not in the checkpoint (first: {_first(missing)})"
             if missing else "",
             f"{len(unexpected)} weight(s) in the checkpoint fit no part of it (first: {_first(unexpected)})"
             if unexpected else "",
             f"{len(mismatched)} weight(s) have the wrong shape ({_first(mismatched)})" if mismatched else ""]
    arch = getattr(config, "architectures", None)
    cause = ("config.json's model_type / architectures do not match the weights (e.g. Llama weights labelled "
             "\"gpt2\"): use the config.json that came with the weights" if unexpected or mismatched else
             "the checkpoint is incomplete (a missing shard or tensor): copy or download it again")
    return (f"{name!r} does not load as the model its config describes (model_type {config.model_type!r}, "
            f"architectures {arch}): {'; '.join(p for p in parts if p)}. Those parts would be randomly "
            f"initialised, so the kit refuses it. Likely cause: {cause}")
