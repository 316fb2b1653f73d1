"""Export the small Brevitas CNN of ``tests/data/brevitas_cnn.onnx`` as QONNX.

Not part of shiftpool's install (torch stays out of it): run it in an environment of
its own, e.g.

    python3 -m venv /tmp/bvenv
    /tmp/bvenv/bin/pip install torch==2.13.0 brevitas onnx onnxoptimizer onnxscript
    /tmp/bvenv/bin/python scripts/export_brevitas_cnn.py tests/data/brevitas_cnn.onnx

The network is what the int8 engine runs, quantized with Brevitas' power-of-two
("fixed point") quantizers: an unsigned 8-bit input, conv 3x3 1 -> 4, ReLU, max-pool,
dense 64 -> 6, ReLU, dense 6 -> 3, int8 weights per tensor, int32 biases at the
accumulator's scale, activations rounded half to even (Brevitas' ROUND). Its weights
are the seeded initialisation and its activation scales come from 20 calibration
batches of uniform noise: the test checks the import, not accuracy
(``tests/test_qonnx_import.py``).
"""

import sys

import brevitas.nn as qnn
import torch
from brevitas.export import export_qonnx
from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        act = dict(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
        weights = dict(weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias)
        self.inp = qnn.QuantIdentity(**act)
        self.conv = qnn.QuantConv2d(1, 4, 3, padding=1, return_quant_tensor=True, **weights)
        self.relu1 = qnn.QuantReLU(**act)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = qnn.QuantLinear(64, 6, bias=True, return_quant_tensor=True, **weights)
        self.relu2 = qnn.QuantReLU(**act)
        self.fc2 = qnn.QuantLinear(6, 3, bias=True, **weights)

    def forward(self, x):
        x = self.pool(self.relu1(self.conv(self.inp(x))))
        x = self.relu2(self.fc1(x.flatten(1)))
        return self.fc2(x)


def main(path: str) -> None:
    torch.manual_seed(0)
    net = Net()
    net.train()
    with torch.no_grad():
        for _ in range(20):           # calibrates the activation scales
            net(torch.rand(16, 1, 8, 8))
    net.eval()
    export_qonnx(net, torch.rand(1, 1, 8, 8), export_path=path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1])
