"""QONNX import: models built with onnx's helper API, as Brevitas lays them out (Quant
nodes on the input, on the weights and after each Relu), run by qonnx's own executor
and by the golden model; bad models named in one line."""

from __future__ import annotations

import re

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("qonnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from shiftpool.sw.schemes import golden  # noqa: E402
from shiftpool.sw.train.qonnx_import import (  # noqa: E402
    QonnxImportError,
    compare_with_qonnx,
    import_qonnx,
)

QONNX_DOMAIN = "qonnx.custom_op.general"


class Graph:
    """A chain of nodes with initializers, written as a QONNX model."""

    def __init__(self, input_shape):
        self.nodes, self.inits, self.count = [], [], 0
        self.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *input_shape])
        self.current = "x"

    def const(self, value, name=None):
        self.count += 1
        name = name or f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def quant_params(self, scale, bits):
        return [self.const(scale), self.const(0.0), self.const(float(bits))]

    def node(self, op, inputs, domain="", **attrs):
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op.lower()}{self.count}",
                                           domain=domain, **attrs))
        return out

    def act_quant(self, scale, bits, rounding="HALF_UP", signed=0):
        self.current = self.node("Quant", [self.current, *self.quant_params(scale, bits)],
                                 QONNX_DOMAIN, signed=signed, narrow=0, rounding_mode=rounding)

    def weight(self, w, scale, bits=8):
        return self.node("Quant", [self.const(w), *self.quant_params(scale, bits)],
                         QONNX_DOMAIN, signed=1, narrow=1, rounding_mode="ROUND")

    def conv(self, w, w_scale, bias):
        self.current = self.node("Conv", [self.current, self.weight(w, w_scale),
                                          self.const(bias)], kernel_shape=[3, 3],
                                 pads=[1, 1, 1, 1])

    def gemm(self, w, w_scale, bias):
        self.current = self.node("Gemm", [self.current, self.weight(w, w_scale),
                                          self.const(bias)], transB=1)

    def op(self, op, **attrs):
        self.current = self.node(op, [self.current], **attrs)

    def save(self, path, outputs):
        out = helper.make_tensor_value_info(self.current, TensorProto.FLOAT, [1, outputs])
        g = helper.make_graph(self.nodes, "qonnx-test", [self.input], [out], self.inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid(QONNX_DOMAIN, 1)])
        onnx.save(model, str(path))
        return path


def random_cnn(rng, path, rounding="HALF_UP", act_bits=8, shift1=None):
    """input (1, 8, 8) -> Quant -> conv 3x3 (4) -> Relu -> Quant -> MaxPool -> Flatten
    -> Gemm (6) -> Relu -> Quant -> Gemm (3), power-of-two scales drawn from ``rng``
    (``shift1``: the first requantizer's shift, which sets how often a value falls
    exactly halfway); biases on the accumulator's grid."""
    g = Graph((1, 8, 8))
    f_in = int(rng.integers(4, 8))
    g.act_quant(2.0 ** -f_in, act_bits, rounding)
    w1f = int(rng.integers(5, 8))
    w1 = rng.normal(0, 0.3, (4, 1, 3, 3))
    acc1 = f_in + w1f
    g.conv(w1, 2.0 ** -w1f, rng.integers(-500, 500, 4) * 2.0 ** -acc1)
    g.op("Relu")
    f1 = int(rng.integers(2, 5)) if shift1 is None else acc1 - shift1
    g.act_quant(2.0 ** -f1, act_bits, rounding)
    g.op("MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    g.op("Flatten", axis=1)
    w2f = int(rng.integers(5, 8))
    g.gemm(rng.normal(0, 0.2, (6, 64)), 2.0 ** -w2f,
           rng.integers(-300, 300, 6) * 2.0 ** -(f1 + w2f))
    g.op("Relu")
    f2 = int(rng.integers(1, 4))
    g.act_quant(2.0 ** -f2, act_bits, rounding)
    w3f = int(rng.integers(5, 8))
    g.gemm(rng.normal(0, 0.3, (3, 6)), 2.0 ** -w3f,
           rng.integers(-200, 200, 3) * 2.0 ** -(f2 + w3f))
    return g.save(path, 3)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_half_up_qonnx_model_is_bit_exact_against_qonnx(seed, tmp_path):
    rng = np.random.default_rng(seed)
    path = random_cnn(rng, tmp_path / "m.onnx")
    qm, notes = import_qonnx(path)
    assert notes["exact"] and notes["inexact"] == [], f"seed {seed}: {notes}"
    assert qm.scheme == "int8" and [layer.kind for layer in qm.layers] == \
        ["conv3x3", "maxpool2", "dense", "dense"]
    x = rng.uniform(0, 1, (6, 1, 8, 8))
    result = compare_with_qonnx(path, qm, x)
    print(f"seed {seed}: {result}")
    assert result == {"samples": 6, "equal": 6, "max_abs_diff": 0.0}, f"seed {seed}"
    # Non-trivial: the network's outputs differ between inputs and are not all zero,
    # and the comparison sees a change of one bias step in the last layer.
    logits = golden.run(qm, qm.quantize_input(x))
    assert len({tuple(r) for r in logits.tolist()}) > 1 and np.any(logits != 0)
    qm.layers[-1].bias[0] += 1
    off = compare_with_qonnx(path, qm, x)
    assert off["equal"] == 0 and off["max_abs_diff"] == 2.0 ** -qm.output_frac


def test_round_to_even_is_exact_with_a_half_even_requantizer(tmp_path):
    """Halves to even (qonnx's default): the model rounds half to even and its outputs
    equal qonnx's; the first layer's activations equal qonnx's Quant output exactly,
    and rounding halves up instead would change some of them (ties occur here)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    seed = 7
    rng = np.random.default_rng(seed)
    path = random_cnn(rng, tmp_path / "m.onnx", rounding="ROUND", shift1=3)
    qm, notes = import_qonnx(path)
    assert notes["exact"] and qm.rounding == "half_even", notes
    x = rng.uniform(0, 1, (12, 1, 8, 8))
    assert compare_with_qonnx(path, qm, x)["equal"] == 12, f"seed {seed}"
    # The first activation Quant of qonnx against the golden model's first layer.
    wrapper = ModelWrapper(str(path)).transform(InferShapes())
    inits = {t.name: numpy_helper.to_array(t) for t in wrapper.graph.initializer}
    node = [n for n in wrapper.graph.node if n.op_type == "Quant"
            and n.input[0] not in inits][1]
    scale = float(inits[node.input[1]])
    q = qm.quantize_input(x)
    even = golden.run(qm, q, trace=True)[1][1]
    qm.rounding = "half_up"
    up = golden.run(qm, q, trace=True)[1][1]
    ties = int(np.sum(even != up))
    print(f"seed {seed}: {ties} first-layer activations are ties")
    assert ties > 0, f"seed {seed}"
    for n in range(len(x)):
        feed = (q[n:n + 1] * 2.0 ** -qm.input_frac).astype(np.float32)
        ctx = execute_onnx(wrapper, {"x": feed}, return_full_exec_context=True)
        assert np.array_equal(ctx[node.output[0]].astype(np.float64) / scale, even[n:n + 1]), (
            f"seed {seed} sample {n}")


def test_mixed_roundings_are_refused(tmp_path):
    g = Graph((1, 4, 4))
    g.act_quant(2.0 ** -6, 8)
    rng = np.random.default_rng(1)
    g.conv(rng.normal(0, 0.3, (2, 1, 3, 3)), 2.0 ** -6, np.zeros(2))
    g.op("Relu")
    g.act_quant(2.0 ** -4, 8, "ROUND")
    g.op("Flatten", axis=1)
    g.gemm(rng.normal(0, 0.3, (4, 32)), 2.0 ** -6, np.zeros(4))
    g.op("Relu")
    g.act_quant(2.0 ** -4, 8, "HALF_UP")
    g.gemm(rng.normal(0, 0.3, (3, 4)), 2.0 ** -6, np.zeros(3))
    with pytest.raises(QonnxImportError, match="rounds one way in the whole model"):
        import_qonnx(g.save(tmp_path / "m.onnx", 3))


def test_the_imported_weights_are_qonnxs_integers(tmp_path):
    """The conv weights of the import are ``round(clip(w / scale))`` exactly."""
    rng = np.random.default_rng(5)
    path = random_cnn(rng, tmp_path / "m.onnx")
    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    quant = next(n for n in model.graph.node if n.op_type == "Quant"
                 and n.input[0] in init and init[n.input[0]].ndim == 4)
    w, scale = init[quant.input[0]].astype(np.float64), float(init[quant.input[1]])
    expect = np.clip(np.round(w / scale), -127, 127)
    qm, _ = import_qonnx(path)
    assert np.array_equal(qm.layers[0].weight, expect)


def _simple(tmp_path, *, w_scale=2.0 ** -6, act_scale=2.0 ** -4, signed=0, bias_step=None,
            act_bits=8, second_bits=None):
    g = Graph((1, 4, 4))
    g.act_quant(2.0 ** -6, act_bits)
    rng = np.random.default_rng(0)
    bias = (rng.integers(-50, 50, 2) * 2.0 ** -12 if bias_step is None
            else np.full(2, bias_step))
    g.conv(rng.normal(0, 0.3, (2, 1, 3, 3)), w_scale, bias)
    g.op("Relu")
    g.act_quant(act_scale, second_bits or act_bits, signed=signed)
    g.op("Flatten", axis=1)
    g.gemm(rng.normal(0, 0.3, (3, 32)), 2.0 ** -6, np.zeros(3))
    return g.save(tmp_path / "m.onnx", 3)


@pytest.mark.parametrize("change, words", [
    (dict(w_scale=0.0123), "not a power of two"),
    (dict(signed=1), "activations must be quantized unsigned"),
    (dict(second_bits=4), "4-bit activations after the input's 8"),
    (dict(act_scale=2.0 ** -20), "finer than the layer's accumulator"),
])
def test_models_the_engine_cannot_run_exactly_are_named(tmp_path, change, words):
    path = _simple(tmp_path, **change)
    with pytest.raises(QonnxImportError, match=words) as info:
        import_qonnx(path)
    assert "\n" not in str(info.value) and "node 'quant" in str(info.value)


def test_a_bias_off_the_grid_is_rounded_and_said(tmp_path):
    path = _simple(tmp_path, bias_step=0.3 * 2.0 ** -12)
    qm, notes = import_qonnx(path)
    assert not notes["exact"] and any("bias off the accumulator's grid" in line
                                      for line in notes["inexact"])


def test_a_float_weight_and_junk_files_are_refused(tmp_path):
    g = Graph((4,))
    g.act_quant(2.0 ** -6, 8)
    g.current = g.node("Gemm", [g.current, g.const(np.ones((3, 4))), g.const(np.zeros(3))],
                       transB=1)
    path = g.save(tmp_path / "float.onnx", 3)
    with pytest.raises(QonnxImportError, match="its weight must be a Quant of a constant"):
        import_qonnx(path)
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk" * 10)
    with pytest.raises(QonnxImportError, match="not a valid ONNX model"):
        import_qonnx(tmp_path / "junk.onnx")


@pytest.mark.icarus
@pytest.mark.parametrize("rounding", ["HALF_UP", "ROUND"])
def test_compress_imports_a_qonnx_model_that_the_rtl_runs(tmp_path, capsys, sim_build_dir,
                                                         rounding):
    """``compress --float-model q.onnx --scheme int8``: imported as it is, checked against
    qonnx on the test split; the written model runs bit-exact on the RTL (Icarus), with
    either rounding of the requantizer."""
    from shiftpool.sim.flow import first_mismatch, simulate
    from shiftpool.sw.compile.fit import fit_config
    from shiftpool.sw.model.file import load_model

    from shiftpool.cli import main

    seed = 11
    rng = np.random.default_rng(seed)
    path = random_cnn(rng, tmp_path / "q.onnx", rounding=rounding)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.uniform(0, 1, (40, 1, 8, 8)), y=rng.integers(0, 3, 40))
    out = tmp_path / "m.npz"
    argv = ["compress", "--float-model", str(path), "--data", str(data), "-o", str(out)]
    assert main(argv) == 2                       # --scheme defaults to flightnn
    assert "pass --scheme int8" in capsys.readouterr().err and not out.exists()
    assert main(argv + ["--scheme", "int8"]) == 0
    stdout = capsys.readouterr().out
    assert "outputs equal to qonnx's execution on 8/8 test samples" in stdout, stdout
    qm = load_model(out)
    assert qm.rounding == ("half_up" if rounding == "HALF_UP" else "half_even")
    x = rng.integers(0, 256, (3, 1, 8, 8))
    result = simulate(qm, x, fit_config(qm, lanes=2, taps=4), simulator="icarus",
                      build_dir=sim_build_dir, seed=seed)
    assert first_mismatch(qm, x, result) is None and result.cycles_match, f"seed {seed}"


def test_a_brevitas_export_is_bit_exact_against_qonnx():
    """``tests/data/brevitas_cnn.onnx``, exported by Brevitas 0.13.4 / torch 2.13.0
    (``scripts/export_brevitas_cnn.py``: power-of-two quantizers, int32 biases, round
    half to even), imports exactly and equals qonnx's execution."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / "brevitas_cnn.onnx"
    qm, notes = import_qonnx(path)
    assert notes["exact"] and qm.rounding == "half_even", notes
    assert [layer.kind for layer in qm.layers] == ["conv3x3", "maxpool2", "dense", "dense"]
    seed = 21
    x = np.random.default_rng(seed).uniform(0, 1, (16, 1, 8, 8))
    result = compare_with_qonnx(path, qm, x)
    print(f"seed {seed}: {result}")
    assert result == {"samples": 16, "equal": 16, "max_abs_diff": 0.0}, f"seed {seed}"


def binary_mlp(rng, path, conv=False, quant_last=False, binary_act=False):
    """input (1, 8, 8) -> Quant -> Flatten -> Gemm (12, BipolarQuant weights) -> Relu ->
    Quant -> Gemm (5, BipolarQuant weights); with ``conv`` a binarized conv 3x3 first,
    with ``quant_last`` the last weight an int8 Quant, with ``binary_act`` a
    BipolarQuant on the hidden activations."""
    g = Graph((1, 8, 8))
    f_in = int(rng.integers(4, 8))
    g.act_quant(2.0 ** -f_in, 8)
    frac = f_in

    def bipolar(w, scale):
        return g.node("BipolarQuant", [g.const(w), g.const(scale)], QONNX_DOMAIN)

    if conv:
        g.current = g.node("Conv", [g.current, bipolar(rng.normal(0, 1, (2, 1, 3, 3)), 1.0),
                                    g.const(np.zeros(2))], kernel_shape=[3, 3],
                           pads=[1, 1, 1, 1])
        g.op("Relu")
        g.act_quant(2.0 ** -frac, 8)
    g.op("Flatten", axis=1)
    wf = int(rng.integers(0, 3))
    fan_in = 128 if conv else 64
    g.current = g.node("Gemm", [g.current, bipolar(rng.normal(0, 1, (12, fan_in)), 2.0 ** -wf),
                                g.const(rng.integers(-300, 300, 12) * 2.0 ** -(frac + wf))],
                       transB=1)
    g.op("Relu")
    if binary_act:
        g.current = g.node("BipolarQuant", [g.current, g.const(1.0)], QONNX_DOMAIN)
    f1 = frac + wf - int(rng.integers(3, 6))
    g.act_quant(2.0 ** -f1, 8)
    w2f = int(rng.integers(0, 3))
    w2 = g.weight(rng.normal(0, 0.3, (5, 12)), 2.0 ** -7) if quant_last else \
        bipolar(rng.normal(0, 1, (5, 12)), 2.0 ** -w2f)
    bias_frac = f1 + (7 if quant_last else w2f)
    g.current = g.node("Gemm", [g.current, w2, g.const(rng.integers(-50, 50, 5) *
                                                        2.0 ** -bias_frac)], transB=1)
    return g.save(path, 5)


@pytest.mark.parametrize("seed", [20, 21])
def test_bipolar_weights_run_on_the_binary_engine_bit_exact(seed, tmp_path):
    """BipolarQuant weights: imported for the binary engine (a one-round rbnn model of
    2-bit slots, bit 1 set for -1), the golden model equals qonnx's execution, and so
    does the accelerator with the binary engine (Amaranth's simulator); imported for
    the int8 engine, the same integers as +1/-1 weights."""
    from shiftpool.sw.compile.fit import fit_config
    from test_accelerator import Case, check_case

    rng = np.random.default_rng(seed)
    path = binary_mlp(rng, tmp_path / "b.onnx")
    qm, notes = import_qonnx(path, binary=True)
    assert qm.scheme == "rbnn" and notes["exact"], notes
    hidden, out = qm.layers
    assert (hidden.slot_bits, hidden.rounds, hidden.slots.shape) == (2, 1, (12, 64))
    assert set(np.unique(hidden.slots)) <= {0, 2} and len(np.unique(hidden.slots)) == 2
    x = rng.uniform(0, 1, (6, 1, 8, 8))
    assert compare_with_qonnx(path, qm, x) == {"samples": 6, "equal": 6, "max_abs_diff": 0.0}
    int8, _ = import_qonnx(path)
    xq = qm.quantize_input(x)
    assert int8.scheme == "int8" and set(np.unique(int8.layers[0].weight)) == {-1, 1}
    assert np.array_equal(golden.run(int8, xq), golden.run(qm, xq))
    config = fit_config(qm, lanes=2, taps=4)
    assert config.engine == "binary" and config.slot_bits == 2
    check_case(Case(seed, qm, config, xq[:3], idle_gap=0.2, back_pressure=0.2))


@pytest.mark.parametrize("change, words", [
    ("conv", "(Conv): the binary engine runs dense layers only (Gemm / MatMul), not a "
             "conv3x3"),
    ("quant_last", "(Gemm): the binary engine needs every weight binarized (a BipolarQuant "
                   "of a constant); this layer's is a Quant"),
    ("binary_act", "BipolarQuant of activations: the accelerator's activations are unsigned"),
])
def test_what_the_binary_engine_cannot_run_is_named(change, words, tmp_path):
    rng = np.random.default_rng(5)
    path = binary_mlp(rng, tmp_path / "b.onnx", **{change: True})
    with pytest.raises(QonnxImportError, match=re.escape(words)):
        import_qonnx(path, binary=True)


def test_compress_imports_bipolar_weights_for_the_binary_engine(tmp_path, capsys):
    """``compress --float-model b.onnx --scheme rbnn``: a one-round rbnn model, checked
    against qonnx on the test split; an int8 QONNX model is refused there, naming the
    layer."""
    from shiftpool.sw.model.file import load_model

    from shiftpool.cli import main

    rng = np.random.default_rng(8)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.uniform(0, 1, (40, 1, 8, 8)), y=rng.integers(0, 5, 40))
    out = tmp_path / "m.npz"
    path = binary_mlp(rng, tmp_path / "b.onnx")
    argv = ["compress", "--float-model", str(path), "--data", str(data), "-o", str(out),
            "--scheme", "rbnn"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "scheme rbnn (imported from QONNX)" in stdout, stdout
    assert "outputs equal to qonnx's execution on 8/8 test samples" in stdout, stdout
    qm = load_model(out)
    assert qm.scheme == "rbnn" and [layer.rounds for layer in qm.layers] == [1, 1]
    argv[2] = str(random_cnn(rng, tmp_path / "q.onnx"))
    argv[-3] = str(tmp_path / "other.npz")
    assert main(argv) == 2
    assert "the binary engine" in capsys.readouterr().err
    assert not (tmp_path / "other.npz").exists()
