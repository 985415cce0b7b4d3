// Scaled dot-product attention for a block of query rows of one (batch, head): the scores, the
// additive mask, the softmax and the product with V, one row at a time in registers and a
// scratch row, so the [rows x keys] score matrix is never written out.
#include "CMaaSKernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2"))) __m256 _ZGVdN8v_expf(__m256);

__attribute__((target("avx2"))) static float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

// scores[r][j] = sum_k q_r[k] * B[k][j] for R query rows at once: R x 4 independent FMA chains
// (8 for two rows, enough to cover the FMA latency) and every load of B used R times.
__attribute__((target("avx2,fma"), always_inline)) static inline void scores_rows(
    const CMaaSKernels_attention *p, const float *q, int R, float *scores) {
    const int d = p->depth, t = p->keys;
    int j = 0;
    for (; j + 32 <= t; j += 32) {
        __m256 acc[2][4];
        for (int r = 0; r < R; r++) for (int u = 0; u < 4; u++) acc[r][u] = _mm256_setzero_ps();
        for (int k = 0; k < d; k++) {
            const float *b = p->b + (size_t)k * p->b_row + j;
            __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), b2 = _mm256_loadu_ps(b + 16), b3 = _mm256_loadu_ps(b + 24);
            for (int r = 0; r < R; r++) {
                __m256 x = _mm256_broadcast_ss(q + (size_t)r * p->q_row + k);
                acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
                acc[r][2] = _mm256_fmadd_ps(x, b2, acc[r][2]);
                acc[r][3] = _mm256_fmadd_ps(x, b3, acc[r][3]);
            }
        }
        for (int r = 0; r < R; r++) for (int u = 0; u < 4; u++) _mm256_storeu_ps(scores + (size_t)r * t + j + 8 * u, acc[r][u]);
    }
    for (; j + 8 <= t; j += 8) {
        __m256 acc[2];
        for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
        for (int k = 0; k < d; k++) {
            __m256 b0 = _mm256_loadu_ps(p->b + (size_t)k * p->b_row + j);
            for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(q + (size_t)r * p->q_row + k), b0, acc[r]);
        }
        for (int r = 0; r < R; r++) _mm256_storeu_ps(scores + (size_t)r * t + j, acc[r]);
    }
    for (; j < t; j++) {
        for (int r = 0; r < R; r++) {
            float sum = 0;
            for (int k = 0; k < d; k++) sum += q[(size_t)r * p->q_row + k] * p->b[(size_t)k * p->b_row + j];
            scores[(size_t)r * t + j] = sum;
        }
    }
}

// Scale, mask and exponentiate one row of scores in place; returns the sum of the exponentials,
// or -1 when the row's softmax is NaN (every key masked, or a NaN score).
__attribute__((target("avx2,fma"))) static float softmax_numerators(const CMaaSKernels_attention *p, int i, float *scores) {
    const int t = p->keys;
    const float *mask = p->mask ? p->mask + (size_t)i * p->mask_row : 0;
    float maximum = -INFINITY;
    int j = 0, unordered = 0;
    if (!mask || p->mask_column == 1) {
        const __m256 scale = _mm256_set1_ps(p->scale);
        __m256 peak = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
        for (; j + 8 <= t; j += 8) {
            __m256 v = mask ? _mm256_fmadd_ps(_mm256_loadu_ps(scores + j), scale, _mm256_loadu_ps(mask + j))
                            : _mm256_mul_ps(_mm256_loadu_ps(scores + j), scale);
            _mm256_storeu_ps(scores + j, v);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            peak = _mm256_max_ps(peak, v);
        }
        unordered = _mm256_movemask_ps(nan);
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(peak), _mm256_extractf128_ps(peak, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        maximum = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    }
    for (; j < t; j++) {
        float s = mask ? fmaf(scores[j], p->scale, mask[(size_t)j * p->mask_column]) : scores[j] * p->scale;
        scores[j] = s;
        unordered |= s != s;
        maximum = s > maximum ? s : maximum;
    }
    if (maximum == -INFINITY || unordered) return -1;
    __m256 m = _mm256_set1_ps(maximum), total = _mm256_setzero_ps();
    for (j = 0; j + 8 <= t; j += 8) {
        __m256 e = _ZGVdN8v_expf(_mm256_sub_ps(_mm256_loadu_ps(scores + j), m));
        _mm256_storeu_ps(scores + j, e);
        total = _mm256_add_ps(total, e);
    }
    float sum = hsum256(total);
    for (; j < t; j++) {
        scores[j] = expf(scores[j] - maximum);
        sum += scores[j];
    }
    return sum;
}

// out_r = (sum_j e_r[j] V[j]) * inverse_r for R rows: the normalisation once per output element.
__attribute__((target("avx2,fma"), always_inline)) static inline void weighted_values(
    const CMaaSKernels_attention *p, const float *scores, const float *inverse, int R, float *out) {
    const int t = p->keys, dv = p->value_width;
    int c = 0;
    for (; c + 32 <= dv; c += 32) {
        __m256 acc[2][4];
        for (int r = 0; r < R; r++) for (int u = 0; u < 4; u++) acc[r][u] = _mm256_setzero_ps();
        for (int j = 0; j < t; j++) {
            const float *v = p->v + (size_t)j * p->v_row + c;
            __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8), v2 = _mm256_loadu_ps(v + 16), v3 = _mm256_loadu_ps(v + 24);
            for (int r = 0; r < R; r++) {
                __m256 w = _mm256_broadcast_ss(scores + (size_t)r * t + j);
                acc[r][0] = _mm256_fmadd_ps(w, v0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(w, v1, acc[r][1]);
                acc[r][2] = _mm256_fmadd_ps(w, v2, acc[r][2]);
                acc[r][3] = _mm256_fmadd_ps(w, v3, acc[r][3]);
            }
        }
        for (int r = 0; r < R; r++) {
            __m256 s = _mm256_set1_ps(inverse[r]);
            for (int u = 0; u < 4; u++) _mm256_storeu_ps(out + (size_t)r * p->out_row + c + 8 * u, _mm256_mul_ps(acc[r][u], s));
        }
    }
    for (; c + 8 <= dv; c += 8) {
        __m256 acc[2];
        for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
        for (int j = 0; j < t; j++) {
            __m256 v0 = _mm256_loadu_ps(p->v + (size_t)j * p->v_row + c);
            for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(scores + (size_t)r * t + j), v0, acc[r]);
        }
        for (int r = 0; r < R; r++) _mm256_storeu_ps(out + (size_t)r * p->out_row + c, _mm256_mul_ps(acc[r], _mm256_set1_ps(inverse[r])));
    }
    for (; c < dv; c++) {
        for (int r = 0; r < R; r++) {
            float acc = 0;
            for (int j = 0; j < t; j++) acc += scores[(size_t)r * t + j] * p->v[(size_t)j * p->v_row + c];
            out[(size_t)r * p->out_row + c] = acc * inverse[r];
        }
    }
}

__attribute__((target("avx2,fma"))) static void attention_avx2(const CMaaSKernels_attention *p, int row_begin, int row_end, float *scores) {
    const int t = p->keys;
    for (int i = row_begin; i < row_end;) {
        const int R = row_end - i >= 2 ? 2 : 1;
        const float *q = p->q + (size_t)i * p->q_row;
        if (R == 2) scores_rows(p, q, 2, scores); else scores_rows(p, q, 1, scores);
        float inverse[2];
        int nan_rows = 0;
        for (int r = 0; r < R; r++) {
            float sum = softmax_numerators(p, i + r, scores + (size_t)r * t);
            if (sum < 0) {
                // Its softmax is NaN: the exporters' Where(IsNaN) makes the row's weights 0.
                nan_rows |= 1 << r;
                for (int j = 0; j < t; j++) scores[(size_t)r * t + j] = 0;
                inverse[r] = 0;
            } else {
                inverse[r] = 1.0f / sum;
            }
        }
        float *out = p->out + (size_t)i * p->out_row;
        if (R == 2) weighted_values(p, scores, inverse, 2, out); else weighted_values(p, scores, inverse, 1, out);
        if (nan_rows && !p->nan_to_zero) {
            for (int r = 0; r < R; r++) {
                if (nan_rows & (1 << r)) for (int c = 0; c < p->value_width; c++) out[(size_t)r * p->out_row + c] = NAN;
            }
        }
        i += R;
    }
}
#endif

static void attention_scalar(const CMaaSKernels_attention *p, int row_begin, int row_end, float *scores) {
    const int d = p->depth, t = p->keys, dv = p->value_width;
    for (int i = row_begin; i < row_end; i++) {
        const float *q = p->q + (size_t)i * p->q_row;
        const float *mask = p->mask ? p->mask + (size_t)i * p->mask_row : 0;
        float maximum = -INFINITY;
        for (int j = 0; j < t; j++) {
            float sum = 0;
            for (int k = 0; k < d; k++) sum += q[k] * p->b[(size_t)k * p->b_row + j];
            float s = mask ? fmaf(sum, p->scale, mask[(size_t)j * p->mask_column]) : sum * p->scale;
            scores[j] = s;
            maximum = s > maximum ? s : maximum;
        }
        float *out = p->out + (size_t)i * p->out_row;
        if (maximum == -INFINITY || maximum != maximum) {
            for (int c = 0; c < dv; c++) out[c] = p->nan_to_zero ? 0.0f : NAN;
            continue;
        }
        float sum = 0;
        for (int j = 0; j < t; j++) {
            scores[j] = expf(scores[j] - maximum);
            sum += scores[j];
        }
        for (int c = 0; c < dv; c++) {
            float acc = 0;
            for (int j = 0; j < t; j++) acc += scores[j] * p->v[(size_t)j * p->v_row + c];
            out[c] = acc / sum;
        }
    }
}

void CMaaSKernels_attention_rows(const CMaaSKernels_attention *given, int row_begin, int row_end, float *scratch) {
    CMaaSKernels_attention gathered = *given;
    const CMaaSKernels_attention *p = given;
    if (given->b_column != 1) {
        // K in its own [keys x depth] layout: transpose this head's keys once, so every query row
        // reads B's rows contiguously.
        float *b = scratch + 2 * (size_t)given->keys;
        for (int k = 0; k < given->depth; k++)
            for (int j = 0; j < given->keys; j++) b[(size_t)k * given->keys + j] = given->b[(size_t)k * given->b_row + (size_t)j * given->b_column];
        gathered.b = b;
        gathered.b_row = (size_t)given->keys;
        gathered.b_column = 1;
        p = &gathered;
    }
#if defined(__x86_64__)
    if (CMaaSKernels_available()) {
        attention_avx2(p, row_begin, row_end, scratch);
        return;
    }
#endif
    attention_scalar(p, row_begin, row_end, scratch);
}
