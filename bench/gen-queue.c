/*
 * gen-queue.c - fill a hold queue for the benchmarks (bench/flush).
 *
 * USAGE
 *     gen-queue -q QUEUE_DIR -n COUNT -s BYTES -d DOMAIN [-D NDOMAINS] [-b]
 *
 * Writes COUNT messages of BYTES bytes of content (CRLF lines, no dot
 * stuffing needed) with one recipient each, bench@DOMAIN. With -D N the
 * messages go round-robin over N domains: DOMAIN must then contain one
 * "%d" (e.g. "d%d.test"), replaced by 0 .. N-1.
 *
 * Default mode: the real writer, queue_writer_begin/write/commit, with
 * every durability step of queue.h (fsync, rename, directory fsync, index
 * commit) per message: what odmr-store does for each message it accepts.
 *
 * -b (bulk): for the 1,000,000-message queue. The same writer makes the
 * same files (queue_writer_commit_bulk: no fsync, no index entries), and
 * the index entries (and the domain figures) go in transactions of 2,500
 * (queue_index_add_pairs; more would run out of Berkeley DB locks).
 * Not crash-safe: it only builds a test queue quickly.
 *
 * Run it as the queue's owner (setpriv --reuid odmr ...). Prints the count
 * and the elapsed time on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "queue.h"
#include "queue_private.h"
#include "util.h"

#define LINE_LEN 76 /* content bytes per line before CRLF */
#define BULK_TXN 2500

static void
usage(void)
{
    fprintf(stderr, "usage: gen-queue -q QUEUE_DIR -n COUNT -s BYTES -d DOMAIN "
                    "[-D NDOMAINS] [-b]\n");
    exit(2);
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* The content in wire form, without the final ".\r\n": a few header lines,
 * a blank line, then 78-byte lines of letters up to exactly size bytes
 * (the last line may be shorter; it always ends in CRLF). */
static char *
make_content(size_t size, size_t *len_r)
{
    const char *hdr = "From: bench@sender.test\r\nTo: bench@customer\r\n"
                      "Subject: bench/flush\r\nMessage-ID: <bench@sender.test>\r\n\r\n";
    size_t hl = strlen(hdr);
    char *buf;
    size_t len = 0;

    if (size < hl + 2)
        size = hl + 2;
    buf = x_malloc(size);
    memcpy(buf, hdr, hl);
    len = hl;
    while (len < size) {
        size_t room = size - len, n;

        if (room <= 2) { /* too short for a line: pad the previous one */
            memmove(buf + len - 2 + room, buf + len - 2, 2);
            memset(buf + len - 2, 'x', room);
            len += room;
            break;
        }
        n = room - 2 < LINE_LEN ? room - 2 : LINE_LEN;
        for (size_t i = 0; i < n; i++)
            buf[len + i] = (char) ('a' + (len / 78 + i) % 26);
        len += n;
        buf[len++] = '\r';
        buf[len++] = '\n';
    }
    *len_r = len;
    return buf;
}

static void
domain_name(char *buf, size_t size, const char *pattern, long ndomains, long i)
{
    if (ndomains > 0)
        (void) snprintf(buf, size, pattern, (int) (i % ndomains));
    else
        (void) snprintf(buf, size, "%s", pattern);
}

/* The envelope of message i: one recipient, bench@DOMAIN. */
static void
bench_env(QUEUE_ENV *env, QUEUE_RCPT *rcpt, char *addr, size_t size, size_t clen,
          const char *pattern, long ndomains, long i)
{
    char dom[300];

    domain_name(dom, sizeof(dom), pattern, ndomains, i);
    (void) snprintf(addr, size, "bench@%s", dom);
    memset(env, 0, sizeof(*env));
    memset(rcpt, 0, sizeof(*rcpt));
    rcpt->address = addr;
    rcpt->status = QUEUE_RCPT_QUEUED;
    env->sender = "bench@sender.test";
    env->size = (long long) clen;
    env->protocol = "local";
    env->rcpt = rcpt;
    env->rcpt_count = 1;
}

static void
gen_writer(QUEUE *q, long count, const char *content, size_t clen, const char *pattern,
           long ndomains)
{
    for (long i = 0; i < count; i++) {
        QUEUE_ENV env;
        QUEUE_RCPT rcpt;
        QUEUE_WRITER *w;
        char addr[400], id[QUEUE_ID_LEN + 1], *err = NULL;

        bench_env(&env, &rcpt, addr, sizeof(addr), clen, pattern, ndomains, i);
        if ((w = queue_writer_begin(q, &env, &err)) == NULL)
            msg_fatal("queue_writer_begin: %s", err);
        if (queue_writer_write(w, content, clen) < 0)
            msg_fatal("queue_writer_write failed");
        if (queue_writer_commit(&w, id, &err) < 0)
            msg_fatal("queue_writer_commit: %s", err);
    }
}

/* The same files through the same writer (one format, in queue_file.c),
 * without fsyncs, and the index entries in transactions of BULK_TXN. */
static void
gen_bulk(QUEUE *q, long count, const char *content, size_t clen, const char *pattern,
         long ndomains)
{
    QUEUE_PAIR *pairs = x_calloc(BULK_TXN, sizeof(*pairs));
    size_t np = 0;
    char *err = NULL;

    for (long i = 0; i < count; i++) {
        QUEUE_ENV env;
        QUEUE_RCPT rcpt;
        QUEUE_WRITER *w;
        char addr[400], id[QUEUE_ID_LEN + 1], **domains = NULL;
        size_t nd = 0;

        bench_env(&env, &rcpt, addr, sizeof(addr), clen, pattern, ndomains, i);
        if ((w = queue_writer_begin(q, &env, &err)) == NULL)
            msg_fatal("queue_writer_begin: %s", err);
        if (queue_writer_write(w, content, clen) < 0)
            msg_fatal("queue_writer_write failed");
        if (queue_writer_commit_bulk(&w, id, &domains, &nd, &err) < 0)
            msg_fatal("queue_writer_commit_bulk: %s", err);
        if (nd != 1)
            msg_panic("gen_bulk: %zu domains", nd);
        pairs[np].domain = domains[0];
        domains[0] = NULL;
        queue_strings_free(&domains, nd);
        memcpy(pairs[np].id, id, sizeof(id));
        /* The domain's figures: one recipient, the content with its dot. */
        pairs[np].rcpts = 1;
        pairs[np].bytes = (long long) clen + 3;
        np++;
        if (np == BULK_TXN || i == count - 1) {
            if (queue_index_add_pairs(q, pairs, np, &err) < 0)
                msg_fatal("index: %s", err);
            for (size_t k = 0; k < np; k++)
                free(pairs[k].domain);
            np = 0;
        }
    }
    free(pairs);
    sync();
}

int
main(int argc, char **argv)
{
    const char *qdir = NULL, *pattern = NULL;
    long count = -1, ndomains = 0;
    long long size = -1;
    int bulk = 0, c;
    char *err = NULL, *content;
    size_t clen;
    QUEUE *q;
    double t0, t1;

    msg_init("gen-queue", MSG_STDERR);
    while ((c = getopt(argc, argv, "q:n:s:d:D:b")) != -1) {
        switch (c) {
        case 'q': qdir = optarg; break;
        case 'n': count = atol(optarg); break;
        case 's': size = atoll(optarg); break;
        case 'd': pattern = optarg; break;
        case 'D': ndomains = atol(optarg); break;
        case 'b': bulk = 1; break;
        default: usage();
        }
    }
    if (qdir == NULL || pattern == NULL || count < 0 || size < 0)
        usage();
    if (ndomains > 0 && strstr(pattern, "%d") == NULL)
        usage();
    if (ndomains == 0 && strchr(pattern, '%') != NULL)
        usage();
    /* The library's defaults (index_sync = yes, lock_timeout, ...). */
    config_set_directory("/nonexistent-gen-queue");
    config_load();
    content = make_content((size_t) size, &clen);
    if ((q = queue_open(qdir, QUEUE_OPEN_CREATE, &err)) == NULL)
        msg_fatal("open queue %s: %s", qdir, err);
    t0 = now_s();
    if (bulk)
        gen_bulk(q, count, content, clen, pattern, ndomains);
    else
        gen_writer(q, count, content, clen, pattern, ndomains);
    t1 = now_s();
    queue_close(&q);
    free(content);
    printf("gen-queue: %ld messages of %zu bytes in %.2f s (%s)\n", count, clen, t1 - t0,
           bulk ? "bulk" : "queue_writer");
    return 0;
}
