/* ops.h - the op table (ops.c) and what the planner (plan.c) and the forward and backward
 * passes (resnet.c) share. Internal to the library.
 *
 * An op is one row: its output shape, its forward and backward on the graph (thin
 * wrappers that find a node's inputs and parameters and call the layer functions of
 * layers.c), and the facts the planner needs to keep, share and fuse buffers. Adding an
 * op: its two layer functions, an OpType value, one row, a test. */
#ifndef RN_OPS_H
#define RN_OPS_H

#include "resnet.h"

#define ALIGN_FLOATS 16 /* 64 bytes */

static inline size_t node_numel(const Node *nd) { return (size_t)nd->c * nd->h * nd->w; }
static inline size_t align_up(size_t n) {
    return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

/* What backward hands node i's op. */
typedef struct {
    int n;          /* samples */
    int train;      /* the forward's train flag */
    int trains;     /* this node's parameters get gradients */
    int all;        /* every input's gradient is wanted (net_backward was given dx) */
    float *dx;      /* where input 0's gradient goes, NULL: not wanted (see below) */
    const float *x; /* input 0's output (rebuilt when the plan did not keep it) */
    float *scratch; /* the plan's scratch, for inputs read by several nodes */
} BackwardArgs;

/* The part an op can play in an eval-forward fusion group conv -> BN [-> ReLU | -> SiLU |
 * -> sum]. */
typedef enum {
    FUSE_NONE,
    FUSE_CONV,
    FUSE_BN,
    FUSE_RELU,
    FUSE_SILU,
    FUSE_SUM,
    FUSE_SUM_RELU
} FuseRole;
/* What an op's forward keeps for its backward in save0 (/ save1): nothing, two vectors of
 * channels (batch-norm statistics), one value per output element (mask, argmax), or one
 * per sample (stochastic depth's factors). */
typedef enum { SAVE_NONE, SAVE_CHANNELS, SAVE_OUTPUT, SAVE_SAMPLES } SaveKind;

typedef struct {
    const char *name;
    int (*shape)(Net *net, int i);                     /* node i's c, h, w from its inputs */
    int (*forward)(Net *net, int i, int n, int train); /* 0, or -1 (rn_error says why) */
    void (*backward)(Net *net, int i, const BackwardArgs *a);
    ActForward act_forward;   /* elementwise activations: the layer functions that */
    ActBackward act_backward; /*   act_node_forward / act_node_backward call */
    /* the planner's facts */
    int reads_input;      /* backward reads input 0's output */
    int reads_output;     /* backward reads the node's own output */
    int grad_in_place;    /* backward may write input 0's gradient over its own */
    int delivers_grads;   /* backward writes every input gradient itself (else it fills
                                 a->dx, which the pass then adds in where needed) */
    int adds_in_place;    /* ... by adding into them in place: it needs no scratch */
    int forward_in_place; /* forward may write its output over its input */
    FuseRole fuse;
    SaveKind saves;
} OpDef;

extern const OpDef op_table[OP_COUNT];

/* The one forward of a fused group headed by conv node i (plan: fuse_tail), in eval mode. */
void op_fused_forward(Net *net, int i, int n);
/* Gradient plumbing for a consumer of node j: where it writes j's gradient (j's own dout
 * when it is j's last consumer, the first one backward meets; else the scratch) and, once
 * written there, adding the scratch into j's gradient. */
float *grad_target(Net *net, int consumer, int j, float *scratch);
void grad_done(Net *net, int consumer, int j, const float *target, size_t count);
/* Whether node nd's batch norm runs in training mode for a forward with this train flag. */
static inline int bn_trains(const Net *net, const Node *nd, int train) {
    return train && nd->stage >= net->first_trainable;
}

/* plan.c: outputs a training plan did not keep, rebuilt for backward. */
const float *plan_recomputed_output(Net *net, int t, int n);
/* Batch norm node bn as a per-channel affine map (scale, shift) of the conv output, from the
 * statistics of the last forward; in net->plan.affine. plan_relu_affine: the one feeding
 * ReLU node t. */
void plan_bn_affine(Net *net, int bn, const float **scale, const float **shift);
void plan_relu_affine(Net *net, int t, const float **scale, const float **shift);
/* conv node i's Winograd weights, remade if the weights changed; NULL: not planned. */
const float *plan_winograd_weights(Net *net, int i);
void plan_free(NetPlan *plan);

#endif /* RN_OPS_H */
