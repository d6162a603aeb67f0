"""``digitstream publish``, run as a subprocess: every input format, selection options, and error exits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from digitstream.clients.embedded_redis import free_port
from digitstream.clients.sources import epochs
from digitstream.datasets import write_idx_images, write_idx_labels
from digitstream.protocol import Keys, decode_entries
from tests.cli_support import assert_one_line_error, run_cli

KEYS = Keys.for_model()


def stream_contents(client: redis.Redis, keys: Keys = KEYS) -> tuple[np.ndarray, np.ndarray]:
    decoded = decode_entries(client.xrange(keys.samples))
    assert decoded.rejects == []
    return decoded.images, decoded.labels


def publish(redis_url: str, *args: str) -> dict:
    """Run publish with a JSON summary, expecting success."""
    done = run_cli("publish", *args, "--redis-url", redis_url, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def sample(mnist_train: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return mnist_train[0][:30], mnist_train[1][:30]


# --- every input format ----------------------------------------------------------------------


def test_publishing_an_idx_directory_sends_its_samples_in_order(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = sample
    write_idx_images(tmp_path / "train-images-idx3-ubyte", images)  # raw, not gzipped
    write_idx_labels(tmp_path / "train-labels-idx1-ubyte", labels)
    summary = publish(redis_url, str(tmp_path))
    assert (summary["sent"], summary["rejected"], summary["stream"]) == (30, 0, "{digitstream}:samples")
    sent_images, sent_labels = stream_contents(redis_client)
    np.testing.assert_array_equal(sent_images, images)
    np.testing.assert_array_equal(sent_labels, labels)


def test_offset_and_limit_select_a_slice_of_the_gzipped_shared_mnist(
    redis_url: str, redis_client: redis.Redis, mnist_dir: Path, mnist_train: tuple[np.ndarray, np.ndarray]
) -> None:
    summary = publish(redis_url, str(mnist_dir), "--offset", "100", "--limit", "250")
    assert summary["sent"] == 250
    sent_images, sent_labels = stream_contents(redis_client)
    np.testing.assert_array_equal(sent_images, mnist_train[0][100:350])
    np.testing.assert_array_equal(sent_labels, mnist_train[1][100:350])


def test_the_test_split_can_be_chosen(
    redis_url: str, redis_client: redis.Redis, mnist_dir: Path, mnist_test: tuple
) -> None:
    publish(redis_url, str(mnist_dir), "--split", "test", "--limit", "20")
    np.testing.assert_array_equal(stream_contents(redis_client)[1], mnist_test[1][:20])


def test_publishing_an_npz(redis_url: str, redis_client: redis.Redis, tmp_path: Path, sample: tuple) -> None:
    images, labels = sample
    np.savez_compressed(tmp_path / "d.npz", x_train=images.reshape(-1, 28, 28), y_train=labels)
    assert publish(redis_url, str(tmp_path / "d.npz"))["sent"] == 30
    np.testing.assert_array_equal(stream_contents(redis_client)[0], images)


def test_publishing_a_csv_sends_the_good_rows_and_lists_the_bad_ones_with_reasons(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, sample: tuple
) -> None:
    images, labels = sample
    rows = [f"{label}," + ",".join(map(str, image)) for image, label in zip(images[:5], labels[:5], strict=True)]
    rows.insert(2, "7," + ",".join(["300"] * 784))  # readable, but breaks the protocol
    rows.insert(4, "1,2,3")  # not even a row
    rows.insert(0, "label," + ",".join(f"p{i}" for i in range(784)))
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    summary = publish(redis_url, str(tmp_path / "d.csv"))
    assert (summary["sent"], summary["rejected"]) == (5, 2)
    assert sorted(summary["rejections"], key=lambda r: r["examples"]) == [
        {"reason": "pixels: values must be in 0..255", "count": 1, "examples": ["d.csv line 4"]},
        {"reason": "expected 785 values (a label then 784 pixels), got 3", "count": 1, "examples": ["d.csv line 6"]},
    ]
    np.testing.assert_array_equal(stream_contents(redis_client)[0], images[:5])


def test_publishing_a_folder_of_pngs_labelled_by_sub_folder(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, sample: tuple
) -> None:
    images, labels = sample
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (tmp_path / str(label)).mkdir(exist_ok=True)
        Image.fromarray(image.reshape(28, 28), "L").save(tmp_path / str(label) / f"{i:02d}.png")
    assert publish(redis_url, str(tmp_path))["sent"] == 30
    sent_images, sent_labels = stream_contents(redis_client)
    order = np.lexsort((np.arange(30), labels))
    np.testing.assert_array_equal(sent_images, images[order])
    np.testing.assert_array_equal(sent_labels, labels[order])


def entry_sizes(client: redis.Redis) -> list[int]:
    """The samples in each stream entry (classic: 1; packed: the length of ``labels``)."""
    return [len(fields.get(b"labels", b"x")) for _, fields in client.xrange(KEYS.samples)]


def test_archives_go_as_packed_entries_by_default_and_pack_chooses_the_size(
    redis_url: str, redis_client: redis.Redis, mnist_dir: Path, mnist_train: tuple[np.ndarray, np.ndarray]
) -> None:
    assert publish(redis_url, str(mnist_dir), "--limit", "2500")["sent"] == 2500
    assert entry_sizes(redis_client) == [1000, 1000, 500]
    redis_client.delete(KEYS.samples)
    publish(redis_url, str(mnist_dir), "--limit", "250", "--pack", "100")
    assert entry_sizes(redis_client) == [100, 100, 50]
    sent_images, sent_labels = stream_contents(redis_client)
    np.testing.assert_array_equal(sent_images, mnist_train[0][:250].reshape(250, 784))
    np.testing.assert_array_equal(sent_labels, mnist_train[1][:250])
    redis_client.delete(KEYS.samples)
    publish(redis_url, str(mnist_dir), "--limit", "5", "--pack", "1")
    assert entry_sizes(redis_client) == [1] * 5 and b"label" in redis_client.xrange(KEYS.samples)[0][1]


def test_image_folders_and_paced_feeds_stay_classic(
    redis_url: str, redis_client: redis.Redis, mnist_dir: Path, tmp_path: Path, sample: tuple
) -> None:
    images, labels = sample
    for i, (image, label) in enumerate(zip(images[:5], labels[:5], strict=True)):
        (tmp_path / str(label)).mkdir(exist_ok=True)
        Image.fromarray(image.reshape(28, 28), "L").save(tmp_path / str(label) / f"{i:02d}.png")
    publish(redis_url, str(tmp_path))
    publish(redis_url, str(mnist_dir), "--limit", "5", "--rate", "1000/s")
    assert entry_sizes(redis_client) == [1] * 10


def test_the_human_summary_names_the_stream_and_the_count(redis_url: str, mnist_dir: Path) -> None:
    done = run_cli("publish", str(mnist_dir), "--limit", "10", "--redis-url", redis_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"sent 10 samples to {{digitstream}}:samples at {redis_url}")
    assert "10/10 100%" in done.stderr  # the final state of the progress bar


def test_repeat_and_shuffle_send_reproducible_permutations(
    redis_url: str, redis_client: redis.Redis, mnist_dir: Path, mnist_train: tuple
) -> None:
    assert publish(redis_url, str(mnist_dir), "--limit", "40", "--epochs", "3", "--shuffle", "11")["sent"] == 120
    sent = stream_contents(redis_client)[0]
    expected_order = np.concatenate(list(epochs(len(mnist_train[1]), limit=40, repeat=3, shuffle=11)))
    np.testing.assert_array_equal(sent, mnist_train[0][expected_order])
    assert not np.array_equal(sent[:40], sent[40:80])


def test_a_rate_limit_keeps_publishing_at_or_below_the_rate(
    redis_url: str, redis_client: redis.Redis, mnist_dir: Path
) -> None:
    summary = publish(redis_url, str(mnist_dir), "--limit", "120", "--rate", "200/s", "--model", "paced")
    assert redis_client.xlen(Keys.for_model("paced").samples) == 120
    assert summary["seconds"] >= (120 - 10) / 200  # the first batch of 10 may go at once


# --- refusals and exit codes -----------------------------------------------------------------


def test_a_missing_path_is_a_usage_error(redis_url: str, tmp_path: Path) -> None:
    done = run_cli("publish", str(tmp_path / "nope"), "--redis-url", redis_url)
    assert done.returncode == 2
    assert "does not exist" in done.stderr


def test_a_corrupt_file_is_an_input_error_naming_it(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"\x00garbage")
    assert_one_line_error(run_cli("publish", str(tmp_path / "bad.npz"), "--redis-url", redis_url), 2, "bad.npz", ".npz")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08broken")
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08broken")
    done = run_cli("publish", str(tmp_path), "--redis-url", redis_url)
    assert_one_line_error(done, 2, "train-images-idx3-ubyte.gz", "corrupt or truncated gzip")
    assert redis_client.xlen(KEYS.samples) == 0


def test_an_unknown_kind_of_file_is_refused(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    done = run_cli("publish", str(tmp_path / "notes.txt"), "--redis-url", redis_url)
    assert_one_line_error(done, 2, "unknown source type")


def test_an_unreachable_redis_is_a_runtime_failure_and_hides_the_password(mnist_dir: Path) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    done = run_cli("publish", str(mnist_dir), "--limit", "5", "--redis-url", url)
    assert_one_line_error(done, 1, "cannot connect to Redis at redis://:***@127.0.0.1", "--redis-url")
    assert "s3cret" not in done.stderr


def test_strict_mode_sends_nothing_when_any_sample_is_invalid(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    images = np.zeros((10, 784), dtype=np.int64)
    images[6, 3] = -4
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(10))
    done = run_cli("publish", str(tmp_path / "d.npz"), "--strict", "--redis-url", redis_url)
    assert_one_line_error(done, 2, "1 invalid samples", "d.npz[6]: pixels: values must be in 0..255")
    assert redis_client.xlen(KEYS.samples) == 0


def test_a_source_with_no_valid_sample_exits_2_after_its_summary(redis_url: str, tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 784)), labels=np.array([10, 11, 12]))
    done = run_cli("publish", str(tmp_path / "d.npz"), "--redis-url", redis_url, "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["rejected"] == 3
    assert "no valid samples" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--offset", "99999999"], "is past the end of the source"),
        (["--rate", "fast"], "is not a rate like 200 or 200/s"),
        (["--rate", "0"], "must be more than 0"),
        (["--limit", "-1"], "--limit"),
        (["--model", "bad model!"], "model_name"),
        (["--pack", "2000"], "above the pack_max setting (1024)"),
    ],
)
def test_invalid_options_exit_2_and_say_which(redis_url: str, mnist_dir: Path, args: list[str], message: str) -> None:
    done = run_cli("publish", str(mnist_dir), *args, "--redis-url", redis_url)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
