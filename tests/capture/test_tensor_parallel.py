"""Tensor-parallel layers equal the unsplit model within 1e-5 of the logits' scale, over a prefill and
the decode steps after it; a degree that does not divide the heads is refused naming them."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from coinfer.capture.causal_lm import _static_cache, parse_tensor_parallel  # noqa: E402
from coinfer.capture.hf import HF_MODELS, hf_config  # noqa: E402
from coinfer.capture.tensor_parallel import split_layers  # noqa: E402
from coinfer.errors import ModelSpecError  # noqa: E402

CONTEXT = 12


def _models(name: str, degrees: dict[int, int]):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    config = hf_config(name, 3, use_cache=True)
    whole = getattr(transformers, HF_MODELS[name].model)(config).eval()
    split = copy.deepcopy(whole)
    split_layers(split, degrees, CONTEXT)
    return config, whole, split


def _steps(model, config, ids):  # type: ignore[no-untyped-def]
    """Logits of a 5-token prefill, then of three single-token steps, through a static cache."""
    cache = _static_cache(transformers, config, CONTEXT, torch.float32)
    out = []
    for start, stop in ((0, 5), (5, 6), (6, 7), (7, 8)):
        for layer in cache.layers:
            layer.cumulative_length.copy_(torch.tensor(start))
        out.append(model(ids[:, start:stop], cache=cache, use_cache=True).logits)
    return torch.cat(out, dim=1)


@pytest.mark.parametrize(("name", "degrees"), [("gpt2", {0: 2, 1: 3, 2: 4}), ("llama", {0: 2, 1: 4, 2: 2})])
def test_split_layers_equal_the_whole_model_within_1e_5_of_scale(name, degrees) -> None:  # type: ignore[no-untyped-def]
    config, whole, split = _models(name, degrees)
    ids = torch.randint(0, config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = whole(ids, use_cache=False).logits
        got = _steps(split, config, ids)
    assert got.shape == expected.shape and torch.isfinite(got).all()
    error = float((got - expected).abs().max() / expected.abs().max())
    assert 0 < error <= 1e-5  # not bit-identical: the partial sums add in another order


def test_a_degree_that_does_not_divide_the_heads_is_refused() -> None:
    torch.manual_seed(0)
    for name, degree, message in (("gpt2", 5, "does not divide the 12 attention heads"),
                                  ("llama", 3, "12 attention heads and 4 key-value heads")):
        model = getattr(transformers, HF_MODELS[name].model)(hf_config(name, 1, use_cache=True))
        with pytest.raises(ModelSpecError, match=message):
            split_layers(model, {0: degree}, CONTEXT)


def test_tensor_parallel_requests_read_per_layer() -> None:
    assert parse_tensor_parallel("2", 3) == {0: 2, 1: 2, 2: 2}
    assert parse_tensor_parallel("0-1:2,5:4", 12) == {0: 2, 1: 2, 5: 4}
    with pytest.raises(ModelSpecError, match="LAYER:K"):
        parse_tensor_parallel("two", 3)
