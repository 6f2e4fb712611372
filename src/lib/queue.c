/*
 * queue.c - the hold queue: opening, the Berkeley DB index, queue IDs,
 * domain locks, batched index removal. Queue files live in queue_file.c.
 * See queue.h for the layout, the file format and the durability order.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "queue_private.h"
#include "util.h"

/* Small on purpose: the index holds short keys and 18-byte IDs, so even a
 * few million entries fit, and many processes map this region at once. */
#define QUEUE_CACHE_BYTES (8U * 1024 * 1024)
#define QUEUE_LOG_FILE_MAX (4U * 1024 * 1024)
/* Reindex adds hundreds of entries per transaction; each page touched is
 * one lock. */
#define QUEUE_LOCK_MAX 20000
#define QUEUE_LOCKER_MAX 4000
#define QUEUE_TXN_RETRIES 50 /* index.db creation races */
/* Checkpoint now and then so DB_LOG_AUTO_REMOVE can drop old log files
 * and recovery after a crash stays short. */
#define QUEUE_CHECKPOINT_EVERY 128
#define QUEUE_CHECKPOINT_KBYTES 1024
/* Opening the environment waits this long for the open lock and for an
 * environment that is being recovered (CRASH RECOVERY in queue.h). */
#define QUEUE_OPEN_WAIT_S 60
/* Thread table for failchk: one slot per process that used the environment
 * (slots of dead processes are reused); Berkeley DB adds a quarter. */
#define QUEUE_THREAD_MAX 4000
/* Lock conflicts for this long make the waiter run failchk (a killed holder
 * no opener has cleaned up yet), then again every second. */
#define QUEUE_FAILCHK_AFTER_MS 500

static void queue_reaper_stop(QUEUE *q);

static const char *const queue_subdirs[] = {"incoming", "msg", "db", "lock", "status"};

/* The last message Berkeley DB produced: appended to our error texts,
 * because db_strerror() alone rarely says what went wrong. */
static char queue_bdb_msg[256];

static void
queue_bdb_errcall(const DB_ENV *env, const char *prefix, const char *msg)
{
    str_copy(queue_bdb_msg, msg, sizeof(queue_bdb_msg));
}

/* Informational messages (failchk: "Aborting txn ..."): to our log, never
 * to stdout, which is the client socket of a spawn(8) program. */
static void
queue_bdb_msgcall(const DB_ENV *env, const char *msg)
{
    msg_info("queue index: %s", msg);
}

void
queue_error(char **error_r, const char *fmt, ...)
{
    va_list ap;
    char *p;

    if (error_r == NULL)
        return;
    va_start(ap, fmt);
    if (vasprintf(&p, fmt, ap) < 0)
        msg_fatal("out of memory formatting a string");
    va_end(ap);
    *error_r = p;
}

static void
queue_db_error(char **error_r, const char *what, int ret)
{
    if (queue_bdb_msg[0])
        queue_error(error_r, "queue index: %s: %s (%s)", what, db_strerror(ret), queue_bdb_msg);
    else
        queue_error(error_r, "queue index: %s: %s", what, db_strerror(ret));
    queue_bdb_msg[0] = 0;
}

void
queue_fault(const char *point)
{
    if (var_test_fault_point != NULL && var_test_fault_point[0] != 0
        && strcmp(var_test_fault_point, point) == 0)
        (void) kill(getpid(), SIGKILL);
}

/* ---- IDs ------------------------------------------------------------------ */

int
queue_id_valid(const char *id)
{
    size_t i;

    for (i = 0; i < QUEUE_ID_LEN; i++) {
        char c = id[i];

        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F')))
            return 0;
    }
    return id[i] == 0;
}

static int
hex_value(char c)
{
    return c <= '9' ? c - '0' : c - 'A' + 10;
}

int
queue_xy_index(const char *id)
{
    return hex_value(id[QUEUE_ID_LEN - 2]) * 16 + hex_value(id[QUEUE_ID_LEN - 1]);
}

void
queue_new_id(char *id_r)
{
    static long long last_us;
    static pid_t seeded_pid;
    static uint64_t state;
    long sec, usec;
    long long us;
    pid_t pid = getpid();

    /* Reseed after fork: children of one parent must not share a stream. */
    if (pid != seeded_pid) {
        if (getrandom(&state, sizeof(state), GRND_NONBLOCK) != (ssize_t) sizeof(state))
            state = (uint64_t) time(NULL) * 6364136223846793005ULL;
        state ^= (uint64_t) pid << 32;
        if (state == 0)
            state = 0x9E3779B97F4A7C15ULL;
        seeded_pid = pid;
        last_us = 0;
    }
    now_wall(&sec, &usec);
    us = (long long) sec * 1000000 + usec;
    /* Strictly increasing within a process even if the clock steps back. */
    if (us <= last_us)
        us = last_us + 1;
    last_us = us;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    (void) str_format(id_r, QUEUE_ID_LEN + 1, "%014llX%04X", us & 0xFFFFFFFFFFFFFFLL,
                      (unsigned) (state >> 48) & 0xFFFFU);
}

/* ---- directories ---------------------------------------------------------- */

int
queue_xy_fd(QUEUE *q, const char *id, int create, char **error_r)
{
    int idx = queue_xy_index(id);
    char name[3];
    int fd;

    if (q->xy_fd[idx] >= 0)
        return q->xy_fd[idx];
    name[0] = id[QUEUE_ID_LEN - 2];
    name[1] = id[QUEUE_ID_LEN - 1];
    name[2] = 0;
    fd = openat(q->msg_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
        if (mkdirat(q->msg_fd, name, 0700) < 0 && errno != EEXIST) {
            queue_error(error_r, "mkdir %s/msg/%s: %m", q->dir, name);
            return -1;
        }
        /* Also after EEXIST: the process that won the race may not have
         * made the new entry durable yet, and our rename depends on it. */
        if (fsync(q->msg_fd) < 0) {
            queue_error(error_r, "fsync %s/msg: %m", q->dir);
            return -1;
        }
        fd = openat(q->msg_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (fd < 0) {
        int saved = errno;

        if (errno != ENOENT)
            queue_error(error_r, "open %s/msg/%s: %m", q->dir, name);
        errno = saved;
        return -1;
    }
    q->xy_fd[idx] = fd;
    return fd;
}

/*
 * The queue directory's format stamp: the file "format", one line. A queue
 * written by a postfix-odmr with another format is refused before anything
 * in it is touched (after a downgrade, say); a queue without a stamp (new,
 * or made before stamps existed, which is format 1) gets one. An empty
 * stamp is one being written by a concurrent opener.
 */
#define QUEUE_FORMAT "ODMRQ 1"
#define QUEUE_FORMAT_FILE "format"

static int
queue_check_format(QUEUE *q, char **error_r)
{
    char buf[64];
    ssize_t n;
    int fd;

    fd = openat(q->dir_fd, QUEUE_FORMAT_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        fd = openat(q->dir_fd, QUEUE_FORMAT_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                    0600);
        if (fd >= 0) {
            n = write(fd, QUEUE_FORMAT "\n", sizeof(QUEUE_FORMAT));
            if (n != (ssize_t) sizeof(QUEUE_FORMAT) || fsync(fd) < 0 || close(fd) < 0) {
                queue_error(error_r, "write %s/%s: %m", q->dir, QUEUE_FORMAT_FILE);
                return -1;
            }
            return 0;
        }
        if (errno == EEXIST)
            fd = openat(q->dir_fd, QUEUE_FORMAT_FILE, O_RDONLY | O_CLOEXEC);
        else if ((q->flags & QUEUE_OPEN_READONLY) && (errno == EACCES || errno == EROFS))
            return 0;
    }
    if (fd < 0) {
        queue_error(error_r, "open %s/%s: %m", q->dir, QUEUE_FORMAT_FILE);
        return -1;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    (void) close(fd);
    if (n < 0) {
        queue_error(error_r, "read %s/%s: %m", q->dir, QUEUE_FORMAT_FILE);
        return -1;
    }
    buf[n] = 0;
    buf[strcspn(buf, "\n")] = 0;
    if (n == 0 || strcmp(buf, QUEUE_FORMAT) == 0)
        return 0;
    for (char *p = buf; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            *p = '?';
    queue_error(error_r,
                "queue directory %s has format \"%s\" (file %s/%s); this postfix-odmr reads "
                "\"" QUEUE_FORMAT "\" only: run the postfix-odmr version that wrote the queue",
                q->dir, buf, q->dir, QUEUE_FORMAT_FILE);
    return -1;
}

static int
queue_open_dirs(QUEUE *q, char **error_r)
{
    int *fds[] = {&q->incoming_fd, &q->msg_fd, NULL, &q->lock_fd, &q->status_fd};

    if (q->flags & QUEUE_OPEN_CREATE) {
        if (mkdir(q->dir, 0700) < 0 && errno != EEXIST) {
            queue_error(error_r, "create queue directory %s: %m", q->dir);
            return -1;
        }
    }
    q->dir_fd = open(q->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (q->dir_fd < 0) {
        queue_error(error_r, "open queue directory %s: %m", q->dir);
        return -1;
    }
    if (queue_check_format(q, error_r) < 0)
        return -1;
    for (size_t i = 0; i < ODMR_ARRAY_LEN(queue_subdirs); i++) {
        /* Subdirectories are made even without QUEUE_OPEN_CREATE: an
         * administrator who lost db/ must still be able to reindex. */
        if (mkdirat(q->dir_fd, queue_subdirs[i], 0700) < 0 && errno != EEXIST) {
            queue_error(error_r, "create %s/%s: %m", q->dir, queue_subdirs[i]);
            return -1;
        }
        if (fds[i] == NULL)
            continue;
        *fds[i] = openat(q->dir_fd, queue_subdirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (*fds[i] < 0) {
            queue_error(error_r, "open %s/%s: %m%s", q->dir, queue_subdirs[i],
                        errno == ENOENT ? " (not a queue directory?)" : "");
            return -1;
        }
    }
    return 0;
}

/* ---- the watchdog --------------------------------------------------------- */

/*
 * WATCHDOG in queue.h. A Berkeley DB call (a guarded call) that makes no
 * progress for queue_stuck_ms while the environment is wedged (a process
 * that used it is gone, or another process recovered it under us) is
 * left with siglongjmp from a signal handler: the watchdog thread sends
 * the signal to the thread in the call. The environment handle is
 * abandoned (never closed: a close would wait on the same mutex) and the
 * caller reopens, which recovers. The calls hold nothing of ours across
 * the jump: their callers' state is outside (queue_txn_once's ctx, the
 * open lock in queue_env_open).
 */
int queue_stuck_ms = 10000;

static sigjmp_buf *queue_guard_jmp;  /* innermost guarded call, or NULL */
static int64_t queue_guard_since;    /* atomic: when it began (ms), 0 none */
static int queue_guard_dirfd = -1;   /* atomic: queue directory of the call */
static int queue_guard_regfd = -1;   /* atomic: its registry (q->reg_fd) */
static dev_t queue_guard_dev;        /* its db/__db.001 at the open */
static ino_t queue_guard_ino;
static pthread_t queue_guard_thread; /* the thread in the guarded call */
static pid_t queue_guard_pid;        /* process the watchdog runs in */

static int
queue_guard_signal(void)
{
    return SIGRTMIN + 4;
}

static int64_t queue_guard_fired;    /* atomic: the call the signal is for */

/* Leaves the call only if it is the one the watchdog saw stuck (not one
 * that began since), which is then waiting inside Berkeley DB. */
static void
queue_guard_handler(int sig)
{
    (void) sig;
    if (queue_guard_jmp != NULL
        && __atomic_load_n(&queue_guard_since, __ATOMIC_ACQUIRE)
               == __atomic_load_n(&queue_guard_fired, __ATOMIC_ACQUIRE))
        siglongjmp(*queue_guard_jmp, 1);
}

/* Is db/__db.001 under the queue directory dirfd still the file dev/ino? */
static int
queue_regions_same(int dirfd, dev_t dev, ino_t ino)
{
    struct stat st;

    return fstatat(dirfd, "db/__db.001", &st, 0) == 0 && st.st_dev == dev && st.st_ino == ino;
}

/* Has the environment of the queue directory dirfd been wedged: replaced
 * by a recovery since we opened it, or registered by a process that is
 * gone? */
static int
queue_guard_wedged(int dirfd, int regfd, dev_t dev, ino_t ino)
{
    static char buf[25 * QUEUE_THREAD_MAX];
    ssize_t n;

    if (!queue_regions_same(dirfd, dev, ino))
        return 1;
    /* db/__db.register: one 25-byte line per slot, a pid right-aligned, or
     * "X" for a free slot. A slot is freed when its process closes the
     * environment, so a listed pid that does not exist died in it. Read
     * through the descriptor kept open with the environment: opening and
     * closing the file here would drop this process's own slot lock, and
     * the next opener would recover the environment under us. */
    if (regfd < 0)
        return 0;
    n = pread(regfd, buf, sizeof(buf), 0);
    for (ssize_t off = 0; n > 0 && off + 25 <= n; off += 25) {
        char *end;
        long pid;

        buf[off + 24] = 0;
        pid = strtol(buf + off, &end, 10);
        if (end != buf + off && pid > 0 && pid != (long) getpid()
            && kill((pid_t) pid, 0) < 0 && errno == ESRCH)
            return 1;
    }
    return 0;
}

static void *
queue_guard_main(void *arg)
{
    int64_t fired = 0;

    (void) arg;
    for (;;) {
        int64_t since = __atomic_load_n(&queue_guard_since, __ATOMIC_ACQUIRE);
        int dirfd = __atomic_load_n(&queue_guard_dirfd, __ATOMIC_ACQUIRE);
        int regfd = __atomic_load_n(&queue_guard_regfd, __ATOMIC_ACQUIRE);

        if (since != 0 && since != fired && dirfd >= 0
            && now_ms() - since >= queue_stuck_ms
            && queue_guard_wedged(dirfd, regfd, queue_guard_dev, queue_guard_ino)) {
            fired = since;
            __atomic_store_n(&queue_guard_fired, since, __ATOMIC_RELEASE);
            (void) pthread_kill(queue_guard_thread, queue_guard_signal());
        }
        usleep(queue_stuck_ms >= 4000 ? 500000 : 100000);
    }
    return NULL;
}

/* Start the watchdog thread once per process (again in a forked child). */
static void
queue_guard_start(void)
{
    struct sigaction sa;
    sigset_t all, old;
    pthread_t t;

    if (queue_guard_pid == getpid())
        return;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = queue_guard_handler;
    sa.sa_flags = SA_RESTART; /* a system call interrupted without a jump goes on */
    sigemptyset(&sa.sa_mask);
    (void) sigaction(queue_guard_signal(), &sa, NULL);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&t, NULL, queue_guard_main, NULL) == 0) {
        (void) pthread_detach(t);
        queue_guard_pid = getpid();
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* The watchdog's yardstick: the region file db/__db.001 as it is now
 * (region_ino 0 when there is none yet: nothing to be wedged in). */
static void
queue_note_regions(QUEUE *q)
{
    struct stat st;

    if (fstatat(q->dir_fd, "db/__db.001", &st, 0) == 0) {
        q->region_dev = st.st_dev;
        q->region_ino = st.st_ino;
    } else {
        q->region_ino = 0;
    }
}

/* Remember the environment just opened (its regions and registry). */
static void
queue_guard_note_env(QUEUE *q)
{
    struct stat st;

    queue_note_regions(q);
    /* The registry's descriptor for the watchdog (q->reg_fd). One left
     * from an abandoned environment stays open (a close would drop the
     * slot locks of this process on that file) and is used again when
     * the registry is still the same file. */
    if (q->reg_fd >= 0) {
        struct stat old;

        if (fstat(q->reg_fd, &old) == 0
            && fstatat(q->dir_fd, "db/__db.register", &st, 0) == 0
            && st.st_dev == old.st_dev && st.st_ino == old.st_ino)
            return;
        q->reg_fd = -1; /* left open on purpose */
    }
    q->reg_fd = openat(q->dir_fd, "db/__db.register", O_RDONLY | O_CLOEXEC);
}

/* Run call(q, arg) as a guarded call: its result, or QUEUE_STUCK when the
 * watchdog made it leave (q->env and q->db are then abandoned, and the
 * next open recovers unless someone else already did). */
int
queue_guard_call(QUEUE *q, int (*call)(QUEUE *, void *), void *arg)
{
    sigjmp_buf jb;
    sigjmp_buf *volatile outer = queue_guard_jmp;
    volatile int64_t outer_since = __atomic_load_n(&queue_guard_since, __ATOMIC_ACQUIRE);
    volatile int outer_fd = __atomic_load_n(&queue_guard_dirfd, __ATOMIC_ACQUIRE);
    volatile int outer_regfd = __atomic_load_n(&queue_guard_regfd, __ATOMIC_ACQUIRE);
    volatile dev_t outer_dev = queue_guard_dev;
    volatile ino_t outer_ino = queue_guard_ino;
    int ret;

    queue_guard_start();
    if (sigsetjmp(jb, 1) != 0) {
        queue_guard_jmp = outer;
        __atomic_store_n(&queue_guard_since, outer_since, __ATOMIC_RELEASE);
        __atomic_store_n(&queue_guard_dirfd, outer_fd, __ATOMIC_RELEASE);
        __atomic_store_n(&queue_guard_regfd, outer_regfd, __ATOMIC_RELEASE);
        queue_guard_dev = outer_dev;
        queue_guard_ino = outer_ino;
        /* Abandoned, not closed (q->reg_fd stays open too): a close would
         * wait on the same mutex. */
        q->db = NULL;
        q->stats_db = NULL;
        q->env = NULL;
        /* Still the regions we were in: nobody recovered them yet. */
        if (q->region_ino != 0 && q->dir_fd >= 0)
            q->recover_next = queue_regions_same(q->dir_fd, q->region_dev, q->region_ino);
        msg_warn("queue index: no progress inside Berkeley DB for %d s while a process "
                 "that used the index is gone; leaving the index to recovery",
                 queue_stuck_ms / 1000);
        return QUEUE_STUCK;
    }
    queue_guard_dev = q->region_dev;
    queue_guard_ino = q->region_ino;
    queue_guard_thread = pthread_self();
    queue_guard_jmp = &jb;
    __atomic_store_n(&queue_guard_dirfd, q->region_ino != 0 ? q->dir_fd : -1,
                     __ATOMIC_RELEASE);
    __atomic_store_n(&queue_guard_regfd, q->reg_fd, __ATOMIC_RELEASE);
    __atomic_store_n(&queue_guard_since, now_ms(), __ATOMIC_RELEASE);
    ret = call(q, arg);
    __atomic_store_n(&queue_guard_since, outer_since, __ATOMIC_RELEASE);
    __atomic_store_n(&queue_guard_dirfd, outer_fd, __ATOMIC_RELEASE);
    __atomic_store_n(&queue_guard_regfd, outer_regfd, __ATOMIC_RELEASE);
    queue_guard_dev = outer_dev;
    queue_guard_ino = outer_ino;
    queue_guard_jmp = outer;
    return ret;
}

/* ---- the Berkeley DB environment ------------------------------------------ */

static int
queue_env_close_call(QUEUE *q, void *arg)
{
    (void) arg;
    if (q->stats_db != NULL) {
        (void) q->stats_db->close(q->stats_db, DB_NOSYNC);
        q->stats_db = NULL;
    }
    if (q->db != NULL) {
        /* DB_NOSYNC: no fdatasync of index.db at every process exit (one
         * sync per message for odmr-enqueue). Every change is in the log
         * and the cache lives in the shared regions, which outlive us;
         * recovery redoes what a crash took from index.db. */
        (void) q->db->close(q->db, DB_NOSYNC);
        q->db = NULL;
    }
    if (q->env != NULL) {
        (void) q->env->close(q->env, 0);
        q->env = NULL;
        /* Only now: the environment has let its registry slot go. */
        if (q->reg_fd >= 0) {
            __atomic_store_n(&queue_guard_regfd, -1, __ATOMIC_RELEASE);
            (void) close(q->reg_fd);
            q->reg_fd = -1;
        }
    }
    return 0;
}

static void
queue_env_close(QUEUE *q)
{
    if (q->db != NULL || q->env != NULL)
        (void) queue_guard_call(q, queue_env_close_call, NULL);
}

static int
queue_checkpoint_call(QUEUE *q, void *arg)
{
    (void) arg;
    return q->env->txn_checkpoint(q->env, QUEUE_CHECKPOINT_KBYTES, 0, 0);
}

static void
queue_env_close_unguarded(QUEUE *q)
{
    (void) queue_env_close_call(q, NULL);
}

/* Does a process that used the environment still live? (failchk asks.)
 * EPERM: it lives, under another user (odmr-queue run by root). */
static int
queue_is_alive(DB_ENV *env, pid_t pid, db_threadid_t tid, u_int32_t flags)
{
    (void) env;
    (void) tid;
    (void) flags;
    return pid == getpid() || kill(pid, 0) == 0 || errno == EPERM;
}

/* Pause before the next try: 2, 4, ... 64 ms, with jitter. */
static void
queue_backoff(useconds_t *pause)
{
    usleep(*pause / 2 + (useconds_t) (random() % (long) *pause));
    if (*pause < 64000)
        *pause *= 2;
}

/* Take the open lock (see CRASH RECOVERY in queue.h) before deadline:
 * an fd to close afterwards, -1 with *error_r. An open holds it for about
 * a millisecond, so the waiters poll at short intervals (0.1 to 2 ms):
 * with the pauses of queue_backoff() (up to 64 ms) twenty processes
 * starting at once (pipe(8) runs odmr-enqueue per message) spent most of
 * their time asleep with the lock free. */
static int
queue_open_lock(QUEUE *q, int64_t deadline, char **error_r)
{
    useconds_t pause = 100;
    struct flock fl;
    int fd;

    fd = openat(q->dir_fd, "db/odmr-open.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        queue_error(error_r, "queue index: open %s/db/odmr-open.lock: %m", q->dir);
        return -1;
    }
    for (;;) {
        memset(&fl, 0, sizeof(fl));
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
            return fd;
        if (errno != EAGAIN && errno != EACCES && errno != EINTR) {
            queue_error(error_r, "queue index: lock %s/db/odmr-open.lock: %m", q->dir);
            break;
        }
        if (now_ms() >= deadline) {
            queue_error(error_r, "queue index: environment %s/db still busy after %d s "
                        "(another process is opening or recovering it)", q->dir,
                        QUEUE_OPEN_WAIT_S);
            break;
        }
        usleep(pause / 2 + (useconds_t) (random() % (long) pause));
        if (pause < 2000)
            pause *= 2;
    }
    (void) close(fd);
    return -1;
}

/* One try at opening the environment and index.db, under the open lock.
 * recover: start a new registry, so that DB_REGISTER | DB_RECOVER runs
 * recovery (after DB_RUNRECOVERY, or for an environment made without a
 * thread table). Returns 0, or the Berkeley DB error with *error_r. */
static int
queue_env_try(QUEUE *q, const char *home, int recover, char **error_r)
{
    DB_ENV *env;
    int ret;

    queue_bdb_msg[0] = 0;
    if (recover) {
        char *reg = x_asprintf("%s/__db.register", home);

        msg_warn("queue index: recovering the environment %s", home);
        if (unlink(reg) < 0 && errno != ENOENT) {
            ret = errno;
            queue_error(error_r, "queue index: remove %s: %m", reg);
            free(reg);
            return ret;
        }
        free(reg);
    }
    if ((ret = db_env_create(&env, 0)) != 0) {
        queue_db_error(error_r, "db_env_create", ret);
        return ret;
    }
    env->set_errcall(env, queue_bdb_errcall);
    env->set_msgcall(env, queue_bdb_msgcall);
    (void) env->set_cachesize(env, 0, QUEUE_CACHE_BYTES, 1);
    (void) env->set_lk_detect(env, DB_LOCK_DEFAULT);
    (void) env->set_lk_max_locks(env, QUEUE_LOCK_MAX);
    (void) env->set_lk_max_objects(env, QUEUE_LOCK_MAX);
    (void) env->set_lk_max_lockers(env, QUEUE_LOCKER_MAX);
    (void) env->set_lg_max(env, QUEUE_LOG_FILE_MAX);
    (void) env->log_set_config(env, DB_LOG_AUTO_REMOVE, 1);
    /* For failchk by a lock waiter (queue_txn_run). Not DB_FAILCHK at the
     * open: Berkeley DB 5.3's failchk for a dead registrant attaches the
     * regions first and spins for ever on a region mutex the dead process
     * held (seen under kill -9: an opener spinning in __env_set_state,
     * holding the open lock). Recovery never waits for that mutex. */
    (void) env->set_thread_count(env, QUEUE_THREAD_MAX);
    (void) env->set_isalive(env, queue_is_alive);
    if (!var_index_sync)
        (void) env->set_flags(env, DB_TXN_WRITE_NOSYNC, 1);
    ret = env->open(env, home,
                    DB_CREATE | DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG | DB_INIT_MPOOL
                        | DB_REGISTER | DB_RECOVER,
                    0600);
    if (ret != 0) {
        char *what = x_asprintf("open environment %s", home);

        queue_db_error(error_r, what, ret);
        free(what);
        (void) env->close(env, 0);
        return ret;
    }
    q->env = env;

    /* Several processes may create index.db at the same moment. */
    for (int attempt = 0;; attempt++) {
        DB *db;

        if ((ret = db_create(&db, env, 0)) != 0) {
            queue_db_error(error_r, "db_create", ret);
            break;
        }
        if ((ret = db->set_flags(db, DB_DUP | DB_DUPSORT)) == 0)
            ret = db->open(db, NULL, "index.db", NULL, DB_BTREE, DB_CREATE | DB_AUTO_COMMIT,
                           0600);
        if (ret == 0) {
            q->db = db;
            if ((ret = queue_stats_open(q, error_r)) == 0)
                return 0;
            break;
        }
        (void) db->close(db, 0);
        if (ret != DB_LOCK_DEADLOCK || attempt >= QUEUE_TXN_RETRIES) {
            queue_db_error(error_r, "open index.db", ret);
            break;
        }
        usleep(1000);
    }
    queue_env_close_unguarded(q);
    return ret;
}

typedef struct {
    const char *home;
    int recover;
    char **error_r;
} QUEUE_TRY_CTX;

static int
queue_env_try_call(QUEUE *q, void *arg)
{
    QUEUE_TRY_CTX *t = arg;

    return queue_env_try(q, t->home, t->recover, t->error_r);
}

/* queue_env_try as a guarded call; a wedged open says DB_RUNRECOVERY. */
static int
queue_env_try_guarded(QUEUE *q, const char *home, int recover, char **error_r)
{
    QUEUE_TRY_CTX t = {home, recover, error_r};
    int ret;

    /* Against the regions as they are now: an earlier environment's may be
     * gone by a recovery since, which would make this open look wedged
     * from its start. */
    queue_note_regions(q);
    ret = queue_guard_call(q, queue_env_try_call, &t);

    if (ret == QUEUE_STUCK) {
        q->recover_next = 0;
        queue_error(error_r, "queue index: open environment %s: no progress", home);
        return DB_RUNRECOVERY;
    }
    if (ret == 0)
        queue_guard_note_env(q);
    return ret;
}

/*
 * Open the environment and index.db (CRASH RECOVERY in queue.h): under the
 * open lock, trying again while the environment is busy or being recovered
 * by someone else, and recovering it here when it needs recovery that the
 * registry did not start. Gives up at the deadline (QUEUE_OPEN_WAIT_S from
 * the first try) or on an error that waiting does not cure.
 */
static int
queue_env_open(QUEUE *q, char **error_r)
{
    char *home = x_asprintf("%s/db", q->dir);
    int64_t deadline = now_ms() + QUEUE_OPEN_WAIT_S * 1000;
    useconds_t pause = 2000;
    int warned = 0;
    int ret = -1;

    for (;;) {
        char *error = NULL;
        int lock_fd;

        if ((lock_fd = queue_open_lock(q, deadline, error_r)) < 0)
            break;
        queue_fault("open-locked");
        if (q->recover_next) {
            /* We left these regions wedged (the watchdog): recover them. */
            q->recover_next = 0;
            ret = queue_env_try_guarded(q, home, 1, &error);
        } else {
            ret = queue_env_try_guarded(q, home, 0, &error);
        }
        /* Panicked, and no dead registrant made this open recover it; or
         * an environment without a thread table (made by an older
         * version): recover it now. */
        if (ret == DB_RUNRECOVERY || (ret == EINVAL && strstr(error, "thread") != NULL)) {
            msg_warn("%s", error);
            x_free(&error);
            ret = queue_env_try_guarded(q, home, 1, &error);
        }
        (void) close(lock_fd);
        if (ret == 0) {
            if (warned)
                msg_info("queue index: environment %s open again", home);
            free(home);
            return 0;
        }
        /* Busy: a process died while creating or recovering the regions,
         * a panic came between our open and index.db, or the recovery
         * above met a conflict: wait and try again. */
        if ((ret == EAGAIN || ret == DB_RUNRECOVERY || ret == DB_LOCK_DEADLOCK
             || ret == DB_LOCK_NOTGRANTED)
            && now_ms() < deadline) {
            if (!warned)
                msg_warn("%s; trying again", error);
            warned = 1;
            free(error);
            queue_backoff(&pause);
            continue;
        }
        *error_r = error;
        break;
    }
    free(home);
    return -1;
}

QUEUE *
queue_open(const char *dir, int flags, char **error_r)
{
    QUEUE *q = x_calloc(1, sizeof(*q));

    q->dir = x_strdup(dir);
    q->flags = flags;
    q->pid = getpid();
    q->dir_fd = q->incoming_fd = q->msg_fd = q->status_fd = q->lock_fd = q->reg_fd = -1;
    for (int i = 0; i < QUEUE_XY_DIRS; i++)
        q->xy_fd[i] = -1;
    if (queue_open_dirs(q, error_r) < 0 || queue_env_open(q, error_r) < 0) {
        queue_close(&q);
        return NULL;
    }
    return q;
}

static void
queue_close_fd(int *fd)
{
    if (*fd >= 0)
        (void) close(*fd);
    *fd = -1;
}

void
queue_close(QUEUE **qp)
{
    QUEUE *q = *qp;

    if (q == NULL)
        return;
    *qp = NULL;
    if (q->pid == getpid()) {
        char *error = NULL;

        if (queue_reaper_drain(q, &error) < 0) {
            msg_warn("%s", error);
            free(error);
            error = NULL;
        }
        queue_reaper_stop(q);
        if ((q->pending_count > 0 || q->sync_count > 0) && q->env != NULL
            && queue_sync(q, &error) < 0) {
            msg_warn("%s", error);
            free(error);
        }
        if (q->env != NULL)
            (void) queue_guard_call(q, queue_checkpoint_call, NULL);
        queue_env_close(q);
    }
    /* In a forked child the handles belong to the parent: the memory is
     * freed but Berkeley DB is not touched (nor the parent's thread). */
    queue_reaper_stop(q);
    for (size_t i = 0; i < q->sync_count; i++)
        (void) close(q->sync_fds[i]);
    for (size_t i = 0; i < q->pending_count; i++)
        free(q->pending[i].domain);
    free(q->pending);
    free(q->sync_fds);
    for (int i = 0; i < QUEUE_XY_DIRS; i++)
        queue_close_fd(&q->xy_fd[i]);
    queue_close_fd(&q->incoming_fd);
    queue_close_fd(&q->msg_fd);
    queue_close_fd(&q->status_fd);
    queue_close_fd(&q->lock_fd);
    queue_close_fd(&q->dir_fd);
    free(q->dir);
    free(q);
}

const char *
queue_dir(const QUEUE *q)
{
    return q->dir;
}

/* ---- transactions --------------------------------------------------------- */

/*
 * Run fn in a transaction; fn must be repeatable (it is run again after a
 * conflict). The commit itself never waits for the disk: the log is flushed
 * after the commit, once page locks are released, so concurrent writers of
 * the same index page do not queue behind each other's fsync and one log
 * flush covers every commit made meanwhile (group commit across processes).
 * The caller still returns only after its commit record is on disk.
 *
 * Lock requests never block (DB_TXN_NOWAIT): a conflict aborts and retries
 * after a short random pause. Berkeley DB would otherwise wait forever for
 * a lock held by a process that was killed (its lock timeouts only fire
 * when a deadlock detector runs). After QUEUE_FAILCHK_AFTER_MS of conflicts
 * failchk releases the locks of a holder that died; after lock_timeout the
 * environment is reopened once (the registry check at the open runs
 * failchk too) and then the operation fails.
 *
 * A panicked environment (DB_RUNRECOVERY: a process died inside Berkeley
 * DB and another one is recovering) is closed and reopened, which waits
 * behind the recovery (queue_env_open), and fn runs again, also after a
 * commit whose log flush the panic interrupted: the commit may or may not
 * have reached the log, and adding or removing an entry twice is harmless.
 * Reopening stops after QUEUE_OPEN_WAIT_S.
 */
typedef struct {
    int flags;
    QUEUE_TXN_FN fn;
    void *ctx;
} QUEUE_ONCE_CTX;

/* One try of a transaction (a guarded call): 0 or a Berkeley DB error. */
static int
queue_txn_once(QUEUE *q, void *arg)
{
    QUEUE_ONCE_CTX *o = arg;
    DB_TXN *txn = NULL;
    int ret;

    ret = q->env->txn_begin(q->env, NULL, &txn,
                            DB_TXN_NOWAIT | ((o->flags & QUEUE_TXN_READ) ? DB_READ_COMMITTED : 0));
    if (ret == 0) {
        ret = o->fn(q, txn, o->ctx);
        if (ret == 0 && (o->flags & QUEUE_TXN_DURABLE))
            queue_fault("index-txn"); /* holding the page write locks */
        if (ret == 0)
            ret = txn->commit(txn, DB_TXN_WRITE_NOSYNC);
        else
            (void) txn->abort(txn);
    }
    return ret;
}

/* The log flush of a durable transaction, a guarded call of its own: a
 * flush that fails or is left must not make the caller run the committed
 * transaction again (a collection record would count twice). */
static int
queue_log_flush_call(QUEUE *q, void *arg)
{
    (void) arg;
    queue_fault("log-flush"); /* committed, the log not yet on disk */
    return q->env->log_flush(q->env, NULL);
}

/* After a commit: the log on disk before returning (durable transactions,
 * index_sync), reopening the environment when the flush was left or the
 * environment panicked (the commit is in the log file already: recovery
 * keeps it, and the next flush syncs it); now and then a checkpoint.
 * 0, or -1 with *error_r. */
static int
queue_txn_after_commit(QUEUE *q, const char *what, int flags, int64_t reopen_deadline,
                       char **error_r)
{
    if ((flags & QUEUE_TXN_DURABLE) && var_index_sync) {
        for (;;) {
            int ret;

            if (q->env == NULL && queue_env_open(q, error_r) < 0)
                return -1;
            if ((ret = queue_guard_call(q, queue_log_flush_call, NULL)) == 0)
                break;
            if ((ret == QUEUE_STUCK || ret == DB_RUNRECOVERY) && now_ms() < reopen_deadline) {
                if (ret == DB_RUNRECOVERY)
                    queue_env_close(q);
                continue;
            }
            if (ret == QUEUE_STUCK)
                queue_error(error_r, "queue index: %s: log flush: no progress inside "
                            "Berkeley DB", what);
            else
                queue_db_error(error_r, what, ret);
            return -1;
        }
    }
    if (!(flags & QUEUE_TXN_READ) && ++q->commits >= QUEUE_CHECKPOINT_EVERY && q->env != NULL) {
        q->commits = 0;
        (void) queue_guard_call(q, queue_checkpoint_call, NULL);
    }
    return 0;
}

/* failchk as a guarded call: 0, or non-zero when the environment needs
 * recovery (DB_RUNRECOVERY, or QUEUE_STUCK). */
static int
queue_failchk_call(QUEUE *q, void *arg)
{
    (void) arg;
    return q->env->failchk(q->env, 0) == DB_RUNRECOVERY ? DB_RUNRECOVERY : 0;
}

int
queue_txn_run(QUEUE *q, const char *what, int flags, QUEUE_TXN_FN fn, void *ctx,
              char **error_r)
{
    long timeout = var_lock_timeout > 0 ? var_lock_timeout : 10;
    int64_t deadline = now_ms() + timeout * 1000;
    int64_t failchk_at = now_ms() + QUEUE_FAILCHK_AFTER_MS;
    int64_t reopen_deadline = now_ms() + QUEUE_OPEN_WAIT_S * 1000;
    useconds_t pause = 200;
    int reopened = 0;
    int ret = 0;

    if (q->pid != getpid())
        msg_panic("queue %s used after fork", q->dir);
    for (long attempt = 0; attempt < 1000000; attempt++) {
        QUEUE_ONCE_CTX once = {flags, fn, ctx};

        if (q->env == NULL && queue_env_open(q, error_r) < 0)
            return -1;
        ret = queue_guard_call(q, queue_txn_once, &once);
        if (ret == QUEUE_STUCK) {
            /* The watchdog left the environment to recovery: reopen. */
            if (now_ms() < reopen_deadline)
                continue;
            break;
        }
        if (ret == 0) {
            queue_bdb_msg[0] = 0;
            return queue_txn_after_commit(q, what, flags, reopen_deadline, error_r);
        }
        if ((ret == DB_LOCK_DEADLOCK || ret == DB_LOCK_NOTGRANTED) && now_ms() < deadline) {
            if (now_ms() >= failchk_at) {
                /* The holder may be a killed process that no opener has
                 * cleaned up yet. */
                failchk_at = now_ms() + 1000;
                if (queue_guard_call(q, queue_failchk_call, NULL) != 0) {
                    msg_warn("queue index: %s: a process died inside Berkeley DB; "
                             "reopening the environment", what);
                    queue_env_close(q);
                    continue;
                }
            }
            /* Random pause, growing: the same lockers should not collide
             * again in lockstep. */
            usleep(pause / 2 + (useconds_t) (random() % (long) pause));
            if (pause < 20000)
                pause *= 2;
            continue;
        }
        if (ret == DB_RUNRECOVERY && now_ms() < reopen_deadline) {
            msg_warn("queue index: %s: %s; reopening the environment", what, db_strerror(ret));
            queue_env_close(q);
            queue_bdb_msg[0] = 0;
            continue;
        }
        if ((ret == DB_LOCK_DEADLOCK || ret == DB_LOCK_NOTGRANTED) && !reopened) {
            reopened = 1;
            msg_warn("queue index: %s: %s for %ld s; reopening the environment", what,
                     db_strerror(ret), timeout);
            queue_env_close(q);
            deadline = now_ms() + timeout * 1000;
            pause = 200;
            continue;
        }
        break;
    }
    if (ret == QUEUE_STUCK)
        queue_error(error_r, "queue index: %s: no progress inside Berkeley DB, and the "
                    "environment could not be recovered in time", what);
    else
        queue_db_error(error_r, what, ret);
    return -1;
}

static void
dbt_set(DBT *dbt, const void *data, size_t len)
{
    memset(dbt, 0, sizeof(*dbt));
    dbt->data = (void *) data;
    dbt->size = (u_int32_t) len;
}

void
queue_dbt_set(DBT *dbt, const void *data, size_t len)
{
    dbt_set(dbt, data, len);
}

/* ---- index operations ----------------------------------------------------- */

typedef struct {
    char *const *domains;
    const unsigned *rcpts;
    size_t count;
    const char *id;
    long long bytes;
} QUEUE_ADD_CTX;

/* Add one (domain, ID) entry; one already there is fine. A domain entry
 * that is new is counted in the domain's figures, in the same
 * transaction. */
static int
queue_put(QUEUE *q, DB_TXN *txn, const QUEUE_PAIR *p)
{
    DBT key, data;
    int ret;

    dbt_set(&key, p->domain, strlen(p->domain));
    dbt_set(&data, p->id, QUEUE_ID_LEN);
    ret = q->db->put(q->db, txn, &key, &data, DB_NODUPDATA);
    if (ret == 0 && (unsigned char) p->domain[0] >= 0x20)
        ret = queue_stats_added(q, txn, p);
    return ret == DB_KEYEXIST ? 0 : ret;
}

static int
queue_add_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    QUEUE_ADD_CTX *a = ctx;
    QUEUE_PAIR p;

    memset(&p, 0, sizeof(p));
    memcpy(p.id, a->id, QUEUE_ID_LEN);
    p.bytes = a->bytes;
    for (size_t i = 0; i < a->count; i++) {
        int ret;

        p.domain = a->domains[i];
        p.rcpts = a->rcpts[i];
        if ((ret = queue_put(q, txn, &p)) != 0)
            return ret;
    }
    return 0;
}

int
queue_index_add(QUEUE *q, char *const *domains, const unsigned *rcpts, size_t count,
                const char *id, long long bytes, char **error_r)
{
    QUEUE_ADD_CTX a = {domains, rcpts, count, id, bytes};

    if (q->flags & QUEUE_OPEN_READONLY) {
        queue_error(error_r, "queue %s: opened read-only", q->dir);
        return -1;
    }
    return queue_txn_run(q, "add", QUEUE_TXN_DURABLE, queue_add_fn, &a, error_r);
}

typedef struct {
    const QUEUE_PAIR *pairs;
    size_t count;
} QUEUE_PAIRS_CTX;

static int
queue_add_pairs_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    QUEUE_PAIRS_CTX *a = ctx;

    for (size_t i = 0; i < a->count; i++) {
        int ret = queue_put(q, txn, &a->pairs[i]);

        if (ret != 0)
            return ret;
    }
    return 0;
}

int
queue_index_add_pairs(QUEUE *q, const QUEUE_PAIR *pairs, size_t count, char **error_r)
{
    QUEUE_PAIRS_CTX a = {pairs, count};

    if (count == 0)
        return 0;
    if (q->flags & QUEUE_OPEN_READONLY) {
        queue_error(error_r, "queue %s: opened read-only", q->dir);
        return -1;
    }
    return queue_txn_run(q, "add", QUEUE_TXN_DURABLE, queue_add_pairs_fn, &a, error_r);
}

static int
queue_remove_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    QUEUE_PAIRS_CTX *r = ctx;
    DBC *cur;
    int ret;

    if ((ret = q->db->cursor(q->db, txn, &cur, 0)) != 0)
        return ret;
    for (size_t i = 0; i < r->count && ret == 0; i++) {
        DBT key, data;

        if (r->pairs[i].add == QUEUE_PAIR_RECOUNT) {
            ret = queue_stats_recount(q, txn, &r->pairs[i]);
            continue;
        }
        if (r->pairs[i].add) {
            ret = queue_put(q, txn, &r->pairs[i]);
            continue;
        }
        dbt_set(&key, r->pairs[i].domain, strlen(r->pairs[i].domain));
        dbt_set(&data, r->pairs[i].id, QUEUE_ID_LEN);
        ret = cur->get(cur, &key, &data, DB_GET_BOTH);
        if (ret == 0)
            ret = cur->del(cur, 0);
        /* Only a removal that found its entry takes back its figures: a
         * removal done twice changes them once. */
        if (ret == 0 && (unsigned char) r->pairs[i].domain[0] >= 0x20)
            ret = queue_stats_removed(q, txn, r->pairs[i].domain,
                                      strlen(r->pairs[i].domain), r->pairs[i].id);
        else if (ret == DB_NOTFOUND)
            ret = 0;
    }
    (void) cur->close(cur);
    return ret;
}

int
queue_index_remove(QUEUE *q, const QUEUE_PAIR *pairs, size_t count, char **error_r)
{
    QUEUE_PAIRS_CTX r = {pairs, count};

    if (count == 0)
        return 0;
    if (q->flags & QUEUE_OPEN_READONLY) {
        queue_error(error_r, "queue %s: opened read-only", q->dir);
        return -1;
    }
    /* Not durable on its own: losing a removal re-sends, never loses. A
     * notice-list change rides in the same transaction as the removal of
     * the domain entries that led to it (pairs with add = 1). */
    return queue_txn_run(q, "remove", 0, queue_remove_fn, &r, error_r);
}

int
queue_index_drop(QUEUE *q, const char *domain, const char *id, char **error_r)
{
    QUEUE_PAIR pair;
    int ret;

    if (!queue_id_valid(id)) {
        queue_error(error_r, "bad queue ID \"%.40s\"", id);
        return -1;
    }
    memset(&pair, 0, sizeof(pair));
    pair.domain = str_lower(x_strdup(domain));
    memcpy(pair.id, id, QUEUE_ID_LEN + 1);
    ret = queue_index_remove(q, &pair, 1, error_r);
    free(pair.domain);
    return ret;
}

static int
queue_truncate_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    u_int32_t count;
    int ret = q->db->truncate(q->db, txn, &count, 0);

    return ret == 0 ? queue_stats_truncate(q, txn) : ret;
}

int
queue_index_truncate(QUEUE *q, char **error_r)
{
    if (q->flags & QUEUE_OPEN_READONLY) {
        queue_error(error_r, "queue %s: opened read-only", q->dir);
        return -1;
    }
    return queue_txn_run(q, "truncate", QUEUE_TXN_DURABLE, queue_truncate_fn, NULL, error_r);
}

typedef struct {
    const char *domain;
    char **ids;
    size_t count, alloc;
} QUEUE_IDS_CTX;

static int
queue_ids_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    QUEUE_IDS_CTX *c = ctx;
    DBT key, data;
    DBC *cur;
    int ret;

    /* Start over after a deadlock retry. */
    queue_ids_free(&c->ids, c->count);
    c->count = c->alloc = 0;
    if ((ret = q->db->cursor(q->db, txn, &cur, 0)) != 0)
        return ret;
    dbt_set(&key, c->domain, strlen(c->domain));
    dbt_set(&data, NULL, 0);
    for (ret = cur->get(cur, &key, &data, DB_SET); ret == 0;
         ret = cur->get(cur, &key, &data, DB_NEXT_DUP)) {
        if (data.size != QUEUE_ID_LEN)
            continue;
        if (c->count == c->alloc) {
            c->alloc = c->alloc ? c->alloc * 2 : 16;
            c->ids = x_realloc(c->ids, c->alloc * sizeof(*c->ids));
        }
        c->ids[c->count++] = x_strndup(data.data, data.size);
    }
    (void) cur->close(cur);
    return ret == DB_NOTFOUND ? 0 : ret;
}

ssize_t
queue_domain_ids(QUEUE *q, const char *domain, char ***ids_r, char **error_r)
{
    char *key = str_lower(x_strdup(domain));
    QUEUE_IDS_CTX c = {key, NULL, 0, 0};
    int ret;

    ret = queue_txn_run(q, "lookup", QUEUE_TXN_READ, queue_ids_fn, &c, error_r);
    free(key);
    if (ret < 0) {
        queue_ids_free(&c.ids, c.count);
        return -1;
    }
    *ids_r = c.ids;
    return (ssize_t) c.count;
}

void
queue_ids_free(char ***ids, size_t count)
{
    if (*ids == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free((*ids)[i]);
    x_free(ids);
}

typedef struct {
    const char *domain;
    int found;
} QUEUE_HAS_CTX;

static int
queue_has_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    QUEUE_HAS_CTX *h = ctx;
    DBT key, data;
    int ret;

    dbt_set(&key, h->domain, strlen(h->domain));
    dbt_set(&data, NULL, 0);
    ret = q->db->get(q->db, txn, &key, &data, 0);
    h->found = ret == 0;
    return ret == DB_NOTFOUND ? 0 : ret;
}

int
queue_domain_has_mail(QUEUE *q, const char *domain, char **error_r)
{
    char *key = str_lower(x_strdup(domain));
    QUEUE_HAS_CTX h = {key, 0};
    int ret;

    ret = queue_txn_run(q, "lookup", QUEUE_TXN_READ, queue_has_fn, &h, error_r);
    free(key);
    return ret < 0 ? -1 : h.found;
}

typedef struct {
    char **domains;
    size_t *counts;
    size_t count, alloc;
} QUEUE_WALK_CTX;

static void
queue_walk_reset(QUEUE_WALK_CTX *w)
{
    for (size_t i = 0; i < w->count; i++)
        free(w->domains[i]);
    w->count = 0;
}

static int
queue_walk_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    QUEUE_WALK_CTX *w = ctx;
    DBT key, data;
    DBC *cur;
    int ret;

    queue_walk_reset(w);
    if ((ret = q->db->cursor(q->db, txn, &cur, 0)) != 0)
        return ret;
    dbt_set(&key, NULL, 0);
    dbt_set(&data, NULL, 0);
    while ((ret = cur->get(cur, &key, &data, DB_NEXT_NODUP)) == 0) {
        db_recno_t n = 0;

        if (key.size == 0 || *(const unsigned char *) key.data < 0x20)
            continue; /* the notice list, watermarks: not a domain */
        if ((ret = cur->count(cur, &n, 0)) != 0)
            break;
        if (w->count == w->alloc) {
            w->alloc = w->alloc ? w->alloc * 2 : 64;
            w->domains = x_realloc(w->domains, w->alloc * sizeof(*w->domains));
            w->counts = x_realloc(w->counts, w->alloc * sizeof(*w->counts));
        }
        w->domains[w->count] = x_strndup(key.data, key.size);
        w->counts[w->count++] = n;
    }
    (void) cur->close(cur);
    return ret == DB_NOTFOUND ? 0 : ret;
}

int
queue_walk_domains(QUEUE *q, int (*fn)(const char *domain, size_t count, void *ctx),
                   void *ctx, char **error_r)
{
    QUEUE_WALK_CTX w = {NULL, NULL, 0, 0};
    int ret;

    /* Collected first, called back after the transaction: a callback may
     * take its time or use the index itself without holding our locks. */
    ret = queue_txn_run(q, "walk", QUEUE_TXN_READ, queue_walk_fn, &w, error_r);
    for (size_t i = 0; ret == 0 && i < w.count; i++)
        ret = fn(w.domains[i], w.counts[i], ctx);
    queue_walk_reset(&w);
    free(w.domains);
    free(w.counts);
    return ret;
}

/* ---- notices, expiry, delay warnings -------------------------------------- */

ssize_t
queue_notice_ids(QUEUE *q, char ***ids_r, char **error_r)
{
    QUEUE_IDS_CTX c = {QUEUE_NOTICE_KEY, NULL, 0, 0};

    if (queue_txn_run(q, "notice list", QUEUE_TXN_READ, queue_ids_fn, &c, error_r) < 0) {
        queue_ids_free(&c.ids, c.count);
        return -1;
    }
    *ids_r = c.ids;
    return (ssize_t) c.count;
}

/* Put id on the notice list (durable) or take it off. */
static int
queue_notice_change(QUEUE *q, const char *id, int add, char **error_r)
{
    QUEUE_PAIR pair;

    if (!queue_id_valid(id)) {
        queue_error(error_r, "bad queue ID \"%.40s\"", id);
        return -1;
    }
    memset(&pair, 0, sizeof(pair));
    pair.domain = (char *) QUEUE_NOTICE_KEY;
    memcpy(pair.id, id, QUEUE_ID_LEN + 1);
    pair.add = add;
    return add ? queue_index_add_pairs(q, &pair, 1, error_r)
               : queue_index_remove(q, &pair, 1, error_r);
}

int
queue_notice_add(QUEUE *q, const char *id, char **error_r)
{
    return queue_notice_change(q, id, 1, error_r);
}

int
queue_notice_remove(QUEUE *q, const char *id, char **error_r)
{
    return queue_notice_change(q, id, 0, error_r);
}

long
queue_id_time(const char *id)
{
    long long us = 0;

    if (id == NULL || !queue_id_valid(id))
        return -1;
    for (int i = 0; i < 14; i++)
        us = us * 16 + hex_value(id[i]);
    return (long) (us / 1000000);
}

typedef struct {
    long expire_before, warn_before;
    QUEUE_DUE *due;
    size_t count, alloc;
} QUEUE_SCAN_CTX;

static void
queue_due_push(QUEUE_SCAN_CTX *c, const DBT *key, const DBT *data, int expire)
{
    QUEUE_DUE *d;

    if (c->count == c->alloc) {
        c->alloc = c->alloc ? c->alloc * 2 : 64;
        c->due = x_realloc(c->due, c->alloc * sizeof(*c->due));
    }
    d = c->due + c->count++;
    memcpy(d->domain, key->data, key->size);
    d->domain[key->size] = 0;
    memcpy(d->id, data->data, QUEUE_ID_LEN);
    d->id[QUEUE_ID_LEN] = 0;
    d->expire = expire;
}

/* Is data a queue ID that arrived at or before the time? */
static int
queue_dbt_due(const DBT *data, long before)
{
    char id[QUEUE_ID_LEN + 1];
    long t;

    if (data->size != QUEUE_ID_LEN)
        return 0;
    memcpy(id, data->data, QUEUE_ID_LEN);
    id[QUEUE_ID_LEN] = 0;
    return (t = queue_id_time(id)) >= 0 && t <= before;
}

static int
queue_scan_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    QUEUE_SCAN_CTX *c = ctx;
    DBT key, data;
    DBC *cur, *dup = NULL;
    int ret;

    c->count = 0; /* again after a conflict */
    if ((ret = q->db->cursor(q->db, txn, &cur, 0)) != 0)
        return ret;
    if (c->warn_before > 0 && (ret = q->db->cursor(q->db, txn, &dup, 0)) != 0) {
        (void) cur->close(cur);
        return ret;
    }
    dbt_set(&key, NULL, 0);
    dbt_set(&data, NULL, 0);
    /* One cursor step per domain: its first entry is its oldest message. */
    while ((ret = cur->get(cur, &key, &data, DB_NEXT_NODUP)) == 0) {
        char mark_key[260];
        DBT mk, md, dk, dd;
        int r;

        if (key.size == 0 || key.size > 253 || *(const unsigned char *) key.data < 0x20)
            continue;
        if (!queue_dbt_due(&data, c->expire_before > c->warn_before ? c->expire_before
                                                                  : c->warn_before))
            continue;
        /* The key's bytes belong to the cursor until its next move. */
        mark_key[0] = QUEUE_WARN_MARK_PREFIX;
        memcpy(mark_key + 1, key.data, key.size);
        dbt_set(&dk, mark_key + 1, key.size);
        /* Expiry: the oldest entries, in order. */
        for (r = 0; r == 0 && queue_dbt_due(&data, c->expire_before);
             r = cur->get(cur, &key, &data, DB_NEXT_DUP))
            queue_due_push(c, &key, &data, 1);
        if (r != 0 && r != DB_NOTFOUND) {
            ret = r;
            break;
        }
        if (c->warn_before <= 0)
            continue;
        /* Delay warnings: the entries after the watermark. */
        dbt_set(&mk, mark_key, dk.size + 1);
        dbt_set(&md, NULL, 0);
        r = q->db->get(q->db, txn, &mk, &md, 0);
        if (r != 0 && r != DB_NOTFOUND) {
            ret = r;
            break;
        }
        if (r == 0 && md.size == QUEUE_ID_LEN) {
            char after[QUEUE_ID_LEN];

            memcpy(after, md.data, QUEUE_ID_LEN);
            dbt_set(&dd, after, QUEUE_ID_LEN);
            r = dup->get(dup, &dk, &dd, DB_GET_BOTH_RANGE);
            if (r == 0 && dd.size == QUEUE_ID_LEN && memcmp(dd.data, after, QUEUE_ID_LEN) == 0)
                r = dup->get(dup, &dk, &dd, DB_NEXT_DUP);
        } else {
            dbt_set(&dd, NULL, 0);
            r = dup->get(dup, &dk, &dd, DB_SET);
        }
        for (; r == 0 && queue_dbt_due(&dd, c->warn_before);
             r = dup->get(dup, &dk, &dd, DB_NEXT_DUP))
            if (!queue_dbt_due(&dd, c->expire_before))
                queue_due_push(c, &dk, &dd, 0);
        if (r != 0 && r != DB_NOTFOUND) {
            ret = r;
            break;
        }
        /* cur stands on the last expired entry or further: the next
         * DB_NEXT_NODUP goes to the next domain either way. */
    }
    if (dup != NULL)
        (void) dup->close(dup);
    (void) cur->close(cur);
    return ret == DB_NOTFOUND ? 0 : ret;
}

int
queue_scan_due(QUEUE *q, long expire_before, long warn_before, QUEUE_DUE **due_r,
               size_t *count_r, char **error_r)
{
    QUEUE_SCAN_CTX c = {expire_before, warn_before, NULL, 0, 0};

    if (queue_txn_run(q, "scan", QUEUE_TXN_READ, queue_scan_fn, &c, error_r) < 0) {
        free(c.due);
        return -1;
    }
    *due_r = c.due;
    *count_r = c.count;
    return 0;
}

typedef struct {
    char key[260];
    size_t key_len;
    const char *id;
} QUEUE_MARK_CTX;

static int
queue_mark_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    QUEUE_MARK_CTX *m = ctx;
    DBT key, data;
    int ret;

    dbt_set(&key, m->key, m->key_len);
    ret = q->db->del(q->db, txn, &key, 0);
    if (ret != 0 && ret != DB_NOTFOUND)
        return ret;
    dbt_set(&data, m->id, QUEUE_ID_LEN);
    return q->db->put(q->db, txn, &key, &data, 0);
}

int
queue_warn_mark(QUEUE *q, const char *domain, const char *id, char **error_r)
{
    QUEUE_MARK_CTX m;
    size_t len = strlen(domain);

    if (len == 0 || len > 253 || !queue_id_valid(id)) {
        queue_error(error_r, "bad watermark \"%.100s\" \"%.40s\"", domain, id);
        return -1;
    }
    m.key[0] = QUEUE_WARN_MARK_PREFIX;
    memcpy(m.key + 1, domain, len);
    m.key[len + 1] = 0;
    str_lower(m.key + 1);
    m.key_len = len + 1;
    m.id = id;
    if (q->flags & QUEUE_OPEN_READONLY) {
        queue_error(error_r, "queue %s: opened read-only", q->dir);
        return -1;
    }
    /* Not durable on its own: a lost watermark makes the next run look at
     * the same messages again, and their status files say they were warned. */
    return queue_txn_run(q, "watermark", 0, queue_mark_fn, &m, error_r);
}

/* ---- file removal thread -------------------------------------------------- */

/*
 * A flush deletes one file per delivered message. The unlink and, more,
 * the last close (the inode is freed there; with -o discard ext4 waits for
 * the device to discard the blocks) cost about as much as sending a 10 KiB
 * message over loopback. A thread does them while the flush goes on with
 * the next message. Safe for the durability rules: until the thread has
 * removed a file it is still there, with every recipient final or (marks
 * not synced yet) queued: a crash meanwhile re-sends, never loses.
 */
typedef struct {
    int xy_fd;
    int fd;
    char id[QUEUE_ID_LEN + 1];
} QUEUE_REAP;

struct queue_reaper {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work, idle;
    QUEUE_REAP *items;
    size_t count, alloc;
    int busy;       /* the thread is working on a batch */
    int stop;
    int status_fd;
    int err;        /* first errno of a failed unlink since the last drain */
    char err_id[QUEUE_ID_LEN + 1];
};

static void *
queue_reaper_main(void *arg)
{
    struct queue_reaper *r = arg;

    pthread_mutex_lock(&r->mu);
    for (;;) {
        QUEUE_REAP *batch;
        size_t n;

        while (r->count == 0 && !r->stop)
            pthread_cond_wait(&r->work, &r->mu);
        if (r->count == 0)
            break; /* stop, and nothing left */
        /* Take the whole list; the main thread starts a new one. */
        batch = r->items;
        n = r->count;
        r->items = NULL;
        r->count = r->alloc = 0;
        r->busy = 1;
        pthread_mutex_unlock(&r->mu);
        for (size_t i = 0; i < n; i++) {
            int e = 0;

            if (unlinkat(batch[i].xy_fd, batch[i].id, 0) < 0 && errno != ENOENT)
                e = errno;
            (void) unlinkat(r->status_fd, batch[i].id, 0);
            (void) close(batch[i].fd);
            if (e != 0) {
                pthread_mutex_lock(&r->mu);
                if (r->err == 0) {
                    r->err = e;
                    memcpy(r->err_id, batch[i].id, sizeof(r->err_id));
                }
                pthread_mutex_unlock(&r->mu);
            }
        }
        free(batch);
        pthread_mutex_lock(&r->mu);
        r->busy = 0;
        if (r->count == 0)
            pthread_cond_broadcast(&r->idle);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static struct queue_reaper *
queue_reaper_start(QUEUE *q)
{
    struct queue_reaper *r = x_calloc(1, sizeof(*r));
    sigset_t all, old;
    int ret;

    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->work, NULL);
    pthread_cond_init(&r->idle, NULL);
    r->status_fd = q->status_fd;
    /* Signals stay with the main thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    ret = pthread_create(&r->thread, NULL, queue_reaper_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ret != 0) {
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->work);
        pthread_cond_destroy(&r->idle);
        free(r);
        return NULL;
    }
    return r;
}

int
queue_remove_file(QUEUE *q, int xy_fd, const char *id, int fd)
{
    struct queue_reaper *r;

    if (q->reaper == NULL && q->pid == getpid())
        q->reaper = queue_reaper_start(q);
    if ((r = q->reaper) == NULL || q->pid != getpid()) {
        int saved = 0;

        if (unlinkat(xy_fd, id, 0) < 0 && errno != ENOENT)
            saved = errno;
        (void) unlinkat(q->status_fd, id, 0);
        (void) close(fd);
        errno = saved;
        return saved ? -1 : 0;
    }
    pthread_mutex_lock(&r->mu);
    if (r->count == r->alloc) {
        r->alloc = r->alloc ? r->alloc * 2 : 64;
        r->items = x_realloc(r->items, r->alloc * sizeof(*r->items));
    }
    r->items[r->count].xy_fd = xy_fd;
    r->items[r->count].fd = fd;
    memcpy(r->items[r->count].id, id, QUEUE_ID_LEN + 1);
    r->count++;
    pthread_cond_signal(&r->work);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int
queue_reaper_drain(QUEUE *q, char **error_r)
{
    struct queue_reaper *r = q->reaper;
    int err;
    char id[QUEUE_ID_LEN + 1];

    if (r == NULL || q->pid != getpid())
        return 0;
    pthread_mutex_lock(&r->mu);
    while (r->count > 0 || r->busy)
        pthread_cond_wait(&r->idle, &r->mu);
    err = r->err;
    memcpy(id, r->err_id, sizeof(id));
    r->err = 0;
    pthread_mutex_unlock(&r->mu);
    if (err != 0) {
        errno = err;
        queue_error(error_r, "remove queue file %s: %m", id);
        return -1;
    }
    return 0;
}

static void
queue_reaper_stop(QUEUE *q)
{
    struct queue_reaper *r = q->reaper;

    if (r == NULL)
        return;
    q->reaper = NULL;
    if (q->pid != getpid()) /* a forked child: the thread is not here */
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_signal(&r->work);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->work);
    pthread_cond_destroy(&r->idle);
    free(r->items);
    free(r);
}

/* ---- batched removal ------------------------------------------------------ */

static void
queue_pending_push(QUEUE *q, const char *key, const char *id, int add)
{
    if (q->pending_count == q->pending_alloc) {
        q->pending_alloc = q->pending_alloc ? q->pending_alloc * 2 : 32;
        q->pending = x_realloc(q->pending, q->pending_alloc * sizeof(*q->pending));
    }
    q->pending[q->pending_count].domain = x_strdup(key);
    memcpy(q->pending[q->pending_count].id, id, QUEUE_ID_LEN + 1);
    q->pending[q->pending_count].add = add;
    q->pending[q->pending_count].rcpts = 0;
    q->pending[q->pending_count].bytes = 0;
    q->pending_count++;
}

void
queue_pending_recount(QUEUE *q, const char *domain, const char *id, unsigned queued)
{
    queue_pending_push(q, domain, id, QUEUE_PAIR_RECOUNT);
    q->pending[q->pending_count - 1].rcpts = queued;
}

void
queue_pending_add(QUEUE *q, const char *domain, const char *id)
{
    queue_pending_push(q, domain, id, 0);
}

void
queue_pending_notice(QUEUE *q, const char *id, int add)
{
    queue_pending_push(q, QUEUE_NOTICE_KEY, id, add);
}

void
queue_sync_fd_add(QUEUE *q, int fd)
{
    if (q->sync_count == q->sync_alloc) {
        q->sync_alloc = q->sync_alloc ? q->sync_alloc * 2 : 32;
        q->sync_fds = x_realloc(q->sync_fds, q->sync_alloc * sizeof(*q->sync_fds));
    }
    q->sync_fds[q->sync_count++] = fd;
}

int
queue_sync(QUEUE *q, char **error_r)
{
    int ret = 0;

    /* Files handed to the removal thread are gone once this returns (a
     * caller may tell the customer it is done). */
    if (queue_reaper_drain(q, error_r) < 0)
        ret = -1;
    /* Status bytes first: an index entry may only go once the marks that
     * justify its removal are on disk. */
    for (size_t i = 0; i < q->sync_count; i++) {
        if (fdatasync(q->sync_fds[i]) < 0 && ret == 0) {
            queue_error(error_r, "fdatasync queue file: %m");
            ret = -1;
        }
        (void) close(q->sync_fds[i]);
    }
    q->sync_count = 0;
    if (ret < 0)
        return -1;
    if (q->pending_count > 0) {
        if (queue_index_remove(q, q->pending, q->pending_count, error_r) < 0)
            return -1;
        for (size_t i = 0; i < q->pending_count; i++)
            free(q->pending[i].domain);
        q->pending_count = 0;
    }
    return 0;
}

/* ---- domain locks --------------------------------------------------------- */

int
queue_lock_domain(QUEUE *q, const char *domain, int wait_ms, char **error_r)
{
    char name[256];
    int64_t deadline = now_ms() + (wait_ms > 0 ? wait_ms : 0);
    useconds_t pause = 5000;
    struct flock fl;
    int fd;

    /* Validated and lower-cased: the name becomes a path under lock/. */
    if (!domain_valid(domain) || str_copy(name, domain, sizeof(name)) >= sizeof(name)) {
        queue_error(error_r, "bad domain name \"%.100s\"", domain);
        errno = EINVAL;
        return -1;
    }
    str_lower(name);
    fd = openat(q->lock_fd, name, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        queue_error(error_r, "open %s/lock/%s: %m", q->dir, name);
        return -1;
    }
    for (;;) {
        /* Open file description locks: two flushes in one process exclude
         * each other too, and closing some other descriptor of the file
         * does not drop the lock as it would with process-owned locks. */
        memset(&fl, 0, sizeof(fl));
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
            return fd;
        if (errno != EAGAIN && errno != EACCES && errno != EINTR) {
            int saved = errno;

            queue_error(error_r, "lock %s/lock/%s: %m", q->dir, name);
            (void) close(fd);
            errno = saved == EAGAIN ? EIO : saved;
            return -1;
        }
        if (now_ms() >= deadline) {
            queue_error(error_r, "domain %s is being flushed; try again later", name);
            (void) close(fd);
            errno = EAGAIN;
            return -1;
        }
        usleep(pause);
        if (pause < 100000)
            pause *= 2;
    }
}

void
queue_unlock_domain(int fd)
{
    if (fd >= 0)
        (void) close(fd);
}
