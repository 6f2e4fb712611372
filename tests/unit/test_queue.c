/*
 * test_queue.c - unit tests for the hold queue (src/lib/queue*.c): file
 * format round trip, index, flush bookkeeping, reindex, damaged files,
 * concurrent writers, domain locks, and crashes at every fault point.
 * Each test works in its own mkdtemp() directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "queue.h"
#include "queue_private.h"
#include "util.h"

typedef struct {
    char dir[64];
    char qdir[96];
} T;

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void
rm_rf(const char *path)
{
    (void) nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int
setup(void **state)
{
    T *t = x_calloc(1, sizeof(*t));

    str_copy(t->dir, "/tmp/test_queue.XXXXXX", sizeof(t->dir));
    if (mkdtemp(t->dir) == NULL)
        return -1;
    (void) str_format(t->qdir, sizeof(t->qdir), "%s/q", t->dir);
    var_index_sync = 1;
    var_lock_timeout = 10;
    var_test_fault_point = "";
    *state = t;
    return 0;
}

static int
teardown(void **state)
{
    T *t = *state;

    rm_rf(t->dir);
    free(t);
    return 0;
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

/* Store one message; returns 0 and the ID, or -1. */
static int
store(QUEUE *q, const char *sender, const char *const *rcpts, size_t n, const char *content,
      size_t len, char *id_r)
{
    QUEUE_RCPT r[16];
    QUEUE_ENV env;
    QUEUE_WRITER *w;
    char *error = NULL;

    memset(&env, 0, sizeof(env));
    memset(r, 0, sizeof(r));
    env.sender = (char *) sender;
    env.size = (long long) len;
    for (size_t i = 0; i < n; i++) {
        r[i].address = (char *) rcpts[i];
        r[i].status = QUEUE_RCPT_QUEUED;
    }
    env.rcpt = r;
    env.rcpt_count = n;
    if ((w = queue_writer_begin(q, &env, &error)) == NULL) {
        free(error);
        return -1;
    }
    if (queue_writer_write(w, content, len) < 0) {
        queue_writer_abort(&w);
        return -1;
    }
    if (queue_writer_commit(&w, id_r, &error) < 0) {
        free(error);
        return -1;
    }
    return 0;
}

static ssize_t
count_ids(QUEUE *q, const char *domain)
{
    char **ids = NULL;
    char *error = NULL;
    ssize_t n = queue_domain_ids(q, domain, &ids, &error);

    if (n < 0)
        fail_msg("queue_domain_ids: %s", error);
    queue_ids_free(&ids, (size_t) n);
    return n;
}

static int
count_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static int
count_incoming(T *t)
{
    char path[4096];

    snprintf(path, sizeof(path), "%s/incoming", t->qdir);
    return count_dir(path);
}

static int
count_file_cb(const char *id, void *ctx)
{
    (*(int *) ctx)++;
    return 0;
}

static int
count_files(QUEUE *q)
{
    int n = 0;
    char *error = NULL;

    assert_int_equal(queue_walk_files(q, count_file_cb, &n, &error), 0);
    return n;
}

static void
msg_path(const T *t, const char *id, char *buf, size_t size)
{
    assert_int_equal(str_format(buf, size, "%s/msg/%c%c/%s", t->qdir, id[QUEUE_ID_LEN - 2],
                                id[QUEUE_ID_LEN - 1], id),
                     0);
}

static const char content1[] = "Subject: test\r\n\r\nline one\r\n..dot stuffed\r\nlast\r\n";

/* ---- tests ---------------------------------------------------------------- */

static void
test_roundtrip(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    QUEUE_RCPT r[3];
    QUEUE_ENV env;
    QUEUE_WRITER *w;
    QUEUE_FILE *f;
    const QUEUE_ENV *e;
    char id[QUEUE_ID_LEN + 1], *error = NULL, *big, *back;
    size_t big_len = 200 * 1024 + 7;

    memset(&env, 0, sizeof(env));
    memset(r, 0, sizeof(r));
    env.sender = "";
    env.arrival_sec = 1700000000;
    env.arrival_usec = 42;
    env.size = 12345;
    env.envid = "QQ+2Bxx";
    env.ret = "HDRS";
    env.body = "8BITMIME";
    env.smtputf8 = 1;
    env.client = "mx.example.net[192.0.2.1]";
    env.helo = "mx.example.net";
    env.protocol = "LMTP";
    r[0].address = "User@Example.ORG";
    r[0].notify = "SUCCESS,DELAY";
    r[0].orcpt = "rfc822;User+2B@example.org";
    r[1].address = "\"two words\"@example.org";
    r[2].address = "x@other.example";
    r[2].notify = "NEVER";
    for (int i = 0; i < 3; i++)
        r[i].status = QUEUE_RCPT_QUEUED;
    env.rcpt = r;
    env.rcpt_count = 3;

    /* Bigger than the writer's buffer, written in odd pieces. */
    big = x_malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char) ('a' + i % 26);
    big[big_len - 2] = '\r';
    big[big_len - 1] = '\n';
    w = queue_writer_begin(q, &env, &error);
    assert_non_null(w);
    for (size_t off = 0; off < big_len;) {
        size_t n = off % 3 ? 1 : 40000;

        if (n > big_len - off)
            n = big_len - off;
        assert_int_equal(queue_writer_write(w, big + off, n), 0);
        off += n;
    }
    assert_int_equal(queue_writer_length(w), (long long) big_len);
    assert_int_equal(queue_writer_commit(&w, id, &error), 0);
    assert_null(w);
    assert_true(queue_id_valid(id));

    f = queue_file_open(q, id, 0, &error);
    if (f == NULL)
        fail_msg("open: %s", error);
    e = queue_file_env(f);
    assert_string_equal(e->id, id);
    assert_string_equal(e->sender, "");
    assert_int_equal(e->arrival_sec, 1700000000);
    assert_int_equal(e->arrival_usec, 42);
    assert_int_equal(e->size, 12345);
    assert_string_equal(e->envid, "QQ+2Bxx");
    assert_string_equal(e->ret, "HDRS");
    assert_string_equal(e->body, "8BITMIME");
    assert_int_equal(e->smtputf8, 1);
    assert_string_equal(e->client, "mx.example.net[192.0.2.1]");
    assert_string_equal(e->helo, "mx.example.net");
    assert_string_equal(e->protocol, "LMTP");
    assert_int_equal(e->rcpt_count, 3);
    assert_string_equal(e->rcpt[0].address, "User@Example.ORG");
    assert_string_equal(e->rcpt[0].notify, "SUCCESS,DELAY");
    assert_string_equal(e->rcpt[0].orcpt, "rfc822;User+2B@example.org");
    assert_string_equal(e->rcpt[1].address, "\"two words\"@example.org");
    assert_null(e->rcpt[1].notify);
    assert_null(e->rcpt[1].orcpt);
    assert_string_equal(e->rcpt[2].notify, "NEVER");
    for (int i = 0; i < 3; i++)
        assert_int_equal(e->rcpt[i].status, QUEUE_RCPT_QUEUED);
    assert_int_equal(e->content_length, (long long) big_len + 3);
    back = x_malloc(big_len + 3);
    assert_int_equal(pread(queue_file_fd(f), back, big_len + 3, e->content_offset),
                     (ssize_t) big_len + 3);
    assert_memory_equal(back, big, big_len);
    assert_memory_equal(back + big_len, ".\r\n", 3);
    queue_file_close(&f);
    assert_null(f);

    /* Small message, minimal envelope; content without a final CRLF gets
     * one so the file stays well-formed. */
    memset(&env, 0, sizeof(env));
    env.sender = "a@b.example";
    env.rcpt = r;
    env.rcpt_count = 1;
    w = queue_writer_begin(q, &env, &error);
    assert_non_null(w);
    assert_int_equal(queue_writer_write(w, "abc", 3), 0);
    assert_int_equal(queue_writer_commit(&w, id, &error), 0);
    f = queue_file_open(q, id, 0, &error);
    if (f == NULL)
        fail_msg("open: %s", error);
    e = queue_file_env(f);
    assert_null(e->envid);
    assert_null(e->client);
    assert_int_equal(e->smtputf8, 0);
    assert_true(e->arrival_sec > 1700000000);
    assert_int_equal(e->content_length, 8);
    assert_int_equal(pread(queue_file_fd(f), back, 8, e->content_offset), 8);
    assert_memory_equal(back, "abc\r\n.\r\n", 8);
    queue_file_close(&f);

    /* Empty content is just the dot. */
    w = queue_writer_begin(q, &env, &error);
    assert_non_null(w);
    assert_int_equal(queue_writer_commit(&w, id, &error), 0);
    f = queue_file_open(q, id, 0, &error);
    assert_non_null(f);
    assert_int_equal(queue_file_env(f)->content_length, 3);
    queue_file_close(&f);

    free(back);
    free(big);
    queue_close(&q);
    assert_null(q);
}

static void
test_bad_envelopes(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    const char *nodomain[] = {"user"};
    const char *baddomain[] = {"user@../../etc"};
    const char *crlf[] = {"a@b.example\r\nrcpt Q - - x@y.example"};
    char id[QUEUE_ID_LEN + 1];
    QUEUE_FILE *f;
    char *error = NULL;

    assert_int_equal(store(q, "s@x.example", nodomain, 1, "x\r\n", 3, id), -1);
    assert_int_equal(store(q, "s@x.example", baddomain, 1, "x\r\n", 3, id), -1);
    assert_int_equal(store(q, "s@x.example", crlf, 1, "x\r\n", 3, id), -1);
    assert_int_equal(store(q, "s@x.example\n", crlf + 0, 0, "x\r\n", 3, id), -1);
    assert_int_equal(count_dir(t->qdir), 6); /* 5 subdirectories + format */
    assert_int_equal(count_files(q), 0);
    {
        char p[200];

        (void) str_format(p, sizeof(p), "%s/incoming", t->qdir);
        assert_int_equal(count_dir(p), 0);
    }
    f = queue_file_open(q, "../../etc/passwd", 0, &error);
    assert_null(f);
    assert_int_equal(errno, EINVAL);
    free(error);
    queue_close(&q);
}

static void
test_multi_domain_index(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    const char *rcpts[] = {"a@One.Example", "b@two.example", "c@ONE.example"};
    char id[QUEUE_ID_LEN + 1], **ids = NULL, *error = NULL;
    ssize_t n;

    assert_int_equal(store(q, "s@x.example", rcpts, 3, content1, strlen(content1), id), 0);
    n = queue_domain_ids(q, "one.example", &ids, &error);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], id);
    queue_ids_free(&ids, (size_t) n);
    assert_null(ids);
    assert_int_equal(count_ids(q, "TWO.example"), 1);
    assert_int_equal(count_ids(q, "three.example"), 0);
    assert_int_equal(queue_domain_has_mail(q, "two.EXAMPLE", &error), 1);
    assert_int_equal(queue_domain_has_mail(q, "three.example", &error), 0);
    queue_close(&q);
}

static void
test_oldest_first(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    const char *rcpts[] = {"a@order.example"};
    char want[20][QUEUE_ID_LEN + 1], **ids = NULL, *error = NULL;
    ssize_t n;

    for (int i = 0; i < 20; i++)
        assert_int_equal(store(q, "", rcpts, 1, content1, strlen(content1), want[i]), 0);
    n = queue_domain_ids(q, "order.example", &ids, &error);
    assert_int_equal(n, 20);
    for (int i = 0; i < 20; i++)
        assert_string_equal(ids[i], want[i]);
    queue_ids_free(&ids, (size_t) n);
    queue_close(&q);
}

static int
walk_cb(const char *domain, size_t count, void *ctx)
{
    char *buf = ctx;
    size_t len = strlen(buf);

    (void) str_format(buf + len, 512 - len, "%s=%zu;", domain, count);
    return 0;
}

static void
test_mark_done(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    const char *rcpts[] = {"a@one.example", "b@two.example", "c@one.example"};
    char id[QUEUE_ID_LEN + 1], id2[QUEUE_ID_LEN + 1], path[256], walk[512] = "";
    char *error = NULL;
    QUEUE_FILE *f, *f2;
    struct stat st;

    assert_int_equal(store(q, "s@x.example", rcpts, 3, content1, strlen(content1), id), 0);
    assert_int_equal(store(q, "s@x.example", rcpts + 1, 1, content1, strlen(content1), id2), 0);
    assert_int_equal(queue_walk_domains(q, walk_cb, walk, &error), 0);
    assert_string_equal(walk, "one.example=1;two.example=2;");
    msg_path(t, id, path, sizeof(path));

    /* Flush of one.example: one delivered, one failed. */
    f = queue_file_open(q, id, 1, &error);
    assert_non_null(f);
    assert_int_equal(queue_file_mark(f, 0, QUEUE_RCPT_DELIVERED, NULL), 0);
    assert_int_equal(queue_file_mark(f, 2, QUEUE_RCPT_FAILED, "550 5.1.1 no\r\nsuch user"), 0);
    assert_int_equal(queue_file_done(q, &f, "ONE.example", &error), 0);
    assert_null(f);
    assert_int_equal(queue_sync(q, &error), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(count_ids(q, "one.example"), 0);
    assert_int_equal(count_ids(q, "two.example"), 2);
    {
        QUEUE_REASON *reasons = NULL;
        int warned = -1;

        /* The reason, cleaned of its CR LF, read back through the module. */
        f = queue_file_open(q, id, 0, &error);
        assert_non_null(f);
        assert_int_equal(queue_file_reasons(f, &reasons, &warned, &error), 0);
        assert_int_equal(warned, 0);
        assert_int_equal(reasons[0].event, 0);
        assert_int_equal(reasons[1].event, 0);
        assert_int_equal(reasons[2].event, QUEUE_EVENT_FAILED);
        assert_string_equal(reasons[2].dsn, "5.1.1");
        assert_string_equal(reasons[2].text, "no  such user");
        assert_null(reasons[2].relay);
        queue_reasons_free(&reasons, 3);
        queue_file_close(&f);
    }
    /* It owes a notice: on the notice list once the domain is done. */
    {
        char **ids = NULL;

        assert_int_equal(queue_notice_ids(q, &ids, &error), 1);
        assert_string_equal(ids[0], id);
        queue_ids_free(&ids, 1);
    }
    /* The marks are on disk. */
    f = queue_file_open(q, id, 0, &error);
    assert_non_null(f);
    assert_int_equal(queue_file_env(f)->rcpt[0].status, QUEUE_RCPT_DELIVERED);
    assert_int_equal(queue_file_env(f)->rcpt[1].status, QUEUE_RCPT_QUEUED);
    assert_int_equal(queue_file_env(f)->rcpt[2].status, QUEUE_RCPT_FAILED);
    queue_file_close(&f);

    /* Flush of two.example, but deferred: the entry stays. */
    f = queue_file_open(q, id, 1, &error);
    assert_non_null(f);
    assert_int_equal(queue_file_mark(f, 1, QUEUE_RCPT_QUEUED, "451 4.3.0 later"), 0);
    assert_int_equal(queue_file_done(q, &f, "two.example", &error), 0);
    assert_int_equal(queue_sync(q, &error), 0);
    assert_int_equal(count_ids(q, "two.example"), 2);
    assert_int_equal(stat(path, &st), 0);

    /* Two handles at once (two flushes): the other handle's stale view
     * must not keep the file alive; the on-disk bytes decide. */
    f = queue_file_open(q, id, 1, &error);
    f2 = queue_file_open(q, id, 1, &error);
    assert_non_null(f);
    assert_non_null(f2);
    assert_int_equal(queue_file_mark(f, 1, QUEUE_RCPT_DELIVERED, NULL), 0);
    assert_int_equal(queue_file_done(q, &f, "two.example", &error), 0);
    assert_int_equal(queue_sync(q, &error), 0);
    /* Nothing left to send, but recipient 2 failed: the file waits for its
     * bounce, out of the index, with its status file. */
    assert_int_equal(stat(path, &st), 0);
    queue_file_close(&f2);
    assert_int_equal(count_ids(q, "one.example"), 0);
    assert_int_equal(count_ids(q, "two.example"), 1);
    f = queue_file_open(q, id, 0, &error);
    assert_non_null(f);
    assert_int_equal(queue_env_owed(queue_file_env(f)), 1);
    queue_file_close(&f);
    {
        size_t files = 0, entries = 0, damaged = 0;

        /* reindex keeps it too, and does not index it. */
        assert_int_equal(queue_reindex(q, &files, &entries, &damaged, &error), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(count_ids(q, "one.example"), 0);
        assert_int_equal(count_ids(q, "two.example"), 1);
    }
    (void) str_format(path, sizeof(path), "%s/status/%s", t->qdir, id);
    assert_int_equal(stat(path, &st), 0);
    {
        char **ids = NULL;
        QUEUE_REASON r = {.event = QUEUE_EVENT_NOTIFIED, .time = 1, .text = "notice sent"};

        /* reindex rebuilt the notice list from the status bytes. */
        assert_int_equal(queue_notice_ids(q, &ids, &error), 1);
        queue_ids_free(&ids, 1);
        /* The notice went out: 'B', settled, the file and the list entry go. */
        f = queue_file_open(q, id, 1, &error);
        assert_non_null(f);
        assert_int_equal(queue_file_lock(f, &error), 0);
        assert_int_equal(queue_file_mark_reason(f, 2, QUEUE_RCPT_BOUNCED, &r, &error), 0);
        assert_int_equal(queue_file_settle(q, &f, &error), 0);
        assert_null(f);
        assert_int_equal(queue_sync(q, &error), 0);
        assert_int_equal(queue_notice_ids(q, &ids, &error), 0);
        assert_int_equal(stat(path, &st), -1);
        msg_path(t, id, path, sizeof(path));
        assert_int_equal(stat(path, &st), -1);
    }

    /* A dangling entry: the file is gone, the caller drops it. */
    msg_path(t, id2, path, sizeof(path));
    assert_int_equal(unlink(path), 0);
    f = queue_file_open(q, id2, 1, &error);
    assert_null(f);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(queue_index_drop(q, "Two.Example", id2, &error), 0);
    assert_int_equal(count_ids(q, "two.example"), 0);
    queue_close(&q);
}

/* Expiry and delay-warning candidates come from the index: oldest first,
 * per domain, with the watermark skipping what was looked at. */
static void
test_scan_due(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    const char *a[] = {"x@a.example"}, *b[] = {"y@b.example"}, *ab[] = {"x@a.example", "y@b.example"};
    char id1[QUEUE_ID_LEN + 1], id2[QUEUE_ID_LEN + 1], id3[QUEUE_ID_LEN + 1];
    char id4[QUEUE_ID_LEN + 1], walk[512] = "";
    QUEUE_DUE *due = NULL;
    size_t n = 0;
    char *error = NULL;
    long now = (long) time(NULL);

    assert_int_equal(store(q, "s@x.example", a, 1, "A\r\n", 3, id1), 0);
    assert_int_equal(store(q, "s@x.example", ab, 2, "B\r\n", 3, id2), 0);
    assert_int_equal(store(q, "s@x.example", a, 1, "C\r\n", 3, id3), 0);
    assert_int_equal(store(q, "s@x.example", b, 1, "D\r\n", 3, id4), 0);
    assert_true(labs(queue_id_time(id1) - now) <= 2);
    assert_int_equal(queue_id_time("nonsense"), -1);

    /* Nothing old enough. */
    assert_int_equal(queue_scan_due(q, now - 3600, 0, &due, &n, &error), 0);
    assert_int_equal(n, 0);
    free(due);
    /* Everything expires: per domain, oldest first; id2 once per domain. */
    assert_int_equal(queue_scan_due(q, now + 10, 0, &due, &n, &error), 0);
    assert_int_equal(n, 5);
    assert_string_equal(due[0].domain, "a.example");
    assert_string_equal(due[0].id, id1);
    assert_string_equal(due[1].id, id2);
    assert_string_equal(due[2].id, id3);
    assert_string_equal(due[3].domain, "b.example");
    assert_string_equal(due[3].id, id2);
    assert_string_equal(due[4].id, id4);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(due[i].expire, 1);
    free(due);
    /* Warnings only. */
    assert_int_equal(queue_scan_due(q, now - 3600, now + 10, &due, &n, &error), 0);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(due[i].expire, 0);
    free(due);
    /* The watermark: a.example looked at up to id2, b.example up to id4. */
    assert_int_equal(queue_warn_mark(q, "A.Example", id2, &error), 0);
    assert_int_equal(queue_warn_mark(q, "b.example", id4, &error), 0);
    assert_int_equal(queue_scan_due(q, now - 3600, now + 10, &due, &n, &error), 0);
    assert_int_equal(n, 1);
    assert_string_equal(due[0].domain, "a.example");
    assert_string_equal(due[0].id, id3);
    free(due);
    /* Moved again: nothing left. */
    assert_int_equal(queue_warn_mark(q, "a.example", id3, &error), 0);
    assert_int_equal(queue_scan_due(q, now - 3600, now + 10, &due, &n, &error), 0);
    assert_int_equal(n, 0);
    free(due);
    /* Watermarks and the notice list are not domains. */
    assert_int_equal(queue_notice_add(q, id1, &error), 0);
    assert_int_equal(queue_walk_domains(q, walk_cb, walk, &error), 0);
    assert_string_equal(walk, "a.example=3;b.example=2;");
    queue_close(&q);
}

/* Two domains of one message flushed one after the other by the same
 * process before a queue_sync(): the first queue_file_done() must not
 * leave its lock behind for the second (seen as a hang in odmrd). */
static void
test_two_domains_one_process(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    const char *rcpts[] = {"a@one.example", "b@two.example", "c@two.example"};
    char id[QUEUE_ID_LEN + 1], path[256];
    char *error = NULL;
    QUEUE_FILE *f;
    struct stat st;

    assert_int_equal(store(q, "s@x.example", rcpts, 3, content1, strlen(content1), id), 0);
    msg_path(t, id, path, sizeof(path));
    alarm(20); /* a hang fails the test instead of stalling the suite */
    f = queue_file_open(q, id, 1, &error);
    assert_non_null(f);
    assert_int_equal(queue_file_mark(f, 0, QUEUE_RCPT_DELIVERED, NULL), 0);
    assert_int_equal(queue_file_done(q, &f, "one.example", &error), 0);
    f = queue_file_open(q, id, 1, &error);
    assert_non_null(f);
    assert_int_equal(queue_file_mark(f, 1, QUEUE_RCPT_DELIVERED, NULL), 0);
    /* The administrator removed the other one: no bounce owed. */
    assert_int_equal(queue_file_mark(f, 2, QUEUE_RCPT_REMOVED, "deleted"), 0);
    assert_int_equal(queue_file_done(q, &f, "two.example", &error), 0);
    alarm(0);
    assert_int_equal(queue_sync(q, &error), 0);
    assert_int_equal(stat(path, &st), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(count_ids(q, "one.example"), 0);
    assert_int_equal(count_ids(q, "two.example"), 0);
    queue_close(&q);
}

static void
test_abort(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    const char *rcpts[] = {"a@abort.example"};
    QUEUE_RCPT r = {(char *) rcpts[0], NULL, NULL, QUEUE_RCPT_QUEUED, 0};
    QUEUE_ENV env;
    QUEUE_WRITER *w;
    char path[200], *error = NULL;

    memset(&env, 0, sizeof(env));
    env.sender = "x@y.example";
    env.rcpt = &r;
    env.rcpt_count = 1;
    w = queue_writer_begin(q, &env, &error);
    assert_non_null(w);
    assert_int_equal(queue_writer_write(w, content1, strlen(content1)), 0);
    queue_writer_abort(&w);
    assert_null(w);
    (void) str_format(path, sizeof(path), "%s/incoming", t->qdir);
    assert_int_equal(count_dir(path), 0);
    assert_int_equal(count_files(q), 0);
    assert_int_equal(count_ids(q, "abort.example"), 0);
    queue_close(&q);
}

static void
test_reindex(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    const char *rcpts[] = {"a@one.example", "b@two.example"};
    char id[5][QUEUE_ID_LEN + 1], before[512] = "", after[512] = "", path[200];
    char *error = NULL;
    size_t files, entries, damaged;
    QUEUE_FILE *f;

    for (int i = 0; i < 5; i++)
        assert_int_equal(store(q, "s@x.example", rcpts + i % 2, 2 - i % 2, content1,
                               strlen(content1), id[i]),
                         0);
    /* All delivered but not removed (crash inside queue_file_done). */
    f = queue_file_open(q, id[4], 1, &error);
    assert_non_null(f);
    assert_int_equal(queue_file_mark(f, 0, QUEUE_RCPT_DELIVERED, NULL), 0);
    assert_int_equal(queue_file_mark(f, 1, QUEUE_RCPT_DELIVERED, NULL), 0);
    queue_file_close(&f);
    assert_int_equal(queue_sync(q, &error), 0);
    assert_int_equal(queue_walk_domains(q, walk_cb, before, &error), 0);
    assert_string_equal(before, "one.example=3;two.example=5;");
    queue_close(&q);

    (void) str_format(path, sizeof(path), "%s/db", t->qdir);
    rm_rf(path);
    q = open_q(t);
    assert_int_equal(count_ids(q, "two.example"), 0);
    assert_int_equal(queue_reindex(q, &files, &entries, &damaged, &error), 0);
    assert_int_equal(files, 4);
    assert_int_equal(entries, 6);
    assert_int_equal(damaged, 0);
    assert_int_equal(queue_walk_domains(q, walk_cb, after, &error), 0);
    assert_string_equal(after, "one.example=2;two.example=4;");
    assert_int_equal(count_files(q), 4);
    queue_close(&q);
}

static void
write_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_TRUNC);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t) len);
    close(fd);
}

static char *
read_file(const char *path, size_t *len_r)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    char *buf;

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    buf = x_malloc((size_t) st.st_size + 1);
    assert_int_equal(read(fd, buf, (size_t) st.st_size), st.st_size);
    close(fd);
    *len_r = (size_t) st.st_size;
    return buf;
}

/* The format stamp: written at the first open, accepted again, and a
 * queue stamped with another format is refused by name before anything in
 * it is touched. */
static void
test_format_stamp(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    char path[200], *data, *error = NULL;
    size_t len;

    queue_close(&q);
    (void) str_format(path, sizeof(path), "%s/format", t->qdir);
    data = read_file(path, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(data, "ODMRQ 1\n", 8);
    free(data);
    q = open_q(t);
    queue_close(&q);

    write_file(path, "ODMRQ 2\n", 8);
    q = queue_open(t->qdir, QUEUE_OPEN_CREATE, &error);
    assert_null(q);
    assert_non_null(error);
    assert_non_null(strstr(error, "has format \"ODMRQ 2\""));
    assert_non_null(strstr(error, "reads \"ODMRQ 1\" only"));
    free(error);
    error = NULL;
    q = queue_open(t->qdir, QUEUE_OPEN_READONLY, &error);
    assert_null(q);
    free(error);
    data = read_file(path, &len);
    assert_memory_equal(data, "ODMRQ 2\n", 8);
    free(data);
}

static void
test_damaged(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    const char *rcpts[] = {"a@dmg.example"};
    char id[5][QUEUE_ID_LEN + 1], path[200], *error = NULL, *data, *p;
    size_t len, files, entries, damaged;
    QUEUE_FILE *f;

    for (int i = 0; i < 5; i++)
        assert_int_equal(store(q, "", rcpts, 1, content1, strlen(content1), id[i]), 0);
    msg_path(t, id[0], path, sizeof(path));
    data = read_file(path, &len);

    /* 0: truncated */
    write_file(path, data, len - 4);
    /* 1: wrong ending, right size */
    msg_path(t, id[1], path, sizeof(path));
    memcpy(data + QUEUE_ID_LINE_OFFSET, id[1], QUEUE_ID_LEN);
    data[len - 3] = 'X';
    write_file(path, data, len);
    data[len - 3] = '.';
    /* 2: unknown header record */
    msg_path(t, id[2], path, sizeof(path));
    memcpy(data + QUEUE_ID_LINE_OFFSET, id[2], QUEUE_ID_LEN);
    p = strstr(data, "\nsize ");
    assert_non_null(p);
    memcpy(p + 1, "sizz", 4);
    write_file(path, data, len);
    memcpy(p + 1, "size", 4);
    /* 3: id line does not match the name */
    msg_path(t, id[3], path, sizeof(path));
    memcpy(data + QUEUE_ID_LINE_OFFSET, id[4], QUEUE_ID_LEN);
    write_file(path, data, len);

    for (int i = 0; i < 4; i++) {
        f = queue_file_open(q, id[i], 0, &error);
        assert_null(f);
        assert_int_equal(errno, EINVAL);
        assert_non_null(error);
        assert_non_null(strstr(error, "damaged"));
        x_free(&error);
    }
    f = queue_file_open(q, id[4], 0, &error);
    assert_non_null(f);
    queue_file_close(&f);

    assert_int_equal(queue_reindex(q, &files, &entries, &damaged, &error), 0);
    assert_int_equal(files, 1);
    assert_int_equal(entries, 1);
    assert_int_equal(damaged, 4);
    /* Damaged files stay for the administrator. */
    assert_int_equal(count_files(q), 5);
    /* ...who may delete one by name. */
    assert_int_equal(queue_delete(q, id[0], &error), 0);
    assert_int_equal(count_files(q), 4);
    free(data);
    queue_close(&q);
}

static void
test_delete(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    const char *rcpts[] = {"a@one.example", "b@two.example"};
    char id[QUEUE_ID_LEN + 1], *error = NULL;
    int lock;

    assert_int_equal(store(q, "", rcpts, 2, content1, strlen(content1), id), 0);
    assert_int_equal(queue_delete(q, id, &error), 0);
    assert_int_equal(count_ids(q, "one.example"), 0);
    assert_int_equal(count_ids(q, "two.example"), 0);
    assert_int_equal(count_files(q), 0);
    assert_int_equal(queue_delete(q, id, &error), -1);
    assert_int_equal(errno, ENOENT);
    x_free(&error);

    /* A busy domain blocks the delete (after the wait). */
    assert_int_equal(store(q, "", rcpts, 2, content1, strlen(content1), id), 0);
    lock = queue_lock_domain(q, "two.example", 0, &error);
    assert_true(lock >= 0);
    assert_int_equal(queue_delete(q, id, &error), -1);
    assert_int_equal(errno, EAGAIN);
    x_free(&error);
    assert_int_equal(count_files(q), 1);
    queue_unlock_domain(lock);
    assert_int_equal(queue_delete(q, id, &error), 0);
    queue_close(&q);
}

#define WRITERS 8
#define PER_WRITER 50

static int
id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, QUEUE_ID_LEN);
}

static void
test_concurrent_writers(void **state)
{
    T *t = *state;
    const char *rcpts[] = {"a@busy.example", "b@other.example"};
    char (*ids)[QUEUE_ID_LEN + 1] = x_calloc(WRITERS * PER_WRITER, sizeof(*ids));
    int fds[2];
    size_t got = 0;
    char line[QUEUE_ID_LEN + 1];
    QUEUE *q;

    assert_int_equal(pipe(fds), 0);
    for (int c = 0; c < WRITERS; c++) {
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
            char *error = NULL;
            QUEUE *cq;

            close(fds[0]);
            if ((cq = queue_open(t->qdir, QUEUE_OPEN_CREATE, &error)) == NULL)
                _exit(2);
            for (int i = 0; i < PER_WRITER; i++) {
                char id[QUEUE_ID_LEN + 2];

                if (store(cq, "s@x.example", rcpts, 1 + (i % 2), content1, strlen(content1),
                          id) < 0)
                    _exit(3);
                id[QUEUE_ID_LEN] = '\n';
                if (write(fds[1], id, QUEUE_ID_LEN + 1) != QUEUE_ID_LEN + 1)
                    _exit(4);
            }
            queue_close(&cq);
            _exit(0);
        }
    }
    close(fds[1]);
    while (got < WRITERS * PER_WRITER
           && read(fds[0], line, sizeof(line)) == (ssize_t) sizeof(line)) {
        memcpy(ids[got], line, QUEUE_ID_LEN);
        ids[got++][QUEUE_ID_LEN] = 0;
    }
    close(fds[0]);
    for (int c = 0; c < WRITERS; c++) {
        int status;

        assert_true(wait(&status) > 0);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    assert_int_equal(got, WRITERS * PER_WRITER);
    qsort(ids, got, sizeof(*ids), id_cmp);
    for (size_t i = 1; i < got; i++)
        assert_true(memcmp(ids[i - 1], ids[i], QUEUE_ID_LEN) != 0);
    q = open_q(t);
    assert_int_equal(count_ids(q, "busy.example"), WRITERS * PER_WRITER);
    assert_int_equal(count_ids(q, "other.example"), WRITERS * PER_WRITER / 2);
    assert_int_equal(count_files(q), WRITERS * PER_WRITER);
    for (size_t i = 0; i < got; i++) {
        char *error = NULL;
        QUEUE_FILE *f = queue_file_open(q, ids[i], 0, &error);

        assert_non_null(f);
        queue_file_close(&f);
    }
    queue_close(&q);
    free(ids);
}

/* A child that takes something (take(arg) returns 0 once it holds it),
 * tells the parent, and waits to be killed: its pid, once it holds it. */
static pid_t
holder_child(int (*take)(void *arg), void *arg)
{
    int fds[2];
    char c;
    pid_t pid;

    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (take(arg) != 0)
            _exit(2);
        if (write(fds[1], "H", 1) != 1)
            _exit(3);
        for (;;)
            pause();
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], &c, 1), 1);
    close(fds[0]);
    return pid;
}

/* The lock needs no index: the parent's QUEUE directory fds are fine to
 * use in the child. */
static int
take_domain_lock(void *arg)
{
    char *error = NULL;

    return queue_lock_domain(arg, "lock.example", 0, &error) < 0 ? -1 : 0;
}

static void
test_domain_lock(void **state)
{
    T *t = *state;
    QUEUE *q = open_q(t);
    char *error = NULL;
    int lock, lock2, status;
    int64_t start;
    pid_t pid;

    assert_int_equal(queue_lock_domain(q, "../etc", 0, &error), -1);
    assert_int_equal(errno, EINVAL);
    assert_non_null(error);
    x_free(&error);
    assert_int_equal(queue_lock_domain(q, "nodots", 0, &error), -1);
    assert_int_equal(errno, EINVAL);
    x_free(&error);

    /* Within one process too. */
    lock = queue_lock_domain(q, "Lock.Example", 0, &error);
    assert_true(lock >= 0);
    assert_int_equal(queue_lock_domain(q, "lock.example", 0, &error), -1);
    assert_int_equal(errno, EAGAIN);
    assert_non_null(strstr(error, "lock.example is being flushed"));
    x_free(&error);
    lock2 = queue_lock_domain(q, "other.example", 0, &error);
    assert_true(lock2 >= 0);
    queue_unlock_domain(lock);
    queue_unlock_domain(lock2);

    pid = holder_child(take_domain_lock, q);
    assert_int_equal(queue_lock_domain(q, "lock.example", 0, &error), -1);
    assert_int_equal(errno, EAGAIN);
    x_free(&error);
    start = now_ms();
    assert_int_equal(queue_lock_domain(q, "LOCK.example", 200, &error), -1);
    assert_int_equal(errno, EAGAIN);
    x_free(&error);
    assert_true(now_ms() - start >= 190);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    lock = queue_lock_domain(q, "lock.example", 1000, &error);
    assert_true(lock >= 0);
    queue_unlock_domain(lock);
    queue_close(&q);
}

static void
fault_child(T *t, const char *point)
{
    const char *rcpts[] = {"a@fault.example", "b@fault2.example"};
    char id[QUEUE_ID_LEN + 1];
    char *error = NULL;
    QUEUE *q;

    var_test_fault_point = (char *) point;
    if ((q = queue_open(t->qdir, QUEUE_OPEN_CREATE, &error)) == NULL)
        _exit(2);
    if (store(q, "s@x.example", rcpts, 2, content1, strlen(content1), id) < 0)
        _exit(3);
    _exit(0); /* not reached when the fault point fires */
}

static void
run_fault(T *t, const char *point, int want_file, int want_indexed)
{
    char *error = NULL;
    size_t files, entries, damaged;
    int status;
    pid_t pid;
    QUEUE *q;

    rm_rf(t->qdir);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        fault_child(t, point);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);

    /* The child died inside the environment: this open recovers. */
    alarm(60);
    q = open_q(t);
    assert_int_equal(count_files(q), want_file);
    assert_int_equal(count_ids(q, "fault.example"), want_indexed);
    assert_int_equal(count_ids(q, "fault2.example"), want_indexed);
    /* Orphan recovery from incoming/ alone (this boot already seen). */
    {
        char path[4096], boot[64] = "";
        size_t recovered = 9, removed = 9, checked = 9;
        int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY);
        ssize_t n;

        assert_true(fd >= 0);
        n = read(fd, boot, sizeof(boot) - 1);
        assert_true(n > 0);
        close(fd);
        snprintf(path, sizeof(path), "%s/db/boot-id", t->qdir);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0 && write(fd, boot, (size_t) n) == n);
        close(fd);
        assert_int_equal(count_incoming(t), 1);
        /* Too young: a writer may be between creating and locking it. */
        assert_int_equal(queue_recover(q, (long) time(NULL), &recovered, &removed, &checked,
                                       &error), 0);
        assert_int_equal(recovered + removed + checked, 0);
        assert_int_equal(count_incoming(t), 1);
        assert_int_equal(queue_recover(q, (long) time(NULL) + 2 * QUEUE_RECOVER_AGE, &recovered,
                                       &removed, &checked, &error), 0);
        assert_int_equal(recovered, (size_t) want_file);
        assert_int_equal(removed, (size_t) !want_file);
        assert_int_equal(checked, 0);
        assert_int_equal(count_incoming(t), 0);
        assert_int_equal(count_files(q), want_file);
        assert_int_equal(count_ids(q, "fault.example"), want_file);
        assert_int_equal(count_ids(q, "fault2.example"), want_file);
        /* A new boot: every file is looked at once. */
        fd = open(path, O_WRONLY | O_TRUNC);
        assert_true(fd >= 0 && write(fd, "old\n", 4) == 4);
        close(fd);
        assert_int_equal(queue_recover(q, (long) time(NULL), &recovered, &removed, &checked,
                                       &error), 0);
        assert_int_equal(checked, (size_t) want_file);
        assert_int_equal(count_ids(q, "fault.example"), want_file); /* not twice */
        assert_int_equal(queue_recover(q, (long) time(NULL), &recovered, &removed, &checked,
                                       &error), 0);
        assert_int_equal(checked, 0);
    }
    if (want_file) {
        char **ids = NULL;
        ssize_t n;
        QUEUE_FILE *f;

        assert_int_equal(queue_reindex(q, &files, &entries, &damaged, &error), 0);
        assert_int_equal(files, 1);
        assert_int_equal(entries, 2);
        assert_int_equal(damaged, 0);
        n = queue_domain_ids(q, "fault.example", &ids, &error);
        assert_int_equal(n, 1);
        f = queue_file_open(q, ids[0], 0, &error);
        assert_non_null(f);
        assert_int_equal(queue_file_env(f)->rcpt_count, 2);
        queue_file_close(&f);
        queue_ids_free(&ids, (size_t) n);
    }
    /* And the environment works for writers afterwards. */
    {
        const char *rcpts[] = {"c@fault.example"};
        char id[QUEUE_ID_LEN + 1];

        assert_int_equal(store(q, "", rcpts, 1, content1, strlen(content1), id), 0);
        assert_int_equal(count_ids(q, "fault.example"), want_file + 1);
    }
    queue_close(&q);
    alarm(0);
}

static void
test_fault_before_fsync(void **state)
{
    run_fault(*state, "before-fsync", 0, 0);
}

static void
test_fault_after_fsync(void **state)
{
    run_fault(*state, "after-fsync", 0, 0);
}

static void
test_fault_after_rename(void **state)
{
    run_fault(*state, "after-rename", 1, 0);
}

static void
test_fault_after_index(void **state)
{
    run_fault(*state, "after-index", 1, 1);
}

/* In a child: an index transaction holding write locks, never ended. */
static int
take_txn(void *arg)
{
    T *t = arg;
    char *error = NULL;
    QUEUE *q = queue_open(t->qdir, QUEUE_OPEN_CREATE, &error);
    DB_TXN *txn;
    DBT key, data;

    if (q == NULL || q->env->txn_begin(q->env, NULL, &txn, 0) != 0)
        return -1;
    memset(&key, 0, sizeof(key));
    memset(&data, 0, sizeof(data));
    key.data = "held.example";
    key.size = 12;
    data.data = "000000000000000000";
    data.size = QUEUE_ID_LEN;
    return q->db->put(q->db, txn, &key, &data, 0) != 0 ? -1 : 0;
}

/* A child dies inside an index transaction holding write locks. */
static pid_t
txn_holder(T *t)
{
    return holder_child(take_txn, t);
}

static void
test_dead_txn_next_opener(void **state)
{
    T *t = *state;
    const char *rcpts[] = {"a@held.example"};
    char id[QUEUE_ID_LEN + 1];
    int status;
    pid_t pid;
    QUEUE *q;

    q = open_q(t); /* create the environment first */
    queue_close(&q);
    pid = txn_holder(t);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    alarm(60);
    q = open_q(t);
    assert_int_equal(count_ids(q, "held.example"), 0); /* rolled back */
    assert_int_equal(store(q, "", rcpts, 1, content1, strlen(content1), id), 0);
    assert_int_equal(count_ids(q, "held.example"), 1);
    queue_close(&q);
    alarm(0);
}

static void
test_dead_txn_open_process(void **state)
{
    T *t = *state;
    const char *rcpts[] = {"a@held.example"};
    char id[QUEUE_ID_LEN + 1];
    int status;
    pid_t pid;
    QUEUE *q;

    int64_t t0;

    /* We are inside the environment when the child dies holding locks on
     * the page we need, and nobody opens the environment after it: our
     * lock wait runs failchk, which aborts the dead transaction, long
     * before lock_timeout (10 s) would make us reopen. */
    q = open_q(t);
    pid = txn_holder(t);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    alarm(60);
    t0 = now_ms();
    assert_int_equal(store(q, "", rcpts, 1, content1, strlen(content1), id), 0);
    assert_true(now_ms() - t0 < 5000);
    assert_int_equal(count_ids(q, "held.example"), 1);
    queue_close(&q);
    alarm(0);
}

/* Another process panics the environment (as failchk does when a process
 * died inside Berkeley DB) and leaves: a process already inside gets
 * DB_RUNRECOVERY, reopens (which recovers) and repeats its operation
 * without an error; the index keeps what was committed. */
static void
test_panicked_environment(void **state)
{
    T *t = *state;
    const char *rcpts[] = {"a@panic.example"};
    char id[QUEUE_ID_LEN + 1];
    int status;
    pid_t pid;
    QUEUE *q;

    q = open_q(t);
    assert_int_equal(store(q, "", rcpts, 1, content1, strlen(content1), id), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *error = NULL;
        QUEUE *c = queue_open(t->qdir, 0, &error);

        if (c == NULL)
            _exit(2);
        (void) c->env->set_flags(c->env, DB_PANIC_ENVIRONMENT, 1);
        queue_close(&c);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    alarm(60);
    assert_int_equal(store(q, "", rcpts, 1, content1, strlen(content1), id), 0);
    assert_int_equal(count_ids(q, "panic.example"), 2);
    queue_close(&q);
    q = open_q(t);
    assert_int_equal(count_ids(q, "panic.example"), 2);
    queue_close(&q);
    alarm(0);
}

/* An environment made by the previous version (DB_REGISTER, no thread
 * table for failchk) and closed cleanly: the open recovers it into one
 * with a thread table, and the index is kept. */
static void
test_environment_without_thread_table(void **state)
{
    T *t = *state;
    char home[300];
    DB_ENV *env;
    DB *db;
    DBT key, data;
    QUEUE *q;

    q = open_q(t); /* directories */
    queue_close(&q);
    (void) str_format(home, sizeof(home), "%s/db", t->qdir);
    rm_rf(home);
    assert_int_equal(mkdir(home, 0700), 0);
    assert_int_equal(db_env_create(&env, 0), 0);
    assert_int_equal(env->open(env, home,
                               DB_CREATE | DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG
                                   | DB_INIT_MPOOL | DB_REGISTER | DB_RECOVER,
                               0600),
                     0);
    assert_int_equal(db_create(&db, env, 0), 0);
    assert_int_equal(db->set_flags(db, DB_DUP | DB_DUPSORT), 0);
    assert_int_equal(db->open(db, NULL, "index.db", NULL, DB_BTREE,
                              DB_CREATE | DB_AUTO_COMMIT, 0600),
                     0);
    memset(&key, 0, sizeof(key));
    memset(&data, 0, sizeof(data));
    key.data = "old.example";
    key.size = 11;
    data.data = "0000000000000000AA";
    data.size = QUEUE_ID_LEN;
    assert_int_equal(db->put(db, NULL, &key, &data, DB_AUTO_COMMIT), 0);
    assert_int_equal(db->close(db, 0), 0);
    assert_int_equal(env->close(env, 0), 0);
    alarm(60);
    q = open_q(t);
    assert_int_equal(count_ids(q, "old.example"), 1);
    queue_close(&q);
    alarm(0);
}

/* Opening waits while another process holds the open lock (it is opening
 * or recovering the environment), then succeeds. */
static void
test_open_waits_for_open_lock(void **state)
{
    T *t = *state;
    char path[300];
    int fds[2];
    int status;
    char c;
    int64_t t0;
    pid_t pid;
    QUEUE *q;

    q = open_q(t);
    queue_close(&q);
    (void) str_format(path, sizeof(path), "%s/db/odmr-open.lock", t->qdir);
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct flock fl;
        int fd = open(path, O_RDWR);

        memset(&fl, 0, sizeof(fl));
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        if (fd < 0 || fcntl(fd, F_OFD_SETLK, &fl) < 0)
            _exit(2);
        if (write(fds[1], "L", 1) != 1)
            _exit(3);
        usleep(1500 * 1000);
        _exit(0);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], &c, 1), 1);
    close(fds[0]);
    alarm(60);
    t0 = now_ms();
    q = open_q(t);
    assert_true(now_ms() - t0 >= 1000);
    queue_close(&q);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    alarm(0);
}

/* The storm hang (issue 10): a process killed inside Berkeley DB while
 * holding one of its mutexes (the log flush mutex, in the storm) left
 * every other process that wanted that mutex waiting for ever. Here a
 * child takes a mutex of the environment and is killed; our guarded call
 * that waits for the mutex is left by the watchdog, and the next index
 * operation recovers the environment and succeeds. */
static int
lock_mutex_call(QUEUE *q, void *arg)
{
    return q->env->mutex_lock(q->env, *(db_mutex_t *) arg);
}

/* In a child: one of the environment's mutexes, held. */
static struct {
    T *t;
    db_mutex_t mtx;
} mutex_take;

static int
take_mutex(void *arg)
{
    char *error = NULL;
    QUEUE *q2;

    (void) arg;
    q2 = queue_open(mutex_take.t->qdir, QUEUE_OPEN_CREATE, &error);
    return q2 == NULL || q2->env->mutex_lock(q2->env, mutex_take.mtx) != 0 ? -1 : 0;
}

static void
test_watchdog_dead_mutex_holder(void **state)
{
    T *t = *state;
    const char *rcpts[] = {"a@stuck.example"};
    char id[QUEUE_ID_LEN + 1];
    db_mutex_t mtx;
    int status;
    int64_t t0;
    pid_t pid;
    QUEUE *q;

    q = open_q(t);
    assert_int_equal(q->env->mutex_alloc(q->env, 0, &mtx), 0);
    mutex_take.t = t;
    mutex_take.mtx = mtx;
    pid = holder_child(take_mutex, NULL);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &status, 0), pid);

    alarm(60);
    queue_stuck_ms = 1000;
    t0 = now_ms();
    assert_int_equal(queue_guard_call(q, lock_mutex_call, &mtx), QUEUE_STUCK);
    assert_true(now_ms() - t0 >= 1000);
    assert_true(now_ms() - t0 < 20000);
    assert_null(q->env);
    /* The index works again: the reopen recovered the environment. */
    assert_int_equal(store(q, "", rcpts, 1, content1, strlen(content1), id), 0);
    assert_int_equal(count_ids(q, "stuck.example"), 1);
    queue_close(&q);
    /* And a fresh opener finds a sound environment. */
    q = open_q(t);
    assert_int_equal(count_ids(q, "stuck.example"), 1);
    queue_close(&q);
    queue_stuck_ms = 10000;
    alarm(0);
}

/* A slow call in a sound environment (nobody died) is never left. */
static int
sleep_call(QUEUE *q, void *arg)
{
    usleep(*(useconds_t *) arg);
    return 7;
}

static void
test_watchdog_slow_call_left_alone(void **state)
{
    T *t = *state;
    useconds_t us = 1500 * 1000;
    QUEUE *q;

    q = open_q(t);
    alarm(60);
    queue_stuck_ms = 300;
    assert_int_equal(queue_guard_call(q, sleep_call, &us), 7);
    assert_non_null(q->env);
    assert_int_equal(count_ids(q, "stuck.example"), 0);
    queue_stuck_ms = 10000;
    queue_close(&q);
    alarm(0);
}

/* A slow call while another process opens the queue: the watchdog looks
 * at the registry while the call runs, and must not make this process look
 * dead to the opener (closing a descriptor of db/__db.register dropped our
 * slot lock: the opener recovered the environment under us and our next
 * transaction failed with DB_RUNRECOVERY). */
static const char *opener_qdir;

static int
slow_call_with_opener(QUEUE *q, void *arg)
{
    struct stat before, after;
    DB_TXN *txn = NULL;
    pid_t pid;
    int status, ret;

    (void) arg;
    if (fstatat(q->dir_fd, "db/__db.001", &before, 0) < 0)
        return -1;
    usleep(900 * 1000); /* the watchdog has read the registry by now */
    pid = fork();
    if (pid == 0) {
        char *error = NULL;
        QUEUE *q2 = queue_open(opener_qdir, 0, &error);

        if (q2 == NULL)
            _exit(2);
        queue_close(&q2);
        _exit(0);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)
        || WEXITSTATUS(status) != 0)
        return -2;
    if (fstatat(q->dir_fd, "db/__db.001", &after, 0) < 0 || after.st_ino != before.st_ino)
        return -3; /* the opener recovered (replaced the regions) */
    if ((ret = q->env->txn_begin(q->env, NULL, &txn, 0)) != 0)
        return ret;
    (void) txn->abort(txn);
    return 0;
}

static void
test_watchdog_keeps_registration(void **state)
{
    T *t = *state;
    QUEUE *q;

    opener_qdir = t->qdir;
    q = open_q(t);
    alarm(60);
    queue_stuck_ms = 300;
    assert_int_equal(queue_guard_call(q, slow_call_with_opener, NULL), 0);
    queue_stuck_ms = 10000;
    assert_int_equal(count_ids(q, "stuck.example"), 0);
    queue_close(&q);
    alarm(0);
}

/* The environment tests (a panicked environment, one made without a
 * thread table) leave Berkeley DB holding about 10 KB of its own handle
 * memory after the forced reopen; only libdb's allocator appears in the
 * report. Suppressed here, for this test binary only, and listed as a
 * thing to look into (issue 10). */
const char *__lsan_default_suppressions(void);
const char *
__lsan_default_suppressions(void)
{
    return "leak:libdb\n";
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_envelopes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multi_domain_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oldest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mark_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_due, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_domains_one_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reindex, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_stamp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_domain_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_before_fsync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_after_fsync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_after_rename, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_after_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_txn_next_opener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_txn_open_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_panicked_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_environment_without_thread_table, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_open_waits_for_open_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_dead_mutex_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_slow_call_left_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_keeps_registration, setup, teardown),
    };

    /* No syslog noise from the library's warnings during tests. */
    msg_init("test_queue", 0);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
