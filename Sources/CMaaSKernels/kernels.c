// Small-batch GEMM microkernels: at M <= ~32 rows OpenBLAS spends most of its time packing both
// operands on every call, while these stream B once, pre-packed in 16-column panels.
#include "CMaaSKernels.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

int CMaaSKernels_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// MR rows x NP panels (NP * 16 columns): MR * NP * 2 ymm accumulators, kept in registers.
#define DEFINE_KERNEL(MR, NP)                                                                      \
    __attribute__((target("avx2,fma"))) static void kernel_##MR##x##NP(                          \
        int k, const float *a, size_t lda, const float *p, size_t panel_stride,                  \
        const float *bias, const float *row_bias, float *c, size_t ldc, int columns, int relu) { \
        __m256 acc[MR][NP][2];                                                                    \
        for (int r = 0; r < MR; r++)                                                              \
            for (int q = 0; q < NP; q++) acc[r][q][0] = acc[r][q][1] = _mm256_setzero_ps();      \
        _Pragma("clang loop unroll_count(4)")                                                     \
        for (int i = 0; i < k; i++) {                                                             \
            __m256 b[NP][2];                                                                      \
            for (int q = 0; q < NP; q++) {                                                        \
                b[q][0] = _mm256_loadu_ps(p + q * panel_stride + i * 16);                         \
                b[q][1] = _mm256_loadu_ps(p + q * panel_stride + i * 16 + 8);                     \
            }                                                                                     \
            for (int r = 0; r < MR; r++) {                                                        \
                __m256 x = _mm256_broadcast_ss(a + r * lda + i);                                  \
                for (int q = 0; q < NP; q++) {                                                    \
                    acc[r][q][0] = _mm256_fmadd_ps(x, b[q][0], acc[r][q][0]);                     \
                    acc[r][q][1] = _mm256_fmadd_ps(x, b[q][1], acc[r][q][1]);                     \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        for (int r = 0; r < MR; r++) {                                                            \
            for (int q = 0; q < NP; q++) {                                                        \
                float out[16];                                                                    \
                __m256 lo = acc[r][q][0], hi = acc[r][q][1];                                      \
                if (bias) {                                                                       \
                    lo = _mm256_add_ps(lo, _mm256_loadu_ps(bias + q * 16));                       \
                    hi = _mm256_add_ps(hi, _mm256_loadu_ps(bias + q * 16 + 8));                   \
                }                                                                                 \
                if (row_bias) {                                                                   \
                    __m256 rb = _mm256_broadcast_ss(row_bias + r);                                \
                    lo = _mm256_add_ps(lo, rb);                                                   \
                    hi = _mm256_add_ps(hi, rb);                                                   \
                }                                                                                 \
                if (relu) {                                                                       \
                    lo = _mm256_max_ps(lo, _mm256_setzero_ps());                                  \
                    hi = _mm256_max_ps(hi, _mm256_setzero_ps());                                  \
                }                                                                                 \
                int valid = columns - q * 16;                                                     \
                float *row = c + r * ldc + q * 16;                                                \
                if (valid >= 16) {                                                                \
                    _mm256_storeu_ps(row, lo);                                                    \
                    _mm256_storeu_ps(row + 8, hi);                                                \
                } else if (valid > 0) {                                                           \
                    _mm256_storeu_ps(out, lo);                                                    \
                    _mm256_storeu_ps(out + 8, hi);                                                \
                    memcpy(row, out, (size_t)valid * sizeof(float));                              \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

// Wide kernels keep >= 8 independent accumulators (FMA latency x throughput) at every row
// count; the one-panel kernels finish the panels left over.
DEFINE_KERNEL(1, 4)
DEFINE_KERNEL(2, 2)
DEFINE_KERNEL(3, 2)
DEFINE_KERNEL(4, 1)
DEFINE_KERNEL(5, 1)
DEFINE_KERNEL(6, 1)
DEFINE_KERNEL(1, 2)
DEFINE_KERNEL(1, 1)
DEFINE_KERNEL(2, 1)
DEFINE_KERNEL(3, 1)


// AVX-512 variants: one zmm per 16-column panel row, so twice the columns per instruction.
#define DEFINE_KERNEL512(MR, NP)                                                                   \
    __attribute__((target("avx512f"))) static void kernel512_##MR##x##NP(                         \
        int k, const float *a, size_t lda, const float *p, size_t panel_stride,                  \
        const float *bias, const float *row_bias, float *c, size_t ldc, int columns, int relu) { \
        __m512 acc[MR][NP];                                                                       \
        for (int r = 0; r < MR; r++)                                                              \
            for (int q = 0; q < NP; q++) acc[r][q] = _mm512_setzero_ps();                        \
        _Pragma("clang loop unroll_count(2)")                                                     \
        for (int i = 0; i < k; i++) {                                                             \
            __m512 b[NP];                                                                         \
            for (int q = 0; q < NP; q++) b[q] = _mm512_loadu_ps(p + q * panel_stride + i * 16);   \
            for (int r = 0; r < MR; r++) {                                                        \
                __m512 x = _mm512_set1_ps(a[r * lda + i]);                                        \
                for (int q = 0; q < NP; q++) acc[r][q] = _mm512_fmadd_ps(x, b[q], acc[r][q]);     \
            }                                                                                     \
        }                                                                                         \
        for (int r = 0; r < MR; r++) {                                                            \
            for (int q = 0; q < NP; q++) {                                                        \
                __m512 v = acc[r][q];                                                             \
                if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + q * 16));                   \
                if (row_bias) v = _mm512_add_ps(v, _mm512_set1_ps(row_bias[r]));                  \
                if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());                              \
                int valid = columns - q * 16;                                                     \
                float *row = c + r * ldc + q * 16;                                                \
                if (valid >= 16) {                                                                \
                    _mm512_storeu_ps(row, v);                                                     \
                } else if (valid > 0) {                                                           \
                    _mm512_mask_storeu_ps(row, (__mmask16)((1u << valid) - 1), v);                \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

DEFINE_KERNEL512(1, 8)
DEFINE_KERNEL512(2, 4)
DEFINE_KERNEL512(3, 3)
DEFINE_KERNEL512(4, 2)
DEFINE_KERNEL512(5, 2)
DEFINE_KERNEL512(6, 2)
DEFINE_KERNEL512(1, 4)
DEFINE_KERNEL512(1, 2)
DEFINE_KERNEL512(2, 2)
DEFINE_KERNEL512(1, 1)
DEFINE_KERNEL512(2, 1)
DEFINE_KERNEL512(3, 1)
DEFINE_KERNEL512(4, 1)
DEFINE_KERNEL512(5, 1)
DEFINE_KERNEL512(6, 1)

int CMaaSKernels_has_avx512(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && getenv("MAAS_NO_AVX512") == 0;
    }
    return cached;
}

typedef void (*kernel_fn)(int, const float *, size_t, const float *, size_t, const float *, const float *, float *, size_t, int, int);

typedef struct {
    int width;
    kernel_fn fn;
} variant;

// Per row count, the kernels from widest to narrowest; leftover panels take the widest that fits.
static const variant avx2_variants[7][4] = {
    {{0, 0}},
    {{4, kernel_1x4}, {2, kernel_1x2}, {1, kernel_1x1}},
    {{2, kernel_2x2}, {1, kernel_2x1}},
    {{2, kernel_3x2}, {1, kernel_3x1}},
    {{1, kernel_4x1}},
    {{1, kernel_5x1}},
    {{1, kernel_6x1}},
};
static const variant avx512_variants[7][4] = {
    {{0, 0}},
    {{8, kernel512_1x8}, {4, kernel512_1x4}, {2, kernel512_1x2}, {1, kernel512_1x1}},
    {{4, kernel512_2x4}, {2, kernel512_2x2}, {1, kernel512_2x1}},
    {{3, kernel512_3x3}, {1, kernel512_3x1}},
    {{2, kernel512_4x2}, {1, kernel512_4x1}},
    {{2, kernel512_5x2}, {1, kernel512_5x1}},
    {{2, kernel512_6x2}, {1, kernel512_6x1}},
};

static void gemm_panels(
    int m, int k, const float *a, size_t lda,
    const float *panels, int panel_count,
    const float *bias, const float *row_bias, float *c, size_t ldc, int columns, int relu) {
    if (m < 1 || m > 6) return;
    const variant *variants = CMaaSKernels_has_avx512() ? avx512_variants[m] : avx2_variants[m];
    size_t panel_stride = (size_t)k * 16;
    int q = 0;
    for (int v = 0; v < 4 && variants[v].width > 0; v++) {
        int width = variants[v].width;
        for (; q + width <= panel_count; q += width) {
            variants[v].fn(k, a, lda, panels + q * panel_stride, panel_stride, bias ? bias + q * 16 : 0, row_bias,
                           c + q * 16, ldc, columns - q * 16, relu);
        }
    }
}

void CMaaSKernels_gemm_panels(
    int m, int k, const float *a, size_t lda,
    const float *panels, int panel_count,
    const float *bias, float *c, size_t ldc, int columns, int relu) {
    gemm_panels(m, k, a, lda, panels, panel_count, bias, 0, c, ldc, columns, relu);
}

void CMaaSKernels_gemm_panels_row_bias(
    int m, int k, const float *a, size_t lda,
    const float *panels, int panel_count,
    const float *row_bias, float *c, size_t ldc, int columns, int relu) {
    gemm_panels(m, k, a, lda, panels, panel_count, 0, row_bias, c, ldc, columns, relu);
}

#else
int CMaaSKernels_available(void) { return 0; }
int CMaaSKernels_has_avx512(void) { return 0; }
void CMaaSKernels_gemm_panels(int m, int k, const float *a, size_t lda, const float *panels, int panel_count,
                              const float *bias, float *c, size_t ldc, int columns, int relu) {
    (void)m; (void)k; (void)a; (void)lda; (void)panels; (void)panel_count; (void)bias; (void)c; (void)ldc; (void)columns; (void)relu;
}
void CMaaSKernels_gemm_panels_row_bias(int m, int k, const float *a, size_t lda, const float *panels, int panel_count,
                                       const float *row_bias, float *c, size_t ldc, int columns, int relu) {
    (void)m; (void)k; (void)a; (void)lda; (void)panels; (void)panel_count; (void)row_bias; (void)c; (void)ldc; (void)columns; (void)relu;
}
#endif
