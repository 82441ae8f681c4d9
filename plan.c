/* plan.c - the memory and fusion planner: what a forward and backward of one (batch, h, w)
 * keep, share, fuse and recompute, all inside one allocation. The network it plans for is
 * in resnet.c; nothing here changes what is computed, only where it lives and in how many
 * passes. A reader learning how a network trains can skip this file.
 *
 * Memory: net_plan sizes everything for one (batch, h, w) and makes ONE allocation holding
 * every node output, the buffers backward needs (batch-norm statistics, dropout masks,
 * max-pool argmax) and, for training, the output gradients. Buffers that live for part of
 * a pass share memory: the plan replays the pass and places each one first-fit among those
 * alive at the same time. A gradient lives from the moment its first consumer (in reverse
 * order) writes it until the node itself has been back-propagated; through ops that may
 * write their input gradient over their own (ReLU, batch norm, dropout, sums) it takes
 * over the consumer's gradient buffer instead. An output lives until its last consumer has
 * run, unless backward will read it (trainable stages). ReLUs run in place, and a training
 * plan does not keep a ReLU after conv -> BN at all: backward recomputes it (or only its
 * gradient mask) from the conv output, which the batch norm needs anyway; nor a batch
 * norm's output that only a SiLU reads, nor squeeze-and-excitation's scaled map (their
 * readers' backward gets them rebuilt). A low-memory
 * plan (net->low_memory, the default) does not keep the outputs of expanding 1x1 convs
 * either: backward runs them again when their batch norm needs them.
 *
 * Fusion: eval forwards run conv -> BN [-> ReLU | -> SiLU | -> residual sum] as one convolution
 * whose epilogue applies the batch norm as y * scale + shift (folded from the current
 * running statistics at every forward, so parameter changes need no invalidation), the
 * residual and the activation, with the same float operations as the layers one by one; 3x3
 * stride-1 ones by Winograd where net->winograd (weights transformed here, remade when the
 * weights change).
 *
 * Every decision reads the op table's facts (ops.h), not op names, except the four patterns
 * that are recomputed (a ReLU of conv -> BN, a BN of conv -> BN -> SiLU, a channel scale,
 * an expanding 1x1 conv before its BN). A
 * reference plan (net->reference) makes none of these decisions: no fusion, no
 * recomputation, no Winograd. */
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#define NONE ((size_t)-1)

/* max-pool argmax is stored as int32 in float slots of the arena */
typedef char rn_float_is_4_bytes[(sizeof(float) == sizeof(int32_t)) ? 1 : -1];

static const OpDef *op_of(const Node *nd) { return &op_table[nd->op]; }

/* ------------------------------------------------------------------ first-fit placement */

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

/* Buffer j changes owner to k (it was handed over in place). */
static void placer_rename(Placer *pl, int j, int k) {
    for (int pos = 0; pos < pl->n_live; pos++)
        if (pl->live[pos] == j) pl->live[pos] = k;
}

/* ------------------------------------------------------------------ gradients */

/* Output gradients, replaying backward (last node first): node j's gradient is born when
 * its last consumer is processed (that consumer writes it first) and dies once j itself
 * has been processed; through ops whose backward may write the input gradient over their
 * own (grad_in_place, input 0) it takes over the consumer's buffer instead. Returns the
 * floats needed; off[j] = NONE for none. */
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
            if (k == 0 && op_of(nd)->grad_in_place && off[t] != NONE && size[j] == size[t]) {
                off[j] = off[t];
                placer_rename(&pl, t, j);
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

/* ------------------------------------------------------------------ liveness and fusion */

/* Outputs that stay readable after a forward whatever the plan. */
static int always_kept(const Net *net, int j) {
    return j == 0 || j == net->feature_node || j == net->pooled_node;
}

/* Liveness facts for one plan (ft: first trainable stage of a training plan). */
typedef struct {
    int *consumers; /* how many input slots read node j */
    int *keep;      /* j's output must outlive the forward */
    int *in_place;  /* j writes over its input's buffer (ReLU), else -1 */
    int *drop_at;   /* the last step reading j (a fused group counts as its tail), -1: none */
} Liveness;

/* Fusion groups for eval forwards: conv (no bias) -> BN -> ReLU or SiLU, or conv -> BN -> sum
 * whose other input is already computed, or conv -> BN, where each output in the group is read
 * only by the next node. A training plan fuses only frozen stages, because backward reads
 * the conv and BN outputs the fused pass never writes. */
static void plan_fusion(Net *net, const int *consumers, int training, int ft) {
    int n = net->n_nodes;
    PlanNode *pn = net->plan.nodes;
    for (int i = 0; i < n; i++) pn[i].fuse_tail = -1;
    if (net->reference) return;
    for (int i = 1; i + 1 < n; i++) {
        const Node *conv = &net->nodes[i];
        const Node *bn = &net->nodes[i + 1];
        if (op_of(conv)->fuse != FUSE_CONV || conv->bias >= 0 || (training && conv->stage >= ft))
            continue;
        if (op_of(bn)->fuse != FUSE_BN || bn->in[0] != i || consumers[i] != 1 ||
            always_kept(net, i))
            continue;
        pn[i].fuse_tail = i + 1;
        if (i + 2 >= n || consumers[i + 1] != 1 || always_kept(net, i + 1)) continue;
        const Node *next = &net->nodes[i + 2];
        const FuseRole role = op_of(next)->fuse;
        if ((role == FUSE_RELU || role == FUSE_SILU) && next->in[0] == i + 1)
            pn[i].fuse_tail = i + 2;
        if ((role == FUSE_SUM || role == FUSE_SUM_RELU) &&
            (next->in[0] == i + 1 || next->in[1] == i + 1)) {
            int other = next->in[0] == i + 1 ? next->in[1] : next->in[0];
            if (other < i) pn[i].fuse_tail = i + 2; /* the residual exists before the conv */
        }
    }
}

/* A ReLU of conv -> BN whose output a training plan need not keep: backward rebuilds it
 * from the conv output (kept for the batch norm) and the saved statistics. */
static int relu_recomputable(const Net *net, const Liveness *lv, int t, int ft) {
    const Node *nd = &net->nodes[t];
    if (op_of(nd)->fuse != FUSE_RELU || nd->stage < ft || always_kept(net, t)) return 0;
    const Node *bn = &net->nodes[nd->in[0]];
    return op_of(bn)->fuse == FUSE_BN && lv->consumers[nd->in[0]] == 1 &&
           op_of(&net->nodes[bn->in[0]])->fuse == FUSE_CONV;
}

/* The first node after t that reads t's output, and in which input slot; -1: none. */
static int first_reader(const Net *net, int t, int *slot) {
    for (int k = t + 1; k < net->n_nodes; k++)
        for (int q = 0; q < net->nodes[k].n_in; q++)
            if (net->nodes[k].in[q] == t) {
                *slot = q;
                return k;
            }
    return -1;
}

/* Nor the output of a conv -> BN whose only reader is a SiLU (EfficientNet's conv-BN-SiLU):
 * the SiLU's backward, the one reader of it, gets it rebuilt from the conv output (kept for
 * the batch norm's backward, or itself recomputed) and the saved statistics. */
static int bn_recomputable(const Net *net, const Liveness *lv, int t, int ft) {
    const Node *nd = &net->nodes[t];
    if (op_of(nd)->fuse != FUSE_BN || nd->stage < ft || lv->consumers[t] != 1 ||
        always_kept(net, t) || op_of(&net->nodes[nd->in[0]])->fuse != FUSE_CONV)
        return 0;
    int slot, k = first_reader(net, t, &slot);
    return k >= 0 && op_of(&net->nodes[k])->fuse == FUSE_SILU;
}

/* Nor squeeze-and-excitation's scaled map x * s (OP_CHANNEL_SCALE, as large as x), when one
 * node reads it as its first input: that node's backward gets it rebuilt from x and s, which
 * the scale's own backward keeps anyway. */
static int scale_recomputable(const Net *net, const Liveness *lv, int t, int ft) {
    const Node *nd = &net->nodes[t];
    if (nd->op != OP_CHANNEL_SCALE || nd->stage < ft || lv->consumers[t] != 1 ||
        always_kept(net, t))
        return 0;
    int slot;
    return first_reader(net, t, &slot) >= 0 && slot == 0;
}

/* Low-memory training plans do not keep the outputs of expanding 1x1 convs either (a
 * bottleneck's conv3, C -> 4C, and the downsample shortcut): 40 % of a ResNet-50's
 * activations for 17 % more FLOPs, as backward runs each one again when its batch norm
 * needs it. Only a conv -> BN whose BN feeds no ReLU (so no recomputed ReLU reads it). */
static int conv_recomputable(const Net *net, const Liveness *lv, int t, int ft) {
    int n = net->n_nodes;
    const Node *nd = &net->nodes[t];
    if (t + 1 >= n) return 0;
    const Node *bn = &net->nodes[t + 1];
    if (op_of(nd)->fuse != FUSE_CONV || nd->stage < ft || nd->conv.kh != 1 || nd->conv.kw != 1 ||
        nd->conv.out_c < 2 * nd->conv.in_c || lv->consumers[t] != 1 || op_of(bn)->fuse != FUSE_BN ||
        bn->in[0] != t || always_kept(net, t))
        return 0;
    for (int k = t + 2; k < n; k++)
        for (int q = 0; q < net->nodes[k].n_in; q++)
            if (net->nodes[k].in[q] == t + 1 && op_of(&net->nodes[k])->fuse == FUSE_RELU) return 0;
    return 1;
}

static void plan_liveness(Net *net, Liveness *lv, int training, int ft) {
    int n = net->n_nodes;
    PlanNode *pn = net->plan.nodes;
    lv->consumers = rn_calloc((size_t)4 * n, sizeof(int));
    lv->keep = lv->consumers + n;
    lv->in_place = lv->consumers + 2 * n;
    lv->drop_at = lv->consumers + 3 * n;
    for (int t = 0; t < n; t++)
        for (int k = 0; k < net->nodes[t].n_in; k++) lv->consumers[net->nodes[t].in[k]]++;
    plan_fusion(net, lv->consumers, training, ft);
    for (int j = 0; j < n; j++) {
        const Node *nd = &net->nodes[j];
        lv->keep[j] =
            always_kept(net, j) || (training && nd->stage >= ft && op_of(nd)->reads_output);
        lv->drop_at[j] = -1;
    }
    for (int t = 0; t < n; t++) {
        const Node *nd = &net->nodes[t];
        int tail = pn[t].fuse_tail >= 0 ? pn[t].fuse_tail : t;
        for (int k = 0; k < nd->n_in; k++) {
            int j = nd->in[k];
            if (training && nd->stage >= ft && op_of(nd)->reads_input) lv->keep[j] = 1;
            if (tail > lv->drop_at[j]) lv->drop_at[j] = tail;
        }
    }
    const int recompute = training && !net->reference;
    for (int t = 0; t < n; t++) {
        pn[t].recompute =
            recompute && (relu_recomputable(net, lv, t, ft) || bn_recomputable(net, lv, t, ft) ||
                          scale_recomputable(net, lv, t, ft));
        if (pn[t].recompute) lv->keep[t] = 0;
    }
    for (int t = 0; t < n && recompute && net->low_memory; t++)
        if (conv_recomputable(net, lv, t, ft)) {
            pn[t].recompute = 1;
            lv->keep[t] = 0;
        }
    /* in place: the input has no other reader and nothing needs it afterwards */
    for (int t = 0; t < n; t++) {
        const Node *nd = &net->nodes[t];
        int j = nd->in[0];
        lv->in_place[t] =
            op_of(nd)->forward_in_place && j > 0 && lv->consumers[j] == 1 && !lv->keep[j] ? j : -1;
    }
}

/* Node outputs: node t's output is born when t runs (a ReLU in place takes over its
 * input's buffer) and dies after its last reader has run, unless it is kept (Liveness). */
static size_t place_outputs(const Net *net, const size_t *size, size_t *off, const Liveness *lv) {
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
        if (j >= 0) {
            off[t] = off[j];
            placer_rename(&pl, j, t);
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

/* ------------------------------------------------------------------ Winograd weights */

/* Room for the Winograd weights of every fused 3x3 stride-1 conv (net->winograd), made at
 * the first forward that needs them and again whenever the weights differ from the copy
 * they were made from (a memcmp per conv and forward: a few ms for ResNet-50, against
 * rebuilding them, or missing a change made to Param.data directly). With
 * net->constant_weights no copy is kept: they are made once per plan. */
/* Below this many 4x4 tiles in the batch (ResNet-50's 7x7 maps at batch 1: 4) Winograd
 * reads 36 / 9 = 4 times the weights for too few products to hide it: im2col is faster. */
#define WINOGRAD_MIN_TILES 8

static void plan_winograd(Net *net) {
    NetPlan *pl = &net->plan;
    size_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0;
        for (int i = 0; i < net->n_nodes; i++) {
            const Node *nd = &net->nodes[i];
            PlanNode *pn = &pl->nodes[i];
            /* (tiles of the batch are counted in int) */
            double tiles = (double)net->batch * ((nd->h + 3) / 4) * ((nd->w + 3) / 4);
            int use = net->winograd && !net->reference && op_of(nd)->fuse == FUSE_CONV &&
                      pn->fuse_tail >= 0 && conv_winograd_eligible(&nd->conv) &&
                      tiles >= WINOGRAD_MIN_TILES && tiles < 1e9;
            size_t wf = use && !net->constant_weights
                            ? align_up((size_t)net->params[nd->weight].numel)
                            : 0;
            size_t uf = use ? align_up(winograd_weight_floats(&nd->conv)) : 0;
            if (pass == 1) {
                pn->wino_u = use ? pl->wino_buf + at : NULL;
                pn->wino_w = wf ? pl->wino_buf + at + uf : NULL;
                pn->wino_ready = 0;
            }
            at += uf + wf;
        }
        total = at;
        if (pass == 0 && total > pl->wino_floats) {
            rn_free(pl->wino_buf);
            pl->wino_buf = rn_alloc(total * sizeof(float));
            pl->wino_floats = total;
        }
    }
}

const float *plan_winograd_weights(Net *net, int i) {
    PlanNode *pn = &net->plan.nodes[i];
    if (!net->winograd || !pn->wino_u) return NULL;
    const Node *nd = &net->nodes[i];
    const Param *wp = &net->params[nd->weight];
    size_t bytes = sizeof(float) * (size_t)wp->numel;
    /* no copy to check against: planned with constant_weights, which holds (made once) or
     * was withdrawn since (made every forward) */
    int stale = !pn->wino_ready ||
                (pn->wino_w ? memcmp(pn->wino_w, wp->data, bytes) != 0 : !net->constant_weights);
    if (stale) {
        winograd_weight_transform(&nd->conv, wp->data, pn->wino_u);
        if (pn->wino_w) memcpy(pn->wino_w, wp->data, bytes);
        pn->wino_ready = 1;
    }
    return pn->wino_u;
}

/* ------------------------------------------------------------------ the plan */

/* Each node's output shape, from the op table; on failure rn_error names the node. */
static int infer_shapes(Net *net) {
    for (int i = 0; i < net->n_nodes; i++) {
        Node *nd = &net->nodes[i];
        if (op_table[nd->op].shape(net, i) != 0) return -1;
        if (nd->h < 1 || nd->w < 1) {
            rn_set_error("%s: input %dx%d is too small for %s (output of %s would be %dx%d)",
                         net->arch, net->in_w, net->in_h, net->arch, nd->name, nd->w, nd->h);
            return -1;
        }
    }
    return 0;
}

int net_plan(Net *net, int batch, int h, int w, int training) {
    const int max_side = 1 << 15;
    if (batch < 1 || h < 1 || w < 1 || h > max_side || w > max_side || batch > (1 << 20)) {
        rn_set_error("%s: cannot plan batch %d of %dx%d inputs (expected batch >= 1, "
                     "1 <= size <= %d)",
                     net->arch, batch, w, h, max_side);
        return -1;
    }
    if (net->n_nodes < 2 || net->nodes[0].op != OP_INPUT) {
        rn_set_error("%s: the network has no input node", net->arch);
        return -1;
    }
    NetPlan *plan = &net->plan;
    int n = net->n_nodes;
    int old_h = net->in_h, old_w = net->in_w;
    net->in_h = h;
    net->in_w = w;
    int ok = infer_shapes(net) == 0;
    double floats = 0;
    for (int i = 0; i < n && ok; i++) { /* in double: no size_t wraps on 32-bit hosts */
        const Node *nd = &net->nodes[i];
        floats += (double)batch * nd->c * nd->h * nd->w;
    }
    if (ok && floats * (training ? 3 : 1) > 1e12) {
        rn_set_error("%s: batch %d of %dx%d inputs needs %.0f GB of activations", net->arch, batch,
                     w, h, floats * 4e-9 * (training ? 3 : 1));
        ok = 0;
    }
    /* No part of the arena (outputs, saved buffers and BN statistics, scratch, recomputed
     * outputs, gradients) is larger than twice the outputs' sum, so eight times it bounds
     * the plan: where that exceeds the largest object size_t can hold (2 GiB on 32-bit
     * hosts), refuse before any size wraps around. */
    double bound = 8.0 * sizeof(float) * (floats + 64.0 * n);
    if (ok && bound > (double)PTRDIFF_MAX) {
        rn_set_error("%s: batch %d of %dx%d inputs may need %.1f GiB, more than one object "
                     "holds in this %d-bit build (%.1f GiB)",
                     net->arch, batch, w, h, bound / 1073741824.0, (int)(8 * sizeof(size_t)),
                     (double)PTRDIFF_MAX / 1073741824.0);
        ok = 0;
    }
    if (!ok) { /* leave the previous plan intact */
        char why[256];
        snprintf(why, sizeof why, "%s", rn_error());
        net->in_h = old_h;
        net->in_w = old_w;
        if (plan->arena) infer_shapes(net); /* succeeded before */
        rn_set_error("%s", why);
        return -1;
    }
    rn_free(plan->nodes);
    plan->nodes = rn_calloc((size_t)n, sizeof(PlanNode));
    /* Offsets in floats. Training: every output kept for backward, saved buffers, the
     * scratch and the gradients. Inference: outputs share memory by lifetime. */
    size_t *size = rn_alloc(sizeof(size_t) * 5 * (size_t)n);
    size_t *out_off = size + n, *s0_off = size + 2 * n, *s1_off = size + 3 * n,
           *dout_off = size + 4 * n;
    const int ft = net->first_trainable;
    size_t total = 0, biggest = 0; /* biggest: the scratch, for nodes read several times */
    int max_c = 1;
    for (int i = 0; i < n; i++) {
        const Node *nd = &net->nodes[i];
        size[i] = align_up((size_t)batch * node_numel(nd));
        if (nd->c > max_c) max_c = nd->c;
        for (int k = 0; k < nd->n_in; k++) { /* ops adding in place need none */
            const Node *in = &net->nodes[nd->in[k]];
            if (in->last_consumer != i && in->stage >= ft &&
                (!op_of(nd)->adds_in_place || net->reference) && size[nd->in[k]] > biggest)
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
        if (op_of(nd)->saves == SAVE_CHANNELS) {
            s0_off[i] = total;
            s1_off[i] = total + align_up((size_t)nd->c);
            total += 2 * align_up((size_t)nd->c);
        } else if (op_of(nd)->saves == SAVE_OUTPUT) {
            s0_off[i] = total;
            total += size[i];
        } else if (op_of(nd)->saves == SAVE_SAMPLES) {
            s0_off[i] = total;
            total += align_up((size_t)batch);
        }
    }
    size_t scratch_off = total, recompute_floats = 0, recompute_conv_floats = 0;
    for (int i = 0; i < n && training; i++) {
        const Node *nd = &net->nodes[i];
        if (plan->nodes[i].recompute && op_of(nd)->fuse == FUSE_CONV &&
            size[i] > recompute_conv_floats)
            recompute_conv_floats = size[i];
        /* a recomputed ReLU, BN or scaled map needs the buffer only where backward reads it
         * as an input */
        for (int k = 0; k < nd->n_in && nd->stage >= ft && op_of(nd)->reads_input; k++) {
            int j = nd->in[k];
            const FuseRole role = op_of(&net->nodes[j])->fuse;
            if (plan->nodes[j].recompute && role != FUSE_CONV && size[j] > recompute_floats)
                recompute_floats = size[j];
        }
    }
    size_t recompute_off = total + (training ? biggest : 0);
    size_t recompute_conv_off = recompute_off + recompute_floats;
    if (training) {
        total += biggest; /* scratch: a branch point's other consumers */
        total += recompute_floats + recompute_conv_floats;
        size_t dout_floats = place_gradients(net, size, dout_off, ft);
        for (int i = 0; i < n; i++)
            if (dout_off[i] != NONE) dout_off[i] += total;
        total += dout_floats;
    }
    if (total > plan->arena_floats) {
        rn_free(plan->arena);
        plan->arena = rn_alloc(total * sizeof(float));
        plan->arena_floats = total;
    }
    float *a = plan->arena;
    for (int i = 0; i < n; i++) {
        Node *nd = &net->nodes[i];
        nd->out = a + out_off[i];
        nd->save0 = s0_off[i] == NONE ? NULL : a + s0_off[i];
        nd->save1 = s1_off[i] == NONE ? NULL : a + s1_off[i];
        nd->dout = training && dout_off[i] != NONE ? a + dout_off[i] : NULL;
    }
    plan->grad_scratch = training ? a + scratch_off : NULL;
    plan->recompute_buf = recompute_floats ? a + recompute_off : NULL;
    plan->recompute_conv_buf = recompute_conv_floats ? a + recompute_conv_off : NULL;
    plan->recompute_owner = plan->recompute_conv_owner = -1;
    rn_free(plan->affine);
    plan->affine = rn_alloc(sizeof(float) * 2 * (size_t)max_c);
    rn_free(size);
    net->batch = batch;
    net->training_plan = training;
    plan->first_trainable = ft;
    plan_winograd(net);
    return 0;
}

void plan_free(NetPlan *plan) {
    rn_free(plan->nodes);
    rn_free(plan->arena);
    rn_free(plan->affine);
    rn_free(plan->wino_buf);
    rn_free(plan->step_grad);
    for (int b = 0; b < 2; b++) {
        rn_free(plan->bucket[b].grad);
        rn_free(plan->bucket[b].params);
        rn_free(plan->bucket[b].own_grad);
    }
    memset(plan, 0, sizeof *plan);
}

/* ------------------------------------------------------------------ recomputation */

void plan_relu_affine(Net *net, int t, const float **scale, const float **shift) {
    plan_bn_affine(net, net->nodes[t].in[0], scale, shift);
}

void plan_bn_affine(Net *net, int b, const float **scale, const float **shift) {
    const Node *bn = &net->nodes[b];
    const Param *p = net->params;
    const float *gamma = p[bn->weight].data, *beta = p[bn->bias].data;
    float *sc = net->plan.affine, *sh = net->plan.affine + bn->c;
    if (bn_trains(net, bn, net->plan.forward_train)) {
        for (int ch = 0; ch < bn->c; ch++) { /* the batch statistics the forward saved */
            sc[ch] = gamma[ch] * bn->save1[ch];
            sh[ch] = beta[ch] - bn->save0[ch] * sc[ch];
        }
    } else {
        batchnorm_eval_affine(bn->c, gamma, beta, p[bn->mean].data, p[bn->var].data, bn->eps, sc,
                              sh);
    }
    *scale = sc;
    *shift = sh;
}

/* The output of conv node t that a low-memory plan did not keep, run again into
 * recompute_conv_buf (its input kept, or itself recomputed): the same call as the forward,
 * so the same bits. Backward needs it before the conv's own update. */
static const float *recomputed_conv(Net *net, int t, int n) {
    NetPlan *plan = &net->plan;
    const Node *nd = &net->nodes[t], *in = &net->nodes[nd->in[0]];
    const Param *p = net->params;
    if (plan->recompute_conv_owner == t) return plan->recompute_conv_buf;
    const float *x =
        plan->nodes[nd->in[0]].recompute ? plan_recomputed_output(net, nd->in[0], n) : in->out;
    conv2d_forward(&nd->conv, n, in->h, in->w, x, p[nd->weight].data,
                   nd->bias >= 0 ? p[nd->bias].data : NULL, plan->recompute_conv_buf);
    plan->recompute_conv_owner = t;
    return plan->recompute_conv_buf;
}

/* The output of node t that the training plan did not keep: a conv (recomputed_conv), a
 * ReLU after conv -> BN (relu_affine_forward of the kept conv output), a BN before a SiLU
 * (batchnorm_affine_forward of the conv output, kept or itself recomputed) or a scaled map
 * (channel_scale_forward of its kept inputs), in the plan's recompute buffers. */
const float *plan_recomputed_output(Net *net, int t, int n) {
    NetPlan *plan = &net->plan;
    if (op_of(&net->nodes[t])->fuse == FUSE_CONV) return recomputed_conv(net, t, n);
    if (net->nodes[t].op == OP_CHANNEL_SCALE && plan->recompute_owner != t) {
        const Node *nd = &net->nodes[t];
        channel_scale_forward(n, nd->c, nd->h * nd->w, net->nodes[nd->in[0]].out,
                              net->nodes[nd->in[1]].out, plan->recompute_buf);
        plan->recompute_owner = t;
    }
    if (op_of(&net->nodes[t])->fuse == FUSE_BN && plan->recompute_owner != t) {
        const Node *bn = &net->nodes[t];
        const int conv = bn->in[0];
        const float *x = plan->nodes[conv].recompute ? recomputed_conv(net, conv, n)
                                                     : net->nodes[conv].out;
        const float *scale, *shift;
        plan_bn_affine(net, t, &scale, &shift);
        batchnorm_affine_forward(n, bn->c, bn->h * bn->w, x, scale, shift, plan->recompute_buf);
        plan->recompute_owner = t;
    }
    if (plan->recompute_owner != t) {
        const Node *bn = &net->nodes[net->nodes[t].in[0]];
        const float *scale, *shift;
        plan_relu_affine(net, t, &scale, &shift);
        relu_affine_forward(n, bn->c, bn->h * bn->w, net->nodes[bn->in[0]].out, scale, shift,
                            plan->recompute_buf);
        plan->recompute_owner = t;
    }
    return plan->recompute_buf;
}
