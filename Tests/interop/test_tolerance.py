"""The comparisons of tolerance.py accept results computed in another order and reject wrong ones.

Each kind of comparison (elementwise Σ|ab| bound for products, normwise bound for everything
else, exact for integers) gets results with a real bug's signature: a missed bias, a wrong index,
a wrong broadcast or axis. Each must fail, while the same computation in float64 (another
summation order, the exact answer to within float32 rounding) must pass."""
import numpy as np
import onnxruntime as ort
import pytest

from onnx_cases import cases
from tolerance import Comparison, U

CASES = cases()


def reference(name):
    model, feeds = CASES[name]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    return model, feeds, output, session.run(None, feeds)[0]


def rejects(comparison, output, wrong, ref):
    with pytest.raises(AssertionError):
        comparison.check(output, wrong.astype(ref.dtype), ref)


def test_products_float64_passes_and_bugs_fail():
    name = "Gemm_m64_k96_n80_trans_b1_beta0.5_c_shape(80,)"
    model, feeds, output, ref = reference(name)
    comparison = Comparison(model, feeds)
    assert comparison.elementwise is not None and comparison.depth == 97
    inits = {i.name: i for i in model.graph.initializer}
    from onnx import numpy_helper
    b = numpy_helper.to_array(inits["b"]).astype(np.float64)
    c = numpy_helper.to_array(inits["c"]).astype(np.float64)
    a = feeds["a"].astype(np.float64)
    exact = a @ b.T + 0.5 * c
    comparison.check(output, exact.astype(np.float32), ref)
    # The bound is far below the values: under 0.1% of the output's scale.
    bound, _ = comparison.bound(output, ref)
    assert np.max(bound) < 1e-3 * np.max(np.abs(ref))
    rejects(comparison, output, a @ b.T, ref)  # missed bias
    rejects(comparison, output, a @ b.T + c, ref)  # beta ignored
    shifted = exact.copy()
    shifted[:, [3, 4]] = shifted[:, [4, 3]]  # two output columns swapped (a wrong index)
    rejects(comparison, output, shifted, ref)
    rejects(comparison, output, a[:, :-1] @ b[:, :-1].T + 0.5 * c, ref)  # one term of K dropped


def test_batched_matmul_wrong_broadcast_fails():
    model, feeds, output, ref = reference("MatMul_(1, 3, 4)_(2, 4, 5)")
    comparison = Comparison(model, feeds)
    a, b = feeds["a"].astype(np.float64), feeds["b"].astype(np.float64)
    comparison.check(output, np.matmul(a, b).astype(np.float32), ref)
    rejects(comparison, output, np.matmul(a, b[:1]).repeat(2, axis=0), ref)


def test_conv_one_tap_off_fails():
    model, feeds, output, ref = reference("Conv_wide_odd_nopad")
    comparison = Comparison(model, feeds)
    assert comparison.elementwise is not None
    wrong = ref.astype(np.float64).copy()
    wrong[0, 2, 3, 4] += 0.01 * np.max(np.abs(ref))  # 1% off in one element
    rejects(comparison, output, wrong, ref)


def test_normwise_comparisons_pass_rounding_and_reject_bugs():
    model, feeds, output, ref = reference("Softmax_op13_axis1_rank3")
    comparison = Comparison(model, feeds)
    assert comparison.elementwise is None
    x = feeds["x"].astype(np.float64)
    exact = np.exp(x - x.max(axis=1, keepdims=True))
    exact /= exact.sum(axis=1, keepdims=True)
    comparison.check(output, exact.astype(np.float32), ref)
    wrong_axis = np.exp(x - x.max(axis=-1, keepdims=True))
    rejects(comparison, output, wrong_axis / wrong_axis.sum(axis=-1, keepdims=True), ref)
    # A relative error of 1e-4 in one small element is far above float32 rounding of that
    # element, but judged against the tensor's scale it is allowed only below D·u·30:
    bound, threshold = comparison.bound(output, ref)
    assert bound * threshold < 1e-4 * np.max(np.abs(ref))

    model, feeds, output, ref = reference("LayerNormalization_axis1")
    comparison = Comparison(model, feeds)
    from onnx import numpy_helper
    inits = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    x = feeds["x"].astype(np.float64)
    mean = x.mean(axis=(1, 2), keepdims=True)
    normalized = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=(1, 2), keepdims=True) + 1e-5)
    comparison.check(output, (normalized * inits["s"] + inits["b"]).astype(np.float32), ref)
    rejects(comparison, output, normalized * inits["s"], ref)  # missed bias

    model, feeds, output, ref = reference("Add_(2, 1, 4)_(3, 1)")
    comparison = Comparison(model, feeds)
    a, b = feeds["a"], feeds["b"]
    comparison.check(output, (a.astype(np.float64) + b).astype(np.float32), ref)
    rejects(comparison, output, a + b[::-1], ref)  # b's rows in reverse order (a wrong index)
    rejects(comparison, output, a + b[:1], ref)  # one row of b broadcast to all (a wrong broadcast)


def test_integers_are_exact():
    model, feeds, output, ref = reference("ArgMax_axis1_nokeep")
    comparison = Comparison(model, feeds)
    comparison.check(output, ref.copy(), ref)
    wrong = ref.copy()
    wrong.flat[0] = (wrong.flat[0] + 1) % 4
    rejects(comparison, output, wrong, ref)


def test_unit_roundoff():
    assert np.float32(1) + np.float32(U) == np.float32(1)
    assert np.float32(1) + np.float32(2 * U) > np.float32(1)
