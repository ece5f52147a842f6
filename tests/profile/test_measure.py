"""Measuring node times on this machine (torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from profile_helpers import chain

from coinfer.errors import ProfileError, UserInputError
from coinfer.graph import Graph

torch = pytest.importorskip("torch")


class TinyCnn(torch.nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: Any) -> Any:
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Graph]:
    from coinfer.capture.api import graph_from_program

    torch.manual_seed(0)
    model, inputs = TinyCnn().eval(), (torch.randn(1, 3, 16, 16),)
    program = torch.export.export(model, inputs)
    return program, graph_from_program(program, inputs, "tiny", None, model)


def test_every_node_gets_a_positive_time_and_settings_are_recorded(tiny: tuple[Any, Graph]) -> None:
    from coinfer.profile.measure import measure_program

    program, graph = tiny
    profile = measure_program(program, graph, warmup=1, repeats=3, threads=1)
    assert set(profile.node_time_s) == {n.id for n in graph.nodes}
    assert all(t > 0 for t in profile.node_time_s.values())
    assert all(s >= 0 for s in profile.node_spread_s.values())
    assert profile.device == "local" and profile.method == "measured"
    s = profile.settings
    assert s["threads"] == 1 and s["warmup"] == 1 and s["repeats"] == 3
    assert s["torch_version"] == torch.__version__ and s["cpu_model"]
    for rate in ("peak_flops_per_s", "memory_bandwidth_bytes_per_s", "node_overhead_s"):
        assert isinstance(s[rate], float) and s[rate] > 0


def test_thread_count_is_restored(tiny: tuple[Any, Graph]) -> None:
    from coinfer.profile.measure import measure_program

    before = torch.get_num_threads()
    measure_program(*tiny, warmup=0, repeats=1, threads=1)
    assert torch.get_num_threads() == before


def test_a_graph_of_another_program_is_rejected(tiny: tuple[Any, Graph]) -> None:
    from coinfer.profile.measure import measure_program

    program, _ = tiny
    with pytest.raises(ProfileError, match="re-capture"):
        measure_program(program, chain("hand", [("aten.conv2d", 1.0, 4, 0)]), repeats=1)


def test_hand_written_graph_cannot_be_measured() -> None:
    from coinfer.profile.measure import measure

    with pytest.raises(UserInputError, match="no 'source'"):
        measure(chain("hand", [("", 1.0, 4, 0)]))


@pytest.mark.slow
def test_measure_resnet18_end_to_end() -> None:
    from coinfer.capture import capture
    from coinfer.profile.measure import measure

    graph = capture("torchvision:resnet18")
    profile = measure(graph, warmup=1, repeats=2, threads=2)
    assert all(profile.node_time_s[n.id] > 0 for n in graph.nodes)
    assert profile.settings["threads"] == 2


def _tiny_onnx(path: Path) -> None:
    """Conv -> Relu (unnamed) -> GlobalAveragePool -> Flatten -> Gemm, built with onnx.helper."""
    onnx = pytest.importorskip("onnx")
    np = pytest.importorskip("numpy")
    helper, numpy_helper, tp = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype("float32"), "w"),
               numpy_helper.from_array(rng.standard_normal((4, 8)).astype("float32"), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", tp.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", tp.FLOAT, [1, 4])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_onnx_graph_is_measured_with_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from coinfer.capture import capture
    from coinfer.profile.measure import measure

    _tiny_onnx(tmp_path / "tiny.onnx")
    graph = capture(f"onnx:{tmp_path / 'tiny.onnx'}")
    profile = measure(graph, warmup=1, repeats=3, threads=1)
    assert set(profile.node_time_s) == {n.id for n in graph.nodes}
    # onnxruntime reports whole microseconds: a trivial node may show 0, the convolution may not.
    assert all(t >= 0 for t in profile.node_time_s.values()) and profile.node_time_s["conv"] > 0
    assert profile.settings["threads"] == 1 and profile.settings["onnxruntime_version"]
