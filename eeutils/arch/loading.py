"""Load any Hugging Face causal LM (hub id, local folder, zoo or real name) and describe it for the readout."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import _version
from ..core.checks import check_bools, check_device
from ..core.env import hf_cache_dir, hf_offline, offline_setting
from .table import ArchSpec, Resolved, logit_op_values, ops_fn
from .discovery import resolve
from .folder import folder_problem, weights_problem
from ..core.spec import local_folder_problem, looks_like_path
from ..core.zoo_store import is_zoo_name, resolve as resolve_zoo
from .real import RealModelError, is_real_name, resolve_real
from .params import count_params, hidden_size


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do."""


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_dtype(dtype) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, 'auto', a torch.dtype or None; got {dtype!r}")


@dataclass
class LoadedModel:
    """A causal LM plus what the readout needs to know about it."""

    model: nn.Module
    tokenizer: object | None
    name: str
    revision: str | None
    resolved: Resolved
    logit_fn: object = field(repr=False, default=None)
    # the family's post-head transforms as data, ((kind, value), ...) from the adapter row (`logit_op_values`);
    # None when a custom logit_fn was passed (the lenses then apply that function as it is)
    logit_ops: tuple | None = field(repr=False, default=None, init=False)

    def __post_init__(self):
        if self.logit_fn is None:
            self.logit_ops = logit_op_values(self.resolved.spec, self.model.config)
            self.logit_fn = ops_fn(self.logit_ops)

    # ---- description -------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def blocks(self) -> nn.ModuleList:
        return self.resolved.blocks

    @property
    def final_norm(self) -> nn.Module:
        return self.resolved.final_norm

    @property
    def head(self) -> nn.Module:
        return self.resolved.head

    @property
    def n_layers(self) -> int:
        return len(self.resolved.blocks)

    @property
    def family(self) -> str:
        return self.resolved.spec.family

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    @property
    def vocab_size(self) -> int:
        return int(self.head.weight.shape[0])

    @property
    def max_length(self) -> int | None:
        """The model's context length: from its config, else its tokenizer's declared limit; None when
        it has none (state-space models whose tokenizer sets no real limit)."""
        if self.family != "ssm":
            for attr in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
                v = getattr(self.config, attr, None)
                if isinstance(v, int) and v > 0:
                    return v
        v = getattr(self.tokenizer, "model_max_length", None)
        return int(v) if isinstance(v, int) and 0 < v < 1_000_000 else None

    @property
    def params_total(self) -> int:
        return count_params(self.model)[0]

    @property
    def params_active(self) -> int:
        return count_params(self.model)[1]

    def describe(self) -> dict:
        return {
            "model": self.name, "revision": self.revision, "model_type": self.config.model_type,
            "family": self.family, "n_layers": self.n_layers, "d_model": hidden_size(self.config),
            "vocab": self.vocab_size, "params_total": self.params_total, "params_active": self.params_active,
            "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device),
            "adapter": "discovered" if self.resolved.discovered else "table", "kit_version": _version.__version__,
        }

    # ---- readout at one layer ----------------------------------------------
    @torch.inference_mode()
    def layer_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logit lens of a residual-stream state: final norm, head, the model's logit transforms; fp32 out."""
        x = self.final_norm(hidden.to(self.device))
        weight = getattr(self.head, "weight", None)
        if weight is not None:  # cast to the head's dtype as the model does (Mamba2: fp32 residual, bf16 head)
            x = x.to(weight.dtype)
        z = self.head(x).float()
        return self.logit_fn(z)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if self.tokenizer is None:
            raise ValueError(f"{self.name} was loaded without a tokenizer: pass token ids instead of text")
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens, verbose=False)["input_ids"])

    def decode_token(self, token_id: int) -> str:
        if self.tokenizer is None:
            return f"<{int(token_id)}>"
        return self.tokenizer.decode([int(token_id)])

    def __repr__(self) -> str:
        d = self.describe()
        return (f"LoadedModel({d['model']!r}, {d['model_type']}, family={d['family']}, layers={d['n_layers']}, "
                f"params={d['params_total']:,} (active {d['params_active']:,}), {d['dtype']} on {d['device']})")


def wrap_model(model: nn.Module, tokenizer=None, name: str | None = None, revision: str | None = None,
               spec: ArchSpec | None = None) -> LoadedModel:
    """Describe an already-built causal LM (e.g. a random-init model from a config) for the readout."""
    model.eval()
    name = name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, revision=revision,
                       resolved=resolve(model, spec))


def quiet() -> None:
    """Silence transformers' warnings about optional CUDA kernels and similar chatter (errors still show)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def cached_revisions(name: str) -> list[str]:
    """Branches/tags of a hub model that are in the local cache (empty when none)."""
    refs = Path(hf_cache_dir()) / ("models--" + name.replace("/", "--")) / "refs"
    return sorted(p.name for p in refs.iterdir()) if refs.is_dir() else []


def _explain(name: str, revision: str | None, err: Exception, local: bool = False) -> ModelLoadError:
    msg = str(err)
    low = msg.lower()
    if "unrecognized configuration class" in low or "does not appear to have" in low and "causallm" in low:
        return ModelLoadError(
            f"{name!r} is not a causal language model that AutoModelForCausalLM can load. The kit reads out "
            f"decoder-only LMs (GPT-2, Llama, Mamba, ...).\n(original error: {msg})")
    if local:  # a folder on disk: transformers' hub wording would mislead, so give its own error whole
        return ModelLoadError(f"could not load {name!r} from its local folder: {type(err).__name__}: {msg}")
    rev = f" at revision {revision!r}" if revision else ""
    cached = cached_revisions(name) if "/" in name and not Path(name).exists() else []
    if revision and cached and revision not in cached:
        return ModelLoadError(
            f"revision {revision!r} of {name!r} is not in the local cache (cached: {', '.join(cached)}) and the "
            f"hub cannot be reached or does not have it. Check the revision name (Pythia: 'step143000'), "
            f"or download it once online (`hf download {name} --revision {revision}`).\n(original error: {msg})")
    if revision and ("revision" in low or "git identifier" in low or "invalid rev" in low):
        return ModelLoadError(
            f"revision {revision!r} of {name!r} does not exist (or is not cached). Check the branch, tag or "
            f"commit name on the model page; for Pythia, revisions look like 'step143000'.\n(original error: {msg})")
    if hf_offline() or "offline" in low or "couldn't connect" in low or "connection" in low or "cannot find" in low \
            or "not found in the local cache" in low or "does not appear to have a file" in low \
            or "is not a local folder" in low or "we couldn't" in low:
        return ModelLoadError(
            f"{name!r}{rev} is not available: it is not in the local Hugging Face cache and the hub cannot be "
            f"reached ({offline_setting()}). Either download it once "
            f"online (`hf download {name}{' --revision ' + revision if revision else ''}`), pass a local "
            f"folder, or use an embedded zoo model such as 'zoo/dense-mid' (see eeutils.list_zoo()).\n"
            f"(original error: {msg})")
    return ModelLoadError(f"could not load {name!r}{rev}: {msg}")


def _source(name: str, revision: str | None) -> tuple[str, str | None, bool]:
    """(what transformers loads: a folder or a hub id, the revision to pass it, whether it is a local folder)."""
    if is_zoo_name(name):
        return str(resolve_zoo(name[4:], revision)), None, True
    if is_real_name(name):
        if revision is not None:
            raise ModelLoadError(f"{name!r} has no revisions (it is one quantised release); drop revision={revision!r}")
        try:
            return str(resolve_real(name)), None, True
        except RealModelError as err:
            raise ModelLoadError(str(err)) from err
    if Path(name).expanduser().exists() or looks_like_path(name):
        problem = local_folder_problem(name)
        if problem:
            raise ModelLoadError(problem)
        if revision is not None:
            raise ModelLoadError(f"{name!r} is a local folder, and a local folder has no revisions (got "
                                 f"revision={revision!r}): drop revision, or pass the folder of that checkpoint")
        return str(Path(name).expanduser()), None, True
    return name, revision, False


def _weights(source: str, name: str, asked_revision, local: bool, config, progress: bool, **kwargs):
    """The model from its weights, refused (ModelLoadError) when a weight is missing, unused or misshapen."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    if bars and not progress:
        hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # its loading report: `weights_problem` states what matters
    try:
        model, info = AutoModelForCausalLM.from_pretrained(source, config=config, output_loading_info=True, **kwargs)
    except Exception as err:
        raise _explain(name, asked_revision, err, local) from err
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars and not progress:
            hf_logging.enable_progress_bar()
    problem = weights_problem(info, name, config)
    if problem:
        raise ModelLoadError(problem)
    return model


def load_model(name_or_path: str, revision: str | None = None, *, dtype="float32", device=None,
               device_map=None, trust_remote_code: bool = False, tokenizer=True,
               progress: bool = False) -> LoadedModel:
    """Load a causal LM by hub id, local folder, zoo name ("zoo/dense-mid") or real model ("real/gemma-3-270m",
    converted once from the GGUF its pip package ships; see eeutils.arch.real).

    dtype: "float32" (default), "bfloat16", "float16" or "auto". device: "cpu", "cuda", ...;
    device_map: e.g. "auto" to shard a large model across GPUs with accelerate (hooks stay correct:
    each block's state is read where it lives and moved to the head's device per chunk).
    trust_remote_code stays off unless you pass it. Safetensors weights are preferred; a local folder
    (and the zoo) must have them (a pickle checkpoint is refused, never unpickled) and is checked before
    loading (`eeutils.arch.folder`). A weight missing from the checkpoint, or one the model does not use,
    is an error naming them (never a silently random layer).
    progress: show transformers' weight-loading bars (useful for large downloads).
    """
    from transformers import AutoConfig, AutoTokenizer

    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"name_or_path must be a non-empty string, got {name_or_path!r}")
    if device is not None and device_map is not None:
        raise ValueError("pass either device or device_map, not both")
    check_device("device", device)
    check_bools(trust_remote_code=trust_remote_code, tokenizer=tokenizer, progress=progress)
    torch_dtype = parse_dtype(dtype)
    name = str(name_or_path)
    source, revision_for_hf, local = _source(name, revision)
    if local:
        problem = folder_problem(source, trust_remote_code)
        if problem:
            raise ModelLoadError(problem)
    kwargs = dict(revision=revision_for_hf, trust_remote_code=trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except Exception as err:  # transformers raises OSError/ValueError with many texts
        raise _explain(name, revision, err, local) from err
    if getattr(config, "is_decoder", None) is False and not getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"{name!r} is not a causal language model: its config (model_type {config.model_type!r}) describes an "
            "encoder with bidirectional attention (is_decoder=False), whose layers see later tokens. The kit reads "
            "out decoder-only LMs (GPT-2, Llama, Pythia, Mamba, ...).")
    model = _weights(source, name, revision, local, config, progress, dtype=torch_dtype, device_map=device_map,
                     use_safetensors=True if local else None, **kwargs)
    if device is not None:
        model.to(device)
    tok = None
    if tokenizer:
        try:
            tok = AutoTokenizer.from_pretrained(source, **kwargs)
        except Exception as err:
            damaged = [f for f in TOKENIZER_FILES if local and (Path(source) / f).is_file()]
            if damaged:  # the folder has a tokenizer, and it does not load: damaged, not absent
                raise ModelLoadError(f"the tokenizer of {name!r} ({', '.join(damaged)} in {source}) cannot be read "
                                     f"({type(err).__name__}: {err}); copy those files again, or pass "
                                     "tokenizer=False to load the weights alone") from err
            warnings.warn(f"no tokenizer for {name!r} ({err}); pass token ids to the readout")
    model.eval()
    return LoadedModel(model=model, tokenizer=tok, name=name, revision=revision,
                       resolved=resolve(model))
