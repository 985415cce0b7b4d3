import Foundation
import MaaSCore
@testable import MaaSTraining
import Testing

@Suite("Training data files")
struct DataFileTests {
    let directory: String = {
        let path = NSTemporaryDirectory() + "maas-data-\(UInt64.random(in: 0...UInt64.max))"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    func file(_ name: String, _ text: String) -> String {
        let path = directory + "/" + name
        precondition(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
        return path
    }

    func npy(_ name: String, _ tensor: Tensor) throws -> String {
        let path = directory + "/" + name
        let bytes = try NPY.encode(tensor)
        precondition(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        return path
    }

    @Test func csvWithHeaderAndNamedTargets() throws {
        let path = file("iris.csv", "a,b,\"species\",c\r\n1,2,0,3\n\n4,5,2,6\n")
        let data = try TrainingData.load(data: path, targets: nil, targetColumns: "species", loss: .crossEntropy)
        #expect(data.rows == 2)
        #expect(data.features == [1, 2, 3, 4, 5, 6])
        #expect(data.targets == .classes([0, 2]))
        // Rows keep their line numbers and columns their CSV positions for errors.
        #expect(data.featureSource.locate(row: 1, column: 2) == "\(path):4:4")
    }

    @Test func byteOrderMarkIsNotData() throws {
        let path = directory + "/bom.csv"
        precondition(FileManager.default.createFile(atPath: path, contents: Data([0xEF, 0xBB, 0xBF] + Array("x,label\n1.5,1\n".utf8))))
        let data = try TrainingData.load(data: path, targets: nil, targetColumns: "label", loss: .crossEntropy)
        #expect(data.features == [1.5] && data.targets == .classes([1]))
        let headerless = directory + "/bom2.csv"
        precondition(FileManager.default.createFile(atPath: headerless, contents: Data([0xEF, 0xBB, 0xBF] + Array("1.5,1\n2.5,0\n".utf8))))
        #expect(try TrainingData.load(data: headerless, targets: nil, targetColumns: "1", loss: .crossEntropy).rows == 2)
    }

    @Test func csvWithoutHeaderByIndex() throws {
        let path = file("plain.csv", "1,2,3\n4,5,6\n")
        let data = try TrainingData.load(data: path, targets: nil, targetColumns: "-1", loss: .mse)
        #expect(data.features == [1, 2, 4, 5])
        #expect(data.targets == .values([3, 6], width: 1))
    }

    @Test(arguments: [
        ("ragged.csv", "a,b,y\n1,2,0\n3,4\n", "ragged.csv:3: expected 3 columns, found 2"),
        ("word.csv", "1,2,0\n3,x,1\n", "word.csv:2:2: 'x' is not a number"),
        ("empty.csv", "\n\n", "empty.csv: the file is empty"),
        ("fraction.csv", "1,2,0\n3,4,1.5\n", "fraction.csv:2:3: label 1.5 is not an integer class index"),
    ])
    func csvErrorsNameLineAndColumn(_ name: String, _ text: String, _ message: String) throws {
        let path = file(name, text)
        let error = try #require(throws: TrainingError.self) {
            try TrainingData.load(data: path, targets: nil, targetColumns: "2", loss: .crossEntropy)
        }
        #expect(error.message == "\(directory)/\(message)")
    }

    @Test func checkFindsNaNLabelsOutOfRangeAndWrongWidths() throws {
        let model = try MLP(layerSizes: [2, 4, 3], activation: .relu, seed: 1)
        let nan = try TrainingData.load(data: file("nan.csv", "x,y,label\n1,2,0\n3,nan,1\n"), targets: nil, targetColumns: "label", loss: .crossEntropy)
        #expect(throws: TrainingError("\(directory)/nan.csv:3:2: nan is not a finite number")) { try nan.check(for: model, loss: .crossEntropy) }

        let label = try TrainingData.load(data: file("label.csv", "x,y,label\n1,2,0\n3,4,3\n"), targets: nil, targetColumns: "label", loss: .crossEntropy)
        #expect(throws: TrainingError("\(directory)/label.csv:3:3: label 3 is out of range for 3 classes (0..<3)")) {
            try label.check(for: model, loss: .crossEntropy)
        }

        let wide = try TrainingData.load(data: file("wide.csv", "1,2,5,0\n"), targets: nil, targetColumns: "3", loss: .crossEntropy)
        #expect(throws: TrainingError("\(directory)/wide.csv: rows have 3 features but the model's input width is 2")) {
            try wide.check(for: model, loss: .crossEntropy)
        }

        // .npy positions are 0-based rows and columns, also after a validation split.
        let x = try npy("x.npy", Tensor([1, 2, 3, 4, 5, .infinity], shape: [3, 2]))
        let y = try npy("y.npy", Tensor([0, 1, 2] as [Int64], shape: [3]))
        let data = try TrainingData.load(data: x, targets: y, targetColumns: nil, loss: .crossEntropy)
        #expect(throws: TrainingError("\(x): row 2, column 1: inf is not a finite number")) { try data.slice(1..<3).check(for: model, loss: .crossEntropy) }
    }

    @Test func npyTargetsMustFitTheLoss() throws {
        let x = try npy("x.npy", Tensor([1, 2, 3, 4] as [Float], shape: [2, 2]))
        let floats = try npy("yf.npy", Tensor([0, 1] as [Float], shape: [2]))
        #expect(throws: TrainingError("\(floats): cross-entropy needs integer class labels, the array is float32")) {
            try TrainingData.load(data: x, targets: floats, targetColumns: nil, loss: .crossEntropy)
        }
        let short = try npy("short.npy", Tensor([0] as [Float], shape: [1, 1]))
        #expect(throws: TrainingError("\(x) has 2 rows but \(short) has 1")) {
            try TrainingData.load(data: x, targets: short, targetColumns: nil, loss: .mse)
        }
        let cube = try npy("cube.npy", Tensor([1, 2] as [Float], shape: [1, 1, 2]))
        #expect(throws: TrainingError("\(cube): features must be a 2-D array [rows, columns], got shape [1, 1, 2]")) {
            try TrainingData.load(data: cube, targets: short, targetColumns: nil, loss: .mse)
        }
        let bad = file("bad.npy", "not numpy")
        #expect(throws: TrainingError("\(bad): not a .npy file (wrong magic)")) {
            try TrainingData.load(data: bad, targets: short, targetColumns: nil, loss: .mse)
        }
    }

    @Test func targetSelectionErrors() throws {
        let csv = file("sel.csv", "a,b,label\n1,2,0\n")
        let plain = file("plain2.csv", "1,2,0\n")
        let x = try npy("sx.npy", Tensor([1, 2] as [Float], shape: [1, 2]))
        let cases: [(() throws -> TrainingData, String)] = [
            ({ try TrainingData.load(data: csv, targets: nil, targetColumns: "nope", loss: .mse) },
             "\(csv): --target-columns 'nope' is not a column (header: a, b, label)"),
            ({ try TrainingData.load(data: plain, targets: nil, targetColumns: "3", loss: .mse) },
             "\(plain): --target-columns 3 is out of range for 3 columns"),
            ({ try TrainingData.load(data: csv, targets: nil, targetColumns: "label,2", loss: .mse) }, "--target-columns names column 2 twice"),
            ({ try TrainingData.load(data: csv, targets: nil, targetColumns: "a,b,label", loss: .mse) },
             "\(csv): every column is a target; no features remain"),
            ({ try TrainingData.load(data: csv, targets: x, targetColumns: "label", loss: .mse) }, "give --targets or --target-columns, not both"),
            ({ try TrainingData.load(data: csv, targets: nil, targetColumns: nil, loss: .mse) },
             "\(csv): say which columns are targets with --target-columns, or give --targets FILE"),
            ({ try TrainingData.load(data: x, targets: nil, targetColumns: "0", loss: .mse) }, "--target-columns needs CSV data, \(x) is not a .csv file"),
            ({ try TrainingData.load(data: x, targets: self.directory + "/missing.npy", targetColumns: nil, loss: .mse) },
             "\(self.directory)/missing.npy: cannot read the file (missing or not readable)"),
        ]
        for (load, message) in cases {
            #expect(throws: TrainingError(message)) { try load() }
        }
        let flags = try npy("flags.npy", [UInt8(1), 0].withUnsafeBytes { try Tensor(dataType: .bool, shape: [1, 2], bytes: $0) })
        #expect(throws: TrainingError("\(flags): features of dtype bool are not supported (use float32, float64 or integers)")) {
            try TrainingData.load(data: flags, targets: x, targetColumns: nil, loss: .mse)
        }
    }
}
