"""Every anonymous request has a bounded cost: crafted uploads and maximum JSON batches, measured on a real server.

The API runs as ``digitstream serve`` in its own process on a real redis-server; its peak resident
memory is read from ``/proc/<pid>/status`` (``VmHWM``, reset through ``clear_refs`` before each
measurement) and compared with its resident size after a warm-up. Latency belongs to
``benchmarks/uploads.py`` (``digitstream bench``), not here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from digitstream.benchmarks.hostile_images import Upload, hostile_uploads, jpeg_declaring, png
from digitstream.benchmarks.uploads import ProcessMeter, json_batches, post_upload, served, warm_up
from digitstream.service.imaging import MAX_IMAGE_PIXELS, PROGRESSIVE_SAMPLES

UPLOAD_BUDGET_MB = 64.0
BATCH_BUDGET_MB = 400.0

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ProcessMeter]]:
    with served(tmp_path_factory.mktemp("uploads")) as running:
        yield running


@pytest.fixture(scope="module")
def crafted() -> list[Upload]:
    """Every crafted upload at the largest size accepted, and the same just over it."""
    return [*hostile_uploads(MAX_IMAGE_PIXELS), *hostile_uploads(MAX_IMAGE_PIXELS + 400_000, refused_formats=False)]


def expected_status(upload: Upload) -> set[int]:
    if not upload.accepted or upload.pixels > MAX_IMAGE_PIXELS:
        return {413} if upload.pixels > MAX_IMAGE_PIXELS and upload.name.startswith(("PNG", "JPEG")) else {413, 422}
    components = 4 if "CMYK" in upload.name else 3 if "4:4:4" in upload.name else 0
    if "progressive" in upload.name and upload.pixels * components > PROGRESSIVE_SAMPLES:
        return {413}  # every coefficient is held while decoding: refused from the header
    return {422} if "truncated" in upload.name else {200}


def test_each_crafted_upload_costs_at_most_64_mb_of_peak_memory(
    service: tuple[str, ProcessMeter], crafted: list[Upload]
) -> None:
    url, meter = service
    with httpx.Client(base_url=url, timeout=120) as http:
        warm_up(http, crafted)
        baseline = meter.rss_mb()
        costs = {}
        for upload in crafted:
            meter.reset_peak()
            response = post_upload(http, upload)
            costs[upload.describe()] = meter.peak_mb() - baseline
            assert response.status_code in expected_status(upload), (upload.describe(), response.text)
            if response.status_code != 200:
                assert response.json()["detail"].startswith("file: "), response.text
    worst = max(costs, key=lambda name: costs[name])
    assert costs[worst] <= UPLOAD_BUDGET_MB, f"{worst}: {costs[worst]:.0f} MB over the warm-up RSS; all: {costs}"


def test_what_the_header_shows_too_large_is_refused_before_decoding(service: tuple[str, ProcessMeter]) -> None:
    url, meter = service
    side = 6_324  # 40 megapixels: the old limit, seconds of CPU and over 1 GB to decode
    declared = [Upload(f"PNG colour type {ct}", png(side, side, ct, 8, rows=8), "image/png", side, side)
                for ct in (0, 2, 3, 6)]  # fmt: skip
    declared.append(Upload("JPEG", jpeg_declaring(side, side), "image/jpeg", side, side))
    with httpx.Client(base_url=url, timeout=120) as http:
        for upload in declared:
            cpu = meter.cpu_seconds()
            response = post_upload(http, upload)
            assert response.status_code == 413, response.text
            assert response.json()["detail"] == (
                f"file: image too large ({side}x{side} pixels, limit {MAX_IMAGE_PIXELS:,}): "
                "send a smaller picture of the digit"
            )
            assert meter.cpu_seconds() - cpu < 0.5  # a header costs nothing measurable


def test_concurrent_uploads_get_a_decode_slot_or_503_with_retry_after(
    service: tuple[str, ProcessMeter], crafted: list[Upload]
) -> None:
    url, meter = service
    heavy = next(u for u in crafted if u.name == "PNG 16-bit RGBA")
    with httpx.Client(base_url=url, timeout=120) as http:
        warm_up(http, crafted)
    baseline = meter.rss_mb()
    meter.reset_peak()
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(16)

    def send() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            barrier.wait()
            answers.append(post_upload(http, heavy))

    threads = [threading.Thread(target=send) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    assert all(a.headers.get("retry-after") for a in answers if a.status_code == 503)
    extra = meter.peak_mb() - baseline
    assert extra <= 2 * UPLOAD_BUDGET_MB, f"16 concurrent uploads: {extra:.0f} MB"  # two decode slots


def test_sixteen_maximum_json_batches_at_once_cost_at_most_400_mb(tmp_path: Path) -> None:
    with served(tmp_path) as (url, meter):
        result = json_batches(url, meter, in_flight=16)
    assert set(result["statuses"]) <= {"200", "503"} and result["statuses"].get("200", 0) >= 1, result
    assert result["non_200_without_retry_after"] == 0, result
    assert result["extra_peak_mb"] <= BATCH_BUDGET_MB, result
