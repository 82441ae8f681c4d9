/* infer.c - classify images, evaluate a labelled folder, or look inside images patch by patch.
 *
 *   ./infer --model RUN/model.safetensors IMAGE_OR_DIR...
 *   ./infer --arch resnet50 --weights W.safetensors [--crop-pct 1] IMAGE_OR_DIR...
 *   ./infer --model M --eval DIR --out OUT/
 *   ./infer --model M --patches 224 --stride 112 --out OUT/ IMAGE...
 *
 * Exit status: 0 when every input succeeded, 1 when the job or some input failed (after all
 * others were processed, each failure reported in one line), 2 on a usage error (cli.h).
 */
#include "cli.h"
#include "platform.h"
#include "resnet.h"
#include "dist.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <stb_easy_font.h>

typedef enum { OUT_TABLE, OUT_JSON, OUT_CSV } OutFormat;

#define MAX_WINDOWS (1 << 20) /* patch windows per image */

typedef struct {
    const char *model, *arch, *weights, *labels, *eval_dir, *out_dir;
    const char *save_logits, *save_features, *preprocess;
    int img_size, batch, topk, threads, patch, stride, winograd, reference, info, json, csv;
    const char *dump_nodes;
    float crop_pct, secondary_threshold;
    OutFormat format;
    const char **inputs;
    int n_inputs;
} Options;

static Options O;

/* One row per option (cli.h): parsing, ranges, defaults and --help. */
static const CliOption OPTIONS[] = {
    CLI_HEADING("Model"),
    CLI_STRING("model", &O.model, "", CLI_PATH,
               "model written by train: architecture, head, classes and preprocessing come "
               "from the file"),
    CLI_STRING("arch", &O.arch, "", 0, "a bare backbone, one of --list-archs (with --weights)"),
    CLI_STRING("weights", &O.weights, "", CLI_PATH,
               "its weights (torchvision names; keras_resnet50: tf.keras names); the class count "
               "is read from the file's classifier weight (fc, linear, classifier.6, "
               "predictions); 1000 classes get the ImageNet names built into the program, "
               "10 with a CIFAR arch CIFAR-10's"),
    CLI_STRING("labels", &O.labels, "", CLI_PATH,
               "class names, one a line, instead of the model's (or the built-in ImageNet "
               "names, or class_<i>)"),
    CLI_SWITCH("info", &O.info, "0", 0,
               "describe the model (architecture, classes, head, preprocessing, parameters, "
               "the training run) and exit"),
    CLI_HEADING("Preprocessing (default: the model file's; for --arch the architecture's, "
                "see --list-archs)"),
    CLI_INTEGER("img-size", &O.img_size, "0", 16, RN_MAX_IMAGE_SIDE, CLI_ZERO_OK,
                "network input size (0: the model's)"),
    CLI_NUMBER("crop-pct", &O.crop_pct, "0", 0.05, 1, CLI_ZERO_OK,
               "eval transform: resize shorter side to size/F, center crop (1 passes a size x "
               "size image unchanged; 0: the model's)"),
    CLI_STRING("preprocess", &O.preprocess, "", 0,
               "torchvision | caffe | unit (default: the model's)"),
    CLI_HEADING("Output"),
    CLI_INTEGER("topk", &O.topk, "5", 1, 100000, 0, "classes per image"),
    CLI_SWITCH("json", &O.json, "0", 0,
               "machine-readable output on stdout (with --eval: OUT/metrics.json)"),
    CLI_SWITCH("csv", &O.csv, "0", 0, "CSV on stdout, RFC 4180 quoting (not with --eval)"),
    CLI_STRING("save-logits", &O.save_logits, "", CLI_PATH,
               "logits [N, classes] float32 .npy, input order (failed inputs left out)"),
    CLI_STRING("save-features", &O.save_features, "", CLI_PATH,
               "pooled backbone features [N, C] float32 .npy, input order"),
    CLI_INTEGER("batch", &O.batch, "8", 1, 4096, 0, "images per forward pass"),
    CLI_INTEGER("threads", &O.threads, "0", 0, RN_MAX_THREADS, 0,
                "compute and decoding threads (0 = OMP_NUM_THREADS or all cores)"),
    CLI_SWITCH("reference", &O.reference, "0", 0,
               "run the reference network: naive kernels (conv2d_*_ref, sgemm_ref), layer by "
               "layer; slow, for checking the fast path"),
    CLI_STRING("dump-nodes", &O.dump_nodes, "", CLI_PATH,
               "F.safetensors: every node's output for the first batch of inputs, under "
               "torchvision's module names (compare: tools/compare_dump.py)"),
    CLI_INTEGER("winograd", &O.winograd, "-1", -1, 1, 0,
                "3x3 stride-1 convs by Winograd F(4x4,3x3): about 20% faster at 224 px, "
                "rounding within ~1e-6 of the direct sum; 0: im2col + GEMM, the reference's "
                "exact operations (-1: the build's default, 1 in SIMD builds)"),
    CLI_HEADING("Evaluation"),
    CLI_STRING("eval", &O.eval_dir, "", CLI_PATH,
               "labelled folder (class sub-folders named as the model's classes): "
               "classification report, misclassified files, metrics.json and report.html "
               "under --out"),
    CLI_STRING("out", &O.out_dir, "infer_out", CLI_PATH,
               "where reports and patch pictures go"),
    CLI_HEADING("Patch-based inference"),
    CLI_INTEGER("patches", &O.patch, "0", 8, RN_MAX_IMAGE_SIDE, CLI_ZERO_OK,
                "classify every SIZE x SIZE window of each image (original pixels; each window "
                "is resized to the model's input size). Windows start at 0, S, 2S, ...; when "
                "the size is not a multiple of the stride a last window is aligned with the "
                "right/bottom edge, so every pixel is covered (a stride above SIZE leaves "
                "gaps). An image smaller than SIZE is first upscaled, aspect kept, so that its "
                "shorter side equals SIZE; window origins are then in upscaled pixels (JSON "
                "\"scale\" gives the factor, 1 when none). A picture per image, "
                "OUT/<name>.patches.png, tints each window's cell in the colour of its class, "
                "with a legend. --json gives per image: major, major_share, secondary [{class, "
                "share}], grid {patch, stride, rows, cols, x, y, classes, probs}"),
    CLI_INTEGER("stride", &O.stride, "0", 1, RN_MAX_IMAGE_SIDE, CLI_ZERO_OK,
                "window step (0: SIZE)"),
    CLI_NUMBER("secondary-threshold", &O.secondary_threshold, "0.05", 0, 1, 0,
               "the major class has the largest share of the softmax mass summed over all "
               "windows; other classes whose share exceeds T are secondary"),
};

static void infer_epilog(FILE *f) {
    char known[1024];
    arch_list(known, sizeof known);
    fprintf(f, "\nArchitectures: %s\n", known);
}

static const CliProgram PROGRAM = {
    "infer",
    "usage: infer (--model M.safetensors | --arch A --weights W.safetensors) [options] "
    "IMAGE_OR_DIR...\n"
    "       infer --model M --eval DIR [--out OUT]\n"
    "       infer --model M --patches SIZE [--stride S] [--out OUT] IMAGE...\n"
    "       infer --model M --info\n",
    "Classify images, evaluate a labelled folder, or look inside images patch by patch.\n"
    "Exit status 1 also when some inputs failed (each reported in one line, the others\n"
    "processed).\n",
    OPTIONS,
    (int)(sizeof OPTIONS / sizeof OPTIONS[0]),
    "IMAGE_OR_DIR",
    infer_epilog,
};

/* "" options count as not given. */
static const char *given(const char *s) { return s && s[0] ? s : NULL; }

/* The options (cli.h) and the rules between them; CLI_* code, rn_error says what. */
static int parse_args(int argc, char **argv, Options *o) {
    cli_defaults(&PROGRAM);
    O.inputs = rn_calloc((size_t)argc + 1, sizeof *O.inputs);
    int rc = cli_parse(&PROGRAM, argc - 1, argv + 1, O.inputs, &O.n_inputs, NULL, NULL);
    *o = O;
    if (rc != CLI_OK) return rc;
    o->model = given(o->model);
    o->arch = given(o->arch);
    o->weights = given(o->weights);
    o->labels = given(o->labels);
    o->eval_dir = given(o->eval_dir);
    o->save_logits = given(o->save_logits);
    o->save_features = given(o->save_features);
    o->preprocess = given(o->preprocess);
    o->dump_nodes = given(o->dump_nodes);
    o->format = o->json ? OUT_JSON : o->csv ? OUT_CSV : OUT_TABLE;
    const char *clash = NULL;
    if (!o->model && !(o->arch && o->weights))
        clash = "give --model FILE, or --arch NAME and --weights FILE";
    else if (o->model && (o->arch || o->weights))
        clash = "--model already holds the architecture and weights; drop --arch/--weights";
    else if (o->json && o->csv)
        clash = "--json and --csv: give one of them";
    else if (o->info && (o->eval_dir || o->patch || o->n_inputs))
        clash = "--info describes the model and exits: give it without inputs, --eval or --patches";
    else if (!o->info && !o->eval_dir && o->n_inputs == 0)
        clash = "no input images or folders given";
    else if (o->eval_dir && o->patch)
        clash = "--eval and --patches are separate modes; run them one at a time";
    else if (o->eval_dir && o->csv)
        clash = "--eval writes OUT/metrics.json and OUT/report.html (--json prints the "
                "metrics); --csv applies to classifying images and --patches";
    else if (o->dump_nodes && (o->eval_dir || o->patch))
        clash = "--dump-nodes applies to classifying images, not --eval or --patches";
    else if (o->patch && (o->save_logits || o->save_features))
        clash = "--save-logits/--save-features apply to whole images, not --patches";
    else if (o->stride && !o->patch)
        clash = "--stride only applies with --patches";
    if (clash) {
        rn_set_error("%s", clash);
        return CLI_USAGE;
    }
    if (o->patch && !o->stride) o->stride = o->patch;
    return CLI_OK;
}

/* ------------------------------------------------------------------ model and class names */

static char **read_lines(const char *path, int *n_out) {
    size_t len;
    uint8_t *text = read_file(path, &len);
    if (!text) return NULL;
    int cap = 64, n = 0;
    char **lines = rn_alloc(sizeof *lines * (size_t)cap);
    char *save = NULL;
    for (char *line = strtok_r((char *)text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\r' || line[l - 1] == ' ')) line[--l] = 0;
        if (!l) continue;
        if (n == cap) lines = rn_realloc(lines, sizeof *lines * (size_t)(cap *= 2));
        lines[n++] = rn_strdup(line);
    }
    rn_free(text);
    *n_out = n;
    return lines;
}

/* The model in two steps, so that decoding can start while the weights load: load_info
 * opens the file (f) and reads what the inputs need (architecture, classes, preprocessing,
 * names), load_net builds the network from f and closes it. */

/* A bare backbone's weights: its classifier's rows are the class count. */
static int weights_info(const char *path, const char *arch, StFile *f, int *k_out) {
    if (st_open(path, f) != 0) return -1;
    char name[64];
    snprintf(name, sizeof name, "%s.weight", arch_find(arch)->classifier);
    const StTensor *t = st_find(f, name);
    if (!t || t->ndim != 2) {
        rn_set_error("%s: no 2-D classifier tensor '%s' found", path, name);
    } else if (t->shape[0] < 1 || t->shape[0] > (1 << 20)) {
        rn_set_error("%s: classifier tensor '%s' has %lld rows (classes), expected 1..%d", path,
                     name, (long long)t->shape[0], 1 << 20);
    } else {
        *k_out = (int)t->shape[0];
        return 0;
    }
    st_close(f);
    return -1;
}

/* The whole file is checked against the network before it is built (an 80-byte file
 * claiming a [1048576, 0] fc would otherwise cost 8.6 GB of resnet152). */
static Net *weights_net(const StFile *f, const char *arch, int k) {
    Net *shape = resnet_describe(arch, k, NULL);
    int bad = !shape || net_check_weights(shape, f, 0);
    net_free(shape);
    Net *net = bad ? NULL : resnet_create_for_loading(arch, k, NULL);
    if (net && net_load_weights_st(net, f, 0) != 0) {
        net_free(net);
        net = NULL;
    }
    return net;
}

static Net *load_net(const Options *o, ModelInfo *info, StFile *f) {
    Net *net = o->model ? model_load_net_st(f, info) : weights_net(f, info->arch, info->num_classes);
    st_close(f);
    return net;
}

static int load_info(const Options *o, ModelInfo *info, StFile *f) {
    memset(info, 0, sizeof *info);
    if (o->model) {
        if (st_open(o->model, f) != 0) return -1;
        if (model_read_info_st(f, info) != 0) {
            st_close(f);
            return -1;
        }
    } else {
        const ArchSpec *a = arch_find(o->arch);
        if (!a) {
            char known[1024];
            arch_list(known, sizeof known);
            rn_set_error("unknown --arch '%s' (known: %s)", o->arch, known);
            return -1;
        }
        int k = 0;
        if (weights_info(o->weights, o->arch, f, &k) != 0) return -1;
        snprintf(info->arch, sizeof info->arch, "%s", o->arch);
        info->num_classes = k;
        info->head.type = HEAD_LINEAR;
        /* the preprocessing the architecture's published weights expect */
        if (prep_parse(a->preprocess, &info->prep.kind) != 0) info->prep.kind = PREP_TORCHVISION;
        info->prep.size = a->size;
        info->prep.crop_pct = a->crop_pct;
    }
    /* command-line preprocessing overrides the defaults (and, with a warning, a model's) */
    if (o->img_size) {
        if (o->model && o->img_size != info->prep.size)
            fprintf(stderr, "infer: note: --img-size %d overrides the model's %d\n", o->img_size,
                    info->prep.size);
        info->prep.size = o->img_size;
    }
    if (o->crop_pct > 0) info->prep.crop_pct = o->crop_pct;
    if (o->preprocess) {
        PrepKind kind;
        if (prep_parse(o->preprocess, &kind) != 0) {
            st_close(f);
            model_info_free(info);
            return -1;
        }
        if (o->model && kind != info->prep.kind)
            fprintf(stderr, "infer: note: --preprocess %s overrides the model's %s\n",
                    o->preprocess, prep_name(info->prep.kind));
        info->prep.kind = kind;
    }
    /* class names: model file, --labels, the built-in ImageNet names for 1000 classes,
     * else class_<i> */
    const char *labels = o->labels;
    /* akamaster's CIFAR ResNets: CIFAR-10's classes, in its label order */
    static const char *cifar10[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                      "dog",      "frog",       "horse", "ship", "truck"};
    if (!labels && !info->class_names && info->num_classes == 10 && arch_is_cifar(info->arch)) {
        info->class_names = rn_alloc(sizeof(char *) * 10);
        for (int i = 0; i < 10; i++) info->class_names[i] = rn_strdup(cifar10[i]);
    }
    if (!labels && !info->class_names && info->num_classes == RN_IMAGENET_CLASSES) {
        info->class_names = rn_alloc(sizeof(char *) * RN_IMAGENET_CLASSES);
        for (int i = 0; i < RN_IMAGENET_CLASSES; i++)
            info->class_names[i] = rn_strdup(rn_imagenet_classes[i]);
    }
    if (labels) {
        int n = 0;
        char **names = read_lines(labels, &n);
        if (!names) {
            st_close(f);
            model_info_free(info);
            return -1;
        }
        if (n != info->num_classes) {
            rn_set_error("%s: %d class names, but the model has %d classes", labels, n,
                         info->num_classes);
            for (int i = 0; i < n; i++) rn_free(names[i]);
            rn_free(names);
            st_close(f);
            model_info_free(info);
            return -1;
        }
        if (info->class_names) {
            for (int i = 0; i < info->num_classes; i++) rn_free(info->class_names[i]);
            rn_free(info->class_names);
        }
        info->class_names = names;
    }
    if (!info->class_names) {
        info->class_names = rn_alloc(sizeof(char *) * (size_t)info->num_classes);
        for (int i = 0; i < info->num_classes; i++) {
            char b[32];
            snprintf(b, sizeof b, "class_%d", i);
            info->class_names[i] = rn_strdup(b);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ inputs */

/* Files in input order; each folder argument contributes its images, sorted. */
static int collect_inputs(const Options *o, Dataset *ds) {
    memset(ds, 0, sizeof *ds);
    int cap = 64;
    ds->paths = rn_alloc(sizeof(char *) * (size_t)cap);
    for (int i = 0; i < o->n_inputs; i++) {
        struct stat st;
        if (stat(o->inputs[i], &st) != 0) {
            fprintf(stderr, "infer: skip %s: %s\n", o->inputs[i], strerror(errno));
            ds->n_skipped++;
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            Dataset sub;
            if (dataset_from_unlabelled(o->inputs[i], &sub) != 0) {
                fprintf(stderr, "infer: skip %s: %s\n", o->inputs[i], rn_error());
                ds->n_skipped++;
                continue;
            }
            ds->n_skipped += sub.n_skipped;
            for (int j = 0; j < sub.n; j++) {
                if (ds->n == cap)
                    ds->paths = rn_realloc(ds->paths, sizeof(char *) * (size_t)(cap *= 2));
                ds->paths[ds->n++] = rn_strdup(sub.paths[j]);
            }
            dataset_free(&sub);
        } else {
            if (ds->n == cap)
                ds->paths = rn_realloc(ds->paths, sizeof(char *) * (size_t)(cap *= 2));
            ds->paths[ds->n++] = rn_strdup(o->inputs[i]);
        }
    }
    ds->labels = rn_alloc(sizeof(int) * (size_t)(ds->n ? ds->n : 1));
    for (int i = 0; i < ds->n; i++) ds->labels[i] = -1;
    return 0;
}

/* Indices of the k largest entries of p[n], best first (ties: lower index first). */
static void top_k(const float *p, int n, int k, int *idx) {
    for (int j = 0; j < k; j++) idx[j] = -1;
    for (int c = 0; c < n; c++) {
        int pos = k;
        while (pos > 0 && (idx[pos - 1] < 0 || p[c] > p[idx[pos - 1]])) pos--;
        if (pos >= k) continue;
        for (int j = k - 1; j > pos; j--) idx[j] = idx[j - 1];
        idx[pos] = c;
    }
}

/* One CSV field on stdout, quoted as RFC 4180 asks when it holds a comma, quote or newline. */
static void csv_field(const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"') putchar('"');
        putchar(*s);
    }
    putchar('"');
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ------------------------------------------------------------------ classify / evaluate */

typedef struct {
    int n, k, feat;
    float *probs, *logits, *features; /* [n, k], [n, k], [n, feat] */
    uint8_t *ok;                      /* per input: decoded and classified */
} Results;

/* Scatter one batch of logits (and features) into the results by dataset index. */
typedef struct {
    Net *net;
    Results *r;
    int feat_node;
    float *probs;
    const Dataset *ds;
} RunCtx;

/* 1 when every logit of a row is finite; otherwise says so (an argmax over NaN is no
 * prediction: the row is left out as a failed input). */
static int logits_finite(const float *logits, int k, const char *path) {
    for (int c = 0; c < k; c++)
        if (!isfinite(logits[c])) {
            fprintf(stderr, "infer: skip %s: logit %d is %s (the model's output is not finite)\n",
                    path ? path : "(input)", c, isnan(logits[c]) ? "NaN" : "infinite");
            return 0;
        }
    return 1;
}

static void collect_batch(void *ctx, int n, const int *idx, const int *labels,
                          const float *logits) {
    RunCtx *c = ctx;
    Results *r = c->r;
    int k = r->k;
    softmax_rows(n, k, logits, c->probs);
    const float *f = r->features ? net_node_output(c->net, c->feat_node) : NULL;
    for (int i = 0; i < n; i++) {
        size_t at = (size_t)idx[i];
        if (!logits_finite(logits + (size_t)i * k, k, c->ds->paths ? c->ds->paths[at] : NULL))
            continue;
        memcpy(r->logits + at * k, logits + (size_t)i * k, sizeof(float) * k);
        memcpy(r->probs + at * k, c->probs + (size_t)i * k, sizeof(float) * k);
        if (f) memcpy(r->features + at * r->feat, f + (size_t)i * r->feat, sizeof(float) * r->feat);
        r->ok[at] = 1;
    }
    (void)labels;
}

/* Run every item of ds through the net in batches; results land in input order. early:
 * the loader, started before the net was loaded (net_dataset_loader), or NULL. */
static int run_dataset(Net *net, const ModelInfo *info, const Dataset *ds, const Options *o,
                       int want_features, Loader *early, Results *r) {
    int k = info->num_classes, size = info->prep.size, batch = o->batch;
    memset(r, 0, sizeof *r);
    r->n = ds->n;
    r->k = k;
    int feat_node = net->pooled_node >= 0 ? net->pooled_node : net->feature_node;
    if (net_plan(net, batch, size, size, 0) != 0) {
        loader_free(early);
        return -1;
    }
    if (want_features) r->feat = (int)net_node_size(net, feat_node);
    size_t n = (size_t)(ds->n ? ds->n : 1);
    r->probs = rn_calloc(n * (size_t)k, sizeof(float));
    r->logits = rn_calloc(n * (size_t)k, sizeof(float));
    r->features = want_features ? rn_calloc(n * (size_t)r->feat, sizeof(float)) : NULL;
    r->ok = rn_calloc(n, 1);
    RunCtx ctx = {net, r, feat_node, rn_alloc(sizeof(float) * (size_t)batch * k), ds};
    int failed = early ? net_forward_loader(net, -1, early, ds, &info->prep, batch, "inference",
                                            collect_batch, &ctx)
                       : net_forward_dataset(net, -1, ds, &info->prep, batch, o->threads,
                                             "inference", collect_batch, &ctx);
    rn_free(ctx.probs);
    if (failed < 0) return -1;
    /* under mpirun each rank ran its run of batches: every row on every rank, input order */
    dist_allgather_rows(r->logits, sizeof(float) * k, ds->n, batch);
    dist_allgather_rows(r->probs, sizeof(float) * k, ds->n, batch);
    if (r->features) dist_allgather_rows(r->features, sizeof(float) * r->feat, ds->n, batch);
    dist_allgather_rows(r->ok, 1, ds->n, batch);
    return 0;
}

static void results_free(Results *r) {
    rn_free(r->probs);
    rn_free(r->logits);
    rn_free(r->features);
    rn_free(r->ok);
}

/* Rows of the ok inputs, in input order, as one [m, width] array. */
static int save_rows_npy(const char *path, const float *rows, const uint8_t *ok, int n, int width) {
    int m = 0;
    for (int i = 0; i < n; i++) m += ok[i];
    float *packed = rn_alloc(sizeof(float) * (size_t)(m ? m : 1) * (size_t)width);
    for (int i = 0, j = 0; i < n; i++)
        if (ok[i])
            memcpy(packed + (size_t)j++ * width, rows + (size_t)i * width, sizeof(float) * width);
    int64_t shape[2] = {m, width};
    int rc = write_npy_f32(path, packed, 2, shape);
    rn_free(packed);
    if (rc == 0) fprintf(stderr, "infer: wrote %s [%d, %d]\n", path, m, width);
    return rc;
}

static void print_results(const Results *r, const Dataset *ds, char **names, const Options *o) {
    int k = o->topk < r->k ? o->topk : r->k;
    int *top = rn_alloc(sizeof(int) * (size_t)k);
    if (o->format == OUT_JSON) {
        Buf b = {0};
        buf_put(&b, "[\n", 2);
        int first = 1;
        for (int i = 0; i < r->n; i++) {
            if (!r->ok[i]) continue;
            top_k(r->probs + (size_t)i * r->k, r->k, k, top);
            buf_printf(&b, "%s  {\"path\": ", first ? "" : ",\n");
            buf_json_string(&b, ds->paths[i]);
            buf_printf(&b, ", \"top\": [");
            for (int j = 0; j < k; j++) {
                buf_printf(&b, "%s{\"class\": ", j ? ", " : "");
                buf_json_string(&b, names[top[j]]);
                buf_printf(&b, ", \"index\": %d, \"prob\": %.6g}", top[j],
                           r->probs[(size_t)i * r->k + top[j]]);
            }
            buf_printf(&b, "]}");
            first = 0;
        }
        buf_put(&b, "\n]\n", 3);
        fwrite(b.data, 1, b.len, stdout);
        buf_free(&b);
    } else if (o->format == OUT_CSV) {
        printf("path,rank,class,index,prob\n");
        for (int i = 0; i < r->n; i++) {
            if (!r->ok[i]) continue;
            top_k(r->probs + (size_t)i * r->k, r->k, k, top);
            for (int j = 0; j < k; j++) {
                /* RFC 4180 quoting for fields that may hold commas or quotes */
                csv_field(ds->paths[i]);
                printf(",%d,", j + 1);
                csv_field(names[top[j]]);
                printf(",%d,%.6f\n", top[j], r->probs[(size_t)i * r->k + top[j]]);
            }
        }
    } else {
        /* aligned table: one row per image, "class prob" columns for each rank */
        int wpath = 5, wclass[100] = {0};
        int kk = k < 100 ? k : 100;
        for (int i = 0; i < r->n; i++) {
            if (!r->ok[i]) continue;
            int l = (int)strlen(ds->paths[i]);
            if (l > wpath) wpath = l;
            top_k(r->probs + (size_t)i * r->k, r->k, kk, top);
            for (int j = 0; j < kk; j++) {
                int lc = (int)strlen(names[top[j]]);
                if (lc > 40) lc = 40;
                if (lc > wclass[j]) wclass[j] = lc;
            }
        }
        if (wpath > 60) wpath = 60;
        printf("%-*s", wpath, "image");
        for (int j = 0; j < kk; j++) {
            char h[16];
            snprintf(h, sizeof h, "top-%d", j + 1);
            printf("  %-*s %6s", wclass[j] > 5 ? wclass[j] : 5, h, "p");
        }
        putchar('\n');
        for (int i = 0; i < r->n; i++) {
            if (!r->ok[i]) continue;
            const char *p = ds->paths[i];
            int l = (int)strlen(p);
            if (l > wpath)
                printf("...%-*s", wpath - 3, p + l - (wpath - 3));
            else
                printf("%-*s", wpath, p);
            top_k(r->probs + (size_t)i * r->k, r->k, kk, top);
            for (int j = 0; j < kk; j++)
                printf("  %-*.40s %6.4f", wclass[j] > 5 ? wclass[j] : 5, names[top[j]],
                       r->probs[(size_t)i * r->k + top[j]]);
            putchar('\n');
        }
    }
    rn_free(top);
}

/* --dump-nodes: the first batch of the inputs that decode, through net_dump_forward. */
static int dump_first_batch(Net *net, const ModelInfo *info, const Dataset *ds, const Options *o) {
    const int size = info->prep.size;
    const size_t per = (size_t)3 * size * size;
    float *x = rn_alloc(sizeof(float) * (size_t)o->batch * per);
    int n = 0;
    for (int i = 0; i < ds->n && n < o->batch; i++) {
        Image img;
        char why[256];
        if (dataset_load_image(ds, i, &img, why, sizeof why) != 0) continue;
        preprocess_image(&img, &info->prep, NULL, NULL, x + (size_t)n++ * per);
        image_free(&img);
    }
    int rc = -1;
    if (n == 0)
        rn_set_error("--dump-nodes: none of the inputs could be decoded");
    else if (net_plan(net, n, size, size, 0) == 0 &&
             net_dump_forward(net, x, n, o->dump_nodes) == 0) {
        fprintf(stderr, "infer: wrote %s (%d nodes, %d images)\n", o->dump_nodes, net->n_nodes, n);
        rc = 0;
    }
    rn_free(x);
    return rc;
}

/* The inputs (ds, freed here), decoding since `early` started (or NULL). */
static int cmd_classify(Net *net, ModelInfo *info, const Options *o, Dataset ds, Loader *early) {
    int failed = ds.n_skipped;
    if (o->dump_nodes && dump_first_batch(net, info, &ds, o) != 0) {
        fprintf(stderr, "infer: %s\n", rn_error());
        loader_free(early);
        dataset_free(&ds);
        return 1;
    }
    Results r;
    if (run_dataset(net, info, &ds, o, o->save_features != NULL, early, &r) != 0) {
        fprintf(stderr, "infer: %s\n", rn_error());
        dataset_free(&ds);
        return 1;
    }
    for (int i = 0; i < ds.n; i++) failed += !r.ok[i];
    print_results(&r, &ds, info->class_names, o);
    int rc = 0, root = dist_is_root(); /* rank 0 writes */
    if (root && o->save_logits && save_rows_npy(o->save_logits, r.logits, r.ok, r.n, r.k) != 0)
        rc = -1;
    if (root && o->save_features &&
        save_rows_npy(o->save_features, r.features, r.ok, r.n, r.feat) != 0)
        rc = -1;
    if (rc) fprintf(stderr, "infer: %s\n", rn_error());
    if (failed)
        fprintf(stderr, "infer: %d of %d inputs failed (reported above)\n", failed,
                ds.n + ds.n_skipped);
    results_free(&r);
    dataset_free(&ds);
    return rc || failed ? 1 : 0;
}

/* The labelled inputs (ds, freed here), decoding since `early` started (or NULL). */
static int cmd_eval(Net *net, ModelInfo *info, const Options *o, Dataset ds, Loader *early) {
    Results r;
    if (run_dataset(net, info, &ds, o, o->save_features != NULL, early, &r) != 0) {
        fprintf(stderr, "infer: %s\n", rn_error());
        dataset_free(&ds);
        return 1;
    }
    /* metrics over the images that decoded */
    int m = 0, k = info->num_classes;
    for (int i = 0; i < ds.n; i++) m += r.ok[i];
    float *probs = rn_alloc(sizeof(float) * (size_t)(m ? m : 1) * k);
    int *labels = rn_alloc(sizeof(int) * (size_t)(m ? m : 1));
    const char **wrong = rn_alloc(sizeof(char *) * (size_t)(m ? m : 1));
    int n_wrong = 0;
    double loss_sum = 0; /* cross-entropy from the probabilities, exactly as train reports it */
    for (int i = 0, j = 0; i < ds.n; i++) {
        if (!r.ok[i]) continue;
        memcpy(probs + (size_t)j * k, r.probs + (size_t)i * k, sizeof(float) * k);
        labels[j] = ds.labels[i];
        float p_true = probs[(size_t)j * k + labels[j]];
        loss_sum += -log(p_true > 1e-12f ? p_true : 1e-12f);
        int top[3], kk = k < 3 ? k : 3;
        top_k(r.probs + (size_t)i * k, k, kk, top);
        if (top[0] != labels[j]) {
            Buf line = {0};
            buf_printf(&line, "%s: %s -> ", ds.paths[i], info->class_names[labels[j]]);
            for (int t = 0; t < kk; t++)
                buf_printf(&line, "%s%s (%.3f)", t ? ", " : "", info->class_names[top[t]],
                           r.probs[(size_t)i * k + top[t]]);
            wrong[n_wrong++] = line.data;
        }
        j++;
    }
    Metrics met;
    metrics_compute(m, k, probs, labels, k < 5 ? k : 5, m ? loss_sum / m : NAN, &met);
    /* the text report on stdout, or on stderr when --json puts metrics.json there */
    FILE *txt = o->format == OUT_JSON ? stderr : stdout;
    fprintf(txt, "evaluation of %s (%d images, %d failed)\n\n", o->eval_dir, m,
            ds.n - m + ds.n_skipped);
    metrics_print_report(&met, info->class_names, txt);
    if (n_wrong) {
        fprintf(txt, "\nmisclassified (%d): path: true -> top guesses\n", n_wrong);
        for (int i = 0; i < n_wrong; i++) fprintf(txt, "  %s\n", wrong[i]);
    }
    int root = dist_is_root(); /* rank 0 writes */
    int rc = root ? mkdir_p(o->out_dir) : 0;
    char jpath[1100], hpath[1100];
    snprintf(jpath, sizeof jpath, "%s/metrics.json", o->out_dir);
    snprintf(hpath, sizeof hpath, "%s/report.html", o->out_dir);
    char title[600], notes[1200], split[300];
    /* the folder evaluated names the split: "val", "test", "holdout"... */
    char trimmed[300];
    snprintf(trimmed, sizeof trimmed, "%s", o->eval_dir);
    for (size_t l = strlen(trimmed); l > 1 && trimmed[l - 1] == '/'; l--) trimmed[l - 1] = 0;
    snprintf(split, sizeof split, "%s", base_name(trimmed));
    snprintf(title, sizeof title, "Evaluation of %s", o->eval_dir);
    double half;
    if (metrics_too_small(&met, &half))
        fprintf(stderr,
                "infer: warning: %s (%d images) is too small to trust: its accuracy's 95%% "
                "interval is +-%.1f points (the rule: wider than +-%.0f points)\n",
                o->eval_dir, met.n, 100 * half, 100 * METRICS_TRUST_HALF_WIDTH);
    snprintf(notes, sizeof notes, "model: %s; arch %s; preprocessing %s, %d px, crop %.3f",
             o->model ? o->model : o->weights, info->arch, prep_name(info->prep.kind),
             info->prep.size, info->prep.crop_pct);
    Report rep = {0};
    rep.title = title;
    rep.class_names = info->class_names;
    rep.k = k;
    rep.test = &met;
    rep.notes = notes;
    rep.split = split;
    rep.data = &ds;
    rep.probs = r.probs;
    rep.ok = r.ok;
    char ppath[1100];
    snprintf(ppath, sizeof ppath, "%s/predictions.csv", o->out_dir);
    if (rc == 0 && root) rc = report_write_json(&rep, jpath);
    if (rc == 0 && root) rc = report_write_html(&rep, hpath);
    if (rc == 0 && root) rc = report_write_predictions_csv(&rep, ppath);
    if (rc == 0 && root && o->format == OUT_JSON) {
        size_t len;
        uint8_t *json = read_file(jpath, &len);
        if (json) fwrite(json, 1, len, stdout);
        rn_free(json);
        rc = json ? 0 : -1;
    }
    if (rc != 0)
        fprintf(stderr, "infer: %s\n", rn_error());
    else if (root)
        fprintf(stderr, "infer: wrote %s, %s and %s\n", jpath, hpath, ppath);
    if (rc == 0 && root && o->save_logits)
        rc = save_rows_npy(o->save_logits, r.logits, r.ok, r.n, r.k);
    if (rc == 0 && root && o->save_features)
        rc = save_rows_npy(o->save_features, r.features, r.ok, r.n, r.feat);
    int failed = ds.n - m + ds.n_skipped;
    for (int i = 0; i < n_wrong; i++) rn_free((void *)wrong[i]);
    rn_free(wrong);
    metrics_free(&met);
    rn_free(probs);
    rn_free(labels);
    results_free(&r);
    dataset_free(&ds);
    return rc || failed ? 1 : 0;
}

/* ------------------------------------------------------------------ patch-based inference */

/* Window origins along one axis: 0, s, 2s, ... while the window fits and, when the last
 * one stops short of the edge (extent - patch not a multiple of the stride), one more
 * aligned with the edge, so every pixel is covered (stride > patch leaves gaps between
 * windows but still reaches the edge). extent >= patch. out = NULL only counts. */
static int patch_origins(int extent, int patch, int stride, int *out) {
    int n = 0, last = 0;
    for (int x = 0; x + patch <= extent; x += stride) {
        if (out) out[n] = x;
        n++;
        last = x;
    }
    if (last + patch < extent) {
        if (out) out[n] = extent - patch;
        n++;
    }
    return n;
}

static void crop_image(const Image *src, int x0, int y0, int w, int h, Image *dst) {
    dst->w = w;
    dst->h = h;
    dst->rgb = rn_alloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        memcpy(dst->rgb + (size_t)y * w * 3, src->rgb + ((size_t)(y0 + y) * src->w + x0) * 3,
               (size_t)w * 3);
}

/* Distinct colours (Tableau 20), cycled for more classes. */
static const uint8_t palette[20][3] = {
    {31, 119, 180},  {255, 127, 14},  {44, 160, 44},   {214, 39, 40},   {148, 103, 189},
    {140, 86, 75},   {227, 119, 194}, {127, 127, 127}, {188, 189, 34},  {23, 190, 207},
    {174, 199, 232}, {255, 187, 120}, {152, 223, 138}, {255, 152, 150}, {197, 176, 213},
    {196, 156, 148}, {247, 182, 210}, {199, 199, 199}, {219, 219, 141}, {158, 218, 229}};

static void fill_rect(Image *im, int x0, int y0, int x1, int y1, const uint8_t *rgb) {
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > im->w) x1 = im->w;
    if (y1 > im->h) y1 = im->h;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) memcpy(im->rgb + ((size_t)y * im->w + x) * 3, rgb, 3);
}

/* Text with stb_easy_font: it emits quads (4 vertices of x, y, z, colour) that we fill. */
static void draw_text(Image *im, int x, int y, const char *text, int scale, const uint8_t *rgb) {
    static float quads[4 * 4 * 2000];
    unsigned char color[4] = {0, 0, 0, 255};
    int nq = stb_easy_font_print(0, 0, (char *)text, color, quads, (int)sizeof quads);
    for (int q = 0; q < nq; q++) {
        const float *v = quads + q * 16; /* 4 vertices x 4 floats (x, y, z, rgba) */
        int qx0 = (int)v[0], qy0 = (int)v[1], qx1 = (int)v[8], qy1 = (int)v[9];
        fill_rect(im, x + qx0 * scale, y + qy0 * scale, x + qx1 * scale, y + qy1 * scale, rgb);
    }
}

typedef struct {
    int cls;
    float share;
} ClassShare;

static int by_share_desc(const void *a, const void *b) {
    float d = ((const ClassShare *)b)->share - ((const ClassShare *)a)->share;
    return d > 0 ? 1 : d < 0 ? -1 : ((const ClassShare *)a)->cls - ((const ClassShare *)b)->cls;
}

/* The picture: image with each pixel tinted by the class of the window whose centre is
 * nearest, the tint as strong as that window's confidence (from 10 % of the colour at
 * probability 1/k to 70 % at 1), window-cell borders, and a legend of the classes present
 * with their shares. */
static int write_grid_picture(const char *path, const Image *img, const int *xs, int nx,
                              const int *ys, int ny, int patch, const int *cell_class,
                              const float *cell_prob, int k, const ClassShare *shares,
                              int n_shares, char **names) {
    /* draw at most 1024 px on the longer side */
    double scale = 1.0;
    int longer = img->w > img->h ? img->w : img->h;
    if (longer > 1024) scale = 1024.0 / longer;
    Image base;
    image_resize(img, (int)(img->w * scale + 0.5), (int)(img->h * scale + 0.5), &base);
    int legend_h = 16 + 22 * n_shares;
    Image pic = {base.w < 360 ? 360 : base.w, base.h + legend_h, NULL};
    pic.rgb = rn_alloc((size_t)pic.w * pic.h * 3);
    memset(pic.rgb, 255, (size_t)pic.w * pic.h * 3);
    for (int y = 0; y < base.h; y++) {
        double oy = (y + 0.5) / scale;
        int gy = 0;
        for (int j = 1; j < ny; j++)
            if (fabs(oy - (ys[j] + patch / 2.0)) < fabs(oy - (ys[gy] + patch / 2.0))) gy = j;
        for (int x = 0; x < base.w; x++) {
            double ox = (x + 0.5) / scale;
            int gx = 0;
            for (int i = 1; i < nx; i++)
                if (fabs(ox - (xs[i] + patch / 2.0)) < fabs(ox - (xs[gx] + patch / 2.0))) gx = i;
            const uint8_t *col = palette[cell_class[gy * nx + gx] % 20];
            const uint8_t *src = base.rgb + ((size_t)y * base.w + x) * 3;
            uint8_t *dst = pic.rgb + ((size_t)y * pic.w + x) * 3;
            float conf = (cell_prob[gy * nx + gx] - 1.0f / k) / (1 - 1.0f / k);
            float a = 0.1f + 0.6f * (conf < 0 ? 0 : conf > 1 ? 1 : conf);
            for (int c = 0; c < 3; c++) dst[c] = (uint8_t)((1 - a) * src[c] + a * col[c] + 0.5f);
        }
    }
    /* borders between cells: where the nearest window changes */
    static const uint8_t white[3] = {255, 255, 255}, black[3] = {0, 0, 0};
    for (int i = 0; i + 1 < nx; i++) {
        int bx = (int)(((xs[i] + xs[i + 1]) / 2.0 + patch / 2.0) * scale);
        fill_rect(&pic, bx, 0, bx + 1, base.h, white);
    }
    for (int j = 0; j + 1 < ny; j++) {
        int by = (int)(((ys[j] + ys[j + 1]) / 2.0 + patch / 2.0) * scale);
        fill_rect(&pic, 0, by, base.w, by + 1, white);
    }
    for (int s = 0; s < n_shares; s++) {
        int y = base.h + 8 + 22 * s;
        fill_rect(&pic, 8, y, 24, y + 16, palette[shares[s].cls % 20]);
        char label[160];
        snprintf(label, sizeof label, "%s  %.1f%%%s", names[shares[s].cls], 100.0 * shares[s].share,
                 s == 0 ? "  (major)" : "");
        draw_text(&pic, 32, y + 2, label, 2, black);
    }
    int rc = image_write_png(path, &pic);
    rn_free(base.rgb);
    rn_free(pic.rgb);
    return rc;
}

static int cmd_patches(Net *net, ModelInfo *info, const Options *o) {
    Dataset ds;
    collect_inputs(o, &ds);
    int failed = ds.n_skipped, k = info->num_classes, size = info->prep.size, batch = o->batch;
    /* not sharded: under mpirun every rank does the same, rank 0 writes */
    if ((dist_is_root() && mkdir_p(o->out_dir) != 0) || net_plan(net, batch, size, size, 0) != 0) {
        fprintf(stderr, "infer: %s\n", rn_error());
        dataset_free(&ds);
        return 1;
    }
    Preprocess patch_prep = info->prep;
    patch_prep.crop_pct = 1.0f; /* a window is classified whole, resized to the input size */
    float *x = rn_alloc(sizeof(float) * (size_t)batch * 3 * size * size);
    float *probs = rn_alloc(sizeof(float) * (size_t)batch * k);
    double *mass = rn_alloc(sizeof(double) * (size_t)k);
    ClassShare *shares = rn_alloc(sizeof(ClassShare) * (size_t)k);
    Buf json = {0};
    buf_put(&json, "[\n", 2);
    int first = 1;
    for (int i = 0; i < ds.n; i++) {
        Image img;
        char why[256];
        if (dataset_load_image(&ds, i, &img, why, sizeof why) != 0) {
            fprintf(stderr, "infer: skip %s: %s\n", ds.paths[i], why);
            failed++;
            continue;
        }
        int orig_w = img.w, orig_h = img.h, shorter = img.w < img.h ? img.w : img.h;
        /* an image smaller than the window is upscaled so that its shorter side equals
         * the window: sizes and window counts are checked before anything is allocated */
        double scale = shorter < o->patch ? (double)o->patch / shorter : 1.0;
        double uw = img.w, uh = img.h;
        if (scale > 1.0) {
            uw = img.w == shorter ? o->patch : floor(img.w * scale + 0.5);
            uh = img.h == shorter ? o->patch : floor(img.h * scale + 0.5);
            if (uw < o->patch) uw = o->patch;
            if (uh < o->patch) uh = o->patch;
        }
        if (scale > 1.0 &&
            (uw > RN_MAX_IMAGE_SIDE || uh > RN_MAX_IMAGE_SIDE || uw * uh > RN_MAX_IMAGE_PIXELS)) {
            fprintf(stderr,
                    "infer: skip %s: %dx%d would be upscaled to %.0fx%.0f for %d px "
                    "windows, beyond the %d-pixel side or %d-pixel area limit (lower --patches)\n",
                    ds.paths[i], img.w, img.h, uw, uh, o->patch, RN_MAX_IMAGE_SIDE,
                    RN_MAX_IMAGE_PIXELS);
            image_free(&img);
            failed++;
            continue;
        }
        int nx = patch_origins((int)uw, o->patch, o->stride, NULL);
        int ny = patch_origins((int)uh, o->patch, o->stride, NULL);
        if ((int64_t)nx * ny > MAX_WINDOWS) {
            fprintf(stderr,
                    "infer: skip %s: %d x %d = %lld windows of %d px at stride %d, more "
                    "than %d (raise --stride)\n",
                    ds.paths[i], nx, ny, (long long)nx * ny, o->patch, o->stride, MAX_WINDOWS);
            image_free(&img);
            failed++;
            continue;
        }
        if (scale > 1.0) {
            Image up;
            image_resize(&img, (int)uw, (int)uh, &up);
            image_free(&img);
            img = up;
        }
        int *xs = rn_alloc(sizeof(int) * (size_t)nx), *ys = rn_alloc(sizeof(int) * (size_t)ny);
        patch_origins(img.w, o->patch, o->stride, xs);
        patch_origins(img.h, o->patch, o->stride, ys);
        int n_cells = nx * ny;
        int *cell_class = rn_alloc(sizeof(int) * (size_t)n_cells);
        float *cell_prob = rn_alloc(sizeof(float) * (size_t)n_cells);
        for (int c = 0; c < k; c++) mass[c] = 0;
        for (int start = 0; start < n_cells; start += batch) {
            int nb = n_cells - start < batch ? n_cells - start : batch;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
            for (int b = 0; b < nb; b++) {
                int cell = start + b;
                Image win;
                crop_image(&img, xs[cell % nx], ys[cell / nx], o->patch, o->patch, &win);
                preprocess_image(&win, &patch_prep, NULL, NULL, x + (size_t)b * 3 * size * size);
                rn_free(win.rgb);
            }
            const float *logits = net_forward(net, x, nb, 0);
            softmax_rows(nb, k, logits, probs);
            for (int b = 0; b < nb; b++) {
                const float *p = probs + (size_t)b * k;
                int best = 0;
                for (int c = 0; c < k; c++) {
                    mass[c] += p[c];
                    if (p[c] > p[best]) best = c;
                }
                cell_class[start + b] = best;
                cell_prob[start + b] = p[best];
            }
        }
        /* shares of the summed softmax mass; major = largest, secondary = others > threshold */
        for (int c = 0; c < k; c++) {
            shares[c].cls = c;
            shares[c].share = (float)(mass[c] / n_cells);
        }
        qsort(shares, (size_t)k, sizeof *shares, by_share_desc);
        int n_secondary = 0;
        while (1 + n_secondary < k && shares[1 + n_secondary].share > o->secondary_threshold)
            n_secondary++;
        /* legend: the major and secondary classes, plus any class that wins a cell */
        int n_legend = 1 + n_secondary;
        for (int s = n_legend; s < k; s++) {
            int wins = 0;
            for (int c = 0; c < n_cells && !wins; c++) wins = cell_class[c] == shares[s].cls;
            if (wins) {
                ClassShare t = shares[n_legend];
                shares[n_legend] = shares[s];
                shares[s] = t;
                n_legend++;
            }
        }
        char pic_path[1200], stem[512];
        snprintf(stem, sizeof stem, "%s", base_name(ds.paths[i]));
        char *dot = strrchr(stem, '.');
        if (dot) *dot = 0;
        snprintf(pic_path, sizeof pic_path, "%s/%s.patches.png", o->out_dir, stem);
        if (dist_is_root() &&
            write_grid_picture(pic_path, &img, xs, nx, ys, ny, o->patch, cell_class, cell_prob, k, shares,
                               n_legend < 12 ? n_legend : 12, info->class_names) != 0) {
            fprintf(stderr, "infer: %s\n", rn_error());
            failed++;
        }
        if (o->format == OUT_JSON) {
            buf_printf(&json, "%s  {\"path\": ", first ? "" : ",\n");
            buf_json_string(&json, ds.paths[i]);
            buf_printf(&json,
                       ", \"width\": %d, \"height\": %d, \"scale\": %.6g, \"major\": ", orig_w,
                       orig_h, scale);
            buf_json_string(&json, info->class_names[shares[0].cls]);
            buf_printf(&json, ", \"major_share\": %.6g, \"secondary\": [", shares[0].share);
            for (int s = 1; s <= n_secondary; s++) {
                buf_printf(&json, "%s{\"class\": ", s > 1 ? ", " : "");
                buf_json_string(&json, info->class_names[shares[s].cls]);
                buf_printf(&json, ", \"share\": %.6g}", shares[s].share);
            }
            buf_printf(
                &json,
                "], \"grid\": {\"patch\": %d, \"stride\": %d, \"rows\": %d, \"cols\": %d, \"x\": [",
                o->patch, o->stride, ny, nx);
            for (int c = 0; c < nx; c++) buf_printf(&json, "%s%d", c ? ", " : "", xs[c]);
            buf_printf(&json, "], \"y\": [");
            for (int r = 0; r < ny; r++) buf_printf(&json, "%s%d", r ? ", " : "", ys[r]);
            buf_printf(&json, "], \"classes\": [");
            for (int r = 0; r < ny; r++) {
                buf_printf(&json, "%s[", r ? ", " : "");
                for (int c = 0; c < nx; c++) {
                    if (c) buf_put(&json, ", ", 2);
                    buf_json_string(&json, info->class_names[cell_class[r * nx + c]]);
                }
                buf_put(&json, "]", 1);
            }
            buf_printf(&json, "], \"probs\": [");
            for (int r = 0; r < ny; r++) {
                buf_printf(&json, "%s[", r ? ", " : "");
                for (int c = 0; c < nx; c++)
                    buf_printf(&json, "%s%.4f", c ? ", " : "", cell_prob[r * nx + c]);
                buf_put(&json, "]", 1);
            }
            buf_printf(&json, "]}, \"picture\": ");
            buf_json_string(&json, pic_path);
            buf_put(&json, "}", 1);
            first = 0;
        } else if (o->format == OUT_CSV) {
            if (first) printf("path,role,class,share\n");
            for (int s = 0; s <= n_secondary; s++) {
                csv_field(ds.paths[i]);
                printf(",%s,", s ? "secondary" : "major");
                csv_field(info->class_names[shares[s].cls]);
                printf(",%.6f\n", shares[s].share);
            }
            first = 0;
        } else {
            printf("%s  (%dx%d", ds.paths[i], orig_w, orig_h);
            if (scale != 1.0) printf(" upscaled to %dx%d", img.w, img.h);
            printf(", %d x %d windows of %d px, stride %d)\n", ny, nx, o->patch, o->stride);
            printf("  major      %-30s %5.1f%%\n", info->class_names[shares[0].cls],
                   100.0 * shares[0].share);
            for (int s = 1; s <= n_secondary; s++)
                printf("  secondary  %-30s %5.1f%%\n", info->class_names[shares[s].cls],
                       100.0 * shares[s].share);
            printf("  grid (rows top to bottom, class index per window):\n");
            for (int r = 0; r < ny && r < 40; r++) {
                printf("   ");
                for (int c = 0; c < nx && c < 40; c++) printf(" %3d", cell_class[r * nx + c]);
                putchar('\n');
            }
            printf("  picture    %s\n", pic_path);
        }
        rn_free(cell_class);
        rn_free(cell_prob);
        rn_free(xs);
        rn_free(ys);
        image_free(&img);
    }
    if (o->format == OUT_JSON) {
        buf_put(&json, "\n]\n", 3);
        fwrite(json.data, 1, json.len, stdout);
    }
    if (failed)
        fprintf(stderr, "infer: %d of %d inputs failed (reported above)\n", failed,
                ds.n + ds.n_skipped);
    buf_free(&json);
    rn_free(mass);
    rn_free(shares);
    rn_free(x);
    rn_free(probs);
    dataset_free(&ds);
    return failed ? 1 : 0;
}

/* The "training" JSON of a model file, indented two spaces a level (strings copied as
 * they are: the file's own escapes). */
static void print_json_indented(const char *s, FILE *f) {
    int depth = 1, in_str = 0;
    fputs("  ", f);
    for (; *s; s++) {
        char c = *s;
        if (in_str) {
            fputc(c, f);
            if (c == '\\' && s[1]) fputc(*++s, f);
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') in_str = 1;
        if (c == '}' || c == ']') {
            depth--;
            fprintf(f, "\n%*s", 2 * depth, "");
        }
        fputc(c, f);
        if (c == ':') fputc(' ', f);
        if (c == '{' || c == '[' || c == ',') {
            if (c != ',') depth++;
            fprintf(f, "\n%*s", 2 * depth, "");
        }
    }
    fputc('\n', f);
}

/* --info: what the model is and how it was made, from the file (and the registry). */
static int print_model_info(const Options *o, Net *net, const ModelInfo *info) {
    const ArchSpec *a = arch_find(info->arch);
    char head[256];
    head_format(&info->head, head, sizeof head);
    if (o->format == OUT_JSON) {
        Buf b = {0};
        buf_printf(&b, "{\"file\":");
        buf_json_string(&b, o->model ? o->model : o->weights);
        buf_printf(&b, ",\"arch\":");
        buf_json_string(&b, info->arch);
        buf_printf(&b, ",\"num_classes\":%d,\"classes\":[", info->num_classes);
        for (int i = 0; i < info->num_classes; i++) {
            if (i) buf_printf(&b, ",");
            buf_json_string(&b, info->class_names[i]);
        }
        buf_printf(&b, "],\"head\":");
        buf_json_string(&b, head);
        buf_printf(&b, ",\"preprocess\":");
        buf_json_string(&b, prep_name(info->prep.kind));
        buf_printf(&b, ",\"img_size\":%d,\"crop_pct\":%.6g,\"parameters\":%lld", info->prep.size,
                   (double)info->prep.crop_pct, (long long)net_count_params(net, 0));
        if (info->training) buf_printf(&b, ",\"training\":%s", info->training);
        buf_printf(&b, "}\n");
        fwrite(b.data, 1, b.len, stdout);
        buf_free(&b);
        return 0;
    }
    printf("file:          %s\n", o->model ? o->model : o->weights);
    printf("architecture:  %s (%s family, classifier '%s')\n", info->arch,
           a ? a->family : "?", a ? a->classifier : "?");
    printf("classes:       %d:", info->num_classes);
    int shown = info->num_classes < 20 ? info->num_classes : 20;
    for (int i = 0; i < shown; i++) printf("%s %s", i ? "," : "", info->class_names[i]);
    printf("%s\n", shown < info->num_classes ? ", ..." : "");
    printf("head:          %s\n", head);
    printf("preprocessing: %s, %d px, crop %.3f (resize to %d, centre crop %d)\n",
           prep_name(info->prep.kind), info->prep.size, info->prep.crop_pct,
           (int)(info->prep.size / info->prep.crop_pct + 0.5f), info->prep.size);
    printf("parameters:    %lld\n", (long long)net_count_params(net, 0));
    if (info->training) {
        printf("training run (stored in the file):\n");
        print_json_indented(info->training, stdout);
    } else {
        printf("training run:  not recorded (%s)\n",
               o->model ? "a model file written before train stored it" : "bare weights");
    }
    return 0;
}

static int infer_main(int argc, char **argv);

/* Under mpirun a rank that fails stops every rank (MPI_Abort), so none waits in a
 * collective for it. An exit status of 1 (some inputs failed) is no failure of the job. */
int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    dist_share_cores(); /* ranks on one machine split its cores */
    int rc = infer_main(argc, argv);
    if (rc > 1 && dist_size() > 1) dist_abort(dist_is_root() ? NULL : "infer failed", rc);
    dist_finalize();
    return rc;
}

static int infer_main(int argc, char **argv) {
    rn_binary_stdout(); /* CSV and JSON on stdout: the same bytes on every platform */
    if (argc == 1) {
        cli_short_usage(&PROGRAM, stderr);
        return 2;
    }
    Options o;
    int prc = parse_args(argc, argv, &o);
    if (prc != CLI_OK) {
        rn_free(o.inputs);
        return prc == CLI_EXIT ? 0 : cli_usage_error(&PROGRAM);
    }
#ifdef _OPENMP
    if (o.threads > 0) omp_set_num_threads(o.threads);
#endif
    ModelInfo info;
    StFile f;
    if (load_info(&o, &info, &f) != 0) {
        fprintf(stderr, "infer: %s\n", rn_error());
        model_info_free(&info);
        rn_free(o.inputs);
        return 1;
    }
    /* The inputs start decoding now, on the cores the weights' loading leaves idle. */
    Dataset ds;
    memset(&ds, 0, sizeof ds);
    Loader *early = NULL;
    if (o.eval_dir &&
        dataset_from_folder_classes(o.eval_dir, info.class_names, info.num_classes, &ds) != 0) {
        fprintf(stderr, "infer: %s\n", rn_error());
        st_close(&f);
        model_info_free(&info);
        rn_free(o.inputs);
        return 1;
    }
    if (o.eval_dir) dataset_summary(&ds, "eval", stderr);
    if (!o.eval_dir && !o.patch && !o.info) collect_inputs(&o, &ds);
    if (ds.n > 0) early = net_dataset_loader(&ds, &info.prep, o.batch, o.threads);
    Net *net = load_net(&o, &info, &f);
    if (!net) {
        fprintf(stderr, "infer: %s\n", rn_error());
        loader_free(early);
        dataset_free(&ds);
        model_info_free(&info);
        rn_free(o.inputs);
        return 1;
    }
    if (o.info) {
        int rc = print_model_info(&o, net, &info);
        net_free(net);
        model_info_free(&info);
        rn_free(o.inputs);
        return rc;
    }
    if (o.winograd >= 0) net->winograd = o.winograd;
    net->constant_weights = 1; /* nothing here changes a loaded parameter */
    net->reference = o.reference;
    int threads = rn_threads();
    fprintf(stderr,
            "infer: %s, %d classes, %s preprocessing at %d px (crop %.3f), %d thread%s, %s%s\n",
            info.arch, info.num_classes, prep_name(info.prep.kind), info.prep.size,
            info.prep.crop_pct, threads, threads == 1 ? "" : "s",
            net->reference ? "reference kernels" : simd_name(),
            !net->reference && net->winograd ? ", Winograd 3x3" : "");
    int rc = o.eval_dir ? cmd_eval(net, &info, &o, ds, early)
             : o.patch  ? cmd_patches(net, &info, &o)
                        : cmd_classify(net, &info, &o, ds, early);
    fprintf(stderr, "infer: peak memory %ld MB (resident)\n", rn_peak_rss_kb() / 1024);
    net_free(net);
    model_info_free(&info);
    rn_free(o.inputs);
    return rc;
}
