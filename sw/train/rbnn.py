"""Recursive binary neural network training (RBNN: Guan, Zeng, Seok, arXiv 1709.05306).

An MLP ``D - H - C`` whose weights live in **storage slots** of ``N`` bits
(``slot_bits``), fixed point. Round 0 trains a binary-weight network
(BinaryConnect style): the forward and backward passes use only each slot's sign bit,
the update changes all ``N`` bits, saturating, narrowed by truncation. Then the sign
bit is frozen and the remaining ``N - 1`` bits of every slot are the next round's
weight: round ``r`` adds ``H`` hidden units whose binary weights are bit
``N - 1 - r`` of the same slots, and trains only the ``N - r`` plastic bits. The
rounds' hidden layers run side by side and their contributions are summed at the
output layer. After ``K`` rounds the network is ``D - K*H - C`` with
``K * (H*D + C*H)`` binary weights in ``H*D + C*H`` slots: ``N / K`` stored bits per
effective weight.

The layout of a slot (an unsigned ``N``-bit integer here):

```
bit N-1 .. N-r      the sign bits of rounds 0 .. r-1 (frozen; 1 = weight -1)
bit N-r-1 .. 0      round r's plastic weight, an (N-r)-bit two's complement value v;
                    its real value is v / 2**(N-r-1), in [-1, 1); its sign bit
                    (bit N-1-r) is round r's binary weight
```

Activations: the paper uses ``1.7159 * tanh(2x/3)``; the accelerator's activations
are unsigned (ReLU, then the requantizer's clamp), so the default here is ReLU
(``activation="clip"`` trains with ``clip(x, 0, 1)``, ``"tanh"`` with the paper's
activation, both in float, for comparison).
Weight scales are powers of two, so that the integer model needs only shifts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .nn import Adam, softmax_cross_entropy

__all__ = ["ACTIVATIONS", "RBNN", "RoundStats", "slot_sign", "train_rbnn", "update_slots"]

#: Hidden activations: the hardware's clipped linear unit and the paper's.
ACTIVATIONS = ("relu", "clip", "tanh")


def slot_sign(slots: np.ndarray, slot_bits: int, round_: int) -> np.ndarray:
    """Round ``round_``'s binary weights (+1 / -1, int64) from ``slots``: bit
    ``slot_bits - 1 - round_``, 1 meaning -1."""
    bit = (np.asarray(slots, dtype=np.int64) >> (slot_bits - 1 - round_)) & 1
    return 1 - 2 * bit


def _field(slots: np.ndarray, width: int) -> np.ndarray:
    """The low ``width`` bits of ``slots`` as signed ``width``-bit integers."""
    v = slots & ((1 << width) - 1)
    return np.where(v >= 1 << (width - 1), v - (1 << width), v)


def _set_field(slots: np.ndarray, width: int, v: np.ndarray) -> np.ndarray:
    mask = (1 << width) - 1
    return (slots & ~mask) | (v & mask)


def update_slots(slots: np.ndarray, width: int, step: np.ndarray) -> np.ndarray:
    """Add the real-valued ``step`` to the ``width``-bit plastic field of ``slots``:
    in units of the field's LSB (``2**-(width-1)``) truncated toward zero, then
    saturated to the field's range; the bits above the field are kept."""
    v = _field(slots, width) + np.trunc(step * (1 << (width - 1))).astype(np.int64)
    v = np.clip(v, -(1 << (width - 1)), (1 << (width - 1)) - 1)
    return _set_field(slots, width, v)


def _pow2_scale(n: int) -> int:
    """``a`` with ``2**-a`` about ``1 / sqrt(n)``: the weight scale of a fan-in ``n``."""
    return max(0, int(round(np.log2(np.sqrt(n)))))


@dataclasses.dataclass
class RoundStats:
    round: int
    test_accuracy: float
    effective_weights: int
    stored_bits_per_weight: float
    saturated: float        # share of the trained fields at a bound after the round


@dataclasses.dataclass
class RBNN:
    """A trained RBNN: the slots and biases after ``rounds`` rounds.

    Members
    -------
    hidden_slots : int64 ``[H, D]``, unsigned ``slot_bits``-bit slots of the hidden layer
    out_slots : int64 ``[C, H]``, those of the output layer
    hidden_bias : float ``[rounds, H]``, each round's hidden biases
    out_bias : float ``[C]``
    hidden_shift, out_shift : the weight scales ``2**-shift`` of the two layers
    """

    slot_bits: int
    rounds: int
    activation: str
    hidden_slots: np.ndarray
    out_slots: np.ndarray
    hidden_bias: np.ndarray
    out_bias: np.ndarray
    hidden_shift: int
    out_shift: int
    history: list = dataclasses.field(default_factory=list)

    @property
    def hidden(self) -> int:
        return self.hidden_slots.shape[0]

    def _hidden(self, x: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        w = slot_sign(self.hidden_slots, self.slot_bits, r) * 2.0 ** -self.hidden_shift
        pre = x @ w.T + self.hidden_bias[r]
        if self.activation == "relu":
            return pre, np.maximum(pre, 0.0)
        if self.activation == "clip":
            return pre, np.clip(pre, 0.0, 1.0)
        return pre, 1.7159 * np.tanh(2.0 * pre / 3.0)

    def _out_weight(self, r: int) -> np.ndarray:
        return slot_sign(self.out_slots, self.slot_bits, r) * 2.0 ** -self.out_shift

    def logits(self, x: np.ndarray, rounds: int | None = None) -> np.ndarray:
        """Outputs of the network of the first ``rounds`` rounds (default all)."""
        x = x.reshape(len(x), -1)
        out = np.zeros((len(x), self.out_slots.shape[0])) + self.out_bias
        for r in range(self.rounds if rounds is None else rounds):
            out += self._hidden(x, r)[1] @ self._out_weight(r).T
        return out

    def accuracy(self, x: np.ndarray, y: np.ndarray, rounds: int | None = None) -> float:
        return float(np.mean(self.logits(x, rounds).argmax(axis=1) == y))

    def hidden_weight(self) -> np.ndarray:
        """The effective hidden layer ``[rounds*H, D]``: round ``r``'s units are rows
        ``r*H .. r*H + H - 1``, weights ``+-2**-hidden_shift``."""
        return np.concatenate([slot_sign(self.hidden_slots, self.slot_bits, r)
                               for r in range(self.rounds)]) * 2.0 ** -self.hidden_shift

    def out_weight(self) -> np.ndarray:
        """The effective output layer ``[C, rounds*H]`` (columns in the hidden order of
        :meth:`hidden_weight`)."""
        return np.concatenate([slot_sign(self.out_slots, self.slot_bits, r)
                               for r in range(self.rounds)], axis=1) * 2.0 ** -self.out_shift


def train_rbnn(x_train, y_train, x_test, y_test, *, rounds: int = 7, slot_bits: int = 16,
               hidden: int = 100, epochs: int = 20, batch_size: int = 64, lr: float = 2e-3,
               activation: str = "relu", seed: int = 0, progress=None,
               eval_name: str = "test") -> RBNN:
    """Train ``rounds`` RBNN rounds of ``hidden`` units each (see the module docstring).

    ``rounds=1`` is the plain binary-weight network of the same storage (the paper's
    comparison); ``progress`` is called with a line per round, naming the accuracy on
    ``x_test`` by ``eval_name``.

    Raises
    ------
    ValueError
        If ``slot_bits`` cannot hold ``rounds`` rounds (each round needs its sign bit
        and at least one more bit while it trains: ``slot_bits >= rounds + 1``).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is unknown; allowed: "
                         f"{', '.join(ACTIVATIONS)}")
    if rounds < 1 or slot_bits < rounds + 1:
        raise ValueError(f"slot_bits = {slot_bits} cannot hold {rounds} rounds: each round "
                         f"trains a weight of at least 2 bits (its sign and one more), so "
                         f"slot_bits must be >= rounds + 1 = {rounds + 1}")
    lsb = 2.0 ** -(slot_bits - rounds)
    if lr < lsb:
        raise ValueError(f"lr = {lr:g} is below one LSB ({lsb:g}) of the last round's "
                         f"{slot_bits - rounds + 1}-bit field: its updates (about lr each) "
                         f"would all truncate to 0; raise lr or slot_bits")
    rng = np.random.default_rng(seed)
    x_train = x_train.reshape(len(x_train), -1)
    x_test = x_test.reshape(len(x_test), -1)
    d, c = x_train.shape[1], int(max(y_train.max(), y_test.max())) + 1
    top = 1 << slot_bits
    net = RBNN(slot_bits=slot_bits, rounds=0, activation=activation,
               hidden_slots=rng.integers(0, top, size=(hidden, d), dtype=np.int64),
               out_slots=rng.integers(0, top, size=(c, hidden), dtype=np.int64),
               hidden_bias=np.zeros((rounds, hidden)), out_bias=np.zeros(c),
               hidden_shift=_pow2_scale(d), out_shift=_pow2_scale(hidden))
    for r in range(rounds):
        width = slot_bits - r                          # the plastic field of this round
        net.rounds = r + 1
        frozen = net.logits(x_train, rounds=r) - net.out_bias
        opt = Adam([np.zeros((hidden, d)), np.zeros((c, hidden)), np.zeros(hidden),
                    np.zeros(c)], lr=lr)
        for _ in range(epochs):
            order = rng.permutation(len(x_train))
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                xb = x_train[idx]
                pre, h = net._hidden(xb, r)
                wo = net._out_weight(r)
                logits = frozen[idx] + h @ wo.T + net.out_bias
                _, g = softmax_cross_entropy(logits, y_train[idx])
                g_wo = g.T @ h * 2.0 ** -net.out_shift
                g_h = g @ wo
                if activation == "relu":
                    g_pre = g_h * (pre > 0)
                elif activation == "clip":
                    g_pre = g_h * ((pre > 0) & (pre < 1))
                else:
                    g_pre = g_h * 1.7159 * (2.0 / 3.0) / np.cosh(2.0 * pre / 3.0) ** 2
                g_wh = g_pre.T @ xb * 2.0 ** -net.hidden_shift
                steps = opt.deltas([g_wh, g_wo, g_pre.sum(axis=0), g.sum(axis=0)])
                # The weights: fixed point, the step truncated to the field's LSB (the
                # real value of a field step is 2**-(width-1)), saturating.
                net.hidden_slots = update_slots(net.hidden_slots, width, steps[0])
                net.out_slots = update_slots(net.out_slots, width, steps[1])
                net.hidden_bias[r] += steps[2]
                net.out_bias += steps[3]
        bound = 1 << (width - 1)
        fields = np.concatenate([_field(net.hidden_slots, width).ravel(),
                                 _field(net.out_slots, width).ravel()])
        stats = RoundStats(
            round=r, test_accuracy=net.accuracy(x_test, y_test),
            effective_weights=(r + 1) * (hidden * d + c * hidden),
            stored_bits_per_weight=slot_bits / (r + 1),
            saturated=float(np.mean((fields == -bound) | (fields == bound - 1))))
        net.history.append(stats)
        if progress:
            progress(f"round {r + 1}/{rounds}: {eval_name} accuracy {stats.test_accuracy:.4f}, "
                     f"{stats.effective_weights} binary weights, "
                     f"{stats.stored_bits_per_weight:.2f} stored bits per weight")
    return net
