/*
 * odmrd_limit.c - state shared by the odmrd processes: concurrent sessions
 * per client address, authentication failures per client address and per
 * user name and client address, and the server secret for SCRAM's fake
 * salts. spawn(8) runs one odmrd per connection, so the state lives in
 * three small files under queue_directory (owned by user odmr, mode 0600):
 *
 *     odmrd.sessions   one 64-byte slot per live session: the client
 *                      address, and an fcntl write lock on the slot held for
 *                      the life of the session. A slot counts only while it
 *                      is locked: the kernel drops the lock when the process
 *                      ends, however it ends, so a crash leaves nothing to
 *                      clean up and never holds a slot.
 *     odmrd.failures   a fixed table of 32-byte records: the first 16 bytes
 *                      of SHA-256("a" NUL addr) or SHA-256("u" NUL addr NUL
 *                      user) (no user name is stored), the start of the
 *                      window and the count. Read-modify-write under an
 *                      fcntl lock on the whole file. A count decays to zero
 *                      when its window (from its first failure) is over.
 *     odmrd.secret     32 random bytes, made once (temp file, fsync, link:
 *                      two sessions that race both end up with the winner's).
 *
 * Postfix's anvil(8) was the other choice: its socket is private/anvil in
 * Postfix's queue directory (private/ is mode 0700, owner postfix), so user
 * odmr cannot reach it without a second, public anvil service, and anvil
 * counts connections and rates, not failed logins per user name.
 *
 * Nobody can be locked out by a broken state file: every lock wait is
 * bounded (ODMRD_LIMIT_LOCK_MS; the holder is an odmrd that is stopped, not
 * dead, since a dead one holds no lock), and every error (no queue
 * directory, no lock, short read) lets the session go on: the callers get
 * -1 and an error text, log it and carry on without the limit.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "log.h"
#include "odmrd.h"
#include "util.h"

#define SESSIONS_FILE "odmrd.sessions"
#define FAILURES_FILE "odmrd.failures"
#define SECRET_FILE "odmrd.secret"

#define SLOT_SIZE 64                       /* one session slot */
#define SLOT_GUARD SLOT_SIZE               /* bytes [0, 64): the guard lock */
#define FAIL_REC_SIZE 32
#define FAIL_PROBES 8

static int
limit_error(char **error_r, const char *fmt, ...) ODMR_PRINTF(2, 3);

static int
limit_error(char **error_r, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    int saved = errno;

    va_start(ap, fmt);
    (void) vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    *error_r = x_strdup(buf);
    errno = saved;
    return -1;
}

/* Take an fcntl lock of type on [start, start+len), waiting at most
 * timeout_ms. 0 or -1 (errno ETIMEDOUT when the wait ran out). */
static int
lock_range(int fd, short type, off_t start, off_t len, int timeout_ms)
{
    struct flock fl;
    int64_t end = now_ms() + timeout_ms;

    for (;;) {
        memset(&fl, 0, sizeof(fl));
        fl.l_type = type;
        fl.l_whence = SEEK_SET;
        fl.l_start = start;
        fl.l_len = len;
        if (fcntl(fd, F_SETLK, &fl) == 0)
            return 0;
        if (errno != EACCES && errno != EAGAIN && errno != EINTR)
            return -1;
        if (now_ms() >= end) {
            errno = ETIMEDOUT;
            return -1;
        }
        (void) poll(NULL, 0, 5);
    }
}

static void
unlock_range(int fd, off_t start, off_t len)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    (void) fcntl(fd, F_SETLK, &fl);
}

/* Does another process hold a lock on [start, start+len)? 1, 0, -1. */
static int
range_locked(int fd, off_t start, off_t len)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    if (fcntl(fd, F_GETLK, &fl) < 0)
        return -1;
    return fl.l_type != F_UNLCK;
}

static int
open_state_file(const char *dir, const char *name, char **error_r)
{
    char *path = x_asprintf("%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

    if (fd < 0)
        (void) limit_error(error_r, "open %s: %s", path, strerror(errno));
    free(path);
    return fd;
}

/* ---- sessions per client address ------------------------------------------ */

int
odmrd_limit_session(const char *dir, const char *addr, long limit, int *fd_r,
                    long *count_r, char **error_r)
{
    size_t size = (size_t) ODMRD_LIMIT_SLOTS * SLOT_SIZE;
    unsigned char *slots;
    char key[SLOT_SIZE];
    ssize_t got;
    long count = 0;
    long free_slot = -1;
    int fd;

    *fd_r = -1;
    *count_r = 0;
    memset(key, 0, sizeof(key));
    str_copy(key, addr, sizeof(key));
    if ((fd = open_state_file(dir, SESSIONS_FILE, error_r)) < 0)
        return -1;
    if (lock_range(fd, F_WRLCK, 0, SLOT_GUARD, ODMRD_LIMIT_LOCK_MS) < 0) {
        (void) limit_error(error_r, "lock %s/%s: %s", dir, SESSIONS_FILE, strerror(errno));
        (void) close(fd);
        return -1;
    }
    slots = x_calloc(1, size);
    if ((got = pread(fd, slots, size, SLOT_GUARD)) < 0) {
        (void) limit_error(error_r, "read %s/%s: %s", dir, SESSIONS_FILE, strerror(errno));
        goto fail;
    }
    /* Bytes past the end of the file read as zeros: unused slots. */
    for (long i = 0; i < ODMRD_LIMIT_SLOTS; i++) {
        const unsigned char *rec = slots + (size_t) i * SLOT_SIZE;
        off_t off = SLOT_GUARD + (off_t) i * SLOT_SIZE;
        int locked;

        if (rec[0] == 0) {
            if (free_slot < 0)
                free_slot = i;
            continue;
        }
        if ((locked = range_locked(fd, off, SLOT_SIZE)) < 0) {
            (void) limit_error(error_r, "fcntl F_GETLK %s/%s: %s", dir, SESSIONS_FILE,
                               strerror(errno));
            goto fail;
        }
        if (!locked) {
            /* A session that ended, or crashed: its slot is free again. */
            if (free_slot < 0)
                free_slot = i;
        } else if (memcmp(rec, key, SLOT_SIZE) == 0) {
            count++;
        }
    }
    *count_r = count;
    if (limit > 0 && count >= limit) {
        free(slots);
        unlock_range(fd, 0, SLOT_GUARD);
        (void) close(fd);
        return 1;
    }
    if (free_slot < 0) {
        (void) limit_error(error_r, "%s/%s: all %d slots are in use", dir, SESSIONS_FILE,
                           ODMRD_LIMIT_SLOTS);
        goto fail;
    }
    {
        off_t off = SLOT_GUARD + (off_t) free_slot * SLOT_SIZE;

        if (pwrite(fd, key, SLOT_SIZE, off) != SLOT_SIZE) {
            (void) limit_error(error_r, "write %s/%s: %s", dir, SESSIONS_FILE,
                               errno ? strerror(errno) : "short write");
            goto fail;
        }
        /* Nobody holds it (it was unlocked under the guard). */
        if (lock_range(fd, F_WRLCK, off, SLOT_SIZE, 0) < 0) {
            (void) limit_error(error_r, "lock slot in %s/%s: %s", dir, SESSIONS_FILE,
                               strerror(errno));
            goto fail;
        }
    }
    free(slots);
    unlock_range(fd, 0, SLOT_GUARD);
    *fd_r = fd;
    return 0;

fail:
    free(slots);
    unlock_range(fd, 0, SLOT_GUARD);
    (void) close(fd);
    return -1;
}

/* ---- authentication failures ----------------------------------------------- */

typedef struct {
    unsigned char key[16];
    int64_t start;              /* seconds: the window's first failure */
    uint32_t count;
    uint32_t spare;
} FAIL_REC;

_Static_assert(sizeof(FAIL_REC) == FAIL_REC_SIZE, "FAIL_REC layout");

static void
fail_key(unsigned char key[16], const char *addr, const char *user)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    char *msg = x_asprintf("%s%c%s%c%s", user ? "u" : "a", 0, addr, 0, user ? user : "");
    size_t len = 2 + strlen(addr) + 1 + (user ? strlen(user) : 0);

    if (EVP_Digest(msg, len, md, NULL, EVP_sha256(), NULL) != 1)
        msg_fatal("EVP_Digest(SHA-256) failed");
    memcpy(key, md, 16);
    free(msg);
}

static int
fail_op(const char *dir, const char *addr, const char *user, int op, long window,
        time_t now, long *count_r, char **error_r)
{
    unsigned char key[16];
    FAIL_REC recs[FAIL_PROBES];
    uint32_t h;
    size_t first;
    int fd, found = -1, victim = -1;
    ssize_t got;
    off_t base;

    *count_r = 0;
    fail_key(key, addr, user);
    memcpy(&h, key, sizeof(h));
    first = h % (ODMRD_LIMIT_FAIL_RECORDS - FAIL_PROBES + 1);
    base = (off_t) first * FAIL_REC_SIZE;
    if ((fd = open_state_file(dir, FAILURES_FILE, error_r)) < 0)
        return -1;
    if (lock_range(fd, op == ODMRD_FAIL_GET ? F_RDLCK : F_WRLCK, 0, 0,
                   ODMRD_LIMIT_LOCK_MS) < 0) {
        (void) limit_error(error_r, "lock %s/%s: %s", dir, FAILURES_FILE, strerror(errno));
        (void) close(fd);
        return -1;
    }
    memset(recs, 0, sizeof(recs));
    if ((got = pread(fd, recs, sizeof(recs), base)) < 0) {
        (void) limit_error(error_r, "read %s/%s: %s", dir, FAILURES_FILE, strerror(errno));
        (void) close(fd);
        return -1;
    }
    for (int i = 0; i < FAIL_PROBES; i++) {
        FAIL_REC *r = recs + i;
        int expired = r->count == 0 || now - r->start >= window || r->start > now + 60;

        if (CRYPTO_memcmp(r->key, key, sizeof(key)) == 0 && found < 0) {
            found = i;
            if (expired)
                r->count = 0;
        } else if (expired) {
            if (victim < 0 || recs[victim].count != 0)
                victim = i;
            r->count = 0;
        } else if (victim < 0 || (recs[victim].count != 0 && r->start < recs[victim].start)) {
            victim = i;     /* the oldest window goes when the probes are full */
        }
    }
    if (found >= 0)
        *count_r = (long) recs[found].count;
    if (op != ODMRD_FAIL_GET && !(op == ODMRD_FAIL_CLEAR && found < 0)) {
        FAIL_REC *r;

        if (found < 0) {
            r = recs + victim;
            memset(r, 0, sizeof(*r));
            memcpy(r->key, key, sizeof(key));
        } else {
            r = recs + found;
        }
        if (op == ODMRD_FAIL_CLEAR) {
            memset(r, 0, sizeof(*r));
        } else {
            if (r->count == 0)
                r->start = now;
            if (r->count < UINT32_MAX)
                r->count++;
            *count_r = (long) r->count;
        }
        if (pwrite(fd, r, sizeof(*r), base + (off_t) (r - recs) * FAIL_REC_SIZE)
            != (ssize_t) sizeof(*r)) {
            (void) limit_error(error_r, "write %s/%s: %s", dir, FAILURES_FILE,
                               errno ? strerror(errno) : "short write");
            (void) close(fd);
            return -1;
        }
    }
    (void) close(fd);                   /* drops the lock */
    return 0;
}

int
odmrd_limit_failures(const char *dir, const char *addr, const char *user, int op,
                     long window, time_t now, long *count_r, char **error_r)
{
    if (op != ODMRD_FAIL_GET && op != ODMRD_FAIL_ADD && op != ODMRD_FAIL_CLEAR)
        msg_panic("odmrd_limit_failures: bad op %d", op);
    return fail_op(dir, addr, user, op, window, now, count_r, error_r);
}

/* ---- the server secret ----------------------------------------------------- */

static int
secret_read(const char *path, unsigned char *key, size_t len, char **error_r)
{
    struct stat st;
    ssize_t got;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0)
        return limit_error(error_r, "open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077) != 0
        || st.st_size != (off_t) len || st.st_uid != geteuid()) {
        (void) close(fd);
        errno = EINVAL;
        return limit_error(error_r, "%s: not a regular %zu-byte file of mode 0600 owned by"
                           " this user", path, len);
    }
    got = read(fd, key, len);
    (void) close(fd);
    if (got != (ssize_t) len) {
        errno = EIO;
        return limit_error(error_r, "read %s: short read", path);
    }
    return 0;
}

int
odmrd_limit_secret(const char *dir, unsigned char key[ODMRD_SECRET_LEN], char **error_r)
{
    char *path = x_asprintf("%s/%s", dir, SECRET_FILE);
    char *tmp = NULL;
    unsigned char fresh[ODMRD_SECRET_LEN];
    int fd = -1, ret;

    *error_r = NULL;
    if (secret_read(path, key, ODMRD_SECRET_LEN, error_r) == 0 || errno != ENOENT)
        goto out_path;
    free(*error_r);
    *error_r = NULL;
    /* Make it once: a complete temp file, then link(2), which never
     * replaces the file a concurrent session may have made meanwhile. */
    tmp = x_asprintf("%s/%s.%ld", dir, SECRET_FILE, (long) getpid());
    (void) unlink(tmp);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
        (void) limit_error(error_r, "create %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (random_bytes(fresh, sizeof(fresh)) < 0) {
        (void) limit_error(error_r, "no random bytes for %s", path);
        goto out;
    }
    if (write(fd, fresh, sizeof(fresh)) != (ssize_t) sizeof(fresh) || fsync(fd) < 0) {
        (void) limit_error(error_r, "write %s: %s", tmp, errno ? strerror(errno) : "short");
        goto out;
    }
    if (link(tmp, path) < 0 && errno != EEXIST) {
        (void) limit_error(error_r, "link %s to %s: %s", tmp, path, strerror(errno));
        goto out;
    }
    (void) close(fd);
    fd = -1;
    (void) unlink(tmp);
    OPENSSL_cleanse(fresh, sizeof(fresh));
    ret = secret_read(path, key, ODMRD_SECRET_LEN, error_r);
    free(tmp);
    free(path);
    return ret;

out:
    OPENSSL_cleanse(fresh, sizeof(fresh));
    if (fd >= 0)
        (void) close(fd);
    if (tmp)
        (void) unlink(tmp);
    free(tmp);
    free(path);
    return -1;

out_path:
    free(path);
    return *error_r == NULL ? 0 : -1;
}
