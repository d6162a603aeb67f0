"""Contracts: snapshot metadata and worker status survive JSON exactly, anything else is a ContractError
naming the field; the HTTP schemas and the Python client's result types agree field by field."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import types
import typing
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digitstream.clients import prediction as client
from digitstream.contracts import (
    WORKER_STATES,
    ContractError,
    DriftEvent,
    Fault,
    LearnerDescriptor,
    MetricsReport,
    SnapshotMeta,
    WorkerSettings,
    WorkerStatus,
)
from digitstream.service import schemas

# -- strategies -----------------------------------------------------------------------------------
INTS = st.integers(-(2**62), 2**62)  # orjson, like most JSON readers, stops at 64 bits
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | INTS | FLOATS | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=10,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def tuples_of(strategy: st.SearchStrategy[Any], max_size: int = 4) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(strategy, max_size=max_size).map(tuple)


FAULTS = st.builds(Fault, TEXT, TEXT, FLOATS, INTS, skipped=maybe(INTS), seconds=maybe(FLOATS))
METRICS = st.builds(
    MetricsReport,
    samples=INTS, prequential_accuracy=maybe(FLOATS), rolling_accuracy=maybe(FLOATS), rolling_window=INTS,
    confusion_matrix=tuples_of(tuples_of(INTS, 10), 10), per_class_recall=tuples_of(maybe(FLOATS), 10),
    drift_events=tuples_of(st.builds(DriftEvent, INTS, TEXT, maybe(TEXT), maybe(FLOATS))),
    learning_curve=tuples_of(st.tuples(INTS, maybe(FLOATS), maybe(FLOATS))),
    throughput=maybe(FLOATS), lag=maybe(INTS), lag_at_least=st.booleans(),
)  # fmt: skip
SNAPSHOT_METAS = st.builds(
    SnapshotMeta,
    samples_learned=INTS, last_id=TEXT,
    learner=st.builds(LearnerDescriptor, INTS, st.dictionaries(TEXT, JSON_VALUES, max_size=4), INTS),
    entries_consumed=INTS, model=maybe(TEXT), created_at=maybe(FLOATS), deadletter_count=INTS,
    samples_skipped=INTS, metrics=METRICS, faults=tuples_of(FAULTS), worker_id=maybe(TEXT), stream=maybe(TEXT),
    settings=maybe(st.builds(WorkerSettings, INTS, INTS, FLOATS, INTS, INTS, maybe(FLOATS))),
    version=maybe(INTS), schema=INTS,
)  # fmt: skip
STATUSES = st.builds(
    WorkerStatus,
    worker_id=TEXT, state=st.sampled_from(WORKER_STATES), model=TEXT, samples_learned=INTS, last_id=TEXT,
    updated_at=FLOATS, version=maybe(INTS), lag=maybe(INTS), lag_at_least=st.booleans(), throughput=FLOATS,
    deadletter_count=INTS, faults=tuples_of(FAULTS),
)  # fmt: skip


# -- round trips ----------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(meta=SNAPSHOT_METAS, status=STATUSES)
def test_meta_and_status_come_back_equal_through_strict_json(meta: SnapshotMeta, status: WorkerStatus) -> None:
    for value in (meta, status):
        text = json.dumps(value.to_json(), allow_nan=False)  # no NaN or Infinity can be in it
        assert type(value).from_json(json.loads(text)) == value
        assert type(value).from_json(orjson.loads(orjson.dumps(value.to_json()))) == value


@settings(max_examples=200, deadline=None)
@given(meta=SNAPSHOT_METAS, status=STATUSES, data=st.data())
def test_a_field_of_another_shape_is_a_contract_error_naming_it(
    meta: SnapshotMeta, status: WorkerStatus, data: st.DataObject
) -> None:
    for value, where in ((meta, "meta"), (status, "status"), (meta.metrics, "metrics")):
        body = value.to_json()
        key = data.draw(st.sampled_from(sorted(body)))
        body[key] = data.draw(JSON_VALUES)
        try:
            parsed = type(value).from_json(body)
        except ContractError as exc:
            assert str(exc).startswith(f"{where}.{key}"), exc
        else:  # it still follows the contract (e.g. another int): it round-trips like any other
            assert type(value).from_json(parsed.to_json()) == parsed


@settings(max_examples=200, deadline=None)
@given(value=JSON_VALUES)
def test_any_json_value_is_a_contract_or_a_contract_error(value: Any) -> None:
    for contract in (SnapshotMeta, WorkerStatus, MetricsReport):
        with contextlib.suppress(ContractError):
            contract.from_json(value)


def test_old_metadata_without_the_newer_fields_still_reads() -> None:
    old = {"samples_learned": 5, "last_id": "1-0", "learner": {"format": 1, "params": {}, "n_samples": 5},
           "metrics": {"drift_events": [{"samples": 3, "detector": "ADWIN"}]}}  # fmt: skip
    meta = SnapshotMeta.from_json(old)
    assert meta.entries_consumed == 5 and meta.deadletter_count == 0 and meta.faults == ()
    assert meta.metrics.drift_events == (DriftEvent(3, "ADWIN"),) and meta.metrics.lag is None


def test_non_finite_numbers_and_booleans_for_numbers_are_refused() -> None:
    status = WorkerStatus("w", "active", "m", 1, "1-0", 1.0).to_json()
    for key, bad in (("throughput", float("nan")), ("updated_at", float("inf")), ("samples_learned", True),
                     ("lag", 10**400), ("state", "dancing")):  # fmt: skip
        with pytest.raises(ContractError, match=f"status.{key}"):
            WorkerStatus.from_json({**status, key: bad})


def test_the_contracts_import_without_the_heavy_stacks() -> None:
    code = "import sys, digitstream.contracts; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code], text=True).replace("'", '"')))
    assert not loaded & {"numba", "river", "scipy", "fastapi", "pydantic", "redis", "uvicorn"}


# -- HTTP schemas and the Python client -----------------------------------------------------------
PAIRS = [
    (schemas.Prediction, client.Prediction),
    (schemas.BatchPrediction, client.BatchPrediction),
    (schemas.FeedbackReceipt, client.FeedbackReceipt),
    (schemas.SamplesReceipt, client.SamplesReceipt),
    (schemas.ModelInfo, client.ModelStatus),
    (schemas.VersionInfo, client.VersionInfo),
    (schemas.Versions, client.Versions),
]
CLIENT_ONLY = {"raw"}  # ModelStatus keeps the whole answer too


def shape(annotation: Any) -> Any:
    """A comparable description of a type: its kind, whether it may be null, and its items' shapes."""
    if get_origin(annotation) is Annotated:
        return shape(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        inner = shape(kinds[0]) if len(kinds) == 1 else tuple(shape(k) for k in kinds)
        return ("nullable", inner) if len(kinds) < len(get_args(annotation)) else inner
    origin = get_origin(annotation)
    if origin in (list, tuple, dict):
        return (origin.__name__, *(shape(a) for a in get_args(annotation) if a is not Ellipsis))
    if annotation is typing.Any:
        return "any"
    return annotation.__name__  # int, str, ..., or a result class (compared by name)


@pytest.mark.parametrize(("schema", "result"), PAIRS, ids=[result.__name__ for _, result in PAIRS])
def test_the_clients_result_types_follow_the_http_schemas_field_by_field(schema: Any, result: Any) -> None:
    served = {name: shape(field.annotation) for name, field in schema.model_fields.items()}
    hints = get_type_hints(result)
    # A numpy field names the JSON shape it is parsed from (results.BatchPrediction).
    fields = {name: f for name, f in result.__dataclass_fields__.items() if name not in CLIENT_ONLY}
    parsed = {name: shape(f.metadata.get("json", hints[name])) for name, f in fields.items()}
    assert parsed.keys() == served.keys(), f"fields only served: {served.keys() - parsed.keys()}, " \
                                           f"only in the client: {parsed.keys() - served.keys()}"  # fmt: skip
    mismatched = {name: (served[name], parsed[name]) for name in served if served[name] != parsed[name]}
    assert not mismatched, f"(schema, client) types differ: {mismatched}"
