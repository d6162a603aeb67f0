"""Model export and import under the deployment's Redis ACLs: the API user may export, not import; the admin may."""

# ruff: noqa: F811  (the fixtures imported from tests.test_redis_acl are parameters here)

from __future__ import annotations

from digitstream.learner import DeltaRuleLearner, HyperParameters
from digitstream.model_file import model_file_bytes, read_model_file
from digitstream.store import list_versions
from digitstream.transfer import export_model, import_model
from tests.service_support import LiveServer, snapshot_writer
from tests.test_redis_acl import KEYS, AclRedis, acl_redis, clean, redis7, role_settings  # noqa: F401


def test_the_api_user_exports_but_its_import_is_a_clear_403_and_the_admin_imports(clean: AclRedis) -> None:
    admin = clean.client("admin")
    snapshot_writer(admin, role_settings(clean, "admin"))(DeltaRuleLearner(HyperParameters.for_rule("softmax")))
    server = LiveServer(role_settings(clean, "api")).start()
    try:
        server.wait_for_version(1)
        exported = server.get("/models/digitstream/export")
        assert exported.status_code == 200, exported.text
        file = exported.content
        assert read_model_file(file).meta["version"] == 1
        answer = server.post("/models/digitstream/import", content=file,
                             headers={"content-type": "application/octet-stream"})  # fmt: skip
        assert answer.status_code == 403 and "digitstream models import" in answer.json()["detail"], answer.text
        assert list_versions(admin, KEYS) == [1] and admin.get(KEYS.lease) == b"test-writer"  # nothing written or taken
        assert import_model(admin, KEYS, read_model_file(file), keep=10) == 2
        server.wait_for_version(2)
        assert model_file_bytes(export_model(admin, KEYS, 2)) != b""
    finally:
        server.stop()
        admin.close()
