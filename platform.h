/* platform.h - what differs between POSIX systems and Windows, behind one small interface
 * (platform.c): aligned allocation, a monotonic clock, peak memory, file information with
 * an identity, directory listing, and the calls an atomic file replacement needs. The
 * rest of the library is plain C99 plus POSIX names that mingw-w64 also provides. */
#ifndef RN_PLATFORM_H
#define RN_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

/* size bytes aligned to `align` (a power of two, at least sizeof(void *)), or NULL. The
 * block is released with free(), like any other (see platform.c for Windows). */
void *rn_aligned_alloc(size_t align, size_t size);
/* size bytes of zeros, released with free(): calloc, whose blocks fresh from the system
 * are zero without a write, so pages nothing uses are never touched (the gradients of a
 * network that only runs forward: 100 MB for ResNet-50). On Linux the whole huge pages
 * inside a block of 2 MB or more are asked for, as rn_aligned_alloc's blocks are. */
void *rn_zeroed_alloc(size_t size);

/* A whole regular file mapped read-only, or NULL (nothing reported) where it cannot be:
 * Windows, an empty or irregular file, a failed mmap; the caller then reads the file.
 * Reading a file through its mapping takes its pages from the page cache as they are
 * touched: no buffer to clear and no copy (100 MB of weights: 25,000 faults on fresh
 * pages and a copy saved). Released with rn_unmap_file. */
void *rn_map_file(const char *path, size_t *len);
void rn_unmap_file(void *p, size_t len);

double rn_seconds(void);   /* monotonic wall clock, seconds */
long rn_peak_rss_kb(void); /* the process's peak resident memory, KiB; -1 if unknown */

enum { RN_FILE_OTHER, RN_FILE_REGULAR, RN_FILE_DIR };
/* What a path names (symbolic links followed). dev and ino identify the file itself:
 * two paths reach the same file (or directory) exactly when both are equal, so a walk can
 * recognise a directory it has already visited. */
typedef struct {
    int kind;
    int64_t size, mtime_sec, mtime_nsec;
    uint64_t dev, ino;
} RnFileInfo;
int rn_file_info(const char *path, RnFileInfo *fi); /* 0, or -1 with rn_set_error */

/* A directory's entries in the system's order, "." and ".." left out. */
typedef struct RnDir RnDir;
RnDir *rn_dir_open(const char *path); /* NULL with rn_set_error when it cannot be read */
const char *rn_dir_next(RnDir *d);    /* the next entry's name, NULL after the last */
void rn_dir_close(RnDir *d);

/* For write_file_atomic: flush a file's data to the disk, replace `to` by `from` in one
 * step (the old file stays whole until then), the process id for temporary names. */
int rn_fsync(int fd);
int rn_replace_file(const char *from, const char *to);
long rn_pid(void);
int rn_mkdir(const char *path); /* one level, mode 0755 where modes exist */
int rn_isatty(int fd);
void rn_binary_stdout(void);    /* stdout writes "\n" as is (Windows: not "\r\n") */
/* s as one word of this platform's shell, into out (n bytes, truncated to fit): POSIX sh
 * single quotes (a ' inside as '\''); Windows double quotes, which cmd.exe and PowerShell
 * both take (no Windows file name holds a "). */
void rn_shell_quote(const char *s, char *out, size_t n);
void rn_kill_self(void);        /* end now, as kill -9 would: no exit handlers, no flushing */
int rn_process_alive(long pid); /* 1 while a process with that id exists */
/* Hold path (created if absent) locked for the rest of this process's life, released when
 * it ends however it ends: 0 locked, 1 another process holds it, -1 error (rn_error). */
int rn_lock_file(const char *path);
/* open()'s flag for untranslated bytes: Windows turns "\n" into "\r\n" without it */
#ifdef _WIN32
#define RN_O_BINARY 0x8000 /* _O_BINARY */
#else
#define RN_O_BINARY 0
#endif

#endif /* RN_PLATFORM_H */
