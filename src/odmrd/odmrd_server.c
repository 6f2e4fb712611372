/*
 * odmrd_server.c - the server side of an ODMR session (RFC 2645 section 5).
 *
 * States: initial -> (AUTH) -> authenticated -> (ATRN) -> reversed -> done.
 * Every change goes through odmrd_enter_state(), which logs it.
 *
 * A command table names each verb with the states it is allowed in, flags
 * and an action; odmrd_dispatch() is the only place that compares verbs.
 * Every line gets exactly one reply (AUTH: one final reply after its
 * challenges); the stream flushes our output before every read.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "maps.h"
#include "odmrd.h"
#include "queue.h"
#include "smtp.h"
#include "stream.h"
#include "util.h"

/* Command flags */
#define CMD_F_NOARGS 0x01     /* any argument is a syntax error */
#define CMD_F_NEEDS_ARGS 0x02 /* an argument is required */
#define CMD_F_TLS_CONF 0x04   /* exists only when TLS is configured */
#define CMD_F_NOT_TLS 0x08    /* not once TLS is on */
#define CMD_F_TLS_FIRST 0x10  /* tls_security_level = encrypt: after STARTTLS */
#define CMD_F_NEEDS_HELO 0x20 /* after HELO/EHLO */
#define CMD_F_ENDS 0x40       /* the session ends after this command */

#define S_INIT ODMRD_STATE_BIT(ODMRD_STATE_INITIAL)
#define S_AUTH ODMRD_STATE_BIT(ODMRD_STATE_AUTHENTICATED)

typedef struct {
    const char *verb;
    unsigned states;        /* ODMRD_STATE_BIT mask where the verb is valid */
    int flags;
    int wrong_code;         /* reply when used in another state */
    const char *wrong_enh;
    const char *wrong_text;
    const char *syntax;     /* 501 text for a bad argument count */
    void (*action)(ODMRD_SESSION *sp, const char *args);
} ODMRD_CMD;

static void cmd_ehlo(ODMRD_SESSION *sp, const char *args);
static void cmd_helo(ODMRD_SESSION *sp, const char *args);
static void cmd_starttls(ODMRD_SESSION *sp, const char *args);
static void cmd_auth(ODMRD_SESSION *sp, const char *args);
static void cmd_atrn(ODMRD_SESSION *sp, const char *args);
static void cmd_noop(ODMRD_SESSION *sp, const char *args);
static void cmd_quit(ODMRD_SESSION *sp, const char *args);

static const ODMRD_CMD cmd_table[] = {
    {"EHLO", S_INIT, CMD_F_NEEDS_ARGS, 503, "5.5.1", "Error: already authenticated",
     "Syntax: EHLO hostname", cmd_ehlo},
    {"HELO", S_INIT, CMD_F_NEEDS_ARGS, 503, "5.5.1", "Error: already authenticated",
     "Syntax: HELO hostname", cmd_helo},
    {"STARTTLS", S_INIT, CMD_F_NOARGS | CMD_F_TLS_CONF | CMD_F_NOT_TLS, 503, "5.5.1",
     "Error: already authenticated", "Syntax: STARTTLS", cmd_starttls},
    {"AUTH", S_INIT, CMD_F_NEEDS_ARGS | CMD_F_TLS_FIRST | CMD_F_NEEDS_HELO, 503, "5.5.1",
     "Error: already authenticated", "Syntax: AUTH mechanism [initial-response]", cmd_auth},
    {"ATRN", S_AUTH, 0, 530, "5.7.0", "Authentication required", NULL, cmd_atrn},
    {"NOOP", S_INIT | S_AUTH, 0, 503, "5.5.1", "Error: bad sequence of commands", NULL,
     cmd_noop},
    {"RSET", S_INIT | S_AUTH, CMD_F_NOARGS, 503, "5.5.1", "Error: bad sequence of commands",
     "Syntax: RSET", cmd_noop},
    {"QUIT", S_INIT | S_AUTH, CMD_F_ENDS, 503, "5.5.1", "Error: bad sequence of commands",
     NULL, cmd_quit},
};

_Static_assert(ODMR_ARRAY_LEN(cmd_table) <= ODMRD_CMD_MAX, "ODMRD_CMD_MAX too small");

/* ---- replies, states, pauses ------------------------------------------- */

void
odmrd_reply(ODMRD_SESSION *sp, int code, const char *enh, const char *fmt, ...)
{
    char text[1024];
    va_list ap;

    va_start(ap, fmt);
    (void) vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    sp->last_code = code;
    (void) smtp_reply_send(sp->stream, code, enh, "%s", text);
    if (msg_verbose)
        msg_debug("%s: > %d %s%s%s", sp->client, code, enh ? enh : "", enh ? " " : "", text);
}

void
odmrd_enter_state(ODMRD_SESSION *sp, ODMRD_STATE state)
{
    if (state == sp->state)
        return;
    msg_info("%s: state %s -> %s", sp->client, odmrd_state_name(sp->state),
             odmrd_state_name(state));
    sp->state = state;
}

void
odmrd_pause(ODMRD_SESSION *sp, long ms)
{
    int64_t end = now_ms() + ms;
    int64_t deadline = sp->start_ms + (int64_t) var_session_timeout * 1000;

    if (end > deadline)
        end = deadline;
    for (;;) {
        int64_t left = end - now_ms();

        if (left <= 0)
            break;
        (void) poll(NULL, 0, (int) (left > 1000000 ? 1000000 : left));
    }
}

/* ---- commands ------------------------------------------------------------ */

static void
set_helo(ODMRD_SESSION *sp, const char *args, int esmtp)
{
    char clean[LOG_CLEAN_BUFSIZE];

    log_clean(clean, sizeof(clean), args, strlen(args));
    str_copy(sp->helo_name, clean, sizeof(sp->helo_name));
    sp->esmtp = esmtp;
}

static void
cmd_ehlo(ODMRD_SESSION *sp, const char *args)
{
    char mechs[256];
    const char *lines[8];
    char authline[300];
    int n = 0;

    set_helo(sp, args, 1);
    lines[n++] = var_myhostname;
    if (sp->tls_level != ODMRD_TLS_NONE && !stream_tls_active(sp->stream))
        lines[n++] = "STARTTLS";
    if (odmrd_auth_allowed(sp)) {
        odmrd_auth_mechanisms(sp, mechs, sizeof(mechs));
        if (*mechs) {
            (void) str_format(authline, sizeof(authline), "AUTH %s", mechs);
            lines[n++] = authline;
        }
    }
    lines[n++] = "ATRN";
    lines[n++] = "ENHANCEDSTATUSCODES";
    for (int i = 0; i < n; i++)
        (void) smtp_reply_send_line(sp->stream, 250, i == n - 1, lines[i]);
    sp->last_code = 250;
}

static void
cmd_helo(ODMRD_SESSION *sp, const char *args)
{
    set_helo(sp, args, 0);
    odmrd_reply(sp, 250, NULL, "%s", var_myhostname);
}

static void
cmd_starttls(ODMRD_SESSION *sp, const char *args)
{
    char *err = NULL;

    if (sp->tls_server_ctx == NULL && (sp->tls_server_ctx = odmrd_tls_server_ctx(&err)) == NULL) {
        msg_warn("%s: cannot start TLS: %s", sp->client, err);
        free(err);
        odmrd_reply(sp, 454, "4.7.0", "TLS not available due to local problem");
        return;
    }
    odmrd_reply(sp, 220, "2.0.0", "Ready to start TLS");
    if (stream_flush(sp->stream) < 0) {
        msg_info("lost connection after STARTTLS from %s", sp->client);
        odmrd_enter_state(sp, ODMRD_STATE_DONE);
        return;
    }
    /* stream_tls_server() discards what the client sent before the
     * handshake: nothing read in plain text may be used afterwards. */
    if (stream_tls_server(sp->stream, sp->tls_server_ctx) < 0) {
        msg_warn("%s: TLS handshake failed: %s", sp->client,
                 stream_error_text(sp->stream));
        odmrd_enter_state(sp, ODMRD_STATE_DONE);
        return;
    }
    msg_info("TLS connection established from %s: %s", sp->client,
             stream_tls_info(sp->stream));
    /* RFC 3207 section 4.2: forget what the client said before TLS. */
    sp->helo_name[0] = 0;
    sp->esmtp = 0;
}

static void
cmd_auth(ODMRD_SESSION *sp, const char *args)
{
    odmrd_auth_cmd(sp, args);
}

static void
cmd_noop(ODMRD_SESSION *sp, const char *args)
{
    odmrd_reply(sp, 250, "2.0.0", "Ok");
}

static void
cmd_quit(ODMRD_SESSION *sp, const char *args)
{
    odmrd_reply(sp, 221, "2.0.0", "Bye");
    (void) stream_flush(sp->stream);
    odmrd_enter_state(sp, ODMRD_STATE_DONE);
}

/* ---- ATRN ---------------------------------------------------------------- */

typedef struct {
    char **names;
    size_t count, cap;
} DOMAIN_LIST;

static void
list_add(DOMAIN_LIST *dl, const char *name)
{
    for (size_t i = 0; i < dl->count; i++)
        if (str_casecmp(dl->names[i], name) == 0)
            return;
    if (dl->count == dl->cap) {
        dl->cap = dl->cap ? dl->cap * 2 : 8;
        dl->names = x_realloc(dl->names, dl->cap * sizeof(*dl->names));
    }
    dl->names[dl->count++] = str_lower(x_strdup(name));
}

static void
list_free(DOMAIN_LIST *dl)
{
    odmrd_atrn_free(&dl->names, dl->count);
    dl->count = dl->cap = 0;
}

/* One log line per ATRN with its answer; the reply goes out with it. */
static void
atrn_answer(ODMRD_SESSION *sp, const char *request, const DOMAIN_LIST *dl, int code,
            const char *enh, const char *text)
{
    char domains[512] = "";
    size_t used = 0;

    for (size_t i = 0; dl != NULL && i < dl->count; i++) {
        size_t n = strlen(dl->names[i]);

        if (used + n + 5 >= sizeof(domains)) {
            str_copy(domains + used, "...", sizeof(domains) - used);
            break;
        }
        if (i > 0)
            domains[used++] = ',';
        memcpy(domains + used, dl->names[i], n + 1);
        used += n;
    }
    msg_info("%s: ATRN %s sasl_username=%s%s%s: %d %s %s", sp->client,
             *request ? request : "(all domains)", sp->sasl_username_log,
             *domains ? " domains=" : "", domains, code, enh, text);
    odmrd_reply(sp, code, enh, "%s", text);
}

/* ATRN warnings are limited per session (a flood of refused ATRNs must
 * not flood the log): 1 when this one may be logged. */
static int
atrn_warn_ok(ODMRD_SESSION *sp)
{
    if (sp->atrn_warnings < ODMRD_ATRN_WARN_MAX) {
        sp->atrn_warnings++;
        return 1;
    }
    if (sp->atrn_warnings++ == ODMRD_ATRN_WARN_MAX)
        msg_warn("%s: more than %d ATRN warnings in this session: the rest are not logged",
                 sp->client, ODMRD_ATRN_WARN_MAX);
    return 0;
}

#define ATRN_REFUSED 1
#define ATRN_TEMPFAIL 2

/* Is domain d collectable by this user? 0 yes, ATRN_REFUSED, ATRN_TEMPFAIL. */
static int
domain_owner_check(ODMRD_SESSION *sp, const char *d)
{
    char *value = NULL, *err = NULL;
    int ret;

    switch (maps_lookup(sp->domain_maps, d, &value, &err)) {
    case MAP_FOUND:
        ret = maps_list_contains(value, sp->sasl_username) ? 0 : ATRN_REFUSED;
        free(value);
        return ret;
    case MAP_NOTFOUND:
        return ATRN_REFUSED;
    default:
        if (atrn_warn_ok(sp))
            msg_warn("%s: domain_maps lookup of %s: %s", sp->client, d, err);
        free(err);
        return ATRN_TEMPFAIL;
    }
}

static int
collect_indexed(const char *domain, size_t count, void *ctx)
{
    list_add((DOMAIN_LIST *) ctx, domain);
    return 0;
}

static void
collect_token(const char *token, void *ctx)
{
    if (domain_valid(token))
        list_add((DOMAIN_LIST *) ctx, token);
}

/* ATRN without domains: every domain this user may collect that holds
 * mail. 0, or ATRN_TEMPFAIL. */
static int
collect_user_domains(ODMRD_SESSION *sp, DOMAIN_LIST *out)
{
    DOMAIN_LIST cand = {0};
    char *value = NULL, *err = NULL;
    int ret = 0;

    if (sp->user_domain_maps != NULL) {
        switch (maps_lookup(sp->user_domain_maps, sp->sasl_username, &value, &err)) {
        case MAP_FOUND:
            (void) maps_split(value, collect_token, &cand);
            free(value);
            break;
        case MAP_NOTFOUND:
            break;
        default:
            msg_warn("%s: user_domain_maps lookup of %s: %s", sp->client, sp->sasl_username_log,
                     err);
            free(err);
            return ATRN_TEMPFAIL;
        }
    } else if (queue_walk_domains(sp->queue, collect_indexed, &cand, &err) < 0) {
        msg_warn("%s: queue index walk: %s", sp->client, err);
        free(err);
        return ATRN_TEMPFAIL;
    }
    /* domain_maps is the authority, also over user_domain_maps. */
    for (size_t i = 0; i < cand.count && ret == 0; i++) {
        switch (domain_owner_check(sp, cand.names[i])) {
        case 0:
            if (var_atrn_domain_limit > 0 && out->count >= (size_t) var_atrn_domain_limit) {
                msg_info("%s: ATRN without domains: more than atrn_domain_limit=%ld domains;"
                         " the rest waits for the next ATRN",
                         sp->client, var_atrn_domain_limit);
                i = cand.count;
                break;
            }
            list_add(out, cand.names[i]);
            break;
        case ATRN_REFUSED:
            if (sp->user_domain_maps != NULL && atrn_warn_ok(sp))
                msg_warn("%s: user_domain_maps lists %s for %s but domain_maps does not",
                         sp->client, cand.names[i], sp->sasl_username_log);
            break;
        default:
            ret = ATRN_TEMPFAIL;
            break;
        }
    }
    list_free(&cand);
    return ret;
}

static void
atrn_release(ODMRD_SESSION *sp)
{
    for (size_t i = 0; i < sp->ndomains; i++)
        if (sp->lock_fds[i] >= 0)
            queue_unlock_domain(sp->lock_fds[i]);
    odmrd_atrn_free(&sp->domains, sp->ndomains);
    x_free(&sp->lock_fds);
    sp->ndomains = 0;
}

#define SELECT_MAIL 1
#define SELECT_NONE 0
#define SELECT_TEMPFAIL (-1)

#define ATRN_LOCK_WAIT_MS 5000 /* for a domain another session holds */

typedef struct {
    DOMAIN_LIST *dl;   /* the requested domains, or those found (bare ATRN) */
    int bare;          /* ATRN without domains: look for the user's anew */
    int waiting;       /* in the wait: a busy domain is no error, no logging */
} ATRN_SELECT;

/* Steps 3 and 4 of ATRN: lock the domains and keep those that hold mail
 * (checked under the lock). SELECT_MAIL with sp->domains locked,
 * SELECT_NONE with nothing held, or SELECT_TEMPFAIL (logged). */
static int
atrn_select(ODMRD_SESSION *sp, ATRN_SELECT *sel)
{
    DOMAIN_LIST *dl = sel->dl;
    char *err = NULL;
    int tempfail = 0;

    if (sel->bare) {
        list_free(dl);
        if (collect_user_domains(sp, dl) != 0)
            return SELECT_TEMPFAIL;
    }
    sp->domains = x_calloc(dl->count ? dl->count : 1, sizeof(char *));
    sp->lock_fds = x_calloc(dl->count ? dl->count : 1, sizeof(int));
    for (size_t i = 0; i < dl->count; i++) {
        /* A session that just ended may still hold the lock for a moment
         * after its QUIT (it makes its last marks durable then): wait for
         * it a little before answering 451. Not in the wait. */
        int fd = queue_lock_domain(sp->queue, dl->names[i], sel->waiting ? 0 : ATRN_LOCK_WAIT_MS,
                                   &err);

        if (fd < 0) {
            if (errno == EAGAIN && sel->waiting) {
                /* Another session is sending it: not ours to wait for. */
                x_free(&err);
                continue;
            }
            if (errno == EAGAIN && atrn_warn_ok(sp))
                msg_warn("%s: ATRN: domain %s is being flushed by another session",
                         sp->client, dl->names[i]);
            else if (errno != EAGAIN && atrn_warn_ok(sp))
                msg_warn("%s: ATRN: cannot lock domain %s: %s", sp->client, dl->names[i],
                         err);
            x_free(&err);
            tempfail = 1;
            break;
        }
        sp->domains[sp->ndomains] = x_strdup(dl->names[i]);
        sp->lock_fds[sp->ndomains++] = fd;
    }
    for (size_t i = 0; !tempfail && i < sp->ndomains;) {
        int has = queue_domain_has_mail(sp->queue, sp->domains[i], &err);

        if (has < 0) {
            msg_warn("%s: queue lookup of %s: %s", sp->client, sp->domains[i],
                     err);
            x_free(&err);
            tempfail = 1;
            break;
        }
        if (has) {
            i++;
            continue;
        }
        queue_unlock_domain(sp->lock_fds[i]);
        free(sp->domains[i]);
        sp->ndomains--;
        memmove(sp->domains + i, sp->domains + i + 1, (sp->ndomains - i) * sizeof(char *));
        memmove(sp->lock_fds + i, sp->lock_fds + i + 1, (sp->ndomains - i) * sizeof(int));
    }
    if (tempfail || sp->ndomains == 0) {
        atrn_release(sp);
        return tempfail ? SELECT_TEMPFAIL : SELECT_NONE;
    }
    return SELECT_MAIL;
}

/* odmrd_wait_mail()'s check: 1 mail (locked), 0 none yet, -1 error.
 * Between checks a waiter keeps no queue handle: it would hold a slot of
 * the Berkeley DB environment's thread table and registry (4000 for all
 * processes, queue.c) for minutes; a waiter is woken rarely, and an open
 * costs little. */
static int
atrn_wait_check(ODMRD_SESSION *sp, void *ctx)
{
    char *err = NULL;
    int ret;

    if (sp->queue == NULL && (sp->queue = queue_open(var_queue_dir, 0, &err)) == NULL) {
        msg_warn("%s: cannot open queue %s: %s", sp->client, var_queue_dir, err);
        x_free(&err);
        return -1;
    }
    switch (atrn_select(sp, (ATRN_SELECT *) ctx)) {
    case SELECT_MAIL:
        return 1;
    case SELECT_NONE:
        ret = 0;
        break;
    default:
        ret = -1;
        break;
    }
    queue_close(&sp->queue);
    return ret;
}

static void
cmd_atrn(ODMRD_SESSION *sp, const char *args)
{
    static const char tempfail_text[] = "Unable to process ATRN request now";
    char request[LOG_CLEAN_BUFSIZE];
    DOMAIN_LIST dl = {0};
    char **req = NULL;
    size_t nreq = 0;
    const char *why;
    char *err = NULL;
    int refused = 0, tempfail = 0;

    /* A cap per session: every ATRN may walk the index and look up maps. */
    if (++sp->atrn_count > (unsigned long) var_odmrd_atrn_command_limit) {
        msg_warn("%s: too many ATRN commands (odmrd_atrn_command_limit=%ld)", sp->client,
                 var_odmrd_atrn_command_limit);
        odmrd_reply(sp, 421, "4.7.0", "%s Error: too many ATRN commands", var_myhostname);
        (void) stream_flush(sp->stream);
        odmrd_enter_state(sp, ODMRD_STATE_DONE);
        return;
    }
    log_clean(request, sizeof(request), args, strlen(args));
    switch (odmrd_atrn_parse(args, (size_t) var_atrn_domain_limit, &req, &nreq, &why)) {
    case ODMRD_ATRN_OK:
        break;
    default:
        msg_info("%s: ATRN %s sasl_username=%s: 501 %s", sp->client, request,
                 sp->sasl_username_log, why);
        odmrd_reply(sp, 501, NULL, "%s", why);
        sp->errors++;
        return;
    }
    dl.names = req;
    dl.count = dl.cap = nreq;

    /* 1. Authorization: every requested domain must be the user's. */
    for (size_t i = 0; i < dl.count; i++) {
        switch (domain_owner_check(sp, dl.names[i])) {
        case 0:
            break;
        case ATRN_REFUSED:
            if (atrn_warn_ok(sp))
                msg_warn("%s: ATRN for %s refused: not a domain of sasl_username=%s",
                         sp->client, dl.names[i], sp->sasl_username_log);
            refused = 1;
            break;
        default:
            tempfail = 1;
            break;
        }
    }
    if (refused) {
        /* Counts toward error_limit: guessing other customers' domains. */
        atrn_answer(sp, request, &dl, 450, "4.7.1", "ATRN request refused");
        sp->errors++;
        goto out;
    }
    if (tempfail) {
        atrn_answer(sp, request, &dl, 451, "4.3.0", tempfail_text);
        goto out;
    }

    /* 2. The queue, opened at the first ATRN (AUTH failures never touch it). */
    if (sp->queue == NULL && (sp->queue = queue_open(var_queue_dir, 0, &err)) == NULL) {
        msg_warn("%s: cannot open queue %s: %s", sp->client, var_queue_dir,
                 err);
        x_free(&err);
        atrn_answer(sp, request, &dl, 451, "4.3.0", tempfail_text);
        goto out;
    }

    /* 3, 4. The domains that hold mail, locked. */
    {
        ATRN_SELECT sel = {&dl, nreq == 0, 0};
        long wait;
        int wres;

        switch (atrn_select(sp, &sel)) {
        case SELECT_MAIL:
            break;
        case SELECT_NONE:
            /* The waiting ATRN: no mail yet, wait for some (odmrd_wait.c). */
            if ((wait = odmrd_wait_time(sp)) > 0) {
                /* Watch the domains asked for, or those of user_domain_maps
                 * (bare ATRN); without either, any change of the index. */
                DOMAIN_LIST watch = {0};

                for (size_t i = 0; i < dl.count; i++)
                    list_add(&watch, dl.names[i]);
                sel.waiting = 1;
                queue_close(&sp->queue); /* see atrn_wait_check() */
                wres = odmrd_wait_mail(sp, wait, watch.names, watch.count, atrn_wait_check,
                                       &sel);
                list_free(&watch);
                switch (wres) {
                case ODMRD_WAIT_MAIL:
                    goto reverse;
                case ODMRD_WAIT_ERROR:
                    atrn_answer(sp, request, &dl, 451, "4.3.0", tempfail_text);
                    goto out;
                default:
                    break;
                }
            }
            atrn_answer(sp, request, &dl, 453, "4.0.0", "You have no mail");
            goto out;
        default:
            atrn_answer(sp, request, &dl, 451, "4.3.0", tempfail_text);
            goto out;
        }
    }

reverse:
    /* 5. Turn around. The customer's 220 is read from the same stream: bytes
     * it sent right after our reply stay buffered. */
    {
        DOMAIN_LIST locked = {sp->domains, sp->ndomains, sp->ndomains};

        atrn_answer(sp, request, &locked, 250, "2.0.0", "OK now reversing the connection");
    }
    odmrd_enter_state(sp, ODMRD_STATE_REVERSED);
    odmrd_collect_begin(sp);
    odmrd_flush_run(sp);
    atrn_release(sp);
    odmrd_enter_state(sp, ODMRD_STATE_DONE);

out:
    list_free(&dl);
}

/* ---- the dispatcher ------------------------------------------------------ */

static void
odmrd_dispatch(ODMRD_SESSION *sp, const char *line, size_t len)
{
    SMTP_CMD cmd;
    const ODMRD_CMD *cp = NULL;
    size_t idx = 0;

    if (smtp_cmd_split(line, len, &cmd) < 0 || cmd.verb[0] == 0) {
        sp->unknown_count++;
        sp->last_verb = "UNKNOWN";
        odmrd_reply(sp, 500, "5.5.2", "Error: bad syntax");
        sp->errors++;
        return;
    }
    for (idx = 0; idx < ODMR_ARRAY_LEN(cmd_table); idx++) {
        if (strcmp(cmd_table[idx].verb, cmd.verb) == 0) {
            cp = cmd_table + idx;
            break;
        }
    }
    if (cp == NULL) {
        /* MAIL, RCPT, DATA, VRFY, TURN, ...: the ODMR port never takes mail. */
        char clean[LOG_CLEAN_BUFSIZE];

        sp->unknown_count++;
        sp->last_verb = "UNKNOWN";
        msg_debug("%s: unimplemented command: %s", sp->client,
                  log_clean(clean, sizeof(clean), cmd.verb, strlen(cmd.verb)));
        odmrd_reply(sp, 502, "5.5.1", "Error: command not implemented");
        sp->errors++;
        return;
    }
    sp->last_verb = cp->verb;
    sp->cmd_count[idx]++;
    sp->last_code = 0;

    if (!(cp->states & ODMRD_STATE_BIT(sp->state))) {
        odmrd_reply(sp, cp->wrong_code, cp->wrong_enh, "%s", cp->wrong_text);
        sp->errors++;
        return;
    }
    if ((cp->flags & CMD_F_TLS_CONF) && sp->tls_level == ODMRD_TLS_NONE) {
        odmrd_reply(sp, 502, "5.5.1", "Error: command not implemented");
        sp->errors++;
        return;
    }
    if ((cp->flags & CMD_F_NOT_TLS) && stream_tls_active(sp->stream)) {
        odmrd_reply(sp, 503, "5.5.1", "Error: TLS already active");
        sp->errors++;
        return;
    }
    if ((cp->flags & CMD_F_TLS_FIRST) && !odmrd_auth_allowed(sp)) {
        odmrd_reply(sp, 530, "5.7.0", "Must issue a STARTTLS command first");
        sp->errors++;
        return;
    }
    if ((cp->flags & CMD_F_NEEDS_HELO) && sp->helo_name[0] == 0) {
        odmrd_reply(sp, 503, "5.5.1", "Error: send HELO/EHLO first");
        sp->errors++;
        return;
    }
    if (((cp->flags & CMD_F_NOARGS) && *cmd.args)
        || ((cp->flags & CMD_F_NEEDS_ARGS) && !*cmd.args)) {
        odmrd_reply(sp, 501, "5.5.4", "%s", cp->syntax ? cp->syntax : "Syntax error");
        sp->errors++;
        return;
    }
    cp->action(sp, cmd.args);
    if (sp->last_code > 0 && sp->last_code < 400)
        sp->cmd_ok[idx]++;
}

static void
log_disconnect(ODMRD_SESSION *sp)
{
    char buf[512];
    size_t used = 0;
    unsigned total = sp->unknown_count, ok = 0;

    buf[0] = 0;
    for (size_t i = 0; i < ODMR_ARRAY_LEN(cmd_table); i++) {
        char verb[SMTP_VERB_MAX + 1];
        int n;

        if (sp->cmd_count[i] == 0)
            continue;
        str_lower(memcpy(verb, cmd_table[i].verb, strlen(cmd_table[i].verb) + 1));
        if (sp->cmd_ok[i] == sp->cmd_count[i])
            n = snprintf(buf + used, sizeof(buf) - used, " %s=%u", verb, sp->cmd_count[i]);
        else
            n = snprintf(buf + used, sizeof(buf) - used, " %s=%u/%u", verb, sp->cmd_ok[i],
                         sp->cmd_count[i]);
        if (n < 0 || (size_t) n >= sizeof(buf) - used)
            break;
        used += (size_t) n;
        total += sp->cmd_count[i];
        ok += sp->cmd_ok[i];
    }
    if (sp->unknown_count > 0) {
        int n = snprintf(buf + used, sizeof(buf) - used, " unknown=0/%u", sp->unknown_count);

        if (n > 0 && (size_t) n < sizeof(buf) - used)
            used += (size_t) n;
    }
    if (ok == total)
        msg_info("disconnect from %s%s commands=%u", sp->client, buf, total);
    else
        msg_info("disconnect from %s%s commands=%u/%u", sp->client, buf, ok, total);
}

/* One address may hold at most odmrd_client_connection_count_limit
 * sessions (spawn's process limit is shared by every client). The slot is
 * this process's until it exits. 0 when refused (logged). Any problem with
 * the shared file lets the session in. */
static int
session_admitted(ODMRD_SESSION *sp)
{
    long limit = var_odmrd_client_connection_count_limit, count = 0;
    char *err = NULL;

    if (limit == 0)
        return 1;
    switch (odmrd_limit_session(var_queue_dir, sp->client_addr, limit, &sp->slot_fd, &count,
                                &err)) {
    case 0:
        return 1;
    case 1:
        /* Postfix's smtpd words it so; fail2ban filters know it. */
        msg_warn("Connection concurrency limit exceeded: %ld from %s for service odmrd"
                 " (odmrd_client_connection_count_limit=%ld)", count + 1, sp->client, limit);
        return 0;
    default:
        msg_warn("%s: connection count not checked: %s", sp->client, err);
        free(err);
        return 1;
    }
}

void
odmrd_server_run(ODMRD_SESSION *sp)
{
    size_t size = (size_t) var_line_length_limit + 1;
    char *line = x_malloc(size);

    sp->last_verb = "CONNECT";
    if (!session_admitted(sp)) {
        odmrd_reply(sp, 421, "4.7.0", "%s Error: too many connections from %s",
                    var_myhostname, sp->client_addr);
        (void) stream_flush(sp->stream);
        free(line);
        log_disconnect(sp);
        return;
    }
    odmrd_reply(sp, 220, NULL, "%s", var_odmr_banner);

    while (sp->state == ODMRD_STATE_INITIAL || sp->state == ODMRD_STATE_AUTHENTICATED) {
        int64_t deadline = sp->start_ms + (int64_t) var_session_timeout * 1000;
        size_t len;
        int flags, ret;

        /* Before AUTH, the short odmrd_pre_auth_timeout (STARTTLS and AUTH
         * exchanges included): an idle or trickling client holds a process
         * for a minute, not for session_timeout. */
        if (sp->state == ODMRD_STATE_INITIAL && sp->pre_auth_deadline < deadline)
            deadline = sp->pre_auth_deadline;
        stream_set_deadline(sp->stream, deadline);
        stream_set_timeout(sp->stream, (int) (var_command_timeout * 1000));
        ret = stream_get_line(sp->stream, line, size, &len, &flags);
        if (ret != STREAM_OK || (flags & STREAM_LINE_EOF)) {
            if (ret == STREAM_TIMEOUT && sp->state == ODMRD_STATE_INITIAL
                && now_ms() >= sp->pre_auth_deadline)
                msg_info("timeout before AUTH after %s from %s (odmrd_pre_auth_timeout=%lds)",
                         sp->last_verb, sp->client, var_odmrd_pre_auth_timeout);
            else if (ret == STREAM_TIMEOUT)
                msg_info("timeout after %s from %s", sp->last_verb, sp->client);
            else
                msg_info("lost connection after %s from %s", sp->last_verb, sp->client);
            break;
        }
        if (flags & STREAM_LINE_PARTIAL) {
            /* Throw the rest of the line away, then complain once. */
            do {
                ret = stream_get_line(sp->stream, line, size, &len, &flags);
            } while (ret == STREAM_OK && (flags & STREAM_LINE_PARTIAL));
            if (ret != STREAM_OK) {
                msg_info("lost connection after %s from %s", sp->last_verb, sp->client);
                break;
            }
            msg_warn("%s: command line longer than line_length_limit=%ld", sp->client,
                     var_line_length_limit);
            odmrd_reply(sp, 500, "5.5.2", "Error: line too long");
            sp->errors++;
        } else {
            odmrd_dispatch(sp, line, len);
        }
        if (sp->state == ODMRD_STATE_INITIAL || sp->state == ODMRD_STATE_AUTHENTICATED) {
            if (sp->errors >= var_error_limit) {
                msg_info("too many errors after %s from %s", sp->last_verb, sp->client);
                odmrd_reply(sp, 421, "4.7.0", "%s Error: too many errors", var_myhostname);
                break;
            }
        }
        if (stream_failed(sp->stream) && sp->state != ODMRD_STATE_DONE) {
            msg_info("lost connection after %s from %s", sp->last_verb, sp->client);
            break;
        }
    }
    (void) stream_flush(sp->stream);
    free(line);
    log_disconnect(sp);
}
