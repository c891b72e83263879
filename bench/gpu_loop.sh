#!/usr/bin/env bash
# One GPU, three phases: the whole loop on a GPU machine with vLLM, and its timings.
#
#   bash bench/gpu_loop.sh [WORKDIR]        (default: a fresh temporary directory)
#
# Needs: a CUDA GPU, this checkout installed with vLLM and the DPO extra
# (pip install -e '.[dpo,vllm]'), HF_HUB_OFFLINE is set (nothing is downloaded).
# Models (built locally, cached under $SELFDEV_HOME): the tiny factory (a Llama-shaped
# Hugging Face directory) is the factory that vLLM serves and DPO refines; the toymath seed and
# its two experts (Hugging Face directories, 2.1M parameters) are merged by the lm domain and
# scored by the gsm8k evaluator on ONE vLLM engine, each merged model's weights loaded in place.
# Both vLLM engines keep the default gpu_memory_utilization of 0.85: they can only take turns
# if each really gives the GPU back (sleep mode) before the other wakes, which is the point.
#
# It prints: the start-up memory estimate of each phase, the wall time of the run, the time
# spent in each kind of step (generation, execution + evaluation, refinement, baselines), the
# engine starts, and bench/eval.py's batched/sequential ratio on vLLM.
# It has not been run yet: no GPU was available where it was written (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-$(mktemp -d -t selfdev-gpu-XXXX)}
mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 SELFDEV_HOME=${SELFDEV_HOME:-$HOME/.selfdev}
PY=${PYTHON:-python}
echo "workdir: $WORK"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
$PY -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# ---------------------------------------------------------------- models and configuration
$PY - "$WORK" <<'EOF'
import sys
from pathlib import Path

from selfdev.engine.api import selfdev_home
from selfdev.plugins.domains.toymath.family import build_family
from selfdev.plugins.generators.tiny import ensure_factory

work = Path(sys.argv[1])
factory = ensure_factory(selfdev_home(), "default")
fam = build_family("full", 0, ["A", "B"], "main")
data = fam["data"]
(work / "gpu.toml").write_text(f"""
[run]
seed = 0
iterations = 2
candidates = 16
timeout = 60
top_k = 4

[domain]
name = "lm"
seed_model = "{fam['seed']}"
experts = {{ A = "{fam['experts']['A']}", B = "{fam['experts']['B']}" }}
mergeable = "all"

[generator]
name = "vllm"
model = "{factory}"
max_new_tokens = 256
max_model_len = 1024
max_lora_rank = 16

[evaluator]
name = "gsm8k"
backend = "vllm"
dev_file = "{data / 'dev.jsonl'}"
test_file = "{data / 'test.jsonl'}"
shots = 0
max_new_tokens = 40

[optimizer]
name = "dpo"
preset = "tiny"
lora = true
lora_r = 16
""")
print("factory:", factory)
print("toymath:", fam["seed"])
EOF

# --------------------------------------------------------------------- the estimate
$PY - "$WORK/gpu.toml" <<'EOF'
import sys

from selfdev.engine.config import load
from selfdev.engine.device import collect_needs, device_memory_bytes, gib
from selfdev.engine.options import declared_options
from selfdev.engine.api import validate_options
from selfdev.engine.plugins import get_registry

cfg, reg = load(sys.argv[1]), get_registry()
classes = {k: reg.get(k, getattr(cfg, k).name) for k in ("domain", "generator", "evaluator", "optimizer")}
opts = {k: validate_options(k, c.name, declared_options(c), getattr(cfg, k).options) for k, c in classes.items()}
total = device_memory_bytes()
print(f"device: {gib(total) if total else 'none found'}")
for n in collect_needs(classes, opts):
    print(f"  {n.phase:<11} {n.component:<22} {n.describe()}"
          + (f", reserves {n.budget:g} x device" if n.budget else ""))
EOF

# ------------------------------------------------------------------------- the run
start=$(date +%s.%N)
selfdev run "$WORK/gpu.toml" --db "$WORK/runs.db"
end=$(date +%s.%N)
echo "run wall time: $(echo "$end - $start" | bc) s"

# --------------------------------------------------------------- time per kind of step
$PY - "$WORK/runs.db" <<'EOF'
import sys
from collections import defaultdict
from datetime import datetime

from selfdev.store import EventStore

with EventStore(sys.argv[1], readonly=True) as store:
    events = list(store.iter_events())
# the step an event closes, by type: the time since the previous event is spent in that step
step = {"candidate.generated": "generation", "candidate.executed": "execution + evaluation",
        "candidate.evaluated": "execution + evaluation", "factory.refined": "refinement (DPO)",
        "baseline.evaluated": "baselines (evaluation)"}
spent = defaultdict(float)
prev = None
for e in events:
    t = datetime.fromisoformat(e.occurred_at.replace("Z", "+00:00"))
    if prev is not None:
        spent[step.get(e.type, "other")] += (t - prev).total_seconds()
    prev = t
for k, v in sorted(spent.items(), key=lambda kv: -kv[1]):
    print(f"  {k:<24} {v:8.1f} s")
EOF
selfdev show latest --db "$WORK/runs.db" | tail -25

# ---------------------------------------------------------- batched evaluation on vLLM
$PY bench/eval.py --backend vllm --size full --rounds 1 --problems 200 || true
nvidia-smi --query-gpu=memory.used --format=csv || true
