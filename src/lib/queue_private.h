/*
 * queue_private.h - internals shared by queue.c (environment, index, locks,
 * IDs) and queue_file.c (queue files: writer, reader, removal, reindex).
 * Nothing outside src/lib/queue*.c includes this.
 */
#ifndef ODMR_QUEUE_PRIVATE_H
#define ODMR_QUEUE_PRIVATE_H

#include <db.h>
#include <stddef.h>
#include <sys/types.h>

#include "queue.h"
#include "util.h"

#define QUEUE_XY_DIRS 256
/* Where the ID starts in a queue file: strlen("ODMRQ 1\nid "). */
#define QUEUE_ID_LINE_OFFSET 11

/* One pending index change, committed by queue_sync(): a removal, or an
 * addition (add = 1; the notice list), or (add = QUEUE_PAIR_RECOUNT) a
 * new count of the domain's queued recipients in a file whose entry stays
 * (queue_stats.c). rcpts and bytes: what a domain entry that is added
 * counts in the domain's figures (its queued recipients in the file, the
 * file's content length). */
#define QUEUE_PAIR_RECOUNT 2
typedef struct {
    char *domain;
    char id[QUEUE_ID_LEN + 1];
    int add;
    unsigned rcpts;
    long long bytes;
} QUEUE_PAIR;

/* Index keys no domain name can have (domain names start with a letter or
 * digit): the notice list, and the delay-warning watermarks (prefix +
 * domain). Walks over domains skip keys that start with a control byte. */
#define QUEUE_NOTICE_KEY "\001notice"
#define QUEUE_WARN_MARK_PREFIX '\002'

struct queue {
    char *dir;
    int flags;
    pid_t pid;             /* opener: a forked child must not touch the env */
    int dir_fd;            /* the queue directory and its subdirectories, */
    int incoming_fd;       /* kept open so every file operation is a *at() */
    int msg_fd;            /* call without path lookups from the root */
    int status_fd;
    int lock_fd;
    int xy_fd[QUEUE_XY_DIRS]; /* msg/XY, opened on first use, -1 before */
    DB_ENV *env;
    DB *db;
    DB *stats_db;          /* figures and collections (queue_stats.c) */
    unsigned commits;      /* since the last checkpoint attempt */
    QUEUE_PAIR *pending;   /* batched index removals */
    size_t pending_count, pending_alloc;
    int *sync_fds;         /* marked files waiting for fdatasync */
    size_t sync_count, sync_alloc;
    struct queue_reaper *reaper; /* removal thread, started on first use */
    dev_t region_dev;      /* db/__db.001 when the environment was opened: */
    ino_t region_ino;      /* recovery by another process replaces it */
    int recover_next;      /* left a wedged environment: recover at reopen */
    int reg_fd;            /* db/__db.register of the open environment, for
                            * the watchdog: closed only after the
                            * environment (closing any descriptor of a file
                            * drops the process's fcntl locks on it, and
                            * Berkeley DB's registry slot is such a lock) */
};

struct queue_file {
    QUEUE *q;
    int fd;
    int writable;
    int marked;
    int locked;      /* queue_file_lock() */
    QUEUE_ENV env;
};

/* Pending removals / syncs before queue_sync() runs by itself. */
#define QUEUE_BATCH_MAX 100

/* queue.c */
/* *error_r = formatted text (malloc'd); nothing when error_r is NULL. */
void queue_error(char **error_r, const char *fmt, ...) ODMR_PRINTF(2, 3);
int queue_id_valid(const char *id);
int queue_xy_index(const char *id);
int queue_xy_fd(QUEUE *q, const char *id, int create, char **error_r);
/* Add (domain, id) for each domain in one transaction (durable when
 * index_sync), with the domain's figures: rcpts[i] recipients of
 * domains[i], bytes of content. 0 or -1. */
int queue_index_add(QUEUE *q, char *const *domains, const unsigned *rcpts, size_t count,
                    const char *id, long long bytes, char **error_r);
/* Add pairs in one transaction (existing pairs are fine): 0 or -1. */
int queue_index_add_pairs(QUEUE *q, const QUEUE_PAIR *pairs, size_t count, char **error_r);
/* Remove pairs in one transaction (missing pairs are fine): 0 or -1. */
int queue_index_remove(QUEUE *q, const QUEUE_PAIR *pairs, size_t count, char **error_r);
/* Empty the index: 0 or -1. */
int queue_index_truncate(QUEUE *q, char **error_r);
void queue_pending_add(QUEUE *q, const char *domain, const char *id);
/* Batch putting id on the notice list (add = 1) or taking it off (0). */
void queue_pending_notice(QUEUE *q, const char *id, int add);
/* Remove a finished queue file (msg/XY/ID and status/ID) and close fd,
 * its last descriptor, off the caller's path: a thread does the unlinks
 * and the close (where ext4 frees the blocks, with a synchronous discard
 * on file systems mounted with -o discard). queue_sync() and queue_close()
 * wait until every handed-over removal is done. Falls back to doing it
 * here when the thread cannot start. 0, or -1 with errno (synchronous
 * failure only; a failure in the thread is reported by queue_sync()). */
int queue_remove_file(QUEUE *q, int xy_fd, const char *id, int fd);
/* Wait for the removal thread to catch up: 0, or -1 with *error_r when a
 * removal failed meanwhile. */
int queue_reaper_drain(QUEUE *q, char **error_r);
void queue_sync_fd_add(QUEUE *q, int fd);

/* Transactions (queue.c): run fn in a transaction, again after a conflict
 * (fn must be repeatable). */
typedef int (*QUEUE_TXN_FN)(QUEUE *q, DB_TXN *txn, void *ctx);
#define QUEUE_TXN_READ 1    /* read committed: locks go as the cursor moves */
#define QUEUE_TXN_DURABLE 2 /* flush the log before returning (index_sync) */
int queue_txn_run(QUEUE *q, const char *what, int flags, QUEUE_TXN_FN fn, void *ctx,
                  char **error_r);
void queue_dbt_set(DBT *dbt, const void *data, size_t len);

/* queue_stats.c: the figures kept beside the index, changed in the index's
 * own transactions. Each returns 0 or a Berkeley DB error. */
/* Open stats.db in q->env (after index.db): 0 or the Berkeley DB error. */
int queue_stats_open(QUEUE *q, char **error_r);
/* A domain entry (p->domain, p->id) was added: count p->rcpts, p->bytes. */
int queue_stats_added(QUEUE *q, DB_TXN *txn, const QUEUE_PAIR *p);
/* A domain entry was removed: take back what it counted. */
int queue_stats_removed(QUEUE *q, DB_TXN *txn, const char *domain, size_t len,
                        const char *id);
/* A kept entry now has p->rcpts queued recipients. */
int queue_stats_recount(QUEUE *q, DB_TXN *txn, const QUEUE_PAIR *p);
/* In the transaction that empties the index (reindex): empty the figures,
 * keep the collection records, mark the figures as kept from now on. */
int queue_stats_truncate(QUEUE *q, DB_TXN *txn);
/* The queued recipients of each of domains[0..count) in env (malloc'd;
 * at least one element). */
unsigned *queue_stats_rcpts(const QUEUE_ENV *env, char *const *domains, size_t count);
/* Put p on the pending list: a recount (queue_file_done). */
void queue_pending_recount(QUEUE *q, const char *domain, const char *id, unsigned queued);

/* The watchdog (WATCHDOG in queue.h). queue_guard_call() runs
 * call(q, arg) as a guarded call and returns its result, or QUEUE_STUCK
 * when the watchdog made it leave a wedged environment (then q->env and
 * q->db are abandoned and the next use reopens, recovering). A call is
 * stuck after queue_stuck_ms (10 s; tests make it shorter). */
#define QUEUE_STUCK (-31900)
extern int queue_stuck_ms;
int queue_guard_call(QUEUE *q, int (*call)(QUEUE *, void *), void *arg);


#endif
