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
 *   then           pseudo-labelling, one phase per unlabelled domain (--pseudo), numbered
 *                  on from the last phase run (3, 4... after fine-tuning, else 2, 3...).
 */
#include "cli.h"
#include "platform.h"
#include "resnet.h"
#include "dist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------------------------ */
/* Options: one table (cli.h) gives parsing, ranges, defaults and --help                 */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    const char *arch, *weights, *data, *data_csv, *cifar_bin, *val, *test, *out, *resume;
    const char *cache_dir, *head, *preprocess, *unfreeze, *opt, *class_weights, *schedule;
    const char *pseudo, *pseudo_eval, *make_demo_data, *run_id, *demo_task;
    int img_size, augment, aug_flip, limit_per_class, seed, threads, batch;
    int epochs, finetune_epochs, patience, pseudo_epochs, demo_per_class, kill_after;
    float crop_pct, aug_scale_min, aug_scale_max, aug_rotate, aug_translate;
    float aug_brightness, aug_contrast, lr, finetune_lr, weight_decay, momentum;
    float label_smoothing, pseudo_threshold, pseudo_lr, val_frac, test_frac;
    const char *aug_scale;
    int no_cache, low_memory, overwrite;
} Args;

static Args A;

/* A number outside its range is refused, never clamped (--lr 1e39 is infinite in float,
 * --threads 100000 crashed libgomp, --label-smoothing 5 has no meaning). */
static const CliOption OPTIONS[] = {
    CLI_HEADING("Model"),
    CLI_STRING("arch", &A.arch, "resnet50", 0, "one of --list-archs (listed at the end)"),
    CLI_STRING("weights", &A.weights, "", CLI_PATH,
               "required: pretrained backbone (.safetensors, torchvision names), or 'none' for "
               "a random init that trains the whole net from scratch (see --unfreeze)"),
    CLI_STRING("head", &A.head, "mlp:256:dropout=0.2", 0,
               "linear | mlp:256 | mlp:512,256,128,64:dropout=0.2:bn | inception:128:dropout=0.5"),
    CLI_HEADING("Data"),
    CLI_STRING("data", &A.data, "", CLI_PATH,
               "training folder, one sub-folder per class (ImageFolder)"),
    CLI_STRING("data-csv", &A.data_csv, "", CLI_PATH,
               "training list instead: lines 'path,label' (RFC 4180 quotes, as infer --csv "
               "writes them)"),
    CLI_STRING("cifar-bin", &A.cifar_bin, "", CLI_PATH,
               "CIFAR-10/100 binary folder instead (its test batch becomes the test set)"),
    CLI_STRING("val", &A.val, "", CLI_PATH,
               "validation folder with train's classes (default: a split of the training data)"),
    CLI_STRING("test", &A.test, "", CLI_PATH,
               "test folder with train's classes (default: a split of the training data)"),
    CLI_NUMBER("val-frac", &A.val_frac, "0.15", 0, 0.95, 0, "validation fraction of the split"),
    CLI_NUMBER("test-frac", &A.test_frac, "0.15", 0, 0.95, 0,
               "test fraction of the split (stratified, seeded)"),
    CLI_INTEGER("limit-per-class", &A.limit_per_class, "0", 0, 1e9, 0,
                "use at most N training images per class (seeded choice; 0 = all)"),
    CLI_INTEGER("img-size", &A.img_size, "0", 16, RN_MAX_IMAGE_SIDE, CLI_ZERO_OK,
                "input size (0: the architecture's, see --list-archs: 224, CIFAR archs 32)"),
    CLI_STRING("preprocess", &A.preprocess, "", 0,
               "torchvision (ImageNet mean/std) | caffe (BGR minus mean) | unit (RGB/255) "
               "(default: the architecture's, see --list-archs)"),
    CLI_NUMBER("crop-pct", &A.crop_pct, "0", 0.05, 1, CLI_ZERO_OK,
               "eval resize to size/crop_pct then center crop (0: the architecture's: 0.875, "
               "CIFAR archs and keras_resnet50 1)"),
    CLI_SWITCH("augment", &A.augment, "0", 0,
               "train-time augmentation (random resized crop, flip...); with a frozen backbone "
               "the training features are then recomputed every epoch instead of cached"),
    CLI_STRING("aug-scale", &A.aug_scale, "0.08,1", 0, "random resized crop area range MIN,MAX"),
    CLI_INTEGER("aug-flip", &A.aug_flip, "1", 0, 1, 0, "random horizontal flip (0/1)"),
    CLI_NUMBER("aug-rotate", &A.aug_rotate, "0", 0, 180, 0, "random rotation in [-DEG, DEG]"),
    CLI_NUMBER("aug-translate", &A.aug_translate, "0", 0, 1, 0,
               "random shift, fraction of the size"),
    CLI_NUMBER("aug-brightness", &A.aug_brightness, "0", 0, 1, 0,
               "brightness factor in [1-B, 1+B]"),
    CLI_NUMBER("aug-contrast", &A.aug_contrast, "0", 0, 1, 0, "contrast factor in [1-C, 1+C]"),
    CLI_HEADING("Training"),
    CLI_INTEGER("epochs", &A.epochs, "30", 0, 1e6, 0,
                "phase 1 epochs: the head (frozen backbone), or the whole net with --weights "
                "none"),
    CLI_INTEGER("batch", &A.batch, "32", 1, 65536, 0, "batch size"),
    CLI_STRING("opt", &A.opt, "adam", 0, "adam | adamw | sgd"),
    CLI_NUMBER("lr", &A.lr, "0.001", 0, 1000, 0, "phase 1 learning rate"),
    CLI_NUMBER("weight-decay", &A.weight_decay, "0", 0, 1000, 0,
               "L2 (sgd, adam) or decoupled (adamw)"),
    CLI_NUMBER("momentum", &A.momentum, "0.9", 0, 1, 0, "SGD momentum"),
    CLI_NUMBER("label-smoothing", &A.label_smoothing, "0", 0, 1, 0,
               "cross-entropy label smoothing"),
    CLI_STRING("class-weights", &A.class_weights, "none", 0, "none | balanced | w1,w2,..."),
    CLI_STRING("schedule", &A.schedule, "constant", 0,
               "constant | step:EVERY:GAMMA | cosine | plateau:PATIENCE:FACTOR (per phase)"),
    CLI_INTEGER("patience", &A.patience, "5", 0, 1e6, 0,
                "early stopping: stop after P epochs without a better val loss and restore the "
                "best weights (0 = off)"),
    CLI_INTEGER("finetune-epochs", &A.finetune_epochs, "0", 0, 1e6, 0,
                "phase 2: fine-tune with the last --unfreeze stages trainable"),
    CLI_STRING("unfreeze", &A.unfreeze, "auto", 0,
               "N last backbone groups | all | a group name and those after it (groups listed "
               "at the end; auto: 1, or all with --weights none)"),
    CLI_NUMBER("finetune-lr", &A.finetune_lr, "0.0001", 0, 1000, 0, "phase 2 learning rate"),
    CLI_HEADING("Pseudo-labelling"),
    CLI_STRING("pseudo", &A.pseudo, "", CLI_PATH,
               "unlabelled folders DIR1,DIR2,... visited in order: each is labelled by the "
               "current model (confident, class-balanced picks) and trained on with the "
               "labelled training set"),
    CLI_STRING("pseudo-eval", &A.pseudo_eval, "", CLI_PATH,
               "labelled held-out folders, one per --pseudo domain (for the accuracy matrix)"),
    CLI_INTEGER("pseudo-epochs", &A.pseudo_epochs, "3", 0, 1e6, 0,
                "epochs per pseudo-labelled domain"),
    CLI_NUMBER("pseudo-lr", &A.pseudo_lr, "0", 0, 1000, 0,
               "learning rate of the pseudo-label phases (0 = --finetune-lr after fine-tuning, "
               "else --lr); the weights with the best labelled val loss of each phase are kept"),
    CLI_NUMBER("pseudo-threshold", &A.pseudo_threshold, "0.8", 0, 1, 0,
               "keep pseudo-labels whose probability is at least T"),
    CLI_HEADING("Run"),
    CLI_STRING("out", &A.out, "runs/run", CLI_PATH,
               "output folder (model, checkpoint, metrics, report); an existing run is "
               "refused unless --overwrite"),
    CLI_STRING("resume", &A.resume, "", CLI_NO_RECORD,
               "RUN folder of an interrupted run: continue it to the same result (its options "
               "are read from RUN/args.txt; options given here override them)"),
    CLI_SWITCH("overwrite", &A.overwrite, "0", CLI_NO_RECORD,
               "start a new run in an --out folder that holds one (its files are replaced)"),
    CLI_STRING("cache-dir", &A.cache_dir, "", CLI_PATH,
               "feature cache folder, shareable between runs of one backbone (default: "
               "RUN/cache)"),
    CLI_SWITCH("no-cache", &A.no_cache, "0", 0,
               "compute features without reading/writing the cache"),
    CLI_INTEGER("seed", &A.seed, "0", -2147483647.0, 2147483647.0, 0,
                "seed of splits, init, shuffling, augmentation, dropout"),
    CLI_INTEGER("threads", &A.threads, "0", 0, RN_MAX_THREADS, 0,
                "compute and decoding threads (0 = OMP_NUM_THREADS or all cores)"),
    CLI_SWITCH("low-memory", &A.low_memory, "1", 0,
               "training the backbone (fine-tuning or from scratch): run the expanding 1x1 "
               "convs again in backward instead of keeping their outputs (ResNet-50: about 40% "
               "less activation memory; --low-memory=0 keeps them, a few % faster; the same "
               "results)"),
    CLI_STRING("run-id", &A.run_id, "", 0,
               "set at a run's start and kept in RUN/args.txt: its checkpoints carry it, and "
               "--resume refuses a checkpoint of another run"),
    CLI_STRING("make-demo-data", &A.make_demo_data, "", CLI_NO_RECORD,
               "write the procedural demo data set to DIR and exit"),
    CLI_INTEGER("demo-per-class", &A.demo_per_class, "150", 1, 1e6, CLI_NO_RECORD,
                "demo training images per class"),
    CLI_STRING("demo-task", &A.demo_task, "source", CLI_NO_RECORD,
               "which demo task --make-demo-data writes: 'source' (circle, square, triangle, "
               "stripes) or 'target' (ring, cross, checker, crescent; plus composite.png for "
               "--patches)"),
    CLI_INTEGER("kill-after-epochs", &A.kill_after, "0", 0, 1e6, CLI_NO_RECORD,
                "testing: SIGKILL itself after N epochs (after the checkpoint)"),
};

static void train_epilog(FILE *f);
static const CliProgram PROGRAM = {
    "train",
    "usage: train --arch ARCH --weights W.safetensors --data DIR --out RUN/ [options]\n"
    "       train --resume RUN/\n"
    "       train --make-demo-data DIR\n"
    "       train --compare RUN [RUN...] --out DIR   (compare.csv, compare.html)\n",
    "Transfer learning with a ResNet: by default the backbone is frozen, its pooled\n"
    "features are computed once and cached (RUN/cache, or --cache-dir), and an MLP head is\n"
    "trained on them with early stopping. Writes RUN/model.safetensors (for ./infer),\n"
    "RUN/metrics.json, RUN/report.html and RUN/checkpoint.safetensors (every epoch).\n"
    "Ctrl-C stops a run; train --resume RUN continues it from its last epoch.\n",
    OPTIONS,
    (int)(sizeof OPTIONS / sizeof OPTIONS[0]),
    NULL,
    train_epilog,
};

static void set_defaults(void) { cli_defaults(&PROGRAM); }

/* One args.txt line "--name=value": the value with backslash and newline escaped, relative
 * paths made absolute. */
static void record_option(void *ctx, const CliOption *o, const char *v) {
    Buf *b = ctx;
    char cwd[4096];
    if (o->flags & CLI_NO_RECORD) return;
    buf_printf(b, "--%s=", o->name);
    int paths = (o->flags & CLI_PATH) &&
                !(strcmp(o->name, "weights") == 0 && strcmp(v, "none") == 0);
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

/* Strings point into argv (kept alive by main). When record is given, each recorded option
 * is appended to it as an args.txt line. Returns a CLI_* code. */
static int parse_args(int argc, char **argv, Buf *record) {
    return cli_parse(&PROGRAM, argc, argv, NULL, NULL, record ? record_option : NULL, record);
}

static void train_epilog(FILE *f) {
    /* the architectures and their freeze groups, from the registry */
    fprintf(f, "\nArchitectures (--arch) and their freeze groups (--unfreeze):\n");
    const char *family = "";
    for (int i = 0; i < arch_count(); i++) {
        const ArchSpec *a = arch_at(i);
        if (strcmp(a->family, family) == 0) continue;
        family = a->family;
        Buf names = {0}, groups = {0};
        for (int j = i; j < arch_count() && strcmp(arch_at(j)->family, family) == 0; j++)
            buf_printf(&names, "%s%s", j > i ? ", " : "", arch_at(j)->name);
        Net *net = resnet_describe(a->name, 2, NULL);
        if (net) net_groups_json(net, &groups);
        fprintf(f, "  %s\n      groups %s\n", names.data, groups.data ? groups.data : "?");
        net_free(net);
        buf_free(&names);
        buf_free(&groups);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Procedural demo data: four shape classes, a labelled set and two shifted domains      */
/* ------------------------------------------------------------------------------------ */

#define DEMO_SIZE 64
/* the source task's four classes, then the target task's four others */
static const char *DEMO_CLASSES[8] = {"circle", "square",  "triangle", "stripes",
                                      "ring",   "cross",   "checker",  "crescent"};

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
    case 3: /* stripes inside a disc */
        if (dx * dx + dy * dy > rad * rad * 1.2f) return 0;
        return fmodf(u + 1000.0f * period, period) < 0.5f * period;
    case 4: { /* ring: an annulus */
        float r2 = dx * dx + dy * dy;
        return r2 <= rad * rad && r2 >= 0.36f * rad * rad;
    }
    case 5: /* cross: two bars */
        return (fabsf(u) <= 0.3f * rad && fabsf(v) <= rad) ||
               (fabsf(v) <= 0.3f * rad && fabsf(u) <= rad);
    case 6: /* checker board in a square */
        if (fabsf(u) > 0.9f * rad || fabsf(v) > 0.9f * rad) return 0;
        return ((int)floorf((u + 100 * period) / period) + (int)floorf((v + 100 * period) / period)) % 2;
    default: { /* crescent: a disc less a shifted disc */
        float ex = u - 0.5f * rad;
        return dx * dx + dy * dy <= rad * rad && ex * ex + v * v > 0.7f * rad * rad;
    }
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
/* target = 1: the target task's classes (DEMO_CLASSES[4..7]) and DIR/composite.png, four of
 * its shapes side by side (2 x 2 tiles of DEMO_SIZE px) for patch inference. */
static int make_demo_data(const char *root, int per_class, uint64_t seed, int target) {
    char dir[1024];
    const int c0 = target ? 4 : 0; /* the task's first class */
    int n_unlab = per_class / 2 > 4 ? per_class / 2 : 4;
    int n_held = per_class / 4 > 4 ? per_class / 4 : 4;
    for (int d = 0; d < 3; d++) {
        const DemoDomain *dom = &DEMO_DOMAINS[d];
        Rng r;
        rng_seed(&r, seed * 1000003u + (uint64_t)d);
        if (d == 0) {
            for (int c = 0; c < 4; c++)
                for (int i = 0; i < per_class; i++) {
                    snprintf(dir, sizeof dir, "%s/train/%s", root, DEMO_CLASSES[c0 + c]);
                    if (demo_write(&r, c0 + c, dom, dir, DEMO_CLASSES[c0 + c], i) != 0) return -1;
                }
            continue;
        }
        int n = 4 * n_unlab, *order = rn_alloc(sizeof(int) * n);
        for (int i = 0; i < n; i++) order[i] = i % 4;
        rng_shuffle(&r, order, n);
        snprintf(dir, sizeof dir, "%s/%s/unlabelled", root, dom->name);
        for (int i = 0; i < n; i++)
            if (demo_write(&r, c0 + order[i], dom, dir, "img", i) != 0) {
                free(order);
                return -1;
            }
        free(order);
        for (int c = 0; c < 4; c++)
            for (int i = 0; i < n_held; i++) {
                snprintf(dir, sizeof dir, "%s/%s/heldout/%s", root, dom->name, DEMO_CLASSES[c0 + c]);
                if (demo_write(&r, c0 + c, dom, dir, DEMO_CLASSES[c0 + c], i) != 0) return -1;
            }
    }
    if (target) {
        const int S = DEMO_SIZE;
        Image pic = {2 * S, 2 * S, rn_alloc((size_t)4 * S * S * 3)};
        Rng r;
        rng_seed(&r, seed * 1000003u + 99);
        for (int t = 0; t < 4; t++) {
            Image tile;
            demo_draw(&r, c0 + t, &DEMO_DOMAINS[0], &tile);
            for (int y = 0; y < S; y++)
                memcpy(pic.rgb + ((size_t)(t / 2 * S + y) * 2 * S + (size_t)(t % 2) * S) * 3,
                       tile.rgb + (size_t)y * S * 3, (size_t)S * 3);
            image_free(&tile);
        }
        snprintf(dir, sizeof dir, "%s/composite.png", root);
        int rc = image_write_png(dir, &pic);
        image_free(&pic);
        if (rc != 0) return -1;
    }
    printf("demo data in %s: train/ (%s, %s, %s, %s: %d each), %s/ and %s/ (unlabelled %d, "
           "held-out 4 x %d each)%s\n",
           root, DEMO_CLASSES[c0], DEMO_CLASSES[c0 + 1], DEMO_CLASSES[c0 + 2], DEMO_CLASSES[c0 + 3],
           per_class, DEMO_DOMAINS[1].name, DEMO_DOMAINS[2].name, 4 * n_unlab, n_held,
           target ? ", composite.png (2 x 2 shapes)" : "");
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
    char cache_dir[520]; /* --cache-dir, or RUN/cache */
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
    char title[256];                /* report.html's title */
} Run;

static int write_progress(const Run *run);

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
        buf_printf(b, "%d %d %.17g %.17g %.17g %.17g %.17g %.17g;", e->epoch, e->phase,
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
        e.phase = (int)strtol(end, &end, 10);
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
        if (dist_is_root() && (save_checkpoint(run, t, pc, &st) != 0 || write_progress(run) != 0))
            return -1;
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

/* history.csv, and report.html with the curves so far, rewritten (atomically) after every
 * epoch so that a reload shows a run in progress. */
static int write_progress(const Run *run) {
    char path[1100];
    Report r = {0};
    r.title = run->title;
    r.history = run->hist;
    r.n_history = run->n_hist;
    r.restored_best = A.patience > 0;
    r.in_progress = 1;
    snprintf(path, sizeof path, "%s/history.csv", run->dir);
    if (report_write_history_csv(&r, path) != 0) return -1;
    snprintf(path, sizeof path, "%s/report.html", run->dir);
    return report_write_html(&r, path);
}

/* A split whose accuracy's 95 % interval is too wide gets a warning on stderr too. */
static void warn_if_small(const Metrics *m, const char *split) {
    double half;
    if (!metrics_too_small(m, &half)) return;
    fprintf(stderr,
            "warning: the %s split (%d images) is too small to trust: its accuracy's 95%% "
            "interval is +-%.1f points (the rule: wider than +-%.0f points)\n",
            split, m->n, 100 * half, 100 * METRICS_TRUST_HALF_WIDTH);
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

/* One option's current value as command-line text ("" for an unset string). */
static void option_value(const CliOption *o, char *out, size_t len) {
    switch (o->kind) {
    case CLI_STR: snprintf(out, len, "%s", *(const char **)o->dest); break;
    case CLI_INT:
    case CLI_FLAG: snprintf(out, len, "%d", *(const int *)o->dest); break;
    case CLI_FLOAT: snprintf(out, len, "%.9g", (double)*(const float *)o->dest); break;
    case CLI_SECTION: out[0] = 0; break;
    }
}

/* The model file's "training" metadata (infer --info): what made the model, and nothing
 * that differs between an uninterrupted and a resumed run (no run id, output folder, date
 * or timings) or between settings that give the same result (threads, --low-memory), so
 * that those runs still write the same file byte for byte. */
static void training_json(Buf *b, Net *net, const Split *tr, const Split *va, const Split *te,
                          const Metrics *mv, const Metrics *mt) {
    buf_printf(b, "{\"version\":");
    buf_json_string(b, RN_VERSION);
    buf_printf(b, ",\"options\":[");
    int first = 1;
    for (int i = 0; i < PROGRAM.n_options; i++) {
        const CliOption *o = &PROGRAM.options[i];
        if (o->kind == CLI_SECTION || (o->flags & CLI_NO_RECORD) || !strcmp(o->name, "out") ||
            !strcmp(o->name, "run-id") || !strcmp(o->name, "cache-dir"))
            continue;
        /* and none that leave the result as it is */
        if (!strcmp(o->name, "threads") || !strcmp(o->name, "low-memory") ||
            !strcmp(o->name, "no-cache"))
            continue;
        /* the options that differ from their defaults */
        char now[1200], def[1200];
        option_value(o, now, sizeof now);
        Args saved = A;
        cli_set(o, o->def);
        option_value(o, def, sizeof def);
        A = saved;
        if (!strcmp(now, def)) continue;
        Buf opt = {0};
        buf_printf(&opt, "--%s=%s", o->name, now);
        buf_printf(b, "%s", first ? "" : ",");
        buf_json_string(b, opt.data);
        buf_free(&opt);
        first = 0;
    }
    buf_printf(b, "],\"data\":{\"source\":");
    buf_json_string(b, tr->d.root);
    buf_printf(b, ",\"classes\":%d,\"train\":%d,\"val\":%d,\"test\":%d}", tr->d.n_classes,
               tr->d.n, va->d.n, te->d.n);
    buf_printf(b, ",\"parameters\":{\"total\":%lld,\"trainable\":%lld}",
               (long long)net_count_params(net, 0), (long long)net_count_params(net, 1));
    const Metrics *ms[2] = {mv, mt};
    const char *names[2] = {"val", "test"};
    for (int i = 0; i < 2; i++) {
        if (!ms[i]) continue;
        buf_printf(b, ",\"%s\":{\"n\":%d,\"accuracy\":%.6g,\"macro_f1\":%.6g", names[i], ms[i]->n,
                   ms[i]->accuracy, ms[i]->macro_f1);
        if (isfinite(ms[i]->loss)) buf_printf(b, ",\"loss\":%.6g", ms[i]->loss);
        buf_printf(b, "}");
    }
    buf_printf(b, "}");
}

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
    /* preprocessing: the options, else the architecture's defaults (the registry's) */
    const ArchSpec *arch = arch_find(A.arch);
    if (prep_parse(A.preprocess[0] ? A.preprocess : arch->preprocess, &t.prep.kind) != 0)
        return -1;
    t.prep.size = A.img_size > 0 ? A.img_size : arch->size;
    t.prep.crop_pct = A.crop_pct > 0 ? A.crop_pct : arch->crop_pct;
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
        snprintf(t.cache_dir, sizeof t.cache_dir, "%s/cache", run->dir);
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
           "thread%s, %s kernels\n",
           A.arch, (long long)net_count_params(net, 0), t.prep.size, t.prep.size,
           prep_name(t.prep.kind), A.head, scratch ? "(trained end to end)" : "frozen", t.fc, t.fh,
           t.fw, rn_threads(), rn_threads() == 1 ? "" : "s", simd_name());
    snprintf(run->title, sizeof run->title, "%s on %s", A.arch,
             A.data[0]       ? A.data
             : A.data_csv[0] ? A.data_csv
                             : A.cifar_bin);

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
    /* phases are numbered as run: pseudo-labelling follows fine-tuning, or the head */
    int first_pseudo = A.finetune_epochs > 0 ? 3 : 2;
    if (run->resume_phase < first_pseudo && domain_row(run, &t, &te, ev, n_e ? n_p : 0, 0) != 0)
        goto done;

    /* ---- pseudo-labelling, one unlabelled domain after the other */
    for (int i = 0; i < n_p; i++) {
        int phase = first_pseudo + i, n_u = u[i].d.n, kept = 0;
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
        warn_if_small(&mv, "validation");
    }
    if (te.d.n > 0) {
        if (evaluate(&t, &te, &loss, &acc, &mt, &test_probs, &test_ok) != 0) goto done;
        have_mt = 1;
        printf("\n== test (%d images)\n", te.d.n);
        metrics_print_report(&mt, tr.d.class_names, stdout);
        warn_if_small(&mt, "test");
    } else if (va.d.n > 0) { /* the report's per-image parts then come from val */
        Metrics unused;
        if (evaluate(&t, &va, &loss, &acc, &unused, &test_probs, &test_ok) != 0) goto done;
        metrics_free(&unused);
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
    Buf training = {0};
    training_json(&training, net, &tr, &va, &te, have_mv ? &mv : NULL, have_mt ? &mt : NULL);
    info.training = training.data;
    snprintf(path, sizeof path, "%s/model.safetensors", run->dir);
    int saved = dist_is_root() ? model_save(path, net, &info) : 0;
    buf_free(&training);
    if (saved != 0) goto done;

    Buf notes = {0};
    buf_printf(&notes,
               "command: %s\nweights: %s\ntrain %d, val %d, test %d images; %d thread(s), "
               "%s kernels; feature extraction %.1f s, total %.1f s; peak memory %ld MB",
               command, A.weights, tr.d.n, va.d.n, te.d.n, rn_threads(), simd_name(), feat_seconds,
               rn_seconds() - run->t0, rn_peak_rss_kb() / 1024);
    RunInfo ri = {A.arch,
                  A.head,
                  A.weights,
                  t.prep.size,
                  (long long)net_count_params(net, 0),
                  (long long)net_count_params(net, 1),
                  rn_seconds() - run->t0,
                  rn_peak_rss_kb() / 1024.0};
    Report r = {0};
    r.title = run->title;
    r.class_names = tr.d.class_names;
    r.k = t.k;
    r.test = have_mt ? &mt : NULL;
    r.val = have_mv ? &mv : NULL;
    r.history = run->hist;
    r.n_history = run->n_hist;
    r.domain_acc = n_p ? run->dacc : NULL;
    r.n_domains = n_p ? run->n_dom : 0;
    r.domain_names = dnames;
    r.notes = notes.data;
    r.data = test_probs ? (te.d.n > 0 ? &te.d : &va.d) : NULL;
    r.probs = test_probs;
    r.ok = test_ok;
    r.restored_best = A.patience > 0;
    r.run = &ri;
    char jpath[1024], hpath[1024], ppath[1024];
    snprintf(jpath, sizeof jpath, "%s/metrics.json", run->dir);
    snprintf(path, sizeof path, "%s/report.html", run->dir);
    snprintf(hpath, sizeof hpath, "%s/history.csv", run->dir);
    snprintf(ppath, sizeof ppath, "%s/predictions.csv", run->dir);
    int wrc = dist_is_root() &&
              (report_write_json(&r, jpath) != 0 || report_write_html(&r, path) != 0 ||
              report_write_history_csv(&r, hpath) != 0 ||
              (r.data && report_write_predictions_csv(&r, ppath) != 0));
    buf_free(&notes);
    if (wrc) goto done;
    printf("\nmodel:   %s/model.safetensors\nmetrics: %s\nreport:  %s\nhistory: %s\n", run->dir,
           jpath, path, hpath);
    if (r.data) printf("predictions: %s\n", ppath);
    printf("peak memory: %ld MB (resident)\n", rn_peak_rss_kb() / 1024);
    rc = 0;

done:
    if (have_mv) metrics_free(&mv);
    if (have_mt) metrics_free(&mt);
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

/* The options' own consistency, before anything is read or written: a usage error. */
static int check_options(void) {
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
    int sources = !!A.data[0] + !!A.data_csv[0] + !!A.cifar_bin[0];
    if (sources != 1) {
        rn_set_error("give exactly one of --data DIR, --data-csv FILE, --cifar-bin DIR");
        return -1;
    }
    HeadSpec hs;
    Schedule sched;
    OptType ot;
    PrepKind pk;
    float lo, hi;
    if (head_parse(A.head, &hs) != 0 || schedule_parse(A.schedule, &sched) != 0 ||
        opt_parse(A.opt, &ot) != 0 || (A.preprocess[0] && prep_parse(A.preprocess, &pk) != 0))
        return -1;
    if (sscanf(A.aug_scale, "%f,%f", &lo, &hi) != 2 || !(lo > 0 && lo <= hi && hi <= 1)) {
        rn_set_error("--aug-scale: expected MIN,MAX with 0 < MIN <= MAX <= 1, found '%s'",
                     A.aug_scale);
        return -1;
    }
    char **l = NULL;
    int n_p = split_list(A.pseudo, &l);
    free_list(l, n_p);
    int n_e = split_list(A.pseudo_eval, &l);
    free_list(l, n_e);
    if (n_e != 0 && n_e != n_p) {
        rn_set_error("--pseudo-eval: expected one folder per --pseudo folder (%d), found %d", n_p,
                     n_e);
        return -1;
    }
    return 0;
}

/* A labelled folder option: it must be a folder, and not one that holds split folders
 * (DIR/train, DIR/val) instead of class folders. */
static int check_class_folder(const char *option, const char *dir) {
    RnFileInfo fi;
    if (rn_file_info(dir, &fi) != 0 || fi.kind != RN_FILE_DIR) {
        rn_set_error("--%s %s: not a folder", option, dir);
        return -1;
    }
    char found[128];
    if (dataset_split_folders(dir, found, sizeof found) >= 2) {
        rn_set_error("--%s %s: its sub-folders (%s) look like splits, not classes: give "
                     "--data %s/train, and --val / --test with the other splits",
                     option, dir, found, dir);
        return -1;
    }
    return 0;
}

/* The files the options name exist, before the run folder is touched (a failure, not a
 * usage error: exit 1, nothing written). */
static int check_inputs(void) {
    RnFileInfo fi;
    if (strcmp(A.weights, "none") != 0 &&
        (rn_file_info(A.weights, &fi) != 0 || fi.kind != RN_FILE_REGULAR)) {
        rn_set_error("--weights %s: no such file", A.weights);
        return -1;
    }
    if (A.data[0] && check_class_folder("data", A.data) != 0) return -1;
    if (A.val[0] && check_class_folder("val", A.val) != 0) return -1;
    if (A.test[0] && check_class_folder("test", A.test) != 0) return -1;
    const char *files[2] = {A.data_csv, A.cifar_bin};
    const char *names[2] = {"data-csv", "cifar-bin"};
    for (int i = 0; i < 2; i++)
        if (files[i][0] && rn_file_info(files[i], &fi) != 0) {
            rn_set_error("--%s %s: not found", names[i], files[i]);
            return -1;
        }
    const char *lists[2] = {A.pseudo, A.pseudo_eval};
    for (int i = 0; i < 2; i++) {
        char **l = NULL;
        int n = split_list(lists[i], &l), bad = -1;
        for (int j = 0; j < n && bad < 0; j++)
            if (rn_file_info(l[j], &fi) != 0 || fi.kind != RN_FILE_DIR) bad = j;
        if (bad >= 0)
            rn_set_error("--%s: %s is not a folder", i ? "pseudo-eval" : "pseudo", l[bad]);
        free_list(l, n);
        if (bad >= 0) return -1;
    }
    return 0;
}

/* Does dir hold a run (its args.txt, checkpoint or model)? */
static int holds_run(const char *dir) {
    static const char *files[] = {"args.txt", "checkpoint.safetensors", "model.safetensors"};
    char path[1100];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (file_exists(path)) return 1;
    }
    return 0;
}

/* --overwrite: the previous run's files go before the new run starts (the feature cache
 * stays: its entries are keyed by backbone, data and preprocessing). */
static void remove_run_files(const char *dir) {
    static const char *files[] = {"args.txt", "checkpoint.safetensors", "model.safetensors",
                                  "metrics.json", "report.html"};
    char path[1400];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        remove(path);
    }
    RnDir *dp = rn_dir_open(dir);
    const char *name;
    while (dp && (name = rn_dir_next(dp)) != NULL)
        if (strncmp(name, "best-phase", 10) == 0) {
            snprintf(path, sizeof path, "%s/%s", dir, name);
            remove(path);
        }
    if (dp) rn_dir_close(dp);
}

/* A fresh run that failed before its first checkpoint: nothing to resume, so its args.txt
 * goes (and the folder, when this run made it and nothing else is in it). */
static void forget_run(const Run *run, int created) {
    char path[1100];
    snprintf(path, sizeof path, "%s/args.txt", run->dir);
    remove(path);
    if (!created) return;
    snprintf(path, sizeof path, "%s/train.lock", run->dir);
    remove(path);
    rmdir(run->dir);
}

/* Ctrl-C: the last finished epoch is checkpointed, so the run can continue; the handler
 * says how (the message is formatted before the run starts: only write() and _exit()
 * are safe inside a signal handler). */
static char interrupt_message[1400];
static void on_interrupt(int sig) {
    (void)sig;
    ssize_t w = write(2, interrupt_message, strlen(interrupt_message));
    (void)w;
    _exit(130);
}

static void catch_interrupt(const char *prog, const char *dir) {
    char quoted[1100];
    rn_shell_quote(dir, quoted, sizeof quoted);
    snprintf(interrupt_message, sizeof interrupt_message,
             "\ninterrupted: the run stops after its last finished epoch; continue it with\n"
             "  %s --resume %s\n",
             prog, quoted);
    signal(SIGINT, on_interrupt);
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
    /* train --compare RUN... --out DIR: tables and curves of finished runs (compare.c) */
    if (argc > 1 && !strcmp(argv[1], "--compare")) return compare_main(argc - 2, argv + 2);
    if (argc == 1) {
        cli_short_usage(&PROGRAM, stderr);
        return 2;
    }
    set_defaults();
    int prc = parse_args(argc - 1, argv + 1, NULL);
    if (prc == CLI_EXIT) return 0;
    if (prc != CLI_OK) return cli_usage_error(&PROGRAM);
#ifdef _OPENMP
    if (A.threads > 0) omp_set_num_threads(A.threads);
#endif
    if (A.threads == 0) dist_share_cores(); /* ranks on one machine split its cores */
    if (A.make_demo_data[0]) {
        int target = strcmp(A.demo_task, "target") == 0;
        if (!target && strcmp(A.demo_task, "source") != 0) {
            fprintf(stderr, "error: --demo-task: expected 'source' or 'target', found '%s'\n",
                    A.demo_task);
            return 2;
        }
        if (make_demo_data(A.make_demo_data, A.demo_per_class, (uint64_t)A.seed, target) != 0) {
            fprintf(stderr, "error: %s\n", rn_error());
            return 1;
        }
        return 0;
    }
    if (A.resume[0] && A.overwrite) {
        rn_set_error("--resume continues a run, --overwrite starts one again: give one of them");
        return cli_usage_error(&PROGRAM);
    }

    Run run;
    memset(&run, 0, sizeof run);
    run.t0 = rn_seconds();
    char *stored = NULL, **sargv = NULL;
    char path[1024];
    int fresh = !A.resume[0], created = 0;
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
    int root = dist_is_root();
    if (fresh) {
        if (check_options() != 0) return cli_usage_error(&PROGRAM);
        if (check_inputs() != 0) {
            fprintf(stderr, "error: %s\n", rn_error());
            return 1;
        }
        RnFileInfo fi;
        created = root && rn_file_info(run.dir, &fi) != 0;
        if (created && mkdir_p(run.dir) != 0) {
            fprintf(stderr, "error: %s\n", rn_error());
            return 1;
        }
    }
    if (root && lock_run_dir(run.dir) < 0) {
        fprintf(stderr, "error: %s\n", rn_error());
        return 1;
    }
    if (root && fresh && !A.resume[0] && holds_run(run.dir)) {
        if (!A.overwrite) {
            rn_set_error("--out %s already holds a run: continue it with --resume %s, or "
                         "start it again with --overwrite",
                         run.dir, run.dir);
            return cli_usage_error(&PROGRAM);
        }
        remove_run_files(run.dir);
    }
    if (root) remove_stale_tmp(run.dir, 1);
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
        int src = parse_args(sargc, sargv, NULL);
        A.kill_after = 0;
        if (src != CLI_OK || parse_args(argc - 1, argv + 1, NULL) != CLI_OK ||
            check_options() != 0) {
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
    catch_interrupt(argv[0], run.dir);
    Buf cmd = {0};
    buf_printf(&cmd, "train");
    for (int i = 1; i < argc; i++) buf_printf(&cmd, " %s", argv[i]);
    int rc = train_job(&run, cmd.data);
    if (rc != 0) {
        fprintf(stderr, "error: %s\n", rn_error());
        snprintf(path, sizeof path, "%s/checkpoint.safetensors", run.dir);
        if (root && !file_exists(path)) forget_run(&run, created);
    }
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
