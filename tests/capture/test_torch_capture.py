"""torch.export capture: FLOPs add up to FlopCounterMode's, ids, inputs, params, getitem folding."""

from __future__ import annotations

import operator

import pytest
import torch

from coinfer.capture import build_model, load_program
from coinfer.capture.flops import model_flops
from coinfer.files.graph_file import graph_digest, graph_from_dict, graph_to_dict
from coinfer.graph import DEFAULT_INPUT_NAME

# (spec, layers, seq_len): small enough for the fast tier on two cores
FAST = [
    ("torchvision:resnet18", None, None),
    ("torchvision:mobilenet_v2", None, None),
    ("torchvision:googlenet", None, None),
    ("hf:gpt2", 2, 32),
    ("hf:bert", 2, 32),
    ("hf:vit", 2, None),
]
SLOW = [
    ("torchvision:vit_b_16", None, None),
    ("torchvision:inception_v3", None, None),
    ("torchvision:densenet121", None, None),
    ("torchvision:swin_t", None, None),
    ("hf:gpt2", None, None),
]


def _check_flops(captured, spec, layers, seq_len):
    g = captured(spec, layers, seq_len)
    model, inputs = build_model(g.source)
    whole = model_flops(model, inputs)
    assert whole > 0
    assert g.total_flops == pytest.approx(whole, rel=1e-3)


@pytest.mark.parametrize(("spec", "layers", "seq_len"), FAST)
def test_node_flops_sum_to_whole_model_count(captured, spec, layers, seq_len):
    _check_flops(captured, spec, layers, seq_len)


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "layers", "seq_len"), SLOW)
def test_node_flops_sum_to_whole_model_count_big(captured, spec, layers, seq_len):
    _check_flops(captured, spec, layers, seq_len)


def test_resnet18_node_ids_ops_and_inputs(captured):
    g = captured("torchvision:resnet18")
    ids = [n.id for n in g.nodes]
    # conv1 produced one fx node, so its id is the module path; the block's residual add is
    # the BasicBlock's own op, and the reused ReLU module gets path + fx name.
    assert ids[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert "layer1.0.conv1" in ids and "layer1.0.add_" in ids and "fc" in ids
    assert "layer1.0.relu.relu__1" in ids
    assert "flatten" in ids  # a root-module op keeps its fx name
    assert len(set(ids)) == len(ids)
    assert g.inputs[0].name == DEFAULT_INPUT_NAME and g.inputs[0].spec.shape == (1, 3, 224, 224)
    assert g.node("conv1").inputs == (DEFAULT_INPUT_NAME,)
    assert g.node("conv1").op == "aten.conv2d" and g.node("conv1").module == "conv1"
    assert g.outputs == ("fc",)
    fc = g.node("fc")
    assert fc.outputs[0].shape == (1, 1000) and fc.outputs[0].dtype == "float32"
    assert fc.output_bytes == 4000
    assert g.source.options["placeholders"] == "x" and g.source.input_shapes == ((1, 3, 224, 224),)


def test_param_bytes_are_weights_and_buffers_counted_once(captured):
    g = captured("torchvision:resnet18")
    model, _ = build_model(g.source)
    state_bytes = sum(t.numel() * t.element_size() for k, t in model.state_dict().items()
                      if not k.endswith("num_batches_tracked"))  # read by no op
    assert g.total_param_bytes == state_bytes
    assert g.node("conv1").param_bytes == 64 * 3 * 7 * 7 * 4


def test_tied_gpt2_embedding_counted_once(captured):
    g = captured("hf:gpt2", 2, 32)
    model, _ = build_model(g.source)
    unique = {id(p): p.numel() * p.element_size() for p in model.parameters()}
    buffers = {id(b): b.numel() * b.element_size() for _, b in model.named_buffers()}
    assert sum(unique.values()) <= g.total_param_bytes <= sum(unique.values()) + sum(buffers.values())
    assert g.node("lm_head").param_bytes == 0  # its weight is wte's, already counted there


def test_source_nodes_name_fx_nodes_of_the_reloaded_program(captured):
    g = captured("torchvision:mobilenet_v2")
    program = load_program(g.source)
    fx_calls = {n.name for n in program.graph.nodes if n.op == "call_function"}
    listed = [s for n in g.nodes for s in n.source_nodes]
    assert all(n.source_nodes for n in g.nodes)
    assert sorted(listed) == sorted(fx_calls)  # every call_function node exactly once


def test_reloaded_program_matches_eager_model(captured):
    g = captured("torchvision:resnet18")
    model, inputs = build_model(g.source)
    program = load_program(g.source)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*inputs), model(*inputs))


def test_getitem_nodes_fold_into_their_producer(captured):
    g = captured("hf:gpt2", 2, 32)
    program = load_program(g.source)
    getitems = {n.name for n in program.graph.nodes if n.target is operator.getitem}
    assert getitems
    assert not getitems & {n.id for n in g.nodes}
    split = next(n for n in g.nodes if n.op == "aten.split")
    assert len(split.outputs) == 3  # q, k, v
    assert split.output_bytes == sum(t.size_bytes for t in split.outputs)
    assert any(s in getitems for s in split.source_nodes)
    readers = [n for n in g.nodes if split.id in n.inputs]
    assert readers


def test_text_models_take_token_ids_and_bert_a_mask(captured):
    gpt2 = captured("hf:gpt2", 2, 32)
    assert [(i.name, i.spec.shape, i.spec.dtype) for i in gpt2.inputs] == [("input", (1, 32), "int64")]
    assert gpt2.source.options == {"layers": 2, "seq_len": 32, "placeholders": "input_ids"}
    g = captured("hf:bert", 2, 32)
    # two inputs keep their placeholder names
    assert [(i.name, i.spec.shape) for i in g.inputs] == [("input_ids", (1, 32)), ("attention_mask", (1, 32))]
    assert g.source.options["placeholders"] == "input_ids,attention_mask"
    assert any("attention_mask" in n.inputs for n in g.nodes)
    assert any(n.op == "aten.scaled_dot_product_attention" and n.flops > 0 for n in g.nodes)


def test_graph_json_round_trip(captured):
    g = captured("torchvision:googlenet")
    again = graph_from_dict(graph_to_dict(g))
    assert again == g
    assert graph_digest(again) == graph_digest(g)


def test_same_seed_same_graph_weights_and_inputs():
    from coinfer.capture import capture

    a = capture("hf:vit", layers=1, seed=3)
    b = capture("hf:vit", layers=1, seed=3)
    assert graph_digest(a) == graph_digest(b)
    ma, xa = build_model(a.source)
    mb, xb = build_model(b.source)
    torch.testing.assert_close(ma.state_dict(), mb.state_dict())
    torch.testing.assert_close(xa, xb)
