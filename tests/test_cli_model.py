"""``digitstream predict | status | versions | pin | unpin`` as subprocesses against a live service."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitstream.clients.embedded_redis import free_port
from digitstream.learner import DeltaRuleLearner
from tests import service_support
from tests.cli_support import assert_one_line_error, cli_env, run_cli
from tests.service_support import LiveServer, train

live = service_support.live
make_app = service_support.make_app
trained = service_support.trained
write = service_support.write


@pytest.fixture
def pngs(tmp_path: Path, mnist_test: tuple[np.ndarray, np.ndarray]) -> list[Path]:
    paths = []
    for i in range(3):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(mnist_test[0][i].reshape(28, 28), "L").save(path)
        paths.append(path)
    return paths


# --- predict ---------------------------------------------------------------------------------


def test_predict_prints_each_digit_and_a_bar_chart_of_probabilities(
    live: LiveServer, pngs: list[Path], trained: DeltaRuleLearner, mnist_test: tuple
) -> None:
    done = run_cli("predict", str(pngs[0]), "--as-is", "--url", live.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    digit = trained.predict_one(mnist_test[0][0])
    assert lines[0].startswith(f"{pngs[0]}: {digit}   (model version 1, {trained.n_samples:,} samples learned)")
    bars = lines[1:]
    assert [line.split()[0] for line in bars] == [str(d) for d in range(10)]
    assert bars[digit].endswith("<") and sum(line.endswith("<") for line in bars) == 1
    assert "█" in bars[digit]  # a UTF-8 stdout gets block characters


def test_predict_json_gives_machines_every_field_for_every_image(
    live: LiveServer, pngs: list[Path], trained: DeltaRuleLearner, mnist_test: tuple
) -> None:
    done = run_cli("predict", *map(str, pngs), "--as-is", "--url", live.url, "--json")
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert [a["image"] for a in answers] == [str(p) for p in pngs]
    assert [a["digit"] for a in answers] == trained.predict_many(mnist_test[0][:3]).tolist()
    for answer in answers:
        assert len(answer["probabilities"]) == 10
        assert answer["model_version"] == 1 and len(answer["prediction_id"]) == 32


def test_predict_uploads_files_by_default_for_the_service_to_prepare(
    live: LiveServer, tmp_path: Path, mnist_test: tuple
) -> None:
    big = Image.fromarray(255 - mnist_test[0][0].reshape(28, 28), "L").resize((90, 60))  # dark ink, any shape
    big.save(tmp_path / "photo.png")
    done = run_cli("predict", str(tmp_path / "photo.png"), "--url", live.url, "--json")
    assert done.returncode == 0, done.stderr
    (answer,) = json.loads(done.stdout)
    direct = live.post("/predict/image", files={"file": ("photo.png", (tmp_path / "photo.png").read_bytes())}).json()
    assert answer["probabilities"] == direct["probabilities"]


def test_predict_as_is_reads_dark_ink_on_white_like_mnist(live: LiveServer, tmp_path: Path, mnist_test: tuple) -> None:
    Image.fromarray(255 - mnist_test[0][0].reshape(28, 28), "L").save(tmp_path / "paper.png")
    Image.fromarray(mnist_test[0][0].reshape(28, 28), "L").save(tmp_path / "mnist.png")
    paths = [str(tmp_path / "paper.png"), str(tmp_path / "mnist.png")]
    first, second = json.loads(run_cli("predict", *paths, "--as-is", "--url", live.url, "--json").stdout)
    assert first["probabilities"] == second["probabilities"]


def test_predict_errors_exit_2_for_bad_files_and_1_when_the_service_fails(
    make_app: Callable[..., LiveServer], pngs: list[Path], tmp_path: Path
) -> None:
    missing = run_cli("predict", str(tmp_path / "none.png"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    assert_one_line_error(run_cli("predict", str(tmp_path / "broken.png")), 2, "broken.png", "not a readable image")
    Image.new("L", (30, 20)).save(tmp_path / "wide.png")
    wide = run_cli("predict", str(tmp_path / "wide.png"), "--as-is")
    assert_one_line_error(wide, 2, "wide.png: image is 30x20 pixels")
    down = f"http://127.0.0.1:{free_port()}"
    unreachable = run_cli("predict", str(pngs[0]), "--url", down)
    assert_one_line_error(unreachable, 1, f"cannot reach the digitstream service at {down}")
    empty = make_app()  # no snapshot yet
    assert_one_line_error(run_cli("predict", str(pngs[0]), "--url", empty.url), 1, "service unavailable", "retry in")


def test_an_image_the_service_refuses_exits_1_with_its_message(live: LiveServer, tmp_path: Path) -> None:
    Image.new("L", (30, 20), color=255).save(tmp_path / "blank.png")
    done = run_cli("predict", str(tmp_path / "blank.png"), "--url", live.url)
    assert_one_line_error(done, 1, "(422)", "blank")


# --- status, versions, pin, unpin ------------------------------------------------------------


def test_status_shows_version_samples_accuracy_worker_and_lag(live: LiveServer, trained: DeltaRuleLearner) -> None:
    done = run_cli("status", "--url", live.url)
    assert done.returncode == 0, done.stderr
    assert "digitstream (softmax), version 1" in done.stdout
    assert f"learned    {trained.n_samples:,} samples" in done.stdout
    assert "accuracy   85.00% prequential, last 1,000: 90.00%" in done.stdout
    assert "worker     none reporting" in done.stdout
    assert "lag" in done.stdout
    as_json = json.loads(run_cli("status", "--url", live.url, "--json").stdout)
    assert (as_json["version"], as_json["samples_learned"]) == (1, trained.n_samples)


def test_the_service_url_comes_from_the_settings_when_not_given(live: LiveServer) -> None:
    done = run_cli("status", "--json", env=cli_env(DIGITSTREAM_PORT=str(live.port)))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == 1
    bare = run_cli("status", "--json", "--url", f"127.0.0.1:{live.port}")  # the scheme may be left out
    assert bare.returncode == 0, bare.stderr


@pytest.mark.parametrize("command", ["status", "versions"])
def test_digitstream_url_points_every_client_command_at_the_service(live: LiveServer, command: str) -> None:
    done = run_cli(command, "--json", env=cli_env(DIGITSTREAM_URL=live.url, DIGITSTREAM_PORT="1"))
    assert done.returncode == 0, done.stderr
    elsewhere = run_cli(command, "--json", "--url", "http://127.0.0.1:1", env=cli_env(DIGITSTREAM_URL=live.url))
    assert elsewhere.returncode == 1, "--url wins over DIGITSTREAM_URL"


def test_versions_pin_and_unpin_roll_back_and_forward(
    live: LiveServer, write: Callable[..., int], mnist_train: tuple
) -> None:
    write(train(*mnist_train, 200))
    live.wait_for_version(2)
    table = run_cli("versions", "--url", live.url)
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()
    assert rows[0].split() == ["version", "samples", "accuracy", "age"]
    assert rows[1].split()[:3] == ["1", "3,000", "85.00%"] and rows[2].split()[-2:] == ["served", "latest"]
    pinned = run_cli("pin", "1", "--url", live.url)
    assert pinned.returncode == 0 and pinned.stdout.startswith("pinned: serving version 1 (3,000 samples learned)")
    versions = json.loads(run_cli("versions", "--url", live.url, "--json").stdout)
    assert (versions["pinned"], versions["served"], versions["latest"]) == (1, 1, 2)
    assert json.loads(run_cli("status", "--url", live.url, "--json").stdout)["pinned"] is True
    unpinned = run_cli("unpin", "--url", live.url, "--json")
    assert unpinned.returncode == 0
    assert (json.loads(unpinned.stdout)["version"], json.loads(unpinned.stdout)["pinned"]) == (2, False)


def test_pinning_an_unknown_version_exits_1_with_the_servers_message(live: LiveServer) -> None:
    assert_one_line_error(run_cli("pin", "42", "--url", live.url), 1, "(404)", "42")
    usage = run_cli("pin", "zero", "--url", live.url)
    assert usage.returncode == 2 and "'zero' is not a valid integer" in usage.stderr


def test_pin_needs_the_api_key_when_the_service_has_one(
    make_app: Callable[..., LiveServer], write: Callable[..., int], trained: DeltaRuleLearner
) -> None:
    write(trained)
    server = make_app(api_key="k3y")
    server.wait_for_version(1)
    refused = run_cli("pin", "1", "--url", server.url)
    assert_one_line_error(refused, 1, "the service refused POST", "(401)")
    assert run_cli("pin", "1", "--url", server.url, "--api-key", "k3y").returncode == 0
    from_env = run_cli("unpin", "--url", server.url, env=cli_env(DIGITSTREAM_API_KEY="k3y"))
    assert from_env.returncode == 0, from_env.stderr


def test_model_commands_exit_1_when_the_service_is_unreachable() -> None:
    down = f"http://127.0.0.1:{free_port()}"
    for command in (["status"], ["versions"], ["pin", "1"], ["unpin"]):
        assert_one_line_error(run_cli(*command, "--url", down), 1, "cannot reach the digitstream service", "--url")


def test_an_url_that_is_not_http_is_a_usage_error() -> None:
    assert_one_line_error(run_cli("status", "--url", "ftp://example.invalid/"), 2, "must be an http:// or https:// URL")
