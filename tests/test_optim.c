/* test_optim.c - SGD, Adam and AdamW against torch.optim: four steps on a six-element
 * parameter with fixed gradients; the expected values were printed once by torch 1.13
 * (torch.set_num_threads(1), float32) with the script in the comment below. They agree
 * bit for bit on this machine; the test allows one float ulp for another libm's pow().
 *
 *   p0 = [0.5, -1.25, 2.0, 0.0, -0.3, 1e-3]; grads = the four rows of `grads` below
 *   p = torch.tensor(p0, requires_grad=True); o = OPTIMIZER([p], **kw)
 *   for g in grads: p.grad = torch.tensor(g); o.step(); print(p)                       */
#include "resnet.h"
#include "test.h"

#define N     6
#define STEPS 4
static const float p0[N] = {0.5f, -1.25f, 2.0f, 0.0f, -0.3f, 1e-3f};
static const float grads[STEPS][N] = {{0.1f, -0.2f, 0.3f, 1e-9f, 0.0f, 5.0f},
                                      {-0.05f, 0.4f, 0.3f, -2e-9f, 0.0f, -4.0f},
                                      {0.2f, 0.1f, -0.6f, 1e-8f, 0.0f, 3.0f},
                                      {0.0f, -0.3f, 0.25f, 0.5f, 0.0f, -1.0f}};

/* sgd_momentum: torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01) */
static const float want_sgd_momentum[4][6] = {
    {0.489499986f, -1.22874999f, 1.96800005f, -1.00000001e-10f, -0.299700022f, -0.499000996f},
    {0.48456049f, -1.24839628f, 1.90723205f, 1.01000068e-11f, -0.299130321f, -0.548502922f},
    {0.45963037f, -1.27482951f, 1.91063356f, -8.9082014e-10f, -0.298318446f, -0.892506123f},
    {0.436733633f, -1.26734459f, 1.88678432f, -0.0500000007f, -0.297289461f, -1.10121655f},
};
/* sgd_nesterov: torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True) */
static const float want_sgd_nesterov[4][6] = {
    {0.480049998f, -1.20962501f, 1.93920004f, -1.90000002e-10f, -0.299430013f, -0.949001908f},
    {0.480132908f, -1.26611423f, 1.85259557f, 1.09361006e-10f, -0.298618108f, -0.592199624f},
    {0.437227309f, -1.29863763f, 1.91387689f, -1.70159287e-09f, -0.297589481f, -1.2008065f},
    {0.416213661f, -1.26058078f, 1.86556101f, -0.0949999988f, -0.296367079f, -1.28680408f},
};
/* sgd_plain: torch.optim.SGD(lr=0.05) */
static const float want_sgd_plain[4][6] = {
    {0.495000005f, -1.24000001f, 1.98500001f, -5.00000007e-11f, -0.300000012f, -0.248999998f},
    {0.497500002f, -1.25999999f, 1.97000003f, 4.99999972e-11f, -0.300000012f, -0.048999995f},
    {0.487500012f, -1.26499999f, 2.0f, -4.50000009e-10f, -0.300000012f, -0.199000001f},
    {0.487500012f, -1.25f, 1.98749995f, -0.0250000004f, -0.300000012f, -0.149000004f},
};
/* adam: torch.optim.Adam(lr=0.01, weight_decay=0.1) */
static const float want_adam[4][6] = {
    {0.49000001f, -1.24000001f, 1.99000001f, -0.000909090915f, -0.290000021f, -0.00899999961f},
    {0.483349204f, -1.239712f, 1.9800005f, 0.0065310467f, -0.280010283f, -0.00958025083f},
    {0.475223541f, -1.23913085f, 1.97644508f, 0.000996639486f, -0.270038158f, -0.012697503f},
    {0.467715085f, -1.23469651f, 1.97108889f, -0.00482061366f, -0.260091364f, -0.0144100254f},
};
/* adamw: torch.optim.AdamW(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-06) */
static const float want_adamw[4][6] = {
    {0.489500105f, -1.23874998f, 1.98800004f, -9.99000986e-06f, -0.299700022f, -0.00900099892f},
    {0.486899257f, -1.24172127f, 1.97601211f, -3.32389391e-06f, -0.29940033f, -0.00899199769f},
    {0.479492635f, -1.24500608f, 1.97565484f, -4.0150826e-05f, -0.299100935f, -0.0119995261f},
    {0.473716289f, -1.24293971f, 1.97267091f, -0.0067644869f, -0.298801839f, -0.0133209042f},
};

/* A network of three parameters: [0] the trainable one under test, [1] a frozen one
 * (stage below first_trainable) and [2] a buffer; only [0] may change. */
typedef struct {
    Net net;
    Param params[3];
    float data[3][N], grad[3][N];
} TinyNet;

static void tiny_init(TinyNet *t) {
    memset(t, 0, sizeof *t);
    for (int i = 0; i < 3; i++) {
        Param *p = &t->params[i];
        snprintf(p->name, sizeof p->name, "p%d", i);
        p->ndim = 1;
        p->shape[0] = p->numel = N;
        p->data = t->data[i];
        p->grad = i == 2 ? NULL : t->grad[i];
        p->stage = i == 1 ? STAGE_STEM : STAGE_HEAD;
        p->is_buffer = i == 2;
        memcpy(p->data, p0, sizeof p0);
    }
    t->net.params = t->params;
    t->net.n_params = t->net.cap_params = 3;
    t->net.first_trainable = STAGE_LAYER1;
}

/* Runs the optimizer and compares every step; returns the number of bit-exact values. */
static int run_case(const char *label, OptConfig cfg, const float want[STEPS][N]) {
    TinyNet t;
    tiny_init(&t);
    Optimizer *opt = optimizer_create(&t.net, &cfg);
    int exact = 0;
    for (int s = 0; s < STEPS; s++) {
        for (int i = 0; i < 2; i++) memcpy(t.grad[i], grads[s], sizeof grads[s]);
        optimizer_step(opt, &t.net);
        for (int j = 0; j < N; j++) {
            float a = t.data[0][j], b = want[s][j];
            exact += a == b;
            /* within one float ulp of torch (another libm's pow() may round differently) */
            CHECK_MSG(a == b || a == nextafterf(b, INFINITY) || a == nextafterf(b, -INFINITY),
                      "%s step %d [%d]: %.9g, torch %.9g", label, s + 1, j, a, b);
        }
    }
    CHECK(opt->step == STEPS);
    CHECK(memcmp(t.data[1], p0, sizeof p0) == 0); /* frozen */
    CHECK(memcmp(t.data[2], p0, sizeof p0) == 0); /* buffer */
    CHECK(opt->m[1] == NULL && opt->v[1] == NULL && opt->m[2] == NULL && opt->v[2] == NULL);
    optimizer_free(opt);
    printf("  %-13s %d of %d values bit-exact with torch\n", label, exact, STEPS * N);
    return exact;
}

static void test_sgd_momentum(void) {
    OptConfig c = opt_default(OPT_SGD, 0.1f);
    c.momentum = 0.9f;
    c.weight_decay = 0.01f;
    run_case("sgd_momentum", c, want_sgd_momentum);
}

static void test_sgd_nesterov(void) {
    OptConfig c = opt_default(OPT_SGD, 0.1f);
    c.momentum = 0.9f;
    c.weight_decay = 0.01f;
    c.nesterov = 1;
    run_case("sgd_nesterov", c, want_sgd_nesterov);
}

static void test_sgd_plain(void) {
    OptConfig c = opt_default(OPT_SGD, 0.05f);
    c.momentum = 0.0f;
    TinyNet t;
    tiny_init(&t);
    Optimizer *opt = optimizer_create(&t.net, &c);
    memcpy(t.grad[0], grads[0], sizeof grads[0]);
    optimizer_step(opt, &t.net);
    CHECK(opt->m[0] == NULL); /* no momentum, no buffer */
    optimizer_free(opt);
    run_case("sgd_plain", c, want_sgd_plain);
}

static void test_adam(void) {
    OptConfig c = opt_default(OPT_ADAM, 0.01f);
    c.weight_decay = 0.1f;
    run_case("adam", c, want_adam);
}

static void test_adamw(void) {
    OptConfig c = opt_default(OPT_ADAMW, 0.01f);
    c.weight_decay = 0.1f;
    c.beta1 = 0.8f;
    c.beta2 = 0.99f;
    c.eps = 1e-6f;
    run_case("adamw", c, want_adamw);
}

/* Moments appear on the first step that updates a parameter, and only for it. */
static void test_lazy_state(void) {
    TinyNet t;
    tiny_init(&t);
    OptConfig c = opt_default(OPT_ADAM, 0.01f);
    Optimizer *opt = optimizer_create(&t.net, &c);
    for (int i = 0; i < 2; i++) memcpy(t.grad[i], grads[0], sizeof grads[0]);
    CHECK(opt->n == 3 && opt->step == 0);
    CHECK(opt->m[0] == NULL && opt->v[0] == NULL);
    optimizer_step(opt, &t.net);
    CHECK(opt->m[0] != NULL && opt->v[0] != NULL);
    CHECK(opt->m[1] == NULL && opt->m[2] == NULL);
    t.net.first_trainable = STAGE_STEM; /* unfreeze: [1] joins, the buffer never does */
    optimizer_step(opt, &t.net);
    CHECK(opt->m[1] != NULL && opt->v[1] != NULL && opt->m[2] == NULL);
    CHECK(t.data[1][0] != p0[0] && memcmp(t.data[2], p0, sizeof p0) == 0);
    optimizer_free(opt);
}

static void test_names_and_defaults(void) {
    const char *names[] = {"sgd", "adam", "adamw"};
    for (int i = 0; i < 3; i++) {
        OptType type;
        CHECK(opt_parse(names[i], &type) == 0);
        CHECK((int)type == i);
        CHECK(strcmp(opt_name(type), names[i]) == 0);
    }
    OptType type = OPT_SGD;
    CHECK(opt_parse("rmsprop", &type) == -1);
    CHECK(strstr(rn_error(), "rmsprop") != NULL);
    CHECK(opt_parse("Adam", &type) == -1);
    /* FLOAT_EQ (test.h): where FLT_EVAL_METHOD is 1 (s390x), 0.9f compared directly has
     * double precision, and no float equals it */
    OptConfig a = opt_default(OPT_ADAM, 1e-3f);
    CHECK(a.type == OPT_ADAM && FLOAT_EQ(a.lr, 1e-3f) && FLOAT_EQ(a.beta1, 0.9f) &&
          FLOAT_EQ(a.beta2, 0.999f));
    CHECK(FLOAT_EQ(a.eps, 1e-8f) && a.weight_decay == 0.0f);
    OptConfig w = opt_default(OPT_ADAMW, 1e-3f);
    CHECK(FLOAT_EQ(w.weight_decay, 0.01f));
    OptConfig s = opt_default(OPT_SGD, 0.1f);
    CHECK(FLOAT_EQ(s.momentum, 0.9f) && s.nesterov == 0 && s.weight_decay == 0.0f);
}

/* fmaf (the optimizers' multiply-add, as torch's) rounds once: (1 + 2^-12)^2 - 1 is
 * 2^-11 + 2^-24 exactly, where a product rounded to float first loses the 2^-24 (a tie,
 * to even). */
static void test_fma_rounds_once(void) {
    volatile float a = 1.0f + ldexpf(1.0f, -12), c = -1.0f;
    CHECK(fmaf(a, a, c) == ldexpf(1.0f, -11) + ldexpf(1.0f, -24));
    volatile float big = 3.0e38f;
    CHECK(isinf(fmaf(big, big, 1.0f)) && fmaf(0.0f, 0.0f, -0.0f) == 0.0f);
}

/* rn_fmaf (the optimizers' multiply-add without a fused instruction) rounds once: fixed
 * cases with known answers, including the one mingw-w64's fmaf gets wrong, then random
 * triples against this host's fmaf where that one passes the same cases. */
static void test_rn_fmaf(void) {
    static const float cases[][4] = {
        {1.0f + 0x1p-12f, 1.0f + 0x1p-12f, -1.0f, 0x1p-11f + 0x1p-24f},
        {0.60800004f, -0.1f, 2.0f, 1.93920004f},
        {0x1.000002p0f, 0x1.000002p0f, -0x1.000004p0f, 0x1p-46f}, /* all but the tiny term cancels */
        {0x1p-75f, 0x1p-75f, 1.0f, 1.0f},                          /* below half an ulp */
        {1.0f, 0x1p-24f, 1.0f, 1.0f},                              /* an exact tie, to even */
        {1.0f, 0x1p-24f + 0x1p-47f, 1.0f, 1.0f + 0x1p-23f},        /* just past the tie */
        {0x1p-70f, 0x1p-70f, 0.0f, 0x1p-140f},                     /* a float subnormal */
        {3.0e38f, 3.0e38f, 1.0f, INFINITY},
        {0.0f, 0.0f, -0.0f, 0.0f},
    };
    int n = (int)(sizeof cases / sizeof cases[0]), libm_ok = 1;
    for (int i = 0; i < n; i++) {
        volatile float a = cases[i][0], b = cases[i][1], c = cases[i][2];
        float got = rn_fmaf(a, b, c), want = cases[i][3];
        CHECK_MSG(got == want || (isinf(got) && isinf(want) && signbit(got) == signbit(want)),
                  "case %d: rn_fmaf(%a, %a, %a) = %a, want %a", i, a, b, c, got, want);
        libm_ok &= fmaf(a, b, c) == want;
    }
    if (!libm_ok) {
        printf("  this libm's fmaf rounds wrongly on the fixed cases; random triples skipped\n");
        return;
    }
    Rng rng;
    rng_seed(&rng, 7);
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        /* random signs and exponents spread so that products and addends overlap */
        float a = ldexpf(rng_uniform(&rng) + 0.5f, (int)rng_below(&rng, 40) - 20);
        float b = ldexpf(rng_uniform(&rng) - 0.5f, (int)rng_below(&rng, 40) - 20);
        float c = ldexpf(rng_uniform(&rng) - 0.5f, (int)rng_below(&rng, 80) - 40);
        volatile float va = a, vb = b, vc = c;
        if (rn_fmaf(va, vb, vc) != fmaf(va, vb, vc) && bad++ < 3)
            printf("  rn_fmaf(%a, %a, %a) = %a, fmaf %a\n", a, b, c, rn_fmaf(a, b, c), fmaf(a, b, c));
    }
    CHECK_MSG(bad == 0, "%d of 200000 random triples differ from fmaf", bad);
}

int main(void) {
    RUN(test_fma_rounds_once);
    RUN(test_rn_fmaf);
    RUN(test_names_and_defaults);
    RUN(test_sgd_momentum);
    RUN(test_sgd_nesterov);
    RUN(test_sgd_plain);
    RUN(test_adam);
    RUN(test_adamw);
    RUN(test_lazy_state);
    return test_summary();
}
