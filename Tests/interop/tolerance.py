"""How far two float32 results of the same graph may be apart, from rounding-error analysis.

Both sides (our engine and onnxruntime, or PyTorch) compute in float32 but in their own order:
other blockings, SIMD widths, FMA or not, and onnxruntime's kernels themselves differ by CPU.
So a bound must hold for any order, not for what one machine printed.

- A sum of K products computed in any order, with or without FMA, is within γ_K·Σ|aᵢbᵢ| of the
  exact value (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 3.5),
  γ_K = K·u/(1 − K·u), u = 2⁻²⁴. Two such results are within 2·γ_K·Σ|aᵢbᵢ| of each other.
  Σ|aᵢbᵢ| of every output element is the same graph run on |inputs|, |weights|, |alpha|,
  |beta| (`magnitudes`). Through a chain of products with ReLU, MaxPool or reshapes between
  them (all 1-Lipschitz and monotone), the errors add up layer by layer: 2·γ_D times those
  magnitudes, where D adds up each product's K along the longest path (`accumulation_depth`).
  This is a worst case: the test ratio error / bound must be at most 1.
- Graphs with other operators (transcendental functions, normalizations, softmax) are judged
  normwise, as LAPACK's test drivers do: the test ratio max|error| / (D·u·max|reference|) must
  be at most 30 (LAPACK's threshold), with D counting each reduction's length and
  FUNCTION_ULPS per elementwise function. Judging against the tensor's scale rather than each
  element keeps values near zero (where a relative error means nothing) from failing a
  correct result.

A real bug (a wrong index, a missed bias, a wrong broadcast) is off by about the size of the
values themselves, i.e. 1/(D·u) ≈ 10⁴–10⁷ times these bounds: `test_tolerance.py` checks that
each kind of comparison rejects such results. Integer and boolean outputs are compared exactly.
"""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, shape_inference

U = 2.0 ** -24
NORMWISE_THRESHOLD = 30.0
# Each side's elementwise functions (glibc/our polynomials vs MLAS's) are within a few ulps of
# the exact value; this budget is counted once per function along the path.
FUNCTION_ULPS = 4

PRODUCT_OPS = {"Gemm", "MatMul", "Conv"}
# Ops that keep Σ|a||b| a bound when run on magnitudes: monotone, 1-Lipschitz, no cancellation.
MAGNITUDE_SAFE_OPS = PRODUCT_OPS | {
    "Add", "Relu", "MaxPool", "Flatten", "Reshape", "Identity", "Transpose", "Concat",
    "Squeeze", "Unsqueeze", "Shape", "Gather", "Constant", "Dropout"}
FUNCTIONS = {"Exp", "Log", "Tanh", "Sigmoid", "Erf", "Gelu", "Sqrt", "Pow", "Softmax", "LogSoftmax",
             "Reciprocal", "Div"}


def gamma(n):
    return n * U / (1 - n * U)


def _shapes(model, feeds):
    """Every value's static shape, from shape inference seeded with the feeds' shapes."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for value in m.graph.input:
        if value.name in feeds:
            dims = value.type.tensor_type.shape
            del dims.dim[:]
            for d in np.shape(feeds[value.name]):
                dims.dim.add().dim_value = d
    inferred = shape_inference.infer_shapes(m)
    shapes = {init.name: tuple(init.dims) for init in m.graph.initializer}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    shapes.update({name: np.shape(v) for name, v in feeds.items()})
    # Shape inference cannot see through the shape subgraphs of transformer exports (Shape ->
    # Gather -> Concat -> Reshape with symbolic dims): onnxruntime reports what it still lacks.
    wanted = {name for node in model.graph.node if node.op_type in SHAPED_OPS
              for name in node.input[:2] if name and name not in shapes}
    wanted |= {name for node in model.graph.node if node.op_type.startswith("Reduce") for name in node.output if name not in shapes}
    if wanted:
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        known = {o.name for o in probe.graph.output}
        for name in sorted(wanted - known):
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        for name, value in zip(names, session.run(None, feeds)):
            if name in wanted:
                shapes[name] = np.shape(value)
    return shapes


# Ops whose reduction length _reduction_length reads from their input shapes.
SHAPED_OPS = {"Gemm", "MatMul", "Conv", "Softmax", "LogSoftmax", "LayerNormalization", "AveragePool", "GlobalAveragePool",
              "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare",
              "ReduceLogSumExp"}


def _attribute(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _reduction_length(node, shapes, opset):
    """How many terms one output element of this node sums (1 for elementwise arithmetic)."""
    def shape(i):
        return shapes.get(node.input[i]) if i < len(node.input) and node.input[i] else None
    op = node.op_type
    if op == "Gemm":
        b = shape(1)
        k = b[1] if _attribute(node, "transB", 0) else b[0]
        return k + (1 if len(node.input) > 2 else 0)
    if op == "MatMul":
        return shape(0)[-1]
    if op == "Conv":
        w = shape(1)
        return int(np.prod(w[1:])) + (1 if len(node.input) > 2 else 0)
    x = shape(0)
    if op in ("Softmax", "LogSoftmax"):
        # Before opset 13 the input is coerced to 2-D at `axis`: one softmax over x[axis:].
        axis = _attribute(node, "axis", -1 if opset >= 13 else 1)
        return (x[axis] if opset >= 13 else int(np.prod(x[axis:]))) + FUNCTION_ULPS
    if op in ("LayerNormalization",):
        axis = _attribute(node, "axis", -1)
        return 2 * int(np.prod(x[axis:])) + FUNCTION_ULPS
    if op.startswith("Reduce"):
        out = shapes.get(node.output[0])
        return max(1, int(np.prod(x)) // max(1, int(np.prod(out)) if out is not None else 1))
    if op in ("AveragePool", "GlobalAveragePool"):
        kernel = _attribute(node, "kernel_shape", x[2:])
        return int(np.prod(kernel)) + 1
    if op == "BatchNormalization":
        return 4 + FUNCTION_ULPS
    if op in FUNCTIONS:
        return FUNCTION_ULPS
    return 1


def accumulation_depth(model, feeds):
    """The largest number of rounded terms along any path from the inputs to an output."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    shapes = _shapes(model, feeds)
    depth = {}
    for node in model.graph.node:
        before = max((depth.get(name, 0) for name in node.input if name), default=0)
        after = before + _reduction_length(node, shapes, opset)
        for name in node.output:
            depth[name] = after
    return max(1, max((depth.get(o.name, 1) for o in model.graph.output), default=1))


def is_magnitude_safe(model):
    ops = {n.op_type for n in model.graph.node}
    return bool(ops & PRODUCT_OPS) and ops <= MAGNITUDE_SAFE_OPS


def magnitudes(model, feeds):
    """Σ|aᵢbᵢ| (plus |bias|) of every output element: the graph on absolute values, by onnxruntime."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype.kind == "f":
            init.CopyFrom(numpy_helper.from_array(np.abs(values), init.name))
    for node in m.graph.node:
        for a in node.attribute:
            if node.op_type == "Gemm" and a.name in ("alpha", "beta"):
                a.f = abs(a.f)
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    abs_feeds = {k: (np.abs(v) if np.asarray(v).dtype.kind == "f" else v) for k, v in feeds.items()}
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, abs_feeds)))


class Comparison:
    """The bound for each float output of `model` on `feeds`, and the check against it."""

    def __init__(self, model, feeds):
        self.depth = accumulation_depth(model, feeds)
        self.elementwise = magnitudes(model, feeds) if is_magnitude_safe(model) else None

    def bound(self, name, reference):
        if self.elementwise is not None:
            return 2 * gamma(self.depth) * self.elementwise[name].astype(np.float64), 1.0
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
        return self.depth * U * scale, NORMWISE_THRESHOLD

    def ratio(self, name, ours, reference):
        """error / bound (the test ratio) and the worst element's index."""
        bound, threshold = self.bound(name, reference)
        error = np.abs(ours.astype(np.float64) - reference.astype(np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(error == 0, 0.0, error / (np.asarray(bound) * threshold))
        if not ratios.size:
            return 0.0, ()
        worst = np.unravel_index(int(np.argmax(ratios)), ratios.shape)
        return float(ratios[worst]), worst

    def check(self, name, ours, reference):
        assert ours.dtype == reference.dtype, (name, ours.dtype, reference.dtype)
        assert ours.shape == reference.shape, (name, ours.shape, reference.shape)
        if reference.dtype.kind != "f":
            np.testing.assert_array_equal(ours, reference, err_msg=name)
            return
        ratio, worst = self.ratio(name, ours, reference)
        kind = "2·γ_D·Σ|ab|" if self.elementwise is not None else f"{NORMWISE_THRESHOLD:g}·D·u·max|ref|"
        assert ratio <= 1.0, (
            f"{name}[{','.join(map(str, worst))}]: {ours[worst]!r} vs {reference[worst]!r}, "
            f"{ratio:.3g} times the bound {kind} (D = {self.depth})")


def check_against_onnxruntime(model_path, feeds, ours):
    """Runs onnxruntime on the model file and checks each of `ours` (output name -> array)."""
    model = onnx.load(str(model_path))
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    reference = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    comparison = Comparison(model, feeds)
    for name, value in ours.items():
        comparison.check(name, value, reference[name])
