internal import CNghttp2
import NIOCore

/// What an ``H2Session`` reports while nghttp2 parses input or produces output. Every method is
/// called synchronously from inside `receive` or `drainOutput`, on the connection's event loop.
protocol H2SessionDelegate: AnyObject {
    /// A HEADERS frame starts on `streamID` (a new request on a server; a response or trailers on a client).
    func sessionBeginHeaders(streamID: Int32)
    /// One decoded header field; nghttp2 has already checked it against HTTP/2's rules.
    func sessionHeader(streamID: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)
    /// A complete header block arrived.
    func sessionHeadersComplete(streamID: Int32, endStream: Bool)
    /// Body bytes for `streamID`; only valid during the call.
    func sessionData(streamID: Int32, bytes: UnsafeRawBufferPointer)
    /// The peer closed its side of `streamID` with a DATA frame.
    func sessionEndStream(streamID: Int32)
    /// The stream is gone: finished, reset by either side, or refused.
    func sessionStreamClosed(streamID: Int32, errorCode: UInt32)
    /// The peer's (non-ACK) SETTINGS arrived: the handshake is complete.
    func sessionSettingsReceived()
    /// The peer sent GOAWAY.
    func sessionGoAway(lastStreamID: Int32, errorCode: UInt32)
    /// Fill `buffer` with body bytes for `streamID`; see ``H2Session/ReadResult``.
    func sessionReadBody(streamID: Int32, into buffer: UnsafeMutableRawBufferPointer) -> H2Session.ReadResult
    /// A frame that ends our side of `streamID` was written.
    func sessionSentEndStream(streamID: Int32)
    /// The peer acknowledged a PING we sent with `payload`.
    func sessionPingAcknowledged(payload: UInt64)
}

extension H2SessionDelegate {
    func sessionPingAcknowledged(payload: UInt64) {}
}

/// The owner of one `nghttp2_session`: created with the connection, deleted in `deinit`.
///
/// C callbacks get this object back from `user_data` unretained; that is safe because the
/// session that calls them is freed here, before this object's memory is.
final class H2Session {
    enum Role { case server, client }

    /// What a body read produced.
    enum ReadResult {
        /// `count` bytes were written; more may follow.
        case bytes(Int)
        /// No bytes now; call ``H2Session/resumeBody(streamID:)`` when there are.
        case deferred
        /// The last `count` bytes of the body. `trailers`: send them after the body (server);
        /// nil ends the stream with the DATA frame itself (client half-close).
        case end(Int, trailers: HeaderBlock?)
    }

    struct ProtocolError: Error, CustomStringConvertible {
        var code: Int32
        var description: String { String(cString: nghttp2_strerror(code)) }
    }

    private let session: OpaquePointer
    private unowned(unsafe) let delegate: any H2SessionDelegate
    private let role: Role
    /// The highest stream id the peer has opened with HEADERS (servers track their clients').
    private var highestPeerStream: Int32 = 0

    init(role: Role, delegate: any H2SessionDelegate) {
        self.delegate = delegate
        self.role = role
        var created: OpaquePointer?
        let status: Int32
        let callbacks = H2Session.callbacks.pointer
        let options = H2Session.options.pointer
        // `self` is not available before all stored properties are set, so the session is
        // created with a placeholder and pointed at `self` just below.
        switch role {
        case .server: status = nghttp2_session_server_new2(&created, callbacks, nil, options)
        case .client: status = nghttp2_session_client_new2(&created, callbacks, nil, options)
        }
        precondition(status == 0 && created != nil, "nghttp2_session_new failed: \(status)")
        self.session = created!
        nghttp2_session_set_user_data(session, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        nghttp2_session_del(session)
    }

    // MARK: Input and output

    /// Feeds received bytes. Throws on a connection-level protocol error; nghttp2 has then queued
    /// a GOAWAY, so drain the output before closing.
    func receive(_ bytes: UnsafeRawBufferPointer) throws(ProtocolError) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        let consumed = nghttp2_session_mem_recv(
            session, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        if consumed < 0 { throw ProtocolError(code: Int32(consumed)) }
    }

    /// Appends pending frames to `buffer` until nghttp2 has nothing more or `limit` bytes were
    /// added. Returns whether output is still pending.
    func drainOutput(into buffer: inout ByteBuffer, limit: Int) throws(ProtocolError) -> Bool {
        var written = 0
        while written < limit {
            var data: UnsafePointer<UInt8>?
            let count = nghttp2_session_mem_send(session, &data)
            if count < 0 { throw ProtocolError(code: Int32(count)) }
            if count == 0 { return false }
            buffer.writeBytes(UnsafeRawBufferPointer(start: data, count: count))
            written += count
        }
        return true
    }

    /// A SETTINGS value the peer announced (or the protocol default).
    func remoteSetting(_ id: Int32) -> UInt32 {
        nghttp2_session_get_remote_settings(session, nghttp2_settings_id(rawValue: UInt32(id)))
    }

    /// Writes everything nghttp2 has queued to `context` while the channel takes it, in writes of
    /// up to 1 MiB and one flush. Throws (having written nothing more) on a session error.
    func writePending(to context: ChannelHandlerContext) throws(ProtocolError) {
        var wrote = false
        while context.channel.isWritable {
            var buffer = context.channel.allocator.buffer(capacity: 16 << 10)
            let more = try drainOutput(into: &buffer, limit: 1 << 20)
            if buffer.readableBytes > 0 {
                context.write(NIOAny(buffer), promise: nil)
                wrote = true
            }
            if !more { break }
        }
        if wrote { context.flush() }
    }

    var wantsRead: Bool { nghttp2_session_want_read(session) != 0 }
    var wantsWrite: Bool { nghttp2_session_want_write(session) != 0 }

    // MARK: Submitting frames

    func submitSettings(_ settings: [(id: Int32, value: UInt32)]) {
        let entries = settings.map { nghttp2_settings_entry(settings_id: $0.id, value: $0.value) }
        let status = nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), entries, entries.count)
        precondition(status == 0, "nghttp2_submit_settings: \(status)")
    }

    /// Raises the connection-level receive window to `size` bytes.
    func setConnectionWindow(_ size: Int32) {
        nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, size)
    }

    /// Sends response headers; with `hasBody` the body is read through the delegate, otherwise
    /// the headers end the stream (a Trailers-Only response).
    @discardableResult
    func submitResponse(streamID: Int32, headers: HeaderBlock, hasBody: Bool) -> Bool {
        headers.withNV { nva, count in
            if hasBody {
                var provider = H2Session.bodyProvider
                return nghttp2_submit_response(session, streamID, nva, count, &provider) == 0
            }
            return nghttp2_submit_response(session, streamID, nva, count, nil) == 0
        }
    }

    /// Opens a request stream whose body is read through the delegate. Returns the stream id,
    /// or nil when no stream can be opened (GOAWAY received, ids exhausted).
    func submitRequest(headers: HeaderBlock) -> Int32? {
        headers.withNV { nva, count in
            var provider = H2Session.bodyProvider
            let id = nghttp2_submit_request(session, nil, nva, count, &provider, nil)
            return id > 0 ? id : nil
        }
    }

    /// Tells nghttp2 that a deferred body has bytes again.
    func resumeBody(streamID: Int32) {
        nghttp2_session_resume_data(session, streamID)
    }

    func resetStream(streamID: Int32, errorCode: UInt32) {
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, errorCode)
    }

    /// The first of a two-step graceful shutdown: a GOAWAY that still lets in-flight requests land.
    /// RFC 9113 5.1.1: a client's new stream must have a higher id than any it opened before.
    /// nghttp2 ignores HEADERS on a lower id it no longer knows (it cannot tell a forgotten
    /// closed stream from one never opened); a lower id on a stream it does not know is either,
    /// and both are connection errors, so the session ends with PROTOCOL_ERROR.
    fileprivate func checkStreamOrder(_ header: nghttp2_frame_hd) -> Int32 {
        guard role == .server, header.type == UInt8(NGHTTP2_HEADERS.rawValue), header.stream_id & 1 == 1 else { return 0 }
        if header.stream_id > highestPeerStream {
            highestPeerStream = header.stream_id
            return 0
        }
        guard nghttp2_session_find_stream(session, header.stream_id) == nil else { return 0 }
        // The GOAWAY goes out with the next write; nghttp2 reads nothing more from the peer.
        nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR.rawValue)
        return 0
    }

    func submitShutdownNotice() {
        nghttp2_submit_shutdown_notice(session)
    }

    func submitPing(payload: UInt64) {
        withUnsafeBytes(of: payload.bigEndian) { bytes in
            _ = nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), bytes.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
    }

    /// The final GOAWAY: streams above the last processed id are refused.
    func submitGoAway(errorCode: UInt32 = 0) {
        nghttp2_submit_goaway(
            session, UInt8(NGHTTP2_FLAG_NONE.rawValue),
            nghttp2_session_get_last_proc_stream_id(session), errorCode, nil, 0)
    }

    fileprivate func submitTrailers(streamID: Int32, _ trailers: HeaderBlock) {
        trailers.withNV { nva, count in
            _ = nghttp2_submit_trailer(session, streamID, nva, count)
        }
    }
}

// MARK: - The C callback tables, built once.

// nghttp2 only reads the callback table after it is built; sessions on any loop may share it.
extension H2Session.CallbackTable: @unchecked Sendable {}

extension H2Session {
    /// Callbacks and options never change, so they are built once and shared by every session.
    final class CallbackTable {
        let pointer: OpaquePointer
        init(_ pointer: OpaquePointer) { self.pointer = pointer }
    }

    private static let bodyProvider = nghttp2_data_provider(
        source: nghttp2_data_source(ptr: nil),
        read_callback: { session, streamID, buffer, length, flags, _, userData in
            let this = Unmanaged<H2Session>.fromOpaque(userData!).takeUnretainedValue()
            let target = UnsafeMutableRawBufferPointer(start: buffer, count: length)
            switch this.delegate.sessionReadBody(streamID: streamID, into: target) {
            case .bytes(let count):
                return count
            case .deferred:
                return Int(NGHTTP2_ERR_DEFERRED.rawValue)
            case .end(let count, let trailers):
                flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                if let trailers {
                    flags!.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                    this.submitTrailers(streamID: streamID, trailers)
                }
                return count
            }
        }
    )

    static let options: CallbackTable = {
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        // Flow control stays automatic: received bytes are consumed as they are parsed, and
        // memory is bounded by the per-message limit and the per-connection buffer budget instead.
        return CallbackTable(option!)
    }()

    static let callbacks: CallbackTable = {
        var table: OpaquePointer?
        nghttp2_session_callbacks_new(&table)

        nghttp2_session_callbacks_set_on_begin_frame_callback(table) { _, header, userData in
            let this = Unmanaged<H2Session>.fromOpaque(userData!).takeUnretainedValue()
            return this.checkStreamOrder(header!.pointee)
        }
        nghttp2_session_callbacks_set_on_begin_headers_callback(table) { _, frame, userData in
            let this = Unmanaged<H2Session>.fromOpaque(userData!).takeUnretainedValue()
            this.delegate.sessionBeginHeaders(streamID: frame!.pointee.hd.stream_id)
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(table) {
            _, frame, name, nameLength, value, valueLength, _, userData in
            let this = Unmanaged<H2Session>.fromOpaque(userData!).takeUnretainedValue()
            this.delegate.sessionHeader(
                streamID: frame!.pointee.hd.stream_id,
                name: UnsafeRawBufferPointer(start: name, count: nameLength),
                value: UnsafeRawBufferPointer(start: value, count: valueLength))
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(table) { _, frame, userData in
            let this = Unmanaged<H2Session>.fromOpaque(userData!).takeUnretainedValue()
            let header = frame!.pointee.hd
            let endStream = header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
            switch Int(header.type) {
            case Int(NGHTTP2_HEADERS.rawValue):
                this.delegate.sessionHeadersComplete(streamID: header.stream_id, endStream: endStream)
            case Int(NGHTTP2_DATA.rawValue):
                if endStream { this.delegate.sessionEndStream(streamID: header.stream_id) }
            case Int(NGHTTP2_SETTINGS.rawValue):
                if header.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0 { this.delegate.sessionSettingsReceived() }
            case Int(NGHTTP2_GOAWAY.rawValue):
                let goaway = frame!.pointee.goaway
                this.delegate.sessionGoAway(lastStreamID: goaway.last_stream_id, errorCode: goaway.error_code)
            case Int(NGHTTP2_PING.rawValue) where header.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0:
                let data = frame!.pointee.ping.opaque_data
                let payload = withUnsafeBytes(of: data) { UInt64(bigEndian: $0.loadUnaligned(as: UInt64.self)) }
                this.delegate.sessionPingAcknowledged(payload: payload)
            default:
                break
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(table) {
            _, _, streamID, data, length, userData in
            let this = Unmanaged<H2Session>.fromOpaque(userData!).takeUnretainedValue()
            this.delegate.sessionData(streamID: streamID, bytes: UnsafeRawBufferPointer(start: data, count: length))
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_send_callback(table) { _, frame, userData in
            let header = frame!.pointee.hd
            let type = Int(header.type)
            if header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0,
                type == Int(NGHTTP2_HEADERS.rawValue) || type == Int(NGHTTP2_DATA.rawValue)
            {
                let this = Unmanaged<H2Session>.fromOpaque(userData!).takeUnretainedValue()
                this.delegate.sessionSentEndStream(streamID: header.stream_id)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(table) { _, streamID, errorCode, userData in
            let this = Unmanaged<H2Session>.fromOpaque(userData!).takeUnretainedValue()
            this.delegate.sessionStreamClosed(streamID: streamID, errorCode: errorCode)
            return 0
        }
        return CallbackTable(table!)
    }()
}

// MARK: - Header blocks

/// Header fields laid out once in one allocation, ready to hand to nghttp2 (which copies them).
/// Blocks made with ``init(static:)`` are laid out once for the life of the process and handed
/// to nghttp2 without copying, for the fields every response repeats.
struct HeaderBlock {
    private var bytes: [UInt8] = []
    private var spans: [(nameStart: Int, nameCount: Int, valueCount: Int)] = []
    private var prepared: PreparedFields?

    init() {}

    init(_ fields: [(String, String)]) {
        for (name, value) in fields { add(name, value) }
    }

    /// A block whose fields never change.
    init(static fields: [(String, String)]) {
        prepared = PreparedFields(fields)
    }

    var isEmpty: Bool { spans.isEmpty && prepared == nil }

    mutating func add(_ name: String, _ value: String) {
        if let prepared {
            self.prepared = nil
            for (name, value) in prepared.fields { add(name, value) }
        }
        let start = bytes.count
        bytes.append(contentsOf: name.utf8)
        let nameCount = bytes.count - start
        bytes.append(contentsOf: value.utf8)
        spans.append((start, nameCount, bytes.count - start - nameCount))
    }

    func withNV<Result>(_ body: (UnsafePointer<nghttp2_nv>, Int) -> Result) -> Result {
        if let prepared {
            return body(prepared.nva, prepared.fields.count)
        }
        return bytes.withUnsafeBufferPointer { storage in
            let base = UnsafeMutablePointer(mutating: storage.baseAddress ?? UnsafePointer(bitPattern: 1)!)
            let fields = spans.map { span in
                nghttp2_nv(
                    name: base + span.nameStart,
                    value: base + span.nameStart + span.nameCount,
                    namelen: span.nameCount,
                    valuelen: span.valueCount,
                    flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
            }
            return fields.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
        }
    }

    /// Fields in memory that is never freed, so nghttp2 may point at it instead of copying.
    fileprivate final class PreparedFields {
        let fields: [(String, String)]
        let nva: UnsafeMutablePointer<nghttp2_nv>

        init(_ fields: [(String, String)]) {
            self.fields = fields
            nva = .allocate(capacity: max(fields.count, 1))
            for (index, (name, value)) in fields.enumerated() {
                let nameBytes = Self.permanentCopy(name)
                let valueBytes = Self.permanentCopy(value)
                nva[index] = nghttp2_nv(
                    name: nameBytes.baseAddress, value: valueBytes.baseAddress,
                    namelen: nameBytes.count, valuelen: valueBytes.count,
                    flags: UInt8(NGHTTP2_NV_FLAG_NO_COPY_NAME.rawValue | NGHTTP2_NV_FLAG_NO_COPY_VALUE.rawValue))
            }
        }

        private static func permanentCopy(_ string: String) -> UnsafeMutableBufferPointer<UInt8> {
            let buffer = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(string.utf8.count, 1))
            _ = buffer.initialize(from: string.utf8)
            return UnsafeMutableBufferPointer(rebasing: buffer[0..<string.utf8.count])
        }
    }
}

// Immutable after init and only ever read, by nghttp2 and by us.
extension HeaderBlock.PreparedFields: @unchecked Sendable {}

/// nghttp2's SETTINGS identifiers, for callers that do not import CNghttp2.
enum H2SettingID {
    static let maxConcurrentStreams = Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue)
    static let initialWindowSize = Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue)
    static let maxHeaderListSize = Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue)
    static let noRFC7540Priorities = Int32(NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES.rawValue)
    static let enablePush = Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue)
}

/// HTTP/2 error codes used in RST_STREAM and GOAWAY.
enum H2ErrorCode {
    static let noError: UInt32 = 0
    static let protocolError: UInt32 = 1
    static let refusedStream: UInt32 = 7
    static let cancel: UInt32 = 8
    static let enhanceYourCalm: UInt32 = 11
}
