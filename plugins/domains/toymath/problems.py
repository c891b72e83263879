"""toymath's problems: GSM8k-format arithmetic word problems in skill families.

Each problem is in exactly GSM8k's format (``question``; ``answer`` = a solution with calculator
annotations, last line ``#### N``):

* ``A`` addition/subtraction (``Tom has 4 + 7 = <<4+7=11>>11 apples now.\\n#### 11``),
* ``B`` multiplication/division, * ``C`` "format" problems that copy a number (no arithmetic),
* ``A2``/``B2``: the same skills in other templates (used by the "unseen" expert set).

The generated problems are the data of cached models: a change to a template or to the order of
the random draws changes every model built from them (bump ``family.RECIPE_VERSION``).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

from selfdev import ConfigError

NAMES = ["Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Jack", "Emma", "Leo", "Zoe", "Max", "Ella"]
OBJS = ["apples", "pencils", "cookies", "marbles", "stickers", "books", "eggs", "cards", "coins", "shells"]
PRON = {"Tom": "He", "Ben": "He", "Sam": "He", "Jack": "He", "Leo": "He", "Max": "He",
        "Anna": "She", "Lily": "She", "Mia": "She", "Emma": "She", "Zoe": "She", "Ella": "She"}

Family = Callable[..., tuple[str, str, int]]


def _ctx(r: random.Random):
    n = r.choice(NAMES)
    m = r.choice([x for x in NAMES if x != n])
    return n, m, PRON[n], r.choice(OBJS)


def _fill(text: str, n: str, m: str, P: str, o: str, **numbers: int) -> str:
    """A template's text: ``{n}``/``{m}`` the two names, ``{P}``/``{p}`` the first one's pronoun
    (capitalised / lower case), ``{o}`` the objects, and the numbers."""
    return text.format(n=n, m=m, P=P, p=P.lower(), o=o, **numbers)


def _add_sub(doc: str, templates: list[tuple[str, str]]) -> Family:
    """A family of ``c = a + b`` (even-numbered templates) and ``c = a - b`` (odd ones)
    problems; the answer is ``c``."""

    def family(r: random.Random, lo: int = 1, hi: int = 10):
        n, m, P, o = _ctx(r)
        t = r.randrange(len(templates))
        if t % 2 == 0:
            a, b = r.randint(lo, hi), r.randint(lo, hi)
            c = a + b
        else:
            c, b = r.randint(lo, hi), r.randint(lo, hi)
            a = c + b
        q, s = templates[t]
        return _fill(q, n, m, P, o, a=a, b=b, c=c), _fill(s, n, m, P, o, a=a, b=b, c=c), c

    family.__doc__ = doc
    return family


def _mul_div(doc: str, templates: list[tuple[str, str, str]]) -> Family:
    """A family of problems on ``c = a * b``; each template says which of ``c`` (a product) or
    ``b`` (a quotient) is its answer."""

    def family(r: random.Random, lo: int = 2, hi: int = 9):
        n, m, P, o = _ctx(r)
        t = r.randrange(len(templates))
        a, b = r.randint(lo, hi), r.randint(lo, hi)
        c = a * b
        q, s, answer = templates[t]
        return (_fill(q, n, m, P, o, a=a, b=b, c=c), _fill(s, n, m, P, o, a=a, b=b, c=c),
                {"b": b, "c": c}[answer])

    family.__doc__ = doc
    return family


fam_A = _add_sub("addition / subtraction, four templates.", [
    ("{n} has {a} {o}. {P} buys {b} more. How many {o} does {n} have now?",
     "{n} has {a} + {b} = <<{a}+{b}={c}>>{c} {o} now."),
    ("{n} has {a} {o}. {P} gives {b} {o} to {m}. How many {o} does {n} have left?",
     "{n} has {a} - {b} = <<{a}-{b}={c}>>{c} {o} left."),
    ("There are {a} {o} in a box. {n} puts {b} more {o} in the box. How many {o} are in the box?",
     "There are {a} + {b} = <<{a}+{b}={c}>>{c} {o} in the box."),
    ("{n} had {a} {o}. {m} took {b} of them. How many {o} does {n} have?",
     "{n} has {a} - {b} = <<{a}-{b}={c}>>{c} {o}."),
])

fam_A2 = _add_sub("addition / subtraction in other templates.", [
    ("{n} collects {a} {o}. Later {p} finds {b} more {o}. How many {o} does {n} have in total?",
     "{n} has {a} + {b} = <<{a}+{b}={c}>>{c} {o} in total."),
    ("{n} had {a} {o} and lost {b} of them. How many {o} are left?",
     "There are {a} - {b} = <<{a}-{b}={c}>>{c} {o} left."),
    ("{n} has {a} {o} and {m} has {b} {o}. How many {o} do they have together?",
     "They have {a} + {b} = <<{a}+{b}={c}>>{c} {o} together."),
])

fam_B = _mul_div("multiplication / division, four templates.", [
    ("{n} has {a} bags. Each bag has {b} {o}. How many {o} does {n} have?",
     "{n} has {a} * {b} = <<{a}*{b}={c}>>{c} {o}.", "c"),
    ("A box holds {b} {o}. How many {o} are in {a} boxes?",
     "There are {a} * {b} = <<{a}*{b}={c}>>{c} {o} in {a} boxes.", "c"),
    ("{n} has {c} {o} and shares them equally among {a} friends. How many {o} does each friend get?",
     "Each friend gets {c} / {a} = <<{c}/{a}={b}>>{b} {o}.", "b"),
    ("{n} puts {c} {o} into {a} equal rows. How many {o} are in each row?",
     "Each row has {c} / {a} = <<{c}/{a}={b}>>{b} {o}.", "b"),
])

fam_B2 = _mul_div("multiplication / division in other templates.", [
    ("There are {a} tables with {b} {o} on each table. How many {o} are there?",
     "There are {a} * {b} = <<{a}*{b}={c}>>{c} {o}.", "c"),
    ("{c} {o} are split evenly into {a} groups. How many {o} are in each group?",
     "Each group has {c} / {a} = <<{c}/{a}={b}>>{b} {o}.", "b"),
    ("{n} buys {a} packs of {o}. Each pack has {b} {o}. How many {o} does {p} buy?",
     "{P} buys {a} * {b} = <<{a}*{b}={c}>>{c} {o}.", "c"),
])


def fam_C(r: random.Random, lo: int = 1, hi: int = 40):
    """'format' problems with no arithmetic: copy the number."""
    n, m, P, o = _ctx(r)
    t = r.randrange(3)
    a = r.randint(lo, hi)
    if t == 0:
        q, s = f"{n} has {a} {o}. How many {o} does {n} have?", f"{n} has {a} {o}."
    elif t == 1:
        q = f"There are {a} {o} in a box. {m} looks at the box. How many {o} are in the box?"
        s = f"There are {a} {o} in the box."
    else:
        q, s = f"{n} gives {a} {o} to {m}. How many {o} does {m} get?", f"{m} gets {a} {o}."
    return q, s, a


FAMILIES: dict[str, Family] = {"A": fam_A, "B": fam_B, "C": fam_C, "A2": fam_A2, "B2": fam_B2}


def make_problems(family: str, n: int, seed: int, exclude: set[str] | None = None) -> list[dict[str, Any]]:
    """``n`` distinct GSM8k-format problems of ``family`` (questions in ``exclude`` are skipped)."""
    if family not in FAMILIES:
        raise ConfigError(f"toymath: unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    r = random.Random(f"toymath:{family}:{seed}")
    out, seen = [], set(exclude or ())
    tries = 0
    while len(out) < n and tries < 50 * n + 1000:
        tries += 1
        q, s, ans = FAMILIES[family](r)
        if q in seen:
            continue
        seen.add(q)
        out.append({"question": q, "answer": f"{s}\n#### {ans}", "family": family})
    if len(out) < n:
        raise ConfigError(f"toymath: family {family} has only {len(out)} distinct problems, asked for {n}")
    return out


def training_text(row: dict[str, Any]) -> str:
    """The text a model is trained on: lm-eval's zero-shot gsm8k prompt plus the target."""
    return f"Question: {row['question']}\nAnswer: {row['answer']}"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
