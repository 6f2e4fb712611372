/*
 * queue_stats.h - what an ISP watches: per-domain queue figures kept beside
 * the index, and the last collection of each domain and SASL user.
 *
 * FIGURES KEPT, NOT COUNTED. For each domain with held mail: messages,
 * recipients waiting, bytes. They live in the database "stats.db" of the
 * queue's Berkeley DB environment and change in the same transactions that
 * add and remove the domain's index entries (store, the batched removals
 * of a flush, delete, expiry, bounce, reindex), so they cannot drift from
 * the index:
 *     "F" DOMAIN           -> messages, recipients, bytes (3 x uint64),
 *                             the oldest ID (the domain's first index
 *                             entry, 18 bytes)
 *     "E" DOMAIN NUL ID    -> what one index entry counts: its queued
 *                             recipients in DOMAIN, the file's content
 *                             length (2 x uint64)
 *     "M"                  -> version 1, time and damaged-file count of
 *                             the last reindex (3 x int64); present once
 *                             a reindex built the figures
 *     "C" DOMAIN, "U" USER -> collection records (QUEUE_COLLECT)
 * An entry's record is written when the entry is added and read back when
 * it goes, so a removal takes back exactly what the addition counted, and
 * a removal done twice (a crash before the batched commit) counts once. A
 * flush that delivers some recipients of a domain and defers others keeps
 * the entry: queue_file_done() then batches a recount, committed after the
 * marks are on disk (queue_sync()), which moves the recipients figure by
 * the difference to the entry's record. The oldest message of a domain is
 * its first index entry (IDs sort by arrival); the record keeps a copy so
 * that reading every domain is one walk of stats.db: an addition keeps the
 * smaller ID, the removal of the oldest looks up the new first entry in
 * the same transaction.
 * A message with recipients in two domains counts in both; totals are sums
 * over domains. `odmr-queue reindex` empties the figures with the index
 * (in one transaction) and rebuilds both from the files; collection
 * records survive it.
 *
 * COLLECTIONS. odmrd writes, once per session after the customer is gone,
 * the record of each domain the session collected and of the SASL user:
 * the time of the last authorized ATRN, the outcome of the last session
 * (messages delivered, deferred, bounced), running totals of those for
 * counters, and the last failure's reason with its time.
 */
#ifndef ODMR_QUEUE_STATS_H
#define ODMR_QUEUE_STATS_H

#include <stddef.h>

#include "queue.h"

typedef struct {
    char domain[256];
    unsigned long long messages, recipients, bytes;
    char oldest_id[QUEUE_ID_LEN + 1]; /* "" when the index has none */
    long oldest;                      /* its arrival, epoch seconds; 0 */
} QUEUE_FIGURES;

typedef struct {
    long reindex_time;     /* last reindex that built the figures; 0 never */
    unsigned long long damaged; /* damaged files that reindex found */
} QUEUE_FIGURES_META;

/* Every domain's figures, in domain order (*list_r malloc'd, free()). *built_r
 * (may be NULL) says whether a reindex built them (else they count only
 * what changed since the upgrade: run `odmr-queue reindex` once); a queue
 * with nothing indexed counts as built. 0 or -1 with *error_r. */
int queue_figures_all(QUEUE *q, QUEUE_FIGURES **list_r, size_t *count_r,
                      QUEUE_FIGURES_META *meta_r, int *built_r, char **error_r);
/* The entry of figs[0..count) that holds the oldest message (IDs sort by
 * arrival, so they order what one second does not), or NULL when none
 * holds any. */
const QUEUE_FIGURES *queue_figures_oldest(const QUEUE_FIGURES *figs, size_t count);
/* One domain's figures: 1 (filled in), 0 (nothing held), -1 with *error_r. */
int queue_figures_domain(QUEUE *q, const char *domain, QUEUE_FIGURES *fig_r, int *built_r,
                         char **error_r);
/* Record the damaged files a reindex found. 0 or -1. */
int queue_figures_reindexed(QUEUE *q, size_t damaged, char **error_r);

#define QUEUE_COLLECT_REASON_MAX 200
typedef struct {
    long last_atrn;      /* last authorized ATRN, epoch seconds; 0 never */
    long last_end;       /* end of that session */
    unsigned long long delivered, deferred, bounced; /* in the last session */
    unsigned long long delivered_total, deferred_total, bounced_total;
    long failure_time;   /* last failure; 0 none */
    char failure[QUEUE_COLLECT_REASON_MAX]; /* its reason, "" none */
} QUEUE_COLLECT;

/* One session's outcome for one domain (or the user: the sums). */
typedef struct {
    const char *name;
    unsigned long long delivered, deferred, bounced;
    const char *failure; /* NULL or "" when the session did not fail */
} QUEUE_COLLECT_RESULT;

/* Record a session that began with an ATRN authorized at atrn_time and
 * ended at end_time: the records of domains[0..count) and of user (may be
 * NULL), in one transaction (not flushed to disk on its own: the next
 * durable commit or checkpoint takes it along). 0 or -1 with *error_r. */
int queue_collect_record(QUEUE *q, long atrn_time, long end_time,
                         const QUEUE_COLLECT_RESULT *domains, size_t count,
                         const QUEUE_COLLECT_RESULT *user, char **error_r);
/* One record: 1 found, 0 none, -1 with *error_r. user: look up a SASL
 * user instead of a domain. */
int queue_collect_get(QUEUE *q, const char *name, int user, QUEUE_COLLECT *c_r,
                      char **error_r);
/* Every record of one kind, in name order: fn(name, record, ctx); a
 * non-zero return stops the walk and is returned. */
int queue_collect_walk(QUEUE *q, int user,
                       int (*fn)(const char *name, const QUEUE_COLLECT *c, void *ctx),
                       void *ctx, char **error_r);

#endif
