"""Build the zoo: corpus -> tokenizer -> one model per recipe -> cards. Resumable per model."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from eeutils.arch.names import TOKENIZER_DIRNAME, resolve, zoo_root
from eeutils.core.resources import repo_root
from eeutils.workloads import corpus as C
from eeutils.zoo import tokenizer as T
from eeutils.zoo import train as TR
from eeutils.zoo import write_zoo_markdown
from eeutils.zoo.recipes import CONTEXT, PAD_ID, Recipe

MAIN_STEPS = 448  # x batch 8 x context 128 = 458,752 tokens
CHECKPOINTS = (0, 8, 32, 128, 256)  # dense-mid revisions step-<n>; step-448 is the main folder

# The zoo, in build order (most important first). Differences between rows are architecture,
# size and seed only, except gpt2-mid (1/4 of the tokens: the "previous generation" analogue:
# fewer tokens per parameter, LayerNorm, GELU, learned positions) and dense-mid-tuned.
ZOO: list[Recipe] = [
    Recipe("dense-mid", "llama", 128, 6, MAIN_STEPS, seed=0, checkpoints=CHECKPOINTS),
    Recipe("moe-mid", "moe", 128, 6, MAIN_STEPS, seed=0, extra={"experts": 4, "top_k": 2}),
    Recipe("ssm-mid", "mamba2", 128, 6, MAIN_STEPS, seed=0),
    Recipe("hybrid-mid", "bamba", 128, 6, MAIN_STEPS, seed=0),
    Recipe("gpt2-mid", "gpt2", 128, 6, MAIN_STEPS // 4, seed=0, warmup=16,
           note="previous-generation analogue: GPT-2 block (LayerNorm, GELU, learned positions), 1/4 of the tokens"),
    Recipe("dense-small", "llama", 96, 4, MAIN_STEPS, seed=0),
    Recipe("dense-large", "llama", 192, 8, MAIN_STEPS, seed=0),
    Recipe("dense-mid-tuned", "llama", 128, 6, 64, seed=0, batch=16, lr=1e-3, warmup=8, finetune_of="dense-mid",
           note="dense-mid fine-tuned on '### Question/### Answer' items (task + verse completion), loss on answers only"),
    Recipe("dense-mid-s1", "llama", 128, 6, MAIN_STEPS, seed=1),
    Recipe("moe-mid-s1", "moe", 128, 6, MAIN_STEPS, seed=1, extra={"experts": 4, "top_k": 2}),
    Recipe("ssm-mid-s1", "mamba2", 128, 6, MAIN_STEPS, seed=1),
]
RECIPES = {r.name: r for r in ZOO}


def build_dir() -> Path:
    """Scratch space for resumable training states (never shipped)."""
    return Path(os.environ.get("EEUTILS_ZOO_BUILD_DIR", Path.home() / ".cache" / "eeutils" / "zoo_build"))


def code_version() -> dict:
    v = {"eeutils": None, "git_commit": None}
    try:
        import tomllib

        v["eeutils"] = tomllib.loads((repo_root() / "pyproject.toml").read_text())["project"]["version"]
    except Exception:
        pass
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            v["git_commit"] = out.stdout.strip()
    except Exception:
        pass
    return v


# ------------------------------------------------------------------ data preparation
class Data:
    """Corpus, tokenizer and token streams shared by every model of one build."""

    def __init__(self, force_tokenizer: bool = False):
        self.corpus = C.build_corpus()
        self.tok_dir = zoo_root() / TOKENIZER_DIRNAME
        if force_tokenizer or not (self.tok_dir / "tokenizer.json").is_file():
            texts = [t for s in C.SOURCES for t in self.corpus.texts(s, "train")]
            if self.tok_dir.exists():
                shutil.rmtree(self.tok_dir)
            T.save_tokenizer(T.train_tokenizer(texts), self.tok_dir)
        self.tokenizer = T.load_tokenizer(self.tok_dir)
        self.vocab_size = len(self.tokenizer)
        streams, self.per_source = {}, {}
        for split in C.SPLITS:
            texts = [t for s in C.SOURCES for t in self.corpus.texts(s, split)]
            streams[split] = TR.token_stream(self.tokenizer, texts)
            for s in C.SOURCES:
                self.per_source[(s, split)] = TR.token_stream(self.tokenizer, self.corpus.texts(s, split), shuffle_seed=None)
        self.streams = streams
        self.train_wins = TR.windows(streams["train"])
        self.val_wins = TR.val_subset(TR.windows(streams["validation"]), TR.N_VAL_WINDOWS_FINAL)
        self.unigram = TR.unigram_loss(streams["train"], self.val_wins, self.vocab_size)
        self.manifest = C.write_manifest(self.corpus, extra={
            "tokenizer": {"vocab_size": self.vocab_size, "tokenizer_json_sha256": T.tokenizer_sha256(self.tok_dir),
                          "special_tokens": T.SPECIAL_TOKENS},
            "token_stream_sha256": {split: TR.stream_sha256(st) for split, st in streams.items()},
            "token_stream_sha256_per_source": {f"{s}/{sp}": TR.stream_sha256(st) for (s, sp), st in self.per_source.items()},
            "tokens": {split: int(len(st)) for split, st in streams.items()},
            "tokens_per_source": {f"{s}/{sp}": int(len(st)) for (s, sp), st in self.per_source.items()},
            "context": CONTEXT,
            "unigram_val_loss": self.unigram,
            "val_windows": int(len(self.val_wins)),
            "data_order": "train docs shuffled with random.Random(0), <|bos|> doc <|eos|>, packed, "
                          f"non-overlapping {CONTEXT}-token windows visited in torch.randperm(seed=epoch)",
        })


# ------------------------------------------------------------------ instruction tuning
def _instruction_batches(tokenizer, docs, batch: int):
    enc = tokenizer.backend_tokenizer
    items = []
    for d in docs:
        p = enc.encode(d.prompt).ids
        a = enc.encode(d.answer, add_special_tokens=False).ids + [1]
        ids = (p + a)[:CONTEXT]
        labels = ([-100] * len(p) + a)[:CONTEXT]
        items.append((ids, labels))
    out = []
    for i in range(0, len(items) - batch + 1, batch):
        chunk = items[i:i + batch]
        n = max(len(x) for x, _ in chunk)
        ids = torch.full((batch, n), PAD_ID, dtype=torch.long)
        lab = torch.full((batch, n), -100, dtype=torch.long)
        mask = torch.zeros((batch, n), dtype=torch.long)
        for j, (x, y) in enumerate(chunk):
            ids[j, :len(x)], lab[j, :len(y)], mask[j, :len(x)] = torch.tensor(x), torch.tensor(y), 1
        out.append((ids, lab, mask))
    return out


def _instruction_loss(model, batches) -> float:
    model.eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for ids, lab, mask in batches:
            out = model(input_ids=ids, attention_mask=mask, labels=lab, use_cache=False)
            m = int((lab[:, 1:] != -100).sum())
            tot, n = tot + float(out.loss) * m, n + m
    model.train()
    return tot / n


def finetune(recipe: Recipe, data: Data, progress: bool = True):
    """Answer-only supervised fine-tuning of an already built zoo model."""
    base = AutoModelForCausalLM.from_pretrained(str(resolve(recipe.finetune_of)), dtype=torch.float32)
    train_b = _instruction_batches(data.tokenizer, C.instruction_docs("train"), recipe.batch)
    val_b = _instruction_batches(data.tokenizer, C.instruction_docs("validation", n_verse=200), recipe.batch)[:8]
    before = _instruction_loss(base, val_b)
    torch.manual_seed(recipe.seed)
    opt = TR.make_optimizer(base, recipe)
    t0 = time.time()
    base.train()
    for step in tqdm(range(recipe.steps), desc=recipe.name, disable=not progress, mininterval=10):
        for g in opt.param_groups:
            g["lr"] = TR.lr_at(step, recipe)
        ids, lab, mask = train_b[step % len(train_b)]
        loss = base(input_ids=ids, attention_mask=mask, labels=lab, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(base.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = time.time() - t0
    tokens = sum(int(m.sum()) for _, _, m in train_b[: recipe.steps])
    extra = {"instruction_val_loss_before": before, "instruction_val_loss": _instruction_loss(base, val_b),
             "finetune_tokens": tokens}
    return TR.TrainResult(base, [], seconds, tokens), extra


# ------------------------------------------------------------------ one model
def build_one(recipe: Recipe, data: Data, force: bool = False, progress: bool = True) -> dict | None:
    folder = zoo_root() / recipe.name
    if (folder / "card.json").is_file() and not force:
        print(f"[zoo] {recipe.name}: already built, skipping", flush=True)
        return None
    state_dir = build_dir() / recipe.name
    if force:
        shutil.rmtree(state_dir, ignore_errors=True)
    if folder.exists():
        shutil.rmtree(folder)
    print(f"[zoo] {recipe.name}: training {recipe.class_name} d={recipe.d} L={recipe.layers} steps={recipe.steps}", flush=True)
    ckpts = []

    def save_ckpt(step, model):
        t = time.time()
        TR.save_hf(model, folder / "checkpoints" / f"step-{step}", data.tok_dir)
        val = TR.evaluate(TR.half_copy(model).float(), data.val_wins)
        ckpts.append({"revision": f"step-{step}", "step": step, "tokens_seen": step * recipe.batch * CONTEXT,
                      "val_loss": val})
        print(f"[zoo] {recipe.name}: checkpoint step-{step} val_loss={val:.3f} ({time.time() - t:.1f}s)", flush=True)

    extra = {}
    if recipe.finetune_of:
        res, extra = finetune(recipe, data, progress=progress)
        base_card = json.loads((zoo_root() / recipe.finetune_of / "card.json").read_text())
        tokens_seen = base_card["tokens_seen"] + res.tokens
    else:
        res = TR.train(recipe, data.train_wins, data.val_wins, data.vocab_size, state_dir=state_dir,
                       checkpoint_cb=save_ckpt if recipe.checkpoints else None, progress=progress)
        tokens_seen = res.tokens
    model = res.model
    TR.save_hf(model, folder, data.tok_dir)
    shipped = TR.half_copy(model).float()  # score the weights that ship (fp16), read back in fp32
    val = TR.evaluate(shipped, data.val_wins)
    per_source = {}
    for s in ("prose", "technical", "task"):
        w = TR.val_subset(TR.windows(data.per_source[(s, "validation")]), 64)
        per_source[s] = TR.evaluate(shipped, w)
    total, active = TR.count_params(model)
    cfg = model.config
    card = {
        "name": recipe.name, "family": recipe.family, "class": recipe.class_name, "arch": recipe.arch,
        "config_summary": {"d_model": recipe.d, "layers": recipe.layers, "vocab_size": data.vocab_size,
                           "context": CONTEXT, "heads": getattr(cfg, "num_attention_heads", getattr(cfg, "n_head", None)),
                           **{k: getattr(cfg, k) for k in ("intermediate_size", "num_experts", "num_experts_per_tok",
                                                          "moe_intermediate_size", "expand", "state_size", "num_heads",
                                                          "head_dim", "attn_layer_indices", "mamba_d_state",
                                                          "mamba_expand", "n_inner", "tie_word_embeddings")
                              if getattr(cfg, k, None) is not None}},
        "params_total": total, "params_active": active,
        "tokens_seen": tokens_seen, "steps": recipe.steps, "batch": recipe.batch, "lr": recipe.lr,
        "warmup": recipe.warmup, "seed": recipe.seed, "data_seed": TR.DATA_SEED,
        "train_seconds": res.seconds, "torch_threads": torch.get_num_threads(),
        "val_loss": val, "val_loss_per_source": per_source, "unigram_val_loss": data.unigram,
        "val_windows": int(len(data.val_wins)), "history": res.history,
        "weights_dtype": "float16", "final_revision": f"step-{recipe.steps}" if not recipe.finetune_of else None,
        "checkpoints": sorted(ckpts, key=lambda c: c["step"]),
        "finetune_of": recipe.finetune_of, "note": recipe.note,
        "corpus": {"text_sha256": data.manifest["text_sha256"], "token_stream_sha256": data.manifest["token_stream_sha256"],
                   "tokenizer_json_sha256": data.manifest["tokenizer"]["tokenizer_json_sha256"],
                   "python_version": data.manifest["python_version"]},
        "recipe": {k: v for k, v in asdict(recipe).items()},
        "code_version": code_version(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": __import__("transformers").__version__},
        **extra,
    }
    (folder / "CARD.md").write_text(card_markdown(card))
    (folder / "card.json").write_text(json.dumps(card, indent=1) + "\n")  # written last: marks the model as done
    shutil.rmtree(state_dir, ignore_errors=True)
    print(f"[zoo] {recipe.name}: done in {res.seconds / 60:.1f} min, val_loss={val:.3f} "
          f"(unigram {data.unigram:.3f})", flush=True)
    return card


def card_markdown(c: dict) -> str:
    lines = [f"# zoo/{c['name']}", "",
             f"A tiny `{c['class']}` ({c['family']}) trained by `python -m eeutils.zoo build` on the eeutils corpus "
             "(KJV prose, Python stdlib docstrings, synthetic exact-match task). Toy scale: for teaching and for "
             "testing early-exit analyses offline, not a language model to use.", "",
             "| field | value |", "|---|---|"]
    cs = c["config_summary"]
    rows = [("class", c["class"]), ("family", c["family"]), ("layers x d_model", f"{cs['layers']} x {cs['d_model']}"),
            ("config", ", ".join(f"{k}={v}" for k, v in cs.items() if k not in ("layers", "d_model"))),
            ("params total / active", f"{c['params_total']:,} / {c['params_active']:,}"),
            ("tokens seen", f"{c['tokens_seen']:,}"), ("steps x batch x context", f"{c['steps']} x {c['batch']} x {cs['context']}"),
            ("seed (init) / data seed", f"{c['seed']} / {c['data_seed']}"),
            ("train time", f"{c['train_seconds'] / 60:.1f} min on {c['torch_threads']} CPU thread(s)"),
            ("val loss (nats/token, fp16 weights)", f"{c['val_loss']:.4f}"),
            ("val loss per source", ", ".join(f"{k} {v:.3f}" for k, v in c["val_loss_per_source"].items())),
            ("unigram baseline val loss", f"{c['unigram_val_loss']:.4f}"),
            ("weights", c["weights_dtype"] + " safetensors"),
            ("corpus sha256 (prose/train)", c["corpus"]["text_sha256"]["prose"]["train"]),
            ("code version", json.dumps(c["code_version"]))]
    if c.get("finetune_of"):
        rows.append(("fine-tuned from", f"zoo/{c['finetune_of']}"))
        rows.append(("instruction val loss before / after", f"{c['instruction_val_loss_before']:.3f} / {c['instruction_val_loss']:.3f}"))
    if c.get("note"):
        rows.append(("note", c["note"]))
    lines += [f"| {k} | {v} |" for k, v in rows]
    if c.get("checkpoints"):
        lines += ["", "## Revisions (training checkpoints)", "", "| revision | tokens seen | val loss |", "|---|---|---|"]
        lines += [f"| {k['revision']} | {k['tokens_seen']:,} | {k['val_loss']:.3f} |" for k in c["checkpoints"]]
        lines.append(f"| {c['final_revision']} (= main) | {c['tokens_seen']:,} | {c['val_loss']:.3f} |")
    return "\n".join(lines) + "\n"


def build(only: list[str] | None = None, force: bool = False, threads: int = 1, progress: bool = True) -> list[dict]:
    torch.set_num_threads(threads)
    names = only or [r.name for r in ZOO]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown zoo recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    t0 = time.time()
    data = Data()
    print(f"[zoo] data ready in {time.time() - t0:.0f}s: vocab {data.vocab_size}, train tokens {len(data.streams['train']):,}, "
          f"unigram val loss {data.unigram:.3f}", flush=True)
    cards = []
    for r in ZOO:
        if r.name in names:
            c = build_one(r, data, force=force, progress=progress)
            if c:
                cards.append(c)
    write_zoo_markdown()
    print(f"[zoo] all done in {(time.time() - t0) / 60:.1f} min", flush=True)
    return cards
