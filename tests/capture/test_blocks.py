"""Block grouping: the module rule finds the blocks papers cut between; coarsening keeps totals."""

from __future__ import annotations

import pytest

from coinfer.capture import build_model
from coinfer.capture.blocks import ModuleFacts, block_of, facts_from_stacks
from coinfer.graph import coarsen_to_blocks

EXPECTED = [
    ("torchvision:resnet18", None, ["layer1.0", "layer1.1", "layer4.1"], "BasicBlock"),
    ("torchvision:mobilenet_v2", None, ["features.1", "features.17"], "InvertedResidual"),
    ("torchvision:googlenet", None, ["inception3a", "inception5b"], "Inception"),
    ("hf:gpt2", 2, ["transformer.h.0", "transformer.h.1"], "GPT2Block"),
    ("hf:bert", 2, ["bert.encoder.layer.0", "bert.encoder.layer.1"], "BertLayer"),
    ("hf:vit", 2, None, "ViTLayer"),
]


EXPECTED_BIG = [
    ("torchvision:inception_v3", None, ["Mixed_5b", "Mixed_6a", "Mixed_7c"], "Inception"),
    ("torchvision:densenet121", None, ["features.denseblock1.denselayer1"], "_DenseLayer"),
    ("torchvision:vit_b_16", None, ["encoder.layers.encoder_layer_0"], "EncoderBlock"),
    ("torchvision:swin_t", None, ["features.1.0", "features.7.1"], "SwinTransformerBlock"),
    ("torchvision:resnet50", None, ["layer1.0", "layer4.2"], "Bottleneck"),
]


@pytest.mark.parametrize(("spec", "layers", "blocks", "cls"), EXPECTED)
def test_expected_blocks_found(captured, spec, layers, blocks, cls):
    g = _check_blocks(captured, spec, layers, blocks)
    model, _ = build_model(g.source)
    modules = dict(model.named_modules())
    assert {type(modules[b]).__name__ for b in g.blocks} == {cls}


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "layers", "blocks", "cls"), EXPECTED_BIG)
def test_expected_blocks_found_big(captured, spec, layers, blocks, cls):
    _check_blocks(captured, spec, layers, blocks)


def _check_blocks(captured, spec, layers, blocks):
    g = captured(spec, layers, 32 if spec in ("hf:gpt2", "hf:bert") else None)
    names = list(g.blocks)
    if blocks is not None:
        assert set(blocks) <= set(names)
    assert names
    # a block's nodes are contiguous in the captured order (module boundaries are convex)
    for members in g.blocks.values():
        positions = [g.index[m] for m in members]
        assert positions == list(range(positions[0], positions[0] + len(positions)))
    # stems and heads stay outside blocks
    assert g.nodes[0].block is None and g.node(g.outputs[0]).block is None
    return g


@pytest.mark.parametrize(("spec", "layers"), [("torchvision:resnet18", None), ("hf:gpt2", 2)])
def test_block_granularity_preserves_totals(captured, spec, layers):
    g = captured(spec, layers, 32 if spec == "hf:gpt2" else None)
    b = coarsen_to_blocks(g)
    assert b.granularity == "block"
    assert b.total_flops == pytest.approx(g.total_flops)
    assert b.total_param_bytes == g.total_param_bytes
    assert len(b.nodes) < len(g.nodes)
    assert set(g.blocks) <= {n.id for n in b.nodes}


def test_capture_block_granularity():
    from coinfer.capture import capture

    g = capture("hf:vit", layers=1, granularity="block")
    assert g.granularity == "block"
    assert "vit.layers.0" in {n.id for n in g.nodes} or "vit.encoder.layer.0" in {n.id for n in g.nodes}


def _stack(*entries: tuple[str, str]) -> list[tuple[str, str]]:
    return list(entries)


def test_rule_from_class_names_alone():
    seq = "torch.nn.modules.container.Sequential"
    stacks = [
        _stack(("layer1", seq), ("layer1.0", "torchvision.models.resnet.BasicBlock"),
               ("layer1.0.conv1", "torch.nn.modules.conv.Conv2d")),
        _stack(("inception3a", "torchvision.models.googlenet.Inception"),
               ("inception3a.branch1", "torchvision.models.googlenet.BasicConv2d"),
               ("inception3a.branch1.conv", "torch.nn.modules.conv.Conv2d")),
        _stack(("stem", "mypkg.Stem"), ("stem.conv", "torch.nn.modules.conv.Conv2d")),
        # a ModuleList is never called, so it is missing from stacks; an index name implies it
        _stack(("h.0", "mypkg.Whatever"), ("h.0.fc", "torch.nn.modules.linear.Linear")),
    ]
    facts = facts_from_stacks(stacks)
    assert facts["layer1"] == ModuleFacts("Sequential", is_leaf=False, is_container=True)
    assert [block_of(s, facts) for s in stacks] == ["layer1.0", "inception3a", None, "h.0"]
