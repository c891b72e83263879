"""The lm domain's safetensors reader (``ModelDir``): its own header parser and positioned reads.

Why it exists: ``safe_open`` memory-maps whole shards and the touched pages stay in RSS
(issue 11: 1.83x mergekit's peak RSS). These tests check that the reader gives exactly the
tensors safetensors' own loader gives, maps nothing, and refuses a corrupt or truncated file
with one line naming the file and the fault."""
from __future__ import annotations

import json
import struct

import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")

from selfdev import ConfigError  # noqa: E402
from selfdev.plugins.domains.lm.io import INDEX_FILE, SINGLE_FILE, ModelDir, read_header  # noqa: E402


def _tensors(dtype) -> dict:
    g = torch.Generator().manual_seed(7)
    out = {"w.big": (torch.randn(33, 17, generator=g) * 3).to(dtype),
           "w.vec": torch.randn(5, generator=g).to(dtype),
           "w.scalar": torch.tensor(1.5).to(dtype),
           "w.empty": torch.zeros(0, 4, dtype=dtype)}
    if dtype == torch.float32:  # non-float tensors ride along in the fp32 file
        out["ids"] = torch.arange(-3, 9, dtype=torch.int64).reshape(3, 4)
        out["mask"] = torch.tensor([True, False, True])
    return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_reader_gives_the_same_tensors_as_safetensors_and_maps_nothing(tmp_path, dtype):
    from safetensors import safe_open

    d = tmp_path / "m"
    d.mkdir()
    st.save_file(_tensors(dtype), str(d / SINGLE_FILE), metadata={"format": "pt"})
    m = ModelDir.open(d)
    try:
        got = {name: m.get(name) for name in m.names}
        with open("/proc/self/maps") as maps:  # nothing of the file is memory-mapped
            assert str(d / SINGLE_FILE) not in maps.read()
        with safe_open(str(d / SINGLE_FILE), framework="pt") as f:
            assert sorted(got) == sorted(f.keys())
            for name in f.keys():
                ref, t = f.get_tensor(name), got[name]
                assert t.dtype == ref.dtype and t.shape == ref.shape, name
                # bit for bit (NaN payloads and -0.0 included): compare the raw bytes
                assert t.reshape(-1).view(torch.uint8).tolist() == ref.reshape(-1).view(torch.uint8).tolist(), name
                assert m.tensors[name].dtype == f.get_slice(name).get_dtype()
    finally:
        m.close()


def test_sharded_directory_reads_each_tensor_from_its_shard(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    a, b = _tensors(torch.bfloat16), {"x.other": torch.randn(4, 4).to(torch.bfloat16)}
    st.save_file(a, str(d / "model-00001-of-00002.safetensors"))
    st.save_file(b, str(d / "model-00002-of-00002.safetensors"))
    wm = {**{k: "model-00001-of-00002.safetensors" for k in a}, **{k: "model-00002-of-00002.safetensors" for k in b}}
    (d / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    m = ModelDir.open(d)
    for name, t in {**a, **b}.items():
        assert torch.equal(m.get(name), t) and m.tensors[name].file == wm[name]
    m.close()


def _write_raw(path, header: dict, data: bytes) -> None:
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


GOOD = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


@pytest.mark.parametrize("case, expect", [
    ("not-json", "not valid JSON"),
    ("huge-length", "exceeds the file"),
    ("short", "shorter than the 8-byte header length"),
    ("truncated", "truncated"),
    ("dtype", "unknown dtype 'F33'"),
    ("shape-mismatch", "needs 16 bytes, data_offsets [0, 12] span 12"),
    ("offsets", "is not [begin, end]"),
    ("shape", "is not a list of non-negative integers"),
])
def test_a_corrupt_or_truncated_file_is_refused_with_one_line(tmp_path, case, expect):
    d = tmp_path / "m"
    d.mkdir()
    f = d / SINGLE_FILE
    data = bytes(16)
    if case == "not-json":
        f.write_bytes(struct.pack("<Q", 5) + b"{oops" + data)
    elif case == "huge-length":
        f.write_bytes(struct.pack("<Q", 10**6) + b"{}" + data)
    elif case == "short":
        f.write_bytes(b"\x01\x02")
    elif case == "truncated":  # a download cut short: the header is fine, the data is not all there
        _write_raw(f, GOOD, data[:10])
    elif case == "dtype":
        _write_raw(f, {"w": {**GOOD["w"], "dtype": "F33"}}, data)
    elif case == "shape-mismatch":
        _write_raw(f, {"w": {**GOOD["w"], "data_offsets": [0, 12]}}, data)
    elif case == "offsets":
        _write_raw(f, {"w": {**GOOD["w"], "data_offsets": [16, 0]}}, data)
    elif case == "shape":
        _write_raw(f, {"w": {**GOOD["w"], "shape": [2, -2]}}, data)
    with pytest.raises(ConfigError) as exc:
        ModelDir.open(d, role="seed")
    msg = str(exc.value)
    assert expect in msg and str(f) in msg and "corrupt safetensors file" in msg, msg
    assert "\n" not in msg
    with pytest.raises(ConfigError):
        read_header(f)


def test_a_well_formed_raw_file_reads_back(tmp_path):
    """The hand-written files above differ from the good one only in the fault under test."""
    d = tmp_path / "m"
    d.mkdir()
    _write_raw(d / SINGLE_FILE, {"__metadata__": {"format": "pt"}, **GOOD}, struct.pack("<4f", 1, 2, 3, 4))
    m = ModelDir.open(d)
    assert m.get("w").tolist() == [[1.0, 2.0], [3.0, 4.0]]
    m.close()


def test_selfdev_apply_on_a_truncated_expert_says_one_line_and_exits_2(tmp_path):
    """What a user meets: the real command, a real (cut short) file, no traceback."""
    import subprocess
    import sys
    from pathlib import Path

    for role, data in (("seed", bytes(16)), ("x", bytes(10))):
        (tmp_path / role).mkdir()
        (tmp_path / role / "config.json").write_text(json.dumps({"model_type": "llama"}))
        _write_raw(tmp_path / role / SINGLE_FILE, GOOD, data)
    ties = Path(__file__).resolve().parents[2] / "bench" / "TIES.py"
    proc = subprocess.run([sys.executable, "-m", "selfdev.engine.cli", "apply", str(ties),
                           "--base", str(tmp_path / "seed"), "--expert", f"x={tmp_path / 'x'}",
                           "--out", str(tmp_path / "out"), "--eval", "none"],
                          capture_output=True, text=True, timeout=120)
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stderr
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert "corrupt safetensors file" in err and str(tmp_path / "x" / SINGLE_FILE) in err and "truncated" in err
    assert not (tmp_path / "out").exists()
