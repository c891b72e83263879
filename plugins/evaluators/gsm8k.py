"""The ``gsm8k`` evaluator: GSM8k-format jsonl, lm-eval-compatible prompts and answer extraction.

Data: one JSON object per line with ``question`` and ``answer`` (a solution whose last line is
``#### N``), e.g. the real GSM8k in ``../shared/data/gsm8k`` (MIT) or toymath's generated files.

* Prompt (lm-evaluation-harness ``gsm8k`` v3): ``shots`` examples from the train file, each
  ``"Question: {q}\\nAnswer: {full answer}"``, joined by ``"\\n\\n"``, then
  ``"Question: {q}\\nAnswer:"``. Shots are drawn per problem with a fixed seed.
* Greedy decoding, stop sequences ``["Question:", "</s>", "<|im_end|>"]`` plus the tokenizer's
  end-of-sequence token; batched, left padded, with a KV cache (``transformers``), or vLLM.
* Extraction: *strict* = the first ``#### N`` (lm-eval ``strict-match``); *flexible* = the last
  number in the output (lm-eval ``flexible-extract``). Both predictions and golds drop ``,`` and
  ``$`` and a trailing ``.`` and are compared **numerically** (``18.0`` == ``18``).
* Splits: with ``dev_file`` + ``test_file`` those are the splits; with a single ``test_file`` it
  is shuffled with ``split_seed`` and cut into ``dev_size`` dev problems and the rest as test
  (the paper: 100 dev, the rest test). :meth:`GSM8kEvaluator.split_info` describes the split
  (file hashes, sizes, index hash) so a run can record it.

The model is an ``LMModel`` handle (see ``plugins/domains/lm/model.py``) or a model directory.
With ``warm_engine`` (the default) the evaluator keeps one engine for its life
(``plugins/domains/lm/engine.py``): the model (or vLLM engine) is built once from the seed and
each candidate's merged tensors are copied into it in place, so candidates pay no model build
or engine start (in the engine's process and on every Ray worker actor alike).

One GPU, three phases (``engine/device.py``): between evaluation phases the loop calls
``release()`` and the engine gives the device back (``release = "sleep"``: vLLM's sleep mode at
``sleep_level``, or the transformers model moved to CPU memory; ``"shutdown"``: the engine is
stopped; ``"keep"``: held all run); ``device_memory`` estimates the phase for the start-up check.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

from selfdev import ConfigError, DeviceNeed, Evaluator, Field, dtype_bytes
from selfdev import hookimpl

# --------------------------------------------------------------------------- extraction
STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
DEFAULT_STOPS = ("Question:", "</s>", "<|im_end|>")
INVALID = "[invalid]"


def extract_strict(text: str) -> str:
    """lm-eval ``strict-match``: the first ``#### N``; ``[invalid]`` if there is none."""
    m = STRICT_RE.search(text)
    return m.group(1).strip() if m else INVALID


def extract_flexible(text: str) -> str:
    """lm-eval ``flexible-extract``: the last number-like run (``group_select: -1``)."""
    found = FLEXIBLE_RE.findall(text)
    if not found:
        return INVALID
    last = found[-1]
    return next((g for g in last if g), INVALID).strip()


def normalize_answer(s: str) -> str:
    """lm-eval's ``regexes_to_ignore`` for gsm8k: drop ``,`` and ``$``, everything up to ``#### ``
    and one trailing ``.``; then strip and lowercase."""
    s = s.replace(",", "").replace("$", "")
    s = re.sub(r"(?s).*#### ", "", s)
    s = re.sub(r"\.$", "", s.strip())
    return s.strip().lower()


def to_number(s: str) -> Fraction | None:
    """``normalize_answer`` text as an exact number (None if it is not one)."""
    s = normalize_answer(s)
    if not s or s == INVALID:
        return None
    try:
        if "/" in s:
            a, b = s.split("/", 1)
            return Fraction(a) / Fraction(b)
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def gold_answer(answer: str) -> str:
    """The gold number text of a GSM8k solution: what follows the last ``####``, commas dropped."""
    return answer.split("####")[-1].strip().replace(",", "")


def answers_match(pred: str, gold: str) -> bool:
    """Numeric comparison after normalisation (``18.0`` == ``18``; ``$1,000.`` == ``1000``);
    falls back to lm-eval's string comparison when either side is not a number."""
    a, b = to_number(pred), to_number(gold)
    if a is not None and b is not None:
        return a == b
    return pred != INVALID and normalize_answer(pred) == normalize_answer(gold)


def truncate_at_stops(text: str, stops: Iterable[str]) -> str:
    cut = len(text)
    for s in stops:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def score_outputs(outputs: list[str], golds: list[str], stops: Iterable[str] = DEFAULT_STOPS) -> dict[str, Any]:
    """Strict and flexible accuracy (fractions in [0, 1]) of model outputs against gold numbers."""
    stops = list(stops)
    strict = flexible = 0
    rows = []
    for out, gold in zip(outputs, golds):
        text = truncate_at_stops(out, stops)
        ps, pf = extract_strict(text), extract_flexible(text)
        ok_s, ok_f = answers_match(ps, gold), answers_match(pf, gold)
        strict += ok_s
        flexible += ok_f
        rows.append({"strict": ps, "flexible": pf, "gold": gold, "ok_strict": ok_s, "ok_flexible": ok_f})
    n = max(1, len(golds))
    return {"strict": strict / n, "flexible": flexible / n, "n": len(golds), "rows": rows}


# --------------------------------------------------------------------------- data
def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"gsm8k data file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "question" not in row or "answer" not in row:
                raise ConfigError(f"{path}:{lineno}: expected an object with 'question' and 'answer'")
            rows.append(row)
    return rows


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def default_gsm8k_dir() -> Path | None:
    """``$SELFDEV_GSM8K_DIR``, else ``../shared/data/gsm8k`` next to the repository."""
    env = os.environ.get("SELFDEV_GSM8K_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2]
    for cand in (here.parent / "shared" / "data" / "gsm8k", here / "data" / "gsm8k"):
        if (cand / "test.jsonl").is_file():
            return cand
    return None


def build_prompt(question: str, shots: list[dict[str, Any]]) -> str:
    """lm-eval gsm8k: ``Question: q\\nAnswer: a`` examples joined by a blank line."""
    parts = [f"Question: {s['question']}\nAnswer: {s['answer']}" for s in shots]
    parts.append(f"Question: {question}\nAnswer:")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- generation
def _eos_ids(model, tok) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tok.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(x) for x in src)
    return ids


def hf_generate(model, tok, prompts: list[str], max_new_tokens: int, stops: list[str],
                batch_size: int = 32, progress=None) -> list[str]:
    """Batched greedy decoding with left padding and a KV cache; stops per row at EOS or at any
    stop string. Returns the generated text of each prompt (not cut at the stop string)."""
    device = next(model.parameters()).device
    eos = _eos_ids(model, tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (min(eos) if eos else 0)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    stops = [s for s in stops if s]
    tail = max((len(s) for s in stops), default=0) + 8
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True)
            ids = enc["input_ids"].to(device)
            att = enc["attention_mask"].to(device)
            gen = _greedy(model, ids, att, max_new_tokens, eos, pad_id, tok, stops, tail)
            for j, i in enumerate(idx):
                toks = [t for t in gen[j] if t != pad_id and t not in eos]
                outputs[i] = tok.decode(toks, skip_special_tokens=True)
            if progress is not None:
                progress.advance(len(idx))
    finally:
        tok.padding_side = old_side
    return outputs


def _greedy(model, ids, att, max_new_tokens, eos, pad_id, tok, stops, tail):
    import torch
    from transformers import DynamicCache

    B = ids.shape[0]
    pos = (att.long().cumsum(1) - 1).clamp(min=0)
    done = torch.zeros(B, dtype=torch.bool, device=ids.device)
    texts = [""] * B
    gen: list[list[int]] = [[] for _ in range(B)]
    eos_t = torch.tensor(sorted(eos) or [-1], device=ids.device)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=att, position_ids=pos,
                    past_key_values=DynamicCache(), use_cache=True)
        for _step in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            hit_eos = torch.isin(nxt, eos_t) & ~done
            nl = nxt.tolist()
            for j in range(B):
                if not done[j]:
                    gen[j].append(nl[j])
            done |= hit_eos
            if stops:
                for j in range(B):
                    if done[j]:
                        continue
                    piece = tok.decode([nl[j]], skip_special_tokens=False)
                    texts[j] = (texts[j] + piece)[-tail:]
                    if any(s in texts[j] for s in stops):
                        done[j] = True
            if bool(done.all()):
                break
            att = torch.cat([att, torch.ones((B, 1), dtype=att.dtype, device=att.device)], 1)
            pos = pos[:, -1:] + 1
            out = model(input_ids=nxt[:, None], attention_mask=att, position_ids=pos,
                        past_key_values=out.past_key_values, use_cache=True)
    return gen


def vllm_available() -> tuple[bool, str]:
    try:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            return False, "vllm is not installed (pip install 'selfdev[vllm]')"
    except Exception as exc:  # pragma: no cover
        return False, f"vllm cannot be imported: {exc}"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "vllm needs a CUDA GPU and none is available"
    except Exception as exc:  # pragma: no cover
        return False, f"torch cannot query CUDA: {exc}"
    return True, ""


class _VLLMRunner:
    """``warm_engine = false``: one vLLM engine per model directory (merged models are written to
    a temp dir first), started again for every candidate."""

    def __init__(self, gpu_memory_utilization: float = 0.85, dtype: str = "auto") -> None:
        self.gmu = gpu_memory_utilization
        self.dtype = dtype
        self._llm = None
        self._path: str | None = None

    def generate(self, model_dir: str, prompts: list[str], max_new_tokens: int, stops: list[str]) -> list[str]:
        from vllm import LLM, SamplingParams  # lazy: optional extra

        if self._llm is None or self._path != model_dir:
            self.close()
            self._llm = LLM(model=model_dir, dtype=self.dtype, gpu_memory_utilization=self.gmu,
                            seed=0, enforce_eager=False)
            self._path = model_dir
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=stops)
        res = self._llm.generate(prompts, params, use_tqdm=False)
        return [r.outputs[0].text for r in res]

    def close(self) -> None:
        if self._llm is not None:
            del self._llm
            self._llm = None
            try:
                import gc

                import torch

                gc.collect()
                torch.cuda.empty_cache()
            except Exception:
                pass


# --------------------------------------------------------------------------- the evaluator
class GSM8kEvaluator(Evaluator):
    """Exact match on GSM8k-format problems; ``score`` is the ``metric`` accuracy in percent."""

    name = "gsm8k"
    #: built-in defaults; a domain may override any of them through ``domain.eval_spec()``
    DEFAULTS: dict[str, Any] = {
        "shots": 5, "max_new_tokens": 256, "batch_size": 32, "dev_size": 100, "split_seed": 1234,
        "fewshot_seed": 1234, "metric": "strict", "stop": list(DEFAULT_STOPS),
    }

    class Options(Evaluator.Options):
        """Every option left unset takes the domain's ``eval_spec()`` value, else ``DEFAULTS``."""

        test_file: Optional[str] = Field(None, description="GSM8k-format jsonl scored on test "
                                                           "(unset: $SELFDEV_GSM8K_DIR)")
        dev_file: Optional[str] = Field(None, description="jsonl scored on dev (unset: dev_size "
                                                          "problems carved out of test_file)")
        train_file: Optional[str] = Field(None, description="jsonl the few-shot examples come "
                                                            "from (unset: train.jsonl next to "
                                                            "test_file)")
        shots: Optional[int] = Field(None, ge=0, description="few-shot examples per prompt")
        dev_size: Optional[int] = Field(None, ge=1, description="problems carved out of the "
                                                                "test file for dev")
        test_limit: Optional[int] = Field(None, ge=0, description="score only the first N test "
                                                                  "problems (0: all)")
        split_seed: Optional[int] = Field(None, description="seed of the dev/test carve")
        fewshot_seed: Optional[int] = Field(None, description="seed of the few-shot choice")
        max_new_tokens: Optional[int] = Field(None, ge=1, description="most tokens per answer")
        batch_size: Optional[int] = Field(None, ge=1, description="problems per batch")
        stop: Optional[list[str]] = Field(None, description="strings that end an answer")
        metric: Optional[Literal["strict", "flexible"]] = Field(
            None, description="answer extraction: strict (after '####') or flexible (the last "
                              "number)")
        backend: Literal["hf", "vllm"] = Field("hf", description="who generates the answers")
        device: str = Field("auto", description="auto (cuda when available), cpu, cuda:0, ...")
        dtype: str = Field("auto", description="the model's dtype for the hf backend")
        gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vllm backend: share "
                                                                            "of GPU memory")
        keep_outputs: bool = Field(False, description="keep the generated answers "
                                                      "(last_outputs)")
        warm_engine: bool = Field(True, description="keep one model (or vLLM engine) and copy "
                                                    "each candidate's merged weights into it; "
                                                    "false: build a model per candidate")
        release: Literal["sleep", "shutdown", "keep"] = Field(
            "sleep", description="between evaluation phases: sleep (vLLM sleep mode, or the "
                                 "model moved to CPU memory), shutdown (stop the engine) or keep "
                                 "(hold the GPU)")
        sleep_level: Literal[1, 2] = Field(
            1, description="vllm backend: sleep mode 1 (weights kept in CPU memory) or 2 "
                           "(weights dropped and reloaded from the seed on wake)")
        max_model_len: Optional[int] = Field(None, ge=16, description="vllm backend: context "
                                                                      "length served (unset: "
                                                                      "the model's)")

    #: prompt tokens assumed per problem when estimating the hf backend's KV cache (5-shot
    #: GSM8k prompts are 700-900 tokens)
    PROMPT_TOKENS = 1024

    #: the options merged over the domain's eval_spec() and DEFAULTS
    SPEC_KEYS = ("test_file", "dev_file", "train_file", "shots", "dev_size", "test_limit",
                 "split_seed", "fewshot_seed", "max_new_tokens", "batch_size", "stop", "metric")

    @classmethod
    def preflight(cls, options: Any) -> None:
        """The data files named in the options must exist before ``run.started`` (the domain's
        ``eval_data`` and ``$SELFDEV_GSM8K_DIR`` are resolved, and checked, when scoring)."""
        for key in ("test_file", "dev_file", "train_file"):
            value = getattr(options, key)
            if value and not Path(value).expanduser().is_file():
                raise ConfigError(f"config: [evaluator] {key} {value} is not a file; give a "
                                  "GSM8k-format jsonl")

    @classmethod
    def preflight_run(cls, options: Any, classes: dict[str, type],
                      run_options: dict[str, Any]) -> None:
        """With no ``test_file``, the data must come from the domain (its class's
        ``supplies_eval_data(options)`` says whether it will) or from ``$SELFDEV_GSM8K_DIR`` /
        the shared GSM8k folder: else refuse before ``run.started`` rather than after the
        domain is prepared and the first model is scored."""
        if options.test_file:
            return
        domain = classes.get("domain")
        supplies = getattr(domain, "supplies_eval_data", None)
        if supplies is not None and supplies(run_options.get("domain")):
            return
        found = default_gsm8k_dir()
        if found is None or not (found / "test.jsonl").is_file():
            where = f" ({found / 'test.jsonl'} is not a file)" if found is not None else ""
            raise ConfigError(
                f"config: evaluator 'gsm8k' has no data{where}: set [evaluator] test_file (a "
                f"GSM8k jsonl){', or [domain] eval_data' if supplies is not None else ''}, or "
                f"SELFDEV_GSM8K_DIR to a folder with test.jsonl")

    @classmethod
    def device_memory(cls, options: Any, plan: Any) -> DeviceNeed | None:
        """The evaluated model's weights + KV cache: vLLM's one full context (reserved as
        ``gpu_memory_utilization``), or the hf backend's ``batch_size`` rows of
        ``PROMPT_TOKENS`` + ``max_new_tokens``. None on an explicit CPU device or when the
        domain names no model directory (built models, e.g. toymath's, are tiny)."""
        shape = plan.shape(plan.evaluated_model)
        if shape is None or (options.backend == "hf" and options.device == "cpu"):
            return None
        keep = options.release == "keep"
        if options.backend == "vllm":
            b = dtype_bytes(options.dtype, shape, vllm=True)
            ctx_len = options.max_model_len or shape.max_positions
            return DeviceNeed(parts={"weights": shape.params * b,
                                     f"KV cache for {ctx_len} tokens":
                                         shape.kv_bytes_per_token(b) * ctx_len},
                              budget=options.gpu_memory_utilization, resident=keep)
        b = dtype_bytes(options.dtype, shape)
        batch = options.batch_size or cls.DEFAULTS["batch_size"]
        new = options.max_new_tokens or cls.DEFAULTS["max_new_tokens"]
        tokens = batch * (cls.PROMPT_TOKENS + new)
        return DeviceNeed(parts={"weights": shape.params * b,
                                 f"KV cache for {batch} x {cls.PROMPT_TOKENS + new} tokens":
                                     shape.kv_bytes_per_token(b) * tokens}, resident=keep)

    def __init__(self, ctx, **options: Any) -> None:
        super().__init__(ctx, **options)
        o = self.options
        if o.backend == "vllm":
            ok, why = vllm_available()
            if not ok:
                raise ConfigError(f"gsm8k: backend 'vllm' is unavailable: {why}; "
                                  f"use backend = \"hf\"")
        self._vllm = _VLLMRunner(o.gpu_memory_utilization) \
            if o.backend == "vllm" and not o.warm_engine else None
        self._engine: Any = None  # the warm engine, built on first use
        self._resolved: dict[str, Any] | None = None
        self._splits: dict[str, list[dict[str, Any]]] = {}
        self._prompts: dict[str, list[str]] = {}
        self._split_info: dict[str, Any] = {}
        self.last_outputs: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ configuration
    def resolve(self, domain=None) -> dict[str, Any]:
        """Options after merging: explicit options > the domain's ``eval_spec()`` > defaults."""
        if self._resolved is not None:
            return self._resolved
        spec = dict(self.DEFAULTS)
        dom_spec = getattr(domain, "eval_spec", None)
        if callable(dom_spec):
            spec.update({k: v for k, v in (dom_spec() or {}).items() if v is not None})
        spec.update(self.options.model_dump(include=set(self.SPEC_KEYS), exclude_none=True))
        if not spec.get("test_file"):
            d = default_gsm8k_dir()
            if d is None:
                raise ConfigError("gsm8k: no test_file given and no GSM8k data found; set test_file "
                                  "(GSM8k jsonl) or SELFDEV_GSM8K_DIR")
            spec["test_file"] = str(d / "test.jsonl")
        if not spec.get("train_file") and int(spec.get("shots") or 0) > 0:
            sib = Path(spec["test_file"]).with_name("train.jsonl")
            if not sib.is_file():
                raise ConfigError(f"gsm8k: shots={spec['shots']} needs train_file (looked for {sib})")
            spec["train_file"] = str(sib)
        if spec["metric"] not in ("strict", "flexible"):
            raise ConfigError(f"gsm8k: metric must be 'strict' or 'flexible'; got {spec['metric']!r}")
        self._resolved = spec
        return spec

    def _load_splits(self, domain=None) -> None:
        if self._splits:
            return
        spec = self.resolve(domain)
        test_rows = load_jsonl(spec["test_file"])
        info: dict[str, Any] = {"test_file": str(spec["test_file"]),
                                "test_file_sha256": file_sha256(spec["test_file"])}
        if spec.get("dev_file"):
            dev_rows = load_jsonl(spec["dev_file"])
            info.update(mode="files", dev_file=str(spec["dev_file"]),
                        dev_file_sha256=file_sha256(spec["dev_file"]))
            dev_idx = list(range(len(dev_rows)))
            test_idx = list(range(len(test_rows)))
        else:
            dev_size = int(spec["dev_size"])
            if not 0 < dev_size < len(test_rows):
                raise ConfigError(f"gsm8k: dev_size must be between 1 and {len(test_rows) - 1}; got {dev_size}")
            perm = list(range(len(test_rows)))
            random.Random(int(spec["split_seed"])).shuffle(perm)
            dev_idx, test_idx = sorted(perm[:dev_size]), sorted(perm[dev_size:])
            dev_rows = [test_rows[i] for i in dev_idx]
            info.update(mode="carve", split_seed=int(spec["split_seed"]), dev_size=dev_size)
        test_sel = [test_rows[i] for i in test_idx]
        if spec.get("test_limit"):
            test_sel, test_idx = test_sel[: int(spec["test_limit"])], test_idx[: int(spec["test_limit"])]
        self._splits = {"dev": dev_rows, "test": test_sel}
        info.update(
            n_dev=len(dev_rows), n_test=len(test_sel),
            dev_index_hash=hashlib.sha256(json.dumps(dev_idx).encode()).hexdigest()[:16],
            test_index_hash=hashlib.sha256(json.dumps(test_idx).encode()).hexdigest()[:16],
            shots=int(spec["shots"]), fewshot_seed=int(spec["fewshot_seed"]),
            train_file=spec.get("train_file"), metric=spec["metric"],
            max_new_tokens=int(spec["max_new_tokens"]), stop=list(spec["stop"]),
            backend=self.options.backend,
        )
        if info["mode"] == "carve":
            info["dev_indices"] = dev_idx
        self._split_info = info
        shots = int(spec["shots"])
        train_rows = load_jsonl(spec["train_file"]) if shots > 0 else []
        if shots > len(train_rows) and shots > 0:
            raise ConfigError(f"gsm8k: shots={shots} but the train file has {len(train_rows)} problems")
        for split, rows in self._splits.items():
            prompts = []
            for i, row in enumerate(rows):
                ex: list[dict[str, Any]] = []
                if shots:
                    rng = random.Random(f"{spec['fewshot_seed']}:{split}:{i}")
                    ex = rng.sample(train_rows, shots)
                prompts.append(build_prompt(row["question"], ex))
            self._prompts[split] = prompts

    def split_info(self, domain=None) -> dict[str, Any]:
        """The dev/test split as recorded in a run (files, hashes, sizes, prompt settings)."""
        self._load_splits(domain)
        return dict(self._split_info)

    def items(self, split: str, domain=None) -> list[dict[str, Any]]:
        self._load_splits(domain)
        if split not in self._splits:
            raise ConfigError(f"gsm8k: unknown split {split!r}; allowed: dev, test")
        return self._splits[split]

    # ------------------------------------------------------------------ scoring
    def _device(self) -> str:
        if self.options.device != "auto":
            return self.options.device
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except Exception:  # pragma: no cover
            return "cpu"

    def generate(self, model: Any, prompts: list[str], progress_desc: str = "evaluating") -> list[str]:
        from selfdev.plugins.domains.lm.model import as_handle

        spec = self._resolved or self.resolve()
        handle = as_handle(model)
        stops = list(spec["stop"])
        max_new = int(spec["max_new_tokens"])
        prog = getattr(self.ctx, "progress", None)
        task = prog.task(progress_desc, total=len(prompts)) if prog is not None else None
        try:
            torch_dtype = None if self.options.dtype == "auto" else self.options.dtype
            if self.options.warm_engine:
                engine = self.engine()
                if self.options.backend == "vllm":
                    outs = engine.generate(handle, prompts, max_new, stops)
                    if task:
                        task.advance(len(prompts))
                    return outs
                m, tok = engine.load(handle)
                return hf_generate(m, tok, prompts, max_new, stops, int(spec["batch_size"]), task)
            if self.options.backend == "vllm":
                import tempfile

                if handle.overrides:
                    with tempfile.TemporaryDirectory(prefix="selfdev-vllm-") as tmp:
                        handle.save(tmp)
                        outs = self._vllm.generate(tmp, prompts, max_new, stops)
                        self._vllm.close()
                else:
                    outs = self._vllm.generate(str(handle.source), prompts, max_new, stops)
                if task:
                    task.advance(len(prompts))
                return outs
            from selfdev.plugins.domains.lm.engine import fresh_load

            m, tok = fresh_load(handle, self._device(), torch_dtype)
            return hf_generate(m, tok, prompts, max_new, stops, int(spec["batch_size"]), task)
        finally:
            if task:
                task.close()

    def engine(self):
        """The evaluator's warm engine (built on first use, kept until ``close``)."""
        if self._engine is None:
            from selfdev.plugins.domains.lm import engine as eng

            o = self.options
            if o.backend == "vllm":
                self._engine = eng.VLLMEngine(
                    o.gpu_memory_utilization, o.dtype,
                    sleep_level=o.sleep_level if o.release == "sleep" else None,
                    max_model_len=o.max_model_len)
            else:
                self._engine = eng.HFEngine(self._device(),
                                            None if o.dtype == "auto" else o.dtype)
        return self._engine

    def engine_stats(self) -> dict[str, int]:
        """Models built and handles loaded in place by the warm engine (zeros before first use)."""
        e = self._engine
        return {"builds": getattr(e, "builds", 0), "in_place": getattr(e, "in_place", 0)}

    def evaluate(self, domain, model, split: str) -> dict[str, float]:
        rows = self.items(split, domain)
        spec = self._resolved
        t0 = time.perf_counter()
        outs = self.generate(model, self._prompts[split], f"gsm8k {split}")
        golds = [gold_answer(r["answer"]) for r in rows]
        res = score_outputs(outs, golds, spec["stop"])
        if self.options.keep_outputs:
            self.last_outputs = [dict(r, output=o) for r, o in zip(res["rows"], outs)]
        metrics: dict[str, float] = {
            "score": 100.0 * res[spec["metric"]],
            "strict": 100.0 * res["strict"],
            "flexible": 100.0 * res["flexible"],
            "n": float(res["n"]),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        metrics.update(self.extra_metrics(rows, res["rows"], spec["metric"]))
        return metrics

    def extra_metrics(self, rows, scored, metric) -> dict[str, float]:
        """Hook for subclasses (toymath adds per-family accuracy)."""
        return {}

    def release(self) -> None:
        """Give the GPU back before another phase (the ``release`` option)."""
        if self._vllm is not None:  # warm_engine = false: nothing is worth keeping
            self._vllm.close()
        e, how = self._engine, self.options.release
        if e is None or how == "keep":
            return
        if how == "shutdown":
            e.close()
        elif self.options.backend == "vllm":
            e.sleep()
        else:
            e.offload()

    def acquire(self) -> None:
        """Take the GPU again (the engine would also wake on its next candidate)."""
        e = self._engine
        if e is not None:
            (e.wake if self.options.backend == "vllm" else e.restore)()

    def close(self) -> None:
        if self._vllm is not None:
            self._vllm.close()
        if self._engine is not None:
            self._engine.close()
            self._engine = None


@hookimpl
def register_evaluators(register):
    register(GSM8kEvaluator)
