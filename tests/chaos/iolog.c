/* Records the writes, truncations and syncs a process makes to chosen files, so a test
 * can rebuild those files as a power cut would leave them: whatever was synced, and any
 * subset of what was not.
 *
 * LD_PRELOAD=iolog.so IOLOG_PATH=log IOLOG_MATCH=/some/folder/ python ...
 *
 * Each record: op (1 byte: O open, W write, T truncate, S sync, U unlink), path length
 * (u16), path, offset (i64), data length (u32), data. Records are written with one
 * write(2) each to a log opened O_APPEND, so a SIGKILL never leaves half a record.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 4096

static char *paths[MAX_FD];
static int log_fd = -1;
static const char *match = NULL;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static ssize_t raw_write(int fd, const void *buf, size_t n) {
    return syscall(SYS_write, fd, buf, n);
}

__attribute__((constructor)) static void init(void) {
    const char *log = getenv("IOLOG_PATH");
    match = getenv("IOLOG_MATCH");
    if (log && match) {
        log_fd = syscall(SYS_openat, AT_FDCWD, log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    }
}

static void record(char op, const char *path, int64_t offset, const void *data, uint32_t len) {
    if (log_fd < 0 || path == NULL) return;
    uint16_t plen = (uint16_t)strlen(path);
    size_t total = 1 + 2 + plen + 8 + 4 + len;
    char *buf = malloc(total);
    if (!buf) abort();
    char *p = buf;
    *p++ = op;
    memcpy(p, &plen, 2); p += 2;
    memcpy(p, path, plen); p += plen;
    memcpy(p, &offset, 8); p += 8;
    memcpy(p, &len, 4); p += 4;
    if (len) memcpy(p, data, len);
    pthread_mutex_lock(&lock);
    raw_write(log_fd, buf, total);
    pthread_mutex_unlock(&lock);
    free(buf);
}

static const char *path_of(int fd) {
    return (fd >= 0 && fd < MAX_FD) ? paths[fd] : NULL;
}

static void opened(int fd, const char *path) {
    if (fd < 0 || fd >= MAX_FD || !match || !path || !strstr(path, match)) return;
    char *resolved = realpath(path, NULL);
    free(paths[fd]);
    paths[fd] = resolved ? resolved : strdup(path);
    record('O', paths[fd], 0, NULL, 0);
}

#define REAL(name, ret, ...) \
    static ret (*real_##name)(__VA_ARGS__); \
    if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name);

static int do_open(const char *name, int dirfd, const char *path, int flags, mode_t mode) {
    int fd;
    if (strcmp(name, "openat") == 0 || strcmp(name, "openat64") == 0) {
        int (*fn)(int, const char *, int, ...) = dlsym(RTLD_NEXT, name);
        fd = fn(dirfd, path, flags, mode);
    } else {
        int (*fn)(const char *, int, ...) = dlsym(RTLD_NEXT, name);
        fd = fn(path, flags, mode);
    }
    opened(fd, path);
    return fd;
}

#define OPEN_MODE \
    mode_t mode = 0; \
    if (flags & (O_CREAT | O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, int); va_end(ap); }

int open(const char *path, int flags, ...) { OPEN_MODE return do_open("open", 0, path, flags, mode); }
int open64(const char *path, int flags, ...) { OPEN_MODE return do_open("open64", 0, path, flags, mode); }
int openat(int d, const char *path, int flags, ...) { OPEN_MODE return do_open("openat", d, path, flags, mode); }
int openat64(int d, const char *path, int flags, ...) { OPEN_MODE return do_open("openat64", d, path, flags, mode); }

int close(int fd) {
    REAL(close, int, int)
    if (fd >= 0 && fd < MAX_FD && paths[fd]) { free(paths[fd]); paths[fd] = NULL; }
    return real_close(fd);
}

static void wrote(int fd, const void *buf, ssize_t n, off_t offset) {
    const char *path = path_of(fd);
    if (path && n > 0) record('W', path, (int64_t)offset, buf, (uint32_t)n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t offset) {
    REAL(pwrite, ssize_t, int, const void *, size_t, off_t)
    ssize_t done = real_pwrite(fd, buf, n, offset);
    wrote(fd, buf, done, offset);
    return done;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t offset) {
    REAL(pwrite64, ssize_t, int, const void *, size_t, off_t)
    ssize_t done = real_pwrite64(fd, buf, n, offset);
    wrote(fd, buf, done, offset);
    return done;
}

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write, ssize_t, int, const void *, size_t)
    ssize_t done = real_write(fd, buf, n);
    /* Read the position after the write: with O_APPEND and other writers (two tools in
     * two threads appending to one file) only then is it known where the data landed. */
    if (done > 0 && path_of(fd)) wrote(fd, buf, done, lseek(fd, 0, SEEK_CUR) - done);
    return done;
}

static void truncated(int fd, off_t size) {
    const char *path = path_of(fd);
    if (path) record('T', path, (int64_t)size, NULL, 0);
}

int ftruncate(int fd, off_t size) {
    REAL(ftruncate, int, int, off_t)
    int r = real_ftruncate(fd, size);
    if (r == 0) truncated(fd, size);
    return r;
}

int ftruncate64(int fd, off_t size) {
    REAL(ftruncate64, int, int, off_t)
    int r = real_ftruncate64(fd, size);
    if (r == 0) truncated(fd, size);
    return r;
}

static void synced(int fd) {
    const char *path = path_of(fd);
    if (path) record('S', path, 0, NULL, 0);
}

int fsync(int fd) {
    REAL(fsync, int, int)
    int r = real_fsync(fd);
    if (r == 0) synced(fd);
    return r;
}

int fdatasync(int fd) {
    REAL(fdatasync, int, int)
    int r = real_fdatasync(fd);
    if (r == 0) synced(fd);
    return r;
}

int unlink(const char *path) {
    REAL(unlink, int, const char *)
    char *resolved = (match && strstr(path, match)) ? realpath(path, NULL) : NULL;
    int r = real_unlink(path);
    if (r == 0 && resolved) record('U', resolved, 0, NULL, 0);
    free(resolved);
    return r;
}
