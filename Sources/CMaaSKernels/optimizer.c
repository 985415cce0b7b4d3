// The Adam/AdamW update over a flat parameter vector, in one pass over memory. The formulas follow
// the order of operations of PyTorch's scalar CPU kernels (lerp, mul_ then addcmul_, addcdiv_);
// contraction into FMA is off so that the vector and scalar paths round alike. (PyTorch's own
// vectorized kernels may contract, so agreement with it is to a few ulps, not bit for bit.)
#include "CMaaSKernels.h"

#pragma clang fp contract(off)

static void adam_scalar(size_t count, float *restrict p, float *restrict m, float *restrict v,
                        const float *restrict g, const CMaaSKernels_AdamScalars *a) {
    for (size_t i = 0; i < count; i++) {
        float parameter = p[i] * a->decay;
        float d = g[i] + a->l2 * parameter;
        float mi = a->lerp_from_end ? d - (d - m[i]) * a->lerp_complement : m[i] + a->lerp_weight * (d - m[i]);
        float vi = v[i] * a->beta2 + (a->one_minus_beta2 * d) * d;
        m[i] = mi;
        v[i] = vi;
        float denominator = __builtin_sqrtf(vi) / a->bias_correction2_root + a->epsilon;
        p[i] = parameter + a->negative_step_size * (mi / denominator);
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

// The same formulas 8 lanes at a time. Explicit intrinsics because the compiler keeps sqrtf
// scalar (errno); vsqrtps and vdivps round exactly like their scalar forms, so results match.
__attribute__((target("avx2"))) static void adam_avx2(size_t count, float *restrict p, float *restrict m,
                                                      float *restrict v, const float *restrict g,
                                                      const CMaaSKernels_AdamScalars *a) {
    const __m256 decay = _mm256_set1_ps(a->decay), l2 = _mm256_set1_ps(a->l2);
    const __m256 weight = _mm256_set1_ps(a->lerp_weight), beta2 = _mm256_set1_ps(a->beta2);
    const __m256 one_minus_beta2 = _mm256_set1_ps(a->one_minus_beta2);
    const __m256 root = _mm256_set1_ps(a->bias_correction2_root), epsilon = _mm256_set1_ps(a->epsilon);
    const __m256 step = _mm256_set1_ps(a->negative_step_size);
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 parameter = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
        __m256 d = _mm256_add_ps(_mm256_loadu_ps(g + i), _mm256_mul_ps(l2, parameter));
        __m256 mi = _mm256_loadu_ps(m + i);
        mi = _mm256_add_ps(mi, _mm256_mul_ps(weight, _mm256_sub_ps(d, mi)));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), beta2), _mm256_mul_ps(_mm256_mul_ps(one_minus_beta2, d), d));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 denominator = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), root), epsilon);
        _mm256_storeu_ps(p + i, _mm256_add_ps(parameter, _mm256_mul_ps(step, _mm256_div_ps(mi, denominator))));
    }
    adam_scalar(count - i, p + i, m + i, v + i, g + i, a);
}
#endif

void CMaaSKernels_adam_update(size_t count, float *p, float *m, float *v, const float *g, const CMaaSKernels_AdamScalars *scalars) {
#if defined(__x86_64__)
    // torch.lerp's other form (weights >= 0.5, i.e. beta1 <= 0.5) takes the scalar path.
    if (CMaaSKernels_available() && !scalars->lerp_from_end) {
        adam_avx2(count, p, m, v, g, scalars);
        return;
    }
#endif
    adam_scalar(count, p, m, v, g, scalars);
}
