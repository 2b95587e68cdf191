"""Built-in workloads: the zoo corpus' held-out TEST split and the real-LLM tasks offline, Hugging Face datasets online."""
from __future__ import annotations

import re

from ..core.env import hf_offline, offline_setting
from .real_tasks import register as register_real_tasks
from .corpus import instruction_docs, load_split
from .registry import register_workload
from .types import Doc, Workload, WorkloadUnavailable


# --------------------------------------------------------------------------------------------------
# offline built-ins: the zoo corpus' TEST split

def _zoo_loader(source: str):
    def load():
        return load_split(source, "test")
    return load


def _zoo_instruct():
    return instruction_docs("test")


# --------------------------------------------------------------------------------------------------
# online built-ins through `datasets`

def _load_hf(workload: str, path: str, config: str | None, split: str):
    """datasets.load_dataset with errors turned into WorkloadUnavailable that say what to do."""
    alternatives = ("use an offline workload instead ('zoo-prose', 'zoo-technical', 'zoo-task'), or your own "
                    "text with workload_from_text_file(path) / workload_from_texts(texts, name)")
    try:
        import datasets
    except ImportError as err:
        raise WorkloadUnavailable(
            f"workload {workload!r} needs the `datasets` package: pip install datasets "
            f"(or pip install 'eeutils[data]'); or {alternatives}") from err
    try:
        return datasets.load_dataset(path, config, split=split)
    except Exception as err:  # noqa: BLE001 - many error types; all mean "not loadable here"
        spec = path + (f" ({config})" if config else "")
        if hf_offline() or isinstance(err, (ConnectionError, OSError, TimeoutError)):
            raise WorkloadUnavailable(
                f"workload {workload!r} (Hugging Face dataset {spec}, split {split!r}) is not in the local "
                f"datasets cache and cannot be downloaded (offline: {offline_setting()}). Go online once (unset the offline "
                f"variables and run get_workload({workload!r})) so it is cached, or {alternatives}. "
                f"(original error: {type(err).__name__}: {err})") from err
        raise WorkloadUnavailable(
            f"workload {workload!r}: could not load Hugging Face dataset {spec}, split {split!r}: "
            f"{type(err).__name__}: {err}. Alternatively {alternatives}.") from err


_WIKI_HEADING = re.compile(r"^ = [^=].* = $")


def _wikitext():
    ds = _load_hf("wikitext", "Salesforce/wikitext", "wikitext-2-raw-v1", "test")
    articles, cur = [], []
    for line in ds["text"]:
        if _WIKI_HEADING.match(line.rstrip("\n")) and any(x.strip() for x in cur):
            articles.append("".join(cur).strip())
            cur = []
        cur.append(line)
    if any(x.strip() for x in cur):
        articles.append("".join(cur).strip())
    return Workload(name="wikitext", docs=[Doc(text=a) for a in articles if a], kind="lm",
                    source="Salesforce/wikitext wikitext-2-raw-v1 test (one article per document)")


def _code():
    ds = _load_hf("code", "openai/openai_humaneval", None, "test")
    docs = [Doc(text=(p + s).strip("\n") + "\n") for p, s in zip(ds["prompt"], ds["canonical_solution"])]
    return Workload(name="code", docs=docs, kind="lm",
                    source="openai/openai_humaneval test (prompt + canonical solution, Python)")


def _gsm8k_answer(solution: str) -> str:
    final = solution.rsplit("####", 1)[-1].strip()
    return final.replace(",", "").replace("$", "").strip()


def _gsm8k():
    ds = _load_hf("gsm8k", "openai/gsm8k", "main", "test")
    docs = [Doc(prompt=f"Question: {q.strip()}\nAnswer: The final answer is", answer=" " + _gsm8k_answer(a))
            for q, a in zip(ds["question"], ds["answer"])]
    return Workload(name="gsm8k", docs=docs, kind="qa",
                    source="openai/gsm8k main test (answer = the number after '####', commas removed)")


LETTERS = "ABCDEFGHIJ"


def _mc_prompt(question: str, options: list[str]) -> str:
    lines = [f"Question: {question.strip()}"]
    lines += [f"{LETTERS[i]}. {str(o).strip()}" for i, o in enumerate(options)]
    lines.append("Answer:")
    return "\n".join(lines)


def _arc():
    ds = _load_hf("arc", "allenai/ai2_arc", "ARC-Challenge", "test")
    docs = []
    for q, ch, key in zip(ds["question"], ds["choices"], ds["answerKey"]):
        labels = list(ch["label"])
        if key not in labels:
            continue
        docs.append(Doc(prompt=_mc_prompt(q, list(ch["text"])), answer=" " + LETTERS[labels.index(key)]))
    return Workload(name="arc", docs=docs, kind="qa",
                    source="allenai/ai2_arc ARC-Challenge test (options relabelled A, B, C, ...)")


def _mmlu():
    ds = _load_hf("mmlu", "cais/mmlu", "all", "test")
    docs = [Doc(prompt=_mc_prompt(q, list(ch)), answer=" " + LETTERS[int(a)])
            for q, ch, a in zip(ds["question"], ds["choices"], ds["answer"])]
    return Workload(name="mmlu", docs=docs, kind="qa", source="cais/mmlu all test (57 subjects, answer letter)")


def _register_builtins() -> None:
    register_workload("zoo-prose", _zoo_loader("prose"),
                      "KJV Bible chapters, held-out test split of the zoo corpus", "lm",
                      origin="offline", source="eeutils.corpus prose/test", overwrite=True)
    register_workload("zoo-technical", _zoo_loader("technical"),
                      "Python stdlib docstrings, held-out test split of the zoo corpus", "lm",
                      origin="offline", source="eeutils.corpus technical/test", overwrite=True)
    register_workload("zoo-task", _zoo_loader("task"),
                      "synthetic addition and key-value recall, exact-match answers (test split)", "qa",
                      origin="offline", source="eeutils.corpus task/test", overwrite=True)
    register_workload("zoo-instruct", _zoo_instruct,
                      "the task and verse completion in the tuned zoo model's '### Question / ### Answer' format "
                      "(test split)", "qa", origin="offline", source="eeutils.corpus.instruction_docs test",
                      overwrite=True)
    register_workload("wikitext", _wikitext, "WikiText-2 raw test, one Wikipedia article per document", "lm",
                      origin="online", source="Salesforce/wikitext", overwrite=True)
    register_workload("code", _code, "HumanEval Python functions (prompt + reference solution) as text", "lm",
                      origin="online", source="openai/openai_humaneval", overwrite=True)
    register_workload("gsm8k", _gsm8k, "grade-school maths word problems, final numeric answer", "qa",
                      origin="online", source="openai/gsm8k", overwrite=True)
    register_workload("arc", _arc, "ARC-Challenge science questions, multiple choice, answer letter", "qa",
                      origin="online", source="allenai/ai2_arc", overwrite=True)
    register_workload("mmlu", _mmlu, "MMLU knowledge questions (57 subjects), multiple choice, answer letter", "qa",
                      origin="online", source="cais/mmlu", overwrite=True)
    register_real_tasks()  # exact-answer tasks for the real LLMs (real-task, real-facts, real-context)


_register_builtins()
