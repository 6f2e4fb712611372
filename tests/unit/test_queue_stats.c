/*
 * test_queue_stats.c - the kept queue figures (src/lib/queue_stats.c)
 * against a full recount of the queue files: under random churn (store,
 * partial and full flushes, delete, expiry, bounce), after processes
 * killed at the queue's fault points and between a flush's marks and its
 * commit, and after reindex; collection records and their survival
 * across reindex.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "queue.h"
#include "queue_stats.h"
#include "util.h"

#define NDOMAINS 5
static const char *const domains[NDOMAINS] = {"a.example", "b.example", "c.example",
                                              "d.example", "e.example"};

typedef struct {
    char dir[64];
    char qdir[96];
    uint64_t rng;
} T;

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int
setup(void **state)
{
    T *t = x_calloc(1, sizeof(*t));

    str_copy(t->dir, "/tmp/test_queue_stats.XXXXXX", sizeof(t->dir));
    if (mkdtemp(t->dir) == NULL)
        return -1;
    (void) str_format(t->qdir, sizeof(t->qdir), "%s/q", t->dir);
    var_index_sync = 0; /* speed; the order of operations is the same */
    var_lock_timeout = 10;
    var_test_fault_point = "";
    t->rng = 0x9E3779B97F4A7C15ULL;
    *state = t;
    return 0;
}

static int
teardown(void **state)
{
    T *t = *state;

    (void) nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(t);
    return 0;
}

static unsigned
rnd(T *t, unsigned n)
{
    t->rng ^= t->rng << 13;
    t->rng ^= t->rng >> 7;
    t->rng ^= t->rng << 17;
    return (unsigned) (t->rng >> 33) % n;
}

static QUEUE *
open_q(T *t)
{
    char *error = NULL;
    QUEUE *q = queue_open(t->qdir, QUEUE_OPEN_CREATE, &error);

    if (q == NULL)
        fail_msg("queue_open: %s", error);
    return q;
}

/* A message of 1-4 recipients over random domains. 0 or -1. */
static int
store_random(T *t, QUEUE *q, char *id_r)
{
    QUEUE_RCPT r[4];
    QUEUE_ENV env;
    QUEUE_WRITER *w;
    char addr[4][64], content[256], *error = NULL;
    size_t n = 1 + rnd(t, 4), len;

    memset(&env, 0, sizeof(env));
    memset(r, 0, sizeof(r));
    env.sender = "s@x.example";
    for (size_t i = 0; i < n; i++) {
        (void) str_format(addr[i], sizeof(addr[i]), "u%zu@%s", i, domains[rnd(t, NDOMAINS)]);
        r[i].address = addr[i];
        r[i].status = QUEUE_RCPT_QUEUED;
    }
    env.rcpt = r;
    env.rcpt_count = n;
    len = (size_t) str_format(content, sizeof(content), "Subject: %u\r\n\r\n%*s\r\n",
                              rnd(t, 1000), (int) (1 + rnd(t, 200)), "x");
    len = strlen(content);
    if ((w = queue_writer_begin(q, &env, &error)) == NULL)
        fail_msg("queue_writer_begin: %s", error);
    assert_int_equal(queue_writer_write(w, content, len), 0);
    if (queue_writer_commit(&w, id_r, &error) < 0) {
        free(error);
        return -1;
    }
    return 0;
}

/* ---- the recount ------------------------------------------------------------ */

typedef struct {
    unsigned long long messages, recipients, bytes;
    char oldest[QUEUE_ID_LEN + 1];
} FIG;

typedef struct {
    QUEUE *q;
    FIG fig[NDOMAINS];
    int indexed_only; /* count only (domain, file) pairs the index lists */
    size_t orphans;   /* files with queued recipients the index lacks */
} RECOUNT;

static int
domain_index(const char *d)
{
    for (int i = 0; i < NDOMAINS; i++)
        if (str_casecmp(d, domains[i]) == 0)
            return i;
    return -1;
}

static int
indexed(QUEUE *q, const char *domain, const char *id)
{
    char **ids = NULL, *error = NULL;
    ssize_t n = queue_domain_ids(q, domain, &ids, &error);
    int found = 0;

    assert_true(n >= 0);
    for (ssize_t i = 0; i < n; i++)
        found |= strcmp(ids[i], id) == 0;
    queue_ids_free(&ids, (size_t) n);
    return found;
}

static int
recount_one(const char *id, void *ctx)
{
    RECOUNT *r = ctx;
    char *error = NULL;
    QUEUE_FILE *f = queue_file_open(r->q, id, 0, &error);
    const QUEUE_ENV *env;
    unsigned q[NDOMAINS] = {0};
    int orphan = 0;

    if (f == NULL) {
        free(error);
        return 0;
    }
    env = queue_file_env(f);
    for (size_t i = 0; i < env->rcpt_count; i++) {
        const char *d = addr_domain(env->rcpt[i].address);

        if (env->rcpt[i].status == QUEUE_RCPT_QUEUED && d != NULL && domain_index(d) >= 0)
            q[domain_index(d)]++;
    }
    for (int d = 0; d < NDOMAINS; d++) {
        if (q[d] == 0)
            continue;
        if (r->indexed_only && !indexed(r->q, domains[d], id)) {
            orphan = 1;
            continue;
        }
        r->fig[d].messages++;
        r->fig[d].recipients += q[d];
        r->fig[d].bytes += (unsigned long long) env->content_length;
        if (r->fig[d].oldest[0] == 0 || strcmp(id, r->fig[d].oldest) < 0)
            str_copy(r->fig[d].oldest, id, sizeof(r->fig[d].oldest));
    }
    r->orphans += orphan;
    queue_file_close(&f);
    return 0;
}

/* The kept figures equal the recount; returns the orphans seen. */
static size_t
check_figures(QUEUE *q, int indexed_only, const char *when)
{
    RECOUNT r;
    QUEUE_FIGURES *list = NULL;
    size_t n = 0;
    char *error = NULL;
    int built = 0;
    FIG kept[NDOMAINS];

    memset(&r, 0, sizeof(r));
    memset(kept, 0, sizeof(kept));
    r.q = q;
    r.indexed_only = indexed_only;
    assert_int_equal(queue_walk_files(q, recount_one, &r, &error), 0);
    if (queue_figures_all(q, &list, &n, NULL, &built, &error) < 0)
        fail_msg("queue_figures_all: %s", error);
    assert_true(built);
    for (size_t i = 0; i < n; i++) {
        int d = domain_index(list[i].domain);

        assert_true(d >= 0);
        kept[d].messages = list[i].messages;
        kept[d].recipients = list[i].recipients;
        kept[d].bytes = list[i].bytes;
        str_copy(kept[d].oldest, list[i].oldest_id, sizeof(kept[d].oldest));
    }
    free(list);
    for (int d = 0; d < NDOMAINS; d++) {
        if (memcmp(&kept[d], &r.fig[d], sizeof(FIG)) != 0)
            fail_msg("%s: %s: kept %llu/%llu/%llu %s, files %llu/%llu/%llu %s", when,
                     domains[d], kept[d].messages, kept[d].recipients, kept[d].bytes,
                     kept[d].oldest, r.fig[d].messages, r.fig[d].recipients, r.fig[d].bytes,
                     r.fig[d].oldest);
        /* O(1) for one domain: the same answer. */
        {
            QUEUE_FIGURES one;
            int found = queue_figures_domain(q, domains[d], &one, NULL, &error);

            assert_int_equal(found, kept[d].messages > 0);
            if (found)
                assert_true(one.messages == kept[d].messages
                            && one.recipients == kept[d].recipients
                            && one.bytes == kept[d].bytes);
        }
    }
    return r.orphans;
}

/* ---- churn -------------------------------------------------------------------- */

/* A flush of one domain: each queued recipient of it delivered (2 in 4),
 * deferred (1 in 4) or failed (1 in 4); the domain done with each file.
 * sync: commit at the end (else the caller does, or the process dies). */
static void
flush_domain(T *t, QUEUE *q, const char *domain, int sync)
{
    char **ids = NULL, *error = NULL;
    ssize_t n = queue_domain_ids(q, domain, &ids, &error);

    assert_true(n >= 0);
    for (ssize_t i = 0; i < n; i++) {
        QUEUE_FILE *f = queue_file_open(q, ids[i], 1, &error);
        const QUEUE_ENV *env;

        if (f == NULL) {
            x_free(&error);
            if (errno == ENOENT)
                assert_int_equal(queue_index_drop(q, domain, ids[i], &error), 0);
            continue;
        }
        env = queue_file_env(f);
        for (size_t k = 0; k < env->rcpt_count; k++) {
            const char *d = addr_domain(env->rcpt[k].address);
            unsigned r = rnd(t, 4);

            if (env->rcpt[k].status != QUEUE_RCPT_QUEUED || str_casecmp(d, domain) != 0
                || r == 3)
                continue;
            assert_int_equal(queue_file_mark(f, k, r == 2 ? QUEUE_RCPT_FAILED
                                                          : QUEUE_RCPT_DELIVERED,
                                             r == 2 ? "550 no" : NULL),
                             0);
        }
        assert_int_equal(queue_file_done(q, &f, domain, &error), 0);
    }
    queue_ids_free(&ids, (size_t) n);
    if (sync)
        assert_int_equal(queue_sync(q, &error), 0);
}

static void
random_delete(T *t, QUEUE *q)
{
    char **ids = NULL, *error = NULL;
    ssize_t n = queue_domain_ids(q, domains[rnd(t, NDOMAINS)], &ids, &error);

    if (n > 0 && queue_delete(q, ids[rnd(t, (unsigned) n)], &error) < 0)
        x_free(&error);
    queue_ids_free(&ids, (size_t) n);
}

/* Expiry's bookkeeping as notice.c does it: every queued recipient of the
 * message fails, then each of its domains is done with it. */
static void
random_expire(T *t, QUEUE *q)
{
    char **ids = NULL, *error = NULL, **doms = NULL, id[QUEUE_ID_LEN + 1];
    ssize_t n = queue_domain_ids(q, domains[rnd(t, NDOMAINS)], &ids, &error);
    QUEUE_FILE *f;
    size_t nd;

    if (n <= 0) {
        queue_ids_free(&ids, n > 0 ? (size_t) n : 0);
        return;
    }
    str_copy(id, ids[0], sizeof(id)); /* the oldest */
    queue_ids_free(&ids, (size_t) n);
    if ((f = queue_file_open(q, id, 1, &error)) == NULL) {
        x_free(&error);
        return;
    }
    nd = queue_env_domains(queue_file_env(f), 1, &doms);
    for (size_t k = 0; k < queue_file_env(f)->rcpt_count; k++)
        if (queue_file_env(f)->rcpt[k].status == QUEUE_RCPT_QUEUED)
            assert_int_equal(queue_file_mark(f, k, QUEUE_RCPT_FAILED, "expired"), 0);
    queue_file_close(&f);
    for (size_t j = 0; j < nd; j++) {
        if ((f = queue_file_open(q, id, 1, &error)) == NULL) {
            x_free(&error);
            break;
        }
        assert_int_equal(queue_file_done(q, &f, doms[j], &error), 0);
    }
    queue_strings_free(&doms, nd);
    assert_int_equal(queue_sync(q, &error), 0);
}

static void
test_churn(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    char id[QUEUE_ID_LEN + 1], *error = NULL, when[64];
    size_t files, entries, damaged;

    check_figures(q, 0, "empty");
    for (int step = 0; step < 400; step++) {
        unsigned op = rnd(t, 10);

        if (op < 5)
            assert_int_equal(store_random(t, q, id), 0);
        else if (op < 7)
            flush_domain(t, q, domains[rnd(t, NDOMAINS)], 1);
        else if (op < 8)
            random_delete(t, q);
        else
            random_expire(t, q);
        (void) str_format(when, sizeof(when), "step %d op %u", step, op);
        if (step % 10 == 0 || step > 390)
            check_figures(q, 0, when);
    }
    check_figures(q, 0, "end");
    /* reindex restores them from scratch. */
    assert_int_equal(queue_reindex(q, &files, &entries, &damaged, &error), 0);
    check_figures(q, 0, "reindex");
    queue_close(&q);
}

/* A child that stores (or flushes without the commit) and is killed. */
static void
killed_child(T *t, const char *point, int flush_then_die)
{
    pid_t pid = fork();
    int status;

    assert_true(pid >= 0);
    if (pid == 0) {
        QUEUE *q;
        char id[QUEUE_ID_LEN + 1];

        /* open-locked is passed while the environment is opened. */
        if (strcmp(point, "open-locked") == 0)
            var_test_fault_point = (char *) point;
        q = open_q(t);
        if (flush_then_die) {
            /* Marks written, removals batched, killed before queue_sync. */
            flush_domain(t, q, domains[rnd(t, NDOMAINS)], 0);
            (void) kill(getpid(), SIGKILL);
        }
        var_test_fault_point = (char *) point;
        if (strcmp(point, "log-flush") == 0)
            var_index_sync = 1; /* the point is on the durable path only */
        (void) store_random(t, q, id);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    /* The point was reached: the child did not finish its store. */
    if (!flush_then_die && point[0] != 0)
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    t->rng ^= (uint64_t) pid; /* the child's draws are not ours */
    (void) rnd(t, 2);
}

static void
test_faults(void **state)
{
    T *t = *state;
    static const char *const points[] = {"before-fsync", "after-fsync", "after-rename",
                                         "index-txn",    "after-index", "open-locked",
                                         "log-flush"};
    char id[QUEUE_ID_LEN + 1], *error = NULL, when[64];
    size_t files, entries, damaged;
    QUEUE *q = open_q(t);

    for (int i = 0; i < 30; i++)
        assert_int_equal(store_random(t, q, id), 0);
    queue_close(&q);
    for (int round = 0; round < 24; round++) {
        const char *point = points[round % ODMR_ARRAY_LEN(points)];

        killed_child(t, point, 0);
        q = open_q(t);
        (void) str_format(when, sizeof(when), "killed at %s", point);
        /* The figures mirror the index; a killed store's file is an orphan
         * the index does not list (no 250 was given) until reindex. */
        check_figures(q, 1, when);
        if (round % 4 == 3) {
            assert_int_equal(queue_reindex(q, &files, &entries, &damaged, &error), 0);
            assert_int_equal(check_figures(q, 0, "reindex after faults"), 0);
        }
        flush_domain(t, q, domains[rnd(t, NDOMAINS)], 1);
        assert_int_equal(store_random(t, q, id), 0);
        queue_close(&q);
    }
    /* Killed between a flush's marks and its batched commit: the marks
     * are in the files, the removals and recounts never committed. The
     * index still lists those entries; the next flush of each domain
     * takes back exactly what they counted. */
    for (int round = 0; round < 6; round++) {
        killed_child(t, "", 1);
        q = open_q(t);
        for (int d = 0; d < NDOMAINS; d++)
            flush_domain(t, q, domains[d], 1);
        check_figures(q, 1, "after a flush killed before its commit");
        queue_close(&q);
    }
    q = open_q(t);
    assert_int_equal(queue_reindex(q, &files, &entries, &damaged, &error), 0);
    assert_int_equal(check_figures(q, 0, "final reindex"), 0);
    queue_close(&q);
}

static void
test_collect(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    QUEUE_COLLECT_RESULT r[2] = {{"A.example", 3, 1, 0, NULL},
                                 {"b.example", 0, 2, 1, "customer's MTA answered 451"}};
    QUEUE_COLLECT_RESULT u = {"cust1", 3, 3, 1, "customer's MTA answered 451"};
    QUEUE_COLLECT c;
    char *error = NULL, id[QUEUE_ID_LEN + 1];
    size_t files, entries, damaged;

    assert_int_equal(queue_collect_get(q, "a.example", 0, &c, &error), 0);
    assert_int_equal(queue_collect_record(q, 1000, 1010, r, 2, &u, &error), 0);
    r[0].delivered = 2;
    r[1].failure = NULL;
    assert_int_equal(queue_collect_record(q, 2000, 2010, r, 2, NULL, &error), 0);
    assert_int_equal(queue_collect_get(q, "a.EXAMPLE", 0, &c, &error), 1);
    assert_int_equal(c.last_atrn, 2000);
    assert_int_equal(c.delivered, 2);
    assert_int_equal(c.delivered_total, 5);
    assert_int_equal(c.deferred_total, 2);
    assert_string_equal(c.failure, "");
    assert_int_equal(queue_collect_get(q, "b.example", 0, &c, &error), 1);
    assert_int_equal(c.failure_time, 1010); /* the last failure stays */
    assert_string_equal(c.failure, "customer's MTA answered 451");
    assert_int_equal(c.bounced_total, 2);
    assert_int_equal(queue_collect_get(q, "cust1", 1, &c, &error), 1);
    assert_int_equal(c.last_atrn, 1000);
    assert_int_equal(queue_collect_get(q, "cust1", 0, &c, &error), 0);
    /* Collections survive reindex. */
    assert_int_equal(store_random(t, q, id), 0);
    assert_int_equal(queue_reindex(q, &files, &entries, &damaged, &error), 0);
    assert_int_equal(queue_collect_get(q, "a.example", 0, &c, &error), 1);
    assert_int_equal(c.delivered_total, 5);
    assert_int_equal(queue_collect_get(q, "cust1", 1, &c, &error), 1);
    check_figures(q, 0, "collections and reindex");
    queue_close(&q);
}

/* The oldest of a list: by ID, which orders arrivals within one second. */
static void
test_oldest(void **state)
{
    QUEUE_FIGURES f[3];

    (void) state;
    memset(f, 0, sizeof(f));
    assert_null(queue_figures_oldest(f, 3));
    str_copy(f[0].domain, "a.example", sizeof(f[0].domain));
    str_copy(f[0].oldest_id, "0661ED428F5CDD82F0", sizeof(f[0].oldest_id));
    f[0].oldest = 1000;
    str_copy(f[2].domain, "c.example", sizeof(f[2].domain));
    str_copy(f[2].oldest_id, "0661ED428F5CDD82E7", sizeof(f[2].oldest_id));
    f[2].oldest = 1000;
    assert_ptr_equal(queue_figures_oldest(f, 3), &f[2]);
    assert_ptr_equal(queue_figures_oldest(f, 1), &f[0]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_churn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_collect, setup, teardown),
        cmocka_unit_test(test_oldest),
    };

    msg_init("test_queue_stats", MSG_STDERR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
