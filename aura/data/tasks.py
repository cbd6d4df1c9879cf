"""What each synthetic example says and asks: text to speak, text prompt, target response.

Plans are drawn in one process from one seeded `random.Random`, so a seed fixes the whole data set;
the audio is rendered afterwards in parallel from these plain records.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from aura.data.corpus import MIN_WORD_COUNT, sentences_in
from aura.data.facts import Country, countries_in, fact_kinds, make_fact
from aura.data.people import ACTIONS, names_in
from aura.data.splits import check_split
from aura.metrics import normalize_answer, normalize_transcript
from aura.model.prompt import ASR_PROMPTS

TASKS = ("asr", "spoken-qa", "context-qa", "who-did", "instruct")
# The instruct mixture: (sub-task, weight).
INSTRUCT_MIX = (("asr", 3), ("spoken-qa", 3), ("context-qa", 2), ("summarize", 2))

QA_PROMPTS = (
    "<audio>\nAnswer the spoken question in a few words.",
    "Listen and answer briefly: <audio>",
    "Answer the question asked in this clip with a short phrase. <audio>",
    "<audio>\nReply with just the answer.",
)
CONTEXT_PROMPTS = (
    "Context: {context}\n\nAnswer the spoken question using the context, in a few words.\n<audio>",
    "Read this: {context}\n\nNow listen to the question and answer briefly: <audio>",
    "<audio>\nAnswer the question in the clip from this text, with a short phrase: {context}",
)
WHO_PROMPTS = (
    "{context}\n\nAnswer the spoken question with one name from the text.\n<audio>",
    "Read this: {context}\n\nNow listen to the question and reply with the person's name only: <audio>",
    "Context: {context}\n\nQuestion (spoken): <audio>\nAnswer with a name.",
)
SUMMARY_PROMPTS = (
    "<audio>\nSummarise what was said in one sentence.",
    "Listen to this clip and give a one-sentence summary. <audio>",
    "What was the clip about? Answer in one sentence. <audio>",
)


@dataclass(frozen=True)
class Plan:
    """Everything about one example except its audio."""

    task: str
    text: str  # what is spoken
    prompt: str
    response: str
    transcript: str
    entity: str
    distractors: tuple[str, ...] = ()  # wrong answers the prompt also offers (context-qa)


def _asr(rng: random.Random, split: str, min_word_count: int) -> Plan:
    pool = sentences_in(split, min_word_count)
    sentence = rng.choice(pool)
    return Plan("asr", sentence, rng.choice(ASR_PROMPTS), sentence, normalize_transcript(sentence), sentence)


def _spoken_qa(rng: random.Random, pool: tuple[Country, ...]) -> Plan:
    country = rng.choice(pool)
    fact = make_fact(country, rng.choice(fact_kinds(country)), rng)
    return Plan(
        "spoken-qa",
        fact.question,
        rng.choice(QA_PROMPTS),
        fact.answer,
        normalize_transcript(fact.question),
        country.iso,
    )


def _context_qa(rng: random.Random, pool: tuple[Country, ...]) -> Plan:
    """The asked fact, the same kind of fact for 1-2 other countries (so the question must be heard),
    and a few unrelated facts, shuffled into one paragraph."""
    country = rng.choice(pool)
    kind = rng.choice(fact_kinds(country))
    fact = make_fact(country, kind, rng)
    others = [c for c in pool if c.iso != country.iso and kind in fact_kinds(c)]
    statements, distractors = [fact.statement], []
    for other in rng.sample(others, min(len(others), rng.randint(1, 2))):
        rival = make_fact(other, kind, rng)
        statements.append(rival.statement)
        if normalize_answer(rival.answer) != normalize_answer(fact.answer):
            distractors.append(rival.answer)
    fillers = [c for c in pool if c.iso != country.iso]
    for other in rng.sample(fillers, min(len(fillers), rng.randint(1, 3))):
        statements.append(make_fact(other, rng.choice(fact_kinds(other)), rng).statement)
    rng.shuffle(statements)
    prompt = rng.choice(CONTEXT_PROMPTS).format(context=" ".join(statements))
    return Plan(
        "context-qa",
        fact.question,
        prompt,
        fact.answer,
        normalize_transcript(fact.question),
        country.iso,
        tuple(distractors),
    )


def _who_did(rng: random.Random, names: tuple[str, ...]) -> Plan:
    """Three people each did one thing (the text context); the spoken question asks who did one of them.

    Every name in the context is a candidate and only the heard action picks one, so the text alone
    scores chance (1/3) and the gold transcript in its place scores what the LLM can read: a QA whose
    text ceiling sits far above chance for an LLM that reads (unlike context-qa's country facts).
    """
    people: list[str] = []
    while len(people) < 3:  # no two names a listener could confuse (Kristi / Kristy)
        name = rng.choice(names)
        if all(name[:3] != other[:3] for other in people):
            people.append(name)
    actions = rng.sample(ACTIONS, 3)
    statements = [f"{person} {action}." for person, action in zip(people, actions, strict=True)]
    rng.shuffle(statements)
    asked = rng.randrange(3)
    question = f"Who {actions[asked]}?"
    prompt = rng.choice(WHO_PROMPTS).format(context=" ".join(statements))
    rivals = tuple(p for i, p in enumerate(people) if i != asked)
    return Plan(
        "who-did", question, prompt, people[asked], normalize_transcript(question), people[asked], rivals
    )


def _summarize(rng: random.Random, pool: tuple[Country, ...]) -> Plan:
    """A spoken three-fact description of a country; the target names the country and two facts."""
    country = rng.choice(pool)
    kinds = rng.sample([k for k in fact_kinds(country) if k not in ("capital-of", "city-country")], 3)
    spoken = " ".join(make_fact(country, k, rng).statement for k in kinds)
    response = f"The speaker talks about {country.ref}, a country in {country.continent} whose capital is {country.capital}."
    return Plan(
        "summarize", spoken, rng.choice(SUMMARY_PROMPTS), response, normalize_transcript(spoken), country.iso
    )


def plan_examples(task: str, n: int, split: str, seed: int, min_word_count: int | None = None) -> list[Plan]:
    """`n` example plans of `task` drawn from `split` only; the same arguments give the same plans.
    `min_word_count` sets the asr task's sentence filter (None: the corpus default; see `aura.data.corpus`)."""
    min_word_count = min_word_count or MIN_WORD_COUNT
    check_split(split)
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'; use one of {', '.join(TASKS)}")
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    rng = random.Random(f"{task}/{split}/{seed}")
    pool = countries_in(split)
    makers = {
        "asr": lambda: _asr(rng, split, min_word_count),
        "spoken-qa": lambda: _spoken_qa(rng, pool),
        "context-qa": lambda: _context_qa(rng, pool),
        "who-did": lambda: _who_did(rng, names_in(split)),
        "summarize": lambda: _summarize(rng, pool),
    }
    if task == "instruct":
        names = [name for name, _ in INSTRUCT_MIX]
        weights = [w for _, w in INSTRUCT_MIX]
        return [makers[rng.choices(names, weights)[0]]() for _ in range(n)]
    return [makers[task]() for _ in range(n)]
