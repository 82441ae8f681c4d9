/* optim.c - SGD (momentum, Nesterov), Adam and AdamW, matching torch.optim (1.13,
 * single-tensor path) operation by operation, so that the same gradients give the same
 * float32 parameters bit for bit on an FMA machine:
 *
 *   SGD:   g = grad + wd * p
 *          buf = g (first step), else buf = momentum * buf + g     (dampening 0)
 *          g = nesterov ? g + momentum * buf : buf
 *          p = p - lr * g
 *   Adam:  g = grad + wd * p                       (AdamW instead: p = p * (1 - lr * wd))
 *          m = b1 * m + (1 - b1) * g
 *          v = b2 * v + (1 - b2) * g * g
 *          denom = sqrt(v) / sqrt(1 - b2^t) + eps
 *          p = p + (-lr / (1 - b1^t)) * m / denom
 *
 * torch evaluates `x.add_(y, alpha=a)` as one fused multiply-add, fma(y, a, x), and
 * `x.addcmul_(y, z, value=a)` as fma(a * y, z, x); madd() does the same here. Scalars
 * such as 1 - b1, lr / (1 - b1^t) and sqrt(1 - b2^t) are computed in double, as Python
 * does, and rounded to float once, like torch does when it applies them to a float tensor.
 * They start from the decimal value the user wrote (0.999, not the float nearest to it,
 * which torch never sees): opt_decimal() recovers it from the float in OptConfig.
 *
 * State: one slot per network parameter. Moments (m, v; the SGD momentum buffer in m) are
 * allocated on the first step that updates the parameter, so frozen parameters cost no
 * memory. The step count t is shared by all parameters: a parameter unfrozen later starts
 * with zero moments but the current t (torch would restart its bias correction at 1);
 * create a new optimizer when unfreezing to get torch's behaviour.
 */
#include "resnet.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One rounding of a * b + c: the unit's fused instruction where the compiler has one (and
 * can vectorise the loops with it), else rn_fmaf, as not every libm's fmaf is right. */
#if defined(FP_FAST_FMAF) || defined(__FMA__) || defined(__ARM_FEATURE_FMA) || \
    !(FLT_EVAL_METHOD == 0 || FLT_EVAL_METHOD == 1)
#define madd fmaf
#else
#define madd rn_fmaf
#endif

OptConfig opt_default(OptType type, float lr) {
    OptConfig c;
    memset(&c, 0, sizeof c);
    c.type = type;
    c.lr = lr;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    c.weight_decay = type == OPT_ADAMW ? 0.01f : 0.0f; /* torch.optim.AdamW's default */
    c.momentum = type == OPT_SGD ? 0.9f : 0.0f;
    c.nesterov = 0;
    return c;
}

static const char *const opt_names[] = {"sgd", "adam", "adamw"};

int opt_parse(const char *name, OptType *type) {
    for (int i = 0; i < 3; i++) {
        if (name && strcmp(name, opt_names[i]) == 0) {
            *type = (OptType)i;
            return 0;
        }
    }
    rn_set_error("optimizer: expected sgd, adam or adamw, found \"%s\"", name ? name : "(null)");
    return -1;
}

const char *opt_name(OptType type) { return (unsigned)type < 3 ? opt_names[type] : "unknown"; }

Optimizer *optimizer_create(const Net *net, const OptConfig *cfg) {
    Optimizer *opt = rn_calloc(1, sizeof *opt);
    opt->cfg = *cfg;
    opt->step = 0;
    opt->n = net->n_params;
    opt->m = rn_calloc(opt->n > 0 ? opt->n : 1, sizeof *opt->m);
    opt->v = rn_calloc(opt->n > 0 ? opt->n : 1, sizeof *opt->v);
    return opt;
}

void optimizer_free(Optimizer *opt) {
    if (!opt) return;
    for (int i = 0; i < opt->n; i++) {
        rn_free(opt->m[i]);
        rn_free(opt->v[i]);
    }
    rn_free(opt->m);
    rn_free(opt->v);
    rn_free(opt);
}

/* The shortest decimal (up to 9 significant digits) that rounds to x: the value the user
 * wrote, e.g. 0.999 for 0.999f, which is what Python computes its scalars from. */
static double opt_decimal(float x) {
    char text[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, (double)x);
        double d = strtod(text, NULL);
        if ((float)d == x) return d;
    }
    return (double)x;
}

/* Below this many elements a tensor is updated by one thread. */
#define OPT_PARALLEL_MIN 32768

static void sgd_update(int64_t n, float *p, const float *grad, float *buf, int first, float lr_neg,
                       float wd, float momentum, int nesterov) {
#ifdef _OPENMP
#pragma omp parallel for simd schedule(static) if (n >= OPT_PARALLEL_MIN)
#endif
    for (int64_t i = 0; i < n; i++) {
        float g = wd != 0.0f ? madd(p[i], wd, grad[i]) : grad[i];
        if (buf) {
            if (first) {
                buf[i] = g;
            } else {
                float scaled = buf[i] * momentum;
                buf[i] = scaled + g;
            }
            g = nesterov ? madd(buf[i], momentum, g) : buf[i];
        }
        p[i] = madd(g, lr_neg, p[i]);
    }
}

/* step_neg = -lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t), decay = 1 - lr * wd (AdamW)
 * or 1, wd = L2 weight decay (Adam) or 0. */
static void adam_update(int64_t n, float *p, const float *grad, float *m, float *v, float b1,
                        float one_minus_b1, float b2, float one_minus_b2, float eps, float wd,
                        float decay, float step_neg, float bc2_sqrt) {
#ifdef _OPENMP
#pragma omp parallel for simd schedule(static) if (n >= OPT_PARALLEL_MIN)
#endif
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i];
        if (decay != 1.0f) pi = pi * decay;
        float g = wd != 0.0f ? madd(pi, wd, grad[i]) : grad[i];
        float mi = m[i] * b1;
        mi = madd(g, one_minus_b1, mi);
        float vi = v[i] * b2;
        float scaled = one_minus_b2 * g;
        vi = madd(scaled, g, vi);
        float denom = sqrtf(vi) / bc2_sqrt;
        denom = denom + eps;
        float delta = step_neg * mi;
        delta = delta / denom;
        p[i] = pi + delta;
        m[i] = mi;
        v[i] = vi;
    }
}

enum { DEC_LR, DEC_WD, DEC_B1, DEC_B2, DEC_MOMENTUM, DEC_EPS };

void optimizer_begin_step(Optimizer *opt) {
    const OptConfig *c = &opt->cfg;
    opt->step++;
    opt->dec[DEC_LR] = opt_decimal(c->lr); /* cfg may change between steps (schedules) */
    opt->dec[DEC_WD] = opt_decimal(c->weight_decay);
    opt->dec[DEC_B1] = opt_decimal(c->beta1);
    opt->dec[DEC_B2] = opt_decimal(c->beta2);
    opt->dec[DEC_MOMENTUM] = opt_decimal(c->momentum);
    opt->dec[DEC_EPS] = opt_decimal(c->eps);
}

void optimizer_update(Optimizer *opt, Net *net, int i) {
    const OptConfig *c = &opt->cfg;
    if (i < 0 || i >= net->n_params || i >= opt->n) return;
    Param *prm = &net->params[i];
    if (prm->is_buffer || !prm->grad || prm->stage < net->first_trainable) return;
    double lr = opt->dec[DEC_LR], wd = opt->dec[DEC_WD];
    double b1 = opt->dec[DEC_B1], b2 = opt->dec[DEC_B2];
    double momentum = opt->dec[DEC_MOMENTUM];
    double t = (double)opt->step;
    size_t bytes = (size_t)prm->numel * sizeof(float);
    if (c->type == OPT_SGD) {
        int first = 0;
        if (momentum != 0.0 && !opt->m[i]) {
            opt->m[i] = rn_calloc(1, bytes);
            first = 1;
        }
        sgd_update(prm->numel, prm->data, prm->grad, momentum != 0.0 ? opt->m[i] : NULL, first,
                   (float)-lr, (float)wd, (float)momentum, c->nesterov);
    } else {
        if (!opt->m[i]) opt->m[i] = rn_calloc(1, bytes);
        if (!opt->v[i]) opt->v[i] = rn_calloc(1, bytes);
        int decoupled = c->type == OPT_ADAMW;
        double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
        adam_update(prm->numel, prm->data, prm->grad, opt->m[i], opt->v[i], (float)b1,
                    (float)(1.0 - b1), (float)b2, (float)(1.0 - b2), (float)opt->dec[DEC_EPS],
                    decoupled ? 0.0f : (float)wd, decoupled ? (float)(1.0 - lr * wd) : 1.0f,
                    (float)(-(lr / bc1)), (float)sqrt(bc2));
    }
}

void optimizer_step(Optimizer *opt, Net *net) {
    optimizer_begin_step(opt);
    for (int i = 0; i < net->n_params; i++) optimizer_update(opt, net, i);
}
