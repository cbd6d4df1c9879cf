"""The `who-did` task: three people, three actions, one spoken question only the audio can settle."""

from __future__ import annotations

import re

from aura.data.people import ACTIONS, names_in
from aura.data.tasks import plan_examples


def test_names_never_cross_splits() -> None:
    train, dev, test = (set(names_in(s)) for s in ("train", "dev", "test"))
    assert len(dev) > 30 and len(test) > 30 and len(train) > 400
    assert not (train & dev or train & test or dev & test)


def test_actions_are_distinct_and_never_contain_each_other() -> None:
    """A heard action must pick exactly one sentence of the context."""
    assert len(set(ACTIONS)) == len(ACTIONS)
    assert not [(a, b) for a in ACTIONS for b in ACTIONS if a != b and f" {a} " in f" {b} "]


def test_who_did_plans() -> None:
    plans = plan_examples("who-did", 60, "test", seed=3)
    assert plans == plan_examples("who-did", 60, "test", seed=3)
    for plan in plans:
        action = re.fullmatch(r"Who (.+)\?", plan.text).group(1)
        context = plan.prompt
        assert f"{plan.response} {action}." in context
        assert len(plan.distractors) == 2 and plan.response not in plan.distractors
        # every candidate is in the context, each doing something else: the text alone is chance
        for rival in plan.distractors:
            assert re.search(rf"\b{rival} (?!{re.escape(action)}\.)", context)
        assert plan.response in names_in("test") and plan.entity == plan.response
        assert plan.transcript == plan.text.lower().rstrip("?")
    assert len({p.text for p in plans}) > 30  # questions vary
