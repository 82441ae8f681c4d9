/* dist.c - the only file that sees MPI (see dist.h). Built with RN_MPI=1 (make MPI=1) the
 * functions are MPI calls over MPI_COMM_WORLD; without it, one-process stand-ins. */
#include "dist.h"
#include "resnet.h"
#include "parallel.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if RN_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_local = 1;
#if RN_MPI
static int g_started = 0;
#endif
static int g_stderr = 2; /* the terminal's stderr, kept when ranks > 0 are silenced */
static int g_step = 0, g_before = 0, g_after = 0;
static double *g_scratch;
static size_t g_scratch_n;

/* Nonblocking sums in flight: a ticket is a slot of requests (one per DIST_CHUNK piece). */
#define DIST_TICKETS 4
#define DIST_PIECES 16
#if RN_MPI
static MPI_Comm g_grad_comm = MPI_COMM_NULL; /* the buckets' own communicator */
static MPI_Request g_req[DIST_TICKETS][DIST_PIECES];
#endif
static int g_req_n[DIST_TICKETS]; /* requests of a ticket in flight, 0: the slot is free */
static int g_overlap; /* dist_iallreduce_floats returns before the sum is in (dist_overlap) */
static size_t g_bucket_floats; /* dist_bucket_floats, 0 until read */

/* MPI counts are ints: large buffers go in pieces of at most this many elements. */
#define DIST_CHUNK ((size_t)1 << 28)

void dist_init(int *argc, char ***argv) {
#if RN_MPI
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready && MPI_Init(argc, argv) != MPI_SUCCESS) {
        fprintf(stderr, "error: MPI_Init failed\n");
        exit(1);
    }
    g_started = !ready;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &g_local);
    MPI_Comm_free(&local);
    /* gradient buckets are summed on a duplicate of WORLD, so they never have to be told
     * apart from the blocking collectives (batch norm, the loss) issued while in flight */
    MPI_Comm_dup(MPI_COMM_WORLD, &g_grad_comm);
    /* MPI errors stay fatal (MPI_ERRORS_ARE_FATAL, the default): the whole job stops */
#else
    (void)argc;
    (void)argv;
#endif
    if (g_rank > 0) {
        fflush(NULL);
        g_stderr = dup(2);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
            close(null);
        }
    }
#if RN_MPI
    /* Overlap needs an MPI that moves a sum along while the caller computes. Open MPI 4.1
     * does not ("OMPI progress: no"): its MPI_Iallreduce (libnbc) advances only inside MPI
     * calls, and measured over TCP (doc/PERF.md) it made steps slower, not faster, than a
     * blocking MPI_Allreduce (coll/tuned) per node; so it is off unless RN_OVERLAP=1. */
    const char *env = getenv("RN_OVERLAP");
    g_overlap = 0;
    if (env && *env) {
        if (strcmp(env, "0") != 0 && strcmp(env, "1") != 0) {
            char msg[200];
            snprintf(msg, sizeof msg, "error: RN_OVERLAP=%.60s: expected 0 or 1", env);
            dist_abort(msg, 2);
        }
        g_overlap = env[0] == '1';
    }
    /* rank 0's choices, everywhere (mpirun passes the environment to remote hosts only
     * when told, and the ranks' sums must match) */
    MPI_Bcast(&g_overlap, 1, MPI_INT, 0, MPI_COMM_WORLD);
    unsigned long long floats = dist_bucket_floats();
    MPI_Bcast(&floats, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    g_bucket_floats = (size_t)floats;
#endif
}

int dist_overlap(void) { return g_size > 1 && g_overlap; }

void dist_finalize(void) {
#if RN_MPI
    if (g_started) {
        fflush(NULL);
        if (g_grad_comm != MPI_COMM_NULL) MPI_Comm_free(&g_grad_comm);
        MPI_Finalize();
        g_started = 0;
    }
#endif
}

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }
int dist_local_size(void) { return g_local; }
int dist_is_root(void) { return g_rank == 0; }

void dist_share_cores(void) {
#ifdef _OPENMP
    if (g_local > 1) {
        int per = omp_get_max_threads() / g_local;
        omp_set_num_threads(per > 1 ? per : 1);
    }
#endif
}

#if RN_MPI
static void allreduce(void *x, size_t n, size_t elem, MPI_Datatype type) {
    for (size_t at = 0; at < n; at += DIST_CHUNK) {
        size_t m = n - at < DIST_CHUNK ? n - at : DIST_CHUNK;
        MPI_Allreduce(MPI_IN_PLACE, (char *)x + at * elem, (int)m, type, MPI_SUM, MPI_COMM_WORLD);
    }
}
#endif

void dist_allreduce_floats(float *x, size_t n) {
#if RN_MPI
    if (g_size > 1) allreduce(x, n, sizeof *x, MPI_FLOAT);
#else
    (void)x;
    (void)n;
#endif
}

void dist_allreduce_doubles(double *x, size_t n) {
#if RN_MPI
    if (g_size > 1) allreduce(x, n, sizeof *x, MPI_DOUBLE);
#else
    (void)x;
    (void)n;
#endif
}

void dist_allreduce_longs(long *x, size_t n) {
#if RN_MPI
    if (g_size > 1) allreduce(x, n, sizeof *x, MPI_LONG);
#else
    (void)x;
    (void)n;
#endif
}

int dist_iallreduce_floats(float *x, size_t n) {
    int t = 0;
    while (t < DIST_TICKETS && g_req_n[t]) t++;
    if (t == DIST_TICKETS) dist_abort("dist_iallreduce_floats: more than 4 sums in flight", 1);
#if RN_MPI
    if (g_size > 1 && !g_overlap) {
        dist_allreduce_floats(x, n);
        return t; /* summed: the ticket complete */
    }
    if (g_size > 1) {
        size_t pieces = (n + DIST_CHUNK - 1) / DIST_CHUNK;
        if (pieces > DIST_PIECES) dist_abort("dist_iallreduce_floats: buffer over 4 G floats", 1);
        for (size_t p = 0; p < pieces; p++) {
            size_t at = p * DIST_CHUNK, m = n - at < DIST_CHUNK ? n - at : DIST_CHUNK;
            MPI_Iallreduce(MPI_IN_PLACE, x + at, (int)m, MPI_FLOAT, MPI_SUM, g_grad_comm,
                           &g_req[t][p]);
        }
        g_req_n[t] = (int)pieces;
        return t;
    }
#else
    (void)x;
    (void)n;
#endif
    return t; /* one rank: x is its own sum, the ticket already complete */
}

int dist_test(int ticket) {
    if (ticket < 0 || ticket >= DIST_TICKETS || !g_req_n[ticket]) return 1;
#if RN_MPI
    int done = 0;
    MPI_Testall(g_req_n[ticket], g_req[ticket], &done, MPI_STATUSES_IGNORE);
    if (!done) return 0;
#endif
    g_req_n[ticket] = 0;
    return 1;
}

void dist_wait(int ticket) {
    if (ticket < 0 || ticket >= DIST_TICKETS || !g_req_n[ticket]) return;
#if RN_MPI
    MPI_Waitall(g_req_n[ticket], g_req[ticket], MPI_STATUSES_IGNORE);
#endif
    g_req_n[ticket] = 0;
}

size_t dist_bucket_floats(void) {
    size_t floats = g_bucket_floats;
    if (!floats) {
        const char *env = getenv("RN_BUCKET_MB");
        double mb = g_overlap ? 25 : 0; /* without overlap, every node's gradients at once */
        if (env && *env) {
            char *end;
            mb = strtod(env, &end);
            if (*end || !(mb > 0 && mb <= 4096)) {
                char msg[200];
                snprintf(msg, sizeof msg,
                         "error: RN_BUCKET_MB=%.60s: expected megabytes in (0, 4096]", env);
                dist_abort(msg, 2);
            }
        }
        floats = (size_t)(mb * 1e6 / sizeof(float));
        if (floats < 1) floats = 1;
        g_bucket_floats = floats;
    }
    return floats;
}

void dist_allgather(const void *mine, void *all, size_t bytes) {
#if RN_MPI
    if (g_size > 1) {
        MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
        return;
    }
#endif
    memmove(all, mine, bytes);
}

void dist_allgather_rows(void *rows, size_t row_bytes, int n, int batch) {
#if RN_MPI
    if (g_size <= 1 || n <= 0) return;
    int *counts = rn_alloc(sizeof(int) * (size_t)g_size),
        *displs = rn_alloc(sizeof(int) * (size_t)g_size);
    for (int r = 0; r < g_size; r++) {
        int lo, hi;
        dist_batch_range(n, batch, r, g_size, &lo, &hi);
        counts[r] = hi - lo;
        displs[r] = lo;
    }
    /* one row as one element, so counts stay small whatever the row size */
    MPI_Datatype row;
    MPI_Type_contiguous((int)row_bytes, MPI_BYTE, &row);
    MPI_Type_commit(&row);
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, rows, counts, displs, row, MPI_COMM_WORLD);
    MPI_Type_free(&row);
    rn_free(counts);
    rn_free(displs);
#else
    (void)rows;
    (void)row_bytes;
    (void)n;
    (void)batch;
#endif
}

void dist_broadcast(void *buf, size_t bytes, int root) {
#if RN_MPI
    if (g_size > 1)
        for (size_t at = 0; at < bytes; at += DIST_CHUNK) {
            size_t m = bytes - at < DIST_CHUNK ? bytes - at : DIST_CHUNK;
            MPI_Bcast((char *)buf + at, (int)m, MPI_BYTE, root, MPI_COMM_WORLD);
        }
#else
    (void)buf;
    (void)bytes;
    (void)root;
#endif
}

void dist_barrier(void) {
#if RN_MPI
    if (g_size > 1) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

void dist_abort(const char *msg, int code) {
    char line[1200];
    int len = !msg         ? 0
              : g_size > 1 ? snprintf(line, sizeof line, "rank %d of %d: %s\n", g_rank, g_size, msg)
                           : snprintf(line, sizeof line, "%s\n", msg);
    fflush(NULL);
    if (len > 0 &&
        write(g_stderr, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1) < 0)
        len = 0;
#if RN_MPI
    if (g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    exit(code);
}

void dist_batch_range(int n, int batch, int rank, int ranks, int *lo, int *hi) {
    long nb = batch > 0 ? ((long)n + batch - 1) / batch : 0;
    long b0 = nb * rank / ranks, b1 = nb * (rank + 1) / ranks;
    long l = b0 * batch, h = b1 * batch;
    *lo = (int)(l < n ? l : n);
    *hi = (int)(h < n ? h : n);
}

void dist_slice(int n, int rank, int ranks, int *lo, int *hi) {
    *lo = (int)((long)n * rank / ranks);
    *hi = (int)((long)n * (rank + 1) / ranks);
}

void dist_step_begin(int before, int after) {
    g_step = g_size > 1;
    g_before = before;
    g_after = after;
}

void dist_step_end(void) { g_step = g_before = g_after = 0; }
int dist_step_active(void) { return g_step; }
int dist_step_before(void) { return g_before; }
int dist_step_after(void) { return g_after; }

double *dist_scratch(size_t n) {
    if (n > g_scratch_n) {
        rn_free(g_scratch);
        g_scratch = rn_alloc(sizeof(double) * n);
        g_scratch_n = n;
    }
    return g_scratch;
}
