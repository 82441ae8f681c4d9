/* resnet.c - the model: the architecture registry (torchvision and CIFAR ResNets), their
 * classifier heads, and the forward and backward passes over the graph.
 *
 * A network is a list of nodes in topological order. A Node is one layer (conv, batch
 * norm, ReLU, ...) reading the outputs of 1..4 earlier nodes; what each op computes is its
 * row in the op table (ops.c), which calls the layers of layers.c. Parameters carry
 * torchvision's state_dict names, so weights load by name. Every node and parameter
 * belongs to a freeze group the architecture declares ("stem", "layer1".."layer4",
 * "head"); groups < net->first_trainable are frozen: their batch norms run in eval mode,
 * their parameters get no gradient and backward does not even enter them.
 *
 * Where each output lives, which layers run fused and what backward recomputes is the
 * planner's business (plan.c): net_plan once per (batch, size), then forward and backward
 * as often as wanted.
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
#include "ops.h"
#include "dist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ graph building */

static Net *net_new(const char *arch, int num_classes, int in_c, uint64_t seed) {
    Net *net = rn_calloc(1, sizeof *net);
    snprintf(net->arch, sizeof net->arch, "%s", arch);
    net->num_classes = num_classes;
    net->in_c = in_c;
    net->feature_node = -1;
    net->pooled_node = -1;
    net->first_trainable = 0;
    net->low_memory = 1; /* a few % slower training for 40 % less activation memory */
    net->winograd = conv_winograd_pays();
    rng_seed(&net->rng, seed ^ 0xd1b54a32d192ed03ULL); /* dropout stream, apart from init */
    return net;
}

/* Declare the next freeze group; returns its index. */
static int group_add(Net *net, const char *name) {
    int g = net->n_groups++;
    size_t len = strlen(name) < RN_GROUP_NAME - 1 ? strlen(name) : RN_GROUP_NAME - 1;
    memcpy(net->group_names[g], name, len);
    net->group_names[g][len] = 0;
    return g;
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
        /* untouched until a backward writes it: ./infer never does, train.c releases it */
        p->grad = is_buffer ? NULL : rn_calloc_lazy((size_t)p->numel, sizeof(float));
    }
    p->is_buffer = is_buffer;
    p->stage = stage;
    return idx;
}

/* The random initialisations; rng NULL (resnet_create_for_loading): left 0. */
static void fill_normal(Param *p, float std, Rng *rng) {
    if (!rng) return;
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
    if (!rng) return;
    for (int64_t i = 0; p->data && i < p->numel; i++)
        p->data[i] = (2.0f * rng_uniform(rng) - 1.0f) * bound;
}

static void fill_const(Param *p, float v) {
    for (int64_t i = 0; p->data && i < p->numel; i++) p->data[i] = v;
}

/* Conv2d(in_c, out_c, k, stride, pad, bias). torchvision's init: weight ~ N(0, 2 / fan_out)
 * (kaiming_normal_, mode="fan_out", relu), fan_out = out_c * k * k; a bias keeps torch's
 * default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_c * k * k. */
static int conv_add_groups(Net *net, Rng *rng, const char *name, int stage, int in, int in_c,
                           int out_c, int k, int stride, int pad, int groups, int with_bias) {
    int idx = node_add(net, OP_CONV, name, stage, in, -1);
    ConvSpec s = {in_c, out_c, k, k, stride, pad, groups};
    int64_t wshape[4] = {out_c, in_c / groups, k, k}, bshape[1] = {out_c};
    int w = param_add(net, name, "weight", 4, wshape, 0, stage);
    fill_normal(&net->params[w], sqrtf(2.0f / (float)(out_c * k * k)), rng);
    int b = -1;
    if (with_bias) {
        b = param_add(net, name, "bias", 1, bshape, 0, stage);
        fill_uniform(&net->params[b], 1.0f / sqrtf((float)(in_c / groups * k * k)), rng);
    }
    Node *nd = &net->nodes[idx];
    nd->conv = s;
    nd->weight = w;
    nd->bias = b;
    return idx;
}

static int conv_add(Net *net, Rng *rng, const char *name, int stage, int in, int in_c, int out_c,
                    int k, int stride, int pad, int with_bias) {
    return conv_add_groups(net, rng, name, stage, in, in_c, out_c, k, stride, pad, 1, with_bias);
}

/* torch.nn.BatchNorm2d / BatchNorm1d defaults */
#define BN_EPS      1e-5f
#define BN_MOMENTUM 0.1f

/* BatchNorm2d / BatchNorm1d(c, eps, momentum): gamma 1, beta 0, running mean 0, var 1. */
static int bn_add(Net *net, const char *name, int stage, int in, int c, float eps, float momentum) {
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
    nd->eps = eps;
    nd->momentum = momentum;
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

/* Conv-BN pair named prefix.convI / prefix.bnI (or any two names), torch's BN defaults. */
static int conv_bn(Net *net, Rng *rng, const char *conv_name, const char *bn_name, int stage,
                   int in, int in_c, int out_c, int k, int stride, int pad) {
    int c = conv_add(net, rng, conv_name, stage, in, in_c, out_c, k, stride, pad, 0);
    return bn_add(net, bn_name, stage, c, out_c, BN_EPS, BN_MOMENTUM);
}

/* ------------------------------------------------------------------ ResNets */

/* torchvision BasicBlock / akamaster's CIFAR BasicBlock:
 *   relu(bn2(conv2(relu(bn1(conv1_3x3_stride(x))))) + shortcut(x))
 * shortcut: identity, or when the shape changes downsample = conv1x1_stride + bn
 * (torchvision) or option A = subsample + zero channels (CIFAR). The block's sum and last
 * ReLU are one node named as the block (its output is the block module's). torchvision's
 * ReLU module is called twice; forward hooks see its calls as "relu", "relu.1". */
static int basic_block(Net *net, Rng *rng, const char *p, int stage, int x, int in_c, int planes,
                       int stride, int cifar) {
    char n1[RN_NAME_MAX], n2[RN_NAME_MAX];
    join_name(n1, p, "conv1");
    join_name(n2, p, "bn1");
    int y = conv_bn(net, rng, n1, n2, stage, x, in_c, planes, 3, stride, 1);
    y = simple_add(net, OP_RELU, p, cifar ? "relu1" : "relu", stage, y);
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
    return node_add(net, OP_ADD_RELU, p, stage, y, shortcut);
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
    y = simple_add(net, OP_RELU, p, "relu", stage, y);
    join_name(n1, p, "conv2");
    join_name(n2, p, "bn2");
    y = conv_bn(net, rng, n1, n2, stage, y, planes, planes, 3, stride, 1);
    y = simple_add(net, OP_RELU, p, "relu.1", stage, y);
    join_name(n1, p, "conv3");
    join_name(n2, p, "bn3");
    y = conv_bn(net, rng, n1, n2, stage, y, planes, out_c, 1, 1, 0);
    int shortcut = x;
    if (stride != 1 || in_c != out_c) {
        join_name(n1, p, "downsample.0");
        join_name(n2, p, "downsample.1");
        shortcut = conv_bn(net, rng, n1, n2, stage, x, in_c, out_c, 1, stride, 0);
    }
    return node_add(net, OP_ADD_RELU, p, stage, y, shortcut);
}

/* torchvision ResNet: conv1 7x7/2 64, bn1, relu, maxpool 3x3/2; layer1..4 with 64..512
 * planes (the first block of layers 2-4 with stride 2). Groups: stem, layer1..layer4. */
static int build_resnet(Net *net, const ArchSpec *a, Rng *rng) {
    int stem = group_add(net, "stem");
    int x = conv_bn(net, rng, "conv1", "bn1", stem, 0, 3, 64, 7, 2, 3);
    x = node_add(net, OP_RELU, "relu", stem, x, -1);
    x = node_add(net, OP_MAXPOOL, "maxpool", stem, x, -1);
    net->nodes[x].k = 3;
    net->nodes[x].stride = 2;
    net->nodes[x].pad = 1;
    int c = 64;
    char p[RN_NAME_MAX];
    for (int l = 0; l < 4; l++) {
        snprintf(p, sizeof p, "layer%d", l + 1);
        int g = group_add(net, p);
        for (int b = 0; b < a->blocks[l]; b++) {
            snprintf(p, sizeof p, "layer%d.%d", l + 1, b);
            int planes = 64 << l, stride = (l > 0 && b == 0) ? 2 : 1;
            if (a->bottleneck) {
                x = bottleneck_block(net, rng, p, g, x, c, planes, stride);
                c = planes * 4;
            } else {
                x = basic_block(net, rng, p, g, x, c, planes, stride, 0);
                c = planes;
            }
        }
    }
    net->feature_node = x;
    return c;
}

/* akamaster's CIFAR ResNet: conv1 3x3 16, bn1, relu; layer1..3 with 16, 32, 64 channels
 * (stride 1, 2, 2), option-A shortcuts. Groups: stem, layer1..layer3. */
static int build_cifar_resnet(Net *net, const ArchSpec *a, Rng *rng) {
    int stem = group_add(net, "stem");
    int x = conv_bn(net, rng, "conv1", "bn1", stem, 0, 3, 16, 3, 1, 1);
    x = node_add(net, OP_RELU, "relu", stem, x, -1);
    int c = 16;
    char p[RN_NAME_MAX];
    for (int l = 0; l < 3; l++) {
        snprintf(p, sizeof p, "layer%d", l + 1);
        int g = group_add(net, p);
        for (int b = 0; b < a->blocks[l]; b++) {
            snprintf(p, sizeof p, "layer%d.%d", l + 1, b);
            int planes = 16 << l, stride = (l > 0 && b == 0) ? 2 : 1;
            x = basic_block(net, rng, p, g, x, c, planes, stride, 1);
            c = planes;
        }
    }
    net->feature_node = x;
    return c;
}

/* ------------------------------------------------------------------ VGG */

/* torchvision VGG-16 (configuration "D"): 13 3x3 convs with bias, each followed by ReLU
 * (vgg16_bn: batch norm, then ReLU), in five blocks of 2, 2, 3, 3, 3 convs closed by a 2x2
 * stride-2 max pool; modules numbered in order as torchvision's nn.Sequential "features"
 * (features.0 conv, features.1 relu, ..., features.30 the last pool; with BN features.43).
 * Then avgpool = AdaptiveAvgPool2d(7) (a 224 px input gives 7x7 already; smaller inputs
 * repeat cells). torchvision's init: convs Kaiming normal fan_out with bias 0. Groups:
 * block1..block5 (each block's pool in its group, avgpool in block5). */
static int build_vgg(Net *net, Rng *rng, int batchnorm) {
    static const int cfg[] = {
        64,  64,  0,      /* block1 (0: max pool) */
        128, 128, 0,      /* block2 */
        256, 256, 256, 0, /* block3 */
        512, 512, 512, 0, /* block4 */
        512, 512, 512, 0, /* block5 */
    };
    char name[RN_NAME_MAX];
    int x = 0, c = 3, m = 0, block = 1;
    int g = group_add(net, "block1");
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        snprintf(name, sizeof name, "features.%d", m++);
        if (cfg[i] == 0) {
            x = node_add(net, OP_MAXPOOL, name, g, x, -1);
            net->nodes[x].k = 2;
            net->nodes[x].stride = 2;
            if (++block <= 5) {
                snprintf(name, sizeof name, "block%d", block);
                g = group_add(net, name);
            }
            continue;
        }
        x = conv_add(net, rng, name, g, x, c, cfg[i], 3, 1, 1, 1);
        fill_const(&net->params[net->nodes[x].bias], 0.0f);
        c = cfg[i];
        if (batchnorm) {
            snprintf(name, sizeof name, "features.%d", m++);
            x = bn_add(net, name, g, x, c, BN_EPS, BN_MOMENTUM);
        }
        snprintf(name, sizeof name, "features.%d", m++);
        x = node_add(net, OP_RELU, name, g, x, -1);
    }
    x = node_add(net, OP_ADAPTIVE_AVGPOOL, "avgpool", g, x, -1);
    net->nodes[x].k = 7;
    net->feature_node = x;
    return c;
}

static int build_vgg16(Net *net, const ArchSpec *a, Rng *rng) { return build_vgg(net, rng, 0); }
static int build_vgg16_bn(Net *net, const ArchSpec *a, Rng *rng) { return build_vgg(net, rng, 1); }

/* VGG's pooled features: torchvision's classifier up to its last Linear, which the
 * transfer recipe replaces (the head here is classifier.6):
 *   classifier.0 Linear(512*7*7, 4096) (reading the 7x7 map flattened in NCHW order),
 *   .1 ReLU, .2 Dropout(0.5) | .3 Linear(4096, 4096), .4 ReLU, .5 Dropout(0.5)
 * in groups fc1 and fc2; the features are classifier.5's output (classifier.4's in eval).
 * torchvision's init: weights N(0, 0.01), biases 0. */
static int vgg_classifier(Net *net, Rng *rng, int x, int c) {
    const int in[2] = {c * 7 * 7, 4096};
    char name[RN_NAME_MAX];
    for (int l = 0; l < 2; l++) {
        snprintf(name, sizeof name, "fc%d", l + 1);
        int g = group_add(net, name);
        snprintf(name, sizeof name, "classifier.%d", 3 * l);
        x = linear_add(net, rng, name, g, x, in[l], 4096);
        fill_normal(&net->params[net->nodes[x].weight], 0.01f, rng);
        fill_const(&net->params[net->nodes[x].bias], 0.0f);
        snprintf(name, sizeof name, "classifier.%d", 3 * l + 1);
        x = node_add(net, OP_RELU, name, g, x, -1);
        snprintf(name, sizeof name, "classifier.%d", 3 * l + 2);
        x = node_add(net, OP_DROPOUT, name, g, x, -1);
        net->nodes[x].p = 0.5f;
    }
    net->pooled_node = x;
    return 4096;
}

/* ------------------------------------------------------------------ Keras' ResNet50 */

/* Keras' batch norm: epsilon 1e-3 (keras-applications, the layout of the published
 * ImageNet weights; tf.keras 2.x uses 1.001e-5, which a converted file's "bn_eps"
 * metadata sets on load), momentum 0.99 on the running value = torch momentum 0.01. */
#define KERAS_BN_EPS      1e-3f
#define KERAS_BN_MOMENTUM 0.01f

/* Conv2D (with bias, as Keras' default) named P_conv, then BatchNormalization P_bn. */
static int keras_conv_bn(Net *net, Rng *rng, const char *p, int stage, int in, int in_c, int out_c,
                         int k, int stride, int pad) {
    char conv[RN_NAME_MAX], bn[RN_NAME_MAX];
    snprintf(conv, sizeof conv, "%s_conv", p);
    snprintf(bn, sizeof bn, "%s_bn", p);
    int x = conv_add(net, rng, conv, stage, in, in_c, out_c, k, stride, pad, 1);
    fill_const(&net->params[net->nodes[x].bias], 0.0f);
    return bn_add(net, bn, stage, x, out_c, KERAS_BN_EPS, KERAS_BN_MOMENTUM);
}

/* tf.keras' ResNet50 block1 (ResNet v1: the stride on the FIRST 1x1 conv), named as tf.keras
 * names its layers (P = conv{stage}_block{b}):
 *   P_out = relu(P_3_bn(P_3_conv(relu(P_2_bn(P_2_conv_3x3(relu(P_1_bn(P_1_conv_1x1_stride(x))))))))
 *               + shortcut),  shortcut = P_0_bn(P_0_conv_1x1_stride(x)) in a stage's first block.
 * "same" padding of the 3x3 conv is pad 1; the sum and its ReLU are one node, P_out. */
static int keras_block(Net *net, Rng *rng, const char *p, int stage, int x, int in_c, int filters,
                       int stride, int conv_shortcut) {
    char n[RN_NAME_MAX];
    int shortcut = x;
    if (conv_shortcut) {
        snprintf(n, sizeof n, "%s_0", p);
        shortcut = keras_conv_bn(net, rng, n, stage, x, in_c, 4 * filters, 1, stride, 0);
    }
    snprintf(n, sizeof n, "%s_1", p);
    int y = keras_conv_bn(net, rng, n, stage, x, in_c, filters, 1, stride, 0);
    snprintf(n, sizeof n, "%s_1_relu", p);
    y = node_add(net, OP_RELU, n, stage, y, -1);
    snprintf(n, sizeof n, "%s_2", p);
    y = keras_conv_bn(net, rng, n, stage, y, filters, filters, 3, 1, 1);
    snprintf(n, sizeof n, "%s_2_relu", p);
    y = node_add(net, OP_RELU, n, stage, y, -1);
    snprintf(n, sizeof n, "%s_3", p);
    y = keras_conv_bn(net, rng, n, stage, y, filters, 4 * filters, 1, 1, 0);
    snprintf(n, sizeof n, "%s_out", p);
    return node_add(net, OP_ADD_RELU, n, stage, y, shortcut);
}

/* Keras' ResNet50 (keras-applications / tf.keras.applications): conv1_pad ZeroPadding2D(3)
 * + conv1_conv 7x7/2 valid = a 7x7/2 conv with pad 3; conv1_bn, conv1_relu; pool1_pad
 * ZeroPadding2D(1) + pool1_pool 3x3/2 valid = a 3x3/2 max pool with pad 1 (the zeros
 * padded in take part in Keras' max, but they follow a ReLU, so every window's max is
 * that of its real values: the same as padding that never wins); stages conv2..conv5 of
 * 3, 4, 6, 3 blocks with 64..512 filters (stride 1, 2, 2, 2), then avg_pool and the
 * classifier "predictions". Project-side names are tf.keras 2.x's layer names (conv1_conv,
 * conv2_block1_1_conv, ..., predictions) with torch's parameter suffixes (.weight OIHW,
 * .bias; BN .weight = gamma, .bias = beta, .running_mean, .running_var);
 * tools/keras2safetensors.py maps both Keras naming schemes to them. Groups: conv1, conv2
 * .. conv5. */
static int build_keras_resnet50(Net *net, const ArchSpec *a, Rng *rng) {
    int g = group_add(net, "conv1");
    int x = keras_conv_bn(net, rng, "conv1", g, 0, 3, 64, 7, 2, 3);
    x = node_add(net, OP_RELU, "conv1_relu", g, x, -1);
    x = node_add(net, OP_MAXPOOL, "pool1_pool", g, x, -1);
    net->nodes[x].k = 3;
    net->nodes[x].stride = 2;
    net->nodes[x].pad = 1;
    int c = 64;
    char p[RN_NAME_MAX];
    for (int l = 0; l < 4; l++) {
        snprintf(p, sizeof p, "conv%d", l + 2);
        g = group_add(net, p);
        for (int b = 0; b < a->blocks[l]; b++) {
            snprintf(p, sizeof p, "conv%d_block%d", l + 2, b + 1);
            int filters = 64 << l, stride = (l > 0 && b == 0) ? 2 : 1;
            x = keras_block(net, rng, p, g, x, c, filters, stride, b == 0);
            c = 4 * filters;
        }
    }
    net->feature_node = x;
    return c;
}

/* ------------------------------------------------------------------ EfficientNet */

/* One stage of torchvision's EfficientNet-B0 (MBConvConfig): expansion ratio, depthwise
 * kernel, the first block's stride, channels in and out, blocks. */
typedef struct {
    int expand, kernel, stride, in_c, out_c, blocks;
} MBConvStage;

static const MBConvStage efficientnet_b0_stages[7] = {
    {1, 3, 1, 32, 16, 1},  {6, 3, 2, 16, 24, 2},   {6, 5, 2, 24, 40, 2},  {6, 3, 2, 40, 80, 3},
    {6, 5, 1, 80, 112, 3}, {6, 5, 2, 112, 192, 4}, {6, 3, 1, 192, 320, 1},
};

/* torchvision's Conv2dNormActivation named p: p.0 Conv2d(k, stride, padding (k - 1) / 2,
 * groups, no bias), p.1 BatchNorm2d (torch's defaults, as efficientnet_b0 uses), p.2 SiLU
 * unless silu is 0. */
static int conv_bn_act(Net *net, Rng *rng, const char *p, int stage, int x, int in_c, int out_c,
                       int k, int stride, int groups, int silu) {
    char n1[RN_NAME_MAX];
    join_name(n1, p, "0");
    int y = conv_add_groups(net, rng, n1, stage, x, in_c, out_c, k, stride, (k - 1) / 2, groups, 0);
    join_name(n1, p, "1");
    y = bn_add(net, n1, stage, y, out_c, BN_EPS, BN_MOMENTUM);
    return silu ? simple_add(net, OP_SILU, p, "2", stage, y) : y;
}

/* torchvision's SqueezeExcitation named p on x [c, h, w]:
 *   p = x * sigmoid(fc2(silu(fc1(avgpool(x)))))
 * fc1 and fc2 1x1 convs with bias (c -> squeeze -> c), initialised to zero as EfficientNet
 * does. The node named p is the channel scale, the module's output. */
static int squeeze_excitation(Net *net, Rng *rng, const char *p, int stage, int x, int c,
                              int squeeze) {
    char name[RN_NAME_MAX];
    int s = simple_add(net, OP_GAP, p, "avgpool", stage, x);
    join_name(name, p, "fc1");
    s = conv_add(net, rng, name, stage, s, c, squeeze, 1, 1, 0, 1);
    fill_const(&net->params[net->nodes[s].bias], 0.0f);
    s = simple_add(net, OP_SILU, p, "activation", stage, s);
    join_name(name, p, "fc2");
    s = conv_add(net, rng, name, stage, s, squeeze, c, 1, 1, 0, 1);
    fill_const(&net->params[net->nodes[s].bias], 0.0f);
    s = simple_add(net, OP_SIGMOID, p, "scale_activation", stage, s);
    return node_add(net, OP_CHANNEL_SCALE, p, stage, x, s);
}

/* torchvision's MBConv named p (block.K numbered as its Sequential):
 *   [expand 1x1 conv-BN-SiLU when expand > 1], depthwise kxk conv-BN-SiLU (the stride),
 *   squeeze-and-excitation (squeeze = max(1, in_c / 4)), project 1x1 conv-BN;
 *   with stride 1 and in_c == out_c: p = stochastic_depth(that) + x, the node named p. */
static int mbconv(Net *net, Rng *rng, const char *p, int stage, int x, const MBConvStage *cfg,
                  int in_c, int stride, float sd_prob) {
    char name[RN_NAME_MAX], part[16];
    const int mid = in_c * cfg->expand;
    int k = 0, y = x;
    if (mid != in_c) {
        snprintf(part, sizeof part, "block.%d", k++);
        join_name(name, p, part);
        y = conv_bn_act(net, rng, name, stage, y, in_c, mid, 1, 1, 1, 1);
    }
    snprintf(part, sizeof part, "block.%d", k++);
    join_name(name, p, part);
    y = conv_bn_act(net, rng, name, stage, y, mid, mid, cfg->kernel, stride, mid, 1);
    snprintf(part, sizeof part, "block.%d", k++);
    join_name(name, p, part);
    y = squeeze_excitation(net, rng, name, stage, y, mid, in_c / 4 > 1 ? in_c / 4 : 1);
    snprintf(part, sizeof part, "block.%d", k++);
    join_name(name, p, part);
    y = conv_bn_act(net, rng, name, stage, y, mid, cfg->out_c, 1, 1, 1, 0);
    if (stride != 1 || in_c != cfg->out_c) return y;
    y = simple_add(net, OP_STOCHASTIC_DEPTH, p, "stochastic_depth", stage, y);
    net->nodes[y].p = sd_prob;
    return node_add(net, OP_ADD, p, stage, y, x);
}

/* torchvision's efficientnet_b0: features.0 3x3/2 conv-BN-SiLU to 32; features.1..7 the
 * MBConv stages; features.8 1x1 conv-BN-SiLU to 1280 (the feature map). Block b of the 16
 * drops its residual branch with probability 0.2 * b / 16 in training. Groups: features.0
 * .. features.8. */
static int build_efficientnet(Net *net, const ArchSpec *a, Rng *rng) {
    const MBConvStage *st = efficientnet_b0_stages;
    const float stochastic_depth_prob = 0.2f;
    int total = 0, block_id = 0;
    for (int l = 0; l < 7; l++) total += st[l].blocks;
    char p[RN_NAME_MAX];
    int x = conv_bn_act(net, rng, "features.0", group_add(net, "features.0"), 0, 3, st[0].in_c, 3,
                        2, 1, 1);
    for (int l = 0; l < 7; l++) {
        snprintf(p, sizeof p, "features.%d", l + 1);
        int g = group_add(net, p);
        for (int b = 0; b < st[l].blocks; b++, block_id++) {
            snprintf(p, sizeof p, "features.%d.%d", l + 1, b);
            float sd = (float)(stochastic_depth_prob * (double)block_id / total);
            x = mbconv(net, rng, p, g, x, &st[l], b ? st[l].out_c : st[l].in_c,
                       b ? 1 : st[l].stride, sd);
        }
    }
    x = conv_bn_act(net, rng, "features.8", group_add(net, "features.8"), x, st[6].out_c, 1280, 1,
                    1, 1, 1);
    net->feature_node = x;
    (void)a;
    return 1280;
}

/* The registry: every architecture resnet_create builds, with the preprocessing its
 * published weights expect (ImageNet weights: torchvision's convention at 224 px with a
 * 0.875 centre crop; the CIFAR ones: 32 px, no crop). */
static const ArchSpec archs[] = {
    {"resnet18", "resnet", {2, 2, 2, 2}, 0, build_resnet, "fc", "torchvision", 224, 0.875f},
    {"resnet34", "resnet", {3, 4, 6, 3}, 0, build_resnet, "fc", "torchvision", 224, 0.875f},
    {"resnet50", "resnet", {3, 4, 6, 3}, 1, build_resnet, "fc", "torchvision", 224, 0.875f},
    {"resnet101", "resnet", {3, 4, 23, 3}, 1, build_resnet, "fc", "torchvision", 224, 0.875f},
    {"resnet152", "resnet", {3, 8, 36, 3}, 1, build_resnet, "fc", "torchvision", 224, 0.875f},
    {"cifar_resnet20",
     "cifar_resnet",
     {3, 3, 3, 0},
     0,
     build_cifar_resnet,
     "linear",
     "torchvision",
     32,
     1.0f},
    {"cifar_resnet32",
     "cifar_resnet",
     {5, 5, 5, 0},
     0,
     build_cifar_resnet,
     "linear",
     "torchvision",
     32,
     1.0f},
    {"cifar_resnet44",
     "cifar_resnet",
     {7, 7, 7, 0},
     0,
     build_cifar_resnet,
     "linear",
     "torchvision",
     32,
     1.0f},
    {"cifar_resnet56",
     "cifar_resnet",
     {9, 9, 9, 0},
     0,
     build_cifar_resnet,
     "linear",
     "torchvision",
     32,
     1.0f},
    {"cifar_resnet110",
     "cifar_resnet",
     {18, 18, 18, 0},
     0,
     build_cifar_resnet,
     "linear",
     "torchvision",
     32,
     1.0f},
    {"cifar_resnet1202",
     "cifar_resnet",
     {200, 200, 200, 0},
     0,
     build_cifar_resnet,
     "linear",
     "torchvision",
     32,
     1.0f},
    {"vgg16",
     "vgg",
     {0},
     0,
     build_vgg16,
     "classifier.6",
     "torchvision",
     224,
     0.875f,
     vgg_classifier},
    {"vgg16_bn",
     "vgg",
     {0},
     0,
     build_vgg16_bn,
     "classifier.6",
     "torchvision",
     224,
     0.875f,
     vgg_classifier},
    {"keras_resnet50",
     "keras_resnet",
     {3, 4, 6, 3},
     1,
     build_keras_resnet50,
     "predictions",
     "caffe",
     224,
     1.0f},
    {"efficientnet_b0",
     "efficientnet",
     {0, 0, 0, 0},
     0,
     build_efficientnet,
     "classifier.1",
     "torchvision",
     224,
     0.875f,
     NULL,
     0.2f,
     "classifier.0"},
};
#define N_ARCHS ((int)(sizeof archs / sizeof archs[0]))

int arch_count(void) { return N_ARCHS; }

const ArchSpec *arch_at(int i) { return i >= 0 && i < N_ARCHS ? &archs[i] : NULL; }

const ArchSpec *arch_find(const char *name) {
    for (int i = 0; name && i < N_ARCHS; i++)
        if (strcmp(archs[i].name, name) == 0) return &archs[i];
    return NULL;
}

void arch_list(char *out, size_t out_len) {
    Buf b = {0};
    for (int i = 0; i < N_ARCHS; i++) buf_printf(&b, "%s%s", i ? ", " : "", archs[i].name);
    snprintf(out, out_len, "%s", b.data);
    buf_free(&b);
}

int arch_is_known(const char *arch) { return arch_find(arch) != NULL; }

int arch_is_cifar(const char *arch) {
    const ArchSpec *a = arch_find(arch);
    return a && strcmp(a->family, "cifar_resnet") == 0;
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
                rn_set_error("mlp head: hidden size %d must be in 1..%d", h->hidden[i], 1 << 20);
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
    default: rn_set_error("head: unknown head type %d", (int)h->type); return -1;
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
    const int st = net->n_groups - 1; /* the head's group, declared last */
    char name[RN_NAME_MAX];
    if (!head || head->type == HEAD_LINEAR) return linear_add(net, rng, linear_name, st, x, c, k);
    if (head->type == HEAD_MLP) {
        int m = 0, prev = c;
        for (int i = 0; i <= head->n_hidden; i++) {
            int out = i < head->n_hidden ? head->hidden[i] : k;
            if (head->batchnorm) {
                snprintf(name, sizeof name, "head.%d", m++);
                x = bn_add(net, name, st, x, prev, BN_EPS, BN_MOMENTUM);
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

/* The head after the backbone's feature map [c, h, w]: a pooled one (linear, MLP) reads
 * "avgpool", or what the architecture's pool hook made (VGG's classifier.5); inception
 * reads the map itself. */
static void head_attach(Net *net, Rng *rng, const HeadSpec *head, int x, int c,
                        const ArchSpec *a) {
    const int inception = head && head->type == HEAD_INCEPTION;
    const char *linear_name = a ? a->classifier : "fc";
    if (!inception && a && a->pool) {
        c = a->pool(net, rng, x, c);
        x = net->pooled_node;
    }
    int g = group_add(net, "head");
    if (inception) {
        head_build(net, rng, head, x, c, net->num_classes, NULL);
    } else if (net->pooled_node >= 0) {
        head_build(net, rng, head, x, c, net->num_classes, linear_name);
    } else {
        net->pooled_node = x = node_add(net, OP_GAP, "avgpool", g, x, -1);
        if (a && a->dropout > 0 && (!head || head->type == HEAD_LINEAR)) {
            x = node_add(net, OP_DROPOUT, a->dropout_name, g, x, -1);
            net->nodes[x].p = a->dropout;
        }
        head_build(net, rng, head, x, c, net->num_classes, linear_name);
    }
}

typedef enum { CREATE_INIT, CREATE_SHAPES_ONLY, CREATE_FOR_LOADING } CreateMode;

static Net *create_net(const char *arch, int num_classes, const HeadSpec *head, uint64_t seed,
                       CreateMode mode) {
    const ArchSpec *a = arch_find(arch);
    if (!a) {
        char known[1024];
        arch_list(known, sizeof known);
        rn_set_error("unknown architecture \"%s\" (known: %s)", arch ? arch : "(null)", known);
        return NULL;
    }
    if (check_classes(num_classes) || head_check(head)) return NULL;
    Net *net = net_new(arch, num_classes, 3, seed);
    net->shapes_only = mode == CREATE_SHAPES_ONLY;
    Rng rng, *init = mode == CREATE_INIT ? &rng : NULL;
    rng_seed(&rng, seed);
    node_add(net, OP_INPUT, "input", 0, -1, -1);
    int c = a->build(net, a, init);
    if (c < 0) {
        net_free(net);
        return NULL;
    }
    head_attach(net, init, head, net->feature_node, c, a);
    return net;
}

Net *resnet_create(const char *arch, int num_classes, const HeadSpec *head, uint64_t seed) {
    return create_net(arch, num_classes, head, seed, CREATE_INIT);
}

Net *resnet_describe(const char *arch, int num_classes, const HeadSpec *head) {
    return create_net(arch, num_classes, head, 0, CREATE_SHAPES_ONLY);
}

Net *resnet_create_for_loading(const char *arch, int num_classes, const HeadSpec *head) {
    return create_net(arch, num_classes, head, 0, CREATE_FOR_LOADING);
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
    /* pooling a [c, 1, 1] input is a copy; it lets the same head take feature maps */
    net->feature_node = node_add(net, OP_INPUT, "input", 0, -1, -1);
    head_attach(net, &rng, head, net->feature_node, c, NULL);
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
    plan_free(&net->plan);
    rn_free(net);
}

/* ------------------------------------------------------------------ freeze groups */

int net_find_group(const Net *net, const char *name) {
    for (int g = 0; name && g < net->n_groups; g++)
        if (strcmp(net->group_names[g], name) == 0) return g;
    return -1;
}

int net_head_group(const Net *net) { return net->n_groups - 1; }

void net_groups_json(const Net *net, Buf *b) {
    buf_printf(b, "[");
    for (int g = 0; g < net->n_groups; g++) {
        if (g) buf_printf(b, ",");
        buf_json_string(b, net->group_names[g]);
    }
    buf_printf(b, "]");
}

void net_set_first_trainable(Net *net, int stage) {
    int last = net->n_groups > 0 ? net->n_groups : STAGE_COUNT;
    net->first_trainable = stage < 0 ? 0 : stage > last ? last : stage;
    /* the same sizes planned before cannot fail */
    if (net->plan.arena && net->training_plan && net->first_trainable < net->plan.first_trainable)
        net_plan(net, net->batch, net->in_h, net->in_w, 1);
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
            rn_set_error("head \"%s\": mlp needs hidden sizes, e.g. mlp:256 or mlp:512,256", text);
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
                rn_set_error("head \"%s\": hidden size \"%s\" is not an integer in 1..%d", text, s,
                             1 << 20);
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
                rn_set_error("head \"%s\": branch filters \"%s\" is not an integer in 1..%d", text,
                             fields[1], 1 << 20);
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
                rn_set_error("head \"%s\": dropout \"%s\" is not a number in [0, 1)", text, f + 8);
                return -1;
            }
            seen_dropout = 1;
        } else if (head->type == HEAD_MLP && strcmp(f, "bn") == 0 && !head->batchnorm) {
            head->batchnorm = 1;
        } else {
            rn_set_error("head \"%s\": unexpected \"%s\" (forms: linear, "
                         "mlp:H1,H2..[:dropout=P][:bn], inception[:F][:dropout=P])",
                         text, f);
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

/* ------------------------------------------------------------------ forward */

static void run_hook(Net *net, int i, int n) {
    if (net->forward_hook) net->forward_hook(net->hook_ctx, net, i, n, net->nodes[i].out);
}

/* Node by node in order; a conv heading a fused group (plan.c) runs the whole group as one
 * pass, in eval mode, unless the net runs layer by layer (no_fusion, reference, a hook). */
const float *net_forward_upto(Net *net, const float *x, int n, int train, int upto) {
    if (!net->plan.arena || n < 1 || n > net->batch || !x) {
        rn_set_error("%s: forward of %d samples needs a plan for at least that many "
                     "(planned batch %d)",
                     net->arch, n, net->plan.arena ? net->batch : 0);
        return NULL;
    }
    if (upto < 0 || upto >= net->n_nodes) {
        rn_set_error("%s: no node %d (the network has %d)", net->arch, upto, net->n_nodes);
        return NULL;
    }
    const int layer_by_layer = net->no_fusion || net->reference || net->forward_hook;
    net->plan.forward_train = train;
    memcpy(net->nodes[0].out, x, sizeof(float) * n * node_numel(&net->nodes[0]));
    run_hook(net, 0, n);
    double t0 = net->node_seconds ? rn_seconds() : 0;
    for (int i = 1; i <= upto; i++) {
        const int node = i, tail = net->plan.nodes[i].fuse_tail;
        if (tail >= 0 && tail <= upto && !layer_by_layer &&
            !bn_trains(net, &net->nodes[i + 1], train)) {
            op_fused_forward(net, i, n);
            i = tail;
        } else if (op_table[net->nodes[i].op].forward(net, i, n, train) != 0) {
            return NULL;
        }
        run_hook(net, i, n);
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

/* ------------------------------------------------------------------ layer dumps */

typedef struct {
    StWriter w;
    Buf ops;
} Dump;

static void dump_node(void *ctx, const Net *net, int node, int n, const float *out) {
    Dump *d = ctx;
    const Node *nd = &net->nodes[node];
    int64_t shape[4] = {n, nd->c, nd->h, nd->w};
    st_writer_add_f32(&d->w, nd->name, 4, shape, out);
    buf_printf(&d->ops, "%s", d->ops.len > 1 ? "," : "");
    buf_json_string(&d->ops, nd->name);
    buf_printf(&d->ops, ":");
    buf_json_string(&d->ops, op_name(nd->op));
}

int net_dump_forward(Net *net, const float *x, int n, const char *path) {
    Dump d;
    st_writer_init(&d.w);
    memset(&d.ops, 0, sizeof d.ops);
    buf_printf(&d.ops, "{");
    ForwardHook saved = net->forward_hook;
    void *saved_ctx = net->hook_ctx;
    net->forward_hook = dump_node;
    net->hook_ctx = &d;
    const float *y = net_forward(net, x, n, 0);
    net->forward_hook = saved;
    net->hook_ctx = saved_ctx;
    buf_printf(&d.ops, "}");
    int rc = -1;
    if (y) {
        st_writer_meta(&d.w, "format", "resnet-c-node-dump");
        st_writer_meta(&d.w, "arch", net->arch);
        st_writer_meta(&d.w, "ops", d.ops.data);
        st_writer_meta(&d.w, "reference", net->reference ? "1" : "0");
        rc = st_writer_save(&d.w, path);
    }
    st_writer_free(&d.w);
    buf_free(&d.ops);
    return rc;
}

/* ------------------------------------------------------------------ backward */

/* Where a node's parameter gradients go during a fused step (net_backward_step): Param.grad
 * is pointed into the step's own buffer, its zeroed gradient, and given back after the
 * node's update. One process: plan.step_grad, one node's, updated as soon as the node's
 * backward is done. Several ranks (dist.h): a bucket (below). */
static float *step_grads_place(Net *net, size_t need, Optimizer *opt);

static void step_grads_begin(Net *net, const Node *nd, Optimizer *opt, float *saved[2]) {
    const int idx[2] = {nd->weight, nd->bias};
    size_t need = 0;
    for (int k = 0; k < 2; k++)
        if (idx[k] >= 0 && !net->params[idx[k]].is_buffer)
            need += align_up((size_t)net->params[idx[k]].numel);
    float *at = step_grads_place(net, need, opt);
    for (int k = 0; k < 2; k++) {
        saved[k] = NULL;
        if (idx[k] < 0 || net->params[idx[k]].is_buffer) continue;
        Param *prm = &net->params[idx[k]];
        saved[k] = prm->grad;
        prm->grad = at;
        memset(prm->grad, 0, sizeof(float) * (size_t)prm->numel);
        at += align_up((size_t)prm->numel);
    }
}

/* ------------------------------------------------------------------ gradient buckets
 * Data-parallel training sums every gradient across ranks before its update. Node by node
 * (one blocking all-reduce each) the next node's backward would wait for every sum; here
 * consecutive nodes' gradients fill a bucket of about dist_bucket_floats() (25 MB, as
 * PyTorch's DistributedDataParallel), whose sum is then started (MPI_Iallreduce) while
 * backward goes on filling the other bucket. After each node the sums in flight are moved
 * along (dist_test) and a finished bucket's parameters are updated; a bucket is waited for
 * only when it must be filled again, and at the end of backward. Each parameter's update
 * reads its own summed gradient only, so the order of updates changes no bit. Without
 * dist_overlap() (the default: dist.c says why) a bucket is summed as soon as it is full,
 * and is by default one node's: each node updated at once, its gradients still in cache. */

static void bucket_update(Net *net, GradBucket *b, Optimizer *opt) {
    for (int k = 0; k < b->n; k++) {
        optimizer_update(opt, net, b->params[k]);
        net->params[b->params[k]].grad = b->own_grad[k];
    }
    b->n = 0;
    b->used = 0;
    b->in_flight = 0;
}

static void bucket_start(GradBucket *b) {
    if (b->n == 0 || b->in_flight) return;
    b->ticket = dist_iallreduce_floats(b->grad, b->used);
    b->in_flight = 1;
}

/* Moves the sums in flight along; updates the buckets whose sums have arrived. */
static void buckets_poll(Net *net, Optimizer *opt) {
    for (int i = 0; i < 2; i++) {
        GradBucket *b = &net->plan.bucket[i];
        if (b->in_flight && dist_test(b->ticket)) bucket_update(net, b, opt);
    }
}

/* The end of backward: every bucket summed and applied. */
static void buckets_finish(Net *net, Optimizer *opt) {
    NetPlan *plan = &net->plan;
    bucket_start(&plan->bucket[plan->filling]);
    for (int i = 0; i < 2; i++) { /* the older one first */
        GradBucket *b = &plan->bucket[(plan->filling + 1 + i) % 2];
        if (!b->in_flight) continue;
        dist_wait(b->ticket);
        bucket_update(net, b, opt);
    }
}

static float *step_grads_place(Net *net, size_t need, Optimizer *opt) {
    NetPlan *plan = &net->plan;
    if (!dist_step_active()) return plan->step_grad;
    GradBucket *b = &plan->bucket[plan->filling];
    if (b->used + need > b->floats) { /* full: sum it, go on in the other */
        bucket_start(b);
        plan->filling ^= 1;
        b = &plan->bucket[plan->filling];
    }
    if (b->in_flight) { /* its previous gradients' sum, still in flight */
        dist_wait(b->ticket);
        bucket_update(net, b, opt);
    }
    float *at = b->grad + b->used;
    b->used += need;
    return at;
}

/* Apply the optimizer to node nd's parameters, then give Param.grad back its own buffer;
 * with several ranks, leave them to their bucket. */
static void step_grads_end(Net *net, const Node *nd, Optimizer *opt, float *const saved[2]) {
    const int idx[2] = {nd->weight, nd->bias};
    if (dist_step_active()) {
        GradBucket *b = &net->plan.bucket[net->plan.filling];
        for (int k = 0; k < 2; k++) {
            if (idx[k] < 0 || net->params[idx[k]].is_buffer) continue;
            b->params[b->n] = idx[k];
            b->own_grad[b->n++] = saved[k];
        }
        if (b->used >= dist_bucket_floats()) {
            bucket_start(b);
            net->plan.filling ^= 1;
        }
        buckets_poll(net, opt);
        return;
    }
    for (int k = 0; k < 2; k++) {
        if (idx[k] < 0 || net->params[idx[k]].is_buffer) continue;
        optimizer_update(opt, net, idx[k]);
        net->params[idx[k]].grad = saved[k];
    }
}

/* A fused step's gradient buffers, once (a network's parameters never change shape): one
 * process, net->plan.step_grad for the node with the most parameter values (its weight and
 * bias); several ranks, two buckets of dist_bucket_floats() or that node's, if larger. */
static void step_grad_reserve(Net *net) {
    NetPlan *plan = &net->plan;
    int ranks = dist_step_active();
    if (ranks ? plan->bucket[0].grad != NULL : plan->step_grad != NULL) return;
    size_t largest = 16;
    for (int i = 0; i < net->n_nodes; i++) {
        const Node *nd = &net->nodes[i];
        size_t floats = 0;
        if (nd->weight >= 0) floats += align_up((size_t)net->params[nd->weight].numel);
        if (nd->bias >= 0) floats += align_up((size_t)net->params[nd->bias].numel);
        if (floats > largest) largest = floats;
    }
    if (!ranks) {
        plan->step_grad = rn_alloc(largest * sizeof(float));
        return;
    }
    size_t floats = dist_bucket_floats() > largest ? dist_bucket_floats() : largest;
    for (int b = 0; b < 2; b++) {
        GradBucket *bk = &plan->bucket[b];
        bk->grad = rn_alloc(floats * sizeof(float));
        bk->floats = floats;
        bk->params = rn_alloc(sizeof(int) * (size_t)net->n_params);
        bk->own_grad = rn_alloc(sizeof(float *) * (size_t)net->n_params);
        bk->n = 0;
        bk->used = 0;
        bk->in_flight = 0;
    }
    plan->filling = 0;
}

static int backward_pass(Net *net, const float *dlogits, int n, float *dx, Optimizer *opt);

void net_backward(Net *net, const float *dlogits, int n, float *dx) {
    if (net->grads_released) {
        rn_set_error("%s: net_backward needs the gradient buffers, which net_release_grads "
                     "freed (train with net_backward_step)",
                     net->arch);
        return;
    }
    backward_pass(net, dlogits, n, dx, NULL);
}

int net_backward_step(Net *net, const float *dlogits, int n, Optimizer *opt) {
    if (!opt || opt->n < net->n_params) {
        rn_set_error("%s: net_backward_step needs an optimizer made for this network "
                     "(%d parameters; optimizer slots: %d)",
                     net->arch, net->n_params, opt ? opt->n : 0);
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

/* Backward from dlogits, last node first; with opt, each node's parameters are updated by
 * the optimizer as soon as the node's backward has made their gradients (see
 * net_backward_step). */
static int backward_pass(Net *net, const float *dlogits, int n, float *dx, Optimizer *opt) {
    const int last = net->n_nodes - 1;
    NetPlan *plan = &net->plan;
    if (!net->training_plan || !plan->arena || n < 1 || n > net->batch || !dlogits) {
        rn_set_error("%s: backward of %d samples needs a training plan for at least that "
                     "many (planned batch %d, training %d)",
                     net->arch, n, net->batch, net->training_plan);
        return -1;
    }
    /* the plan kept only the outputs of the stages that were trainable when it was made */
    int need = dx ? 0 : net->first_trainable;
    if (need < plan->first_trainable) {
        rn_set_error("%s: backward %s needs a training plan made with first_trainable <= %d "
                     "(this one: %d); call net_plan again",
                     net->arch, dx ? "to the input" : "into the trainable stages", need,
                     plan->first_trainable);
        return -1;
    }
    /* Nodes of frozen stages are skipped unless the input gradient is wanted: stages never
     * decrease along the node order, so no trainable parameter lies before them. */
    const int ft = net->first_trainable, all = dx != NULL;
    if (ft < plan->grad_from_stage) plan->grad_from_stage = ft;
    if (opt) optimizer_begin_step(opt);
    plan->recompute_owner = plan->recompute_conv_owner = -1;
    memcpy(net->nodes[last].dout, dlogits, sizeof(float) * n * node_numel(&net->nodes[last]));
    double t0 = net->node_seconds ? rn_seconds() : 0;
    for (int i = last; i >= 1; i--) {
        Node *nd = &net->nodes[i];
        if ((!all && nd->stage < ft) || !nd->dout) continue;
        const OpDef *op = &op_table[nd->op];
        const int j = nd->in[0];
        const Node *in = &net->nodes[j];
        BackwardArgs a;
        a.n = n;
        a.train = plan->forward_train;
        a.trains = nd->stage >= ft; /* this node's parameters get gradients */
        a.all = all;
        a.scratch = plan->grad_scratch;
        a.dx = all || in->stage >= ft ? grad_target(net, i, j, a.scratch) : NULL;
        /* what backward reads of the input, rebuilt when the plan did not keep it */
        a.x = plan->nodes[j].recompute && op->reads_input ? plan_recomputed_output(net, j, n)
                                                          : in->out;
        float *saved_grads[2];
        if (opt && a.trains) step_grads_begin(net, nd, opt, saved_grads);
        op->backward(net, i, &a);
        if (a.dx && !op->delivers_grads) grad_done(net, i, j, a.dx, (size_t)n * node_numel(in));
        if (net->node_seconds) { /* profiling */
            double t1 = rn_seconds();
            net->node_seconds[net->n_nodes + i] += t1 - t0;
            t0 = t1;
        }
        if (opt && a.trains) {
            step_grads_end(net, nd, opt, saved_grads);
            if (net->node_seconds) { /* profiling: the updates in their own slot */
                double t1 = rn_seconds();
                net->node_seconds[2 * net->n_nodes] += t1 - t0;
                t0 = t1;
            }
        }
    }
    if (opt && dist_step_active()) {
        double t1 = net->node_seconds ? rn_seconds() : 0;
        buckets_finish(net, opt);
        if (net->node_seconds) net->node_seconds[2 * net->n_nodes] += rn_seconds() - t1;
    }
    if (dx) memcpy(dx, net->nodes[0].dout, sizeof(float) * n * node_numel(&net->nodes[0]));
    return 0;
}

/* Backward writes only the gradients of stages >= first_trainable, so only those (from
 * the lowest such stage since the last call) need zeroing: a frozen backbone costs nothing. */
void net_zero_grad(Net *net) {
    for (int i = 0; i < net->n_params; i++)
        if (net->params[i].grad && net->params[i].stage >= net->plan.grad_from_stage)
            memset(net->params[i].grad, 0, sizeof(float) * (size_t)net->params[i].numel);
    net->plan.grad_from_stage = STAGE_COUNT;
}

/* ------------------------------------------------------------------ parameters */

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

/* dst's parameter for src's name: the same name, else the plain classifier's under dst's
 * name for it (fc.X, linear.X, classifier.6.X, predictions.X: head_create's "fc" into any
 * architecture, and back). */
static Param *find_counterpart(Net *dst, const char *name) {
    Param *d = net_find_param(dst, name);
    if (d) return d;
    const ArchSpec *own = arch_find(dst->arch);
    const char *target = own ? own->classifier : "fc";
    char alias[RN_NAME_MAX];
    for (int i = -1; i < N_ARCHS; i++) {
        const char *c = i < 0 ? "fc" : archs[i].classifier;
        size_t n = strlen(c);
        if (strncmp(name, c, n) == 0 && name[n] == '.') {
            join_name(alias, target, name + n + 1);
            return net_find_param(dst, alias);
        }
    }
    return NULL;
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

Loader *net_dataset_loader(const Dataset *d, const Preprocess *p, int batch, int threads) {
    Loader *l = loader_create(d, p, NULL, batch, 0, 0, threads);
    if (!l) return NULL;
    /* under mpirun each rank takes its run of whole batches (dist_batch_range) */
    if (dist_size() > 1) loader_shard(l, dist_rank(), dist_size(), 1);
    loader_start_epoch(l, 0);
    return l;
}

int net_forward_dataset(Net *net, int node, const Dataset *d, const Preprocess *p, int batch,
                        int threads, const char *label, BatchVisitor visit, void *ctx) {
    if (d->n == 0) return 0;
    Loader *l = net_dataset_loader(d, p, batch, threads);
    if (!l) return -1;
    return net_forward_loader(net, node, l, d, p, batch, label, visit, ctx);
}

int net_forward_loader(Net *net, int node, Loader *l, const Dataset *d, const Preprocess *p,
                       int batch, const char *label, BatchVisitor visit, void *ctx) {
    float *x = rn_alloc(sizeof(float) * (size_t)batch * 3 * p->size * p->size);
    int *labels = rn_alloc(sizeof(int) * (size_t)batch),
        *idx = rn_alloc(sizeof(int) * (size_t)batch);
    Progress prog;
    progress_start(&prog, label, d->n);
    long done = 0;
    int got;
    while ((got = loader_next(l, x, labels, idx)) > 0) {
        const float *out =
            node < 0 ? net_forward(net, x, got, 0) : net_forward_upto(net, x, got, 0, node);
        visit(ctx, got, idx, labels, out);
        done += got;
        progress_update(&prog, done * dist_size(), "img"); /* the global rate, about */
    }
    progress_finish(&prog, NULL);
    int failed = loader_failures(l);
    loader_free(l);
    rn_free(x);
    rn_free(labels);
    rn_free(idx);
    return failed;
}
