"""Stage programs as JSON: every call of a real program survives the trip, and nothing but aten kernels runs."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from coinfer.capture import capture  # noqa: E402
from coinfer.errors import WireError  # noqa: E402
from coinfer.runtime.aten_calls import Ref, decode_args, resolve_target  # noqa: E402
from coinfer.runtime.packaging.torch_program import torch_program  # noqa: E402
from coinfer.runtime.program import index_from_doc, index_to_doc  # noqa: E402


@pytest.fixture(scope="module")
def resnet_program():  # type: ignore[no-untyped-def]
    return torch_program(capture("torchvision:resnet18"))


def test_every_call_of_a_real_program_is_strict_json_and_decodes(resnet_program) -> None:  # type: ignore[no-untyped-def]
    text = json.dumps(resnet_program.calls, allow_nan=False)
    for name, call in json.loads(text).items():
        assert callable(resolve_target(call["target"], name))
        decode_args(call["args"], name)
    # every weight a call reads is a state-dict key of the model, shipped by that name
    refs = {r for rs in resnet_program.reads.values() for r in rs}
    assert "conv1.weight" in refs and "layer4.1.bn2.running_var" in refs


def test_the_index_round_trips_through_its_document(resnet_program) -> None:  # type: ignore[no-untyped-def]
    index = resnet_program.index
    again = index_from_doc(json.loads(json.dumps(index_to_doc(index))), "test")
    assert again == index


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "aten.from_file.default", "aten.__class__.default",
                                    "aten.conv2d.__doc__", "aten.conv2d", "torch.ops.aten.relu.default",
                                    "aten.no_such_op.default", 42, None, ["aten.relu.default"]])
def test_a_target_that_is_not_an_aten_kernel_is_refused(target: object) -> None:
    with pytest.raises(WireError):
        resolve_target(target, "op x")


def test_aten_kernels_and_getitem_resolve() -> None:
    import operator

    assert resolve_target("aten.conv2d.default", "x") is torch.ops.aten.conv2d.default
    assert resolve_target("aten.__and__.Tensor", "x") is torch.ops.aten.__and__.Tensor
    assert resolve_target("operator.getitem", "x") is operator.getitem


def test_tagged_arguments_decode_to_torch_values_and_refs() -> None:
    args = decode_args([{"value": "x"}, {"weight": "fc.weight"}, {"weight": "c", "copy": True}, {"float": "-inf"},
                        {"dtype": "float16"}, {"device": "cpu"}, {"layout": "strided"},
                        {"memory_format": "channels_last"}, [1, [2, None]], "tanh"], "op")
    assert isinstance(args[0], Ref) and (args[0].kind, args[0].name) == ("value", "x")
    assert (args[1].kind, args[1].name, args[1].copy) == ("weight", "fc.weight", False) and args[2].copy
    assert args[3] == -math.inf and args[4] is torch.float16 and args[5] == torch.device("cpu")
    assert args[6] is torch.strided and args[7] is torch.channels_last and args[8] == [1, [2, None]]


@pytest.mark.parametrize("bad", [{"dtype": "os"}, {"device": "cuda:0"}, {"value": 3}, {"value": "x", "weight": "y"},
                                 {"float": "1e999"}, {"module": "os"}, {"memory_format": "__class__"}])
def test_a_tag_a_stage_may_not_hold_is_refused(bad: dict) -> None:
    with pytest.raises(WireError):
        decode_args([bad], "op")


def test_arguments_nested_past_the_limit_are_refused() -> None:
    deep: list = []
    for _ in range(20):
        deep = [deep]
    with pytest.raises(WireError, match="nest"):
        decode_args(deep, "op")


def test_a_call_writing_into_a_weight_gets_a_fresh_copy_each_run() -> None:
    class Fill(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("state", torch.zeros(3))

        def forward(self, x):  # type: ignore[no-untyped-def]
            self.state.add_(x)  # in place on a buffer: export keeps it as a mutation
            return self.state * 2

    program = torch.export.export(Fill().eval(), (torch.ones(3),), strict=False)
    from coinfer.runtime.aten_calls import encode_call

    writes = [encode_call(n, lambda a: {"weight": a.name} if a.op == "placeholder" and a.name.startswith("b_")
                          else {"value": a.name})
              for n in program.graph.nodes if n.op == "call_function" and "add_" in str(n.target)]
    assert all(call["args"][0].get("copy") for call in writes)
