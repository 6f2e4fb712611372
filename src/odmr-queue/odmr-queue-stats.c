/*
 * odmr-queue-stats.c - odmr-queue stats: the kept per-domain figures and
 * collection records (src/lib/queue_stats.h), as text, JSON or the
 * Prometheus text exposition format for node_exporter's textfile collector.
 * A whole-queue answer costs O(domains), one domain O(1) index lookups;
 * --walk counts the files as before (O(messages)).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "odmr-queue.h"
#include "queue.h"
#include "queue_stats.h"
#include "util.h"

static char *stats_tmp_path; /* -o: the temporary file, renamed at the end */

int
stats_parse(int argc, char **argv, STATS_OPTS *o)
{
    memset(o, 0, sizeof(*o));
    o->stale_days = -1;
    o->out_fd = -1;
    o->now = (long) time(NULL);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(a, "--walk") == 0) {
            o->walk = 1;
        } else if (strcmp(a, "--prometheus") == 0) {
            o->prometheus = 1;
        } else if (strcmp(a, "-d") == 0 && v != NULL) {
            if (!domain_valid(v))
                return -1;
            o->domain = v;
            i++;
        } else if (strcmp(a, "-u") == 0 && v != NULL && v[0] != 0 && strlen(v) <= 255) {
            o->user = v;
            i++;
        } else if (strcmp(a, "--stale") == 0 && v != NULL
                   && parse_long(v, 0, 100000, &o->stale_days) == 0) {
            i++;
        } else if (strcmp(a, "-o") == 0 && v != NULL && v[0] != 0) {
            o->output = v;
            i++;
        } else if (strcmp(a, "--min-messages") == 0 && v != NULL
                   && parse_long(v, 0, 1L << 40, &o->min_messages) == 0) {
            i++;
        } else if (strcmp(a, "--now") == 0 && v != NULL && parse_now(v, &o->now) == 0) {
            i++;
        } else {
            return -1;
        }
    }
    /* One kind of answer at a time; -o and --min-messages go with
     * --prometheus. */
    if ((o->walk + o->prometheus + (o->domain != NULL) + (o->user != NULL)
         + (o->stale_days >= 0))
        > 1)
        return -1;
    if ((o->output != NULL || o->min_messages > 0) && !o->prometheus)
        return -1;
    if (o->prometheus && o->json)
        return -1;
    return 0;
}

int
stats_output_open(STATS_OPTS *o)
{
    stats_tmp_path = x_asprintf("%s.%ld.tmp", o->output, (long) getpid());
    o->out_fd = open(stats_tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (o->out_fd < 0) {
        msg_warn("create %s: %m", stats_tmp_path);
        return -1;
    }
    /* Readable by the collector whatever the umask. */
    (void) fchmod(o->out_fd, 0644);
    return 0;
}

/* The file is complete: in place, atomically. 0 or -1 (logged). */
static int
stats_output_commit(const STATS_OPTS *o)
{
    if (rename(stats_tmp_path, o->output) < 0) {
        msg_warn("rename %s to %s: %m", stats_tmp_path, o->output);
        (void) unlink(stats_tmp_path);
        return -1;
    }
    return 0;
}

void
stats_output_fork(STATS_OPTS *o)
{
    pid_t pid;
    int status;

    if (geteuid() != 0)
        return;
    if ((pid = fork()) < 0) {
        (void) unlink(stats_tmp_path);
        msg_fatal("fork: %m");
    }
    if (pid == 0) {
        free(stats_tmp_path); /* the parent renames it */
        stats_tmp_path = NULL;
        return;
    }
    (void) close(o->out_fd);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            msg_fatal("waitpid: %m");
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        exit(stats_output_commit(o) < 0 ? EX_CANTCREAT : EX_OK);
    (void) unlink(stats_tmp_path);
    exit(WIFEXITED(status) ? WEXITSTATUS(status) : EX_SOFTWARE);
}

/* ---- JSON ------------------------------------------------------------------- */

static void
json_string(FILE *fp, const char *s)
{
    fputc('"', fp);
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;

        if (c == '"' || c == '\\')
            fprintf(fp, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(fp, "\\u%04x", c);
        else
            fputc(c, fp);
    }
    fputc('"', fp);
}

/* ---- loading ---------------------------------------------------------------- */

typedef struct {
    char **names;
    QUEUE_COLLECT *recs;
    size_t count, alloc;
} COLLECTIONS;

static int
collections_add(const char *name, const QUEUE_COLLECT *c, void *ctx)
{
    COLLECTIONS *cs = ctx;

    if (cs->count == cs->alloc) {
        cs->alloc = cs->alloc ? cs->alloc * 2 : 64;
        cs->names = x_realloc(cs->names, cs->alloc * sizeof(*cs->names));
        cs->recs = x_realloc(cs->recs, cs->alloc * sizeof(*cs->recs));
    }
    cs->names[cs->count] = x_strdup(name);
    cs->recs[cs->count++] = *c;
    return 0;
}

static void
collections_free(COLLECTIONS *cs)
{
    for (size_t i = 0; i < cs->count; i++)
        free(cs->names[i]);
    free(cs->names);
    free(cs->recs);
    memset(cs, 0, sizeof(*cs));
}

static void
collections_load(QUEUE *q, int user, COLLECTIONS *cs)
{
    char *error = NULL;

    memset(cs, 0, sizeof(*cs));
    if (queue_collect_walk(q, user, collections_add, cs, &error) < 0)
        msg_fatal("%s", error);
}

/* The figures of every domain; warns once when they were not built. */
static void
figures_load(QUEUE *q, QUEUE_FIGURES **list_r, size_t *count_r, QUEUE_FIGURES_META *meta_r,
             int *built_r)
{
    char *error = NULL;

    if (queue_figures_all(q, list_r, count_r, meta_r, built_r, &error) < 0)
        msg_fatal("%s", error);
}

/* ---- text and JSON ------------------------------------------------------------ */

static void
print_collect_text(const char *what, const QUEUE_COLLECT *c, int found, long now)
{
    char date[64], age[32];

    if (!found || c->last_atrn == 0) {
        printf("last collection:      never\n");
        return;
    }
    (void) what;
    format_date(c->last_atrn, date, sizeof(date));
    format_age(now - c->last_atrn, age, sizeof(age));
    printf("last collection:      %s (%s ago)\n", date, age);
    printf("last session:         delivered=%llu deferred=%llu bounced=%llu\n", c->delivered,
           c->deferred, c->bounced);
    printf("collected in total:   delivered=%llu deferred=%llu bounced=%llu\n",
           c->delivered_total, c->deferred_total, c->bounced_total);
    if (c->failure_time != 0) {
        format_date(c->failure_time, date, sizeof(date));
        printf("last failure:         %s: %s\n", date, c->failure);
    }
}

static void
print_collect_json(const QUEUE_COLLECT *c, int found)
{
    if (!found || c->last_atrn == 0) {
        printf("\"last_collect\":null,\"last_session\":null,\"last_failure\":null,"
               "\"last_failure_time\":null");
        return;
    }
    printf("\"last_collect\":%ld,\"last_session\":{\"delivered\":%llu,\"deferred\":%llu,"
           "\"bounced\":%llu},\"collected_total\":{\"delivered\":%llu,\"deferred\":%llu,"
           "\"bounced\":%llu},",
           c->last_atrn, c->delivered, c->deferred, c->bounced, c->delivered_total,
           c->deferred_total, c->bounced_total);
    if (c->failure_time != 0) {
        printf("\"last_failure\":");
        json_string(stdout, c->failure);
        printf(",\"last_failure_time\":%ld", c->failure_time);
    } else {
        printf("\"last_failure\":null,\"last_failure_time\":null");
    }
}

static int
stats_domain(QUEUE *q, const STATS_OPTS *o)
{
    QUEUE_FIGURES fig;
    QUEUE_COLLECT c;
    char *error = NULL, age[32];
    int found, cfound, built;

    if ((found = queue_figures_domain(q, o->domain, &fig, &built, &error)) < 0
        || (cfound = queue_collect_get(q, o->domain, 0, &c, &error)) < 0)
        msg_fatal("%s", error);
    if (!built)
        msg_warn("the figures are not complete yet: run \"odmr-queue reindex\" once");
    if (!found) {
        memset(&fig, 0, sizeof(fig));
        str_copy(fig.domain, o->domain, sizeof(fig.domain));
        str_lower(fig.domain);
    }
    if (o->json) {
        printf("{\"domain\":");
        json_string(stdout, fig.domain);
        printf(",\"messages\":%llu,\"recipients_queued\":%llu,\"bytes\":%llu,", fig.messages,
               fig.recipients, fig.bytes);
        if (fig.oldest_id[0])
            printf("\"oldest_id\":\"%s\",\"oldest_arrival\":%ld,\"oldest_age_seconds\":%ld,",
                   fig.oldest_id, fig.oldest, o->now - fig.oldest);
        else
            printf("\"oldest_id\":null,\"oldest_arrival\":null,\"oldest_age_seconds\":null,");
        print_collect_json(&c, cfound);
        printf("}\n");
        return EX_OK;
    }
    printf("domain:               %s\n", fig.domain);
    printf("messages:             %llu\n", fig.messages);
    printf("recipients queued:    %llu\n", fig.recipients);
    printf("bytes:                %llu\n", fig.bytes);
    if (fig.oldest_id[0]) {
        format_age(o->now - fig.oldest, age, sizeof(age));
        printf("oldest message:       %s (%s old)\n", fig.oldest_id, age);
    }
    print_collect_text("domain", &c, cfound, o->now);
    return EX_OK;
}

static int
stats_user(QUEUE *q, const STATS_OPTS *o)
{
    QUEUE_COLLECT c;
    char *error = NULL;
    int found;

    if ((found = queue_collect_get(q, o->user, 1, &c, &error)) < 0)
        msg_fatal("%s", error);
    if (o->json) {
        printf("{\"user\":");
        json_string(stdout, o->user);
        printf(",");
        print_collect_json(&c, found);
        printf("}\n");
        return EX_OK;
    }
    printf("user:                 %s\n", o->user);
    print_collect_text("user", &c, found, o->now);
    return EX_OK;
}

/* Domains with held mail and no collection for stale_days: both lists are
 * in domain order. */
static int
stats_stale(QUEUE *q, const STATS_OPTS *o)
{
    QUEUE_FIGURES *figs = NULL;
    size_t nfig = 0, j = 0, listed = 0;
    COLLECTIONS cs;
    long cutoff = o->now - o->stale_days * 86400;
    int built;

    figures_load(q, &figs, &nfig, NULL, &built);
    collections_load(q, 0, &cs);
    if (o->json)
        printf("[");
    else
        printf("%-40s %8s %s\n", "DOMAIN", "MESSAGES", "LAST COLLECTION");
    for (size_t i = 0; i < nfig; i++) {
        long last = 0;
        char date[64], age[32];

        while (j < cs.count && strcmp(cs.names[j], figs[i].domain) < 0)
            j++;
        if (j < cs.count && strcmp(cs.names[j], figs[i].domain) == 0)
            last = cs.recs[j].last_atrn;
        if (last > cutoff)
            continue;
        if (o->json) {
            printf("%s{\"domain\":", listed ? "," : "");
            json_string(stdout, figs[i].domain);
            printf(",\"messages\":%llu,\"last_collect\":", figs[i].messages);
            if (last)
                printf("%ld}", last);
            else
                printf("null}");
        } else if (last) {
            format_date(last, date, sizeof(date));
            format_age(o->now - last, age, sizeof(age));
            printf("%-40s %8llu %s (%s ago)\n", figs[i].domain, figs[i].messages, date, age);
        } else {
            printf("%-40s %8llu never\n", figs[i].domain, figs[i].messages);
        }
        listed++;
    }
    if (o->json)
        printf("]\n");
    if (!built)
        msg_warn("the figures are not complete yet: run \"odmr-queue reindex\" once");
    free(figs);
    collections_free(&cs);
    return EX_OK;
}

static int
stats_totals(QUEUE *q, const STATS_OPTS *o)
{
    QUEUE_FIGURES *figs = NULL;
    QUEUE_FIGURES_META meta;
    size_t nfig = 0;
    unsigned long long messages = 0, recipients = 0, bytes = 0;
    const QUEUE_FIGURES *oldest;
    COLLECTIONS cs;
    size_t newest = (size_t) -1;
    char age[32], date[64];
    int built;

    figures_load(q, &figs, &nfig, &meta, &built);
    if (!built) {
        msg_warn("the figures are not complete yet (queue indexed by an older version): "
                 "counting the files; run \"odmr-queue reindex\" once");
        free(figs);
        return cmd_stats_walk(q, o->json);
    }
    for (size_t i = 0; i < nfig; i++) {
        messages += figs[i].messages;
        recipients += figs[i].recipients;
        bytes += figs[i].bytes;
    }
    oldest = queue_figures_oldest(figs, nfig);
    collections_load(q, 0, &cs);
    for (size_t i = 0; i < cs.count; i++)
        if (cs.recs[i].last_atrn != 0
            && (newest == (size_t) -1 || cs.recs[i].last_atrn > cs.recs[newest].last_atrn))
            newest = i;
    if (o->json) {
        printf("{\"messages\":%llu,\"recipients_queued\":%llu,\"bytes\":%llu,\"domains\":%zu,"
               "\"damaged\":%llu,",
               messages, recipients, bytes, nfig, meta.damaged);
        if (oldest != NULL)
            printf("\"oldest_id\":\"%s\",\"oldest_arrival\":%ld,\"oldest_age_seconds\":%ld,",
                   oldest->oldest_id, oldest->oldest, o->now - oldest->oldest);
        else
            printf("\"oldest_id\":null,\"oldest_arrival\":null,\"oldest_age_seconds\":null,");
        if (newest != (size_t) -1) {
            printf("\"last_collect\":%ld,\"last_collect_domain\":", cs.recs[newest].last_atrn);
            json_string(stdout, cs.names[newest]);
            printf("}\n");
        } else {
            printf("\"last_collect\":null,\"last_collect_domain\":null}\n");
        }
    } else {
        printf("messages:             %llu\n", messages);
        printf("recipients queued:    %llu\n", recipients);
        printf("bytes:                %llu\n", bytes);
        printf("domains with mail:    %zu\n", nfig);
        if (meta.reindex_time != 0) {
            format_date(meta.reindex_time, date, sizeof(date));
            printf("damaged files:        %llu (at the reindex of %s)\n", meta.damaged, date);
        }
        if (oldest != NULL) {
            format_age(o->now - oldest->oldest, age, sizeof(age));
            printf("oldest message:       %s (%s old, %s)\n", oldest->oldest_id, age,
                   oldest->domain);
        }
        if (newest != (size_t) -1) {
            format_date(cs.recs[newest].last_atrn, date, sizeof(date));
            format_age(o->now - cs.recs[newest].last_atrn, age, sizeof(age));
            printf("last collection:      %s (%s ago, %s)\n", date, age, cs.names[newest]);
        }
    }
    free(figs);
    collections_free(&cs);
    return EX_OK;
}

/* ---- Prometheus ------------------------------------------------------------------ */

/*
 * The text exposition format (version 0.0.4) for node_exporter's textfile
 * collector: no timestamps, base units (seconds, bytes), one HELP and TYPE
 * line per family. Per domain: five gauges and three counters; the gauges
 * again without a label for the whole queue. A domain name needs no
 * escaping (letters, digits, '-', '.'), but label values are escaped
 * anyway.
 */
typedef struct {
    FILE *fp;
    const STATS_OPTS *o;
    QUEUE_FIGURES *figs;
    size_t nfig;
    COLLECTIONS cs;
    unsigned char *fig_in, *cs_in; /* within --min-messages */
} PROM;

static void
prom_family(PROM *p, const char *name, const char *type, const char *help)
{
    fprintf(p->fp, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
prom_label(FILE *fp, const char *name, const char *domain)
{
    fprintf(fp, "%s{domain=\"", name);
    for (const char *s = domain; *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(fp, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", fp);
        else
            fputc(*s, fp);
    }
    fputs("\"} ", fp);
}

/* Which collection records go out: those of domains with at least
 * min_messages held (all of them when it is 0). */
static void
prom_select(PROM *p)
{
    size_t j = 0;

    p->fig_in = x_calloc(p->nfig + 1, 1);
    p->cs_in = x_calloc(p->cs.count + 1, 1);
    for (size_t i = 0; i < p->nfig; i++)
        p->fig_in[i] = p->figs[i].messages >= (unsigned long long) p->o->min_messages;
    for (size_t i = 0; i < p->cs.count; i++) {
        if (p->o->min_messages <= 0) {
            p->cs_in[i] = 1;
            continue;
        }
        while (j < p->nfig && strcmp(p->figs[j].domain, p->cs.names[i]) < 0)
            j++;
        p->cs_in[i] = j < p->nfig && strcmp(p->figs[j].domain, p->cs.names[i]) == 0
                      && p->fig_in[j];
    }
}

typedef enum { FIG_MESSAGES, FIG_RECIPIENTS, FIG_BYTES, FIG_AGE } FIG_KIND;

static unsigned long long
fig_value(const PROM *p, const QUEUE_FIGURES *f, FIG_KIND kind)
{
    switch (kind) {
    case FIG_MESSAGES:
        return f->messages;
    case FIG_RECIPIENTS:
        return f->recipients;
    case FIG_BYTES:
        return f->bytes;
    case FIG_AGE:
        return f->oldest && p->o->now > f->oldest ? (unsigned long long) (p->o->now - f->oldest)
                                                  : 0;
    }
    return 0;
}

static void
prom_gauge(PROM *p, const char *name, FIG_KIND kind, const char *help)
{
    unsigned long long total = 0;

    prom_family(p, name, "gauge", help);
    for (size_t i = 0; i < p->nfig; i++) {
        unsigned long long v = fig_value(p, &p->figs[i], kind);

        if (kind == FIG_AGE)
            total = v > total ? v : total;
        else
            total += v;
        if (!p->fig_in[i])
            continue;
        prom_label(p->fp, name, p->figs[i].domain);
        fprintf(p->fp, "%llu\n", v);
    }
    fprintf(p->fp, "%s %llu\n", name, total);
}

typedef enum { C_LAST, C_DELIVERED, C_DEFERRED, C_BOUNCED } C_KIND;

static void
prom_collect(PROM *p, const char *name, const char *type, C_KIND kind, const char *help)
{
    long newest = 0;

    prom_family(p, name, type, help);
    for (size_t i = 0; i < p->cs.count; i++) {
        const QUEUE_COLLECT *c = &p->cs.recs[i];
        unsigned long long v = kind == C_DELIVERED ? c->delivered_total
                               : kind == C_DEFERRED ? c->deferred_total
                               : kind == C_BOUNCED  ? c->bounced_total
                                                    : (unsigned long long) c->last_atrn;

        if (c->last_atrn > newest)
            newest = c->last_atrn;
        if (!p->cs_in[i] || (kind == C_LAST && c->last_atrn == 0))
            continue;
        prom_label(p->fp, name, p->cs.names[i]);
        fprintf(p->fp, "%llu\n", v);
    }
    if (kind == C_LAST && newest != 0)
        fprintf(p->fp, "%s %ld\n", name, newest);
}

static int
stats_prometheus(QUEUE *q, const STATS_OPTS *o)
{
    QUEUE_FIGURES_META meta;
    PROM p;
    int built, ret = EX_OK;

    memset(&p, 0, sizeof(p));
    p.o = o;
    if (o->out_fd >= 0) {
        if ((p.fp = fdopen(o->out_fd, "w")) == NULL)
            msg_fatal("fdopen: %m");
    } else {
        p.fp = stdout;
    }
    figures_load(q, &p.figs, &p.nfig, &meta, &built);
    if (!built)
        msg_warn("the figures are not complete yet: run \"odmr-queue reindex\" once");
    collections_load(q, 0, &p.cs);
    prom_select(&p);

    prom_gauge(&p, "odmr_queue_messages", FIG_MESSAGES,
               "Messages held in the ODMR queue for the domain (without label: the sum over "
               "domains; a message for several domains counts in each).");
    prom_gauge(&p, "odmr_queue_recipients", FIG_RECIPIENTS,
               "Recipients waiting in the ODMR queue for the domain (without label: all).");
    prom_gauge(&p, "odmr_queue_bytes", FIG_BYTES,
               "Bytes of messages held in the ODMR queue for the domain (without label: the "
               "sum over domains).");
    prom_gauge(&p, "odmr_queue_oldest_message_age_seconds", FIG_AGE,
               "Age of the oldest message held for the domain (without label: of the whole "
               "queue); 0 when none.");
    fprintf(p.fp, "# HELP odmr_queue_domains Domains with mail held in the ODMR queue.\n"
                  "# TYPE odmr_queue_domains gauge\nodmr_queue_domains %zu\n",
            p.nfig);
    prom_collect(&p, "odmr_last_collect_timestamp_seconds", "gauge", C_LAST,
                 "Time of the last authorized ATRN that collected the domain (without label: "
                 "the latest of all).");
    prom_collect(&p, "odmr_delivered_messages_total", "counter", C_DELIVERED,
                 "Messages of the domain delivered to the customer by ATRN sessions.");
    prom_collect(&p, "odmr_deferred_messages_total", "counter", C_DEFERRED,
                 "Messages of the domain that an ATRN session could not deliver and kept.");
    prom_collect(&p, "odmr_bounced_messages_total", "counter", C_BOUNCED,
                 "Messages of the domain that the customer refused (5xx) in ATRN sessions.");
    fprintf(p.fp,
            "# HELP odmr_queue_damaged_files Damaged queue files found by the last reindex.\n"
            "# TYPE odmr_queue_damaged_files gauge\nodmr_queue_damaged_files %llu\n",
            meta.damaged);

    if (fflush(p.fp) != 0 || ferror(p.fp)) {
        msg_warn("write %s: %m", o->output ? o->output : "stdout");
        ret = EX_IOERR;
    }
    if (o->out_fd >= 0) {
        if (fclose(p.fp) != 0 && ret == EX_OK) {
            msg_warn("write %s: %m", o->output);
            ret = EX_IOERR;
        }
        /* Not root: no parent to rename it. */
        if (stats_tmp_path != NULL) {
            if (ret == EX_OK && stats_output_commit(o) < 0)
                ret = EX_CANTCREAT;
            else if (ret != EX_OK)
                (void) unlink(stats_tmp_path);
        }
    }
    free(p.figs);
    free(p.fig_in);
    free(p.cs_in);
    collections_free(&p.cs);
    return ret;
}

int
cmd_stats(QUEUE *q, STATS_OPTS *o)
{
    if (o->walk)
        return cmd_stats_walk(q, o->json);
    if (o->prometheus)
        return stats_prometheus(q, o);
    if (o->domain != NULL)
        return stats_domain(q, o);
    if (o->user != NULL)
        return stats_user(q, o);
    if (o->stale_days >= 0)
        return stats_stale(q, o);
    return stats_totals(q, o);
}
