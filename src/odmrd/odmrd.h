/*
 * odmrd.h - internals shared by the files of odmrd(8).
 *
 *     odmrd.c         main: privileges, peer address, configuration, TLS
 *                     contexts, the session's life
 *     odmrd_server.c  the server side: states, command table, dispatcher,
 *                     EHLO/HELO/STARTTLS/NOOP/RSET/QUIT/ATRN
 *     odmrd_auth.c    AUTH (RFC 4954) on top of the SASL library
 *     odmrd_atrn.c    ATRN argument parser (RFC 2645 ABNF); no I/O, unit tested
 *     odmrd_flush.c   the reversed session: odmrd as the SMTP client
 *
 * Everything a session owns lives in one ODMRD_SESSION; there is no
 * per-session global.
 */
#ifndef ODMRD_H
#define ODMRD_H

#include <stddef.h>
#include <stdint.h>

#include "maps.h"
#include "queue.h"
#include "stream.h"
#include "util.h"

/* Server states (RFC 2645 section 5), as bits for the command table. */
typedef enum {
    ODMRD_STATE_INITIAL = 0,
    ODMRD_STATE_AUTHENTICATED,
    ODMRD_STATE_REVERSED,
    ODMRD_STATE_DONE,
    ODMRD_STATE_COUNT
} ODMRD_STATE;

#define ODMRD_STATE_BIT(s) (1U << (s))

/* tls_security_level */
typedef enum {
    ODMRD_TLS_NONE = 0,
    ODMRD_TLS_MAY,
    ODMRD_TLS_ENCRYPT
} ODMRD_TLS_LEVEL;

#define ODMRD_NAME_MAX 256
#define ODMRD_ADDR_MAX 64
#define ODMRD_CMD_MAX 16

typedef struct odmrd_session {
    STREAM *stream;
    ODMRD_STATE state;
    int64_t start_ms;

    /* The customer, from getpeername(0) */
    char client_name[ODMRD_NAME_MAX]; /* verified reverse name or "unknown" */
    char client_addr[ODMRD_ADDR_MAX]; /* numeric or "unknown" */
    char client_port[16];             /* numeric or "unknown" */
    char client[ODMRD_NAME_MAX + ODMRD_ADDR_MAX + 4]; /* "name[addr]" */

    /* Server side */
    char helo_name[ODMRD_NAME_MAX]; /* cleaned, "" until HELO/EHLO */
    int esmtp;                      /* EHLO (not HELO) was seen */
    int errors;                     /* bad commands so far */
    int auth_failures;
    unsigned cmd_count[ODMRD_CMD_MAX]; /* per command table entry, for the */
    unsigned cmd_ok[ODMRD_CMD_MAX];    /* disconnect line: "auth=0/1" */
    unsigned unknown_count;
    int last_code;                  /* last reply code sent */
    const char *last_verb;          /* for "timeout after X" */

    /* TLS */
    ODMRD_TLS_LEVEL tls_level;
    void *tls_server_ctx;           /* SSL_CTX *, made at the first STARTTLS */
    void *tls_client_ctx;           /* for STARTTLS on the reversed side, made
                                     * when the customer offers it */
    int tls_client_failed;          /* making tls_client_ctx failed once */

    /* Authentication */
    char *sasl_method;              /* NULL until AUTH succeeded */
    char *sasl_username;
    char *external_user;            /* from a verified client certificate */
    int external_checked;           /* external_user was looked up */

    /* Maps and queue */
    MAPS *domain_maps;
    MAPS *auth_maps;
    MAPS *user_domain_maps;         /* NULL when not configured */
    MAPS *cert_user_maps;           /* NULL when not configured */
    MAPS *reversed_tls_maps;        /* NULL when not configured */
    QUEUE *queue;                   /* opened at the first ATRN */

    /* ATRN result: locked domains that hold mail */
    char **domains;
    int *lock_fds;
    size_t ndomains;

    /* Messages of the flush that owe the sender a notice (failure or
     * relayed): sent once the customer's connection is closed. */
    char **notice_ids;
    size_t notice_count, notice_alloc;
} ODMRD_SESSION;

/* odmrd.c */
const char *odmrd_state_name(ODMRD_STATE state);

/* odmrd_server.c */
void odmrd_server_run(ODMRD_SESSION *sp);
void odmrd_enter_state(ODMRD_SESSION *sp, ODMRD_STATE state);
/* Reply helpers: every reply goes through these (and is flushed by the
 * next read). */
void odmrd_reply(ODMRD_SESSION *sp, int code, const char *enh, const char *fmt, ...)
    ODMR_PRINTF(4, 5);
/* Pause for ms milliseconds, cut at the session deadline. */
void odmrd_pause(ODMRD_SESSION *sp, long ms);

/* odmrd_auth.c */
void odmrd_auth_cmd(ODMRD_SESSION *sp, const char *args);
/* Mechanisms to list after "250-AUTH " for the current TLS state, space
 * separated, into buf; "" when none. */
void odmrd_auth_mechanisms(ODMRD_SESSION *sp, char *buf, size_t size);
/* AUTH may be used now (TLS level allows it). */
int odmrd_auth_allowed(const ODMRD_SESSION *sp);
void odmrd_auth_init(ODMRD_SESSION *sp);

/* odmrd_atrn.c (no I/O: unit-tested) */
#define ODMRD_ATRN_OK 0
#define ODMRD_ATRN_SYNTAX (-1)
#define ODMRD_ATRN_TOO_MANY (-2)
/* Parse the arguments of an ATRN command (the text after "ATRN" and its
 * space; "" when none) per RFC 2645:
 *     atrn = "ATRN" [SP domain *("," domain)]
 * Domains are case-insensitive; they come back lower-cased and without
 * duplicates in *domains_r (malloc'd; free with odmrd_atrn_free), *count_r
 * of them (0 for "all my domains"). Trailing blanks are ignored. Returns
 * ODMRD_ATRN_OK, ODMRD_ATRN_SYNTAX or ODMRD_ATRN_TOO_MANY (more than limit
 * distinct domains; limit 0 = none) with *why_r a static text for the 501. */
int odmrd_atrn_parse(const char *args, size_t limit, char ***domains_r, size_t *count_r,
                     const char **why_r);
void odmrd_atrn_free(char ***domains, size_t count);

/* odmrd_flush.c: the reversed session. Called after "250 ... reversing";
 * sends the mail of sp->domains, then QUIT. */
void odmrd_flush_run(ODMRD_SESSION *sp);
/* Remember that message id owes a notice (once per message). */
void odmrd_notice_add(ODMRD_SESSION *sp, const char *id);

/* odmrd_tls.c */
void *odmrd_tls_server_ctx(char **error_r);
void *odmrd_tls_client_ctx(char **error_r);
void odmrd_tls_free_ctx(void **ctxp);
/* After the handshake: SHA-256 fingerprint of a verified client
 * certificate ("AB:CD:..."), into buf; 0, or -1 when there is none or it
 * did not verify (reason in *why_r). */
int odmrd_tls_peer_fingerprint(STREAM *s, char *buf, size_t size, const char **why_r);

#endif
