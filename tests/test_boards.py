"""Boards: the board data against their platforms, PLL settings from icepll/ecppll,
a real iCE40 synthesis + place-and-route + bitstream of a small design (its report
checked against nextpnr's own JSON and yosys' statistics), the one-line errors for a
design that does not fit or misses its clock, and programming without a tool or a
board."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import sysconfig

import numpy as np
import pytest
from conftest import FIT_SIZES, small_model
from shiftpool.boards.board import LED_ROLES, BoardError
from shiftpool.boards.build import RESOURCES, build, parse_nextpnr_report, program
from shiftpool.boards.clocks import ecp5_pll, ice40_pll, pll_for
from shiftpool.boards.registry import BOARDS, get_board
from shiftpool.boards.top import led_ports
from shiftpool.sim.flow import generate
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.model.file import save_model

from shiftpool.cli_boards import add_build_parser, add_program_parser

#: Bytes in an iCE40UP5K bitstream (icepack output, no comments).
UP5K_BITSTREAM_BYTES = 104090


def run_cli(argv):
    """Parse ``argv`` with the build/program parsers and run the command."""
    import argparse

    parser = argparse.ArgumentParser(prog="shiftpool")
    sub = parser.add_subparsers(dest="command", required=True)
    add_build_parser(sub)
    add_program_parser(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err, err
    return lines[-1]


# -- board data --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_pins_exist_on_its_platform(name):
    """The UART and every status LED are resources of the board's platform."""
    board = BOARDS[name]
    platform = board.make_platform()
    uart = platform.request(*board.uart, dir="-")
    assert len(uart.rx) == 1 and len(uart.tx) == 1
    ports = led_ports(platform, board)
    assert sorted(ports) == sorted(LED_ROLES)
    assert all(len(port) == 1 for port in ports.values())
    assert board.oscillator_hz > 0


@pytest.mark.parametrize("name, part, args", [
    ("icebreaker", "iCE40UP5K", ("--up5k", "--package", "sg48")),
    ("ulx3s-85f", "LFE5U-85F", ("--85k", "--package", "CABGA381", "--speed", "6")),
    ("orangecrab-85f", "LFE5U-85F", ("--85k", "--package", "CSFBGA285", "--speed", "8")),
    ("tangnano9k", "GW1NR-LV9QN88PC6/I5", ("--device", "GW1NR-LV9QN88PC6/I5", "--vopt",
                                           "family=GW1N-9C")),
])
def test_nextpnr_device_matches_the_platform(name, part, args):
    board = BOARDS[name]
    assert board.device == part
    assert board.nextpnr_args == args


def test_board_engine_size_is_checked():
    import dataclasses

    with pytest.raises(BoardError, match=r"engine_size = \(2, 0\) must be \(lanes, taps\)"):
        dataclasses.replace(get_board("icebreaker"), engine_size=(2, 0))


def test_figures_command_refuses_bad_arguments(capsys):
    from shiftpool.boards.report import main

    assert main(["--boards", "icestick"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown board 'icestick'")
    assert main(["--sizes", "2x4,3"]) == 2
    assert "'3' is not LANESxTAPS" in capsys.readouterr().err


def test_unit_of_a_module_goes_by_its_path():
    from shiftpool.boards.units import unit_of

    assert unit_of("\\top.device.accelerator.engine") == "engine"
    assert unit_of("top.device.accelerator.engine.lane0.adder") == "engine"
    assert unit_of("top.device.accelerator.generate.generator") == "engine"    # MLG
    assert unit_of("top.device.accelerator.weights_mem") == "memories"
    assert unit_of("top.device.accelerator.bank.weights_mem") == "memories"
    assert unit_of("top.device.accelerator.bank.rows_mem.single_port_storage") == "memories"
    assert unit_of("top.device.accelerator.bank") == "controller"
    assert unit_of("top.device.accelerator.bank.readback") == "controller"
    assert unit_of("top.device.accelerator.writeback") == "controller"
    assert unit_of("top.device.accelerator") == "controller"
    assert unit_of("top.device.link.core.handler") == "link"
    assert unit_of("top/device/link") == "link"
    assert unit_of("top.clocks") == unit_of("top") == "other"


def test_units_script_synthesizes_the_same_design_unflattened():
    from shiftpool.boards.units import units_script

    top = ("read_rtlil top.il\ndelete t:$meminit_v2\nsynth_ice40 -dsp -top top\n"
           "tee -q -o stat.json stat -json\nwrite_json top.json\n")
    script = units_script(top).splitlines()
    assert script == ["read_rtlil top.il", "delete t:$meminit_v2",
                      "rename -hide w:*[[]*]", "synth_ice40 -dsp -top top -noflatten",
                      "tee -q -o units.json stat -json"]


def test_fit_that_nothing_passes_is_one_line(tmp_path, capsys):
    """Candidates the model cannot be laid out for are skipped without a build; when
    none is left, one line says so and names the largest's reason."""
    save_model(small_model(), tmp_path / "small.npz")
    code = run_cli(["build", "--board", "icebreaker", tmp_path / "small.npz", "--fit",
                    "--fit-sizes", "128x1,65x2", "-o", tmp_path / "out"])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("error: no engine of 65x2, 128x1 fits icebreaker; the largest, "
                           "65x2: config field 'lanes' = 65 is out of range"), line
    assert not (tmp_path / "out" / "report.json").exists()
    assert run_cli(["build", tmp_path / "small.npz", "--fit", "--lanes", "2"]) == 2
    assert "--fit picks lanes and taps itself" in capsys.readouterr().err
    assert run_cli(["build", tmp_path / "small.npz", "--fit", "--fit-sizes", "2y2"]) == 2
    assert "--fit-sizes '2y2': '2y2' is not LANESxTAPS" in capsys.readouterr().err


def test_fit_candidates_go_largest_first():
    from shiftpool.boards.fit import CANDIDATES, candidate_sizes

    order = candidate_sizes()
    products = [a * b for a, b in order]
    assert products == sorted(products, reverse=True) and set(order) == set(CANDIDATES)
    assert candidate_sizes([(1, 2), (2, 4), (4, 2), (2, 4)]) == [(2, 4), (4, 2), (1, 2)]


def test_unknown_board_is_named():
    with pytest.raises(BoardError, match=r"unknown board 'icestick'; choose one of .*icebreaker"):
        get_board("icestick")


def test_ice40_pll_from_icepll():
    pll = ice40_pll(12e6, 24e6)
    assert pll.output_hz == pytest.approx(24e6)
    # icepll's documented answer for 12 -> 24 MHz: 12 * (63 + 1) / 2**5 = 24
    assert pll.params == {"FEEDBACK_PATH": "SIMPLE", "DIVR": 0, "DIVF": 63, "DIVQ": 5,
                          "FILTER_RANGE": 1}
    board = get_board("icebreaker")
    assert pll_for(board).output_hz == pytest.approx(board.clock_hz)


def test_ecp5_pll_from_ecppll():
    pll = ecp5_pll(25e6, 40e6)
    p = pll.params
    assert pll.output_hz == pytest.approx(40e6)
    # the feedback is CLKOP: f_out = f_in * CLKFB_DIV / CLKI_DIV
    assert 25e6 * p["CLKFB_DIV"] / p["CLKI_DIV"] == pytest.approx(40e6)
    assert 400e6 <= 40e6 * p["CLKOP_DIV"] <= 800e6        # the VCO's range


def test_clock_without_pll_must_be_the_oscillator():
    assert pll_for(get_board("tangnano9k")) is None
    with pytest.raises(BoardError, match=r"27 MHz oscillator \(no PLL support\); 30 MHz"):
        pll_for(get_board("tangnano9k"), 30e6)


def test_impossible_pll_clock_is_named():
    with pytest.raises(BoardError, match=r"icepll .*1000 MHz"):
        ice40_pll(12e6, 1000e6)


# -- nextpnr's report ------------------------------------------------------------------------

def test_report_parsing_keeps_each_family_resource():
    raw = {"utilization": {"TRELLIS_COMB": {"used": 10, "available": 83640},
                           "TRELLIS_FF": {"used": 7, "available": 83640},
                           "DP16KD": {"used": 2, "available": 208},
                           "MULT18X18D": {"used": 0, "available": 156},
                           "TRELLIS_IO": {"used": 6, "available": 365}},
           "fmax": {"clk": {"achieved": 123.5, "constraint": 40.0}}}
    parsed = parse_nextpnr_report(raw, "ecp5")
    assert set(parsed["resources"]) == {c for c, b in RESOURCES.items() if b["ecp5"]}
    assert parsed["resources"]["bram"] == {"used": 2, "available": 208, "bel": "DP16KD"}
    assert parsed["clocks"] == {"clk": {"achieved_mhz": 123.5, "target_mhz": 40.0}}


# -- a real iCE40 build -------------------------------------------------------------------------

@pytest.mark.synth
@pytest.mark.slow
def test_ice40_build_writes_bitstream_and_report(ice40_build):
    proc, out, model = ice40_build
    assert proc.returncode == 0
    report = json.loads((out / "report.json").read_text())
    config = fit_config(model, lanes=1, taps=2)
    assert report["config_hash"] == config.hash
    assert report["config"] == config.as_dict()
    assert report["bitstream"] == "top.bin"
    assert (out / "top.bin").stat().st_size == UP5K_BITSTREAM_BYTES
    assert report["clock"]["met"] and report["clock"]["pll"]["params"]["DIVF"] > 0
    assert report["clock"]["target_mhz"] == pytest.approx(16, rel=0.005)
    from shiftpool.sw.compile.cycles import inference_cycles
    from shiftpool.sw.compile.image import compile_model

    cycles = inference_cycles(compile_model(model, config))
    assert report["cycles_per_inference"] == cycles
    assert report["inferences_per_s"]["at_fmax"] == pytest.approx(
        report["clock"]["fmax_mhz"] * 1e6 / cycles)
    scripts = os.path.realpath(sysconfig.get_path("scripts"))
    for tool in ("yosys", "nextpnr-ice40", "icepack"):
        command = report["tools"][tool]["command"]
        assert os.path.dirname(os.path.realpath(command)) == scripts, command
    assert report["tools"]["yosys"]["version"].startswith("Yosys 0.")


@pytest.mark.synth
@pytest.mark.slow
def test_ice40_report_matches_nextpnr_and_yosys(ice40_build):
    _, out, _ = ice40_build
    report = json.loads((out / "report.json").read_text())
    raw = json.loads((out / "nextpnr-report.json").read_text())
    util = raw["utilization"]
    res = report["resources"]
    for column, bel in (("logic", "ICESTORM_LC"), ("bram", "ICESTORM_RAM"),
                        ("spram", "ICESTORM_SPRAM"), ("dsp", "ICESTORM_DSP"), ("io", "SB_IO")):
        assert res[column] == {"used": util[bel]["used"], "available": util[bel]["available"],
                               "bel": bel}
    assert res["logic"]["available"] == 5280 and res["bram"]["available"] == 30
    assert res["spram"]["available"] == 4 and res["dsp"]["available"] == 8
    # The weights are in SPRAM (hw/memories.py), one block per 16 bits of a row.
    from shiftpool.hw.accelerator import region_width
    from shiftpool.hw.config import AcceleratorConfig
    from shiftpool.hw.memories import spram_blocks

    config = AcceleratorConfig.from_dict(report["config"])
    assert res["spram"]["used"] == spram_blocks(region_width(config, "weights"),
                                                config.weight_depth) >= 1
    # UART rx/tx, three LEDs; the clock pin feeds the PLL
    assert res["io"]["used"] >= 5
    (clock,) = raw["fmax"].values()
    assert report["clock"]["fmax_mhz"] == clock["achieved"]
    assert report["clock"]["target_mhz"] == pytest.approx(clock["constraint"], rel=1e-3)
    text = (out / "build" / "stat.json").read_text()
    cells = json.loads(text[text.index("{"):])["design"]["num_cells_by_type"]
    assert res["ff"]["used"] == sum(int(n) for c, n in cells.items() if c.startswith("SB_DFF"))
    assert res["lut"]["used"] == int(cells["SB_LUT4"])
    assert 0 < res["lut"]["used"] <= res["logic"]["used"]


@pytest.mark.synth
@pytest.mark.slow
def test_ice40_report_breaks_utilization_down_by_unit(ice40_build):
    """``units`` from the unflattened synthesis: every unit that holds logic has some;
    the memory blocks add up to the flattened design's (nextpnr's) counts, the SPRAM
    (the weights) in ``memories``; the LUT4 of the units are near the flat count
    (the flat synthesis optimizes across module boundaries)."""
    _, out, _ = ice40_build
    report = json.loads((out / "report.json").read_text())
    units, res = report["units"], report["resources"]
    assert set(units) == {"link", "controller", "engine", "memories", "other"}
    for unit in ("link", "controller", "engine"):
        assert units[unit]["lut"] > 0 and units[unit]["ff"] > 0, unit
    assert units["memories"]["spram"] == res["spram"]["used"] >= 1
    assert units["engine"]["spram"] == units["link"]["spram"] == 0
    assert sum(u["bram"] for u in units.values()) == res["bram"]["used"]
    assert sum(u["dsp"] for u in units.values()) == res["dsp"]["used"]
    flat = res["lut"]["used"]
    assert 0.8 * flat <= sum(u["lut"] for u in units.values()) <= 1.25 * flat
    text = (out / "build" / "units.json").read_text()
    modules = json.loads(text[text.index("{"):])["modules"]
    assert any(name.lstrip("\\").endswith(".accelerator.engine") for name in modules), \
        sorted(modules)
    from shiftpool.cli_boards import format_report

    table = format_report(report)
    engine = units["engine"]
    assert re.search(rf"^  engine +{engine['lut']} +{engine['ff']} ", table, re.M), table


@pytest.mark.synth
@pytest.mark.slow
def test_fit_builds_the_largest_engine_that_fits(ice40_build, tmp_path, capsys):
    """The fixture's ``build --fit`` on a tiny candidate list at 16 MHz: 65x1 cannot be
    laid out (the controller allows 64 lanes), 1x2 fits and is built, its output folder
    holding what a plain build's does; a second run with ``--report-only`` (in a copy of
    the output folder) takes it from the cache without a tool run."""
    proc, built, model = ice40_build
    assert "fit 1/2: 65x1 skipped" in proc.stderr and "fit 2/2: 1x2, place and route" \
        in proc.stderr
    report = json.loads((built / "report.json").read_text())
    assert (report["lanes"], report["taps"]) == (1, 2) and report["clock"]["met"]
    assert report["config_hash"] == fit_config(model, lanes=1, taps=2).hash
    assert report["fit"]["chosen"] == [1, 2]
    assert [t["fits"] for t in report["fit"]["tried"]] == [False, True]
    assert "largest engine that fits: 1x2" in proc.stdout
    chosen = built / "fit" / "1x2"
    for name in ("nextpnr-report.json", "top.bin", "build/stat.json", "build/units.json"):
        assert (built / name).read_bytes() == (chosen / name).read_bytes(), name
    out = tmp_path / "out"
    shutil.copytree(built, out)
    stamp = (out / "build" / "nextpnr-report.json").stat().st_mtime_ns
    argv = ["build", "--board", "icebreaker", built.parent / "small.npz", "--fit",
            "--fit-sizes", FIT_SIZES, "--clock-mhz", "16", "--report-only", "-o", out]
    assert run_cli(argv) == 0
    assert "fit 2/2: 1x2 fits (cached)" in capsys.readouterr().err
    assert (out / "build" / "nextpnr-report.json").stat().st_mtime_ns == stamp
    again = json.loads((out / "report.json").read_text())
    assert again["config_hash"] == report["config_hash"]


@pytest.mark.synth
@pytest.mark.slow
def test_missed_clock_is_one_line_naming_the_clock(tmp_path):
    """An absurd clock: the report is written, then the build fails naming the clock."""
    with pytest.raises(BoardError) as info:
        build(small_model(), "icebreaker", tmp_path, report_only=True, lanes=1, taps=2,
              clock_mhz=200)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("timing: clock 'clk' of icebreaker reaches ")
    # icepll's nearest to 200 MHz is 201 MHz
    assert re.search(r"reaches \d+\.\d\d MHz, below its 20\d MHz target; build for a lower "
                     r"clock", message)
    report = json.loads((tmp_path / "report.json").read_text())
    assert not report["clock"]["met"] and report["clock"]["fmax_mhz"] < 200
    assert report["bitstream"] is None


@pytest.mark.synth
@pytest.mark.slow
def test_design_that_does_not_fit_names_the_resource(tmp_path, capsys):
    """Activation buffers of 16K activations (8K words of 2) need 64 block RAMs; the UP5K
    has 30."""
    model = small_model()
    save_model(model, tmp_path / "small.npz")
    config = fit_config(model, lanes=1, taps=2, act_depth=1 << 14)
    generate(tmp_path / "small.npz", tmp_path / "design", config=config)
    code = run_cli(["build", "--board", "icebreaker", tmp_path / "design", "--report-only",
                    "-o", tmp_path / "out"])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("error: the design does not fit the iCE40UP5K of icebreaker: ")
    assert "block RAM (ICESTORM_RAM)" in line and "30 available" in line
    # told by nextpnr's packing: no per-unit synthesis, no placement
    assert (tmp_path / "out" / "build" / "pack-report.json").exists()
    assert not (tmp_path / "out" / "build" / "units.json").exists()
    assert not (tmp_path / "out" / "build" / "nextpnr-report.json").exists()


# -- programming ------------------------------------------------------------------------------

def fake_tool(folder, name: str, output: str, code: int):
    path = folder / name
    path.write_text(f"#!/bin/sh\necho \"$@\" > {folder}/args\n"
                    f"echo {shlex.quote(output)}\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def only_path(tmp_path, monkeypatch):
    """PATH holding only a folder of fake tools, no programmer overrides."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    for var in ("ICEPROG", "OPENFPGALOADER", "DFU_UTIL"):
        monkeypatch.delenv(var, raising=False)
    return bindir


def test_program_without_a_tool_says_what_to_install(tmp_path, only_path, capsys):
    (tmp_path / "top.bin").write_bytes(b"\0" * 16)
    code = run_cli(["program", "--board", "icebreaker", tmp_path / "top.bin"])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2
    assert line == ("error: no programmer for icebreaker: install iceprog (apt-get install "
                    "fpga-icestorm) or openFPGALoader (apt-get install openfpgaloader)")


def test_program_without_the_board_says_so(tmp_path, only_path):
    fake_tool(only_path, "iceprog", "Can't find iCE FTDI USB device (vendor_id 0x0403, "
              "device_id 0x6010 or 0x6014).", 2)
    (tmp_path / "top.bin").write_bytes(b"\0" * 16)
    with pytest.raises(BoardError, match=r"^iceprog found no iCEBreaker \(iCE40UP5K\): is it "
                                         r"plugged in"):
        program("icebreaker", tmp_path / "top.bin")


def test_program_runs_the_boards_tool(tmp_path, only_path):
    fake_tool(only_path, "openFPGALoader", "Done", 0)
    bitstream = tmp_path / "top.bit"
    bitstream.write_bytes(b"\0" * 16)
    assert program("ulx3s-85f", bitstream) == "Done"
    assert (only_path / "args").read_text().split() == ["-b", "ulx3s", str(bitstream)]


def test_program_missing_bitstream(tmp_path):
    with pytest.raises(BoardError, match=r"bitstream .*nope.bit does not exist; make it with "
                                         r"'shiftpool build --board ulx3s-85f MODEL'"):
        program("ulx3s-85f", tmp_path / "nope.bit")


def test_tool_override_must_exist(tmp_path, monkeypatch):
    from shiftpool.boards.tools import find_tool

    monkeypatch.setenv("NEXTPNR_ICE40", str(tmp_path / "no-such-nextpnr"))
    with pytest.raises(BoardError, match=r"\$NEXTPNR_ICE40 = .* is not an executable"):
        find_tool("nextpnr-ice40")
    monkeypatch.delenv("NEXTPNR_ICE40")
    assert os.path.basename(find_tool("nextpnr-ice40")).endswith("nextpnr-ice40")


def _figures_row(scheme: str, lut: int, dsp: int, cycles: int, fmax: float) -> dict:
    """A row as :func:`shiftpool.boards.report.measure` makes it for a placed design."""
    return {"board": "icebreaker", "lanes": 2, "taps": 2, "scheme": scheme, "lut": lut,
            "logic": lut + 1000, "logic_available": 5280, "logic_bel": "ICESTORM_LC",
            "ff": 1500, "bram": 20, "bram_available": 30, "spram": 2, "dsp": dsp,
            "fmax_mhz": fmax, "target_mhz": 24.0, "cycles": cycles,
            "inf_per_s": fmax * 1e6 / cycles, "inf_per_s_per_klut": fmax * 1e6 / cycles / lut * 1e3}


def test_figures_are_ratios_to_int8_on_the_same_board():
    """Every figure over int8's; a figure int8 does not use (0 DSPs) has no ratio; the
    line under the table names where int8 is faster."""
    from shiftpool.boards.report import add_ratios, figures_table

    rows = add_ratios([_figures_row("flightnn", 4000, 0, 7000, 28.0),
                       _figures_row("int8", 2000, 4, 3500, 28.0),
                       {"board": "icebreaker", "lanes": None, "taps": None, "scheme": "pool",
                        "error": "no engine of 2x8 fits icebreaker: memory estimate: ..."}],
                      fit=True)
    flight, base, pool = rows
    assert flight["lut_vs_int8"] == 2.0 and flight["cycles_vs_int8"] == 2.0
    assert flight["inf_per_s_vs_int8"] == 0.5 and flight["inf_per_s_per_klut_vs_int8"] == 0.25
    assert flight["dsp_vs_int8"] == 0.0 and flight["bram_vs_int8"] == 1.0
    assert base["dsp_vs_int8"] == 1.0 and "lut_vs_int8" not in pool
    rows[1]["dsp"] = 0
    assert add_ratios(rows, fit=True)[0]["dsp_vs_int8"] is None
    table = figures_table(rows).splitlines()
    assert len({line.count("|") for line in table if line.startswith("|")}) == 1, table
    assert table[2].startswith("| icebreaker | flightnn | 2x2 | 4000 | 5000 / 5280 ")
    assert "| 2.00 | 1.00 | 1.00 | - | 1.00 | 2.00 | 0.50 | 0.25 |" in table[2]
    assert table[4].startswith("| icebreaker | pool | fit | does not fit: ")
    assert table[-1] == ("- icebreaker: int8 wins over flightnn in inferences per second and "
                         "inferences per second per 1000 LUT4.")


def test_report_gives_pool_models_at_their_run_time_precision():
    """``boards.report --bits B``: a pool model's cycles are its program's at ``B``
    bit-planes on the built design (fewer planes, fewer cycles: one plane a cycle),
    labelled so in the table; an int8 model's stay as built."""
    from shiftpool.boards.report import _cycles_at, _pooled, figures_table
    from shiftpool.sw.compile.cycles import inference_cycles
    from shiftpool.sw.compile.fit import fit_config
    from shiftpool.sw.compile.image import compile_model
    from shiftpool.sw.model.randmodel import random_model

    rng = np.random.default_rng(3)
    pool = random_model(rng, scheme="pool", act_bits=8, input_shape=(8, 3, 3), convs=(8,),
                        pool=False, dense=(3,), pool_size=16)
    config = fit_config(pool, lanes=2)
    report = {"config": config.as_dict()}
    full = inference_cycles(compile_model(pool, config))
    assert _pooled(pool) and not _pooled(random_model(rng, scheme="int8"))
    assert _cycles_at(pool, report, 8) == full
    # the pooled layers' beats take 3 planes instead of 8
    assert _cycles_at(pool, report, 3) < full
    with pytest.raises(ValueError, match="run-time precision 9"):
        _cycles_at(pool, report, 9)
    row = dict(_figures_row("pool", 3000, 0, _cycles_at(pool, report, 3), 30.0), bits=3)
    assert "| icebreaker | pool (3-bit acts) | 2x2 |" in figures_table([row])
