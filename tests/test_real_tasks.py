"""The real-task workloads: deterministic, well-formed, registered."""
import pytest

from eeutils.workloads import real_tasks
from eeutils.workloads import get_workload


def test_items_are_deterministic_and_well_formed():
    a, b = real_tasks.real_task_items(), real_tasks.real_task_items()
    assert a == b and len(a) == len(set(a)) == 186
    assert real_tasks.real_task_items(seed=1) != a
    for sub, prompt, answer in a:
        assert answer.startswith(" ") and answer.strip() and not prompt.endswith(" ")
        assert sub.split("-")[0] in ("fact", "context")


def test_fact_prompts_show_two_solved_examples_never_the_answer():
    rows = real_tasks.read_facts()
    items = real_tasks.fact_items()
    assert len(items) == len(rows)
    for (rel, subj, ans), (sub, prompt, answer) in zip(rows, items):
        assert sub == f"fact-{rel}" and answer == " " + ans
        assert prompt.endswith(real_tasks.TEMPLATES[rel].format(s=subj))
        shots = prompt[:-len(real_tasks.TEMPLATES[rel].format(s=subj))]
        assert shots.count(".") >= 2 and f" {ans}." not in " " + shots


def test_context_answers_follow_from_the_prompt():
    for sub, prompt, answer in real_tasks.context_items(n_each=20):
        if sub == "context-sequence":
            seq = [x.strip() for x in prompt.rstrip(",").split(",")]
            if seq[0].isdigit():
                step = int(seq[1]) - int(seq[0])
                assert int(answer) == int(seq[-1]) + step
        else:
            assert answer.strip() in prompt.split(".")[0]


def test_bad_facts_line_is_reported(tmp_path):
    p = tmp_path / "facts.tsv"
    p.write_text("capital\tFrance\n")
    with pytest.raises(ValueError, match="facts.tsv:1"):
        real_tasks.read_facts(p)
    with pytest.raises(ValueError, match="part must be"):
        real_tasks.real_task_items("everything")


@pytest.mark.parametrize("name,n", [("real-task", 186), ("real-facts", 96), ("real-context", 90)])
def test_registered(name, n):
    wl = get_workload(name)
    assert wl.kind == "qa" and len(wl) == n and all(d.has_answer for d in wl.docs)
