/* resnet.c - the network graph: torchvision and CIFAR ResNets and their classifier heads,
 * built as a list of nodes in topological order; one memory plan; forward and backward.
 *
 * A Node is one layer (conv, batch norm, ReLU, ...) reading the outputs of 1..4 earlier
 * nodes. Parameters carry torchvision's state_dict names, so weights load by name. Every
 * node and parameter belongs to a freeze group (stage): the stem, layer1..4 and the head.
 * Stages < net->first_trainable are frozen: their batch norms run in eval mode, their
 * parameters get no gradient and backward does not even enter them.
 *
 * Memory: net_plan sizes everything for one (batch, h, w) and makes ONE allocation holding
 * every node output, the buffers backward needs (batch-norm statistics, dropout masks,
 * max-pool argmax) and, for training, the output gradients. Buffers that live for part of
 * a pass share memory: the plan replays the pass and places each one first-fit among those
 * alive at the same time. A gradient lives from the moment its first consumer (in reverse
 * order) writes it until the node itself has been back-propagated; through ReLU, batch
 * norm, dropout and sums it takes over the consumer's gradient buffer instead. An output
 * lives until its last consumer has run, unless backward will read it (trainable stages).
 * ReLUs run in place, and a training plan does not keep a ReLU after conv -> BN at all:
 * backward recomputes it (or only its gradient mask) from the conv output, which the batch
 * norm needs anyway. A low-memory plan (net->low_memory, the default) does not keep the
 * outputs of expanding 1x1 convs either: backward runs them again when their batch norm
 * needs them.
 *
 * Eval forwards fuse: conv -> BN [-> ReLU | -> residual sum] runs as one convolution whose
 * epilogue applies the batch norm as y * scale + shift (folded from the current running
 * statistics at every forward, so parameter changes need no invalidation), the residual
 * and the ReLU, with the same float operations as the layers one by one.
 *
 * Backward: the layer functions overwrite their input gradient, so a node read by several
 * others (a block input feeding both the residual branch and the shortcut, the feature map
 * feeding three inception branches) gets the gradient of its LAST consumer written
 * directly (backward meets it first); convolutions and block sums add theirs in place
 * (conv2d_backward_add), other layers write into a scratch buffer that is then added in.
 *
 * Initialisation follows torchvision for every architecture (the CIFAR models included;
 * akamaster's own script used kaiming_normal_ with fan_in, which only matters when
 * training from scratch).
 */
#include "resnet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"

#define OMP_MIN_WORK 65536 /* elementwise loops shorter than this stay on one thread */

/* max-pool argmax is stored as int32 in float slots of the arena */
typedef char rn_float_is_4_bytes[(sizeof(float) == sizeof(int32_t)) ? 1 : -1];

/* ------------------------------------------------------------------ architectures */

typedef struct {
    const char *name;
    int cifar;       /* CIFAR ResNet (3 stages, option-A shortcuts) */
    int bottleneck;  /* Bottleneck blocks (expansion 4) instead of BasicBlock */
    int blocks[4];   /* blocks per stage (CIFAR: n = (depth - 2) / 6 in each of 3) */
} ArchInfo;

static const ArchInfo archs[] = {
    {"resnet18", 0, 0, {2, 2, 2, 2}},        {"resnet34", 0, 0, {3, 4, 6, 3}},
    {"resnet50", 0, 1, {3, 4, 6, 3}},        {"resnet101", 0, 1, {3, 4, 23, 3}},
    {"resnet152", 0, 1, {3, 8, 36, 3}},      {"cifar_resnet20", 1, 0, {3, 3, 3, 0}},
    {"cifar_resnet32", 1, 0, {5, 5, 5, 0}},  {"cifar_resnet44", 1, 0, {7, 7, 7, 0}},
    {"cifar_resnet56", 1, 0, {9, 9, 9, 0}},  {"cifar_resnet110", 1, 0, {18, 18, 18, 0}},
    {"cifar_resnet1202", 1, 0, {200, 200, 200, 0}},
};
#define N_ARCHS ((int)(sizeof archs / sizeof archs[0]))

static const ArchInfo *arch_find(const char *arch) {
    for (int i = 0; arch && i < N_ARCHS; i++)
        if (strcmp(archs[i].name, arch) == 0) return &archs[i];
    return NULL;
}

int arch_is_known(const char *arch) { return arch_find(arch) != NULL; }

int arch_is_cifar(const char *arch) {
    const ArchInfo *a = arch_find(arch);
    return a && a->cifar;
}

/* ------------------------------------------------------------------ graph building */

static Net *net_new(const char *arch, int num_classes, int in_c, uint64_t seed) {
    Net *net = rn_calloc(1, sizeof *net);
    snprintf(net->arch, sizeof net->arch, "%s", arch);
    net->num_classes = num_classes;
    net->in_c = in_c;
    net->feature_node = -1;
    net->pooled_node = -1;
    net->first_trainable = STAGE_STEM;
    net->low_memory = 1; /* a few % slower training for 40 % less activation memory */
    net->winograd = conv_winograd_pays();
    net->bn_momentum = 0.1f;
    net->bn_eps = 1e-5f;
    rng_seed(&net->rng, seed ^ 0xd1b54a32d192ed03ULL); /* dropout stream, apart from init */
    return net;
}

/* Grow an array of `size`-byte items to hold at least `need` (amortised doubling). */
static void *grow(void *items, int *cap, int need, size_t size) {
    if (need <= *cap) return items;
    int new_cap = *cap ? *cap * 2 : 64;
    while (new_cap < need) new_cap *= 2;
    void *bigger = rn_calloc((size_t)new_cap, size);
    if (items) memcpy(bigger, items, (size_t)*cap * size);
    rn_free(items);
    *cap = new_cap;
    return bigger;
}

/* out = prefix "." suffix, cut to fit (real names are far shorter than RN_NAME_MAX). */
static void join_name(char *out, const char *prefix, const char *suffix) {
    size_t a = strlen(prefix), b = strlen(suffix);
    if (a > RN_NAME_MAX - 2) a = RN_NAME_MAX - 2;
    if (b > RN_NAME_MAX - 2 - a) b = RN_NAME_MAX - 2 - a;
    memcpy(out, prefix, a);
    out[a] = '.';
    memcpy(out + a + 1, suffix, b);
    out[a + 1 + b] = 0;
}

static int node_add(Net *net, OpType op, const char *name, int stage, int in0, int in1) {
    net->nodes = grow(net->nodes, &net->cap_nodes, net->n_nodes + 1, sizeof(Node));
    int idx = net->n_nodes++;
    Node *nd = &net->nodes[idx];
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    snprintf(nd->name, sizeof nd->name, "%s", name);
    nd->stage = stage;
    nd->weight = nd->bias = nd->mean = nd->var = -1;
    nd->last_consumer = -1;
    nd->fuse_tail = -1;
    int ins[2] = {in0, in1};
    for (int k = 0; k < 2; k++)
        if (ins[k] >= 0) {
            nd->in[nd->n_in++] = ins[k];
            net->nodes[ins[k]].last_consumer = idx;
        }
    return idx;
}

static void node_add_input(Net *net, int node, int in) {
    Node *nd = &net->nodes[node];
    nd->in[nd->n_in++] = in;
    net->nodes[in].last_consumer = node;
}

static int param_add(Net *net, const char *prefix, const char *suffix, int ndim,
                     const int64_t *shape, int is_buffer, int stage) {
    net->params = grow(net->params, &net->cap_params, net->n_params + 1, sizeof(Param));
    int idx = net->n_params++;
    Param *p = &net->params[idx];
    memset(p, 0, sizeof *p);
    join_name(p->name, prefix, suffix);
    p->ndim = ndim;
    p->numel = 1;
    for (int d = 0; d < ndim; d++) {
        p->shape[d] = shape[d];
        p->numel *= shape[d];
    }
    if (!net->shapes_only) {
        p->data = rn_calloc((size_t)p->numel, sizeof(float));
        p->grad = is_buffer ? NULL : rn_calloc((size_t)p->numel, sizeof(float));
    }
    p->is_buffer = is_buffer;
    p->stage = stage;
    return idx;
}

/* N(0, std^2) by Marsaglia's polar method (two normals per accepted pair, no sin/cos):
 * u, v uniform in (-1, 1) with 0 < s = u^2 + v^2 < 1; u * f and v * f with
 * f = sqrt(-2 ln(s) / s) are independent standard normals. */
static void fill_normal(Param *p, float std, Rng *rng) {
    const double scale = 1.0 / 4503599627370496.0; /* 2^-52 */
    for (int64_t i = 0; p->data && i < p->numel;) {
        double u = (double)(rng_next(rng) >> 11) * scale - 1.0;
        double v = (double)(rng_next(rng) >> 11) * scale - 1.0;
        double s = u * u + v * v;
        if (s >= 1.0 || s == 0.0) continue;
        double f = sqrt(-2.0 * log(s) / s);
        p->data[i++] = (float)(std * u * f);
        if (i < p->numel) p->data[i++] = (float)(std * v * f);
    }
}

static void fill_uniform(Param *p, float bound, Rng *rng) {
    for (int64_t i = 0; p->data && i < p->numel; i++)
        p->data[i] = (2.0f * rng_uniform(rng) - 1.0f) * bound;
}

static void fill_const(Param *p, float v) {
    for (int64_t i = 0; p->data && i < p->numel; i++) p->data[i] = v;
}

/* Conv2d(in_c, out_c, k, stride, pad, bias). torchvision's init: weight ~ N(0, 2 / fan_out)
 * (kaiming_normal_, mode="fan_out", relu), fan_out = out_c * k * k; a bias keeps torch's
 * default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_c * k * k. */
static int conv_add(Net *net, Rng *rng, const char *name, int stage, int in, int in_c,
                    int out_c, int k, int stride, int pad, int with_bias) {
    int idx = node_add(net, OP_CONV, name, stage, in, -1);
    ConvSpec s = {in_c, out_c, k, k, stride, pad};
    int64_t wshape[4] = {out_c, in_c, k, k}, bshape[1] = {out_c};
    int w = param_add(net, name, "weight", 4, wshape, 0, stage);
    fill_normal(&net->params[w], sqrtf(2.0f / (float)(out_c * k * k)), rng);
    int b = -1;
    if (with_bias) {
        b = param_add(net, name, "bias", 1, bshape, 0, stage);
        fill_uniform(&net->params[b], 1.0f / sqrtf((float)(in_c * k * k)), rng);
    }
    Node *nd = &net->nodes[idx];
    nd->conv = s;
    nd->weight = w;
    nd->bias = b;
    return idx;
}

/* BatchNorm2d / BatchNorm1d(c): gamma 1, beta 0, running mean 0, running var 1. */
static int bn_add(Net *net, const char *name, int stage, int in, int c) {
    int idx = node_add(net, OP_BN, name, stage, in, -1);
    int64_t shape[1] = {c};
    int w = param_add(net, name, "weight", 1, shape, 0, stage);
    int b = param_add(net, name, "bias", 1, shape, 0, stage);
    int m = param_add(net, name, "running_mean", 1, shape, 1, stage);
    int v = param_add(net, name, "running_var", 1, shape, 1, stage);
    fill_const(&net->params[w], 1.0f);
    fill_const(&net->params[v], 1.0f);
    Node *nd = &net->nodes[idx];
    nd->weight = w;
    nd->bias = b;
    nd->mean = m;
    nd->var = v;
    return idx;
}

/* Linear(in_f, out_f): weight and bias ~ U(-1/sqrt(in_f), 1/sqrt(in_f)) as torch.nn.Linear. */
static int linear_add(Net *net, Rng *rng, const char *name, int stage, int in, int in_f,
                      int out_f) {
    int idx = node_add(net, OP_LINEAR, name, stage, in, -1);
    int64_t wshape[2] = {out_f, in_f}, bshape[1] = {out_f};
    int w = param_add(net, name, "weight", 2, wshape, 0, stage);
    int b = param_add(net, name, "bias", 1, bshape, 0, stage);
    float bound = 1.0f / sqrtf((float)in_f);
    fill_uniform(&net->params[w], bound, rng);
    fill_uniform(&net->params[b], bound, rng);
    net->nodes[idx].weight = w;
    net->nodes[idx].bias = b;
    return idx;
}

static int simple_add(Net *net, OpType op, const char *prefix, const char *suffix, int stage,
                      int in) {
    char name[RN_NAME_MAX];
    join_name(name, prefix, suffix);
    return node_add(net, op, name, stage, in, -1);
}

/* Conv-BN pair named prefix.convI / prefix.bnI (or any two names). */
static int conv_bn(Net *net, Rng *rng, const char *conv_name, const char *bn_name, int stage,
                   int in, int in_c, int out_c, int k, int stride, int pad) {
    int c = conv_add(net, rng, conv_name, stage, in, in_c, out_c, k, stride, pad, 0);
    return bn_add(net, bn_name, stage, c, out_c);
}

/* The block's sum with the identity (or projected) input, then ReLU (fused into OP_ADD). */
static int block_end(Net *net, const char *prefix, int stage, int residual, int shortcut) {
    int a = node_add(net, OP_ADD, prefix, stage, residual, shortcut);
    net->nodes[a].relu = 1;
    return a;
}

/* torchvision BasicBlock / akamaster's CIFAR BasicBlock:
 *   relu(bn2(conv2(relu(bn1(conv1_3x3_stride(x))))) + shortcut(x))
 * shortcut: identity, or when the shape changes downsample = conv1x1_stride + bn
 * (torchvision) or option A = subsample + zero channels (CIFAR). */
static int basic_block(Net *net, Rng *rng, const char *p, int stage, int x, int in_c,
                       int planes, int stride, int cifar) {
    char n1[RN_NAME_MAX], n2[RN_NAME_MAX];
    join_name(n1, p, "conv1");
    join_name(n2, p, "bn1");
    int y = conv_bn(net, rng, n1, n2, stage, x, in_c, planes, 3, stride, 1);
    y = simple_add(net, OP_RELU, p, "relu1", stage, y);
    join_name(n1, p, "conv2");
    join_name(n2, p, "bn2");
    y = conv_bn(net, rng, n1, n2, stage, y, planes, planes, 3, 1, 1);
    int shortcut = x;
    if (stride != 1 || in_c != planes) {
        if (cifar) {
            shortcut = simple_add(net, OP_SHORTCUT_A, p, "shortcut", stage, x);
            Node *nd = &net->nodes[shortcut];
            nd->conv.in_c = in_c;
            nd->conv.out_c = planes;
            nd->stride = stride;
        } else {
            join_name(n1, p, "downsample.0");
            join_name(n2, p, "downsample.1");
            shortcut = conv_bn(net, rng, n1, n2, stage, x, in_c, planes, 1, stride, 0);
        }
    }
    return block_end(net, p, stage, y, shortcut);
}

/* torchvision Bottleneck (v1.5: the stride sits on the 3x3 conv2), expansion 4:
 *   relu(bn3(conv3_1x1(relu(bn2(conv2_3x3_stride(relu(bn1(conv1_1x1(x)))))))) + shortcut) */
static int bottleneck_block(Net *net, Rng *rng, const char *p, int stage, int x, int in_c,
                            int planes, int stride) {
    char n1[RN_NAME_MAX], n2[RN_NAME_MAX];
    int out_c = planes * 4;
    join_name(n1, p, "conv1");
    join_name(n2, p, "bn1");
    int y = conv_bn(net, rng, n1, n2, stage, x, in_c, planes, 1, 1, 0);
    y = simple_add(net, OP_RELU, p, "relu1", stage, y);
    join_name(n1, p, "conv2");
    join_name(n2, p, "bn2");
    y = conv_bn(net, rng, n1, n2, stage, y, planes, planes, 3, stride, 1);
    y = simple_add(net, OP_RELU, p, "relu2", stage, y);
    join_name(n1, p, "conv3");
    join_name(n2, p, "bn3");
    y = conv_bn(net, rng, n1, n2, stage, y, planes, out_c, 1, 1, 0);
    int shortcut = x;
    if (stride != 1 || in_c != out_c) {
        join_name(n1, p, "downsample.0");
        join_name(n2, p, "downsample.1");
        shortcut = conv_bn(net, rng, n1, n2, stage, x, in_c, out_c, 1, stride, 0);
    }
    return block_end(net, p, stage, y, shortcut);
}

/* ------------------------------------------------------------------ heads */

static int head_check(const HeadSpec *h) {
    if (!h) return 0;
    switch (h->type) {
    case HEAD_LINEAR: return 0;
    case HEAD_MLP:
        if (h->n_hidden < 1 || h->n_hidden > RN_MAX_HIDDEN) {
            rn_set_error("mlp head: expected 1..%d hidden sizes, found %d", RN_MAX_HIDDEN,
                         h->n_hidden);
            return -1;
        }
        for (int i = 0; i < h->n_hidden; i++)
            if (h->hidden[i] < 1 || h->hidden[i] > (1 << 20)) {
                rn_set_error("mlp head: hidden size %d must be in 1..%d", h->hidden[i],
                             1 << 20);
                return -1;
            }
        break;
    case HEAD_INCEPTION:
        if (h->branch_filters < 0 || h->branch_filters > (1 << 16)) {
            rn_set_error("inception head: branch filters %d must be in 1..%d (0: 128)",
                         h->branch_filters, 1 << 16);
            return -1;
        }
        break;
    default:
        rn_set_error("head: unknown head type %d", (int)h->type);
        return -1;
    }
    if (!(h->dropout >= 0.0f && h->dropout < 1.0f)) {
        rn_set_error("head: dropout %g must be in [0, 1)", (double)h->dropout);
        return -1;
    }
    return 0;
}

/* The head on features [c, 1, 1] (linear, MLP; input = the pooled node) or on the feature
 * map [c, h, w] (inception). Returns the last node.
 *
 * MLP: the parameter names follow this torch module, so a torch user builds the same head
 * (for hidden = {h1, .., hn}, indices counting every module in order):
 *   head = nn.Sequential(
 *       [nn.BatchNorm1d(c)]            if bn,   then
 *       nn.Linear(c, h1), nn.ReLU(),
 *       [nn.Dropout(p)]                if p > 0,
 *       ... the same for h2..hn ...,
 *       [nn.BatchNorm1d(hn)]           if bn,
 *       nn.Linear(hn, num_classes))
 * e.g. "mlp:256:dropout=0.2:bn" -> head.0 BatchNorm1d(C), head.1 Linear(C,256), head.2 ReLU,
 * head.3 Dropout, head.4 BatchNorm1d(256), head.5 Linear(256,K); "mlp:256" -> head.0 Linear,
 * head.1 ReLU, head.2 Linear. A torchvision model with model.fc = nn.Identity() and
 * model.head = that Sequential (logits = model.head(model(x))) has the same state_dict.
 *
 * Inception, as a torch module `head` with these attributes, on the feature map:
 *   branch1x1 = Conv2d(c, F, 1), branch3x3 = Conv2d(c, F, 3, padding=1),
 *   branch5x5 = Conv2d(c, F, 5, padding=2), fc = Linear(3F, num_classes);
 *   forward(x) = fc(dropout_p(flatten(adaptive_avg_pool(cat([relu(branch1x1(x)),
 *                relu(branch3x3(x)), relu(branch5x5(x))], dim=1)))))
 * It replaces torchvision's avgpool and fc. */
static int head_build(Net *net, Rng *rng, const HeadSpec *head, int x, int c, int k,
                      const char *linear_name) {
    const int st = STAGE_HEAD;
    char name[RN_NAME_MAX];
    if (!head || head->type == HEAD_LINEAR) return linear_add(net, rng, linear_name, st, x, c, k);
    if (head->type == HEAD_MLP) {
        int m = 0, prev = c;
        for (int i = 0; i <= head->n_hidden; i++) {
            int out = i < head->n_hidden ? head->hidden[i] : k;
            if (head->batchnorm) {
                snprintf(name, sizeof name, "head.%d", m++);
                x = bn_add(net, name, st, x, prev);
            }
            snprintf(name, sizeof name, "head.%d", m++);
            x = linear_add(net, rng, name, st, x, prev, out);
            if (i == head->n_hidden) break;
            snprintf(name, sizeof name, "head.%d", m++);
            x = node_add(net, OP_RELU, name, st, x, -1);
            if (head->dropout > 0) {
                snprintf(name, sizeof name, "head.%d", m++);
                x = node_add(net, OP_DROPOUT, name, st, x, -1);
                net->nodes[x].p = head->dropout;
            }
            prev = out;
        }
        return x;
    }
    int f = head->branch_filters > 0 ? head->branch_filters : 128;
    int b1 = conv_add(net, rng, "head.branch1x1", st, x, c, f, 1, 1, 0, 1);
    b1 = node_add(net, OP_RELU, "head.branch1x1.relu", st, b1, -1);
    int b3 = conv_add(net, rng, "head.branch3x3", st, x, c, f, 3, 1, 1, 1);
    b3 = node_add(net, OP_RELU, "head.branch3x3.relu", st, b3, -1);
    int b5 = conv_add(net, rng, "head.branch5x5", st, x, c, f, 5, 1, 2, 1);
    b5 = node_add(net, OP_RELU, "head.branch5x5.relu", st, b5, -1);
    int cat = node_add(net, OP_CONCAT, "head.concat", st, b1, b3);
    node_add_input(net, cat, b5);
    int y = node_add(net, OP_GAP, "head.avgpool", st, cat, -1);
    if (head->dropout > 0) {
        y = node_add(net, OP_DROPOUT, "head.dropout", st, y, -1);
        net->nodes[y].p = head->dropout;
    }
    return linear_add(net, rng, "head.fc", st, y, 3 * f, k);
}

static int check_classes(int num_classes) {
    if (num_classes < 1 || num_classes > (1 << 20)) {
        rn_set_error("num_classes: expected 1..%d, found %d", 1 << 20, num_classes);
        return -1;
    }
    return 0;
}

static Net *build_resnet(const char *arch, int num_classes, const HeadSpec *head,
                         uint64_t seed, int shapes_only) {
    const ArchInfo *a = arch_find(arch);
    if (!a) {
        char known[512] = "";
        for (int i = 0; i < N_ARCHS; i++) {
            strcat(known, i ? ", " : "");
            strcat(known, archs[i].name);
        }
        rn_set_error("unknown architecture \"%s\" (known: %s)", arch ? arch : "(null)", known);
        return NULL;
    }
    if (check_classes(num_classes) || head_check(head)) return NULL;
    Net *net = net_new(arch, num_classes, 3, seed);
    net->shapes_only = shapes_only;
    Rng rng;
    rng_seed(&rng, seed);
    int x = node_add(net, OP_INPUT, "input", STAGE_STEM, -1, -1);
    int c;
    char p[RN_NAME_MAX];
    if (a->cifar) {
        /* conv1 3x3 16, bn1, relu; layer1..3 with 16, 32, 64 channels (stride 1, 2, 2) */
        x = conv_bn(net, &rng, "conv1", "bn1", STAGE_STEM, x, 3, 16, 3, 1, 1);
        x = node_add(net, OP_RELU, "relu", STAGE_STEM, x, -1);
        c = 16;
        for (int l = 0; l < 3; l++)
            for (int b = 0; b < a->blocks[l]; b++) {
                snprintf(p, sizeof p, "layer%d.%d", l + 1, b);
                int planes = 16 << l, stride = (l > 0 && b == 0) ? 2 : 1;
                x = basic_block(net, &rng, p, STAGE_LAYER1 + l, x, c, planes, stride, 1);
                c = planes;
            }
    } else {
        /* conv1 7x7/2 64, bn1, relu, maxpool 3x3/2; layer1..4 with 64..512 planes */
        x = conv_bn(net, &rng, "conv1", "bn1", STAGE_STEM, x, 3, 64, 7, 2, 3);
        x = node_add(net, OP_RELU, "relu", STAGE_STEM, x, -1);
        x = node_add(net, OP_MAXPOOL, "maxpool", STAGE_STEM, x, -1);
        net->nodes[x].k = 3;
        net->nodes[x].stride = 2;
        net->nodes[x].pad = 1;
        c = 64;
        for (int l = 0; l < 4; l++)
            for (int b = 0; b < a->blocks[l]; b++) {
                snprintf(p, sizeof p, "layer%d.%d", l + 1, b);
                int planes = 64 << l, stride = (l > 0 && b == 0) ? 2 : 1;
                if (a->bottleneck) {
                    x = bottleneck_block(net, &rng, p, STAGE_LAYER1 + l, x, c, planes, stride);
                    c = planes * 4;
                } else {
                    x = basic_block(net, &rng, p, STAGE_LAYER1 + l, x, c, planes, stride, 0);
                    c = planes;
                }
            }
    }
    net->feature_node = x;
    if (head && head->type == HEAD_INCEPTION) {
        head_build(net, &rng, head, x, c, num_classes, NULL);
    } else {
        net->pooled_node = x = node_add(net, OP_GAP, "avgpool", STAGE_HEAD, x, -1);
        head_build(net, &rng, head, x, c, num_classes, a->cifar ? "linear" : "fc");
    }
    return net;
}

Net *resnet_create(const char *arch, int num_classes, const HeadSpec *head, uint64_t seed) {
    return build_resnet(arch, num_classes, head, seed, 0);
}

Net *resnet_describe(const char *arch, int num_classes, const HeadSpec *head) {
    return build_resnet(arch, num_classes, head, 0, 1);
}

Net *head_create(int c, int h, int w, int num_classes, const HeadSpec *head, uint64_t seed) {
    if (c < 1 || h < 1 || w < 1) {
        rn_set_error("head_create: expected a feature shape >= 1, found [%d, %d, %d]", c, h, w);
        return NULL;
    }
    if (check_classes(num_classes) || head_check(head)) return NULL;
    Net *net = net_new("head", num_classes, c, seed);
    Rng rng;
    rng_seed(&rng, seed);
    int x = node_add(net, OP_INPUT, "input", STAGE_STEM, -1, -1);
    net->feature_node = x;
    if (head && head->type == HEAD_INCEPTION) {
        head_build(net, &rng, head, x, c, num_classes, NULL);
    } else {
        /* pooling a [c, 1, 1] input is a copy; it lets the same head take feature maps */
        net->pooled_node = x = node_add(net, OP_GAP, "avgpool", STAGE_HEAD, x, -1);
        head_build(net, &rng, head, x, c, num_classes, "fc");
    }
    return net;
}

void net_free(Net *net) {
    if (!net) return;
    for (int i = 0; i < net->n_params; i++) {
        rn_free(net->params[i].data);
        rn_free(net->params[i].grad);
    }
    rn_free(net->params);
    rn_free(net->nodes);
    rn_free(net->arena);
    rn_free(net->wino_buf);
    rn_free(net->step_grad);
    rn_free(net);
}

/* ------------------------------------------------------------------ head specs as text */

static int parse_float(const char *s, float *v) {
    char *end;
    if (!*s) return -1;
    *v = strtof(s, &end);
    return *end ? -1 : 0;
}

static int parse_int(const char *s, int *v) {
    char *end;
    if (!*s || *s == '+' || *s == '-') return -1;
    long x = strtol(s, &end, 10);
    if (*end || x < 1 || x > (1 << 20)) return -1;
    *v = (int)x;
    return 0;
}

int head_parse(const char *text, HeadSpec *head) {
    memset(head, 0, sizeof *head);
    if (!text || !*text) {
        rn_set_error("head: empty text (expected linear, mlp:H1,H2..[:dropout=P][:bn] or "
                     "inception[:F][:dropout=P])");
        return -1;
    }
    char buf[256];
    if (strlen(text) >= sizeof buf) {
        rn_set_error("head \"%.40s...\": text too long", text);
        return -1;
    }
    strcpy(buf, text);
    char *fields[16];
    int nf = 0;
    for (char *s = buf;;) {
        if (nf == 16) {
            rn_set_error("head \"%s\": too many fields", text);
            return -1;
        }
        fields[nf++] = s;
        char *colon = strchr(s, ':');
        if (!colon) break;
        *colon = 0;
        s = colon + 1;
    }
    int first_option = 1, seen_dropout = 0;
    if (strcmp(fields[0], "linear") == 0) {
        head->type = HEAD_LINEAR;
    } else if (strcmp(fields[0], "mlp") == 0) {
        head->type = HEAD_MLP;
        if (nf < 2 || !*fields[1]) {
            rn_set_error("head \"%s\": mlp needs hidden sizes, e.g. mlp:256 or mlp:512,256",
                         text);
            return -1;
        }
        for (char *s = fields[1];;) {
            char *comma = strchr(s, ',');
            if (comma) *comma = 0;
            if (head->n_hidden == RN_MAX_HIDDEN) {
                rn_set_error("head \"%s\": at most %d hidden layers", text, RN_MAX_HIDDEN);
                return -1;
            }
            if (parse_int(s, &head->hidden[head->n_hidden]) != 0) {
                rn_set_error("head \"%s\": hidden size \"%s\" is not an integer in 1..%d", text,
                             s, 1 << 20);
                return -1;
            }
            head->n_hidden++;
            if (!comma) break;
            s = comma + 1;
        }
        first_option = 2;
    } else if (strcmp(fields[0], "inception") == 0) {
        head->type = HEAD_INCEPTION;
        head->branch_filters = 128;
        head->dropout = 0.5f;
        if (nf > 1 && strncmp(fields[1], "dropout=", 8) != 0) {
            if (parse_int(fields[1], &head->branch_filters) != 0) {
                rn_set_error("head \"%s\": branch filters \"%s\" is not an integer in 1..%d",
                             text, fields[1], 1 << 20);
                return -1;
            }
            first_option = 2;
        }
    } else {
        rn_set_error("head \"%s\": unknown type \"%s\" (expected linear, mlp or inception)", text,
                     fields[0]);
        return -1;
    }
    for (int i = first_option; i < nf; i++) {
        const char *f = fields[i];
        if (head->type != HEAD_LINEAR && strncmp(f, "dropout=", 8) == 0 && !seen_dropout) {
            if (parse_float(f + 8, &head->dropout) != 0 ||
                !(head->dropout >= 0.0f && head->dropout < 1.0f)) {
                rn_set_error("head \"%s\": dropout \"%s\" is not a number in [0, 1)", text,
                             f + 8);
                return -1;
            }
            seen_dropout = 1;
        } else if (head->type == HEAD_MLP && strcmp(f, "bn") == 0 && !head->batchnorm) {
            head->batchnorm = 1;
        } else {
            rn_set_error("head \"%s\": unexpected \"%s\" (forms: linear, "
                         "mlp:H1,H2..[:dropout=P][:bn], inception[:F][:dropout=P])", text, f);
            return -1;
        }
    }
    return head_check(head);
}

/* Shortest decimal text that reads back as exactly the same float. */
static void format_float(char *out, size_t len, float v) {
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(out, len, "%.*g", prec, (double)v);
        if (strtof(out, NULL) == v) return;
    }
}

void head_format(const HeadSpec *head, char *out, size_t out_len) {
    char num[32];
    if (!out || out_len == 0) return;
    if (!head || head->type == HEAD_LINEAR) {
        snprintf(out, out_len, "linear");
        return;
    }
    Buf b = {0};
    if (head->type == HEAD_MLP) {
        buf_printf(&b, "mlp:");
        for (int i = 0; i < head->n_hidden; i++)
            buf_printf(&b, "%s%d", i ? "," : "", head->hidden[i]);
        if (head->dropout > 0) {
            format_float(num, sizeof num, head->dropout);
            buf_printf(&b, ":dropout=%s", num);
        }
        if (head->batchnorm) buf_printf(&b, ":bn");
    } else {
        format_float(num, sizeof num, head->dropout);
        buf_printf(&b, "inception:%d:dropout=%s",
                   head->branch_filters > 0 ? head->branch_filters : 128, num);
    }
    snprintf(out, out_len, "%s", b.data);
    buf_free(&b);
}

/* ------------------------------------------------------------------ planning */

#define ALIGN_FLOATS 16 /* 64 bytes */
#define NONE ((size_t)-1)

static size_t node_numel(const Node *nd) { return (size_t)nd->c * nd->h * nd->w; }

static size_t align_up(size_t n) { return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

/* Output shape of node i from its inputs' shapes. */
static int infer_shape(Net *net, int i) {
    Node *nd = &net->nodes[i];
    const Node *x = nd->n_in > 0 ? &net->nodes[nd->in[0]] : NULL;
    switch (nd->op) {
    case OP_INPUT: nd->c = net->in_c; nd->h = net->in_h; nd->w = net->in_w; break;
    case OP_CONV:
        if (x->c != nd->conv.in_c) goto channels;
        nd->c = nd->conv.out_c;
        nd->h = conv_out_size(x->h, nd->conv.kh, nd->conv.stride, nd->conv.pad);
        nd->w = conv_out_size(x->w, nd->conv.kw, nd->conv.stride, nd->conv.pad);
        break;
    case OP_BN:
        if (x->c != net->params[nd->weight].numel) goto channels;
        /* fall through */
    case OP_RELU: case OP_DROPOUT: nd->c = x->c; nd->h = x->h; nd->w = x->w; break;
    case OP_MAXPOOL:
        nd->c = x->c;
        nd->h = conv_out_size(x->h, nd->k, nd->stride, nd->pad);
        nd->w = conv_out_size(x->w, nd->k, nd->stride, nd->pad);
        break;
    case OP_GAP: nd->c = x->c; nd->h = nd->w = 1; break;
    case OP_ADD: {
        const Node *y = &net->nodes[nd->in[1]];
        if (x->c != y->c || x->h != y->h || x->w != y->w) {
            rn_set_error("%s: cannot add [%d, %d, %d] and [%d, %d, %d]", nd->name, x->c, x->h,
                         x->w, y->c, y->h, y->w);
            return -1;
        }
        nd->c = x->c; nd->h = x->h; nd->w = x->w;
        break;
    }
    case OP_SHORTCUT_A:
        if (x->c != nd->conv.in_c) goto channels;
        nd->c = nd->conv.out_c;
        nd->h = (x->h - 1) / nd->stride + 1; /* x[:, :, ::stride, ::stride] */
        nd->w = (x->w - 1) / nd->stride + 1;
        break;
    case OP_LINEAR: {
        const Param *wt = &net->params[nd->weight];
        if ((int64_t)x->c * x->h * x->w != wt->shape[1]) {
            rn_set_error("%s: expected %lld input features, found [%d, %d, %d]", nd->name,
                         (long long)wt->shape[1], x->c, x->h, x->w);
            return -1;
        }
        nd->c = (int)wt->shape[0]; nd->h = nd->w = 1;
        break;
    }
    case OP_CONCAT:
        nd->c = 0; nd->h = x->h; nd->w = x->w;
        for (int k = 0; k < nd->n_in; k++) {
            const Node *y = &net->nodes[nd->in[k]];
            if (y->h != x->h || y->w != x->w) {
                rn_set_error("%s: cannot concatenate %dx%d and %dx%d maps", nd->name, x->h,
                             x->w, y->h, y->w);
                return -1;
            }
            nd->c += y->c;
        }
        break;
    }
    if (nd->h < 1 || nd->w < 1) {
        rn_set_error("%s: input %dx%d is too small for %s (output of %s would be %dx%d)",
                     net->arch, net->in_w, net->in_h, net->arch, nd->name, nd->w, nd->h);
        return -1;
    }
    return 0;
channels:
    rn_set_error("%s: expected %d input channels, found %d", nd->name,
                 nd->op == OP_BN ? (int)net->params[nd->weight].numel : nd->conv.in_c, x->c);
    return -1;
}

/* First-fit placement of buffers that live for part of a pass: `live` lists the nodes
 * holding memory, by offset; a new buffer goes into the first gap that fits. */
typedef struct {
    const size_t *size;
    size_t *off;
    int *live, n_live;
    size_t peak;
} Placer;

static void placer_take(Placer *pl, int j) {
    size_t at = 0;
    int pos = 0;
    for (; pos < pl->n_live; pos++) {
        if (pl->off[pl->live[pos]] >= at + pl->size[j]) break;
        at = pl->off[pl->live[pos]] + pl->size[pl->live[pos]];
    }
    memmove(pl->live + pos + 1, pl->live + pos, sizeof(int) * (size_t)(pl->n_live - pos));
    pl->live[pos] = j;
    pl->n_live++;
    pl->off[j] = at;
    if (at + pl->size[j] > pl->peak) pl->peak = at + pl->size[j];
}

static void placer_drop(Placer *pl, int j) {
    for (int pos = 0; pos < pl->n_live; pos++)
        if (pl->live[pos] == j) {
            memmove(pl->live + pos, pl->live + pos + 1,
                    sizeof(int) * (size_t)(pl->n_live - pos - 1));
            pl->n_live--;
            return;
        }
}

/* Layers whose backward may write the input gradient over the output gradient (each
 * element, or each channel, read before it is written): ReLU, batch norm, dropout and the
 * first input of a sum. */
static int gradient_in_place(const Node *nd, int k) {
    return k == 0 && (nd->op == OP_RELU || nd->op == OP_BN || nd->op == OP_DROPOUT ||
                      nd->op == OP_ADD);
}

/* Output gradients, replaying backward (last node first): node j's gradient is born when
 * its last consumer is processed (that consumer writes it first) and dies once j itself
 * has been processed; through ReLU, batch norm, dropout and sums it takes over the
 * consumer's buffer instead (gradient_in_place). Returns the floats needed; off[j] = NONE
 * for none. */
static size_t place_gradients(const Net *net, const size_t *size, size_t *off, int ft) {
    int n = net->n_nodes;
    Placer pl = {size, off, rn_alloc(sizeof(int) * (size_t)n), 0, 0};
    for (int i = 0; i < n; i++) off[i] = NONE;
    placer_take(&pl, n - 1);
    for (int t = n - 1; t >= 0; t--) {
        const Node *nd = &net->nodes[t];
        int handed_over = 0;
        for (int k = 0; k < nd->n_in; k++) {
            int j = nd->in[k];
            const Node *in = &net->nodes[j];
            if (in->last_consumer != t || in->stage < ft || off[j] != NONE) continue;
            if (gradient_in_place(nd, k) && off[t] != NONE && size[j] == size[t]) {
                off[j] = off[t]; /* the buffer changes owner */
                for (int pos = 0; pos < pl.n_live; pos++)
                    if (pl.live[pos] == t) pl.live[pos] = j;
                handed_over = 1;
            } else {
                placer_take(&pl, j);
            }
        }
        if (!handed_over) placer_drop(&pl, t);
    }
    rn_free(pl.live);
    return pl.peak;
}

/* Which outputs backward reads: a ReLU's (and a block sum's with ReLU) its own, to mask
 * the gradient; a conv, batch norm or linear layer its input's (weight gradients, batch
 * statistics). Nothing else reads activations: max pool and dropout keep what they need
 * in save0, the others need only shapes. */
static int backward_reads_own_output(const Node *nd) {
    return nd->op == OP_RELU || (nd->op == OP_ADD && nd->relu);
}

static int backward_reads_input(const Node *nd) {
    return nd->op == OP_CONV || nd->op == OP_BN || nd->op == OP_LINEAR;
}

/* Outputs that stay readable after a forward whatever the plan. */
static int always_kept(const Net *net, int j) {
    return j == 0 || j == net->feature_node || j == net->pooled_node;
}

/* Liveness facts for one plan (ft: first trainable stage of a training plan). */
typedef struct {
    int *consumers;  /* how many input slots read node j */
    int *keep;       /* j's output must outlive the forward */
    int *in_place;   /* j writes over its input's buffer (ReLU), else -1 */
    int *drop_at;    /* the last step reading j (a fused group counts as its tail), -1: none */
} Liveness;

/* Fusion groups for eval forwards: conv (no bias) -> BN -> ReLU, or conv -> BN -> ADD whose
 * other input is already computed, or conv -> BN, where each output in the group is read
 * only by the next node. A training plan fuses only frozen stages, because backward reads
 * the conv and BN outputs the fused pass never writes. */
static void plan_fusion(Net *net, const int *consumers, int training, int ft) {
    int n = net->n_nodes;
    for (int i = 0; i < n; i++) net->nodes[i].fuse_tail = -1;
    for (int i = 1; i + 1 < n; i++) {
        Node *conv = &net->nodes[i];
        const Node *bn = &net->nodes[i + 1];
        if (conv->op != OP_CONV || conv->bias >= 0 || (training && conv->stage >= ft)) continue;
        if (bn->op != OP_BN || bn->in[0] != i || consumers[i] != 1 || always_kept(net, i))
            continue;
        conv->fuse_tail = i + 1;
        if (i + 2 >= n || consumers[i + 1] != 1 || always_kept(net, i + 1)) continue;
        const Node *next = &net->nodes[i + 2];
        if (next->op == OP_RELU && next->in[0] == i + 1) conv->fuse_tail = i + 2;
        if (next->op == OP_ADD && (next->in[0] == i + 1 || next->in[1] == i + 1)) {
            int other = next->in[0] == i + 1 ? next->in[1] : next->in[0];
            if (other < i) conv->fuse_tail = i + 2; /* the residual exists before the conv */
        }
    }
}

static void plan_liveness(Net *net, Liveness *lv, int training, int ft) {
    int n = net->n_nodes;
    lv->consumers = rn_calloc((size_t)4 * n, sizeof(int));
    lv->keep = lv->consumers + n;
    lv->in_place = lv->consumers + 2 * n;
    lv->drop_at = lv->consumers + 3 * n;
    for (int t = 0; t < n; t++)
        for (int k = 0; k < net->nodes[t].n_in; k++) lv->consumers[net->nodes[t].in[k]]++;
    plan_fusion(net, lv->consumers, training, ft);
    for (int j = 0; j < n; j++) {
        const Node *nd = &net->nodes[j];
        lv->keep[j] = always_kept(net, j) ||
                      (training && nd->stage >= ft && backward_reads_own_output(nd));
        lv->drop_at[j] = -1;
    }
    for (int t = 0; t < n; t++) {
        const Node *nd = &net->nodes[t];
        int tail = nd->op == OP_CONV && nd->fuse_tail >= 0 ? nd->fuse_tail : t;
        for (int k = 0; k < nd->n_in; k++) {
            int j = nd->in[k];
            if (training && nd->stage >= ft && backward_reads_input(nd)) lv->keep[j] = 1;
            if (tail > lv->drop_at[j]) lv->drop_at[j] = tail;
        }
    }
    /* A training plan does not keep a ReLU's output after conv -> BN: backward recomputes
     * it from the conv output (kept for the batch norm) and the saved statistics. */
    for (int t = 0; t < n; t++) {
        Node *nd = &net->nodes[t];
        const Node *bn = &net->nodes[nd->in[0]];
        nd->recompute = training && nd->op == OP_RELU && nd->stage >= ft && bn->op == OP_BN &&
                        lv->consumers[nd->in[0]] == 1 && !always_kept(net, t) &&
                        net->nodes[bn->in[0]].op == OP_CONV;
        if (nd->recompute) lv->keep[t] = 0;
    }
    /* Low-memory training plans do not keep the outputs of expanding 1x1 convs either (a
     * bottleneck's conv3, C -> 4C, and the downsample shortcut): 40 % of a ResNet-50's
     * activations for 17 % more FLOPs, as backward runs each one again when its batch norm
     * needs it. Only a conv -> BN whose BN feeds no ReLU (so no recomputed ReLU reads it). */
    for (int t = 0; t + 1 < n && training && net->low_memory; t++) {
        Node *nd = &net->nodes[t];
        const Node *bn = &net->nodes[t + 1];
        if (nd->op != OP_CONV || nd->stage < ft || nd->conv.kh != 1 || nd->conv.kw != 1 ||
            nd->conv.out_c < 2 * nd->conv.in_c || lv->consumers[t] != 1 ||
            bn->op != OP_BN || bn->in[0] != t || always_kept(net, t))
            continue;
        int feeds_relu = 0;
        for (int k = t + 2; k < n; k++)
            for (int q = 0; q < net->nodes[k].n_in; q++)
                feeds_relu |= net->nodes[k].in[q] == t + 1 && net->nodes[k].op == OP_RELU;
        if (feeds_relu) continue;
        nd->recompute = 1;
        lv->keep[t] = 0;
    }
    /* ReLU in place: its input has no other reader and nothing needs it afterwards */
    for (int t = 0; t < n; t++) {
        const Node *nd = &net->nodes[t];
        int j = nd->in[0];
        lv->in_place[t] = nd->op == OP_RELU && j > 0 && lv->consumers[j] == 1 && !lv->keep[j]
                              ? j : -1;
    }
}

/* Node outputs: node t's output is born when t runs (a ReLU in place takes over its
 * input's buffer) and dies after its last reader has run, unless it is kept (Liveness). */
static size_t place_outputs(const Net *net, const size_t *size, size_t *off,
                            const Liveness *lv) {
    int n = net->n_nodes;
    Placer pl = {size, off, rn_alloc(sizeof(int) * (size_t)n), 0, 0};
    int *first = rn_alloc(sizeof(int) * 2 * (size_t)n), *next = first + n;
    for (int t = 0; t < n; t++) first[t] = -1;
    for (int j = n - 1; j >= 0; j--) /* nodes dying at step t, a list per step */
        if (lv->drop_at[j] >= 0 && !lv->keep[j]) {
            next[j] = first[lv->drop_at[j]];
            first[lv->drop_at[j]] = j;
        }
    for (int t = 0; t < n; t++) {
        int j = lv->in_place[t];
        if (j >= 0) { /* the buffer changes owner */
            off[t] = off[j];
            for (int pos = 0; pos < pl.n_live; pos++)
                if (pl.live[pos] == j) pl.live[pos] = t;
        } else {
            placer_take(&pl, t);
        }
        for (int d = first[t]; d >= 0; d = next[d])
            if (d != j) placer_drop(&pl, d);
    }
    rn_free(first);
    rn_free(pl.live);
    return pl.peak;
}

/* Room for the Winograd weights of every fused 3x3 stride-1 conv (net->winograd), made at
 * the first forward that needs them and again whenever the weights differ from the copy
 * they were made from (a memcmp per conv and forward: a few ms for ResNet-50, against
 * rebuilding them, or missing a change made to Param.data directly). */
static void plan_winograd(Net *net) {
    size_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0;
        for (int i = 0; i < net->n_nodes; i++) {
            Node *nd = &net->nodes[i];
            /* (tiles of the batch are counted in int) */
            double tiles = (double)net->batch * ((nd->h + 3) / 4) * ((nd->w + 3) / 4);
            int use = net->winograd && nd->op == OP_CONV && nd->fuse_tail >= 0 &&
                      conv_winograd_eligible(&nd->conv) && tiles < 1e9;
            size_t wf = use ? align_up((size_t)net->params[nd->weight].numel) : 0;
            size_t uf = use ? align_up(winograd_weight_floats(&nd->conv)) : 0;
            if (pass == 1) {
                nd->wino_u = use ? net->wino_buf + at : NULL;
                nd->wino_w = use ? net->wino_buf + at + uf : NULL;
                nd->wino_ready = 0;
            }
            at += uf + wf;
        }
        total = at;
        if (pass == 0 && total > net->wino_floats) {
            rn_free(net->wino_buf);
            net->wino_buf = rn_alloc(total * sizeof(float));
            net->wino_floats = total;
        }
    }
}

int net_plan(Net *net, int batch, int h, int w, int training) {
    const int max_side = 1 << 15;
    if (batch < 1 || h < 1 || w < 1 || h > max_side || w > max_side || batch > (1 << 20)) {
        rn_set_error("%s: cannot plan batch %d of %dx%d inputs (expected batch >= 1, "
                     "1 <= size <= %d)", net->arch, batch, w, h, max_side);
        return -1;
    }
    if (net->n_nodes < 2 || net->nodes[0].op != OP_INPUT) {
        rn_set_error("%s: the network has no input node", net->arch);
        return -1;
    }
    int n = net->n_nodes;
    int old_h = net->in_h, old_w = net->in_w;
    net->in_h = h;
    net->in_w = w;
    double floats = 0;
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        ok = infer_shape(net, i) == 0;
        floats += (double)batch * node_numel(&net->nodes[i]);
    }
    if (ok && floats * (training ? 3 : 1) > 1e12) {
        rn_set_error("%s: batch %d of %dx%d inputs needs %.0f GB of activations", net->arch,
                     batch, w, h, floats * 4e-9 * (training ? 3 : 1));
        ok = 0;
    }
    if (!ok) { /* leave the previous plan intact */
        net->in_h = old_h;
        net->in_w = old_w;
        for (int k = 0; k < n && net->arena; k++) {
            char why[256];
            snprintf(why, sizeof why, "%s", rn_error());
            infer_shape(net, k); /* succeeded before */
            rn_set_error("%s", why);
        }
        return -1;
    }
    /* Offsets in floats. Training: every output kept for backward, saved buffers, the
     * scratch and the gradients. Inference: outputs share memory by lifetime. */
    size_t *size = rn_alloc(sizeof(size_t) * 5 * (size_t)n);
    size_t *out_off = size + n, *s0_off = size + 2 * n, *s1_off = size + 3 * n,
           *dout_off = size + 4 * n;
    const int ft = net->first_trainable;
    size_t total = 0, biggest = 0; /* biggest: the scratch, for nodes read several times */
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->nodes[i];
        size[i] = align_up((size_t)batch * node_numel(nd));
        for (int k = 0; k < nd->n_in; k++) { /* convs and sums add in place instead */
            const Node *in = &net->nodes[nd->in[k]];
            if (in->last_consumer != i && in->stage >= ft && nd->op != OP_CONV &&
                nd->op != OP_ADD && size[nd->in[k]] > biggest)
                biggest = size[nd->in[k]];
        }
    }
    Liveness lv;
    plan_liveness(net, &lv, training, ft);
    total = place_outputs(net, size, out_off, &lv);
    rn_free(lv.consumers);
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->nodes[i];
        s0_off[i] = s1_off[i] = NONE;
        if (nd->op == OP_BN) {
            s0_off[i] = total;
            s1_off[i] = total + align_up((size_t)nd->c);
            total += 2 * align_up((size_t)nd->c);
        } else if (nd->op == OP_DROPOUT || nd->op == OP_MAXPOOL) {
            s0_off[i] = total;
            total += size[i];
        }
    }
    size_t scratch_off = total, recompute_floats = 0, recompute_conv_floats = 0;
    for (int i = 0; i < n && training; i++) {
        const Node *nd = &net->nodes[i];
        if (nd->recompute && nd->op == OP_CONV && size[i] > recompute_conv_floats)
            recompute_conv_floats = size[i];
        /* a recomputed ReLU needs the buffer only where backward reads it as an input */
        for (int k = 0; k < nd->n_in && nd->stage >= ft && backward_reads_input(nd); k++) {
            const Node *in = &net->nodes[nd->in[k]];
            if (in->recompute && in->op == OP_RELU && size[nd->in[k]] > recompute_floats)
                recompute_floats = size[nd->in[k]];
        }
    }
    size_t recompute_off = total + (training ? biggest : 0);
    size_t recompute_conv_off = recompute_off + recompute_floats;
    if (training) {
        total += biggest; /* scratch: a branch point's other consumers (not convs, sums) */
        total += recompute_floats + recompute_conv_floats;
        size_t dout_floats = place_gradients(net, size, dout_off, ft);
        for (int i = 0; i < n; i++)
            if (dout_off[i] != NONE) dout_off[i] += total;
        total += dout_floats;
    }
    if (total > net->arena_floats) {
        rn_free(net->arena);
        net->arena = rn_alloc(total * sizeof(float));
        net->arena_floats = total;
    }
    float *a = net->arena;
    for (int i = 0; i < n; i++) {
        Node *nd = &net->nodes[i];
        nd->out = a + out_off[i];
        nd->save0 = s0_off[i] == NONE ? NULL : a + s0_off[i];
        nd->save1 = s1_off[i] == NONE ? NULL : a + s1_off[i];
        nd->dout = training && dout_off[i] != NONE ? a + dout_off[i] : NULL;
    }
    net->grad_scratch = training ? a + scratch_off : NULL;
    net->recompute_buf = recompute_floats ? a + recompute_off : NULL;
    net->recompute_conv_buf = recompute_conv_floats ? a + recompute_conv_off : NULL;
    net->recompute_owner = net->recompute_conv_owner = -1;
    rn_free(size);
    net->batch = batch;
    net->training_plan = training;
    net->plan_first_trainable = ft;
    plan_winograd(net);
    return 0;
}

/* ------------------------------------------------------------------ forward */

static int bn_trains(const Net *net, const Node *nd, int train) {
    return train && nd->stage >= net->first_trainable;
}

/* y = a + b, or relu(a + b): the end of a residual block. */
static void add_forward(size_t count, const float *a, const float *b, int relu, float *y) {
    long n = (long)count;
    OMP_PRAGMA(omp parallel for simd schedule(static) if (n > OMP_MIN_WORK))
    for (long i = 0; i < n; i++) {
        float s = a[i] + b[i];
        y[i] = relu && s < 0 ? 0 : s;
    }
}

/* An eval-mode conv -> BN [-> ReLU | -> ADD] group (net_plan's fuse_tail) as one pass:
 * the batch norm folded into the conv's epilogue as y * scale + shift (kept in the BN's
 * save0/save1), then the residual sum and the ReLU, written straight into the last node's
 * output. The same float operations as the layers one by one, so the same results. */
static void conv_group_forward(Net *net, int i, int n) {
    const Node *conv = &net->nodes[i], *in = &net->nodes[conv->in[0]];
    Node *bn = &net->nodes[i + 1], *tail = &net->nodes[conv->fuse_tail];
    const Param *p = net->params;
    batchnorm_eval_affine(bn->c, p[bn->weight].data, p[bn->bias].data, p[bn->mean].data,
                          p[bn->var].data, net->bn_eps, bn->save0, bn->save1);
    ConvEpilogue e = {bn->save0, bn->save1, backward_reads_own_output(tail)};
    const float *residual = NULL;
    if (tail->op == OP_ADD)
        residual = net->nodes[tail->in[0] == i + 1 ? tail->in[1] : tail->in[0]].out;
    const Param *wp = &p[conv->weight];
    if (net->winograd && conv->wino_u) {
        Node *cv = &net->nodes[i]; /* conv, to update its Winograd weights */
        size_t bytes = sizeof(float) * (size_t)wp->numel;
        if (!cv->wino_ready || memcmp(cv->wino_w, wp->data, bytes) != 0) {
            winograd_weight_transform(&cv->conv, wp->data, cv->wino_u);
            memcpy(cv->wino_w, wp->data, bytes);
            cv->wino_ready = 1;
        }
        conv2d_forward_winograd(&cv->conv, n, in->h, in->w, in->out, cv->wino_u, &e,
                                residual, tail->out);
    } else {
        conv2d_forward_fused(&conv->conv, n, in->h, in->w, in->out, wp->data, &e, residual,
                             tail->out);
    }
}

const float *net_forward_upto(Net *net, const float *x, int n, int train, int upto) {
    if (!net->arena || n < 1 || n > net->batch || !x) {
        rn_set_error("%s: forward of %d samples needs a plan for at least that many "
                     "(planned batch %d)", net->arch, n, net->arena ? net->batch : 0);
        return NULL;
    }
    if (upto < 0 || upto >= net->n_nodes) {
        rn_set_error("%s: no node %d (the network has %d)", net->arch, upto, net->n_nodes);
        return NULL;
    }
    net->forward_train = train;
    memcpy(net->nodes[0].out, x, sizeof(float) * n * node_numel(&net->nodes[0]));
    double t0 = net->node_seconds ? rn_seconds() : 0;
    for (int i = 1; i <= upto; i++) {
        Node *nd = &net->nodes[i];
        const Node *in = &net->nodes[nd->in[0]];
        size_t count = (size_t)n * node_numel(nd);
        const Param *p = net->params;
        const int node = i;
        if (nd->op == OP_CONV && nd->fuse_tail >= 0 && nd->fuse_tail <= upto &&
            !net->no_fusion && !bn_trains(net, &net->nodes[i + 1], train)) {
            conv_group_forward(net, i, n);
            i = nd->fuse_tail;
        } else switch (nd->op) {
        case OP_INPUT: break;
        case OP_CONV:
            conv2d_forward(&nd->conv, n, in->h, in->w, in->out, p[nd->weight].data,
                           nd->bias >= 0 ? p[nd->bias].data : NULL, nd->out);
            break;
        case OP_BN:
            if (bn_trains(net, nd, train)) {
                if (n * nd->h * nd->w < 2) {
                    rn_set_error("%s: batch norm in training needs more than one value per "
                                 "channel (batch %d of %dx%d)", nd->name, n, nd->w, nd->h);
                    return NULL;
                }
                batchnorm_forward_train(n, nd->c, nd->h * nd->w, in->out, p[nd->weight].data,
                                        p[nd->bias].data, p[nd->mean].data, p[nd->var].data,
                                        net->bn_momentum, net->bn_eps, nd->out, nd->save0,
                                        nd->save1);
            } else {
                batchnorm_forward_eval(n, nd->c, nd->h * nd->w, in->out, p[nd->weight].data,
                                       p[nd->bias].data, p[nd->mean].data, p[nd->var].data,
                                       net->bn_eps, nd->out);
            }
            break;
        case OP_RELU: relu_forward(count, in->out, nd->out); break;
        case OP_MAXPOOL:
            maxpool2d_forward(n, in->c, in->h, in->w, nd->k, nd->stride, nd->pad, in->out,
                              nd->out, (int32_t *)(void *)nd->save0);
            break;
        case OP_GAP: avgpool_global_forward(n, in->c, in->h * in->w, in->out, nd->out); break;
        case OP_ADD: add_forward(count, in->out, net->nodes[nd->in[1]].out, nd->relu, nd->out);
            break;
        case OP_SHORTCUT_A:
            shortcut_a_forward(n, in->c, in->h, in->w, nd->c, nd->stride, in->out, nd->out);
            break;
        case OP_LINEAR:
            linear_forward(n, (int)node_numel(in), nd->c, in->out, p[nd->weight].data,
                           p[nd->bias].data, nd->out);
            break;
        case OP_DROPOUT:
            if (train && nd->stage >= net->first_trainable && nd->p > 0)
                dropout_forward(count, nd->p, &net->rng, in->out, nd->out, nd->save0);
            else
                memcpy(nd->out, in->out, sizeof(float) * count);
            break;
        case OP_CONCAT: {
            size_t plane = (size_t)nd->h * nd->w, at = 0;
            for (int k = 0; k < nd->n_in; k++) {
                const Node *y = &net->nodes[nd->in[k]];
                size_t part = (size_t)y->c * plane;
                for (int s = 0; s < n; s++)
                    memcpy(nd->out + s * node_numel(nd) + at, y->out + s * part,
                           sizeof(float) * part);
                at += part;
            }
            break;
        }
        }
        if (net->node_seconds) { /* profiling */
            double t1 = rn_seconds();
            net->node_seconds[node] += t1 - t0;
            t0 = t1;
        }
    }
    return net->nodes[upto].out;
}

const float *net_forward(Net *net, const float *x, int n, int train) {
    return net_forward_upto(net, x, n, train, net->n_nodes - 1);
}

/* ------------------------------------------------------------------ backward */

/* Where node `consumer` writes its gradient for input node j: straight into j's gradient
 * when it is j's last consumer (the first one backward meets), else into the scratch
 * buffer, which gradient_done then adds in (branch points sum their gradients; convs and
 * sums add theirs in place instead and never use the scratch). */
static float *gradient_target(Net *net, int consumer, int j, float *scratch) {
    return net->nodes[j].last_consumer == consumer ? net->nodes[j].dout : scratch;
}

static void add_into(float *d, const float *g, size_t count) {
    long n = (long)count;
    OMP_PRAGMA(omp parallel for simd schedule(static) if (n > OMP_MIN_WORK))
    for (long i = 0; i < n; i++) d[i] += g[i];
}

static void gradient_done(Net *net, int consumer, int j, const float *target, size_t count) {
    if (net->nodes[j].last_consumer != consumer) add_into(net->nodes[j].dout, target, count);
}

static const float *recomputed_output(Net *net, int t, int n);

/* The output of conv node t that a low-memory plan did not keep, run again into
 * net->recompute_conv_buf (its input kept, or itself recomputed): the same call as the
 * forward, so the same bits. Backward needs it before the conv's own update. */
static const float *recomputed_conv(Net *net, int t, int n) {
    const Node *nd = &net->nodes[t], *in = &net->nodes[nd->in[0]];
    const Param *p = net->params;
    if (net->recompute_conv_owner == t) return net->recompute_conv_buf;
    const float *x = in->recompute ? recomputed_output(net, nd->in[0], n) : in->out;
    conv2d_forward(&nd->conv, n, in->h, in->w, x, p[nd->weight].data,
                   nd->bias >= 0 ? p[nd->bias].data : NULL, net->recompute_conv_buf);
    net->recompute_conv_owner = t;
    return net->recompute_conv_buf;
}

/* ReLU node t = relu(bn(conv)) from the kept conv output and the batch norm's statistics
 * (saved batch ones, or the running ones in eval mode), with the forward's float
 * operations: dy NULL: its output into out; else the gradient through it, out = dy where
 * the output is positive (out may alias dy), with no buffer for the output at all. */
static void relu_bn_pass(Net *net, int t, int n, const float *dy, float *out) {
    const Node *nd = &net->nodes[t], *bn = &net->nodes[nd->in[0]];
    const float *x = net->nodes[bn->in[0]].out;
    const Param *p = net->params;
    const int train = bn_trains(net, bn, net->forward_train);
    const float *gamma = p[bn->weight].data, *beta = p[bn->bias].data;
    size_t hw = (size_t)bn->h * bn->w;
    OMP_PRAGMA(omp parallel for schedule(static))
    for (long plane = 0; plane < (long)n * bn->c; plane++) {
        int ch = (int)(plane % bn->c);
        float scale, shift;
        if (train) {
            scale = gamma[ch] * bn->save1[ch];
            shift = beta[ch] - bn->save0[ch] * scale;
        } else {
            batchnorm_eval_affine(1, gamma + ch, beta + ch, p[bn->mean].data + ch,
                                  p[bn->var].data + ch, net->bn_eps, &scale, &shift);
        }
        const float *a = x + (size_t)plane * hw;
        float *q = out + (size_t)plane * hw;
        if (dy) {
            const float *g = dy + (size_t)plane * hw;
            OMP_PRAGMA(omp simd)
            for (size_t i = 0; i < hw; i++) {
                float v = a[i] * scale + shift, gi = g[i];
                q[i] = v > 0 ? gi : 0.0f;
            }
        } else {
            OMP_PRAGMA(omp simd)
            for (size_t i = 0; i < hw; i++) {
                float v = a[i] * scale + shift;
                q[i] = v > 0 ? v : 0.0f;
            }
        }
    }
}

/* The output of node t that the training plan did not keep: a conv (recomputed_conv) or a
 * ReLU after conv -> BN (relu_bn_pass), rebuilt into net->recompute_buf. */
static const float *recomputed_output(Net *net, int t, int n) {
    if (net->nodes[t].op == OP_CONV) return recomputed_conv(net, t, n);
    if (net->recompute_owner != t) {
        relu_bn_pass(net, t, n, NULL, net->recompute_buf);
        net->recompute_owner = t;
    }
    return net->recompute_buf;
}

/* The backward of y = a + b, or of y = relu(a + b) when y is given (the end of a residual
 * block): g = dy (times y > 0), then for each input k with d[k]: d[k] = g when this is its
 * first gradient (first[k]), else d[k] += g. One pass instead of a mask and two copies. */
static void add_backward(size_t count, const float *y, const float *dy, float *const d[2],
                         const int first[2]) {
    long n = (long)count;
    float *d0 = d[0], *d1 = d[1];
    const int f0 = first[0], f1 = first[1];
    OMP_PRAGMA(omp parallel for simd schedule(static) if (n > OMP_MIN_WORK))
    for (long i = 0; i < n; i++) {
        float g = dy[i];
        if (y) g = y[i] > 0 ? g : 0.0f; /* a blend, not a branch: masks are random */
        if (d0) d0[i] = f0 ? g : d0[i] + g;
        if (d1) d1[i] = f1 ? g : d1[i] + g;
    }
}

/* The gradient buffers of node nd's parameters during a fused step: slices of
 * net->step_grad, zeroed, swapped in for Param.grad while the node's backward runs. */
static void step_grads_begin(Net *net, const Node *nd, float *saved[2]) {
    const int idx[2] = {nd->weight, nd->bias};
    size_t at = 0;
    for (int k = 0; k < 2; k++) {
        saved[k] = NULL;
        if (idx[k] < 0 || net->params[idx[k]].is_buffer) continue;
        Param *prm = &net->params[idx[k]];
        saved[k] = prm->grad;
        prm->grad = net->step_grad + at;
        memset(prm->grad, 0, sizeof(float) * (size_t)prm->numel);
        at += align_up((size_t)prm->numel);
    }
}

/* Apply the optimizer to node nd's parameters, then give Param.grad back its own buffer. */
static void step_grads_end(Net *net, const Node *nd, Optimizer *opt, float *const saved[2]) {
    const int idx[2] = {nd->weight, nd->bias};
    for (int k = 0; k < 2; k++) {
        if (idx[k] < 0 || net->params[idx[k]].is_buffer) continue;
        optimizer_update(opt, net, idx[k]);
        net->params[idx[k]].grad = saved[k];
    }
}

/* net->step_grad sized for the node with the most parameter values (its weight and bias),
 * once: a network's parameters never change shape. */
static void step_grad_reserve(Net *net) {
    if (net->step_grad) return;
    size_t need = 16;
    for (int i = 0; i < net->n_nodes; i++) {
        const Node *nd = &net->nodes[i];
        size_t floats = 0;
        if (nd->weight >= 0) floats += align_up((size_t)net->params[nd->weight].numel);
        if (nd->bias >= 0) floats += align_up((size_t)net->params[nd->bias].numel);
        if (floats > need) need = floats;
    }
    net->step_grad = rn_alloc(need * sizeof(float));
}

static int backward_pass(Net *net, const float *dlogits, int n, float *dx, Optimizer *opt);

void net_backward(Net *net, const float *dlogits, int n, float *dx) {
    if (net->grads_released) {
        rn_set_error("%s: net_backward needs the gradient buffers, which net_release_grads "
                     "freed (train with net_backward_step)", net->arch);
        return;
    }
    backward_pass(net, dlogits, n, dx, NULL);
}

int net_backward_step(Net *net, const float *dlogits, int n, Optimizer *opt) {
    if (!opt || opt->n < net->n_params) {
        rn_set_error("%s: net_backward_step needs an optimizer made for this network "
                     "(%d parameters; optimizer slots: %d)", net->arch, net->n_params,
                     opt ? opt->n : 0);
        return -1;
    }
    step_grad_reserve(net);
    return backward_pass(net, dlogits, n, NULL, opt); /* begins the step once it is valid */
}

void net_release_grads(Net *net) {
    for (int i = 0; i < net->n_params; i++) {
        rn_free(net->params[i].grad);
        net->params[i].grad = NULL;
    }
    net->grads_released = 1;
}

/* Backward from dlogits; with opt, each node's parameters are updated by the optimizer as
 * soon as the node's backward has made their gradients (see net_backward_step). */
static int backward_pass(Net *net, const float *dlogits, int n, float *dx, Optimizer *opt) {
    const int last = net->n_nodes - 1;
    if (!net->training_plan || !net->arena || n < 1 || n > net->batch || !dlogits) {
        rn_set_error("%s: backward of %d samples needs a training plan for at least that "
                     "many (planned batch %d, training %d)", net->arch, n, net->batch,
                     net->training_plan);
        return -1;
    }
    /* the plan kept only the outputs of the stages that were trainable when it was made */
    int need = dx ? STAGE_STEM : net->first_trainable;
    if (need < net->plan_first_trainable) {
        rn_set_error("%s: backward %s needs a training plan made with first_trainable <= %d "
                     "(this one: %d); call net_plan again", net->arch,
                     dx ? "to the input" : "into the trainable stages", need,
                     net->plan_first_trainable);
        return -1;
    }
    /* Nodes of frozen stages are skipped unless the input gradient is wanted: stages never
     * decrease along the node order, so no trainable parameter lies before them. */
    const int ft = net->first_trainable, all = dx != NULL, train = net->forward_train;
    if (ft < net->grad_from_stage) net->grad_from_stage = ft;
    if (opt) optimizer_begin_step(opt);
    const Param *p = net->params;
    float *scratch = net->grad_scratch;
    net->recompute_owner = net->recompute_conv_owner = -1;
    memcpy(net->nodes[last].dout, dlogits, sizeof(float) * n * node_numel(&net->nodes[last]));
    double t0 = net->node_seconds ? rn_seconds() : 0;
    for (int i = last; i >= 1; i--) {
        Node *nd = &net->nodes[i];
        if ((!all && nd->stage < ft) || !nd->dout) continue;
        const int trains = nd->stage >= ft; /* this node's parameters get gradients */
        const int j = nd->in[0];
        const Node *in = &net->nodes[j];
        const int want = all || in->stage >= ft; /* the input's gradient is needed */
        const size_t count = (size_t)n * node_numel(nd), in_count = (size_t)n * node_numel(in);
        float *dy = nd->dout;
        float *dxp = want ? gradient_target(net, i, j, scratch) : NULL;
        /* what backward reads of the input (its own output: only a ReLU's, below) */
        const float *x_in = in->recompute && backward_reads_input(nd)
                                ? recomputed_output(net, j, n) : in->out;
        float *saved_grads[2];
        if (opt && trains) step_grads_begin(net, nd, saved_grads);
        switch (nd->op) {
        case OP_INPUT: break;
        case OP_CONV:
            if (!dxp && !trains) break;
            if (dxp && in->last_consumer != i) { /* not x's first gradient: add in place */
                conv2d_backward_add(&nd->conv, n, in->h, in->w, x_in, p[nd->weight].data, dy,
                                    in->dout, trains ? p[nd->weight].grad : NULL,
                                    trains && nd->bias >= 0 ? p[nd->bias].grad : NULL);
                dxp = NULL;
                break;
            }
            conv2d_backward(&nd->conv, n, in->h, in->w, x_in, p[nd->weight].data, dy, dxp,
                            trains ? p[nd->weight].grad : NULL,
                            trains && nd->bias >= 0 ? p[nd->bias].grad : NULL);
            break;
        case OP_BN:
            if (bn_trains(net, nd, train))
                batchnorm_backward_train(n, nd->c, nd->h * nd->w, x_in, p[nd->weight].data,
                                         nd->save0, nd->save1, dy, dxp, p[nd->weight].grad,
                                         p[nd->bias].grad);
            else
                batchnorm_backward_eval(n, nd->c, nd->h * nd->w, x_in, p[nd->weight].data,
                                        p[nd->mean].data, p[nd->var].data, net->bn_eps, dy,
                                        dxp, trains ? p[nd->weight].grad : NULL,
                                        trains ? p[nd->bias].grad : NULL);
            break;
        case OP_RELU:
            if (!dxp) break;
            if (nd->recompute && net->recompute_owner != i)
                relu_bn_pass(net, i, n, dy, dxp); /* the mask straight from bn(conv) */
            else
                relu_backward(count, nd->recompute ? net->recompute_buf : nd->out, dy, dxp);
            break;
        case OP_MAXPOOL:
            if (dxp)
                maxpool2d_backward(n, in->c, in->h, in->w, nd->k, nd->stride, nd->pad,
                                   (const int32_t *)(const void *)nd->save0, dy, dxp);
            break;
        case OP_GAP:
            if (dxp) avgpool_global_backward(n, in->c, in->h * in->w, dy, dxp);
            break;
        case OP_ADD: {
            /* y = [relu](a + b): both inputs receive dy [* (y > 0)], in one pass */
            float *d[2] = {NULL, NULL};
            int first[2] = {0, 0};
            for (int k = 0; k < 2; k++)
                if (all || net->nodes[nd->in[k]].stage >= ft) {
                    d[k] = net->nodes[nd->in[k]].dout;
                    first[k] = net->nodes[nd->in[k]].last_consumer == i;
                }
            add_backward(count, nd->relu ? nd->out : NULL, dy, d, first);
            dxp = NULL; /* done */
            break;
        }
        case OP_SHORTCUT_A:
            if (dxp) shortcut_a_backward(n, in->c, in->h, in->w, nd->c, nd->stride, dy, dxp);
            break;
        case OP_LINEAR:
            linear_backward(n, (int)node_numel(in), nd->c, x_in, p[nd->weight].data, dy, dxp,
                            trains ? p[nd->weight].grad : NULL,
                            trains ? p[nd->bias].grad : NULL);
            break;
        case OP_DROPOUT:
            if (!dxp) break;
            if (train && trains && nd->p > 0) dropout_backward(count, nd->save0, dy, dxp);
            else if (dxp != dy) memcpy(dxp, dy, sizeof(float) * count);
            break;
        case OP_CONCAT: {
            /* each input receives its channel slice of dy, sample by sample */
            dxp = NULL;
            size_t per_sample = node_numel(nd), at = 0;
            for (int k = 0; k < nd->n_in; k++) {
                int jk = nd->in[k];
                size_t part = node_numel(&net->nodes[jk]);
                if (all || net->nodes[jk].stage >= ft) {
                    float *t = gradient_target(net, i, jk, scratch);
                    for (int s = 0; s < n; s++)
                        memcpy(t + s * part, dy + s * per_sample + at, sizeof(float) * part);
                    gradient_done(net, i, jk, t, (size_t)n * part);
                }
                at += part;
            }
            break;
        }
        }
        if (dxp) gradient_done(net, i, j, dxp, in_count);
        if (net->node_seconds) { /* profiling */
            double t1 = rn_seconds();
            net->node_seconds[net->n_nodes + i] += t1 - t0;
            t0 = t1;
        }
        if (opt && trains) {
            step_grads_end(net, nd, opt, saved_grads);
            if (net->node_seconds) { /* profiling: the updates in their own slot */
                double t1 = rn_seconds();
                net->node_seconds[2 * net->n_nodes] += t1 - t0;
                t0 = t1;
            }
        }
    }
    if (dx) memcpy(dx, net->nodes[0].dout, sizeof(float) * n * node_numel(&net->nodes[0]));
    return 0;
}

/* Backward writes only the gradients of stages >= first_trainable, so only those (from
 * the lowest such stage since the last call) need zeroing: a frozen backbone costs nothing. */
void net_zero_grad(Net *net) {
    for (int i = 0; i < net->n_params; i++)
        if (net->params[i].grad && net->params[i].stage >= net->grad_from_stage)
            memset(net->params[i].grad, 0, sizeof(float) * (size_t)net->params[i].numel);
    net->grad_from_stage = STAGE_COUNT;
}

void net_set_first_trainable(Net *net, int stage) {
    net->first_trainable = stage < STAGE_STEM ? STAGE_STEM : stage > STAGE_COUNT ? STAGE_COUNT
                                                                                 : stage;
    /* the same sizes planned before cannot fail */
    if (net->arena && net->training_plan && net->first_trainable < net->plan_first_trainable)
        net_plan(net, net->batch, net->in_h, net->in_w, 1);
}

Param *net_find_param(Net *net, const char *name) {
    for (int i = 0; i < net->n_params; i++)
        if (strcmp(net->params[i].name, name) == 0) return &net->params[i];
    return NULL;
}

int64_t net_count_params(const Net *net, int trainable_only) {
    int64_t total = 0;
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->params[i];
        if (p->is_buffer || (trainable_only && p->stage < net->first_trainable)) continue;
        total += p->numel;
    }
    return total;
}

/* dst's parameter for src's name: the same name, else fc.X <-> linear.X */
static Param *find_counterpart(Net *dst, const char *name) {
    Param *d = net_find_param(dst, name);
    char alias[RN_NAME_MAX];
    if (!d && strncmp(name, "fc.", 3) == 0) {
        join_name(alias, "linear", name + 3);
        d = net_find_param(dst, alias);
    } else if (!d && strncmp(name, "linear.", 7) == 0) {
        join_name(alias, "fc", name + 7);
        d = net_find_param(dst, alias);
    }
    return d;
}

int net_copy_params(Net *dst, const Net *src) {
    int copied = 0;
    for (int i = 0; i < src->n_params; i++) {
        const Param *s = &src->params[i];
        Param *d = find_counterpart(dst, s->name);
        if (!d || d->ndim != s->ndim || d->is_buffer != s->is_buffer) continue;
        int same = 1;
        for (int k = 0; k < s->ndim; k++) same &= d->shape[k] == s->shape[k];
        if (!same) continue;
        memcpy(d->data, s->data, sizeof(float) * (size_t)s->numel);
        copied++;
    }
    return copied;
}

const float *net_node_output(const Net *net, int node) {
    if (node < 0 || node >= net->n_nodes) return NULL;
    return net->nodes[node].out;
}

size_t net_node_size(const Net *net, int node) {
    if (node < 0 || node >= net->n_nodes) return 0;
    return node_numel(&net->nodes[node]);
}

int net_forward_dataset(Net *net, int node, const Dataset *d, const Preprocess *p,
                        int batch, int threads, const char *label, BatchVisitor visit,
                        void *ctx) {
    if (d->n == 0) return 0;
    Loader *l = loader_create(d, p, NULL, batch, 0, 0, threads);
    if (!l) return -1;
    loader_start_epoch(l, 0);
    float *x = rn_alloc(sizeof(float) * (size_t)batch * 3 * p->size * p->size);
    int *labels = rn_alloc(sizeof(int) * (size_t)batch), *idx = rn_alloc(sizeof(int) * (size_t)batch);
    Progress prog;
    progress_start(&prog, label, d->n);
    long done = 0;
    int got;
    while ((got = loader_next(l, x, labels, idx)) > 0) {
        const float *out = node < 0 ? net_forward(net, x, got, 0)
                                    : net_forward_upto(net, x, got, 0, node);
        visit(ctx, got, idx, labels, out);
        done += got;
        progress_update(&prog, done, "img");
    }
    progress_finish(&prog, "img");
    int failed = loader_failures(l);
    loader_free(l);
    rn_free(x);
    rn_free(labels);
    rn_free(idx);
    return failed;
}
