"""examples/: the notebook runs top to bottom in a real Jupyter kernel, and the script works, against a
real worker (subprocess), a real uvicorn service and a real redis-server."""

# ruff: noqa: F811  (the fixtures imported from tests.service_support are parameters here)

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from digitstream.settings import Settings
from tests.service_support import LiveServer, make_app  # noqa: F401
from tests.worker_support import WorkerProcess, publish, wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DIGITS = sorted((EXAMPLES / "digits").glob("*.png"))


@pytest.fixture
def demo(
    make_app: Callable[..., LiveServer],
    make_settings: Callable[..., Settings],
    redis_url: str,
    redis_client: redis.Redis,
    mnist_train: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> Iterator[tuple[LiveServer, Settings]]:
    """What `digitstream demo` runs: a worker learning 3,000 MNIST samples and the service in front of it."""
    settings = make_settings()
    images, labels = mnist_train
    publish(redis_client, settings.keys.samples, images[:3000], labels[:3000])
    worker = WorkerProcess(tmp_path / "worker.log", env={"DIGITSTREAM_REDIS_URL": redis_url})
    try:
        server = make_app()
        wait_for(lambda: server.get("/model").status_code == 200 and server.get("/model").json()["samples_learned"]
                 == 3000, timeout=60, what=f"the model of 3,000 samples\n{worker.log()}")  # fmt: skip
        yield server, settings
    finally:
        worker.terminate()


def test_the_notebook_runs_in_a_real_kernel_and_its_feedback_is_learned(
    demo: tuple[LiveServer, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    server, _ = demo
    monkeypatch.setenv("DIGITSTREAM_URL", server.url)  # the kernel inherits this process's environment
    monkeypatch.setenv("DIGITSTREAM_EXAMPLES", str(EXAMPLES / "digits"))
    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert all(f"{path.name:>8}  ->  " in text for path in DIGITS), text
    assert any("image/png" in out.get("data", {}) for out in outputs), "the learning curve is drawn"
    wait_for(lambda: server.get("/model").json()["samples_learned"] == 3001, timeout=30,
             what="the notebook's feedback to be learned")  # fmt: skip


def test_the_script_predicts_a_folder_and_teaches_the_true_labels(
    demo: tuple[LiveServer, Settings], redis_client: redis.Redis
) -> None:
    server, settings = demo
    env = {**os.environ, "DIGITSTREAM_URL": server.url}
    script = [sys.executable, str(EXAMPLES / "predict_folder.py"), str(EXAMPLES / "digits"), "--teach"]
    done = subprocess.run(script, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(DIGITS) + 1 and lines[-1].endswith("samples)") and " of 8 right" in lines[-1]
    wait_for(lambda: server.get("/model").json()["samples_learned"] == 3000 + len(DIGITS), timeout=30,
             what="every taught label to be learned")  # fmt: skip
    assert redis_client.xlen(settings.keys.samples) >= 3000 + len(DIGITS)
