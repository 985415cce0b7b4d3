import MaaSCore

/// Maps ONNX (domain, op_type) to kernels. Anything else is refused at load with the op, the
/// node and the opset named.
enum OpRegistry {
    static func make(_ context: NodeContext) throws(InferenceError) -> any Kernel {
        let node = context.node
        let domain = node.domain == "ai.onnx" ? "" : node.domain
        if domain == "ai.onnx.ml" {
            switch node.opType {
            case "ArrayFeatureExtractor": return try ArrayFeatureExtractorKernel(context)
            default: break
            }
        } else if domain == "" {
            switch node.opType {
            case "Gemm": return try GemmKernel(context)
            case "MatMul": return try MatMulKernel(context)
            case "Add", "Sub", "Mul", "Div", "Pow", "Mod": return try BinaryKernel(context)
            case "Max", "Min", "Sum", "Mean": return try VariadicKernel(context)
            case "Clip": return try ClipKernel(context)
            case "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Erf", "Gelu", "Neg", "Sqrt", "Exp", "Abs", "Log", "Reciprocal",
                "Floor", "Ceil", "Round", "Sin", "Cos", "Softplus":
                return try UnaryKernel(context)
            case "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual": return try CompareKernel(context)
            case "And", "Or", "Xor", "Not": return try LogicalKernel(context)
            case "IsNaN", "IsInf": return try FloatClassKernel(context)
            case "Where": return try WhereKernel(context)
            case "ConstantOfShape": return try ConstantOfShapeKernel(context)
            case "Range": return try RangeKernel(context)
            case "Slice": return try SliceKernel(context)
            case "Split": return try SplitKernel(context)
            case "Expand": return try ExpandKernel(context)
            case "GatherND": return try GatherNDKernel(context)
            case "GatherElements": return try GatherElementsKernel(context)
            case "CumSum": return try CumSumKernel(context)
            case "Identity", "Dropout": return try IdentityKernel(context)
            case "Cast": return try CastKernel(context)
            case "Constant": return try ConstantKernel(context)
            case "Reshape": return try ReshapeKernel(context)
            case "Flatten": return try FlattenKernel(context)
            case "Unsqueeze", "Squeeze": return try SqueezeKernel(context)
            case "Transpose": return try TransposeKernel(context)
            case "Concat": return try ConcatKernel(context)
            case "Shape": return try ShapeKernel(context)
            case "Gather": return try GatherKernel(context)
            case "Softmax", "LogSoftmax": return try SoftmaxKernel(context)
            case "BatchNormalization": return try BatchNormalizationKernel(context)
            case "LayerNormalization": return try LayerNormalizationKernel(context)
            case "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare",
                "ReduceLogSumExp":
                return try ReduceKernel(context)
            case "ArgMax": return try ArgMaxKernel(context)
            case "Conv": return try ConvKernel(context)
            case "MaxPool", "AveragePool": return try PoolKernel(context)
            case "GlobalAveragePool": return try GlobalAveragePoolKernel(context)
            default: break
            }
        }
        throw .unsupported(
            "unsupported operator '\(node.opType)'\(domain.isEmpty ? "" : " (domain '\(domain)')") in node '\(node.name)' at opset \(context.opset)")
    }
}
