/* tests/test_layers.c - every layer's backward against central finite differences of its
 * forward, the fast convolution against the reference, batch-norm running statistics,
 * and cross-entropy against numbers computed with torch.nn.CrossEntropyLoss. */
#include "resnet.h"
#include "simd.h"
#include "test.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------ helpers */

static float *tensor(size_t n, uint32_t seed, float bound) {
    float *x = rn_alloc(n * sizeof(float));
    hash_fill(x, n, seed, bound);
    return x;
}

static float *copy_of(const float *x, size_t n) {
    float *y = rn_alloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

/* The random projection loss L = sum(y * r), whose gradient with respect to y is r. */
static double project(const float *y, const float *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)y[i] * r[i];
    return s;
}

typedef double (*LossFn)(void *ctx);

/* Largest |numeric - analytic| over the elements of v, relative to max |analytic|, where
 * numeric[i] = (L(v + eps e_i) - L(v - eps e_i)) / (2 eps), both evaluated in place. */
static double grad_error(float *v, size_t n, const float *analytic, LossFn loss, void *ctx,
                         float eps) {
    double worst = 0, scale = 1e-6;
    for (size_t i = 0; i < n; i++)
        if (fabs(analytic[i]) > scale) scale = fabs(analytic[i]);
    for (size_t i = 0; i < n; i++) {
        float saved = v[i], hi = saved + eps, lo = saved - eps;
        v[i] = hi;
        double up = loss(ctx);
        v[i] = lo;
        double down = loss(ctx);
        v[i] = saved;
        double numeric = (up - down) / ((double)hi - lo);
        double e = fabs(numeric - analytic[i]) / scale;
        if (e > worst) worst = e;
    }
    return worst;
}

#define CHECK_GRAD(v, n, analytic, loss, ctx, eps, tol)                                            \
    do {                                                                                           \
        double e_ = grad_error(v, n, analytic, loss, ctx, eps);                                    \
        CHECK_MSG(e_ <= (tol), "%s: gradient error %.3g > %g", #analytic, e_, (double)(tol));      \
    } while (0)

/* ------------------------------------------------------------------ convolution */

typedef struct {
    ConvSpec s;
    int n, h, w, fast;
    float *x, *weight, *bias, *y, *r;
} ConvCase;

static size_t conv_out_numel(const ConvCase *c) {
    return (size_t)c->n * c->s.out_c * conv_out_size(c->h, c->s.kh, c->s.stride, c->s.pad) *
           conv_out_size(c->w, c->s.kw, c->s.stride, c->s.pad);
}

static double conv_loss(void *ctx) {
    ConvCase *c = ctx;
    if (c->fast)
        conv2d_forward(&c->s, c->n, c->h, c->w, c->x, c->weight, c->bias, c->y);
    else
        conv2d_forward_ref(&c->s, c->n, c->h, c->w, c->x, c->weight, c->bias, c->y);
    return project(c->y, c->r, conv_out_numel(c));
}

static const ConvSpec grad_specs[] = {
    {3, 4, 3, 3, 1, 1}, {2, 3, 3, 3, 2, 1}, {2, 3, 1, 1, 1, 0}, {3, 2, 1, 1, 2, 0},
    {2, 2, 5, 5, 1, 2}, {3, 2, 7, 7, 2, 3}, {2, 3, 3, 3, 2, 0},
};

/* Case c (spec, fast, n, h, w set) with tensors drawn from seed .. seed + 3: the backward's
 * input, weight and bias gradients against finite differences of the forward. The tensors
 * stay in c for the caller's own checks (conv_case_free). */
static void conv_case_check_gradients(ConvCase *c, uint32_t seed) {
    const int groups = c->s.groups > 1 ? c->s.groups : 1;
    size_t nx = (size_t)c->n * c->s.in_c * c->h * c->w;
    size_t nw = (size_t)c->s.out_c * (c->s.in_c / groups) * c->s.kh * c->s.kw;
    size_t ny = conv_out_numel(c);
    c->x = tensor(nx, seed, 1.0f);
    c->weight = tensor(nw, seed + 1, 0.5f);
    c->bias = tensor(c->s.out_c, seed + 2, 0.5f);
    c->r = tensor(ny, seed + 3, 1.0f);
    c->y = rn_alloc(ny * sizeof(float));
    float *dx = rn_alloc(nx * sizeof(float));
    float *dw = rn_calloc(nw, sizeof(float)), *db = rn_calloc(c->s.out_c, sizeof(float));
    if (c->fast)
        conv2d_backward(&c->s, c->n, c->h, c->w, c->x, c->weight, c->r, dx, dw, db);
    else
        conv2d_backward_ref(&c->s, c->n, c->h, c->w, c->x, c->weight, c->r, dx, dw, db);
    CHECK_GRAD(c->x, nx, dx, conv_loss, c, 1e-2f, 1e-3);
    CHECK_GRAD(c->weight, nw, dw, conv_loss, c, 1e-2f, 1e-3);
    CHECK_GRAD(c->bias, (size_t)c->s.out_c, db, conv_loss, c, 1e-2f, 1e-3);
    rn_free(dx);
    rn_free(dw);
    rn_free(db);
}

static void conv_case_free(ConvCase *c) {
    rn_free(c->x);
    rn_free(c->weight);
    rn_free(c->bias);
    rn_free(c->r);
    rn_free(c->y);
}

static void test_conv_gradients(void) {
    for (int fast = 0; fast <= 1; fast++)
        for (size_t t = 0; t < sizeof grad_specs / sizeof grad_specs[0]; t++) {
            ConvCase c = {grad_specs[t], 2, 7, 6, fast, 0, 0, 0, 0, 0};
            conv_case_check_gradients(&c, (uint32_t)(1 + t));
            conv_case_free(&c);
            if (test_case_failed) {
                printf("  (failing case: %s, spec %zu)\n", fast ? "fast" : "ref", t);
                return;
            }
        }
}

typedef struct {
    ConvSpec s;
    int n, h, w;
} ConvShape;

static void test_conv_fast_matches_reference(void) {
    static const ConvShape shapes[] = {
        {{8, 16, 1, 1, 1, 0}, 3, 9, 9},    /* bottleneck 1x1 */
        {{8, 12, 1, 1, 2, 0}, 2, 11, 10},  /* downsample 1x1 s2, odd size */
        {{6, 8, 3, 3, 1, 1}, 3, 11, 13},   /* 3x3 s1 */
        {{6, 10, 3, 3, 2, 1}, 2, 15, 14},  /* 3x3 s2 */
        {{3, 8, 7, 7, 2, 3}, 2, 23, 23},   /* stem 7x7 s2 p3 */
        {{4, 6, 5, 5, 1, 2}, 2, 9, 9},     /* 5x5 p2 (inception head) */
        {{16, 16, 3, 3, 1, 1}, 1, 8, 8},   /* a single image */
        {{32, 32, 3, 3, 1, 1}, 5, 14, 14}, /* more images than threads */
        {{5, 7, 3, 3, 2, 1}, 3, 1, 1},     /* 1x1 input: almost everything padding */
        {{8, 8, 3, 3, 1, 1}, 3, 17, 17},   /* 289 positions: image by image, not batched */
        {{4, 8, 3, 3, 1, 1}, 2, 37, 29},   /* 1073 positions: im2col chunks of 17, 17, 3 rows */
        {{3, 4, 3, 3, 2, 1}, 2, 6, 1100},  /* rows of 550 > one chunk: a row at a time */
        {{8, 16, 1, 1, 1, 0}, 2, 30, 25},  /* 1x1 over 750 positions: two chunks */
        /* 1x1 over 1x1 maps (squeeze-and-excitation): one product x weight^T for the
         * batch, turned around by sgemm from 48 output channels */
        {{40, 20, 1, 1, 1, 0}, 3, 1, 1},
        {{24, 72, 1, 1, 1, 0}, 1, 1, 1},
        {{300, 50, 1, 1, 1, 0}, 5, 1, 1},
        /* "same" stride-1 kernels (im2col as shifted plane copies) on narrow images, where
         * the shift spans whole rows */
        {{3, 4, 3, 3, 1, 1}, 2, 5, 1},   /* 3x3 p1 over a 1-wide column */
        {{2, 3, 5, 5, 1, 2}, 2, 1, 1},   /* 5x5 p2 over one pixel */
        {{2, 3, 5, 5, 1, 2}, 2, 6, 2},   /* 5x5 p2, 2 wide: shifts past the row */
        {{2, 3, 5, 5, 1, 2}, 2, 40, 13}, /* 5x5 p2 over 520 positions: two chunks */
        /* stride 2 over rows wide enough for the vector gather of even columns, with
         * scalar heads and tails */
        {{4, 6, 1, 1, 2, 0}, 2, 9, 75},  /* downsample 1x1 s2 */
        {{3, 4, 7, 7, 2, 3}, 1, 10, 70}, /* stem 7x7 s2 p3 */
        /* depthwise (groups = channels), the direct kernel: full vectors and partial tails,
         * stride 2 by the even-column gather, other strides scalar, a 1x1 input */
        {{5, 5, 3, 3, 1, 1, 5}, 2, 37, 35},
        {{5, 5, 5, 5, 1, 2, 5}, 2, 19, 40},
        {{5, 5, 3, 3, 2, 1, 5}, 2, 38, 71},
        {{5, 5, 5, 5, 2, 2, 5}, 2, 35, 35},
        {{4, 4, 3, 3, 3, 1, 4}, 2, 13, 13},
        {{3, 3, 3, 3, 1, 1, 3}, 2, 1, 1},
        {{3, 3, 5, 5, 2, 2, 3}, 3, 2, 3},
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const ConvSpec *s = &shapes[t].s;
        int n = shapes[t].n, h = shapes[t].h, w = shapes[t].w;
        int oh = conv_out_size(h, s->kh, s->stride, s->pad);
        int ow = conv_out_size(w, s->kw, s->stride, s->pad);
        size_t nx = (size_t)n * s->in_c * h * w, ny = (size_t)n * s->out_c * oh * ow;
        size_t nw = (size_t)s->out_c * (s->in_c / (s->groups > 1 ? s->groups : 1)) * s->kh * s->kw;
        float *x = tensor(nx, 10 + t, 1.0f), *wt = tensor(nw, 20 + t, 0.3f);
        float *bias = tensor(s->out_c, 30 + t, 0.5f), *dy = tensor(ny, 40 + t, 1.0f);
        float *y_ref = rn_alloc(ny * 4), *y = rn_alloc(ny * 4);
        conv2d_forward_ref(s, n, h, w, x, wt, bias, y_ref);
        conv2d_forward(s, n, h, w, x, wt, bias, y);
        double e_y = max_rel_diff(y, y_ref, ny, 1e-6);

        /* parameter gradients start non-zero to check that both accumulate */
        float *dx_ref = rn_alloc(nx * 4), *dw_ref = tensor(nw, 50 + t, 1.0f);
        float *db_ref = tensor(s->out_c, 60 + t, 1.0f);
        float *dx = rn_alloc(nx * 4), *dw = copy_of(dw_ref, nw), *db = copy_of(db_ref, s->out_c);
        conv2d_backward_ref(s, n, h, w, x, wt, dy, dx_ref, dw_ref, db_ref);
        conv2d_backward(s, n, h, w, x, wt, dy, dx, dw, db);
        double e_dx = max_rel_diff(dx, dx_ref, nx, 1e-6);
        double e_dw = max_rel_diff(dw, dw_ref, nw, 1e-6);
        double e_db = max_rel_diff(db, db_ref, s->out_c, 1e-6);
        CHECK_MSG(e_y <= 1e-5 && e_dx <= 1e-5 && e_dw <= 1e-5 && e_db <= 1e-5,
                  "shape %zu: rel diff y %.2g dx %.2g dweight %.2g dbias %.2g", t, e_y, e_dx, e_dw,
                  e_db);

        /* each gradient alone (the others NULL) gives the same numbers */
        float *dx1 = rn_alloc(nx * 4), *dw1 = tensor(nw, 50 + t, 1.0f);
        float *db1 = tensor(s->out_c, 60 + t, 1.0f);
        conv2d_backward(s, n, h, w, x, wt, dy, dx1, NULL, NULL);
        conv2d_backward(s, n, h, w, x, wt, dy, NULL, dw1, NULL);
        conv2d_backward(s, n, h, w, x, wt, dy, NULL, NULL, db1);
        CHECK(memcmp(dx1, dx, nx * 4) == 0);
        CHECK(max_rel_diff(dw1, dw, nw, 1e-6) <= 1e-6);
        CHECK(memcmp(db1, db, s->out_c * 4) == 0);

        /* conv2d_backward_add adds the same input gradient to what dx holds */
        float *acc = tensor(nx, 90 + t, 1.0f), *want = copy_of(acc, nx);
        for (size_t i = 0; i < nx; i++) want[i] += dx[i];
        conv2d_backward_add(s, n, h, w, x, wt, dy, acc, NULL, NULL);
        CHECK_MSG(max_rel_diff(acc, want, nx, 1e-6) <= 1e-5, "shape %zu: conv2d_backward_add", t);
        rn_free(acc);
        rn_free(want);

        /* the same call twice gives the same bits */
        float *y2 = rn_alloc(ny * 4);
        conv2d_forward(s, n, h, w, x, wt, bias, y2);
        CHECK(memcmp(y2, y, ny * 4) == 0);
        rn_free(x);
        rn_free(wt);
        rn_free(bias);
        rn_free(dy);
        rn_free(y_ref);
        rn_free(y);
        rn_free(dx_ref);
        rn_free(dw_ref);
        rn_free(db_ref);
        rn_free(dx);
        rn_free(dw);
        rn_free(db);
        rn_free(dx1);
        rn_free(dw1);
        rn_free(db1);
        rn_free(y2);
    }
}

/* conv2d_forward_fused = conv2d_forward, then y * scale + shift + residual and ReLU (or SiLU),
 * bit for bit, on the batched (small map) and the image-by-image paths. */
static void test_conv_fused_epilogue(void) {
    static const ConvShape shapes[] = {
        {{6, 8, 3, 3, 1, 1}, 3, 7, 7},   /* small map: the batch in one product */
        {{6, 8, 1, 1, 1, 0}, 2, 20, 20}, /* 400 positions: image by image */
        {{6, 8, 3, 3, 2, 1}, 1, 9, 9},   /* a single image */
        {{4, 6, 3, 3, 1, 1}, 2, 37, 29}, /* several im2col chunks, the epilogue per chunk */
        {{4, 6, 1, 1, 1, 0}, 2, 30, 25}, /* 1x1 in two chunks */
        {{6, 6, 3, 3, 1, 1, 6}, 2, 20, 21}, /* depthwise: the epilogue per plane */
        {{6, 6, 5, 5, 2, 2, 6}, 2, 23, 40},
        {{20, 20, 3, 3, 2, 1, 20}, 2, 14, 14}, /* a full block of channels and a partial one */
        {{40, 20, 1, 1, 1, 0}, 3, 1, 1}, /* 1x1 maps: the epilogue across channels */
        {{24, 72, 1, 1, 1, 0}, 2, 1, 1},
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const ConvSpec *s = &shapes[t].s;
        int n = shapes[t].n, h = shapes[t].h, w = shapes[t].w;
        int oh = conv_out_size(h, s->kh, s->stride, s->pad);
        int ow = conv_out_size(w, s->kw, s->stride, s->pad), N = oh * ow;
        size_t nx = (size_t)n * s->in_c * h * w, ny = (size_t)n * s->out_c * N;
        float *x = tensor(nx, 70 + t, 1.0f);
        float *wt = tensor((size_t)s->out_c * s->in_c * s->kh * s->kw, 71, 0.3f);
        float *scale = tensor(s->out_c, 72, 1.0f), *shift = tensor(s->out_c, 73, 0.5f);
        float *res = tensor(ny, 74, 1.0f), *y = rn_alloc(ny * 4), *ref = rn_alloc(ny * 4);
        conv2d_forward(s, n, h, w, x, wt, NULL, ref);
        for (size_t i = 0; i < ny; i++) {
            int oc = (int)(i / N % s->out_c);
            float v = ref[i] * scale[oc] + shift[oc];
            v += res[i];
            ref[i] = v > 0 ? v : 0.0f;
        }
        ConvEpilogue e = {scale, shift, CONV_ACT_RELU};
        conv2d_forward_fused(s, n, h, w, x, wt, &e, res, y);
        CHECK_MSG(memcmp(y, ref, ny * 4) == 0, "shape %zu: rel diff %.2g", t,
                  max_rel_diff(y, ref, ny, 1e-6));
        /* SiLU, no residual (depthwise: in the blocked kernel), = silu_forward's bits */
        conv2d_forward(s, n, h, w, x, wt, NULL, ref);
        for (size_t i = 0; i < ny; i++)
            ref[i] = ref[i] * scale[i / N % s->out_c] + shift[i / N % s->out_c];
        silu_forward(ny, ref, ref);
        ConvEpilogue es = {scale, shift, CONV_ACT_SILU};
        conv2d_forward_fused(s, n, h, w, x, wt, &es, NULL, y);
        CHECK_MSG(memcmp(y, ref, ny * 4) == 0, "shape %zu, SiLU: rel diff %.2g", t,
                  max_rel_diff(y, ref, ny, 1e-6));
        conv2d_forward_fused(s, n, h, w, x, wt, &e, res, y);
        int zeros = 0;
        for (size_t i = 0; i < ny; i++) zeros += y[i] == 0;
        CHECK(zeros > 0 && zeros < (int)ny); /* the ReLU did something, not everything */
        /* the batch in one product (small maps) or image by image: the same bits */
        for (int b = 0; b < n; b++) {
            size_t xs = (size_t)s->in_c * h * w, ys = (size_t)s->out_c * N;
            conv2d_forward_fused(s, 1, h, w, x + b * xs, wt, &e, res + b * ys, ref + b * ys);
        }
        CHECK(memcmp(y, ref, ny * 4) == 0);
        rn_free(x);
        rn_free(wt);
        rn_free(scale);
        rn_free(shift);
        rn_free(res);
        rn_free(y);
        rn_free(ref);
    }
}

/* conv2d_forward_winograd = the reference conv and the epilogue, within Winograd's rounding,
 * on maps that leave partial tiles, rows of tiles shorter and longer than a block of the
 * transforms, single pixels and wide rows; the same bits image by image and for any thread
 * count (a tile's result does not depend on its chunk). */
static void test_conv_winograd(void) {
    static const int shapes[][5] = {
        /* in_c, out_c, n, h, w */
        {3, 4, 1, 1, 1},    {5, 7, 2, 5, 9},     {8, 8, 3, 7, 7},
        {6, 10, 2, 14, 14}, {4, 6, 1, 13, 70},   {3, 5, 2, 3, 300},
        {2, 3, 1, 66, 2},   {32, 24, 2, 30, 30}, {64, 64, 1, 8, 8},
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        ConvSpec s = {shapes[t][0], shapes[t][1], 3, 3, 1, 1};
        int n = shapes[t][2], h = shapes[t][3], w = shapes[t][4], N = h * w;
        CHECK(conv_winograd_eligible(&s));
        size_t nx = (size_t)n * s.in_c * N, ny = (size_t)n * s.out_c * N;
        size_t nw = (size_t)s.out_c * s.in_c * 9;
        float *x = tensor(nx, 110 + t, 1.0f), *wt = tensor(nw, 111, 0.3f);
        float *scale = tensor(s.out_c, 112, 1.0f), *shift = tensor(s.out_c, 113, 0.5f);
        float *res = tensor(ny, 114, 1.0f), *u = rn_alloc(winograd_weight_floats(&s) * 4);
        float *conv = rn_alloc(ny * 4), *ref = rn_alloc(ny * 4), *y = rn_alloc(ny * 4);
        winograd_weight_transform(&s, wt, u);
        /* the plain convolution, then with the whole epilogue */
        conv2d_forward_ref(&s, n, h, w, x, wt, NULL, conv);
        conv2d_forward_winograd(&s, n, h, w, x, u, NULL, NULL, y);
        double scale_y = 0;
        for (size_t i = 0; i < ny; i++) scale_y = fmax(scale_y, fabs(conv[i]));
        double e = 0;
        for (size_t i = 0; i < ny; i++) e = fmax(e, fabs(y[i] - conv[i]) / scale_y);
        CHECK_MSG(e <= 1e-5, "shape %zu: error %.2g of the output's magnitude", t, e);
        for (size_t i = 0; i < ny; i++) {
            int oc = (int)(i / N % s.out_c);
            float v = conv[i] * scale[oc] + shift[oc] + res[i];
            ref[i] = v > 0 ? v : 0.0f;
        }
        ConvEpilogue ep = {scale, shift, CONV_ACT_RELU};
        conv2d_forward_winograd(&s, n, h, w, x, u, &ep, res, y);
        e = 0;
        int zeros = 0;
        for (size_t i = 0; i < ny; i++) {
            e = fmax(e, fabs(y[i] - ref[i]) / (scale_y + 1));
            zeros += y[i] == 0;
        }
        CHECK_MSG(e <= 1e-5, "shape %zu: with the epilogue, error %.2g", t, e);
        CHECK(zeros > 0 && zeros < (int)ny);
        /* image by image, and on one or two threads: the same bits */
        size_t xs = (size_t)s.in_c * N, ys = (size_t)s.out_c * N;
        for (int b = 0; b < n; b++)
            conv2d_forward_winograd(&s, 1, h, w, x + b * xs, u, &ep, res + b * ys, ref + b * ys);
        CHECK_MSG(memcmp(y, ref, ny * 4) == 0, "shape %zu: image by image differs", t);
#ifdef _OPENMP
        int saved = omp_get_max_threads();
        for (int threads = 1; threads <= 3; threads += 2) {
            omp_set_num_threads(threads);
            conv2d_forward_winograd(&s, n, h, w, x, u, &ep, res, ref);
            CHECK_MSG(memcmp(y, ref, ny * 4) == 0, "shape %zu: %d threads differ", t, threads);
        }
        omp_set_num_threads(saved);
#endif
        rn_free(x);
        rn_free(wt);
        rn_free(scale);
        rn_free(shift);
        rn_free(res);
        rn_free(u);
        rn_free(conv);
        rn_free(ref);
        rn_free(y);
    }
}

/* A hand-computed case: 1 input channel, 2x2 kernel of ones, so y sums 2x2 windows. */
static void test_conv_by_hand(void) {
    ConvSpec s = {1, 1, 2, 2, 1, 0};
    float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, wt[4] = {1, 1, 1, 1}, bias[1] = {0.5f};
    float want[4] = {12.5f, 16.5f, 24.5f, 28.5f}, y[4], y_ref[4];
    conv2d_forward(&s, 1, 3, 3, x, wt, bias, y);
    conv2d_forward_ref(&s, 1, 3, 3, x, wt, bias, y_ref);
    for (int i = 0; i < 4; i++) {
        CHECK_CLOSE(y[i], want[i], 1e-6);
        CHECK_CLOSE(y_ref[i], want[i], 1e-6);
    }
    /* padding 1, stride 2 on the same input: corners see only the in-image pixels */
    ConvSpec p = {1, 1, 3, 3, 2, 1};
    float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, want_p[4] = {12, 16, 24, 28};
    conv2d_forward(&p, 1, 3, 3, x, ones, NULL, y);
    for (int i = 0; i < 4; i++) CHECK_CLOSE(y[i], want_p[i], 1e-6);
}

/* Parameter gradients accumulate: two backward calls give twice one call, dx is overwritten. */
static void test_gradients_accumulate(void) {
    ConvSpec s = {4, 6, 3, 3, 2, 1};
    int n = 3, h = 9, w = 8, oh = 5, ow = 4;
    size_t nx = (size_t)n * 4 * h * w, nw = 6 * 4 * 9, ny = (size_t)n * 6 * oh * ow;
    float *x = tensor(nx, 1, 1), *wt = tensor(nw, 2, 1), *dy = tensor(ny, 3, 1);
    for (int fast = 0; fast <= 1; fast++) {
        float *dx1 = rn_alloc(nx * 4), *dx2 = rn_alloc(nx * 4);
        float *dw1 = rn_calloc(nw, 4), *dw2 = rn_calloc(nw, 4);
        float *db1 = rn_calloc(6, 4), *db2 = rn_calloc(6, 4);
        void (*bw)(const ConvSpec *, int, int, int, const float *, const float *, const float *,
                   float *, float *, float *) = fast ? conv2d_backward : conv2d_backward_ref;
        bw(&s, n, h, w, x, wt, dy, dx1, dw1, db1);
        bw(&s, n, h, w, x, wt, dy, dx2, dw2, db2);
        bw(&s, n, h, w, x, wt, dy, dx2, dw2, db2);
        for (size_t i = 0; i < nw; i++) dw1[i] *= 2;
        for (int i = 0; i < 6; i++) db1[i] *= 2;
        CHECK(max_rel_diff(dw2, dw1, nw, 1e-6) <= 1e-6);
        CHECK(max_rel_diff(db2, db1, 6, 1e-6) <= 1e-6);
        CHECK(memcmp(dx1, dx2, nx * 4) == 0);
        rn_free(dx1);
        rn_free(dx2);
        rn_free(dw1);
        rn_free(dw2);
        rn_free(db1);
        rn_free(db2);
    }
    /* batch norm (train and eval) and linear */
    int c = 3, hw = 4;
    size_t nb = (size_t)2 * c * hw;
    float *bx = tensor(nb, 4, 1), *g = tensor(c, 5, 1), *bdy = tensor(nb, 6, 1);
    float rm[3] = {0.1f, 0.2f, 0.3f}, rv[3] = {1.0f, 2.0f, 0.5f}, mean[3], invstd[3];
    float *by = rn_alloc(nb * 4), *bdx = rn_alloc(nb * 4);
    batchnorm_forward_train(2, c, hw, bx, g, g, rm, rv, 0.1f, 1e-5f, by, mean, invstd);
    for (int mode = 0; mode < 2; mode++) {
        float dg1[3] = {0}, db1[3] = {0}, dg2[3] = {0}, db2[3] = {0};
        for (int k = 0; k < 3; k++) {
            float *dg = k == 0 ? dg1 : dg2, *db = k == 0 ? db1 : db2;
            if (mode == 0)
                batchnorm_backward_train(2, c, hw, bx, g, mean, invstd, bdy, bdx, dg, db);
            else
                batchnorm_backward_eval(2, c, hw, bx, g, rm, rv, 1e-5f, bdy, bdx, dg, db);
        }
        for (int i = 0; i < c; i++) {
            CHECK_CLOSE(dg2[i], 2 * dg1[i], 1e-6);
            CHECK_CLOSE(db2[i], 2 * db1[i], 1e-6);
        }
    }
    float *lx = tensor(12, 7, 1), *lw = tensor(20, 8, 1), *ldy = tensor(15, 9, 1), ldx[12];
    float dw1[20] = {0}, dw2[20] = {0}, db1[5] = {0}, db2[5] = {0};
    linear_backward(3, 4, 5, lx, lw, ldy, ldx, dw1, db1);
    linear_backward(3, 4, 5, lx, lw, ldy, ldx, dw2, db2);
    linear_backward(3, 4, 5, lx, lw, ldy, ldx, dw2, db2);
    for (int i = 0; i < 20; i++) CHECK_CLOSE(dw2[i], 2 * dw1[i], 1e-6);
    for (int i = 0; i < 5; i++) CHECK_CLOSE(db2[i], 2 * db1[i], 1e-6);
    rn_free(x);
    rn_free(wt);
    rn_free(dy);
    rn_free(bx);
    rn_free(g);
    rn_free(bdy);
    rn_free(by);
    rn_free(bdx);
    rn_free(lx);
    rn_free(lw);
    rn_free(ldy);
}

/* ------------------------------------------------------------------ batch norm */

typedef struct {
    int n, c, hw, train;
    float *x, *gamma, *beta, *rm, *rv, *y, *r, *mean, *invstd;
} BnCase;

static double bn_loss(void *ctx) {
    BnCase *b = ctx;
    size_t total = (size_t)b->n * b->c * b->hw;
    if (b->train) {
        /* running statistics are updated by every call: give it throwaway copies */
        float *rm = copy_of(b->rm, b->c), *rv = copy_of(b->rv, b->c);
        batchnorm_forward_train(b->n, b->c, b->hw, b->x, b->gamma, b->beta, rm, rv, 0.1f, 1e-5f,
                                b->y, b->mean, b->invstd);
        rn_free(rm);
        rn_free(rv);
    } else {
        batchnorm_forward_eval(b->n, b->c, b->hw, b->x, b->gamma, b->beta, b->rm, b->rv, 1e-5f,
                               b->y);
    }
    return project(b->y, b->r, total);
}

static void test_batchnorm_gradients(void) {
    for (int train = 1; train >= 0; train--) {
        BnCase b = {2, 3, 5, train, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        size_t total = (size_t)b.n * b.c * b.hw;
        b.x = tensor(total, 11, 2.0f);
        b.gamma = tensor(b.c, 12, 1.0f);
        b.beta = tensor(b.c, 13, 1.0f);
        float rm[3] = {0.2f, -0.1f, 0.05f}, rv[3] = {0.8f, 1.5f, 0.3f};
        b.rm = rm;
        b.rv = rv;
        b.y = rn_alloc(total * 4);
        b.r = tensor(total, 14, 1.0f);
        b.mean = rn_alloc(b.c * 4);
        b.invstd = rn_alloc(b.c * 4);
        bn_loss(&b);
        float *dx = rn_alloc(total * 4), dg[3] = {0}, dbeta[3] = {0};
        if (train)
            batchnorm_backward_train(b.n, b.c, b.hw, b.x, b.gamma, b.mean, b.invstd, b.r, dx, dg,
                                     dbeta);
        else
            batchnorm_backward_eval(b.n, b.c, b.hw, b.x, b.gamma, b.rm, b.rv, 1e-5f, b.r, dx, dg,
                                    dbeta);
        CHECK_GRAD(b.x, total, dx, bn_loss, &b, 1e-2f, 2e-3);
        CHECK_GRAD(b.gamma, (size_t)b.c, dg, bn_loss, &b, 1e-2f, 1e-3);
        CHECK_GRAD(b.beta, (size_t)b.c, dbeta, bn_loss, &b, 1e-2f, 1e-3);
        rn_free(b.x);
        rn_free(b.gamma);
        rn_free(b.beta);
        rn_free(b.y);
        rn_free(b.r);
        rn_free(b.mean);
        rn_free(b.invstd);
        rn_free(dx);
    }
}

static void test_batchnorm_running_stats(void) {
    /* x[n=2, c=2, hw=2]: channel 0 holds {1, 2, 3, 6}, channel 1 holds {-1, 1, 0, 2} */
    float x[8] = {1, 2, -1, 1, 3, 6, 0, 2}, gamma[2] = {2, 0.5f}, beta[2] = {0.25f, -1};
    float rm[2] = {0.5f, 0}, rv[2] = {2, 1}, y[8], mean[2], invstd[2];
    batchnorm_forward_train(2, 2, 2, x, gamma, beta, rm, rv, 0.1f, 1e-5f, y, mean, invstd);
    /* channel 0: mean 3, biased var 14/4, unbiased 14/3; channel 1: mean 0.5, 5/4, 5/3 */
    CHECK_CLOSE(mean[0], 3.0, 1e-7);
    CHECK_CLOSE(mean[1], 0.5, 1e-7);
    CHECK_CLOSE(invstd[0], 1 / sqrt(3.5 + 1e-5), 1e-6);
    CHECK_CLOSE(invstd[1], 1 / sqrt(1.25 + 1e-5), 1e-6);
    CHECK_CLOSE(rm[0], 0.9 * 0.5 + 0.1 * 3, 1e-7);
    CHECK_CLOSE(rm[1], 0.9 * 0 + 0.1 * 0.5, 1e-7);
    CHECK_CLOSE(rv[0], 0.9 * 2 + 0.1 * 14.0 / 3, 1e-6);
    CHECK_CLOSE(rv[1], 0.9 * 1 + 0.1 * 5.0 / 3, 1e-6);
    CHECK_CLOSE(y[5], (6 - 3) / sqrt(3.5 + 1e-5) * 2 + 0.25, 1e-6);    /* n=1, c=0, i=1 */
    CHECK_CLOSE(y[2], (-1 - 0.5) / sqrt(1.25 + 1e-5) * 0.5 - 1, 1e-6); /* n=0, c=1, i=0 */
    /* eval uses the running statistics */
    batchnorm_forward_eval(2, 2, 2, x, gamma, beta, rm, rv, 1e-5f, y);
    CHECK_CLOSE(y[5], (6 - rm[0]) / sqrt(rv[0] + 1e-5) * 2 + 0.25, 1e-6);
    CHECK_CLOSE(y[2], (-1 - rm[1]) / sqrt(rv[1] + 1e-5) * 0.5 - 1, 1e-6);
}

/* ------------------------------------------------------------------ relu, pools */

typedef struct {
    size_t n;
    float *x, *y, *r;
} EltCase;

static double relu_loss(void *ctx) {
    EltCase *e = ctx;
    relu_forward(e->n, e->x, e->y);
    return project(e->y, e->r, e->n);
}

/* n values, all distinct and at least `gap` apart (a shuffled ramp), centred on zero. */
static float *distinct_values(size_t n, uint64_t seed, float gap) {
    int *perm = rn_alloc(n * sizeof(int));
    for (size_t i = 0; i < n; i++) perm[i] = (int)i;
    Rng rng;
    rng_seed(&rng, seed);
    rng_shuffle(&rng, perm, (int)n);
    float *x = rn_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = gap * ((float)perm[i] - (float)n / 2 + 0.5f);
    rn_free(perm);
    return x;
}

static void test_relu(void) {
    EltCase e = {40, distinct_values(40, 1, 0.05f), rn_alloc(160), tensor(40, 2, 1)};
    float dx[40];
    relu_forward(e.n, e.x, e.y);
    relu_backward(e.n, e.y, e.r, dx);
    CHECK_GRAD(e.x, e.n, dx, relu_loss, &e, 1e-2f, 1e-4);
    relu_forward(e.n, e.x, e.y);
    for (size_t i = 0; i < e.n; i++) CHECK(e.y[i] == (e.x[i] > 0 ? e.x[i] : 0));
    rn_free(e.x);
    rn_free(e.y);
    rn_free(e.r);
}

typedef struct {
    int n, c, h, w, k, stride, pad;
    float *x, *y, *r;
    int32_t *arg;
} PoolCase;

static double maxpool_loss(void *ctx) {
    PoolCase *p = ctx;
    maxpool2d_forward(p->n, p->c, p->h, p->w, p->k, p->stride, p->pad, p->x, p->y, p->arg);
    size_t ny = (size_t)p->n * p->c * conv_out_size(p->h, p->k, p->stride, p->pad) *
                conv_out_size(p->w, p->k, p->stride, p->pad);
    return project(p->y, p->r, ny);
}

static void test_maxpool(void) {
    PoolCase p = {2, 2, 7, 6, 3, 2, 1, 0, 0, 0, 0}; /* the ResNet stem pool, odd sizes */
    size_t nx = 2 * 2 * 7 * 6, ny = 2 * 2 * 4 * 3;
    p.x = distinct_values(nx, 3, 0.05f);
    p.y = rn_alloc(ny * 4);
    p.r = tensor(ny, 4, 1);
    p.arg = rn_alloc(ny * sizeof(int32_t));
    float *dx = rn_alloc(nx * 4);
    maxpool_loss(&p);
    maxpool2d_backward(p.n, p.c, p.h, p.w, p.k, p.stride, p.pad, p.arg, p.r, dx);
    CHECK_GRAD(p.x, nx, dx, maxpool_loss, &p, 1e-2f, 1e-4);
    rn_free(p.x);
    rn_free(p.y);
    rn_free(p.r);
    rn_free(p.arg);
    rn_free(dx);

    /* ties: the first maximum in scan order wins, as in PyTorch */
    float flat[16], y4[4];
    int32_t arg4[4];
    for (int i = 0; i < 16; i++) flat[i] = 1;
    maxpool2d_forward(1, 1, 4, 4, 2, 2, 0, flat, y4, arg4);
    CHECK(arg4[0] == 0 && arg4[1] == 2 && arg4[2] == 8 && arg4[3] == 10);
    /* padding never wins: an all-negative input keeps its negative maxima, and a window
     * of equal values picks its first in-image pixel */
    for (int i = 0; i < 16; i++) flat[i] = -5;
    maxpool2d_forward(1, 1, 4, 4, 3, 2, 1, flat, y4, arg4);
    CHECK(y4[0] == -5 && y4[3] == -5);
    CHECK(arg4[0] == 0 && arg4[1] == 1 && arg4[2] == 4 && arg4[3] == 5);
    flat[5] = -4; /* in all four overlapping windows */
    maxpool2d_forward(1, 1, 4, 4, 3, 2, 1, flat, y4, arg4);
    CHECK(y4[0] == -4 && y4[1] == -4 && y4[2] == -4 && y4[3] == -4);
    float g4[4] = {1, 2, 3, 4}, gx[16];
    maxpool2d_backward(1, 1, 4, 4, 3, 2, 1, arg4, g4, gx);
    CHECK(gx[5] == 10 && gx[0] == 0 && gx[15] == 0);
}

typedef struct {
    int n, c, hw;
    float *x, *y, *r;
} GapCase;

static double gap_loss(void *ctx) {
    GapCase *g = ctx;
    avgpool_global_forward(g->n, g->c, g->hw, g->x, g->y);
    return project(g->y, g->r, (size_t)g->n * g->c);
}

static void test_avgpool_global(void) {
    GapCase g = {2, 3, 5, tensor(30, 1, 1), rn_alloc(24), tensor(6, 2, 1)};
    float dx[30];
    gap_loss(&g);
    CHECK_CLOSE(g.y[4], (g.x[20] + g.x[21] + g.x[22] + g.x[23] + g.x[24]) / 5, 1e-6);
    avgpool_global_backward(g.n, g.c, g.hw, g.r, dx);
    CHECK_GRAD(g.x, 30, dx, gap_loss, &g, 1e-2f, 1e-4);
    rn_free(g.x);
    rn_free(g.y);
    rn_free(g.r);
}

/* ------------------------------------------------------------------ adaptive average pool */

typedef struct {
    int n, c, h, w, oh, ow;
    float *x, *y, *r;
} AdaptiveCase;

static double adaptive_loss(void *ctx) {
    AdaptiveCase *a = ctx;
    adaptive_avgpool2d_forward(a->n, a->c, a->h, a->w, a->oh, a->ow, a->x, a->y);
    return project(a->y, a->r, (size_t)a->n * a->c * a->oh * a->ow);
}

/* Sizes that tile (8 -> 4), overlap (5 -> 3: bins [0,2) [1,4) [3,5)), copy (7 -> 7) and
 * repeat (2 -> 7, 1 -> 7: VGG's 7x7 on a small input), each against the bins written out
 * by hand and against finite differences. */
static void test_adaptive_avgpool(void) {
    const int sizes[][4] = {{8, 8, 4, 4}, {5, 6, 3, 4}, {7, 7, 7, 7}, {2, 3, 7, 7}, {1, 1, 7, 7}};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        AdaptiveCase a = {2, 3, sizes[t][0], sizes[t][1], sizes[t][2], sizes[t][3]};
        size_t nx = (size_t)a.n * a.c * a.h * a.w, ny = (size_t)a.n * a.c * a.oh * a.ow;
        a.x = tensor(nx, 11 + (uint32_t)t, 1);
        a.y = rn_alloc(ny * sizeof(float));
        a.r = tensor(ny, 21 + (uint32_t)t, 1);
        adaptive_loss(&a);
        int bad = 0;
        for (int p = 0; p < a.n * a.c; p++)
            for (int oy = 0; oy < a.oh; oy++)
                for (int ox = 0; ox < a.ow; ox++) {
                    int y0 = oy * a.h / a.oh, y1 = (int)ceil((oy + 1) * (double)a.h / a.oh);
                    int x0 = ox * a.w / a.ow, x1 = (int)ceil((ox + 1) * (double)a.w / a.ow);
                    double sum = 0;
                    for (int iy = y0; iy < y1; iy++)
                        for (int ix = x0; ix < x1; ix++) sum += a.x[(p * a.h + iy) * a.w + ix];
                    double want = sum / ((y1 - y0) * (x1 - x0));
                    bad += fabs(a.y[(p * a.oh + oy) * a.ow + ox] - want) > 1e-6;
                }
        CHECK_MSG(bad == 0, "%dx%d -> %dx%d: %d cells differ from their bins", a.h, a.w, a.oh, a.ow,
                  bad);
        if (a.h == a.oh && a.w == a.ow) CHECK(memcmp(a.x, a.y, nx * sizeof(float)) == 0);
        float *dx = rn_alloc(nx * sizeof(float));
        adaptive_avgpool2d_backward(a.n, a.c, a.h, a.w, a.oh, a.ow, a.r, dx);
        CHECK_GRAD(a.x, nx, dx, adaptive_loss, &a, 1e-2f, 1e-4);
        rn_free(dx);
        rn_free(a.x);
        rn_free(a.y);
        rn_free(a.r);
    }
    /* 5 -> 3 by hand: the middle bin [1, 4) overlaps both neighbours */
    float x[5] = {1, 2, 3, 4, 5}, y[3], dy[3] = {1, 1, 1}, dx[5];
    adaptive_avgpool2d_forward(1, 1, 1, 5, 1, 3, x, y);
    CHECK(y[0] == 1.5f && y[1] == 3.0f && y[2] == 4.5f);
    adaptive_avgpool2d_backward(1, 1, 1, 5, 1, 3, dy, dx);
    CHECK_CLOSE(dx[1], 0.5 + 1.0 / 3, 1e-6);
    CHECK_CLOSE(dx[2], 1.0 / 3, 1e-6);
}

/* ------------------------------------------------------------------ linear, dropout */

typedef struct {
    int n, in, out;
    float *x, *weight, *bias, *y, *r;
} LinearCase;

static double linear_loss(void *ctx) {
    LinearCase *l = ctx;
    linear_forward(l->n, l->in, l->out, l->x, l->weight, l->bias, l->y);
    return project(l->y, l->r, (size_t)l->n * l->out);
}

static void test_linear(void) {
    LinearCase l = {3,
                    5,
                    4,
                    tensor(15, 1, 1),
                    tensor(20, 2, 1),
                    tensor(4, 3, 1),
                    rn_alloc(48),
                    tensor(12, 4, 1)};
    linear_loss(&l);
    /* y[1, 2] by hand */
    double want = l.bias[2];
    for (int i = 0; i < 5; i++) want += (double)l.x[5 + i] * l.weight[2 * 5 + i];
    CHECK_CLOSE(l.y[1 * 4 + 2], want, 1e-6);
    float dx[15], dw[20] = {0}, db[4] = {0};
    linear_backward(l.n, l.in, l.out, l.x, l.weight, l.r, dx, dw, db);
    CHECK_GRAD(l.x, 15, dx, linear_loss, &l, 1e-2f, 1e-4);
    CHECK_GRAD(l.weight, 20, dw, linear_loss, &l, 1e-2f, 1e-4);
    CHECK_GRAD(l.bias, 4, db, linear_loss, &l, 1e-2f, 1e-4);
    rn_free(l.x);
    rn_free(l.weight);
    rn_free(l.bias);
    rn_free(l.y);
    rn_free(l.r);
}

typedef struct {
    size_t n;
    float p;
    float *x, *y, *mask, *r;
} DropCase;

static double dropout_loss(void *ctx) {
    DropCase *d = ctx;
    Rng rng;
    rng_seed(&rng, 42); /* the same mask on every call */
    dropout_forward(d->n, d->p, &rng, d->x, d->y, d->mask);
    return project(d->y, d->r, d->n);
}

static void test_dropout(void) {
    DropCase d = {1000,           0.3f,           tensor(1000, 1, 1),
                  rn_alloc(4000), rn_alloc(4000), tensor(1000, 2, 1)};
    dropout_loss(&d);
    int dropped = 0, bad = 0;
    for (size_t i = 0; i < d.n; i++) {
        if (d.mask[i] == 0)
            dropped++;
        else if (d.mask[i] != (float)(1.0f / 0.7f))
            bad++;                                        /* casts: round i686's x87 */
        if (d.y[i] != (float)(d.x[i] * d.mask[i])) bad++; /* wider values to float */
    }
    CHECK(bad == 0);
    CHECK_MSG(dropped > 250 && dropped < 350, "dropped %d of 1000 at p = 0.3", dropped);
    float *dx = rn_alloc(4000);
    dropout_backward(d.n, d.mask, d.r, dx);
    CHECK_GRAD(d.x, 100, dx, dropout_loss, &d, 1e-2f, 1e-4); /* the first 100 suffice */
    /* p = 0 keeps everything */
    Rng rng;
    rng_seed(&rng, 1);
    dropout_forward(d.n, 0.0f, &rng, d.x, d.y, d.mask);
    CHECK(memcmp(d.y, d.x, d.n * 4) == 0);
    rn_free(d.x);
    rn_free(d.y);
    rn_free(d.mask);
    rn_free(d.r);
    rn_free(dx);
}

/* ------------------------------------------------------------------ option-A shortcut */

typedef struct {
    int n, in_c, h, w, out_c, stride;
    float *x, *y, *r;
} ShortcutCase;

static double shortcut_loss(void *ctx) {
    ShortcutCase *s = ctx;
    shortcut_a_forward(s->n, s->in_c, s->h, s->w, s->out_c, s->stride, s->x, s->y);
    int oh = (s->h + s->stride - 1) / s->stride, ow = (s->w + s->stride - 1) / s->stride;
    return project(s->y, s->r, (size_t)s->n * s->out_c * oh * ow);
}

static void test_shortcut_a(void) {
    /* [2, 4, 5, 5] -> [2, 8, 3, 3]: channels 2..5 hold x[:, :, ::2, ::2] */
    ShortcutCase s = {2, 4, 5, 5, 8, 2, tensor(200, 1, 1), rn_alloc(200 * 4), tensor(144, 2, 1)};
    shortcut_loss(&s);
    CHECK(s.y[(0 * 8 + 2) * 9 + 0 * 3 + 1] == s.x[(0 * 4 + 0) * 25 + 0 * 5 + 2]);
    CHECK(s.y[(1 * 8 + 5) * 9 + 2 * 3 + 2] == s.x[(1 * 4 + 3) * 25 + 4 * 5 + 4]);
    int nonzero_pad = 0;
    for (int b = 0; b < 2; b++)
        for (int c = 0; c < 8; c++)
            for (int i = 0; i < 9; i++)
                if ((c < 2 || c >= 6) && s.y[(b * 8 + c) * 9 + i] != 0) nonzero_pad++;
    CHECK(nonzero_pad == 0);
    float dx[200];
    shortcut_a_backward(s.n, s.in_c, s.h, s.w, s.out_c, s.stride, s.r, dx);
    CHECK_GRAD(s.x, 200, dx, shortcut_loss, &s, 1e-2f, 1e-4);
    /* stride 1 with equal channels is a copy */
    shortcut_a_forward(2, 4, 5, 5, 4, 1, s.x, s.y);
    CHECK(memcmp(s.y, s.x, 200 * 4) == 0);
    rn_free(s.x);
    rn_free(s.y);
    rn_free(s.r);
}

/* ------------------------------------------------------------------ softmax, cross-entropy */

static const float ce_logits[20] = {1.5f,  -0.3f, 0.2f,  2.0f,  -1.1f, 0.0f,  0.7f,
                                    -2.2f, 0.4f,  1.3f,  -0.5f, 0.25f, 3.1f,  -0.8f,
                                    0.6f,  2.4f,  -1.7f, 0.9f,  0.05f, -0.35f};
static const int ce_labels[4] = {3, 1, 0, 4};
static const float ce_weights[5] = {0.5f, 2.0f, 1.0f, 1.5f, 0.25f};

/* torch.nn.CrossEntropyLoss(weight=ce_weights, label_smoothing=eps)(logits, labels) and
 * the gradient of that mean loss, computed in float64 with torch 1.13. */
static const double torch_loss_w_s01 = 1.6150149369788993;
static const double torch_grad_w_s01[20] = {
    0.10595830153803984,   0.008491963296724638,  0.024812374829786477,   -0.14613083263356355,
    0.006868192969012595,  0.051744663837103036,  -0.32400197790683594,   0.0012883031424008084,
    0.07364531971307957,   0.1973236912142525,    -0.10523051781450025,   -0.0030506532222031946,
    0.10526362524043369,   -0.004832830494967959, 0.007850376291237708,   0.05314889345599349,
    -0.008491950816316296, 0.007678250897132205,  -0.0017656600590876875, -0.05056953347772173};
static const double torch_loss_plain = 2.2307413071491764; /* no weights, no smoothing */
static const double torch_loss_s02 = 2.2587413071491764;   /* no weights, smoothing 0.2 */
static const double torch_grad_s02[20] = {
    0.06909326143241741,   0.0030740281805978886, 0.011555428355084626, -0.07959725750732735,
    -0.004125460460772589, 0.020172548728043034,  -0.1492399483076185,  -0.006656786305091413,
    0.03501215338327929,   0.10071203250138755,   -0.20424761293316493, 0.002177803516052447,
    0.2005272104828123,    -0.005738526848474695, 0.007281125782774895, 0.168699088778767,
    -0.007038478007078979, 0.029873156297584764,  0.007042382385513133, -0.19857614945478588};

static void test_cross_entropy_matches_torch(void) {
    float probs[20], grad[20];
    float loss = softmax_cross_entropy_forward(4, 5, ce_logits, ce_labels, ce_weights, 0.1f, probs);
    CHECK_CLOSE(loss, torch_loss_w_s01, 1e-6);
    softmax_cross_entropy_backward(4, 5, probs, ce_labels, ce_weights, 0.1f, grad);
    for (int i = 0; i < 20; i++) CHECK_CLOSE(grad[i], torch_grad_w_s01[i], 1e-6);

    loss = softmax_cross_entropy_forward(4, 5, ce_logits, ce_labels, NULL, 0.0f, probs);
    CHECK_CLOSE(loss, torch_loss_plain, 1e-6);
    loss = softmax_cross_entropy_forward(4, 5, ce_logits, ce_labels, NULL, 0.2f, probs);
    CHECK_CLOSE(loss, torch_loss_s02, 1e-6);
    softmax_cross_entropy_backward(4, 5, probs, ce_labels, NULL, 0.2f, grad);
    for (int i = 0; i < 20; i++) CHECK_CLOSE(grad[i], torch_grad_s02[i], 1e-6);

    /* a label outside [0, k) is ignored: same loss as without that row */
    int ignored[5] = {3, 1, 0, 4, -100};
    float logits5[25], probs5[25], grad5[25];
    memcpy(logits5, ce_logits, sizeof ce_logits);
    for (int j = 0; j < 5; j++) logits5[20 + j] = (float)j;
    loss = softmax_cross_entropy_forward(5, 5, logits5, ignored, ce_weights, 0.1f, probs5);
    CHECK_CLOSE(loss, torch_loss_w_s01, 1e-6);
    softmax_cross_entropy_backward(5, 5, probs5, ignored, ce_weights, 0.1f, grad5);
    CHECK(grad5[20] == 0 && grad5[24] == 0);
    CHECK_CLOSE(grad5[3], torch_grad_w_s01[3], 1e-6);
}

typedef struct {
    float *logits;
    float smoothing;
    const float *weights;
} CeCase;

static double ce_loss(void *ctx) {
    CeCase *c = ctx;
    float probs[20];
    return softmax_cross_entropy_forward(4, 5, c->logits, ce_labels, c->weights, c->smoothing,
                                         probs);
}

static void test_cross_entropy_gradient(void) {
    float logits[20], probs[20], grad[20];
    memcpy(logits, ce_logits, sizeof logits);
    CeCase c = {logits, 0.15f, ce_weights};
    softmax_cross_entropy_forward(4, 5, logits, ce_labels, ce_weights, 0.15f, probs);
    softmax_cross_entropy_backward(4, 5, probs, ce_labels, ce_weights, 0.15f, grad);
    CHECK_GRAD(logits, 20, grad, ce_loss, &c, 1e-2f, 2e-3);
}

static void test_softmax_rows(void) {
    float z[6] = {1000, 1001, 999, -3, 0, 2}, p[6];
    softmax_rows(2, 3, z, p);
    double e0 = exp(-1.0), e2 = exp(-2.0);
    CHECK_CLOSE(p[0], e0 / (e0 + 1 + e2), 1e-6);
    CHECK_CLOSE(p[1], 1 / (e0 + 1 + e2), 1e-6);
    CHECK_CLOSE(p[3] + p[4] + p[5], 1.0, 1e-6);
    CHECK_CLOSE(p[5], exp(2.0) / (exp(-3.0) + 1 + exp(2.0)), 1e-6);
    /* huge logits: the loss stays finite */
    int label = 2;
    float big[3] = {5000, -5000, 4990}, probs[3];
    float loss = softmax_cross_entropy_forward(1, 3, big, &label, NULL, 0.0f, probs);
    CHECK_CLOSE(loss, 10.0, 1e-4);
}

/* The batch-norm input gradient rounds like torch's float32 kernel on every host: each
 * operation of dx = k * ((dy - mean(dy)) - xhat * mean(dy * xhat)) rounded to float, also
 * where C99 evaluates float expressions wider (s390x; a wider evaluation moved the CIFAR
 * golden test's Adam steps). Dyadic inputs make the double sums exact, so the expected
 * bits follow from the definition alone. */
static void test_batchnorm_backward_rounding(void) {
    enum { N = 2, C = 3, HW = 50, M = N * HW };
    float x[N * C * HW], dy[N * C * HW], dx[N * C * HW], dg[C] = {0}, db[C] = {0};
    const float gamma[C] = {0.7f, -1.3f, 2.1f}, mean[C] = {0.25f, -0.5f, 0.0f};
    const float invstd[C] = {2.0f, 0.5f, 4.0f};
    for (int i = 0; i < N * C * HW; i++) {
        x[i] = (float)((int)(hash_u32(2 * i) % 2048) - 1024) / 1024.0f;
        dy[i] = (float)((int)(hash_u32(2 * i + 1) % (1 << 22)) - (1 << 21)) / (1 << 20);
    }
    batchnorm_backward_train(N, C, HW, x, gamma, mean, invstd, dy, dx, dg, db);
    int same = 1;
    for (int ch = 0; ch < C; ch++) {
        double sum_dy = 0, sum_dy_xhat = 0;
        for (int b = 0; b < N; b++)
            for (int i = 0; i < HW; i++) {
                size_t at = ((size_t)b * C + ch) * HW + i;
                sum_dy += dy[at];
                sum_dy_xhat += dy[at] * (((double)x[at] - mean[ch]) * invstd[ch]);
            }
        CHECK(db[ch] == (float)sum_dy && dg[ch] == (float)sum_dy_xhat);
        float k = (float)((double)gamma[ch] * invstd[ch]);
        float mean_dy = (float)(sum_dy / M), mean_dy_xhat = (float)(sum_dy_xhat / M);
        for (int b = 0; b < N; b++)
            for (int i = 0; i < HW; i++) {
                size_t at = ((size_t)b * C + ch) * HW + i;
                float centred = x[at] - mean[ch];
                float xhat = centred * invstd[ch];
                float centred_dy = dy[at] - mean_dy;
                float proj = xhat * mean_dy_xhat;
                float diff = centred_dy - proj;
                float want = k * diff;
                if (memcmp(&want, &dx[at], sizeof want) != 0) {
                    if (same)
                        fprintf(stderr,
                                "  channel %d, element %zu: dx %.9g, float32 steps give %.9g\n", ch,
                                at, dx[at], want);
                    same = 0;
                }
            }
    }
    CHECK(same);
}

/* ------------------------------------------------------------------ grouped convolution */

/* Grouped and depthwise convolutions: gradients of both kernels against finite
 * differences; the fast one equals the reference; a grouped conv is its groups' dense
 * convs side by side. */
static void test_conv_grouped(void) {
    const ConvSpec specs[] = {
        {4, 6, 3, 3, 1, 1, 2},
        {4, 4, 3, 3, 2, 1, 4},
        {6, 6, 1, 1, 1, 0, 3},
        {3, 6, 5, 5, 1, 2, 3},
        {3, 3, 5, 5, 2, 2, 3}, /* depthwise 5x5 stride 2 */
        {2, 2, 3, 3, 1, 0, 2}, /* depthwise without padding */
    };
    for (int fast = 0; fast <= 1; fast++)
        for (size_t t = 0; t < sizeof specs / sizeof specs[0]; t++) {
            ConvCase c = {specs[t], 2, 7, 6, fast, 0, 0, 0, 0, 0};
            const int g = c.s.groups, cig = c.s.in_c / g, cog = c.s.out_c / g;
            conv_case_check_gradients(&c, (uint32_t)(51 + t));
            /* group k of the output = a dense conv of group k's inputs and weights */
            conv_loss(&c);
            ConvSpec d = c.s;
            d.in_c = cig;
            d.out_c = cog;
            d.groups = 1;
            int oh = conv_out_size(c.h, d.kh, d.stride, d.pad),
                ow = conv_out_size(c.w, d.kw, d.stride, d.pad);
            float *part = rn_alloc(sizeof(float) * (size_t)cog * oh * ow);
            double worst = 0;
            for (int b = 0; b < c.n; b++)
                for (int k = 0; k < g; k++) {
                    conv2d_forward_ref(
                        &d, 1, c.h, c.w, c.x + ((size_t)b * c.s.in_c + (size_t)k * cig) * c.h * c.w,
                        c.weight + (size_t)k * cog * cig * d.kh * d.kw, c.bias + k * cog, part);
                    const float *y = c.y + ((size_t)b * c.s.out_c + (size_t)k * cog) * oh * ow;
                    double e = max_rel_diff(y, part, (size_t)cog * oh * ow, 1.0);
                    if (e > worst) worst = e;
                }
            CHECK_MSG(worst < 1e-5, "spec %zu: grouped vs dense per group %g", t, worst);
            rn_free(part);
            conv_case_free(&c);
            if (test_case_failed) {
                printf("  (failing case: %s, spec %zu)\n", fast ? "fast" : "ref", t);
                return;
            }
        }
}

/* The depthwise forward runs maps at least 16 outputs wide plane by plane and narrower ones
 * on interleaved blocks of channels. Both sum each output's taps in the same order and apply
 * the same epilogue: a narrow map cut from a wide one gives the wide one's bits at every
 * output whose inputs it holds (with and without the epilogue, every kernel the plane path
 * has its own code for, a 7x7 and stride 3 on the generic one, full and partial vectors). */
static void test_depthwise_wide_narrow(void) {
    static const struct {
        int k, stride, pad;
    } kernels[] = {{3, 1, 1}, {3, 2, 1}, {5, 1, 2}, {5, 2, 2}, {7, 1, 3}, {3, 3, 1}, {3, 1, 0}};
    const int c = 5, n = 2, h = 11, wide = 70;
    for (size_t t = 0; t < sizeof kernels / sizeof kernels[0]; t++) {
        const int k = kernels[t].k, st = kernels[t].stride, pad = kernels[t].pad;
        const ConvSpec s = {c, c, k, k, st, pad, c};
        const int narrow = 12 * st; /* 12 or fewer outputs a row: the blocked path */
        const int oh = conv_out_size(h, k, st, pad), ow = conv_out_size(wide, k, st, pad);
        const int own = conv_out_size(narrow, k, st, pad);
        CHECK(ow >= 16 && own < 16);
        float *x = tensor((size_t)n * c * h * wide, 300 + t, 1.0f);
        float *xn = rn_alloc(sizeof(float) * n * c * h * narrow);
        for (int r = 0; r < n * c * h; r++)
            memcpy(xn + (size_t)r * narrow, x + (size_t)r * wide, sizeof(float) * narrow);
        float *wt = tensor((size_t)c * k * k, 310 + t, 0.3f);
        float *scale = tensor(c, 311, 1.0f), *shift = tensor(c, 312, 0.5f);
        float *y = rn_alloc(sizeof(float) * n * c * oh * ow);
        float *yn = rn_alloc(sizeof(float) * n * c * oh * own);
        /* outputs whose last input column lies inside the narrow map */
        const int shared = (narrow - k + pad) / st + 1;
        const ConvEpilogue plain = {NULL, NULL, CONV_ACT_NONE},
                           silu = {scale, shift, CONV_ACT_SILU};
        for (int fused = 0; fused <= 1; fused++) {
            const ConvEpilogue *e = fused ? &silu : &plain;
            conv2d_forward_fused(&s, n, h, wide, x, wt, e, NULL, y);
            conv2d_forward_fused(&s, n, h, narrow, xn, wt, e, NULL, yn);
            int differ = 0;
            for (int r = 0; r < n * c * oh; r++)
                differ += memcmp(y + (size_t)r * ow, yn + (size_t)r * own,
                                 sizeof(float) * shared) != 0;
            CHECK_MSG(differ == 0, "kernel %dx%d stride %d%s: %d rows differ", k, k, st,
                      fused ? " with BN and SiLU" : "", differ);
        }
        rn_free(x);
        rn_free(xn);
        rn_free(wt);
        rn_free(scale);
        rn_free(shift);
        rn_free(y);
        rn_free(yn);
    }
}

/* ------------------------------------------------------------------ sums, concat, ReLU of BN */

static void test_add_and_concat(void) {
    float a[6] = {1, -2, 3, -4, 0.5f, -0.5f}, b[6] = {0.5f, 1, -4, 3, 0, 1}, y[6], yr[6];
    add_forward(6, a, b, 0, y);
    add_forward(6, a, b, 1, yr);
    for (int i = 0; i < 6; i++) {
        CHECK(y[i] == a[i] + b[i]);
        CHECK(yr[i] == (a[i] + b[i] > 0 ? a[i] + b[i] : 0));
    }
    /* backward: first gradient set, a later one added; with ReLU masked by y > 0 */
    float dy[6] = {1, 2, 3, 4, 5, 6}, da[6] = {9, 9, 9, 9, 9, 9}, db[6] = {1, 1, 1, 1, 1, 1};
    add_backward(6, yr, dy, da, 1, db, 0);
    for (int i = 0; i < 6; i++) {
        float g = yr[i] > 0 ? dy[i] : 0;
        CHECK(da[i] == g && db[i] == 1 + g);
    }
    memcpy(da, dy, sizeof da); /* in place: da is dy */
    add_backward(6, NULL, da, da, 1, NULL, 0);
    CHECK(memcmp(da, dy, sizeof da) == 0);
    float d[3] = {1, 2, 3}, g[3] = {0.5f, 0.25f, -1};
    add_into(3, g, d);
    CHECK(d[0] == 1.5f && d[1] == 2.25f && d[2] == 2);
    /* concat: 2 samples of parts with 2 and 3 values */
    const float p0[4] = {1, 2, 3, 4}, p1[6] = {5, 6, 7, 8, 9, 10};
    const float *parts[2] = {p0, p1};
    const size_t floats[2] = {2, 3};
    float cat[10], want[10] = {1, 2, 5, 6, 7, 3, 4, 8, 9, 10};
    concat_forward(2, 2, floats, parts, cat);
    CHECK(memcmp(cat, want, sizeof cat) == 0);
    float g0[4], g1[6];
    float *dx[2] = {g0, NULL};
    concat_backward(2, 2, floats, want, dx);
    CHECK(memcmp(g0, p0, sizeof g0) == 0);
    dx[0] = NULL;
    dx[1] = g1;
    concat_backward(2, 2, floats, want, dx);
    CHECK(memcmp(g1, p1, sizeof g1) == 0);
}

/* relu_affine_forward is bit for bit eval batch norm then ReLU; its backward is the ReLU's
 * mask from the affine output, also in place. */
static void test_relu_affine(void) {
    const int n = 2, c = 3, hw = 20;
    const size_t count = (size_t)n * c * hw;
    float *x = tensor(count, 61, 2.0f), *y = rn_alloc(count * 4), *want = rn_alloc(count * 4);
    float gamma[3] = {0.5f, 1.5f, -1}, beta[3] = {0.1f, -0.2f, 0.3f}, mean[3] = {0.2f, -0.1f, 0};
    float var[3] = {1.5f, 0.5f, 2}, scale[3], shift[3];
    batchnorm_eval_affine(c, gamma, beta, mean, var, 1e-5f, scale, shift);
    batchnorm_forward_eval(n, c, hw, x, gamma, beta, mean, var, 1e-5f, want);
    relu_forward(count, want, want);
    relu_affine_forward(n, c, hw, x, scale, shift, y);
    CHECK(memcmp(y, want, count * 4) == 0);
    float *dy = tensor(count, 62, 1.0f), *dx = rn_alloc(count * 4), *dx2 = rn_alloc(count * 4);
    relu_backward(count, want, dy, dx);
    memcpy(dx2, dy, count * 4);
    relu_affine_backward(n, c, hw, x, scale, shift, dx2, dx2);
    CHECK(memcmp(dx, dx2, count * 4) == 0);
    rn_free(x);
    rn_free(y);
    rn_free(want);
    rn_free(dy);
    rn_free(dx);
    rn_free(dx2);
}

/* vexp (simd.h) against exp in double: within 2 ulp over its whole range, NaN kept, and
 * held to e^-87 and e^88 outside it; the partial-vector loads and stores of the
 * activations below use the same lanes. */
static void test_vexp(void) {
    double worst = 0;
    float in[VLEN], out[VLEN];
    for (long k = 0; k <= 175000; k += VLEN) {
        for (int l = 0; l < VLEN; l++) in[l] = -87.0f + (float)(k + l) * 0.001f;
        vstore(out, vexp(vload(in)));
        for (int l = 0; l < VLEN; l++) {
            if (in[l] > 88.0f) continue;
            double want = exp((double)in[l]);
            double ulp = ldexp(1.0, ilogb(want) - 23);
            double err = fabs(out[l] - want) / ulp;
            if (err > worst) worst = err;
        }
    }
    CHECK(worst <= 2.0);
    if (worst > 2.0) fprintf(stderr, "  vexp: %.2f ulp\n", worst);
    const float odd[4] = {NAN, INFINITY, -INFINITY, 0.0f};
    for (int j = 0; j < 4; j++) {
        for (int l = 0; l < VLEN; l++) in[l] = odd[j];
        vstore(out, vexp(vload(in)));
        if (j == 0) CHECK(isnan(out[0]) && isnan(out[VLEN - 1]));
        if (j == 1) CHECK_CLOSE(out[0], exp(88.0), 3e-7);
        if (j == 2) CHECK_CLOSE(out[0] * 1e38, exp(-87.0) * 1e38, 3e-7);
        if (j == 3) CHECK(out[0] == 1.0f);
    }
}

/* SiLU and sigmoid: values from the formulas, backward against finite differences. */
typedef struct {
    ActForward f;
    const float *x;
    float *y;
    const float *r;
    size_t n;
} ActCase;

static double act_loss(void *ctx) {
    ActCase *a = ctx;
    a->f(a->n, a->x, a->y);
    return project(a->y, a->r, a->n);
}

static void test_silu_sigmoid(void) {
    const size_t n = 64 + 7; /* a partial vector last */
    float *x = tensor(n, 71, 6.0f), *r = tensor(n, 72, 1.0f), *y = rn_alloc(n * 4);
    float *dx = rn_alloc(n * 4);
    const ActForward fwd[2] = {silu_forward, sigmoid_forward};
    const ActBackward bwd[2] = {silu_backward, sigmoid_backward};
    for (int k = 0; k < 2; k++) {
        fwd[k](n, x, y);
        for (size_t i = 0; i < n; i++) {
            double s = 1.0 / (1.0 + exp(-(double)x[i]));
            CHECK_CLOSE(y[i], k == 0 ? x[i] * s : s, 1e-6);
        }
        bwd[k](n, x, y, r, dx);
        for (size_t i = 0; i < n; i++) {
            double s = 1.0 / (1.0 + exp(-(double)x[i]));
            double d = k == 0 ? s + x[i] * s * (1 - s) : s * (1 - s);
            CHECK_CLOSE(dx[i], r[i] * d, 1e-6);
        }
        ActCase a = {fwd[k], x, y, r, n};
        CHECK_GRAD(x, n, dx, act_loss, &a, 1e-3f, 1e-3);
    }
    /* far out: saturated, finite, no NaN from inf / inf */
    const float far[9] = {-1000.0f, -100.0f, -88.5f, -30.0f, 0.0f, 30.0f, 88.5f, 100.0f, 1000.0f};
    float fy[9];
    for (int k = 0; k < 2; k++) {
        fwd[k](9, far, fy);
        for (int i = 0; i < 9; i++) {
            double s = 1.0 / (1.0 + exp(-(double)far[i]));
            CHECK(isfinite(fy[i]));
            CHECK_CLOSE(fy[i], k == 0 ? far[i] * s : s, 1e-6);
        }
    }
    rn_free(x);
    rn_free(r);
    rn_free(y);
    rn_free(dx);
}

/* Channel scale (squeeze-and-excitation): values by hand, both gradients against finite
 * differences, dx in place over dy. */
typedef struct {
    int n, c, hw;
    float *x, *s, *y;
    const float *r;
} ScaleCase;

static double scale_loss(void *ctx) {
    ScaleCase *k = ctx;
    channel_scale_forward(k->n, k->c, k->hw, k->x, k->s, k->y);
    return project(k->y, k->r, (size_t)k->n * k->c * k->hw);
}

static void test_channel_scale(void) {
    const int n = 2, c = 3, hw = 5;
    const size_t count = (size_t)n * c * hw, nc = (size_t)n * c;
    float *x = tensor(count, 81, 2.0f), *sc = tensor(nc, 82, 1.5f), *r = tensor(count, 83, 1.0f);
    float *y = rn_alloc(count * 4), *dx = rn_alloc(count * 4), *ds = rn_alloc(nc * 4);
    channel_scale_forward(n, c, hw, x, sc, y);
    for (size_t i = 0; i < count; i++) CHECK(FLOAT_EQ(y[i], x[i] * sc[i / hw]));
    channel_scale_backward(n, c, hw, x, sc, r, dx, ds);
    ScaleCase k = {n, c, hw, x, sc, y, r};
    CHECK_GRAD(x, count, dx, scale_loss, &k, 1e-2f, 1e-3);
    CHECK_GRAD(sc, nc, ds, scale_loss, &k, 1e-2f, 1e-3);
    float *g = copy_of(r, count), *ds2 = rn_alloc(nc * 4);
    channel_scale_backward(n, c, hw, x, sc, g, g, ds2); /* dx over dy */
    CHECK(memcmp(g, dx, count * 4) == 0 && memcmp(ds2, ds, nc * 4) == 0);
    rn_free(x);
    rn_free(sc);
    rn_free(r);
    rn_free(y);
    rn_free(dx);
    rn_free(ds);
    rn_free(g);
    rn_free(ds2);
}

/* Stochastic depth: each sample whole, kept (times 1 / (1 - p)) or zeroed, at about the rate
 * 1 - p; the same seed, the same draws; backward scales dy by the same factors. */
static void test_stochastic_depth(void) {
    const int n = 400, per = 6;
    const float p = 0.3f;
    const size_t count = (size_t)n * per;
    float *x = tensor(count, 91, 1.0f), *y = rn_alloc(count * 4), *keep = rn_alloc(n * 4);
    float *y2 = rn_alloc(count * 4), *keep2 = rn_alloc(n * 4), *dx = rn_alloc(count * 4);
    Rng rng, rng2;
    rng_seed(&rng, 5);
    rng_seed(&rng2, 5);
    stochastic_depth_forward(n, per, p, &rng, x, y, keep);
    stochastic_depth_forward(n, per, p, &rng2, x, y2, keep2);
    CHECK(memcmp(y, y2, count * 4) == 0 && memcmp(keep, keep2, n * 4) == 0);
    int kept = 0;
    for (int b = 0; b < n; b++) {
        CHECK(keep[b] == 0.0f || FLOAT_EQ(keep[b], 1.0f / (1.0f - p)));
        kept += keep[b] != 0;
        for (int i = 0; i < per; i++)
            CHECK(FLOAT_EQ(y[(size_t)b * per + i], x[(size_t)b * per + i] * keep[b]));
    }
    CHECK_MSG(kept > 0.6 * n && kept < 0.8 * n, "kept %d of %d at p = 0.3", kept, n);
    stochastic_depth_backward(n, per, keep, x, dx);
    CHECK(memcmp(dx, y, count * 4) == 0);
    stochastic_depth_forward(n, per, 0.0f, &rng, x, y, keep); /* p = 0: the identity */
    CHECK(memcmp(y, x, count * 4) == 0);
    memcpy(y2, x, count * 4); /* in place */
    stochastic_depth_backward(n, per, keep, y2, y2);
    CHECK(memcmp(y2, x, count * 4) == 0);
    rn_free(x);
    rn_free(y);
    rn_free(keep);
    rn_free(y2);
    rn_free(keep2);
    rn_free(dx);
}

int main(void) {
    RUN(test_conv_by_hand);
    RUN(test_conv_gradients);
    RUN(test_conv_fast_matches_reference);
    RUN(test_conv_fused_epilogue);
    RUN(test_conv_winograd);
    RUN(test_gradients_accumulate);
    RUN(test_batchnorm_gradients);
    RUN(test_batchnorm_running_stats);
    RUN(test_batchnorm_backward_rounding);
    RUN(test_relu);
    RUN(test_maxpool);
    RUN(test_avgpool_global);
    RUN(test_adaptive_avgpool);
    RUN(test_linear);
    RUN(test_dropout);
    RUN(test_shortcut_a);
    RUN(test_cross_entropy_matches_torch);
    RUN(test_cross_entropy_gradient);
    RUN(test_softmax_rows);
    RUN(test_conv_grouped);
    RUN(test_depthwise_wide_narrow);
    RUN(test_add_and_concat);
    RUN(test_relu_affine);
    RUN(test_vexp);
    RUN(test_silu_sigmoid);
    RUN(test_channel_scale);
    RUN(test_stochastic_depth);
    return test_summary();
}
