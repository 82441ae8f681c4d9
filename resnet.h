/* resnet.h - the one public header of resnet-c.
 *
 * resnet-c is a C99 reference implementation of transfer learning with ResNet:
 * layers (each *_forward beside its *_backward), torchvision / CIFAR ResNets built as a
 * small graph of nodes from an architecture registry, safetensors weights, optimizers
 * matching torch.optim, a data pipeline, metrics and an HTML report.
 *
 * Conventions used everywhere:
 *   - tensors are float32, NCHW, contiguous; a [N, C] matrix is NCHW with H = W = 1;
 *   - functions that can fail return 0 on success and -1 on failure after recording one
 *     line saying what and where, which rn_error() returns;
 *   - layer backward functions OVERWRITE the input gradient dx and ACCUMULATE (+=) into
 *     parameter gradients (dweight, dbias, dgamma, dbeta), like torch's autograd;
 *     any gradient pointer may be NULL when that gradient is not wanted.
 *
 * Source files: util.c (errors, RNG, files), layers.c (layers, reference kernels),
 * gemm.c (SIMD GEMM), winograd.c (Winograd 3x3 convolutions), ops.c (the op table),
 * resnet.c (architectures, heads, forward and backward), plan.c (memory and fusion
 * planner), optim.c (optimizers), safetensors.c (weights, model files, checkpoints),
 * data.c (images, datasets, preprocessing, loader), metrics.c (metrics), report.c (HTML
 * report), train.c, infer.c; internal headers ops.h, simd.h, parallel.h.
 */
#ifndef RESNET_H
#define RESNET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ------------------------------------------------------------------------------------ */
/* Errors and utilities (util.c)                                                         */
/* ------------------------------------------------------------------------------------ */

#if defined(__MINGW32__) /* built with __USE_MINGW_ANSI_STDIO: C99 formats (%zu) */
#define RN_PRINTF(a, b) __attribute__((format(gnu_printf, a, b)))
#elif defined(__GNUC__) || defined(__clang__)
#define RN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define RN_PRINTF(a, b)
#endif

/* Record the error message of the failing call (printf-style, one line, no newline). */
void rn_set_error(const char *fmt, ...) RN_PRINTF(1, 2);
const char *rn_error(void);

/* Allocation that never returns NULL: on exhaustion it prints what was asked and exits(2).
 * rn_alloc returns 64-byte aligned memory (free it with rn_free); rn_calloc zero-fills. */
void *rn_alloc(size_t bytes);
void *rn_calloc(size_t count, size_t size);
/* rn_calloc for a block that may never be used (a network's gradients, when it only runs
 * forward): from 1 MB on its pages are not touched until written (calloc's zero pages;
 * aligned to 16 bytes, not 64). */
void *rn_calloc_lazy(size_t count, size_t size);
void *rn_realloc(void *p, size_t bytes); /* realloc that never returns NULL */
void rn_free(void *p);
char *rn_strdup(const char *s);

/* xoshiro256** seeded through splitmix64: the generator for data order, augmentation,
 * dropout and initialisation. Same seed, same stream, on every platform. */
typedef struct {
    uint64_t s[4];
} Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_next(Rng *r);
float rng_uniform(Rng *r);              /* [0, 1), 24 random bits */
float rng_normal(Rng *r);               /* standard normal (Box-Muller) */
uint32_t rng_below(Rng *r, uint32_t n); /* uniform integer in [0, n), unbiased */
void rng_shuffle(Rng *r, int *a, int n);

/* Counter-based uniform in [0, 1) on a 2^-24 grid: hash(seed, index). Exactly reproducible
 * in PyTorch with int64 tensor ops (tools/golden.py), which lets the golden tests rebuild
 * the same random weights in C and in Python without shipping them.
 *   h = lowbias32(index ^ lowbias32(seed)); u = (h >> 8) * 2^-24                        */
uint32_t hash_u32(uint32_t x);
float hash_uniform(uint32_t seed, uint32_t index);
/* Fill x[i] = (2 * hash_uniform(seed, i) - 1) * bound, computed in float32. */
void hash_fill(float *x, size_t n, uint32_t seed, float bound);

double rn_seconds(void); /* monotonic wall clock */
int rn_threads(void);    /* threads OpenMP will use (1 without OpenMP) */
long rn_peak_rss_kb(void);

/* Byte order: every file the library reads or writes (safetensors, .npy, feature caches)
 * holds numbers little-endian, on every host. count values of size bytes (1, 2, 4 or 8):
 * rn_le_store writes host values as little-endian bytes, rn_le_load reads them back; a
 * copy on little-endian hosts, a byte swap per value on big-endian ones. dst may be src.
 * One value: uint64_t n; rn_le_load(&n, p, 1, sizeof n). */
void rn_le_store(void *dst, const void *src, size_t count, size_t size);
void rn_le_load(void *dst, const void *src, size_t count, size_t size);
int rn_host_little_endian(void);

/* a * b + c rounded once to float, on every host. Some libms' fmaf round twice (mingw-w64:
 * fmaf(0.60800004f, -0.1f, 2.0f) = 1.93919992f, exact 1.9391999951 -> 1.93920004f).
 * The product of two floats is exact in double; the sum is rounded to odd (Boldo and
 * Melquiond, 2008), which a final rounding to float turns into the correctly rounded
 * result, as double carries more than 2 * 24 + 2 bits. Needs double arithmetic evaluated
 * in double (FLT_EVAL_METHOD 0 or 1). */
float rn_fmaf(float a, float b, float c);

/* Write len bytes to path atomically (path.tmp.PID, fsync, rename). */
int write_file_atomic(const char *path, const void *data, size_t len);
/* Read a whole file; *len receives its size. Caller frees with free(). */
uint8_t *read_file(const char *path, size_t *len);
/* NumPy .npy (format 1.0, little-endian float32, C order), written atomically. */
int write_npy_f32(const char *path, const float *data, int ndim, const int64_t *shape);
int mkdir_p(const char *path);

/* Growing byte buffer, used to build JSON, HTML and file images. */
typedef struct {
    char *data;
    size_t len, cap;
} Buf;
void buf_put(Buf *b, const void *data, size_t n);
void buf_printf(Buf *b, const char *fmt, ...) RN_PRINTF(2, 3);
/* s escaped for HTML text, attribute values and SVG text alike (report.c); NULL: nothing */
void buf_put_html(Buf *b, const char *s);
void buf_json_string(Buf *b, const char *s); /* quoted, escaped JSON string */
/* The length of the longest prefix of s that is valid UTF-8 (len when all of it is). */
size_t utf8_valid_len(const uint8_t *s, size_t len);
void buf_free(Buf *b);

/* Per-thread scratch memory for kernels: grows to the largest request and is then reused,
 * so steady-state training and inference allocate nothing. slot < RN_MAX_THREADS. */
#define RN_MAX_THREADS 256
#define RN_VERSION "0.9.0" /* train/infer --version */
float *rn_scratch(int slot, size_t floats);

/* Progress bar on stderr: redraws one line on a terminal, prints plain lines otherwise. */
typedef struct {
    const char *label;
    long total, done;
    double t0, last;
    int tty;
} Progress;
void progress_start(Progress *p, const char *label, long total);
void progress_update(Progress *p, long done, const char *extra);
void progress_finish(Progress *p, const char *extra);

/* ------------------------------------------------------------------------------------ */
/* Layers (layers.c): forward beside backward, a naive reference beside the fast path    */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    int in_c, out_c; /* channels */
    int kh, kw;      /* kernel size */
    int stride, pad; /* same in both directions */
    int groups;      /* 0 or 1: dense; G: in_c and out_c split into G groups, output
                          channel oc reading only its group's in_c / G input channels
                          (weight [out_c, in_c / G, kh, kw]); G = in_c: depthwise */
} ConvSpec;

/* floor((in + 2 pad - k) / stride) + 1, as torch; 0 when the window does not fit */
static inline int conv_out_size(int in, int k, int stride, int pad) {
    return in + 2 * pad < k ? 0 : (in + 2 * pad - k) / stride + 1;
}

/* y[n, oc, oy, ox] = bias[oc] + sum_{ic,ky,kx} w[oc, ic, ky, kx] * x[n, ic, oy*s-p+ky, ox*s-p+kx]
 * weight is [out_c, in_c, kh, kw]; bias may be NULL. */
void conv2d_forward(const ConvSpec *s, int n, int h, int w, const float *x, const float *weight,
                    const float *bias, float *y);
void conv2d_backward(const ConvSpec *s, int n, int h, int w, const float *x, const float *weight,
                     const float *dy, float *dx, float *dweight, float *dbias);
/* The same, adding the input gradient to dx (dx += ...) instead of overwriting it: a
 * branch point's second consumer accumulates in place, with no scratch and no extra pass. */
void conv2d_backward_add(const ConvSpec *s, int n, int h, int w, const float *x,
                         const float *weight, const float *dy, float *dx, float *dweight,
                         float *dbias);
/* The convolution with its epilogue applied per image while the output is in cache:
 *   y = act(conv(x) * scale[oc] + shift[oc] + residual[n, oc, oy, ox])
 * scale NULL: 1; shift NULL: 0 (shift = bias is conv2d_forward); residual NULL: none;
 * act: none, ReLU or SiLU. With batchnorm_eval_affine's scale and shift this is conv, eval
 * batch norm (folded), the residual sum and the activation in one pass, with the same float
 * operations as the separate layers. */
typedef enum { CONV_ACT_NONE, CONV_ACT_RELU, CONV_ACT_SILU } ConvAct;
typedef struct {
    const float *scale, *shift;
    ConvAct act;
} ConvEpilogue;
void conv2d_forward_fused(const ConvSpec *s, int n, int h, int w, const float *x,
                          const float *weight, const ConvEpilogue *e, const float *residual,
                          float *y);
/* Winograd F(4x4, 3x3) (winograd.c): the same as conv2d_forward_fused for a 3x3 stride-1
 * pad-1 conv (conv_winograd_eligible) with a quarter of the multiply-adds, from weights
 * transformed once by winograd_weight_transform into u (winograd_weight_floats floats).
 * Rounding differs from the direct sum by about 1e-6 of the output's magnitude. */
int conv_winograd_eligible(const ConvSpec *s);
int conv_winograd_pays(void); /* 1 where this build vectorises the transforms */
size_t winograd_weight_floats(const ConvSpec *s);
void winograd_weight_transform(const ConvSpec *s, const float *weight, float *u);
void conv2d_forward_winograd(const ConvSpec *s, int n, int h, int w, const float *x, const float *u,
                             const ConvEpilogue *e, const float *residual, float *y);
/* Naive loops, the reference the fast path is tested against. */
void conv2d_forward_ref(const ConvSpec *s, int n, int h, int w, const float *x, const float *weight,
                        const float *bias, float *y);
void conv2d_backward_ref(const ConvSpec *s, int n, int h, int w, const float *x,
                         const float *weight, const float *dy, float *dx, float *dweight,
                         float *dbias);

/* Batch norm over (N, H, W) per channel, as torch.nn.BatchNorm2d.
 * Train: y = (x - mean_B) / sqrt(var_B + eps) * gamma + beta with the biased batch variance;
 *        running = (1 - momentum) * running + momentum * stat, where the running variance
 *        takes the UNBIASED batch variance (times m / (m - 1), m = N*H*W).
 *        save_mean / save_invstd ([c]) keep what backward needs.
 * Eval:  y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.             */
void batchnorm_forward_train(int n, int c, int hw, const float *x, const float *gamma,
                             const float *beta, float *running_mean, float *running_var,
                             float momentum, float eps, float *y, float *save_mean,
                             float *save_invstd);
void batchnorm_forward_eval(int n, int c, int hw, const float *x, const float *gamma,
                            const float *beta, const float *running_mean, const float *running_var,
                            float eps, float *y);
/* Eval batch norm as y = x * scale + shift: scale = gamma * invstd, shift = beta -
 * mean * scale, per channel (batchnorm_forward_eval computes exactly this). */
void batchnorm_eval_affine(int c, const float *gamma, const float *beta, const float *running_mean,
                           const float *running_var, float eps, float *scale, float *shift);
/* dx = gamma * invstd / m * (m * dy - sum(dy) - xhat * sum(dy * xhat)). Both batch-norm
 * backwards, relu_backward and dropout_backward may write dx over dy (dx == dy): each value
 * (each channel's sums) is read before it is written; net_backward relies on it. */
void batchnorm_backward_train(int n, int c, int hw, const float *x, const float *gamma,
                              const float *save_mean, const float *save_invstd, const float *dy,
                              float *dx, float *dgamma, float *dbeta);
/* Backward of the eval-mode affine map (statistics are constants): dx = dy * gamma * invstd */
void batchnorm_backward_eval(int n, int c, int hw, const float *x, const float *gamma,
                             const float *running_mean, const float *running_var, float eps,
                             const float *dy, float *dx, float *dgamma, float *dbeta);

void relu_forward(size_t n, const float *x, float *y);
void relu_backward(size_t n, const float *y, const float *dy, float *dx); /* uses output y */
/* The ReLU after conv -> batch norm, rebuilt from the conv output x and the batch norm as
 * a per-channel affine map: y = max(0, x * scale[c] + shift[c]); backward: dx = dy where
 * that is positive (dx may alias dy). Bit for bit the batch norm's and ReLU's output. */
void relu_affine_forward(int n, int c, int hw, const float *x, const float *scale,
                         const float *shift, float *y);
void relu_affine_backward(int n, int c, int hw, const float *x, const float *scale,
                          const float *shift, const float *dy, float *dx);
/* The batch norm's output rebuilt the same way: y = x * scale[c] + shift[c], its bits. */
void batchnorm_affine_forward(int n, int c, int hw, const float *x, const float *scale,
                              const float *shift, float *y);
/* Elementwise activations, forward and backward in one shape (backward reads x or y,
 * whichever its derivative needs; dx may alias dy):
 *   silu(x) = x * sigmoid(x), silu'(x) = s + x * s * (1 - s) with s = sigmoid(x)
 *   sigmoid(x) = 1 / (1 + exp(-x)), sigmoid'(x) = y * (1 - y) */
typedef void (*ActForward)(size_t n, const float *x, float *y);
typedef void (*ActBackward)(size_t n, const float *x, const float *y, const float *dy, float *dx);
void silu_forward(size_t n, const float *x, float *y);
void silu_backward(size_t n, const float *x, const float *y, const float *dy, float *dx);
void sigmoid_forward(size_t n, const float *x, float *y);
void sigmoid_backward(size_t n, const float *x, const float *y, const float *dy, float *dx);

/* Residual sum y = a + b, or relu(a + b). Backward: g = dy (times y > 0 when y is given);
 * each wanted input gradient (da, db non-NULL) is set to g when first_* else g is added. */
void add_forward(size_t n, const float *a, const float *b, int relu, float *y);
void add_backward(size_t n, const float *y, const float *dy, float *da, int first_a, float *db,
                  int first_b);
void add_into(size_t n, const float *g, float *d); /* d += g */
/* Concatenation along channels: per sample, y = [x_0, x_1, ...], part k holding floats[k]
 * values; backward hands each part with dx[k] != NULL its slice of dy. */
void concat_forward(int n, int parts, const size_t *floats, const float *const *x, float *y);
void concat_backward(int n, int parts, const size_t *floats, const float *dy, float *const *dx);

/* Max pool k x k, stride, pad (padding never wins). argmax [n, c, oh, ow] holds the input
 * index (within the channel plane) of each maximum, for backward. */
void maxpool2d_forward(int n, int c, int h, int w, int k, int stride, int pad, const float *x,
                       float *y, int32_t *argmax);
void maxpool2d_backward(int n, int c, int h, int w, int k, int stride, int pad,
                        const int32_t *argmax, const float *dy, float *dx);

/* Global average pool [n, c, h, w] -> [n, c]. */
void avgpool_global_forward(int n, int c, int hw, const float *x, float *y);
void avgpool_global_backward(int n, int c, int hw, const float *dy, float *dx);

/* Adaptive average pool [n, c, h, w] -> [n, c, oh, ow], torch.nn.AdaptiveAvgPool2d: output
 * cell (i, j) is the mean of rows [floor(i h / oh), ceil((i + 1) h / oh)) and the same
 * columns for j (VGG's 7x7: a 7x7 map is copied, smaller maps repeat cells, larger ones
 * average possibly overlapping bins). Backward spreads each dy over its bin. The loops
 * are the definition; the layer is too small to need a fast path beside them. */
void adaptive_avgpool2d_forward(int n, int c, int h, int w, int oh, int ow, const float *x,
                                float *y);
void adaptive_avgpool2d_backward(int n, int c, int h, int w, int oh, int ow, const float *dy,
                                 float *dx);

/* y[n, o] = b[o] + sum_i x[n, i] * weight[o, i]  (torch.nn.Linear layout [out, in]). */
void linear_forward(int n, int in, int out, const float *x, const float *weight, const float *bias,
                    float *y);
void linear_backward(int n, int in, int out, const float *x, const float *weight, const float *dy,
                     float *dx, float *dweight, float *dbias);
/* The same on sgemm_ref (the reference network). */
void linear_forward_ref(int n, int in, int out, const float *x, const float *weight,
                        const float *bias, float *y);
void linear_backward_ref(int n, int in, int out, const float *x, const float *weight,
                         const float *dy, float *dx, float *dweight, float *dbias);

/* Inverted dropout: mask[i] = 0 or 1/(1-p), drawn from rng; y = x * mask. */
void dropout_forward(size_t n, float p, Rng *rng, const float *x, float *y, float *mask);
void dropout_backward(size_t n, const float *mask, const float *dy, float *dx);

/* Stochastic depth, torchvision's StochasticDepth(p, "row"): per sample b of per_sample
 * values, keep[b] = 1 / (1 - p) with probability 1 - p (drawn from rng), else 0, and
 * y = x * keep[b]. Backward dx = dy * keep[b] (dx may be dy). */
void stochastic_depth_forward(int n, size_t per_sample, float p, Rng *rng, const float *x,
                              float *y, float *keep);
void stochastic_depth_backward(int n, size_t per_sample, const float *keep, const float *dy,
                               float *dx);
/* Channel-wise scale, squeeze-and-excitation's last step: y[b, c, :] = x[b, c, :] * s[b, c].
 * Backward: dx = dy * s (may be dy), ds[b, c] = sum over the plane of dy * x; either NULL. */
void channel_scale_forward(int n, int c, int hw, const float *x, const float *s, float *y);
void channel_scale_backward(int n, int c, int hw, const float *x, const float *s, const float *dy,
                            float *dx, float *ds);

/* Option-A shortcut of the CIFAR ResNets: y = zero-pad channels of x[:, :, ::stride, ::stride]
 * with (out_c - in_c) / 2 zero channels on each side (stride 1 with in_c == out_c: copy). */
void shortcut_a_forward(int n, int in_c, int h, int w, int out_c, int stride, const float *x,
                        float *y);
void shortcut_a_backward(int n, int in_c, int h, int w, int out_c, int stride, const float *dy,
                         float *dx);

/* Softmax cross-entropy with torch.nn.CrossEntropyLoss(weight, label_smoothing) semantics,
 * mean reduction. With eps = label_smoothing, K classes, class weights w (NULL = all 1):
 *   loss_i = (1 - eps) * w[y_i] * (-log p_i[y_i]) + eps / K * sum_k w[k] * (-log p_i[k])
 *   loss   = sum_i loss_i / sum_i w[y_i]
 * probs [n, k] receives the softmax (needed by backward). Returns the loss. */
float softmax_cross_entropy_forward(int n, int k, const float *logits, const int *labels,
                                    const float *class_weights, float label_smoothing,
                                    float *probs);
/* dlogits = d loss / d logits for the loss above. */
void softmax_cross_entropy_backward(int n, int k, const float *probs, const int *labels,
                                    const float *class_weights, float label_smoothing,
                                    float *dlogits);
void softmax_rows(int n, int k, const float *logits, float *probs);

/* ------------------------------------------------------------------------------------ */
/* GEMM (gemm.c): the one hot kernel, SIMD behind a thin macro layer, scalar fallback    */
/* ------------------------------------------------------------------------------------ */

/* C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C, row-major, with leading
 * dimensions lda, ldb, ldc. op(X) = X or X^T. Parallel inside with OpenMP unless called
 * from inside a parallel region. */
void sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
           const float *b, int ldb, float beta, float *c, int ldc);
void sgemm_ref(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
               const float *b, int ldb, float beta, float *c, int ldc);
/* C = op(A) * op(B) (sgemm's arithmetic, alpha 1, beta 0), calling fn(ctx, i0, rows, j0,
 * cols) on each tile C[i0 : i0 + rows, j0 : j0 + cols] once it is final, on the thread
 * that computed it: an epilogue applied while the tile is still in cache. Every element is
 * in exactly one tile; fn must only touch its tile's elements (and may read anything). */
typedef void (*GemmTileFn)(void *ctx, int i0, int rows, int j0, int cols);
void sgemm_tiles(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                 const float *b, int ldb, float *c, int ldc, GemmTileFn fn, void *ctx);
const char *simd_name(void); /* "avx512", "avx2", "scalar": the unit sgemm runs on */
/* The FMA peak of that unit on the current OpenMP team, measured (best of 5 short runs). */
double simd_peak_gflops(void);

/* ------------------------------------------------------------------------------------ */
/* Network graph, ops, architectures and heads (resnet.c, ops.c, plan.c)                 */
/* ------------------------------------------------------------------------------------ */

/* The ops a node can be. Each has one row in the op table (ops.c): its output shape, its
 * forward and backward on the graph, and the facts the planner needs; a compile-time
 * check holds the table to this enum. */
typedef enum {
    OP_INPUT, /* the network's input */
    OP_CONV,  /* conv2d_forward (ConvSpec, optional bias) */
    OP_BN,    /* batch norm, Node.eps / Node.momentum */
    OP_RELU,
    OP_MAXPOOL,    /* Node.k, stride, pad */
    OP_GAP,        /* global average pool */
    OP_ADD,        /* in[0] + in[1] */
    OP_ADD_RELU,   /* relu(in[0] + in[1]): the end of a residual block */
    OP_SHORTCUT_A, /* option-A shortcut: Node.conv.in_c -> out_c, Node.stride */
    OP_LINEAR,
    OP_DROPOUT, /* Node.p */
    OP_CONCAT,  /* in[0..n_in) along channels */
    OP_SILU,    /* x * sigmoid(x) */
    OP_SIGMOID,
    OP_ADAPTIVE_AVGPOOL, /* to a Node.k x Node.k grid */
    OP_CHANNEL_SCALE,    /* in[0] [c, h, w] times in[1] [c, 1, 1] per channel */
    OP_STOCHASTIC_DEPTH, /* Node.p: whole samples dropped in training */
    OP_COUNT
} OpType;
const char *op_name(OpType op); /* "conv", "bn", ... */

/* Freeze groups: every node and parameter belongs to one, numbered in network order; the
 * architecture names them (Net.group_names: torchvision ResNets "stem", "layer1".."layer4",
 * "head"), the head is always the last. A network trains the groups >= first_trainable.
 * The STAGE_ names are the torchvision ResNets' numbering. */
#define RN_MAX_GROUPS 16
#define RN_GROUP_NAME 24
enum {
    STAGE_STEM = 0,
    STAGE_LAYER1,
    STAGE_LAYER2,
    STAGE_LAYER3,
    STAGE_LAYER4,
    STAGE_HEAD,
    STAGE_COUNT = RN_MAX_GROUPS
};

#define RN_NAME_MAX 96

typedef struct {
    char name[RN_NAME_MAX]; /* torchvision state_dict name, e.g. "layer1.0.conv1.weight" */
    int ndim;
    int64_t shape[4];
    int64_t numel;
    float *data;
    float *grad;   /* NULL for buffers (BN running statistics) and after
                                 net_release_grads */
    int is_buffer; /* saved with the weights, never optimised */
    int stage;     /* freeze group */
} Param;

typedef struct {
    OpType op;
    char name[RN_NAME_MAX];      /* module name, e.g. "layer2.0.bn1": torchvision's, where
                                 torchvision has a module there */
    int stage;                   /* freeze group */
    int in[4], n_in;             /* input node indices (ADD: 2, CONCAT: 2..4) */
    int last_consumer;           /* highest node index reading this output, -1: none */
    int c, h, w;                 /* output shape of one sample for the planned input size */
    ConvSpec conv;               /* OP_CONV; OP_SHORTCUT_A uses in_c and out_c */
    int k, stride, pad;          /* OP_MAXPOOL; OP_SHORTCUT_A uses stride; OP_ADAPTIVE_AVGPOOL:
                                 the output grid k x k */
    float p;                     /* OP_DROPOUT, OP_STOCHASTIC_DEPTH */
    float eps, momentum;         /* OP_BN */
    int weight, bias, mean, var; /* parameter indices, -1 when absent */
    float *out, *dout;           /* [batch, c, h, w], placed by the plan; dout only when the
                                 plan trains */
    float *save0, *save1;        /* BN: mean/invstd (train forward) or the folded scale/shift
                                 (eval forward); DROPOUT: mask; MAXPOOL: argmax (int32);
                                 STOCHASTIC_DEPTH: each sample's factor */
} Node;

/* The planner's state (plan.c), private: what the plan decided for one node ... */
typedef struct {
    int fuse_tail;          /* a conv heading conv, BN [, ReLU | ADD] that eval forwards
                                 run as one pass: the group's last node; -1: none */
    int recompute;          /* a ReLU after conv, BN (or, in a low_memory plan, an
                                 expanding 1x1 conv) whose output the training plan does
                                 not keep: backward recomputes it */
    float *wino_u, *wino_w; /* a fused 3x3 conv's Winograd weights and the weights they
                                 were made from; NULL: none */
    int wino_ready;         /* wino_u was made (from wino_w) */
} PlanNode;

/* Data-parallel fused step (dist.h): the gradients of consecutive nodes gathered back to
 * back until the bucket holds dist_bucket_floats(); then their sum across ranks is started
 * and backward goes on into the other bucket. The updates wait for the sum. */
typedef struct {
    float *grad;      /* [floats]: the gradients of the parameters below, in order */
    size_t floats, used;
    int *params;      /* [n_params]: the parameters whose gradients it holds */
    float **own_grad; /* [n_params]: their Param.grad, given back after their update */
    int n;            /* parameters held */
    int in_flight;    /* its sum was started and its updates wait for it */
    int ticket;       /* that sum's (dist_iallreduce_floats) */
} GradBucket;

/* ... and for the whole net: one arena holding every activation and gradient, and the
 * buffers backward borrows. */
typedef struct {
    PlanNode *nodes; /* [n_nodes] */
    float *arena;    /* one allocation for every activation and gradient */
    size_t arena_floats;
    int first_trainable;       /* first_trainable the training plan was made for */
    float *grad_scratch;       /* backward's scratch for a branch point's extra consumers */
    float *recompute_buf;      /* backward's recomputed ReLU output, inside the arena */
    int recompute_owner;       /* the node whose output recompute_buf holds, -1 */
    float *recompute_conv_buf; /* backward's recomputed conv output (low_memory) */
    int recompute_conv_owner;  /* the node whose output recompute_conv_buf holds, -1 */
    float *affine;             /* 2 * max channels: a recomputed ReLU's batch-norm scale and
                                 shift */
    float *wino_buf;           /* every node's wino_u and wino_w */
    size_t wino_floats;
    float *step_grad;    /* parameter gradients of one node in a fused step */
    GradBucket bucket[2]; /* ... with several ranks (dist.h); bucket[filling] takes them */
    int filling;
    int forward_train;   /* train flag of the last forward, for backward */
    int grad_from_stage; /* stages >= this may hold gradients not yet zeroed */
} NetPlan;

typedef enum { HEAD_LINEAR, HEAD_MLP, HEAD_INCEPTION } HeadType;

#define RN_MAX_HIDDEN 8
typedef struct {
    HeadType type;
    int n_hidden, hidden[RN_MAX_HIDDEN]; /* MLP hidden sizes, e.g. {256} or {512,256,128,64} */
    float dropout;      /* MLP: after each hidden ReLU; INCEPTION: before the dense layer */
    int batchnorm;      /* MLP: BatchNorm1d before each dense layer */
    int branch_filters; /* INCEPTION: filters per branch (1x1, 3x3, 5x5), default 128 */
} HeadSpec;

struct Net;
/* Called after each node's forward (net->forward_hook), like a PyTorch forward hook: out
 * holds n samples of the node's output. */
typedef void (*ForwardHook)(void *ctx, const struct Net *net, int node, int n, const float *out);

typedef struct Net {
    /* the graph */
    char arch[32]; /* "resnet50", "cifar_resnet20", "head" ... */
    int num_classes;
    Node *nodes;
    int n_nodes, cap_nodes;
    Param *params;
    int n_params, cap_params;
    int in_c;         /* input channels (3 for images, feature channels for heads) */
    int feature_node; /* backbone output: the feature map before global pooling */
    int pooled_node;  /* global-average-pooled features [n, C] (-1 if none) */
    int n_groups;     /* freeze groups, the head last */
    char group_names[RN_MAX_GROUPS][RN_GROUP_NAME];
    int first_trainable; /* groups < this are frozen: no grads, BN in eval mode */
    Rng rng;             /* dropout */
    /* how it runs: set before net_plan */
    int reference;            /* 1: the reference (net_plan): naive kernels, layer by layer,
                                 every training output kept; for checking the fast path */
    int no_fusion;            /* 1: eval forwards run layer by layer instead of folding
                                 batch norm, ReLU and residual sums into convs */
    int low_memory;           /* 1 (the default): training plans also recompute the outputs
                                 of expanding 1x1 convs in backward instead of keeping them
                                 (ResNet-50: 40 % less activation memory, 17 % more FLOPs,
                                 measured 2-5 % slower); 0 keeps them. The same results
                                 either way */
    int winograd;             /* 1 (the default where conv_winograd_pays): eval forwards run
                                 fused 3x3 stride-1 convs by Winograd F(4x4, 3x3)
                                 (winograd.c): a quarter of the multiply-adds, rounding
                                 within about 1e-6 of the direct sum; 0: im2col + GEMM,
                                 the layers' exact float operations. The transformed
                                 weights are remade whenever the weights change */
    int constant_weights;     /* 0 (the default): each forward checks the weights Winograd's
                                 were made from against a copy of them; 1: the caller
                                 promises the parameters stay as they are from net_plan on
                                 (infer), so they are made once and no copy is kept (less
                                 memory first touched, no memcmp of the 3x3 weights per
                                 forward). Read by net_plan */
    ForwardHook forward_hook; /* NULL, or called after every node (eval forwards then run
                                 layer by layer, so every node is seen) */
    void *hook_ctx;
    /* the plan: net_plan(batch, in_h, in_w, training_plan) */
    int batch, in_h, in_w, training_plan;
    NetPlan plan;         /* private (plan.c) */
    int grads_released;   /* net_release_grads was called: Param.grad is NULL */
    int shapes_only;      /* private: made by resnet_describe (no parameter data) */
    double *node_seconds; /* profiling, off when NULL: a caller's [2 * n_nodes + 1]
                                 array to which net_forward adds each node's seconds (a
                                 fused group's to its conv), backward adds them at n_nodes +
                                 node, and net_backward_step its optimizer updates at the end */
} Net;

/* Architectures, in a registry: each names its family's builder, its freeze groups and
 * its classifier, and the preprocessing its published weights expect. */
typedef struct ArchSpec {
    const char *name;   /* --arch value */
    const char *family; /* "resnet" (torchvision v1.5), "cifar_resnet" (option A), "vgg",
                           "keras_resnet" (Keras' ResNet50 v1), "efficientnet" (torchvision's) */
    int blocks[4];      /* blocks per stage (CIFAR: 3 stages) */
    int bottleneck;     /* Bottleneck blocks (expansion 4) instead of BasicBlock */
    /* Adds the backbone after the input node: declares the freeze groups before the head,
     * sets net->feature_node and returns its channel count (-1: rn_error says why). */
    int (*build)(Net *net, const struct ArchSpec *a, Rng *rng);
    const char *classifier; /* module name of the plain linear head: "fc", "linear" */
    const char *preprocess; /* prep_name of the weights' convention */
    int size;               /* input size the weights were trained at */
    float crop_pct;         /* their eval crop (1: none) */
    /* Adds what makes the pooled features from the feature map x ([c, h, w]) in freeze
     * groups of its own before the head: sets net->pooled_node, returns its channels (VGG:
     * classifier.0-5, 4096). NULL: a global average pool "avgpool" in the head's group.
     * An inception head reads the feature map and skips it. */
    int (*pool)(Net *net, Rng *rng, int x, int c);
    float dropout;            /* Dropout before the plain linear classifier (0: none), */
    const char *dropout_name; /*   e.g. EfficientNet's classifier.0 */
} ArchSpec;
int arch_count(void);
const ArchSpec *arch_at(int i);
const ArchSpec *arch_find(const char *name); /* NULL when unknown */
/* "resnet18, resnet34, ..." (every registered name), cut to fit out_len. */
void arch_list(char *out, size_t out_len);
int arch_is_known(const char *arch);
int arch_is_cifar(const char *arch);

/* resnet_create builds a registered architecture (torchvision v1.5 topology, names as its
 * state_dict; CIFAR: akamaster's option-A ResNets). head == NULL means the plain linear
 * classifier (ArchSpec.classifier: Linear C -> num_classes). Weights are initialised as
 * torchvision does (Kaiming normal fan_out for convs, BN gamma 1 beta 0, Linear uniform
 * +-1/sqrt(in)), from seed. Returns NULL on an unknown arch (rn_error says which are known). */
Net *resnet_create(const char *arch, int num_classes, const HeadSpec *head, uint64_t seed);
/* The same network's nodes and parameter names and shapes only (Param.data NULL: nothing
 * sized by the parameters is allocated), to check a file against the network it describes
 * before building it (net_check_weights). Only net_free may be called on it. */
Net *resnet_describe(const char *arch, int num_classes, const HeadSpec *head);
/* resnet_create without the random draws (convolution and linear weights and biases left
 * 0, batch norm as torchvision's), for a network whose every parameter is then read from a
 * file (net_load_weights_st with allow_new_head 0): a ResNet-50's init costs about as much
 * as loading it. */
Net *resnet_create_for_loading(const char *arch, int num_classes, const HeadSpec *head);
/* A network made of a head only, fed with features of shape [c, h, w] (h = w = 1 for
 * pooled features), in one freeze group, "head". Parameter names equal the head's names
 * inside resnet_create's network, so trained head weights copy across by name
 * (net_copy_params). */
Net *head_create(int c, int h, int w, int num_classes, const HeadSpec *head, uint64_t seed);
void net_free(Net *net);
/* Head specs as text, stored in model files and given on the command line:
 *   "linear" | "mlp:256" | "mlp:512,256,128,64:dropout=0.2:bn" | "inception:128:dropout=0.5" */
int head_parse(const char *text, HeadSpec *head);
void head_format(const HeadSpec *head, char *out, size_t out_len);
/* The group named name, or -1; the head's group (the last). */
int net_find_group(const Net *net, const char *name);
int net_head_group(const Net *net);
/* The groups' names as a JSON array, e.g. ["stem","layer1",...,"head"] (stored in model
 * files). */
void net_groups_json(const Net *net, Buf *b);

/* Size every activation for (batch, h, w) once; training plans also hold gradients.
 * Reuses the arena when the plan does not grow. Fails on inputs too small for the net.
 * Training plans keep, in the trainable stages, only the outputs backward reads (conv,
 * BN and linear inputs, block sums with ReLU); a ReLU after conv -> BN is recomputed in
 * backward instead (and with net->low_memory, the output of an expanding 1x1 conv: its
 * batch norm's input). Other outputs share memory by lifetime, as do all outputs of
 * inference plans (training = 0); ReLUs run in place. Eval forwards run each conv -> BN
 * [-> ReLU | -> residual sum] of an inference plan (or of a training plan's frozen
 * stages) as one pass (net->no_fusion = 1: layer by layer), so the intermediate outputs
 * are not written. A reference plan (net->reference) does none of this: every layer runs
 * its naive kernel (conv2d_*_ref, sgemm_ref) on its own, training plans recompute nothing.
 * The input, feature_node, pooled_node and the logits always stay readable after a
 * forward (resnet50 at 224x224: inference 14 MB a sample instead of 129 MB). */
int net_plan(Net *net, int batch, int h, int w, int training);
/* Forward n <= planned batch samples of x [n, in_c, h, w]. train: batch statistics and
 * dropout in trainable stages (frozen stages always run in eval mode). Returns the output
 * of the last node, [n, num_classes]. */
const float *net_forward(Net *net, const float *x, int n, int train);
/* Forward only as far as node `upto` (e.g. net->feature_node or net->pooled_node). */
const float *net_forward_upto(Net *net, const float *x, int n, int train, int upto);
/* Backward from dlogits [n, num_classes] after a full net_forward of the same n samples
 * (train = 1 for training; after train = 0 it differentiates the eval-mode network):
 * accumulates the gradients of trainable parameters; frozen stages cost nothing. dx (may
 * be NULL) receives the gradient of the input (then backward runs through every stage,
 * which needs a plan made while first_trainable was STAGE_STEM). Needs a training plan.
 * Node douts are shared scratch, valid only inside backward. */
void net_backward(Net *net, const float *dlogits, int n, float *dx);
void net_zero_grad(Net *net); /* the gradients backward wrote since the last call */
/* One training step's backward and optimizer update in one pass: each node's parameters
 * are updated (optimizer_update) as soon as the node's backward has made their gradients,
 * in a buffer the size of the largest layer's, so no gradient of the whole network is
 * ever held and nothing needs zeroing. The same parameters, bit for bit, as net_zero_grad,
 * net_backward and optimizer_step (a parameter is read by backward only before its own
 * node's update). Param.grad is left untouched. Inside a data-parallel step (dist.h) each
 * node's gradients are summed across ranks before its update, or (RN_OVERLAP=1) gather in
 * two buckets of about 25 MB whose sums run while backward goes on, each parameter updated
 * once its bucket's sum is in. Returns 0, or -1 (rn_error says why). */
struct Optimizer; /* below */
int net_backward_step(Net *net, const float *dlogits, int n, struct Optimizer *opt);
/* Free every Param.grad (ResNet-50: 102 MB) when only net_backward_step will train the
 * net; net_backward then fails and optimizer_step has nothing to apply. */
void net_release_grads(Net *net);
/* Freeze the stages before `stage`. Lowering it below what the current training plan was
 * made for re-plans (same batch and size), so call it between steps, not inside one. */
void net_set_first_trainable(Net *net, int stage);
Param *net_find_param(Net *net, const char *name);
int64_t net_count_params(const Net *net, int trainable_only);
/* Copy every parameter of src whose name and shape exist in dst. Returns the count.
 * "fc.*" and "linear.*" (the CIFAR name of the plain head) match each other when dst
 * lacks the exact name, so a head_create head copies into a CIFAR network. */
int net_copy_params(Net *dst, const Net *src);
/* An eval forward of x [n, ...] (the net planned for at least n) that writes every node's
 * output, layer by layer, to a safetensors file: tensor "<node name>" [n, c, h, w], the
 * names torchvision's modules have (tools/compare_dump.py holds them to PyTorch's forward
 * hooks), metadata "ops" mapping each name to its op. */
int net_dump_forward(Net *net, const float *x, int n, const char *path);
/* Node output after the last forward (see net_plan for which stay readable in inference
 * plans), and its per-sample size. */
const float *net_node_output(const Net *net, int node);
size_t net_node_size(const Net *net, int node);

/* ------------------------------------------------------------------------------------ */
/* Optimizers (optim.c), matching torch.optim                                            */
/* ------------------------------------------------------------------------------------ */

typedef enum { OPT_SGD, OPT_ADAM, OPT_ADAMW } OptType;

typedef struct {
    OptType type;
    float lr;
    float beta1, beta2, eps; /* Adam/AdamW: 0.9, 0.999, 1e-8 */
    float weight_decay;      /* SGD/Adam: L2 added to the gradient; AdamW: decoupled */
    float momentum;          /* SGD */
    int nesterov;            /* SGD */
} OptConfig;

OptConfig opt_default(OptType type, float lr);

typedef struct Optimizer {
    OptConfig cfg;
    int64_t step;
    int n;          /* one state slot per network parameter (index-aligned) */
    float **m, **v; /* Adam moments / SGD momentum buffer in m; NULL until used */
    double dec[6];  /* private: this step's hyperparameters as the decimals the
                                  user wrote (optimizer_begin_step) */
} Optimizer;

Optimizer *optimizer_create(const Net *net, const OptConfig *cfg);
/* One update of every parameter that is trainable (stage >= first_trainable, not a buffer)
 * from its grad; parameters without one (net_release_grads) are left as they are. */
void optimizer_step(Optimizer *opt, Net *net);
/* optimizer_step in parts, for updates made while backward runs (net_backward_step): the
 * step count goes up once (and cfg is read), then each trainable parameter i is updated
 * from its grad. */
void optimizer_begin_step(Optimizer *opt);
void optimizer_update(Optimizer *opt, Net *net, int i);
void optimizer_free(Optimizer *opt);
int opt_parse(const char *name, OptType *type);
const char *opt_name(OptType type);

/* ------------------------------------------------------------------------------------ */
/* safetensors (safetensors.c): strict parser, atomic writer, model files, checkpoints   */
/* ------------------------------------------------------------------------------------ */

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_U8, ST_OTHER } StDtype;

#define ST_MAX_DIMS 8
typedef struct {
    char *name;
    StDtype dtype;
    char dtype_name[12];
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end; /* byte offsets relative to the data section */
} StTensor;

typedef struct {
    char path[512]; /* for error messages ("<memory>" when parsed from a buffer) */
    uint8_t *file;  /* whole file, owned: a copy, or a mapping (st_open, where it can) */
    size_t file_len;
    int mapped;     /* file is a read-only mapping (rn_map_file), else a malloc'd copy */
    const uint8_t *data; /* start of the data section */
    size_t data_len;
    StTensor *tensors;
    int n_tensors;
    char **meta_keys, **meta_vals;
    int n_meta;
} StFile;

/* Parse and validate strictly: header length within the file and <= 100 MB, valid JSON
 * object, known dtypes, shape * dtype size == byte span, offsets inside the data section,
 * no overlaps or gaps, no duplicate names, __metadata__ a flat string->string map. */
int st_open(const char *path, StFile *f);
int st_parse(const uint8_t *buf, size_t len, const char *label, StFile *f); /* copies buf */
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
/* Convert a tensor to float32 (F32, F16, BF16, F64 accepted). */
int st_read_f32(const StFile *f, const StTensor *t, float *out);
const char *st_meta(const StFile *f, const char *key); /* NULL when absent */

typedef struct {
    Buf header_entries; /* internal */
    Buf data;
    char **meta_keys, **meta_vals;
    int n_meta;
    int n_tensors;
} StWriter;
void st_writer_init(StWriter *w);
void st_writer_add_f32(StWriter *w, const char *name, int ndim, const int64_t *shape,
                       const float *data);
void st_writer_add_i64(StWriter *w, const char *name, int ndim, const int64_t *shape,
                       const int64_t *data);
void st_writer_meta(StWriter *w, const char *key, const char *value);
int st_writer_save(StWriter *w, const char *path); /* atomic */
void st_writer_free(StWriter *w);

/* Load weights by torchvision name. Every parameter and buffer of the net must be present
 * with the same shape, except a head whose shape differs (e.g. a stock 1000-class fc into
 * a 2-class model) when allow_new_head: the head keeps its fresh initialisation and a
 * line on stderr says so. Extra tensors in the file are an error unless they belong to a
 * replaced head; "num_batches_tracked" is ignored. */
int net_load_weights(Net *net, const char *path, int allow_new_head);
int net_load_weights_st(Net *net, const StFile *f, int allow_new_head);
/* What net_load_weights_st checks before it copies (names, shapes, dtypes, finite values),
 * without touching the net's data: works on a resnet_describe network. */
int net_check_weights(const Net *net, const StFile *f, int allow_new_head);
/* Save parameters and buffers plus metadata (arch, classes, preprocessing...). */
int net_save_weights(const Net *net, const char *path, const char **meta_keys,
                     const char **meta_vals, int n_meta);

/* Checkpoint: weights, optimizer state (per-parameter moments named "optim.m.<name>" /
 * "optim.v.<name>"), step, RNG state and caller metadata in one safetensors file. */
int checkpoint_save(const char *path, const Net *net, const Optimizer *opt, const Rng *rng,
                    const char **meta_keys, const char **meta_vals, int n_meta);
int checkpoint_load(const char *path, Net *net, Optimizer *opt, Rng *rng, StFile *keep_meta);
int checkpoint_load_st(const StFile *f, Net *net, Optimizer *opt, Rng *rng);

/* ------------------------------------------------------------------------------------ */
/* Data (data.c): decoding, datasets, preprocessing, augmentation, splits, loader        */
/* ------------------------------------------------------------------------------------ */

#define RN_MAX_IMAGE_SIDE 16384 /* larger images are rejected before allocation */
#ifndef RN_MAX_IMAGE_PIXELS         /* the decoder's fuzz target builds with a smaller one */
#define RN_MAX_IMAGE_PIXELS (1 << 28)
#endif

typedef struct {
    int w, h;
    uint8_t *rgb;
} Image; /* 8-bit RGB, row-major, 3 bytes/pixel */

/* Decode any format stb_image reads (JPEG, PNG, BMP, GIF first frame, TGA, PNM, PSD) into
 * RGB8. On failure returns -1 and writes the reason (one line, no path) into why. */
int image_decode_file(const char *path, Image *img, char *why, size_t why_len);
int image_decode_memory(const uint8_t *buf, size_t len, Image *img, char *why, size_t why_len);
/* Check the header only (format, size caps): cheap validation when a dataset is listed. */
int image_probe_file(const char *path, int *w, int *h, char *why, size_t why_len);
void image_free(Image *img);
int image_write_png(const char *path, const Image *img); /* atomic */
/* Pillow's bilinear resize (antialiased when shrinking): the one resize that training,
 * evaluation, patches and report thumbnails share. dst is allocated. */
void image_resize(const Image *src, int w, int h, Image *dst);
/* Append img encoded as JPEG (jpeg_quality 1..100) or PNG (jpeg_quality 0) to out. */
int image_encode(const Image *img, int jpeg_quality, Buf *out);

typedef enum { PREP_TORCHVISION, PREP_CAFFE, PREP_UNIT } PrepKind;

typedef struct {
    PrepKind kind;  /* torchvision: RGB/255, ImageNet mean/std; caffe: BGR 0-255 minus
                         mean; unit: RGB/255 */
    int size;       /* output is size x size */
    float crop_pct; /* eval: resize shorter side to size/crop_pct, center crop size */
} Preprocess;

typedef struct {
    int enabled;
    float scale_min, scale_max; /* random resized crop area fraction, e.g. 0.08..1 */
    float ratio_min, ratio_max; /* aspect ratio range, e.g. 3/4..4/3 */
    int hflip;                  /* horizontal flip with probability 0.5 */
    float rotate_deg;           /* uniform in [-deg, deg] */
    float translate;            /* fraction of size, uniform in [-t, t] on each axis */
    float brightness, contrast; /* factors uniform in [1-b, 1+b], [1-c, 1+c] */
} Augment;

Augment augment_default(void); /* the common transfer-learning recipe */
int prep_parse(const char *name, PrepKind *kind);
const char *prep_name(PrepKind kind);

/* Image -> float [3, size, size] (CHW) by the convention. aug == NULL or !aug->enabled:
 * the eval transform. Otherwise augmentation drawn from rng. */
void preprocess_image(const Image *img, const Preprocess *p, const Augment *aug, Rng *rng,
                      float *out);

typedef struct {
    int n;
    char **paths;    /* per item; NULL for in-memory datasets (CIFAR binaries) */
    int *labels;     /* -1 when unlabelled */
    uint8_t *pixels; /* in-memory items: n * 32*32*3 RGB (CIFAR binaries) */
    int pixel_w, pixel_h;
    int n_classes;
    char **class_names;
    int n_skipped; /* files that could not be used, each reported on stderr */
    char root[512];
    char **skip_reasons; /* n_skipped lines "path: reason" (for dataset_summary) */
} Dataset;

/* An ImageFolder tree: classes are the sorted sub-folder names; hidden and non-image
 * files are ignored; undecodable files are reported, skipped and counted. */
int dataset_from_folder(const char *dir, Dataset *d);
/* Same, but with the class list fixed (val/test folders must use train's classes). */
int dataset_from_folder_classes(const char *dir, char **class_names, int n_classes, Dataset *d);
int dataset_from_cifar(const char *dir, int train, Dataset *d); /* CIFAR-10/100 binaries */
/* How many sub-folders of dir are named like splits (train, val, valid, validation, test),
 * their names "train, val" into found: a folder that holds splits, not classes. */
int dataset_split_folders(const char *dir, char *found, size_t found_len);
int dataset_from_unlabelled(const char *dir, Dataset *d);
int dataset_from_csv(const char *csv_path, Dataset *d); /* lines "path,label" */
void dataset_free(Dataset *d);
void dataset_summary(const Dataset *d, const char *title, FILE *out);
/* Subset by item indices (copies what it needs). */
void dataset_subset(const Dataset *d, const int *idx, int n, Dataset *out);
/* Seeded stratified split by fractions (test = 1 - train - val). */
int dataset_split(const Dataset *d, float train_frac, float val_frac, uint64_t seed, Dataset *train,
                  Dataset *val, Dataset *test);
/* "balanced": w_c = n / (K * n_c) (0 for an empty class). */
void class_weights_balanced(const Dataset *d, float *w);
/* Decode item i (file or in-memory). */
int dataset_load_image(const Dataset *d, int i, Image *img, char *why, size_t why_len);

/* Batches of preprocessed images, decoded by worker threads ahead of the consumer.
 * Shuffling and augmentation depend only on (seed, epoch), never on thread timing. */
typedef struct Loader Loader;
Loader *loader_create(const Dataset *d, const Preprocess *p, const Augment *aug, int batch,
                      int shuffle, uint64_t seed, int n_threads);
/* Data-parallel loading (dist.h): rank `rank` of `ranks` gets only its share of each
 * epoch's order: with whole_batches, the run of whole batches dist_batch_range gives it;
 * otherwise its dist_slice of every batch (loader_next_batch then hands out every batch,
 * empty slices included, so that all ranks step together). */
void loader_shard(Loader *l, int rank, int ranks, int whole_batches);
/* Start epoch `epoch` (order and augmentation draws derive from seed and epoch). */
void loader_start_epoch(Loader *l, int epoch);
/* Next batch: x [batch, 3, size, size], labels [batch], idx [batch] (dataset indices).
 * Returns the number of samples (0 at the end of the epoch). Items that fail to decode
 * are reported once and left out. */
int loader_next(Loader *l, float *x, int *labels, int *idx);
/* The next batch, even one whose items all failed or lie outside this rank's shard:
 * returns 1 and its usable items' count in *n, or 0 at the end of the epoch. */
int loader_next_batch(Loader *l, float *x, int *labels, int *idx, int *n);
int loader_failures(const Loader *l);
void loader_free(Loader *l);

/* (resnet.c) Forward every item of d through net in eval mode (eval transform, dataset order) in
 * batches of up to `batch`, and hand each batch to visit(ctx, n, idx, labels, out): out
 * holds the n rows of node `node`'s output (node < 0: the last node, the logits) for the
 * dataset items idx[0..n). Under mpirun (dist_size() > 1) each rank visits only the items
 * of its dist_batch_range: the caller gathers the rows (dist_allgather_rows). Items that
 * fail to decode are reported once and left out. The
 * net must be planned for `batch` at p->size. Shows a progress bar named label. Returns
 * the number of items that failed, or -1 (rn_error says why). */
typedef void (*BatchVisitor)(void *ctx, int n, const int *idx, const int *labels, const float *out);
int net_forward_dataset(Net *net, int node, const Dataset *d, const Preprocess *p, int batch,
                        int threads, const char *label, BatchVisitor visit, void *ctx);
/* net_forward_dataset in two steps: the loader it reads (d in order, already decoding;
 * under mpirun, this rank's batches), which a caller may start before the network is
 * ready (./infer does while the weights load), then the forward over it (which frees it). */
Loader *net_dataset_loader(const Dataset *d, const Preprocess *p, int batch, int threads);
int net_forward_loader(Net *net, int node, Loader *l, const Dataset *d, const Preprocess *p,
                       int batch, const char *label, BatchVisitor visit, void *ctx);

/* The ImageNet-1k class names (imagenet_classes.c, generated by
 * tools/gen_imagenet_classes.sh from torchvision's list), for 1000-class models without
 * names of their own. */
#define RN_IMAGENET_CLASSES 1000
extern const char *const rn_imagenet_classes[RN_IMAGENET_CLASSES];

/* (model files live in safetensors.c; declared here because they need Preprocess) */
/* Model files: weights plus everything inference needs, in the safetensors metadata:
 *   "format": "resnet-c-model", "arch", "num_classes", "classes" (JSON array of names),
 *   "head" (head_format text), "preprocess" (prep_name), "img_size", "crop_pct",
 *   "freeze_groups" (net_groups_json; checked against the architecture on load),
 *   "training" (optional: a JSON object describing the run that made the model, written by
 *   train: version, options, data, parameter counts, final metrics; infer --info shows it). */
typedef struct {
    char arch[32];
    int num_classes;
    char **class_names; /* num_classes names, owned (model_info_free) */
    HeadSpec head;
    Preprocess prep;
    char *training; /* the "training" JSON object text, or NULL; owned (model_info_free) */
} ModelInfo;
int model_save(const char *path, const Net *net, const ModelInfo *info);
/* Build the network the file describes and load its weights. NULL on failure. */
Net *model_load(const char *path, ModelInfo *info);
Net *model_load_st(const StFile *f, ModelInfo *info); /* the same from a parsed file */
/* model_load_st in two steps: the metadata (architecture, head, classes, preprocessing;
 * cheap, so a caller can start decoding its inputs), then the network and its weights
 * (checked against the metadata first). -1 / NULL on failure, with rn_set_error. */
int model_read_info_st(const StFile *f, ModelInfo *info);
Net *model_load_net_st(const StFile *f, const ModelInfo *info);
void model_info_free(ModelInfo *info);

/* ------------------------------------------------------------------------------------ */
/* Metrics (metrics.c) and report (report.c)                                             */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    int n, k;    /* samples, classes */
    double loss; /* mean cross-entropy when given, else NAN */
    double accuracy, topk_accuracy;
    int topk;
    int *confusion;                  /* [k, k]: row = true class, column = predicted */
    double *precision, *recall, *f1; /* [k] */
    int *support;                    /* [k] */
    double macro_precision, macro_recall, macro_f1;
    double weighted_precision, weighted_recall, weighted_f1;
    double macro_auc; /* one-vs-rest, rank-based with ties; NAN if undefined */
    double *auc, *ap; /* [k] one-vs-rest ROC AUC and average precision; NAN if undefined */
    double macro_ap;  /* mean AP over the classes where it is defined */
} Metrics;

/* probs [n, k] (rows sum to 1), labels [n] in [0, k). */
void metrics_compute(int n, int k, const float *probs, const int *labels, int topk, double loss,
                     Metrics *m);
void metrics_free(Metrics *m);
/* Area under ROC for scores of positives vs negatives (Mann-Whitney U, ties count 1/2). */
double roc_auc(int n, const float *scores, const uint8_t *positive);
/* Wilson score interval [lo, hi] of a proportion p seen on n trials, at z standard errors. */
void metrics_wilson(double p, int n, double z, double *lo, double *hi);
/* The rule for "too small to trust": the 95 % Wilson interval of the accuracy is more than
 * METRICS_TRUST_HALF_WIDTH either side (5 points: about 385 images at 50 % accuracy, 100 at
 * 95 %). Returns 1 when m fails it; *half_width (may be NULL) gets the half-width. */
#define METRICS_TRUST_HALF_WIDTH 0.05
int metrics_too_small(const Metrics *m, double *half_width);
/* One-vs-rest curves of class c, thresholds from the highest score down (ties one step):
 * roc (x false-positive rate, y true-positive rate, from (0, 0); area = ROC AUC) and pr
 * (x recall, y precision, from (0, 1) as scikit-learn's precision_recall_curve; area =
 * average precision). Areas NAN when c has no positives or no negatives. */
typedef struct {
    int n;
    double *x, *y;
    double area;
} Curve;
int metrics_class_curves(int n, int k, const float *probs, const int *labels, int c, Curve *roc,
                         Curve *pr);
void curve_free(Curve *c);
/* scikit-learn style classification_report. */
void metrics_print_report(const Metrics *m, char **class_names, FILE *out);
void metrics_json(Buf *b, const Metrics *m, char **class_names);

typedef struct {
    int epoch; /* within its phase, from 1 */
    int phase; /* numbered as run: 1 head (or from scratch), then fine-tuning, then pseudo */
    double train_loss, train_acc, val_loss, val_acc, lr, seconds;
} EpochRecord;

/* What report.html and metrics.json say about the run that produced them (compare reads
 * it back); zero / NULL fields are left out. */
typedef struct {
    const char *arch, *head, *weights;
    int input_size;
    long long parameters, trainable_parameters;
    double seconds, peak_memory_mb;
} RunInfo;

typedef struct {
    const char *title;
    char **class_names;
    int k;
    const Metrics *test, *val; /* may be NULL */
    const EpochRecord *history;
    int n_history;
    /* pseudo-labelling accuracy matrix acc[i * n_domains + j] (model after D_i on D_j,
       NAN where j > i or unknown); NULL when not run */
    const double *domain_acc;
    int n_domains;
    char **domain_names;
    const char *notes; /* free text: command, timings */
    /* per-image predictions on the main split (test, else val): they give predictions.csv,
     * the misclassified list and thumbnails, and the ROC / precision-recall curves. */
    const char *split;    /* its name in titles; NULL: "test" (or "validation") */
    const Dataset *data;  /* the split's items (labels, paths or in-memory pixels) */
    const float *probs;   /* [data->n, k] */
    const uint8_t *ok;    /* [data->n]; NULL: every item decoded */
    int restored_best; /* each phase ended on its best epoch's weights (early stopping) */
    int in_progress;   /* written during training, before the final evaluation */
    const RunInfo *run;
} Report;

/* metrics.json ({"test": {...}, "val": {...}, "history": [...], "domains": ...}) and
 * report.html (self-contained, inline SVG charts), both written atomically into dir. */
int report_write_json(const Report *r, const char *path);
int report_write_html(const Report *r, const char *path);
/* history.csv: epoch (counted over the whole run), phase, phase_epoch, lr, train_loss,
 * train_acc, val_loss, val_acc, seconds; empty fields for missing values. Atomic. */
int report_write_history_csv(const Report *r, const char *path);
/* predictions.csv: path, true, predicted, confidence, then p_<class> per class (RFC 4180
 * quoting), one row per decoded sample. Atomic. */
int report_write_predictions_csv(const Report *r, const char *path);
/* Append s to b as one RFC 4180 CSV field (quoted when it holds , " CR or LF). */
void csv_put_field(Buf *b, const char *s);
/* train --compare RUN... --out DIR (compare.c): compare.csv and compare.html. */
int compare_main(int argc, char **argv);

#endif /* RESNET_H */
