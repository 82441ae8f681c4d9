/* tests/test_dist.c - dist.c's one-process stand-ins and the data-parallel bookkeeping every
 * build uses (how a dataset and a global batch are dealt out to ranks, the sharded loader),
 * and, with arguments, a tool for tests/t_mpi.sh:
 *   test_dist --maxdiff A.safetensors B.safetensors   prints the largest |a - b| over the
 *                                                     float tensors both files hold
 *   mpirun -np N test_dist --allreduce FLOATS REPS    the median seconds of an all-reduce of
 *                                                     FLOATS floats (doc/PERF.md)        */
#include "dist.h"
#include "resnet.h"
#include "test.h"

/* every item in exactly one rank's range, ranges in rank order, whole batches */
static void test_batch_range_covers(void) {
    for (int n = 0; n <= 40; n++)
        for (int batch = 1; batch <= 9; batch++)
            for (int ranks = 1; ranks <= 5; ranks++) {
                int next = 0;
                for (int r = 0; r < ranks; r++) {
                    int lo, hi;
                    dist_batch_range(n, batch, r, ranks, &lo, &hi);
                    CHECK(lo == next && hi >= lo && hi <= n);
                    CHECK(lo % batch == 0);
                    CHECK(hi == n || hi % batch == 0);
                    next = hi;
                }
                CHECK(next == n);
            }
}

static void test_slice_covers(void) {
    for (int n = 0; n <= 40; n++)
        for (int ranks = 1; ranks <= 5; ranks++) {
            int next = 0;
            for (int r = 0; r < ranks; r++) {
                int lo, hi;
                dist_slice(n, r, ranks, &lo, &hi);
                CHECK(lo == next && hi >= lo && hi - lo <= n / ranks + 1);
                next = hi;
            }
            CHECK(next == n);
        }
}

/* one process: rank 0 of 1, reductions and gathers the identity, no step active */
static void test_one_process(void) {
    CHECK(dist_rank() == 0 && dist_size() == 1 && dist_is_root());
    float f[3] = {1, 2, 3};
    dist_allreduce_floats(f, 3);
    CHECK(f[0] == 1 && f[2] == 3);
    for (int k = 0; k < 6; k++) { /* one rank's sums are done at once: no slot stays taken */
        int t = dist_iallreduce_floats(f, 3);
        CHECK(t >= 0 && dist_test(t) == 1);
        dist_wait(t);
    }
    CHECK(f[0] == 1 && f[1] == 2 && f[2] == 3);
    CHECK(dist_bucket_floats() >= 1);
    long l = 7, all = 0;
    dist_allgather(&l, &all, sizeof l);
    CHECK(all == 7);
    dist_step_begin(3, 4);
    CHECK(!dist_step_active()); /* one rank: nothing to synchronise */
    dist_step_end();
}

/* A dataset in memory: item i's pixels all equal i, label i % 2. */
static void make_items(Dataset *d, int n) {
    memset(d, 0, sizeof *d);
    d->n = n;
    d->n_classes = 2;
    d->pixel_w = d->pixel_h = 4;
    d->pixels = rn_calloc((size_t)n * 48, 1);
    d->labels = rn_alloc(sizeof(int) * n);
    d->class_names = rn_alloc(sizeof(char *) * 2);
    d->class_names[0] = rn_strdup("a");
    d->class_names[1] = rn_strdup("b");
    for (int i = 0; i < n; i++) {
        memset(d->pixels + (size_t)i * 48, i, 48);
        d->labels[i] = i % 2;
    }
}

/* The sharded loader: ranks' slices of each shuffled batch together are the one-process
 * batch, in order; with whole batches, the ranks' runs together are the dataset. */
static void test_loader_shards(void) {
    Dataset d;
    make_items(&d, 23);
    Preprocess p = {PREP_UNIT, 4, 1.0f};
    const int batch = 5, ranks = 3;
    for (int whole = 0; whole <= 1; whole++) {
        Loader *one = loader_create(&d, &p, NULL, batch, !whole, 9, 2);
        Loader *part[3];
        for (int r = 0; r < ranks; r++) {
            part[r] = loader_create(&d, &p, NULL, batch, !whole, 9, 1);
            loader_shard(part[r], r, ranks, whole);
            loader_start_epoch(part[r], 4);
        }
        loader_start_epoch(one, 4);
        int idx1[5], idx[5], n1, n, got_all[23], n_all = 0, batches = 0;
        while (loader_next_batch(one, NULL, NULL, idx1, &n1)) {
            int at = 0;
            for (int r = 0; r < ranks; r++) {
                CHECK(loader_next_batch(part[r], NULL, NULL, idx, &n) == 1);
                for (int k = 0; k < n; k++) {
                    if (!whole) CHECK(at < n1 && idx[k] == idx1[at]);
                    at++;
                    if (n_all < 23) got_all[n_all++] = idx[k];
                }
            }
            if (!whole) CHECK(at == n1);
            batches++;
        }
        CHECK(batches == 5);
        CHECK(n_all == 23);
        for (int i = 0; whole && i < n_all; i++) CHECK(got_all[i] == i);
        for (int r = 0; r < ranks; r++) {
            CHECK(loader_next_batch(part[r], NULL, NULL, idx, &n) == 0);
            loader_free(part[r]);
        }
        loader_free(one);
    }
    dataset_free(&d);
}

static int maxdiff(const char *a, const char *b) {
    StFile fa, fb;
    if (st_open(a, &fa) != 0 || st_open(b, &fb) != 0) {
        fprintf(stderr, "test_dist --maxdiff: %s\n", rn_error());
        return 2;
    }
    double worst = 0;
    int compared = 0, missing = 0;
    for (int i = 0; i < fa.n_tensors; i++) {
        const StTensor *ta = &fa.tensors[i], *tb = st_find(&fb, ta->name);
        if (ta->dtype != ST_F32) continue;
        if (!tb || tb->dtype != ST_F32 || tb->end - tb->begin != ta->end - ta->begin) {
            missing++;
            continue;
        }
        size_t n = (ta->end - ta->begin) / 4;
        float *x = rn_alloc(4 * n + 4), *y = rn_alloc(4 * n + 4);
        st_read_f32(&fa, ta, x);
        st_read_f32(&fb, tb, y);
        for (size_t k = 0; k < n; k++) {
            double d = fabs((double)x[k] - y[k]);
            if (d > worst || d != d) worst = d;
        }
        rn_free(x);
        rn_free(y);
        compared++;
    }
    printf("%.3g %d %d\n", worst, compared, missing);
    st_close(&fa);
    st_close(&fb);
    return missing ? 1 : 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int allreduce_bench(long floats, int reps) {
    float *x = rn_calloc((size_t)floats, sizeof(float));
    double *t = rn_alloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps; r++) {
        dist_barrier();
        double t0 = rn_seconds();
        dist_allreduce_floats(x, (size_t)floats);
        t[r] = rn_seconds() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    if (dist_is_root())
        printf("all-reduce of %ld floats (%.1f MB) over %d ranks: median %.4f s, %.2f GB/s "
               "algorithm bandwidth\n",
               floats, floats * 4e-6, dist_size(), t[reps / 2], floats * 4e-9 / t[reps / 2]);
    rn_free(x);
    rn_free(t);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--maxdiff") == 0) return maxdiff(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "--allreduce") == 0) {
        dist_init(&argc, &argv);
        int rc = allreduce_bench(atol(argv[2]), atoi(argv[3]) > 0 ? atoi(argv[3]) : 1);
        dist_finalize();
        return rc;
    }
    RUN(test_batch_range_covers);
    RUN(test_slice_covers);
    RUN(test_one_process);
    RUN(test_loader_shards);
    return test_summary();
}
