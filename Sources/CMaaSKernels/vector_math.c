// Elementwise functions over float arrays: glibc's libmvec (erff, expf, tanhf in 8 AVX2 or 16
// AVX-512 lanes, at most 4 ulps from the exact value per glibc's manual) where the CPU has the
// instructions, the scalar libm functions otherwise and for the tails.
#include "CMaaSKernels.h"

#include <math.h>
#include <stdlib.h>

static float gelu_scalar(float v, int approximate) {
    return 0.5f * v * (1.0f + (approximate ? tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)) : erff(v * 0.70710678118654752f)));
}

#if defined(__x86_64__)
#include <immintrin.h>

// libmvec's vector ABI names: 'd' = AVX2 (8 lanes), 'e' = AVX-512 (16 lanes).
__attribute__((target("avx2"))) __m256 _ZGVdN8v_erff(__m256);
__attribute__((target("avx2"))) __m256 _ZGVdN8v_expf(__m256);
__attribute__((target("avx2"))) __m256 _ZGVdN8v_tanhf(__m256);
__attribute__((target("avx512f"))) __m512 _ZGVeN16v_erff(__m512);
__attribute__((target("avx512f"))) __m512 _ZGVeN16v_expf(__m512);
__attribute__((target("avx512f"))) __m512 _ZGVeN16v_tanhf(__m512);

static int has_avx2(void) {
    static int cached = -1;
    if (cached < 0) cached = CMaaSKernels_available();
    return cached;
}

// GELU: 0.5 x (1 + erf(x / sqrt 2)), or with tanh: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
__attribute__((target("avx2,fma"))) static void gelu_avx2(float *x, size_t n, int approximate) {
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 inv_sqrt2 = _mm256_set1_ps(0.70710678118654752f), k0 = _mm256_set1_ps(0.79788456080286536f);
    const __m256 k1 = _mm256_set1_ps(0.044715f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 f = approximate ? _ZGVdN8v_tanhf(_mm256_mul_ps(k0, _mm256_fmadd_ps(_mm256_mul_ps(k1, v), _mm256_mul_ps(v, v), v)))
                               : _ZGVdN8v_erff(_mm256_mul_ps(v, inv_sqrt2));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, f)));
    }
    for (; i < n; i++) x[i] = gelu_scalar(x[i], approximate);
}

__attribute__((target("avx512f"))) static void gelu_avx512(float *x, size_t n, int approximate) {
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
    const __m512 inv_sqrt2 = _mm512_set1_ps(0.70710678118654752f), k0 = _mm512_set1_ps(0.79788456080286536f);
    const __m512 k1 = _mm512_set1_ps(0.044715f);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 f = approximate ? _ZGVeN16v_tanhf(_mm512_mul_ps(k0, _mm512_fmadd_ps(_mm512_mul_ps(k1, v), _mm512_mul_ps(v, v), v)))
                               : _ZGVeN16v_erff(_mm512_mul_ps(v, inv_sqrt2));
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, f)));
    }
    if (i < n) gelu_avx2(x + i, n - i, approximate);
}

__attribute__((target("avx2,fma"))) static void map_avx2(const float *x, float *y, size_t n, int function) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 r = function == CMaaSKernels_ERF ? _ZGVdN8v_erff(v) : function == CMaaSKernels_EXP ? _ZGVdN8v_expf(v) : _ZGVdN8v_tanhf(v);
        _mm256_storeu_ps(y + i, r);
    }
    for (; i < n; i++) y[i] = function == CMaaSKernels_ERF ? erff(x[i]) : function == CMaaSKernels_EXP ? expf(x[i]) : tanhf(x[i]);
}

__attribute__((target("avx512f"))) static void map_avx512(const float *x, float *y, size_t n, int function) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 r = function == CMaaSKernels_ERF ? _ZGVeN16v_erff(v) : function == CMaaSKernels_EXP ? _ZGVeN16v_expf(v) : _ZGVeN16v_tanhf(v);
        _mm512_storeu_ps(y + i, r);
    }
    if (i < n) map_avx2(x + i, y + i, n - i, function);
}

void CMaaSKernels_gelu(float *x, size_t n, int approximate) {
    if (CMaaSKernels_has_avx512()) gelu_avx512(x, n, approximate);
    else if (has_avx2()) gelu_avx2(x, n, approximate);
    else for (size_t i = 0; i < n; i++) x[i] = gelu_scalar(x[i], approximate);
}

void CMaaSKernels_map(const float *x, float *y, size_t n, int function) {
    if (CMaaSKernels_has_avx512()) map_avx512(x, y, n, function);
    else if (has_avx2()) map_avx2(x, y, n, function);
    else for (size_t i = 0; i < n; i++) y[i] = function == CMaaSKernels_ERF ? erff(x[i]) : function == CMaaSKernels_EXP ? expf(x[i]) : tanhf(x[i]);
}

#else
void CMaaSKernels_gelu(float *x, size_t n, int approximate) {
    for (size_t i = 0; i < n; i++) x[i] = gelu_scalar(x[i], approximate);
}

void CMaaSKernels_map(const float *x, float *y, size_t n, int function) {
    for (size_t i = 0; i < n; i++) y[i] = function == CMaaSKernels_ERF ? erff(x[i]) : function == CMaaSKernels_EXP ? expf(x[i]) : tanhf(x[i]);
}
#endif
