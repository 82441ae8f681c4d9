/* dist.h - MPI behind one small file (dist.c), so that the default build has no MPI in it:
 * built with MPI=1 (mpicc, RN_MPI=1) these are MPI calls over MPI_COMM_WORLD; otherwise, or
 * when the MPI build is started without mpirun, one process: rank 0 of 1, every reduction
 * and gather the identity (as parallel.h does for OpenMP). Internal to the library and the
 * programs.
 *
 * Data parallelism (train.c): every rank holds the same weights; each global batch is cut
 * into contiguous per-rank slices in rank order. Between dist_step_begin and
 * dist_step_end the library makes N ranks compute what one process computes on the whole
 * batch: batch norm in training mode all-reduces its per-channel sums (layers.c), the
 * loss is normalised by the global batch (layers.c), dropout draws the global batch's
 * mask and keeps this rank's rows (ops.c), and the parameter gradients are summed across
 * ranks node by node before each node's fused optimizer update, or with RN_OVERLAP=1 in
 * buckets of several nodes' while backward goes on (resnet.c). Outside a step nothing is
 * synchronised (each rank may run the same computation redundantly). */
#ifndef RN_DIST_H
#define RN_DIST_H

#include <stddef.h>

/* MPI_Init when built with MPI (a no-op otherwise); ranks > 0 then send stdout and stderr
 * to /dev/null, so that only rank 0 prints (dist_abort still reaches the terminal). */
void dist_init(int *argc, char ***argv);
void dist_finalize(void);
int dist_rank(void);
int dist_size(void);
/* ranks on this machine (OpenMP threads per rank default to cores / this) */
int dist_local_size(void);
int dist_is_root(void); /* rank 0: the one that prints and writes files */
/* OpenMP threads: the default (cores, or OMP_NUM_THREADS) divided among the ranks on this
 * machine, at least 1. */
void dist_share_cores(void);

/* Sums across ranks, in place, the same result on every rank. */
void dist_allreduce_floats(float *x, size_t n);
void dist_allreduce_doubles(double *x, size_t n);
void dist_allreduce_longs(long *x, size_t n);
/* A sum across ranks that runs while the caller goes on (MPI_Iallreduce on a communicator
 * of its own): returns a ticket; x must stay untouched until dist_test says 1 (each call
 * also moves the transfer along) or dist_wait returns. At most 4 in flight. One rank, or
 * !dist_overlap(): summed before it returns, the ticket complete. */
int dist_iallreduce_floats(float *x, size_t n);
int dist_test(int ticket);
void dist_wait(int ticket);
/* 1 when dist_iallreduce_floats overlaps: when the environment's RN_OVERLAP is 1 (rank
 * 0's; 0, the default, sums each bucket before returning: see dist.c for why). */
int dist_overlap(void);
/* Gradient floats a bucket gathers before its sum is started: with dist_overlap() 25 MB
 * (PyTorch DDP's bucket_cap_mb), without it 1 (each node's gradients summed as soon as
 * its backward is done: on one machine that keeps them in cache for the update), or
 * RN_BUCKET_MB megabytes (rank 0's). */
size_t dist_bucket_floats(void);
/* all[r * bytes ..] = rank r's `mine` (bytes each), on every rank. */
void dist_allgather(const void *mine, void *all, size_t bytes);
/* rows [n, row_bytes] of which this rank filled its dist_batch_range share: afterwards
 * every rank holds all rows (dataset order). */
void dist_allgather_rows(void *rows, size_t row_bytes, int n, int batch);
void dist_broadcast(void *buf, size_t bytes, int root);
void dist_barrier(void);
/* Stop every rank (MPI_Abort; one process: exit): prints "rank R of N: MSG" (msg not NULL)
 * on the original stderr first. */
void dist_abort(const char *msg, int code);

/* The items [lo, hi) of n (dataset order) that `rank` handles when whole batches of
 * `batch` are dealt out: contiguous runs of batches, so each item sits in the same batch,
 * at the same position, as in a one-process pass. */
void dist_batch_range(int n, int batch, int rank, int ranks, int *lo, int *hi);
/* This rank's slice [lo, hi) of a global batch of n samples (contiguous, rank order). */
void dist_slice(int n, int rank, int ranks, int *lo, int *hi);

/* A data-parallel step (see above): `before` and `after` global samples lie before and
 * after this rank's slice of the global batch. A no-op on one rank. */
void dist_step_begin(int before, int after);
void dist_step_end(void);
int dist_step_active(void); /* inside a step with more than one rank */
int dist_step_before(void);
int dist_step_after(void);
/* Scratch of at least n doubles for the step's reductions (grows, never shrinks). */
double *dist_scratch(size_t n);

#endif /* RN_DIST_H */
