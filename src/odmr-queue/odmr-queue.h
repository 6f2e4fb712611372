/*
 * odmr-queue.h - shared between odmr-queue.c and odmr-queue-stats.c.
 */
#ifndef ODMR_QUEUE_CMD_H
#define ODMR_QUEUE_CMD_H

#include <stddef.h>

#include "queue.h"

/* odmr-queue.c */
void format_date(long sec, char *buf, size_t size);
int parse_now(const char *arg, long *now_r);
int cmd_stats_walk(QUEUE *q, int json);

/* odmr-queue-stats.c: stats from the kept figures. */
typedef struct {
    int json;
    int walk;            /* --walk: count the files (the old way) */
    const char *domain;  /* -d DOMAIN */
    const char *user;    /* -u USER */
    long stale_days;     /* --stale DAYS; -1 unset */
    int prometheus;      /* --prometheus */
    const char *output;  /* -o FILE */
    long min_messages;   /* --min-messages N */
    long now;            /* --now */
    int out_fd;          /* -o: the temporary file, made before privileges go */
} STATS_OPTS;

/* Parse the arguments after "stats": 0, or -1 (usage). */
int stats_parse(int argc, char **argv, STATS_OPTS *o);
/* With -o, the temporary file beside FILE (made as the caller, before
 * privileges are dropped). 0 or -1 (logged). */
int stats_output_open(STATS_OPTS *o);
/* As root with -o: fork; the parent waits for the child, which writes the
 * file as the queue owner, then renames it into place and exits with the
 * child's status. Returns in the child (and when not forking). */
void stats_output_fork(STATS_OPTS *o);
/* Run stats: an exit status. */
int cmd_stats(QUEUE *q, STATS_OPTS *o);

#endif
