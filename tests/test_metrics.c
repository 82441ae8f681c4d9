/* tests/test_metrics.c - metrics against hand-computed values, ROC AUC with ties, the JSON
 * (checked by a small JSON parser below) and the HTML report's structure and escaping. */
#include "resnet.h"
#include "test.h"

#include <dirent.h>
#include <unistd.h>

/* ---------------------------------------------------------------- a tiny JSON checker */

/* Recursive descent over RFC 8259 JSON; returns the end of the value or NULL. */
static const char *json_value(const char *p, int depth);

static const char *json_ws(const char *p) {
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    return p;
}

static const char *json_string(const char *p) {
    if (*p++ != '"') return NULL;
    while (*p != '"') {
        if ((unsigned char)*p < 0x20) return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || !p[i]) return NULL;
                p += 4;
            } else if (!*p || !strchr("\"\\/bfnrt", *p)) {
                return NULL;
            }
        }
        p++;
    }
    return p + 1;
}

static const char *json_number_end(const char *p) {
    if (*p == '-') p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9') p++;
    else
        return NULL;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9')) return NULL;
        while (*p >= '0' && *p <= '9') p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!(*p >= '0' && *p <= '9')) return NULL;
        while (*p >= '0' && *p <= '9') p++;
    }
    return p;
}

static const char *json_value(const char *p, int depth) {
    if (depth > 64) return NULL;
    p = json_ws(p);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = json_ws(p + 1);
        if (*p == close) return p + 1;
        for (;;) {
            if (close == '}') {
                p = json_string(json_ws(p));
                if (!p) return NULL;
                p = json_ws(p);
                if (*p++ != ':') return NULL;
            }
            p = json_value(p, depth + 1);
            if (!p) return NULL;
            p = json_ws(p);
            if (*p == close) return p + 1;
            if (*p++ != ',') return NULL;
        }
    }
    if (*p == '"') return json_string(p);
    if (!strncmp(p, "null", 4)) return p + 4;
    if (!strncmp(p, "true", 4)) return p + 4;
    if (!strncmp(p, "false", 5)) return p + 5;
    return json_number_end(p);
}

static int json_valid(const char *s) {
    const char *end = json_value(s, 0);
    return end && *json_ws(end) == 0;
}

static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* ---------------------------------------------------------------- fixtures */

/* 10 samples, 3 classes, every score distinct within a row.
 *   true: 0 0 0 1 1 1 1 2 2 2     predicted (argmax): 0 1 0 1 1 2 1 2 0 0
 * Confusion [[2,1,0],[0,3,1],[2,0,1]]; column sums 4 4 2, row sums 3 4 3.
 *   precision = 2/4, 3/4, 1/2     recall = 2/3, 3/4, 1/3
 *   F1 = 2TP/(2TP+FP+FN) = 4/7, 6/8, 2/5
 *   macro P = 0.583333, macro R = 0.583333, macro F1 = (4/7 + 0.75 + 0.4)/3 = 0.573809524
 *   weighted P = (3*.5 + 4*.75 + 3*.5)/10 = 0.6, weighted R = 0.6,
 *   weighted F1 = (3*4/7 + 4*.75 + 3*.4)/10 = 0.591428571
 * Rank of the true class: 1 2 1 1 1 3 1 1 3 2 -> top-2 accuracy 8/10.
 * AUC one-vs-rest by brute-force pair counting (a different algorithm from the rank sum):
 *   17/21, 16/24, 15/21 -> macro 0.730158730                                          */
static const float probs3[30] = {0.7f, 0.2f, 0.1f, 0.3f, 0.6f, 0.1f,  0.5f,  0.1f,  0.4f,  0.1f,
                                 0.8f, 0.1f, 0.2f, 0.5f, 0.3f, 0.35f, 0.05f, 0.6f,  0.3f,  0.4f,
                                 0.3f, 0.2f, 0.2f, 0.6f, 0.5f, 0.3f,  0.2f,  0.45f, 0.15f, 0.4f};
static const int labels3[10] = {0, 0, 0, 1, 1, 1, 1, 2, 2, 2};

static void test_three_classes(void) {
    Metrics m;
    metrics_compute(10, 3, probs3, labels3, 2, 0.5, &m);
    CHECK(m.n == 10 && m.k == 3 && m.topk == 2);
    const int confusion[9] = {2, 1, 0, 0, 3, 1, 2, 0, 1};
    for (int i = 0; i < 9; i++) CHECK_MSG(m.confusion[i] == confusion[i], "cell %d", i);
    const double p[3] = {0.5, 0.75, 0.5}, r[3] = {2 / 3.0, 0.75, 1 / 3.0},
                 f1[3] = {4 / 7.0, 0.75, 0.4};
    const int support[3] = {3, 4, 3};
    for (int c = 0; c < 3; c++) {
        CHECK_CLOSE(m.precision[c], p[c], 1e-12);
        CHECK_CLOSE(m.recall[c], r[c], 1e-12);
        CHECK_CLOSE(m.f1[c], f1[c], 1e-12);
        CHECK(m.support[c] == support[c]);
    }
    CHECK_CLOSE(m.accuracy, 0.6, 1e-12);
    CHECK_CLOSE(m.topk_accuracy, 0.8, 1e-12);
    CHECK_CLOSE(m.macro_precision, 0.583333333333, 1e-9);
    CHECK_CLOSE(m.macro_recall, 0.583333333333, 1e-9);
    CHECK_CLOSE(m.macro_f1, 0.573809523810, 1e-9);
    CHECK_CLOSE(m.weighted_precision, 0.6, 1e-9);
    CHECK_CLOSE(m.weighted_recall, 0.6, 1e-9);
    CHECK_CLOSE(m.weighted_f1, 0.591428571429, 1e-9);
    CHECK_CLOSE(m.macro_auc, 0.730158730159, 1e-9);
    CHECK(m.loss == 0.5);
    metrics_free(&m);

    metrics_compute(10, 3, probs3, labels3, 3, NAN, &m);
    CHECK_CLOSE(m.topk_accuracy, 1.0, 1e-12);
    CHECK(isnan(m.loss));
    metrics_free(&m);
    metrics_compute(10, 3, probs3, labels3, 1, NAN, &m);
    CHECK_CLOSE(m.topk_accuracy, m.accuracy, 1e-12);
    metrics_free(&m);
}

/* k = 4, labels only 0 and 1; class 2 is predicted once but never true, class 3 neither.
 *   true 0 1 0 1, predicted 0 2 0 1
 *   class 0: P 1, R 1, F1 1; class 1: P 1/1, R 1/2, F1 2/3; classes 2, 3: 0 (zero_division=0)
 *   macro F1 = (1 + 2/3) / 4, weighted F1 = (2*1 + 2*2/3) / 4
 *   AUC: class 0 1.0, class 1 (pos .3 .7 vs neg .1 .3) 3.5/4; classes 2, 3 have no
 *   positives and are skipped -> macro 0.9375.                                        */
static void test_empty_class(void) {
    const float probs[16] = {0.8f, 0.1f, 0.1f, 0.0f, 0.1f, 0.3f, 0.6f, 0.0f,
                             0.6f, 0.3f, 0.1f, 0.0f, 0.2f, 0.7f, 0.1f, 0.0f};
    const int labels[4] = {0, 1, 0, 1};
    Metrics m;
    metrics_compute(4, 4, probs, labels, 1, NAN, &m);
    CHECK(m.support[2] == 0 && m.support[3] == 0);
    CHECK(m.confusion[1 * 4 + 2] == 1);
    CHECK(m.precision[2] == 0 && m.recall[2] == 0 && m.f1[2] == 0);
    CHECK(m.precision[3] == 0 && m.recall[3] == 0 && m.f1[3] == 0);
    CHECK_CLOSE(m.precision[1], 1.0, 1e-12);
    CHECK_CLOSE(m.recall[1], 0.5, 1e-12);
    CHECK_CLOSE(m.f1[1], 2 / 3.0, 1e-12);
    CHECK_CLOSE(m.macro_f1, (1 + 2 / 3.0) / 4, 1e-12);
    CHECK_CLOSE(m.macro_precision, 0.5, 1e-12);
    CHECK_CLOSE(m.weighted_f1, (2 + 4 / 3.0) / 4, 1e-12);
    CHECK_CLOSE(m.weighted_recall, 0.75, 1e-12);
    CHECK_CLOSE(m.accuracy, 0.75, 1e-12);
    CHECK_CLOSE(m.macro_auc, 0.9375, 1e-12);
    metrics_free(&m);
}

static void test_roc_auc(void) {
    const float s1[4] = {0.1f, 0.4f, 0.35f, 0.8f};
    const uint8_t y1[4] = {0, 0, 1, 1};
    CHECK_CLOSE(roc_auc(4, s1, y1), 0.75, 1e-12);
    /* one tied positive/negative pair counts 1/2: (1 + 0.5 + 2) / 4 */
    const float s2[4] = {0.2f, 0.5f, 0.5f, 0.9f};
    CHECK_CLOSE(roc_auc(4, s2, y1), 0.875, 1e-12);
    /* all scores tied: every pair is 1/2 */
    const float s3[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    const uint8_t y3[4] = {0, 1, 0, 1};
    CHECK_CLOSE(roc_auc(4, s3, y3), 0.5, 1e-12);
    /* perfect and reversed rankings */
    const uint8_t y4[4] = {1, 1, 0, 0};
    CHECK_CLOSE(roc_auc(4, s1, y4), 0.25, 1e-12);
    const float s5[4] = {0.9f, 0.8f, 0.2f, 0.1f};
    CHECK_CLOSE(roc_auc(4, s5, y4), 1.0, 1e-12);
    /* undefined without negatives or positives */
    const uint8_t all_pos[4] = {1, 1, 1, 1}, no_pos[4] = {0, 0, 0, 0};
    CHECK(isnan(roc_auc(4, s1, all_pos)));
    CHECK(isnan(roc_auc(4, s1, no_pos)));
    CHECK(isnan(roc_auc(0, s1, y1)));
    /* a single class in the labels: no class has both kinds, macro AUC is NAN */
    const float probs[4] = {0.9f, 0.1f, 0.6f, 0.4f};
    const int labels[2] = {0, 0};
    Metrics m;
    metrics_compute(2, 2, probs, labels, 1, NAN, &m);
    CHECK(isnan(m.macro_auc));
    CHECK_CLOSE(m.accuracy, 1.0, 1e-12);
    metrics_free(&m);
}

/* Ties in top-k: a class ranks after higher scores and after equal scores of lower index. */
static void test_topk_ties(void) {
    const float probs[8] = {0.25f, 0.25f, 0.25f, 0.25f, 0.1f, 0.4f, 0.4f, 0.1f};
    const int in_top3[2] = {2, 2}, out_top3[2] = {3, 3};
    Metrics m;
    metrics_compute(2, 4, probs, in_top3, 3, NAN, &m);
    CHECK_CLOSE(m.topk_accuracy, 1.0, 1e-12);
    CHECK_CLOSE(m.accuracy, 0.0, 1e-12); /* argmax ties go to the lower index */
    CHECK(m.confusion[2 * 4 + 0] == 1 && m.confusion[2 * 4 + 1] == 1);
    metrics_free(&m);
    metrics_compute(2, 4, probs, out_top3, 3, NAN, &m);
    /* row 0: class 3 has three equal scores of lower index ahead of it -> out;
     * row 1: class 3 (0.1) ties class 0 (0.1), which is lower -> 4th -> out */
    CHECK_CLOSE(m.topk_accuracy, 0.0, 1e-12);
    metrics_free(&m);
    /* topk larger than k is clamped */
    metrics_compute(2, 4, probs, out_top3, 9, NAN, &m);
    CHECK(m.topk == 4);
    CHECK_CLOSE(m.topk_accuracy, 1.0, 1e-12);
    metrics_free(&m);
}

/* Labels outside [0, k) are left out instead of crashing; no samples gives NAN accuracy. */
static void test_bad_labels(void) {
    const int labels[4] = {-1, 0, 7, 1};
    const float probs[8] = {0.5f, 0.5f, 0.9f, 0.1f, 0.2f, 0.8f, 0.3f, 0.7f};
    Metrics m;
    metrics_compute(4, 2, probs, labels, 1, NAN, &m);
    CHECK(m.n == 2);
    CHECK_CLOSE(m.accuracy, 1.0, 1e-12);
    CHECK_CLOSE(m.macro_auc, 1.0, 1e-12);
    metrics_free(&m);
    metrics_compute(0, 2, probs, labels, 1, NAN, &m);
    CHECK(m.n == 0 && isnan(m.accuracy) && isnan(m.macro_auc));
    CHECK(m.weighted_f1 == 0 && m.macro_f1 == 0);
    metrics_free(&m);
}

static char *names3[3] = {"cat", "dog", "<b>&\""};

static void test_json_and_text(void) {
    Metrics m;
    metrics_compute(10, 3, probs3, labels3, 2, NAN, &m);
    Buf b = {0};
    metrics_json(&b, &m, names3);
    CHECK_MSG(json_valid(b.data), "%s", b.data);
    CHECK(strstr(b.data, "\"loss\":null") != NULL);
    CHECK(strstr(b.data, "\"top_k\":2,") != NULL);
    CHECK(strstr(b.data, "\"accuracy\":0.6,") != NULL);
    CHECK(strstr(b.data, "\"confusion_matrix\":[[2,1,0],[0,3,1],[2,0,1]]") != NULL);
    CHECK(strstr(b.data, "\"<b>&\\\"\":{\"precision\":0.5,") != NULL);
    CHECK(strstr(b.data, "\"classes\":[\"cat\",\"dog\",\"<b>&\\\"\"]") != NULL);
    CHECK(strstr(b.data, "\"weighted_avg\":{\"precision\":0.6,") != NULL);
    buf_free(&b);
    /* without names the classes are numbered */
    metrics_json(&b, &m, NULL);
    CHECK(json_valid(b.data));
    CHECK(strstr(b.data, "\"classes\":[\"0\",\"1\",\"2\"]") != NULL);
    buf_free(&b);

    FILE *f = tmpfile();
    CHECK(f != NULL);
    if (!f) {
        metrics_free(&m);
        return;
    }
    metrics_print_report(&m, names3, f);
    long len = ftell(f);
    char *text = calloc(1, len > 0 ? (size_t)len + 1 : 1);
    rewind(f);
    CHECK(len > 0 && fread(text, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    CHECK(strstr(text, "   precision    recall  f1-score   support") != NULL);
    CHECK(strstr(text, "         cat     0.5000    0.6667    0.5714         3") != NULL);
    CHECK(strstr(text, "    accuracy                         0.6000        10") != NULL);
    CHECK(strstr(text, "weighted avg     0.6000    0.6000    0.5914        10") != NULL);
    CHECK(strstr(text, "top-2 accuracy   0.8000\nmacro AUC (ovr)  0.7302\n") != NULL);
    CHECK(strstr(text, "true\\pred     cat   dog <b>&\"\n") != NULL);
    CHECK(strstr(text, "<b>&\"           2     0     1\n") != NULL);
    if (test_case_failed) fprintf(stderr, "%s", text);
    free(text);
    metrics_free(&m);
}

/* ---------------------------------------------------------------- report files */

static int tmp_files_left(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static char *read_text(const char *path) {
    size_t len;
    return (char *)read_file(path, &len);
}

static void check_html(const char *html, int min_svgs) {
    CHECK(!strncmp(html, "<!DOCTYPE html>", 15));
    CHECK(strstr(html, "</html>") != NULL);
    int open = count_of(html, "<svg"), close = count_of(html, "</svg>");
    CHECK_MSG(open == close && open >= min_svgs, "<svg %d, </svg> %d", open, close);
    CHECK(count_of(html, "<section") == count_of(html, "</section>"));
    CHECK(count_of(html, "<table") == count_of(html, "</table>"));
    CHECK(strstr(html, "<script") == NULL);
    /* nothing fetched: the only sources are the embedded thumbnails */
    CHECK(count_of(html, "src=") == count_of(html, "src=\"data:image/"));
    CHECK(strstr(html, "http://") == NULL &&
          strstr(html, "https://") == NULL && strstr(html, "@import") == NULL);
    CHECK(strstr(html, ">nan") == NULL && strstr(html, "nan%") == NULL &&
          strstr(html, "-nan") == NULL && strstr(html, "\"nan") == NULL &&
          strstr(html, "inf\"") == NULL);
}

static void test_report_files(void) {
    char dir[256];
    if (test_temp_dir(dir, sizeof dir, "test_metrics") != 0)
        SKIP("cannot create a temporary directory");
    char html_path[300], json_path[300];
    snprintf(html_path, sizeof html_path, "%s/report.html", dir);
    snprintf(json_path, sizeof json_path, "%s/metrics.json", dir);

    Metrics test, val;
    metrics_compute(10, 3, probs3, labels3, 2, 0.81, &test);
    metrics_compute(10, 3, probs3, labels3, 1, NAN, &val);
    EpochRecord hist[4] = {{1, 0, 1.2, 0.4, 1.1, 0.45, 1e-3, 2.0},
                           {2, 0, 0.9, 0.6, NAN, NAN, 1e-3, 2.0},
                           {3, 1, 0.7, 0.7, 0.8, 0.65, 1e-4, 3.0},
                           {4, 1, 0.5, 0.8, 0.75, 0.7, 1e-4, 3.0}};
    double dacc[4] = {0.9, NAN, 0.6, 0.8};
    char *dnames[2] = {"clean", "rain & <fog>"};
    /* the split's items: one real picture (a thumbnail), the rest paths that do not exist */
    char png_path[300];
    snprintf(png_path, sizeof png_path, "%s/real.png", dir);
    uint8_t px[8 * 6 * 3];
    for (int i = 0; i < (int)sizeof px; i++) px[i] = (uint8_t)(i * 7);
    Image pic = {8, 6, px};
    CHECK(image_write_png(png_path, &pic) == 0);
    /* items 1, 5, 8 and 9 are misclassified */
    char *paths[10] = {"c,1.jpg", png_path, "c.jpg", "d.jpg",     "e\"q\".jpg",
                       "f.jpg",   "g.jpg",  "h.jpg", "a/<x>.jpg", "j.jpg"};
    Dataset items = {0};
    items.n = 10;
    items.n_classes = 3;
    items.labels = (int *)labels3;
    items.paths = paths;
    Report r = {0};
    r.title = "Run <1> & \"quotes\"";
    r.class_names = names3;
    r.k = 3;
    r.test = &test;
    r.val = &val;
    r.history = hist;
    r.n_history = 4;
    r.domain_acc = dacc;
    r.n_domains = 2;
    r.domain_names = dnames;
    r.notes = "train --arch resnet18 <notes> & more";
    r.data = &items;
    r.probs = probs3;
    r.restored_best = 1;
    CHECK(report_write_html(&r, html_path) == 0);
    CHECK(report_write_json(&r, json_path) == 0);
    char *html = read_text(html_path);
    CHECK(html != NULL);
    if (html) {
        check_html(html, 6);
        CHECK(strstr(html, "<b>&\"") == NULL); /* the raw class name never appears */
        CHECK(strstr(html, "&lt;b&gt;&amp;&quot;") != NULL);
        CHECK(strstr(html, "Run &lt;1&gt; &amp; &quot;quotes&quot;") != NULL);
        CHECK(strstr(html, "rain &amp; &lt;fog&gt;") != NULL);
        CHECK(strstr(html, "a/&lt;x&gt;.jpg") != NULL); /* a misclassified item's title */
        CHECK(strstr(html, "&lt;notes&gt; &amp; more") != NULL);
        CHECK(strstr(html, "phase 1") != NULL); /* the fine-tuning marker */
        CHECK(strstr(html, "stage") == NULL);   /* one word for it */
        CHECK(strstr(html, ">epoch</text>") != NULL && strstr(html, ">record<") == NULL);
        CHECK(strstr(html, "60.0%") != NULL); /* test accuracy card */
        /* the restored best epoch of each phase is marked: one ring per phase and chart */
        CHECK_MSG(count_of(html, "class=\"best\"") == 4, "%d rings",
                  count_of(html, "class=\"best\""));
        CHECK(strstr(html, "Learning rate") != NULL);
        /* top-2 of 3 classes is worth a card */
        CHECK(strstr(html, "top-2 accuracy") != NULL);
        /* ROC and precision-recall, with their areas */
        CHECK(strstr(html, "ROC and precision-recall") && strstr(html, "false-positive rate") &&
              strstr(html, " &middot; AP "));
        /* misclassified: grouped, thumbnails embedded (only the real picture) */
        CHECK(strstr(html, "Misclassified samples (test)") != NULL);
        CHECK_MSG(count_of(html, "src=\"data:image/png;base64,") == 1, "%d thumbnails",
                  count_of(html, "src=\"data:image/png;base64,"));
        CHECK(strstr(html, "cat &rarr; ") != NULL);
        /* 10 test samples: the warning and its rule */
        CHECK(strstr(html, "too small to trust") && strstr(html, "Wilson interval"));
    }
    free(html);
    char *json = read_text(json_path);
    CHECK(json != NULL);
    if (json) {
        CHECK_MSG(json_valid(json), "%s", json);
        CHECK(strstr(json, "\"val_loss\":null") != NULL);
        CHECK(strstr(json, "\"accuracy\":[[0.9,null],[0.6,0.8]]") != NULL);
        CHECK(strstr(json, "\"names\":[\"clean\",\"rain & <fog>\"]") != NULL);
        CHECK(strstr(json, "\"loss\":0.81") != NULL);
        CHECK(strstr(json, "\"phase\":1") && strstr(json, "\"stage\"") == NULL);
        CHECK(strstr(json, "\"best_epochs\":[2,4]") != NULL);
        /* misclassified as objects, not lines */
        CHECK(strstr(json, "\"misclassified\":[\n{\"path\":") != NULL);
        CHECK(strstr(json, "\"true\":\"cat\",\"predicted\":") != NULL);
        CHECK(strstr(json, "\"confidence\":") != NULL);
        CHECK(strstr(json, "\"too_small\":true") != NULL);
    }
    free(json);

    /* history.csv and predictions.csv */
    char csv_path[300];
    snprintf(csv_path, sizeof csv_path, "%s/history.csv", dir);
    CHECK(report_write_history_csv(&r, csv_path) == 0);
    char *csv = read_text(csv_path);
    if (csv) {
        CHECK(!strncmp(csv, "epoch,phase,phase_epoch,lr,train_loss,train_acc,val_loss,val_acc,"
                            "seconds\n1,0,1,0.001,1.2,0.4,1.1,0.45,2\n",
                       104));
        CHECK(strstr(csv, "\n2,0,2,0.001,0.9,0.6,,,2\n") != NULL); /* NAN: empty */
        CHECK(count_of(csv, "\n") == 5);
    }
    free(csv);
    remove(csv_path);
    snprintf(csv_path, sizeof csv_path, "%s/predictions.csv", dir);
    CHECK(report_write_predictions_csv(&r, csv_path) == 0);
    csv = read_text(csv_path);
    if (csv) {
        CHECK(!strncmp(csv, "path,true,predicted,confidence,p_cat,p_dog,\"p_<b>&\"\"\"\n", 46));
        CHECK(strstr(csv, "\n\"c,1.jpg\",cat,") != NULL);        /* RFC 4180 quoting */
        CHECK(strstr(csv, "\n\"e\"\"q\"\".jpg\",dog,") != NULL);
        CHECK(strstr(csv, "\nc.jpg,cat,cat,0.5,0.5,0.1,0.4\n") != NULL);
        CHECK(strstr(csv, "\na/<x>.jpg,\"<b>&\"\"\",cat,0.5,0.5,0.3,0.2\n") != NULL);
        CHECK(count_of(csv, "\n") == 11);
    }
    free(csv);
    remove(csv_path);
    remove(png_path);

    /* an evaluation: no history, so no curves card at all; top-k hidden when k = classes */
    Metrics all3;
    metrics_compute(10, 3, probs3, labels3, 3, NAN, &all3);
    Report ev = {0};
    ev.k = 3;
    ev.class_names = names3;
    ev.test = &all3;
    ev.split = "val";
    CHECK(report_write_html(&ev, html_path) == 0);
    html = read_text(html_path);
    if (html) {
        CHECK(strstr(html, "Training curves") == NULL && strstr(html, "No training") == NULL);
        CHECK(strstr(html, "top-3") == NULL);
        CHECK(strstr(html, "val accuracy") && strstr(html, "Confusion matrix (val)") &&
              strstr(html, "(test)") == NULL);
    }
    free(html);
    metrics_free(&all3);

    /* Rewriting replaces the file whole and leaves no temporary behind. Nothing but a
     * title: empty history, no metrics. */
    Report bare = {0};
    CHECK(report_write_html(&bare, html_path) == 0);
    CHECK(report_write_json(&bare, json_path) == 0);
    html = read_text(html_path);
    if (html) {
        check_html(html, 0);
        CHECK(strstr(html, "Training curves") == NULL);
        CHECK(strstr(html, "Confusion") == NULL);
    }
    free(html);
    json = read_text(json_path);
    if (json) {
        CHECK(json_valid(json));
        CHECK(strstr(json, "\"test\":null") && strstr(json, "\"history\":[]") &&
              strstr(json, "\"domains\":null"));
    }
    free(json);
    /* a history whose values are all missing draws empty charts, not NaN coordinates */
    EpochRecord blank = {1, 0, NAN, NAN, NAN, NAN, NAN, NAN};
    Report nan_history = {.history = &blank, .n_history = 1};
    CHECK(report_write_html(&nan_history, html_path) == 0);
    html = read_text(html_path);
    if (html) {
        check_html(html, 3);
        CHECK(strstr(html, "no loss recorded") && strstr(html, "no accuracy recorded"));
    }
    free(html);
    CHECK(tmp_files_left(dir) == 0);

    /* a missing directory is an error with a message, not a crash */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/missing/report.html", dir);
    CHECK(report_write_html(&r, bad) == -1);
    CHECK(strstr(rn_error(), "missing") != NULL);

    remove(html_path);
    remove(json_path);
    remove(dir);
    metrics_free(&test);
    metrics_free(&val);
}

/* 100 classes with long names and a single epoch still give a balanced page. */
static void test_report_many_classes(void) {
    enum { K = 100, N = 1000 };
    float *probs = malloc(sizeof(float) * N * K);
    int *labels = malloc(sizeof(int) * N);
    char **names = malloc(sizeof(char *) * K);
    Rng rng;
    rng_seed(&rng, 7);
    for (int i = 0; i < N; i++) {
        labels[i] = i % K;
        float sum = 0;
        for (int c = 0; c < K; c++) sum += probs[i * K + c] = rng_uniform(&rng);
        probs[i * K + labels[i]] += 0.5f * sum * rng_uniform(&rng);
    }
    for (int c = 0; c < K; c++) {
        names[c] = malloc(64);
        snprintf(names[c], 64, "a rather long class name number %d", c);
    }
    Metrics m;
    metrics_compute(N, K, probs, labels, 5, 2.3, &m);
    CHECK(m.accuracy > 0.2 && m.topk_accuracy >= m.accuracy);
    CHECK(m.macro_auc > 0.5 && m.macro_auc <= 1);
    EpochRecord one = {1, 0, 2.5, 0.3, 2.4, 0.31, 0.1, 10};
    Dataset items = {0};
    items.n = N;
    items.n_classes = K;
    items.labels = labels;
    Report r = {.title = "many", .class_names = names, .k = K, .test = &m, .history = &one,
                .n_history = 1, .data = &items, .probs = probs};
    char dir[256], path[300];
    int made = test_temp_dir(dir, sizeof dir, "test_metrics_many") == 0;
    snprintf(path, sizeof path, "%s/report.html", dir);
    CHECK(made && report_write_html(&r, path) == 0);
    char *html = read_text(path);
    if (html) {
        check_html(html, 6);
        CHECK(strstr(html, "The first 10 of 100 classes are drawn") != NULL);
        CHECK(strstr(html, "top-5 accuracy") != NULL);
    }
    free(html);
    remove(path);
    remove(dir);
    metrics_free(&m);
    for (int c = 0; c < K; c++) free(names[c]);
    free(names);
    free(probs);
    free(labels);
}

/* Flat, perfect, percent-scaled, huge and non-increasing histories keep finite axes. */
static void test_report_odd_histories(void) {
    EpochRecord flat[3] = {{1, 0, 0.5, 1.0, 0.5, 1.0, 0.1, 1},
                           {2, 0, 0.5, 1.0, 0.5, 1.0, 0.1, 1},
                           {3, 1, 0.5, 1.0, 0.5, 1.0, 0.1, 1}};
    EpochRecord odd[3] = {{5, 0, 1e15, 85.0, 1e15, 80.0, 0.1, 1},
                          {1, 1, 1e15 + 1, 90.0, -3, 1, 0, 1},
                          {1, 1, 1e15, 95.0, INFINITY, -INFINITY, 0, 1}};
    char dir[256], path[300];
    if (test_temp_dir(dir, sizeof dir, "test_metrics_hist") != 0)
        SKIP("cannot create a temporary directory");
    snprintf(path, sizeof path, "%s/report.html", dir);
    const EpochRecord *cases[2] = {flat, odd};
    for (int c = 0; c < 2; c++) {
        Report r = {.title = "odd", .history = cases[c], .n_history = 3};
        CHECK(report_write_html(&r, path) == 0);
        char *html = read_text(path);
        if (html) {
            check_html(html, 3);
            CHECK(strstr(html, "phase 1") != NULL);
            CHECK(strstr(html, ">epoch</text>") != NULL && strstr(html, ">record<") == NULL);
            CHECK(count_of(html, "<polyline") >= 5);
        }
        free(html);
    }
    remove(path);
    remove(dir);
}

/* sklearn: roc_curve / precision_recall_curve / average_precision_score of
 * y = [0, 0, 1, 1], scores = [0.1, 0.4, 0.35, 0.8]: AUC 0.75, AP 0.8333. */
static void test_curves(void) {
    const float probs[8] = {0.9f, 0.1f, 0.6f, 0.4f, 0.65f, 0.35f, 0.2f, 0.8f};
    const int labels[4] = {0, 0, 1, 1};
    Curve roc, pr;
    CHECK(metrics_class_curves(4, 2, probs, labels, 1, &roc, &pr) == 0);
    const double rx[5] = {0, 0, 0.5, 0.5, 1}, ry[5] = {0, 0.5, 0.5, 1, 1};
    const double px[5] = {0, 0.5, 0.5, 1, 1}, py[5] = {1, 1, 0.5, 2.0 / 3, 0.5};
    CHECK(roc.n == 5 && pr.n == 5);
    for (int i = 0; i < 5 && roc.n == 5 && pr.n == 5; i++) {
        CHECK_MSG(fabs(roc.x[i] - rx[i]) < 1e-12 && fabs(roc.y[i] - ry[i]) < 1e-12,
                  "roc %d: %g %g", i, roc.x[i], roc.y[i]);
        CHECK_MSG(fabs(pr.x[i] - px[i]) < 1e-12 && fabs(pr.y[i] - py[i]) < 1e-12, "pr %d: %g %g",
                  i, pr.x[i], pr.y[i]);
    }
    CHECK(fabs(roc.area - 0.75) < 1e-12);
    CHECK_MSG(fabs(pr.area - 5.0 / 6) < 1e-12, "AP %.17g", pr.area);
    curve_free(&roc);
    curve_free(&pr);
    /* the per-class values in Metrics agree */
    Metrics m;
    metrics_compute(4, 2, probs, labels, 1, NAN, &m);
    CHECK(fabs(m.auc[1] - 0.75) < 1e-12 && fabs(m.ap[1] - 5.0 / 6) < 1e-12);
    metrics_free(&m);
    /* a class without positives has no areas */
    const int none[4] = {0, 0, 0, 0};
    CHECK(metrics_class_curves(4, 2, probs, none, 1, &roc, &pr) == 0);
    CHECK(isnan(roc.area) && isnan(pr.area));
    curve_free(&roc);
    curve_free(&pr);
}

/* Wilson 95 % interval of 50 / 100: 0.4038 - 0.5962; the trust rule's boundary. */
static void test_wilson(void) {
    double lo, hi;
    metrics_wilson(0.5, 100, 1.959964, &lo, &hi);
    CHECK_MSG(fabs(lo - 0.40383) < 1e-4 && fabs(hi - 0.59617) < 1e-4, "%g %g", lo, hi);
    Metrics m = {0};
    m.accuracy = 0.5;
    m.n = 385;
    CHECK(!metrics_too_small(&m, NULL));
    m.n = 37;
    m.accuracy = 0.9;
    double half;
    CHECK(metrics_too_small(&m, &half) && half > 0.05);
    m.n = 0;
    CHECK(metrics_too_small(&m, NULL));
}

int main(void) {
    RUN(test_curves);
    RUN(test_wilson);
    RUN(test_three_classes);
    RUN(test_empty_class);
    RUN(test_roc_auc);
    RUN(test_topk_ties);
    RUN(test_bad_labels);
    RUN(test_json_and_text);
    RUN(test_report_files);
    RUN(test_report_many_classes);
    RUN(test_report_odd_histories);
    return test_summary();
}
