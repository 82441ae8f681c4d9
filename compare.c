/* compare.c - train --compare RUN_A RUN_B ... --out DIR: one table of finished runs
 * (compare.csv, compare.html) and their loss and accuracy curves overlaid per split.
 *
 * It reads what train writes into each run folder, nothing else: metrics.json (the "run"
 * object: backbone, head, input size, parameter counts, time, peak memory; the test and
 * val metrics) and history.csv (the curves). Everything is checked before anything is
 * written; both files are written atomically. */
#include "resnet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void put(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* ---------------------------------------------------------------- a small JSON reader */

typedef enum { JN_NULL, JN_BOOL, JN_NUM, JN_STR, JN_ARR, JN_OBJ } JType;

typedef struct JNode {
    JType type;
    double num;
    char *str;           /* JN_STR: the decoded string; JN_OBJ member: its key in keys */
    struct JNode *items; /* JN_ARR, JN_OBJ: n children */
    char **keys;         /* JN_OBJ: n keys */
    int n;
} JNode;

static void jfree(JNode *v) {
    for (int i = 0; i < v->n; i++) {
        jfree(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    memset(v, 0, sizeof *v);
}

static const char *jws(const char *p) {
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    return p;
}

/* A string's text with the escapes train writes (\" \\ \/ \b \f \n \r \t, \u00XX) decoded;
 * other \u escapes become '?'. */
static const char *jstring(const char *p, char **out) {
    if (*p++ != '"') return NULL;
    Buf b = {0};
    while (*p && *p != '"') {
        char c = *p++;
        if (c == '\\') {
            c = *p++;
            switch (c) {
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u': {
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    char h = *p++;
                    v = v * 16 + (unsigned)(h >= '0' && h <= '9'   ? h - '0'
                                            : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                            : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                                                   : 0);
                    if (!h) {
                        buf_free(&b);
                        return NULL;
                    }
                }
                c = v < 0x80 ? (char)v : '?';
                break;
            }
            case 0: buf_free(&b); return NULL;
            default: break; /* \" \\ \/ */
            }
        }
        buf_put(&b, &c, 1);
    }
    if (*p != '"') {
        buf_free(&b);
        return NULL;
    }
    buf_put(&b, "", 1);
    *out = b.data;
    return p + 1;
}

static const char *jvalue(const char *p, JNode *v, int depth) {
    memset(v, 0, sizeof *v);
    p = jws(p);
    if (depth > 64) return NULL;
    if (*p == '{' || *p == '[') {
        int obj = *p == '{';
        v->type = obj ? JN_OBJ : JN_ARR;
        p = jws(p + 1);
        if (*p == (obj ? '}' : ']')) return p + 1;
        for (;;) {
            v->items = rn_realloc(v->items, sizeof(JNode) * (size_t)(v->n + 1));
            if (obj) v->keys = rn_realloc(v->keys, sizeof(char *) * (size_t)(v->n + 1));
            char *key = NULL;
            if (obj) {
                p = jstring(jws(p), &key);
                if (!p) return NULL;
                p = jws(p);
                if (*p++ != ':') {
                    free(key);
                    return NULL;
                }
                v->keys[v->n] = key;
            }
            p = jvalue(p, &v->items[v->n], depth + 1);
            v->n++;
            if (!p) return NULL;
            p = jws(p);
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p == (obj ? '}' : ']')) return p + 1;
            return NULL;
        }
    }
    if (*p == '"') {
        v->type = JN_STR;
        return jstring(p, &v->str);
    }
    if (!strncmp(p, "null", 4)) return p + 4;
    if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5)) {
        v->type = JN_BOOL;
        v->num = *p == 't';
        return p + (*p == 't' ? 4 : 5);
    }
    char *end;
    v->num = strtod(p, &end);
    if (end == p) return NULL;
    v->type = JN_NUM;
    return end;
}

static const JNode *jget(const JNode *o, const char *key) {
    for (int i = 0; o && o->type == JN_OBJ && i < o->n; i++)
        if (!strcmp(o->keys[i], key)) return &o->items[i];
    return NULL;
}

static double jnum(const JNode *v) { return v && v->type == JN_NUM ? v->num : NAN; }
static const char *jstr(const JNode *v) { return v && v->type == JN_STR ? v->str : ""; }

/* ---------------------------------------------------------------- one run */

typedef struct {
    const char *dir;
    char name[128]; /* the folder's last component */
    JNode json;
    EpochRecord *hist; /* from history.csv; epochs numbered over the run */
    int n_hist;
} RunRow;

static int read_history(RunRow *r, const char *path) {
    size_t len;
    char *text = (char *)read_file(path, &len);
    if (!text) return -1;
    char *line = strchr(text, '\n'); /* past the header */
    int cap = 0;
    while (line && *++line) {
        char *end = strchr(line, '\n');
        if (end) *end = 0;
        double f[9];
        char *p = line;
        for (int i = 0; i < 9; i++) {
            char *q;
            f[i] = strtod(p, &q);
            if (q == p) f[i] = NAN; /* an empty field */
            p = strchr(q, ',');
            if (!p) {
                for (int j = i + 1; j < 9; j++) f[j] = NAN;
                break;
            }
            p++;
        }
        if (r->n_hist == cap) {
            cap = cap ? 2 * cap : 64;
            r->hist = rn_realloc(r->hist, sizeof(EpochRecord) * (size_t)cap);
        }
        r->hist[r->n_hist++] = (EpochRecord){(int)f[2], (int)f[1], f[4], f[5], f[6],
                                             f[7],      f[3],      f[8]};
        line = end;
    }
    free(text);
    return 0;
}

static int read_run(RunRow *r, const char *dir) {
    char path[1100];
    memset(r, 0, sizeof *r);
    r->dir = dir;
    char trimmed[1024];
    snprintf(trimmed, sizeof trimmed, "%s", dir);
    for (size_t l = strlen(trimmed); l > 1 && trimmed[l - 1] == '/'; l--) trimmed[l - 1] = 0;
    const char *slash = strrchr(trimmed, '/');
    snprintf(r->name, sizeof r->name, "%s", slash ? slash + 1 : trimmed);
    snprintf(path, sizeof path, "%s/metrics.json", dir);
    size_t len;
    char *text = (char *)read_file(path, &len);
    if (!text) {
        rn_set_error("%s: cannot read it (is %s a finished train run?)", path, dir);
        return -1;
    }
    const char *end = jvalue(text, &r->json, 0);
    free(text);
    if (!end || r->json.type != JN_OBJ) {
        rn_set_error("%s: not valid JSON", path);
        return -1;
    }
    if (!jget(&r->json, "run") || jget(&r->json, "run")->type != JN_OBJ) {
        rn_set_error("%s: no \"run\" object (written by an older train?)", path);
        return -1;
    }
    snprintf(path, sizeof path, "%s/history.csv", dir);
    if (read_history(r, path) != 0) {
        rn_set_error("%s: cannot read it", path);
        return -1;
    }
    return 0;
}

static void run_free(RunRow *r) {
    jfree(&r->json);
    free(r->hist);
}

/* The split the headline metrics come from: test when the run had one, else val. */
static const JNode *main_split(const RunRow *r) {
    const JNode *t = jget(&r->json, "test");
    return t && t->type == JN_OBJ ? t : jget(&r->json, "val");
}

typedef struct {
    const char *name;
    double value;
    int is_int, pct;
} Cell;

/* The table's columns, in order; names are compare.csv's header. */
enum {
    C_INPUT,
    C_PARAMS,
    C_TRAINABLE,
    C_TRAIN,
    C_VAL,
    C_TEST,
    C_PREC,
    C_REC,
    C_F1,
    C_AUC,
    C_TOPK,
    C_EPOCHS,
    C_SECONDS,
    C_MEMORY,
    N_COLS
};

static void row_cells(const RunRow *r, Cell *c, int *topk) {
    const JNode *run = jget(&r->json, "run"), *m = main_split(r), *avg = jget(m, "macro_avg");
    const JNode *test = jget(&r->json, "test"), *val = jget(&r->json, "val");
    *topk = (int)jnum(jget(m, "top_k"));
    double classes = 0;
    const JNode *cl = jget(m, "classes");
    if (cl && cl->type == JN_ARR) classes = cl->n;
    Cell cells[N_COLS] = {
        {"input_size", jnum(jget(run, "input_size")), 1, 0},
        {"parameters", jnum(jget(run, "parameters")), 1, 0},
        {"trainable_parameters", jnum(jget(run, "trainable_parameters")), 1, 0},
        {"train_accuracy", jnum(jget(run, "train_accuracy")), 0, 1},
        {"val_accuracy", jnum(jget(val, "accuracy")), 0, 1},
        {"test_accuracy", jnum(jget(test, "accuracy")), 0, 1},
        {"macro_precision", jnum(jget(avg, "precision")), 0, 0},
        {"macro_recall", jnum(jget(avg, "recall")), 0, 0},
        {"macro_f1", jnum(jget(avg, "f1")), 0, 0},
        {"macro_auc", jnum(jget(m, "macro_auc")), 0, 0},
        /* top-k says nothing when k is the number of classes */
        {"top_k_accuracy", *topk < classes ? jnum(jget(m, "top_k_accuracy")) : NAN, 0, 1},
        {"epochs", jnum(jget(run, "epochs")), 1, 0},
        {"seconds", jnum(jget(run, "seconds")), 0, 0},
        {"peak_memory_mb", jnum(jget(run, "peak_memory_mb")), 0, 0},
    };
    memcpy(c, cells, sizeof cells);
}

/* ---------------------------------------------------------------- compare.csv */

static void csv_num(Buf *b, const Cell *c) {
    if (!isfinite(c->value)) return;
    if (c->is_int)
        buf_printf(b, "%.0f", c->value);
    else
        buf_printf(b, "%.6g", c->value);
}

static void write_csv(Buf *b, const RunRow *rows, int n) {
    Cell c[N_COLS];
    int topk;
    put(b, "run,path,backbone,head");
    row_cells(&rows[0], c, &topk);
    for (int j = 0; j < N_COLS; j++) {
        put(b, ",");
        put(b, c[j].name);
        if (j == C_TOPK - 1) put(b, ",top_k");
    }
    put(b, "\n");
    for (int i = 0; i < n; i++) {
        const JNode *run = jget(&rows[i].json, "run");
        row_cells(&rows[i], c, &topk);
        csv_put_field(b, rows[i].name);
        put(b, ",");
        csv_put_field(b, rows[i].dir);
        put(b, ",");
        csv_put_field(b, jstr(jget(run, "arch")));
        put(b, ",");
        csv_put_field(b, jstr(jget(run, "head")));
        for (int j = 0; j < N_COLS; j++) {
            put(b, ",");
            csv_num(b, &c[j]);
            if (j == C_TOPK - 1) {
                put(b, ",");
                if (isfinite(c[C_TOPK].value)) buf_printf(b, "%d", topk);
            }
        }
        put(b, "\n");
    }
}

/* ---------------------------------------------------------------- compare.html */

static const char *run_colors[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

enum { CV_TRAIN_LOSS, CV_VAL_LOSS, CV_TRAIN_ACC, CV_VAL_ACC };

static double curve_value(const EpochRecord *e, int kind) {
    switch (kind) {
    case CV_TRAIN_LOSS: return e->train_loss;
    case CV_VAL_LOSS: return e->val_loss;
    case CV_TRAIN_ACC: return e->train_acc;
    default: return e->val_acc;
    }
}

#define W   520
#define H   280
#define PL  56
#define PR  14
#define PT  14
#define PB  40

/* One chart: every run's series of `kind`, x = epoch over the run. */
static void overlay_chart(Buf *b, const RunRow *rows, int n, int kind, const char *title) {
    double lo = INFINITY, hi = -INFINITY;
    int xmax = 1;
    for (int i = 0; i < n; i++) {
        if (rows[i].n_hist > xmax) xmax = rows[i].n_hist;
        for (int e = 0; e < rows[i].n_hist; e++) {
            double v = curve_value(&rows[i].hist[e], kind);
            if (!isfinite(v)) continue;
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
    }
    int acc = kind == CV_TRAIN_ACC || kind == CV_VAL_ACC;
    buf_printf(b, "<div><h3>%s</h3>\n<svg class=\"chart\" viewBox=\"0 0 %d %d\" role=\"img\" "
                  "aria-label=\"%s\" data-curve=\"%d\">\n",
               title, W, H, title, kind);
    if (!isfinite(lo)) {
        buf_printf(b, "<text x=\"%d\" y=\"%d\" class=\"emptytext\">none recorded</text></svg></div>\n",
                   W / 2, H / 2);
        return;
    }
    if (acc) {
        lo = 0;
        hi = 1;
    } else {
        /* from 0 to four steps of 1, 2 or 5 times a power of ten */
        lo = 0;
        if (!(hi > 0)) hi = 1;
        double p = pow(10, floor(log10(hi / 4))), f = hi / 4 / p;
        hi = 4 * (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
    }
    double pw = W - PL - PR, ph = H - PT - PB, x0 = 1, x1 = xmax > 1 ? xmax : 2;
#define X(x) (PL + ((x)-x0) / (x1 - x0) * pw)
#define Y(y) (PT + (1 - ((y)-lo) / (hi - lo)) * ph)
    put(b, "<g class=\"grid\">");
    for (int t = 0; t <= 4; t++)
        buf_printf(b, "<line x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>", PL, PL + pw,
                   Y(lo + (hi - lo) * t / 4), Y(lo + (hi - lo) * t / 4));
    put(b, "</g><g class=\"tick\">");
    for (int t = 0; t <= 4; t++) {
        double v = lo + (hi - lo) * t / 4;
        if (acc)
            buf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.0f%%</text>", PL - 5,
                       Y(v) + 4, 100 * v);
        else
            buf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>", PL - 5,
                       Y(v) + 4, v);
    }
    int xstep = xmax <= 10 ? 1 : xmax <= 25 ? 5 : xmax <= 100 ? 10 : 50;
    for (int x = 1; x <= xmax; x += x == 1 && xstep > 1 ? xstep - 1 : xstep)
        buf_printf(b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>", X(x),
                   H - PB + 16, x);
    buf_printf(b,
               "</g><text class=\"axislabel\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">epoch"
               "</text>\n",
               PL + pw / 2, H - 6);
    for (int i = 0; i < n; i++) {
        int open = 0;
        for (int e = 0; e < rows[i].n_hist; e++) {
            double v = curve_value(&rows[i].hist[e], kind);
            if (!isfinite(v)) {
                if (open) put(b, "\"/>\n");
                open = 0;
                continue;
            }
            if (!open)
                /* earlier runs drawn wider, so that identical curves (a fine-tuning run
                 * starts as the frozen run with the same seed) both stay visible */
                buf_printf(b,
                           "<polyline class=\"series\" data-run=\"%d\" stroke=\"%s\" "
                           "stroke-width=\"%.1f\" points=\"",
                           i, run_colors[i % 10], 2.0 + 2.0 * (n - 1 - i));
            buf_printf(b, "%s%.1f,%.1f", open ? " " : "", X(e + 1), Y(v));
            open = 1;
        }
        if (open) put(b, "\"/>\n");
    }
    buf_printf(b, "<rect class=\"frame\" x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\"/>\n",
               PL, PT, pw, ph);
    put(b, "</svg></div>\n");
#undef X
#undef Y
}

static const char *css =
    "*{box-sizing:border-box}body{margin:0;background:#f1f5f9;color:#0f172a;font:15px/1.5 "
    "system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif}"
    "main{max-width:1500px;margin:0 auto;padding:28px 24px 48px}h1{margin:0 0 4px;font-size:28px}"
    ".sub{color:#64748b;margin:0 0 16px}section{background:#fff;border-radius:14px;"
    "padding:20px 24px;margin-top:22px;box-shadow:0 1px 3px rgba(15,23,42,.08)}"
    "h2{margin:0 0 12px;font-size:19px}h3{margin:0 0 4px;font-size:15px;color:#334155}"
    ".scroll{overflow-x:auto}table{border-collapse:collapse;font-variant-numeric:tabular-nums;"
    "font-size:13px}th,td{padding:5px 7px;border-bottom:1px solid #e2e8f0;text-align:right;"
    "white-space:nowrap}thead th{color:#64748b;font-size:12px;font-weight:600}"
    "tbody th,thead th:first-child{text-align:left}td.best{font-weight:700;color:#047857}"
    ".sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;"
    "vertical-align:-1px}.two{display:grid;grid-template-columns:1fr 1fr;gap:20px}"
    "@media(max-width:900px){.two{grid-template-columns:1fr}}svg{display:block;"
    "font-family:inherit}svg.chart{width:100%;height:auto}svg .grid line{stroke:#e2e8f0}"
    "svg .tick text{fill:#64748b;font-size:12px}svg .axislabel{fill:#334155;font-size:13px;"
    "font-weight:600}svg .series{fill:none;stroke-linejoin:round;stroke-opacity:.9}"
    "svg .frame{fill:none;stroke:#94a3b8}svg .emptytext{fill:#94a3b8;text-anchor:middle}"
    ".small{color:#64748b;font-size:13px}";

static const char *col_titles[N_COLS] = {
    "input", "params", "trainable", "train acc", "val acc", "test acc", "macro P", "macro R",
    "macro F1", "macro AUC", "top-k", "epochs", "time (s)", "peak MB"};

static void write_html(Buf *b, const RunRow *rows, int n) {
    put(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta "
           "name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>Comparing "
           "runs</title><style>");
    put(b, css);
    buf_printf(b, "</style></head><body><main>\n<h1>Comparing %d runs</h1><p class=\"sub\">"
                  "Macro precision, recall, F1, AUC and top-k on each run's test split (its "
                  "validation split when it had no test split); train accuracy at the epoch "
                  "whose weights the run kept. compare.csv holds the same table. The best value "
                  "of each column is in bold green.</p>\n",
               n);
    put(b, "<section><h2>Runs</h2><div class=\"scroll\"><table><thead><tr><th>run</th>"
           "<th>backbone</th><th>head</th>");
    for (int j = 0; j < N_COLS; j++) buf_printf(b, "<th>%s</th>", col_titles[j]);
    put(b, "</tr></thead><tbody>\n");
    /* the best of each accuracy-like column (higher is better) */
    double best[N_COLS];
    for (int j = 0; j < N_COLS; j++) best[j] = -INFINITY;
    for (int i = 0; i < n; i++) {
        Cell c[N_COLS];
        int topk;
        row_cells(&rows[i], c, &topk);
        for (int j = C_TRAIN; j <= C_TOPK; j++)
            if (isfinite(c[j].value) && c[j].value > best[j]) best[j] = c[j].value;
    }
    for (int i = 0; i < n; i++) {
        Cell c[N_COLS];
        int topk;
        const JNode *run = jget(&rows[i].json, "run");
        row_cells(&rows[i], c, &topk);
        buf_printf(b, "<tr><th title=\"");
        buf_put_html(b, rows[i].dir);
        buf_printf(b, "\"><span class=\"sw\" style=\"background:%s\"></span>", run_colors[i % 10]);
        buf_put_html(b, rows[i].name);
        put(b, "</th><td>");
        buf_put_html(b, jstr(jget(run, "arch")));
        put(b, "</td><td>");
        buf_put_html(b, jstr(jget(run, "head")));
        put(b, "</td>");
        for (int j = 0; j < N_COLS; j++) {
            int is_best = j >= C_TRAIN && j <= C_TOPK && n > 1 && c[j].value == best[j];
            put(b, is_best ? "<td class=\"best\">" : "<td>");
            if (!isfinite(c[j].value))
                put(b, "&mdash;");
            else if (j == C_PARAMS || j == C_TRAINABLE)
                buf_printf(b, c[j].value >= 1e5 ? "%.2fM" : "%.1fK",
                           c[j].value / (c[j].value >= 1e5 ? 1e6 : 1e3));
            else if (c[j].is_int)
                buf_printf(b, "%.0f", c[j].value);
            else if (c[j].pct)
                buf_printf(b, "%.1f%%", 100 * c[j].value);
            else if (j == C_SECONDS || j == C_MEMORY)
                buf_printf(b, "%.1f", c[j].value);
            else
                buf_printf(b, "%.4f", c[j].value);
            if (j == C_TOPK && isfinite(c[j].value)) buf_printf(b, " (k=%d)", topk);
            put(b, "</td>");
        }
        put(b, "</tr>\n");
    }
    put(b, "</tbody></table></div></section>\n");
    put(b, "<section><h2>Curves, overlaid per split</h2><p class=\"small\">x: epochs counted "
           "over each run (all its phases); one colour per run, as in the table; earlier runs "
           "are drawn wider, so a curve hidden under another's is still seen at its edges.</p>"
           "<p>");
    for (int i = 0; i < n; i++) {
        buf_printf(b, "<span class=\"sw\" style=\"background:%s\"></span>", run_colors[i % 10]);
        buf_put_html(b, rows[i].name);
        put(b, i + 1 < n ? " &nbsp; " : "");
    }
    put(b, "</p><div class=\"two\">\n");
    overlay_chart(b, rows, n, CV_TRAIN_LOSS, "Train loss");
    overlay_chart(b, rows, n, CV_VAL_LOSS, "Validation loss");
    overlay_chart(b, rows, n, CV_TRAIN_ACC, "Train accuracy");
    overlay_chart(b, rows, n, CV_VAL_ACC, "Validation accuracy");
    put(b, "</div></section>\n</main></body></html>\n");
}

/* ---------------------------------------------------------------- the table on stdout */

static void pct_cell(double v) {
    if (isfinite(v))
        printf(" %8.1f%%", 100 * v);
    else
        printf(" %9s", "-");
}

static void print_table(const RunRow *rows, int n) {
    int w = 3;
    for (int i = 0; i < n; i++) {
        int l = (int)strlen(rows[i].name);
        if (l > w) w = l < 40 ? l : 40;
    }
    printf("%-*s  %-16s %9s %9s %9s %9s %9s %7s %9s\n", w, "run", "backbone", "train", "val",
           "test", "macro F1", "trainable", "epochs", "time (s)");
    for (int i = 0; i < n; i++) {
        Cell c[N_COLS];
        int topk;
        row_cells(&rows[i], c, &topk);
        printf("%-*.*s  %-16.16s", w, w, rows[i].name, jstr(jget(jget(&rows[i].json, "run"), "arch")));
        pct_cell(c[C_TRAIN].value);
        pct_cell(c[C_VAL].value);
        pct_cell(c[C_TEST].value);
        double tp = c[C_TRAINABLE].value;
        printf(" %9.4f %8.*f%c %7.0f %9.1f\n", c[C_F1].value, tp >= 1e5 ? 2 : 1,
               tp / (tp >= 1e5 ? 1e6 : 1e3), tp >= 1e5 ? 'M' : 'K', c[C_EPOCHS].value,
               c[C_SECONDS].value);
    }
}

/* ---------------------------------------------------------------- the command */

int compare_main(int argc, char **argv) {
    const char *out = NULL;
    char **dirs = rn_alloc(sizeof(char *) * ((size_t)argc + 1));
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else if (!strncmp(argv[i], "--out=", 6))
            out = argv[i] + 6;
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "error: --compare: unknown option '%s' (usage: train --compare RUN "
                            "[RUN...] --out DIR)\n",
                    argv[i]);
            free(dirs);
            return 2;
        } else
            dirs[n++] = argv[i];
    }
    if (n < 1 || !out || !*out) {
        fprintf(stderr, "error: usage: train --compare RUN [RUN...] --out DIR\n");
        free(dirs);
        return 2;
    }
    RunRow *rows = rn_calloc((size_t)n, sizeof *rows);
    int rc = 1, got = 0;
    for (; got < n; got++)
        if (read_run(&rows[got], dirs[got]) != 0) {
            fprintf(stderr, "error: %s\n", rn_error());
            got++;
            goto done;
        }
    Buf csv = {0}, html = {0};
    write_csv(&csv, rows, n);
    write_html(&html, rows, n);
    char path[1100];
    int wrc = mkdir_p(out);
    snprintf(path, sizeof path, "%s/compare.csv", out);
    if (wrc == 0) wrc = write_file_atomic(path, csv.data, csv.len);
    snprintf(path, sizeof path, "%s/compare.html", out);
    if (wrc == 0) wrc = write_file_atomic(path, html.data, html.len);
    if (wrc == 0) {
        print_table(rows, n);
        printf("\ncompare: %s/compare.csv and %s/compare.html (%d runs)\n", out, out, n);
        rc = 0;
    } else {
        fprintf(stderr, "error: %s\n", rn_error());
    }
    buf_free(&csv);
    buf_free(&html);
done:
    for (int i = 0; i < got; i++) run_free(&rows[i]);
    free(rows);
    free(dirs);
    return rc;
}
