"""Bad-input campaign: a structure-aware fuzzer of stream entries, none stops or touches the model.

The codec is checked against an independent oracle (``benchmarks.fuzz_entries.oracle``: the
README's rules and Python's ``json``) on adversarial JSON of every kind (random documents,
near-valid arrays with hostile elements, byte-level mutations of valid text, nesting thousands
deep) and on the fuzz generator's entries (byte garbage, bad labels and origins, thousands of
fields). Then each hypothesis example publishes 25 malformed entries (1,000 over the run) around a
handful of valid samples, runs the real worker against the real Redis until the stream is drained,
and checks that every bad entry is in the dead-letter stream with its original id and a reason,
and that the model equals one trained on the valid samples alone. The large run (>= 100,000
entries, fields of >= 10 MB, a worker process) is ``benchmarks/fuzz_stream.py``; a short one is in
``test_fuzz_stream.py``.

Packed entries (``digitstream.packed``) are in the campaign: malformed ones (lengths that disagree,
too many or no samples, both label fields, oversized) are dead-lettered whole; bad samples inside
well-formed ones are dead-lettered alone, with their index, the rest learned.
"""

from __future__ import annotations

import json

import numpy as np
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitstream.benchmarks.fuzz_entries import BAD_TOKENS, FuzzEntries, oracle
from digitstream.learner import DeltaRuleLearner
from digitstream.packed import DEFAULT_PACK_MAX, max_packed_bytes
from digitstream.protocol import MAX_ENTRY_BYTES, N_PIXELS, decode_entries, encode_sample
from digitstream.store import read_snapshot

DIGITS = {str(d).encode() for d in range(10)}
VALID_PIXELS = st.binary(min_size=N_PIXELS, max_size=N_PIXELS)
VALID_LABEL = st.sampled_from(sorted(DIGITS))
BAD_LABEL = st.binary(max_size=6).filter(lambda b: b not in DIGITS)
BAD_RAW_PIXELS = st.binary(max_size=2000).filter(lambda b: len(b) != N_PIXELS and not b.lstrip().startswith(b"["))
JSON_INTS = st.integers(0, 255)


def json_text(values: object) -> bytes:
    return json.dumps(values).encode()


def with_one_replaced(values: list[int], odd_one: object, index: int) -> list[object]:
    """784 values: ``values`` (783 good ones) with ``odd_one`` inserted at ``index``."""
    return [*values[:index], odd_one, *values[index:]]


BAD_JSON_PIXELS = st.one_of(
    # the wrong number of valid values
    st.lists(JSON_INTS, max_size=900).filter(lambda v: len(v) != N_PIXELS).map(json_text),
    # 784 values with at least one out of range
    st.tuples(
        st.lists(JSON_INTS, min_size=N_PIXELS - 1, max_size=N_PIXELS - 1),
        st.integers(256, 10**6) | st.integers(-(10**6), -1),
        st.integers(0, N_PIXELS - 1),
    ).map(lambda t: json_text(with_one_replaced(*t))),
    # 784 values with a non-integer among them
    st.tuples(
        st.lists(JSON_INTS, min_size=N_PIXELS - 1, max_size=N_PIXELS - 1),
        st.sampled_from([1.5, "7", None, [1], True, {"a": 1}]),
        st.integers(0, N_PIXELS - 1),
    ).map(lambda t: json_text(with_one_replaced(*t))),
    # not JSON, or not UTF-8, behind a leading bracket
    st.binary(max_size=300).map(lambda b: b"[" + b).filter(lambda b: len(b) != N_PIXELS),
    st.just(b"[\xff\xfe]"),
    st.just(json_text([[0] * 28] * 27)),  # 27 rows
)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-300, 300) | st.integers() | st.text(max_size=4),
    lambda children: st.lists(children, max_size=30) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=40,
)


@st.composite
def adversarial_json(draw: st.DrawFn) -> bytes:
    """JSON-ish pixel text of every kind: most of it invalid, some of it valid in unusual ways."""
    kind = draw(st.sampled_from(["document", "near-valid", "mutated", "deep", "tokens"]))
    indent = draw(st.sampled_from([None, 0, 1, "\t", " \r\n"]))
    nested = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))  # 784 values drawn one by one: too slow
    values: list[object] = rng.integers(0, 256, N_PIXELS).tolist()
    if kind == "document":
        return json.dumps(draw(JSON_VALUES), indent=indent).encode()
    if kind == "near-valid":
        for _ in range(draw(st.integers(1, 3))):
            values[draw(st.integers(0, N_PIXELS - 1))] = draw(JSON_VALUES)
    if kind == "tokens":
        text = [str(v) for v in values]
        text[draw(st.integers(0, N_PIXELS - 1))] = draw(st.sampled_from(BAD_TOKENS))
        return ("[" + ",".join(text) + "]").encode()
    if kind == "deep":
        opens, closes = draw(st.integers(1, 20_000)), draw(st.integers(0, 20_000))
        return b"[" * opens + draw(st.sampled_from([b"", b"0", b"1,2", b"[]"])) + b"]" * closes
    body = [values[i : i + 28] for i in range(0, N_PIXELS, 28)] if nested else values
    text = json.dumps(body, indent=indent).encode()
    if kind == "mutated":
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(text)))
            cut = draw(st.integers(0, 3))
            insert = draw(st.binary(max_size=3) | st.sampled_from([b",", b"[", b"]", b" ", b"-"]))
            text = text[:at] + insert + text[at + cut :]
    return text


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pixels=adversarial_json(), label=VALID_LABEL)
def test_json_pixels_are_read_exactly_as_the_oracle_reads_them(pixels: bytes, label: bytes) -> None:
    fields = {b"pixels": pixels, b"label": label}
    batch = decode_entries([(b"1-1", fields)])
    expected = oracle(fields)
    if expected is None:
        assert batch.ids == [] and batch.rejects[0][2].startswith(("pixels: ", "entry too large"))
    else:
        assert batch.ids == [b"1-1"] and np.array_equal(batch.images[0], expected[0])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_the_fuzz_generators_entries_are_learned_or_rejected_exactly_as_the_oracle_says(seed: int) -> None:
    fuzz = FuzzEntries(seed, huge=False)
    entries = [fuzz.entry()[1] for _ in range(20)]
    ids = [b"1-%d" % i for i in range(len(entries))]
    batch = decode_entries([[i, [x for kv in f.items() for x in kv]] for i, f in zip(ids, entries, strict=True)])
    verdicts = [oracle(f) for f in entries]
    assert batch.ids == [i for i, v in zip(ids, verdicts, strict=True) if v is not None]
    assert [r[0] for r in batch.rejects] == [i for i, v in zip(ids, verdicts, strict=True) if v is None]
    learnable = [v for v in verdicts if v is not None]
    assert np.array_equal(batch.images, np.array([v[0] for v in learnable]).reshape(-1, N_PIXELS))
    assert batch.labels.tolist() == [v[1] for v in learnable]


@st.composite
def malformed_entry(draw: st.DrawFn) -> dict[bytes, bytes]:
    kind = draw(
        st.sampled_from(
            ["no_label", "no_pixels", "bad_label", "raw_length", "json", "oversized", "extra_only", "fuzz", "packed"]
        )
    )
    if kind == "packed":
        return draw(malformed_packed())
    if kind == "fuzz":
        json_entry = st.builds(lambda p, lab: {b"pixels": p, b"label": lab}, adversarial_json(), VALID_LABEL)
        return draw(json_entry.filter(lambda fields: oracle(fields) is None))
    if kind == "no_label":
        return {b"pixels": draw(VALID_PIXELS)}
    if kind == "no_pixels":
        return {b"label": draw(VALID_LABEL)}
    if kind == "bad_label":
        return {b"pixels": draw(VALID_PIXELS), b"label": draw(BAD_LABEL)}
    if kind == "raw_length":
        return {b"pixels": draw(BAD_RAW_PIXELS), b"label": draw(VALID_LABEL)}
    if kind == "json":
        return {b"pixels": draw(BAD_JSON_PIXELS), b"label": draw(VALID_LABEL)}
    if kind == "oversized":
        padding = draw(st.integers(MAX_ENTRY_BYTES, MAX_ENTRY_BYTES + 5000))
        return {b"pixels": draw(VALID_PIXELS), b"label": draw(VALID_LABEL), b"source": b"x" * padding}
    return {b"source": draw(st.binary(max_size=50))}


@st.composite
def malformed_packed(draw: st.DrawFn) -> dict[bytes, bytes]:
    """A packed entry malformed as a whole."""
    kind = draw(st.sampled_from(["length", "no_samples", "too_many", "both_labels", "no_pixels", "oversized"]))
    n = draw(st.integers(1, 40))
    labels = draw(st.binary(min_size=n, max_size=n))  # bad label bytes too: the entry is refused before them
    if kind == "length":
        size = draw(st.integers(0, 41 * N_PIXELS).filter(lambda k: k != n * N_PIXELS))
        return {b"pixels": bytes(size), b"labels": labels}
    if kind == "no_samples":
        return {b"pixels": draw(st.binary(max_size=N_PIXELS)), b"labels": b""}
    if kind == "too_many":
        n = DEFAULT_PACK_MAX + draw(st.integers(1, 3))
        return {b"pixels": bytes(n * N_PIXELS), b"labels": b"1" * n}
    if kind == "both_labels":
        return {b"pixels": bytes(n * N_PIXELS), b"labels": labels, b"label": draw(VALID_LABEL)}
    if kind == "no_pixels":
        return {b"labels": labels}
    padding = max_packed_bytes() - DEFAULT_PACK_MAX * (N_PIXELS + 1) + draw(st.integers(1, 5000))
    return {
        b"pixels": bytes(DEFAULT_PACK_MAX * N_PIXELS),
        b"labels": b"7" * DEFAULT_PACK_MAX,
        b"source": bytes(padding),
    }


@settings(max_examples=1000, deadline=None)
@given(entry=malformed_entry())
def test_the_codec_rejects_every_generated_malformed_entry_with_a_reason(entry: dict[bytes, bytes]) -> None:
    batch = decode_entries([(b"1-1", entry)])
    assert batch.ids == [] and len(batch.images) == 0
    assert [entry_id for entry_id, _, _ in batch.rejects] == [b"1-1"]
    assert batch.rejects[0][1] == entry  # the dead letter's bounds are applied when it is written
    assert batch.rejects[0][2].strip()
    assert batch.last_id == b"1-1"


def flat(fields: dict[bytes, bytes]) -> list[bytes]:
    """The fields as the raw Redis reply lists them: name, value, name, value..."""
    return [item for pair in fields.items() for item in pair]


@settings(max_examples=300, deadline=None)
@given(
    entries=st.lists(
        malformed_entry()
        | st.builds(lambda p, lab: {b"pixels": p, b"label": lab}, VALID_PIXELS, VALID_LABEL)
        | st.builds(lambda p, lab: {b"label": lab, b"pixels": p}, VALID_PIXELS, VALID_LABEL),
        max_size=8,
    )
)
def test_raw_flat_replies_decode_exactly_like_redis_py_dicts(entries: list[dict[bytes, bytes]]) -> None:
    """The worker reads Redis's flat field lists; the verdicts, pixels and reasons must not change."""
    ids = [b"1-%d" % i for i in range(len(entries))]
    as_dicts = decode_entries(list(zip(ids, entries, strict=True)))
    as_lists = decode_entries([[entry_id, flat(fields)] for entry_id, fields in zip(ids, entries, strict=True)])
    assert as_lists.ids == as_dicts.ids and as_lists.last_id == as_dicts.last_id
    assert np.array_equal(as_lists.images, as_dicts.images) and np.array_equal(as_lists.labels, as_dicts.labels)
    assert as_lists.rejects == as_dicts.rejects


BAD_PER_RUN = 25  # x 40 examples = 1,000 malformed entries through the real worker


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(
    bad=st.lists(malformed_entry(), min_size=BAD_PER_RUN, max_size=BAD_PER_RUN),
    good_positions=st.lists(st.integers(0, BAD_PER_RUN), min_size=1, max_size=5),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_malformed_entry_is_dead_lettered_and_never_touches_the_weights(
    make_settings, redis_client: redis.Redis, bad, good_positions, seed
) -> None:
    redis_client.flushall()
    settings_ = make_settings()
    keys = settings_.keys
    rng = np.random.default_rng(seed)
    good_images = rng.integers(0, 256, (len(good_positions), N_PIXELS)).astype(np.uint8)
    good_labels = rng.integers(0, 10, len(good_positions))  # in stream order (positions sorted)
    positions = sorted(good_positions)
    bad_ids: dict[bytes, dict[bytes, bytes]] = {}
    for position in range(len(bad) + 1):
        for i, pos in enumerate(positions):
            if pos == position:
                redis_client.xadd(keys.samples, encode_sample(good_images[i], int(good_labels[i])))
        if position < len(bad):
            bad_ids[redis_client.xadd(keys.samples, bad[position])] = bad[position]

    from digitstream.worker.loop import Worker

    Worker(settings_, redis_client).run(burst=True)

    dead = redis_client.xrange(keys.deadletter)
    assert len(dead) == len(bad)
    for _, fields in dead:
        original = bad_ids[fields[b"original_id"]]
        assert fields[b"reason"].strip()
        for name, value in original.items():  # kept, or cut with the original length (a bounded dead letter)
            kept = fields.get(name)
            if kept is None:
                assert b"dropped_fields" in fields
            elif len(kept) < len(value):
                assert value.startswith(kept) and fields[name + b":length"] == b"%d" % len(value)
            else:
                assert kept == value, "the original fields are kept"
    snapshot = read_snapshot(redis_client, keys)
    assert snapshot is not None
    assert snapshot.samples_learned == len(good_positions)
    assert snapshot.meta["deadletter_count"] == len(bad)
    reference = DeltaRuleLearner(settings_.hyper_parameters())
    reference.learn_many(good_images, good_labels)
    assert np.array_equal(snapshot.learner().weights, reference.weights)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=6),
    bad=st.sets(st.integers(0, 359), max_size=20),
    bad_bytes=st.lists(st.binary(min_size=1, max_size=1).filter(lambda b: b not in DIGITS), min_size=20, max_size=20),
    batch_size=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_bad_samples_inside_packed_entries_are_dead_lettered_alone_and_the_rest_learned(
    make_settings, redis_client: redis.Redis, sizes, bad, bad_bytes, batch_size, seed
) -> None:
    redis_client.flushall()
    settings_ = make_settings(batch_size=batch_size)
    keys = settings_.keys
    total = sum(sizes)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (total, N_PIXELS)).astype(np.uint8)
    labels = bytearray((rng.integers(0, 10, total) + 48).astype(np.uint8).tobytes())
    wrong = sorted(i for i in bad if i < total)
    for k, i in enumerate(wrong):
        labels[i : i + 1] = bad_bytes[k]
    start, where = 0, {}
    for size in sizes:
        entry_id = redis_client.xadd(
            keys.samples,
            {b"pixels": images[start : start + size].tobytes(), b"labels": bytes(labels[start : start + size])},
        )
        where.update({i: (entry_id, i - start) for i in range(start, start + size)})
        start += size

    from digitstream.worker.loop import Worker

    Worker(settings_, redis_client).run(burst=True)

    dead = redis_client.xrange(keys.deadletter)
    assert [(f[b"original_id"], int(f[b"index"])) for _, f in dead] == [where[i] for i in wrong]
    assert [f[b"pixels"] for _, f in dead] == [images[i].tobytes() for i in wrong]
    assert [f[b"label"] for _, f in dead] == [bytes(labels[i : i + 1]) for i in wrong]
    good = [i for i in range(total) if i not in set(wrong)]
    snapshot = read_snapshot(redis_client, keys)
    assert snapshot is not None and snapshot.samples_learned == len(good)
    assert snapshot.meta["entries_consumed"] == len(sizes) and snapshot.meta["deadletter_count"] == len(wrong)
    reference = DeltaRuleLearner(settings_.hyper_parameters())
    reference.learn_many(images[good], np.frombuffer(bytes(labels), np.uint8)[good].astype(np.int64) - 48)
    assert np.array_equal(snapshot.learner().weights, reference.weights)
