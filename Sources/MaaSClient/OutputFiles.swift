import Glibc
public import MaaSCore

/// One `.npy` file per output, written row block by row block, that appears under its name only
/// when every row is in.
///
/// Each output goes to `DIR/.NAME.npy.partial-PID`: a header with room reserved, then the rows as
/// they come. ``commit()`` rewrites the header with the final row count and renames the files to
/// `DIR/NAME.npy`; ``discard()`` (or a deinit without commit) removes them. So a failed or
/// interrupted run leaves the directory as it was.
///
/// - Important: not thread-safe; one task appends, in row order.
public final class OutputFiles {
    private struct File {
        var name: String, temporary: String, final: String
        var descriptor: Int32
        var dataType: DataType
        var rowShape: [Int]
        var rows = 0
    }

    /// Header bytes reserved: room for the dtype and a shape of several 10-digit dimensions.
    private static let headerLength = 256
    private let directory: String
    private var files: [File] = []
    private var finished = false

    /// - Parameter directory: created if missing.
    public init(directory: String) throws(InferenceError) {
        self.directory = directory
        var path = directory.hasPrefix("/") ? "/" : ""
        for part in directory.split(separator: "/") {
            path += (path.isEmpty || path.hasSuffix("/") ? "" : "/") + part
            if mkdir(path, 0o755) != 0 && errno != EEXIST {
                throw InferenceError(.invalidArgument, "cannot create '\(path)': \(String(cString: strerror(errno)))")
            }
        }
    }

    /// The files that ``commit()`` wrote: name, path, datatype and shape.
    public private(set) var written: [(name: String, path: String, dataType: DataType, shape: [Int])] = []

    /// Appends one response's outputs: the next rows of each. Every response must carry the same
    /// outputs with the same datatype and non-batch dimensions.
    public func append(_ outputs: [(name: String, tensor: Tensor)]) throws(InferenceError) {
        if files.isEmpty {
            for (name, tensor) in outputs { try open(name, tensor) }
        }
        guard outputs.count == files.count else {
            throw InferenceError(.internal, "a response has \(outputs.count) outputs, the first had \(files.count)")
        }
        for (name, tensor) in outputs {
            guard let index = files.firstIndex(where: { $0.name == name }) else {
                throw InferenceError(.internal, "a response has output '\(name)', which the first did not have")
            }
            let file = files[index]
            guard tensor.dataType == file.dataType, tensor.rank >= 1, Array(tensor.shape.dropFirst()) == file.rowShape else {
                throw InferenceError(.internal, "output '\(name)' is \(tensor.dataType) \(tensor.shape), but the first rows were \(file.dataType) [n] + \(file.rowShape)")
            }
            try tensor.withUnsafeBytes { bytes throws(InferenceError) in try Self.write(file.descriptor, bytes, file.temporary) }
            files[index].rows += tensor.shape[0]
        }
    }

    /// Writes the final headers and renames every file into place.
    public func commit() throws(InferenceError) {
        for file in files {
            let header = try NPY.header(file.dataType, shape: [file.rows] + file.rowShape, length: Self.headerLength)
            let done = header.withUnsafeBytes { pwrite(file.descriptor, $0.baseAddress, $0.count, 0) }
            guard done == header.count, fsync(file.descriptor) == 0 else {
                throw InferenceError(.internal, "cannot write '\(file.temporary)': \(String(cString: strerror(errno)))")
            }
        }
        closeAll()
        for file in files {
            guard rename(file.temporary, file.final) == 0 else {
                throw InferenceError(.internal, "cannot rename '\(file.temporary)' to '\(file.final)': \(String(cString: strerror(errno)))")
            }
            written.append((file.name, file.final, file.dataType, [file.rows] + file.rowShape))
        }
        finished = true
    }

    /// Removes the partial files.
    public func discard() {
        guard !finished else { return }
        closeAll()
        for file in files { unlink(file.temporary) }
        finished = true
    }

    deinit {
        discard()
    }

    private func open(_ name: String, _ tensor: Tensor) throws(InferenceError) {
        let base = String(name.map { $0 == "/" ? "_" : $0 })
        let temporary = "\(directory)/.\(base).npy.partial-\(getpid())"
        let descriptor = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw InferenceError(.invalidArgument, "cannot create '\(temporary)': \(String(cString: strerror(errno)))")
        }
        files.append(File(name: name, temporary: temporary, final: "\(directory)/\(base).npy", descriptor: descriptor, dataType: tensor.dataType, rowShape: Array(tensor.shape.dropFirst())))
        let placeholder = try NPY.header(tensor.dataType, shape: [0] + files[files.count - 1].rowShape, length: Self.headerLength)
        try placeholder.withUnsafeBufferPointer { bytes throws(InferenceError) in try Self.write(descriptor, UnsafeRawBufferPointer(bytes), temporary) }
    }

    private func closeAll() {
        for index in files.indices where files[index].descriptor >= 0 {
            close(files[index].descriptor)
            files[index].descriptor = -1
        }
    }

    private static func write(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, _ path: String) throws(InferenceError) {
        var offset = 0
        while offset < bytes.count {
            let count = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw InferenceError(.internal, "cannot write '\(path)': \(String(cString: strerror(errno)))") }
            offset += count
        }
    }
}
