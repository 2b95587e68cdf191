"""Build zoo models in worker processes, one torch thread each, with results independent of scheduling.

Every model's weights depend only on its recipe and the data (seeds, data order and thread count are fixed
per model), so building with 1 or N workers gives bit-identical files (tested on a micro recipe). Jobs run
in the plan's order (longest first); a fine-tune starts once its base is finished. Each worker builds the
data once (about 20 s); a model is resumable as in the sequential build (``train.STATE_EVERY``).
"""
from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch
from tqdm.auto import tqdm

from eeutils.workloads import corpus as C

_DATA = None  # the worker's data (built once per process)
_BUILD = None  # the worker's build function: build_one(recipe, data, force=, progress=) -> card | None


class SyntheticData:
    """Random token windows with the zoo data's interface (for tests and timing calibration)."""

    def __init__(self, vocab_size: int = 2048, context: int = 128, n_train: int = 256, n_val: int = 16,
                 seed: int = 0, tok_dir=None):
        g = torch.Generator().manual_seed(seed)
        self.vocab_size = vocab_size
        self.train_wins = torch.randint(3, vocab_size, (n_train, context), generator=g)
        self.val_wins = torch.randint(3, vocab_size, (n_val, context), generator=g)
        self.per_source = {(s, "validation"): torch.randint(3, vocab_size, (2 * 128,), generator=g)  # 2 windows
                           for s in C.SOURCES}
        self.unigram = float(torch.log(torch.tensor(float(vocab_size))))
        self.tok_dir = Path(tok_dir) if tok_dir else Path(tempfile.mkdtemp(prefix="zoo-synth-tok-"))
        self.tokenizer = None
        self.manifest = {"text_sha256": {"prose": {"train": "synthetic"}}, "token_stream_sha256": {},
                         "tokenizer": {"tokenizer_json_sha256": "synthetic"}, "python_version": "synthetic"}


def _init(data_factory, build_fn, threads: int) -> None:
    global _DATA, _BUILD
    torch.set_num_threads(threads)
    _DATA, _BUILD = data_factory(), build_fn


def _build(recipe, force: bool) -> tuple[str, dict | None, float]:
    t = time.time()
    card = _BUILD(recipe, _DATA, force=force, progress=False)
    return recipe.name, card, time.time() - t


def ready(pending: list, done: set, names: set) -> list:
    """Recipes in ``pending`` whose dependency is finished (or is not part of this build)."""
    return [r for r in pending if not r.depends_on or r.depends_on in done or r.depends_on not in names]


def simulate(recipes: list, minutes: dict, workers: int) -> tuple[float, dict]:
    """Wall time of the same greedy schedule ``run`` uses: (makespan, {name: (worker, start, end)})."""
    free = [0.0] * workers
    done_at: dict = {}
    slots: dict = {}
    pending = list(recipes)
    names = {r.name for r in recipes}
    while pending:
        w = min(range(workers), key=lambda i: free[i])
        cand = [r for r in pending if not r.depends_on or r.depends_on not in names or
                (r.depends_on in done_at and done_at[r.depends_on] <= free[w])]
        if not cand:  # wait for the earliest dependency to finish
            free[w] = min(done_at[r.depends_on] for r in pending if r.depends_on in done_at) \
                if any(r.depends_on in done_at for r in pending) else max(free)
            continue
        r = cand[0]
        start = free[w]
        free[w] = done_at[r.name] = start + minutes[r.name]
        slots[r.name] = (w, start, free[w])
        pending.remove(r)
    return max(free), slots


def run(recipes: list, workers: int, data_factory, build_fn, force: bool | set = False, threads: int = 1,
        progress: bool = True) -> list[dict]:
    """Build ``recipes`` (in this order, dependencies respected) with ``workers`` processes, each preparing its
    data with ``data_factory()`` once and building with ``build_fn`` (``build.build_one``; both module-level, so
    they pickle by reference). ``force``: rebuild all (True) or the named models (a set) even where a finished
    folder exists."""
    names = {r.name for r in recipes}
    pending, done, cards = list(recipes), set(), []
    ctx = mp.get_context("spawn")  # a clean interpreter per worker: no inherited torch thread pools
    bar = tqdm(total=len(recipes), desc="zoo models", unit="model", disable=not progress)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init,
                             initargs=(data_factory, build_fn, threads)) as pool:
        running = {}
        while pending or running:
            for r in ready(pending, done, names)[: max(0, workers - len(running))]:
                redo = force if isinstance(force, bool) else r.name in force
                running[pool.submit(_build, r, redo)] = r
                pending.remove(r)
            if not running:
                raise RuntimeError(f"cannot schedule {[r.name for r in pending]}: unmet dependencies")
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                r = running.pop(fut)
                try:
                    name, card, seconds = fut.result()
                except Exception as err:
                    for f in running:
                        f.cancel()
                    raise RuntimeError(f"zoo model {r.name} failed ({err!r}); finished models are kept, "
                                       "rerun the same command to resume") from err
                done.add(name)
                if card:
                    cards.append(card)
                bar.update(1)
                bar.set_postfix_str(f"{name} {seconds / 60:.1f} min")
    bar.close()
    return cards
