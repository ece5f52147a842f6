"""The comparison behind --verify and the lossless tests: nothing wrong passes as identical."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coinfer.runtime.verify import Comparison, compare_all

REF = {"logits": np.array([[0.5, -1.25, 3.0]], dtype=np.float32)}


def test_an_identical_output_is_bit_identical_and_ok() -> None:
    c = compare_all([({"logits": REF["logits"].copy()}, REF)])
    assert c.ok and c.bit_identical and c.max_abs_err == 0.0 and c.output_scale == 3.0 and c.within(0.0)


def test_a_small_difference_is_measured_not_called_identical() -> None:
    got = {"logits": REF["logits"] + np.float32(1e-6)}
    c = compare_all([(got, REF)])
    assert c.ok and not c.bit_identical and 0 < c.max_abs_err < 2e-6
    assert c.within(1e-5) and not c.within(1e-8)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_nan_or_an_infinity_fails_even_where_the_rest_is_equal(bad: float) -> None:
    got = REF["logits"].copy()
    got[0, 1] = bad
    c = compare_all([({"logits": got}, REF)])
    assert not c.ok and not c.within(1.0) and not c.report()["verified"]
    assert "NaN or infinite" in c.problems[0]
    assert math.isnan(c.max_abs_err) or math.isinf(c.max_abs_err)  # never hidden by max(0.0, nan)


def test_a_nan_the_model_also_outputs_still_fails() -> None:
    ref = {"logits": np.array([np.nan, 1.0], dtype=np.float32)}
    c = compare_all([({"logits": ref["logits"].copy()}, ref)])
    assert not c.ok  # an output of NaN compares nothing


def test_a_missing_output_fails_and_names_it() -> None:
    c = Comparison()
    c.add({}, REF, "request 3")
    assert not c.ok and c.problems == ["request 3: output 'logits' is missing"] and c.max_abs_err == math.inf


@pytest.mark.parametrize("got", [np.zeros((3,), np.float32), np.zeros((1, 3), np.float64),
                                 np.zeros((1, 4), np.float32)])
def test_another_shape_or_dtype_fails(got: np.ndarray) -> None:
    c = compare_all([({"logits": got}, REF)])
    assert not c.ok and not c.bit_identical and "the model's is float32[1, 3]" in c.problems[0]


def test_nothing_compared_is_not_ok() -> None:
    assert not Comparison().ok and not compare_all([]).report()["verified"]
