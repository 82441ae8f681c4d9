/* tools/bench.c - speed of the hot paths: sgemm on ResNet-50 shapes, ResNet-50 and
 * EfficientNet-B0 inference and training steps, against the machine's measured FMA peak.
 *
 *   bench [config] [threads]      one configuration at one thread count
 *   bench list                    the configuration names
 *   bench info                    the SIMD kernel and thread count
 *
 * config: peak | gemm | infer224b1 | infer224b8 | infer96b32 | train96b32 |
 * train96b32keep (net->low_memory = 0) | train224b8 (ResNet-50) | infer224b1_effb0 |
 * infer224b8_effb0 | train96b32_effb0 (EfficientNet-B0) | all (default: every configuration
 * at 1 and 2 threads). Each measurement prints a
 * human-readable line and a machine-readable one for tools/bench.sh:
 *   RESULT <config> threads=<t> rate=<x> unit=<img/s|GFLOP/s> gflops=<g> peak=<%> rss_mb=<m>
 * Times are medians of several repeats after a warm-up. FLOPs count the convolutions and
 * linear layers only: 2 * N * Cout * OH * OW * Cin * KH * KW forward, three times that for
 * a training step (forward, input gradient, weight gradient). The peak is measured with
 * FMA chains of the GEMM kernel's own vector width (simd_peak_gflops; in a SIMD=0 build,
 * scalar code, which the compiler's auto-vectorised GEMM can exceed).
 *
 * After each ResNet-50 configuration, a few more steps run with per-node timing
 * (net->node_seconds) and print where the time goes by kind of layer, with the GFLOP/s of
 * the 1x1 and 3x3 convolutions inside the network, plus machine-readable lines
 *   PROFILE <config> <layers> fwd|bwd gflops=<g> peak=<%>
 * BENCH_PROFILE=0 skips this; BENCH_PROFILE=2 adds one line per convolution.
 * BENCH_WINOGRAD=0 runs inference's 3x3 stride-1 convs by im2col + GEMM instead of
 * Winograd (net->winograd), to see what Winograd gives and to measure the GEMM on them. */
#include "resnet.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds of `fn`: one warm-up call, then at least min_reps timed calls and more
 * until min_seconds have passed (at most 50); slow configurations stop after 6 seconds
 * with at least one timed call, which keeps `make bench` within minutes. */
typedef void (*BenchFn)(void *ctx);
#define BENCH_MAX_SECONDS 6.0
static double median_seconds(BenchFn fn, void *ctx, int min_reps, double min_seconds) {
    double t[50];
    int n = 0;
    fn(ctx);
    double start = rn_seconds();
    while (n < 50 && (n < min_reps || rn_seconds() - start < min_seconds)) {
        if (n >= 1 && rn_seconds() - start > BENCH_MAX_SECONDS) break;
        double t0 = rn_seconds();
        fn(ctx);
        t[n++] = rn_seconds() - t0;
    }
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static void report(const char *config, int threads, double rate, const char *unit, double gflops,
                   double peak) {
    long rss = rn_peak_rss_kb();
    printf("%-28s threads=%d %9.2f %-8s %7.1f GFLOP/s %5.1f%% of peak  rss %ld MB\n", config,
           threads, rate, unit, gflops, peak > 0 ? 100 * gflops / peak : 0.0, rss / 1024);
    printf("RESULT %s threads=%d rate=%.4f unit=%s gflops=%.2f peak=%.1f rss_mb=%ld\n", config,
           threads, rate, unit, gflops, peak > 0 ? 100 * gflops / peak : 0.0, rss / 1024);
    fflush(stdout);
}

/* ---------------------------------------------------------------- GEMM */

typedef struct {
    int ta, tb, m, n, k;
} GemmShape;

/* ResNet-50 shapes: C[Cout, OH*OW] = W[Cout, Cin*KH*KW] * col, its backward products
 * dW = dY col^T (trans_b) and dcol = W^T dY (trans_a), and the 7x7 stage. */
static const GemmShape gemm_shapes[] = {
    {0, 0, 256, 3136, 576}, /* 3x3 conv at 56x56 (forward) */
    {0, 0, 256, 3136, 64},  /* layer1 1x1 expansion (forward) */
    {0, 0, 2048, 49, 512},  /* layer4 1x1 expansion (forward) */
    {0, 1, 64, 576, 3136},  /* layer1 3x3 weight gradient */
    {1, 0, 576, 3136, 64},  /* layer1 3x3 column gradient */
    {0, 1, 2048, 512, 49},  /* layer4 1x1 weight gradient */
    {1, 0, 512, 49, 2048},  /* layer4 1x1 input gradient */
};

typedef struct {
    const GemmShape *s;
    float *a, *b, *c;
} GemmCtx;

static void gemm_run(void *p) {
    GemmCtx *g = p;
    const GemmShape *s = g->s;
    sgemm(s->ta, s->tb, s->m, s->n, s->k, 1.0f, g->a, s->ta ? s->m : s->k, g->b,
          s->tb ? s->k : s->n, 0.0f, g->c, s->n);
}

static void bench_gemm(int threads, double peak) {
    int count = (int)(sizeof gemm_shapes / sizeof gemm_shapes[0]);
    for (int i = 0; i < count; i++) {
        const GemmShape *s = &gemm_shapes[i];
        GemmCtx g = {s, rn_alloc(sizeof(float) * (size_t)s->m * s->k),
                     rn_alloc(sizeof(float) * (size_t)s->k * s->n),
                     rn_alloc(sizeof(float) * (size_t)s->m * s->n)};
        hash_fill(g.a, (size_t)s->m * s->k, 1, 1.0f);
        hash_fill(g.b, (size_t)s->k * s->n, 2, 1.0f);
        double flops = 2.0 * s->m * s->n * s->k;
        /* warm-up, then repeat the product inside one sample so it lasts ~20 ms */
        double t0 = rn_seconds();
        gemm_run(&g);
        gemm_run(&g);
        int inner = (int)(0.04 / (rn_seconds() - t0 + 1e-9)) + 1;
        double samples[7];
        for (int r = 0; r < 7; r++) {
            double t1 = rn_seconds();
            for (int q = 0; q < inner; q++) gemm_run(&g);
            samples[r] = (rn_seconds() - t1) / inner;
        }
        qsort(samples, 7, sizeof samples[0], cmp_double);
        double t = samples[3];
        char name[64];
        snprintf(name, sizeof name, "gemm%s%s_%dx%dx%d", s->ta ? "T" : "N", s->tb ? "T" : "N", s->m,
                 s->n, s->k);
        report(name, threads, flops / t * 1e-9, "GFLOP/s", flops / t * 1e-9, peak);
        rn_free(g.a);
        rn_free(g.b);
        rn_free(g.c);
    }
}

/* ---------------------------------------------------------------- ResNet-50 */

/* Convolution and linear FLOPs of one forward pass over the planned batch. */
/* FLOPs of one conv node's forward over the planned batch. */
static double conv_flops(const Net *net, const Node *nd) {
    const int groups = nd->conv.groups > 1 ? nd->conv.groups : 1;
    return 2.0 * net->batch * nd->c * nd->h * nd->w * (nd->conv.in_c / groups) * nd->conv.kh *
           nd->conv.kw;
}

static double forward_flops(const Net *net) {
    double f = 0;
    for (int i = 0; i < net->n_nodes; i++) {
        const Node *nd = &net->nodes[i];
        if (nd->op == OP_CONV)
            f += conv_flops(net, nd);
        else if (nd->op == OP_LINEAR)
            f += 2.0 * net->batch * nd->c * (double)net->params[nd->weight].shape[1];
    }
    return f;
}

typedef struct NetCtx {
    Net *net;
    Optimizer *opt;
    float *x, *probs, *dlogits;
    int *labels, batch;
} NetCtx;

static void infer_step(void *p) {
    NetCtx *c = p;
    net_forward(c->net, c->x, c->batch, 0);
}

/* One training step as `train` runs it: forward, softmax cross-entropy, then backward
 * with each layer's Adam update made as backward reaches it (net_backward_step). */
static void train_step(void *p) {
    NetCtx *c = p;
    int k = c->net->num_classes;
    const float *logits = net_forward(c->net, c->x, c->batch, 1);
    softmax_cross_entropy_forward(c->batch, k, logits, c->labels, NULL, 0.0f, c->probs);
    softmax_cross_entropy_backward(c->batch, k, c->probs, c->labels, NULL, 0.0f, c->dlogits);
    if (net_backward_step(c->net, c->dlogits, c->batch, c->opt) != 0) {
        fprintf(stderr, "bench: %s\n", rn_error());
        exit(1);
    }
}

/* ---------------------------------------------------------------- profile */

/* One more step with net->node_seconds on, summed by kind of layer: where the time goes,
 * and the convolutions' GFLOP/s inside the network (the kernel figures that matter). A
 * conv's backward does the weight gradient and, except for the stem, the input gradient:
 * twice the forward FLOPs. */
enum {
    K_CONV1,
    K_CONV3,
    K_WINO,
    K_CONV7,
    K_DW,
    K_BN,
    K_RELU,
    K_ACT,
    K_ADD,
    K_POOL,
    K_LINEAR,
    K_OTHER,
    K_COUNT
};
static const char *kind_names[K_COUNT] = {
    "conv 1x1", "conv 3x3", "conv 3x3 Winograd", "conv 7x7 (stem)", "conv depthwise", "batch norm",
    "relu",     "silu/sigmoid", "residual add",  "pooling",         "linear",         "other"};

/* Winograd convs have their own line: their GFLOP/s count the direct convolution's FLOPs
 * (an effective rate, which can pass the FMA peak), so they are kept apart from the GEMM
 * convs' rates, which measure the kernels. */
static int node_kind(const Net *net, const Node *nd) {
    switch (nd->op) {
    case OP_CONV:
        if (net->plan.nodes[nd - net->nodes].wino_u && net->winograd) return K_WINO;
        if (nd->conv.groups > 1) return K_DW;
        return nd->conv.kh == 1 ? K_CONV1 : nd->conv.kh == 3 ? K_CONV3 : K_CONV7;
    case OP_BN: return K_BN;
    case OP_RELU: return K_RELU;
    case OP_SILU:
    case OP_SIGMOID: return K_ACT;
    case OP_ADD:
    case OP_ADD_RELU: return K_ADD;
    case OP_MAXPOOL:
    case OP_GAP:
    case OP_ADAPTIVE_AVGPOOL: return K_POOL;
    case OP_LINEAR: return K_LINEAR;
    default: return K_OTHER;
    }
}

static void profile_net(const char *config, int threads, NetCtx *c, Net *net, int train,
                        double peak);

static int bench_net(const char *config, const char *arch, int train, int size, int batch,
                     int keep_outputs, int threads, double peak) {
    NetCtx c = {0};
    c.batch = batch;
    c.net = resnet_create(arch, 1000, NULL, 1);
    if (c.net && keep_outputs) c.net->low_memory = 0; /* else the library's default plan */
    if (c.net && getenv("BENCH_WINOGRAD")) c.net->winograd = atoi(getenv("BENCH_WINOGRAD"));
    if (c.net && !train) c.net->constant_weights = 1; /* as ./infer runs */
    if (!c.net || net_plan(c.net, batch, size, size, train) != 0) {
        fprintf(stderr, "bench: %s: %s\n", config, rn_error());
        if (c.net) net_free(c.net);
        return -1;
    }
    size_t in_len = (size_t)batch * 3 * size * size;
    c.x = rn_alloc(sizeof(float) * in_len);
    hash_fill(c.x, in_len, 7, 2.0f);
    c.probs = rn_alloc(sizeof(float) * batch * 1000);
    c.dlogits = rn_alloc(sizeof(float) * batch * 1000);
    c.labels = rn_alloc(sizeof(int) * batch);
    for (int i = 0; i < batch; i++) c.labels[i] = (i * 37) % 1000;
    double flops = forward_flops(c.net);
    double t;
    if (train) {
        OptConfig oc = opt_default(OPT_ADAM, 1e-4f);
        c.opt = optimizer_create(c.net, &oc);
        net_release_grads(c.net);
        t = median_seconds(train_step, &c, 3, 2.0);
        flops *= 3;
    } else {
        t = median_seconds(infer_step, &c, 3, 1.5);
    }
    report(config, threads, batch / t, "img/s", flops / t * 1e-9, peak);
    if (!getenv("BENCH_PROFILE") || strcmp(getenv("BENCH_PROFILE"), "0") != 0)
        profile_net(config, threads, &c, c.net, train, peak);
    if (c.opt) optimizer_free(c.opt);
    net_free(c.net);
    rn_free(c.x);
    rn_free(c.probs);
    rn_free(c.dlogits);
    rn_free(c.labels);
    return 0;
}

static void profile_net(const char *config, int threads, NetCtx *c, Net *net, int train,
                        double peak) {
    int n = net->n_nodes;
    double *sec = rn_calloc((size_t)2 * n + 1, sizeof(double));
    double fwd[K_COUNT] = {0}, bwd[K_COUNT] = {0}, ffl[K_COUNT] = {0}, bfl[K_COUNT] = {0};
    const int reps = 3;
    net->node_seconds = sec;
    double t0 = rn_seconds();
    for (int r = 0; r < reps; r++) (train ? train_step : infer_step)(c);
    double total = (rn_seconds() - t0) / reps;
    net->node_seconds = NULL;
    for (int i = 1; i < n; i++) {
        const Node *nd = &net->nodes[i];
        int k = node_kind(net, nd);
        fwd[k] += sec[i] / reps;
        bwd[k] += sec[n + i] / reps;
        if (nd->op == OP_CONV) {
            double f = conv_flops(net, nd);
            ffl[k] += f;
            bfl[k] += nd->in[0] == 0 ? f : 2 * f;
        }
    }
    if (getenv("BENCH_PROFILE") && !strcmp(getenv("BENCH_PROFILE"), "2")) /* every conv */
        for (int i = 1; i < n; i++) {
            const Node *nd = &net->nodes[i];
            if (nd->op != OP_CONV) continue;
            double f = conv_flops(net, nd), fb = nd->in[0] == 0 ? f : 2 * f;
            printf("  %-22s %4d->%-4d %dx%d s%d %3dx%-3d fwd %6.2f ms %6.1f GFLOP/s", nd->name,
                   nd->conv.in_c, nd->c, nd->conv.kh, nd->conv.kw, nd->conv.stride, nd->h, nd->w,
                   sec[i] / reps * 1e3, f / (sec[i] / reps) * 1e-9);
            if (train)
                printf(" | bwd %6.2f ms %6.1f GFLOP/s", sec[n + i] / reps * 1e3,
                       fb / (sec[n + i] / reps) * 1e-9);
            printf("\n");
        }
    printf("  profile of %s (mean of %d steps, %.1f ms a step):\n", config, reps, total * 1e3);
    printf("  %-16s %9s %6s %9s %6s", "layers", "fwd ms", "share", "GFLOP/s", "%peak");
    if (train) printf(" | %9s %6s %9s %6s", "bwd ms", "share", "GFLOP/s", "%peak");
    printf("\n");
    double rest = total;
    for (int k = 0; k < K_COUNT; k++) {
        if (fwd[k] == 0 && bwd[k] == 0) continue;
        rest -= fwd[k] + bwd[k];
        printf("  %-16s %9.1f %5.1f%%", kind_names[k], fwd[k] * 1e3, 100 * fwd[k] / total);
        if (ffl[k] > 0)
            printf(" %9.1f %5.1f%%", ffl[k] / fwd[k] * 1e-9, 100 * ffl[k] / fwd[k] * 1e-9 / peak);
        else
            printf(" %9s %6s", "", "");
        if (train) {
            printf(" | %9.1f %5.1f%%", bwd[k] * 1e3, 100 * bwd[k] / total);
            if (bfl[k] > 0)
                printf(" %9.1f %5.1f%%", bfl[k] / bwd[k] * 1e-9,
                       100 * bfl[k] / bwd[k] * 1e-9 / peak);
        }
        printf("\n");
        if (ffl[k] > 0)
            printf("PROFILE %s threads=%d %s fwd gflops=%.1f peak=%.1f\n", config, threads,
                   kind_names[k], ffl[k] / fwd[k] * 1e-9, 100 * ffl[k] / fwd[k] * 1e-9 / peak);
        if (train && bfl[k] > 0)
            printf("PROFILE %s threads=%d %s bwd gflops=%.1f peak=%.1f\n", config, threads,
                   kind_names[k], bfl[k] / bwd[k] * 1e-9, 100 * bfl[k] / bwd[k] * 1e-9 / peak);
    }
    if (train) {
        double o = sec[2 * n] / reps;
        printf("  %-16s %9.1f %5.1f%%   (made during backward)\n", "optimizer", o * 1e3,
               100 * o / total);
        rest -= o;
    }
    printf("  %-16s %9.1f %5.1f%%\n", "rest", rest * 1e3, 100 * rest / total);
    rn_free(sec);
}

/* ---------------------------------------------------------------- driver */

/* keep_outputs: a training plan that keeps every conv output (net->low_memory = 0); the
 * others run the library's default plan. */
typedef struct {
    const char *name, *arch;
    int train, size, batch, keep_outputs;
} NetConfig;
static const NetConfig net_configs[] = {
    {"infer224b1", "resnet50", 0, 224, 1, 0},
    {"infer224b8", "resnet50", 0, 224, 8, 0},
    {"infer96b32", "resnet50", 0, 96, 32, 0},
    {"train96b32", "resnet50", 1, 96, 32, 0},
    {"train96b32keep", "resnet50", 1, 96, 32, 1},
    {"train224b8", "resnet50", 1, 224, 8, 0},
    {"infer224b1_effb0", "efficientnet_b0", 0, 224, 1, 0},
    {"infer224b8_effb0", "efficientnet_b0", 0, 224, 8, 0},
    {"train96b32_effb0", "efficientnet_b0", 1, 96, 32, 0},
};
#define N_NET_CONFIGS ((int)(sizeof net_configs / sizeof net_configs[0]))

static int run_config(const char *config, int threads) {
    int net = -1;
    for (int i = 0; i < N_NET_CONFIGS; i++)
        if (!strcmp(config, net_configs[i].name)) net = i;
    if (net < 0 && strcmp(config, "peak") != 0 && strcmp(config, "gemm") != 0) {
        fprintf(stderr, "bench: unknown config '%s' (run 'bench list')\n", config);
        return -1;
    }
    set_threads(threads);
    double peak = simd_peak_gflops();
    if (!strcmp(config, "peak")) {
        report("peak", threads, peak, "GFLOP/s", peak, peak);
        return 0;
    }
    if (!strcmp(config, "gemm")) {
        bench_gemm(threads, peak);
        return 0;
    }
    const NetConfig *nc = &net_configs[net];
    return bench_net(config, nc->arch, nc->train, nc->size, nc->batch, nc->keep_outputs, threads,
                     peak);
}

int main(int argc, char **argv) {
    const char *config = argc > 1 ? argv[1] : "all";
    if (!strcmp(config, "list")) {
        printf("peak\ngemm\n");
        for (int i = 0; i < N_NET_CONFIGS; i++) printf("%s\n", net_configs[i].name);
        return 0;
    }
    if (!strcmp(config, "info")) {
        printf("simd %s, %d threads available\n", simd_name(), rn_threads());
        return 0;
    }
    printf("# resnet-c bench: simd %s, %d threads available\n", simd_name(), rn_threads());
    if (argc > 2) {
        int t = atoi(argv[2]);
        if (t < 1 || t > RN_MAX_THREADS) {
            fprintf(stderr, "bench: threads must be 1..%d, found '%s'\n", RN_MAX_THREADS, argv[2]);
            return 1;
        }
        return run_config(config, t) == 0 ? 0 : 1;
    }
    if (strcmp(config, "all") != 0) return run_config(config, rn_threads()) == 0 ? 0 : 1;
    int max_threads = rn_threads(), status = 0;
    for (int t = 1; t <= max_threads && t <= 2; t++) {
        status |= run_config("peak", t);
        status |= run_config("gemm", t);
        for (int i = 0; i < N_NET_CONFIGS; i++) status |= run_config(net_configs[i].name, t);
    }
    return status ? 1 : 0;
}
