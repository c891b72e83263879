"""TIES on three ~1.1B-parameter Llamas: ``selfdev apply`` (the candidate in the sandbox)
against ``mergekit-yaml``, same configuration, same run, alternating.

    python bench/merge.py [--size tinyllama|small] [--rounds 2] [--cache DIR] [--warm]

The three models (a seed and two experts) have TinyLlama-1.1B's shape (hidden 2048, 22
layers, intermediate 5632, 32 heads, 4 KV heads, vocabulary 32000, untied: 1.10B parameters,
2.2 GB of bf16 safetensors each, in 1 GiB shards); the weights are random (seed N(0, 0.02²),
norms 1; experts = seed + N(0, 0.002²)), built deterministically on first use and cached
under ``$SELFDEV_HOME/cache/bench-merge`` (or ``--cache``). ``--size small`` is the same
architecture at hidden 512, 4 layers (~50M parameters) for a quick run.

Timed, per round and in alternating order (so neither tool always runs first):

* ``selfdev apply bench/TIES.py --base SEED --expert x=.. --expert y=.. --out DIR --eval none
  --no-baselines``: the TIES candidate program run through the sandbox on every tensor;
* ``mergekit-yaml`` (mergekit 0.1.5, the ``bench`` extra) with ``ties``, density 0.2, λ 1,
  weight 1 each, ``dtype: float32`` (selfdev's maths is float32 too) and ``out_dtype:
  bfloat16``.

Each is a fresh process (its imports are inside its time). Before each run the input files'
pages are dropped from the page cache (``posix_fadvise(DONTNEED)``, no root needed) unless
``--warm`` is given, so both read from the disk. Measured: wall time; the peak over the run
of the process tree's summed RSS, PSS and anonymous memory (polled every 50 ms; RSS counts a
page once per process that maps it, PSS splits shared pages, so PSS is the fairer sum for
selfdev's supervisor + sandbox children sharing memory; both count the file-backed pages of
memory-mapped inputs, which "anon" (RssAnon + RssShmem) leaves out); input GB read / wall
time beside the disk's sequential read rate (a cached shard read cold after DONTNEED, median
of 3) and the page cache's; the CPU time (user + system) of the whole process tree
(``RUSAGE_CHILDREN``: every descendant is reaped inside the tree), which a loaded machine
disturbs less than wall time. Printed: one row per run, the median of each tool, and the
ratios selfdev / mergekit against the goals (wall <= 0.5x, peak RSS <= 1.5x). A check reads a few merged
tensors from both outputs and reports how many bf16 entries differ.

The machine this runs on may be shared: say so next to the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = {
    # TinyLlama-1.1B's shape
    "tinyllama": dict(hidden=2048, layers=22, intermediate=5632, heads=32, kv_heads=4, vocab=32000),
    "small": dict(hidden=512, layers=4, intermediate=1408, heads=8, kv_heads=2, vocab=32000),
}
MODELS = ("seed", "x", "y")
SHARD_BYTES = 1 << 30
BUILD_VERSION = 1  # bump when the generated weights change


# ---------------------------------------------------------------------------- models
def tensor_shapes(s: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Llama's tensors in the order transformers saves them."""
    h, i, v = s["hidden"], s["intermediate"], s["vocab"]
    kv = h // s["heads"] * s["kv_heads"]
    out = [("model.embed_tokens.weight", (v, h))]
    for layer in range(s["layers"]):
        p = f"model.layers.{layer}."
        out += [(p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, h)),
                (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i)),
                (p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return out


def llama_config(s: dict) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "hidden_size": s["hidden"], "intermediate_size": s["intermediate"],
            "num_hidden_layers": s["layers"], "num_attention_heads": s["heads"],
            "num_key_value_heads": s["kv_heads"], "vocab_size": s["vocab"],
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": False, "attention_bias": False, "bos_token_id": 1,
            "eos_token_id": 2, "initializer_range": 0.02, "torch_dtype": "bfloat16"}


def build_model(out: Path, s: dict, which: str) -> None:
    """One model, tensor by tensor (a generator per tensor: same weights whatever the order),
    written in <= 1 GiB bf16 shards with an index, as save_pretrained would."""
    import torch
    from safetensors.torch import save_file

    shapes = tensor_shapes(s)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards: list[dict] = [{}]
    size = 0
    for idx, (name, shape) in enumerate(shapes):
        g = torch.Generator().manual_seed(1000 + idx)
        if len(shape) == 1:
            t = torch.ones(shape)
        else:
            t = torch.randn(shape, generator=g).mul_(0.02)
        if which != "seed":
            g.manual_seed(MODELS.index(which) * 1_000_003 + idx)
            t.add_(torch.randn(shape, generator=g).mul_(0.002))
        t = t.to(torch.bfloat16)
        nbytes = t.numel() * 2
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(tmp / fname), metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * 2
    shards.clear()
    (tmp / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (tmp / "config.json").write_text(json.dumps(llama_config(s), indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def ensure_models(cache: Path, size: str) -> dict[str, Path]:
    s = SIZES[size]
    root = cache / f"{size}-v{BUILD_VERSION}"
    dirs = {m: root / m for m in MODELS}
    for m, d in dirs.items():
        if not (d / "model.safetensors.index.json").is_file():
            t0 = time.perf_counter()
            print(f"building {m} ({size}) in {d} ...", flush=True)
            build_model(d, s, m)
            print(f"  built in {time.perf_counter() - t0:.0f} s", flush=True)
    return dirs


def weight_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.safetensors"))


def num_params(s: dict) -> int:
    n = 0
    for _, shape in tensor_shapes(s):
        k = 1
        for x in shape:
            k *= x
        n += k
    return n


# ---------------------------------------------------------------------------- disk
def drop_cache(files: list[Path]) -> None:
    """Evict the files' clean pages from the page cache (works without root)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_rate(f: Path, cold: bool) -> float:
    """GB/s of one sequential read of ``f`` (16 MiB reads), after dropping it if ``cold``."""
    if cold:
        drop_cache([f])
    buf = bytearray(1 << 24)
    fd = os.open(f, os.O_RDONLY)
    t0 = time.perf_counter()
    n = 0
    with os.fdopen(fd, "rb", buffering=0) as fh:
        while True:
            k = fh.readinto(buf)
            if not k:
                break
            n += k
    return n / (time.perf_counter() - t0) / 1e9


# ---------------------------------------------------------------------------- runs
class TreeMonitor(threading.Thread):
    """Polls a process and its descendants; keeps the peaks of their summed RSS, PSS and
    anonymous + shared-memory RSS (RssAnon + RssShmem: what must stay in RAM, unlike the
    file-backed pages of memory-mapped safetensors inputs, which RSS also counts and the
    kernel can drop)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = self.peak_anon = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            rss = pss = anon = 0
            for p in procs:
                r, ps, a = _proc_memory(p.pid)
                rss, pss, anon = rss + r, pss + ps, anon + a
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_anon = max(self.peak_anon, anon)
            self.stop.wait(self.interval)


def _proc_memory(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, RssAnon + RssShmem) in bytes from /proc/PID/status and smaps_rollup; zeros
    where they cannot be read (a process that just exited)."""
    rss = anon = pss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(("RssAnon:", "RssShmem:")):
                    anon += int(line.split()[1]) * 1024
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    return rss, pss, anon


def timed(cmd: list[str], env: dict, log: Path) -> dict:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        mon = TreeMonitor(proc.pid)
        mon.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        mon.stop.set()
        mon.join()
    if rc != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{cmd[0]} failed (exit {rc}); the end of {log}:\n{tail}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "rss": mon.peak_rss, "pss": mon.peak_pss,
            "anon": mon.peak_anon}


def mergekit_config(dirs: dict[str, Path], density: float, lam: float) -> str:
    import yaml

    cfg = {"merge_method": "ties", "base_model": str(dirs["seed"]), "dtype": "float32",
           "out_dtype": "bfloat16", "parameters": {"lambda": lam, "normalize": True},
           "models": [{"model": str(dirs[m]), "parameters": {"weight": 1.0, "density": density}}
                      for m in ("x", "y")]}
    return yaml.safe_dump(cfg, sort_keys=False)


def compare_outputs(a: Path, b: Path, names: list[str]) -> str:
    """How many bf16 entries of a few merged tensors differ between the two outputs."""
    from safetensors import safe_open

    def index(d: Path) -> dict[str, Path]:
        out = {}
        for f in weight_files(d):
            with safe_open(str(f), framework="pt") as fh:
                for k in fh.keys():
                    out[k] = f
        return out

    ia, ib = index(a), index(b)
    missing = sorted(set(ia) ^ set(ib))
    parts = []
    for n in names:
        with safe_open(str(ia[n]), framework="pt") as fa, safe_open(str(ib[n]), framework="pt") as fb:
            x, y = fa.get_tensor(n), fb.get_tensor(n)
        diff = (x.float() - y.float()).abs()
        parts.append(f"{n.split('.', 2)[-1]}: {float((diff > 0).float().mean()) * 100:.3f}% entries "
                     f"differ, max |diff| {float(diff.max()):.2g} (dtype {x.dtype}/{y.dtype})")
    head = f"tensors only in one output: {missing[:5]}" if missing else "same tensor names"
    return head + "\n  " + "\n  ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="tinyllama")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; each runs both tools once")
    ap.add_argument("--cache", type=Path, default=None,
                    help="model cache (default $SELFDEV_HOME/cache/bench-merge)")
    ap.add_argument("--warm", action="store_true", help="keep the inputs in the page cache")
    ap.add_argument("--density", type=float, default=0.2)
    ap.add_argument("--keep", action="store_true", help="keep the merged outputs (printed)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    bin_dir = Path(sys.executable).parent
    selfdev_bin, mergekit_bin = bin_dir / "selfdev", bin_dir / "mergekit-yaml"
    for b, extra in ((selfdev_bin, "pip install -e ."), (mergekit_bin, "pip install -e '.[bench]'")):
        if not b.exists():
            print(f"bench/merge.py: {b} not found; install it with: {extra}", file=sys.stderr)
            return 2
    try:
        import psutil  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as exc:
        print(f"bench/merge.py: {exc.name} is missing: pip install -e '.[bench]'", file=sys.stderr)
        return 2

    from selfdev import selfdev_home

    cache = args.cache or selfdev_home() / "cache" / "bench-merge"
    dirs = ensure_models(cache, args.size)
    s = SIZES[args.size]
    inputs = [f for m in MODELS for f in weight_files(dirs[m])]
    in_bytes = sum(f.stat().st_size for f in inputs)

    tmp = Path(tempfile.mkdtemp(prefix="selfdev-bench-merge-"))
    work = tmp / "out"
    env = dict(os.environ, SELFDEV_HOME=str(tmp / "home"), PYTHONWARNINGS="ignore")
    (tmp / "ties.yml").write_text(mergekit_config(dirs, args.density, 1.0))
    ties_py = HERE / "TIES.py"
    if args.density != 0.2:
        text = ties_py.read_text().replace("DENSITY = 0.2", f"DENSITY = {args.density!r}")
        ties_py = tmp / "TIES.py"
        ties_py.write_text(text)
    cmds = {
        "selfdev": [str(selfdev_bin), "apply", str(ties_py), "--base", str(dirs["seed"]),
                    "--expert", f"x={dirs['x']}", "--expert", f"y={dirs['y']}",
                    "--out", str(work / "selfdev"), "--eval", "none", "--no-baselines",
                    "--quiet", "--timeout", "86400"],
        "mergekit": [str(mergekit_bin), str(tmp / "ties.yml"), str(work / "mergekit")],
    }

    cold = [read_rate(inputs[0], cold=True) for _ in range(3)]
    warm = [read_rate(inputs[0], cold=False) for _ in range(3)]
    disk_cold, disk_warm = statistics.median(cold), statistics.median(warm)

    print(f"TIES (density {args.density}, lambda 1, 2 experts + seed) on {args.size}: "
          f"{num_params(s) / 1e9:.2f}B parameters per model, bf16, {in_bytes / 1e9:.1f} GB of "
          f"inputs; {os.cpu_count()} CPUs; inputs {'warm (page cache)' if args.warm else 'cold (dropped before each run)'}",
          flush=True)
    print(f"disk: sequential read of {inputs[0].name} ({inputs[0].stat().st_size / 1e9:.2f} GB): "
          f"cold {disk_cold:.2f} GB/s, page cache {disk_warm:.2f} GB/s (median of 3)", flush=True)
    print(f"{'round':>5s} {'tool':9s} {'wall s':>8s} {'CPU s':>8s} {'peak RSS GB':>12s} {'peak PSS GB':>12s} "
          f"{'peak anon GB':>13s} {'input GB/s':>11s}", flush=True)
    results: dict[str, list[dict]] = {"selfdev": [], "mergekit": []}
    for r in range(args.rounds):
        order = ("selfdev", "mergekit") if r % 2 == 0 else ("mergekit", "selfdev")
        for tool in order:
            shutil.rmtree(work / tool, ignore_errors=True)
            if not args.warm:
                drop_cache(inputs)
            res = timed(cmds[tool], env, tmp / f"{tool}-{r}.log")
            res["gbps"] = in_bytes / res["wall"] / 1e9
            results[tool].append(res)
            print(f"{r + 1:5d} {tool:9s} {res['wall']:8.1f} {res['cpu']:8.1f} {res['rss'] / 1e9:12.2f} "
                  f"{res['pss'] / 1e9:12.2f} {res['anon'] / 1e9:13.2f} {res['gbps']:11.3f}", flush=True)

    keys = ("wall", "cpu", "rss", "pss", "anon", "gbps")
    med = {t: {k: statistics.median(x[k] for x in rows) for k in keys} for t, rows in results.items()}
    for t in ("selfdev", "mergekit"):
        m = med[t]
        print(f"{'med':>5s} {t:9s} {m['wall']:8.1f} {m['cpu']:8.1f} {m['rss'] / 1e9:12.2f} {m['pss'] / 1e9:12.2f} "
              f"{m['anon'] / 1e9:13.2f} {m['gbps']:11.3f}")
    ratio = {k: med["selfdev"][k] / max(med["mergekit"][k], 1) for k in keys}
    print(f"selfdev / mergekit: wall {ratio['wall']:.2f}x (goal <= 0.5x), CPU time "
          f"{ratio['cpu']:.2f}x, peak RSS "
          f"{ratio['rss']:.2f}x (goal <= 1.5x), peak PSS {ratio['pss']:.2f}x, peak anon "
          f"{ratio['anon']:.2f}x")
    print(f"throughput: selfdev {med['selfdev']['gbps']:.3f} GB/s, mergekit "
          f"{med['mergekit']['gbps']:.3f} GB/s of inputs; disk {disk_cold:.2f} GB/s cold")
    names = ["model.layers.0.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight",
             "lm_head.weight"]
    print("outputs: " + compare_outputs(work / "selfdev", work / "mergekit", names))
    if args.keep:
        print(f"merged models kept in {work}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
