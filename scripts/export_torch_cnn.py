"""Export the small float PyTorch CNN of ``tests/data/torch_cnn.onnx``.

Not part of shiftpool's install (torch stays out of it): run it in an environment of
its own, e.g.

    python3 -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install torch==2.13.0 onnx onnxscript
    /tmp/tvenv/bin/python scripts/export_torch_cnn.py tests/data/torch_cnn.onnx

The network is the kind a user brings: conv 3x3 1 -> 6 with padding 1, batch norm,
ReLU, max-pool 2x2, conv 3x3 6 -> 8, batch norm, ReLU, max-pool, flatten, linear
32 -> 16, ReLU, linear 16 -> 10, on 8x8 single-channel images (the digits' shape),
exported by torch's default exporter (torch.export-based; its optimizer folds the
batch norms into the convolutions) with a dynamic batch axis, weights inside the file.
Its weights are the seeded initialisation and its batch-norm statistics seeded
values, so the export, not training, is what the test checks
(``tests/test_onnx_import.py``: the import agrees with onnxruntime, and ``compress``
fine-tunes it on the digits).
"""

import sys

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.features(x))


def main(path: str) -> None:
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
    net.eval()
    x = torch.rand(4, 1, 8, 8)
    # torch's default exporter (torch.export-based since 2.9), a dynamic batch axis
    batch = torch.export.Dim("N")
    torch.onnx.export(net, (x,), path, input_names=["x"], output_names=["y"],
                      dynamic_shapes={"x": {0: batch}}, external_data=False)
    print(f"wrote {path} (torch {torch.__version__})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "torch_cnn.onnx")
