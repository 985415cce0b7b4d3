#ifndef CMAASKERNELS_H
#define CMAASKERNELS_H

#include <stddef.h>

/// Column width of a packed panel: B is stored as ceil(N/16) panels of K x 16 floats.
#define CMaaSKernels_PANEL 16

/// Whether this CPU runs the AVX2/FMA kernels (checked at run time; otherwise callers use BLAS).
int CMaaSKernels_available(void);

/// Whether the AVX-512 variants are used (set MAAS_NO_AVX512 to turn them off).
int CMaaSKernels_has_avx512(void);

/// C[m x (16 * panels)] = A[m x k] . P + bias, for m <= 6 rows and `panels` consecutive panels
/// of packed B (each k x 16 floats). `bias` (16 * panels floats) may be NULL. `columns` is how
/// many of the output columns are real (the last panel may be padding); `ldc` is C's row stride.
/// With `relu`, negative results are stored as zero (a fused Relu).
void CMaaSKernels_gemm_panels(
    int m, int k, const float *a, size_t lda,
    const float *panels, int panel_count,
    const float *bias, float *c, size_t ldc, int columns, int relu);

/// The same with a per-row bias (`row_bias[r]` added to row r; may be NULL), as convolutions
/// need: rows are filters there.
void CMaaSKernels_gemm_panels_row_bias(
    int m, int k, const float *a, size_t lda,
    const float *panels, int panel_count,
    const float *row_bias, float *c, size_t ldc, int columns, int relu);

/// Functions for `CMaaSKernels_map`.
#define CMaaSKernels_ERF 0
#define CMaaSKernels_EXP 1
#define CMaaSKernels_TANH 2

/// y[i] = f(x[i]) for f among erf, exp and tanh; x and y may be the same array. glibc's libmvec
/// in AVX2 or AVX-512 lanes (at most 4 ulps), scalar libm for tails and on other CPUs.
void CMaaSKernels_map(const float *x, float *y, size_t n, int function);

/// GELU in place over n floats: 0.5 x (1 + erf(x / sqrt 2)), or with `approximate` the tanh form
/// 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), as ONNX's Gelu and PyTorch define them.
void CMaaSKernels_gelu(float *x, size_t n, int approximate);

/// One (batch, head) of scaled dot-product attention: out = softmax(scale * Q . B + mask) . V,
/// with B = K transposed ([depth x keys], rows contiguous). Row strides in floats.
typedef struct {
    const float *q;     size_t q_row;          // [rows x depth]
    const float *b;     size_t b_row;          // [depth x keys]
    size_t b_column;                            // 1, or K's row stride when B is K read in place
    const float *v;     size_t v_row;          // [keys x value_width]
    const float *mask;  size_t mask_row;       // additive, [rows x keys]; may be NULL
    size_t mask_column;                         // 1, or 0 for one value per row
    float *out;         size_t out_row;        // [rows x value_width]
    int depth, keys, value_width;
    float scale;
    int nan_to_zero;                            // rows whose softmax is NaN give zeros (Where(IsNaN))
} CMaaSKernels_attention;

/// Query rows [row_begin, row_end) of `p`; `scratch` holds 2 * `keys` floats, plus `depth` *
/// `keys` when `b_column` is not 1 (B is gathered into it once per call).
void CMaaSKernels_attention_rows(const CMaaSKernels_attention *p, int row_begin, int row_end, float *scratch);

/// LayerNormalization of `rows` rows of n floats: y = (x - mean) / sqrt(var + epsilon) * scale + bias,
/// of x + residual when `residual` is given. `scale` and `bias` (n floats each) may be NULL; y
/// may alias x but not residual.
void CMaaSKernels_layer_norm(
    const float *x, const float *residual, const float *scale, const float *bias, float *y, size_t rows, size_t n, float epsilon);

/// Gives the pages of freed heap blocks back to the system (glibc's malloc_trim).
void CMaaSKernels_release_free_memory(void);

/// Output channels per block of the direct convolution's packed weights.
#define CMaaSKernels_CONV_BLOCK 6

/// Floats `CMaaSKernels_conv_pack` writes for `filters` filters of `taps` (in-channels x kh x kw) weights.
size_t CMaaSKernels_conv_packed_floats(int filters, int taps);

/// Packs [filters][taps] weights as ceil(filters / 6) blocks of [taps][6], zero-padded.
void CMaaSKernels_conv_pack(const float *weights, int filters, int taps, float *packed);

/// Output rows [row_begin, row_end) of up to 6 filters (`filters` of them real) of a stride-1,
/// undilated convolution: out[f][oh][ow] = bias[f] + sum over c, i, j of
/// w[f][c][i][j] * in[c][oh + i][ow + j]. `in` is `channels` planes of in_h x in_w, already
/// padded; `out` is this block's first filter plane of out_h x out_w; `packed_block` one block of
/// `CMaaSKernels_conv_pack`'s output; `bias` (may be NULL) has `filters` entries. AVX2 + FMA.
/// With `pool`, a fused 2x2 stride-2 MaxPool: `out` is the pooled plane of out_h x out_w, rows
/// are pooled rows, and only conv rows and columns below 2 * out_h, 2 * out_w are computed.
void CMaaSKernels_conv_direct(
    const float *in, int channels, int in_h, int in_w,
    const float *packed_block, int kh, int kw, const float *bias, int filters,
    float *out, int out_h, int out_w, int row_begin, int row_end, int relu, int pool);

/// Per-step constants of an Adam/AdamW update (PyTorch's single-tensor formulas).
typedef struct {
    float decay;                  // AdamW's 1 - lr * weight_decay, else 1
    float l2;                     // Adam's weight_decay (added to the gradient), else 0
    float lerp_weight;            // 1 - beta1: m = lerp(m, g, lerp_weight)
    float lerp_complement;        // 1 - lerp_weight, in float as torch.lerp computes it
    int lerp_from_end;            // torch.lerp's form for weights >= 0.5: g - (g - m) * (1 - w)
    float beta2;
    float one_minus_beta2;
    float bias_correction2_root;  // sqrt(1 - beta2^t)
    float epsilon;
    float negative_step_size;     // -lr / (1 - beta1^t)
} CMaaSKernels_AdamScalars;

/// Updates p, m and v (count floats each) from the gradient g.
void CMaaSKernels_adam_update(size_t count, float *p, float *m, float *v, const float *g, const CMaaSKernels_AdamScalars *scalars);

/// A spin-wait hint (PAUSE on x86), so a spinning thread yields the core's resources.
static inline void CMaaSKernels_spin_pause(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}

#endif
