"""The cycle model: the accelerator's cycles per inference, predicted exactly.

It mirrors the controller's schedule in ``hw/accelerator.py``; the integration tests
check it against the RTL's cycle counter on every run.
"""

from __future__ import annotations

from .compile import Image

__all__ = ["LAYER_OVERHEAD", "DRAIN", "POOL_PER_OUTPUT", "layer_cycles", "inference_cycles"]

#: FETCH and DECODE of each layer descriptor.
LAYER_OVERHEAD = 2
#: Cycles from the last issued row until the engine's result is visible.
DRAIN = 3
#: Four reads and one write per max-pool output.
POOL_PER_OUTPUT = 5


def layer_cycles(image: Image) -> list[int]:
    """Cycles of each layer of ``image``'s program, overhead included."""
    lanes = image.config.lanes
    out = []
    for layer, plan in zip(image.model.layers, image.plans):
        if plan is None:
            c, h, w = layer.out_shape
            body = c * h * w * POOL_PER_OUTPUT
        else:
            issue = plan.steps * (plan.groups1 + 2 * plan.groups2)
            body = plan.area * (issue + plan.groups * (DRAIN + lanes))
        out.append(LAYER_OVERHEAD + body)
    return out


def inference_cycles(image: Image) -> int:
    """Cycles the accelerator's counter reports for one inference."""
    return sum(layer_cycles(image))
