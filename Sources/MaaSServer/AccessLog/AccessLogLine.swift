public import MaaSCore
import MaaSJSON

/// One access log line: a JSON object on one line, members in this order, a member left out
/// when it does not apply (never `null`):
///
/// ```json
/// {"time":"2026-12-01T09:30:12.345Z","peer":"127.0.0.1:50212","protocol":"grpc",
///  "path":"/inference.GRPCInferenceService/ModelInfer","status":0,"status_name":"OK",
///  "model":"seed","version":"1","token":"runner","bytes_in":52,"bytes_out":40,
///  "queue_us":85,"compute_us":31,"duration_us":412}
/// ```
///
/// - `time`: when the request's head arrived, RFC 3339 UTC with milliseconds.
/// - `method`: HTTP lines only; `path`: the gRPC method path or the HTTP request target.
/// - `status`: the gRPC status code (with `status_name`) or the HTTP status.
/// - `model`/`version`: when the request names a model (the version that served it, once known).
/// - `token`: the name of the token the request was checked with, never the token.
/// - `queue_us`/`compute_us`: only requests that went through a batcher.
///
/// Strings come from the wire (paths, model names): ``JSONWriter`` escapes quotes, backslashes
/// and control bytes, and invalid UTF-8 was already replaced when they were decoded.
public enum AccessLogLine {
    /// Appends the line for `record`, with its newline.
    public static func append(_ record: AccessRecord, to out: inout [UInt8]) {
        var json = JSONWriter(capacity: estimatedBytes(record))
        json.beginObject()
        json.key("time")
        json.string(timestamp(nanosecondsSinceEpoch: record.endedAt - nanoseconds(record.duration)))
        if let peer = record.peer {
            json.key("peer")
            json.string(peer)
        }
        json.key("protocol")
        json.string(record.protocolName)
        if let method = record.method {
            json.key("method")
            json.string(method)
        }
        if let path = record.path {
            json.key("path")
            json.string(path)
        }
        json.key("status")
        json.int(record.status)
        if record.wireProtocol == .grpc {
            json.key("status_name")
            json.string(Int32(exactly: record.status).flatMap(StatusCode.init(rawValue:)).map { "\($0)" } ?? "UNKNOWN")
        }
        let notes = record.notes
        for (name, value) in [("model", notes.model), ("version", notes.version), ("token", notes.token)] {
            guard let value else { continue }
            json.key(name)
            json.string(value)
        }
        json.key("bytes_in")
        json.int(record.bytesIn)
        json.key("bytes_out")
        json.int(record.bytesOut)
        if let queue = notes.queue {
            json.key("queue_us")
            json.int(microseconds(queue))
        }
        if let compute = notes.compute {
            json.key("compute_us")
            json.int(microseconds(compute))
        }
        json.key("duration_us")
        json.int(microseconds(record.duration))
        json.endObject()
        out.append(contentsOf: json.bytes)
        out.append(UInt8(ascii: "\n"))
    }

    /// An upper bound of the line's length for the writer's memory bound, without formatting
    /// it: the fixed members, plus the strings (escaping can at most sextuple a control byte;
    /// wire strings rarely have any, so they count once).
    static func estimatedBytes(_ record: AccessRecord) -> Int {
        // Written out rather than summed over an array literal, which would allocate on the loop.
        let notes = record.notes
        let request = (record.peer?.utf8.count ?? 0) + (record.method?.utf8.count ?? 0) + (record.path?.utf8.count ?? 0)
        return 256 + request + (notes.model?.utf8.count ?? 0) + (notes.version?.utf8.count ?? 0) + (notes.token?.utf8.count ?? 0)
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a time in nanoseconds since the Unix epoch: the
    /// proleptic Gregorian calendar from days since 1970 (H. Hinnant's `civil_from_days`), so
    /// no Foundation formatter (slow, and locale-dependent) is involved.
    public static func timestamp(nanosecondsSinceEpoch nanos: Int64) -> String {
        let millis = nanos >= 0 ? nanos / 1_000_000 : (nanos - 999_999) / 1_000_000
        var days = millis >= 0 ? millis / 86_400_000 : (millis - 86_399_999) / 86_400_000
        let ofDay = millis - days * 86_400_000
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let dayOfEra = days - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        var text: [UInt8] = []
        text.reserveCapacity(24)
        func digits(_ value: Int64, _ width: Int) {
            var divisor: Int64 = 1
            for _ in 1..<width { divisor *= 10 }
            var rest = value
            while divisor > 0 {
                text.append(UInt8(ascii: "0") + UInt8(rest / divisor % 10))
                rest %= divisor
                divisor /= 10
            }
        }
        digits(year, 4)
        text.append(UInt8(ascii: "-"))
        digits(month, 2)
        text.append(UInt8(ascii: "-"))
        digits(day, 2)
        text.append(UInt8(ascii: "T"))
        digits(ofDay / 3_600_000, 2)
        text.append(UInt8(ascii: ":"))
        digits(ofDay / 60_000 % 60, 2)
        text.append(UInt8(ascii: ":"))
        digits(ofDay / 1000 % 60, 2)
        text.append(UInt8(ascii: "."))
        digits(ofDay % 1000, 3)
        text.append(UInt8(ascii: "Z"))
        return String(decoding: text, as: UTF8.self)
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    static func microseconds(_ duration: Duration) -> Int64 {
        nanoseconds(duration) / 1000
    }
}
