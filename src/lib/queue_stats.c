/*
 * queue_stats.c - per-domain queue figures kept in stats.db beside the
 * index, in the index's own transactions, and collection records. See
 * queue_stats.h for the keys and the rules.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "queue_private.h"
#include "queue_stats.h"
#include "util.h"

#define STATS_FIGURES 'F'
#define STATS_ENTRY 'E'
#define STATS_META 'M'
#define STATS_COLLECT_DOMAIN 'C'
#define STATS_COLLECT_USER 'U'
#define STATS_VERSION 1
#define STATS_OPEN_RETRIES 50
#define STATS_KEY_MAX (2 + 256 + QUEUE_ID_LEN)

typedef struct {
    uint64_t messages, recipients, bytes;
    char oldest[QUEUE_ID_LEN]; /* the domain's first index entry */
} STATS_FIG;

typedef struct {
    uint64_t recipients, bytes;
} STATS_ENT;

typedef struct {
    int64_t version, reindex_time;
    uint64_t damaged;
} STATS_META_REC;

/* Stored as is: fixed-size fields only (the environment is local). */
typedef struct {
    int64_t last_atrn, last_end;
    uint64_t delivered, deferred, bounced;
    uint64_t delivered_total, deferred_total, bounced_total;
    int64_t failure_time;
    char failure[QUEUE_COLLECT_REASON_MAX];
} STATS_COLLECT_REC;

static int stats_put(QUEUE *q, DB_TXN *txn, const char *key, size_t klen, const void *rec,
                     size_t size);

/* A new stats.db next to an index without domains (a new queue) holds
 * complete figures from the start: say so. Next to an index with domains
 * (an upgrade) it waits for a reindex. Errors are ignored: stats then
 * asks for a reindex. */
static void
stats_mark_new(QUEUE *q)
{
    STATS_META_REC meta;
    char mkey = STATS_META;
    DB_TXN *txn;
    DBT k, d;
    DBC *cur;
    int ret;

    if (q->env->txn_begin(q->env, NULL, &txn, DB_TXN_NOWAIT) != 0)
        return;
    if ((ret = q->db->cursor(q->db, txn, &cur, 0)) == 0) {
        queue_dbt_set(&k, " ", 1);
        queue_dbt_set(&d, NULL, 0);
        ret = cur->get(cur, &k, &d, DB_SET_RANGE);
        (void) cur->close(cur);
    }
    if (ret == DB_NOTFOUND) {
        memset(&meta, 0, sizeof(meta));
        meta.version = STATS_VERSION;
        ret = stats_put(q, txn, &mkey, 1, &meta, sizeof(meta));
        if (ret == 0) {
            (void) txn->commit(txn, 0);
            return;
        }
    }
    (void) txn->abort(txn);
}

int
queue_stats_open(QUEUE *q, char **error_r)
{
    int ret = 0, created = 0;

    for (int attempt = 0;; attempt++) {
        DB *db;

        if ((ret = db_create(&db, q->env, 0)) != 0)
            break;
        ret = db->open(db, NULL, "stats.db", NULL, DB_BTREE,
                       (created ? DB_CREATE : 0) | DB_AUTO_COMMIT, 0600);
        if (ret == ENOENT && !created) {
            (void) db->close(db, 0);
            created = 1;
            attempt--;
            continue;
        }
        if (ret == 0) {
            q->stats_db = db;
            if (created)
                stats_mark_new(q);
            return 0;
        }
        (void) db->close(db, 0);
        if (ret != DB_LOCK_DEADLOCK || attempt >= STATS_OPEN_RETRIES)
            break;
        usleep(1000);
    }
    queue_error(error_r, "queue index: open stats.db: %s", db_strerror(ret));
    return ret;
}

/* key = prefix, name[0..len), and (when id) NUL, id. Its length. */
static size_t
stats_key(char *key, int prefix, const char *name, size_t len, const char *id)
{
    size_t n = 0;

    if (len > 255)
        len = 255;
    key[n++] = (char) prefix;
    memcpy(key + n, name, len);
    n += len;
    if (id != NULL) {
        key[n++] = 0;
        memcpy(key + n, id, QUEUE_ID_LEN);
        n += QUEUE_ID_LEN;
    }
    return n;
}

/* Get a record of exactly size bytes: 0, DB_NOTFOUND (also for a record
 * of another size) or an error. */
static int
stats_get(QUEUE *q, DB_TXN *txn, const char *key, size_t klen, void *rec, size_t size,
          u_int32_t flags)
{
    DBT k, d;
    int ret;

    queue_dbt_set(&k, key, klen);
    queue_dbt_set(&d, rec, size);
    d.ulen = (u_int32_t) size;
    d.flags = DB_DBT_USERMEM;
    ret = q->stats_db->get(q->stats_db, txn, &k, &d, flags);
    if (ret == DB_BUFFER_SMALL || (ret == 0 && d.size != size))
        return DB_NOTFOUND;
    return ret;
}

static int
stats_put(QUEUE *q, DB_TXN *txn, const char *key, size_t klen, const void *rec, size_t size)
{
    DBT k, d;

    queue_dbt_set(&k, key, klen);
    queue_dbt_set(&d, rec, size);
    return q->stats_db->put(q->stats_db, txn, &k, &d, 0);
}

static int
stats_del(QUEUE *q, DB_TXN *txn, const char *key, size_t klen)
{
    DBT k;
    int ret;

    queue_dbt_set(&k, key, klen);
    ret = q->stats_db->del(q->stats_db, txn, &k, 0);
    return ret == DB_NOTFOUND ? 0 : ret;
}

static uint64_t
sub_floor(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

/* The domain's first index entry (its oldest message: IDs sort by
 * arrival) into oldest; 0, DB_NOTFOUND or an error. */
static int
stats_first_entry(QUEUE *q, DB_TXN *txn, const char *domain, size_t len, char *oldest)
{
    DBT k, d;
    DBC *cur;
    int ret;

    if ((ret = q->db->cursor(q->db, txn, &cur, 0)) != 0)
        return ret;
    queue_dbt_set(&k, domain, len);
    queue_dbt_set(&d, NULL, 0);
    ret = cur->get(cur, &k, &d, DB_SET);
    if (ret == 0 && d.size == QUEUE_ID_LEN)
        memcpy(oldest, d.data, QUEUE_ID_LEN);
    (void) cur->close(cur);
    return ret;
}

/* Add (sign > 0) or take back one entry's counts from the domain's
 * figures; the record goes when no message is left. id: the entry added
 * or removed (NULL for a recount): the oldest ID follows it. */
static int
stats_figures_change(QUEUE *q, DB_TXN *txn, const char *domain, size_t len, int sign,
                     uint64_t messages, uint64_t recipients, uint64_t bytes, const char *id)
{
    char key[STATS_KEY_MAX];
    size_t klen = stats_key(key, STATS_FIGURES, domain, len, NULL);
    STATS_FIG fig;
    int ret;

    ret = stats_get(q, txn, key, klen, &fig, sizeof(fig), DB_RMW);
    if (ret == DB_NOTFOUND)
        memset(&fig, 0, sizeof(fig));
    else if (ret != 0)
        return ret;
    if (sign > 0) {
        fig.messages += messages;
        fig.recipients += recipients;
        fig.bytes += bytes;
        /* New IDs are the newest, but reindex may add in any order. */
        if (id != NULL && (fig.oldest[0] == 0 || memcmp(id, fig.oldest, QUEUE_ID_LEN) < 0))
            memcpy(fig.oldest, id, QUEUE_ID_LEN);
    } else {
        fig.messages = sub_floor(fig.messages, messages);
        fig.recipients = sub_floor(fig.recipients, recipients);
        fig.bytes = sub_floor(fig.bytes, bytes);
    }
    if (fig.messages == 0)
        return stats_del(q, txn, key, klen);
    /* The oldest went (a flush sends the oldest first): the next one is
     * the domain's first index entry now. */
    if (sign < 0 && id != NULL
        && (fig.oldest[0] == 0 || memcmp(id, fig.oldest, QUEUE_ID_LEN) == 0)) {
        ret = stats_first_entry(q, txn, domain, len, fig.oldest);
        if (ret == DB_NOTFOUND)
            memset(fig.oldest, 0, sizeof(fig.oldest));
        else if (ret != 0)
            return ret;
    }
    return stats_put(q, txn, key, klen, &fig, sizeof(fig));
}

int
queue_stats_added(QUEUE *q, DB_TXN *txn, const QUEUE_PAIR *p)
{
    char key[STATS_KEY_MAX];
    size_t len = strlen(p->domain);
    size_t klen = stats_key(key, STATS_ENTRY, p->domain, len, p->id);
    STATS_ENT ent;
    int ret;

    ent.recipients = p->rcpts;
    ent.bytes = p->bytes > 0 ? (uint64_t) p->bytes : 0;
    if ((ret = stats_put(q, txn, key, klen, &ent, sizeof(ent))) != 0)
        return ret;
    return stats_figures_change(q, txn, p->domain, len, 1, 1, ent.recipients, ent.bytes, p->id);
}

int
queue_stats_removed(QUEUE *q, DB_TXN *txn, const char *domain, size_t len, const char *id)
{
    char key[STATS_KEY_MAX];
    size_t klen = stats_key(key, STATS_ENTRY, domain, len, id);
    STATS_ENT ent;
    int ret;

    ret = stats_get(q, txn, key, klen, &ent, sizeof(ent), DB_RMW);
    if (ret == DB_NOTFOUND)
        memset(&ent, 0, sizeof(ent)); /* indexed before the figures were kept */
    else if (ret != 0)
        return ret;
    else if ((ret = stats_del(q, txn, key, klen)) != 0)
        return ret;
    return stats_figures_change(q, txn, domain, len, -1, 1, ent.recipients, ent.bytes, id);
}

int
queue_stats_recount(QUEUE *q, DB_TXN *txn, const QUEUE_PAIR *p)
{
    char key[STATS_KEY_MAX];
    size_t len = strlen(p->domain);
    size_t klen = stats_key(key, STATS_ENTRY, p->domain, len, p->id);
    STATS_ENT ent;
    int ret;

    ret = stats_get(q, txn, key, klen, &ent, sizeof(ent), DB_RMW);
    if (ret == DB_NOTFOUND)
        return 0; /* the entry is gone (or predates the figures) */
    if (ret != 0 || ent.recipients == p->rcpts)
        return ret;
    if (p->rcpts < ent.recipients)
        ret = stats_figures_change(q, txn, p->domain, len, -1, 0, ent.recipients - p->rcpts, 0,
                                   NULL);
    else
        ret = stats_figures_change(q, txn, p->domain, len, 1, 0, p->rcpts - ent.recipients, 0,
                                   NULL);
    if (ret != 0)
        return ret;
    ent.recipients = p->rcpts;
    return stats_put(q, txn, key, klen, &ent, sizeof(ent));
}

unsigned *
queue_stats_rcpts(const QUEUE_ENV *env, char *const *domains, size_t count)
{
    unsigned *n = x_calloc(count ? count : 1, sizeof(*n));

    for (size_t i = 0; i < env->rcpt_count; i++) {
        const char *d;

        if (env->rcpt[i].status != QUEUE_RCPT_QUEUED
            || (d = addr_domain(env->rcpt[i].address)) == NULL)
            continue;
        for (size_t j = 0; j < count; j++)
            if (str_casecmp(d, domains[j]) == 0) {
                n[j]++;
                break;
            }
    }
    return n;
}

typedef struct {
    DBT *keys, *data;
    size_t count, alloc;
} STATS_SAVED;

static void
saved_reset(STATS_SAVED *s)
{
    for (size_t i = 0; i < s->count; i++) {
        free(s->keys[i].data);
        free(s->data[i].data);
    }
    s->count = 0;
}

int
queue_stats_truncate(QUEUE *q, DB_TXN *txn)
{
    STATS_SAVED s = {NULL, NULL, 0, 0};
    STATS_META_REC meta;
    u_int32_t count;
    DBT k, d;
    DBC *cur;
    int ret;
    char mkey = STATS_META;

    /* The collection records survive: keep them aside, empty the
     * database, put them back. */
    if ((ret = q->stats_db->cursor(q->stats_db, txn, &cur, 0)) != 0)
        return ret;
    queue_dbt_set(&k, NULL, 0);
    queue_dbt_set(&d, NULL, 0);
    while ((ret = cur->get(cur, &k, &d, DB_NEXT)) == 0) {
        int c = k.size > 0 ? *(const char *) k.data : 0;

        if (c != STATS_COLLECT_DOMAIN && c != STATS_COLLECT_USER)
            continue;
        if (s.count == s.alloc) {
            s.alloc = s.alloc ? s.alloc * 2 : 64;
            s.keys = x_realloc(s.keys, s.alloc * sizeof(*s.keys));
            s.data = x_realloc(s.data, s.alloc * sizeof(*s.data));
        }
        queue_dbt_set(&s.keys[s.count], memcpy(x_malloc(k.size), k.data, k.size), k.size);
        queue_dbt_set(&s.data[s.count], memcpy(x_malloc(d.size ? d.size : 1), d.data, d.size),
                      d.size);
        s.count++;
    }
    (void) cur->close(cur);
    if (ret == DB_NOTFOUND)
        ret = q->stats_db->truncate(q->stats_db, txn, &count, 0);
    for (size_t i = 0; ret == 0 && i < s.count; i++)
        ret = q->stats_db->put(q->stats_db, txn, &s.keys[i], &s.data[i], 0);
    saved_reset(&s);
    free(s.keys);
    free(s.data);
    if (ret != 0)
        return ret;
    memset(&meta, 0, sizeof(meta));
    meta.version = STATS_VERSION;
    meta.reindex_time = (int64_t) time(NULL);
    return stats_put(q, txn, &mkey, 1, &meta, sizeof(meta));
}

/* ---- reading the figures --------------------------------------------------- */

typedef struct {
    QUEUE_FIGURES *list;
    size_t count, alloc;
    const char *domain; /* one domain, or NULL for all */
    int built, found;
    STATS_META_REC meta;
} FIG_CTX;

static void
fig_fill(QUEUE_FIGURES *f, const char *domain, size_t len, const STATS_FIG *fig)
{
    memset(f, 0, sizeof(*f));
    if (len > sizeof(f->domain) - 1)
        len = sizeof(f->domain) - 1;
    memcpy(f->domain, domain, len);
    f->messages = fig->messages;
    f->recipients = fig->recipients;
    f->bytes = fig->bytes;
    if (fig->oldest[0] != 0) {
        memcpy(f->oldest_id, fig->oldest, QUEUE_ID_LEN);
        f->oldest_id[QUEUE_ID_LEN] = 0;
        f->oldest = queue_id_time(f->oldest_id);
        if (f->oldest < 0) {
            f->oldest = 0;
            f->oldest_id[0] = 0;
        }
    }
}

/* Is the figures' meta record there, or the index empty of domains? */
static int
fig_built(QUEUE *q, DB_TXN *txn, FIG_CTX *c)
{
    char mkey = STATS_META;
    DBT k, d;
    DBC *cur;
    int ret;

    ret = stats_get(q, txn, &mkey, 1, &c->meta, sizeof(c->meta), 0);
    if (ret == 0) {
        c->built = 1;
        return 0;
    }
    memset(&c->meta, 0, sizeof(c->meta));
    if (ret != DB_NOTFOUND)
        return ret;
    /* The first key at or after " ": a domain (control-byte keys sort
     * first). */
    if ((ret = q->db->cursor(q->db, txn, &cur, 0)) != 0)
        return ret;
    queue_dbt_set(&k, " ", 1);
    queue_dbt_set(&d, NULL, 0);
    ret = cur->get(cur, &k, &d, DB_SET_RANGE);
    (void) cur->close(cur);
    c->built = ret == DB_NOTFOUND;
    return ret == DB_NOTFOUND ? 0 : ret;
}

static int
fig_all_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    FIG_CTX *c = ctx;
    char prefix = STATS_FIGURES;
    DBT k, d;
    DBC *cur;
    int ret;

    c->count = 0; /* again after a conflict */
    if ((ret = fig_built(q, txn, c)) != 0)
        return ret;
    if ((ret = q->stats_db->cursor(q->stats_db, txn, &cur, 0)) != 0)
        return ret;
    queue_dbt_set(&k, &prefix, 1);
    queue_dbt_set(&d, NULL, 0);
    for (ret = cur->get(cur, &k, &d, DB_SET_RANGE); ret == 0;
         ret = cur->get(cur, &k, &d, DB_NEXT)) {
        STATS_FIG fig;

        if (k.size < 2 || *(const char *) k.data != STATS_FIGURES)
            break;
        if (d.size != sizeof(fig))
            continue;
        memcpy(&fig, d.data, sizeof(fig));
        if (c->count == c->alloc) {
            c->alloc = c->alloc ? c->alloc * 2 : 256;
            c->list = x_realloc(c->list, c->alloc * sizeof(*c->list));
        }
        fig_fill(&c->list[c->count], (const char *) k.data + 1, k.size - 1, &fig);
        c->count++;
    }
    (void) cur->close(cur);
    return ret == DB_NOTFOUND ? 0 : ret;
}

const QUEUE_FIGURES *
queue_figures_oldest(const QUEUE_FIGURES *figs, size_t count)
{
    const QUEUE_FIGURES *oldest = NULL;

    for (size_t i = 0; i < count; i++)
        if (figs[i].oldest_id[0]
            && (oldest == NULL || strcmp(figs[i].oldest_id, oldest->oldest_id) < 0))
            oldest = &figs[i];
    return oldest;
}

int
queue_figures_all(QUEUE *q, QUEUE_FIGURES **list_r, size_t *count_r, QUEUE_FIGURES_META *meta_r,
                  int *built_r, char **error_r)
{
    FIG_CTX c;

    memset(&c, 0, sizeof(c));
    if (queue_txn_run(q, "figures", QUEUE_TXN_READ, fig_all_fn, &c, error_r) < 0) {
        free(c.list);
        return -1;
    }
    *list_r = c.list;
    *count_r = c.count;
    if (built_r != NULL)
        *built_r = c.built;
    if (meta_r != NULL) {
        meta_r->reindex_time = (long) c.meta.reindex_time;
        meta_r->damaged = c.meta.damaged;
    }
    return 0;
}

static int
fig_one_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    FIG_CTX *c = ctx;
    char key[STATS_KEY_MAX];
    size_t len = strlen(c->domain);
    size_t klen = stats_key(key, STATS_FIGURES, c->domain, len, NULL);
    STATS_FIG fig;
    int ret;

    c->found = 0;
    if ((ret = fig_built(q, txn, c)) != 0)
        return ret;
    ret = stats_get(q, txn, key, klen, &fig, sizeof(fig), 0);
    if (ret == DB_NOTFOUND)
        return 0;
    if (ret != 0)
        return ret;
    fig_fill(c->list, c->domain, len, &fig);
    c->found = 1;
    return 0;
}

int
queue_figures_domain(QUEUE *q, const char *domain, QUEUE_FIGURES *fig_r, int *built_r,
                     char **error_r)
{
    char *key = str_lower(x_strdup(domain));
    FIG_CTX c;
    int ret;

    memset(&c, 0, sizeof(c));
    memset(fig_r, 0, sizeof(*fig_r));
    c.domain = key;
    c.list = fig_r;
    if (strlen(key) > 253) {
        free(key);
        queue_error(error_r, "bad domain name \"%.100s\"", domain);
        return -1;
    }
    ret = queue_txn_run(q, "figures", QUEUE_TXN_READ, fig_one_fn, &c, error_r);
    free(key);
    if (built_r != NULL)
        *built_r = c.built;
    return ret < 0 ? -1 : c.found;
}

typedef struct {
    size_t damaged;
} META_CTX;

static int
meta_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    META_CTX *m = ctx;
    char mkey = STATS_META;
    STATS_META_REC meta;
    int ret;

    ret = stats_get(q, txn, &mkey, 1, &meta, sizeof(meta), DB_RMW);
    if (ret == DB_NOTFOUND) {
        memset(&meta, 0, sizeof(meta));
        meta.version = STATS_VERSION;
        meta.reindex_time = (int64_t) time(NULL);
    } else if (ret != 0) {
        return ret;
    }
    meta.damaged = m->damaged;
    return stats_put(q, txn, &mkey, 1, &meta, sizeof(meta));
}

int
queue_figures_reindexed(QUEUE *q, size_t damaged, char **error_r)
{
    META_CTX m = {damaged};

    return queue_txn_run(q, "figures", 0, meta_fn, &m, error_r);
}

/* ---- collections ------------------------------------------------------------ */

typedef struct {
    long atrn_time, end_time;
    const QUEUE_COLLECT_RESULT *domains;
    size_t count;
    const QUEUE_COLLECT_RESULT *user;
} COLLECT_CTX;

static int
collect_one(QUEUE *q, DB_TXN *txn, int prefix, const COLLECT_CTX *c,
            const QUEUE_COLLECT_RESULT *r)
{
    char key[STATS_KEY_MAX];
    size_t len = strlen(r->name);
    size_t klen;
    STATS_COLLECT_REC rec;
    int ret;

    if (len == 0 || len > 255)
        return 0;
    klen = stats_key(key, prefix, r->name, len, NULL);
    if (prefix == STATS_COLLECT_DOMAIN)
        for (size_t i = 1; i < klen; i++)
            if (key[i] >= 'A' && key[i] <= 'Z')
                key[i] += 'a' - 'A';
    ret = stats_get(q, txn, key, klen, &rec, sizeof(rec), DB_RMW);
    if (ret == DB_NOTFOUND)
        memset(&rec, 0, sizeof(rec));
    else if (ret != 0)
        return ret;
    rec.last_atrn = c->atrn_time;
    rec.last_end = c->end_time;
    rec.delivered = r->delivered;
    rec.deferred = r->deferred;
    rec.bounced = r->bounced;
    rec.delivered_total += r->delivered;
    rec.deferred_total += r->deferred;
    rec.bounced_total += r->bounced;
    if (r->failure != NULL && r->failure[0] != 0) {
        rec.failure_time = c->end_time;
        str_copy(rec.failure, r->failure, sizeof(rec.failure));
        for (char *p = rec.failure; *p; p++)
            if ((unsigned char) *p < 0x20 || *p == 0x7f)
                *p = '?';
    }
    return stats_put(q, txn, key, klen, &rec, sizeof(rec));
}

static int
collect_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    COLLECT_CTX *c = ctx;
    int ret = 0;

    for (size_t i = 0; ret == 0 && i < c->count; i++)
        ret = collect_one(q, txn, STATS_COLLECT_DOMAIN, c, &c->domains[i]);
    if (ret == 0 && c->user != NULL)
        ret = collect_one(q, txn, STATS_COLLECT_USER, c, c->user);
    return ret;
}

int
queue_collect_record(QUEUE *q, long atrn_time, long end_time,
                     const QUEUE_COLLECT_RESULT *domains, size_t count,
                     const QUEUE_COLLECT_RESULT *user, char **error_r)
{
    COLLECT_CTX c = {atrn_time, end_time, domains, count, user};

    if (q->flags & QUEUE_OPEN_READONLY) {
        queue_error(error_r, "queue %s: opened read-only", q->dir);
        return -1;
    }
    /* Not durable on its own: a record lost in a crash costs a figure,
     * never mail; the next durable commit takes it along. */
    return queue_txn_run(q, "collection", 0, collect_fn, &c, error_r);
}

static void
collect_fill(QUEUE_COLLECT *c, const STATS_COLLECT_REC *rec)
{
    memset(c, 0, sizeof(*c));
    c->last_atrn = (long) rec->last_atrn;
    c->last_end = (long) rec->last_end;
    c->delivered = rec->delivered;
    c->deferred = rec->deferred;
    c->bounced = rec->bounced;
    c->delivered_total = rec->delivered_total;
    c->deferred_total = rec->deferred_total;
    c->bounced_total = rec->bounced_total;
    c->failure_time = (long) rec->failure_time;
    memcpy(c->failure, rec->failure, sizeof(c->failure));
    c->failure[sizeof(c->failure) - 1] = 0;
}

typedef struct {
    const char *name;
    int prefix, found;
    QUEUE_COLLECT *c;
    /* walk */
    char **names;
    QUEUE_COLLECT *recs;
    size_t count, alloc;
} COLLECT_GET_CTX;

static int
collect_get_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    COLLECT_GET_CTX *g = ctx;
    char key[STATS_KEY_MAX];
    size_t klen = stats_key(key, g->prefix, g->name, strlen(g->name), NULL);
    STATS_COLLECT_REC rec;
    int ret;

    ret = stats_get(q, txn, key, klen, &rec, sizeof(rec), 0);
    g->found = ret == 0;
    if (ret == 0)
        collect_fill(g->c, &rec);
    return ret == DB_NOTFOUND ? 0 : ret;
}

int
queue_collect_get(QUEUE *q, const char *name, int user, QUEUE_COLLECT *c_r, char **error_r)
{
    COLLECT_GET_CTX g;
    char *key = x_strdup(name);

    memset(&g, 0, sizeof(g));
    if (!user)
        str_lower(key);
    g.name = key;
    g.prefix = user ? STATS_COLLECT_USER : STATS_COLLECT_DOMAIN;
    g.c = c_r;
    if (strlen(key) > 255) {
        free(key);
        return 0;
    }
    if (queue_txn_run(q, "collection", QUEUE_TXN_READ, collect_get_fn, &g, error_r) < 0) {
        free(key);
        return -1;
    }
    free(key);
    return g.found;
}

static void
collect_walk_reset(COLLECT_GET_CTX *g)
{
    for (size_t i = 0; i < g->count; i++)
        free(g->names[i]);
    g->count = 0;
}

static int
collect_walk_fn(QUEUE *q, DB_TXN *txn, void *ctx)
{
    COLLECT_GET_CTX *g = ctx;
    char prefix = (char) g->prefix;
    DBT k, d;
    DBC *cur;
    int ret;

    collect_walk_reset(g);
    if ((ret = q->stats_db->cursor(q->stats_db, txn, &cur, 0)) != 0)
        return ret;
    queue_dbt_set(&k, &prefix, 1);
    queue_dbt_set(&d, NULL, 0);
    for (ret = cur->get(cur, &k, &d, DB_SET_RANGE); ret == 0;
         ret = cur->get(cur, &k, &d, DB_NEXT)) {
        STATS_COLLECT_REC rec;

        if (k.size < 2 || *(const char *) k.data != prefix)
            break;
        if (d.size != sizeof(rec))
            continue;
        memcpy(&rec, d.data, sizeof(rec));
        if (g->count == g->alloc) {
            g->alloc = g->alloc ? g->alloc * 2 : 64;
            g->names = x_realloc(g->names, g->alloc * sizeof(*g->names));
            g->recs = x_realloc(g->recs, g->alloc * sizeof(*g->recs));
        }
        g->names[g->count] = x_strndup((const char *) k.data + 1, k.size - 1);
        collect_fill(&g->recs[g->count], &rec);
        g->count++;
    }
    (void) cur->close(cur);
    return ret == DB_NOTFOUND ? 0 : ret;
}

int
queue_collect_walk(QUEUE *q, int user,
                   int (*fn)(const char *name, const QUEUE_COLLECT *c, void *ctx), void *ctx,
                   char **error_r)
{
    COLLECT_GET_CTX g;
    int ret;

    memset(&g, 0, sizeof(g));
    g.prefix = user ? STATS_COLLECT_USER : STATS_COLLECT_DOMAIN;
    ret = queue_txn_run(q, "collections", QUEUE_TXN_READ, collect_walk_fn, &g, error_r);
    for (size_t i = 0; ret == 0 && i < g.count; i++)
        ret = fn(g.names[i], &g.recs[i], ctx);
    collect_walk_reset(&g);
    free(g.names);
    free(g.recs);
    return ret;
}
