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
                 err ? err : "error");
        free(err);
        /* Try again at the next EHLO/AUTH. */
        sp->external_checked = 0;
        return NULL;
    }
}

static int
secret_lookup(void *ctx, const char *user, char **secret_r)
{
    ODMRD_SESSION *sp = ctx;
    char *err = NULL, clean[LOG_CLEAN_BUFSIZE];
    int ret = maps_lookup(sp->auth_maps, user, secret_r, &err);

    if (ret == MAP_ERROR) {
        msg_warn("%s: auth_maps lookup of %s: %s", sp->client,
                 log_clean(clean, sizeof(clean), user, strlen(user)), err ? err : "error");
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
        msg_info("%s: sasl_method=%s, sasl_username=%s", sp->client, sp->sasl_method,
                 log_clean(clean, sizeof(clean), sp->sasl_username,
                           strlen(sp->sasl_username)));
        odmrd_reply(sp, 235, "2.7.0", "Authentication successful");
        odmrd_enter_state(sp, ODMRD_STATE_AUTHENTICATED);
        goto done;
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

done:
    free(out);
    if (ss != NULL)
        sasl_server_free(&ss);
    free(line);
}
