/* report.c - metrics.json and report.html: one self-contained page (inline CSS and SVG,
 * no scripts, nothing fetched) with headline numbers, training curves, the confusion
 * matrix, per-class scores, the pseudo-labelling matrix, misclassified samples and notes. */
#include "resnet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void put(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* ---------------------------------------------------------------- metrics.json */

static void json_number(Buf *b, double x) {
    if (isfinite(x))
        buf_printf(b, "%.9g", x);
    else
        put(b, "null");
}

static const char *class_name(char **names, int c, char *tmp, size_t len) {
    if (names && names[c]) return names[c];
    snprintf(tmp, len, "class %d", c);
    return tmp;
}

static const char *split_name(const Report *r) {
    if (r->split && *r->split) return r->split;
    return r->test ? "test" : "validation";
}

static const char *sample_path(const Report *r, int i, char *tmp, size_t len) {
    if (r->data->paths && r->data->paths[i]) return r->data->paths[i];
    snprintf(tmp, len, "#%d", i);
    return tmp;
}

/* Is history record i the best epoch of its phase, the one early stopping restored? The
 * first record with the lowest monitored loss (val loss, or train loss without val), as
 * train.c's run_phase picks it. */
static int is_best_record(const Report *r, int i) {
    const EpochRecord *h = r->history;
    int phase = h[i].phase, best = -1;
    double best_loss = INFINITY;
    for (int j = 0; j < r->n_history; j++) {
        if (h[j].phase != phase) continue;
        double v = isfinite(h[j].val_loss) ? h[j].val_loss : h[j].train_loss;
        if (v < best_loss) {
            best_loss = v;
            best = j;
        }
    }
    return best == i;
}

/* The history record whose weights the run ended with: the last phase's best epoch when
 * restored, else the last record; -1 without history. */
static int final_record(const Report *r) {
    if (!r->history || r->n_history == 0) return -1;
    int last = r->n_history - 1;
    if (!r->restored_best) return last;
    for (int i = last; i >= 0 && r->history[i].phase == r->history[last].phase; i--)
        if (is_best_record(r, i)) return i;
    return last;
}

typedef struct {
    int index, truth, guess, group_count;
    float confidence;
} Miss;

/* Grouped by true -> predicted, the largest groups first, then by the classes; inside a
 * group the most confident mistake first, then by index. */
static int miss_cmp(const void *pa, const void *pb) {
    const Miss *a = pa, *b = pb;
    if (a->group_count != b->group_count) return b->group_count - a->group_count;
    if (a->truth != b->truth) return a->truth - b->truth;
    if (a->guess != b->guess) return a->guess - b->guess;
    if (a->confidence != b->confidence) return a->confidence < b->confidence ? 1 : -1;
    return a->index - b->index;
}

/* The misclassified samples of r's split, sorted by miss_cmp; NULL (and 0) when none. */
static Miss *misclassified(const Report *r, int *n_out) {
    *n_out = 0;
    if (!r->data || !r->probs || r->k < 1) return NULL;
    int k = r->k, n = 0;
    Miss *m = malloc(((size_t)r->data->n + 1) * sizeof *m);
    int *count = calloc((size_t)k * k, sizeof *count);
    if (!m || !count) {
        free(m);
        free(count);
        return NULL;
    }
    for (int i = 0; i < r->data->n; i++) {
        int y = r->data->labels[i];
        if ((r->ok && !r->ok[i]) || y < 0 || y >= k) continue;
        const float *p = r->probs + (size_t)i * k;
        int g = 0;
        for (int c = 1; c < k; c++)
            if (p[c] > p[g]) g = c;
        if (g == y) continue;
        m[n++] = (Miss){i, y, g, 0, p[g]};
        count[(size_t)y * k + g]++;
    }
    for (int i = 0; i < n; i++) m[i].group_count = count[(size_t)m[i].truth * k + m[i].guess];
    free(count);
    qsort(m, (size_t)n, sizeof *m, miss_cmp);
    *n_out = n;
    return m;
}

static void run_json(Buf *b, const Report *r) {
    const RunInfo *ri = r->run;
    if (!ri) {
        put(b, "null");
        return;
    }
    put(b, "{\"arch\":");
    buf_json_string(b, ri->arch ? ri->arch : "");
    put(b, ",\"head\":");
    buf_json_string(b, ri->head ? ri->head : "");
    put(b, ",\"weights\":");
    buf_json_string(b, ri->weights ? ri->weights : "");
    buf_printf(b, ",\"input_size\":%d,\"parameters\":%lld,\"trainable_parameters\":%lld",
               ri->input_size, ri->parameters, ri->trainable_parameters);
    int fr = final_record(r);
    put(b, ",\"train_accuracy\":");
    json_number(b, fr >= 0 ? r->history[fr].train_acc : NAN);
    buf_printf(b, ",\"epochs\":%d,\"seconds\":", r->n_history);
    json_number(b, ri->seconds);
    put(b, ",\"peak_memory_mb\":");
    json_number(b, ri->peak_memory_mb);
    put(b, "}");
}

/* Class names go with a Metrics only when the counts agree. */
static char **names_for(const Report *r, const Metrics *m) {
    return r->class_names && r->k == m->k ? r->class_names : NULL;
}

int report_write_json(const Report *r, const char *path) {
    if (!r || !path) {
        rn_set_error("report_write_json: expected a report and a path, found NULL");
        return -1;
    }
    Buf b = {0};
    put(&b, "{\"title\":");
    if (r->title)
        buf_json_string(&b, r->title);
    else
        put(&b, "null");
    put(&b, ",\n\"test\":");
    if (r->test)
        metrics_json(&b, r->test, names_for(r, r->test));
    else
        put(&b, "null");
    put(&b, ",\n\"val\":");
    if (r->val)
        metrics_json(&b, r->val, names_for(r, r->val));
    else
        put(&b, "null");
    put(&b, ",\n\"history\":[");
    for (int i = 0; i < r->n_history; i++) {
        const EpochRecord *e = &r->history[i];
        buf_printf(&b, "%s\n{\"epoch\":%d,\"phase\":%d,\"phase_epoch\":%d,\"train_loss\":",
                   i ? "," : "", i + 1, e->phase, e->epoch);
        json_number(&b, e->train_loss);
        put(&b, ",\"train_acc\":");
        json_number(&b, e->train_acc);
        put(&b, ",\"val_loss\":");
        json_number(&b, e->val_loss);
        put(&b, ",\"val_acc\":");
        json_number(&b, e->val_acc);
        put(&b, ",\"lr\":");
        json_number(&b, e->lr);
        put(&b, ",\"seconds\":");
        json_number(&b, e->seconds);
        put(&b, "}");
    }
    put(&b, "],\n\"domains\":");
    if (r->domain_acc && r->n_domains > 0) {
        put(&b, "{\"names\":[");
        for (int i = 0; i < r->n_domains; i++) {
            if (i) put(&b, ",");
            if (r->domain_names && r->domain_names[i])
                buf_json_string(&b, r->domain_names[i]);
            else
                buf_printf(&b, "\"D%d\"", i);
        }
        put(&b, "],\"accuracy\":[");
        for (int i = 0; i < r->n_domains; i++) {
            put(&b, i ? ",[" : "[");
            for (int j = 0; j < r->n_domains; j++) {
                if (j) put(&b, ",");
                json_number(&b, r->domain_acc[(size_t)i * r->n_domains + j]);
            }
            put(&b, "]");
        }
        put(&b, "]}");
    } else {
        put(&b, "null");
    }
    put(&b, ",\n\"best_epochs\":[");
    for (int i = 0, first = 1; r->restored_best && i < r->n_history; i++) {
        if (!is_best_record(r, i)) continue;
        buf_printf(&b, "%s%d", first ? "" : ",", i + 1);
        first = 0;
    }
    put(&b, "],\n\"split\":");
    buf_json_string(&b, split_name(r));
    put(&b, ",\n\"run\":");
    run_json(&b, r);
    put(&b, ",\n\"misclassified\":[");
    int n_mis = 0;
    Miss *mis = misclassified(r, &n_mis);
    for (int i = 0; i < n_mis; i++) {
        char tmp[32];
        put(&b, i ? ",\n{\"path\":" : "\n{\"path\":");
        buf_json_string(&b, sample_path(r, mis[i].index, tmp, sizeof tmp));
        put(&b, ",\"true\":");
        buf_json_string(&b, class_name(r->class_names, mis[i].truth, tmp, sizeof tmp));
        put(&b, ",\"predicted\":");
        buf_json_string(&b, class_name(r->class_names, mis[i].guess, tmp, sizeof tmp));
        put(&b, ",\"confidence\":");
        json_number(&b, mis[i].confidence);
        put(&b, "}");
    }
    free(mis);
    put(&b, "],\n\"notes\":");
    if (r->notes)
        buf_json_string(&b, r->notes);
    else
        put(&b, "null");
    put(&b, "}\n");
    int rc = write_file_atomic(path, b.data, b.len);
    buf_free(&b);
    return rc;
}

/* ---------------------------------------------------------------- HTML helpers */

void buf_put_html(Buf *b, const char *s) {
    if (!s) return;
    for (; *s; s++) {
        switch (*s) {
        case '&': put(b, "&amp;"); break;
        case '<': put(b, "&lt;"); break;
        case '>': put(b, "&gt;"); break;
        case '"': put(b, "&quot;"); break;
        case '\'': put(b, "&#39;"); break;
        default: buf_put(b, s, 1);
        }
    }
}

/* Escaped, cut to at most max_chars code points with an ellipsis when longer. */
static void esc_cut(Buf *b, const char *s, int max_chars) {
    int chars = 0;
    const char *p = s;
    while (*p) {
        if (((unsigned char)*p & 0xC0) != 0x80) {
            if (chars == max_chars) break;
            chars++;
        }
        p++;
    }
    if (!*p) {
        buf_put_html(b, s);
        return;
    }
    /* too long: keep max_chars - 1 code points and add an ellipsis */
    chars = 0;
    p = s;
    while (*p) {
        if (((unsigned char)*p & 0xC0) != 0x80 && chars++ == max_chars - 1) break;
        p++;
    }
    char *head = malloc((size_t)(p - s) + 1);
    if (!head) return;
    memcpy(head, s, (size_t)(p - s));
    head[p - s] = 0;
    buf_put_html(b, head);
    put(b, "\xE2\x80\xA6");
    free(head);
}

static void pct(Buf *b, double x) {
    if (isfinite(x))
        buf_printf(b, "%.1f%%", 100 * x);
    else
        put(b, "&mdash;");
}

static void num(Buf *b, double x, int digits) {
    if (isfinite(x))
        buf_printf(b, "%.*f", digits, x);
    else
        put(b, "&mdash;");
}

/* Sequential colour scale through the given RGB stops, t in [0, 1]. */
typedef struct {
    double t;
    int r, g, b;
} ColorStop;
static const ColorStop blues[] = {{0.00, 247, 251, 255},
                                  {0.25, 198, 219, 239},
                                  {0.50, 107, 174, 214},
                                  {0.75, 33, 113, 181},
                                  {1.00, 8, 48, 107}};
static const ColorStop greens[] = {
    {0.00, 254, 242, 242}, {0.35, 254, 240, 199}, {0.70, 187, 247, 208}, {1.00, 22, 163, 74}};

static void color(Buf *b, const ColorStop *s, int n, double t) {
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    int i = 0;
    while (i + 2 < n && t > s[i + 1].t) i++;
    double u = (t - s[i].t) / (s[i + 1].t - s[i].t);
    buf_printf(b, "#%02x%02x%02x", (int)lround(s[i].r + u * (s[i + 1].r - s[i].r)),
               (int)lround(s[i].g + u * (s[i + 1].g - s[i].g)),
               (int)lround(s[i].b + u * (s[i + 1].b - s[i].b)));
}

/* 1, 2 or 5 times a power of ten, close to x. */
static double nice_step(double x) {
    double p = pow(10, floor(log10(x))), f = x / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

/* ---------------------------------------------------------------- line charts */

enum { SERIES_LOSS, SERIES_ACC, SERIES_LR };

static double series_value(const EpochRecord *e, int kind, int val) {
    if (kind == SERIES_LR) return val ? NAN : e->lr;
    if (kind == SERIES_LOSS) return val ? e->val_loss : e->train_loss;
    return val ? e->val_acc : e->train_acc;
}

#define CHART_W 560
#define CHART_H 300
#define PAD_L   60
#define PAD_R   18
#define PAD_T   34
#define PAD_B   46

static void line_chart(Buf *b, const Report *r, int kind) {
    const char *ylabel = kind == SERIES_LOSS ? "loss" : kind == SERIES_ACC ? "accuracy"
                                                                           : "learning rate";
    const char *colors[2] = {"#2563eb", "#ea580c"};
    const char *names[2] = {"train", "val"};
    if (kind == SERIES_LR) {
        colors[0] = "#0d9488";
        names[0] = "lr";
    }
    int n = r->n_history;
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++)
        for (int s = 0; s < 2; s++) {
            double v = series_value(&r->history[i], kind, s);
            if (isfinite(v)) {
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
        }
    buf_printf(b,
               "<svg class=\"chart\" viewBox=\"0 0 %d %d\" role=\"img\" "
               "aria-label=\"%s curves\">\n",
               CHART_W, CHART_H, ylabel);
    if (!isfinite(lo)) {
        buf_printf(b,
                   "<rect x=\"1\" y=\"1\" width=\"%d\" height=\"%d\" class=\"empty\"/>"
                   "<text x=\"%d\" y=\"%d\" class=\"emptytext\">no %s recorded</text>\n</svg>\n",
                   CHART_W - 2, CHART_H - 2, CHART_W / 2, CHART_H / 2, ylabel);
        return;
    }
    /* y range: loss from 0, accuracy clamped to [0, 1]; widened when flat, then snapped to
     * the tick step. */
    /* accuracies are fractions; anything above 1 (percentages?) is drawn as it is */
    int fraction = kind == SERIES_ACC && hi <= 1 + 1e-9;
    if (kind != SERIES_ACC && lo > 0) lo = 0;
    if (fraction) {
        lo = lo - 0.05 * (hi - lo);
        if (lo < 0) lo = 0;
        if (hi > 1) hi = 1;
    }
    if (hi - lo < 1e-6 * fmax(1, fabs(hi))) {
        double pad = fmax(fraction ? 0.05 : 0.5, 0.1 * fabs(hi));
        lo -= pad;
        hi += pad;
    }
    if (fraction) {
        if (lo < 0) lo = 0;
        if (hi > 1) hi = 1;
    }
    double step = nice_step((hi - lo) / 5);
    lo = floor(lo / step + 1e-9) * step;
    hi = ceil(hi / step - 1e-9) * step;
    if (fraction) {
        if (lo < 0) lo = 0;
        if (hi > 1) hi = 1;
    }
    int n_ticks = (int)floor((hi - lo) / step + 1e-6); /* about 5, at lo + i * step */

    /* x: epochs counted over the whole run (each phase's own count is in the tooltips) */
    double *xs = malloc((size_t)n * sizeof *xs);
    if (!xs) {
        put(b, "</svg>\n");
        return;
    }
    for (int i = 0; i < n; i++) xs[i] = i + 1;
    double x0 = xs[0], x1 = xs[n - 1];
    if (x1 - x0 < 1) {
        x0 -= 1;
        x1 += 1;
    }
    double pw = CHART_W - PAD_L - PAD_R, ph = CHART_H - PAD_T - PAD_B;
#define PX(x) (PAD_L + ((x)-x0) / (x1 - x0) * pw)
#define PY(y) (PAD_T + (1 - ((y)-lo) / (hi - lo)) * ph)

    /* grid and y ticks */
    put(b, "<g class=\"grid\">");
    for (int i = 0; i <= n_ticks; i++) {
        double y = PY(lo + i * step);
        buf_printf(b, "<line x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>", PAD_L,
                   (double)PAD_L + pw, y, y);
    }
    put(b, "</g>\n<g class=\"tick\">");
    for (int i = 0; i <= n_ticks; i++) {
        double t = lo + i * step, v = fabs(t) < step * 1e-6 ? 0 : t;
        if (fraction)
            buf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g%%</text>", PAD_L - 6,
                       PY(t) + 4, round(v * 1e4) / 100);
        else
            buf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>", PAD_L - 6,
                       PY(t) + 4, v);
    }
    /* x ticks: integer steps of 1, 2, 5, 10... */
    double xstep = nice_step((x1 - x0) / 8);
    if (xstep < 1) xstep = 1;
    double xfirst = ceil(x0 / xstep) * xstep;
    for (int i = 0; i <= (int)((x1 - xfirst) / xstep + 1e-9) && i <= 20; i++) {
        double t = xfirst + i * xstep;
        buf_printf(b,
                   "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>"
                   "<line class=\"tickmark\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>",
                   PX(t), CHART_H - PAD_B + 18, t, PX(t), PX(t), PAD_T + ph, PAD_T + ph + 5);
    }
    put(b, "</g>\n");
    buf_printf(b,
               "<line class=\"axis\" x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%.1f\"/>"
               "<line class=\"axis\" x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>\n",
               PAD_L, PAD_L, PAD_T, PAD_T + ph, PAD_L, PAD_L + pw, PAD_T + ph, PAD_T + ph);
    buf_printf(b,
               "<text class=\"axislabel\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
               PAD_L + pw / 2, CHART_H - 8, "epoch");
    buf_printf(b,
               "<text class=\"axislabel\" transform=\"translate(16 %.1f) rotate(-90)\" "
               "text-anchor=\"middle\">%s</text>\n",
               PAD_T + ph / 2, ylabel);

    /* phase changes: a dashed line halfway between the two records; labels one line lower
     * than the previous one's when the phases are too short for them to fit side by side */
    double last_label_x = -1e9;
    int label_row = 0;
    for (int i = 1; i < n; i++) {
        if (r->history[i].phase == r->history[i - 1].phase) continue;
        double x = PX(0.5 * (xs[i - 1] + xs[i]));
        label_row = x - last_label_x < 56 ? (label_row + 1) % 4 : 0;
        last_label_x = x;
        int left = x + 56 > PAD_L + pw; /* near the right edge: the label left of the line */
        buf_printf(b,
                   "<line class=\"phase\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%.1f\"/>"
                   "<text class=\"phaselabel\" x=\"%.1f\" y=\"%d\" text-anchor=\"%s\">phase "
                   "%d</text>\n",
                   x, x, PAD_T - 4, PAD_T + ph, left ? x - 4 : x + 4, PAD_T + 8 + 13 * label_row,
                   left ? "end" : "start", r->history[i].phase);
    }
    /* the epoch each phase restored: a ring on the monitored series and a label */
    for (int i = 0; r->restored_best && kind != SERIES_LR && i < n; i++) {
        if (!is_best_record(r, i)) continue;
        int s = isfinite(r->history[i].val_loss) ? 1 : 0;
        double v = series_value(&r->history[i], kind, s);
        if (!isfinite(v)) continue;
        buf_printf(b,
                   "<circle class=\"best\" cx=\"%.1f\" cy=\"%.1f\" r=\"7\"><title>restored best "
                   "epoch of phase %d (epoch %d)</title></circle>\n",
                   PX(xs[i]), PY(v), r->history[i].phase, r->history[i].epoch);
        /* the word too, where the phase is wide enough for it */
        int len = 0;
        for (int j = 0; j < n; j++) len += r->history[j].phase == r->history[i].phase;
        if (len * pw / fmax(1, x1 - x0) >= 36)
            buf_printf(b,
                       "<text class=\"bestlabel\" x=\"%.1f\" y=\"%.1f\" "
                       "text-anchor=\"middle\">best</text>\n",
                       PX(xs[i]), PY(v) + (kind == SERIES_ACC ? 20 : -11));
    }

    /* the two series: polylines broken at missing values, dots when there are few points */
    for (int s = 0; s < 2; s++) {
        int open = 0;
        for (int i = 0; i < n; i++) {
            double v = series_value(&r->history[i], kind, s);
            if (!isfinite(v)) {
                if (open) put(b, "\"/>\n");
                open = 0;
                continue;
            }
            if (!open)
                buf_printf(b, "<polyline class=\"series\" stroke=\"%s\" points=\"", colors[s]);
            buf_printf(b, "%s%.1f,%.1f", open ? " " : "", PX(xs[i]), PY(v));
            open = 1;
        }
        if (open) put(b, "\"/>\n");
        for (int i = 0; i < n; i++) {
            double v = series_value(&r->history[i], kind, s);
            if (!isfinite(v)) continue;
            buf_printf(b,
                       "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" fill=\"%s\"><title>%s %s, "
                       "epoch %d (phase %d, epoch %d): %.4g</title></circle>",
                       PX(xs[i]), PY(v), n <= 40 ? "3" : "1.5", colors[s], names[s], ylabel,
                       i + 1, r->history[i].phase, r->history[i].epoch, fraction ? 100 * v : v);
        }
        put(b, "\n");
    }
    /* legend, top right */
    for (int s = 0; s < (kind == SERIES_LR ? 1 : 2); s++) {
        double lx = PAD_L + pw - 130 + s * 70;
        buf_printf(b,
                   "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"14\" y2=\"14\" stroke=\"%s\" "
                   "stroke-width=\"3\"/><text class=\"legend\" x=\"%.1f\" y=\"18\">%s</text>",
                   lx, lx + 18, colors[s], lx + 23, names[s]);
    }
    put(b, "\n</svg>\n");
#undef PX
#undef PY
    free(xs);
}

/* ---------------------------------------------------------------- confusion heatmap */

static void confusion_svg(Buf *b, const Metrics *m, char **names) {
    int k = m->k;
    char tmp[32];
    int cell = 600 / k;
    if (cell > 52) cell = 52;
    if (cell < 5) cell = 5;
    /* Names on the axes while they stay readable; beyond that every few indices, and every
     * cell still names its classes in a tooltip. */
    int label_names = cell >= 11;
    int label_every = label_names ? 1 : 5 * cell >= 16 ? 5 : 10;
    double font = label_names ? (cell < 16 ? cell - 3 : 12) : 9;
    int cut = k <= 20 ? 18 : 14;
    int name_w = label_names ? (int)(font * 0.62 * cut) + 10 : 30;
    int maxlen = 0;
    for (int c = 0; c < k && label_names; c++) {
        int len = (int)strlen(class_name(names, c, tmp, sizeof tmp));
        if (len > maxlen) maxlen = len;
    }
    if (label_names && maxlen < cut) name_w = (int)(font * 0.62 * maxlen) + 14;
    if (name_w < 40) name_w = 40;
    int left = name_w + 26, top = 10, grid = cell * k;
    int bottom = label_names ? (int)(name_w * 0.75) + 44 : 56;
    int width = left + grid + 90, height = top + grid + bottom;
    buf_printf(b,
               "<svg class=\"heat\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "role=\"img\" aria-label=\"confusion matrix\">\n",
               width, height, width, height);
    /* count font: as large as the cell allows for the widest count */
    int maxc = 0;
    for (size_t i = 0; i < (size_t)k * k; i++)
        if (m->confusion[i] > maxc) maxc = m->confusion[i];
    int digits = snprintf(tmp, sizeof tmp, "%d", maxc);
    double count_font = fmin(13, fmin(cell * 0.42, (cell - 4) / (0.62 * digits)));
    for (int r = 0; r < k; r++) {
        double row = 0;
        for (int c = 0; c < k; c++) row += m->confusion[(size_t)r * k + c];
        for (int c = 0; c < k; c++) {
            int count = m->confusion[(size_t)r * k + c];
            double v = row > 0 ? count / row : 0;
            int x = left + c * cell, y = top + r * cell;
            buf_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"", x, y, cell,
                       cell);
            color(b, blues, 5, v);
            put(b, r == c ? "\" class=\"diag\"><title>" : "\"><title>");
            buf_put_html(b, class_name(names, r, tmp, sizeof tmp));
            put(b, " \xE2\x86\x92 ");
            buf_put_html(b, class_name(names, c, tmp, sizeof tmp));
            buf_printf(b, ": %d (%.1f%% of row)</title></rect>", count, 100 * v);
            if (count_font >= 6.5 && (count > 0 || k <= 12))
                buf_printf(b,
                           "<text class=\"count\" x=\"%.1f\" y=\"%.1f\" font-size=\"%.1f\" "
                           "fill=\"%s\">%d</text>",
                           x + cell / 2.0, y + cell / 2.0 + count_font * 0.35, count_font,
                           v > 0.5 ? "#fff" : "#1e293b", count);
        }
        put(b, "\n");
    }
    /* axis labels: true class on the left, predicted below (rotated) */
    for (int c = 0; c < k; c += label_every) {
        double y = top + c * cell + cell / 2.0 + font * 0.35;
        double x = left + c * cell + cell / 2.0;
        buf_printf(b,
                   "<text class=\"clabel\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\" "
                   "font-size=\"%.1f\">",
                   left - 6, y, font);
        if (label_names)
            esc_cut(b, class_name(names, c, tmp, sizeof tmp), cut);
        else
            buf_printf(b, "%d", c);
        if (label_names) {
            buf_printf(b,
                       "</text><text class=\"clabel\" text-anchor=\"end\" font-size=\"%.1f\" "
                       "transform=\"translate(%.1f %d) rotate(-45)\">",
                       font, x + font * 0.3, top + grid + 8);
            esc_cut(b, class_name(names, c, tmp, sizeof tmp), cut);
        } else {
            buf_printf(b,
                       "</text><text class=\"clabel\" text-anchor=\"middle\" font-size=\"%.1f\" "
                       "x=\"%.1f\" y=\"%.1f\">%d",
                       font, x, top + grid + 8 + font, c);
        }
        put(b, "</text>\n");
    }
    buf_printf(b,
               "<text class=\"axislabel\" transform=\"translate(12 %.1f) rotate(-90)\" "
               "text-anchor=\"middle\">true class</text>\n",
               top + grid / 2.0);
    buf_printf(b,
               "<text class=\"axislabel\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">"
               "predicted class</text>\n",
               left + grid / 2.0, height - 8);
    /* colour bar */
    int bx = left + grid + 24, bh = grid < 120 ? grid : 120;
    put(b, "<defs><linearGradient id=\"cmgrad\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">");
    for (int i = 0; i < 5; i++) {
        buf_printf(b, "<stop offset=\"%g\" stop-color=\"", blues[i].t);
        color(b, blues, 5, blues[i].t);
        put(b, "\"/>");
    }
    put(b, "</linearGradient></defs>\n");
    buf_printf(b,
               "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"%d\" fill=\"url(#cmgrad)\" "
               "stroke=\"#cbd5e1\"/><text class=\"tick\" x=\"%d\" y=\"%d\">100%%</text>"
               "<text class=\"tick\" x=\"%d\" y=\"%d\">0%%</text>\n</svg>\n",
               bx, top, bh, bx + 16, top + 9, bx + 16, top + bh);
}

/* ---------------------------------------------------------------- per-class bars */

static void class_bars_svg(Buf *b, const Metrics *m, char **names) {
    int k = m->k;
    char tmp[32];
    const char *colors[3] = {"#2563eb", "#10b981", "#f59e0b"};
    const char *labels[3] = {"precision", "recall", "F1"};
    int group = 1000 / k;
    if (group > 72) group = 72;
    if (group < 14) group = 14;
    int gap = group >= 30 ? 8 : 3, bar = (group - gap) / 3;
    /* room on the left for the first slanted name: its run is width * cos(angle) */
    int font = group >= 20 ? 12 : 10, angle = group >= 30 ? 40 : 65, longest = 0;
    for (int c = 0; c < k; c++) {
        int len = (int)strlen(class_name(names, c, tmp, sizeof tmp));
        if (len > longest) longest = len < 16 ? len : 16;
    }
    int run = (int)(longest * font * 0.6 * cos(angle * 3.14159265 / 180));
    int left = run - group / 2 > 44 ? run - group / 2 + 8 : 52, top = 30, ph = 220, pw = group * k;
    int bottom = k <= 20 ? 110 : 90;
    int width = left + pw + 16, height = top + ph + bottom;
    if (width < 420) width = 420;
    buf_printf(b,
               "<svg class=\"bars\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "role=\"img\" aria-label=\"per-class scores\">\n",
               width, height, width, height);
    put(b, "<g class=\"grid\">");
    for (int t = 0; t <= 4; t++) {
        double y = top + ph * (1 - t / 4.0);
        buf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\"/>", left, left + pw, y, y);
    }
    put(b, "</g><g class=\"tick\">");
    for (int t = 0; t <= 4; t++)
        buf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%d%%</text>", left - 6,
                   top + ph * (1 - t / 4.0) + 4, 25 * t);
    put(b, "</g>\n");
    for (int c = 0; c < k; c++) {
        double vals[3] = {m->precision[c], m->recall[c], m->f1[c]};
        for (int s = 0; s < 3; s++) {
            double v = isfinite(vals[s]) ? fmax(0, fmin(1, vals[s])) : 0;
            double h = v * ph;
            buf_printf(b,
                       "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"%s\"><title>",
                       left + c * group + gap / 2 + s * bar, top + ph - h, bar, h, colors[s]);
            buf_put_html(b, class_name(names, c, tmp, sizeof tmp));
            buf_printf(b, " %s: %.4f (support %d)</title></rect>", labels[s], vals[s],
                       m->support[c]);
        }
        /* names slanted, steeper when the groups are narrow */
        buf_printf(b,
                   "<text class=\"clabel\" text-anchor=\"end\" font-size=\"%d\" "
                   "transform=\"translate(%.1f %d) rotate(%d)\">",
                   font, left + c * group + group / 2.0 + 4, top + ph + 14, -angle);
        esc_cut(b, class_name(names, c, tmp, sizeof tmp), 16);
        put(b, "</text>");
        put(b, "\n");
    }
    buf_printf(b, "<line class=\"axis\" x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\"/>\n", left,
               left + pw, top + ph, top + ph);
    const int legend_x[3] = {0, 96, 168};
    for (int s = 0; s < 3; s++)
        buf_printf(b,
                   "<rect x=\"%d\" y=\"8\" width=\"12\" height=\"12\" rx=\"2\" fill=\"%s\"/>"
                   "<text class=\"legend\" x=\"%d\" y=\"18\">%s</text>",
                   left + legend_x[s], colors[s], left + legend_x[s] + 17, labels[s]);
    put(b, "\n</svg>\n");
}

/* ---------------------------------------------------------------- tables */

static void report_row(Buf *b, const char *cls, const char *name, double p, double r, double f1,
                       double auc, double ap, int support) {
    buf_printf(b, "<tr class=\"%s\"><th>", cls);
    buf_put_html(b, name);
    put(b, "</th><td>");
    num(b, p, 4);
    put(b, "</td><td>");
    num(b, r, 4);
    put(b, "</td><td>");
    num(b, f1, 4);
    put(b, "</td><td>");
    num(b, auc, 4);
    put(b, "</td><td>");
    num(b, ap, 4);
    buf_printf(b,
               "</td><td>%d</td><td class=\"bar\"><span style=\"width:%.1f%%\"></span></td>"
               "</tr>\n",
               support, isfinite(f1) ? 100 * fmax(0, fmin(1, f1)) : 0);
}

static void classification_table(Buf *b, const Metrics *m, char **names) {
    char tmp[32];
    put(b, "<table class=\"report\"><thead><tr><th></th><th>precision</th><th>recall</th>"
           "<th>f1-score</th><th>AUC</th><th>AP</th><th>support</th><th class=\"bar\">F1</th>"
           "</tr></thead><tbody>\n");
    for (int c = 0; c < m->k; c++)
        report_row(b, m->support[c] ? "" : "empty", class_name(names, c, tmp, sizeof tmp),
                   m->precision[c], m->recall[c], m->f1[c], m->auc ? m->auc[c] : NAN,
                   m->ap ? m->ap[c] : NAN, m->support[c]);
    put(b, "</tbody><tbody class=\"summary\"><tr><th>accuracy</th><td></td><td></td><td>");
    num(b, m->accuracy, 4);
    buf_printf(b, "</td><td></td><td></td><td>%d</td><td class=\"bar\"></td></tr>\n", m->n);
    report_row(b, "", "macro avg", m->macro_precision, m->macro_recall, m->macro_f1, m->macro_auc,
               m->macro_ap, m->n);
    report_row(b, "", "weighted avg", m->weighted_precision, m->weighted_recall, m->weighted_f1,
               NAN, NAN, m->n);
    put(b, "</tbody></table>\n<p class=\"small\">");
    if (m->topk < m->k) {
        buf_printf(b, "top-%d accuracy ", m->topk);
        pct(b, m->topk_accuracy);
        put(b, " &middot; ");
    }
    put(b, "macro AUC (one-vs-rest) ");
    num(b, m->macro_auc, 4);
    put(b, " &middot; loss ");
    num(b, m->loss, 4);
    put(b, "</p>\n");
}

static void domain_table(Buf *b, const Report *r) {
    int d = r->n_domains;
    char tmp[32];
    put(b, "<table class=\"domains\"><thead><tr><th>model after \xE2\x86\x93 / evaluated on "
           "\xE2\x86\x92</th>");
    for (int j = 0; j < d; j++) {
        snprintf(tmp, sizeof tmp, "D%d", j);
        put(b, "<th>");
        esc_cut(b, r->domain_names && r->domain_names[j] ? r->domain_names[j] : tmp, 24);
        put(b, "</th>");
    }
    put(b, "</tr></thead><tbody>\n");
    for (int i = 0; i < d; i++) {
        snprintf(tmp, sizeof tmp, "D%d", i);
        put(b, "<tr><th>");
        esc_cut(b, r->domain_names && r->domain_names[i] ? r->domain_names[i] : tmp, 24);
        put(b, "</th>");
        for (int j = 0; j < d; j++) {
            double v = r->domain_acc[(size_t)i * d + j];
            if (!isfinite(v)) {
                put(b, "<td class=\"na\">&mdash;</td>");
                continue;
            }
            put(b, "<td style=\"background:");
            color(b, greens, 4, v);
            put(b, "\">");
            pct(b, v);
            put(b, "</td>");
        }
        put(b, "</tr>\n");
    }
    put(b, "</tbody></table>\n");
}

/* ---------------------------------------------------------------- ROC and PR curves */

/* Tableau 10, cycled */
static const char *curve_colors[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                       "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

#define CURVE_SIDE 300
#define CURVE_PAD  44

/* One square chart of k curves on [0, 1] x [0, 1]; roc: ROC (with the chance diagonal),
 * else precision-recall. Points closer than half a pixel to the last drawn are skipped. */
static void curves_svg(Buf *b, const Curve *c, int k, int roc) {
    const int W = CURVE_SIDE + CURVE_PAD + 12, H = CURVE_SIDE + CURVE_PAD + 10;
    const double pw = CURVE_SIDE, x0 = CURVE_PAD, y0 = 10;
    buf_printf(b,
               "<svg class=\"chart curves\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"%s\">\n", W,
               H, roc ? "ROC curves" : "precision-recall curves");
    put(b, "<g class=\"grid\">");
    for (int t = 0; t <= 4; t++) {
        double v = t / 4.0;
        buf_printf(b,
                   "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/><line x1=\"%.1f\" "
                   "x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>",
                   x0, x0 + pw, y0 + pw * (1 - v), y0 + pw * (1 - v), x0 + pw * v, x0 + pw * v, y0,
                   y0 + pw);
    }
    put(b, "</g><g class=\"tick\">");
    for (int t = 0; t <= 4; t++) {
        double v = t / 4.0;
        buf_printf(b,
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text><text x=\"%.1f\" "
                   "y=\"%.1f\" text-anchor=\"middle\">%g</text>",
                   x0 - 5, y0 + pw * (1 - v) + 4, v, x0 + pw * v, y0 + pw + 15, v);
    }
    put(b, "</g>\n");
    buf_printf(b,
               "<text class=\"axislabel\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>"
               "<text class=\"axislabel\" transform=\"translate(12 %.1f) rotate(-90)\" "
               "text-anchor=\"middle\">%s</text>\n",
               x0 + pw / 2, H - 4, roc ? "false-positive rate" : "recall", y0 + pw / 2,
               roc ? "true-positive rate" : "precision");
    if (roc)
        buf_printf(b, "<line class=\"chance\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>\n",
                   x0, x0 + pw, y0 + pw, y0);
    for (int cls = 0; cls < k; cls++) {
        const Curve *cv = &c[cls];
        if (!isfinite(cv->area)) continue;
        buf_printf(b, "<polyline class=\"curve\" stroke=\"%s\" points=\"", curve_colors[cls % 10]);
        double lx = -1e9, ly = -1e9;
        for (int i = 0; i < cv->n; i++) {
            if (!isfinite(cv->x[i]) || !isfinite(cv->y[i])) continue;
            double px = x0 + pw * cv->x[i], py = y0 + pw * (1 - cv->y[i]);
            if (i + 1 < cv->n && fabs(px - lx) < 0.5 && fabs(py - ly) < 0.5) continue;
            buf_printf(b, "%s%.1f,%.1f", lx > -1e9 ? " " : "", px, py);
            lx = px;
            ly = py;
        }
        put(b, "\"/>\n");
    }
    buf_printf(b, "<rect class=\"axis\" fill=\"none\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                  "height=\"%.1f\"/>\n</svg>\n",
               x0, y0, pw, pw);
}

/* ROC and precision-recall per class (one-vs-rest) on r's split, up to 10 classes drawn;
 * every class's AUC and AP are in the classification report. */
static void curves_section(Buf *b, const Report *r, const Metrics *m, char **names) {
    int k = r->k, drawn = k < 10 ? k : 10;
    Curve *roc = calloc((size_t)k, sizeof *roc), *pr = calloc((size_t)k, sizeof *pr);
    int *labels = malloc(((size_t)r->data->n + 1) * sizeof *labels);
    if (!roc || !pr || !labels) goto done;
    for (int i = 0; i < r->data->n; i++)
        labels[i] = r->ok && !r->ok[i] ? -1 : r->data->labels[i];
    for (int c = 0; c < drawn; c++)
        if (metrics_class_curves(r->data->n, k, r->probs, labels, c, &roc[c], &pr[c]) != 0)
            goto done;
    buf_printf(b,
               "<section><h2>ROC and precision-recall curves (%s)</h2><p class=\"small\">Each "
               "class against the rest, at every score threshold. AUC: area under the ROC curve "
               "(0.5 is chance); AP: average precision, the area under the precision-recall "
               "step curve (chance is the class's share of the samples).",
               split_name(r));
    if (drawn < k) buf_printf(b, " The first %d of %d classes are drawn.", drawn, k);
    put(b, "</p><div class=\"two\"><div><h3>ROC</h3>\n");
    curves_svg(b, roc, drawn, 1);
    put(b, "</div><div><h3>Precision-recall</h3>\n");
    curves_svg(b, pr, drawn, 0);
    put(b, "</div></div>\n<div class=\"legendrow\">");
    for (int c = 0; c < drawn; c++) {
        char tmp[32];
        buf_printf(b, "<span><span class=\"sw\" style=\"background:%s\"></span>",
                   curve_colors[c % 10]);
        esc_cut(b, class_name(names, c, tmp, sizeof tmp), 24);
        put(b, " &middot; AUC ");
        num(b, roc[c].area, 3);
        put(b, " &middot; AP ");
        num(b, pr[c].area, 3);
        put(b, "</span>");
    }
    put(b, "</div>\n<p class=\"small\">macro AUC ");
    num(b, m->macro_auc, 4);
    put(b, " &middot; macro AP ");
    num(b, m->macro_ap, 4);
    put(b, "</p></section>\n");
done:
    for (int c = 0; roc && pr && c < drawn; c++) {
        curve_free(&roc[c]);
        curve_free(&pr[c]);
    }
    free(roc);
    free(pr);
    free(labels);
}

/* ---------------------------------------------------------------- thumbnails */

static void base64(Buf *b, const unsigned char *p, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        char q[4] = {tab[v >> 18 & 63], tab[v >> 12 & 63], i + 1 < n ? tab[v >> 6 & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        buf_put(b, q, 4);
    }
}

#define THUMB_SIDE 104

static const char *leaf_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* An <img> of sample i scaled to fit THUMB_SIDE (JPEG, or PNG for images of at most 64 px,
 * where JPEG's blocks would show), or nothing when it cannot be read. */
static void thumbnail(Buf *b, const Dataset *d, int i) {
    Image img, small;
    char why[256];
    if (dataset_load_image(d, i, &img, why, sizeof why) != 0) return;
    int longer = img.w > img.h ? img.w : img.h, png = longer <= 64;
    if (longer > THUMB_SIDE) {
        int w = (int)((double)img.w * THUMB_SIDE / longer + 0.5),
            h = (int)((double)img.h * THUMB_SIDE / longer + 0.5);
        image_resize(&img, w > 0 ? w : 1, h > 0 ? h : 1, &small);
        image_free(&img);
        img = small;
    }
    Buf enc = {0};
    if (image_encode(&img, png ? 0 : 85, &enc) == 0) {
        buf_printf(b, "<img alt=\"\" src=\"data:image/%s;base64,", png ? "png" : "jpeg");
        base64(b, (const unsigned char *)enc.data, enc.len);
        put(b, "\">");
    }
    buf_free(&enc);
    image_free(&img);
}

#define THUMBS_PER_GROUP 12
#define THUMBS_MAX       96

static void misclassified_section(Buf *b, const Report *r) {
    int n = 0;
    Miss *m = misclassified(r, &n);
    if (!m) return;
    char tmp[32];
    buf_printf(b,
               "<section><h2>Misclassified samples (%s)</h2><p class=\"small\">%d in all, "
               "grouped by true &rarr; predicted class (largest groups first), the most "
               "confident mistakes first; at most %d pictures a group and %d in all. Every one "
               "is in metrics.json and predictions.csv.</p>\n",
               split_name(r), n, THUMBS_PER_GROUP, THUMBS_MAX);
    int shown = 0;
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && m[j].truth == m[i].truth && m[j].guess == m[i].guess) j++;
        put(b, "<div class=\"group\">");
        buf_put_html(b, class_name(r->class_names, m[i].truth, tmp, sizeof tmp));
        put(b, " &rarr; ");
        buf_put_html(b, class_name(r->class_names, m[i].guess, tmp, sizeof tmp));
        buf_printf(b, " <span class=\"small\">(%d)</span></div><div class=\"thumbs\">\n", j - i);
        int g = 0;
        for (int t = i; t < j && g < THUMBS_PER_GROUP && shown < THUMBS_MAX; t++, g++, shown++) {
            const char *path = sample_path(r, m[t].index, tmp, sizeof tmp);
            put(b, "<figure title=\"");
            buf_put_html(b, path);
            put(b, "\">");
            thumbnail(b, r->data, m[t].index);
            buf_printf(b, "<figcaption>%.2f<br>", m[t].confidence);
            esc_cut(b, leaf_name(path), 28);
            put(b, "</figcaption></figure>\n");
        }
        if (j - i > g) buf_printf(b, "<p class=\"small\">and %d more</p>", j - i - g);
        put(b, "</div>\n");
        i = j;
    }
    put(b, "</section>\n");
    free(m);
}

/* ---------------------------------------------------------------- CSV files */

void csv_put_field(Buf *b, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        put(b, s);
        return;
    }
    put(b, "\"");
    for (; *s; s++) {
        if (*s == '"') put(b, "\"");
        buf_put(b, s, 1);
    }
    put(b, "\"");
}

static void csv_number(Buf *b, double x) {
    if (isfinite(x)) buf_printf(b, "%.9g", x);
}

int report_write_history_csv(const Report *r, const char *path) {
    Buf b = {0};
    put(&b, "epoch,phase,phase_epoch,lr,train_loss,train_acc,val_loss,val_acc,seconds\n");
    for (int i = 0; i < r->n_history; i++) {
        const EpochRecord *e = &r->history[i];
        double v[5] = {e->train_loss, e->train_acc, e->val_loss, e->val_acc, e->seconds};
        buf_printf(&b, "%d,%d,%d,%.9g", i + 1, e->phase, e->epoch, e->lr);
        for (int j = 0; j < 5; j++) {
            put(&b, ",");
            csv_number(&b, v[j]);
        }
        put(&b, "\n");
    }
    int rc = write_file_atomic(path, b.data ? b.data : "", b.len);
    buf_free(&b);
    return rc;
}

int report_write_predictions_csv(const Report *r, const char *path) {
    if (!r->data || !r->probs) {
        rn_set_error("%s: no predictions to write", path);
        return -1;
    }
    Buf b = {0};
    char tmp[32];
    int k = r->k;
    put(&b, "path,true,predicted,confidence");
    for (int c = 0; c < k; c++) {
        char head[300];
        snprintf(head, sizeof head, "p_%s", class_name(r->class_names, c, tmp, sizeof tmp));
        put(&b, ",");
        csv_put_field(&b, head);
    }
    put(&b, "\n");
    for (int i = 0; i < r->data->n; i++) {
        if (r->ok && !r->ok[i]) continue;
        const float *p = r->probs + (size_t)i * k;
        int g = 0, y = r->data->labels[i];
        for (int c = 1; c < k; c++)
            if (p[c] > p[g]) g = c;
        csv_put_field(&b, sample_path(r, i, tmp, sizeof tmp));
        put(&b, ",");
        if (y >= 0 && y < k) csv_put_field(&b, class_name(r->class_names, y, tmp, sizeof tmp));
        put(&b, ",");
        csv_put_field(&b, class_name(r->class_names, g, tmp, sizeof tmp));
        buf_printf(&b, ",%.6g", p[g]);
        for (int c = 0; c < k; c++) buf_printf(&b, ",%.6g", p[c]);
        put(&b, "\n");
    }
    int rc = write_file_atomic(path, b.data ? b.data : "", b.len);
    buf_free(&b);
    return rc;
}

/* ---------------------------------------------------------------- page */

static const char *css =
    "*{box-sizing:border-box}"
    "body{margin:0;background:#f1f5f9;color:#0f172a;font:15px/1.5 system-ui,-apple-system,"
    "'Segoe UI',Roboto,Helvetica,Arial,sans-serif}"
    "main{max-width:1200px;margin:0 auto;padding:28px 24px 48px}"
    "header h1{margin:0 0 4px;font-size:28px;letter-spacing:-.01em}"
    "header .sub{color:#64748b;margin:0 0 20px}"
    ".cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:16px}"
    ".card{background:#fff;border-radius:14px;padding:18px 20px;box-shadow:0 1px 3px "
    "rgba(15,23,42,.08);border-top:4px solid var(--c,#2563eb)}"
    ".card .label{color:#64748b;font-size:13px;text-transform:uppercase;letter-spacing:.05em}"
    ".card .value{font-size:36px;font-weight:700;line-height:1.15;margin-top:4px;"
    "font-variant-numeric:tabular-nums}"
    ".card .hint{color:#94a3b8;font-size:13px}"
    "section{background:#fff;border-radius:14px;padding:20px 24px;margin-top:22px;"
    "box-shadow:0 1px 3px rgba(15,23,42,.08)}"
    "section h2{margin:0 0 12px;font-size:19px}"
    ".two{display:grid;grid-template-columns:1fr 1fr;gap:20px}"
    "@media(max-width:900px){.two{grid-template-columns:1fr}}"
    ".two h3{margin:0 0 4px;font-size:15px;color:#334155}"
    ".scroll{overflow-x:auto}"
    "svg{font-family:inherit;display:block}"
    "svg.chart{width:100%;height:auto}"
    "svg .grid line{stroke:#e2e8f0;stroke-width:1}"
    "svg .tick text,svg text.tick{fill:#64748b;font-size:12px}"
    "svg .tickmark,svg .axis{stroke:#94a3b8;stroke-width:1}"
    "svg .axislabel{fill:#334155;font-size:13px;font-weight:600}"
    "svg .legend{fill:#334155;font-size:13px}"
    "svg .series{fill:none;stroke-width:2.5;stroke-linejoin:round;stroke-linecap:round}"
    "svg .phase{stroke:#7c3aed;stroke-width:1.5;stroke-dasharray:5 4}"
    "svg .phaselabel{fill:#7c3aed;font-size:12px;font-weight:600}"
    "svg .best{fill:none;stroke:#dc2626;stroke-width:2.5}"
    "svg .bestlabel{fill:#dc2626;font-size:12px;font-weight:700}"
    "svg .curve{fill:none;stroke-width:2;stroke-linejoin:round}"
    "svg .chance{stroke:#cbd5e1;stroke-dasharray:4 4}"
    "svg.curves{max-width:400px}"
    ".warn{background:#fef3c7;border:1px solid #f59e0b;color:#78350f;border-radius:10px;"
    "padding:10px 14px;margin:14px 0 0;font-size:14px}"
    ".live{background:#dbeafe;border:1px solid #3b82f6;color:#1e3a8a;border-radius:10px;"
    "padding:10px 14px;margin:0 0 14px;font-size:14px}"
    ".group{margin:14px 0 4px;font-size:15px;color:#334155}"
    ".thumbs{display:flex;flex-wrap:wrap;gap:10px}"
    ".thumbs figure{margin:0;width:112px;font-size:12px;color:#475569;text-align:center}"
    ".thumbs img{width:104px;height:104px;object-fit:contain;background:#f1f5f9;"
    "border-radius:6px;border:2px solid #fca5a5;image-rendering:pixelated}"
    ".thumbs figcaption{overflow-wrap:anywhere;line-height:1.3}"
    ".legendrow{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:13px;color:#334155}"
    ".legendrow span.sw{display:inline-block;width:12px;height:12px;border-radius:2px;"
    "margin-right:5px;vertical-align:-1px}"
    "svg .empty{fill:#f8fafc;stroke:#e2e8f0;stroke-dasharray:4 4}"
    "svg .emptytext{fill:#94a3b8;font-size:15px;text-anchor:middle}"
    "svg .count{text-anchor:middle;font-variant-numeric:tabular-nums}"
    "svg .diag{stroke:#0f172a;stroke-width:1}"
    "svg .clabel{fill:#334155}"
    "table{border-collapse:collapse;font-variant-numeric:tabular-nums}"
    "table.report{width:100%;max-width:900px}"
    "table.report th,table.report td{padding:5px 12px;text-align:right;border-bottom:1px solid "
    "#e2e8f0}"
    "table.report tbody th{text-align:left;font-weight:500;max-width:320px;overflow-wrap:anywhere}"
    "table.report thead th{color:#64748b;font-weight:600;font-size:13px}"
    "table.report tr.empty{color:#94a3b8}"
    "table.report .summary th{font-weight:700}"
    "table.report .summary tr:first-child th,table.report .summary tr:first-child td{"
    "border-top:2px solid #cbd5e1}"
    "table.report .bar{width:170px;text-align:left}"
    "table.report td.bar span{display:block;height:10px;border-radius:5px;"
    "background:linear-gradient(90deg,#fbbf24,#f59e0b)}"
    "table.domains th,table.domains td{padding:8px 14px;border:1px solid #fff;text-align:center}"
    "table.domains thead th{color:#64748b;font-size:13px}"
    "table.domains tbody th{text-align:left}"
    "table.domains td.na{background:#f8fafc;color:#cbd5e1}"
    "ol.mis{max-height:420px;overflow:auto;margin:0;padding:10px 10px 10px 52px;"
    "background:#f8fafc;border-radius:8px;font:13px/1.6 ui-monospace,SFMono-Regular,Menlo,"
    "Consolas,monospace}"
    "pre.notes{white-space:pre-wrap;overflow-wrap:anywhere;background:#f8fafc;padding:12px;"
    "border-radius:8px;font-size:13px;margin:0}"
    ".small{color:#64748b;font-size:13px}"
    "details summary{cursor:pointer;color:#2563eb;margin-top:14px}"
    "footer{color:#94a3b8;font-size:12px;text-align:center;margin-top:24px}";

static void card(Buf *b, const char *label, const char *color_hex, const char *hint, double value,
                 int as_pct) {
    buf_printf(b, "<div class=\"card\" style=\"--c:%s\"><div class=\"label\">", color_hex);
    buf_put_html(b, label);
    put(b, "</div><div class=\"value\">");
    if (as_pct)
        pct(b, value);
    else
        num(b, value, 3);
    put(b, "</div><div class=\"hint\">");
    buf_put_html(b, hint);
    put(b, "</div></div>\n");
}

/* The accuracy's 95 % interval after the number, and the warning when it is too wide. */
static void trust_note(Buf *b, const Metrics *m, const char *split) {
    double lo, hi, half;
    metrics_wilson(m->accuracy, m->n, 1.959964, &lo, &hi);
    if (!metrics_too_small(m, &half)) return;
    put(b, "<p class=\"warn\"><b>The ");
    buf_put_html(b, split);
    buf_printf(b,
               " split is too small to trust:</b> %d samples; accuracy ", m->n);
    pct(b, m->accuracy);
    put(b, ", 95&nbsp;% Wilson interval ");
    pct(b, lo);
    put(b, "&ndash;");
    pct(b, hi);
    buf_printf(b,
               " (&plusmn;%.1f points). The rule: a split is flagged when that interval is "
               "wider than &plusmn;%.0f points (about 385 samples at 50&nbsp;%% accuracy, 100 "
               "at 95&nbsp;%%); differences smaller than the interval mean nothing.</p>\n",
               100 * half, 100 * METRICS_TRUST_HALF_WIDTH);
}

int report_write_html(const Report *r, const char *path) {
    if (!r || !path) {
        rn_set_error("report_write_html: expected a report and a path, found NULL");
        return -1;
    }
    const char *title = r->title && *r->title ? r->title : "resnet-c report";
    const Metrics *m = r->test ? r->test : r->val;
    const char *split = split_name(r);
    char **names = m ? names_for(r, m) : NULL;
    int have_samples = m && r->data && r->probs && r->data->n > 0;
    char hint[160], label[300];
    Buf b = {0};
    put(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    if (r->in_progress) put(&b, "<meta http-equiv=\"refresh\" content=\"30\">");
    put(&b, "<title>");
    buf_put_html(&b, title);
    put(&b, "</title>\n<style>");
    put(&b, css);
    put(&b, "</style></head>\n<body><main>\n<header><h1>");
    buf_put_html(&b, title);
    put(&b, "</h1><p class=\"sub\">");
    if (m) {
        buf_put_html(&b, split);
        buf_printf(&b, " set: %d samples, %d classes", m->n, m->k);
    } else {
        put(&b, r->in_progress ? "training in progress" : "no evaluation metrics");
    }
    if (r->n_history) buf_printf(&b, " &middot; %d epochs recorded", r->n_history);
    put(&b, "</p>\n");
    if (r->in_progress && r->n_history > 0) {
        const EpochRecord *e = &r->history[r->n_history - 1];
        buf_printf(&b,
                   "<p class=\"live\">Training in progress: phase %d, epoch %d done (epoch %d "
                   "of the run). This page is rewritten after every epoch and reloads itself "
                   "every 30 s; the final metrics come when the run ends.</p>\n",
                   e->phase, e->epoch, r->n_history);
    }
    if (m) {
        double lo, hi;
        metrics_wilson(m->accuracy, m->n, 1.959964, &lo, &hi);
        put(&b, "<div class=\"cards\">\n");
        snprintf(label, sizeof label, "%s accuracy", split);
        snprintf(hint, sizeof hint, "%d of %d correct; 95%% interval %.1f-%.1f%%",
                 (int)lround(m->accuracy * m->n), m->n, 100 * lo, 100 * hi);
        card(&b, label, "#2563eb", hint, m->accuracy, 1);
        card(&b, "macro F1", "#10b981", "unweighted mean over classes", m->macro_f1, 0);
        card(&b, "macro AUC", "#7c3aed", "one-vs-rest, rank based", m->macro_auc, 0);
        if (m->topk < m->k) {
            snprintf(label, sizeof label, "top-%d accuracy", m->topk);
            snprintf(hint, sizeof hint, "true class among the %d highest scores", m->topk);
            card(&b, label, "#f59e0b", hint, m->topk_accuracy, 1);
        }
        if (r->test && r->val) {
            metrics_wilson(r->val->accuracy, r->val->n, 1.959964, &lo, &hi);
            snprintf(hint, sizeof hint, "held out during training; %d samples, 95%% interval "
                     "%.1f-%.1f%%", r->val->n, 100 * lo, 100 * hi);
            card(&b, "validation accuracy", "#64748b", hint, r->val->accuracy, 1);
        }
        put(&b, "</div>\n");
        trust_note(&b, m, split);
        if (r->test && r->val) trust_note(&b, r->val, "validation");
    }
    put(&b, "</header>\n");

    if (r->history && r->n_history > 0) {
        put(&b, "<section><h2>Training curves</h2><p class=\"small\">x: epochs counted over the "
                "whole run; dashed lines: a new phase");
        if (r->restored_best)
            put(&b, "; red ring: the best epoch of each phase (lowest validation loss), whose "
                    "weights the phase ended with");
        put(&b, ". history.csv holds the same numbers.</p><div class=\"two\"><div>"
                "<h3>Loss</h3>\n");
        line_chart(&b, r, SERIES_LOSS);
        put(&b, "</div><div><h3>Accuracy</h3>\n");
        line_chart(&b, r, SERIES_ACC);
        put(&b, "</div><div><h3>Learning rate</h3>\n");
        line_chart(&b, r, SERIES_LR);
        put(&b, "</div></div></section>\n");
    }

    if (m) {
        put(&b, "<section><h2>Confusion matrix (");
        buf_put_html(&b, split);
        put(&b, ")</h2><p class=\"small\">Rows are the true class, columns the prediction; "
                "colour is the share of the row, the number the count. Hover a cell for its "
                "classes.</p><div class=\"scroll\">\n");
        confusion_svg(&b, m, names);
        put(&b, "</div></section>\n");
        if (have_samples) curves_section(&b, r, m, names);
        put(&b, "<section><h2>Per-class precision, recall and F1 (");
        buf_put_html(&b, split);
        put(&b, ")</h2><div class=\"scroll\">\n");
        class_bars_svg(&b, m, names);
        put(&b, "</div></section>\n");
    }
    if (r->domain_acc && r->n_domains > 0) {
        put(&b, "<section><h2>Pseudo-labelling: accuracy by domain</h2><p class=\"small\">Row i: "
                "the model after training on domains up to i; column j: its accuracy on "
                "domain j.</p>\n");
        domain_table(&b, r);
        put(&b, "</section>\n");
    }
    if (m) {
        put(&b, "<section><h2>Classification report (");
        buf_put_html(&b, split);
        put(&b, ")</h2>\n");
        classification_table(&b, m, names);
        if (r->test && r->val) {
            put(&b, "<details><summary>validation set</summary>\n");
            classification_table(&b, r->val, names_for(r, r->val));
            put(&b, "</details>\n");
        }
        put(&b, "</section>\n");
    }
    if (have_samples) misclassified_section(&b, r);
    if (r->notes && *r->notes) {
        put(&b, "<section><h2>Notes</h2><pre class=\"notes\">");
        buf_put_html(&b, r->notes);
        put(&b, "</pre></section>\n");
    }
    put(&b, "<footer>generated by resnet-c</footer>\n</main></body></html>\n");
    int rc = write_file_atomic(path, b.data, b.len);
    buf_free(&b);
    return rc;
}
