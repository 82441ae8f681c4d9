/* metrics.c - classification metrics: accuracy, top-k, confusion matrix, per-class
 * precision / recall / F1 with scikit-learn's conventions, one-vs-rest ROC AUC, and the
 * text and JSON forms of them.
 *
 * Conventions (scikit-learn with labels=range(k), zero_division=0):
 *   precision_c = TP / (TP + FP), recall_c = TP / (TP + FN), F1_c = 2TP / (2TP + FP + FN),
 *   each 0 when its denominator is 0; macro = plain mean over all k classes (empty classes
 *   included, as sklearn does when the label list is given); weighted = mean weighted by
 *   support. Predictions are the argmax, ties going to the lowest class index (numpy). */
#include "resnet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- ROC AUC */

typedef struct {
    float score;
    int positive;
} Scored;

/* Ascending by score; NaN scores sort below every number so the order stays total. */
static int scored_cmp(const void *pa, const void *pb) {
    float a = ((const Scored *)pa)->score, b = ((const Scored *)pb)->score;
    int na = a != a, nb = b != b;
    if (na || nb) return na - nb ? (na ? -1 : 1) : 0;
    return (a > b) - (a < b);
}

/* Mann-Whitney: AUC = (R_pos - P(P+1)/2) / (P * N), where R_pos is the sum of the ranks
 * (1-based, ascending) of the positives and tied scores all get their average rank, which
 * is the same as counting each tied positive/negative pair as 1/2. O(n log n). */
static double auc_sorted(Scored *s, int n) {
    qsort(s, (size_t)n, sizeof *s, scored_cmp);
    double rank_sum = 0, n_pos = 0;
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && scored_cmp(&s[i], &s[j]) == 0) j++;
        double avg_rank = 0.5 * (double)(i + 1 + j); /* mean of ranks i+1 .. j */
        for (int t = i; t < j; t++)
            if (s[t].positive) {
                rank_sum += avg_rank;
                n_pos += 1;
            }
        i = j;
    }
    double n_neg = n - n_pos;
    if (n_pos == 0 || n_neg == 0) return NAN;
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg);
}

/* Average precision as scikit-learn's average_precision_score: AP = sum_t (R_t - R_{t-1}) P_t
 * over the distinct score thresholds t from the highest down (a step function, no
 * interpolation). s sorted ascending by auc_sorted; NAN without positives. */
static double average_precision_sorted(const Scored *s, int n) {
    double n_pos = 0;
    for (int i = 0; i < n; i++) n_pos += s[i].positive;
    if (n_pos == 0) return NAN;
    double tp = 0, fp = 0, prev_recall = 0, ap = 0;
    for (int i = n - 1; i >= 0;) {
        int j = i;
        while (j >= 0 && scored_cmp(&s[i], &s[j]) == 0) {
            tp += s[j].positive;
            fp += !s[j].positive;
            j--;
        }
        double recall = tp / n_pos;
        ap += (recall - prev_recall) * (tp / (tp + fp));
        prev_recall = recall;
        i = j;
    }
    return ap;
}

double roc_auc(int n, const float *scores, const uint8_t *positive) {
    if (n <= 0 || !scores || !positive) return NAN;
    Scored *s = malloc((size_t)n * sizeof *s);
    if (!s) return NAN;
    for (int i = 0; i < n; i++) s[i] = (Scored){scores[i], positive[i] != 0};
    double auc = auc_sorted(s, n);
    free(s);
    return auc;
}

/* ---------------------------------------------------------------- metrics */

static double ratio0(double num, double den) { return den > 0 ? num / den : 0.0; }

void metrics_compute(int n, int k, const float *probs, const int *labels, int topk, double loss,
                     Metrics *m) {
    memset(m, 0, sizeof *m);
    if (k < 1) k = 1;
    if (n < 0) n = 0;
    if (topk < 1) topk = 1;
    if (topk > k) topk = k;
    m->k = k;
    m->topk = topk;
    m->loss = loss;
    m->confusion = rn_calloc((size_t)k * k, sizeof(int));
    m->precision = rn_calloc((size_t)k, sizeof(double));
    m->recall = rn_calloc((size_t)k, sizeof(double));
    m->f1 = rn_calloc((size_t)k, sizeof(double));
    m->support = rn_calloc((size_t)k, sizeof(int));
    m->auc = rn_calloc((size_t)k, sizeof(double));
    m->ap = rn_calloc((size_t)k, sizeof(double));

    /* Samples whose label is outside [0, k) are left out of every metric. */
    long correct = 0, correct_topk = 0;
    int used = 0;
    for (int i = 0; i < n; i++) {
        int y = labels[i];
        if (y < 0 || y >= k) continue;
        const float *p = probs + (size_t)i * k;
        int guess = 0;
        for (int c = 1; c < k; c++)
            if (p[c] > p[guess]) guess = c;
        /* Top-k, ties broken stably: class c ranks after every class with a higher score
         * and after the lower-indexed classes with the same score (a stable descending
         * sort). The true class is in the top k when fewer than k classes rank before it. */
        int ahead = 0;
        for (int c = 0; c < k; c++)
            if (p[c] > p[y] || (p[c] == p[y] && c < y)) ahead++;
        used++;
        correct += guess == y;
        correct_topk += ahead < topk;
        m->confusion[(size_t)y * k + guess]++;
    }
    m->n = used;
    m->accuracy = used ? (double)correct / used : NAN;
    m->topk_accuracy = used ? (double)correct_topk / used : NAN;

    for (int c = 0; c < k; c++) {
        double tp = m->confusion[(size_t)c * k + c], row = 0, col = 0;
        for (int j = 0; j < k; j++) {
            row += m->confusion[(size_t)c * k + j];
            col += m->confusion[(size_t)j * k + c];
        }
        m->support[c] = (int)row;
        m->precision[c] = ratio0(tp, col);
        m->recall[c] = ratio0(tp, row);
        m->f1[c] = ratio0(2 * tp, row + col); /* 2TP + FP + FN = row + col */
        m->macro_precision += m->precision[c] / k;
        m->macro_recall += m->recall[c] / k;
        m->macro_f1 += m->f1[c] / k;
        m->weighted_precision += ratio0(m->precision[c] * row, used);
        m->weighted_recall += ratio0(m->recall[c] * row, used);
        m->weighted_f1 += ratio0(m->f1[c] * row, used);
    }

    /* Macro one-vs-rest AUC. sklearn's roc_auc_score(multi_class='ovr') raises when a class
     * has no positives (or no negatives); here such classes are skipped and the mean is over
     * the classes where the AUC is defined (NAN when there are none). */
    Scored *s = used ? malloc((size_t)used * sizeof *s) : NULL;
    double auc_sum = 0, ap_sum = 0;
    int auc_count = 0;
    for (int c = 0; c < k; c++) m->auc[c] = m->ap[c] = NAN;
    for (int c = 0; s && c < k; c++) {
        if (m->support[c] == 0 || m->support[c] == used) continue;
        int t = 0;
        for (int i = 0; i < n; i++) {
            if (labels[i] < 0 || labels[i] >= k) continue;
            s[t++] = (Scored){probs[(size_t)i * k + c], labels[i] == c};
        }
        double auc = auc_sorted(s, used);
        m->auc[c] = auc;
        m->ap[c] = average_precision_sorted(s, used);
        if (auc == auc) {
            auc_sum += auc;
            ap_sum += m->ap[c];
            auc_count++;
        }
    }
    free(s);
    m->macro_auc = auc_count ? auc_sum / auc_count : NAN;
    m->macro_ap = auc_count ? ap_sum / auc_count : NAN;
}

/* Wilson score interval of a proportion p observed on n trials, at z standard errors:
 *   (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n). */
void metrics_wilson(double p, int n, double z, double *lo, double *hi) {
    if (n <= 0 || !(p >= 0 && p <= 1)) {
        *lo = *hi = NAN;
        return;
    }
    double z2n = z * z / n, centre = p + z2n / 2;
    double half = z * sqrt(p * (1 - p) / n + z2n / (4.0 * n));
    *lo = (centre - half) / (1 + z2n);
    *hi = (centre + half) / (1 + z2n);
}

int metrics_too_small(const Metrics *m, double *half_width) {
    double lo, hi;
    metrics_wilson(m->accuracy, m->n, 1.959964, &lo, &hi);
    double half = (hi - lo) / 2;
    if (half_width) *half_width = half;
    return m->n == 0 || !(half <= METRICS_TRUST_HALF_WIDTH);
}

/* ---------------------------------------------------------------- ROC and PR curves */

void curve_free(Curve *c) {
    free(c->x);
    free(c->y);
    c->x = c->y = NULL;
    c->n = 0;
}

int metrics_class_curves(int n, int k, const float *probs, const int *labels, int c, Curve *roc,
                         Curve *pr) {
    memset(roc, 0, sizeof *roc);
    memset(pr, 0, sizeof *pr);
    roc->area = pr->area = NAN;
    int used = 0;
    for (int i = 0; i < n; i++) used += labels[i] >= 0 && labels[i] < k;
    Scored *s = malloc(((size_t)used + 1) * sizeof *s);
    roc->x = malloc(((size_t)used + 2) * sizeof(double));
    roc->y = malloc(((size_t)used + 2) * sizeof(double));
    pr->x = malloc(((size_t)used + 2) * sizeof(double));
    pr->y = malloc(((size_t)used + 2) * sizeof(double));
    if (!s || !roc->x || !roc->y || !pr->x || !pr->y) {
        free(s);
        curve_free(roc);
        curve_free(pr);
        rn_set_error("metrics_class_curves: out of memory for %d samples", used);
        return -1;
    }
    int t = 0;
    double n_pos = 0;
    for (int i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= k) continue;
        s[t++] = (Scored){probs[(size_t)i * k + c], labels[i] == c};
        n_pos += labels[i] == c;
    }
    double n_neg = used - n_pos;
    qsort(s, (size_t)used, sizeof *s, scored_cmp);
    /* thresholds from the highest score down; a run of tied scores is one threshold */
    roc->x[0] = roc->y[0] = 0;
    pr->x[0] = 0;
    pr->y[0] = 1; /* sklearn's precision_recall_curve ends at (recall 0, precision 1) */
    roc->n = pr->n = 1;
    double tp = 0, fp = 0;
    for (int i = used - 1; i >= 0;) {
        int j = i;
        while (j >= 0 && scored_cmp(&s[i], &s[j]) == 0) {
            tp += s[j].positive;
            fp += !s[j].positive;
            j--;
        }
        roc->x[roc->n] = n_neg > 0 ? fp / n_neg : NAN;
        roc->y[roc->n] = n_pos > 0 ? tp / n_pos : NAN;
        roc->n++;
        pr->x[pr->n] = n_pos > 0 ? tp / n_pos : NAN;
        pr->y[pr->n] = tp / (tp + fp);
        pr->n++;
        i = j;
    }
    if (n_pos > 0 && n_neg > 0) {
        roc->area = auc_sorted(s, used);
        pr->area = average_precision_sorted(s, used);
    }
    free(s);
    return 0;
}

void metrics_free(Metrics *m) {
    rn_free(m->confusion);
    rn_free(m->precision);
    rn_free(m->recall);
    rn_free(m->f1);
    rn_free(m->support);
    rn_free(m->auc);
    rn_free(m->ap);
    m->confusion = m->support = NULL;
    m->precision = m->recall = m->f1 = m->auc = m->ap = NULL;
}

/* ---------------------------------------------------------------- text report */

/* Display width of a UTF-8 string: one column per code point (continuation bytes skipped). */
static int text_width(const char *s) {
    int w = 0;
    for (; *s; s++) w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

/* Print s in exactly `width` columns, right- or left-aligned; a longer name is cut at a
 * code point boundary and ends in '~'. */
static void print_cell(FILE *out, const char *s, int width, int right) {
    int w = text_width(s);
    if (w <= width) {
        if (right)
            fprintf(out, "%*s%s", width - w, "", s);
        else
            fprintf(out, "%s%*s", s, width - w, "");
        return;
    }
    int cols = 0;
    const char *p = s;
    while (*p && cols < width - 1) {
        p++;
        while (((unsigned char)*p & 0xC0) == 0x80) p++;
        cols++;
    }
    fprintf(out, "%.*s~", (int)(p - s), s);
}

static const char *class_label(char **names, int c, char *tmp, size_t len) {
    if (names && names[c]) return names[c];
    snprintf(tmp, len, "%d", c);
    return tmp;
}

#define REPORT_NAME_MAX 28

void metrics_print_report(const Metrics *m, char **class_names, FILE *out) {
    int k = m->k;
    char tmp[32];
    int width = (int)strlen("weighted avg");
    for (int c = 0; c < k; c++) {
        int w = text_width(class_label(class_names, c, tmp, sizeof tmp));
        if (w > width) width = w < REPORT_NAME_MAX ? w : REPORT_NAME_MAX;
    }
    /* sklearn: '{:>{width}s} ' + ' {:>9}' * 4, then a blank line, rows, a blank line, avgs. */
    fprintf(out, "%*s  %9s %9s %9s %9s\n\n", width, "", "precision", "recall", "f1-score",
            "support");
    for (int c = 0; c < k; c++) {
        print_cell(out, class_label(class_names, c, tmp, sizeof tmp), width, 1);
        fprintf(out, "  %9.4f %9.4f %9.4f %9d\n", m->precision[c], m->recall[c], m->f1[c],
                m->support[c]);
    }
    fprintf(out, "\n%*s  %9s %9s %9.4f %9d\n", width, "accuracy", "", "", m->accuracy, m->n);
    fprintf(out, "%*s  %9.4f %9.4f %9.4f %9d\n", width, "macro avg", m->macro_precision,
            m->macro_recall, m->macro_f1, m->n);
    fprintf(out, "%*s  %9.4f %9.4f %9.4f %9d\n\n", width, "weighted avg", m->weighted_precision,
            m->weighted_recall, m->weighted_f1, m->n);
    char label[32];
    snprintf(label, sizeof label, "top-%d accuracy", m->topk);
    if (m->topk < k) fprintf(out, "%-16s %.4f\n", label, m->topk_accuracy);
    fprintf(out, "%-16s %.4f\n", "macro AUC (ovr)", m->macro_auc);
    fprintf(out, "%-16s %.4f\n", "macro AP (ovr)", m->macro_ap);
    if (m->loss == m->loss) fprintf(out, "%-16s %.4f\n", "loss", m->loss);

    /* Confusion matrix: rows true, columns predicted. Columns are headed by class names cut
     * to the column width; past 12 classes they are headed by index and rows say "i name". */
    int maxc = 0;
    for (size_t i = 0; i < (size_t)k * k; i++)
        if (m->confusion[i] > maxc) maxc = m->confusion[i];
    int digits = snprintf(tmp, sizeof tmp, "%d", maxc);
    int by_index = k > 12;
    int colw = by_index ? snprintf(tmp, sizeof tmp, "%d", k - 1) : 0;
    int roww = 0;
    for (int c = 0; c < k; c++) {
        int w = text_width(class_label(class_names, c, tmp, sizeof tmp));
        if (!by_index && w > colw) colw = w < 8 ? w : 8;
        if (w + (by_index ? 4 : 0) > roww) roww = w + (by_index ? 4 : 0);
    }
    if (colw < digits) colw = digits;
    if (roww > REPORT_NAME_MAX) roww = REPORT_NAME_MAX;
    if (roww < 11) roww = 11;
    fprintf(out, "\nconfusion matrix (rows: true class, columns: predicted)\n");
    print_cell(out, "true\\pred", roww, 0);
    for (int c = 0; c < k; c++) {
        fputc(' ', out);
        if (by_index)
            fprintf(out, "%*d", colw, c);
        else
            print_cell(out, class_label(class_names, c, tmp, sizeof tmp), colw, 1);
    }
    fputc('\n', out);
    for (int r = 0; r < k; r++) {
        char row_label[REPORT_NAME_MAX * 4 + 16];
        const char *name = class_label(class_names, r, tmp, sizeof tmp);
        if (by_index)
            snprintf(row_label, sizeof row_label, "%3d %.*s", r, REPORT_NAME_MAX * 4, name);
        else
            snprintf(row_label, sizeof row_label, "%.*s", REPORT_NAME_MAX * 4, name);
        print_cell(out, row_label, roww, 0);
        for (int c = 0; c < k; c++) fprintf(out, " %*d", colw, m->confusion[(size_t)r * k + c]);
        fputc('\n', out);
    }
}

/* ---------------------------------------------------------------- JSON */

static void buf_str(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void json_number(Buf *b, double x) {
    if (isfinite(x))
        buf_printf(b, "%.9g", x);
    else
        buf_str(b, "null");
}

static void json_avg(Buf *b, double p, double r, double f1, int support) {
    buf_str(b, "{\"precision\":");
    json_number(b, p);
    buf_str(b, ",\"recall\":");
    json_number(b, r);
    buf_str(b, ",\"f1\":");
    json_number(b, f1);
    buf_printf(b, ",\"support\":%d}", support);
}

/* json_avg's object with the class's ROC AUC and average precision before its brace */
static void json_class(Buf *b, const Metrics *m, int c) {
    json_avg(b, m->precision[c], m->recall[c], m->f1[c], m->support[c]);
    b->len--;
    buf_str(b, ",\"auc\":");
    json_number(b, m->auc ? m->auc[c] : NAN);
    buf_str(b, ",\"ap\":");
    json_number(b, m->ap ? m->ap[c] : NAN);
    buf_str(b, "}");
}

void metrics_json(Buf *b, const Metrics *m, char **class_names) {
    char tmp[32];
    int k = m->k;
    buf_str(b, "{\"n\":");
    buf_printf(b, "%d,\"accuracy\":", m->n);
    json_number(b, m->accuracy);
    buf_printf(b, ",\"top_k\":%d,\"top_k_accuracy\":", m->topk);
    json_number(b, m->topk_accuracy);
    buf_str(b, ",\"loss\":");
    json_number(b, m->loss);
    buf_str(b, ",\"macro_auc\":");
    json_number(b, m->macro_auc);
    buf_str(b, ",\"macro_ap\":");
    json_number(b, m->macro_ap);
    double lo, hi, half;
    metrics_wilson(m->accuracy, m->n, 1.959964, &lo, &hi);
    buf_str(b, ",\"accuracy_ci95\":[");
    json_number(b, lo);
    buf_str(b, ",");
    json_number(b, hi);
    buf_printf(b, "],\"too_small\":%s", metrics_too_small(m, &half) ? "true" : "false");
    buf_str(b, ",\"per_class\":{");
    for (int c = 0; c < k; c++) {
        if (c) buf_str(b, ",");
        buf_json_string(b, class_label(class_names, c, tmp, sizeof tmp));
        buf_str(b, ":");
        json_class(b, m, c);
    }
    buf_str(b, "},\"macro_avg\":");
    json_avg(b, m->macro_precision, m->macro_recall, m->macro_f1, m->n);
    buf_str(b, ",\"weighted_avg\":");
    json_avg(b, m->weighted_precision, m->weighted_recall, m->weighted_f1, m->n);
    buf_str(b, ",\"confusion_matrix\":[");
    for (int r = 0; r < k; r++) {
        buf_str(b, r ? ",[" : "[");
        for (int c = 0; c < k; c++)
            buf_printf(b, c ? ",%d" : "%d", m->confusion[(size_t)r * k + c]);
        buf_str(b, "]");
    }
    buf_str(b, "],\"classes\":[");
    for (int c = 0; c < k; c++) {
        if (c) buf_str(b, ",");
        buf_json_string(b, class_label(class_names, c, tmp, sizeof tmp));
    }
    buf_str(b, "]}");
}
