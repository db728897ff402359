import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tritonize.cli import main
from tritonize.export import optimize
from tritonize.export.input_rows import BATCHES, ROWS, InputRows
from tritonize.export.optimize import optimize_model
from tritonize.models import get_spec


def test_example_calibration_covers_every_sequence_length():
    spec = get_spec("transformer")
    calibration = InputRows.from_examples(spec, np.random.default_rng())
    assert len(calibration.batches) == BATCHES
    assert {b["input_ids"].shape for b in calibration.batches} == {(ROWS, s) for s in spec.seq_lens}
    assert calibration.source == {"data": "example inputs", "rows": BATCHES * ROWS, "seq_lens": sorted(spec.seq_lens)}


def test_a_file_is_checked_and_cut_into_batches_of_all_its_rows(tmp_path):
    spec = get_spec("transformer")
    rows = spec.example_inputs(2 * ROWS + 3, 17, np.random.default_rng())
    np.savez(tmp_path / "t.npz", **rows)
    calibration = InputRows.from_file(spec, tmp_path / "t.npz")
    assert [len(b["input_ids"]) for b in calibration.batches] == [ROWS, ROWS, 3]
    for name, array in rows.items():
        assert np.array_equal(np.concatenate([b[name] for b in calibration.batches]), array)
    assert calibration.source == {"data": str((tmp_path / "t.npz").resolve()), "rows": 2 * ROWS + 3, "seq_lens": [17],
                                  "sha256": hashlib.sha256((tmp_path / "t.npz").read_bytes()).hexdigest()}


def _transformer_rows(**change):
    rows = get_spec("transformer").example_inputs(4, 17, np.random.default_rng())
    rows.update(change)
    return {k: v for k, v in rows.items() if v is not None}


EXPECTS = "model 'transformer' expects input_ids int64 [batch,seq], attention_mask int64 [batch,seq]; "


@pytest.mark.parametrize("rows, problem", [
    (_transformer_rows(attention_mask=None), "got arrays 'input_ids' (missing attention_mask)"),
    (_transformer_rows(text=np.zeros((4, 1))), "got arrays 'input_ids', 'attention_mask', 'text' (unexpected text)"),
    (_transformer_rows(input_ids=np.ones((4, 17), np.int32)),
     "got input_ids of dtype int32 (convert it with .astype(np.int64))"),
    (_transformer_rows(input_ids=np.ones((4, 17, 1), np.int64)), "got input_ids with 3 dims, shape [4, 17, 1]"),
    (_transformer_rows(attention_mask=np.ones((3, 17), np.int64)),
     "got attention_mask with 3 rows where the inputs before it have 4"),
    (_transformer_rows(attention_mask=np.ones((4, 16), np.int64)),
     "got attention_mask with sequence length 16 where the inputs before it have 17"),
    (_transformer_rows(input_ids=np.ones((4, 129), np.int64), attention_mask=np.ones((4, 129), np.int64)),
     "got input_ids with sequence length 129, outside [1, 128]"),
    (_transformer_rows(input_ids=np.full((4, 17), 1000, np.int64)),
     "got input_ids with token ids in [1000, 1000], outside [0, 1000)"),
    (_transformer_rows(attention_mask=np.full((4, 17), 2, np.int64)), "got attention_mask with values other than 0 and 1"),
    (_transformer_rows(input_ids=np.ones((0, 17), np.int64), attention_mask=np.ones((0, 17), np.int64)),
     "got input_ids with no rows"),
])
def test_rows_that_do_not_fit_the_model_are_refused_naming_expected_and_given(tmp_path, rows, problem):
    np.savez(tmp_path / "bad.npz", **rows)
    with pytest.raises(ValueError) as e:
        InputRows.from_file(get_spec("transformer"), tmp_path / "bad.npz")
    assert str(e.value) == f"calibration data {tmp_path / 'bad.npz'}: {EXPECTS}{problem}"


def test_dense_rows_must_have_the_fixed_axes_and_be_finite(tmp_path):
    spec = get_spec("cnn")
    np.savez(tmp_path / "small.npz", x=np.zeros((2, 3, 20, 24), np.float32))
    with pytest.raises(ValueError, match=r"expects x float32 \[batch,3,24,24\]; got x with axis 2 of 20, shape \[2, 3, 20, 24\]"):
        InputRows.from_file(spec, tmp_path / "small.npz")
    x = np.zeros((2, 3, 24, 24), np.float32)
    x[1, 0, 0, :2] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    with pytest.raises(ValueError, match="got x with 2 values that are NaN or infinite"):
        InputRows.from_file(spec, tmp_path / "nan.npz")


def test_files_numpy_cannot_read_as_named_arrays_are_refused(tmp_path):
    spec = get_spec("mlp")
    np.save(tmp_path / "plain.npy", np.zeros((2, 784), np.float32))
    (tmp_path / "notes.npz").write_text("not a zip")
    expected = "calibration data for model 'mlp': expected an .npz file of arrays named x (np.savez), got "
    with pytest.raises(ValueError, match="it holds a single float32 array \\[2, 784\\], not named arrays") as e:
        InputRows.from_file(spec, tmp_path / "plain.npy")
    assert str(e.value).startswith(expected + str(tmp_path / "plain.npy"))
    with pytest.raises(ValueError) as e:
        InputRows.from_file(spec, tmp_path / "notes.npz")
    assert str(e.value).startswith(expected + str(tmp_path / "notes.npz") + ", which numpy cannot read that way")
    with pytest.raises(ValueError, match=r"expected an .npz file, got .*missing.npz \(no such file\)"):
        InputRows.from_file(spec, tmp_path / "missing.npz")
    with pytest.raises(ValueError, match=r"expected an .npz file, got .* \(a folder\)"):
        InputRows.from_file(spec, tmp_path)


def _input_scale(model_path, input_name: str) -> float:
    """The scale of the QuantizeLinear that quantizes the model's input."""
    model = onnx.load(str(model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantize = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == input_name)
    return float(inits[quantize.input[1]])


@pytest.fixture
def mlp_artifacts(artifacts, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(artifacts / "mlp", root / "mlp")
    return root


QUICK = dict(variants=("fp32", "int8_static"), agreement_rows=64, latency_iters=5)


def test_the_rows_given_set_the_activation_ranges_and_are_recorded(mlp_artifacts, tmp_path):
    spec = get_spec("mlp")
    static = mlp_artifacts / "mlp" / "variants" / "int8_static" / "model.onnx"
    default_choice = optimize_model(spec, mlp_artifacts, **QUICK)
    assert default_choice["calibration"]["data"] == "example inputs"
    default_scale = _input_scale(static, "x")

    wide = 10 * np.random.default_rng().standard_normal((40, 784)).astype(np.float32)
    np.savez(tmp_path / "wide.npz", x=wide)
    choice = optimize_model(spec, mlp_artifacts, calibration=InputRows.from_file(spec, tmp_path / "wide.npz"), **QUICK)
    # MinMax calibration: the u8 input scale spans the rows' range, ten times wider here.
    assert _input_scale(static, "x") == pytest.approx((wide.max() - min(wide.min(), 0)) / 255, rel=1e-4)
    assert _input_scale(static, "x") > 5 * default_scale
    recorded = json.loads((mlp_artifacts / "mlp" / "variants" / "choice.json").read_text())["calibration"]
    assert recorded == choice["calibration"] and recorded["rows"] == 40
    assert recorded["sha256"] == hashlib.sha256((tmp_path / "wide.npz").read_bytes()).hexdigest()


def test_scratch_files_of_the_quantization_tools_are_left_nowhere(mlp_artifacts, tmp_path, monkeypatch):
    real = optimize.BUILDERS["int8_static"]

    def littering(src, dst, calibration):  # as ORT's shape inference does when it fails
        open("sym_shape_infer_temp.onnx", "w").close()
        real(src, dst, calibration)

    monkeypatch.setitem(optimize.BUILDERS, "int8_static", littering)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    optimize_model(get_spec("mlp"), mlp_artifacts.resolve(), **QUICK)
    assert list((tmp_path / "cwd").iterdir()) == []
    assert not list(mlp_artifacts.rglob("sym_shape_infer_temp.onnx"))


def test_cli_calibrates_from_a_folder_and_says_what_each_model_was_calibrated_on(mlp_artifacts, tmp_path, capsys):
    data = tmp_path / "calibration"
    data.mkdir()
    np.savez(data / "mlp.npz", x=np.random.default_rng().standard_normal((16, 784)).astype(np.float32))
    np.savez(data / "resnet.npz", x=np.zeros((1, 3)))
    code = main(["optimize", "mlp", "--artifacts", str(mlp_artifacts), "--variants", "fp32", "int8_static",
                 "--calibration", str(data)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"mlp: int8_static calibrated on {(data / 'mlp.npz').resolve()} (16 rows)" in captured.out
    assert f"{data / 'resnet.npz'} left unused: no model 'resnet' among those named" in " ".join(captured.err.split())


@pytest.mark.parametrize("args, message", [
    (["mlp", "cnn", "--calibration", "{data}/mlp.npz"], "one file holds one model's rows; name that model"),
    (["mlp", "--variants", "fp32", "int8", "--calibration", "{data}"],
     "--calibration sets the int8_static variant's activation ranges, but --variants leaves it out (got fp32 int8)"),
    (["mlp", "cnn", "--calibration", "{data}/empty"], "expected files named cnn.npz, mlp.npz, found no .npz or .txt file"),
    (["cnn", "--calibration", "{data}/mlp.npz"], "model 'cnn' expects x float32 [batch,3,24,24]; got x with 2 dims"),
])
def test_cli_refuses_calibration_it_cannot_use_before_any_work(mlp_artifacts, tmp_path, capsys, args, message):
    data = tmp_path / "data"
    (data / "empty").mkdir(parents=True)
    np.savez(data / "mlp.npz", x=np.zeros((4, 784), np.float32))
    before = (mlp_artifacts / "mlp" / "variants" / "choice.json").read_bytes()
    code = main(["optimize", "--artifacts", str(mlp_artifacts)] + [a.format(data=data) for a in args])
    assert code == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert (mlp_artifacts / "mlp" / "variants" / "choice.json").read_bytes() == before
