public import Logging
public import MaaSCore
import Glibc
import Synchronization

/// A model ready to run: ops checked and ordered, constants folded, weights pre-packed.
/// Execution plans (buffers sized for one set of input shapes) are built on first use and kept.
///
/// ```swift
/// let model = try CompiledModel(graph: try ONNXModel.load(path: "model.onnx"))
/// let outputs = try model.run(["input": try Tensor(values, shape: [8, 10])])
/// ```
///
/// Safe to call from any thread; runs with the same input shapes take turns on one plan.
public final class CompiledModel: Sendable {
    /// The graph as loaded, without its initializers: the weights live in the compiled steps.
    public let graph: ModelGraph
    public let pool: ComputePool
    let steps: [Step]
    /// Value slots: graph inputs first, then everything nodes produce; constants are separate.
    let valueCount: Int
    let inputSlots: [Int]
    let outputSlots: [Int]
    let constants: [Int: Tensor]
    /// Weights every reader packed into its own layout at load: only their type and shape are
    /// kept (plans see no buffer for them), so each is held once.
    let packedConstants: [Int: ValueMeta]
    private let plans = Mutex(PlanCache())
    let tuner = KernelTuner()
    /// Where plans report their kernel choices (debug level).
    let logger: Logger?

    struct Step: Sendable {
        let node: Node
        let kernel: any Kernel
        let inputs: [Int?]
        let outputs: [Int]
    }

    /// The most plans kept per model; a client sending ever-new shapes must not grow memory.
    static let maxPlans = 16
    /// The most bytes one plan may allocate for its intermediate values; a request whose shapes
    /// would need more is refused (RESOURCE_EXHAUSTED) instead of exhausting memory.
    let maxPlanBytes: Int

    public init(
        graph: ModelGraph, pool: ComputePool = .shared, maxPlanBytes: Int = 4 << 30, logger: Logger? = nil
    ) throws(InferenceError) {
        var structure = graph
        structure.initializers = [:]
        self.graph = structure
        self.logger = logger
        self.pool = pool
        self.maxPlanBytes = maxPlanBytes
        var slots: [String: Int] = [:]
        var constants: [Int: Tensor] = [:]
        var nextSlot = 0
        func slot(_ name: String) -> Int {
            if let existing = slots[name] { return existing }
            slots[name] = nextSlot
            nextSlot += 1
            return nextSlot - 1
        }
        var seenInputs = Set<String>()
        for input in graph.inputs {
            guard seenInputs.insert(input.name).inserted else { throw .invalidModel("graph input '\(input.name)' is declared twice") }
        }
        // Outputs are answered by name (found by the onnx fuzz harness: outputShapes(for:) trapped
        // on a duplicate key).
        var seenOutputs = Set<String>()
        for output in graph.outputs {
            guard seenOutputs.insert(output.name).inserted else { throw .invalidModel("graph output '\(output.name)' is declared twice") }
        }
        self.inputSlots = graph.inputs.map { slot($0.name) }
        for (name, tensor) in graph.initializers where slots[name] == nil {
            constants[slot(name)] = tensor
        }

        let ordered = try Self.topologicalOrder(graph)
        var steps: [Step] = []
        // What folding allocates at load shares the plan budget: a Expand or a broadcasting Add
        // of small constants can describe tensors far larger than the file.
        var foldingBudget = maxPlanBytes
        for node in ordered {
            let opset = graph.opset(for: node.domain) ?? 0
            let inputSlots = node.inputs.map { $0.isEmpty ? nil : slots[$0] }
            let known = inputSlots.map { $0.flatMap { constants[$0] } }
            // Trailing empty names are optional outputs left out; one in the middle gets a slot
            // of its own that nothing reads (sharing one slot for "" let unrelated nodes alias).
            var listed = node.outputs[...]
            while listed.last?.isEmpty == true { listed.removeLast() }
            // Kernels write their first output (found by the onnx fuzz harness: a ReduceMean with
            // none was run into an empty list of buffers).
            guard !listed.isEmpty else { throw .invalidModel("\(node.label) lists no outputs") }
            let kernel = try OpRegistry.make(NodeContext(node: node, opset: opset, constants: known))
            if kernel.callsOpenBLAS {
                do { try BLAS.require() } catch { throw InferenceError(error.code, "\(node.label) runs on OpenBLAS, but \(error.message)") }
            }
            for output in node.outputs where !output.isEmpty {
                guard slots[output] == nil else { throw .invalidModel("\(node.label): output '\(output)' is already produced elsewhere") }
            }
            let outputSlots = listed.map { name in
                if !name.isEmpty { return slot(name) }
                nextSlot += 1
                return nextSlot - 1
            }
            // Nodes whose inputs are all known now are computed once, at load (every op we
            // implement is pure, so folding never changes a result).
            let nonEmpty = inputSlots.compactMap { $0 }
            if nonEmpty.allSatisfy({ constants[$0] != nil }) {
                let values = try Self.evaluate(kernel, node: node, inputs: known, pool: pool, budget: &foldingBudget)
                try Self.checkOutputCount(node, listed: outputSlots.count, produced: values.count)
                for (index, slot) in outputSlots.enumerated() { constants[slot] = values[index] }
                continue
            }
            steps.append(Step(node: node, kernel: kernel, inputs: inputSlots, outputs: outputSlots))
        }
        for output in graph.outputs {
            guard slots[output.name] != nil else {
                throw .invalidModel("graph output '\(output.name)' is not produced by any node, initializer or input")
            }
        }
        let graphOutputs = Set(graph.outputs.map { slots[$0.name]! })
        let fused = Self.fuse(steps, constants: constants, graphOutputs: graphOutputs)
        self.steps = fused
        (self.constants, self.packedConstants) = Self.droppingPacked(constants, steps: fused, graphOutputs: graphOutputs)
        self.valueCount = nextSlot
        self.outputSlots = graph.outputs.map { slots[$0.name]! }
    }

    /// Splits off the constants no step reads at run time: weights every reader packed, and those
    /// fusion folded into a kernel (a bias row) or left unread.
    private static func droppingPacked(
        _ constants: [Int: Tensor], steps: [Step], graphOutputs: Set<Int>
    ) -> (kept: [Int: Tensor], packed: [Int: ValueMeta]) {
        var readAtRunTime = graphOutputs
        for step in steps {
            let packed = step.kernel.packedInputs
            for (index, slot) in step.inputs.enumerated() where !packed.contains(index) {
                if let slot { readAtRunTime.insert(slot) }
            }
        }
        var kept: [Int: Tensor] = [:], packed: [Int: ValueMeta] = [:]
        for (slot, tensor) in constants {
            if readAtRunTime.contains(slot) {
                kept[slot] = tensor
            } else {
                packed[slot] = ValueMeta(tensor.dataType, tensor.shape)
            }
        }
        return (kept, packed)
    }

    /// Runs one forward pass.
    /// - Parameter inputs: one tensor per graph input, by name.
    /// - Returns: one tensor per graph output, by name.
    public func run(_ inputs: [String: Tensor]) throws(InferenceError) -> [String: Tensor] {
        var ordered: [Tensor] = []
        for info in graph.inputs {
            guard let tensor = inputs[info.name] else {
                throw .invalidInput("missing input '\(info.name)'")
            }
            try Self.check(tensor, against: info)
            ordered.append(tensor)
        }
        if let unknown = inputs.keys.first(where: { name in !graph.inputs.contains { $0.name == name } }) {
            throw .invalidInput("unknown input '\(unknown)'; the model's inputs are \(graph.inputs.map(\.name))")
        }
        let plan = try plan(for: ordered.map(\.shape))
        let feeds = ordered
        return try pool.run { () throws(InferenceError) in try plan.execute(feeds) }
            .enumerated().reduce(into: [:]) { result, item in result[graph.outputs[item.offset].name] = item.element }
    }

    /// Seconds per op type over `runs` forward passes with these inputs (after the plan is built).
    public func profile(_ inputs: [String: Tensor], runs: Int) throws(InferenceError) -> [String: Double] {
        let ordered = try graph.inputs.map { info throws(InferenceError) -> Tensor in
            guard let tensor = inputs[info.name] else { throw .invalidInput("missing input '\(info.name)'") }
            return tensor
        }
        let plan = try plan(for: ordered.map(\.shape))
        return try pool.run { () throws(InferenceError) -> [String: Double] in
            var totals: [String: Double] = [:]
            for _ in 0..<runs { _ = try plan.execute(ordered, profile: &totals) }
            return totals
        }
    }

    /// The shapes the outputs will have for these input shapes (builds the plan if needed).
    public func outputShapes(for inputShapes: [String: [Int]]) throws(InferenceError) -> [String: [Int]] {
        var shapes: [[Int]] = []
        for info in graph.inputs {
            guard let shape = inputShapes[info.name] else { throw .invalidInput("missing input '\(info.name)'") }
            shapes.append(shape)
        }
        let plan = try plan(for: shapes)
        return Dictionary(uniqueKeysWithValues: zip(graph.outputs.map(\.name), plan.outputShapes))
    }

    /// Zero-filled inputs of these shapes, for a warm-up pass. The plan for the shapes is built
    /// first, so shapes whose buffers the plan memory budget cannot hold are refused
    /// (RESOURCE_EXHAUSTED) before anything is allocated for them: a model file declares them.
    public func zeroInputs(_ shapes: [String: [Int]]) throws(InferenceError) -> [String: Tensor] {
        _ = try outputShapes(for: shapes)
        var feeds: [String: Tensor] = [:]
        for info in graph.inputs {
            feeds[info.name] = try Tensor(zeros: info.dataType, shape: shapes[info.name]!)
        }
        return feeds
    }

    /// Times the GEMM and convolution implementations for each of these sets of input shapes now,
    /// as the first run with them would, without keeping their plans: a server's warm-up, so
    /// that no request waits for the timing.
    public func tune(for inputShapes: [[String: [Int]]]) throws(InferenceError) {
        for set in inputShapes {
            var shapes: [[Int]] = []
            for info in graph.inputs {
                guard let shape = set[info.name] else { throw .invalidInput("missing input '\(info.name)'") }
                shapes.append(shape)
            }
            _ = try ExecutionPlan(model: self, inputShapes: shapes)
        }
    }

    /// The implementation each GEMM or convolution runs for these input shapes, and why (the
    /// times measured when the plan was built, or the variable that forced it).
    public func kernelChoices(for inputShapes: [String: [Int]]) throws(InferenceError) -> [KernelChoice] {
        var shapes: [[Int]] = []
        for info in graph.inputs {
            guard let shape = inputShapes[info.name] else { throw .invalidInput("missing input '\(info.name)'") }
            shapes.append(shape)
        }
        return try plan(for: shapes).kernelChoices
    }

    static func check(_ tensor: Tensor, against info: ValueInfo) throws(InferenceError) {
        guard tensor.dataType == info.dataType else {
            throw .invalidInput("input '\(info.name)': expected \(info.dataType), got \(tensor.dataType)")
        }
        guard info.shape.isEmpty || tensor.shape.count == info.shape.count else {
            throw .invalidInput("input '\(info.name)': expected rank \(info.shape.count) \(info.shape), got shape \(tensor.shape)")
        }
        for (index, dim) in info.shape.enumerated() {
            if case .fixed(let expected) = dim, tensor.shape[index] != expected {
                throw .invalidInput("input '\(info.name)': expected shape \(info.shape), got \(tensor.shape)")
            }
        }
        if tensor.dataType == .bool {
            // Kernels treat bools as the bytes 0 and 1 (And, Not, Where): anything else is refused here.
            let bad = tensor.withUnsafeBytes { bytes in bytes.firstIndex { $0 > 1 } }
            if let bad {
                throw .invalidInput("input '\(info.name)': element \(bad) is the byte \(tensor.withUnsafeBytes { $0[bad] }), not a bool (0 or 1)")
            }
        }
    }

    func plan(for shapes: [[Int]]) throws(InferenceError) -> ExecutionPlan {
        if let plan = plans.withLock({ $0.plan(for: shapes) }) { return plan }
        let plan = try ExecutionPlan(model: self, inputShapes: shapes)
        plans.withLock { $0.insert(plan, limit: Self.maxPlans) }
        return plan
    }

    /// Runs `kernel` once on known inputs (constant folding).
    /// - Parameter budget: bytes the outputs may take; what they take is subtracted. Checked
    ///   before anything is allocated for them: sizes come from the model's constants.
    static func evaluate(
        _ kernel: any Kernel, node: Node, inputs: [Tensor?], pool: ComputePool, budget: inout Int
    ) throws(InferenceError) -> [Tensor] {
        let metas = inputs.map { $0.map { ValueMeta(constant: $0) } }
        let outputMetas = try kernel.outputs(metas)
        var outputs: [Tensor] = []
        let aliases = kernel.aliases
        var bytes = 0
        for (index, meta) in outputMetas.enumerated() where aliases[index].flatMap({ inputs[$0] }) == nil {
            let (size, overflow) = try Shape.elementCount(meta.shape).multipliedReportingOverflow(by: meta.dataType.byteSize ?? 1)
            bytes = overflow ? .max : bytes.addingReportingOverflow(size).partialValue
        }
        guard bytes <= budget else {
            throw InferenceError(
                .resourceExhausted,
                "\(node.label): folding it at load would allocate \(bytes) bytes for outputs \(outputMetas.map(\.shape)), past the \(budget) bytes left of the plan memory budget")
        }
        budget -= bytes
        for (index, meta) in outputMetas.enumerated() {
            if let constant = meta.constant {
                outputs.append(constant)
            } else if let source = aliases[index], let input = inputs[source] {
                // Reshapes and identities share their input's bytes.
                outputs.append(try input.reshaped(meta.shape))
            } else {
                outputs.append(try Tensor(zeros: meta.dataType, shape: meta.shape))
            }
        }
        if outputMetas.allSatisfy({ $0.constant != nil }) { return outputs }
        let inputViews = inputs.map { $0.map { TensorView(base: $0.unsafeBaseAddress, shape: $0.shape, dataType: $0.dataType) } }
        let outputViews = outputs.map { TensorView(base: $0.unsafeBaseAddress, shape: $0.shape, dataType: $0.dataType) }
        do {
            try kernel.run(inputViews, outputViews, pool: pool)
        } catch {
            throw InferenceError(error.code, "\(node.label): \(error.message)")
        }
        return outputs
    }

    /// A node may list fewer outputs than its op gives (the rest are left out), not more (found by
    /// the onnx fuzz harness: a Relu listing two outputs was read past the one it has).
    static func checkOutputCount(_ node: Node, listed: Int, produced: Int) throws(InferenceError) {
        guard listed <= produced else {
            throw .invalidModel("\(node.label) lists \(listed) outputs, but \(node.opType) gives \(produced)")
        }
    }

    /// Kahn's algorithm over value names; errors name a missing producer or a cycle.
    static func topologicalOrder(_ graph: ModelGraph) throws(InferenceError) -> [Node] {
        var producer: [String: Int] = [:]
        for (index, node) in graph.nodes.enumerated() {
            for output in node.outputs where !output.isEmpty {
                if producer[output] != nil || graph.initializers[output] != nil || graph.inputs.contains(where: { $0.name == output }) {
                    throw .invalidModel("\(node.label): output '\(output)' is already produced elsewhere")
                }
                producer[output] = index
            }
        }
        let available = Set(graph.inputs.map(\.name)).union(graph.initializers.keys)
        var waiting = [Int](repeating: 0, count: graph.nodes.count)
        var consumers: [Int: [Int]] = [:]
        for (index, node) in graph.nodes.enumerated() {
            for input in node.inputs where !input.isEmpty && !available.contains(input) {
                guard let source = producer[input] else {
                    throw .invalidModel("\(node.label): input '\(input)' is not produced by any node, initializer or graph input")
                }
                waiting[index] += 1
                consumers[source, default: []].append(index)
            }
        }
        var ready = (0..<graph.nodes.count).filter { waiting[$0] == 0 }
        var order: [Node] = []
        while let index = ready.first {
            ready.removeFirst()
            order.append(graph.nodes[index])
            for consumer in consumers[index] ?? [] {
                waiting[consumer] -= 1
                if waiting[consumer] == 0 { ready.append(consumer) }
            }
        }
        if order.count < graph.nodes.count {
            let stuck = (0..<graph.nodes.count).filter { waiting[$0] > 0 }.prefix(5).map { graph.nodes[$0].label }
            throw .invalidModel("the graph has a cycle through \(stuck.joined(separator: ", "))")
        }
        return order
    }
}
