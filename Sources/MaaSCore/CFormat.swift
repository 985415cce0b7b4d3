internal import Glibc

/// printf-style formatting through the C library, for the command line's fixed-width numbers
/// ("%.3f ms", "%3.0f%%"): Foundation's String(format:) would load Foundation and ICU, about
/// 6 MB resident, into every maas process for it. Integers are passed as Int, so their
/// conversions are `%ld`; strings as C strings (`%s`), so only through ``cFormat(_:_:)`` with
/// `String` arguments converted by the caller.
public func cFormat(_ format: String, _ arguments: any CVarArg...) -> String {
    withVaList(arguments) { list in
        var buffer = [CChar](repeating: 0, count: 256)
        // vsnprintf says how long the whole text is; one retry with room for it if it did not fit.
        let needed = Int(vsnprintf(&buffer, buffer.count, format, list))
        if needed < buffer.count { return String(decoding: buffer.prefix(max(needed, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return withVaList(arguments) { again in
            var large = [CChar](repeating: 0, count: needed + 1)
            _ = vsnprintf(&large, large.count, format, again)
            return String(decoding: large.prefix(needed).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}
