/*
 * odmrd_collect.c - the collection record of a session (queue_stats.h):
 * when the authorized ATRN turned around, what each domain's messages came
 * to (delivered, deferred, bounced) and the last failure's reason. Counted
 * in memory during the flush and written once, at the end of the session,
 * after the customer's connection is closed: never a write per message,
 * and the customer never waits for it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "odmrd.h"
#include "queue.h"
#include "queue_stats.h"
#include "util.h"

struct odmrd_collect {
    long atrn_time;
    char **domains;
    size_t count;
    QUEUE_COLLECT_RESULT *results;
    char failure[QUEUE_COLLECT_REASON_MAX];
};

void
odmrd_collect_begin(ODMRD_SESSION *sp)
{
    struct odmrd_collect *c;

    odmrd_collect_free(sp);
    c = x_calloc(1, sizeof(*c));
    c->atrn_time = (long) time(NULL);
    c->count = sp->ndomains;
    c->domains = x_calloc(c->count + 1, sizeof(*c->domains));
    c->results = x_calloc(c->count + 1, sizeof(*c->results));
    for (size_t i = 0; i < c->count; i++) {
        c->domains[i] = x_strdup(sp->domains[i]);
        c->results[i].name = c->domains[i];
    }
    sp->collect = c;
}

void
odmrd_collect_message(ODMRD_SESSION *sp, size_t domain, int outcome)
{
    struct odmrd_collect *c = sp->collect;

    if (c == NULL || domain >= c->count)
        return;
    if (outcome == QUEUE_RCPT_DELIVERED)
        c->results[domain].delivered++;
    else if (outcome == QUEUE_RCPT_FAILED)
        c->results[domain].bounced++;
    else
        c->results[domain].deferred++;
}

void
odmrd_collect_failure(ODMRD_SESSION *sp, const char *fmt, ...)
{
    struct odmrd_collect *c = sp->collect;
    va_list ap;

    if (c == NULL)
        return;
    va_start(ap, fmt);
    (void) vsnprintf(c->failure, sizeof(c->failure), fmt, ap);
    va_end(ap);
}

int
odmrd_collect_pending(const ODMRD_SESSION *sp)
{
    return sp->collect != NULL;
}

void
odmrd_collect_write(ODMRD_SESSION *sp)
{
    struct odmrd_collect *c = sp->collect;
    QUEUE_COLLECT_RESULT user;
    char *error = NULL;

    if (c == NULL || sp->queue == NULL)
        return;
    memset(&user, 0, sizeof(user));
    user.name = sp->sasl_username;
    for (size_t i = 0; i < c->count; i++) {
        /* The session's failure goes to every domain that did not get
         * everything through. */
        if (c->failure[0] && (c->results[i].deferred > 0 || c->results[i].bounced > 0
                              || c->results[i].delivered == 0))
            c->results[i].failure = c->failure;
        user.delivered += c->results[i].delivered;
        user.deferred += c->results[i].deferred;
        user.bounced += c->results[i].bounced;
    }
    user.failure = c->failure;
    if (queue_collect_record(sp->queue, c->atrn_time, (long) time(NULL), c->results, c->count,
                             user.name != NULL ? &user : NULL, &error) < 0) {
        msg_warn("%s: cannot record the collection: %s", sp->client, error);
        free(error);
    }
    odmrd_collect_free(sp);
}

void
odmrd_collect_free(ODMRD_SESSION *sp)
{
    struct odmrd_collect *c = sp->collect;

    if (c == NULL)
        return;
    sp->collect = NULL;
    queue_strings_free(&c->domains, c->count);
    free(c->results);
    free(c);
}
