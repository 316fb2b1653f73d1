"""The one configuration object of an accelerator.

Every width in the gateware, the compiler and the cycle model is derived from an
:class:`AcceleratorConfig`; nothing else carries a width.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

__all__ = ["AcceleratorConfig", "ConfigError", "DEFAULT_LANES", "DEFAULT_TAPS", "ENGINES",
           "ENGINE_FIELDS", "KERNEL_TAPS", "MAX_MLG_BI", "MAX_POOL_SIZE", "POOL_GROUP",
           "POOL_TABLES", "WRITEBACKS", "ceil_log2", "check_pool_table"]

#: The engine size (lanes, taps) every command and function takes unless told (the
#: demo's): fit_config, the CLI, the simulated device, the board builds.
DEFAULT_LANES, DEFAULT_TAPS = 2, 4

#: Fields only the pool engine uses.
POOL_FIELDS = ("pool_size", "pool_bits", "lut_bits", "index_depth", "precompute_steps",
               "pool_table", "int8_path")

#: Organisations of the pool engine's lookup table (``docs/arithmetic.md`` §12.3):
#: ``"full"``, one table of 256 patterns per pool vector; ``"half"``, two tables of 16
#: (the low and the high nibble of the pattern) whose entries are summed.
POOL_TABLES = ("full", "half")

#: How the write-back unit writes a lane group's results (``writeback``): ``"lane"``,
#: one lane per cycle (one bias adder and one requantizer); ``"word"``, in each cycle
#: every lane that lands in the same activation word (a bias adder and a requantizer
#: per lane), where a layer's consecutive channels are consecutive lanes of a word.
WRITEBACKS = ("lane", "word")

#: Fields only the in-situ (MLG) engine and its weight generator use.
MLG_FIELDS = ("mlg_qb", "mlg_qu", "mlg_qv", "mlg_bi", "mlg_bc", "mlg_w_bits", "mlg_v_depth",
              "mlg_u_depth", "mlg_b_depth", "mlg_w1_depth")

#: Most level-1 bases ``Bi`` (level 1 needs ``Bi < kk = 9``).
MAX_MLG_BI = 8

#: Positions of a 3x3 kernel: the level-1 bases' length.
KERNEL_TAPS = 9

#: The engines the accelerator can be generated with (in the order of their IDENTIFY
#: codes), each with the config fields only it uses: another engine's hash leaves
#: them out, since they do not change its hardware. The gateware classes register
#: themselves in :mod:`shiftpool.hw.engines`.
ENGINE_FIELDS = {
    "shiftadd": ("exp_bits",),
    "int8": (),
    "pool": POOL_FIELDS,
    "binary": ("slot_bits",),
    "insitu": MLG_FIELDS,
}

#: Engines the accelerator can be generated with.
ENGINES = tuple(ENGINE_FIELDS)

#: Most vectors a pool engine's lookup table holds (``pool_size``).
MAX_POOL_SIZE = 256

#: Activations in one pool group (the pool vectors' length); the pool engine's taps.
POOL_GROUP = 8


class ConfigError(ValueError):
    """An accelerator configuration or a model that does not fit it."""


def ceil_log2(n: int) -> int:
    """Smallest ``w`` with ``2**w >= n`` (0 for ``n <= 1``)."""
    return max(0, (int(n) - 1).bit_length())


def check_pool_table(value, where: str = "config field 'pool_table'") -> str:
    """``value`` if it is one of :data:`POOL_TABLES`; else a ValueError (``ConfigError``)
    naming ``where`` and the allowed values."""
    if value not in POOL_TABLES:
        raise ConfigError(f"{where} = {value!r} is unknown; allowed: {', '.join(POOL_TABLES)} "
                          f"(full: 256-entry tables, half: two 16-entry tables per vector)")
    return value


def _check_range(name: str, value, lo: int, hi: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"config field {name!r} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        allowed = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ConfigError(f"config field {name!r} = {value} is out of range; allowed: {allowed}")


@dataclasses.dataclass(frozen=True)
class AcceleratorConfig:
    """Parameters of one generated accelerator.

    Parameters
    ----------
    engine : str
        ``"shiftadd"`` (FLightNN power-of-two terms), ``"int8"`` (the baseline MAC) or
        ``"pool"`` (the bit-serial weight-pool lookup engine, with a bit-serial int8
        path for layers that are not pooled).
    lanes : int
        Output channels computed in parallel.
    taps : int
        Input activations consumed per cycle by each lane.
    act_bits : int
        Width of the unsigned activations held on chip.
    exp_bits : int
        Width ``E`` of a shift-add term's exponent; exponents are ``0 .. 2**E - 1``.
        Ignored by the int8 engine.
    max_fan_in : int
        Largest dot-product length (``Ci*k*k``) any layer may have; sets the
        accumulator width so that it cannot overflow.
    act_depth : int
        Words in each of the two ping-pong activation buffers.
    weight_depth : int
        Rows (``lanes*taps`` weight codes each) in the weight memory.
    tap_depth : int
        Rows (``taps`` gather entries each) in the tap table.
    bias_depth : int
        Entries in the bias memory (one per output channel of every layer).
    program_depth : int
        Layer descriptors the program memory holds.
    out_depth : int
        Words in the output memory (outputs of the final layer).
    max_dim : int
        Largest feature-map height or width.
    cycle_bits : int
        Width of the cycle counter reported after each inference.
    pool_size : int
        Pool engine: vectors ``S`` in the weight pool, a power of two (2..256).
    pool_bits : int
        Pool engine: width of the signed pool values.
    lut_bits : int
        Pool engine: width of the signed lookup-table entries.
    index_depth : int
        Pool engine: rows (``lanes`` pool indices each) in the index memory.
    slot_bits : int
        Binary engine: bits of an RBNN storage slot, the weight code (2..16); round
        ``r`` reads the slot's bit ``slot_bits - 1 - r`` as its weight's sign.
    precompute_steps : int
        Pool engine: most steps (8-vectors per output) of a layer run in precompute
        mode; 0 builds no precompute store. Needs ``lanes`` a power of two
        (``pool_size`` is one).
    mlg_qb, mlg_qu, mlg_qv : int
        In-situ engine: the largest bit widths (2..8) of the MLG bases ``B``, the
        coefficients ``U`` (and a stored ``W1``) and the mixing coefficients ``V``
        (``docs/arithmetic.md`` section 14); the stored values are odd integers within
        ``+-(2**q - 1)``, ``q + 1`` signed bits.
    mlg_bi : int
        In-situ engine: the largest level-1 basis size ``Bi`` (1..8).
    mlg_bc : int
        In-situ engine: the largest level-2 basis size ``Bc`` (1..4096).
    mlg_w_bits : int
        In-situ engine: signed bits of a generated weight; 0 (the default) takes the
        paper's width for the largest ``Bi`` and ``Bc`` with both levels in use
        (:attr:`mlg_w_width`). ``fit_config`` sets the widest any layer of the model can
        generate (``docs/arithmetic.md`` §14.4), which the compiler checks.
    mlg_v_depth, mlg_u_depth, mlg_b_depth, mlg_w1_depth : int
        In-situ engine: rows in each of the generator's four stores (V, U, B, W1;
        ``hw/generator_layout.py``). The accelerator also holds one layer's generated
        weight rows at a time, ``weight_depth`` rows (a working buffer, not loaded).
    pool_table : str
        Pool engine: the lookup table's organisation, one of :data:`POOL_TABLES`:
        ``"full"`` (``256 * pool_size`` entries per lane) or ``"half"`` (two tables of
        ``16 * pool_size`` entries per lane, summed per lookup).
    writeback : str
        How the write-back unit writes a lane group's results, one of
        :data:`WRITEBACKS`: ``"lane"`` (one lane per cycle) or ``"word"`` (in each
        cycle all the group's lanes that go to one activation word, for layers whose
        next channel is the next lane; the final layer and flat maps of more than one
        position still go lane by lane). ``fit_config`` picks ``"word"`` where it saves
        cycles on the model.
    int8_path : bool
        Pool engine: build the int8 path (a bit-serial adder tree per lane) and the
        ``weights`` region, for the layers of a pool model that are not pooled
        (``True``, the default). ``False`` leaves them out (the region has depth 0):
        ``fit_config`` sets it for a model whose MAC layers are all pooled, and
        ``compile_model`` refuses an int8 layer on such a config.
    maxpool : bool
        Build the max-pool unit and its window walk (``True``, the default).
        ``False`` leaves them out (624 LUT4 of the MNIST MLP's 2 x 8 controller on
        iCE40): ``fit_config`` sets it for a model without max-pool layers, and
        ``compile_model`` refuses a max-pool layer on such a config.
    """

    engine: str = "shiftadd"
    # A bare AcceleratorConfig() is any engine's (taps 8 suits the pool engine too); the
    # engine size commands and functions pick is DEFAULT_LANES x DEFAULT_TAPS.
    lanes: int = 4
    taps: int = 8
    act_bits: int = 8
    exp_bits: int = 3
    max_fan_in: int = 256
    act_depth: int = 1024
    weight_depth: int = 512
    tap_depth: int = 128
    bias_depth: int = 64
    program_depth: int = 8
    out_depth: int = 16
    max_dim: int = 32
    cycle_bits: int = 32
    pool_size: int = 64
    pool_bits: int = 8
    lut_bits: int = 16
    index_depth: int = 512
    precompute_steps: int = 0
    slot_bits: int = 16
    rounding: str = "half_up"
    mlg_qb: int = 3
    mlg_qu: int = 6
    mlg_qv: int = 3
    mlg_bi: int = 2
    mlg_bc: int = 64
    mlg_w_bits: int = 0
    mlg_v_depth: int = 256
    mlg_u_depth: int = 128
    mlg_b_depth: int = 64
    mlg_w1_depth: int = 256
    pool_table: str = "full"
    writeback: str = "lane"
    maxpool: bool = True
    int8_path: bool = True

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ConfigError(
                f"config field 'engine' = {self.engine!r} is unknown; "
                f"allowed: {', '.join(ENGINES)}")
        _check_range("lanes", self.lanes, 1, 64)
        _check_range("taps", self.taps, 1, 64)
        _check_range("act_bits", self.act_bits, 2, 16)
        _check_range("exp_bits", self.exp_bits, 1, 4)
        _check_range("max_fan_in", self.max_fan_in, 1, 1 << 20)
        _check_range("act_depth", self.act_depth, 1)
        _check_range("weight_depth", self.weight_depth, 1)
        _check_range("tap_depth", self.tap_depth, 1)
        _check_range("bias_depth", self.bias_depth, 1)
        _check_range("program_depth", self.program_depth, 1, 256)
        _check_range("out_depth", self.out_depth, 1)
        _check_range("max_dim", self.max_dim, 1, 4096)
        _check_range("cycle_bits", self.cycle_bits, 8, 64)
        _check_range("pool_size", self.pool_size, 2, MAX_POOL_SIZE)
        _check_range("pool_bits", self.pool_bits, 2, 16)
        _check_range("lut_bits", self.lut_bits, 2, 32)
        _check_range("index_depth", self.index_depth, 1)
        _check_range("precompute_steps", self.precompute_steps, 0)
        _check_range("slot_bits", self.slot_bits, 2, 16)
        if self.rounding not in ("half_up", "half_even"):
            raise ConfigError(f"config field 'rounding' = {self.rounding!r} is unknown; "
                              f"allowed: half_up, half_even")
        for name in ("mlg_qb", "mlg_qu", "mlg_qv"):
            _check_range(name, getattr(self, name), 2, 8)
        _check_range("mlg_bi", self.mlg_bi, 1, MAX_MLG_BI)
        _check_range("mlg_bc", self.mlg_bc, 1, 4096)
        if self.mlg_w_bits:
            _check_range("mlg_w_bits", self.mlg_w_bits, 2, 64)
        for name in ("mlg_v_depth", "mlg_u_depth", "mlg_b_depth", "mlg_w1_depth"):
            _check_range(name, getattr(self, name), 1)
        check_pool_table(self.pool_table)
        if self.writeback not in WRITEBACKS:
            raise ConfigError(f"config field 'writeback' = {self.writeback!r} is unknown; "
                              f"allowed: {', '.join(WRITEBACKS)} (lane: one lane per cycle, "
                              f"word: the lanes of one activation word per cycle)")
        for name in ("maxpool", "int8_path"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config field {name!r} = {getattr(self, name)!r} must be "
                                  f"true or false")
        if self.precompute_steps and (self.lanes & (self.lanes - 1)
                                      or self.lanes > self.pool_size):
            raise ConfigError(f"config field 'lanes' = {self.lanes}: precompute mode "
                              f"(precompute_steps > 0) needs a power of two no larger than "
                              f"pool_size = {self.pool_size}")
        if self.pool_size & (self.pool_size - 1):
            raise ConfigError(f"config field 'pool_size' = {self.pool_size} must be a power "
                              f"of two (it is the low part of a lookup-table address)")
        if self.engine == "pool" and self.taps != POOL_GROUP:
            raise ConfigError(f"config field 'taps' = {self.taps}: the pool engine takes one "
                              f"group of {POOL_GROUP} activations per beat; set taps={POOL_GROUP}")

    # -- derived widths -------------------------------------------------------------

    @property
    def code_width(self) -> int:
        """Bits of one weight code: ``exp + sign + nonzero``, a storage slot (the binary
        engine) or a signed byte (the int8 engine, and the pool engine's int8 path)."""
        if self.engine == "binary":
            return self.slot_bits
        if self.engine == "insitu":
            return self.mlg_w_width
        return self.exp_bits + 2 if self.engine == "shiftadd" else 8

    @property
    def mlg_w1_width(self) -> int:
        """Signed bits of a level-1 weight ``W1 = U @ B``: ``qu + qb + ceil(log2 Bi) + 1``
        (``|W1| <= Bi (2**qu - 1)(2**qb - 1)``); it also holds a stored ``W1`` (``qu + 1``)."""
        return self.mlg_qu + self.mlg_qb + ceil_log2(self.mlg_bi) + 1

    @property
    def mlg_w_width(self) -> int:
        """Signed bits of a generated weight ``W = V @ W1``, the in-situ engine's code:
        ``mlg_w_bits`` if set, else ``qv + ceil(log2 Bc)`` more than ``W1`` (``|W| <= Bc
        (2**qv - 1) max|W1|``)."""
        if self.mlg_w_bits:
            return self.mlg_w_bits
        return self.mlg_w1_width + self.mlg_qv + ceil_log2(self.mlg_bc)

    @property
    def precompute(self) -> bool:
        """The pool engine has a precompute store."""
        return self.engine == "pool" and self.precompute_steps > 0

    @property
    def fill_rows(self) -> int:
        """Precompute mode: rows of ``lanes`` values per step, ``pool_size / lanes``."""
        return self.pool_size // self.lanes

    @property
    def entry_bits(self) -> int:
        """Signed width of one lookup-table entry as the pool engine's lookup path adds
        it: ``lut_bits`` (full table), ``lut_bits + 1`` (half tables: the sum of two
        ``lut_bits``-bit half entries)."""
        return self.lut_bits + (self.pool_table == "half")

    @property
    def index_bits(self) -> int:
        """Bits of one pool index (pool engine)."""
        return max(1, ceil_log2(self.pool_size))

    @property
    def weight_log2(self) -> int:
        """``log2`` of the largest weight magnitude: ``|w| <= 2**weight_log2``.

        A shift-add weight is at most two terms of ``2**(2**E - 1)``; an int8 weight
        is in ``-127..127``. A pool engine's lookup entry (the weight of a whole group
        of 8 activations) is at most ``2**(entry_bits - 1)`` in magnitude, and its int8
        path takes int8 weights. A binary weight is +-1.
        """
        if self.engine == "shiftadd":
            return 1 << self.exp_bits
        if self.engine == "pool":
            return max(7, self.entry_bits - 1)
        if self.engine == "binary":
            return 0
        if self.engine == "insitu":
            return self.mlg_w_width - 1
        return 7

    @property
    def sum_log2(self) -> int:
        """Bound on a dot product: ``|sum| < 2**sum_log2`` for any accepted layer."""
        return self.act_bits + self.weight_log2 + ceil_log2(self.max_fan_in)

    @property
    def acc_width(self) -> int:
        """Signed width holding a dot product plus a bias of ``|b| < 2**sum_log2``."""
        return self.sum_log2 + 2

    @property
    def max_shift(self) -> int:
        """Largest requantization shift the program may ask for."""
        return self.acc_width

    def as_dict(self) -> dict:
        """The fields, flat, without those only other engines use (``exp_bits`` stays)
        (the form manifests and reports store; :meth:`from_dict` reads it back)."""
        fields = dataclasses.asdict(self)
        # exp_bits is kept for every engine (manifests have always carried it).
        for engine, names in ENGINE_FIELDS.items():
            if engine not in (self.engine, "shiftadd"):
                for name in names:
                    del fields[name]
        return fields

    @property
    def hash(self) -> str:
        """Short stable hash of the configuration (16 hex digits): of every field but
        those only other engines use (:data:`ENGINE_FIELDS`)."""
        others = {name for engine, names in ENGINE_FIELDS.items() if engine != self.engine
                  for name in names}
        fields = {name: value for name, value in dataclasses.asdict(self).items()
                  if name not in others}
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, fields: dict) -> AcceleratorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ConfigError(
                f"unknown config field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(known))}")
        return cls(**fields)
