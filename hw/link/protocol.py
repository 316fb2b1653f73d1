"""The host protocol's numbers and byte layouts, shared by the gateware and the host.

``docs/protocol.md`` describes the protocol; every number it names is defined here
once. The gateware imports the enums and builds its constant replies with the
functions below; a host driver imports the same enums and uses the same functions to
build requests and parse replies. Multi-byte fields are little-endian, except the
CRC, which is sent most significant byte first (see :mod:`shiftpool.sw.host.crc`).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Sequence
from enum import IntEnum, IntFlag

from ..config import ENGINES, AcceleratorConfig
from ..memory_map import region_depths, region_widths
from ..program import REGIONS

__all__ = [
    "ARGS_BYTES", "ARGS_FIELDS", "CODE_BITS", "Capability", "Command", "DEVICE_CAPABILITIES",
    "HEADER_BYTES", "Identity", "LENGTH_BITS", "REPLY", "Reason", "STATUS_COUNTERS", "SYNC",
    "Status", "TRAILER_BYTES", "VERSION", "identify_payload", "nak_payload", "parse_identify",
    "parse_nak", "parse_rows", "parse_run_reply", "parse_status", "read_payload",
    "region_code", "reply_code", "row_bytes", "run_payload", "status_length", "write_payload",
]

#: First byte of every frame.
SYNC = 0xA5
#: Protocol version reported by IDENTIFY.
VERSION = 1
#: Bytes before the payload: sync, command, sequence, length (2).
HEADER_BYTES = 5
#: Bytes after the payload: the CRC.
TRAILER_BYTES = 2
#: Bits of the length field.
LENGTH_BITS = 16
#: Bits of a command byte and of a NAK's reason byte.
CODE_BITS = 8
#: Set in the command byte of a successful reply.
REPLY = 0x80
#: The WRITE/READ arguments: (field, struct code), little-endian.
ARGS_FIELDS = (("region", "B"), ("start", "I"), ("count", "H"))
_ARGS = struct.Struct("<" + "".join(code for _, code in ARGS_FIELDS))
#: Bytes of the WRITE/READ arguments (7).
ARGS_BYTES = _ARGS.size


class Command(IntEnum):
    """Command byte of a request; a successful reply carries ``command | REPLY``."""

    IDENTIFY = 0x01
    STATUS = 0x02
    RESET = 0x03
    WRITE = 0x10
    READ = 0x11
    RUN = 0x20
    #: A reply only: the request failed, the payload says why.
    NAK = 0xFF


class Reason(IntEnum):
    """Why a frame was refused (first byte of a NAK payload)."""

    OK = 0x00               #: not an error (never sent)
    BAD_CRC = 0x01          #: the frame's CRC does not match
    BAD_LENGTH = 0x02       #: length above max_payload, or wrong for the command
    TIMEOUT = 0x03          #: a partial frame was dropped after byte_timeout idle cycles
    UNKNOWN_COMMAND = 0x04  #: the command byte is not a request
    BAD_REGION = 0x05       #: the region code is not one of REGIONS
    REGION_OVERFLOW = 0x06  #: start row + row count exceeds the region's depth
    BUSY = 0x07             #: the accelerator is busy (an inference is running)
    ACCEL_TIMEOUT = 0x08    #: the accelerator stalled for run_timeout cycles; it was reset
    OUTPUT_OVERFLOW = 0x09  #: the accelerator sent more than out_depth outputs; it was reset


class Capability(IntFlag):
    """Bits of IDENTIFY's ``capabilities`` byte: the commands the device implements."""

    WRITE = 0x01
    READ = 0x02
    RUN = 0x04
    STATUS = 0x08
    RESET = 0x10


#: What the gateware implements.
DEVICE_CAPABILITIES = (Capability.WRITE | Capability.READ | Capability.RUN | Capability.STATUS
                       | Capability.RESET)

#: Counters of the STATUS reply, in order (16 bits each, saturating).
STATUS_COUNTERS = (
    "frames",               # good frames received
    "crc_errors",           # frames dropped for a bad CRC
    "length_errors",        # frames dropped for a length above max_payload
    "timeouts",             # partial frames dropped after byte_timeout
    "naks",                 # NAK frames sent
    "rx_framing_errors",    # UART characters with a bad stop bit
    "rx_overruns",          # UART characters lost because the receive FIFO was full
)


def reply_code(command: int) -> int:
    """The command byte of a successful reply to ``command``."""
    return int(command) | REPLY


def row_bytes(width: int) -> int:
    """Bytes of one little-endian row or word of ``width`` bits."""
    return -(-int(width) // 8)


def region_code(region: int | str) -> int:
    """The numeric code of a region given by name or code."""
    if isinstance(region, str):
        if region not in REGIONS:
            raise ValueError(f"unknown region {region!r}; known: {', '.join(REGIONS)}")
        return REGIONS.index(region)
    return int(region)


def _region_table(config: AcceleratorConfig) -> list[tuple[str, int, int]]:
    widths, depths = region_widths(config), region_depths(config)
    table = [(name, depths[name], widths[name]) for name in REGIONS]
    # Regions the engine does not have at the end of the list are left out (the
    # pool engine's indices and pool), so the other engines' reply keeps its size.
    while table and table[-1][1] == 0:
        table.pop()
    return table


# -- IDENTIFY ----------------------------------------------------------------------------

#: IDENTIFY reply before the region table: (field, struct code).
IDENTIFY_FIELDS = (
    ("version", "B"), ("config_hash", "8s"), ("engine", "B"), ("capabilities", "B"),
    ("max_payload", "H"), ("lanes", "B"), ("taps", "B"), ("act_bits", "B"),
    ("acc_width", "B"), ("code_width", "B"), ("cycle_bits", "B"), ("act_depth", "I"),
    ("out_depth", "I"), ("divisor", "I"), ("byte_timeout", "I"), ("run_timeout", "I"),
    ("regions", "B"),
)
#: One region table entry: rows and bits per row.
IDENTIFY_REGION_FIELDS = (("depth", "I"), ("width", "H"))
_IDENT = struct.Struct("<" + "".join(code for _, code in IDENTIFY_FIELDS))
_IDENT_REGION = struct.Struct("<" + "".join(code for _, code in IDENTIFY_REGION_FIELDS))


@dataclasses.dataclass(frozen=True)
class Identity:
    """What IDENTIFY reports. ``regions`` maps a region name to ``(depth, width)``."""

    version: int
    config_hash: str
    engine: str
    capabilities: Capability
    max_payload: int
    lanes: int
    taps: int
    act_bits: int
    acc_width: int
    code_width: int
    cycle_bits: int
    act_depth: int
    out_depth: int
    divisor: int
    byte_timeout: int
    run_timeout: int
    regions: dict


def identify_payload(config: AcceleratorConfig, link, config_hash: str | None = None) -> bytes:
    """The IDENTIFY reply payload of a device built from ``config`` and ``link``
    (a :class:`~shiftpool.hw.link.config.LinkConfig`)."""
    config_hash = config.hash if config_hash is None else config_hash
    try:
        digest = bytes.fromhex(config_hash)
    except (TypeError, ValueError):
        digest = b""
    if len(digest) != 8:
        raise ValueError(f"config_hash must be 16 hex digits, not {config_hash!r}")
    table = _region_table(config)
    head = _IDENT.pack(
        VERSION, digest, ENGINES.index(config.engine), int(DEVICE_CAPABILITIES),
        link.max_payload, config.lanes, config.taps, config.act_bits, config.acc_width,
        config.code_width, config.cycle_bits, config.act_depth, config.out_depth,
        link.divisor, link.byte_timeout, link.run_timeout, len(table))
    return head + b"".join(_IDENT_REGION.pack(depth, width) for _, depth, width in table)



def parse_identify(payload: bytes) -> Identity:
    """Inverse of :func:`identify_payload`; raises ``ValueError`` on a short payload."""
    if len(payload) < _IDENT.size:
        raise ValueError(f"IDENTIFY reply of {len(payload)} bytes is too short")
    values = dict(zip((name for name, _ in IDENTIFY_FIELDS), _IDENT.unpack_from(payload),
                      strict=True))
    n = values.pop("regions")
    if len(payload) != _IDENT.size + n * _IDENT_REGION.size:
        raise ValueError(f"IDENTIFY reply of {len(payload)} bytes does not hold {n} regions")
    regions = {}
    for i in range(n):
        depth, width = _IDENT_REGION.unpack_from(payload, _IDENT.size + i * _IDENT_REGION.size)
        regions[REGIONS[i] if i < len(REGIONS) else f"region{i}"] = (depth, width)
    values["config_hash"] = values["config_hash"].hex()
    engine = values["engine"]
    values["engine"] = ENGINES[engine] if engine < len(ENGINES) else f"engine{engine}"
    values["capabilities"] = Capability(values["capabilities"])
    return Identity(regions=regions, **values)


# -- STATUS ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Status:
    """What STATUS reports: accelerator busy, cycles of the last RUN, counters."""

    busy: bool
    last_cycles: int
    counters: dict


def status_length(config: AcceleratorConfig) -> int:
    """Length of the STATUS reply payload."""
    return 1 + row_bytes(config.cycle_bits) + 2 * len(STATUS_COUNTERS)


def parse_status(payload: bytes, cycle_bits: int) -> Status:
    """The STATUS reply payload: flags (bit 0 busy), last cycles, counters."""
    cb = row_bytes(cycle_bits)
    if len(payload) != 1 + cb + 2 * len(STATUS_COUNTERS):
        raise ValueError(f"STATUS reply of {len(payload)} bytes has the wrong length")
    counts = struct.unpack_from(f"<{len(STATUS_COUNTERS)}H", payload, 1 + cb)
    return Status(busy=bool(payload[0] & 1),
                  last_cycles=int.from_bytes(payload[1:1 + cb], "little"),
                  counters=dict(zip(STATUS_COUNTERS, counts, strict=True)))


# -- WRITE / READ ------------------------------------------------------------------------

def _args(region: int | str, start: int, count: int) -> bytes:
    return _ARGS.pack(region_code(region), start, count)


def write_payload(region: int | str, start: int, rows: Sequence[int], width: int) -> bytes:
    """WRITE payload: region, start row, row count, then the rows, each
    ``row_bytes(width)`` bytes little-endian."""
    nb = row_bytes(width)
    body = bytearray()
    for i, row in enumerate(rows):
        row = int(row)
        if not 0 <= row < (1 << width):
            raise ValueError(f"row {start + i} = {row:#x} does not fit in {width} bits")
        body += row.to_bytes(nb, "little")
    return _args(region, start, len(rows)) + bytes(body)


def read_payload(region: int | str, start: int, count: int) -> bytes:
    """READ payload: region, start row, row count."""
    return _args(region, start, count)


def parse_rows(payload: bytes, width: int) -> list[int]:
    """Rows of a READ reply (or of a WRITE payload after its arguments)."""
    nb = row_bytes(width)
    if len(payload) % nb:
        raise ValueError(f"{len(payload)} bytes are not whole rows of {nb} bytes")
    return [int.from_bytes(payload[i:i + nb], "little") for i in range(0, len(payload), nb)]


# -- RUN ---------------------------------------------------------------------------------

def run_payload(words: Iterable[int], act_bits: int) -> bytes:
    """RUN payload: the input words, each ``row_bytes(act_bits)`` bytes little-endian."""
    nb = row_bytes(act_bits)
    out = bytearray()
    for word in words:
        word = int(word)
        if not 0 <= word < (1 << act_bits):
            raise ValueError(f"input word {word} does not fit in {act_bits} bits")
        out += word.to_bytes(nb, "little")
    return bytes(out)


def parse_run_reply(payload: bytes, cycle_bits: int, acc_width: int) -> tuple[int, list[int]]:
    """A RUN reply: ``(cycles, outputs)``, the outputs signed."""
    cb, ob = row_bytes(cycle_bits), row_bytes(acc_width)
    if len(payload) < cb or (len(payload) - cb) % ob:
        raise ValueError(f"RUN reply of {len(payload)} bytes has the wrong length")
    cycles = int.from_bytes(payload[:cb], "little")
    outs = [int.from_bytes(payload[i:i + ob], "little", signed=True)
            for i in range(cb, len(payload), ob)]
    return cycles, outs


# -- NAK ---------------------------------------------------------------------------------

def nak_payload(reason: Reason, command: int) -> bytes:
    """NAK payload: the reason, then the command byte of the refused frame."""
    return bytes([int(reason), int(command) & 0xFF])


def parse_nak(payload: bytes) -> tuple[Reason, int]:
    """Inverse of :func:`nak_payload`."""
    if len(payload) != 2:
        raise ValueError(f"NAK payload of {len(payload)} bytes; expected 2")
    return Reason(payload[0]), payload[1]
