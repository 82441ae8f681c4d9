/* train.c - the training command line: transfer learning with a ResNet backbone.
 *
 *   ./train --arch resnet50 --weights W.safetensors --data DIR --out RUN/
 *
 * The default job: a frozen pretrained backbone whose pooled features are computed once
 * (and cached on disk), an MLP head trained on them with early stopping on a stratified
 * 70/15/15 split, then metrics, RUN/report.html and RUN/model.safetensors for ./infer.
 * Optional: staged fine-tuning of the last stages, pseudo-labelling over unlabelled
 * domains, resumable checkpoints (--resume), and a procedural demo data set
 * (--make-demo-data DIR, used by tools/demo.sh).
 *
 * Training phases, in order; each checkpoints after every epoch:
 *   phase 1        head on frozen features (pretrained weights), or the whole net from
 *                  scratch (--weights none);
 *   phase 2        fine-tuning with the last --unfreeze stages trainable (--finetune-epochs);
 *   phase 2+i      pseudo-labelling on unlabelled domain i (--pseudo).
 */
#include "resnet.h"
#include "platform.h"
#include "dist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------------------------ */
/* Options: one table gives parsing, defaults and --help                                 */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    const char *arch, *weights, *data, *data_csv, *cifar_bin, *val, *test, *out, *resume;
    const char *cache_dir, *head, *preprocess, *unfreeze, *opt, *class_weights, *schedule;
    const char *pseudo, *pseudo_eval, *make_demo_data, *run_id;
    int img_size, augment, aug_flip, limit_per_class, seed, threads, batch;
    int epochs, finetune_epochs, patience, pseudo_epochs, demo_per_class, kill_after;
    float crop_pct, aug_scale_min, aug_scale_max, aug_rotate, aug_translate;
    float aug_brightness, aug_contrast, lr, finetune_lr, weight_decay, momentum;
    float label_smoothing, pseudo_threshold, pseudo_lr, val_frac, test_frac;
    const char *aug_scale;
    int help, no_cache, low_memory;
} Args;

static Args A;

typedef enum { K_STR, K_INT, K_FLOAT, K_FLAG, K_SECTION } OptKind;
typedef struct {
    const char *name;
    OptKind kind;
    void *ptr;
    const char *def;
    const char *help;
} OptionDef;

static const OptionDef OPTIONS[] = {
    {"Model", K_SECTION, NULL, NULL, NULL},
    {"arch", K_STR, &A.arch, "resnet50", "one of the architectures listed at the end"},
    {"weights", K_STR, &A.weights, "",
     "required: pretrained backbone (.safetensors, torchvision names), or 'none' for a "
     "random init that trains the whole net from scratch (see --unfreeze)"},
    {"head", K_STR, &A.head, "mlp:256:dropout=0.2",
     "linear | mlp:256 | mlp:512,256,128,64:dropout=0.2:bn | inception:128:dropout=0.5"},
    {"Data", K_SECTION, NULL, NULL, NULL},
    {"data", K_STR, &A.data, "", "training folder, one sub-folder per class (ImageFolder)"},
    {"data-csv", K_STR, &A.data_csv, "", "training list instead: lines 'path,label'"},
    {"cifar-bin", K_STR, &A.cifar_bin, "",
     "CIFAR-10/100 binary folder instead (its test batch becomes the test set)"},
    {"val", K_STR, &A.val, "", "validation folder with train's classes (default: split)"},
    {"test", K_STR, &A.test, "", "test folder with train's classes (default: split)"},
    {"val-frac", K_FLOAT, &A.val_frac, "0.15", "validation fraction of the split"},
    {"test-frac", K_FLOAT, &A.test_frac, "0.15",
     "test fraction of the split (stratified, seeded; 70/15/15 by default)"},
    {"limit-per-class", K_INT, &A.limit_per_class, "0",
     "use at most N training images per class (seeded choice; 0 = all)"},
    {"img-size", K_INT, &A.img_size, "0", "input size (0 = 224, CIFAR archs 32)"},
    {"preprocess", K_STR, &A.preprocess, "torchvision",
     "torchvision (ImageNet mean/std) | caffe (BGR minus mean) | unit (RGB/255)"},
    {"crop-pct", K_FLOAT, &A.crop_pct, "0",
     "eval resize to size/crop_pct then center crop (0 = 0.875, CIFAR archs 1)"},
    {"augment", K_FLAG, &A.augment, "0",
     "train-time augmentation (random resized crop, flip...); with a frozen backbone the "
     "training features are then recomputed every epoch instead of cached"},
    {"aug-scale", K_STR, &A.aug_scale, "0.08,1", "random resized crop area range MIN,MAX"},
    {"aug-flip", K_INT, &A.aug_flip, "1", "random horizontal flip (0/1)"},
    {"aug-rotate", K_FLOAT, &A.aug_rotate, "0", "random rotation in [-DEG, DEG]"},
    {"aug-translate", K_FLOAT, &A.aug_translate, "0", "random shift, fraction of the size"},
    {"aug-brightness", K_FLOAT, &A.aug_brightness, "0", "brightness factor in [1-B, 1+B]"},
    {"aug-contrast", K_FLOAT, &A.aug_contrast, "0", "contrast factor in [1-C, 1+C]"},
    {"Training", K_SECTION, NULL, NULL, NULL},
    {"epochs", K_INT, &A.epochs, "30",
     "phase 1 epochs: the head (frozen backbone), or the whole net with --weights none"},
    {"batch", K_INT, &A.batch, "32", "batch size"},
    {"opt", K_STR, &A.opt, "adam", "adam | adamw | sgd"},
    {"lr", K_FLOAT, &A.lr, "0.001", "phase 1 learning rate"},
    {"weight-decay", K_FLOAT, &A.weight_decay, "0", "L2 (sgd, adam) or decoupled (adamw)"},
    {"momentum", K_FLOAT, &A.momentum, "0.9", "SGD momentum"},
    {"label-smoothing", K_FLOAT, &A.label_smoothing, "0", "cross-entropy label smoothing"},
    {"class-weights", K_STR, &A.class_weights, "none", "none | balanced | w1,w2,..."},
    {"schedule", K_STR, &A.schedule, "constant",
     "constant | step:EVERY:GAMMA | cosine | plateau:PATIENCE:FACTOR (per phase)"},
    {"patience", K_INT, &A.patience, "5",
     "early stopping: stop after P epochs without a better val loss and restore the best "
     "weights (0 = off)"},
    {"finetune-epochs", K_INT, &A.finetune_epochs, "0",
     "phase 2: fine-tune with the last --unfreeze stages trainable"},
    {"unfreeze", K_STR, &A.unfreeze, "auto",
     "N last backbone groups | all | a group name and those after it (groups listed at "
     "the end; auto: 1, or all with --weights none)"},
    {"finetune-lr", K_FLOAT, &A.finetune_lr, "0.0001", "phase 2 learning rate"},
    {"Pseudo-labelling", K_SECTION, NULL, NULL, NULL},
    {"pseudo", K_STR, &A.pseudo, "",
     "unlabelled folders DIR1,DIR2,... visited in order: each is labelled by the current "
     "model (confident, class-balanced picks) and trained on with the labelled training set"},
    {"pseudo-eval", K_STR, &A.pseudo_eval, "",
     "labelled held-out folders, one per --pseudo domain (for the accuracy matrix)"},
    {"pseudo-epochs", K_INT, &A.pseudo_epochs, "3", "epochs per pseudo-labelled domain"},
    {"pseudo-lr", K_FLOAT, &A.pseudo_lr, "0",
     "learning rate of the pseudo-label phases (0 = --finetune-lr after fine-tuning, else "
     "--lr); the weights with the best labelled val loss of each phase are kept"},
    {"pseudo-threshold", K_FLOAT, &A.pseudo_threshold, "0.8",
     "keep pseudo-labels whose probability is at least T"},
    {"Run", K_SECTION, NULL, NULL, NULL},
    {"out", K_STR, &A.out, "runs/run", "output folder (model, checkpoint, metrics, report)"},
    {"resume", K_STR, &A.resume, "",
     "RUN folder of an interrupted run: continue it to the same result (its options are "
     "read from RUN/args.txt; options given here override them)"},
    {"cache-dir", K_STR, &A.cache_dir, "", "feature cache folder (default: the parent of --out)"},
    {"no-cache", K_FLAG, &A.no_cache, "0", "compute features without reading/writing the cache"},
    {"seed", K_INT, &A.seed, "0", "seed of splits, init, shuffling, augmentation, dropout"},
    {"threads", K_INT, &A.threads, "0", "compute and decoding threads (0 = OpenMP default)"},
    {"low-memory", K_FLAG, &A.low_memory, "1",
     "training the backbone (fine-tuning or from scratch): run the expanding 1x1 convs "
     "again in backward instead of keeping their outputs (ResNet-50: about 40% less "
     "activation memory; --low-memory=0 keeps them, a few % faster; the same results)"},
    {"run-id", K_STR, &A.run_id, "",
     "set at a run's start and kept in RUN/args.txt: its checkpoints carry it, and --resume "
     "refuses a checkpoint of another run"},
    {"make-demo-data", K_STR, &A.make_demo_data, "",
     "write the procedural demo data set to DIR and exit"},
    {"demo-per-class", K_INT, &A.demo_per_class, "150", "demo training images per class"},
    {"kill-after-epochs", K_INT, &A.kill_after, "0",
     "testing: SIGKILL itself after N epochs (after the checkpoint)"},
    {"help", K_FLAG, &A.help, "0", "this list"},
};
#define N_OPTIONS ((int)(sizeof OPTIONS / sizeof OPTIONS[0]))

/* The accepted range of each numeric option (zero_ok: 0 too, meaning "the default"); a
 * number outside it is refused, never clamped (--lr 1e39 is infinite in float, --threads
 * 100000 crashed libgomp, --label-smoothing 5 has no meaning). */
typedef struct {
    const char *name;
    double lo, hi;
    int zero_ok;
} OptionRange;
static const OptionRange RANGES[] = {
    {"val-frac", 0, 0.95, 0},
    {"test-frac", 0, 0.95, 0},
    {"limit-per-class", 0, 1e9, 0},
    {"img-size", 16, RN_MAX_IMAGE_SIDE, 1},
    {"crop-pct", 0.05, 1, 1},
    {"aug-flip", 0, 1, 0},
    {"aug-rotate", 0, 180, 0},
    {"aug-translate", 0, 1, 0},
    {"aug-brightness", 0, 1, 0},
    {"aug-contrast", 0, 1, 0},
    {"epochs", 0, 1e6, 0},
    {"batch", 1, 65536, 0},
    {"lr", 0, 1000, 0},
    {"weight-decay", 0, 1000, 0},
    {"momentum", 0, 1, 0},
    {"label-smoothing", 0, 1, 0},
    {"patience", 0, 1e6, 0},
    {"finetune-epochs", 0, 1e6, 0},
    {"finetune-lr", 0, 1000, 0},
    {"pseudo-epochs", 0, 1e6, 0},
    {"pseudo-lr", 0, 1000, 0},
    {"pseudo-threshold", 0, 1, 0},
    {"threads", 0, RN_MAX_THREADS, 0},
    {"demo-per-class", 1, 1e6, 0},
    {"kill-after-epochs", 0, 1e6, 0},
};

static int set_option(const OptionDef *o, const char *v) {
    char *end = NULL;
    double x = 0;
    const OptionRange *r = NULL;
    for (size_t i = 0; i < sizeof RANGES / sizeof *RANGES; i++)
        if (strcmp(RANGES[i].name, o->name) == 0) r = &RANGES[i];
    switch (o->kind) {
    case K_STR: *(const char **)o->ptr = v; return 0;
    case K_INT:
    case K_FLAG:
        errno = 0;
        x = (double)strtol(v, &end, 10);
        if (errno || end == v || *end || x < -2147483647.0 || x > 2147483647.0) break;
        if (r && !(x >= r->lo && x <= r->hi) && !(r->zero_ok && x == 0)) break;
        *(int *)o->ptr = (int)x;
        return 0;
    case K_FLOAT:
        errno = 0;
        x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x) || !isfinite((float)x)) break;
        if (r && !(x >= r->lo && x <= r->hi) && !(r->zero_ok && x == 0)) break;
        *(float *)o->ptr = (float)x;
        return 0;
    case K_SECTION: break;
    }
    const char *what = o->kind == K_FLOAT ? "a number" : "an integer";
    if (r)
        rn_set_error("--%s: expected %s in [%.10g, %.10g]%s, found '%s'", o->name, what, r->lo,
                     r->hi, r->zero_ok ? " (or 0: the default)" : "", v);
    else
        rn_set_error("--%s: expected %s, found '%s'", o->name, what, v);
    return -1;
}

static const OptionDef *find_option(const char *name, size_t len) {
    for (int i = 0; i < N_OPTIONS; i++)
        if (OPTIONS[i].kind != K_SECTION && strlen(OPTIONS[i].name) == len &&
            strncmp(OPTIONS[i].name, name, len) == 0)
            return &OPTIONS[i];
    return NULL;
}

static void set_defaults(void) {
    for (int i = 0; i < N_OPTIONS; i++)
        if (OPTIONS[i].kind != K_SECTION) set_option(&OPTIONS[i], OPTIONS[i].def);
}

/* Options whose values are paths (or comma-separated lists of paths): args.txt keeps them
 * absolute, so that a run resumes from any working directory. */
static int is_path_option(const char *name) {
    static const char *names[] = {"weights", "data", "data-csv",  "cifar-bin", "val",
                                  "test",    "out",  "cache-dir", "pseudo",    "pseudo-eval"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(names[i], name) == 0) return 1;
    return 0;
}

/* One args.txt line "--name=value": the value with backslash and newline escaped, relative
 * paths made absolute. */
static void record_option(Buf *b, const OptionDef *o, const char *v) {
    char cwd[4096];
    buf_printf(b, "--%s=", o->name);
    int paths =
        is_path_option(o->name) && !(strcmp(o->name, "weights") == 0 && strcmp(v, "none") == 0);
    if (paths && !getcwd(cwd, sizeof cwd)) cwd[0] = 0;
    for (const char *item = v; *item;) {
        size_t n = paths ? strcspn(item, ",") : strlen(item);
        if (paths && n > 0 && item[0] != '/' && cwd[0]) buf_printf(b, "%s/", cwd);
        for (size_t i = 0; i < n; i++) {
            if (item[i] == '\\')
                buf_put(b, "\\\\", 2);
            else if (item[i] == '\n')
                buf_put(b, "\\n", 2);
            else
                buf_put(b, &item[i], 1);
        }
        item += n;
        if (*item == ',') buf_put(b, item++, 1);
    }
    buf_put(b, "\n", 1);
}

/* --name value | --name=value | --flag. Strings point into argv (kept alive by main). When
 * record is given, each option but --kill-after-epochs and --resume is appended to it as an
 * args.txt line. */
static int parse_args(int argc, char **argv, Buf *record) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            rn_set_error("unexpected argument '%s' (options start with --; see --help)", a);
            return -1;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const OptionDef *o = find_option(name, len);
        if (!o) {
            rn_set_error("unknown option '%s' (see --help)", a);
            return -1;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v && o->kind == K_FLAG) v = "1";
        if (!v) {
            if (i + 1 >= argc) {
                rn_set_error("--%s needs a value", o->name);
                return -1;
            }
            v = argv[++i];
        }
        if (set_option(o, v) != 0) return -1;
        if (record && strcmp(o->name, "kill-after-epochs") != 0 && strcmp(o->name, "resume") != 0)
            record_option(record, o, v);
    }
    return 0;
}

static void print_help(void) {
    printf("usage: train --arch ARCH --weights W.safetensors --data DIR --out RUN/ [options]\n"
           "       train --resume RUN/\n"
           "       train --make-demo-data DIR\n\n"
           "Transfer learning with a ResNet: by default the backbone is frozen, its pooled\n"
           "features are computed once and cached, and an MLP head is trained on them with\n"
           "early stopping. Writes RUN/model.safetensors (for ./infer), RUN/metrics.json,\n"
           "RUN/report.html and RUN/checkpoint.safetensors (every epoch).\n");
    for (int i = 0; i < N_OPTIONS; i++) {
        const OptionDef *o = &OPTIONS[i];
        if (o->kind == K_SECTION) {
            printf("\n%s:\n", o->name);
            continue;
        }
        char left[64];
        snprintf(left, sizeof left, "--%s%s", o->name,
                 o->kind == K_FLAG  ? ""
                 : o->kind == K_STR ? " S"
                 : o->kind == K_INT ? " N"
                                    : " X");
        char text[512];
        snprintf(text, sizeof text, "%s%s%s%s", o->help,
                 o->kind != K_FLAG && o->def[0] ? " [default: " : "",
                 o->kind != K_FLAG ? o->def : "", o->kind != K_FLAG && o->def[0] ? "]" : "");
        /* word-wrap the description at 96 columns, continuation lines indented */
        printf("  %-22s", left);
        int col = 24;
        for (const char *w = text; *w;) {
            while (*w == ' ') w++;
            int len = (int)strcspn(w, " ");
            if (col + 1 + len > 96 && col > 24) {
                printf("\n%24s", "");
                col = 24;
            }
            printf(" %.*s", len, w);
            col += 1 + len;
            w += len;
        }
        printf("\n");
    }
    /* the architectures and their freeze groups, from the registry */
    printf("\nArchitectures (--arch) and their freeze groups (--unfreeze):\n");
    const char *family = "";
    for (int i = 0; i < arch_count(); i++) {
        const ArchSpec *a = arch_at(i);
        if (strcmp(a->family, family) == 0) continue;
        family = a->family;
        Buf names = {0}, groups = {0};
        for (int j = i; j < arch_count() && strcmp(arch_at(j)->family, family) == 0; j++)
            buf_printf(&names, "%s%s", j > i ? ", " : "", arch_at(j)->name);
        Net *net = resnet_create(a->name, 2, NULL, 0);
        if (net) net_groups_json(net, &groups);
        printf("  %s\n      groups %s\n", names.data, groups.data ? groups.data : "?");
        net_free(net);
        buf_free(&names);
        buf_free(&groups);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Procedural demo data: four shape classes, a labelled set and two shifted domains      */
/* ------------------------------------------------------------------------------------ */

#define DEMO_SIZE 64
static const char *DEMO_CLASSES[4] = {"circle", "square", "triangle", "stripes"};

/* The shifts grow from domain to domain (gradual domain adaptation): a new palette and
 * more noise, then also less contrast and blur. */
typedef struct {
    const char *name;
    int rotate_channels; /* palette shift: (r, g, b) -> (g, b, r) */
    float noise;         /* Gaussian pixel noise, 0-255 scale */
    float fade;          /* shape colour pulled this fraction towards the background */
    int blur;            /* 3x3 box blur */
} DemoDomain;

static const DemoDomain DEMO_DOMAINS[3] = {
    {"train", 0, 6.0f, 0.0f, 0},
    {"shift1_palette_noise", 1, 18.0f, 0.0f, 0},
    {"shift2_faded_blur", 1, 24.0f, 0.4f, 1},
};

/* Is pixel offset (dx, dy) from the shape centre inside shape `cls`? */
static int demo_inside(int cls, float dx, float dy, float rad, float ang, float period) {
    float c = cosf(ang), s = sinf(ang);
    float u = dx * c + dy * s, v = -dx * s + dy * c;
    switch (cls) {
    case 0: return dx * dx + dy * dy <= rad * rad;
    case 1: return fabsf(u) <= 0.85f * rad && fabsf(v) <= 0.85f * rad;
    case 2: {
        /* equilateral triangle: inside when on the inner side of all three edges */
        float px[3], py[3];
        for (int k = 0; k < 3; k++) {
            px[k] = 1.1f * rad * cosf(ang + k * 2.0943951f);
            py[k] = 1.1f * rad * sinf(ang + k * 2.0943951f);
        }
        for (int k = 0; k < 3; k++) {
            int j = (k + 1) % 3;
            if ((px[j] - px[k]) * (dy - py[k]) - (py[j] - py[k]) * (dx - px[k]) < 0) return 0;
        }
        return 1;
    }
    default: /* stripes inside a disc */
        if (dx * dx + dy * dy > rad * rad * 1.2f) return 0;
        return fmodf(u + 1000.0f * period, period) < 0.5f * period;
    }
}

static void demo_draw(Rng *r, int cls, const DemoDomain *dom, Image *img) {
    const int S = DEMO_SIZE;
    float bg[3], fg[3], grad[2];
    for (int c = 0; c < 3; c++) {
        bg[c] = 160 + 90 * rng_uniform(r);
        fg[c] = 10 + 120 * rng_uniform(r);
        fg[c] += dom->fade * (bg[c] - fg[c]);
    }
    grad[0] = (rng_uniform(r) - 0.5f) * 1.2f;
    grad[1] = (rng_uniform(r) - 0.5f) * 1.2f;
    float rad = 10 + 11 * rng_uniform(r);
    float cx = rad + 2 + (S - 2 * rad - 4) * rng_uniform(r);
    float cy = rad + 2 + (S - 2 * rad - 4) * rng_uniform(r);
    float ang = 6.2831853f * rng_uniform(r), period = 4 + 4 * rng_uniform(r);
    float *pix = rn_alloc(sizeof(float) * S * S * 3);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            int in = demo_inside(cls, x + 0.5f - cx, y + 0.5f - cy, rad, ang, period);
            float shade = grad[0] * (x - S / 2) + grad[1] * (y - S / 2);
            for (int c = 0; c < 3; c++)
                pix[(y * S + x) * 3 + c] =
                    (in ? fg[c] : bg[c] + shade) + dom->noise * rng_normal(r);
        }
    img->w = img->h = S;
    img->rgb = rn_alloc((size_t)S * S * 3);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++)
            for (int c = 0; c < 3; c++) {
                int sc = dom->rotate_channels ? (c + 1) % 3 : c;
                float v = 0;
                if (dom->blur) {
                    int cnt = 0;
                    for (int yy = y - 1; yy <= y + 1; yy++)
                        for (int xx = x - 1; xx <= x + 1; xx++)
                            if (yy >= 0 && yy < S && xx >= 0 && xx < S) {
                                v += pix[(yy * S + xx) * 3 + sc];
                                cnt++;
                            }
                    v /= cnt;
                } else {
                    v = pix[(y * S + x) * 3 + sc];
                }
                img->rgb[(y * S + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f);
            }
    free(pix);
}

static int demo_write(Rng *r, int cls, const DemoDomain *dom, const char *dir, const char *stem,
                      int index) {
    char path[1024];
    if (mkdir_p(dir) != 0) return -1;
    snprintf(path, sizeof path, "%s/%s_%04d.png", dir, stem, index);
    Image img;
    demo_draw(r, cls, dom, &img);
    int rc = image_write_png(path, &img);
    image_free(&img);
    return rc;
}

/* DIR/train/<class>/ (labelled), and for each shifted domain DIR/<domain>/unlabelled/
 * (flat, shuffled class order) plus DIR/<domain>/heldout/<class>/ (labelled, for scoring). */
static int make_demo_data(const char *root, int per_class, uint64_t seed) {
    char dir[1024];
    int n_unlab = per_class / 2 > 4 ? per_class / 2 : 4;
    int n_held = per_class / 4 > 4 ? per_class / 4 : 4;
    for (int d = 0; d < 3; d++) {
        const DemoDomain *dom = &DEMO_DOMAINS[d];
        Rng r;
        rng_seed(&r, seed * 1000003u + (uint64_t)d);
        if (d == 0) {
            for (int c = 0; c < 4; c++)
                for (int i = 0; i < per_class; i++) {
                    snprintf(dir, sizeof dir, "%s/train/%s", root, DEMO_CLASSES[c]);
                    if (demo_write(&r, c, dom, dir, DEMO_CLASSES[c], i) != 0) return -1;
                }
            continue;
        }
        int n = 4 * n_unlab, *order = rn_alloc(sizeof(int) * n);
        for (int i = 0; i < n; i++) order[i] = i % 4;
        rng_shuffle(&r, order, n);
        snprintf(dir, sizeof dir, "%s/%s/unlabelled", root, dom->name);
        for (int i = 0; i < n; i++)
            if (demo_write(&r, order[i], dom, dir, "img", i) != 0) {
                free(order);
                return -1;
            }
        free(order);
        for (int c = 0; c < 4; c++)
            for (int i = 0; i < n_held; i++) {
                snprintf(dir, sizeof dir, "%s/%s/heldout/%s", root, dom->name, DEMO_CLASSES[c]);
                if (demo_write(&r, c, dom, dir, DEMO_CLASSES[c], i) != 0) return -1;
            }
    }
    printf("demo data in %s: train/ (4 classes x %d), %s/ and %s/ (unlabelled %d, held-out "
           "4 x %d each)\n",
           root, per_class, DEMO_DOMAINS[1].name, DEMO_DOMAINS[2].name, 4 * n_unlab, n_held);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Small helpers                                                                         */
/* ------------------------------------------------------------------------------------ */

/* Input files that could not be used (each reported on stderr when it happened): the run
 * goes on, and the exit status says so at the end. */
static long input_failures;

/* Split "a,b,c" into a malloc'd array of malloc'd strings; returns the count. */
static int split_list(const char *s, char ***out) {
    int n = 0;
    char **l = NULL;
    while (s && *s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        l = rn_realloc(l, sizeof(char *) * (n + 1));
        l[n] = rn_alloc(len + 1);
        memcpy(l[n], s, len);
        l[n++][len] = 0;
        s = e ? e + 1 : NULL;
    }
    *out = l;
    return n;
}

static void free_list(char **l, int n) {
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static uint64_t fnv1a_str(uint64_t h, const char *s) { return fnv1a(h, s, strlen(s) + 1); }

/* Numbers enter cache keys as their little-endian bytes, so a key (and the cache file
 * holding it) is the same on every host. */
static uint64_t fnv1a_le(uint64_t h, const void *values, size_t count, size_t size) {
    uint8_t b[64];
    for (size_t i = 0; i < count; i++) {
        rn_le_store(b, (const uint8_t *)values + i * size, 1, size);
        h = fnv1a(h, b, size);
    }
    return h;
}

/* A file's identity for cache keys: path, size and modification time. */
static uint64_t fnv1a_file(uint64_t h, const char *path) {
    RnFileInfo fi;
    int64_t v[3] = {0, 0, 0};
    if (rn_file_info(path, &fi) == 0) {
        v[0] = fi.size;
        v[1] = fi.mtime_sec;
        v[2] = fi.mtime_nsec;
    }
    return fnv1a_le(fnv1a_str(h, path), v, 3, sizeof v[0]);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static const char *base_name(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *s = path + n;
    while (s > path && s[-1] != '/') s--;
    return s;
}

/* The folder holding `path` ("." when none). */
static void parent_dir(const char *path, char *out, size_t len) {
    snprintf(out, len, "%s", path);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') out[--n] = 0;
    char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, len, ".");
    else if (slash == out)
        out[1] = 0;
    else
        *slash = 0;
}

static int argmax(const float *x, int k) {
    int best = 0;
    for (int i = 1; i < k; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Learning-rate schedules, evaluated per epoch within a phase. */
typedef enum { SCHED_CONSTANT, SCHED_STEP, SCHED_COSINE, SCHED_PLATEAU } SchedKind;
typedef struct {
    SchedKind kind;
    int every, patience;
    float gamma, factor;
} Schedule;

static int schedule_parse(const char *s, Schedule *sc) {
    memset(sc, 0, sizeof *sc);
    if (strcmp(s, "constant") == 0)
        sc->kind = SCHED_CONSTANT;
    else if (strcmp(s, "cosine") == 0)
        sc->kind = SCHED_COSINE;
    else if (sscanf(s, "step:%d:%f", &sc->every, &sc->gamma) == 2 && sc->every > 0)
        sc->kind = SCHED_STEP;
    else if (sscanf(s, "plateau:%d:%f", &sc->patience, &sc->factor) == 2 && sc->patience >= 0 &&
             sc->factor > 0 && sc->factor < 1)
        sc->kind = SCHED_PLATEAU;
    else {
        rn_set_error("--schedule: expected constant, step:EVERY:GAMMA, cosine or "
                     "plateau:PATIENCE:FACTOR, found '%s'",
                     s);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Trainer: the network, its head-on-features twin, and the data they see               */
/* ------------------------------------------------------------------------------------ */

/* A labelled (or unlabelled) set of images and, once computed, their backbone features. */
typedef struct {
    const char *name;
    Dataset d;
    float *feats; /* [d.n, fdim] features of the frozen backbone, NULL until computed */
    uint8_t *ok;  /* [d.n] the item decoded (features valid) */
} Split;

typedef struct {
    Net *net;       /* the full network */
    Net *head;      /* the head alone, trained on cached features (frozen backbone) */
    int full;       /* 1: the current phase trains `net` on images end to end */
    int feat_node;  /* node whose output feeds the head */
    int fc, fh, fw; /* its per-sample shape */
    size_t fdim;
    Optimizer *opt;
    Preprocess prep;
    Augment aug;
    int k, batch, threads;
    uint64_t seed;
    float *class_w; /* NULL = unweighted */
    float smoothing;
    uint64_t backbone_key; /* hash of weights file identity and arch, for the feature cache */
    char cache_dir[512];
    int use_cache;
    /* batch buffers */
    float *x, *feat, *probs, *dlogits;
    int *labels, *idx;
} Trainer;

static Net *trained_net(Trainer *t) { return t->full ? t->net : t->head; }

/* A head on pooled features is a few small matrix products per batch, where threads gain
 * nothing and each parallel region's barrier costs a scheduler time slice when the cores
 * are busy (libgomp spins: 4.6 s instead of 0.05 s per epoch on 8,500 features). Such
 * heads run on one thread, which also makes them repeat bit for bit at any --threads.
 * Returns the thread count to restore with head_threads_end. */
static int head_threads_begin(const Trainer *t) {
    int saved = rn_threads();
#ifdef _OPENMP
    if (t->fh * t->fw == 1) omp_set_num_threads(1);
#endif
    return saved;
}

static void head_threads_end(int saved) {
#ifdef _OPENMP
    omp_set_num_threads(saved);
#else
    (void)saved;
#endif
}

/* One training step on n samples: adds the mean loss times n to *sum and counts correct
 * predictions. The optimizer updates each layer as backward reaches it, so no gradient
 * buffers for the whole network are needed (net_backward_step). */
static int train_step(Trainer *t, Net *net, const float *x, const int *labels, int n, double *sum,
                      int *correct) {
    const float *logits = net_forward(net, x, n, 1);
    if (!logits) return -1;
    float loss =
        softmax_cross_entropy_forward(n, t->k, logits, labels, t->class_w, t->smoothing, t->probs);
    softmax_cross_entropy_backward(n, t->k, t->probs, labels, t->class_w, t->smoothing, t->dlogits);
    if (net_backward_step(net, t->dlogits, n, t->opt) != 0) return -1;
    for (int i = 0; i < n; i++) *correct += argmax(t->probs + (size_t)i * t->k, t->k) == labels[i];
    *sum += (double)loss * n;
    return 0;
}

/* Keep only labelled samples of a loaded batch (moves x rows down). */
static int compact_labelled(float *x, size_t row, int *labels, int *idx, int n) {
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (labels[i] < 0) continue;
        if (m != i) {
            memmove(x + (size_t)m * row, x + (size_t)i * row, row * sizeof(float));
            labels[m] = labels[i];
            idx[m] = idx[i];
        }
        m++;
    }
    return m;
}

/* ---------------------------------------------------------------- feature cache */

static uint64_t features_key(const Trainer *t, const Dataset *d) {
    uint64_t h = fnv1a_str(1469598103934665603ULL, "resnet-c features v1");
    int32_t v[6] = {t->feat_node, (int32_t)t->fdim, (int32_t)t->prep.kind, t->prep.size, 0, d->n};
    memcpy(&v[4], &t->prep.crop_pct, sizeof(float));
    h = fnv1a_le(h, &t->backbone_key, 1, sizeof t->backbone_key);
    h = fnv1a_le(h, v, 6, sizeof v[0]);
    for (int i = 0; i < d->n; i++) {
        if (d->paths && d->paths[i])
            h = fnv1a_file(h, d->paths[i]);
        else if (d->pixels)
            h = fnv1a(h, d->pixels + (size_t)i * d->pixel_w * d->pixel_h * 3,
                      (size_t)d->pixel_w * d->pixel_h * 3);
    }
    return h;
}

/* File: "RNFEAT1\n", u64 key, i64 n, i64 dim, n bytes ok, n * dim float32, all
 * little-endian. */
static int cache_read(const char *path, uint64_t key, Split *s, size_t fdim) {
    size_t len = 0;
    uint8_t *buf = read_file(path, &len);
    if (!buf) return -1;
    size_t n = (size_t)s->d.n, need = 32 + n + n * fdim * sizeof(float);
    uint64_t k = 0;
    int64_t hn = 0, hd = 0;
    if (len >= 32) {
        rn_le_load(&k, buf + 8, 1, 8);
        rn_le_load(&hn, buf + 16, 1, 8);
        rn_le_load(&hd, buf + 24, 1, 8);
    }
    if (len != need || memcmp(buf, "RNFEAT1\n", 8) != 0 || k != key || hn != (int64_t)n ||
        hd != (int64_t)fdim) {
        free(buf);
        return -1;
    }
    memcpy(s->ok, buf + 32, n);
    rn_le_load(s->feats, buf + 32 + n, n * fdim, sizeof(float));
    free(buf);
    return 0;
}

static int cache_write(const char *path, uint64_t key, const Split *s, size_t fdim) {
    size_t n = (size_t)s->d.n, len = 32 + n + n * fdim * sizeof(float);
    uint8_t *buf = rn_alloc(len);
    if (!buf) {
        rn_set_error("%s: cannot allocate %zu bytes", path, len);
        return -1;
    }
    int64_t hn = (int64_t)n, hd = (int64_t)fdim;
    memcpy(buf, "RNFEAT1\n", 8);
    rn_le_store(buf + 8, &key, 1, 8);
    rn_le_store(buf + 16, &hn, 1, 8);
    rn_le_store(buf + 24, &hd, 1, 8);
    memcpy(buf + 32, s->ok, n);
    rn_le_store(buf + 32 + n, s->feats, n * fdim, sizeof(float));
    int rc = write_file_atomic(path, buf, len);
    free(buf);
    return rc;
}

/* Batch rows copied to their dataset items' rows (net_forward_dataset's visitor); with
 * probs set, the rows are logits and land as softmax probabilities. */
typedef struct {
    float *rows;
    uint8_t *ok;
    size_t width;
    float *probs;
} RowsCtx;

static void scatter_rows(void *ctx, int n, const int *idx, const int *labels, const float *out) {
    RowsCtx *c = ctx;
    if (c->probs) {
        softmax_rows(n, (int)c->width, out, c->probs);
        out = c->probs;
    }
    for (int i = 0; i < n; i++) {
        memcpy(c->rows + (size_t)idx[i] * c->width, out + (size_t)i * c->width,
               c->width * sizeof(float));
        c->ok[idx[i]] = 1;
    }
    (void)labels;
}

/* Input files that failed to decode, each counted once in input_failures however many
 * passes read it (an epoch, an evaluation, a feature extraction). ok[i]: item i decoded. */
static char **failed_paths;
static int n_failed_paths;

static void note_failed(const Dataset *d, const uint8_t *ok) {
    for (int i = 0; i < d->n; i++) {
        if (ok[i] || !d->paths) continue;
        int known = 0;
        for (int j = 0; j < n_failed_paths && !known; j++)
            known = strcmp(failed_paths[j], d->paths[i]) == 0;
        if (known) continue;
        failed_paths = rn_realloc(failed_paths, sizeof(char *) * (size_t)(n_failed_paths + 1));
        failed_paths[n_failed_paths++] = rn_strdup(d->paths[i]);
        input_failures++;
    }
}

/* Backbone features of every item (eval transform, eval mode), from the cache when the
 * same weights, arch, preprocessing and files were seen before. */
static int compute_features(Trainer *t, Split *s) {
    if (s->feats) return 0;
    size_t n = (size_t)s->d.n;
    s->feats = rn_calloc(n ? n * t->fdim : 1, sizeof(float));
    s->ok = rn_calloc(n ? n : 1, 1);
    if (n == 0) return 0;
    uint64_t key = features_key(t, &s->d);
    char path[1024];
    snprintf(path, sizeof path, "%s/features-%016llx.bin", t->cache_dir, (unsigned long long)key);
    /* rank 0 reads the cache and tells the others, so all ranks take the same path */
    long hit = t->use_cache && dist_is_root() && cache_read(path, key, s, t->fdim) == 0;
    dist_broadcast(&hit, sizeof hit, 0);
    if (hit) {
        dist_broadcast(s->ok, n, 0);
        dist_broadcast(s->feats, n * t->fdim * sizeof(float), 0);
        fprintf(stderr, "features of %s (%zu images): cached in %s\n", s->name, n, path);
        return 0;
    }
    /* always the inference plan, whatever ran before: a plan's fusion and Winograd choices
     * change the last bits of the outputs */
    if (net_plan(t->net, t->batch, t->prep.size, t->prep.size, 0) != 0) return -1;
    char label[64];
    snprintf(label, sizeof label, "features %s", s->name);
    RowsCtx ctx = {s->feats, s->ok, t->fdim, NULL};
    int failed = net_forward_dataset(t->net, t->feat_node, &s->d, &t->prep, t->batch, t->threads,
                                     label, scatter_rows, &ctx);
    if (failed < 0) return -1;
    /* each rank computed its run of batches: all rows, in dataset order, on every rank */
    dist_allgather_rows(s->feats, t->fdim * sizeof(float), (int)n, t->batch);
    dist_allgather_rows(s->ok, 1, (int)n, t->batch);
    note_failed(&s->d, s->ok);
    if (t->use_cache && dist_is_root()) {
        if (mkdir_p(t->cache_dir) != 0 || cache_write(path, key, s, t->fdim) != 0)
            fprintf(stderr, "warning: feature cache not written: %s\n", rn_error());
        else
            fprintf(stderr, "features of %s cached in %s\n", s->name, path);
    }
    return 0;
}

/* ---------------------------------------------------------------- epochs and predictions */

/* One training epoch over the labelled items of s. epoch_id seeds order and augmentation. */
static int train_epoch(Trainer *t, Split *s, int epoch_id, double *loss, double *acc) {
    Net *net = trained_net(t);
    double sum = 0;
    long seen = 0;
    int correct = 0;
    size_t img_row = (size_t)3 * t->prep.size * t->prep.size;
    if (!t->full && !t->aug.enabled) {
        /* head on cached features: shuffle the usable items, gather batches */
        if (compute_features(t, s) != 0) return -1;
        int *items = rn_alloc(sizeof(int) * (s->d.n + 1)), m = 0;
        for (int i = 0; i < s->d.n; i++)
            if (s->ok[i] && s->d.labels[i] >= 0) items[m++] = i;
        Rng r;
        rng_seed(&r, t->seed * 7919u + (uint64_t)epoch_id);
        rng_shuffle(&r, items, m);
        int saved_threads = head_threads_begin(t);
        for (int b = 0; b < m; b += t->batch) {
            int n = m - b < t->batch ? m - b : t->batch;
            if (n < 2 && m >= 2) break; /* batch norm needs two samples */
            for (int i = 0; i < n; i++) {
                memcpy(t->feat + (size_t)i * t->fdim, s->feats + (size_t)items[b + i] * t->fdim,
                       t->fdim * sizeof(float));
                t->labels[i] = s->d.labels[items[b + i]];
            }
            if (train_step(t, net, t->feat, t->labels, n, &sum, &correct) != 0) {
                head_threads_end(saved_threads);
                free(items);
                return -1;
            }
            seen += n;
        }
        head_threads_end(saved_threads);
        free(items);
    } else {
        /* images through the loader: end to end, or the frozen backbone feeding the head */
        if (net_plan(t->net, t->batch, t->prep.size, t->prep.size, t->full) != 0) return -1;
        Loader *l = loader_create(&s->d, &t->prep, &t->aug, t->batch, 1, t->seed, t->threads);
        if (!l) return -1;
        /* data-parallel (dist.h): each rank loads its slice of every global batch */
        const int ranks = dist_size(), rank = dist_rank();
        if (ranks > 1) loader_shard(l, rank, ranks, 0);
        loader_start_epoch(l, epoch_id);
        Progress p;
        progress_start(&p, t->full ? "train" : "train (aug)", s->d.n);
        long done = 0, *counts = rn_alloc(sizeof(long) * 2 * (size_t)ranks);
        int got;
        uint8_t *decoded = rn_calloc((size_t)s->d.n + 1, 1);
        while (loader_next_batch(l, t->x, t->labels, t->idx, &got)) {
            for (int i = 0; i < got; i++) decoded[t->idx[i]] = 1;
            int n = compact_labelled(t->x, img_row, t->labels, t->idx, got);
            /* the global batch from every rank's counts; one with no sample stops the batch
             * for all (net_forward needs one), where one process would have trained on it */
            long mine[2] = {got, n}, all_n = 0, before = 0, empty = 0;
            dist_allgather(mine, counts, sizeof mine);
            for (int r = 0; r < ranks; r++) {
                done += counts[2 * r];
                all_n += counts[2 * r + 1];
                before += r < rank ? counts[2 * r + 1] : 0;
                empty += counts[2 * r + 1] == 0;
            }
            if ((all_n >= 2 || (all_n == 1 && s->d.n == 1)) && (ranks == 1 || empty == 0)) {
                const float *x = t->x;
                if (!t->full) {
                    const float *f = net_forward_upto(t->net, t->x, n, 0, t->feat_node);
                    memcpy(t->feat, f, (size_t)n * t->fdim * sizeof(float));
                    x = t->feat;
                }
                double step_sum = 0; /* n times the global batch's mean loss */
                dist_step_begin((int)before, (int)(all_n - before - n));
                int src = train_step(t, net, x, t->labels, n, &step_sum, &correct);
                dist_step_end();
                if (src != 0) {
                    loader_free(l);
                    rn_free(decoded);
                    rn_free(counts);
                    return -1;
                }
                sum += step_sum / n * all_n;
                seen += all_n;
            }
            char extra[64];
            snprintf(extra, sizeof extra, "loss %.4f", seen ? sum / seen : 0.0);
            progress_update(&p, done, extra);
        }
        progress_finish(&p, NULL);
        long right = correct;
        dist_allreduce_longs(&right, 1);
        correct = (int)right;
        if (ranks > 1) { /* an item is decoded when the rank that had it decoded it */
            long *any = rn_alloc(sizeof(long) * ((size_t)s->d.n + 1));
            for (int i = 0; i < s->d.n; i++) any[i] = decoded[i];
            dist_allreduce_longs(any, (size_t)s->d.n);
            for (int i = 0; i < s->d.n; i++) decoded[i] = any[i] > 0;
            rn_free(any);
        }
        note_failed(&s->d, decoded);
        rn_free(decoded);
        rn_free(counts);
        loader_free(l);
    }
    *loss = seen ? sum / seen : NAN;
    *acc = seen ? (double)correct / seen : NAN;
    return 0;
}

/* Class probabilities of every item of s ([d.n, k], rows of failed items left 0, ok[i] = 0)
 * with the current model in eval mode. Returns the mean cross-entropy over labelled items
 * (NAN when there are none) through *loss. */
static int predict(Trainer *t, Split *s, float *probs, uint8_t *ok, double *loss) {
    int n_items = s->d.n;
    memset(probs, 0, sizeof(float) * (size_t)n_items * t->k);
    memset(ok, 0, (size_t)n_items);
    if (!t->full) {
        if (compute_features(t, s) != 0) return -1;
        int saved_threads = head_threads_begin(t);
        for (int b = 0; b < n_items; b += t->batch) {
            int n = n_items - b < t->batch ? n_items - b : t->batch;
            const float *logits = net_forward(t->head, s->feats + (size_t)b * t->fdim, n, 0);
            softmax_rows(n, t->k, logits, probs + (size_t)b * t->k);
            memcpy(ok + b, s->ok + b, (size_t)n);
        }
        head_threads_end(saved_threads);
    } else {
        /* the inference plan, as ./infer uses: the same losses whether or not this process
         * trained before (a resumed run with nothing left to train did not) */
        if (net_plan(t->net, t->batch, t->prep.size, t->prep.size, 0) != 0) return -1;
        char label[64];
        snprintf(label, sizeof label, "eval %s", s->name);
        RowsCtx ctx = {probs, ok, (size_t)t->k, t->probs};
        int failed = net_forward_dataset(t->net, -1, &s->d, &t->prep, t->batch, t->threads, label,
                                         scatter_rows, &ctx);
        if (failed < 0) return -1;
        dist_allgather_rows(probs, sizeof(float) * t->k, n_items, t->batch);
        dist_allgather_rows(ok, 1, n_items, t->batch);
        note_failed(&s->d, ok);
    }
    double sum = 0;
    long m = 0;
    for (int i = 0; i < n_items; i++) {
        int y = s->d.labels[i];
        if (!ok[i] || y < 0) continue;
        float p = probs[(size_t)i * t->k + y];
        sum += -log(p > 1e-12f ? p : 1e-12f);
        m++;
    }
    *loss = m ? sum / m : NAN;
    return 0;
}

/* Loss and accuracy of s; metrics too when m != NULL (labelled, decodable items only). */
static int evaluate(Trainer *t, Split *s, double *loss, double *acc, Metrics *m, float **probs_out,
                    uint8_t **ok_out) {
    float *probs = rn_alloc(sizeof(float) * ((size_t)s->d.n * t->k + 1));
    uint8_t *ok = rn_alloc((size_t)s->d.n + 1);
    if (predict(t, s, probs, ok, loss) != 0) {
        free(probs);
        free(ok);
        return -1;
    }
    int n = 0, correct = 0;
    float *cp = rn_alloc(sizeof(float) * ((size_t)s->d.n * t->k + 1));
    int *cl = rn_alloc(sizeof(int) * (s->d.n + 1));
    for (int i = 0; i < s->d.n; i++) {
        if (!ok[i] || s->d.labels[i] < 0) continue;
        memcpy(cp + (size_t)n * t->k, probs + (size_t)i * t->k, sizeof(float) * t->k);
        cl[n] = s->d.labels[i];
        correct += argmax(cp + (size_t)n * t->k, t->k) == cl[n];
        n++;
    }
    *acc = n ? (double)correct / n : NAN;
    if (m) metrics_compute(n, t->k, cp, cl, t->k < 5 ? t->k : 5, *loss, m);
    free(cp);
    free(cl);
    if (probs_out)
        *probs_out = probs;
    else
        free(probs);
    if (ok_out)
        *ok_out = ok;
    else
        free(ok);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Phases, early stopping, checkpoints and resume                                        */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    char dir[512]; /* RUN/ */
    EpochRecord *hist;
    int n_hist, cap_hist;
    double *dacc;
    int n_dom;                      /* (n_dom x n_dom) accuracy matrix, NAN = unknown */
    int resume_phase, resume_epoch; /* from RUN/checkpoint.safetensors; 0 = fresh start */
    StFile ck;                      /* its metadata */
    int epochs_run;                 /* in this process (for --kill-after-epochs) */
    char id[32];                    /* a new run's id (A.run_id points here) */
    double t0;
} Run;

typedef struct {
    int phase, epochs;
    float lr;
    Schedule sched;
    int patience; /* 0: no early stopping, no restore */
    const int *pseudo_labels;
    int n_pseudo; /* saved with the checkpoint of pseudo phases */
} PhaseCfg;

typedef struct {         /* everything an epoch loop needs to continue */
    int epoch;           /* epochs done */
    double best;         /* best monitored loss (val, or train without val) */
    int best_epoch, bad; /* early stopping */
    double plateau_best;
    int plateau_bad;
    float lr_scale;
} PhaseState;

static void history_add(Run *run, const EpochRecord *e) {
    if (run->n_hist == run->cap_hist) {
        run->cap_hist = run->cap_hist ? 2 * run->cap_hist : 64;
        run->hist = rn_realloc(run->hist, sizeof(EpochRecord) * run->cap_hist);
    }
    run->hist[run->n_hist++] = *e;
}

static void history_format(const Run *run, Buf *b) {
    for (int i = 0; i < run->n_hist; i++) {
        const EpochRecord *e = &run->hist[i];
        buf_printf(b, "%d %d %.17g %.17g %.17g %.17g %.17g %.17g;", e->epoch, e->stage,
                   e->train_loss, e->train_acc, e->val_loss, e->val_acc, e->lr, e->seconds);
    }
    buf_put(b, "", 1);
}

static int history_parse(Run *run, const char *s) {
    run->n_hist = 0;
    while (s && *s) {
        EpochRecord e;
        char *end;
        e.epoch = (int)strtol(s, &end, 10);
        e.stage = (int)strtol(end, &end, 10);
        double *f[6] = {&e.train_loss, &e.train_acc, &e.val_loss, &e.val_acc, &e.lr, &e.seconds};
        for (int i = 0; i < 6; i++) *f[i] = strtod(end, &end);
        if (*end != ';') {
            rn_set_error("checkpoint: bad history metadata near '%.20s'", s);
            return -1;
        }
        history_add(run, &e);
        s = end + 1;
    }
    return 0;
}

static void doubles_format(const double *x, int n, Buf *b) {
    for (int i = 0; i < n; i++) buf_printf(b, "%s%.17g", i ? "," : "", x[i]);
    buf_put(b, "", 1);
}

static void ints_format(const int *x, int n, Buf *b) {
    for (int i = 0; i < n; i++) buf_printf(b, "%s%d", i ? "," : "", x[i]);
    buf_put(b, "", 1);
}

/* Parse exactly n comma-separated numbers. */
static int numbers_parse(const char *s, int n, double *x, int *xi) {
    for (int i = 0; i < n; i++) {
        char *end;
        double v = strtod(s ? s : "", &end);
        if (!s || end == s || (*end != (i + 1 < n ? ',' : '\0'))) {
            rn_set_error("checkpoint: expected %d comma-separated numbers in metadata", n);
            return -1;
        }
        if (xi && !(v >= INT32_MIN && v <= INT32_MAX)) {
            rn_set_error("checkpoint: metadata number %g is not an int", v);
            return -1;
        }
        if (x) x[i] = v;
        if (xi) xi[i] = (int)v;
        s = end + 1;
    }
    return 0;
}

/* An integer (or any number, ints NULL) of the resumed checkpoint's metadata, in range. */
static int ck_meta(const StFile *f, const char *key, double lo, double hi, int *ints,
                   double *nums) {
    const char *v = st_meta(f, key);
    char *end = NULL;
    double x = v ? strtod(v, &end) : NAN;
    if (!v || end == v || *end || !(x >= lo && x <= hi) || (ints && x != floor(x))) {
        rn_set_error("%s: metadata \"%s\": expected %s in [%.10g, %.10g], found %s%s%s (a "
                     "damaged checkpoint, or not one of this run)",
                     f->path, key, ints ? "an integer" : "a number", lo, hi, v ? "\"" : "",
                     v ? v : "nothing", v ? "\"" : "");
        return -1;
    }
    if (ints) *ints = (int)x;
    if (nums) *nums = x;
    return 0;
}

static int save_checkpoint(Run *run, Trainer *t, const PhaseCfg *pc, const PhaseState *st) {
    char vals[9][64];
    snprintf(vals[0], 64, "%d", pc->phase);
    snprintf(vals[1], 64, "%d", st->epoch);
    snprintf(vals[2], 64, "%.17g", st->best);
    snprintf(vals[3], 64, "%d", st->best_epoch);
    snprintf(vals[4], 64, "%d", st->bad);
    snprintf(vals[5], 64, "%.17g", st->plateau_best);
    snprintf(vals[6], 64, "%d", st->plateau_bad);
    snprintf(vals[7], 64, "%.9g", st->lr_scale);
    snprintf(vals[8], 64, "%s", t->full ? "full" : "head");
    Buf hist = {0}, dacc = {0}, pl = {0};
    history_format(run, &hist);
    doubles_format(run->dacc, run->n_dom * run->n_dom, &dacc);
    ints_format(pc->pseudo_labels, pc->pseudo_labels ? pc->n_pseudo : 0, &pl);
    const char *keys[] = {"phase",        "epoch",         "best_loss", "best_epoch", "bad_epochs",
                          "plateau_best", "plateau_bad",   "lr_scale",  "net",        "history",
                          "domain_acc",   "pseudo_labels", "run_id"};
    const char *v[] = {vals[0], vals[1], vals[2],   vals[3],   vals[4], vals[5], vals[6],
                       vals[7], vals[8], hist.data, dacc.data, pl.data, A.run_id};
    char path[1024];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", run->dir);
    Net *net = trained_net(t);
    int rc = checkpoint_save(path, net, t->opt, NULL, keys, v, 13);
    buf_free(&hist);
    buf_free(&dacc);
    buf_free(&pl);
    return rc;
}

static float phase_lr(const PhaseCfg *pc, const PhaseState *st, int e) {
    switch (pc->sched.kind) {
    case SCHED_STEP: return pc->lr * powf(pc->sched.gamma, (float)(e / pc->sched.every));
    case SCHED_COSINE: return pc->lr * 0.5f * (1.0f + cosf(3.14159265f * e / pc->epochs));
    case SCHED_PLATEAU: return pc->lr * st->lr_scale;
    default: return pc->lr;
    }
}

/* Train the current model (head or full net) on `train` for pc->epochs, checkpointing each
 * epoch; with early stopping the best weights (RUN/best-phaseN.safetensors) come back at
 * the end. Continues from RUN/checkpoint.safetensors when it belongs to this phase. */
static int run_phase(Run *run, Trainer *t, const PhaseCfg *pc, Split *train, Split *val) {
    Net *net = trained_net(t);
    PhaseState st = {0, INFINITY, -1, 0, INFINITY, 0, 1.0f};
    char best_path[1024], ck_path[1024];
    snprintf(best_path, sizeof best_path, "%s/best-phase%d.safetensors", run->dir, pc->phase);
    snprintf(ck_path, sizeof ck_path, "%s/checkpoint.safetensors", run->dir);
    OptType ot = OPT_ADAM;
    opt_parse(A.opt, &ot);
    OptConfig oc = opt_default(ot, pc->lr);
    oc.weight_decay = A.weight_decay;
    if (ot == OPT_SGD) oc.momentum = A.momentum;
    optimizer_free(t->opt);
    t->opt = optimizer_create(net, &oc);
    if (run->resume_phase == pc->phase) {
        StFile meta;
        if (checkpoint_load(ck_path, net, t->opt, NULL, &meta) != 0) return -1;
        double lr_scale = 1;
        int bad = ck_meta(&meta, "epoch", 0, pc->epochs, &st.epoch, NULL) ||
                  ck_meta(&meta, "best_loss", -INFINITY, INFINITY, NULL, &st.best) ||
                  ck_meta(&meta, "best_epoch", -1, st.epoch - 1, &st.best_epoch, NULL) ||
                  ck_meta(&meta, "bad_epochs", 0, st.epoch, &st.bad, NULL) ||
                  ck_meta(&meta, "plateau_best", -INFINITY, INFINITY, NULL, &st.plateau_best) ||
                  ck_meta(&meta, "plateau_bad", 0, st.epoch, &st.plateau_bad, NULL) ||
                  ck_meta(&meta, "lr_scale", 0, 1, NULL, &lr_scale);
        st.lr_scale = (float)lr_scale;
        st_close(&meta);
        if (bad) return -1;
        run->resume_phase = 0;
        printf("resumed phase %d after epoch %d\n", pc->phase, st.epoch);
    }
    for (int e = st.epoch; e < pc->epochs; e++) {
        if (pc->patience > 0 && st.bad >= pc->patience) break;
        double t0 = rn_seconds();
        float lr = phase_lr(pc, &st, e);
        t->opt->cfg.lr = lr;
        EpochRecord rec = {e + 1, pc->phase, 0, 0, NAN, NAN, lr, 0};
        if (train_epoch(t, train, pc->phase * 100000 + e, &rec.train_loss, &rec.train_acc) != 0)
            return -1;
        if (val->d.n > 0 && evaluate(t, val, &rec.val_loss, &rec.val_acc, NULL, NULL, NULL) != 0)
            return -1;
        double monitored = isnan(rec.val_loss) ? rec.train_loss : rec.val_loss;
        int improved = monitored < st.best;
        if (improved) {
            st.best = monitored;
            st.best_epoch = e;
            st.bad = 0;
            if (pc->patience > 0 && dist_is_root() &&
                net_save_weights(net, best_path, NULL, NULL, 0) != 0)
                return -1;
            if (pc->patience > 0) dist_barrier(); /* written before any rank reads it */
        } else {
            st.bad++;
        }
        /* torch ReduceLROnPlateau: more than PATIENCE bad epochs scale the lr by FACTOR */
        if (pc->sched.kind == SCHED_PLATEAU) {
            if (monitored < st.plateau_best) {
                st.plateau_best = monitored;
                st.plateau_bad = 0;
            } else if (++st.plateau_bad > pc->sched.patience) {
                st.lr_scale *= pc->sched.factor;
                st.plateau_bad = 0;
            }
        }
        rec.seconds = rn_seconds() - t0;
        history_add(run, &rec);
        st.epoch = e + 1;
        printf("phase %d epoch %3d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  "
               "lr %.3g  %.1fs%s\n",
               pc->phase, e + 1, pc->epochs, rec.train_loss, rec.train_acc, rec.val_loss,
               rec.val_acc, lr, rec.seconds, improved ? "  *" : "");
        fflush(stdout);
        if (dist_is_root() && save_checkpoint(run, t, pc, &st) != 0) return -1;
        if (A.kill_after > 0 && ++run->epochs_run >= A.kill_after) {
            fprintf(stderr, "--kill-after-epochs %d: killing myself\n", A.kill_after);
            fflush(NULL);
            rn_kill_self();
        }
    }
    if (pc->patience > 0 && st.best_epoch >= 0 && file_exists(best_path)) {
        if (net_load_weights(net, best_path, 0) != 0) return -1;
        printf("phase %d: restored the best weights (epoch %d, %s loss %.4f)\n", pc->phase,
               st.best_epoch + 1, val->d.n > 0 ? "val" : "train", st.best);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* The job                                                                               */
/* ------------------------------------------------------------------------------------ */

static void split_free(Split *s) {
    dataset_free(&s->d);
    rn_free(s->feats);
    rn_free(s->ok);
    memset(s, 0, sizeof *s);
}

/* The first trainable group for "--unfreeze N|all|GROUP": the last N backbone groups that
 * hold parameters, every group, or the named group and those after it. */
static int unfreeze_stage(const Net *net, const char *spec, int *stage) {
    const int head = net_head_group(net);
    int present[RN_MAX_GROUPS] = {0}, list[RN_MAX_GROUPS], n = 0;
    for (int i = 0; i < net->n_params; i++)
        if (net->params[i].stage < head) present[net->params[i].stage] = 1;
    for (int s = 0; s < head; s++)
        if (present[s]) list[n++] = s;
    if (strcmp(spec, "all") == 0) {
        *stage = 0;
        return 0;
    }
    int named = net_find_group(net, spec);
    if (named >= 0) {
        *stage = named;
        return 0;
    }
    char *end;
    long k = strtol(spec, &end, 10);
    if (end == spec || *end || k < 0) {
        Buf groups = {0};
        net_groups_json(net, &groups);
        rn_set_error("--unfreeze: expected a number of groups, 'all' or a group name of %s "
                     "%s, found '%s'",
                     net->arch, groups.data, spec);
        buf_free(&groups);
        return -1;
    }
    *stage = k == 0 ? head : k >= n ? 0 : list[n - k];
    return 0;
}

/* Keep at most `limit` items per class, chosen with a seeded shuffle; order preserved. */
static void limit_per_class(Dataset *d, int limit, uint64_t seed) {
    int *order = rn_alloc(sizeof(int) * (d->n + 1));
    int *count = rn_calloc(d->n_classes + 1, sizeof(int));
    uint8_t *keep = rn_calloc(d->n + 1, 1);
    for (int i = 0; i < d->n; i++) order[i] = i;
    Rng r;
    rng_seed(&r, seed ^ 0x6c696d6974ULL);
    rng_shuffle(&r, order, d->n);
    for (int i = 0; i < d->n; i++) {
        int y = d->labels[order[i]];
        if (y >= 0 && y < d->n_classes && count[y]++ < limit) keep[order[i]] = 1;
    }
    int m = 0;
    for (int i = 0; i < d->n; i++)
        if (keep[i]) order[m++] = i;
    Dataset sub;
    dataset_subset(d, order, m, &sub);
    dataset_free(d);
    *d = sub;
    free(order);
    free(count);
    free(keep);
}

/* Training, validation and test sets: given folders, or a stratified split of --data. */
static int load_data(Split *tr, Split *va, Split *te) {
    Dataset all;
    memset(&all, 0, sizeof all);
    int sources = !!A.data[0] + !!A.data_csv[0] + !!A.cifar_bin[0];
    if (sources != 1) {
        rn_set_error("give exactly one of --data DIR, --data-csv FILE, --cifar-bin DIR");
        return -1;
    }
    int rc = A.data[0]       ? dataset_from_folder(A.data, &all)
             : A.data_csv[0] ? dataset_from_csv(A.data_csv, &all)
                             : dataset_from_cifar(A.cifar_bin, 1, &all);
    if (rc != 0) return -1;
    input_failures += all.n_skipped;
    if (A.limit_per_class > 0) limit_per_class(&all, A.limit_per_class, (uint64_t)A.seed);
    int have_val = 0, have_test = 0;
    if (A.val[0]) {
        if (dataset_from_folder_classes(A.val, all.class_names, all.n_classes, &va->d) != 0)
            goto fail;
        input_failures += va->d.n_skipped;
        have_val = 1;
    }
    if (A.test[0] || A.cifar_bin[0]) {
        rc = A.test[0] ? dataset_from_folder_classes(A.test, all.class_names, all.n_classes, &te->d)
                       : dataset_from_cifar(A.cifar_bin, 0, &te->d);
        if (rc != 0) goto fail;
        input_failures += te->d.n_skipped;
        have_test = 1;
    }
    float vf = have_val ? 0 : A.val_frac, tf = have_test ? 0 : A.test_frac;
    if (!(vf >= 0 && tf >= 0 && vf + tf < 1)) {
        rn_set_error("--val-frac %g + --test-frac %g: expected fractions >= 0 summing below 1", vf,
                     tf);
        goto fail;
    }
    if (vf == 0 && tf == 0) {
        tr->d = all;
        return 0;
    }
    Dataset parts[3];
    if (dataset_split(&all, 1 - vf - tf, vf, (uint64_t)A.seed, &parts[0], &parts[1], &parts[2]) !=
        0)
        goto fail;
    tr->d = parts[0];
    if (have_val)
        dataset_free(&parts[1]);
    else
        va->d = parts[1];
    if (have_test)
        dataset_free(&parts[2]);
    else
        te->d = parts[2];
    dataset_free(&all);
    return 0;
fail:
    dataset_free(&all);
    return -1;
}

/* Training set of a pseudo-labelling phase: the labelled training items plus the items of
 * u whose pseudo-label is >= 0. Features are concatenated when both sets have them; image
 * paths when both have paths (an in-memory training set leaves only the pseudo items). */
static void pseudo_train_set(const Split *tr, const Split *u, const int *plabel, size_t fdim,
                             Split *out) {
    memset(out, 0, sizeof *out);
    out->name = "train+pseudo";
    int with_train = tr->d.paths != NULL || (tr->feats && u->feats);
    int n = 0, n_max = (with_train ? tr->d.n : 0) + u->d.n;
    Dataset *d = &out->d;
    d->labels = rn_alloc(sizeof(int) * (n_max + 1));
    d->paths = rn_alloc(sizeof(char *) * (n_max + 1));
    int have_paths = (!with_train || tr->d.paths) && u->d.paths;
    if (tr->feats && u->feats) {
        out->feats = rn_alloc(sizeof(float) * ((size_t)n_max * fdim + 1));
        out->ok = rn_alloc((size_t)n_max + 1);
    }
    for (int part = with_train ? 0 : 1; part < 2; part++) {
        const Split *s = part == 0 ? tr : u;
        for (int i = 0; i < s->d.n; i++) {
            int y = part == 0 ? s->d.labels[i] : plabel[i];
            if (y < 0) continue;
            d->labels[n] = y;
            d->paths[n] = have_paths ? rn_strdup(s->d.paths[i]) : NULL;
            if (out->feats) {
                memcpy(out->feats + (size_t)n * fdim, s->feats + (size_t)i * fdim,
                       fdim * sizeof(float));
                out->ok[n] = s->ok[i];
            }
            n++;
        }
    }
    d->n = n;
    if (!have_paths) {
        free(d->paths);
        d->paths = NULL;
    }
    d->n_classes = tr->d.n_classes;
    d->class_names = rn_alloc(sizeof(char *) * (d->n_classes + 1));
    for (int c = 0; c < d->n_classes; c++) d->class_names[c] = rn_strdup(tr->d.class_names[c]);
    snprintf(d->root, sizeof d->root, "%s", u->d.root);
}

typedef struct {
    float score;
    int index;
} Scored;

static int cmp_scored_desc(const void *a, const void *b) {
    const Scored *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    return x->index - y->index; /* ties: lower index first, for a deterministic order */
}

/* Pseudo-labels: argmax where its probability is >= threshold, class-balanced (as in
 * class-balanced self-training): each predicted class keeps at most its share
 * ceil(kept / k) of the most confident images, so that one class the model over-predicts
 * on the new domain cannot take over. -1 = not used. */
static void select_pseudo_labels(int n, int k, const float *probs, const uint8_t *ok,
                                 float threshold, int *label) {
    int kept = 0;
    for (int i = 0; i < n; i++) {
        int y = argmax(probs + (size_t)i * k, k);
        label[i] = ok[i] && probs[(size_t)i * k + y] >= threshold ? y : -1;
        kept += label[i] >= 0;
    }
    /* per class: sort its members by confidence, drop those beyond the cap */
    int cap = (kept + k - 1) / k;
    Scored *m = rn_alloc(sizeof(Scored) * ((size_t)n + 1));
    for (int c = 0; c < k; c++) {
        int count = 0;
        for (int i = 0; i < n; i++)
            if (label[i] == c) m[count++] = (Scored){probs[(size_t)i * k + c], i};
        if (count <= cap) continue;
        qsort(m, (size_t)count, sizeof(Scored), cmp_scored_desc);
        for (int j = cap; j < count; j++) label[m[j].index] = -1;
    }
    rn_free(m);
}

/* A domain's display name: its folder's name, or the parent's for ".../unlabelled". */
static char *domain_name(const char *dir) {
    const char *b = base_name(dir);
    if (strncmp(b, "unlabel", 7) != 0 && strncmp(b, "images", 6) != 0) return rn_strdup(b);
    char parent[512];
    parent_dir(dir, parent, sizeof parent);
    return rn_strdup(base_name(parent));
}

static void print_matrix(const Run *run, char **names) {
    printf("\naccuracy of the model after domain i (rows) on held-out domain j (columns; j > i: "
           "before adapting to j):\n");
    printf("%-34s", "");
    for (int j = 0; j < run->n_dom; j++) printf("     D%-3d", j);
    printf("\n");
    for (int i = 0; i < run->n_dom; i++) {
        char row[64];
        snprintf(row, sizeof row, "D%d %s", i, names[i]);
        printf("%-34.34s", row);
        for (int j = 0; j < run->n_dom; j++) {
            double a = run->dacc[i * run->n_dom + j];
            if (isnan(a))
                printf(" %8s", "-");
            else
                printf(" %8.4f", a);
        }
        printf("\n");
    }
}

/* Row `row` of the domain accuracy matrix: the current model on the labelled test split
 * (column 0) and on every held-out domain (columns 1..n_ev), the later domains included,
 * which shows the accuracy before adapting to them. */
static int domain_row(Run *run, Trainer *t, Split *te, Split *ev, int n_ev, int row) {
    double loss, acc;
    for (int j = 0; j <= n_ev; j++) {
        Split *s = j == 0 ? te : &ev[j - 1];
        if (s->d.n == 0) continue;
        if (evaluate(t, s, &loss, &acc, NULL, NULL, NULL) != 0) return -1;
        run->dacc[row * run->n_dom + j] = acc;
    }
    return 0;
}

static void remove_stale_tmp(const char *dir, int all);

static int train_job(Run *run, const char *command) {
    Split tr = {.name = "train"}, va = {.name = "val"}, te = {.name = "test"};
    Split *u = NULL, *ev = NULL;
    char **pdirs = NULL, **edirs = NULL, **dnames = NULL;
    int n_p = 0, n_e = 0, rc = -1;
    Net *net = NULL;
    Trainer t;
    memset(&t, 0, sizeof t);
    Metrics mv, mt;
    memset(&mv, 0, sizeof mv);
    memset(&mt, 0, sizeof mt);
    int have_mv = 0, have_mt = 0;
    char **mis = NULL;
    int n_mis = 0;
    float *test_probs = NULL;
    uint8_t *test_ok = NULL;

    /* ---- checks and data */
    if (!arch_is_known(A.arch)) {
        char known[1024];
        arch_list(known, sizeof known);
        rn_set_error("--arch '%s' is not known (known: %s)", A.arch, known);
        return -1;
    }
    if (!A.weights[0]) {
        rn_set_error("--weights is required: a .safetensors file with the backbone, or 'none' "
                     "to train from a random init");
        return -1;
    }
    int scratch = strcmp(A.weights, "none") == 0;
    HeadSpec hs;
    Schedule sched;
    if (head_parse(A.head, &hs) != 0 || schedule_parse(A.schedule, &sched) != 0) return -1;
    OptType ot;
    if (opt_parse(A.opt, &ot) != 0) return -1;
    if (A.batch < 1 || A.epochs < 0 || A.finetune_epochs < 0 || A.pseudo_epochs < 0) {
        rn_set_error("--batch must be >= 1 and epoch counts >= 0");
        return -1;
    }
    if (prep_parse(A.preprocess, &t.prep.kind) != 0) return -1;
    int cifar = arch_is_cifar(A.arch);
    t.prep.size = A.img_size > 0 ? A.img_size : cifar ? 32 : 224;
    t.prep.crop_pct = A.crop_pct > 0 ? A.crop_pct : cifar ? 1.0f : 0.875f;
    t.aug = augment_default();
    t.aug.enabled = A.augment;
    if (sscanf(A.aug_scale, "%f,%f", &t.aug.scale_min, &t.aug.scale_max) != 2 ||
        !(t.aug.scale_min > 0 && t.aug.scale_min <= t.aug.scale_max && t.aug.scale_max <= 1)) {
        rn_set_error("--aug-scale: expected MIN,MAX with 0 < MIN <= MAX <= 1, found '%s'",
                     A.aug_scale);
        return -1;
    }
    t.aug.hflip = A.aug_flip;
    t.aug.rotate_deg = A.aug_rotate;
    t.aug.translate = A.aug_translate;
    t.aug.brightness = A.aug_brightness;
    t.aug.contrast = A.aug_contrast;
    n_p = split_list(A.pseudo, &pdirs);
    n_e = split_list(A.pseudo_eval, &edirs);
    if (n_e != 0 && n_e != n_p) {
        rn_set_error("--pseudo-eval: expected one folder per --pseudo folder (%d), found %d", n_p,
                     n_e);
        goto done;
    }

    if (load_data(&tr, &va, &te) != 0) goto done;
    t.k = tr.d.n_classes;
    dataset_summary(&tr.d, "train", stdout);
    dataset_summary(&va.d, "val", stdout);
    dataset_summary(&te.d, "test", stdout);
    if (tr.d.n == 0 || t.k < 2) {
        rn_set_error("%s: need at least 2 classes and 1 training image, found %d classes, %d "
                     "images",
                     tr.d.root, t.k, tr.d.n);
        goto done;
    }
    u = rn_calloc((size_t)n_p + 1, sizeof *u);
    ev = rn_calloc((size_t)n_p + 1, sizeof *ev);
    dnames = rn_calloc((size_t)n_p + 1, sizeof *dnames);
    dnames[0] = rn_strdup("labelled test");
    for (int i = 0; i < n_p; i++) {
        dnames[i + 1] = domain_name(pdirs[i]);
        u[i].name = dnames[i + 1];
        if (dataset_from_unlabelled(pdirs[i], &u[i].d) != 0) goto done;
        input_failures += u[i].d.n_skipped;
        if (n_e) {
            ev[i].name = edirs[i];
            if (dataset_from_folder_classes(edirs[i], tr.d.class_names, t.k, &ev[i].d) != 0)
                goto done;
            input_failures += ev[i].d.n_skipped;
        }
    }

    /* ---- network */
    net = resnet_create(A.arch, t.k, &hs, (uint64_t)A.seed);
    if (!net) goto done;
    if (!scratch && net_load_weights(net, A.weights, 1) != 0) goto done;
    net_release_grads(net); /* train_step updates layer by layer (net_backward_step) */
    net->low_memory = A.low_memory;
    t.net = net;
    t.batch = A.batch;
    t.threads = A.threads > 0 ? A.threads : rn_threads();
    t.seed = (uint64_t)A.seed;
    t.smoothing = A.label_smoothing;
    t.feat_node = hs.type == HEAD_INCEPTION ? net->feature_node : net->pooled_node;
    if (net_plan(net, t.batch, t.prep.size, t.prep.size, 0) != 0) goto done;
    t.fc = net->nodes[t.feat_node].c;
    t.fh = net->nodes[t.feat_node].h;
    t.fw = net->nodes[t.feat_node].w;
    t.fdim = net_node_size(net, t.feat_node);
    if (!scratch) {
        t.head = head_create(t.fc, t.fh, t.fw, t.k, &hs, (uint64_t)A.seed);
        if (!t.head || net_plan(t.head, t.batch, t.fh, t.fw, 1) != 0) goto done;
        net_release_grads(t.head);
    }
    t.backbone_key = fnv1a_str(fnv1a_file(1469598103934665603ULL, A.weights), A.arch);
    if (A.cache_dir[0])
        snprintf(t.cache_dir, sizeof t.cache_dir, "%s", A.cache_dir);
    else
        parent_dir(run->dir, t.cache_dir, sizeof t.cache_dir);
    if (dist_is_root()) remove_stale_tmp(t.cache_dir, 0);
    t.use_cache = !A.no_cache && !scratch;
    t.x = rn_alloc(sizeof(float) * (size_t)t.batch * 3 * t.prep.size * t.prep.size);
    t.feat = rn_alloc(sizeof(float) * (size_t)t.batch * t.fdim);
    t.probs = rn_alloc(sizeof(float) * (size_t)t.batch * t.k);
    t.dlogits = rn_alloc(sizeof(float) * (size_t)t.batch * t.k);
    t.labels = rn_alloc(sizeof(int) * t.batch);
    t.idx = rn_alloc(sizeof(int) * t.batch);
    if (strcmp(A.class_weights, "none") != 0) {
        t.class_w = rn_calloc(t.k, sizeof(float));
        if (strcmp(A.class_weights, "balanced") == 0) {
            class_weights_balanced(&tr.d, t.class_w);
        } else {
            double *w = rn_alloc(sizeof(double) * t.k);
            int bad = numbers_parse(A.class_weights, t.k, w, NULL);
            for (int c = 0; c < t.k; c++) t.class_w[c] = (float)w[c];
            free(w);
            if (bad) {
                rn_set_error("--class-weights: expected 'balanced' or %d comma-separated numbers, "
                             "found '%s'",
                             t.k, A.class_weights);
                goto done;
            }
        }
    }
    printf("%s: %lld parameters, input %dx%d (%s), head %s, features %s [%d, %d, %d], %d "
           "threads, %s kernels\n",
           A.arch, (long long)net_count_params(net, 0), t.prep.size, t.prep.size,
           prep_name(t.prep.kind), A.head, scratch ? "(trained end to end)" : "frozen", t.fc, t.fh,
           t.fw, rn_threads(), simd_name());

    /* ---- resume state */
    run->n_dom = 1 + n_p;
    run->dacc = rn_alloc(sizeof(double) * run->n_dom * run->n_dom);
    for (int i = 0; i < run->n_dom * run->n_dom; i++) run->dacc[i] = NAN;
    if (run->resume_phase) {
        if (history_parse(run, st_meta(&run->ck, "history")) != 0 ||
            numbers_parse(st_meta(&run->ck, "domain_acc"), run->n_dom * run->n_dom, run->dacc,
                          NULL) != 0)
            goto done;
    }

    /* ---- frozen features, once (or from the cache), before the head's epochs: phase 1
     * trains on the training set's, early stopping reads the validation set's, and without
     * fine-tuning the test set is scored on them too */
    double feat_seconds = 0;
    if (!scratch && run->resume_phase <= 1) {
        double tf = rn_seconds();
        if ((!t.aug.enabled && compute_features(&t, &tr) != 0) || compute_features(&t, &va) != 0 ||
            (A.finetune_epochs == 0 && compute_features(&t, &te) != 0))
            goto done;
        feat_seconds = rn_seconds() - tf;
        printf("feature extraction: %.1f s\n", feat_seconds);
    }

    /* ---- phase 1: the head on frozen features, or the whole net from scratch */
    const char *unfreeze = strcmp(A.unfreeze, "auto") == 0 ? (scratch ? "all" : "1") : A.unfreeze;
    int first_trainable = net_head_group(net);
    if (unfreeze_stage(net, unfreeze, &first_trainable) != 0) goto done;
    t.full = scratch;
    net_set_first_trainable(net, scratch ? first_trainable : net_head_group(net));
    PhaseCfg pc = {1, A.epochs, A.lr, sched, A.patience, NULL, 0};
    if (run->resume_phase <= 1 && run_phase(run, &t, &pc, &tr, &va) != 0) goto done;

    /* ---- phase 2: fine-tune the last stages together with the head */
    if (A.finetune_epochs > 0) {
        if (!t.full) net_copy_params(net, t.head);
        t.full = 1;
        net_set_first_trainable(net, first_trainable);
        PhaseCfg pc2 = {2, A.finetune_epochs, A.finetune_lr, sched, A.patience, NULL, 0};
        if (run->resume_phase <= 2 && run_phase(run, &t, &pc2, &tr, &va) != 0) goto done;
    }
    double loss, acc;
    if (run->resume_phase <= 2 && domain_row(run, &t, &te, ev, n_e ? n_p : 0, 0) != 0) goto done;

    /* ---- pseudo-labelling, one unlabelled domain after the other */
    for (int i = 0; i < n_p; i++) {
        int phase = 3 + i, n_u = u[i].d.n, kept = 0;
        if (run->resume_phase > phase) continue;
        int *plabel = rn_alloc(sizeof(int) * (n_u + 1));
        if (run->resume_phase == phase) {
            if (numbers_parse(st_meta(&run->ck, "pseudo_labels"), n_u, NULL, plabel) != 0) {
                free(plabel);
                goto done;
            }
        } else {
            float *probs = rn_alloc(sizeof(float) * ((size_t)n_u * t.k + 1));
            uint8_t *ok = rn_alloc((size_t)n_u + 1);
            if (predict(&t, &u[i], probs, ok, &loss) != 0) {
                free(probs);
                free(ok);
                free(plabel);
                goto done;
            }
            select_pseudo_labels(n_u, t.k, probs, ok, A.pseudo_threshold, plabel);
            free(probs);
            free(ok);
        }
        for (int j = 0; j < n_u; j++) kept += plabel[j] >= 0;
        printf("\npseudo-labelling %s: %d of %d images kept (p >= %.2f, class-balanced)\n",
               u[i].name, kept, n_u, A.pseudo_threshold);
        if (!t.full && !t.aug.enabled &&
            (compute_features(&t, &tr) != 0 || compute_features(&t, &u[i]) != 0)) {
            free(plabel);
            goto done;
        }
        Split tp;
        pseudo_train_set(&tr, &u[i], plabel, t.fdim, &tp);
        float plr = A.pseudo_lr > 0 ? A.pseudo_lr : A.finetune_epochs > 0 ? A.finetune_lr : A.lr;
        PhaseCfg pcp = {phase,      A.pseudo_epochs, plr, {SCHED_CONSTANT, 0, 0, 0, 0},
                        A.patience, plabel,          n_u};
        int prc = run_phase(run, &t, &pcp, &tp, &va);
        split_free(&tp);
        free(plabel);
        if (prc != 0) goto done;
        if (domain_row(run, &t, &te, ev, n_e ? n_p : 0, i + 1) != 0) goto done;
    }

    /* ---- final evaluation, model, report */
    if (!t.full) net_copy_params(net, t.head);
    if (va.d.n > 0) {
        if (evaluate(&t, &va, &loss, &acc, &mv, NULL, NULL) != 0) goto done;
        have_mv = 1;
        printf("\n== validation (%d images)\n", va.d.n);
        metrics_print_report(&mv, tr.d.class_names, stdout);
    }
    if (te.d.n > 0) {
        if (evaluate(&t, &te, &loss, &acc, &mt, &test_probs, &test_ok) != 0) goto done;
        have_mt = 1;
        printf("\n== test (%d images)\n", te.d.n);
        metrics_print_report(&mt, tr.d.class_names, stdout);
        mis = rn_alloc(sizeof(char *) * ((size_t)te.d.n + 1)); /* all: the report counts them */
        for (int i = 0; i < te.d.n; i++) {
            const float *p = test_probs + (size_t)i * t.k;
            int y = te.d.labels[i], g = argmax(p, t.k);
            if (!test_ok[i] || y < 0 || g == y) continue;
            char line[1200], where[32];
            snprintf(where, sizeof where, "#%d", i);
            snprintf(line, sizeof line, "%s: %s -> %s (%.2f)",
                     te.d.paths && te.d.paths[i] ? te.d.paths[i] : where, tr.d.class_names[y],
                     tr.d.class_names[g], p[g]);
            mis[n_mis++] = rn_strdup(line);
        }
    }
    if (n_p > 0) print_matrix(run, dnames);

    char path[1024];
    ModelInfo info;
    memset(&info, 0, sizeof info);
    snprintf(info.arch, sizeof info.arch, "%s", A.arch);
    info.num_classes = t.k;
    info.class_names = tr.d.class_names;
    info.head = hs;
    info.prep = t.prep;
    snprintf(path, sizeof path, "%s/model.safetensors", run->dir);
    if (dist_is_root() && model_save(path, net, &info) != 0) goto done;

    Buf notes = {0};
    buf_printf(&notes,
               "command: %s\nweights: %s\ntrain %d, val %d, test %d images; %d threads, "
               "%s kernels; feature extraction %.1f s, total %.1f s; peak memory %ld MB",
               command, A.weights, tr.d.n, va.d.n, te.d.n, rn_threads(), simd_name(), feat_seconds,
               rn_seconds() - run->t0, rn_peak_rss_kb() / 1024);
    char title[256];
    snprintf(title, sizeof title, "%s on %s", A.arch,
             A.data[0]       ? A.data
             : A.data_csv[0] ? A.data_csv
                             : A.cifar_bin);
    Report r = {title,
                tr.d.class_names,
                t.k,
                have_mt ? &mt : NULL,
                have_mv ? &mv : NULL,
                run->hist,
                run->n_hist,
                n_p ? run->dacc : NULL,
                n_p ? run->n_dom : 0,
                dnames,
                (const char **)mis,
                n_mis,
                notes.data};
    char jpath[1024];
    snprintf(jpath, sizeof jpath, "%s/metrics.json", run->dir);
    snprintf(path, sizeof path, "%s/report.html", run->dir);
    int wrc =
        dist_is_root() && (report_write_json(&r, jpath) != 0 || report_write_html(&r, path) != 0);
    buf_free(&notes);
    if (wrc) goto done;
    printf("\nmodel:   %s/model.safetensors\nmetrics: %s\nreport:  %s\n", run->dir, jpath, path);
    printf("peak memory: %ld MB (resident)\n", rn_peak_rss_kb() / 1024);
    rc = 0;

done:
    if (have_mv) metrics_free(&mv);
    if (have_mt) metrics_free(&mt);
    for (int i = 0; i < n_mis; i++) free(mis[i]);
    free(mis);
    free(test_probs);
    free(test_ok);
    for (int i = 0; i < n_p && u; i++) {
        split_free(&u[i]);
        split_free(&ev[i]);
    }
    for (int i = 0; dnames && i <= n_p; i++) free(dnames[i]);
    free(dnames);
    free(u);
    free(ev);
    free_list(pdirs, n_p);
    free_list(edirs, n_e);
    split_free(&tr);
    split_free(&va);
    split_free(&te);
    optimizer_free(t.opt);
    rn_free(t.class_w);
    rn_free(t.x);
    rn_free(t.feat);
    rn_free(t.probs);
    rn_free(t.dlogits);
    rn_free(t.labels);
    rn_free(t.idx);
    if (t.head) net_free(t.head);
    if (net) net_free(net);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* main: options (with --resume, the run's own options first), then the job              */
/* ------------------------------------------------------------------------------------ */

/* Read RUN/args.txt (one argument a line, "\n" and "\\" escaped) into a NULL-terminated
 * argv; *buf owns it. */
static char **read_args_file(const char *path, int *argc, char **buf) {
    size_t len;
    *buf = (char *)read_file(path, &len);
    if (!*buf) return NULL;
    char **v = rn_alloc(sizeof(char *) * (len + 2));
    int n = 0;
    for (char *s = *buf; *s;) {
        char *e = strchr(s, '\n');
        if (e) *e = 0;
        char *o = s;
        for (char *c = s; *c; c++) {
            if (c[0] == '\\' && (c[1] == 'n' || c[1] == '\\'))
                *o++ = *++c == 'n' ? '\n' : '\\';
            else
                *o++ = *c;
        }
        *o = 0;
        if (*s) v[n++] = s;
        if (!e) break;
        s = e + 1;
    }
    v[n] = NULL;
    *argc = n;
    return v;
}

/* An exclusive lock on RUN/train.lock for as long as this process lives (the kernel drops it
 * when the process dies, even by kill -9): two runs on one folder would overwrite each
 * other's checkpoints and best weights and both report success. */
static int lock_run_dir(const char *dir) {
    char path[1100];
    snprintf(path, sizeof path, "%s/train.lock", dir);
    int rc = rn_lock_file(path);
    if (rc == 1)
        rn_set_error("%s: another train process is using this run folder (%s is locked)", dir,
                     path);
    return rc == 0 ? 0 : -1;
}

/* Remove the NAME.tmp.PID files that write_file_atomic leaves when a process dies before
 * its rename: every one in a locked run folder (no other process writes there), else only
 * those of processes that no longer exist. */
static void remove_stale_tmp(const char *dir, int all) {
    RnDir *dp = rn_dir_open(dir);
    if (!dp) return;
    const char *name;
    while ((name = rn_dir_next(dp)) != NULL) {
        const char *t = strstr(name, ".tmp.");
        if (!t || !t[5] || strspn(t + 5, "0123456789") != strlen(t + 5)) continue;
        long pid = atol(t + 5);
        if (!all && (pid <= 0 || rn_process_alive(pid))) continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (remove(path) == 0) fprintf(stderr, "removed %s (left by a stopped run)\n", path);
    }
    rn_dir_close(dp);
}

/* A fresh run in run->dir: args.txt gets this command line's options (paths made absolute)
 * and a new run id. */
static int start_run(Run *run, int argc, char **argv) {
    Buf b = {0};
    set_defaults();
    parse_args(argc - 1, argv + 1, &b); /* parsed once already: cannot fail */
    if (!A.run_id[0]) {
        uint64_t h = fnv1a(1469598103934665603ULL, b.data ? b.data : "", b.len);
        double t = rn_seconds();
        long pid = (long)getpid();
        time_t now = time(NULL);
        h = fnv1a(fnv1a(fnv1a(h, &t, sizeof t), &pid, sizeof pid), &now, sizeof now);
        snprintf(run->id, sizeof run->id, "%016llx", (unsigned long long)h);
        dist_broadcast(run->id, sizeof run->id, 0); /* rank 0's, on every rank */
        A.run_id = run->id;
        buf_printf(&b, "--run-id=%s\n", run->id);
    }
    char path[1100];
    snprintf(path, sizeof path, "%s/args.txt", run->dir);
    int rc = dist_is_root() ? write_file_atomic(path, b.data ? b.data : "", b.len) : 0;
    buf_free(&b);
    return rc;
}

static int train_main(int argc, char **argv);

/* Under mpirun: a rank that fails stops every rank (MPI_Abort), so none waits forever in a
 * collective for it; the others' output is silenced, so the failing rank says why. */
static int job_finished;
int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    int rc = train_main(argc, argv);
    if (rc != 0 && !job_finished && dist_size() > 1) {
        char msg[1100]; /* rank 0 printed it already; the others' stderr is silenced */
        snprintf(msg, sizeof msg, "error: %s", rn_error());
        dist_abort(dist_is_root() ? NULL : msg, rc);
    }
    dist_finalize();
    return rc;
}

static int train_main(int argc, char **argv) {
    rn_binary_stdout();               /* "\n" line ends on every platform (Windows: not "\r\n") */
    setvbuf(stdout, NULL, _IOLBF, 0); /* epoch lines in order with stderr's progress lines */
    set_defaults();
    if (parse_args(argc - 1, argv + 1, NULL) != 0) {
        fprintf(stderr, "error: %s\n", rn_error());
        return 2;
    }
    if (A.help || argc == 1) {
        print_help();
        return argc == 1 ? 2 : 0;
    }
#ifdef _OPENMP
    if (A.threads > 0) omp_set_num_threads(A.threads);
#endif
    if (A.threads == 0) dist_share_cores(); /* ranks on one machine split its cores */
    if (A.make_demo_data[0]) {
        if (make_demo_data(A.make_demo_data, A.demo_per_class, (uint64_t)A.seed) != 0) {
            fprintf(stderr, "error: %s\n", rn_error());
            return 1;
        }
        return 0;
    }

    Run run;
    memset(&run, 0, sizeof run);
    run.t0 = rn_seconds();
    char *stored = NULL, **sargv = NULL;
    char path[1024];
    int fresh = !A.resume[0];
    snprintf(run.dir, sizeof run.dir, "%s", fresh ? A.out : A.resume);
    snprintf(path, sizeof path, "%s/args.txt", run.dir);
    if (!fresh && !file_exists(path)) {
        /* stopped before its options were saved: nothing was trained, so the run starts
         * again when the options are given (train --resume RUN OPTIONS...) */
        snprintf(path, sizeof path, "%s/checkpoint.safetensors", run.dir);
        if (argc - 1 <= 2 || file_exists(path)) {
            fprintf(stderr,
                    "error: --resume %s: no %s/args.txt (the run stopped before it saved "
                    "its options): give them again, as in train --resume %s OPTIONS...\n",
                    run.dir, run.dir, run.dir);
            return 1;
        }
        printf("resuming %s: no args.txt yet, starting it with the options given\n", run.dir);
        fresh = 1;
    }
    /* rank 0 owns the run folder (lock, args.txt, checkpoints); the others only read it */
    if (dist_is_root() && ((fresh && mkdir_p(run.dir) != 0) || lock_run_dir(run.dir) < 0)) {
        fprintf(stderr, "error: %s\n", rn_error());
        return 1;
    }
    if (dist_is_root()) remove_stale_tmp(run.dir, 1);
    if (fresh) {
        if (start_run(&run, argc, argv) != 0) {
            fprintf(stderr, "error: %s\n", rn_error());
            return 1;
        }
        A.out = run.dir;
    } else {
        /* the run's options, then this command line's on top (minus the kill switch) */
        int sargc = 0;
        sargv = read_args_file(path, &sargc, &stored);
        if (!sargv) {
            fprintf(stderr, "error: --resume: %s\n", rn_error());
            return 1;
        }
        set_defaults();
        int prc = parse_args(sargc, sargv, NULL);
        A.kill_after = 0;
        if (prc != 0 || parse_args(argc - 1, argv + 1, NULL) != 0) {
            fprintf(stderr, "error: %s: %s\n", path, rn_error());
            free(sargv);
            free(stored);
            return 2;
        }
        A.out = run.dir;
        snprintf(path, sizeof path, "%s/checkpoint.safetensors", run.dir);
        if (file_exists(path)) {
            if (st_open(path, &run.ck) != 0) {
                fprintf(stderr, "error: --resume: %s\n", rn_error());
                return 1;
            }
            char **pd = NULL;
            int n_pd = split_list(A.pseudo, &pd), epoch = 0;
            free_list(pd, n_pd);
            const char *id = st_meta(&run.ck, "run_id");
            if (strcmp(id ? id : "", A.run_id) != 0) {
                fprintf(stderr,
                        "error: %s: a checkpoint of run %s, not of this run (%s, in "
                        "%s/args.txt)\n",
                        path, id ? id : "(none)", A.run_id[0] ? A.run_id : "(none)", run.dir);
                return 1;
            }
            if (ck_meta(&run.ck, "phase", 1, 2 + n_pd, &run.resume_phase, NULL) != 0 ||
                ck_meta(&run.ck, "epoch", 0, 1e6, &epoch, NULL) != 0) {
                fprintf(stderr, "error: --resume: %s\n", rn_error());
                return 1;
            }
            printf("resuming %s from phase %d, epoch %d\n", run.dir, run.resume_phase, epoch);
        } else {
            printf("resuming %s: no checkpoint yet, starting from the beginning\n", run.dir);
        }
    }
    Buf cmd = {0};
    buf_printf(&cmd, "train");
    for (int i = 1; i < argc; i++) buf_printf(&cmd, " %s", argv[i]);
    int rc = train_job(&run, cmd.data);
    if (rc != 0) fprintf(stderr, "error: %s\n", rn_error());
    job_finished = rc == 0;
    buf_free(&cmd);
    if (run.resume_phase || run.ck.file) st_close(&run.ck);
    free(run.hist);
    free(run.dacc);
    free(sargv);
    free(stored);
    for (int i = 0; i < n_failed_paths; i++) rn_free(failed_paths[i]);
    rn_free(failed_paths);
    if (rc == 0 && input_failures > 0) {
        fprintf(stderr,
                "train: finished, but %ld input file%s could not be used (reported above)\n",
                input_failures, input_failures == 1 ? "" : "s");
        return 1;
    }
    return rc == 0 ? 0 : 1;
}
