"""`roll`'s steps without a server: which replica failed at which step, and the rollback's pinned config.

The replicas are stand-ins for deploy.rollout._Replica (its admin calls go through TritonAdmin, which
tests/serving/test_admin.py runs against a real server; tests/deploy/test_rollout.py runs it all on two).
"""
import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from tritonize.deploy import rollout as rollout_module
from tritonize.serving.admin import AdminCallError

MODEL = "mlp"


class FakeReplica:
    """Serves version 1 with a `latest 1` config; `fail_load` makes the switch to version 2 fail as
    TritonAdmin.load fails."""
    made: dict = {}
    fail_load: set = set()

    def __init__(self, url, admin_key, model):
        self.url, self.model, self.versions, self.loads = url, model, (1,), []
        FakeReplica.made[url] = self

    def ready_versions(self):
        return self.versions

    def config(self):
        config = mc.ModelConfig(name=self.model, max_batch_size=8)
        config.version_policy.latest.num_versions = 1
        return config

    def load(self, timeout_s, config=None):
        self.loads.append(config)
        if config is not None:
            self.versions = tuple(config.version_policy.specific.versions)
        elif self.url in FakeReplica.fail_load:
            raise AdminCallError(f"load of model {self.model!r} on {self.url} (gRPC): [StatusCode.INTERNAL] boom",
                                 "[StatusCode.INTERNAL] boom")
        else:
            self.versions = (2,)

    def unload(self):
        self.versions = ()

    def wait_ready(self, version, timeout_s):
        return version in self.versions

    def infer(self, version, inputs, outputs):
        return {"y": inputs["x"] * 2}

    def close(self):
        pass


@pytest.fixture
def fake(monkeypatch):
    FakeReplica.made, FakeReplica.fail_load = {}, set()
    monkeypatch.setattr(rollout_module, "_Replica", FakeReplica)
    return FakeReplica


def _roll(urls):
    inputs = {"x": np.ones((2, 3), np.float32)}
    return rollout_module.roll(MODEL, 2, urls, "k" * 20, lambda x: {"y": x["x"] * 2}, inputs, atol=1e-6, rtol=0.0)


def test_every_replica_switches(fake):
    result = _roll(["a:1", "b:1"])
    assert result.ok and [(r.before, r.after, r.check, r.ok) for r in result.replicas] == \
        [((1,), (2,), "ok (2 rows)", True)] * 2


def test_a_failed_load_names_the_replica_and_step_and_pins_the_old_version_everywhere(fake):
    fake.fail_load = {"b:1"}
    result = _roll(["a:1", "b:1", "c:1"])
    # The admin error's detail alone: the line names the replica and the step itself.
    assert result.failure == f"replica b:1: {MODEL} version 2: load failed: [StatusCode.INTERNAL] boom"
    assert [(r.after, r.check) for r in result.replicas] == \
        [((1,), "rolled back"), ((1,), "load failed: [StatusCode.INTERNAL] boom"), ((1,), "not reached")]
    for url in ("a:1", "b:1"):
        pinned = fake.made[url].loads[-1]
        # The config read before the switch, its version policy replaced by the versions served before.
        assert pinned.version_policy.WhichOneof("policy_choice") == "specific"
        assert list(pinned.version_policy.specific.versions) == [1] and pinned.max_batch_size == 8
    assert fake.made["c:1"].loads == []


@pytest.mark.parametrize("content", [b"not a model", b""])
def test_a_model_file_onnx_runtime_cannot_load_is_refused_before_publishing(tmp_path, monkeypatch, capsys, content):
    """`tritonize rollout` with a broken model.onnx: exit 2 and one line naming the file, no traceback,
    and no call to the store or the replicas (neither exists here)."""
    from tritonize.cli import main
    from tritonize.serving.admin import new_admin_key

    version = tmp_path / "repo" / "m" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(content)
    monkeypatch.setenv("TRITONIZE_ADMIN_KEY", new_admin_key())
    assert main(["rollout", "m", "--repo", str(tmp_path / "repo"), "--store", "s3://nowhere/prefix",
                 "--endpoints", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"expected an ONNX model that ONNX Runtime can load at {version / 'model.onnx'}" in err.replace("\n", "")
    assert "nothing was published" in err.replace("\n", "")
