/* ops.c - the op table: for each op, its output shape, its forward and its backward on the
 * graph, and the facts the planner needs (ops.h). The functions here only find a node's
 * inputs, parameters and buffers and call the layers of layers.c; the math is there.
 *
 * Backward of node i: a->dx is where input 0's gradient goes (the input's own gradient
 * buffer, or the scratch when another consumer already wrote there, which the pass then
 * adds in), NULL when nobody wants it. Ops that read several inputs (sums, concatenation)
 * or add their input gradient in place (convolution) deliver their gradients themselves. */
#include "ops.h"
#include "dist.h"

#include <string.h>

/* Guards the op table's shape: one row per OpType. */
#define STATIC_ASSERT(cond, msg) typedef char static_assert_##msg[(cond) ? 1 : -1]

static const Param *param(const Net *net, int idx) { return idx >= 0 ? &net->params[idx] : NULL; }
static float *param_data(const Net *net, int idx) {
    return idx >= 0 ? net->params[idx].data : NULL;
}
/* A parameter's gradient when this node's parameters train, else NULL (not wanted). */
static float *param_grad(const Net *net, int idx, int trains) {
    return trains && idx >= 0 ? net->params[idx].grad : NULL;
}
static const Node *input(const Net *net, const Node *nd, int k) { return &net->nodes[nd->in[k]]; }

/* ------------------------------------------------------------------ shapes */

static int shape_error_channels(const Node *nd, int want, int found) {
    rn_set_error("%s: expected %d input channels, found %d", nd->name, want, found);
    return -1;
}

static int shape_input(Net *net, int i) {
    Node *nd = &net->nodes[i];
    nd->c = net->in_c;
    nd->h = net->in_h;
    nd->w = net->in_w;
    return 0;
}

static int shape_same(Net *net, int i) {
    Node *nd = &net->nodes[i];
    const Node *x = input(net, nd, 0);
    nd->c = x->c;
    nd->h = x->h;
    nd->w = x->w;
    return 0;
}

static int shape_conv(Net *net, int i) {
    Node *nd = &net->nodes[i];
    const Node *x = input(net, nd, 0);
    if (x->c != nd->conv.in_c) return shape_error_channels(nd, nd->conv.in_c, x->c);
    nd->c = nd->conv.out_c;
    nd->h = conv_out_size(x->h, nd->conv.kh, nd->conv.stride, nd->conv.pad);
    nd->w = conv_out_size(x->w, nd->conv.kw, nd->conv.stride, nd->conv.pad);
    return 0;
}

static int shape_bn(Net *net, int i) {
    Node *nd = &net->nodes[i];
    int c = (int)net->params[nd->weight].numel;
    if (input(net, nd, 0)->c != c) return shape_error_channels(nd, c, input(net, nd, 0)->c);
    return shape_same(net, i);
}

static int shape_maxpool(Net *net, int i) {
    Node *nd = &net->nodes[i];
    const Node *x = input(net, nd, 0);
    nd->c = x->c;
    nd->h = conv_out_size(x->h, nd->k, nd->stride, nd->pad);
    nd->w = conv_out_size(x->w, nd->k, nd->stride, nd->pad);
    return 0;
}

static int shape_gap(Net *net, int i) {
    Node *nd = &net->nodes[i];
    nd->c = input(net, nd, 0)->c;
    nd->h = nd->w = 1;
    return 0;
}

static int shape_adaptive_pool(Net *net, int i) {
    Node *nd = &net->nodes[i];
    nd->c = input(net, nd, 0)->c;
    nd->h = nd->w = nd->k;
    return 0;
}

static int shape_add(Net *net, int i) {
    Node *nd = &net->nodes[i];
    const Node *x = input(net, nd, 0), *y = input(net, nd, 1);
    if (x->c != y->c || x->h != y->h || x->w != y->w) {
        rn_set_error("%s: cannot add [%d, %d, %d] and [%d, %d, %d]", nd->name, x->c, x->h, x->w,
                     y->c, y->h, y->w);
        return -1;
    }
    return shape_same(net, i);
}

static int shape_shortcut_a(Net *net, int i) {
    Node *nd = &net->nodes[i];
    const Node *x = input(net, nd, 0);
    if (x->c != nd->conv.in_c) return shape_error_channels(nd, nd->conv.in_c, x->c);
    nd->c = nd->conv.out_c;
    nd->h = (x->h - 1) / nd->stride + 1; /* x[:, :, ::stride, ::stride] */
    nd->w = (x->w - 1) / nd->stride + 1;
    return 0;
}

static int shape_linear(Net *net, int i) {
    Node *nd = &net->nodes[i];
    const Node *x = input(net, nd, 0);
    const Param *wt = param(net, nd->weight);
    if ((int64_t)x->c * x->h * x->w != wt->shape[1]) {
        rn_set_error("%s: expected %lld input features, found [%d, %d, %d]", nd->name,
                     (long long)wt->shape[1], x->c, x->h, x->w);
        return -1;
    }
    nd->c = (int)wt->shape[0];
    nd->h = nd->w = 1;
    return 0;
}

static int shape_concat(Net *net, int i) {
    Node *nd = &net->nodes[i];
    const Node *x = input(net, nd, 0);
    nd->c = 0;
    nd->h = x->h;
    nd->w = x->w;
    for (int k = 0; k < nd->n_in; k++) {
        const Node *y = input(net, nd, k);
        if (y->h != x->h || y->w != x->w) {
            rn_set_error("%s: cannot concatenate %dx%d and %dx%d maps", nd->name, x->h, x->w, y->h,
                         y->w);
            return -1;
        }
        nd->c += y->c;
    }
    return 0;
}

static int shape_channel_scale(Net *net, int i) {
    Node *nd = &net->nodes[i];
    const Node *x = input(net, nd, 0), *s = input(net, nd, 1);
    if (s->c != x->c || s->h != 1 || s->w != 1) {
        rn_set_error("%s: cannot scale [%d, %d, %d] by [%d, %d, %d] (expected [%d, 1, 1])",
                     nd->name, x->c, x->h, x->w, s->c, s->h, s->w, x->c);
        return -1;
    }
    return shape_same(net, i);
}

/* ------------------------------------------------------------------ input */

static int input_forward(Net *net, int i, int n, int train) { return 0; }
static void input_backward(Net *net, int i, const BackwardArgs *a) {}

/* ------------------------------------------------------------------ convolution */

static int conv_forward(Net *net, int i, int n, int train) {
    const Node *nd = &net->nodes[i], *x = input(net, nd, 0);
    (net->reference ? conv2d_forward_ref : conv2d_forward)(&nd->conv, n, x->h, x->w, x->out,
                                                           param_data(net, nd->weight),
                                                           param_data(net, nd->bias), nd->out);
    return 0;
}

/* The input's first gradient (its last consumer) is written; a later one is added in
 * place (conv2d_backward_add), or, for the reference kernel, through the scratch. */
static void conv_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i], *x = input(net, nd, 0);
    float *dw = param_grad(net, nd->weight, a->trains), *db = param_grad(net, nd->bias, a->trains);
    if (!a->dx && !a->trains) return;
    const float *w = param_data(net, nd->weight);
    const int first = x->last_consumer == i;
    if (net->reference) {
        conv2d_backward_ref(&nd->conv, a->n, x->h, x->w, a->x, w, nd->dout, a->dx, dw, db);
        if (a->dx) grad_done(net, i, nd->in[0], a->dx, (size_t)a->n * node_numel(x));
    } else if (a->dx && !first) {
        conv2d_backward_add(&nd->conv, a->n, x->h, x->w, a->x, w, nd->dout, x->dout, dw, db);
    } else {
        conv2d_backward(&nd->conv, a->n, x->h, x->w, a->x, w, nd->dout, a->dx, dw, db);
    }
}

/* ------------------------------------------------------------------ batch norm */

static int bn_forward(Net *net, int i, int n, int train) {
    Node *nd = &net->nodes[i];
    const Node *x = input(net, nd, 0);
    const float *gamma = param_data(net, nd->weight), *beta = param_data(net, nd->bias);
    float *mean = param_data(net, nd->mean), *var = param_data(net, nd->var);
    if (!bn_trains(net, nd, train)) {
        batchnorm_forward_eval(n, nd->c, nd->h * nd->w, x->out, gamma, beta, mean, var, nd->eps,
                               nd->out);
        return 0;
    }
    if (n * nd->h * nd->w < 2 && !dist_step_active()) { /* data-parallel: the global count */
        rn_set_error("%s: batch norm in training needs more than one value per channel "
                     "(batch %d of %dx%d)",
                     nd->name, n, nd->w, nd->h);
        return -1;
    }
    batchnorm_forward_train(n, nd->c, nd->h * nd->w, x->out, gamma, beta, mean, var, nd->momentum,
                            nd->eps, nd->out, nd->save0, nd->save1);
    return 0;
}

static void bn_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i];
    const float *gamma = param_data(net, nd->weight);
    float *dgamma = param_grad(net, nd->weight, a->trains);
    float *dbeta = param_grad(net, nd->bias, a->trains);
    if (bn_trains(net, nd, a->train))
        batchnorm_backward_train(a->n, nd->c, nd->h * nd->w, a->x, gamma, nd->save0, nd->save1,
                                 nd->dout, a->dx, dgamma, dbeta);
    else
        batchnorm_backward_eval(a->n, nd->c, nd->h * nd->w, a->x, gamma, param_data(net, nd->mean),
                                param_data(net, nd->var), nd->eps, nd->dout, a->dx, dgamma, dbeta);
}

/* ------------------------------------------------------------------ ReLU */

static int relu_node_forward(Net *net, int i, int n, int train) {
    const Node *nd = &net->nodes[i];
    relu_forward((size_t)n * node_numel(nd), input(net, nd, 0)->out, nd->out);
    return 0;
}

/* A ReLU whose output the plan did not keep takes its mask straight from bn(conv), with no
 * output buffer at all, unless backward already rebuilt that output for a reader. */
static void relu_node_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i];
    if (!a->dx) return;
    const size_t count = (size_t)a->n * node_numel(nd);
    if (!net->plan.nodes[i].recompute) {
        relu_backward(count, nd->out, nd->dout, a->dx);
    } else if (net->plan.recompute_owner == i) {
        relu_backward(count, net->plan.recompute_buf, nd->dout, a->dx);
    } else {
        const Node *bn = input(net, nd, 0);
        const float *scale, *shift;
        plan_relu_affine(net, i, &scale, &shift);
        relu_affine_backward(a->n, bn->c, bn->h * bn->w, net->nodes[bn->in[0]].out, scale, shift,
                             nd->dout, a->dx);
    }
}

/* ------------------------------------------------------------------ elementwise activations */

static int act_node_forward(Net *net, int i, int n, int train) {
    const Node *nd = &net->nodes[i];
    op_table[nd->op].act_forward((size_t)n * node_numel(nd), input(net, nd, 0)->out, nd->out);
    return 0;
}

static void act_node_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i];
    if (a->dx)
        op_table[nd->op].act_backward((size_t)a->n * node_numel(nd), a->x, nd->out, nd->dout,
                                      a->dx);
}

/* ------------------------------------------------------------------ pooling */

static int maxpool_forward(Net *net, int i, int n, int train) {
    Node *nd = &net->nodes[i];
    const Node *x = input(net, nd, 0);
    maxpool2d_forward(n, x->c, x->h, x->w, nd->k, nd->stride, nd->pad, x->out, nd->out,
                      (int32_t *)(void *)nd->save0);
    return 0;
}

static void maxpool_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i], *x = input(net, nd, 0);
    if (a->dx)
        maxpool2d_backward(a->n, x->c, x->h, x->w, nd->k, nd->stride, nd->pad,
                           (const int32_t *)(const void *)nd->save0, nd->dout, a->dx);
}

static int gap_forward(Net *net, int i, int n, int train) {
    const Node *nd = &net->nodes[i], *x = input(net, nd, 0);
    avgpool_global_forward(n, x->c, x->h * x->w, x->out, nd->out);
    return 0;
}

static void gap_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i], *x = input(net, nd, 0);
    if (a->dx) avgpool_global_backward(a->n, x->c, x->h * x->w, nd->dout, a->dx);
}

static int adaptive_pool_forward(Net *net, int i, int n, int train) {
    const Node *nd = &net->nodes[i], *x = input(net, nd, 0);
    adaptive_avgpool2d_forward(n, x->c, x->h, x->w, nd->h, nd->w, x->out, nd->out);
    return 0;
}

static void adaptive_pool_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i], *x = input(net, nd, 0);
    if (a->dx) adaptive_avgpool2d_backward(a->n, x->c, x->h, x->w, nd->h, nd->w, nd->dout, a->dx);
}

/* ------------------------------------------------------------------ residual sum */

static int add_node_forward(Net *net, int i, int n, int train) {
    const Node *nd = &net->nodes[i];
    add_forward((size_t)n * node_numel(nd), input(net, nd, 0)->out, input(net, nd, 1)->out,
                nd->op == OP_ADD_RELU, nd->out);
    return 0;
}

/* Both inputs receive dy [* (y > 0)], in one pass, each set or added to. */
static void add_node_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i];
    float *d[2] = {NULL, NULL};
    int first[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        const Node *x = input(net, nd, k);
        if (a->all || x->stage >= net->first_trainable) {
            d[k] = x->dout;
            first[k] = x->last_consumer == i;
        }
    }
    add_backward((size_t)a->n * node_numel(nd), nd->op == OP_ADD_RELU ? nd->out : NULL, nd->dout,
                 d[0], first[0], d[1], first[1]);
}

/* ------------------------------------------------------------------ option-A shortcut */

static int shortcut_forward(Net *net, int i, int n, int train) {
    const Node *nd = &net->nodes[i], *x = input(net, nd, 0);
    shortcut_a_forward(n, x->c, x->h, x->w, nd->c, nd->stride, x->out, nd->out);
    return 0;
}

static void shortcut_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i], *x = input(net, nd, 0);
    if (a->dx) shortcut_a_backward(a->n, x->c, x->h, x->w, nd->c, nd->stride, nd->dout, a->dx);
}

/* ------------------------------------------------------------------ linear */

static int linear_node_forward(Net *net, int i, int n, int train) {
    const Node *nd = &net->nodes[i], *x = input(net, nd, 0);
    (net->reference ? linear_forward_ref : linear_forward)(n, (int)node_numel(x), nd->c, x->out,
                                                           param_data(net, nd->weight),
                                                           param_data(net, nd->bias), nd->out);
    return 0;
}

static void linear_node_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i], *x = input(net, nd, 0);
    (net->reference ? linear_backward_ref : linear_backward)(
        a->n, (int)node_numel(x), nd->c, a->x, param_data(net, nd->weight), nd->dout, a->dx,
        param_grad(net, nd->weight, a->trains), param_grad(net, nd->bias, a->trains));
}

/* ------------------------------------------------------------------ dropout */

static int dropout_active(const Net *net, const Node *nd, int train) {
    return train && nd->stage >= net->first_trainable && nd->p > 0;
}

static int dropout_node_forward(Net *net, int i, int n, int train) {
    Node *nd = &net->nodes[i];
    const size_t count = (size_t)n * node_numel(nd);
    if (dropout_active(net, nd, train)) {
        /* a data-parallel step (dist.h): the global batch's mask is drawn, this rank's rows
         * kept, so the draws follow the global sample index */
        size_t before = (size_t)dist_step_before() * node_numel(nd);
        size_t after = (size_t)dist_step_after() * node_numel(nd);
        for (size_t k = 0; k < before; k++) rng_uniform(&net->rng);
        dropout_forward(count, nd->p, &net->rng, input(net, nd, 0)->out, nd->out, nd->save0);
        for (size_t k = 0; k < after; k++) rng_uniform(&net->rng);
    } else
        memcpy(nd->out, input(net, nd, 0)->out, sizeof(float) * count);
    return 0;
}

static void dropout_node_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i];
    const size_t count = (size_t)a->n * node_numel(nd);
    if (!a->dx) return;
    if (dropout_active(net, nd, a->train))
        dropout_backward(count, nd->save0, nd->dout, a->dx);
    else if (a->dx != nd->dout)
        memcpy(a->dx, nd->dout, sizeof(float) * count);
}

/* ------------------------------------------------------------------ stochastic depth */

static int stochastic_depth_active(const Net *net, const Node *nd, int train) {
    return train && nd->stage >= net->first_trainable && nd->p > 0;
}

/* Off (eval, frozen, p = 0) it is the identity: a copy, or nothing when in place. */
static int stochastic_depth_node_forward(Net *net, int i, int n, int train) {
    Node *nd = &net->nodes[i];
    const float *x = input(net, nd, 0)->out;
    if (stochastic_depth_active(net, nd, train))
        stochastic_depth_forward(n, node_numel(nd), nd->p, &net->rng, x, nd->out, nd->save0);
    else if (x != nd->out)
        memcpy(nd->out, x, sizeof(float) * n * node_numel(nd));
    return 0;
}

static void stochastic_depth_node_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i];
    if (!a->dx) return;
    if (stochastic_depth_active(net, nd, a->train))
        stochastic_depth_backward(a->n, node_numel(nd), nd->save0, nd->dout, a->dx);
    else if (a->dx != nd->dout)
        memcpy(a->dx, nd->dout, sizeof(float) * a->n * node_numel(nd));
}

/* ------------------------------------------------------------------ channel scale */

static int channel_scale_node_forward(Net *net, int i, int n, int train) {
    const Node *nd = &net->nodes[i];
    channel_scale_forward(n, nd->c, nd->h * nd->w, input(net, nd, 0)->out, input(net, nd, 1)->out,
                          nd->out);
    return 0;
}

/* The scale's gradient first (it reads dy, which input 0's gradient may overwrite), then
 * the input's, each through its own target (one scratch). */
static void channel_scale_node_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i], *s = input(net, nd, 1);
    const int hw = nd->h * nd->w;
    if (a->all || s->stage >= net->first_trainable) {
        float *ds = grad_target(net, i, nd->in[1], a->scratch);
        channel_scale_backward(a->n, nd->c, hw, a->x, s->out, nd->dout, NULL, ds);
        grad_done(net, i, nd->in[1], ds, (size_t)a->n * nd->c);
    }
    if (a->dx) {
        channel_scale_backward(a->n, nd->c, hw, a->x, s->out, nd->dout, a->dx, NULL);
        grad_done(net, i, nd->in[0], a->dx, (size_t)a->n * node_numel(nd));
    }
}

/* ------------------------------------------------------------------ concatenation */

static int concat_node_forward(Net *net, int i, int n, int train) {
    const Node *nd = &net->nodes[i];
    size_t floats[4];
    const float *x[4];
    for (int k = 0; k < nd->n_in; k++) {
        floats[k] = node_numel(input(net, nd, k));
        x[k] = input(net, nd, k)->out;
    }
    concat_forward(n, nd->n_in, floats, x, nd->out);
    return 0;
}

/* Each wanted input receives its channel slice of dy, one input at a time (one scratch). */
static void concat_node_backward(Net *net, int i, const BackwardArgs *a) {
    const Node *nd = &net->nodes[i];
    size_t floats[4];
    for (int k = 0; k < nd->n_in; k++) floats[k] = node_numel(input(net, nd, k));
    for (int k = 0; k < nd->n_in; k++) {
        if (!a->all && input(net, nd, k)->stage < net->first_trainable) continue;
        float *dx[4] = {NULL, NULL, NULL, NULL};
        dx[k] = grad_target(net, i, nd->in[k], a->scratch);
        concat_backward(a->n, nd->n_in, floats, nd->dout, dx);
        grad_done(net, i, nd->in[k], dx[k], (size_t)a->n * floats[k]);
    }
}

/* ------------------------------------------------------------------ the table */

/* Every fact spelled out, so a row that leaves one out does not compile. */
#define OP_ROW(name, shape, fwd, bwd, reads_input, reads_output, grad_in_place, delivers_grads,    \
               adds_in_place, forward_in_place, fuse, saves)                                       \
    {                                                                                              \
        name, shape, fwd, bwd, NULL, NULL, reads_input, reads_output, grad_in_place,               \
            delivers_grads, adds_in_place, forward_in_place, fuse, saves                           \
    }
/* An elementwise activation: its forward and backward layer functions and which of x and y
 * its backward reads. */
#define OP_ACT(name, act_fwd, act_bwd, reads_input, reads_output, fuse)                            \
    {                                                                                              \
        name, shape_same, act_node_forward, act_node_backward, act_fwd, act_bwd, reads_input,      \
            reads_output, 1, 0, 0, 1, fuse, SAVE_NONE                                              \
    }

/*                name        shape           forward               backward
 *                reads in/out, grad in place, delivers, adds in place, fwd in place, fuse, saves */
const OpDef op_table[] = {
    [OP_INPUT] = OP_ROW("input", shape_input, input_forward, input_backward, 0, 0, 0, 1, 1, 0,
                        FUSE_NONE, SAVE_NONE),
    [OP_CONV] = OP_ROW("conv", shape_conv, conv_forward, conv_backward, 1, 0, 0, 1, 1, 0, FUSE_CONV,
                       SAVE_NONE),
    [OP_BN] =
        OP_ROW("bn", shape_bn, bn_forward, bn_backward, 1, 0, 1, 0, 0, 0, FUSE_BN, SAVE_CHANNELS),
    [OP_RELU] = OP_ROW("relu", shape_same, relu_node_forward, relu_node_backward, 0, 1, 1, 0, 0, 1,
                       FUSE_RELU, SAVE_NONE),
    [OP_MAXPOOL] = OP_ROW("maxpool", shape_maxpool, maxpool_forward, maxpool_backward, 0, 0, 0, 0,
                          0, 0, FUSE_NONE, SAVE_OUTPUT),
    [OP_GAP] = OP_ROW("avgpool", shape_gap, gap_forward, gap_backward, 0, 0, 0, 0, 0, 0, FUSE_NONE,
                      SAVE_NONE),
    [OP_ADD] = OP_ROW("add", shape_add, add_node_forward, add_node_backward, 0, 0, 1, 1, 1, 0,
                      FUSE_SUM, SAVE_NONE),
    [OP_ADD_RELU] = OP_ROW("add_relu", shape_add, add_node_forward, add_node_backward, 0, 1, 1, 1,
                           1, 0, FUSE_SUM_RELU, SAVE_NONE),
    [OP_SHORTCUT_A] = OP_ROW("shortcut_a", shape_shortcut_a, shortcut_forward, shortcut_backward, 0,
                             0, 0, 0, 0, 0, FUSE_NONE, SAVE_NONE),
    [OP_LINEAR] = OP_ROW("linear", shape_linear, linear_node_forward, linear_node_backward, 1, 0, 0,
                         0, 0, 0, FUSE_NONE, SAVE_NONE),
    [OP_DROPOUT] = OP_ROW("dropout", shape_same, dropout_node_forward, dropout_node_backward, 0, 0,
                          1, 0, 0, 0, FUSE_NONE, SAVE_OUTPUT),
    [OP_CONCAT] = OP_ROW("concat", shape_concat, concat_node_forward, concat_node_backward, 0, 0, 0,
                         1, 0, 0, FUSE_NONE, SAVE_NONE),
    [OP_SILU] = OP_ACT("silu", silu_forward, silu_backward, 1, 0, FUSE_SILU),
    [OP_SIGMOID] = OP_ACT("sigmoid", sigmoid_forward, sigmoid_backward, 0, 1, FUSE_NONE),
    [OP_ADAPTIVE_AVGPOOL] = OP_ROW("adaptive_avgpool", shape_adaptive_pool, adaptive_pool_forward,
                                   adaptive_pool_backward, 0, 0, 0, 0, 0, 0, FUSE_NONE, SAVE_NONE),
    [OP_CHANNEL_SCALE] = OP_ROW("channel_scale", shape_channel_scale, channel_scale_node_forward,
                                channel_scale_node_backward, 1, 0, 1, 1, 0, 0, FUSE_NONE,
                                SAVE_NONE),
    [OP_STOCHASTIC_DEPTH] = OP_ROW("stochastic_depth", shape_same, stochastic_depth_node_forward,
                                   stochastic_depth_node_backward, 0, 0, 1, 0, 0, 1, FUSE_NONE,
                                   SAVE_SAMPLES),
};
STATIC_ASSERT(sizeof op_table / sizeof op_table[0] == OP_COUNT, one_op_table_row_per_OpType);

const char *op_name(OpType op) {
    return (unsigned)op < OP_COUNT && op_table[op].name ? op_table[op].name : "unknown";
}

/* ------------------------------------------------------------------ fusion and gradients */

/* An eval-mode conv -> BN [-> ReLU | -> SiLU | -> sum] group (the plan's fuse_tail) as one
 * pass: the batch norm folded into the conv's epilogue as y * scale + shift (kept in the BN's
 * save0/save1), then the residual sum and the activation, written straight into the last node's
 * output. The same float operations as the layers one by one, so the same results; a 3x3
 * stride-1 conv with Winograd weights in the plan runs by Winograd instead. */
void op_fused_forward(Net *net, int i, int n) {
    const Node *conv = &net->nodes[i], *x = input(net, conv, 0);
    Node *bn = &net->nodes[i + 1], *tail = &net->nodes[net->plan.nodes[i].fuse_tail];
    batchnorm_eval_affine(bn->c, param_data(net, bn->weight), param_data(net, bn->bias),
                          param_data(net, bn->mean), param_data(net, bn->var), bn->eps, bn->save0,
                          bn->save1);
    const FuseRole role = op_table[tail->op].fuse;
    ConvEpilogue e = {bn->save0, bn->save1,
                      role == FUSE_RELU || role == FUSE_SUM_RELU ? CONV_ACT_RELU
                      : role == FUSE_SILU                        ? CONV_ACT_SILU
                                                                 : CONV_ACT_NONE};
    const float *residual = NULL;
    if (role == FUSE_SUM || role == FUSE_SUM_RELU)
        residual = net->nodes[tail->in[0] == i + 1 ? tail->in[1] : tail->in[0]].out;
    const float *u = plan_winograd_weights(net, i);
    if (u)
        conv2d_forward_winograd(&conv->conv, n, x->h, x->w, x->out, u, &e, residual, tail->out);
    else
        conv2d_forward_fused(&conv->conv, n, x->h, x->w, x->out, param_data(net, conv->weight), &e,
                             residual, tail->out);
}

float *grad_target(Net *net, int consumer, int j, float *scratch) {
    return net->nodes[j].last_consumer == consumer ? net->nodes[j].dout : scratch;
}

void grad_done(Net *net, int consumer, int j, const float *target, size_t count) {
    if (net->nodes[j].last_consumer != consumer) add_into(count, target, net->nodes[j].dout);
}
