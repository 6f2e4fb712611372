/*
 * maps.c - Postfix lookup tables; see maps.h for the contract.
 *
 * hash: and btree: are read here with libdb. Postfix's postmap(1) rebuilds
 * such a file in place (same inode, truncated and rewritten) while it holds
 * an exclusive flock() on it, and an administrator may also replace the file
 * with rename(2). So a lookup takes a shared flock() on our own descriptor
 * of the file, then compares the file at the path with the one we opened,
 * and reopens when they differ: under the shared lock the file cannot change
 * underneath the lookup, and a changed file is never read through a stale
 * libdb page cache.
 *
 * Every other type goes through "postmap -q": that keeps us in step with
 * whatever map types the local Postfix supports (cdb, lmdb, ldap, mysql...)
 * without linking their client libraries.
 */
#include <ctype.h>
#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "maps.h"
#include "util.h"

/* Limits on what a postmap child may send us. */
#define MAPS_VALUE_MAX 65536  /* value bytes, not counting the newline */
#define MAPS_STDERR_MAX 1024  /* stderr bytes kept for the error text */
/* How long a lookup waits for postmap(1) to finish a rebuild. */
#define MAPS_LOCK_TIMEOUT_MS 10000
/* How often a lookup reopens a file that keeps changing before giving up. */
#define MAPS_REOPEN_TRIES 5

int maps_postmap_timeout = 10;

enum map_kind {
    MAP_KIND_DB,      /* hash:, btree: read with libdb */
    MAP_KIND_POSTMAP, /* everything else, via postmap -q */
};

struct map_table {
    char *spec;        /* "type:name" as written in the list */
    enum map_kind kind;
    DBTYPE db_type;
    char *db_path;     /* "name.db" */
    DB *db;            /* NULL until opened (or after a failure) */
    int lock_fd;       /* our own descriptor of db_path, for flock() */
    struct stat id;    /* the file we opened, to notice a rebuild */
    char db_err[256];  /* last libdb diagnostic (libdb must never write to fd 2) */
};

struct maps {
    char *title;
    struct map_table *tabs;
    size_t count;
};

/*
 * Small helpers.
 */

static int
is_sep(int c)
{
    return c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void
sleep_ms(long ms)
{
    struct timespec ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        continue;
}

/*
 * Two stat results describe the same file contents as far as we can tell.
 * postmap rebuilds in place, so the inode alone says nothing; the size and
 * the nanosecond mtime and ctime change with every rebuild.
 */
static int
same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino
        && a->st_size == b->st_size
        && a->st_mtim.tv_sec == b->st_mtim.tv_sec
        && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec
        && a->st_ctim.tv_sec == b->st_ctim.tv_sec
        && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/*
 * Shared lock with a deadline: postmap holds its exclusive lock for the
 * whole rebuild, and a stuck postmap must not hang a session forever.
 * Returns 0, or -1 with errno (ETIMEDOUT when the deadline passed).
 */
static int
lock_shared(int fd)
{
    int64_t deadline = now_ms() + MAPS_LOCK_TIMEOUT_MS;
    long delay = 1;

    for (;;) {
        if (flock(fd, LOCK_SH | LOCK_NB) == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK)
            return -1;
        if (now_ms() >= deadline) {
            errno = ETIMEDOUT;
            return -1;
        }
        sleep_ms(delay);
        if (delay < 10)
            delay *= 2;
    }
}

static void
unlock(int fd)
{
    /* Unlocking a descriptor we hold cannot fail in a way we could act on. */
    while (flock(fd, LOCK_UN) < 0 && errno == EINTR)
        continue;
}

/*
 * Native hash: and btree: tables.
 */

/* libdb's diagnostics go here instead of to stderr (a client socket under
 * spawn(8)); the text ends up in the error string of the failed call. */
static void
db_errcall(const DB_ENV *dbenv, const char *prefix, const char *msg)
{
    struct map_table *tab = dbenv ? dbenv->app_private : NULL;

    if (tab != NULL && msg != NULL)
        (void) str_copy(tab->db_err, msg, sizeof(tab->db_err));
}

static void
db_msgcall(const DB_ENV *dbenv, const char *msg)
{
    /* Informational libdb output: nothing we want on any descriptor. */
}

static void
db_table_close(struct map_table *tab)
{
    if (tab->db != NULL) {
        (void) tab->db->close(tab->db, 0);
        tab->db = NULL;
    }
    if (tab->lock_fd >= 0) {
        (void) close(tab->lock_fd);
        tab->lock_fd = -1;
    }
}

static char *
db_error_text(struct map_table *tab, int ret)
{
    char buf[LOG_CLEAN_BUFSIZE];

    if (tab->db_err[0] != 0)
        return x_strdup(log_clean(buf, sizeof(buf), tab->db_err, strlen(tab->db_err)));
    return x_strdup(db_strerror(ret));
}

/*
 * Open the .db file: our lock descriptor first, then libdb, both while
 * holding the shared lock so libdb never reads a half-written file. On
 * return the lock is released. 0 or -1 with *error_r.
 */
static int
db_table_open(struct map_table *tab, char **error_r)
{
    struct stat st, now;
    int tries, ret, fd;

    for (tries = 0; tries < MAPS_REOPEN_TRIES; tries++) {
        if ((fd = open(tab->db_path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
            *error_r = x_asprintf("%s: open database %s: %s", tab->spec,
                                  tab->db_path, strerror(errno));
            return -1;
        }
        if (lock_shared(fd) < 0) {
            *error_r = x_asprintf("%s: shared-lock database %s: %s", tab->spec,
                                  tab->db_path, errno == ETIMEDOUT
                                  ? "timed out (is postmap still running?)"
                                  : strerror(errno));
            (void) close(fd);
            return -1;
        }
        tab->lock_fd = fd;
        if (fstat(fd, &st) < 0) {
            *error_r = x_asprintf("%s: fstat %s: %s", tab->spec, tab->db_path,
                                  strerror(errno));
            db_table_close(tab);
            return -1;
        }
        if ((ret = db_create(&tab->db, NULL, 0)) != 0) {
            tab->db = NULL;
            *error_r = x_asprintf("%s: create database handle: %s", tab->spec,
                                  db_strerror(ret));
            db_table_close(tab);
            return -1;
        }
        tab->db_err[0] = 0;
        tab->db->get_env(tab->db)->app_private = tab;
        tab->db->set_errcall(tab->db, db_errcall);
        tab->db->set_msgcall(tab->db, db_msgcall);
        if ((ret = tab->db->open(tab->db, NULL, tab->db_path, NULL, tab->db_type,
                                 DB_RDONLY, 0)) != 0) {
            char *why = db_error_text(tab, ret);

            *error_r = x_asprintf("%s: open database %s: %s", tab->spec,
                                  tab->db_path, why);
            free(why);
            db_table_close(tab);
            return -1;
        }

        /*
         * libdb opened the file by name: make sure that is still the file we
         * locked (a rename may have slipped in between).
         */
        if (stat(tab->db_path, &now) == 0 && same_file(&st, &now)) {
            tab->id = st;
            unlock(fd);
            return 0;
        }
        db_table_close(tab);
    }
    *error_r = x_asprintf("%s: database %s keeps changing while it is opened",
                          tab->spec, tab->db_path);
    return -1;
}

/* One libdb get; MAP_FOUND, MAP_NOTFOUND or MAP_ERROR. */
static int
db_get(struct map_table *tab, const char *key, size_t key_len,
       char **value_r, char **error_r)
{
    DBT k, v;
    int ret;

    memset(&k, 0, sizeof(k));
    memset(&v, 0, sizeof(v));
    k.data = (void *) key;
    k.size = (u_int32_t) key_len;
    tab->db_err[0] = 0;
    ret = tab->db->get(tab->db, NULL, &k, &v, 0);
    if (ret == 0) {
        /* A value written by postmap ends in a NUL; one written with -n does not. */
        *value_r = x_strndup(v.data ? v.data : "", v.size);
        return MAP_FOUND;
    }
    if (ret == DB_NOTFOUND)
        return MAP_NOTFOUND;
    {
        char *why = db_error_text(tab, ret);

        *error_r = x_asprintf("%s: error reading %s: %s", tab->spec, tab->db_path, why);
        free(why);
    }
    return MAP_ERROR;
}

static int
db_table_lookup(struct map_table *tab, const char *key, char **value_r,
                char **error_r)
{
    struct stat now;
    size_t len = strlen(key);
    int tries, status;

    for (tries = 0; tries < MAPS_REOPEN_TRIES; tries++) {
        /* A table that failed to open (missing file...) is retried here. */
        if (tab->db == NULL && db_table_open(tab, error_r) < 0)
            return MAP_ERROR;
        if (lock_shared(tab->lock_fd) < 0) {
            *error_r = x_asprintf("%s: shared-lock database %s: %s", tab->spec,
                                  tab->db_path, errno == ETIMEDOUT
                                  ? "timed out (is postmap still running?)"
                                  : strerror(errno));
            return MAP_ERROR;
        }
        if (stat(tab->db_path, &now) < 0) {
            int err = errno;

            db_table_close(tab);
            *error_r = x_asprintf("%s: open database %s: %s", tab->spec,
                                  tab->db_path, strerror(err));
            return MAP_ERROR;
        }
        if (!same_file(&tab->id, &now)) {
            /* Rebuilt or replaced since we opened it: read the new one. */
            db_table_close(tab);
            continue;
        }
        /* postmap stores key and value with a trailing NUL by default. */
        status = db_get(tab, key, len + 1, value_r, error_r);
        if (status == MAP_NOTFOUND)
            status = db_get(tab, key, len, value_r, error_r);
        unlock(tab->lock_fd);
        return status;
    }
    *error_r = x_asprintf("%s: database %s keeps changing; try again later",
                          tab->spec, tab->db_path);
    return MAP_ERROR;
}

/*
 * Other types: postmap -q.
 */

/* Move fd to a descriptor >= 10 so the dup2() calls below cannot clobber it. */
static int
child_high_fd(int fd)
{
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 10);

    return high < 0 ? fd : high;
}

static void
child_write(const char *s)
{
    (void) write_all(2, s, strlen(s));
}

/* In the child: never returns. Only plain system calls here. */
ODMR_NORETURN static void
postmap_child(int devnull, int out_w, int err_w, char *const argv[], char *const envp[])
{
    sigset_t none;
    int fds[3];
    int i;

    fds[0] = child_high_fd(devnull);
    fds[1] = child_high_fd(out_w);
    fds[2] = child_high_fd(err_w);
    for (i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0)
            _exit(127);
    /* Nothing of ours (client socket, queue files, locks) goes to postmap. */
    if (close_range(3, ~0U, 0) < 0) {
        long max = sysconf(_SC_OPEN_MAX);

        if (max < 0 || max > 65536)
            max = 65536;
        for (i = 3; i < max; i++)
            (void) close(i);
    }
    /* Our callers may ignore SIGPIPE or block signals; postmap expects neither. */
    (void) signal(SIGPIPE, SIG_DFL);
    sigemptyset(&none);
    (void) sigprocmask(SIG_SETMASK, &none, NULL);
    execve(argv[0], argv, envp);
    child_write("postmap: fatal: execute ");
    child_write(argv[0]);
    child_write(": ");
    child_write(strerror(errno));
    child_write("\n");
    _exit(127);
}

/* Pick the line of postmap's stderr that says what went wrong. */
static char *
postmap_error_text(const char *err, size_t len)
{
    const char *line, *end, *pick = NULL, *fallback = NULL, *p;
    size_t pick_len = 0, fallback_len = 0;
    char buf[LOG_CLEAN_BUFSIZE];

    for (line = err; line < err + len; line = end + 1) {
        if ((end = memchr(line, '\n', (size_t) (err + len - line))) == NULL)
            end = err + len;
        if (end > line) {
            fallback = line;
            fallback_len = (size_t) (end - line);
        }
        if (pick == NULL && ((p = memmem(line, (size_t) (end - line), "fatal: ", 7)) != NULL
                             || (p = memmem(line, (size_t) (end - line), "panic: ", 7)) != NULL)) {
            /* Drop the "postmap: fatal: " prefix: the text after it says it all. */
            pick = p + 7;
            pick_len = (size_t) (end - pick);
        }
    }
    if (pick == NULL) {
        pick = fallback;
        pick_len = fallback_len;
    }
    if (pick == NULL)
        return NULL;
    return x_strdup(log_clean(buf, sizeof(buf), pick, pick_len));
}

static int
has_fatal(const char *err, size_t len)
{
    return memmem(err, len, "fatal: ", 7) != NULL || memmem(err, len, "panic: ", 7) != NULL;
}

/* Kill and reap the child; used on timeout and on over-long output. */
static void
postmap_kill(pid_t pid)
{
    (void) kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        continue;
}

static int
postmap_lookup(struct map_table *tab, const char *key, char **value_r, char **error_r)
{
    static const char *const default_path = "/usr/sbin:/usr/bin:/sbin:/bin";
    const char *path = getenv("PATH");
    char *env_path, *argv[7], *envp[2];
    char *out = NULL, err[MAPS_STDERR_MAX];
    size_t out_len = 0, err_len = 0;
    int out_p[2] = { -1, -1 }, err_p[2] = { -1, -1 }, devnull = -1;
    int64_t deadline = now_ms() + (int64_t) maps_postmap_timeout * 1000;
    int status = MAP_ERROR, wstatus = 0, too_long = 0, timed_out = 0;
    pid_t pid, got;

    if (var_postmap_path == NULL || *var_postmap_path == 0) {
        *error_r = x_asprintf("%s: postmap_path is empty", tab->spec);
        return MAP_ERROR;
    }
    env_path = x_asprintf("PATH=%s", path && *path ? path : default_path);
    argv[0] = var_postmap_path;
    argv[1] = "-c";
    argv[2] = var_postfix_config_dir && *var_postfix_config_dir
        ? var_postfix_config_dir : "/etc/postfix";
    argv[3] = "-q";
    argv[4] = (char *) key;
    argv[5] = tab->spec;
    argv[6] = NULL;
    envp[0] = env_path;
    envp[1] = NULL;

    if ((devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0
        || pipe2(out_p, O_CLOEXEC) < 0 || pipe2(err_p, O_CLOEXEC) < 0) {
        *error_r = x_asprintf("%s: cannot run postmap: %s", tab->spec, strerror(errno));
        goto done;
    }
    if ((pid = fork()) < 0) {
        *error_r = x_asprintf("%s: cannot run postmap: fork: %s", tab->spec, strerror(errno));
        goto done;
    }
    if (pid == 0)
        postmap_child(devnull, out_p[1], err_p[1], argv, envp);
    (void) close(out_p[1]);
    (void) close(err_p[1]);
    (void) close(devnull);
    out_p[1] = err_p[1] = devnull = -1;

    /* Read both pipes to EOF, each with its own bound, within the deadline. */
    out = x_malloc(MAPS_VALUE_MAX + 2);
    while (out_p[0] >= 0 || err_p[0] >= 0) {
        struct pollfd pfd[2];
        int64_t left = deadline - now_ms();
        int n, i;

        if (left <= 0) {
            timed_out = 1;
            break;
        }
        pfd[0].fd = out_p[0];
        pfd[0].events = POLLIN;
        pfd[1].fd = err_p[0];
        pfd[1].events = POLLIN;
        if ((n = poll(pfd, 2, (int) left)) < 0) {
            if (errno == EINTR)
                continue;
            *error_r = x_asprintf("%s: postmap: poll: %s", tab->spec, strerror(errno));
            postmap_kill(pid);
            goto done;
        }
        for (i = 0; i < 2; i++) {
            char junk[4096], *dst;
            size_t room;
            ssize_t got_len;
            int *fdp = i == 0 ? &out_p[0] : &err_p[0];

            if (*fdp < 0 || pfd[i].revents == 0)
                continue;
            if (i == 0) {
                /* One byte more than allowed (plus newline) reveals an over-long value. */
                dst = out + out_len;
                room = MAPS_VALUE_MAX + 2 - out_len;
            } else if (err_len < sizeof(err)) {
                dst = err + err_len;
                room = sizeof(err) - err_len;
            } else {
                /* Keep draining so postmap never blocks on a full stderr pipe. */
                dst = junk;
                room = sizeof(junk);
            }
            got_len = read(*fdp, dst, room);
            if (got_len < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (got_len <= 0) {
                (void) close(*fdp);
                *fdp = -1;
                continue;
            }
            if (i == 0) {
                out_len += (size_t) got_len;
                if (out_len > MAPS_VALUE_MAX + 1) {
                    too_long = 1;
                    break;
                }
            } else if (dst != junk) {
                err_len += (size_t) got_len;
            }
        }
        if (too_long)
            break;
    }
    if (timed_out || too_long) {
        postmap_kill(pid);
        if (timed_out)
            *error_r = x_asprintf("%s: postmap -q did not finish within %d seconds",
                                  tab->spec, maps_postmap_timeout);
        else
            *error_r = x_asprintf("%s: postmap -q result longer than %d bytes",
                                  tab->spec, MAPS_VALUE_MAX);
        goto done;
    }

    /* Both pipes are closed: the child is exiting; still bound the wait. */
    for (;;) {
        got = waitpid(pid, &wstatus, WNOHANG);
        if (got == pid)
            break;
        if (got < 0 && errno != EINTR) {
            /* ECHILD: the caller set SIGCHLD to SIG_IGN and lost the status. */
            *error_r = x_asprintf("%s: postmap: waitpid: %s", tab->spec, strerror(errno));
            goto done;
        }
        if (now_ms() >= deadline) {
            postmap_kill(pid);
            *error_r = x_asprintf("%s: postmap -q did not finish within %d seconds",
                                  tab->spec, maps_postmap_timeout);
            goto done;
        }
        if (got == 0)
            sleep_ms(1);
    }

    if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
        if (out_len > 0 && out[out_len - 1] == '\n')
            out_len--;
        if (out_len > MAPS_VALUE_MAX) {
            *error_r = x_asprintf("%s: postmap -q result longer than %d bytes",
                                  tab->spec, MAPS_VALUE_MAX);
            goto done;
        }
        *value_r = x_strndup(out, out_len);
        status = MAP_FOUND;
    } else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 1
               && !has_fatal(err, err_len)) {
        /* Exit 1 without a fatal error is postmap's "not found". */
        status = MAP_NOTFOUND;
    } else {
        char *why = postmap_error_text(err, err_len);

        if (why != NULL)
            *error_r = x_asprintf("%s: lookup failed: %s", tab->spec, why);
        else if (WIFSIGNALED(wstatus))
            *error_r = x_asprintf("%s: postmap -q killed by signal %d", tab->spec,
                                  WTERMSIG(wstatus));
        else
            *error_r = x_asprintf("%s: postmap -q exit status %d", tab->spec,
                                  WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1);
        free(why);
    }

done:
    free(out);
    free(env_path);
    if (devnull >= 0)
        (void) close(devnull);
    for (int i = 0; i < 2; i++) {
        if (out_p[i] >= 0)
            (void) close(out_p[i]);
        if (err_p[i] >= 0)
            (void) close(err_p[i]);
    }
    return status;
}

/*
 * The list.
 */

/* Check "type:name" and fill in tab; 0, or -1 with *error_r. */
static int
table_init(struct map_table *tab, const char *entry, char **error_r)
{
    const char *colon = strchr(entry, ':');
    const char *p;

    memset(tab, 0, sizeof(*tab));
    tab->lock_fd = -1;
    if (colon == NULL || colon == entry) {
        *error_r = x_asprintf("map \"%s\": missing table type (expected type:name,"
                              " e.g. hash:%s)", entry, entry);
        return -1;
    }
    for (p = entry; p < colon; p++) {
        if (!isalnum((unsigned char) *p) && *p != '_' && *p != '-') {
            *error_r = x_asprintf("map \"%s\": bad table type (expected type:name)", entry);
            return -1;
        }
    }
    if (colon[1] == 0) {
        *error_r = x_asprintf("map \"%s\": missing table name after the type", entry);
        return -1;
    }
    tab->spec = x_strdup(entry);
    if (strncmp(entry, "hash:", 5) == 0 || strncmp(entry, "btree:", 6) == 0) {
        tab->kind = MAP_KIND_DB;
        tab->db_type = entry[0] == 'h' ? DB_HASH : DB_BTREE;
        tab->db_path = x_asprintf("%s.db", colon + 1);
    } else {
        tab->kind = MAP_KIND_POSTMAP;
    }
    return 0;
}

static void
table_free(struct map_table *tab)
{
    db_table_close(tab);
    free(tab->spec);
    free(tab->db_path);
}

MAPS *
maps_open(const char *list, char **error_r)
{
    MAPS *maps = x_calloc(1, sizeof(*maps));
    const char *p, *start;
    size_t cap = 0;

    *error_r = NULL;
    maps->title = x_strdup(list ? list : "");
    for (p = maps->title; *p != 0;) {
        int depth = 0;
        char *entry;

        while (*p != 0 && is_sep((unsigned char) *p))
            p++;
        if (*p == 0)
            break;
        /* inline:{ a=b, c=d } carries separators inside its braces. */
        for (start = p; *p != 0 && (depth > 0 || !is_sep((unsigned char) *p)); p++) {
            if (*p == '{')
                depth++;
            else if (*p == '}' && depth > 0)
                depth--;
        }
        entry = x_strndup(start, (size_t) (p - start));
        if (depth > 0) {
            *error_r = x_asprintf("map \"%s\": missing '}'", entry);
            free(entry);
            maps_close(&maps);
            return NULL;
        }
        if (maps->count == cap) {
            cap = cap ? cap * 2 : 4;
            maps->tabs = x_realloc(maps->tabs, cap * sizeof(*maps->tabs));
        }
        if (table_init(&maps->tabs[maps->count], entry, error_r) < 0) {
            free(entry);
            maps_close(&maps);
            return NULL;
        }
        maps->count++;
        free(entry);
    }

    /*
     * Open native tables now so a working setup costs nothing at the first
     * lookup; a failure here (file not made yet) is retried by each lookup.
     */
    for (size_t i = 0; i < maps->count; i++) {
        char *ignore = NULL;

        if (maps->tabs[i].kind == MAP_KIND_DB && db_table_open(&maps->tabs[i], &ignore) < 0)
            free(ignore);
    }
    return maps;
}

int
maps_lookup(MAPS *maps, const char *key, char **value_r, char **error_r)
{
    char *lkey;
    int status = MAP_NOTFOUND;

    *value_r = NULL;
    *error_r = NULL;
    if (maps == NULL || maps->count == 0)
        return MAP_NOTFOUND;
    lkey = str_lower(x_strdup(key));
    for (size_t i = 0; i < maps->count; i++) {
        struct map_table *tab = &maps->tabs[i];

        if (tab->kind == MAP_KIND_DB)
            status = db_table_lookup(tab, lkey, value_r, error_r);
        else
            status = postmap_lookup(tab, lkey, value_r, error_r);
        /* Like Postfix: a failing table ends the search; never "not found". */
        if (status != MAP_NOTFOUND)
            break;
    }
    free(lkey);
    return status;
}

const char *
maps_title(const MAPS *maps)
{
    return maps ? maps->title : "";
}

void
maps_close(MAPS **mapsp)
{
    MAPS *maps = *mapsp;

    if (maps == NULL)
        return;
    for (size_t i = 0; i < maps->count; i++)
        table_free(&maps->tabs[i]);
    free(maps->tabs);
    free(maps->title);
    free(maps);
    *mapsp = NULL;
}

int
maps_split(const char *value, void (*fn)(const char *token, void *ctx), void *ctx)
{
    char *copy, *p, *start;
    int count = 0;

    if (value == NULL)
        return 0;
    copy = x_strdup(value);
    for (p = copy; *p != 0;) {
        while (*p != 0 && is_sep((unsigned char) *p))
            p++;
        if (*p == 0)
            break;
        for (start = p; *p != 0 && !is_sep((unsigned char) *p); p++)
            continue;
        if (*p != 0)
            *p++ = 0;
        count++;
        if (fn != NULL)
            fn(start, ctx);
    }
    free(copy);
    return count;
}

struct contains_ctx {
    const char *name;
    int found;
};

static void
contains_one(const char *token, void *ctx)
{
    struct contains_ctx *cc = ctx;

    if (str_casecmp(token, cc->name) == 0)
        cc->found = 1;
}

int
maps_list_contains(const char *value, const char *name)
{
    struct contains_ctx cc;

    if (value == NULL || name == NULL || *name == 0)
        return 0;
    cc.name = name;
    cc.found = 0;
    (void) maps_split(value, contains_one, &cc);
    return cc.found;
}
