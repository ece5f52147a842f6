"""What the client sends each device: the program of its stages and the blobs they read.

A `Packager` holds one model at one batch size (its program, built once) and the sha256 of every
blob it may send (computed the first time a device needs it). `package(route)` gives the device's
program document (coinfer.runtime.program's index of the whole program, plus the calls or the
ONNX sub-models of the device's stages and the weights those read) and the blobs it names;
`blob_bytes(sha256)` makes a blob's bytes when a worker asks for it, so the client never holds
more than one blob beyond the model itself.

The program document, which goes in the deploy message:

    {"kind": "torch", "index": {...}, "calls": {OP: CALL}, "weights": {REF: WEIGHT},
     "states": {REF: {"dtype": "float32", "shape": [...]}}}     (states: a causal LM's step program only)
    {"kind": "onnx", "index": {...}, "stages": {"INDEX": {"model": SHA256, "feeds": {NAME: VALUE},
                                                           "weights": {NAME: WEIGHT}}}}

with WEIGHT = {"sha256": ..., "dtype": "float32", "shape": [...]}; CALL as in
coinfer.runtime.aten_calls. Packagers are cached per (graph digest, micro-batch), two at a time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coinfer.files.graph_file import graph_digest
from coinfer.graph import Graph
from coinfer.runtime.blobs import BlobInfo, array_blob, sha256_of, tensor_blob
from coinfer.runtime.program import ProgramIndex, index_to_doc
from coinfer.runtime.routing import DeviceRoute

if TYPE_CHECKING:
    from coinfer.runtime.packaging.torch_program import TorchProgram

CACHED_PACKAGERS = 2  # a live plan switch needs one; the second spares a rebuild when a run alternates


@dataclass(frozen=True)
class DevicePackage:
    device: str
    program: dict[str, Any]
    blobs: Mapping[str, BlobInfo]  # sha256 -> size and kind
    labels: Mapping[str, str]  # sha256 -> what it is, for messages ("conv1.weight")

    @property
    def total_blob_bytes(self) -> int:
        return sum(b.size_bytes for b in self.blobs.values())


class Packager:
    def __init__(self, graph: Graph, micro_batch: int = 1, program: TorchProgram | None = None) -> None:
        assert graph.source is not None
        self.kind = "onnx" if graph.source.spec.startswith("onnx:") else "torch"
        self.index: ProgramIndex
        self._tensors: Mapping[str, Any]
        make: Callable[[Any], bytes]
        if program is not None:
            self.torch = program
            self.index = program.index
            self._tensors = program.tensors
            make = tensor_blob
        elif self.kind == "onnx":
            from coinfer.runtime.packaging.onnx_program import OnnxProgram

            self.onnx = OnnxProgram(graph, micro_batch)
            self.index = self.onnx.index
            self._tensors = self.onnx.tensors
            make = array_blob
        else:
            from coinfer.runtime.packaging.torch_program import torch_program

            self.torch = torch_program(graph, micro_batch)
            self.index = self.torch.index
            self._tensors = self.torch.tensors
            make = tensor_blob
        self._make = make
        self._index_doc = index_to_doc(self.index)
        self._weight_info: dict[str, dict[str, Any]] = {}  # ref -> WEIGHT
        self._source: dict[str, Callable[[], bytes]] = {}  # sha256 -> how to make its bytes
        self._sizes: dict[str, int] = {}

    @classmethod
    def of_program(cls, graph: Graph, program: TorchProgram) -> Packager:
        """A packager of a program built elsewhere (a tiled plan's, coinfer.runtime.packaging.tiled_program)."""
        return cls(graph, 1, program)

    def package(self, route: DeviceRoute) -> DevicePackage:
        blobs: dict[str, BlobInfo] = {}
        labels: dict[str, str] = {}

        def weights(refs: tuple[str, ...]) -> dict[str, Any]:
            out = {}
            for ref in refs:
                out[ref] = info = self._weight(ref)
                blobs[info["sha256"]] = BlobInfo(info["sha256"], self._sizes[info["sha256"]], "tensor")
                labels.setdefault(info["sha256"], ref)
            return out

        if self.kind == "torch":
            ops = [op for stage in route.runnable_stages for op in stage.ops]
            refs = tuple(dict.fromkeys(r for op in ops for r in self.torch.reads[op]))
            program = {"kind": "torch", "index": self._index_doc, "calls": {op: self.torch.calls[op] for op in ops},
                       "weights": weights(refs)}
            states = dict.fromkeys(r for op in ops for r in self.torch.state_reads.get(op, ()))
            if states:  # a causal LM's KV cache: made on the worker per session, never shipped
                specs = self.torch.states
                program["states"] = {r: {"shape": list(specs[r].shape or ()), "dtype": specs[r].dtype} for r in states}
        else:
            stages = {}
            for stage in route.stages:
                if not stage.ops:
                    continue
                built = self.onnx.stage(stage)
                sha = self._remember(built.model)
                blobs[sha] = BlobInfo(sha, len(built.model), "onnx")
                labels[sha] = f"the ONNX sub-model of stage {stage.label}"
                stages[str(stage.index)] = {"model": sha, "feeds": dict(built.feeds), "weights": weights(built.weights)}
            program = {"kind": "onnx", "index": self._index_doc, "stages": stages}
        return DevicePackage(route.device, program, blobs, labels)

    def blob_bytes(self, sha256: str) -> bytes:
        return self._source[sha256]()

    def _weight(self, ref: str) -> dict[str, Any]:
        if ref not in self._weight_info:
            tensor = self._tensors[ref]
            data = self._make(tensor)
            sha = sha256_of(data)
            self._sizes[sha] = len(data)
            self._source.setdefault(sha, lambda: self._make(self._tensors[ref]))
            dtype = str(tensor.dtype).removeprefix("torch.")
            self._weight_info[ref] = {"sha256": sha, "dtype": dtype, "shape": [int(d) for d in tensor.shape]}
        return self._weight_info[ref]

    def _remember(self, data: bytes) -> str:
        sha = sha256_of(data)
        self._sizes[sha] = len(data)
        self._source.setdefault(sha, lambda: data)
        return sha


_PACKAGERS: OrderedDict[tuple[str, int], Packager] = OrderedDict()


def packager_for(graph: Graph, micro_batch: int = 1) -> Packager:
    """The cached packager of `graph` at `micro_batch` (a graph digest covers its weights file)."""
    key = (graph_digest(graph), micro_batch)
    if key in _PACKAGERS:
        _PACKAGERS.move_to_end(key)
        return _PACKAGERS[key]
    packager = _PACKAGERS[key] = Packager(graph, micro_batch)
    while len(_PACKAGERS) > CACHED_PACKAGERS:
        _PACKAGERS.popitem(last=False)
    return packager
