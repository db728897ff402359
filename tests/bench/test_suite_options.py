"""`tritonize bench` refuses, before any measuring, options that would only fail or be dropped at the
end of a run of minutes: a write-back without a sweep, a sweep of a model the run does not serve, a
write-back repository without the model's config, an SLO it cannot judge."""
from pathlib import Path

import pytest

from tritonize.bench.suite.options import Slo, SuiteOptions, check_options, check_results_root, parse_slo, parse_slos
from tritonize.bench.suite.sweep import BatchingSettings, write_back
from tritonize.cli import main
from tritonize.model_repository.config import parse_pbtxt
from tritonize.models.registry import UnknownModelError

MLP_CONFIG = 'name: "mlp"\nmax_batch_size: 64\ninstance_group { count: 1 kind: KIND_CPU }\n'


def _options(**kw) -> SuiteOptions:
    return SuiteOptions(**{"models": ["mlp", "cnn"], "artifacts": Path("unused"), **kw})


def _repo(tmp_path: Path, text: str = MLP_CONFIG) -> Path:
    (tmp_path / "mlp").mkdir()
    (tmp_path / "mlp" / "config.pbtxt").write_text(text)
    return tmp_path


def test_consistent_options_pass(tmp_path):
    check_options(_options())
    check_options(_options(sweep_model="cnn"))
    check_options(_options(sweep_model="mlp", sweep_write_back=_repo(tmp_path)))


@pytest.mark.parametrize("kw, message", [
    (dict(sweep_write_back=Path("repo")), "needs --sweep MODEL"),
    (dict(sweep_model="lstm"), "one of the models this run serves (mlp, cnn), got 'lstm'"),
    (dict(models=["cnn_fused"], sweep_model="cnn_fused"), "serves (none), got 'cnn_fused'"),
    (dict(sweep_model="cnn", served=False), "cannot go with --no-served"),
    (dict(duration_s=0.0), "seconds per load run > 0, got 0.0"),
    (dict(perf_analyzer=Path("/no/such/perf_analyzer")), "--perf-analyzer expects an executable perf_analyzer "
                                                         "binary, got '/no/such/perf_analyzer' (no such file)"),
    (dict(slos=(Slo("p99_ms", 5.0), Slo("p99_ms", 6.0))), "--slo takes each name once, got p99_ms more than once "
                                                          "(p99_ms=5, p99_ms=6)"),
    (dict(slos=(Slo("p95_ms", 5.0),)), "NAME one of p50_ms, p90_ms, p99_ms, min_throughput"),
    (dict(slos=(Slo("p50_ms", -1.0),)), "VALUE a positive number, got Slo(name='p50_ms', value=-1.0)"),
    (dict(protocols=("grpc", "udp")), "protocols must be among grpc, http, http-lean, got 'udp'"),
    (dict(grpc_levels=(1, 0)), "the grpc concurrency levels must be integers >= 1, got [1, 0]"),
    (dict(models=[]), "at least one model, got none"),
])
def test_inconsistent_options_are_refused(kw, message):
    with pytest.raises(ValueError) as e:
        check_options(_options(**kw))
    assert message in str(e.value)


def test_an_unknown_model_is_refused():
    with pytest.raises(UnknownModelError, match="nosuch"):
        check_options(_options(models=["mlp", "nosuch"]))


@pytest.mark.parametrize("text, message", [
    (None, "does not exist"),
    ("name: \"mlp\"\nmax_batch_size: 64\nbogus_field: 1\n", "not a valid Triton model config"),
    (MLP_CONFIG.replace('"mlp"', '"cnn"'), "configures model 'cnn', expected 'mlp'"),
    (MLP_CONFIG.replace("64", "0"), "max_batch_size 0 and 1 instance groups"),
    ('name: "mlp"\nmax_batch_size: 8\n', "max_batch_size 8 and 0 instance groups"),
])
def test_a_write_back_repository_without_a_usable_config_is_refused(tmp_path, text, message):
    repo = tmp_path if text is None else _repo(tmp_path, text)
    with pytest.raises(ValueError) as e:
        check_options(_options(sweep_model="mlp", sweep_write_back=repo))
    assert message in str(e.value)
    with pytest.raises(ValueError):
        write_back(repo, "mlp", BatchingSettings(max_queue_delay_us=100, instance_count=2, preferred_batch_sizes=(), max_batch_size=8))
    if text is not None:
        assert (repo / "mlp" / "config.pbtxt").read_text() == text  # left as it was
    assert not (repo / "mlp").exists() or [p.name for p in (repo / "mlp").iterdir()] == ["config.pbtxt"]


def test_write_back_adds_batching_to_a_config_without_it(tmp_path):
    path = write_back(_repo(tmp_path), "mlp", BatchingSettings(max_queue_delay_us=100, instance_count=2,
                                                               preferred_batch_sizes=(4,), max_batch_size=32))
    config = parse_pbtxt(path.read_text())
    assert config.dynamic_batching.max_queue_delay_microseconds == 100 and config.instance_group[0].count == 2
    assert config.max_batch_size == 32 and list(config.dynamic_batching.preferred_batch_size) == [4]


def test_the_command_line_fails_at_once_with_the_reason(tmp_path, capsys):
    assert main(["bench", "mlp", "--sweep", "mlp", "--write-back", str(tmp_path), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr()
    assert f"{tmp_path}/mlp/config.pbtxt does not exist" in err.out + err.err
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing written
    assert main(["bench", "mlp", "--perf-analyzer", str(tmp_path / "pa"), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr()
    assert f"--perf-analyzer expects an executable perf_analyzer binary, got '{tmp_path}/pa'" in err.out + err.err
    assert list(tmp_path.iterdir()) == []


def test_a_results_folder_that_cannot_be_written_is_refused(tmp_path):
    check_results_root(tmp_path / "new" / "results")
    assert list((tmp_path / "new" / "results").iterdir()) == []  # created, and the probe left nothing
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=f"--results expects a folder the report can be written to; {blocker}/r"):
        check_results_root(blocker / "r")


@pytest.mark.parametrize("text, slo", [
    ("p50_ms=5", Slo("p50_ms", 5.0)),
    ("p90_ms=0.75", Slo("p90_ms", 0.75)),
    (" p99_ms = 12 ", Slo("p99_ms", 12.0)),
    ("min_throughput=2000", Slo("min_throughput", 2000.0)),
])
def test_an_slo_is_a_name_and_a_positive_number(text, slo):
    assert parse_slo(text) == slo
    assert slo.is_latency == slo.name.endswith("_ms")


@pytest.mark.parametrize("text", ["p99=abc", "p99_ms", "p99_ms=", "p99_ms=abc", "p99_ms=0", "p99_ms=-3",
                                  "p99_ms=nan", "p99_ms=inf", "max_latency=5", "=5", ""])
def test_a_bad_slo_names_the_form_and_what_was_given(text):
    with pytest.raises(ValueError) as e:
        parse_slo(text)
    assert str(e.value) == ("--slo expects NAME=VALUE with NAME one of p50_ms, p90_ms, p99_ms, min_throughput and "
                            f"VALUE a positive number, got {text!r}")


def test_an_slo_given_twice_is_refused():
    assert parse_slos(["p99_ms=5", "min_throughput=100"]) == (Slo("p99_ms", 5.0), Slo("min_throughput", 100.0))
    with pytest.raises(ValueError, match=r"each name once, got min_throughput more than once "
                                         r"\(min_throughput=100, min_throughput=200\)"):
        parse_slos(["min_throughput=100", "p99_ms=5", "min_throughput=200"])
