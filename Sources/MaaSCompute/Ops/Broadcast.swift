import MaaSCore

/// Each input's element strides aligned to an output shape (NumPy broadcasting): zero on the
/// dims an input repeats. The last dim is the inner loop of every broadcasting kernel.
struct BroadcastLayout {
    let shape: [Int]
    let strides: [[Int]]
    let inner: Int
    let rows: Int

    init(output shape: [Int], inputs: [[Int]]) {
        self.shape = shape
        strides = inputs.map { broadcastStrides($0, rank: shape.count) }
        inner = shape.last ?? 1
        rows = inner == 0 ? 0 : shape.reduce(1, *) / inner
    }

    /// Where output row `row` starts in input `input`.
    func offset(row: Int, input: Int) -> Int {
        var offset = 0, rest = row
        let strides = self.strides[input]
        for dim in stride(from: shape.count - 2, through: 0, by: -1) {
            offset += (rest % shape[dim]) * strides[dim]
            rest /= shape[dim]
        }
        return offset
    }

    /// The stride of input `input` along the inner dim (0 or 1).
    func innerStride(_ input: Int) -> Int { strides[input].last ?? 0 }

    var grain: Int { max(1, (1 << 15) / max(inner, 1)) }
}

/// Element strides of a tensor of `shape`, read through `permutation` (a Transpose folded into
/// its reader) when given, aligned right to `rank` dims, zero on the dims it broadcasts along.
func broadcastStrides(_ shape: [Int], permutation: [Int]? = nil, rank: Int) -> [Int] {
    let source = Shape.strides(shape)
    let dims = permutation.map { $0.map { shape[$0] } } ?? shape
    let logical = permutation.map { $0.map { source[$0] } } ?? source
    let pad = rank - dims.count
    return (0..<rank).map { $0 < pad || dims[$0 - pad] == 1 ? 0 : logical[$0 - pad] }
}

/// y = op(a, b) elementwise with broadcasting; the same-shape and scalar cases are direct loops.
func broadcastApply<A, B, Y>(_ a: TensorView, _ b: TensorView, _ y: TensorView, pool: ComputePool, _ op: @escaping @Sendable (A, B) -> Y) {
    let pa = a.pointer(A.self), pb = b.pointer(B.self), py = y.pointer(Y.self)
    let count = y.count
    if a.count == count && b.count == count {
        forEachChunk(count, pool: pool) { range in for i in range { py[i] = op(pa[i], pb[i]) } }
        return
    }
    if b.count == 1 && a.count == count {
        let scalar = pb[0]
        forEachChunk(count, pool: pool) { range in for i in range { py[i] = op(pa[i], scalar) } }
        return
    }
    if a.count == 1 && b.count == count {
        let scalar = pa[0]
        forEachChunk(count, pool: pool) { range in for i in range { py[i] = op(scalar, pb[i]) } }
        return
    }
    let layout = BroadcastLayout(output: y.shape, inputs: [a.shape, b.shape])
    let inner = layout.inner, ia = layout.innerStride(0), ib = layout.innerStride(1)
    forEachChunk(layout.rows, pool: pool, grain: layout.grain) { range in
        for row in range {
            let sa = pa + layout.offset(row: row, input: 0), sb = pb + layout.offset(row: row, input: 1)
            let out = py + row * inner
            for j in 0..<inner { out[j] = op(sa[j * ia], sb[j * ib]) }
        }
    }
}

/// out = op(c, x, y) elementwise with broadcasting over all three (Where, Clip with tensors).
func broadcastApply<C, X, Y, Out>(
    _ c: TensorView, _ x: TensorView, _ y: TensorView, _ out: TensorView, pool: ComputePool, _ op: @escaping @Sendable (C, X, Y) -> Out
) {
    let pc = c.pointer(C.self), px = x.pointer(X.self), py = y.pointer(Y.self), po = out.pointer(Out.self)
    let layout = BroadcastLayout(output: out.shape, inputs: [c.shape, x.shape, y.shape])
    let inner = layout.inner
    let (ic, ix, iy) = (layout.innerStride(0), layout.innerStride(1), layout.innerStride(2))
    forEachChunk(layout.rows, pool: pool, grain: layout.grain) { range in
        for row in range {
            let sc = pc + layout.offset(row: row, input: 0)
            let sx = px + layout.offset(row: row, input: 1)
            let sy = py + layout.offset(row: row, input: 2)
            let target = po + row * inner
            for j in 0..<inner { target[j] = op(sc[j * ic], sx[j * ix], sy[j * iy]) }
        }
    }
}

/// Copies `x` into `y`, repeating it along the dims where it broadcasts (Expand, the first
/// operand of a variadic Max/Min/Sum), for any element size.
func broadcastCopy(_ x: TensorView, into y: TensorView, pool: ComputePool) {
    let size = y.dataType.byteSize!
    if x.count == y.count {
        y.base.copyMemory(from: x.base, byteCount: y.count * size)
        return
    }
    let layout = BroadcastLayout(output: y.shape, inputs: [x.shape])
    let inner = layout.inner, stride = layout.innerStride(0)
    forEachChunk(layout.rows, pool: pool, grain: layout.grain) { range in
        for row in range {
            let source = x.base + layout.offset(row: row, input: 0) * size
            let target = y.base + row * inner * size
            if stride == 1 {
                target.copyMemory(from: source, byteCount: inner * size)
            } else {
                for j in 0..<inner { (target + j * size).copyMemory(from: source, byteCount: size) }
            }
        }
    }
}
