/*
 * stats-query.c - bench/stats helper: the kept figures read in one
 * process, without the process start and the environment open that each
 * odmr-queue run pays.
 *
 * USAGE
 *     stats-query -q QUEUE_DIR -d PATTERN -D NDOMAINS [-k SAMPLES] [-c]
 *
 * Opens the queue (timed), reads every domain's figures (queue_figures_all,
 * timed), then SAMPLES single domains (queue_figures_domain, each timed;
 * the median is printed). -c first records one collection for every
 * domain (queue_collect_record, one transaction per 1,000 domains), so
 * that the Prometheus file holds the collection lines too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "queue.h"
#include "queue_stats.h"
#include "util.h"

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    const char *qdir = NULL, *pattern = NULL;
    long ndomains = 0, samples = 101;
    int collect = 0, c;
    char *err = NULL, name[300];
    QUEUE_FIGURES *list = NULL, one;
    size_t count = 0;
    double t0, t_open, t_all, *t_one;
    QUEUE *q;

    msg_init("stats-query", MSG_STDERR);
    while ((c = getopt(argc, argv, "q:d:D:k:c")) != -1) {
        switch (c) {
        case 'q': qdir = optarg; break;
        case 'd': pattern = optarg; break;
        case 'D': ndomains = atol(optarg); break;
        case 'k': samples = atol(optarg); break;
        case 'c': collect = 1; break;
        default: exit(2);
        }
    }
    if (qdir == NULL || pattern == NULL || ndomains <= 0 || samples <= 0)
        msg_fatal("usage: stats-query -q QUEUE_DIR -d PATTERN -D NDOMAINS [-k N] [-c]");
    config_set_directory("/nonexistent-stats-query");
    config_load();
    t0 = now_s();
    if ((q = queue_open(qdir, collect ? 0 : QUEUE_OPEN_READONLY, &err)) == NULL)
        msg_fatal("open queue %s: %s", qdir, err);
    t_open = now_s() - t0;
    if (collect) {
        QUEUE_COLLECT_RESULT *r = x_calloc(1000, sizeof(*r));
        char (*names)[64] = x_calloc(1000, sizeof(*names));
        long when = (long) time(NULL);

        for (long i = 0; i < ndomains; i += 1000) {
            size_t n = 0;

            for (long j = i; j < ndomains && j < i + 1000; j++, n++) {
                (void) snprintf(names[n], sizeof(names[n]), pattern, (int) j);
                r[n].name = names[n];
                r[n].delivered = 12;
                r[n].deferred = 1;
                r[n].bounced = 0;
                r[n].failure = "customer's MTA answered 451 4.3.0 try again later";
            }
            if (queue_collect_record(q, when, when + 3, r, n, NULL, &err) < 0)
                msg_fatal("%s", err);
        }
        free(r);
        free(names);
    }
    t0 = now_s();
    if (queue_figures_all(q, &list, &count, NULL, NULL, &err) < 0)
        msg_fatal("%s", err);
    t_all = now_s() - t0;
    t_one = x_calloc((size_t) samples, sizeof(*t_one));
    for (long i = 0; i < samples; i++) {
        (void) snprintf(name, sizeof(name), pattern, (int) ((i * 7919) % ndomains));
        t0 = now_s();
        if (queue_figures_domain(q, name, &one, NULL, &err) < 0)
            msg_fatal("%s", err);
        t_one[i] = now_s() - t0;
    }
    qsort(t_one, (size_t) samples, sizeof(*t_one), cmp_double);
    printf("stats-query: open %.3f ms, all %zu domains %.1f ms, one domain median %.3f ms "
           "(max %.3f ms, %ld samples)\n",
           t_open * 1000, count, t_all * 1000, t_one[samples / 2] * 1000,
           t_one[samples - 1] * 1000, samples);
    free(list);
    free(t_one);
    queue_close(&q);
    return 0;
}
