// LayerNormalization over the last n floats of each row, optionally of the sum of two inputs (a
// residual connection folded in): mean, then the variance as the mean squared deviation (two
// passes, as onnxruntime's CPU kernel), then (x - mean) / sqrt(var + eps) * scale + bias.
#include "CMaaSKernels.h"

#include <math.h>

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2"))) static float hsum(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    return _mm_cvtss_f32(_mm_add_ss(lo, _mm_movehdup_ps(lo)));
}

__attribute__((target("avx2,fma"))) static void layer_norm_avx2(
    const float *x, const float *residual, const float *scale, const float *bias, float *y, size_t rows, size_t n, float epsilon) {
    for (size_t r = 0; r < rows; r++) {
        const float *a = x + r * n, *b = residual ? residual + r * n : 0;
        float *out = y + r * n;
        // The sum lands in `out` first so the second and third passes read one array.
        __m256 total = _mm256_setzero_ps();
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(a + i);
            if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + i));
            _mm256_storeu_ps(out + i, v);
            total = _mm256_add_ps(total, v);
        }
        float sum = hsum(total);
        for (; i < n; i++) {
            float v = a[i] + (b ? b[i] : 0.0f);
            out[i] = v;
            sum += v;
        }
        const float mean = sum / (float)n;
        __m256 m = _mm256_set1_ps(mean), squares = _mm256_setzero_ps();
        for (i = 0; i + 8 <= n; i += 8) {
            __m256 d = _mm256_sub_ps(_mm256_loadu_ps(out + i), m);
            squares = _mm256_fmadd_ps(d, d, squares);
        }
        float variance = hsum(squares);
        for (; i < n; i++) variance += (out[i] - mean) * (out[i] - mean);
        const float inverse = 1.0f / sqrtf(variance / (float)n + epsilon);
        __m256 s = _mm256_set1_ps(inverse);
        for (i = 0; i + 8 <= n; i += 8) {
            __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(out + i), m), s);
            if (scale) v = _mm256_mul_ps(v, _mm256_loadu_ps(scale + i));
            if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
            _mm256_storeu_ps(out + i, v);
        }
        for (; i < n; i++) {
            float v = (out[i] - mean) * inverse;
            if (scale) v *= scale[i];
            if (bias) v += bias[i];
            out[i] = v;
        }
    }
}
#endif

void CMaaSKernels_layer_norm(
    const float *x, const float *residual, const float *scale, const float *bias, float *y, size_t rows, size_t n, float epsilon) {
#if defined(__x86_64__)
    if (CMaaSKernels_available()) {
        layer_norm_avx2(x, residual, scale, bias, y, rows, n, epsilon);
        return;
    }
#endif
    for (size_t r = 0; r < rows; r++) {
        const float *a = x + r * n, *b = residual ? residual + r * n : 0;
        float *out = y + r * n;
        float sum = 0;
        for (size_t i = 0; i < n; i++) {
            out[i] = a[i] + (b ? b[i] : 0.0f);
            sum += out[i];
        }
        const float mean = sum / (float)n;
        float variance = 0;
        for (size_t i = 0; i < n; i++) variance += (out[i] - mean) * (out[i] - mean);
        const float inverse = 1.0f / sqrtf(variance / (float)n + epsilon);
        for (size_t i = 0; i < n; i++) {
            float v = (out[i] - mean) * inverse;
            if (scale) v *= scale[i];
            if (bias) v += bias[i];
            out[i] = v;
        }
    }
}
