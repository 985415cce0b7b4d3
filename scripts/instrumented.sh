# Instrumented builds for scripts/fuzz and scripts/sanitize, sourced after lib.sh: each module is
# compiled straight from its sources by swiftc (or Swift's own clang, for C) into a static library
# and module in .build/fuzz. Not SwiftPM: it would build every target and dependency of the
# package twice more (BoringSSL alone takes minutes on two cores), where a harness needs a
# handful of modules, and CI time is tight.
#
# One instrumentation for both scripts, so that scripts/sanitize links what scripts/fuzz built
# just before it: Swift with libFuzzer's coverage and ASan, C with the same plus UBSan (any
# undefined behaviour aborts, in the harnesses too). Modules whose inputs and command have not
# changed are kept. Call instrumented_init from the repository's root, then need MODULE... and
# link_executable.

checkouts=.build/checkouts

instrumented_init() {
    out="$PWD/.build/fuzz"
    swift_sanitize=(-sanitize=fuzzer,address)
    dep_sanitize=(-sanitize=fuzzer,address)
    c_sanitize=(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined)
    mkdir -p "$out"
    toolchain="$(dirname "$(readlink -f "$(command -v swiftc)")")"
    clang="$toolchain/clang"
    [ -x "$clang" ] || fatal "no clang beside swiftc in $toolchain"
    [ -d "$checkouts/swift-nio" ] || swift package resolve
    # Module maps for the C targets that have none (SwiftPM writes these itself): an umbrella
    # header each.
    local name header
    for name in CMaaSKernels:Sources/CMaaSKernels/include/CMaaSKernels.h \
        CNIOLinux:$checkouts/swift-nio/Sources/CNIOLinux/include/CNIOLinux.h \
        CNIOAtomics:$checkouts/swift-nio/Sources/CNIOAtomics/include/CNIOAtomics.h \
        CNIOLLHTTP:$checkouts/swift-nio/Sources/CNIOLLHTTP/include/CNIOLLHTTP.h \
        CNIODarwin:$checkouts/swift-nio/Sources/CNIODarwin/include/CNIODarwin.h \
        CNIOOpenBSD:$checkouts/swift-nio/Sources/CNIOOpenBSD/include/CNIOOpenBSD.h \
        CNIOFreeBSD:$checkouts/swift-nio/Sources/CNIOFreeBSD/include/CNIOFreeBSD.h \
        CNIOWASI:$checkouts/swift-nio/Sources/CNIOWASI/include/CNIOWASI.h; do
        header="${name#*:}"
        name="${name%%:*}"
        mkdir -p "$out/maps/$name"
        printf 'module %s {\n    umbrella header "%s"\n    export *\n}\n' "$name" "$PWD/$header" > "$out/maps/$name/module.modulemap"
    done
    read -r -a pkg_cflags <<< "$(pkg-config --cflags libprotobuf-c openblas)"
    read -r -a pkg_libflags <<< "$(pkg-config --libs-only-L libprotobuf-c openblas)"
    # Whole-module builds: NIOCore took 40 s instead of 55 s here (-num-threads was faster still,
    # but its static libraries crashed in swift_release). Every module sees every module map:
    # the C modules' (ours in Sources, the generated ones in $out/maps, the dependencies'
    # checked-in ones) and the Swift modules in $out.
    common=(-O -wmo -g -parse-as-library -I "$out" -L "$out"
        -I Sources/CProtobufC -I Sources/COpenBLAS -I Sources/CMaaSProto/include
        -I "$checkouts/swift-nio/Sources/CNIOWindows/include" -I "$checkouts/swift-atomics/Sources/_AtomicsShims/include")
    for name in "$out"/maps/*; do common+=(-I "$name"); done
    local flag
    for flag in "${pkg_cflags[@]}"; do common+=(-Xcc "$flag"); done
    common+=("${pkg_libflags[@]}")
    ours=(-swift-version 6 -package-name swift_maas -enable-upcoming-feature ExistentialAny
        -enable-upcoming-feature InternalImportsByDefault -enable-upcoming-feature MemberImportVisibility)
}

# fresh NAME COMMAND INPUTS...: whether lib$NAME.a was built by COMMAND after every input and
# every library it needs changed. What is fresh is kept: scripts/sanitize links what scripts/fuzz
# built just before it, and a second run rebuilds only what changed.
fresh() {
    local name="$1" command="$2"; shift 2
    local library="$out/lib$name.a" input dep
    [ -f "$library" ] && [ "$(cat "$out/$name.command" 2>/dev/null)" = "$command" ] || return 1
    for input in "$@"; do [ "$input" -ot "$library" ] || return 1; done
    for dep in ${deps[$name]:-}; do [ "$out/lib$dep.a" -ot "$library" ] || return 1; done
}

# swift_library NAME SANITIZE_ARRAY FLAGS... -- SOURCES...: a static library and its module.
swift_library() {
    local name="$1" sanitize="$2[@]"; shift 2
    local extra=()
    while [ "$1" != "--" ]; do extra+=("$1"); shift; done
    shift
    local command=(swiftc "${!sanitize}" "${common[@]}" "${extra[@]}" -emit-library -static -module-name "$name" -emit-module
        -emit-module-path "$out/$name.swiftmodule" -o "$out/lib$name.a" "$@")
    fresh "$name" "${command[*]}" "$@" && return 0
    rm -f "$out/lib$name.a" "$out/$name.command"
    "${command[@]}" 2>&1 | grep -v 'warning: Cannot export local symbol' || true
    [ -f "$out/lib$name.a" ] || fatal "building module $name failed"
    # What its Swift code autolinks, for the executable (a static library does not carry it).
    "$toolchain/swift-autolink-extract" "$out/lib$name.a" -o "$out/$name.autolink"
    printf '%s' "${command[*]}" > "$out/$name.command"
}

# module NAME [SWIFTC FLAGS... --] SOURCES...: one of ours, with Package.swift's strict settings.
module() {
    local name="$1"; shift
    local extra=()
    if [[ " $* " == *" -- "* ]]; then
        while [ "$1" != "--" ]; do extra+=("$1"); shift; done
        shift
    fi
    swift_library "$name" swift_sanitize "${ours[@]}" "${extra[@]}" -- "$@"
}

# dep_module NAME DIRECTORY SWIFTC FLAGS...: a dependency's module from every Swift file under
# DIRECTORY, with the settings its Package.swift gives it.
dep_module() {
    local name="$1" directory="$2"; shift 2
    local sources
    mapfile -d '' sources < <(find "$directory" -name '*.swift' -print0 | sort -z)
    swift_library "$name" dep_sanitize -suppress-warnings "$@" -- "${sources[@]}"
}

# cmodule NAME [CLANG FLAGS... --] SOURCES...: a C target as a static library (-O2, as
# Package.swift builds CMaaSKernels, plus SwiftPM's define), its include/ directory on the path.
cmodule() {
    local name="$1"; shift
    local extra=()
    if [[ " $* " == *" -- "* ]]; then
        while [ "$1" != "--" ]; do extra+=("$1"); shift; done
        shift
    fi
    local objects=() source object headers index
    # Its headers are inputs too: those beside the sources and in the -I directories.
    local directories=("$(dirname "$1")")
    for ((index = 0; index < ${#extra[@]}; index++)); do
        [ "${extra[$index]}" != "-I" ] || directories+=("${extra[$((index + 1))]}")
    done
    mapfile -t headers < <(find "${directories[@]}" -maxdepth 2 -name '*.h' | sort -u)
    local command="$clang ${c_sanitize[*]} -O2 -g -fPIC -DSWIFT_PACKAGE=1 ${pkg_cflags[*]} ${extra[*]} $*"
    fresh "$name" "$command" "$@" "${headers[@]}" && return 0
    rm -f "$out/lib$name.a" "$out/$name.command"
    mkdir -p "$out/$name.build"
    for source in "$@"; do
        object="$out/$name.build/$(basename "$source").o"
        "$clang" "${c_sanitize[@]}" -O2 -g -fPIC -DSWIFT_PACKAGE=1 "${pkg_cflags[@]}" "${extra[@]}" \
            -c "$source" -o "$object" || fatal "compiling $source failed"
        objects+=("$object")
    done
    "$toolchain/llvm-ar" rcs "$out/lib$name.a" "${objects[@]}"
    printf '%s' "$command" > "$out/$name.command"
}

nio="$checkouts/swift-nio/Sources"
nio_flags=(-swift-version 6 -package-name swift_nio -enable-experimental-feature Lifetimes -enable-upcoming-feature MemberImportVisibility)
collections_flags=(-swift-version 6 -package-name swift_collections -enable-upcoming-feature MemberImportVisibility
    -enable-experimental-feature BuiltinModule -enable-experimental-feature Lifetimes
    -enable-experimental-feature InoutLifetimeDependence -enable-experimental-feature AddressableParameters
    -enable-experimental-feature AddressableTypes -enable-experimental-feature SuppressedAssociatedTypesWithDefaults)

# need MODULE...: builds each module, after what it imports, once. `order` lists what was built,
# every module after its dependencies; `deps` holds what a module needs, `links` its system
# libraries.
declare -A built=() deps=() links=()
order=()
needing=""
need() {
    local name
    for name in "$@"; do
        [ -z "$needing" ] || deps[$needing]+=" $name"
        [ -z "${built[$name]:-}" ] || continue
        built[$name]=1
        local outer="$needing"
        needing="$name"
        case "$name" in
            # Ours.
            MaaSCore) module MaaSCore Sources/MaaSCore/*.swift ;;
            MaaSJSON) module MaaSJSON Sources/MaaSJSON/*.swift ;;
            MaaSText) need MaaSCore MaaSJSON; module MaaSText Sources/MaaSText/*.swift ;;
            CMaaSProto) cmodule CMaaSProto -I Sources/CMaaSProto/include -- Sources/CMaaSProto/*.c; links[$name]="-lprotobuf-c" ;;
            CMaaSKernels) cmodule CMaaSKernels -I Sources/CMaaSKernels/include -- Sources/CMaaSKernels/*.c; links[$name]="-lmvec -lm" ;;
            MaaSProto) need MaaSCore CMaaSProto; module MaaSProto Sources/MaaSProto/*.swift ;;
            MaaSCompute) need MaaSCore Logging CMaaSKernels
                module MaaSCompute Sources/MaaSCompute/*.swift Sources/MaaSCompute/Ops/*.swift; links[$name]="-lopenblas" ;;
            MaaSTraining) need MaaSCore MaaSCompute CMaaSKernels; module MaaSTraining Sources/MaaSTraining/*.swift ;;
            MaaSModels) need MaaSCore MaaSProto MaaSCompute MaaSText MaaSJSON DequeModule Logging CoreMetrics
                module MaaSModels Sources/MaaSModels/*.swift ;;
            # Dependencies, with their Package.swift's settings.
            Logging) dep_module Logging "$checkouts/swift-log/Sources/Logging" -swift-version 6 -package-name swift_log \
                -enable-upcoming-feature ExistentialAny -enable-upcoming-feature MemberImportVisibility \
                -enable-upcoming-feature InternalImportsByDefault -enable-upcoming-feature NonisolatedNonsendingByDefault ;;
            CoreMetrics) dep_module CoreMetrics "$checkouts/swift-metrics/Sources/CoreMetrics" -swift-version 6 \
                -package-name swift_metrics -enable-experimental-feature StrictConcurrency=complete -enable-upcoming-feature MemberImportVisibility ;;
            ConcurrencyHelpers) dep_module ConcurrencyHelpers "$checkouts/swift-service-lifecycle/Sources/ConcurrencyHelpers" \
                -swift-version 6 -package-name swift_service_lifecycle ;;
            UnixSignals) need ConcurrencyHelpers
                dep_module UnixSignals "$checkouts/swift-service-lifecycle/Sources/UnixSignals" -swift-version 6 -package-name swift_service_lifecycle ;;
            _AtomicsShims) cmodule _AtomicsShims -I "$checkouts/swift-atomics/Sources/_AtomicsShims/include" -- \
                "$checkouts/swift-atomics/Sources/_AtomicsShims/src/_AtomicsShims.c" ;;
            Atomics) need _AtomicsShims
                dep_module Atomics "$checkouts/swift-atomics/Sources/Atomics" -swift-version 5 -package-name swift_atomics \
                    -enable-experimental-feature BuiltinModule ;;
            InternalCollectionsUtilities) dep_module InternalCollectionsUtilities \
                "$checkouts/swift-collections/Sources/InternalCollectionsUtilities" "${collections_flags[@]}" ;;
            ContainersPreview) need InternalCollectionsUtilities
                dep_module ContainersPreview "$checkouts/swift-collections/Sources/ContainersPreview" "${collections_flags[@]}" ;;
            DequeModule) need InternalCollectionsUtilities ContainersPreview
                dep_module DequeModule "$checkouts/swift-collections/Sources/DequeModule" "${collections_flags[@]}" ;;
            CNIOAtomics|CNIOLinux|CNIOLLHTTP) cmodule "$name" -D_GNU_SOURCE -DLLHTTP_STRICT_MODE -I "$nio/$name/include" -- \
                $(find "$nio/$name" -name '*.c' | sort) ;;
            NIOConcurrencyHelpers) need CNIOAtomics; dep_module "$name" "$nio/$name" "${nio_flags[@]}" ;;
            _NIODataStructures|_NIOBase64) dep_module "$name" "$nio/$name" "${nio_flags[@]}" ;;
            NIOCore) need NIOConcurrencyHelpers _NIOBase64 CNIOLinux _NIODataStructures DequeModule Atomics
                dep_module NIOCore "$nio/NIOCore" "${nio_flags[@]}" ;;
            NIOEmbedded) need NIOCore; dep_module NIOEmbedded "$nio/NIOEmbedded" "${nio_flags[@]}" ;;
            NIOHTTP1) need NIOCore CNIOLLHTTP; dep_module NIOHTTP1 "$nio/NIOHTTP1" "${nio_flags[@]}" ;;
            # Cuts: only the files the HTTP/1.1 frontend's code needs, under the real module
            # names it imports. NIOPosix: ThreadSpecificVariable (CallCoalescer); the rest is
            # sockets and event loops, which an EmbeddedChannel replaces (49 s more to build).
            NIOPosix) need NIOCore
                swift_library NIOPosix dep_sanitize -suppress-warnings "${nio_flags[@]}" -- "$nio/NIOPosix/Thread.swift" \
                    "$nio/NIOPosix/ThreadPosix.swift" "$nio/NIOPosix/Utilities.swift" ;;
            # MaaSGRPC: what the REST code uses of it (metadata, percent-encoding, the drain
            # event, peers' addresses); the gRPC transport needs nghttp2 and NIOSSL.
            MaaSGRPC) need MaaSCore NIOCore
                module MaaSGRPC Sources/MaaSGRPC/Metadata.swift Sources/MaaSGRPC/PercentEncoding.swift \
                    Sources/MaaSGRPC/ServerDrainEvent.swift Sources/MaaSGRPC/SocketAddress+HostPort.swift \
                    Tests/Fuzz/Shims/MaaSGRPC+TLS.swift ;;
            # MaaSServer: the HTTP/1.1 frontend (HTTPFrontend.install's pipeline and the REST
            # routes), the core under it, auth and the access log; not the gRPC services, h2c,
            # TLS reloading or the server's assembly.
            MaaSServer) need MaaSCore MaaSJSON MaaSProto MaaSModels MaaSGRPC NIOCore NIOHTTP1 NIOPosix Logging CoreMetrics \
                    Crypto UnixSignals
                module MaaSServer Sources/MaaSServer/InferenceCore.swift Sources/MaaSServer/ProcessMetrics.swift \
                    Sources/MaaSServer/HTTP/{CallCoalescer,ConnectionTimeouts,HTTPFrontend,KServeJSON,KServeREST+Documents}.swift \
                    Sources/MaaSServer/HTTP/{MetricsRoute,OpenAIEmbeddings,PredictRoute,RESTConnection,RESTRouter}.swift \
                    Sources/MaaSServer/Auth/{AccessPolicy,Scope,TokenFile,TokenStore}.swift \
                    Sources/MaaSServer/AccessLog/{AccessLog,AccessLogLine}.swift ;;
            # Crypto: a stand-in SHA256 for TokenStore (swift-crypto's BoringSSL takes minutes).
            Crypto) module Crypto Tests/Fuzz/Shims/Crypto.swift ;;
            *) fatal "unknown module $name" ;;
        esac
        needing="$outer"
        order+=("$name")
    done
}

# closure MODULE...: sets `closure` to the modules and everything they need.
declare -A closure=()
add_closure() {
    local name
    for name in "$@"; do
        [ -z "${closure[$name]:-}" ] || continue
        closure[$name]=1
        # shellcheck disable=SC2086
        add_closure ${deps[$name]:-}
    done
}

# link_executable [--main] OUTPUT MODULE_NAME MODULES... -- SOURCES...: an executable of SOURCES,
# linked with MODULES and everything they need, dependents first. A libFuzzer harness, or with
# --main a program with its own main (ASan, and libFuzzer's coverage runtime without its main).
link_executable() {
    local sanitize=("${swift_sanitize[@]}")
    if [ "$1" = "--main" ]; then
        shift
        local runtime
        runtime="$(ls "$toolchain"/../lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a | head -n 1)"
        [ -f "$runtime" ] || fatal "no libclang_rt.fuzzer_no_main in the toolchain"
        sanitize=(-sanitize=address -Xlinker "$runtime")
    fi
    local output="$1" module_name="$2"; shift 2
    local wanted=()
    while [ "$1" != "--" ]; do wanted+=("$1"); shift; done
    shift
    need "${wanted[@]}"
    closure=()
    add_closure "${wanted[@]}"
    local libs=() system=() system_flags=() index name flag
    for ((index = ${#order[@]} - 1; index >= 0; index--)); do
        name="${order[$index]}"
        [ -n "${closure[$name]:-}" ] || continue
        libs+=("-l$name")
        # What the library's Swift code autolinks (a static library does not carry it).
        if [ -f "$out/$name.autolink" ]; then
            while IFS= read -r flag; do libs+=("$flag"); done < <(sort -u "$out/$name.autolink")
        fi
        if [ -n "${links[$name]:-}" ]; then
            read -r -a system_flags <<< "${links[$name]}"
            system+=("${system_flags[@]}")
        fi
    done
    libs+=("${system[@]}")
    rm -f "$output"
    # Its module goes beside it (whole-module builds of several files would leave it in the
    # working directory).
    swiftc "${sanitize[@]}" "${common[@]}" "${ours[@]}" -module-name "$module_name" -emit-executable -emit-module \
        -emit-module-path "$out/$module_name.swiftmodule" "$@" "${libs[@]}" -o "$output" 2>&1 \
        | grep -v 'warning: Cannot export local symbol' || true
    [ -x "$output" ] || fatal "linking $output failed"
}
