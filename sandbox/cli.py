"""`selfdev sandbox ...` commands (the lead wires ``sandbox_cli`` into the root group)."""
from __future__ import annotations

import json
import os
import sys

import click


def _fail(msg: str, code: int = 2):
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


@click.group(name="sandbox")
def sandbox_cli():
    """Run and inspect the candidate sandbox."""


def _node_doctor() -> dict:
    """The doctor's report on the node this runs on (a Ray task's body)."""
    import socket

    from selfdev.sandbox import doctor
    rep = doctor()
    rep["host"] = socket.gethostname()
    return rep


def _ray_doctor(address: str, as_json: bool) -> None:
    """Run the doctor on every alive node of a Ray cluster, one task pinned to each node, and
    print a row per node: a worker refuses candidates where a required layer is missing, so
    this is how an operator finds such a node before a run does."""
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError:
        _fail("--ray needs Ray: pip install 'selfdev[ray]'")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - no cluster there: one line
        _fail(f"cannot join the Ray cluster at {address!r} ({type(e).__name__}: "
              f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}); allowed: "
              "'local', 'auto' or 'ray://HOST:PORT'")
    try:
        task = ray.remote(num_cpus=0)(_node_doctor)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote() for n in nodes]
        reports = ray.get(refs, timeout=300)
    finally:
        ray.shutdown()
    rows = [{"node": n["NodeID"][:12], "address": n.get("NodeManagerAddress"),
             "host": r["host"], "kernel": r["kernel"],
             "missing": r["missing_for_default"],
             "layers": sorted(k for k, v in r["layers"].items() if v)}
            for n, r in zip(nodes, reports)]
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
    else:
        for row in rows:
            state = ("ok" if not row["missing"]
                     else f"MISSING {', '.join(row['missing'])}: refuses candidates")
            click.echo(f"{row['node']}  {row['address']:15s}  {row['host']:20s}  "
                       f"kernel {row['kernel']:20s}  {len(row['layers'])} layers  {state}")
    if any(row["missing"] for row in rows):
        sys.exit(1)


@sandbox_cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--ray", "on_ray", is_flag=True,
              help="Run the doctor on every node of a Ray cluster, a row per node.")
@click.option("--ray-address", default="auto", show_default=True,
              help="With --ray: 'auto' (this machine's cluster), 'ray://HOST:PORT', or "
                   "'local' (start one here).")
def doctor_cmd(as_json: bool, on_ray: bool, ray_address: str):
    """Show which isolation layers are active on this kernel (or on every Ray node)."""
    if on_ray:
        _ray_doctor(ray_address, as_json)
        return
    from selfdev.sandbox import doctor
    rep = doctor()
    if as_json:
        click.echo(json.dumps(rep, indent=2, sort_keys=True))
        return
    click.echo(f"kernel {rep['kernel']} ({rep['machine']}), python {rep['python']}, "
               f"RestrictedPython {rep['restrictedpython']}, euid {rep['euid']}, Landlock ABI {rep['landlock_abi']}")
    for k, v in rep["layers"].items():
        mark = "on " if v else "OFF"
        req = " (required by default)" if k in rep["default_require"] else ""
        click.echo(f"  [{mark}] {k:15s} {rep['descriptions'].get(k, '')}{req}")
    if rep["missing_for_default"]:
        click.echo(f"missing required layers: {', '.join(rep['missing_for_default'])}: "
                   "the sandbox will refuse to run candidates with its default settings")
    else:
        click.echo("all default-required layers are available")
    for k in ("namespace_error", "landlock_error", "seccomp_error", "probe_error"):
        if rep.get(k):
            click.echo(f"  {k}: {rep[k]}")


def _load_safetensors(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        _fail(f"{what} file not found: {path}")
    try:
        from safetensors.torch import load_file
        return load_file(path)
    except Exception as e:
        _fail(f"cannot read {what} {path} as safetensors: {type(e).__name__}: {str(e)[:200]}")


@sandbox_cli.command("run")
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option("--base", "base_path", required=True, type=click.Path(dir_okay=False), help="Seed tensors (safetensors).")
@click.option("--expert", "experts", multiple=True, required=True, metavar="NAME=FILE",
              help="Task vectors of one expert (safetensors); repeat for each expert.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Where to write the merged task vectors.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Wall-clock limit in seconds.")
@click.option("--memory-mb", type=int, default=4096, show_default=True, help="Address-space allowance for the candidate.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the default output format).")
def run_cmd(candidate, base_path, experts, out_path, timeout, memory_mb, as_json):
    """Screen and run CANDIDATE.py's merge_models on every tensor in BASE."""
    if not os.path.isfile(candidate):
        _fail(f"candidate file not found: {candidate}")
    try:
        with open(candidate, "rb") as f:
            raw = f.read(1 << 20)
        code = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"cannot read candidate {candidate}: {e}")
    if timeout <= 0:
        _fail("--timeout must be positive")
    tvs = {}
    for spec in experts:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            _fail(f"bad --expert {spec!r}: expected NAME=FILE")
        if name in tvs:
            _fail(f"duplicate expert name {name!r}")
        tvs[name] = _load_safetensors(path, f"expert {name!r}")
    base = _load_safetensors(base_path, "base")
    if not base:
        _fail("base file holds no tensors")
    for n, tv in tvs.items():
        missing = [k for k in base if k not in tv]
        if missing:
            _fail(f"expert {n!r} lacks tensors present in base: {', '.join(missing[:5])}")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
        _fail(f"output directory does not exist: {out_dir}")
    from selfdev.sandbox import Sandbox, SandboxUnavailable
    try:
        with Sandbox(base, tvs, timeout=timeout, memory_mb=memory_mb) as sb:
            res = sb.run(code)
    except SandboxUnavailable as e:
        _fail(f"sandbox unavailable: {e}", 3)
    except ValueError as e:
        _fail(str(e))
    obj = res.to_json()
    if res.status == "ok":
        from safetensors.torch import save_file
        tmp = out_path + ".tmp"
        save_file(res.tensors, tmp)
        os.replace(tmp, out_path)
        obj["out"] = out_path
    click.echo(json.dumps(obj))
    sys.exit(0 if res.status == "ok" else 1)
