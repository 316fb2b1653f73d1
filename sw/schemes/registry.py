"""The scheme registry: every compression scheme is one :class:`Scheme` object.

A scheme module in this package (``flightnn.py``, ``int8.py``, ``pool.py``, ...)
builds its :class:`Scheme` and passes it to :func:`register`; nothing else names it.
The command line (``--scheme`` choices, each option's flag, default, range and help),
:func:`~shiftpool.sw.schemes.compress.compress`, the model-file reader (which stored
schemes exist), the compiler (which engine runs a stored scheme) and ``shiftpool
bench`` all read the registry. Adding a scheme is adding a module that registers one.

The registry fills itself on first use by importing every module of this package, so
importing it costs nothing and no module has to list the schemes.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from ..model.file import QuantModel
    from ..train.nn import FloatModel, WeightTransform

__all__ = ["BASELINE", "COMMON_OPTIONS", "Option", "Quantizer", "Scheme", "engine_for",
           "get_scheme", "register", "schemes", "stored_schemes"]


@dataclasses.dataclass(frozen=True)
class Option:
    """One knob of compression, declared once: its keyword, type, default, range and
    help. The command line derives its flag (``--pool-size`` for ``pool_size``) and
    :meth:`check` is the only range check.

    Parameters
    ----------
    name : str
        Keyword argument of :func:`~shiftpool.sw.schemes.compress.compress`.
    kind : type
        ``int``, ``float`` or ``str``.
    default : int or float or str
        Value when the option is not given.
    lo, hi : int or float or None
        Allowed range, both ends included; ``None``: unbounded on that side.
    help : str
        One phrase for ``--help`` (the default and range are appended).
    choices : tuple of str
        ``str`` options: the allowed values (the command line's ``choices``).
    """

    name: str
    kind: type
    default: Any
    lo: Any = None
    hi: Any = None
    help: str = ""
    choices: tuple = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def allowed(self) -> str:
        if self.choices:
            return ", ".join(self.choices)
        if self.lo is not None and self.hi is not None:
            return f"{self.lo}..{self.hi}"
        if self.lo is not None:
            return f"{self.lo} or more"
        return f"{self.hi} or less" if self.hi is not None else "any"

    def check(self, value) -> Any:
        """``value`` as this option's type; ValueError naming the option if it is of
        the wrong type or out of range."""
        import numpy as np

        if self.kind is str:
            if value not in self.choices:
                raise ValueError(f"{self.name} must be one of {self.allowed}, not {value!r}")
            return value
        ok_type = (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                   if self.kind is int else
                   isinstance(value, (int, float, np.integer, np.floating))
                   and not isinstance(value, bool) and value == value)
        if not ok_type or (self.lo is not None and value < self.lo) or (
                self.hi is not None and value > self.hi):
            kind = "an integer" if self.kind is int else "a number"
            within = f"in {self.allowed}" if self.lo is not None and self.hi is not None \
                else f"({self.allowed})"
            raise ValueError(f"{self.name} ({self.flag}) must be {kind} {within}, not "
                             f"{value!r}")
        return self.kind(value)


#: Options every scheme takes: the activation width and the fine-tuning schedule.
COMMON_OPTIONS = (
    Option("act_bits", int, 8, 2, 16, "activation bits; inputs get act_bits fraction bits"),
    Option("epochs", int, 10, 0, None, "quantization-aware fine-tuning epochs (0 skips it)"),
    Option("batch_size", int, 32, 1, None, "fine-tuning batch size"),
    Option("lr", float, 5e-4, 1e-12, None, "fine-tuning learning rate (Adam)"),
)


class Quantizer:
    """How one scheme turns a float model's MAC layers into integer layers.

    :func:`~shiftpool.sw.schemes.compress.compress` makes one per run with the float
    model being fine-tuned (a copy), the scheme's options and the seed; it fine-tunes
    with :attr:`transform` in the loop, then calls :meth:`begin` on the new integer
    model, :meth:`integerize` on every MAC layer in order and :meth:`meta` at the end.
    """

    #: The fake quantization applied to the weights while fine-tuning.
    transform: WeightTransform

    def __init__(self, model: FloatModel, options: Mapping[str, Any], seed: int):
        self.options = dict(options)

    def fit(self, model: FloatModel, x: np.ndarray, y: np.ndarray, values: Mapping[str, Any],
            seed: int, progress: bool) -> FloatModel:
        """Train before integerizing; returns the float model to integerize. The
        default fine-tunes ``model`` in place with :attr:`transform` in the loop; a
        scheme that trains its own network (RBNN) returns another one."""
        from ..train.nn import train

        train(model, x, y, epochs=values["epochs"], batch_size=values["batch_size"],
              lr=values["lr"], seed=seed, progress=progress, weight_transform=self.transform)
        return model

    def model_fields(self) -> dict:
        """Model-wide fields of the :class:`QuantModel` (``exp_bits``, ``pool``, ...),
        known once fine-tuning is over."""
        return {}

    def begin(self, qm: QuantModel) -> None:
        """Called once on the integer model, before its first layer."""

    def integerize(self, index: int, weight: np.ndarray) -> tuple[dict, int]:
        """Integer fields of float layer ``index`` (``weight``: its fine-tuned float
        weights) and the power ``wf`` of its scale: a dot product of the integer
        layer with activations of ``f`` fraction bits has ``f + wf`` fraction bits."""
        raise NotImplementedError

    def mac(self, layer, a: np.ndarray) -> np.ndarray:
        """The dot products of integer ``layer`` (as :meth:`integerize` made it) with
        integer activations ``a``, without the bias: what the golden model computes."""
        from . import golden

        return golden.mac(layer, a)

    def meta(self, qm: QuantModel) -> dict:
        """What the model file's ``meta`` records about this scheme's result (called on
        the finished, validated model)."""
        return {}


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One compression scheme.

    Parameters
    ----------
    name : str
        What users type (``--scheme NAME``).
    summary : str
        One line for ``--help`` and the docs.
    stored_as : str
        The model file's ``scheme`` field for its results (``lightnn2`` models are
        stored as ``flightnn``: the same file and engine, another quantizer).
    engine : str
        The accelerator engine that runs its models.
    options : tuple of Option
        Its own knobs (besides :data:`COMMON_OPTIONS`).
    quantizer : type
        Its :class:`Quantizer` subclass.
    sweep : tuple of (str, dict)
        The settings worth comparing, each a label (``"k1=0.9"``; ``""``: the
        defaults) and the options it sets: what ``shiftpool explore`` compresses.
    run_bits : tuple of int
        Activation precisions its engine switches to at run time, on the same model
        and weights (``run --bits``); ``bench`` and ``explore`` measure each. Empty:
        the model's own precision only.
    """

    name: str
    summary: str
    stored_as: str
    engine: str
    options: tuple[Option, ...]
    quantizer: type
    sweep: tuple[tuple[str, Mapping[str, Any]], ...] = (("", {}),)
    run_bits: tuple[int, ...] = ()

    def variants(self) -> list[tuple[str, Mapping[str, Any]]]:
        """``(label, options)`` per entry of :attr:`sweep`, the label prefixed with the
        scheme's name (``"flightnn k1=0.9"``, ``"int8"``)."""
        return [(f"{self.name} {label}".strip(), options) for label, options in self.sweep]

    def option_values(self, given: Mapping[str, Any]) -> dict:
        """This scheme's and the common options: the ``given`` values (checked) or
        the defaults. Entries of ``given`` that are options of other schemes are
        ignored (one set of options can drive several schemes); an entry no scheme
        knows is a ValueError."""
        known = {o.name for s in schemes().values() for o in s.options}
        known.update(o.name for o in COMMON_OPTIONS)
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"unknown compression option(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(known))}")
        return {o.name: o.check(given[o.name]) if o.name in given else o.default
                for o in (*COMMON_OPTIONS, *self.options)}


#: The scheme every figure is a ratio to, measured in the same run.
BASELINE = "int8"

_SCHEMES: dict[str, Scheme] = {}
_discovered = False


def register(scheme: Scheme) -> Scheme:
    """Add ``scheme`` to the registry (once per name); returns it."""
    if scheme.name in _SCHEMES and _SCHEMES[scheme.name] != scheme:
        raise ValueError(f"scheme {scheme.name!r} is registered twice")
    _SCHEMES[scheme.name] = scheme
    return scheme


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{info.name}")


def schemes() -> dict[str, Scheme]:
    """Every registered scheme by name, in registration order."""
    _discover()
    return dict(_SCHEMES)


def get_scheme(name: str) -> Scheme:
    """The scheme called ``name``; ValueError naming the allowed ones otherwise."""
    found = schemes().get(name)
    if found is None:
        raise ValueError(f"scheme {name!r} is unknown; allowed: {', '.join(schemes())}")
    return found


def stored_schemes() -> tuple[str, ...]:
    """The model file's ``scheme`` values: what the registered schemes store."""
    return tuple(dict.fromkeys(s.stored_as for s in schemes().values()))


def engine_for(stored: str) -> str | None:
    """The engine that runs models stored as scheme ``stored`` (None if none does)."""
    return next((s.engine for s in schemes().values() if s.stored_as == stored), None)
