/* platform.c - platform.h for POSIX systems and for Windows (mingw-w64). */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* madvise */
#endif
#include "platform.h"
#include "resnet.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _WIN32
#include <windows.h>
#include <psapi.h>
#include <direct.h>
#include <io.h>
#include <process.h>
#include <stdio.h>
#else
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#endif
#ifndef _WIN32
#include <sys/mman.h>
#endif

#ifdef _WIN32
/* The library frees every block with free(), whoever allocated it (rn_alloc, stb,
 * read_file), and _aligned_malloc's blocks cannot be. So Windows gets malloc's 16 bytes
 * (the x64 ABI's guarantee): simd.h loads and stores are all unaligned, so alignment is a
 * cache-line nicety there, never a requirement. */
void *rn_aligned_alloc(size_t align, size_t size) {
    (void)align;
    return malloc(size);
}

void *rn_zeroed_alloc(size_t size) { return calloc(1, size); }

double rn_seconds(void) {
    LARGE_INTEGER f, t;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&t);
    return (double)t.QuadPart / (double)f.QuadPart;
}

long rn_peak_rss_kb(void) {
    PROCESS_MEMORY_COUNTERS pmc;
    if (!GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof pmc)) return -1;
    return (long)(pmc.PeakWorkingSetSize / 1024);
}

void *rn_map_file(const char *path, size_t *len) {
    (void)path;
    *len = 0;
    return NULL;
}

void rn_unmap_file(void *p, size_t len) { (void)p, (void)len; }

static void win_error(const char *path, const char *what) {
    rn_set_error("%s: %s (Windows error %lu)", path, what, (unsigned long)GetLastError());
}

/* FILETIME: 100 ns ticks since 1601; the Unix epoch is 11644473600 s later. */
int rn_file_info(const char *path, RnFileInfo *fi) {
    memset(fi, 0, sizeof *fi);
    HANDLE h = CreateFileA(path, 0, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                           OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        win_error(path, "cannot open");
        return -1;
    }
    BY_HANDLE_FILE_INFORMATION info;
    int ok = GetFileInformationByHandle(h, &info) != 0;
    if (!ok) win_error(path, "cannot read its information");
    CloseHandle(h);
    if (!ok) return -1;
    fi->kind = info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY ? RN_FILE_DIR : RN_FILE_REGULAR;
    fi->size = (int64_t)((uint64_t)info.nFileSizeHigh << 32 | info.nFileSizeLow);
    uint64_t ticks =
        (uint64_t)info.ftLastWriteTime.dwHighDateTime << 32 | info.ftLastWriteTime.dwLowDateTime;
    fi->mtime_sec = (int64_t)(ticks / 10000000u) - INT64_C(11644473600);
    fi->mtime_nsec = (int64_t)(ticks % 10000000u) * 100;
    fi->dev = info.dwVolumeSerialNumber;
    fi->ino = (uint64_t)info.nFileIndexHigh << 32 | info.nFileIndexLow;
    return 0;
}

struct RnDir {
    HANDLE h;
    WIN32_FIND_DATAA e;
    int have; /* e holds an entry not yet returned */
};

RnDir *rn_dir_open(const char *path) {
    size_t n = strlen(path);
    char *pattern = malloc(n + 3);
    if (!pattern) {
        rn_set_error("%s: out of memory", path);
        return NULL;
    }
    memcpy(pattern, path, n);
    memcpy(pattern + n, n && (path[n - 1] == '/' || path[n - 1] == '\\') ? "*" : "/*", 3);
    RnDir *d = calloc(1, sizeof *d);
    if (d) d->h = FindFirstFileA(pattern, &d->e);
    free(pattern);
    if (!d || d->h == INVALID_HANDLE_VALUE) {
        win_error(path, "cannot open directory");
        free(d);
        return NULL;
    }
    d->have = 1;
    return d;
}

const char *rn_dir_next(RnDir *d) {
    for (;;) {
        if (!d->have && !FindNextFileA(d->h, &d->e)) return NULL;
        d->have = 0;
        const char *s = d->e.cFileName;
        if (strcmp(s, ".") != 0 && strcmp(s, "..") != 0) return s;
    }
}

void rn_dir_close(RnDir *d) {
    if (!d) return;
    FindClose(d->h);
    free(d);
}

int rn_fsync(int fd) { return _commit(fd); }

int rn_replace_file(const char *from, const char *to) {
    if (MoveFileExA(from, to, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)) return 0;
    errno = EACCES;
    return -1;
}

long rn_pid(void) { return (long)_getpid(); }
int rn_mkdir(const char *path) { return _mkdir(path); }
int rn_isatty(int fd) { return _isatty(fd); }
void rn_kill_self(void) { TerminateProcess(GetCurrentProcess(), 137); }
void rn_binary_stdout(void) { _setmode(_fileno(stdout), 0x8000 /* _O_BINARY */); }

void rn_shell_quote(const char *s, char *out, size_t n) { snprintf(out, n, "\"%s\"", s); }

int rn_process_alive(long pid) {
    HANDLE h = OpenProcess(SYNCHRONIZE, FALSE, (DWORD)pid);
    if (!h) return GetLastError() == ERROR_ACCESS_DENIED; /* exists, not ours */
    int alive = WaitForSingleObject(h, 0) == WAIT_TIMEOUT;
    CloseHandle(h);
    return alive;
}

/* Opened with no sharing: a second opener gets a sharing violation until this process ends. */
int rn_lock_file(const char *path) {
    HANDLE h = CreateFileA(path, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_ALWAYS,
                           FILE_ATTRIBUTE_NORMAL, NULL);
    if (h != INVALID_HANDLE_VALUE) return 0; /* held open until exit */
    if (GetLastError() == ERROR_SHARING_VIOLATION) return 1;
    win_error(path, "cannot create");
    return -1;
}

#else /* POSIX */

void *rn_map_file(const char *path, size_t *len) {
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return NULL;
    struct stat st;
    void *p = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        (uint64_t)st.st_size <= (uint64_t)SIZE_MAX) {
        p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
            p = NULL;
        else
            *len = (size_t)st.st_size;
    }
    close(fd); /* the mapping keeps the file */
    return p;
}

void rn_unmap_file(void *p, size_t len) {
    if (p) munmap(p, len);
}

/* Blocks of 2 MB and more (weights, activations, im2col and packing buffers) are aligned
 * to 2 MB and, on Linux, asked for transparent huge pages: a ResNet-50 run otherwise takes
 * a page fault per 4 KB it first touches (a third of a short ./infer run) and a TLB miss
 * per 4 KB of weights it streams. */
#define HUGE_PAGE ((size_t)2 << 20)

void *rn_aligned_alloc(size_t align, size_t size) {
    void *p = NULL;
    int huge = size >= HUGE_PAGE;
    if (posix_memalign(&p, huge && align < HUGE_PAGE ? HUGE_PAGE : align, size) != 0) return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (huge) madvise(p, size / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
#endif
    return p;
}

void *rn_zeroed_alloc(size_t size) {
    void *p = calloc(1, size);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    uintptr_t lo = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    uintptr_t hi = ((uintptr_t)p + size) & ~(uintptr_t)(HUGE_PAGE - 1);
    if (p && hi > lo) madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#endif
    return p;
}

double rn_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

long rn_peak_rss_kb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return ru.ru_maxrss;
}

int rn_file_info(const char *path, RnFileInfo *fi) {
    struct stat st;
    memset(fi, 0, sizeof *fi);
    if (stat(path, &st) != 0) {
        rn_set_error("%s: %s", path, strerror(errno));
        return -1;
    }
    fi->kind = S_ISREG(st.st_mode)   ? RN_FILE_REGULAR
               : S_ISDIR(st.st_mode) ? RN_FILE_DIR
                                     : RN_FILE_OTHER;
    fi->size = (int64_t)st.st_size;
    fi->mtime_sec = (int64_t)st.st_mtim.tv_sec;
    fi->mtime_nsec = (int64_t)st.st_mtim.tv_nsec;
    fi->dev = (uint64_t)st.st_dev;
    fi->ino = (uint64_t)st.st_ino;
    return 0;
}

struct RnDir {
    DIR *dp;
};

RnDir *rn_dir_open(const char *path) {
    DIR *dp = opendir(path);
    if (!dp) {
        rn_set_error("%s: cannot open directory: %s", path, strerror(errno));
        return NULL;
    }
    RnDir *d = malloc(sizeof *d);
    if (!d) {
        closedir(dp);
        rn_set_error("%s: out of memory", path);
        return NULL;
    }
    d->dp = dp;
    return d;
}

const char *rn_dir_next(RnDir *d) {
    struct dirent *e;
    while ((e = readdir(d->dp)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) return e->d_name;
    return NULL;
}

void rn_dir_close(RnDir *d) {
    if (!d) return;
    closedir(d->dp);
    free(d);
}

int rn_fsync(int fd) { return fsync(fd) != 0 && errno != EINVAL ? -1 : 0; }
int rn_replace_file(const char *from, const char *to) { return rename(from, to); }
long rn_pid(void) { return (long)getpid(); }
int rn_mkdir(const char *path) { return mkdir(path, 0755); }
int rn_isatty(int fd) { return isatty(fd); }
void rn_kill_self(void) { raise(SIGKILL); }
void rn_binary_stdout(void) {}

void rn_shell_quote(const char *s, char *out, size_t n) {
    size_t o = 0;
    if (n < 3) {
        if (n) out[0] = 0;
        return;
    }
    out[o++] = '\'';
    for (; *s && o + 5 < n; s++) {
        if (*s == '\'') {
            memcpy(out + o, "'\\''", 4);
            o += 4;
        } else {
            out[o++] = *s;
        }
    }
    out[o++] = '\'';
    out[o] = 0;
}

int rn_process_alive(long pid) { return kill((pid_t)pid, 0) == 0 || errno != ESRCH; }

/* An fcntl write lock on the whole file, kept (the descriptor stays open) until exit; the
 * kernel drops it when the process dies, even by kill -9. */
int rn_lock_file(const char *path) {
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
        rn_set_error("%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, F_SETLK, &fl) == 0) return 0;
    close(fd);
    return 1;
}

#endif
