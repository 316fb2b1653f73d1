"""RBNN: recursive binary networks that recycle weight storage (Guan, Zeng, Seok,
arXiv 1709.05306; ``../shared/SEEDS.md`` section 3).

The float model gives the shape, an MLP ``D - H - C`` (dense, ReLU, dense); the
scheme trains from scratch with :func:`shiftpool.sw.train.rbnn.train_rbnn`: ``rounds``
rounds of ``H`` hidden units in the same ``slot_bits``-bit slots. The integer model
stores the slots as they are (``docs/model-format.md``, rbnn layers): the hidden
layer's ``rounds * H`` units and the output layer's ``rounds * H`` inputs are read
from ``H x D`` and ``C x H`` slots, one sign bit per round.
"""

from __future__ import annotations

import numpy as np

from ..train.nn import Dense, FloatModel, ReLU
from ..train.rbnn import train_rbnn
from .registry import Option, Quantizer, Scheme, register

__all__ = ["RBNN", "RBNNQuantizer"]


def _mlp_shape(model: FloatModel) -> tuple[int, int, int]:
    kinds = [layer.kind for layer in model.layers]
    if kinds != ["dense", "relu", "dense"]:
        raise ValueError(f"float_model: rbnn trains an MLP D - H - C (dense, relu, dense); "
                         f"this model's layers are {', '.join(kinds)}")
    first, last = model.layers[0], model.layers[2]
    return first.in_features, first.out_features, last.out_features


class RBNNQuantizer(Quantizer):
    """Trains the RBNN (:meth:`fit`) and stores its slots (:meth:`integerize`)."""

    def __init__(self, model, options, seed):
        super().__init__(model, options, seed)
        _mlp_shape(model)
        self.net = None

    def fit(self, model, x, y, values, seed, progress):
        _, hidden, _ = _mlp_shape(model)
        if values["epochs"] < 1:
            raise ValueError("epochs: rbnn trains its network from scratch, round by round; "
                             "it needs at least 1 epoch per round (0 would leave it random)")
        say = (lambda line: print(f"[rbnn] {line}")) if progress else None
        self.net = net = train_rbnn(
            x, y, x, y, rounds=values["rounds"], slot_bits=values["slot_bits"],
            hidden=hidden, epochs=values["epochs"], batch_size=values["batch_size"],
            lr=values["slot_lr"], seed=seed, progress=say, eval_name="training")
        first = Dense(net.hidden_slots.shape[1], net.rounds * hidden)
        first.weight[...] = net.hidden_weight()
        first.bias[...] = net.hidden_bias.reshape(-1)
        last = Dense(net.rounds * hidden, net.out_slots.shape[0])
        last.weight[...] = net.out_weight()
        last.bias[...] = net.out_bias
        return FloatModel([first, ReLU(), last], model.input_shape, meta=model.meta)

    def integerize(self, index, weight):
        net = self.net
        hidden = index == 0
        fields = {"slots": (net.hidden_slots if hidden else net.out_slots).astype(np.uint16),
                  "slot_bits": net.slot_bits, "rounds": net.rounds,
                  "expand": "outputs" if hidden else "inputs"}
        return fields, net.hidden_shift if hidden else net.out_shift

    def meta(self, qm):
        net = self.net
        slots = int(net.hidden_slots.size + net.out_slots.size)
        return {"slots": slots, "effective_weights": slots * net.rounds,
                "stored_bits_per_weight": net.slot_bits / net.rounds,
                "train_accuracy_per_round": [s.test_accuracy for s in net.history]}


RBNN = register(Scheme(
    name="rbnn", summary="recursive binary network: rounds of binary weights recycled "
    "from the same N-bit storage slots (an MLP)", stored_as="rbnn", engine="binary",
    options=(
        Option("rounds", int, 7, 1, 15, "rbnn: training rounds K, each adding the float "
               "model's hidden units with binary weights in the same slots"),
        Option("slot_bits", int, 16, 2, 16, "rbnn: bits N of a storage slot (N/K stored "
               "bits per binary weight)"),
        Option("slot_lr", float, 4e-3, 1e-6, None, "rbnn: learning rate of the fixed-point "
               "slot training (Adam; at least one LSB of the last round's field)"),
    ), quantizer=RBNNQuantizer, sweep=tuple((f"rounds={r}", {"rounds": r}) for r in (1, 3))))
