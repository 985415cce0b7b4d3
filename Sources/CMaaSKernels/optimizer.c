// Optimizer updates over a flat parameter vector, with the shards' gradients summed on the fly
// (one pass over memory instead of a reduction pass and an update pass). The formulas follow
// the order of operations of PyTorch's scalar CPU kernels (lerp, mul_ then addcmul_, addcdiv_);
// contraction into FMA is off so that the vector and scalar paths round alike. (PyTorch's own
// vectorized kernels may contract, so agreement with it is to a few ulps, not bit for bit.)
#include "CMaaSKernels.h"

#pragma clang fp contract(off)

#define ADAM_BODY                                                                      \
    for (size_t i = 0; i < count; i++) {                                               \
        float g = GRADIENT;                                                            \
        float parameter = p[i] * a->decay;                                             \
        float d = g + a->l2 * parameter;                                               \
        float mi = a->lerp_from_end ? d - (d - m[i]) * a->lerp_complement              \
                                    : m[i] + a->lerp_weight * (d - m[i]);                \
        float vi = v[i] * a->beta2 + (a->one_minus_beta2 * d) * d;                     \
        m[i] = mi;                                                                     \
        v[i] = vi;                                                                     \
        float denominator = __builtin_sqrtf(vi) / a->bias_correction2_root + a->epsilon; \
        p[i] = parameter + a->negative_step_size * (mi / denominator);                 \
    }

static void adam_one_scalar(size_t count, float *restrict p, float *restrict m, float *restrict v,
                            const float *restrict g0, const CMaaSKernels_AdamScalars *a) {
#define GRADIENT g0[i]
    ADAM_BODY
#undef GRADIENT
}

static void adam_two_scalar(size_t count, float *restrict p, float *restrict m, float *restrict v,
                            const float *restrict g0, const float *restrict g1, const CMaaSKernels_AdamScalars *a) {
#define GRADIENT (g0[i] + g1[i])
    ADAM_BODY
#undef GRADIENT
}

#if defined(__x86_64__)
#include <immintrin.h>

// The same formulas 8 lanes at a time. Explicit intrinsics because the compiler keeps sqrtf
// scalar (errno); vsqrtps and vdivps round exactly like their scalar forms, so results match.
__attribute__((target("avx2"))) static void adam_avx2(size_t count, float *restrict p, float *restrict m,
                                                      float *restrict v, const float *restrict g0,
                                                      const float *restrict g1, const CMaaSKernels_AdamScalars *a) {
    const __m256 decay = _mm256_set1_ps(a->decay), l2 = _mm256_set1_ps(a->l2);
    const __m256 weight = _mm256_set1_ps(a->lerp_weight), beta2 = _mm256_set1_ps(a->beta2);
    const __m256 one_minus_beta2 = _mm256_set1_ps(a->one_minus_beta2);
    const __m256 root = _mm256_set1_ps(a->bias_correction2_root), epsilon = _mm256_set1_ps(a->epsilon);
    const __m256 step = _mm256_set1_ps(a->negative_step_size);
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 g = _mm256_loadu_ps(g0 + i);
        if (g1) g = _mm256_add_ps(g, _mm256_loadu_ps(g1 + i));
        __m256 parameter = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
        __m256 d = _mm256_add_ps(g, _mm256_mul_ps(l2, parameter));
        __m256 mi = _mm256_loadu_ps(m + i);
        mi = _mm256_add_ps(mi, _mm256_mul_ps(weight, _mm256_sub_ps(d, mi)));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), beta2), _mm256_mul_ps(_mm256_mul_ps(one_minus_beta2, d), d));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 denominator = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), root), epsilon);
        _mm256_storeu_ps(p + i, _mm256_add_ps(parameter, _mm256_mul_ps(step, _mm256_div_ps(mi, denominator))));
    }
    if (g1) adam_two_scalar(count - i, p + i, m + i, v + i, g0 + i, g1 + i, a);
    else adam_one_scalar(count - i, p + i, m + i, v + i, g0 + i, a);
}
#endif

void CMaaSKernels_adam_update(size_t count, float *p, float *m, float *v, float *const *gradients, int gradient_count,
                              const CMaaSKernels_AdamScalars *scalars) {
    // More than two shards: fold the rest into the first, then update from one or two.
    for (int shard = 2; shard < gradient_count; shard++) {
        for (size_t i = 0; i < count; i++) gradients[0][i] += gradients[shard][i];
    }
    int two = gradient_count >= 2;
#if defined(__x86_64__)
    if (CMaaSKernels_available() && !scalars->lerp_from_end) {
        adam_avx2(count, p, m, v, gradients[0], two ? gradients[1] : 0, scalars);
        return;
    }
#endif
    if (two) adam_two_scalar(count, p, m, v, gradients[0], gradients[1], scalars);
    else adam_one_scalar(count, p, m, v, gradients[0], scalars);
}
