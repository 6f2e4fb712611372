/*
 * fetch_client.c - the ODMR client (RFC 2645): greeting, EHLO, STARTTLS,
 * AUTH, ATRN, then the reversed session (fetch_relay.c).
 *
 * States are numbered; their names (for "timeout in state ...") and
 * timeouts are arrays indexed by state. Every session ends in exactly one
 * log line:
 *     server=HOST[ADDR]:PORT, user=U, atrn=DOMAINS|(all), tls=...,
 *     sasl_method=M, messages=N, recipients=N, refused=N, split=N,
 *     status=STATUS (detail)
 * with STATUS one of delivered, nomail, authfailed, refused, busy,
 * network, local, protocol, matching the exit codes in fetch.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "fetch.h"
#include "log.h"
#include "sasl.h"
#include "smtp.h"
#include "stream.h"
#include "util.h"

typedef enum {
    CL_CONNECT = 0,
    CL_GREETING,
    CL_EHLO,
    CL_STARTTLS,
    CL_TLS,
    CL_AUTH,
    CL_ATRN,
    CL_REVERSED,
    CL_QUIT,
} CLIENT_STATE;

static const char *const client_state_name[] = {
    "connect", "greeting", "EHLO", "STARTTLS", "TLS handshake", "AUTH", "ATRN",
    "reversed session", "QUIT",
};

static const char *const status_name[] = {
    [FETCH_EXIT_DELIVERED] = "delivered", [FETCH_EXIT_NOMAIL] = "nomail",
    [FETCH_EXIT_AUTH] = "authfailed",     [FETCH_EXIT_REFUSED] = "refused",
    [FETCH_EXIT_BUSY] = "busy",           [FETCH_EXIT_NETWORK] = "network",
    [FETCH_EXIT_LOCAL] = "local",         [FETCH_EXIT_PROTOCOL] = "protocol",
};

typedef struct client {
    const FETCH_OPTIONS *opt;
    STREAM *s;
    CLIENT_STATE state;
    char peer[300];
    SMTP_REPLY reply;
    char *mechs;           /* the server's AUTH list */
    int starttls_offered;
    const char *mech;      /* chosen SASL mechanism */
    char tls[160];
    char detail[400];      /* for the log line */
    FETCH_RELAY_RESULT relay;
    SSL_CTX *ctx;
    int fd;                /* the provider connection, -1 */
} CLIENT;

volatile sig_atomic_t fetch_atrn_fd = -1;
volatile sig_atomic_t fetch_stop;

static void
enter(CLIENT *c, CLIENT_STATE st)
{
    if (msg_verbose && st != c->state)
        msg_debug("%s: state %s -> %s", c->peer, client_state_name[c->state],
                  client_state_name[st]);
    c->state = st;
}

/* The detail of the outcome, once. */
static void ODMR_PRINTF(2, 3)
detail(CLIENT *c, const char *fmt, ...)
{
    va_list ap;

    if (c->detail[0] != 0)
        return;
    va_start(ap, fmt);
    (void) vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
    va_end(ap);
}

/* The last reply as a cleaned one-liner, for details. */
static const char *
reply_text(CLIENT *c)
{
    static char buf[LOG_CLEAN_BUFSIZE + 16];

    return smtp_reply_summary(&c->reply, buf, sizeof(buf));
}

/* Send a command (not logged when secret) and read the reply. 0, or -1
 * with the detail set and the stream failure or malformed reply noted. */
static int
command(CLIENT *c, const char *cmd, int secret, long timeout)
{
    int rc;

    if (cmd != NULL) {
        if (msg_verbose)
            msg_debug("> %s", secret ? "********" : cmd);
        if (stream_puts(c->s, cmd) < 0 || stream_write(c->s, "\r\n", 2) < 0)
            goto lost;
    }
    stream_set_timeout(c->s, (int) (timeout * 1000));
    rc = smtp_reply_read(c->s, &c->reply);
    if (rc == SMTP_REPLY_MALFORMED) {
        detail(c, "malformed reply in state %s", client_state_name[c->state]);
        return -2;
    }
    if (rc != 0)
        goto lost;
    if (msg_verbose)
        msg_debug("< %s", reply_text(c));
    return 0;
lost:
    detail(c, "%s in state %s", stream_error_text(c->s)[0] ? stream_error_text(c->s)
                                : "lost connection", client_state_name[c->state]);
    return -1;
}

/* A failed command() as an exit code. */
static int
command_failure(int rc)
{
    return rc == -2 ? FETCH_EXIT_PROTOCOL : FETCH_EXIT_NETWORK;
}

static char *
tls_error_text(void)
{
    unsigned long e = ERR_get_error();
    char buf[256];

    if (e == 0)
        return x_strdup("unknown error");
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return x_strdup(buf);
}

static int
tls_context(CLIENT *c)
{
    const FETCH_OPTIONS *o = c->opt;
    const char *name = o->tls_servername ? o->tls_servername : o->server_host;
    char *err;

    if ((c->ctx = SSL_CTX_new(TLS_client_method())) == NULL)
        goto fail;
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(c->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (o->tls_cert_file != NULL) {
        const char *key = o->tls_key_file ? o->tls_key_file : o->tls_cert_file;

        if (SSL_CTX_use_certificate_chain_file(c->ctx, o->tls_cert_file) != 1
            || SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM) != 1
            || SSL_CTX_check_private_key(c->ctx) != 1)
            goto fail;
    }
    if (o->tls_level == FETCH_TLS_VERIFY && o->tls_fingerprint == NULL) {
        X509_VERIFY_PARAM *param = SSL_CTX_get0_param(c->ctx);
        unsigned char ip[16];

        if (o->tls_ca_file != NULL) {
            if (SSL_CTX_load_verify_locations(c->ctx, o->tls_ca_file, NULL) != 1)
                goto fail;
        } else if (SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
            goto fail;
        }
        if (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1) {
            if (X509_VERIFY_PARAM_set1_ip_asc(param, name) != 1)
                goto fail;
        } else if (X509_VERIFY_PARAM_set1_host(param, name, 0) != 1) {
            goto fail;
        }
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    } else {
        /* Checked after the handshake (fingerprint) or not at all (may,
         * encrypt). */
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    }
    return 0;
fail:
    err = tls_error_text();
    detail(c, "TLS setup: %s", err);
    free(err);
    return -1;
}

/* A pinned fingerprint: the server certificate's SHA-256 must match. */
static int
tls_check_fingerprint(CLIENT *c)
{
    unsigned char want[32], got[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    SSL *ssl = stream_tls_ssl(c->s);
    X509 *cert = ssl ? SSL_get1_peer_certificate(ssl) : NULL;
    int ok;

    if (fetch_fingerprint_parse(c->opt->tls_fingerprint, want) < 0) {
        if (cert)
            X509_free(cert);
        detail(c, "bad --tls-fingerprint");
        return -1;
    }
    if (cert == NULL) {
        detail(c, "TLS: the server sent no certificate");
        return -1;
    }
    ok = X509_digest(cert, EVP_sha256(), got, &len) == 1 && len == 32
         && CRYPTO_memcmp(got, want, 32) == 0;
    X509_free(cert);
    if (!ok) {
        detail(c, "TLS: server certificate fingerprint does not match --tls-fingerprint");
        return -1;
    }
    return 0;
}

/* EHLO, and remember STARTTLS and AUTH. */
static int
ehlo(CLIENT *c)
{
    char *line;
    int rc;

    enter(c, CL_EHLO);
    line = x_asprintf("EHLO %s", c->opt->helo_name);
    rc = command(c, line, 0, c->opt->command_timeout);
    free(line);
    if (rc < 0)
        return command_failure(rc);
    if (c->reply.code != 250) {
        detail(c, "EHLO: %s", reply_text(c));
        return c->reply.code >= 400 && c->reply.code < 500 ? FETCH_EXIT_BUSY
                                                             : FETCH_EXIT_PROTOCOL;
    }
    x_free(&c->mechs);
    c->starttls_offered = fetch_ehlo_has(c->reply.text, "STARTTLS", NULL);
    if (!fetch_ehlo_has(c->reply.text, "AUTH", &c->mechs))
        c->mechs = x_strdup("");
    return 0;
}

static int
starttls(CLIENT *c)
{
    const FETCH_OPTIONS *o = c->opt;
    int rc;

    if (o->tls_level == FETCH_TLS_NONE)
        return 0;
    if (!c->starttls_offered) {
        if (o->tls_level == FETCH_TLS_MAY)
            return 0;
        detail(c, "the server offers no STARTTLS (use --tls=may to go on without it)");
        return FETCH_EXIT_NETWORK;
    }
    enter(c, CL_STARTTLS);
    if ((rc = command(c, "STARTTLS", 0, o->command_timeout)) < 0)
        return command_failure(rc);
    if (c->reply.code != 220) {
        if (o->tls_level == FETCH_TLS_MAY)
            return 0;
        detail(c, "STARTTLS: %s", reply_text(c));
        return FETCH_EXIT_NETWORK;
    }
    enter(c, CL_TLS);
    if (tls_context(c) < 0)
        return FETCH_EXIT_NETWORK;
    stream_set_timeout(c->s, (int) (o->command_timeout * 1000));
    if (stream_tls_client(c->s, c->ctx, o->tls_servername ? o->tls_servername : o->server_host)
        < 0) {
        /* OpenSSL's text says "certificate verify failed" when it was the
         * certificate (SSL_VERIFY_PEER ends the handshake). */
        detail(c, "TLS handshake: %s", stream_error_text(c->s));
        return FETCH_EXIT_NETWORK;
    }
    if (o->tls_fingerprint != NULL && tls_check_fingerprint(c) < 0)
        return FETCH_EXIT_NETWORK;
    (void) str_copy(c->tls, stream_tls_info(c->s), sizeof(c->tls));
    msg_info("TLS connection established to %s: %s", c->peer, c->tls);
    return ehlo(c);
}

static int
authenticate(CLIENT *c)
{
    const FETCH_OPTIONS *o = c->opt;
    SASL_CLIENT *sc = NULL;
    char *error = NULL, *out = NULL, *line = NULL;
    int have_cert = o->tls_cert_file != NULL, rc, status, ret = FETCH_EXIT_AUTH;

    enter(c, CL_AUTH);
    c->mech = fetch_choose_mech(o->mechanisms, c->mechs, stream_tls_active(c->s), have_cert);
    if (c->mech == NULL) {
        char clean[LOG_CLEAN_BUFSIZE];

        detail(c, "no usable SASL mechanism (server offers \"%s\"%s)",
               log_clean(clean, sizeof(clean), c->mechs, strlen(c->mechs)),
               stream_tls_active(c->s) ? "" : "; PLAIN and LOGIN need TLS");
        return FETCH_EXIT_AUTH;
    }
    if (strcmp(c->mech, "EXTERNAL") == 0)
        sc = sasl_client_new(c->mech, "", NULL, &error);
    else
        sc = sasl_client_new(c->mech, o->user, o->password, &error);
    if (sc == NULL) {
        detail(c, "SASL %s: %s", c->mech, error);
        free(error);
        return FETCH_EXIT_AUTH;
    }
    status = sasl_client_step(sc, NULL, &out);
    if (status != SASL_CONTINUE) {
        detail(c, "SASL %s: cannot start", c->mech);
        goto out;
    }
    line = out ? x_asprintf("AUTH %s %s", c->mech, out) : x_asprintf("AUTH %s", c->mech);
    sasl_wipe_free(&out);
    for (;;) {
        rc = command(c, line, 1, o->command_timeout);
        sasl_wipe_free(&line);
        if (rc < 0) {
            ret = command_failure(rc);
            goto out;
        }
        if (c->reply.code != 334)
            break;
        status = sasl_client_step(sc, c->reply.text, &out);
        if (status != SASL_CONTINUE) {
            /* A bad challenge, or a server that could not prove itself
             * (SCRAM): cancel. */
            detail(c, "SASL %s: the server %s", c->mech,
                   status == SASL_FAIL ? "failed to prove its identity"
                                       : "sent a malformed challenge");
            (void) command(c, "*", 0, o->command_timeout);
            goto out;
        }
        line = out;
        out = NULL;
    }
    if (c->reply.code == 235) {
        if (sasl_client_finish(sc) != SASL_OK) {
            detail(c, "SASL %s: 235 without the server's proof", c->mech);
            goto out;
        }
        ret = 0;
    } else {
        detail(c, "AUTH %s: %s", c->mech, reply_text(c));
        ret = c->reply.code >= 400 && c->reply.code < 500 ? FETCH_EXIT_BUSY : FETCH_EXIT_AUTH;
    }
out:
    sasl_wipe_free(&line);
    sasl_wipe_free(&out);
    sasl_client_free(&sc);
    return ret;
}

static int
atrn(CLIENT *c)
{
    const FETCH_OPTIONS *o = c->opt;
    char *line;
    int rc;

    enter(c, CL_ATRN);
    line = o->domains ? x_asprintf("ATRN %s", o->domains) : x_strdup("ATRN");
    /* A waiting provider may take minutes to answer (odmrd_atrn_wait):
     * a stop signal meanwhile shuts the connection down (the provider
     * then answers nothing and sends nothing). */
    fetch_atrn_fd = c->fd;
    if (fetch_stop)
        (void) shutdown(c->fd, SHUT_RDWR);
    rc = command(c, line, 0, o->atrn_timeout);
    fetch_atrn_fd = -1;
    free(line);
    if (rc < 0 && fetch_stop)
        detail(c, "stopped by a signal while waiting for the ATRN reply");
    if (rc < 0)
        return command_failure(rc);
    if (c->reply.code != 250)
        detail(c, "ATRN: %s", reply_text(c));
    switch (c->reply.code) {
    case 250:
        return 0;
    case 453:
        return FETCH_EXIT_NOMAIL;
    case 450:
        return FETCH_EXIT_REFUSED;
    case 451:
        return FETCH_EXIT_BUSY;
    case 530:
        return FETCH_EXIT_AUTH;
    default:
        return c->reply.code >= 400 && c->reply.code < 500 ? FETCH_EXIT_BUSY
                                                             : FETCH_EXIT_PROTOCOL;
    }
}

static void
quit(CLIENT *c)
{
    enter(c, CL_QUIT);
    (void) command(c, "QUIT", 0, 10);
}

static int
session(CLIENT *c)
{
    const FETCH_OPTIONS *o = c->opt;
    char *error = NULL;
    int fd, rc;

    enter(c, CL_CONNECT);
    fd = fetch_connect(o->server_host, o->server_port, NULL, (int) (o->connect_timeout * 1000),
                       c->peer, sizeof(c->peer), &error);
    if (fd < 0) {
        detail(c, "%s", error);
        free(error);
        return FETCH_EXIT_NETWORK;
    }
    c->s = stream_open(fd, fd);
    c->fd = fd;
    enter(c, CL_GREETING);
    if ((rc = command(c, NULL, 0, o->command_timeout)) < 0)
        return command_failure(rc);
    if (c->reply.code != 220) {
        detail(c, "greeting: %s", reply_text(c));
        return c->reply.code >= 400 && c->reply.code < 500 ? FETCH_EXIT_BUSY
                                                             : FETCH_EXIT_PROTOCOL;
    }
    if ((rc = ehlo(c)) != 0 || (rc = starttls(c)) != 0 || (rc = authenticate(c)) != 0
        || (rc = atrn(c)) != 0) {
        if (!stream_failed(c->s) && c->state != CL_TLS && rc != FETCH_EXIT_PROTOCOL)
            quit(c);
        return rc;
    }
    /* Turned around: the provider is the client now. */
    enter(c, CL_REVERSED);
    fetch_relay(c->s, o, &c->relay);
    if (c->relay.local_failed || c->relay.refused > 0) {
        detail(c, "%s", c->relay.reason[0] ? c->relay.reason
                                            : "the local MTA refused some mail");
        return FETCH_EXIT_LOCAL;
    }
    if (c->relay.provider_failed) {
        detail(c, "%s", c->relay.reason);
        return FETCH_EXIT_NETWORK;
    }
    return FETCH_EXIT_DELIVERED;
}

int
fetch_session(const FETCH_OPTIONS *opt, FETCH_RELAY_RESULT *relay_r)
{
    CLIENT c = {.opt = opt, .state = CL_CONNECT, .fd = -1};
    int rc;

    str_copy(c.peer, opt->server_host, sizeof(c.peer));
    smtp_reply_init(&c.reply);
    rc = session(&c);
    msg_info("server=%s, user=%s, atrn=%s, tls=%s, sasl_method=%s, messages=%lu, "
             "recipients=%lu, refused=%lu, split=%lu, status=%s (%s)",
             c.peer, opt->user ? opt->user : "", opt->domains ? opt->domains : "(all)",
             c.tls[0] ? "yes" : "no", c.mech ? c.mech : "none", c.relay.messages,
             c.relay.recipients, c.relay.refused, c.relay.split, status_name[rc],
             c.detail[0] ? c.detail : (rc == 0 ? "session completed" : "?"));
    *relay_r = c.relay;
    if (c.s != NULL)
        stream_close(&c.s, 1);
    if (c.ctx != NULL)
        SSL_CTX_free(c.ctx);
    x_free(&c.mechs);
    return rc;
}
