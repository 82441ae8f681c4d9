/* test_net.c - network graph: architectures (parameter counts and torchvision names),
 * heads, shapes, planning, finite-difference gradients of whole networks, frozen stages,
 * head specs as text. */
#include "resnet.h"
#include "test.h"

/* ------------------------------------------------------------------ helpers */

static void fill_random(float *x, size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * rng_uniform(&r) - 1.0f;
}

/* L = sum_i r_i * logits_i for the current parameters; the dropout stream is rewound so
 * every evaluation draws the same masks. */
static double probe_loss(Net *net, const float *x, int n, const float *r, const Rng *rng0) {
    net->rng = *rng0;
    const float *y = net_forward(net, x, n, 1);
    if (!y) return NAN;
    double s = 0;
    for (int i = 0; i < n * net->num_classes; i++) s += (double)r[i] * y[i];
    return s;
}

typedef struct {
    double worst, tol;
    int checked;
} GradCheck;

/* Central differences d L / d v at *v against the analytic value `an`, with steps eps,
 * eps/2 and eps/4, keeping the closest: crossing a ReLU kink spoils one step size, a
 * wrong gradient all of them. The error is relative to `scale`, the largest analytic
 * gradient of the group checked. */
static void check_one(GradCheck *g, Net *net, const float *x, int n, const float *r,
                      const Rng *rng0, float *v, double an, float eps, double scale) {
    float saved = *v;
    double best = INFINITY, best_fd = 0;
    for (int k = 0; k < 3; k++, eps *= 0.5f) {
        *v = saved + eps;
        double lp = probe_loss(net, x, n, r, rng0);
        *v = saved - eps;
        double lm = probe_loss(net, x, n, r, rng0);
        *v = saved;
        double fd = (lp - lm) / (2.0 * eps);
        double err = fabs(fd - an) / (scale > 1e-3 ? scale : 1e-3);
        if (err < best) {
            best = err;
            best_fd = fd;
        }
    }
    if (best > g->worst) g->worst = best;
    g->checked++;
    if (best > g->tol)
        fprintf(stderr, "    gradient mismatch: analytic %.6g, numeric %.6g\n", an, best_fd);
}

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(a[i]) > m) m = fabs(a[i]);
    return m;
}

/* Analytic gradients by net_backward, then finite differences on every input coordinate
 * listed and on `per_param` entries of each named parameter. */
static void gradcheck_net(Net *net, int n, int h, int w, const char **names, int n_names,
                          int n_inputs, int per_param, float eps, double tol) {
    CHECK(net_plan(net, n, h, w, 1) == 0);
    size_t in_size = (size_t)n * net->in_c * h * w;
    float *x = malloc(sizeof(float) * in_size), *dx = malloc(sizeof(float) * in_size);
    float *r = malloc(sizeof(float) * (size_t)n * net->num_classes);
    fill_random(x, in_size, 11);
    fill_random(r, (size_t)n * net->num_classes, 12);
    Rng rng0 = net->rng;
    net_zero_grad(net);
    CHECK(probe_loss(net, x, n, r, &rng0) == probe_loss(net, x, n, r, &rng0));
    net_backward(net, r, n, dx);

    GradCheck g = {0, tol, 0};
    Rng pick;
    rng_seed(&pick, 99);
    double scale = max_abs(dx, in_size);
    CHECK(scale > 0);
    for (int k = 0; k < n_inputs; k++) {
        size_t i = rng_below(&pick, (uint32_t)in_size);
        check_one(&g, net, x, n, r, &rng0, &x[i], dx[i], eps, scale);
    }
    double worst_input = g.worst;
    for (int p = 0; p < n_names; p++) {
        Param *prm = net_find_param(net, names[p]);
        CHECK_MSG(prm != NULL && prm->grad != NULL, "%s", names[p]);
        if (!prm || !prm->grad) continue;
        double pscale = max_abs(prm->grad, (size_t)prm->numel);
        CHECK_MSG(pscale > 0, "%s has an all-zero gradient", names[p]);
        GradCheck gp = {0, tol, 0};
        for (int k = 0; k < per_param; k++) {
            size_t i = rng_below(&pick, (uint32_t)prm->numel);
            check_one(&gp, net, x, n, r, &rng0, &prm->data[i], prm->grad[i], eps, pscale);
        }
        CHECK_MSG(gp.worst < tol, "%s: worst relative error %.4g", names[p], gp.worst);
        if (getenv("GRADCHECK_VERBOSE")) printf("       %-28s %.2e\n", names[p], gp.worst);
        if (gp.worst > g.worst) g.worst = gp.worst;
    }
    CHECK_MSG(worst_input < tol, "input gradient: worst relative error %.4g", worst_input);
    printf("     %s: %d inputs + %d x %d params, worst error %.2e\n", net->arch, n_inputs, n_names,
           per_param, g.worst);
    free(x);
    free(dx);
    free(r);
}

/* ------------------------------------------------------------------ architectures */

static void test_param_counts(void) {
    struct {
        const char *arch;
        int64_t count;
    } cases[] = {
        {"resnet18", 11689512},       {"resnet34", 21797672},     {"resnet50", 25557032},
        {"resnet101", 44549160},      {"resnet152", 60192808},    {"cifar_resnet20", 269722},
        {"cifar_resnet32", 464154},   {"cifar_resnet44", 658586}, {"cifar_resnet56", 853018},
        {"cifar_resnet110", 1727962},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int cifar = strncmp(cases[i].arch, "cifar", 5) == 0;
        Net *net = resnet_create(cases[i].arch, cifar ? 10 : 1000, NULL, 1);
        CHECK(net != NULL);
        if (!net) continue;
        CHECK_MSG(net_count_params(net, 0) == cases[i].count, "%s: %lld parameters", cases[i].arch,
                  (long long)net_count_params(net, 0));
        CHECK(arch_is_known(cases[i].arch) && arch_is_cifar(cases[i].arch) == cifar);
        net_free(net);
    }
    CHECK(resnet_create("resnet19", 10, NULL, 1) == NULL);
    CHECK(strstr(rn_error(), "resnet19") && strstr(rn_error(), "resnet152"));
    CHECK(resnet_create("resnet18", 0, NULL, 1) == NULL);
    CHECK(!arch_is_known("resnet") && !arch_is_cifar("resnet50"));
}

/* Names, shapes and ORDER equal torchvision's state_dict (fixtures dumped from torch). */
static void compare_with_fixture(const char *arch, const char *path) {
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "%s missing (run the tests from the repository root)", path);
    if (!f) return;
    Net *net = resnet_create(arch, 1000, NULL, 1);
    char line[256];
    int i = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char name[128], shape[64];
        if (sscanf(line, "%127s %63s", name, shape) != 2) continue;
        if (i >= net->n_params) {
            i++;
            continue;
        }
        const Param *p = &net->params[i++];
        char mine[64] = "";
        for (int d = 0; d < p->ndim; d++)
            snprintf(mine + strlen(mine), sizeof mine - strlen(mine), "%s%lld", d ? "," : "",
                     (long long)p->shape[d]);
        CHECK_MSG(strcmp(p->name, name) == 0 && strcmp(mine, shape) == 0,
                  "%s #%d: %s [%s], torchvision %s [%s]", arch, i - 1, p->name, mine, name, shape);
        int buffer = strstr(name, "running_") != NULL;
        CHECK(p->is_buffer == buffer && (p->grad == NULL) == buffer);
    }
    fclose(f);
    CHECK_MSG(i == net->n_params, "%s: %d parameters, torchvision %d", arch, net->n_params, i);
    net_free(net);
}

static void test_torchvision_names(void) {
    compare_with_fixture("resnet18", "tests/fixtures/resnet18_keys.txt");
    compare_with_fixture("resnet50", "tests/fixtures/resnet50_keys.txt");
}

static void test_cifar_names(void) {
    Net *net = resnet_create("cifar_resnet20", 10, NULL, 1);
    /* akamaster/pytorch_resnet_cifar10 state_dict: 97 tensors without num_batches_tracked */
    CHECK(net->n_params == 97);
    Param *p = net_find_param(net, "linear.weight");
    CHECK(p && p->ndim == 2 && p->shape[0] == 10 && p->shape[1] == 64);
    p = net_find_param(net, "layer3.2.bn2.running_var");
    CHECK(p && p->is_buffer && p->numel == 64 && p->data[0] == 1.0f);
    p = net_find_param(net, "layer2.0.conv1.weight");
    CHECK(p && p->shape[0] == 32 && p->shape[1] == 16 && p->shape[2] == 3);
    CHECK(net_find_param(net, "layer2.0.downsample.0.weight") == NULL);
    CHECK(net_find_param(net, "fc.weight") == NULL);
    CHECK(net->nodes[net->pooled_node].op == OP_GAP);
    int shortcuts = 0;
    for (int i = 0; i < net->n_nodes; i++) shortcuts += net->nodes[i].op == OP_SHORTCUT_A;
    CHECK(shortcuts == 2);
    net_free(net);
}

static void test_stages(void) {
    Net *net = resnet_create("resnet50", 5, NULL, 1);
    CHECK(net_find_param(net, "conv1.weight")->stage == STAGE_STEM);
    CHECK(net_find_param(net, "bn1.running_mean")->stage == STAGE_STEM);
    CHECK(net_find_param(net, "layer1.2.bn3.bias")->stage == STAGE_LAYER1);
    CHECK(net_find_param(net, "layer3.0.downsample.0.weight")->stage == STAGE_LAYER3);
    CHECK(net_find_param(net, "layer4.2.conv3.weight")->stage == STAGE_LAYER4);
    CHECK(net_find_param(net, "fc.bias")->stage == STAGE_HEAD);
    for (int i = 1; i < net->n_nodes; i++) CHECK(net->nodes[i].stage >= net->nodes[i - 1].stage);
    net_set_first_trainable(net, STAGE_HEAD);
    CHECK(net_count_params(net, 1) == 5 * 2048 + 5);
    net_set_first_trainable(net, STAGE_LAYER4);
    CHECK(net_count_params(net, 1) > 14000000 && net_count_params(net, 1) < 16000000);
    net_free(net);
}

static void test_init(void) {
    Net *a = resnet_create("resnet18", 10, NULL, 7), *b = resnet_create("resnet18", 10, NULL, 7);
    Net *c = resnet_create("resnet18", 10, NULL, 8);
    int same = 1, differ = 0;
    for (int i = 0; i < a->n_params; i++) {
        same &= memcmp(a->params[i].data, b->params[i].data,
                       sizeof(float) * (size_t)a->params[i].numel) == 0;
        differ |= memcmp(a->params[i].data, c->params[i].data,
                         sizeof(float) * (size_t)a->params[i].numel) != 0;
    }
    CHECK(same && differ);
    /* kaiming_normal_(fan_out): std = sqrt(2 / (512 * 3 * 3)) */
    Param *w = net_find_param(a, "layer4.1.conv2.weight");
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < w->numel; i++) {
        s += w->data[i];
        s2 += (double)w->data[i] * w->data[i];
    }
    double mean = s / w->numel, sd = sqrt(s2 / w->numel - mean * mean);
    CHECK_CLOSE(sd, sqrt(2.0 / (512 * 9)), 0.01 * sqrt(2.0 / (512 * 9)) + 1e-4);
    CHECK(fabs(mean) < 1e-3);
    Param *fc = net_find_param(a, "fc.weight");
    double bound = 1.0 / sqrt(512.0), m = max_abs(fc->data, (size_t)fc->numel);
    CHECK(m <= bound && m > 0.95 * bound);
    CHECK(net_find_param(a, "bn1.weight")->data[3] == 1.0f);
    CHECK(net_find_param(a, "bn1.bias")->data[3] == 0.0f);
    CHECK(net_find_param(a, "layer1.0.bn2.running_mean")->data[0] == 0.0f);
    net_free(a);
    net_free(b);
    net_free(c);
}

/* ------------------------------------------------------------------ shapes and plans */

static void test_shapes(void) {
    struct {
        const char *arch;
        int h, w, fc, fh, fw;
    } cases[] = {
        {"resnet18", 224, 224, 512, 7, 7},    {"resnet18", 32, 32, 512, 1, 1},
        {"resnet34", 225, 200, 512, 8, 7},    {"resnet50", 96, 160, 2048, 3, 5},
        {"resnet50", 1, 1, 2048, 1, 1},       {"resnet50", 64, 64, 2048, 2, 2},
        {"cifar_resnet20", 32, 32, 64, 8, 8}, {"cifar_resnet56", 20, 33, 64, 5, 9},
    };
    Net *net = NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (!net || strcmp(net->arch, cases[i].arch) != 0) {
            net_free(net);
            net = resnet_create(cases[i].arch, 7, NULL, 1);
        }
        CHECK(net_plan(net, 2, cases[i].h, cases[i].w, 0) == 0);
        const Node *f = &net->nodes[net->feature_node];
        CHECK_MSG(f->c == cases[i].fc && f->h == cases[i].fh && f->w == cases[i].fw,
                  "%s %dx%d: features [%d, %d, %d]", cases[i].arch, cases[i].h, cases[i].w, f->c,
                  f->h, f->w);
        CHECK(net_node_size(net, net->pooled_node) == (size_t)cases[i].fc);
        CHECK(net_node_size(net, net->n_nodes - 1) == 7);
    }
    net_free(net);
    net = resnet_create("resnet18", 3, NULL, 1);
    CHECK(net_plan(net, 1, 0, 32, 0) != 0);
    CHECK(net_plan(net, 0, 32, 32, 0) != 0);
    CHECK(net_plan(net, 1, 1 << 20, 32, 0) != 0);
    CHECK(net_plan(net, 1 << 20, 1 << 14, 1 << 14, 0) != 0 && strstr(rn_error(), "GB"));
    /* a head expecting 64 features cannot take a 32-channel map */
    Net *head = head_create(64, 1, 1, 3, NULL, 1);
    head->in_c = 32;
    CHECK(net_plan(head, 1, 1, 1, 0) != 0 && strstr(rn_error(), "fc"));
    net_free(head);
    /* the plan reuses its arena when it does not grow */
    CHECK(net_plan(net, 4, 64, 64, 1) == 0);
    float *arena = net->plan.arena;
    CHECK(net_plan(net, 2, 48, 64, 1) == 0 && net->plan.arena == arena);
    CHECK(net_plan(net, 4, 64, 64, 0) == 0 && net->plan.arena == arena);
    CHECK(net_forward(net, NULL, 1, 0) == NULL);
    CHECK(net_forward(net, arena, 5, 0) == NULL);
    net_free(net);
    /* Memory, resnet50 at 224x224 (each plan below is bigger than the one before, so
     * arena_floats is exactly what it needs). An inference plan shares the outputs by
     * lifetime; training layer4 + head keeps only the outputs their backward reads; full
     * training keeps every output, with gradients sharing memory by lifetime. */
    net = resnet_create("resnet50", 10, NULL, 1);
    CHECK(net_plan(net, 2, 224, 224, 0) == 0);
    size_t outputs = 0, infer = net->plan.arena_floats;
    for (int i = 0; i < net->n_nodes; i++) outputs += 2 * net_node_size(net, i);
    net_set_first_trainable(net, STAGE_LAYER4);
    CHECK(net_plan(net, 2, 224, 224, 1) == 0);
    size_t layer4 = net->plan.arena_floats;
    net_set_first_trainable(net, STAGE_STEM);
    CHECK(net->plan.first_trainable == STAGE_STEM);
    printf("     resnet50 224x224, MB per sample: outputs %.1f; plans: inference %.1f, "
           "training layer4+head %.1f, training all %.1f\n",
           outputs * 2e-6, infer * 2e-6, layer4 * 2e-6, net->plan.arena_floats * 2e-6);
    CHECK(infer < outputs / 5);
    CHECK(layer4 < outputs / 4);
    CHECK(net->plan.arena_floats < outputs * 5 / 4);
    net_free(net);
}

/* Eval forward: each sample independent of the batch; repeatable bit for bit. */
static void test_forward_consistency(void) {
    Net *net = resnet_create("resnet18", 4, NULL, 3);
    const int n = 3, h = 40, w = 28;
    CHECK(net_plan(net, n, h, w, 0) == 0);
    size_t per = (size_t)3 * h * w;
    float *x = malloc(sizeof(float) * n * per), batch_out[12], one[4];
    fill_random(x, n * per, 5);
    const float *y = net_forward(net, x, n, 0);
    CHECK(y != NULL);
    memcpy(batch_out, y, sizeof batch_out);
    for (int i = 0; i < 12; i++) CHECK(isfinite(batch_out[i]));
    for (int s = 0; s < n; s++) {
        y = net_forward(net, x + s * per, 1, 0);
        memcpy(one, y, sizeof one);
        for (int k = 0; k < 4; k++) CHECK_CLOSE(one[k], batch_out[s * 4 + k], 1e-4);
    }
    y = net_forward(net, x, n, 0);
    CHECK(memcmp(y, batch_out, sizeof batch_out) == 0);
    /* forward_upto the pooled features = GAP of the feature map */
    const float *pooled = net_forward_upto(net, x, 1, 0, net->pooled_node);
    const float *fmap = net_node_output(net, net->feature_node);
    const Node *f = &net->nodes[net->feature_node];
    double s = 0;
    for (int i = 0; i < f->h * f->w; i++) s += fmap[5 * f->h * f->w + i];
    CHECK_CLOSE(pooled[5], s / (f->h * f->w), 1e-5);
    free(x);
    net_free(net);
}

/* Batch norm with non-trivial statistics and affine parameters, so folding it matters. */
static void randomise_bn(Net *net, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < net->n_params; i++) {
        Param *p = &net->params[i];
        if (p->ndim != 1 || strstr(p->name, "fc.") || strstr(p->name, "linear.")) continue;
        int is_var = strstr(p->name, "running_var") != NULL;
        int is_gamma = strstr(p->name, ".weight") != NULL;
        for (int64_t k = 0; k < p->numel; k++) {
            float u = rng_uniform(&r);
            p->data[k] = is_var ? 0.5f + u : is_gamma ? 0.5f + u : 0.4f * (u - 0.5f);
        }
    }
}

/* Eval forward with batch norm, ReLU or SiLU and residual sums folded into the convolutions
 * gives the logits and features of the layer-by-layer reference (no_fusion), in inference
 * plans and in the frozen stages of a training plan, and follows parameter changes. With
 * winograd the 3x3 stride-1 convs round differently (by about 1e-6; a training plan's
 * batch norm on two samples then magnifies that in layer4): tol says how close. */
typedef struct {
    const char *bn, *conv, *conv3; /* a batch norm, a conv and a 3x3 conv changed between rounds */
} FusedProbe;
static const FusedProbe resnet_probe = {"bn1", "conv1", "layer1.0.conv2"};
static const FusedProbe effnet_probe = {"features.8.1", "features.8.0", "features.7.0.block.1.0"};

static void fused_vs_reference(const char *arch, int n, int size, int training, int ft,
                               int winograd, double tol) {
    const FusedProbe *probe = strncmp(arch, "efficientnet", 12) ? &resnet_probe : &effnet_probe;
    char name[RN_NAME_MAX];
    Net *net = resnet_create(arch, 5, NULL, 11);
    randomise_bn(net, 12);
    for (int i = 0; i < net->n_nodes; i++) /* EfficientNet's random parts off in training */
        if (net->nodes[i].op == OP_STOCHASTIC_DEPTH || net->nodes[i].op == OP_DROPOUT)
            net->nodes[i].p = 0.0f;
    net_set_first_trainable(net, ft);
    net->winograd = winograd;
    CHECK(net_plan(net, n, size, size, training) == 0);
    int groups = 0;
    for (int i = 0; i < net->n_nodes; i++) groups += net->plan.nodes[i].fuse_tail >= 0;
    CHECK_MSG(groups > 0, "%s: no fused groups", arch);
    size_t per = (size_t)3 * size * size, nf = net_node_size(net, net->feature_node);
    float *x = malloc(sizeof(float) * n * per), ref[5 * 4], first[5 * 4];
    float *feat = malloc(sizeof(float) * n * nf);
    fill_random(x, n * per, 13);
    for (int round = 0; round < 2; round++) {
        net->no_fusion = 1;
        const float *y = net_forward(net, x, n, training);
        CHECK(y != NULL);
        memcpy(ref, y, sizeof(float) * n * 5);
        memcpy(feat, net_node_output(net, net->feature_node), sizeof(float) * n * nf);
        net->no_fusion = 0;
        y = net_forward(net, x, n, training);
        double e = max_rel_diff(y, ref, (size_t)n * 5, 1e-3);
        double ef = max_rel_diff(net_node_output(net, net->feature_node), feat, n * nf, 1e-3);
        printf("     %s %s plan%s: fused vs reference, logits %.2e, features %.2e\n", arch,
               training ? "training (frozen)" : "inference", winograd ? ", Winograd" : "", e, ef);
        CHECK(e <= tol && ef <= tol);
        if (round == 1)
            CHECK_MSG(max_rel_diff(ref, first, (size_t)n * 5, 1e-3) > 1e-3,
                      "%s: the changed parameters changed nothing (%.2g)", arch,
                      max_rel_diff(ref, first, (size_t)n * 5, 1e-3));
        /* new parameters take effect at once: nothing folded is cached */
        memcpy(first, ref, sizeof(float) * n * 5);
        snprintf(name, sizeof name, "%s.running_mean", probe->bn);
        net_find_param(net, name)->data[0] += 0.5f;
        snprintf(name, sizeof name, "%s.weight", probe->bn);
        net_find_param(net, name)->data[1] *= 2.0f;
        snprintf(name, sizeof name, "%s.weight", probe->conv);
        Param *w = net_find_param(net, name);
        for (int64_t k = 0; k < w->numel; k++) w->data[k] *= 0.9f;
        snprintf(name, sizeof name, "%s.weight", probe->conv3); /* Winograd remakes its own */
        w = net_find_param(net, name);
        for (int64_t k = 0; k < w->numel; k += 3) w->data[k] *= -1.5f;
    }
    free(x);
    free(feat);
    net_free(net);
}

static void test_fused_eval_forward(void) {
    int big = !test_emulated(); /* ResNet-50 on x86-64 only: minutes under qemu */
    fused_vs_reference("cifar_resnet20", 3, 16, 0, STAGE_STEM, 0, 1e-5);
    fused_vs_reference("resnet18", 2, 40, 0, STAGE_STEM, 0, 1e-5);
    if (big) fused_vs_reference("resnet50", 2, 64, 0, STAGE_STEM, 0, 1e-5);
    if (big) fused_vs_reference("resnet50", 2, 64, 1, STAGE_LAYER4, 0, 1e-5);
    fused_vs_reference("cifar_resnet20", 3, 16, 0, STAGE_STEM, 1, 2e-5);
    fused_vs_reference("resnet18", 2, 40, 0, STAGE_STEM, 1, 2e-5);
    if (big) fused_vs_reference("resnet50", 2, 64, 0, STAGE_STEM, 1, 2e-5);
    if (big) fused_vs_reference("resnet50", 2, 64, 1, STAGE_LAYER4, 1, 2e-4);
    /* conv -> BN -> SiLU groups, depthwise ones among them; frozen up to features.6 */
    fused_vs_reference("efficientnet_b0", 2, 64, 0, 0, 0, 1e-5);
    fused_vs_reference("efficientnet_b0", 2, 64, 1, 6, 0, 1e-5);
}

/* net->constant_weights: Winograd's weights made once with no copy of the weights kept,
 * the same logits bit for bit; withdrawn without a new plan, a changed weight still takes
 * effect (they are then made every forward). */
static void test_constant_weights(void) {
    Net *net = resnet_create("resnet18", 5, NULL, 21);
    randomise_bn(net, 22);
    const int n = 2, size = 40;
    size_t per = (size_t)3 * size * size;
    float *x = malloc(sizeof(float) * n * per), y0[2 * 5], y1[2 * 5], y2[2 * 5];
    fill_random(x, n * per, 23);
    net->winograd = 1;
    for (int constant = 0; constant < 2; constant++) {
        net->constant_weights = constant;
        CHECK(net_plan(net, n, size, size, 0) == 0);
        int made = 0, copies = 0;
        for (int i = 0; i < net->n_nodes; i++) {
            made += net->plan.nodes[i].wino_u != NULL;
            copies += net->plan.nodes[i].wino_w != NULL;
        }
        CHECK_MSG(made > 0 && copies == (constant ? 0 : made), "constant %d: %d made, %d copies",
                  constant, made, copies);
        const float *y = net_forward(net, x, n, 0);
        CHECK(y != NULL);
        memcpy(constant ? y1 : y0, y, sizeof y0);
        y = net_forward(net, x, n, 0); /* made once: the second forward is the first's */
        CHECK(y && memcmp(y, constant ? y1 : y0, sizeof y0) == 0);
    }
    CHECK(memcmp(y0, y1, sizeof y0) == 0);
    net->constant_weights = 0; /* withdrawn, no new plan */
    Param *w = net_find_param(net, "layer1.0.conv2.weight");
    for (int64_t k = 0; k < w->numel; k += 3) w->data[k] *= -1.5f;
    const float *y = net_forward(net, x, n, 0);
    CHECK(y != NULL);
    memcpy(y2, y, sizeof y2);
    CHECK(net_plan(net, n, size, size, 0) == 0); /* a fresh plan, a copy kept */
    y = net_forward(net, x, n, 0);
    CHECK(y && memcmp(y, y2, sizeof y2) == 0 && memcmp(y2, y0, sizeof y0) != 0);
    free(x);
    net_free(net);
}

/* net_forward_dataset, and the same in two steps with the loader started before the net
 * is planned (what ./infer does while the weights load): the same rows, bit for bit, for
 * a batch that does not divide the items. */
typedef struct {
    float *rows;
    int k, seen;
} Rows;

static void keep_rows(void *ctx, int n, const int *idx, const int *labels, const float *out) {
    Rows *r = ctx;
    for (int i = 0; i < n; i++) memcpy(r->rows + (size_t)idx[i] * r->k, out + (size_t)i * r->k,
                                       sizeof(float) * r->k);
    r->seen += n;
    (void)labels;
}

static void test_forward_early_loader(void) {
    const int n = 11, k = 10, batch = 4;
    Dataset d;
    memset(&d, 0, sizeof d);
    d.n = n;
    d.pixel_w = d.pixel_h = 32;
    d.pixels = rn_alloc((size_t)n * 32 * 32 * 3);
    d.labels = rn_alloc(sizeof(int) * n);
    for (int i = 0; i < n * 32 * 32 * 3; i++) d.pixels[i] = (uint8_t)((i * 2654435761u) >> 24);
    for (int i = 0; i < n; i++) d.labels[i] = i % k;
    const Preprocess prep = {PREP_TORCHVISION, 32, 1.0f};
    Net *net = resnet_create("cifar_resnet20", k, NULL, 3);
    float *a = rn_calloc((size_t)n * k, sizeof(float)), *b = rn_calloc((size_t)n * k, sizeof(float));
    Rows ra = {a, k, 0}, rb = {b, k, 0};
    CHECK(net_plan(net, batch, 32, 32, 0) == 0);
    CHECK(net_forward_dataset(net, -1, &d, &prep, batch, 2, "a", keep_rows, &ra) == 0);
    net_free(net);
    Loader *l = net_dataset_loader(&d, &prep, batch, 2); /* decoding before the net exists */
    CHECK(l != NULL);
    net = resnet_create("cifar_resnet20", k, NULL, 3);
    CHECK(net_plan(net, batch, 32, 32, 0) == 0);
    CHECK(l && net_forward_loader(net, -1, l, &d, &prep, batch, "b", keep_rows, &rb) == 0);
    CHECK(ra.seen == n && rb.seen == n && memcmp(a, b, sizeof(float) * n * k) == 0);
    rn_free(a);
    rn_free(b);
    net_free(net);
    dataset_free(&d);
}

/* ------------------------------------------------------------------ gradients */

static void test_gradcheck_cifar_resnet20(void) {
    if (test_emulated())
        SKIP("RN_TEST_EMULATED=1: minutes under qemu; test_layers checks each layer");
    Net *net = resnet_create("cifar_resnet20", 5, NULL, 21);
    /* the stock init makes near-identity blocks; perturb BN so every path matters */
    for (int i = 0; i < net->n_params; i++) {
        Param *p = &net->params[i];
        if (strstr(p->name, "bn") && !p->is_buffer)
            for (int64_t k = 0; k < p->numel; k++)
                p->data[k] += 0.3f * (hash_uniform(i, (uint32_t)k) - 0.5f);
    }
    const char *names[] = {"conv1.weight",          "bn1.weight",
                           "layer1.0.conv1.weight", "layer1.2.bn2.bias",
                           "layer2.0.conv2.weight", "layer2.0.bn1.weight",
                           "layer3.2.conv2.weight", "layer3.1.bn2.bias",
                           "linear.weight",         "linear.bias"};
    gradcheck_net(net, 3, 16, 16, names, 10, 16, 3, 1e-3f, 0.05);
    net_free(net);
}

static void test_gradcheck_mlp_head(void) {
    HeadSpec h;
    CHECK(head_parse("mlp:7,6:dropout=0.3:bn", &h) == 0);
    Net *net = head_create(9, 2, 3, 4, &h, 5);
    CHECK(net != NULL);
    const char *names[] = {"head.0.weight", "head.0.bias",   "head.1.weight",
                           "head.1.bias",   "head.4.weight", "head.5.weight",
                           "head.8.bias",   "head.9.weight", "head.9.bias"};
    gradcheck_net(net, 5, 2, 3, names, 9, 20, 4, 1e-3f, 0.01);
    net_free(net);
}

static void test_gradcheck_inception_head(void) {
    HeadSpec h;
    CHECK(head_parse("inception:4:dropout=0.5", &h) == 0);
    Net *net = head_create(6, 5, 4, 3, &h, 5);
    CHECK(net != NULL);
    const char *names[] = {"head.branch1x1.weight", "head.branch1x1.bias",
                           "head.branch3x3.weight", "head.branch3x3.bias",
                           "head.branch5x5.weight", "head.branch5x5.bias",
                           "head.fc.weight",        "head.fc.bias"};
    gradcheck_net(net, 3, 5, 4, names, 8, 20, 4, 1e-3f, 0.01);
    net_free(net);
}

/* Gradients are the same whether or not dx is asked for; two backward passes add up. */
static void test_backward_accumulates(void) {
    Net *net = resnet_create("cifar_resnet20", 3, NULL, 2);
    CHECK(net_plan(net, 2, 12, 12, 1) == 0);
    float x[2 * 3 * 12 * 12], dx[2 * 3 * 12 * 12], r[6];
    fill_random(x, sizeof x / sizeof x[0], 1);
    fill_random(r, 6, 2);
    Param *p = net_find_param(net, "layer1.1.conv2.weight");
    float *g1 = malloc(sizeof(float) * (size_t)p->numel);
    net_zero_grad(net);
    net_forward(net, x, 2, 1);
    net_backward(net, r, 2, NULL);
    memcpy(g1, p->grad, sizeof(float) * (size_t)p->numel);
    CHECK(max_abs(g1, (size_t)p->numel) > 0);
    net_forward(net, x, 2, 1);
    net_backward(net, r, 2, dx);
    double worst = 0;
    for (int64_t i = 0; i < p->numel; i++) {
        double e = fabs(p->grad[i] - 2.0 * g1[i]);
        if (e > worst) worst = e;
    }
    CHECK(worst <= 1e-5 * (1 + max_abs(g1, (size_t)p->numel)));
    net_zero_grad(net);
    CHECK(max_abs(p->grad, (size_t)p->numel) == 0);
    /* backward without a training plan fails cleanly */
    CHECK(net_plan(net, 2, 12, 12, 0) == 0);
    rn_set_error("none");
    net_backward(net, r, 2, NULL);
    CHECK(strstr(rn_error(), "training plan") != NULL);
    free(g1);
    net_free(net);
}

/* first_trainable = layer4: earlier parameters get no gradient, frozen batch norms keep
 * their running statistics, trainable ones update them. */
static void check_frozen(const Net *net, int ft) {
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->params[i];
        if (p->is_buffer) {
            int moved = 0;
            for (int64_t k = 0; k < p->numel; k++)
                moved |= p->data[k] != (strstr(p->name, "running_var") ? 1.0f : 0.0f);
            CHECK_MSG(moved == (p->stage >= ft), "%s", p->name);
        } else {
            double g = max_abs(p->grad, (size_t)p->numel);
            CHECK_MSG((g > 0) == (p->stage >= ft), "%s: |grad| %g", p->name, g);
        }
    }
}

static void test_frozen_stages(void) {
    Net *net = resnet_create("resnet18", 3, NULL, 4);
    net->winograd = 0; /* the plans below compare bit for bit; only one of them fuses */
    net_set_first_trainable(net, STAGE_LAYER4);
    CHECK(net_plan(net, 2, 32, 32, 1) == 0);
    size_t frozen_floats = net->plan.arena_floats;
    float *x = malloc(sizeof(float) * 2 * 3 * 32 * 32);
    float *dx = malloc(sizeof(float) * 2 * 3 * 32 * 32);
    float r[6];
    fill_random(x, 2 * 3 * 32 * 32, 3);
    fill_random(r, 6, 4);
    net_zero_grad(net);
    CHECK(net_forward(net, x, 2, 1) != NULL);
    net_backward(net, r, 2, NULL);
    check_frozen(net, STAGE_LAYER4);
    Param *w = net_find_param(net, "layer4.0.conv1.weight");
    float *g1 = malloc(sizeof(float) * (size_t)w->numel);
    memcpy(g1, w->grad, sizeof(float) * (size_t)w->numel);
    /* the plan kept no outputs of the frozen stages: no input gradient from it */
    net_zero_grad(net);
    rn_set_error("none");
    net_backward(net, r, 2, dx);
    CHECK(strstr(rn_error(), "net_plan") != NULL);
    CHECK(max_abs(net_find_param(net, "fc.weight")->grad, 3 * 512) == 0);
    /* lowering first_trainable re-plans; raising it again keeps that plan */
    net_set_first_trainable(net, STAGE_STEM);
    CHECK(net->plan.first_trainable == STAGE_STEM && net->plan.arena_floats > frozen_floats);
    net_set_first_trainable(net, STAGE_LAYER4);
    CHECK(net_forward(net, x, 2, 1) != NULL);
    net_backward(net, r, 2, dx);
    check_frozen(net, STAGE_LAYER4);
    CHECK(max_abs(dx, 2 * 3 * 32 * 32) > 0);
    /* the smaller plan computed the same gradients */
    CHECK(max_rel_diff(w->grad, g1, (size_t)w->numel, 1e-6) < 1e-5);
    free(g1);
    /* everything frozen: backward leaves all gradients untouched */
    net_set_first_trainable(net, STAGE_COUNT);
    net_zero_grad(net);
    net_forward(net, x, 2, 1);
    net_backward(net, r, 2, NULL);
    for (int i = 0; i < net->n_params; i++)
        if (net->params[i].grad)
            CHECK(max_abs(net->params[i].grad, (size_t)net->params[i].numel) == 0);
    CHECK(net_count_params(net, 1) == 0);
    free(x);
    free(dx);
    net_free(net);
}

/* net_backward_step (updates while backward runs) against net_zero_grad + net_backward +
 * optimizer_step: bit-identical parameters and BN statistics after three steps, for Adam,
 * AdamW and SGD with momentum, on a trainable head with BN and dropout over a partly
 * frozen CIFAR ResNet-20; then without the gradient buffers at all. */
static void test_fused_optimizer_step(void) {
    const OptType types[3] = {OPT_ADAM, OPT_ADAMW, OPT_SGD};
    HeadSpec h;
    CHECK(head_parse("mlp:16:dropout=0.3:bn", &h) == 0);
    const int n = 4, k = 5, size = 16;
    float *x = malloc(sizeof(float) * n * 3 * size * size), r[20];
    fill_random(x, (size_t)n * 3 * size * size, 11);
    fill_random(r, (size_t)n * k, 12);
    for (int t = 0; t < 3; t++) {
        Net *a = resnet_create("cifar_resnet20", k, &h, 5),
            *b = resnet_create("cifar_resnet20", k, &h, 5);
        net_set_first_trainable(a, STAGE_LAYER2);
        net_set_first_trainable(b, STAGE_LAYER2);
        CHECK(net_plan(a, n, size, size, 1) == 0 && net_plan(b, n, size, size, 1) == 0);
        OptConfig oc = opt_default(types[t], 0.01f);
        oc.weight_decay = 1e-3f;
        Optimizer *oa = optimizer_create(a, &oc), *ob = optimizer_create(b, &oc);
        if (t == 2) net_release_grads(b); /* the fused step never needed them */
        for (int step = 0; step < 3; step++) {
            net_zero_grad(a);
            CHECK(net_forward(a, x, n, 1) != NULL && net_forward(b, x, n, 1) != NULL);
            net_backward(a, r, n, NULL);
            optimizer_step(oa, a);
            CHECK(net_backward_step(b, r, n, ob) == 0);
        }
        int same = 1, changed = 0;
        for (int i = 0; i < a->n_params; i++) {
            const Param *pa = &a->params[i], *pb = &b->params[i];
            same &= memcmp(pa->data, pb->data, sizeof(float) * (size_t)pa->numel) == 0;
            if (!pa->is_buffer && pa->stage >= STAGE_LAYER2)
                changed += max_abs(oa->m[i], (size_t)pa->numel) > 0;
        }
        CHECK_MSG(same, "%s: fused step differs", opt_name(types[t]));
        CHECK(changed > 10 && oa->step == 3 && ob->step == 3);
        if (t == 2) { /* without gradient buffers, net_backward refuses */
            rn_set_error("none");
            net_backward(b, r, n, NULL);
            CHECK(strstr(rn_error(), "net_release_grads") != NULL);
        }
        optimizer_free(oa);
        optimizer_free(ob);
        net_free(a);
        net_free(b);
    }
    free(x);
}

/* A low-memory training plan (expanding 1x1 convs recomputed in backward) makes the same
 * gradients and input gradient, bit for bit, from a smaller arena: ResNet-50 (bottleneck
 * conv3 and downsample) and ResNet-18 (downsample only), also with frozen stages. */
static void test_low_memory_plan(void) {
    if (test_emulated()) SKIP("RN_TEST_EMULATED=1: ResNet-50 training steps, minutes under qemu");
    const char *archs[2] = {"resnet50", "resnet18"};
    const int n = 2, size = 32, k = 3;
    float *x = malloc(sizeof(float) * n * 3 * size * size);
    float *dx1 = malloc(sizeof(float) * n * 3 * size * size);
    float *dx2 = malloc(sizeof(float) * n * 3 * size * size), r[6];
    fill_random(x, (size_t)n * 3 * size * size, 21);
    fill_random(r, (size_t)n * k, 22);
    for (int t = 0; t < 4; t++) {
        Net *a = resnet_create(archs[t % 2], k, NULL, 6),
            *b = resnet_create(archs[t % 2], k, NULL, 6);
        int ft = t < 2 ? STAGE_STEM : STAGE_LAYER3;
        net_set_first_trainable(a, ft);
        net_set_first_trainable(b, ft);
        CHECK(b->low_memory == 1); /* the default */
        a->low_memory = 0;
        CHECK(net_plan(a, n, size, size, 1) == 0 && net_plan(b, n, size, size, 1) == 0);
        if (t == 0) /* ResNet-18 only drops its few downsample outputs */
            CHECK_MSG(b->plan.arena_floats < 0.8 * a->plan.arena_floats,
                      "resnet50: low-memory arena %zu floats, normal %zu", b->plan.arena_floats,
                      a->plan.arena_floats);
        int recomputed = 0;
        for (int i = 0; i < b->n_nodes; i++)
            recomputed += b->nodes[i].op == OP_CONV && b->plan.nodes[i].recompute;
        CHECK(recomputed >= (t % 2 ? 1 : 4));
        for (int pass = 0; pass < 2; pass++) { /* twice: nothing stale survives a pass */
            net_zero_grad(a);
            net_zero_grad(b);
            CHECK(net_forward(a, x, n, 1) != NULL && net_forward(b, x, n, 1) != NULL);
            net_backward(a, r, n, ft == STAGE_STEM ? dx1 : NULL);
            net_backward(b, r, n, ft == STAGE_STEM ? dx2 : NULL);
        }
        int same = ft != STAGE_STEM || memcmp(dx1, dx2, sizeof(float) * n * 3 * size * size) == 0;
        for (int i = 0; i < a->n_params; i++)
            if (a->params[i].grad)
                same &= memcmp(a->params[i].grad, b->params[i].grad,
                               sizeof(float) * (size_t)a->params[i].numel) == 0;
        CHECK_MSG(same, "%s (first trainable stage %d): low-memory gradients differ", archs[t % 2],
                  ft);
        net_free(a);
        net_free(b);
    }
    free(x);
    free(dx1);
    free(dx2);
}

/* BatchNorm in training needs more than one value per channel, like torch. */
static void test_bn_needs_two_values(void) {
    HeadSpec h;
    head_parse("mlp:4:bn", &h);
    Net *net = head_create(5, 1, 1, 2, &h, 1);
    float x[5] = {1, 2, 3, 4, 5};
    CHECK(net_plan(net, 1, 1, 1, 1) == 0);
    CHECK(net_forward(net, x, 1, 1) == NULL && strstr(rn_error(), "head.0"));
    CHECK(net_forward(net, x, 1, 0) != NULL);
    net_free(net);
}

/* ------------------------------------------------------------------ heads */

static void test_head_names(void) {
    HeadSpec h;
    CHECK(head_parse("mlp:512,256:dropout=0.2:bn", &h) == 0);
    Net *net = resnet_create("resnet50", 6, &h, 1);
    /* Sequential(BN(2048), Linear(2048,512), ReLU, Dropout, BN(512), Linear(512,256), ReLU,
     *            Dropout, BN(256), Linear(256,6)) */
    const char *want[][2] = {{"head.0.running_var", "2048"}, {"head.1.weight", "512,2048"},
                             {"head.4.weight", "512"},       {"head.5.weight", "256,512"},
                             {"head.8.bias", "256"},         {"head.9.weight", "6,256"}};
    for (int i = 0; i < 6; i++) {
        Param *p = net_find_param(net, want[i][0]);
        char s[64] = "";
        for (int d = 0; p && d < p->ndim; d++)
            snprintf(s + strlen(s), sizeof s - strlen(s), "%s%lld", d ? "," : "",
                     (long long)p->shape[d]);
        CHECK_MSG(p && strcmp(s, want[i][1]) == 0, "%s [%s]", want[i][0], s);
    }
    CHECK(net_find_param(net, "fc.weight") == NULL);
    CHECK(net_find_param(net, "head.10.weight") == NULL);
    CHECK(net_find_param(net, "head.1.weight")->stage == STAGE_HEAD);
    /* a head-only net has the same names and shapes: weights copy across */
    Net *head = head_create(2048, 1, 1, 6, &h, 9);
    int n_head = 0;
    for (int i = 0; i < net->n_params; i++) n_head += strncmp(net->params[i].name, "head.", 5) == 0;
    CHECK(head->n_params == n_head);
    CHECK(net_copy_params(net, head) == n_head);
    CHECK(memcmp(net_find_param(net, "head.5.weight")->data,
                 net_find_param(head, "head.5.weight")->data, sizeof(float) * 256 * 512) == 0);
    net_free(head);
    net_free(net);

    CHECK(head_parse("inception:32:dropout=0.25", &h) == 0);
    net = resnet_create("resnet18", 4, &h, 1);
    CHECK(net->pooled_node == -1);
    CHECK(net_find_param(net, "head.branch5x5.weight")->shape[3] == 5);
    CHECK(net_find_param(net, "head.branch3x3.bias")->numel == 32);
    CHECK(net_find_param(net, "head.fc.weight")->shape[1] == 96);
    CHECK(net_plan(net, 2, 64, 64, 0) == 0);
    CHECK(net->nodes[net->n_nodes - 1].c == 4);
    head = head_create(512, 2, 2, 4, &h, 3);
    CHECK(net_copy_params(net, head) == 8 && head->n_params == 8);
    /* the head net on the feature map equals the full net's head */
    float x[2 * 3 * 64 * 64];
    fill_random(x, sizeof x / sizeof x[0], 8);
    const float *y = net_forward(net, x, 2, 0);
    float logits[8];
    memcpy(logits, y, sizeof logits);
    CHECK(net_plan(head, 2, 2, 2, 0) == 0);
    y = net_forward(head, net_node_output(net, net->feature_node), 2, 0);
    for (int i = 0; i < 8; i++) CHECK_CLOSE(y[i], logits[i], 1e-5);
    net_free(head);
    net_free(net);

    /* CIFAR checkpoints call the plain head "linear": it still copies across */
    net = resnet_create("cifar_resnet20", 10, NULL, 1);
    head = head_create(64, 1, 1, 10, NULL, 2);
    CHECK(net_find_param(head, "fc.weight") && net_find_param(net, "linear.weight"));
    CHECK(net_copy_params(net, head) == 2);
    CHECK(memcmp(net_find_param(net, "linear.weight")->data,
                 net_find_param(head, "fc.weight")->data, sizeof(float) * 640) == 0);
    CHECK(net_copy_params(head, net) == 2);
    net_free(head);
    net_free(net);
}

static void test_head_text(void) {
    const char *canonical[] = {"linear",
                               "mlp:256",
                               "mlp:512,256,128,64:dropout=0.2:bn",
                               "mlp:3:bn",
                               "inception:128:dropout=0.5",
                               "inception:64:dropout=0",
                               "mlp:10,20:dropout=0.12345679"};
    char out[128];
    HeadSpec h, h2;
    for (size_t i = 0; i < sizeof canonical / sizeof canonical[0]; i++) {
        CHECK_MSG(head_parse(canonical[i], &h) == 0, "%s: %s", canonical[i], rn_error());
        head_format(&h, out, sizeof out);
        CHECK_MSG(strcmp(out, canonical[i]) == 0, "%s -> %s", canonical[i], out);
        CHECK(head_parse(out, &h2) == 0 && memcmp(&h, &h2, sizeof h) == 0);
    }
    CHECK(head_parse("mlp:512,256,128,64:dropout=0.2:bn", &h) == 0);
    CHECK(h.type == HEAD_MLP && h.n_hidden == 4 && h.hidden[3] == 64 && h.batchnorm);
    CHECK(FLOAT_EQ(h.dropout, 0.2f));
    CHECK(head_parse("inception", &h) == 0 && h.branch_filters == 128 && h.dropout == 0.5f);
    CHECK(head_parse("mlp:64:bn:dropout=0.1", &h) == 0);
    head_format(&h, out, sizeof out);
    CHECK(strcmp(out, "mlp:64:dropout=0.1:bn") == 0);
    const char *bad[] = {"",
                         "mlp",
                         "mlp:",
                         "mlp:0",
                         "mlp:12x",
                         "mlp:1,,2",
                         "mlp:-3",
                         "mlp:5:dropout=1",
                         "mlp:5:dropout=abc",
                         "mlp:5:batchnorm",
                         "linear:5",
                         "inception:0",
                         "inception:dropout=2",
                         "conv",
                         "mlp:1,2,3,4,5,6,7,8,9",
                         "mlp:5:bn:bn",
                         "inception:8:bn"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rn_set_error("none");
        CHECK_MSG(head_parse(bad[i], &h) != 0, "\"%s\" was accepted", bad[i]);
        CHECK_MSG(strcmp(rn_error(), "none") != 0 && strstr(rn_error(), "head"), "\"%s\": %s",
                  bad[i], rn_error());
    }
    CHECK(head_parse(NULL, &h) != 0);
    head_format(NULL, out, sizeof out);
    CHECK(strcmp(out, "linear") == 0);
    head_format(&(HeadSpec){HEAD_MLP, 2, {5, 6}, 0, 0, 0}, out, 6);
    CHECK(strcmp(out, "mlp:5") == 0); /* truncated, still terminated */
}

/* A plan larger than one object can be (32-bit size_t: 2 GiB) is refused with a message,
 * never allocated with a wrapped size. 64-bit hosts only check that it is not refused for
 * that reason at a size they can hold. */
static void test_plan_size_limit(void) {
    Net *net = resnet_create("resnet50", 10, NULL, 1);
    CHECK(net != NULL);
    if (!net) return;
    if (sizeof(size_t) == 4) {
        CHECK(net_plan(net, 256, 224, 224, 1) == -1);
        CHECK_MSG(strstr(rn_error(), "32-bit build") != NULL, "%s", rn_error());
        CHECK(net_plan(net, 1, 32, 32, 1) == 0); /* and the net still plans small batches */
    } else {
        CHECK(net_plan(net, 2, 64, 64, 1) == 0);
    }
    net_free(net);
}

/* ------------------------------------------------------------------ the reference network */

/* ||a - b||_2 / ||b||_2: a gradient's relative error as a whole. Element by element, two
 * correct implementations can disagree wherever rounding moves a batch-norm output across
 * a ReLU's kink (the mask flips and a whole receptive field's gradient with it). */
static double rel_l2(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

static double l2(const float *a, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    return sqrt(s);
}

/* The parameter is the bias of a conv whose only consumer is a training-mode batch norm
 * (VGG-16-BN, Keras' ResNet50): the norm subtracts the batch mean, which cancels the bias,
 * so its gradient is zero but for rounding, and two correct runs round differently. */
static int bn_cancelled_bias(const Net *net, int param) {
    for (int i = 0; i < net->n_nodes; i++) {
        const Node *nd = &net->nodes[i];
        if (nd->op != OP_CONV || nd->bias != param) continue;
        int consumers = 0, bn = 0;
        for (int j = i + 1; j < net->n_nodes; j++)
            for (int k = 0; k < net->nodes[j].n_in; k++)
                if (net->nodes[j].in[k] == i) {
                    consumers++;
                    bn = net->nodes[j].op == OP_BN;
                }
        return consumers == 1 && bn;
    }
    return 0;
}

/* Worst rel_l2 over every parameter gradient of a against b. Two kinds are zero in exact
 * arithmetic, so both runs hold only rounding: a BN-cancelled bias (bn_cancelled_bias)
 * and a gradient that vanishes (below 1e-6 of the largest gradient norm: an MBConv's
 * projection BN beta, whose shift the next training-mode batch norms remove); they are
 * measured against the largest gradient norm in the network, any other gradient against
 * its own norm or 1e-4 of the largest, whichever is larger. */
static double grads_rel_l2(const Net *a, const Net *b, const char **worst_name) {
    double worst = 0, largest = 0;
    for (int i = 0; i < b->n_params; i++)
        if (b->params[i].grad)
            largest = fmax(largest, l2(b->params[i].grad, (size_t)b->params[i].numel));
    for (int i = 0; i < a->n_params; i++) {
        const Param *p = &a->params[i], *q = &b->params[i];
        if (!p->grad || !q->grad) continue;
        double d = 0;
        for (int64_t j = 0; j < p->numel; j++)
            d += ((double)p->grad[j] - q->grad[j]) * ((double)p->grad[j] - q->grad[j]);
        double own = l2(q->grad, (size_t)q->numel);
        double scale =
            bn_cancelled_bias(b, i) || own < 1e-6 * largest ? largest : fmax(own, 1e-4 * largest);
        double e = sqrt(d) / fmax(scale, 1e-30);
        if (e > worst) {
            worst = e;
            *worst_name = p->name;
        }
    }
    return worst;
}

/* The discrete choices a training forward makes, in node order, collected by a forward
 * hook: every ReLU's mask (output > 0) and every max-pool's argmax. Where rounding makes
 * two correct runs choose differently, what is behind the choice differs. */
typedef struct {
    int32_t *choice;
    size_t len, cap;
    size_t relus, pools; /* values of each kind */
} ChoiceLog;

static void choice_hook(void *ctx, const Net *net, int node, int n, const float *out) {
    ChoiceLog *m = ctx;
    const Node *nd = &net->nodes[node];
    if (nd->op != OP_RELU && nd->op != OP_ADD_RELU && nd->op != OP_MAXPOOL) return;
    size_t count = (size_t)n * net_node_size(net, node);
    if (m->len + count > m->cap) {
        m->cap = 2 * (m->len + count);
        m->choice = realloc(m->choice, m->cap * sizeof *m->choice);
    }
    const int32_t *argmax = (const int32_t *)(const void *)nd->save0;
    for (size_t i = 0; i < count; i++)
        m->choice[m->len++] = nd->op == OP_MAXPOOL ? argmax[i] : out[i] > 0;
    if (nd->op == OP_MAXPOOL)
        m->pools += count;
    else
        m->relus += count;
}

/* The fast network (fused eval, Winograd, recomputing training plans, SIMD GEMM) against
 * the reference one (net->reference: naive kernels accumulating in double, layer by layer),
 * same weights, for one architecture: eval logits and features, then a training step's
 * logits, input gradient and every parameter gradient. Stated tolerances: eval outputs
 * within 1e-4 of the tensor's largest value; training logits within 2e-3 of it (batch norm
 * over a small batch magnifies rounding); gradients within 1e-3 in relative L2 norm
 * (rel_l2) of each parameter's and of the input's. Where rounding put some ReLU input on
 * the other side of the kink, or moved a max-pool's argmax between near-equal inputs (the
 * choices differ: `flips`), the gradients behind it differ by up to a few percent in two
 * correct implementations; then they are held within 0.3. */
static void reference_vs_fast(const char *arch, int n, int size) {
    Net *fast = resnet_create(arch, 5, NULL, 21), *ref = resnet_create(arch, 5, NULL, 21);
    Net *both[2] = {fast, ref};
    for (int k = 0; k < 2; k++) {
        randomise_bn(both[k], 22);
        /* 600 residual blocks (cifar_resnet1202) overflow in eval unless each branch is
         * small, as training makes it */
        for (int i = 0; fast->n_nodes > 2000 && i < both[k]->n_params; i++)
            if (strstr(both[k]->params[i].name, "bn2.weight"))
                for (int64_t j = 0; j < both[k]->params[i].numel; j++)
                    both[k]->params[i].data[j] *= 0.05f;
    }
    ref->reference = 1;
    const size_t per = (size_t)3 * size * size;
    float *x = malloc(sizeof(float) * n * per), *dx_f = malloc(sizeof(float) * n * per);
    float *dx_r = malloc(sizeof(float) * n * per), r[4 * 5], lf[4 * 5];
    fill_random(x, n * per, 23);
    fill_random(r, (size_t)n * 5, 24);
    /* eval */
    CHECK(net_plan(fast, n, size, size, 0) == 0 && net_plan(ref, n, size, size, 0) == 0);
    const float *yf = net_forward(fast, x, n, 0), *yr = net_forward(ref, x, n, 0);
    CHECK(yf && yr);
    double e_eval = max_rel_diff(yf, yr, (size_t)n * 5, 1e-3);
    size_t nf = net_node_size(fast, fast->feature_node) * n;
    double e_feat = max_rel_diff(net_node_output(fast, fast->feature_node),
                                 net_node_output(ref, ref->feature_node), nf, 1e-3);
    CHECK_MSG(max_abs(yr, (size_t)n * 5) < 1e30, "%s: eval logits overflow", arch);
    /* training */
    CHECK(net_plan(fast, n, size, size, 1) == 0 && net_plan(ref, n, size, size, 1) == 0);
    net_zero_grad(fast);
    net_zero_grad(ref);
    ChoiceLog masks[2] = {{0}, {0}};
    for (int k = 0; k < 2; k++) {
        both[k]->forward_hook = choice_hook;
        both[k]->hook_ctx = &masks[k];
        yf = net_forward(both[k], x, n, 1);
        both[k]->forward_hook = NULL;
        if (k == 0) memcpy(lf, yf, sizeof(float) * n * 5);
    }
    yr = net_node_output(ref, ref->n_nodes - 1);
    size_t flips = 0;
    for (size_t i = 0; i < masks[0].len && masks[0].len == masks[1].len; i++)
        flips += masks[0].choice[i] != masks[1].choice[i];
    /* EfficientNet has neither ReLU nor max pool: no choices */
    CHECK(masks[0].len == masks[1].len && (masks[0].len > 0 || strstr(arch, "efficientnet")));
    double e_train = max_rel_diff(lf, yr, (size_t)n * 5, 1e-3);
    net_backward(fast, r, n, dx_f);
    net_backward(ref, r, n, dx_r);
    double e_dx = rel_l2(dx_f, dx_r, n * per);
    const char *worst = "";
    double e_grad = grads_rel_l2(fast, ref, &worst), tol = flips ? 0.3 : 1e-3;
    printf("     %-16s %dx%d batch %d: eval logits %.1e features %.1e; train logits %.1e; "
           "flips %zu of %zu ReLU + %zu max-pool; rel. L2: input grad %.1e, param grads %.1e "
           "(%s)\n",
           arch, size, size, n, e_eval, e_feat, e_train, flips, masks[0].relus, masks[0].pools,
           e_dx, e_grad, worst);
    CHECK_MSG(e_eval <= 1e-4 && e_feat <= 1e-4, "%s eval", arch);
    CHECK_MSG(e_train <= 2e-3 && e_dx <= tol && e_grad <= tol, "%s training", arch);
    free(masks[0].choice);
    free(masks[1].choice);
    free(x);
    free(dx_f);
    free(dx_r);
    net_free(fast);
    net_free(ref);
}

/* Every registered architecture. Small inputs keep the naive kernels quick: CIFAR nets at
 * 8 px, ImageNet nets at 40 px (layer4 2x2). The flip-free cases (the CIFAR nets,
 * ResNet-18/34 here) prove the gradients to 1e-3; every run prints its flips. */
static void test_reference_every_arch(void) {
    for (int i = 0; i < arch_count(); i++) {
        const ArchSpec *a = arch_at(i);
        /* cross targets (RN_TEST_EMULATED=1): the two smallest (basic blocks, option A) */
        if (test_emulated() && strcmp(a->name, "cifar_resnet20") && strcmp(a->name, "resnet18"))
            continue;
        /* VGG-16 at 32 px, its smallest input (five 2x2 pools); vgg16_bn has every op vgg16
         * has, so vgg16 itself is left out (138 M parameters twice over, naive kernels) */
        if (strcmp(a->name, "vgg16") == 0) continue;
        reference_vs_fast(a->name, 2,
                          arch_is_cifar(a->name)          ? 8
                          : strcmp(a->family, "vgg") == 0 ? 32
                                                          : 40);
    }
}

/* The reference plan keeps every training output (no recomputation), fuses nothing and
 * makes no Winograd weights. */
static void test_reference_plan(void) {
    Net *net = resnet_create("resnet50", 3, NULL, 1);
    net->reference = 1;
    CHECK(net_plan(net, 2, 64, 64, 1) == 0);
    int fused = 0, recomputed = 0, wino = 0;
    for (int i = 0; i < net->n_nodes; i++) {
        fused += net->plan.nodes[i].fuse_tail >= 0;
        recomputed += net->plan.nodes[i].recompute;
        wino += net->plan.nodes[i].wino_u != NULL;
    }
    CHECK(fused == 0 && recomputed == 0 && wino == 0);
    net->reference = 0;
    CHECK(net_plan(net, 2, 64, 64, 1) == 0);
    recomputed = 0;
    for (int i = 0; i < net->n_nodes; i++) recomputed += net->plan.nodes[i].recompute;
    CHECK(recomputed > 0);
    net_free(net);
}

/* ------------------------------------------------------------------ ops in a graph */

/* A two-node graph input -> op, built by hand as an architecture would. */
static Net *one_op_net(OpType op, int c, int h, int w) {
    Net *net = rn_calloc(1, sizeof *net);
    snprintf(net->arch, sizeof net->arch, "one-op");
    net->nodes = rn_calloc(2, sizeof(Node));
    net->n_nodes = net->cap_nodes = 2;
    net->in_c = c;
    net->num_classes = c * h * w;
    net->n_groups = 1;
    net->feature_node = net->pooled_node = -1;
    for (int i = 0; i < 2; i++) {
        Node *nd = &net->nodes[i];
        nd->op = i ? op : OP_INPUT;
        snprintf(nd->name, sizeof nd->name, i ? "act" : "input");
        nd->weight = nd->bias = nd->mean = nd->var = -1;
        nd->last_consumer = i ? -1 : 1;
        nd->n_in = i;
    }
    return net;
}

/* Every elementwise activation row (ReLU, SiLU, sigmoid, and any added later) run through
 * the graph: the forward is the layer's forward, the input gradient its backward, and that
 * backward matches central differences of the forward. */
static void test_activation_ops(void) {
    const OpType acts[] = {OP_RELU, OP_SILU, OP_SIGMOID};
    const int c = 3, h = 4, w = 5, n = 2;
    const size_t count = (size_t)n * c * h * w;
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        Net *net = one_op_net(acts[a], c, h, w);
        CHECK(net_plan(net, n, h, w, 1) == 0);
        float x[120], dy[120], dx[120], y_ref[120];
        fill_random(x, count, 31 + a);
        for (size_t i = 0; i < count; i++) x[i] *= 3.0f; /* well into both tails */
        fill_random(dy, count, 41 + a);
        const float *y = net_forward(net, x, n, 1);
        CHECK(y != NULL);
        if (acts[a] == OP_RELU) relu_forward(count, x, y_ref);
        if (acts[a] == OP_SILU) silu_forward(count, x, y_ref);
        if (acts[a] == OP_SIGMOID) sigmoid_forward(count, x, y_ref);
        CHECK_MSG(memcmp(y, y_ref, sizeof(float) * count) == 0, "%s forward", op_name(acts[a]));
        net_backward(net, dy, n, dx);
        double worst = 0;
        for (size_t i = 0; i < count; i++) {
            if (acts[a] == OP_RELU && fabsf(x[i]) < 1e-2f) continue; /* the kink */
            float e = 1e-2f, xp = x[i] + e, xm = x[i] - e, yp, ym;
            if (acts[a] == OP_RELU) {
                relu_forward(1, &xp, &yp);
                relu_forward(1, &xm, &ym);
            }
            if (acts[a] == OP_SILU) {
                silu_forward(1, &xp, &yp);
                silu_forward(1, &xm, &ym);
            }
            if (acts[a] == OP_SIGMOID) {
                sigmoid_forward(1, &xp, &yp);
                sigmoid_forward(1, &xm, &ym);
            }
            double fd = dy[i] * ((double)yp - ym) / ((double)xp - xm);
            if (fabs(fd - dx[i]) > worst) worst = fabs(fd - dx[i]);
        }
        CHECK_MSG(worst < 2e-3, "%s: input gradient off by %g", op_name(acts[a]), worst);
        net_free(net);
    }
}

/* ------------------------------------------------------------------ freeze groups */

static void test_freeze_groups(void) {
    const char *tv[] = {"stem", "layer1", "layer2", "layer3", "layer4", "head"};
    const char *cifar[] = {"stem", "layer1", "layer2", "layer3", "head"};
    Net *net = resnet_create("resnet50", 4, NULL, 1);
    CHECK(net->n_groups == 6);
    for (int g = 0; g < 6 && g < net->n_groups; g++) CHECK(strcmp(net->group_names[g], tv[g]) == 0);
    CHECK(net_head_group(net) == STAGE_HEAD && net_find_group(net, "layer3") == STAGE_LAYER3);
    Buf b = {0};
    net_groups_json(net, &b);
    CHECK(strcmp(b.data, "[\"stem\",\"layer1\",\"layer2\",\"layer3\",\"layer4\",\"head\"]") == 0);
    buf_free(&b);
    net_free(net);
    net = resnet_create("cifar_resnet20", 10, NULL, 1);
    CHECK(net->n_groups == 5);
    for (int g = 0; g < 5 && g < net->n_groups; g++)
        CHECK(strcmp(net->group_names[g], cifar[g]) == 0);
    CHECK(net_find_param(net, "linear.weight")->stage == net_head_group(net));
    CHECK(net_find_param(net, "layer3.2.conv2.weight")->stage == net_find_group(net, "layer3"));
    CHECK(net_find_group(net, "layer4") == -1);
    /* freezing everything but the head, by the head's group */
    net_set_first_trainable(net, net_head_group(net));
    CHECK(net_count_params(net, 1) == 64 * 10 + 10);
    net_free(net);
    net = head_create(64, 1, 1, 3, NULL, 1);
    CHECK(net->n_groups == 1 && strcmp(net->group_names[0], "head") == 0);
    net_free(net);
    /* batch norm eps and momentum per node, torch's defaults here */
    net = resnet_create("resnet18", 4, NULL, 1);
    int bns = 0;
    for (int i = 0; i < net->n_nodes; i++)
        if (net->nodes[i].op == OP_BN) {
            bns++;
            CHECK(FLOAT_EQ(net->nodes[i].eps, 1e-5f) && FLOAT_EQ(net->nodes[i].momentum, 0.1f));
        }
    CHECK(bns == 20);
    net_free(net);
}

/* VGG-16 / VGG-16-BN and Keras' ResNet50: torchvision's and Keras' parameter counts
 * (described, not allocated: 138 M parameters), names, shapes, freeze groups, strides and
 * batch-norm settings; VGG's pooled features are classifier.5's 4096 (what the head
 * reads), an inception head reads the 512x7x7 map and the classifier is not built. */
static void test_vgg_and_keras_archs(void) {
    const struct {
        const char *arch;
        int64_t params;
    } counts[] = {{"vgg16", 138357544}, {"vgg16_bn", 138365992}, {"keras_resnet50", 25583592}};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        Net *d = resnet_describe(counts[i].arch, 1000, NULL);
        CHECK_MSG(d && net_count_params(d, 0) == counts[i].params, "%s: %lld parameters",
                  counts[i].arch, d ? (long long)net_count_params(d, 0) : -1LL);
        net_free(d);
    }
    Net *d = resnet_describe("keras_resnet50", 1000, NULL);
    int64_t buffers = 0;
    for (int i = 0; i < d->n_params; i++)
        buffers += d->params[i].is_buffer ? d->params[i].numel : 0;
    CHECK(buffers == 53120); /* Keras' "non-trainable params" */
    net_free(d);

    Net *net = resnet_create("vgg16_bn", 3, NULL, 1);
    Buf b = {0};
    net_groups_json(net, &b);
    CHECK_MSG(strcmp(b.data, "[\"block1\",\"block2\",\"block3\",\"block4\",\"block5\","
                             "\"fc1\",\"fc2\",\"head\"]") == 0,
              "%s", b.data);
    buf_free(&b);
    CHECK(net_find_param(net, "features.0.bias") && net_find_param(net, "features.1.running_var"));
    CHECK(net_find_param(net, "features.41.weight")->stage == net_find_group(net, "block5"));
    CHECK(net_find_param(net, "features.14.weight")->stage == net_find_group(net, "block3"));
    CHECK(net_find_param(net, "classifier.0.weight")->shape[1] == 512 * 7 * 7);
    CHECK(net_find_param(net, "classifier.3.weight")->stage == net_find_group(net, "fc2"));
    CHECK(net_find_param(net, "classifier.6.weight")->stage == net_head_group(net));
    CHECK(strcmp(net->nodes[net->pooled_node].name, "classifier.5") == 0);
    CHECK(strcmp(net->nodes[net->feature_node].name, "avgpool") == 0);
    const int sizes[] = {32, 64, 224};
    for (int i = 0; i < 3; i++) {
        CHECK(net_plan(net, 1, sizes[i], sizes[i], 0) == 0);
        const Node *f = &net->nodes[net->feature_node];
        CHECK(f->c == 512 && f->h == 7 && f->w == 7);
        CHECK(net_node_size(net, net->pooled_node) == 4096);
    }
    CHECK(net_plan(net, 1, 31, 31, 0) != 0); /* five 2x2 pools need 32 px */
    net_free(net);
    HeadSpec inc;
    CHECK(head_parse("inception:8", &inc) == 0);
    d = resnet_describe("vgg16", 3, &inc);
    CHECK(!net_find_param(d, "classifier.0.weight") && net_find_param(d, "head.fc.weight"));
    CHECK(d->n_groups == 6 && d->pooled_node < 0);
    CHECK(net_find_param(d, "head.branch1x1.weight")->shape[1] == 512);
    net_free(d);

    net = resnet_create("keras_resnet50", 3, NULL, 1);
    net_groups_json(net, &b);
    CHECK(strcmp(b.data, "[\"conv1\",\"conv2\",\"conv3\",\"conv4\",\"conv5\",\"head\"]") == 0);
    buf_free(&b);
    int bns = 0, convs = 0;
    for (int i = 0; i < net->n_nodes; i++) {
        const Node *nd = &net->nodes[i];
        if (nd->op == OP_BN) {
            bns++;
            CHECK(FLOAT_EQ(nd->eps, 1e-3f) && FLOAT_EQ(nd->momentum, 0.01f));
        }
        if (nd->op == OP_CONV) {
            convs++;
            CHECK_MSG(nd->bias >= 0, "%s: no bias", nd->name);
            /* ResNet v1: a stage's stride on its first block's 1x1 convs */
            int strided = strstr(nd->name, "block1_1_conv") || strstr(nd->name, "block1_0_conv");
            int want = strcmp(nd->name, "conv1_conv") == 0             ? 2
                       : strided && strncmp(nd->name, "conv2", 5) != 0 ? 2
                                                                       : 1;
            CHECK_MSG(nd->conv.stride == want, "%s: stride %d", nd->name, nd->conv.stride);
        }
    }
    CHECK(bns == 53 && convs == 53);
    CHECK(net_find_param(net, "conv4_block6_3_bn.running_var") &&
          net_find_param(net, "conv2_block1_0_conv.weight")->shape[0] == 256);
    CHECK(net_find_param(net, "predictions.weight")->shape[1] == 2048);
    CHECK(net_plan(net, 1, 224, 224, 0) == 0);
    CHECK(net->nodes[net->feature_node].h == 7 && net->nodes[net->feature_node].c == 2048);
    /* a head trained on cached features copies into the net under its classifier's name */
    Net *head = head_create(2048, 1, 1, 3, NULL, 5);
    CHECK(net_copy_params(net, head) == 2);
    CHECK(net_find_param(net, "predictions.bias")->data[1] ==
          net_find_param(head, "fc.bias")->data[1]);
    net_free(head);
    net_free(net);
}

/* The registry lists every architecture resnet_create builds, and only those. */
static void test_arch_registry(void) {
    char list[1024];
    arch_list(list, sizeof list);
    CHECK(strstr(list, "cifar_resnet1202") && strstr(list, "resnet152") &&
          strstr(list, "efficientnet_b0"));
    CHECK(arch_count() == 15);
    for (int i = 0; i < arch_count(); i++) {
        const ArchSpec *a = arch_at(i);
        CHECK(arch_find(a->name) == a && arch_is_known(a->name));
        Net *net = resnet_describe(a->name, 3, NULL);
        CHECK_MSG(net && net->feature_node > 0, "%s", a->name);
        char name[64];
        snprintf(name, sizeof name, "%s.weight", a->classifier);
        CHECK_MSG(net && net_find_param(net, name), "%s: no %s", a->name, name);
        net_free(net);
    }
    CHECK(arch_find("resnet51") == NULL && resnet_create("resnet51", 3, NULL, 1) == NULL);
    CHECK(strstr(rn_error(), "cifar_resnet1202") != NULL);
}

/* ------------------------------------------------------------------ layer dumps */

typedef struct {
    int calls;
    int order_ok;
    int last;
} HookLog;

static void count_hook(void *ctx, const Net *net, int node, int n, const float *out) {
    HookLog *h = ctx;
    h->order_ok &= node == h->last + 1 && out == net_node_output(net, node);
    h->last = node;
    h->calls++;
}

/* A forward hook sees every node once, in order, also where the plan fuses; the dump holds
 * every node's output under its name, equal to the layer-by-layer forward's. */
static void test_forward_hook_and_dump(void) {
    Net *net = resnet_create("resnet18", 3, NULL, 5);
    randomise_bn(net, 6);
    const int n = 2, size = 32;
    float x[2 * 3 * 32 * 32];
    fill_random(x, sizeof x / sizeof x[0], 7);
    CHECK(net_plan(net, n, size, size, 0) == 0);
    HookLog log = {0, 1, -1};
    net->forward_hook = count_hook;
    net->hook_ctx = &log;
    float logits[2 * 3];
    const float *y = net_forward(net, x, n, 0);
    CHECK(y != NULL);
    memcpy(logits, y, sizeof logits);
    net->forward_hook = NULL;
    CHECK(log.calls == net->n_nodes && log.order_ok);
    char dir[512], path[600];
    CHECK(test_temp_dir(dir, sizeof dir, "dump_resnet18") == 0);
    snprintf(path, sizeof path, "%s/dump.safetensors", dir);
    CHECK(net_dump_forward(net, x, n, path) == 0);
    StFile f;
    CHECK(st_open(path, &f) == 0);
    CHECK(f.n_tensors == net->n_nodes);
    const StTensor *t = st_find(&f, "layer2.0.relu");
    CHECK(t && t->ndim == 4 && t->shape[0] == n && t->shape[1] == 128 && t->shape[2] == 4);
    t = st_find(&f, "fc");
    float got[2 * 3];
    CHECK(t && st_read_f32(&f, t, got) == 0 && memcmp(got, logits, sizeof got) == 0);
    CHECK(st_find(&f, "layer1.1.bn2") && st_find(&f, "layer4.1") && st_find(&f, "input"));
    const char *ops = st_meta(&f, "ops");
    CHECK(ops && strstr(ops, "\"layer4.1\":\"add_relu\"") &&
          strstr(ops, "\"maxpool\":\"maxpool\""));
    st_close(&f);
    remove(path);
    remove(dir);
    net_free(net);
}

/* efficientnet_b0: torchvision's parameter count and names, a freeze group per stage,
 * stochastic depth scaled per block; training (stochastic depth and dropout on) repeats
 * bit for bit from the same seed and differs from eval; the low-memory plan (recomputing
 * the expanding 1x1 convs) gives the same logits and gradients as keeping every output. */
static void test_efficientnet(void) {
    Net *net = resnet_create("efficientnet_b0", 1000, NULL, 1);
    CHECK(net && net_count_params(net, 0) == 5288548); /* torchvision's num_params */
    CHECK(net->n_groups == 10 && net_find_group(net, "features.8") == 8 &&
          net_find_group(net, "head") == 9);
    CHECK(net_find_param(net, "features.6.3.block.2.fc1.bias") &&
          net_find_param(net, "features.1.0.block.1.fc2.weight") &&
          net_find_param(net, "classifier.1.weight")->stage == 9);
    int sd = 0;
    for (int i = 0; i < net->n_nodes; i++) {
        const Node *nd = &net->nodes[i];
        sd += nd->op == OP_STOCHASTIC_DEPTH;
        if (!strcmp(nd->name, "features.6.3.stochastic_depth"))
            CHECK(FLOAT_EQ(nd->p, 0.2f * 14 / 16));
        if (!strcmp(nd->name, "classifier.0")) CHECK(nd->op == OP_DROPOUT && FLOAT_EQ(nd->p, 0.2f));
        if (!strcmp(nd->name, "features.2.0.block.1.0"))
            CHECK(nd->conv.groups == 96 && nd->conv.stride == 2);
    }
    CHECK(sd == 9); /* the blocks with a residual */
    net_free(net);

    const int n = 4, size = 32, k = 3;
    float *x = malloc(sizeof(float) * n * 3 * size * size), r[4 * 3], logits[2][4 * 3];
    fill_random(x, (size_t)n * 3 * size * size, 31);
    fill_random(r, (size_t)n * k, 32);
    Net *nets[2];
    for (int m = 0; m < 2; m++) {
        nets[m] = resnet_create("efficientnet_b0", k, NULL, 5);
        randomise_bn(nets[m], 33);
        nets[m]->low_memory = m;
        CHECK(net_plan(nets[m], n, size, size, 1) == 0);
        net_zero_grad(nets[m]);
        memcpy(logits[m], net_forward(nets[m], x, n, 1), sizeof logits[m]);
        net_backward(nets[m], r, n, NULL);
    }
    CHECK(memcmp(logits[0], logits[1], sizeof logits[0]) == 0);
    int same = 1;
    for (int i = 0; i < nets[0]->n_params; i++)
        if (nets[0]->params[i].grad)
            same &= memcmp(nets[0]->params[i].grad, nets[1]->params[i].grad,
                           sizeof(float) * (size_t)nets[0]->params[i].numel) == 0;
    CHECK_MSG(same, "low-memory plan: gradients differ from the full plan's");
    float eval[2][4 * 3];
    for (int m = 0; m < 2; m++) memcpy(eval[m], net_forward(nets[m], x, n, 0), sizeof eval[m]);
    CHECK(memcmp(eval[0], eval[1], sizeof eval[0]) == 0);
    CHECK(memcmp(eval[0], logits[0], sizeof eval[0]) != 0);
    net_free(nets[0]);
    net_free(nets[1]);
    free(x);
}

int main(void) {
    RUN(test_param_counts);
    RUN(test_torchvision_names);
    RUN(test_cifar_names);
    RUN(test_stages);
    RUN(test_init);
    RUN(test_shapes);
    RUN(test_forward_consistency);
    RUN(test_fused_eval_forward);
    RUN(test_constant_weights);
    RUN(test_forward_early_loader);
    RUN(test_gradcheck_cifar_resnet20);
    RUN(test_gradcheck_mlp_head);
    RUN(test_gradcheck_inception_head);
    RUN(test_backward_accumulates);
    RUN(test_frozen_stages);
    RUN(test_fused_optimizer_step);
    RUN(test_low_memory_plan);
    RUN(test_bn_needs_two_values);
    RUN(test_head_names);
    RUN(test_head_text);
    RUN(test_plan_size_limit);
    RUN(test_arch_registry);
    RUN(test_vgg_and_keras_archs);
    RUN(test_freeze_groups);
    RUN(test_activation_ops);
    RUN(test_forward_hook_and_dump);
    RUN(test_reference_plan);
    RUN(test_efficientnet);
    RUN(test_reference_every_arch);
    return test_summary();
}
