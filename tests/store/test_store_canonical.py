"""Canonical JSON, hashes and ids: the parts of the contract that must never drift."""

from __future__ import annotations

import json
import math
import random
import uuid
from hashlib import blake2b

import pytest

from selfdev.store import canonical_json, content_hash, event_hash, new_event_id, new_event_ids, utc_now
from selfdev.store import ids as ids_module
from selfdev.store.canonical import event_hash_fields, parse_json


def reference(value) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-(10**20), 10**20)
    if kind == 3:
        return rng.choice([0.1, -2.5e-300, 1e300, 3.0, rng.random()])
    if kind == 4:
        return "".join(rng.choice('aé"\\\n\t\x00\u2028😀/<') for _ in range(rng.randrange(6)))
    if kind in (5, 6):
        return {random_json(rng, 9) if False else str(rng.random())[:5]: random_json(rng, depth + 1)
                for _ in range(rng.randrange(4))}  # fmt: skip
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


class TestCanonicalJson:
    def test_sorted_keys_no_whitespace_unicode_kept(self):
        value = {"b": 1, "a": {"d": [1, 2.5, None, True], "c": "é😀"}, "A": "x"}
        assert canonical_json(value) == '{"A":"x","a":{"c":"é😀","d":[1,2.5,null,true]},"b":1}'

    def test_same_as_json_dumps_with_the_documented_arguments(self):
        rng = random.Random(1234)
        for _ in range(500):
            value = random_json(rng)
            assert canonical_json(value) == reference(value)
            assert parse_json(canonical_json(value)) == json.loads(reference(value))

    def test_stable_across_insertion_order(self):
        a = {"x": 1, "y": {"p": 1, "q": 2}}
        b = {"y": {"q": 2, "p": 1}, "x": 1}
        assert canonical_json(a) == canonical_json(b)

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {"x": [math.nan]}])
    def test_nan_and_infinity_are_rejected(self, bad):
        with pytest.raises(ValueError):
            canonical_json(bad)

    def test_non_json_types_are_rejected(self):
        with pytest.raises(TypeError, match="set is not JSON serializable"):
            canonical_json({"x": {1, 2}})
        with pytest.raises(TypeError):
            canonical_json({"x": b"bytes"})

    def test_tuples_and_non_string_keys_follow_json_dumps(self):
        assert canonical_json({"t": (1, 2)}) == '{"t":[1,2]}'
        assert (
            canonical_json({3: "k", 1: None})
            == '{"1":null,"3":"k"}'
            == reference({3: "k", 1: None})
        )
        with pytest.raises(TypeError):  # json.dumps cannot sort mixed key types either
            canonical_json({"t": 1, 3: "k"})

    def test_parse_json_matches_json_loads_and_its_errors(self):
        for text in ['{"a":1}', ' {"a":1} ', "[]", '"x"', "1.5"]:
            assert parse_json(text) == json.loads(text)
        for bad in ["", "{", '{"a":1}x', "nan"]:
            with pytest.raises(json.JSONDecodeError):
                parse_json(bad)


class TestHashes:
    def test_content_hash_is_prefixed_blake2b_256(self):
        assert content_hash(b"abc") == "b2:" + blake2b(b"abc", digest_size=32).hexdigest()
        assert content_hash("é") == content_hash("é".encode())
        assert content_hash(b"") == "b2:" + blake2b(b"", digest_size=32).hexdigest()

    def test_event_hash_is_the_documented_formula(self):
        envelope = {
            "event_id": "id",
            "run_id": "r\u00e9",
            "stream_version": 3,
            "type": "t\n",
            "type_version": 1,
            "occurred_at": "2026-01-01T00:00:00.000000Z",
            "source": 's"',
        }
        payload = {"z": [1, {"b": None}], "a": "😀"}
        expected = content_hash(
            canonical_json({"prev": "b2:ff", "envelope": envelope, "payload": payload})
        )
        assert event_hash("b2:ff", envelope, canonical_json(payload)) == expected
        fields = [envelope[k] for k in ("event_id", "run_id", "stream_version", "type",
                                        "type_version", "occurred_at", "source")]  # fmt: skip
        assert event_hash_fields("b2:ff", *fields, canonical_json(payload)) == expected

    def test_event_hash_fields_handles_odd_types_the_canonical_way(self):
        # what a tampered row could read back as: the slow path must agree with the formula
        envelope = {"event_id": None, "run_id": "r", "stream_version": "3", "type": 5,
                    "type_version": True, "occurred_at": b"x".decode(), "source": "s"}  # fmt: skip
        fields = [envelope[k] for k in ("event_id", "run_id", "stream_version", "type",
                                        "type_version", "occurred_at", "source")]  # fmt: skip
        expected = content_hash(canonical_json({"prev": "", "envelope": envelope, "payload": {}}))
        assert event_hash_fields("", *fields, "{}") == expected
        assert event_hash_fields("", "e", "r", 1, "t", 1, "a", "s", "{}") != event_hash_fields(
            "", "e", "r", True, "t", 1, "a", "s", "{}"
        )


class TestIds:
    def test_uuid7_time_sortable_and_unique(self):
        ids = [new_event_id() for _ in range(200)] + new_event_ids(5000)
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        u = uuid.UUID(ids[0])
        assert u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == ids[0]

    def test_monotonic_across_rand_b_and_counter_overflow(self, monkeypatch):
        first = new_event_ids(3)
        monkeypatch.setattr(ids_module, "_last_rand", ids_module._last_rand | ids_module._B_MASK)
        wrapped = new_event_ids(3)
        monkeypatch.setattr(ids_module, "_last_rand", ids_module._RAND_MAX)
        overflowed = new_event_ids(3)
        all_ids = first + wrapped + overflowed
        assert all_ids == sorted(all_ids) and len(set(all_ids)) == 9
        assert all(uuid.UUID(i).version == 7 for i in all_ids)

    def test_clock_going_back_keeps_order(self, monkeypatch):
        before = new_event_ids(2)
        monkeypatch.setattr(ids_module.time, "time_ns", lambda: 0)
        after = new_event_ids(2)
        assert before + after == sorted(before + after)

    def test_utc_now_format(self):
        now = utc_now()
        assert len(now) == 27 and now.endswith("Z") and now[10] == "T" and now[19] == "."
