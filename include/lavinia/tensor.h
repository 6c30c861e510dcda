/*
 * tensor.h: lavinia's tensor, the unit every op, model and adapter works on.
 *
 * A tensor has up to four dimensions in row-major order (the last dimension varies fastest,
 * as in PyTorch), a stride per dimension counted in elements (so transposes and slices are
 * views without copies), a dtype, a device and a data pointer. Shapes in comments use the
 * letters of src/core/ops.h: B batch, T tokens, C channels, V vocab, H heads, D head dim.
 *
 *     int64_t shape[2] = { 4, 8 };
 *     lv_tensor *w = lv_tensor_new(LV_F32, 2, shape);   // owns 4*8 floats, zeroed
 *     lv_tensor_set_param(w);                           // trainable: backward fills w->grad
 *     ...
 *     lv_tensor_free(w);
 *
 * Tensors made by ops live in their graph's arena and die at lv_graph_reset; tensors made with
 * lv_tensor_new (weights, adapter parameters) live until lv_tensor_free.
 */
#ifndef LV_TENSOR_H
#define LV_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LV_MAX_DIMS 4

/* Element types. Q8_0 and Q4_0 are ggml's block types (32 values per block: an F16 scale and
 * 32 int8, or 32 4-bit values offset by 8), for frozen weights: a tensor of one has a last
 * dimension that is a multiple of 32, is contiguous, and enters only matrix products (as
 * the right operand) and conversions. */
typedef enum lv_dtype {
    LV_F32,
    LV_F16,
    LV_BF16,
    LV_I32,
    LV_Q8_0,
    LV_Q4_0,
    LV_NF4,         /* QLoRA's 4-bit NormalFloat, below */
    LV_Q8_0X8,      /* Q8_0's blocks eight at a time, their scales first: below */
    LV_DTYPE_COUNT
} lv_dtype;

#define LV_QBLOCK 32

/* Q8_0x8: the blocks of Q8_0 regrouped for the CPU's matrix-vector kernels, the same 34 bytes
 * per 32 values. Each group of eight blocks (256 values, 272 bytes) holds the eight F16
 * scales (16 bytes), then the eight blocks' 32 int8 each: the scales load as one vector, and
 * every 16-byte run of values sits inside one cache line. A last group of m < 8 blocks holds
 * m scales, then m x 32 values. A Q8_0x8 tensor's last dimension is a multiple of 256, so its
 * rows are whole groups; Q8_0 and Q8_0x8 convert into each other byte for byte. */
#define LV_Q8_0X8_GROUP 256
/* count values (a multiple of 32) from value first (a multiple of 32) of a Q8_0x8 array of
 * n values, as F32 */
void lv_q8_0x8_dequantize(float *y, const void *src, int64_t n, int64_t first, int64_t count);

/* NF4 (QLoRA, Dettmers et al. 2023; bitsandbytes' layout of the values): blocks of 64
 * consecutive values of the whole flattened tensor (a block may cross rows), each a 4-bit
 * index into the 16 NormalFloat values times the block's absmax; the absmaxes are double
 * quantised: their mean is subtracted and the rest stored as 8-bit indices into the signed
 * dynamic map, with one float scale per 256 blocks. An NF4 tensor's data is, for n values:
 * n/2 bytes of indices (the first value of a pair in the high nibble), n/64 bytes of
 * absmax indices, ceil(n/64/256) floats of group scales, one float offset. The whole
 * tensor must be contiguous and n a multiple of 64; it is converted as a whole. */
#define LV_NF4_BLOCK 64
#define LV_NF4_GROUP 256
/* The 16 NF4 values, and the 256 of the signed dynamic map. */
extern const float lv_nf4_codebook[16];
float lv_nf4_value(int i);
float lv_dynamic_map_value(int i);
/* Quantise n values (a multiple of 64) into dst (lv_dtype_bytes(LV_NF4, n) bytes), and back. */
void lv_nf4_quantize(void *dst, const float *x, int64_t n);
void lv_nf4_dequantize(float *y, const void *src, int64_t n);
/* The scales of count blocks from block first, of an NF4 tensor of n values. */
void lv_nf4_block_scales(float *scales, const void *src, int64_t n, int64_t first,
                         int64_t count);

/* Where the data lives. */
typedef enum lv_device {
    LV_DEVICE_CPU,
    LV_DEVICE_CUDA,
    LV_DEVICE_COUNT
} lv_device;

/* Tensor flags. */
enum {
    LV_TENSOR_PARAM     = 1u << 0,  /* trainable leaf: backward accumulates into ->grad */
    LV_TENSOR_FROZEN    = 1u << 1,  /* never gets a gradient of its own (frozen base weights) */
    LV_TENSOR_DETACHED  = 1u << 2,  /* gradients stop here (lv_detach) */
    LV_TENSOR_NEEDS_GRAD = 1u << 3, /* set by ops: some parameter upstream wants a gradient */
    LV_TENSOR_OWNS_DATA = 1u << 4,  /* data was malloc'ed by lv_tensor_new; freed with it */
    LV_TENSOR_VIEW      = 1u << 5,  /* data aliases another tensor's */
};

typedef struct lv_tensor {
    lv_dtype dtype;
    lv_device device;
    int ndim;                       /* 0..LV_MAX_DIMS; 0 is a scalar with one element */
    int64_t shape[LV_MAX_DIMS];     /* unused trailing entries are 1 */
    int64_t stride[LV_MAX_DIMS];    /* in elements; unused trailing entries are 1 */
    void *data;                     /* element [0,0,0,0] */
    struct lv_tensor *grad;         /* same shape, F32, contiguous; NULL until backward needs it */
    unsigned flags;
    int node;                       /* index of the tape node that made it, -1 for a leaf */
    char name[128];                 /* for messages; may be empty */
} lv_tensor;

/* --- dtypes ------------------------------------------------------------------------- */

size_t lv_dtype_size(lv_dtype t);          /* bytes per element; 0 for block types */
/* Bytes of n elements (n a multiple of LV_QBLOCK for block types). */
size_t lv_dtype_bytes(lv_dtype t, int64_t n);
bool lv_dtype_is_block(lv_dtype t);
const char *lv_dtype_name(lv_dtype t);

/* IEEE half and bfloat16 conversion, round to nearest even; NaN stays NaN. */
uint16_t lv_f32_to_f16(float f);
float lv_f16_to_f32(uint16_t h);
uint16_t lv_f32_to_bf16(float f);
float lv_bf16_to_f32(uint16_t h);
void lv_convert_row(void *dst, lv_dtype dt, const void *src, lv_dtype st, int64_t n);

/* --- lifetime ----------------------------------------------------------------------- */

/* A new contiguous tensor on the CPU, zero-filled; NULL with lv_errmsg() on failure. */
lv_tensor *lv_tensor_new(lv_dtype dtype, int ndim, const int64_t *shape);
/* A tensor header over memory the caller owns (not freed by lv_tensor_free). */
lv_tensor *lv_tensor_wrap(void *data, lv_dtype dtype, int ndim, const int64_t *shape);
/* Frees the header, owned data and the gradient. NULL is fine. */
void lv_tensor_free(lv_tensor *t);

/* Fill in a header in place (no allocation): contiguous strides, node -1, flags 0. */
void lv_tensor_init(lv_tensor *t, void *data, lv_dtype dtype, int ndim, const int64_t *shape);

/* --- shape helpers ------------------------------------------------------------------ */

int64_t lv_tensor_nelem(const lv_tensor *t);
size_t lv_tensor_nbytes(const lv_tensor *t);     /* nelem * dtype size, contiguous layout */
bool lv_tensor_is_contiguous(const lv_tensor *t);
bool lv_tensor_same_shape(const lv_tensor *a, const lv_tensor *b);
/* Writes "(2, 3, 4)" into buf; returns buf. */
char *lv_shape_str(const lv_tensor *t, char *buf, size_t n);
void lv_tensor_set_name(lv_tensor *t, const char *name);

/* --- parameters and gradients ------------------------------------------------------- */

/* Mark a leaf as trainable (clears FROZEN). */
void lv_tensor_set_param(lv_tensor *t);
/* Mark a leaf as frozen: no gradient of its own; gradients still flow through ops using it. */
void lv_tensor_set_frozen(lv_tensor *t);
/* Zero the gradient of a parameter (allocating it on first use). */
int lv_tensor_zero_grad(lv_tensor *t);

/* --- element access (slow; tests and tools) ---------------------------------------- */

/* Element at a flat row-major index of the logical shape, converted to double. */
double lv_tensor_get(const lv_tensor *t, int64_t i);
void lv_tensor_set(lv_tensor *t, int64_t i, double v);
/* Copy the logical contents (any strides, any float dtype) into a contiguous float array. */
void lv_tensor_to_f32(float *dst, const lv_tensor *t);
/* Copy n floats into the tensor, converting to its dtype. */
void lv_tensor_from_f32(lv_tensor *t, const float *src);

#ifdef __cplusplus
}
#endif
#endif /* LV_TENSOR_H */
