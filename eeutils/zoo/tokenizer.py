"""Byte-level BPE tokenizer for the zoo, trained on the train split of the corpus."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from eeutils.zoo.recipes import BOS_ID, CONTEXT, EOS_ID, PAD_ID, VOCAB_SIZE

SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>"]
assert [BOS_ID, EOS_ID, PAD_ID] == [0, 1, 2]


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """Train a byte-level BPE (deterministic: one thread, fixed input order). Returns a
    ``tokenizers.Tokenizer`` whose post-processor prepends ``<|bos|>``."""
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tok.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", pair="<|bos|> $A $B:1", special_tokens=[("<|bos|>", BOS_ID)])
    return tok


def wrap(tok):
    """A transformers ``PreTrainedTokenizerFast`` around a trained ``tokenizers.Tokenizer``."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>", model_max_length=CONTEXT)


def save_tokenizer(tok, folder: Path) -> None:
    wrap(tok).save_pretrained(str(folder))
    compact_json(folder)


def compact_json(folder: Path) -> bool:
    """Rewrite ``tokenizer.json`` without indentation (same JSON value, 124 KB -> 50 KB: a copy sits in every
    model and checkpoint folder of the zoo). Returns whether the file changed. Atomic."""
    import json

    path = Path(folder) / "tokenizer.json"
    text = path.read_text(encoding="utf-8")
    compact = json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
    if compact == text:
        return False
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(compact, encoding="utf-8")
    os.replace(tmp, path)
    return True


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def tokenizer_sha256(folder: Path) -> str:
    return hashlib.sha256((Path(folder) / "tokenizer.json").read_bytes()).hexdigest()
