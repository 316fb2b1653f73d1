"""The architecture's contracts (docs/architecture.md), checked on the source:

- imports point one way: hw imports neither sw nor sim nor boards; sw imports neither
  sim nor boards; nothing below the command line imports it;
- the host side (driver, compiler, compression, golden model, the model file) and the
  CLI's host commands run without amaranth or cocotb installed;
- a scheme is one registration: a scheme registered at run time is known to
  ``compress``, the CLI's ``--scheme``, the model-file reader, the compiler, ``bench``
  and ``explore``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Folder -> the dotted package it is installed as (pyproject.toml's package-dir).
PACKAGES = {"hw": "shiftpool.hw", "sw": "shiftpool.sw", "sim": "shiftpool.sim",
            "boards": "shiftpool.boards", "shiftpool": "shiftpool"}


def imported_modules(path: Path) -> set[str]:
    """Every shiftpool module a source file imports (relative imports resolved)."""
    folder = path.relative_to(ROOT).parts[0]
    parts = [*PACKAGES[folder].split("."), *path.relative_to(ROOT / folder).with_suffix("").parts]
    package = parts[:-1]        # a module's package; an __init__'s is the package itself
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "shiftpool" or m.startswith("shiftpool.")}


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder, forbidden", [
    ("hw", ("shiftpool.sw", "shiftpool.sim", "shiftpool.boards", "shiftpool.cli")),
    ("sw", ("shiftpool.sim", "shiftpool.boards", "shiftpool.cli")),
    ("sim", ("shiftpool.cli",)),
    ("boards", ("shiftpool.cli",)),
])
def test_imports_point_one_way(folder, forbidden):
    wrong = [f"{path.relative_to(ROOT)} imports {module}"
             for path in sources(folder) for module in sorted(imported_modules(path))
             if any(module == f or module.startswith(f + ".") or module.startswith(f + "_")
                    for f in forbidden)]
    assert not wrong, "\n".join(wrong)


def test_the_contract_scan_sees_imports():
    """The scan resolves relative imports: it finds what a file is known to import."""
    modules = imported_modules(ROOT / "sw" / "compile" / "fit.py")
    assert "shiftpool.hw.config" in modules and "shiftpool.sw.compile.image" in modules


#: A prelude that makes the gateware toolchain unimportable, as on a plain install.
WITHOUT_TOOLCHAINS = textwrap.dedent("""
    import sys
    for name in ("amaranth", "amaranth_boards", "cocotb", "cocotb_tools"):
        sys.modules[name] = None
""")


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TOOLCHAINS + textwrap.dedent(code)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)


@pytest.mark.slow
def test_host_side_runs_without_amaranth_or_cocotb(tmp_path):
    """`pip install shiftpool` without extras: compress (the CLI, built-in model), the
    golden model, the compiler, the manifest and the driver all work."""
    proc = run_python(f"""
        import json
        import numpy as np
        from shiftpool.cli import main
        import shiftpool.sw.host.driver
        from shiftpool.sw.compile.fit import fit_config
        from shiftpool.sw.compile.image import compile_model
        from shiftpool.sw.compile.manifest import manifest
        from shiftpool.sw.model.file import read_model
        from shiftpool.sw.schemes import golden

        code = main(["compress", "--scheme", "int8", "--epochs", "0", "-o", "m.npz",
                     "--cache-dir", {str(tmp_path)!r}])
        assert code == 0, code
        model = read_model("m.npz")
        image = compile_model(model, fit_config(model, lanes=2, taps=4))
        json.dumps(manifest(image))
        x = np.zeros((1, *model.input_shape), dtype=np.int64)
        assert golden.run(model, x).shape == (1, model.classes)
        for command in ("run", "compress"):
            try:
                main([command, "--help"])
            except SystemExit as exc:
                assert exc.code == 0, (command, exc.code)
        print("host side ok")
    """, tmp_path)
    assert proc.returncode == 0 and "host side ok" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.slow
def test_a_scheme_is_one_registration(tmp_path):
    """Registering a scheme (here: int8 under another name) is all it takes for the
    CLI, compress, the model file and the compiler to know it."""
    proc = run_python("""
        import numpy as np
        from shiftpool.cli import build_parser
        from shiftpool.sw.compile.fit import fit_config
        from shiftpool.sw.compile.image import compile_model
        from shiftpool.sw.model.file import load_model, save_model
        from shiftpool.sw.schemes.compress import compress
        from shiftpool.sw.schemes.int8 import Int8Quantizer
        from shiftpool.sw.schemes.registry import Option, Scheme, register
        from shiftpool.sw.train.nn import Conv3x3, Dense, FloatModel, MaxPool2, ReLU

        from shiftpool.bench import bench_schemes
        from shiftpool.explore import variants

        register(Scheme(name="int8copy", summary="int8 once more", stored_as="int8",
                        engine="int8", quantizer=Int8Quantizer,
                        options=(Option("copy_knob", int, 3, 1, 5, "a knob"),),
                        sweep=(("knob=1", {"copy_knob": 1}), ("", {}))))
        assert "int8copy" in [s.name for s in bench_schemes()]
        assert [v for v in variants() if v[1] == "int8copy"] == [
            ("int8copy knob=1", "int8copy", {"copy_knob": 1}), ("int8copy", "int8copy", {})]
        args = build_parser().parse_args(["compress", "--scheme", "int8copy",
                                          "--copy-knob", "4", "-o", "x.npz"])
        assert args.scheme == "int8copy" and args.copy_knob == 4
        rng = np.random.default_rng(0)
        model = FloatModel([Conv3x3(1, 2, rng), ReLU(), MaxPool2(), Dense(8, 3, rng)],
                           input_shape=(1, 4, 4))
        x = rng.random((6, 1, 4, 4))
        qm = compress(model, "int8copy", x_train=x, y_train=np.arange(6) % 3, epochs=0,
                      progress=False, copy_knob=5)
        assert qm.meta["copy_knob"] == 5 and qm.scheme == "int8"
        save_model(qm, "x.npz")
        back = load_model("x.npz")
        compile_model(back, fit_config(back, lanes=1, taps=2))
        try:
            compress(model, "int8copy", x_train=x, y_train=np.arange(6) % 3, copy_knob=9)
        except ValueError as exc:
            assert "copy_knob" in str(exc) and "1..5" in str(exc), exc
        else:
            raise AssertionError("an out-of-range option was accepted")
        print("registered ok")
    """, tmp_path)
    assert proc.returncode == 0 and "registered ok" in proc.stdout, proc.stderr[-3000:]
