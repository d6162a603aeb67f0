"""A short run of the stream fuzzer (``benchmarks/fuzz_stream.py``; the full run is the benchmark).

The codec part on 3,000 generated entries, and the worker part on 600 entries (two of them of
>= 10 MB, two with thousands of fields) through a real ``digitstream worker`` process and a real
redis-server. Throughput is a timing goal: it lives in the benchmark only.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from digitstream.benchmarks import fuzz_stream
from digitstream.clients.embedded_redis import RedisServer
from digitstream.protocol import (
    DEADLETTER_BUDGET_BYTES,
    DEADLETTER_MAX_FIELDS,
    DEADLETTER_NAME_BYTES,
    DEADLETTER_VALUE_BYTES,
    deadletter_fields,
)


def test_the_codec_agrees_with_the_oracle_on_generated_entries() -> None:
    report = fuzz_stream.codec_run(3000, seed=11)
    assert report["exceptions"] == 0 and report["mismatches"] == 0
    assert report["learnable"] > 300 and report["rejected"] > 1500, "both verdicts are exercised"
    assert report["largest_entry_bytes"] >= 10 * 1024 * 1024, "fields of >= 10 MB are among them"


def test_a_real_worker_dead_letters_every_bad_entry_once_and_learns_exactly_the_valid_ones(
    redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    report = fuzz_stream.worker_run(600, seed=12, server=redis_server, log_dir=tmp_path)

    assert report["huge_entries"] >= 2 and report["bad"] > 100 and report["valid"] > 50
    assert report["exits_while_running"] == 0 and report["returncode_on_sigterm"] == 0
    assert report["dead_letters"] == report["bad_dead_lettered_once"] == report["bad"]
    assert report["valid_dead_lettered"] == 0 and report["dead_lettered_more_than_once"] == 0
    assert report["snapshots_observed"] > 0 and report["snapshot_violations"] == 0
    assert report["samples_learned"] == report["valid"]
    assert report["weights_equal"] and report["state_equal"]


FIELD_NAMES = st.binary(max_size=8) | st.binary(min_size=DEADLETTER_NAME_BYTES, max_size=300)
FIELD_VALUES = st.binary(max_size=50) | st.integers(0, 40_000).map(lambda n: b"v" * n)


@settings(max_examples=200, deadline=None)
@given(fields=st.dictionaries(FIELD_NAMES, FIELD_VALUES, max_size=80), reason=st.text(max_size=2000))
def test_a_dead_letter_is_bounded_whatever_the_entry(fields: dict[bytes, bytes], reason: str) -> None:
    dead = deadletter_fields(b"1-1", fields, reason)
    meta = {b"original_id", b"reason", b"dropped_fields"}
    kept = {k: v for k, v in dead.items() if k not in meta and not k.endswith(b":length")}
    assert len(kept) <= DEADLETTER_MAX_FIELDS
    assert sum(len(k) + len(v) for k, v in kept.items()) <= DEADLETTER_BUDGET_BYTES
    assert all(len(v) <= DEADLETTER_VALUE_BYTES and fields[k].startswith(v) for k, v in kept.items())
    for name, value in kept.items():  # a cut value records its original length
        if len(value) < len(fields[name]):
            assert dead[name + b":length"] == b"%d" % len(fields[name])
    missing = [k for k in fields if k not in meta and k not in dead]
    assert len(missing) <= int(dead.get(b"dropped_fields", b"0")), "every field is kept or counted"
    assert dead[b"original_id"] == b"1-1" and len(dead[b"reason"]) <= 1024
