"""export:, python: and onnx: sources, MODEL spec errors, and export failures."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from coinfer.capture import build_model, capture, load_onnx, load_program
from coinfer.capture.flops import counter, model_flops
from coinfer.capture.spec import parse_spec
from coinfer.errors import CaptureError, ModelSpecError, UserInputError

MODULE = textwrap.dedent('''
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2, groups=2)
            self.fc = torch.nn.Linear(4 * 16 * 16, 10)

        def forward(self, x):
            y = self.up(torch.relu(self.bn(self.conv(x))))
            a, b = torch.split(self.fc(y.flatten(1)), 5, dim=1)
            return a @ b.T

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return -x

    def build():
        return Net(), (torch.randn(2, 3, 8, 8),)

    def branchy():
        return Branchy(), (torch.randn(2, 4),)

    def two_inputs():
        class Two(torch.nn.Module):
            def forward(self, a, b):
                return a @ b
        return Two(), (torch.randn(3, 4), torch.randn(4, 5))

    def not_a_model():
        return 42

    def masked():
        class Masked(torch.nn.Module):
            def forward(self, x):
                return x[x > 0] * 2
        return Masked(), (torch.tensor([[1.0, -1.0, 2.0], [-3.0, 4.0, 5.0]]),)
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "coinfer_test_models.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("coinfer_test_models", None)
    yield "coinfer_test_models"
    sys.modules.pop("coinfer_test_models", None)


def test_python_spec(user_module):
    g = capture(f"python:{user_module}:build")
    model, inputs = build_model(g.source)
    assert g.name == "build" and g.inputs[0].name == "input"
    assert g.total_flops == pytest.approx(model_flops(model, inputs), rel=1e-3)
    split = next(n for n in g.nodes if n.op == "aten.split")
    assert len(split.outputs) == 2 and split.source_nodes[1:]  # getitems folded in


def test_python_spec_with_two_inputs_keeps_placeholder_names(user_module):
    g = capture(f"python:{user_module}:two_inputs")
    assert [i.name for i in g.inputs] == ["a", "b"]
    assert g.nodes[0].inputs == ("a", "b") and g.source.options["placeholders"] == "a,b"
    assert g.total_flops == 2 * 3 * 4 * 5


def test_export_round_trip(user_module, tmp_path):
    g = capture(f"python:{user_module}:build")
    path = tmp_path / "net.pt2"
    torch.export.save(load_program(g.source), path)
    again = capture(f"export:{path}")
    assert again.name == "net"
    assert [n.id for n in again.nodes] == [n.id for n in g.nodes]
    assert again.total_flops == g.total_flops and again.total_param_bytes == g.total_param_bytes
    model, inputs = build_model(again.source)
    ref_model, _ = build_model(g.source)
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), ref_model(*inputs))
    assert load_program(again.source).graph_signature.user_inputs


def test_onnx_flops_match_torch(user_module, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model, inputs = build_model(capture(f"python:{user_module}:build").source)
    path = tmp_path / "net.onnx"
    torch.onnx.export(model, inputs, str(path), dynamo=True)
    g = capture(f"onnx:{path}")
    assert g.total_flops == pytest.approx(model_flops(model, inputs), rel=1e-3)
    assert {"Conv", "ConvTranspose"} <= {n.op for n in g.nodes}
    onnx_names = {n.name for n in load_onnx(g.source).graph.node}
    assert all(set(n.source_nodes) <= onnx_names for n in g.nodes)
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert g.total_param_bytes >= weights * 0.99  # the exporter may fold BN into the conv


def test_onnx_built_by_hand_with_an_unknown_op(tmp_path, caplog):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(torch.randn(16, 8).numpy(), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("Gemm", ["r", "w"], ["y"], name="gemm", transB=1),
             helper.make_node("Einsum", ["y"], ["z"], name="odd", equation="ij->ji")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [w])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph), path)
    with caplog.at_level("WARNING"):
        g = capture(f"onnx:{path}")
    assert [n.id for n in g.nodes] == ["mm", "act", "gemm", "odd"]
    assert g.node("mm").flops == 2 * 4 * 16 * 8 and g.node("gemm").flops == 2 * 4 * 16 * 8
    assert g.node("mm").param_bytes == 16 * 8 * 4 and g.node("gemm").param_bytes == 0
    assert g.node("odd").flops == 0 and "Einsum" in caplog.text
    assert g.outputs == ("odd",)


def test_cpu_attention_kernel_is_counted():
    q = torch.randn(1, 2, 8, 4)
    with counter() as c:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert c.get_total_flops() == 2 * (2 * 2 * 8 * 8 * 4)  # QK^T and (QK^T)V, 2 FLOPs per MAC


@pytest.mark.parametrize(("spec", "words"), [
    ("resnet18", ["unknown MODEL spec", "torchvision:NAME"]),
    ("tv:resnet18", ["torchvision:NAME"]),
    ("torchvision:resnt18", ["did you mean", "resnet18"]),
    ("hf:gtp2", ["did you mean", "gpt2"]),
    ("export:/no/such/file.pt2", ["no file"]),
    ("onnx:/no/such/file.onnx", ["no file"]),
    ("python:nomodule", ["python:MODULE:CALLABLE"]),
    ("python:no_such_module_xyz:build", ["cannot import"]),
])
def test_bad_specs_name_what_to_do(spec, words):
    with pytest.raises(ModelSpecError) as err:
        capture(spec)
    for w in words:
        assert w in str(err.value)


def test_bad_inputs_are_user_errors(user_module, tmp_path):
    with pytest.raises(UserInputError, match="input_shape"):
        capture("torchvision:resnet18", input_shape=(1, 3, 5))
    with pytest.raises(UserInputError, match="layers"):
        capture("torchvision:resnet18", layers=2)
    with pytest.raises(UserInputError, match="must return"):
        capture(f"python:{user_module}:not_a_model")
    junk = tmp_path / "junk.pt2"
    junk.write_text("not a program")
    with pytest.raises(UserInputError, match=r"torch\.export\.save"):
        capture(f"export:{junk}")
    (tmp_path / "junk.onnx").write_text("not onnx")
    with pytest.raises(UserInputError, match="not a readable ONNX"):
        capture(f"onnx:{tmp_path / 'junk.onnx'}")


def test_data_dependent_control_flow_names_line_and_workaround(user_module):
    with pytest.raises(CaptureError) as err:
        capture(f"python:{user_module}:branchy")
    msg = str(err.value)
    assert "data-dependent" in msg and "if x.sum() > 0" in msg
    assert "torch.cond" in msg and "export:PATH" in msg and "onnx:PATH" in msg


def test_data_dependent_sizes_come_from_the_example_run(user_module):
    g = capture(f"python:{user_module}:masked")
    out = g.node(g.outputs[0])
    assert out.outputs[0].shape == (4,) and out.output_bytes == 16  # four positive entries


def test_parse_spec_keeps_python_callable():
    p = parse_spec("python:pkg.mod:make")
    assert (p.kind, p.target, p.attr, p.name) == ("python", "pkg.mod", "make", "make")


def test_import_without_torch_then_clear_error():
    code = textwrap.dedent('''
        import sys
        for m in ("torch", "torchvision", "transformers", "onnx"):
            sys.modules[m] = None  # makes `import torch` raise ImportError
        from coinfer.capture import capture
        from coinfer.errors import MissingDependencyError
        try:
            capture("torchvision:resnet18")
        except MissingDependencyError as e:
            assert "pip install 'coinfer[torch]'" in str(e), e
            print("ok")
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr
