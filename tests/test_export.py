import logging

import numpy as np
import onnx
import pytest
import torch

from ersam_ssl.export import (
    attach_onnx_config,
    compare_with_torch,
    export_onnx,
    frontend_nodes,
    onnx_outputs,
    onnx_session,
    quantize_onnx,
    read_onnx_config,
)
from ersam_ssl.hw.latency import export_onnx_for_latency
from ersam_ssl.models import CountModel, SAMSpace, build_model

NUM_SAMPLES = 8000
SPACE = SAMSpace()


def _decisive_model(pool_head: str = "gru", seed: int = 0):
    """A small SAM counter with trained-like BatchNorm statistics and large logit margins, so that small
    numerical differences (int8) rarely flip a prediction."""
    torch.manual_seed(seed)
    model = build_model({**SPACE.smallest(), "head": pool_head}, num_classes=4)
    with torch.no_grad():
        model.train()
        for _ in range(3):  # realistic BatchNorm statistics for these inputs
            model(0.1 * torch.randn(16, NUM_SAMPLES))
        model.head.linear.weight.mul_(20.0)
    return model.eval()


def _waves(n: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-2, 0, n).unsqueeze(1)  # quiet to loud clips
    return scale * torch.randn(n, NUM_SAMPLES, generator=gen)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The GRU-pooling counter and its fp32 export (shared: exporting takes seconds)."""
    model = _decisive_model("gru")
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "m.onnx", NUM_SAMPLES)


@pytest.mark.parametrize("pool_head", ["gru", "attention"])
def test_onnx_matches_pytorch_with_a_dynamic_batch(tmp_path, exported, pool_head):
    model, path = exported
    if pool_head == "attention":
        model = _decisive_model(pool_head)
        path = export_onnx(model, tmp_path / "m.onnx", NUM_SAMPLES)
    session = onnx_session(path)
    assert session.get_inputs()[0].name == "wave" and session.get_outputs()[0].name == "logits"
    assert isinstance(session.get_inputs()[0].shape[0], str)  # symbolic batch axis
    assert onnx.load(str(path)).opset_import[0].version == 17
    for batch in (1, 5):
        x = _waves(batch)
        with torch.no_grad():
            expected = model(x).numpy()
        np.testing.assert_allclose(onnx_outputs(session, x), expected, rtol=1e-4, atol=1e-4)
    assert model.training is False


def test_latency_export_uses_the_project_exporter_with_batch_one(tmp_path):
    model = _decisive_model()
    path = export_onnx_for_latency(model, tmp_path / "lat.onnx", NUM_SAMPLES)
    session = onnx_session(path)
    assert list(session.get_inputs()[0].shape) == [1, NUM_SAMPLES]
    x = _waves(1)
    with torch.no_grad():
        np.testing.assert_allclose(onnx_outputs(session, x), model(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_models_run_and_mostly_agree(tmp_path, exported, mode):
    model, fp32 = exported
    calibration = [_waves(8, seed=s) for s in (10, 11)] if mode == "static" else None
    int8 = quantize_onnx(fp32, tmp_path / "m.int8.onnx", mode, calibration=calibration)
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert (
        ("ConvInteger" in ops)
        if mode == "dynamic"
        else ("QuantizeLinear" in ops and "DequantizeLinear" in ops)
    )
    # the frontend (STFT as Conv, mel MatMul) stays float
    assert len(frontend_nodes(int8)) == 2
    x = _waves(24, seed=3)
    with torch.no_grad():
        expected = model(x)
    out = torch.from_numpy(onnx_outputs(onnx_session(int8), x))
    assert torch.isfinite(out).all()
    agreement = (out.argmax(1) == expected.argmax(1)).float().mean()
    assert agreement >= 0.8
    assert (out - expected).abs().max() < 0.2 * expected.abs().max()
    assert read_onnx_config(int8) == model.config()  # the int8 file is as self-describing as fp32
    with pytest.raises(ValueError):
        quantize_onnx(fp32, tmp_path / "x.onnx", "static")
    with pytest.raises(ValueError):
        quantize_onnx(fp32, tmp_path / "x.onnx", "float16")


def test_quantizing_the_frontend_replaces_its_conv(tmp_path, exported):
    fp32 = exported[1]
    int8 = quantize_onnx(fp32, tmp_path / "all.onnx", "dynamic", quantize_frontend=True)
    nodes = {n.name: n.op_type for n in onnx.load(str(int8)).graph.node}
    assert not any(name.startswith("/frontend/") and op == "Conv" for name, op in nodes.items())


def test_compare_with_torch_reports_matching_metrics(exported):
    model, fp32 = exported
    x = _waves(12, seed=4)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 4  # some errors, so the metrics are not trivial
    batches = [(x[:7], y[:7]), {"x": x[7:], "y": y[7:]}]
    report = compare_with_torch(model, {"onnx_fp32": fp32}, batches)
    assert report["clips"] == 12
    assert report["torch"]["error_rate"] == pytest.approx(3 / 12)
    assert report["onnx_fp32"]["error_rate"] == report["torch"]["error_rate"]
    assert report["onnx_fp32"]["mae"] == report["torch"]["mae"]
    assert report["onnx_fp32"]["agreement"] == 1.0 and report["onnx_fp32"]["max_abs_diff"] < 1e-3
    with pytest.raises(ValueError):
        compare_with_torch(model, {"onnx_fp32": fp32}, [])


def test_exports_carry_the_model_config_for_analysis(tmp_path, exported):
    model, fp32 = exported
    assert read_onnx_config(fp32) == model.config()
    rebuilt = CountModel.from_config(read_onnx_config(fp32))
    assert type(rebuilt.head) is type(model.head) and rebuilt.num_classes == model.num_classes
    bare = tmp_path / "bare.onnx"
    # Raw export on purpose: a file without the config that export_onnx attaches.
    torch.onnx.export(model.eval(), (_waves(1),), str(bare), dynamo=False, opset_version=17)
    with pytest.raises(ValueError, match="attach_onnx_config"):
        read_onnx_config(bare)
    assert read_onnx_config(attach_onnx_config(bare, model)) == model.config()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_static_quantization_does_not_flood_an_info_root_logger(tmp_path):
    """ORT's quantizer logs through the root logger; under an INFO root (recipes/run.py) that was ~300
    lines per export. The unguarded call shows the flood is real (the default SAM member logs ~20
    lines; the smallest logs none); the public one keeps it out."""
    from ersam_ssl.export import _quantize_onnx

    torch.manual_seed(0)
    fp32 = export_onnx(build_model(None, num_classes=4), tmp_path / "m.onnx", NUM_SAMPLES)
    calibration = [_waves(8, seed=10)]
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    capture = _Records()
    root.addHandler(capture)
    root.setLevel(logging.INFO)
    try:
        _quantize_onnx(fp32, tmp_path / "loud.onnx", "static", calibration, False, False)
        loud = [r for r in capture.records if r.name == "root" and r.levelno == logging.INFO]
        capture.records.clear()
        quantize_onnx(fp32, tmp_path / "quiet.onnx", "static", calibration=calibration)
        quiet = [r for r in capture.records if r.name == "root" and r.levelno < logging.WARNING]
        assert root.level == logging.INFO and capture in root.handlers  # restored after the call
    finally:
        root.removeHandler(capture)
        root.setLevel(level)
    assert len(loud) >= 5, len(loud)
    assert quiet == []
    assert root.handlers == handlers


def test_quiet_root_logger_restores_level_and_handlers():
    from ersam_ssl.export import quiet_root_logger

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.DEBUG)
    try:
        with quiet_root_logger():
            assert root.level == logging.WARNING
            logging.info("dropped")  # installs a basicConfig handler when root has none
            extra = logging.StreamHandler()
            root.addHandler(extra)
        assert root.level == logging.DEBUG and extra not in root.handlers
        assert root.handlers == handlers
        root.setLevel(logging.ERROR)
        with quiet_root_logger():
            assert root.level == logging.ERROR  # never lowered
    finally:
        root.setLevel(level)
