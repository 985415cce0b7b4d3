// Direct convolution (stride 1, no dilation) over NCHW planes: no im2col pass. Each step of the
// micro-kernel loads 16 (or 8) consecutive input pixels of one row once and multiplies them with
// one tap of 6 output channels (broadcast from weights packed per 6-channel block), so 12 FMAs
// share 8 loads and the accumulators (6 channels x 16 pixels) stay in registers for the whole
// sum over input channels and taps. im2col + GEMM wrote and re-read K x pixels floats per image
// first, and split each image between threads in two hand-offs.
#include "CMaaSKernels.h"

#include <string.h>

size_t CMaaSKernels_conv_packed_floats(int filters, int taps) {
    size_t blocks = (size_t)(filters + CMaaSKernels_CONV_BLOCK - 1) / CMaaSKernels_CONV_BLOCK;
    return blocks * (size_t)taps * CMaaSKernels_CONV_BLOCK;
}

void CMaaSKernels_conv_pack(const float *weights, int filters, int taps, float *packed) {
    const int B = CMaaSKernels_CONV_BLOCK;
    int blocks = (filters + B - 1) / B;
    for (int block = 0; block < blocks; block++) {
        float *target = packed + (size_t)block * taps * B;
        for (int t = 0; t < taps; t++) {
            for (int r = 0; r < B; r++) {
                int filter = block * B + r;
                target[(size_t)t * B + r] = filter < filters ? weights[(size_t)filter * taps + t] : 0.0f;
            }
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

// One tap (input offset j, weights w) of the micro-kernel: NV vectors of input pixels, 6 filters.
#define TAP(NV, MASKED, j, w)                                                                                  \
    do {                                                                                          \
        __m256 x[NV];                                                                             \
        for (int v = 0; v < NV; v++)                                                              \
            x[v] = MASKED ? _mm256_maskload_ps(row + (j) + v * in_step, mask) : _mm256_loadu_ps(row + (j) + v * in_step); \
        for (int r = 0; r < 6; r++) {                                                             \
            __m256 weight = _mm256_broadcast_ss((w) + r);                                         \
            for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(weight, x[v], acc[r][v]);    \
        }                                                                                         \
    } while (0)

// NV vectors of 8 pixels (fewer under `mask`), `in_step`/`out_step` floats apart: 16 pixels of a
// row (steps 8), or 8 pixels of two rows (steps of a row) for a row's last columns, so that every
// tile that can keeps 12 accumulators (FMA latency x 2 units needs >= 8). KW > 0 fixes the
// kernel width at compile time, so the taps of a row unroll (kw = 3 is most common); KW = 0
// loops over `kw`. POOL (with NV = 2 over two rows) stores the 2x2 maximum of each pixel pair
// instead: 4 pooled values per filter at `out` (fewer under `half_mask`), a fused MaxPool.
#define DEFINE_TILE(NAME, NV, MASKED, KW, POOL)                                                    \
    __attribute__((target("avx2,fma"), always_inline)) static inline void NAME(                  \
        const float *in, int channels, size_t plane, int in_w, const float *w, int kh, int kw,   \
        const float *bias, int filters, float *out, size_t out_plane, __m256i mask, int relu,    \
        size_t in_step, size_t out_step, __m128i half_mask) {                                     \
        __m256 acc[6][NV];                                                                        \
        for (int r = 0; r < 6; r++)                                                               \
            for (int v = 0; v < NV; v++) acc[r][v] = bias ? _mm256_set1_ps(bias[r]) : _mm256_setzero_ps(); \
        for (int c = 0; c < channels; c++) {                                                      \
            const float *source = in + (size_t)c * plane;                                         \
            for (int i = 0; i < kh; i++) {                                                        \
                const float *row = source + (size_t)i * in_w;                                     \
                if (KW == 3) {                                                                    \
                    TAP(NV, MASKED, 0, w);                                                                    \
                    TAP(NV, MASKED, 1, w + 6);                                                                \
                    TAP(NV, MASKED, 2, w + 12);                                                               \
                    w += 18;                                                                      \
                } else {                                                                          \
                    for (int j = 0; j < kw; j++, w += 6) TAP(NV, MASKED, j, w);                               \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        /* A constant trip count keeps acc in registers (a runtime one spilled it every step). */ \
        for (int r = 0; r < 6; r++) {                                                             \
            if (r >= filters) break;                                                              \
            if (POOL) {                                                                           \
                __m256 both = _mm256_max_ps(acc[r][0], acc[r][NV - 1]);                           \
                both = _mm256_max_ps(both, _mm256_permute_ps(both, 0xB1));                        \
                both = _mm256_permutevar8x32_ps(both, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7)); \
                __m128 pooled = _mm256_castps256_ps128(both);                                     \
                if (relu) pooled = _mm_max_ps(pooled, _mm_setzero_ps());                          \
                if (MASKED) _mm_maskstore_ps(out + r * out_plane, half_mask, pooled);             \
                else _mm_storeu_ps(out + r * out_plane, pooled);                                  \
                continue;                                                                         \
            }                                                                                     \
            for (int v = 0; v < NV; v++) {                                                        \
                __m256 value = relu ? _mm256_max_ps(acc[r][v], _mm256_setzero_ps()) : acc[r][v];  \
                if (MASKED) _mm256_maskstore_ps(out + r * out_plane + v * out_step, mask, value); \
                else _mm256_storeu_ps(out + r * out_plane + v * out_step, value);                 \
            }                                                                                     \
        }                                                                                         \
    }

DEFINE_TILE(pair_k3, 2, 0, 3, 0)
DEFINE_TILE(pair_masked_k3, 2, 1, 3, 0)
DEFINE_TILE(single_k3, 1, 0, 3, 0)
DEFINE_TILE(single_masked_k3, 1, 1, 3, 0)
DEFINE_TILE(pair, 2, 0, 0, 0)
DEFINE_TILE(pair_masked, 2, 1, 0, 0)
DEFINE_TILE(single, 1, 0, 0, 0)
DEFINE_TILE(single_masked, 1, 1, 0, 0)
DEFINE_TILE(pool_k3, 2, 0, 3, 1)
DEFINE_TILE(pool_masked_k3, 2, 1, 3, 1)
DEFINE_TILE(pool, 2, 0, 0, 1)
DEFINE_TILE(pool_masked, 2, 1, 0, 1)

typedef void (*tile_fn)(const float *, int, size_t, int, const float *, int, int, const float *, int, float *, size_t,
                        __m256i, int, size_t, size_t, __m128i);

// out_h x out_w 2x2 maxima of conv rows [2 * row_begin, 2 * row_end) and columns [0, 2 * out_w).
__attribute__((target("avx2,fma")))
static void conv_direct_pooled(
    const float *in, int channels, int in_h, int in_w, const float *w, int kh, int kw, const float *b, int filters,
    float *out, int out_h, int out_w, int row_begin, int row_end, int relu) {
    size_t plane = (size_t)in_h * in_w, out_plane = (size_t)out_h * out_w;
    int k3 = kw == 3;
    tile_fn full = k3 ? pool_k3 : pool, partial = k3 ? pool_masked_k3 : pool_masked;
    int width = 2 * out_w, wide = width / 8 * 8, left = width % 8;
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m128i half_mask = _mm_cmpgt_epi32(_mm_set1_epi32(left / 2), _mm_setr_epi32(0, 1, 2, 3));
    __m256i none = _mm256_setzero_si256();
    __m128i none128 = _mm_setzero_si128();
    for (int ph = row_begin; ph < row_end; ph++) {
        const float *in_row = in + (size_t)(2 * ph) * in_w;
        float *out_row = out + (size_t)ph * out_w;
        for (int ow = 0; ow < wide; ow += 8)
            full(in_row + ow, channels, plane, in_w, w, kh, kw, b, filters, out_row + ow / 2, out_plane, none, relu, in_w, 0, none128);
        if (left)
            partial(in_row + wide, channels, plane, in_w, w, kh, kw, b, filters, out_row + wide / 2, out_plane, mask, relu, in_w, 0, half_mask);
    }
}

__attribute__((target("avx2,fma")))
void CMaaSKernels_conv_direct(
    const float *in, int channels, int in_h, int in_w,
    const float *packed_block, int kh, int kw, const float *bias, int filters,
    float *out, int out_h, int out_w, int row_begin, int row_end, int relu, int pool) {
    size_t plane = (size_t)in_h * in_w, out_plane = (size_t)out_h * out_w;
    // A bias for the padding filters of the last block, so the tile can always read 6.
    float padded_bias[6] = {0};
    if (bias) memcpy(padded_bias, bias, (size_t)filters * sizeof(float));
    const float *b = bias ? padded_bias : 0;
    if (pool) {
        conv_direct_pooled(in, channels, in_h, in_w, packed_block, kh, kw, b, filters, out, out_h, out_w, row_begin, row_end, relu);
        return;
    }
    __m128i none128 = _mm_setzero_si128();
    int k3 = kw == 3;
    tile_fn two = k3 ? pair_k3 : pair, two_masked = k3 ? pair_masked_k3 : pair_masked;
    tile_fn one = k3 ? single_k3 : single, one_masked = k3 ? single_masked_k3 : single_masked;
    int wide = out_w / 16 * 16, left = out_w % 8;
    __m256i none = _mm256_setzero_si256();
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const float *w = packed_block;
    for (int oh = row_begin; oh < row_end;) {
        int rows = oh + 1 < row_end ? 2 : 1;
        for (int r = 0; r < rows; r++) {
            const float *in_row = in + (size_t)(oh + r) * in_w;
            float *out_row = out + (size_t)(oh + r) * out_w;
            for (int ow = 0; ow < wide; ow += 16)
                two(in_row + ow, channels, plane, in_w, w, kh, kw, b, filters, out_row + ow, out_plane, none, relu, 8, 8, none128);
        }
        // The columns past the 16-wide tiles, 8 (and then fewer) at a time, both rows at once.
        const float *in_row = in + (size_t)oh * in_w;
        float *out_row = out + (size_t)oh * out_w;
        int ow = wide;
        if (ow + 8 <= out_w) {
            if (rows == 2) two(in_row + ow, channels, plane, in_w, w, kh, kw, b, filters, out_row + ow, out_plane, none, relu, in_w, out_w, none128);
            else one(in_row + ow, channels, plane, in_w, w, kh, kw, b, filters, out_row + ow, out_plane, none, relu, 0, 0, none128);
            ow += 8;
        }
        if (left) {
            if (rows == 2) two_masked(in_row + ow, channels, plane, in_w, w, kh, kw, b, filters, out_row + ow, out_plane, mask, relu, in_w, out_w, none128);
            else one_masked(in_row + ow, channels, plane, in_w, w, kh, kw, b, filters, out_row + ow, out_plane, mask, relu, 0, 0, none128);
        }
        oh += rows;
    }
}
#else
void CMaaSKernels_conv_direct(
    const float *in, int channels, int in_h, int in_w,
    const float *packed_block, int kh, int kw, const float *bias, int filters,
    float *out, int out_h, int out_w, int row_begin, int row_end, int relu, int pool) {
    (void)pool; (void)in; (void)channels; (void)in_h; (void)in_w; (void)packed_block; (void)kh; (void)kw; (void)bias;
    (void)filters; (void)out; (void)out_h; (void)out_w; (void)row_begin; (void)row_end; (void)relu;
}
#endif
