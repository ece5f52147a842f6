"""The client's side of a deployment: from a captured model to what each worker is sent.

    torch_program.py  a PyTorch model's index, calls and weights (the user's state dict laid over)
    onnx_program.py   an ONNX model's index and per-stage sub-models
    package.py        per device: the program document and the blobs it names (content-addressed)
"""

from coinfer.runtime.packaging.package import DevicePackage, Packager, packager_for

__all__ = ["DevicePackage", "Packager", "packager_for"]
