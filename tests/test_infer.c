/* tests/test_infer.c - the ./infer program, run as a subprocess on a constructed model whose
 * outputs are known in closed form.
 *
 * The model is cifar_resnet20 with hand-set weights:
 *   stem conv1 = identity on the 3 input channels (centre tap 1), every block conv = 0,
 *   every BN the identity map in eval mode (gamma 1, beta 0, mean 0, var 1),
 *   so each block computes relu(0 + shortcut(x)) = shortcut(x) (inputs are >= 0 with the
 *   "unit" preprocessing, RGB/255). The option-A shortcuts of layer2.0 and layer3.0
 *   subsample by 2 and pad 8 and 16 zero channels in front, so input channel c lands in
 *   channel 24 + c of the 64 pooled features, averaged over pixels (4i, 4j).
 *   linear.weight[c][24 + c] = S, bias 0, 3 classes "red", "green", "blue":
 *     logit_c = S * mean(colour channel c) / 255 / sqrt(1 + eps)   (eps of the stem BN).
 * Solid images therefore have known softmax outputs, and a composite of solid blocks,
 * cut into windows that each cover one block, has known summed softmax mass.
 *
 * The binary is $BIN/infer (BIN defaults to "."). */
#include "resnet.h"
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#ifndef _WIN32
#include <sys/wait.h>
#endif

#define S_LOGIT 4.0f
#ifdef _WIN32
#define RN_EXE_SUFFIX ".exe"
#else
#define RN_EXE_SUFFIX ""
#endif
static char tmp[256];
static char infer_bin[1024];

/* ------------------------------------------------------------------ a small JSON parser */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
typedef struct JVal {
    int type;
    double num;
    char *str;
    struct JVal *items; /* array elements or object values */
    char **keys;        /* object keys */
    int n;
} JVal;

static void j_ws(const char **p) {
    while (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r') (*p)++;
}

static int j_hex4(const char *s) {
    for (int i = 0; i < 4; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
              (s[i] >= 'A' && s[i] <= 'F')))
            return 0;
    return 1;
}

/* Strict JSON string: escapes \" \\ \/ \b \f \n \r \t \uXXXX, no raw control characters.
 * \u escapes are kept as '?' (the tests compare ASCII names). */
static int j_string(const char **p, char **out) {
    if (**p != '"') return -1;
    (*p)++;
    Buf b = {0};
    for (;;) {
        unsigned char c = (unsigned char)**p;
        if (c == 0 || c < 0x20) {
            buf_free(&b);
            return -1;
        }
        (*p)++;
        if (c == '"') break;
        if (c == '\\') {
            char e = **p;
            (*p)++;
            char o;
            switch (e) {
            case '"': o = '"'; break;
            case '\\': o = '\\'; break;
            case '/': o = '/'; break;
            case 'b': o = '\b'; break;
            case 'f': o = '\f'; break;
            case 'n': o = '\n'; break;
            case 'r': o = '\r'; break;
            case 't': o = '\t'; break;
            case 'u':
                if (!j_hex4(*p)) {
                    buf_free(&b);
                    return -1;
                }
                *p += 4;
                o = '?';
                break;
            default: buf_free(&b); return -1;
            }
            buf_put(&b, &o, 1);
        } else {
            char o = (char)c;
            buf_put(&b, &o, 1);
        }
    }
    buf_put(&b, "", 1);
    *out = b.data;
    return 0;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? ; NaN and Infinity are not JSON. */
static int j_number(const char **p, double *out) {
    const char *s = *p, *q = s;
    if (*q == '-') q++;
    if (*q == '0')
        q++;
    else if (*q >= '1' && *q <= '9')
        while (*q >= '0' && *q <= '9') q++;
    else
        return -1;
    if (*q == '.') {
        q++;
        if (!(*q >= '0' && *q <= '9')) return -1;
        while (*q >= '0' && *q <= '9') q++;
    }
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-') q++;
        if (!(*q >= '0' && *q <= '9')) return -1;
        while (*q >= '0' && *q <= '9') q++;
    }
    *out = strtod(s, NULL);
    *p = q;
    return 0;
}

static int j_value(const char **p, JVal *v, int depth);
static void json_free(JVal *v);

static void j_push(JVal *v, const JVal *item, char *key) {
    v->items = realloc(v->items, sizeof(JVal) * (size_t)(v->n + 1));
    v->items[v->n] = *item;
    if (v->type == J_OBJ) {
        v->keys = realloc(v->keys, sizeof(char *) * (size_t)(v->n + 1));
        v->keys[v->n] = key;
    }
    v->n++;
}

static int j_value(const char **p, JVal *v, int depth) {
    memset(v, 0, sizeof *v);
    if (depth > 64) return -1;
    j_ws(p);
    char c = **p;
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        v->type = c == '{' ? J_OBJ : J_ARR;
        (*p)++;
        j_ws(p);
        if (**p == close) {
            (*p)++;
            return 0;
        }
        for (;;) {
            char *key = NULL;
            j_ws(p);
            if (v->type == J_OBJ) {
                if (j_string(p, &key)) return -1;
                j_ws(p);
                if (**p != ':') {
                    free(key);
                    return -1;
                }
                (*p)++;
            }
            JVal item;
            if (j_value(p, &item, depth + 1)) {
                free(key);
                json_free(&item);
                return -1;
            }
            j_push(v, &item, key);
            j_ws(p);
            if (**p == ',') {
                (*p)++;
                continue;
            }
            if (**p == close) {
                (*p)++;
                return 0;
            }
            return -1;
        }
    }
    if (c == '"') {
        v->type = J_STR;
        return j_string(p, &v->str);
    }
    if (!strncmp(*p, "true", 4)) {
        v->type = J_BOOL;
        v->num = 1;
        *p += 4;
        return 0;
    }
    if (!strncmp(*p, "false", 5)) {
        v->type = J_BOOL;
        *p += 5;
        return 0;
    }
    if (!strncmp(*p, "null", 4)) {
        v->type = J_NULL;
        *p += 4;
        return 0;
    }
    v->type = J_NUM;
    return j_number(p, &v->num);
}

/* Parse a whole document (trailing white space only). */
static int json_parse(const char *text, JVal *v) {
    const char *p = text;
    int rc = j_value(&p, v, 0);
    if (rc == 0) {
        j_ws(&p);
        rc = *p ? -1 : 0;
    }
    if (rc) json_free(v); /* a failed parse owns nothing */
    return rc;
}

static void json_free(JVal *v) {
    for (int i = 0; i < v->n; i++) {
        json_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    memset(v, 0, sizeof *v);
}

static const JVal *jget(const JVal *o, const char *key) {
    if (!o || o->type != J_OBJ) return NULL;
    for (int i = 0; i < o->n; i++)
        if (!strcmp(o->keys[i], key)) return &o->items[i];
    return NULL;
}

static const JVal *jat(const JVal *a, int i) {
    return a && a->type == J_ARR && i >= 0 && i < a->n ? &a->items[i] : NULL;
}

static double jnum(const JVal *v) { return v && v->type == J_NUM ? v->num : NAN; }
static const char *jstr(const JVal *v) { return v && v->type == J_STR ? v->str : ""; }

/* Array of integers equal to want[n]. */
static int jints_equal(const JVal *a, const int *want, int n) {
    if (!a || a->type != J_ARR || a->n != n) return 0;
    for (int i = 0; i < n; i++)
        if (a->items[i].type != J_NUM || a->items[i].num != want[i]) return 0;
    return 1;
}

/* The element of a top-level array whose "path" ends with name. */
static const JVal *by_path(const JVal *arr, const char *name) {
    for (int i = 0; arr && arr->type == J_ARR && i < arr->n; i++) {
        const char *p = jstr(jget(&arr->items[i], "path"));
        size_t lp = strlen(p), ln = strlen(name);
        if (lp >= ln && !strcmp(p + lp - ln, name) && (lp == ln || p[lp - ln - 1] == '/'))
            return &arr->items[i];
    }
    return NULL;
}

static void test_json_parser(void) {
    JVal v;
    CHECK(json_parse("{\"a\": [1, -2.5e3, true, null, \"x\\n\\u00e9\"], \"b\": {}}", &v) == 0);
    CHECK(jnum(jat(jget(&v, "a"), 1)) == -2500);
    CHECK(!strcmp(jstr(jat(jget(&v, "a"), 4)), "x\n?"));
    json_free(&v);
    const char *bad[] = {"[1,]",  "{\"a\" 1}",    "[NaN]", "[01]", "[1.]",     "\"a\tb\"",
                         "[1] x", "{\"a\": inf}", "[",     "",     "[\"\\q\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = json_parse(bad[i], &v);
        CHECK_MSG(rc != 0, "accepted invalid JSON %s", bad[i]);
        if (rc == 0) json_free(&v);
    }
}

/* ------------------------------------------------------------------ fixtures */

static void set_all(Param *p, float v) {
    for (int64_t i = 0; i < p->numel; i++) p->data[i] = v;
}

static int ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && !strcmp(s + ls - lx, suffix);
}

/* The constructed network described at the top. */
static Net *make_colour_net(void) {
    Net *net = resnet_create("cifar_resnet20", 3, NULL, 1);
    if (!net) return NULL;
    for (int i = 0; i < net->n_params; i++) {
        Param *p = &net->params[i];
        int is_bn = strstr(p->name, "bn") != NULL;
        set_all(p, is_bn && (ends_with(p->name, ".weight") || ends_with(p->name, ".running_var"))
                       ? 1.0f
                       : 0.0f);
    }
    Param *conv1 = net_find_param(net, "conv1.weight"); /* [16, 3, 3, 3] */
    Param *fc = net_find_param(net, "linear.weight");   /* [3, 64] */
    if (!conv1 || !fc) return NULL;
    for (int c = 0; c < 3; c++) {
        conv1->data[((c * 3 + c) * 3 + 1) * 3 + 1] = 1.0f;
        fc->data[c * 64 + 24 + c] = S_LOGIT;
    }
    return net;
}

/* logits of a solid colour (0..255 per channel) */
static void expected_logits(const int rgb[3], float eps, double *logit) {
    for (int c = 0; c < 3; c++) logit[c] = S_LOGIT * (rgb[c] / 255.0) / sqrt(1.0 + eps);
}

static void softmax3(const double *z, double *p) {
    double m = fmax(z[0], fmax(z[1], z[2])), s = 0;
    for (int c = 0; c < 3; c++) s += p[c] = exp(z[c] - m);
    for (int c = 0; c < 3; c++) p[c] /= s;
}

static const int RED[3] = {255, 0, 0}, GREEN[3] = {0, 255, 0}, BLUE[3] = {0, 0, 255};

/* w x h image, the columns x < split get colour a, the others colour b. */
static int write_png(const char *name, int w, int h, int split, const int *a, const int *b) {
    Image img = {w, h, malloc((size_t)w * h * 3)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                img.rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)(x < split ? a[c] : b[c]);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    int rc = image_write_png(path, &img);
    free(img.rgb);
    return rc;
}

static float model_eps;
static int fixtures_ok;

static void make_fixtures(void) {
    Net *net = make_colour_net();
    CHECK(net != NULL);
    if (!net) return;
    model_eps = 0;
    for (int i = 0; i < net->n_nodes; i++)
        if (net->nodes[i].op == OP_BN) model_eps = net->nodes[i].eps;
    /* the construction itself: a solid red 32x32 input gives the closed-form logits */
    CHECK(net_plan(net, 1, 32, 32, 0) == 0);
    float x[3 * 32 * 32];
    for (int i = 0; i < 3 * 32 * 32; i++) x[i] = i < 32 * 32 ? 1.0f : 0.0f;
    const float *logits = net_forward(net, x, 1, 0);
    double want[3];
    expected_logits(RED, model_eps, want);
    for (int c = 0; c < 3; c++) CHECK_CLOSE(logits[c], want[c], 1e-5);

    char *names[3] = {"red", "green", "blue"};
    ModelInfo info;
    memset(&info, 0, sizeof info);
    snprintf(info.arch, sizeof info.arch, "cifar_resnet20");
    info.num_classes = 3;
    info.class_names = names;
    info.head.type = HEAD_LINEAR;
    info.prep.kind = PREP_UNIT;
    info.prep.size = 32;
    info.prep.crop_pct = 1.0f;
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    CHECK(model_save(path, net, &info) == 0);
    snprintf(path, sizeof path, "%s/bare.safetensors", tmp);
    CHECK(net_save_weights(net, path, NULL, NULL, 0) == 0);
    net_free(net);

    CHECK(write_png("red.png", 32, 32, 32, RED, RED) == 0);
    CHECK(write_png("comp.png", 96, 32, 64, RED, GREEN) == 0);    /* windows: red red green */
    CHECK(write_png("odd.png", 100, 70, 100, BLUE, BLUE) == 0);   /* 100, 70: not multiples */
    CHECK(write_png("small.png", 20, 10, 20, GREEN, GREEN) == 0); /* smaller than a window */
    snprintf(path, sizeof path, "%s/broken.png", tmp);
    CHECK(write_file_atomic(path, "\x89PNG\r\n\x1a\nnot really a png",
                            sizeof "\x89PNG\r\n\x1a\nnot really a png" - 1) == 0);
    /* labelled folder: 4 right, blue/e.png is red so it is misclassified as red */
    const char *dirs[3] = {"eval/red", "eval/green", "eval/blue"};
    for (int d = 0; d < 3; d++) {
        snprintf(path, sizeof path, "%s/%s", tmp, dirs[d]);
        CHECK(mkdir_p(path) == 0);
    }
    CHECK(write_png("eval/red/a.png", 32, 32, 32, RED, RED) == 0);
    CHECK(write_png("eval/red/b.png", 40, 36, 40, RED, RED) == 0);
    CHECK(write_png("eval/green/c.png", 32, 32, 32, GREEN, GREEN) == 0);
    CHECK(write_png("eval/blue/d.png", 32, 32, 32, BLUE, BLUE) == 0);
    CHECK(write_png("eval/blue/e.png", 32, 32, 32, RED, RED) == 0);
    fixtures_ok = !test_case_failed;
}

/* Run "infer ARGS" in tmp; stdout returned (caller frees), stderr kept in tmp/stderr.txt.
 * Through sh, or cmd.exe on Windows. */
static char *run_infer(const char *args, int *status) {
    char cmd[4096];
#ifdef _WIN32
    _putenv("OMP_NUM_THREADS=2");
    snprintf(cmd, sizeof cmd, "cd /d \"%s\" && \"%s" RN_EXE_SUFFIX "\" %s 2> stderr.txt", tmp,
             infer_bin, args);
    FILE *p = _popen(cmd, "rb");
#else
    /* RUNNER (tests/run.sh): the emulator a cross-built infer runs under */
    const char *runner = getenv("RUNNER");
    snprintf(cmd, sizeof cmd, "cd '%s' && OMP_NUM_THREADS=2 %s '%s' %s 2> stderr.txt", tmp,
             runner ? runner : "", infer_bin, args);
    FILE *p = popen(cmd, "r");
#endif
    if (!p) {
        *status = -1;
        return NULL;
    }
    Buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, p)) > 0) buf_put(&b, chunk, n);
    buf_put(&b, "", 1);
#ifdef _WIN32
    *status = _pclose(p);
#else
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
#endif
    return b.data;
}

static char *read_text(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    size_t len;
    uint8_t *d = read_file(path, &len);
    if (!d) return NULL;
    char *s = malloc(len + 1);
    memcpy(s, d, len);
    s[len] = 0;
    free(d);
    return s;
}

static int count_lines_with(const char *text, const char *needle) {
    int n = 0;
    for (const char *l = text; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        char line[2048];
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), l);
        if (strstr(line, needle)) n++;
        l = e ? e + 1 : l + len;
    }
    return n;
}

/* ------------------------------------------------------------------ tests */

static void test_patch_geometry(void) {
    if (!fixtures_ok) SKIP("fixtures failed");
    struct {
        const char *args;
        const char *img;
        int w, h;
        double scale;
        int nx, x[6], ny, y[6];
    } cases[] = {
        /* exact fit: one window */
        {"--patches 32 --stride 32", "red.png", 32, 32, 1, 1, {0}, 1, {0}},
        /* 100 = 3*32 + 4 and 70 = 2*32 + 6: a last window aligned with the edge */
        {"--patches 32 --stride 32", "odd.png", 100, 70, 1, 4, {0, 32, 64, 68}, 3, {0, 32, 38}},
        /* stride not dividing the extent minus the window */
        {"--patches 32 --stride 20", "odd.png", 100, 70, 1, 5, {0, 20, 40, 60, 68}, 3, {0, 20, 38}},
        /* stride above the window: gaps, but the edge is still reached */
        {"--patches 32 --stride 48", "odd.png", 100, 70, 1, 3, {0, 48, 68}, 2, {0, 38}},
        /* 20x10 smaller than the window: upscaled 3.2x to 64x32 */
        {"--patches 32 --stride 32", "small.png", 20, 10, 3.2, 2, {0, 32}, 1, {0}},
        /* stride 16 on the upscaled 64x32 */
        {"--patches 32 --stride 16", "small.png", 20, 10, 3.2, 3, {0, 16, 32}, 1, {0}},
    };
    for (size_t t = 0; t < sizeof cases / sizeof *cases; t++) {
        char args[512];
        snprintf(args, sizeof args, "--model model.safetensors %s --json --out pics %s",
                 cases[t].args, cases[t].img);
        int st;
        char *out = run_infer(args, &st);
        JVal v;
        int parsed = out && json_parse(out, &v) == 0;
        CHECK_MSG(st == 0 && parsed, "%s: status %d, output %s", args, st, out ? out : "(none)");
        if (parsed) {
            const JVal *im = jat(&v, 0), *g = jget(im, "grid");
            CHECK(v.n == 1);
            CHECK(jnum(jget(im, "width")) == cases[t].w && jnum(jget(im, "height")) == cases[t].h);
            CHECK_CLOSE(jnum(jget(im, "scale")), cases[t].scale, 1e-6);
            CHECK_MSG(jints_equal(jget(g, "x"), cases[t].x, cases[t].nx), "%s: x origins", args);
            CHECK_MSG(jints_equal(jget(g, "y"), cases[t].y, cases[t].ny), "%s: y origins", args);
            CHECK(jnum(jget(g, "cols")) == cases[t].nx && jnum(jget(g, "rows")) == cases[t].ny);
            const JVal *cls = jget(g, "classes");
            CHECK(cls && cls->type == J_ARR && cls->n == cases[t].ny);
            for (int r = 0; cls && r < cls->n; r++) CHECK(jat(cls, r)->n == cases[t].nx);
            json_free(&v);
        }
        free(out);
    }
}

/* composite red | red | green: shares of the summed softmax mass in closed form */
static void test_major_secondary(void) {
    if (!fixtures_ok) SKIP("fixtures failed");
    double zr[3], zg[3], pr[3], pg[3], share[3];
    expected_logits(RED, model_eps, zr);
    expected_logits(GREEN, model_eps, zg);
    softmax3(zr, pr);
    softmax3(zg, pg);
    for (int c = 0; c < 3; c++) share[c] = (2 * pr[c] + pg[c]) / 3;
    /* threshold -> expected secondary classes (green ~0.33, blue ~0.018) */
    struct {
        const char *thr;
        int n_sec;
    } cases[] = {{"", 1}, {"--secondary-threshold 0.01", 2}, {"--secondary-threshold 0.4", 0}};
    for (size_t t = 0; t < 3; t++) {
        char args[512];
        snprintf(args, sizeof args,
                 "--model model.safetensors --patches 32 --stride 32 %s --json --out pics comp.png",
                 cases[t].thr);
        int st;
        char *out = run_infer(args, &st);
        JVal v;
        int parsed = out && json_parse(out, &v) == 0;
        CHECK_MSG(st == 0 && parsed, "%s: status %d", args, st);
        if (!parsed) {
            free(out);
            continue;
        }
        const JVal *im = jat(&v, 0), *sec = jget(im, "secondary");
        CHECK(!strcmp(jstr(jget(im, "major")), "red"));
        CHECK_CLOSE(jnum(jget(im, "major_share")), share[0], 1e-4);
        CHECK_MSG(sec && sec->type == J_ARR && sec->n == cases[t].n_sec, "%s: %d secondary", args,
                  sec ? sec->n : -1);
        if (sec && sec->n >= 1) {
            CHECK(!strcmp(jstr(jget(jat(sec, 0), "class")), "green"));
            CHECK_CLOSE(jnum(jget(jat(sec, 0), "share")), share[1], 1e-4);
        }
        if (sec && sec->n >= 2) {
            CHECK(!strcmp(jstr(jget(jat(sec, 1), "class")), "blue"));
            CHECK_CLOSE(jnum(jget(jat(sec, 1), "share")), share[2], 1e-4);
        }
        const JVal *g = jget(im, "grid"), *row = jat(jget(g, "classes"), 0),
                   *prow = jat(jget(g, "probs"), 0);
        const char *want[3] = {"red", "red", "green"};
        for (int c = 0; c < 3; c++) {
            CHECK(!strcmp(jstr(jat(row, c)), want[c]));
            CHECK_CLOSE(jnum(jat(prow, c)), c < 2 ? pr[0] : pg[1], 1e-3);
        }
        json_free(&v);
        free(out);
    }
    /* CSV: one major and one secondary row, 4 columns each */
    int st;
    char *out = run_infer("--model model.safetensors --patches 32 --csv --out pics comp.png", &st);
    CHECK(st == 0 && out);
    CHECK(out && !strncmp(out, "path,role,class,share\n", 22));
    CHECK(count_lines_with(out, ",major,red,") == 1 &&
          count_lines_with(out, ",secondary,green,") == 1);
    for (const char *l = out ? out : ""; *l; l = strchr(l, '\n') + 1) {
        int commas = 0;
        for (const char *c = l; *c && *c != '\n'; c++) commas += *c == ',';
        CHECK(commas == 3);
        if (!strchr(l, '\n')) break;
    }
    free(out);
    /* table: major and secondary lines */
    out = run_infer("--model model.safetensors --patches 32 --out pics comp.png", &st);
    CHECK(st == 0 && out && strstr(out, "major      red") && strstr(out, "secondary  green"));
    free(out);
}

/* the grid picture: the image tinted with the class colours, legend below */
static void test_patch_picture(void) {
    if (!fixtures_ok) SKIP("fixtures failed");
    int st;
    char *out = run_infer("--model model.safetensors --patches 32 --out pics comp.png", &st);
    free(out);
    CHECK(st == 0);
    char path[512], why[256];
    snprintf(path, sizeof path, "%s/pics/comp.patches.png", tmp);
    Image img = {0};
    CHECK(image_decode_file(path, &img, why, sizeof why) == 0);
    if (!img.rgb) return;
    CHECK(img.w >= 96 && img.h > 32 + 40); /* image plus a two-entry legend */
    /* cell colour = (1 - t) * pixel + t * class colour, t = 0.1 + 0.6 * (p - 1/3) / (2/3)
     * for the cell's probability p (Tableau: red class 0 = blue-ish (31,119,180), green
     * class 1 = orange (255,127,14)); the old fixed t = 0.45 is 0.22 off here */
    double zr[3], zg[3], pr[3], pg[3];
    expected_logits(RED, model_eps, zr);
    expected_logits(GREEN, model_eps, zg);
    softmax3(zr, pr);
    softmax3(zg, pg);
    double ta = 0.1 + 0.6 * (pr[0] - 1.0 / 3) * 1.5, tb = 0.1 + 0.6 * (pg[1] - 1.0 / 3) * 1.5;
    const double red[3] = {255, 0, 0}, green[3] = {0, 255, 0}, col_a[3] = {31, 119, 180},
                 col_b[3] = {255, 127, 14};
    const uint8_t *a = img.rgb + ((size_t)10 * img.w + 10) * 3,
                  *b = img.rgb + ((size_t)10 * img.w + 85) * 3;
    int want_a[3], want_b[3];
    for (int c = 0; c < 3; c++) {
        want_a[c] = (int)lround((1 - ta) * red[c] + ta * col_a[c]);
        want_b[c] = (int)lround((1 - tb) * green[c] + tb * col_b[c]);
    }
    for (int c = 0; c < 3; c++) {
        CHECK_MSG(abs(a[c] - want_a[c]) <= 2, "red cell channel %d = %d", c, a[c]);
        CHECK_MSG(abs(b[c] - want_b[c]) <= 2, "green cell channel %d = %d", c, b[c]);
    }
    /* legend swatches: the major class colour at the first entry */
    const uint8_t *sw = img.rgb + ((size_t)(32 + 8 + 8) * img.w + 16) * 3;
    CHECK(sw[0] == 31 && sw[1] == 119 && sw[2] == 180);
    image_free(&img);
}

/* whole-image classification: JSON, CSV, table, a broken input, .npy outputs */
static void test_classify_formats(void) {
    if (!fixtures_ok) SKIP("fixtures failed");
    double zr[3], zg[3], pr[3], pg[3];
    expected_logits(RED, model_eps, zr);
    expected_logits(GREEN, model_eps, zg);
    softmax3(zr, pr);
    softmax3(zg, pg);
    int st;
    char *out =
        run_infer("--model model.safetensors --json --topk 2 --save-logits logits.npy "
                  "--save-features feats.npy red.png broken.png small.png missing.png comp.png",
                  &st);
    CHECK_MSG(st == 1, "status %d with broken inputs", st);
    JVal v;
    int parsed = out && json_parse(out, &v) == 0;
    CHECK_MSG(parsed, "JSON: %s", out ? out : "(none)");
    if (parsed) {
        CHECK(v.n == 3);
        const JVal *r = by_path(&v, "red.png"), *s = by_path(&v, "small.png");
        CHECK(r && s && by_path(&v, "comp.png") && !by_path(&v, "broken.png"));
        CHECK(jat(jget(r, "top"), 1) && !jat(jget(r, "top"), 2)); /* --topk 2 */
        CHECK(!strcmp(jstr(jget(jat(jget(r, "top"), 0), "class")), "red"));
        CHECK_CLOSE(jnum(jget(jat(jget(r, "top"), 0), "prob")), pr[0], 1e-5);
        CHECK(!strcmp(jstr(jget(jat(jget(s, "top"), 0), "class")), "green"));
        CHECK_CLOSE(jnum(jget(jat(jget(s, "top"), 0), "prob")), pg[1], 1e-5);
        json_free(&v);
    }
    free(out);
    /* each failure one line naming the file */
    char *err = read_text("stderr.txt");
    CHECK(err && count_lines_with(err, "broken.png") == 1 &&
          count_lines_with(err, "missing.png") == 1);
    free(err);

    /* logits.npy: header, shape [3, 3] in input order (red, small, comp) */
    size_t len;
    char path[512];
    snprintf(path, sizeof path, "%s/logits.npy", tmp);
    uint8_t *npy = read_file(path, &len);
    CHECK(npy && len > 10 && !memcmp(npy, "\x93NUMPY\x01\x00", 8));
    if (npy && len > 10) {
        int hl = npy[8] | npy[9] << 8;
        CHECK((10 + hl) % 64 == 0 && (size_t)(10 + hl) + 9 * 4 == len);
        char header[256];
        snprintf(header, sizeof header, "%.*s", hl < 255 ? hl : 255, (const char *)npy + 10);
        CHECK(strstr(header, "'descr': '<f4'") && strstr(header, "'fortran_order': False") &&
              strstr(header, "'shape': (3, 3)"));
        float l[9];
        rn_le_load(l, npy + 10 + hl, 9, sizeof *l); /* '<f4' on any host */
        /* comp.png (96x32) is center-cropped to its red middle third... resized shorter
         * side 32 -> 96x32, crop x 32..63: red */
        for (int c = 0; c < 3; c++) {
            CHECK_CLOSE(l[c], zr[c], 1e-4);
            CHECK_CLOSE(l[3 + c], zg[c], 1e-4);
            CHECK_CLOSE(l[6 + c], zr[c], 1e-4);
        }
    }
    free(npy);
    snprintf(path, sizeof path, "%s/feats.npy", tmp);
    npy = read_file(path, &len);
    CHECK(npy && len > 10);
    if (npy && len > 10) {
        int hl = npy[8] | npy[9] << 8;
        char header[256];
        snprintf(header, sizeof header, "%.*s", hl < 255 ? hl : 255, (const char *)npy + 10);
        CHECK(strstr(header, "'shape': (3, 64)") && (size_t)(10 + hl) + 3 * 64 * 4 == len);
        float f[64];
        rn_le_load(f, npy + 10 + hl + 64 * 4, 64, sizeof *f); /* small.png: green */
        for (int c = 0; c < 64; c++) CHECK_CLOSE(f[c], c == 25 ? 1 / sqrt(1 + model_eps) : 0, 1e-5);
    }
    free(npy);

    /* CSV: header and 5 columns, topk rows per image */
    out = run_infer("--model model.safetensors --csv --topk 3 red.png small.png", &st);
    CHECK(st == 0 && out && !strncmp(out, "path,rank,class,index,prob\n", 27));
    int rows = 0;
    for (const char *l = out ? out : ""; *l;) {
        int commas = 0;
        for (const char *c = l; *c && *c != '\n'; c++) commas += *c == ',';
        CHECK(commas == 4);
        rows++;
        const char *e = strchr(l, '\n');
        if (!e) break;
        l = e + 1;
    }
    CHECK(rows == 1 + 2 * 3);
    CHECK(out && strstr(out, "red.png,1,red,0,") && strstr(out, "small.png,1,green,1,"));
    free(out);

    /* table: header then one row per image, class columns aligned with the header */
    out = run_infer("--model model.safetensors --topk 2 red.png small.png", &st);
    CHECK(st == 0 && out && !strncmp(out, "image", 5));
    if (out) {
        const char *h = strstr(out, "top-1");
        int col = h ? (int)(h - out) : -1;
        const char *r1 = strchr(out, '\n') + 1, *r2 = r1 ? strchr(r1, '\n') + 1 : NULL;
        CHECK(col > 0 && r2 && !strncmp(r1 + col, "red", 3) && !strncmp(r2 + col, "green", 5));
        CHECK(count_lines_with(out, ".png") == 2);
    }
    free(out);

    /* a bare backbone: --arch/--weights, classes by index */
    out = run_infer("--arch cifar_resnet20 --weights bare.safetensors --preprocess unit --crop-pct "
                    "1 --json red.png",
                    &st);
    CHECK(st == 0 && out);
    if (out && json_parse(out, &v) == 0) {
        CHECK(!strcmp(jstr(jget(jat(jget(jat(&v, 0), "top"), 0), "class")), "class_0"));
        CHECK_CLOSE(jnum(jget(jat(jget(jat(&v, 0), "top"), 0), "prob")), pr[0], 1e-5);
        json_free(&v);
    } else
        CHECK(0);
    free(out);

    /* patches: a broken input fails, the others are still reported */
    out = run_infer("--model model.safetensors --patches 32 --json --out pics broken.png red.png",
                    &st);
    CHECK(st == 1);
    if (out && json_parse(out, &v) == 0) {
        CHECK(v.n == 1 && by_path(&v, "red.png"));
        json_free(&v);
    } else
        CHECK(0);
    free(out);
    /* usage errors: status 2 */
    out = run_infer("--model model.safetensors --patches 32 --save-logits x.npy red.png", &st);
    CHECK(st == 2);
    free(out);
    out = run_infer("--model model.safetensors --eval . --csv", &st);
    CHECK(st == 2);
    free(out);
    /* a model that cannot be loaded: the job failed (1), not a usage error */
    out = run_infer("--model nothere.safetensors red.png", &st);
    CHECK(st == 1);
    free(out);
    out = run_infer("--model model.safetensors --winograd 2 red.png", &st);
    CHECK(st == 2);
    free(out);
    /* the GEMM path for 3x3 convs: the same classes */
    out = run_infer("--model model.safetensors --winograd 0 --csv --topk 1 red.png small.png", &st);
    CHECK(st == 0 && out && strstr(out, "red.png,1,red,") && strstr(out, "small.png,1,green,"));
    free(out);
}

/* a bare 1000-class backbone gets the ImageNet class names built into infer, with no
 * $SHARED at hand */
static void test_imagenet_names(void) {
    if (!fixtures_ok) SKIP("fixtures failed");
    char path[1200], args[256];
    const char *first = "tench, Tinca tinca";
    /* cifar_resnet20 with a 1000-way linear layer that always prefers class 0 */
    Net *net = resnet_create("cifar_resnet20", 1000, NULL, 2);
    CHECK(net != NULL);
    if (!net) return;
    Param *b = net_find_param(net, "linear.bias"), *w = net_find_param(net, "linear.weight");
    set_all(w, 0);
    set_all(b, 0);
    b->data[0] = 10;
    snprintf(path, sizeof path, "%s/bare1000.safetensors", tmp);
    CHECK(net_save_weights(net, path, NULL, NULL, 0) == 0);
    net_free(net);
    snprintf(args, sizeof args,
             "--arch cifar_resnet20 --weights bare1000.safetensors --json --topk 1 red.png");
#ifdef _WIN32
    _putenv("SHARED=nowhere");
#else
    setenv("SHARED", "nowhere", 1);
#endif
    int st;
    char *out = run_infer(args, &st);
    JVal v;
    int parsed = st == 0 && out && json_parse(out, &v) == 0;
    CHECK(parsed);
    if (parsed) {
        CHECK_MSG(!strcmp(jstr(jget(jat(jget(jat(&v, 0), "top"), 0), "class")), first),
                  "class 0 is '%s', expected '%s'",
                  jstr(jget(jat(jget(jat(&v, 0), "top"), 0), "class")), first);
        json_free(&v);
    }
    free(out);
}

static void test_eval(void) {
    if (!fixtures_ok) SKIP("fixtures failed");
    int st;
    char *out = run_infer("--model model.safetensors --eval eval --out evalout", &st);
    CHECK_MSG(st == 0, "status %d", st);
    CHECK(out && strstr(out, "eval/blue/e.png: blue -> red"));
    CHECK(out && count_lines_with(out, "->") == 2); /* header line + one misclassified */
    free(out);
    char *js = read_text("evalout/metrics.json");
    JVal v;
    int parsed = js && json_parse(js, &v) == 0;
    CHECK(parsed);
    if (parsed) {
        const JVal *t = jget(&v, "test");
        CHECK_CLOSE(jnum(jget(t, "accuracy")), 0.8, 1e-9);
        /* confusion [[2,0,0],[0,1,0],[0,0,1]] in the order of the model's classes
         * red, green, blue ... blue/e.png is true blue, predicted red */
        const JVal *cm = jget(t, "confusion_matrix");
        int want[3][3] = {{2, 0, 0}, {0, 1, 0}, {1, 0, 1}};
        for (int i = 0; i < 3; i++) CHECK(jints_equal(jat(cm, i), want[i], 3));
        json_free(&v);
    }
    free(js);
    char *html = read_text("evalout/report.html");
    CHECK(html && strstr(html, "e.png"));
    free(html);
}

/* The logits of an .npy written by --save-logits: count floats into out. */
static int read_logits(const char *name, float *out, int count) {
    char path[512];
    size_t len;
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    uint8_t *npy = read_file(path, &len);
    if (!npy || len < 10) {
        free(npy);
        return -1;
    }
    size_t at = 10 + (size_t)(npy[8] | npy[9] << 8);
    int ok = at + (size_t)count * 4 == len;
    if (ok) rn_le_load(out, npy + at, (size_t)count, 4); /* .npy '<f4': little-endian */
    free(npy);
    return ok ? 0 : -1;
}

/* infer --reference (naive kernels, layer by layer) and the default fast path agree on a
 * ResNet-50 and a CIFAR ResNet (random weights, random batch-norm statistics) within 1e-4
 * of the largest logit; --dump-nodes writes every node of the first batch. */
static void test_reference_and_dump(void) {
    if (!fixtures_ok) SKIP("fixtures failed");
    const char *archs[2] = {"resnet50", "cifar_resnet20"};
    for (int a = 0; a < 2; a++) {
        Net *net = resnet_create(archs[a], 7, NULL, 3 + a);
        CHECK(net != NULL);
        if (!net) return;
        Rng r;
        rng_seed(&r, 5);
        for (int i = 0; i < net->n_params; i++) {
            Param *p = &net->params[i];
            if (p->ndim != 1) continue;
            int var = strstr(p->name, "running_var") != NULL,
                mean = strstr(p->name, "running_mean") != NULL;
            for (int64_t k = 0; k < p->numel; k++)
                p->data[k] = var    ? 0.5f + rng_uniform(&r)
                             : mean ? 0.2f * (rng_uniform(&r) - 0.5f)
                                    : p->data[k];
        }
        char path[512], args[512];
        snprintf(path, sizeof path, "%s/ref_%s.safetensors", tmp, archs[a]);
        CHECK(net_save_weights(net, path, NULL, NULL, 0) == 0);
        int n_nodes = net->n_nodes;
        net_free(net);
        float fast[3 * 7], ref[3 * 7];
        int st;
        const char *common = "--img-size 64 --crop-pct 1 --batch 2 red.png small.png comp.png";
        snprintf(args, sizeof args,
                 "--arch %s --weights ref_%s.safetensors --save-logits fast.npy "
                 "--dump-nodes dump.safetensors %s",
                 archs[a], archs[a], common);
        free(run_infer(args, &st));
        CHECK_MSG(st == 0, "%s: %s", archs[a], args);
        snprintf(args, sizeof args,
                 "--arch %s --weights ref_%s.safetensors --reference "
                 "--save-logits ref.npy %s",
                 archs[a], archs[a], common);
        free(run_infer(args, &st));
        CHECK_MSG(st == 0, "%s: %s", archs[a], args);
        CHECK(read_logits("fast.npy", fast, 21) == 0 && read_logits("ref.npy", ref, 21) == 0);
        double e = 0, m = 0;
        for (int i = 0; i < 21; i++) {
            if (fabs(ref[i]) > m) m = fabs(ref[i]);
            if (fabs(fast[i] - ref[i]) > e) e = fabs(fast[i] - ref[i]);
        }
        printf("     %s: --reference vs default, logits differ by %.2g of the largest\n", archs[a],
               e / m);
        CHECK(m > 0 && e <= 1e-4 * m);
        StFile f;
        snprintf(path, sizeof path, "%s/dump.safetensors", tmp);
        CHECK(st_open(path, &f) == 0);
        CHECK(f.n_tensors == n_nodes && st_find(&f, "layer1.0.conv1") && st_find(&f, "input"));
        const StTensor *t = st_find(&f, "input");
        CHECK(t && t->shape[0] == 2 && t->shape[2] == 64); /* the first batch */
        st_close(&f);
    }
}

int main(void) {
    const char *bin = getenv("BIN");
    if (!bin || !*bin) bin = ".";
    char cwd[256] = ".";
    if (bin[0] != '/' && !getcwd(cwd, sizeof cwd))
        snprintf(cwd, sizeof cwd, "."); /* commands run inside tmp */
    snprintf(infer_bin, sizeof infer_bin, "%s%s%.700s/infer", bin[0] == '/' ? "" : cwd,
             bin[0] == '/' ? "" : "/", bin);
    if (test_temp_dir(tmp, sizeof tmp, "test_infer") != 0) {
        fprintf(stderr, "%s\n", rn_error());
        return 1;
    }
    struct stat st;
    RUN(test_json_parser);
    RUN(make_fixtures);
    char infer_file[1100];
    snprintf(infer_file, sizeof infer_file, "%s%s", infer_bin, RN_EXE_SUFFIX);
    if (stat(infer_file, &st) != 0) {
        fprintf(stderr, "  %s not found (build it first, or set BIN)\n", infer_bin);
        fixtures_ok = 0;
        test_cases_failed++;
    }
    RUN(test_patch_geometry);
    RUN(test_major_secondary);
    RUN(test_patch_picture);
    RUN(test_classify_formats);
    RUN(test_imagenet_names);
    RUN(test_eval);
    RUN(test_reference_and_dump);
    if (!test_cases_failed) {
        char cmd[512];
#ifdef _WIN32
        snprintf(cmd, sizeof cmd, "rmdir /s /q \"%s\"", tmp);
#else
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
#endif
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    } else
        fprintf(stderr, "files kept in %s\n", tmp);
    return test_summary();
}
