"""GSM8k answer extraction, prompts and splits (no model needed)."""
from __future__ import annotations

from pathlib import Path

import pytest

from selfdev.engine.api import ConfigError, Context, NullProgress
from selfdev.plugins.evaluators.gsm8k import (
    INVALID, GSM8kEvaluator, answers_match, build_prompt, default_gsm8k_dir, extract_flexible,
    extract_strict, gold_answer, load_jsonl, normalize_answer, score_outputs, truncate_at_stops)

GSM8K = default_gsm8k_dir()
needs_data = pytest.mark.skipif(GSM8K is None, reason="GSM8k data (../shared/data/gsm8k) not found")


def ctx(tmp_path=None):
    return Context(run_id="t", seed=0, home=Path("."), artifacts=Path("."), progress=NullProgress())


# ---------------------------------------------------------------------------- strict / flexible
@pytest.mark.parametrize("text,strict,flexible", [
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\n#### 18", "18", "18"),
    ("#### 1,450,000", "1,450,000", "1,450,000"),
    ("so the answer is $1,000.", INVALID, "$1,000."),
    ("#### -10", "-10", "-10"),
    ("The total is 18.0", INVALID, "18.0"),
    ("#### 18.00.", "18.00.", "18.00."),
    ("no digits at all", INVALID, INVALID),
    ("first #### 5 then #### 7", "5", "7"),           # strict takes the first, flexible the last
    ("It costs 3 dollars, then 42", INVALID, "42"),
    ("He has 7 apples", INVALID, "7"),                 # single digit: second alternative of the regex
    ("x ... y", INVALID, "..."),                       # lm-eval quirk: punctuation-only run
    ("####18", INVALID, "18"),                         # strict needs the space after ####
])
def test_extraction_matches_lm_eval_filters(text, strict, flexible):
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible


@pytest.mark.parametrize("pred,gold,ok", [
    ("1,450,000", "1450000", True),      # commas
    ("$18", "18", True),                 # dollar sign
    ("$1,000.", "1000", True),           # trailing period + $ + comma
    ("-3", "-3", True),                  # negatives
    ("-3", "3", False),
    ("18.0", "18", True),                # numeric: 18.0 == 18 (lm-eval's string match would say no)
    ("18.00.", "18", True),
    ("18.5", "18", False),               # decimals are compared exactly
    ("0.5", ".5", True),
    (INVALID, "18", False),              # missing #### (strict) never matches
    ("...", "18", False),
    ("", "0", False),
])
def test_answers_match_numerically(pred, gold, ok):
    assert answers_match(pred, gold) is ok


def test_normalize_follows_lm_eval_regexes_to_ignore():
    assert normalize_answer("The answer #### $1,234.") == "1234"
    assert normalize_answer("18.") == "18"
    assert normalize_answer("ABC") == "abc"


def test_gold_answer_strips_commas_and_takes_last_marker():
    assert gold_answer("a\nb #### 5\n#### 2,125") == "2125"
    assert gold_answer("steps\n#### -10") == "-10"


def test_stop_sequences_truncate_before_extraction():
    out = " 2 + 2 = 4\n#### 4\n\nQuestion: what is 9?\nAnswer: #### 9"
    assert truncate_at_stops(out, ["Question:"]).strip().endswith("#### 4")
    res = score_outputs([out], ["4"])
    assert res["strict"] == 1.0 and res["flexible"] == 1.0
    # without truncation the flexible filter would take the last number (9)
    assert score_outputs([out], ["4"], stops=[])["flexible"] == 0.0


def test_missing_marker_scores_zero_strict_but_flexible_can_match():
    res = score_outputs(["She makes 9 * 2 = 18 dollars."], ["18"])
    assert res["strict"] == 0.0 and res["flexible"] == 1.0


# ---------------------------------------------------------------------------- the real data
@needs_data
def test_every_gold_answer_in_test_jsonl_scores_100_percent():
    rows = load_jsonl(GSM8K / "test.jsonl")
    assert len(rows) == 1319
    res = score_outputs([r["answer"] for r in rows], [gold_answer(r["answer"]) for r in rows])
    assert res["strict"] == 1.0
    assert res["flexible"] == 1.0


@needs_data
def test_split_is_fixed_and_recorded():
    ev = GSM8kEvaluator(ctx())
    dev, test = ev.items("dev"), ev.items("test")
    assert (len(dev), len(test)) == (100, 1219)
    assert not {r["question"] for r in dev} & {r["question"] for r in test}
    info = ev.split_info()
    assert info["mode"] == "carve" and info["n_dev"] == 100 and info["n_test"] == 1219
    assert info["test_file_sha256"] == "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"
    again = GSM8kEvaluator(ctx()).split_info()
    assert again["dev_index_hash"] == info["dev_index_hash"]
    other = GSM8kEvaluator(ctx(), split_seed=7).split_info()
    assert other["dev_index_hash"] != info["dev_index_hash"]


@needs_data
def test_five_shot_prompt_has_lm_eval_format():
    ev = GSM8kEvaluator(ctx())
    ev.items("dev")
    prompt = ev._prompts["dev"][0]
    blocks = prompt.split("\n\nQuestion: ")
    assert len(blocks) == 6  # 5 shots + the question
    assert prompt.startswith("Question: ") and prompt.endswith("\nAnswer:")
    assert blocks[0].count("\nAnswer: ") == 1 and "####" in blocks[0]
    ev2 = GSM8kEvaluator(ctx())
    ev2.items("dev")
    assert ev2._prompts["dev"] == ev._prompts["dev"]  # shots are seeded


def test_build_prompt_zero_shot():
    assert build_prompt("What is 2+2?", []) == "Question: What is 2+2?\nAnswer:"


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="metric"):
        GSM8kEvaluator(ctx(), metric="fuzzy")
    with pytest.raises(ConfigError, match="backend"):
        GSM8kEvaluator(ctx(), backend="tgi")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(ConfigError, match="question' and 'answer"):
        GSM8kEvaluator(ctx(), test_file=str(bad), shots=0).items("dev")
    with pytest.raises(ConfigError, match="not found"):
        GSM8kEvaluator(ctx(), test_file=str(tmp_path / "nope.jsonl"), shots=0).items("dev")


def test_vllm_backend_gives_a_clear_message_without_vllm_or_gpu():
    from selfdev.plugins.evaluators.gsm8k import vllm_available

    ok, why = vllm_available()
    if ok:  # pragma: no cover - only on a GPU machine with vllm
        pytest.skip("vllm is available here")
    with pytest.raises(ConfigError, match="vllm"):
        GSM8kEvaluator(ctx(), backend="vllm")
