/*
 * odmrd_auth.c - AUTH (RFC 4954) for odmrd, on top of sasl.h.
 *
 * The SASL library is a pure state machine; this file moves base64 lines
 * between it and the stream, turns outcomes into replies, counts failures,
 * pauses after each one, and logs the method and user (never a secret,
 * never a client response).
 *
 * Mechanisms offered: those in sasl_mechanisms that the library serves now:
 * PLAIN and LOGIN only under TLS, EXTERNAL only when a verified client
 * certificate's SHA-256 fingerprint maps to a user in tls_cert_user_maps.
 * With tls_security_level = encrypt nothing is offered before STARTTLS.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "maps.h"
#include "odmrd.h"
#include "sasl.h"
#include "smtp.h"
#include "stream.h"
#include "util.h"

void
odmrd_auth_init(ODMRD_SESSION *sp)
{
    char *err = NULL;

    if (sasl_mech_list_check(var_sasl_mechanisms, &err) < 0)
        msg_fatal("%s: parameter sasl_mechanisms: %s", config_file_path(), err);
}

int
odmrd_auth_allowed(const ODMRD_SESSION *sp)
{
    return sp->tls_level != ODMRD_TLS_ENCRYPT || stream_tls_active(sp->stream);
}

/* The user a verified client certificate stands for, looked up once. */
static const char *
external_user(ODMRD_SESSION *sp)
{
    char fp[256];
    const char *why;
    char *value = NULL, *err = NULL;

    if (!stream_tls_active(sp->stream) || sp->cert_user_maps == NULL)
        return NULL;
    if (sp->external_checked)
        return sp->external_user;
    sp->external_checked = 1;
    if (odmrd_tls_peer_fingerprint(sp->stream, fp, sizeof(fp), &why) < 0) {
        msg_debug("%s: no EXTERNAL: %s", sp->client, why);
        return NULL;
    }
    switch (maps_lookup(sp->cert_user_maps, fp, &value, &err)) {
    case MAP_FOUND:
        str_trim(value);
        if (*value == 0) {
            free(value);
            return NULL;
        }
        sp->external_user = value;
        msg_info("%s: client certificate %s maps to %s", sp->client, fp, value);
        return sp->external_user;
    case MAP_NOTFOUND:
        msg_info("%s: client certificate %s is not in tls_cert_user_maps", sp->client, fp);
        return NULL;
    default:
        msg_warn("%s: tls_cert_user_maps lookup of %s: %s", sp->client, fp,
                 err);
        free(err);
        /* Try again at the next EHLO/AUTH. */
        sp->external_checked = 0;
        return NULL;
    }
}

/* ---- failure counters shared by the odmrd processes ------------------- */

/* The count for this client (user NULL) or this user at this client; 0
 * when it cannot be read (logged: a broken state file locks nobody out). */
static long
failures_get(ODMRD_SESSION *sp, const char *user)
{
    long n = 0;
    char *err = NULL;

    if (odmrd_limit_failures(var_queue_dir, sp->client_addr, user, ODMRD_FAIL_GET,
                             var_odmrd_auth_failure_window, time(NULL), &n, &err) < 0) {
        msg_warn("%s: authentication failure count not checked: %s", sp->client, err);
        free(err);
        return 0;
    }
    return n;
}

static void
failures_update(ODMRD_SESSION *sp, const char *user, int op)
{
    long n = 0;
    char *err = NULL;

    if (odmrd_limit_failures(var_queue_dir, sp->client_addr, user, op,
                             var_odmrd_auth_failure_window, time(NULL), &n, &err) < 0) {
        msg_warn("%s: authentication failure not counted: %s", sp->client, err);
        free(err);
    }
}

/* Too many failures from this client address (any user name)? Logged in a
 * shape a fail2ban filter can match:
 *     warning: NAME[ADDR]: SASL authentication blocked: ... */
static int
client_blocked(ODMRD_SESSION *sp)
{
    long n, limit = var_odmrd_client_auth_failure_limit;

    if (limit == 0 || (n = failures_get(sp, NULL)) < limit)
        return 0;
    msg_warn("%s: SASL authentication blocked: %ld failures from this client in %lds"
             " (odmrd_client_auth_failure_limit=%ld)", sp->client, n,
             var_odmrd_auth_failure_window, limit);
    return 1;
}

/* Too many failures for this user name from this client? Asked by the
 * secret lookup, before any password check. */
static int
user_blocked(ODMRD_SESSION *sp, const char *user)
{
    long n, limit = var_odmrd_client_user_auth_failure_limit;
    char clean[LOG_CLEAN_BUFSIZE];

    if (limit == 0 || (n = failures_get(sp, user)) < limit)
        return 0;
    msg_warn("%s: SASL authentication blocked: %ld failures for sasl_username=%s from this"
             " client in %lds (odmrd_client_user_auth_failure_limit=%ld)", sp->client, n,
             log_clean(clean, sizeof(clean), user, strlen(user)),
             var_odmrd_auth_failure_window, limit);
    return 1;
}

/* The key for SCRAM's fake salts, loaded (or made) at the first AUTH. */
static void
fake_salt_load(ODMRD_SESSION *sp)
{
    char *err = NULL;

    if (sp->fake_salt_state != 0)
        return;
    if (odmrd_limit_secret(var_queue_dir, sp->fake_salt_key, &err) == 0) {
        sp->fake_salt_state = 1;
    } else {
        msg_warn("%s: no server secret for SCRAM salts (unknown users get random ones): %s",
                 sp->client, err);
        free(err);
        sp->fake_salt_state = -1;
    }
}

static int
secret_lookup(void *ctx, const char *user, char **secret_r)
{
    ODMRD_SESSION *sp = ctx;
    char *err = NULL, clean[LOG_CLEAN_BUFSIZE];
    int ret;

    /* 454 without looking at the password: a temporary failure. */
    if (user_blocked(sp, user)) {
        sp->auth_blocked = 1;
        return MAP_ERROR;
    }
    ret = maps_lookup(sp->auth_maps, user, secret_r, &err);

    if (ret == MAP_ERROR) {
        msg_warn("%s: auth_maps lookup of %s: %s", sp->client,
                 log_clean(clean, sizeof(clean), user, strlen(user)), err);
        free(err);
    }
    return ret;
}

static void
sasl_config(ODMRD_SESSION *sp, SASL_SERVER_CONFIG *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->hostname = var_myhostname;
    cfg->tls_active = stream_tls_active(sp->stream);
    cfg->mechanisms = var_sasl_mechanisms;
    cfg->external_user = external_user(sp);
    cfg->lookup = secret_lookup;
    cfg->lookup_ctx = sp;
    cfg->response_limit = (size_t) var_auth_response_limit;
    if (sp->fake_salt_state > 0) {
        cfg->fake_salt_key = sp->fake_salt_key;
        cfg->fake_salt_key_len = sizeof(sp->fake_salt_key);
    }
}

void
odmrd_auth_mechanisms(ODMRD_SESSION *sp, char *buf, size_t size)
{
    SASL_SERVER_CONFIG cfg;
    char *list;

    buf[0] = 0;
    if (!odmrd_auth_allowed(sp))
        return;
    sasl_config(sp, &cfg);
    list = sasl_server_mech_list(&cfg);
    str_copy(buf, list, size);
    free(list);
}

/* Send a reply given as "CODE text" (sasl_status_reply). */
static void
status_reply(ODMRD_SESSION *sp, const char *reply)
{
    int code = atoi(reply);
    const char *text = strlen(reply) > 4 ? reply + 4 : "";

    odmrd_reply(sp, code, NULL, "%s", text);
}

/* Read one AUTH response line. 0, -1 when the session is over (logged),
 * 1 when the line was too long (the rest was read and thrown away), 2 when
 * it holds a NUL byte. */
static int
read_response(ODMRD_SESSION *sp, char *buf, size_t size)
{
    size_t len;
    int flags, ret;

    stream_set_timeout(sp->stream, (int) (var_command_timeout * 1000));
    ret = stream_get_line(sp->stream, buf, size, &len, &flags);
    if (ret == STREAM_OK && !(flags & STREAM_LINE_EOF)) {
        if (!(flags & STREAM_LINE_PARTIAL))
            return memchr(buf, 0, len) ? 2 : 0;
        do {
            ret = stream_get_line(sp->stream, buf, size, &len, &flags);
        } while (ret == STREAM_OK && (flags & STREAM_LINE_PARTIAL));
        if (ret == STREAM_OK && !(flags & STREAM_LINE_EOF))
            return 1;
    }
    msg_info("%s after AUTH from %s", ret == STREAM_TIMEOUT ? "timeout" : "lost connection",
             sp->client);
    return -1;
}

void
odmrd_auth_cmd(ODMRD_SESSION *sp, const char *args)
{
    SASL_SERVER_CONFIG cfg;
    SASL_SERVER *ss;
    char mech[64], clean[LOG_CLEAN_BUFSIZE], *err = NULL, *out = NULL, *line = NULL;
    const char *ir = NULL, *sp_pos;
    size_t mlen, size = (size_t) var_auth_response_limit + 1;
    int status;

    /* "AUTH mechanism [initial-response]" */
    sp_pos = strchr(args, ' ');
    mlen = sp_pos ? (size_t) (sp_pos - args) : strlen(args);
    if (sp_pos != NULL) {
        ir = sp_pos + 1;
        if (*ir == 0 || strchr(ir, ' ') != NULL) {
            odmrd_reply(sp, 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
            sp->errors++;
            return;
        }
        if (strlen(ir) > (size_t) var_auth_response_limit) {
            odmrd_reply(sp, 500, "5.5.6", "Authentication Exchange line is too long");
            sp->errors++;
            return;
        }
    }
    if (mlen == 0 || mlen >= sizeof(mech)) {
        odmrd_reply(sp, 504, "5.5.4", "Unrecognized authentication type");
        sp->errors++;
        return;
    }
    memcpy(mech, args, mlen);
    mech[mlen] = 0;
    str_upper(mech);
    log_clean(clean, sizeof(clean), mech, mlen);

    /* Too many failures from this address: 454 before any exchange. */
    if (client_blocked(sp)) {
        odmrd_reply(sp, 454, "4.7.0", "Temporary authentication failure: try again later");
        sp->errors++;
        goto blocked;
    }
    fake_salt_load(sp);
    sp->auth_blocked = 0;
    sasl_config(sp, &cfg);
    if ((ss = sasl_server_new(mech, &cfg, &status, &err)) == NULL) {
        msg_warn("%s: SASL %s authentication not started: %s", sp->client, clean,
                 err ? err : sasl_status_name(status));
        free(err);
        if (status == SASL_FAIL)
            goto failed_nostate;
        status_reply(sp, sasl_status_reply(status));
        sp->errors++;
        return;
    }

    line = x_malloc(size);
    status = sasl_server_step(ss, ir, &out);
    while (status == SASL_CONTINUE) {
        int r;

        odmrd_reply(sp, 334, NULL, "%s", out);
        free(out);
        out = NULL;
        if ((r = read_response(sp, line, size)) < 0) {
            odmrd_enter_state(sp, ODMRD_STATE_DONE);
            goto done;
        }
        if (r == 1) {
            odmrd_reply(sp, 500, "5.5.6", "Authentication Exchange line is too long");
            sp->errors++;
            goto done;
        }
        /* A NUL cannot be base64: let the library say so (501). */
        status = sasl_server_step(ss, r == 2 ? "!" : line, &out);
    }
    if (status == SASL_OK) {
        const char *user = sasl_server_user(ss);

        sp->sasl_method = x_strdup(sasl_server_mech(ss));
        sp->sasl_username = x_strdup(user ? user : "");
        /* Every later log line uses the cleaned copy (a CRAM-MD5 user name
         * is whatever the client put before the digest). */
        log_clean(sp->sasl_username_log, sizeof(sp->sasl_username_log), sp->sasl_username,
                  strlen(sp->sasl_username));
        msg_info("%s: sasl_method=%s, sasl_username=%s", sp->client, sp->sasl_method,
                 sp->sasl_username_log);
        /* The user's own counter starts again; the address's does not (one
         * good account must not buy more guesses at others). */
        if (var_odmrd_client_user_auth_failure_limit > 0)
            failures_update(sp, sp->sasl_username, ODMRD_FAIL_CLEAR);
        odmrd_reply(sp, 235, "2.7.0", "Authentication successful");
        odmrd_enter_state(sp, ODMRD_STATE_AUTHENTICATED);
        goto done;
    }
    if (sp->auth_blocked) {
        /* user_blocked() logged it; no password was looked at. */
        odmrd_reply(sp, 454, "4.7.0", "Temporary authentication failure: try again later");
        sp->errors++;
        sasl_server_free(&ss);
        free(out);
        free(line);
        goto blocked;
    }
    {
        const char *user = sasl_server_user(ss);
        char cuser[LOG_CLEAN_BUFSIZE];

        msg_warn("%s: SASL %s authentication failed: %s%s%s", sp->client,
                 sasl_server_mech(ss),
                 *sasl_server_reason(ss) ? sasl_server_reason(ss) : sasl_status_name(status),
                 user ? ", sasl_username=" : "",
                 user ? log_clean(cuser, sizeof(cuser), user, strlen(user)) : "");
    }
    if (status == SASL_TEMPFAIL) {
        status_reply(sp, sasl_status_reply(status));
        goto done;
    }
    /* A password was tried and was wrong: one more for this client and
     * for this user at this client, in every odmrd process's eyes. */
    if (status == SASL_FAIL) {
        const char *user = sasl_server_user(ss);

        failures_update(sp, NULL, ODMRD_FAIL_ADD);
        if (user != NULL)
            failures_update(sp, user, ODMRD_FAIL_ADD);
    }
    sasl_server_free(&ss);
    free(line);
    line = NULL;

failed_nostate:
    /* A pause after every failure, then the reply; after too many, 421. */
    sp->auth_failures++;
    odmrd_pause(sp, var_auth_failure_delay * 1000);
    status_reply(sp, sasl_status_reply(status));
    if (sp->auth_failures >= var_auth_failure_limit) {
        msg_info("too many failed authentications after AUTH from %s", sp->client);
        odmrd_reply(sp, 421, "4.7.0", "%s Error: too many failed authentications",
                    var_myhostname);
        (void) stream_flush(sp->stream);
        odmrd_enter_state(sp, ODMRD_STATE_DONE);
    }
    return;

blocked:
    /* Counts in this session like a failure (the session ends after
     * auth_failure_limit of them), without the pause: nothing was tried. */
    if (++sp->auth_failures >= var_auth_failure_limit) {
        msg_info("too many failed authentications after AUTH from %s", sp->client);
        odmrd_reply(sp, 421, "4.7.0", "%s Error: too many failed authentications",
                    var_myhostname);
        (void) stream_flush(sp->stream);
        odmrd_enter_state(sp, ODMRD_STATE_DONE);
    }
    return;

done:
    free(out);
    if (ss != NULL)
        sasl_server_free(&ss);
    free(line);
}
