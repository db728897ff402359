"""Batching settings chosen by measurement (#26): the sweep's winner recorded in `<artifacts>/tuning.json`,
read back exactly, refused when malformed, and applied by `tritonize repo --tune` to the models it
names (the others keep their spec's settings); `repo --queue-policy` turns the overload policy on (#24)."""
import json
import shutil

import pytest

from tritonize.artifacts import TUNING_FILE
from tritonize.cli import main
from tritonize.model_repository.config import parse_pbtxt
from tritonize.model_repository.tuning import BatchingSettings, Tuning, apply_tuning, read_tunings, record_tuning
from tritonize.model_repository.writer import build_repository
from tritonize.models import get_spec

TUNED = BatchingSettings(max_queue_delay_us=150, instance_count=2, preferred_batch_sizes=(4,), max_batch_size=16)


def _tuning(model="mlp", settings=TUNED):
    return Tuning(model=model, settings=settings, measured="concurrency 1, 8, 32 over http-lean", throughput_rps=1234.5)


def test_a_recorded_tuning_reads_back_and_keeps_the_other_models(tmp_path):
    path = tmp_path / TUNING_FILE
    record_tuning(path, _tuning("cnn", BatchingSettings(0, 1, (), 64)))
    record_tuning(path, _tuning())
    record_tuning(path, _tuning())  # a second sweep of a model replaces its entry
    assert read_tunings(path) == {"cnn": _tuning("cnn", BatchingSettings(0, 1, (), 64)), "mlp": _tuning()}
    assert [p.name for p in tmp_path.iterdir()] == [TUNING_FILE]  # no temporary file left


def test_applying_a_tuning_replaces_only_the_batching_hints():
    spec = get_spec("mlp")
    tuned = apply_tuning(spec, _tuning())
    assert (tuned.serving.max_queue_delay_us, tuned.serving.instance_count, tuned.serving.preferred_batch_sizes,
            tuned.serving.max_batch_size) == (150, 2, (4,), 16)
    assert tuned.serving.ort_threads == spec.serving.ort_threads and tuned.fingerprint() == spec.fingerprint()
    assert apply_tuning(spec, None) is spec
    with pytest.raises(ValueError, match="tuning for model 'cnn' applied to 'mlp'"):
        apply_tuning(spec, _tuning("cnn"))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format=9), "expected a tuning file of format 1"),
    (lambda d: d["models"]["mlp"].pop("measured"), "expected an object with settings, measured and throughput_rps"),
    (lambda d: d["models"]["mlp"]["settings"].update(instance_count=0), "instance_count expects an integer >= 1, got 0"),
    (lambda d: d["models"]["mlp"]["settings"].update(preferred_batch_sizes=[32]),
     r"preferred_batch_sizes expects a tuple of integers in \[1, max_batch_size 16\], got \(32,\)"),
    (lambda d: d["models"]["mlp"]["settings"].update(workers=3), "settings expects exactly"),
    (lambda d: d["models"]["mlp"].update(throughput_rps="fast"), "throughput_rps a number"),
])
def test_a_malformed_tuning_file_is_refused_naming_what_is_wrong(tmp_path, edit, message):
    path = record_tuning(tmp_path / TUNING_FILE, _tuning())
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        read_tunings(path)


def test_a_missing_or_unreadable_tuning_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ValueError, match=r"does not exist \(make one with `tritonize bench --sweep MODEL`"):
        read_tunings(tmp_path / TUNING_FILE)
    (tmp_path / TUNING_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="expected a tuning file \\(JSON\\)"):
        read_tunings(tmp_path / TUNING_FILE)


def _config(repo, model):
    return parse_pbtxt((repo / model / "config.pbtxt").read_text())


def test_repo_tune_builds_the_tuned_models_with_their_settings(artifacts, tmp_path, capsys):
    root = tmp_path / "artifacts"
    shutil.copytree(artifacts, root)
    record_tuning(root / TUNING_FILE, _tuning())
    out = tmp_path / "repo"
    assert main(["repo", "mlp", "cnn", "--artifacts", str(root), "--out", str(out), "--tune"]) == 0
    mlp, cnn = _config(out, "mlp"), _config(out, "cnn")
    assert (mlp.dynamic_batching.max_queue_delay_microseconds, mlp.instance_group[0].count,
            list(mlp.dynamic_batching.preferred_batch_size), mlp.max_batch_size) == (150, 2, [4], 16)
    spec = get_spec("cnn").serving  # not in the tuning file: the spec's settings
    assert (cnn.max_batch_size, list(cnn.dynamic_batching.preferred_batch_size)) == (
        spec.max_batch_size, list(spec.preferred_batch_sizes))
    index = json.loads((out / "repository.json").read_text())["models"]
    assert index["mlp"]["tuning"] == _tuning().measured and "tuning" not in index["cnn"]
    assert "tuned" in capsys.readouterr().out
    # A tuning file of other models only is a mistake worth a message, not a silent no-op.
    assert main(["repo", "cnn", "--artifacts", str(root), "--out", str(tmp_path / "r2"), "--tune"]) == 2
    assert "the tuning file has no model of this repository (it tuned mlp" in capsys.readouterr().err
    assert main(["repo", "mlp", "--artifacts", str(root), "--out", str(tmp_path / "r3"),
                 "--tune", str(tmp_path / "none.json")]) == 2
    assert "none.json does not exist" in capsys.readouterr().err


def test_tunings_are_for_the_cpu_target(artifacts, tmp_path):
    with pytest.raises(ValueError, match="tunings are measured on the CPU server and apply to the cpu target"):
        build_repository([get_spec("mlp")], artifacts, tmp_path / "repo", "gpu", tunings={"mlp": _tuning()})
    assert not (tmp_path / "repo").exists()


def test_repo_queue_policy_bounds_every_model_queue(artifacts, tmp_path):
    out = tmp_path / "repo"
    assert main(["repo", "mlp", "minilm", "--artifacts", str(artifacts), "--out", str(out), "--queue-policy"]) == 0
    for model in ("mlp", "minilm"):  # the text ensemble's tokenizer has no queue: it does not batch
        assert _config(out, model).dynamic_batching.HasField("default_queue_policy"), model
    assert main(["repo", "mlp", "--artifacts", str(artifacts), "--out", str(tmp_path / "plain")]) == 0
    assert not _config(tmp_path / "plain", "mlp").dynamic_batching.HasField("default_queue_policy")
