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
 *     odmrd_limit.c   state shared by the odmrd processes (sessions per
 *                     client, AUTH failures, the fake-salt secret) in small
 *                     files under queue_directory; no session, unit tested
 *
 * Everything a session owns lives in one ODMRD_SESSION; there is no
 * per-session global.
 */
#ifndef ODMRD_H
#define ODMRD_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "log.h"
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

/* odmrd_limit.c sizes */
#define ODMRD_LIMIT_SLOTS 4096          /* sessions tracked at once */
#define ODMRD_LIMIT_FAIL_RECORDS 8192   /* failure counters */
#define ODMRD_LIMIT_LOCK_MS 1000        /* longest wait for a state file lock */
#define ODMRD_SECRET_LEN 32
/* ATRN warning lines logged per session; then one line says the rest
 * are not logged. */
#define ODMRD_ATRN_WARN_MAX 5

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

    /* Limits shared by the odmrd processes (odmrd_limit.c) */
    int slot_fd;                    /* holds this session's slot; -1 */
    int64_t pre_auth_deadline;      /* now_ms() value: AUTH by then */
    unsigned atrn_count;            /* ATRN commands so far */
    unsigned atrn_warnings;         /* ATRN warning lines logged so far */
    int auth_blocked;               /* the user's failure counter is full */
    int fake_salt_state;            /* 0 not loaded, 1 loaded, -1 failed */
    unsigned char fake_salt_key[ODMRD_SECRET_LEN];
    char sasl_username_log[LOG_CLEAN_BUFSIZE]; /* cleaned, for logs */

    /* ATRN result: locked domains that hold mail */
    char **domains;
    int *lock_fds;
    size_t ndomains;

    /* Messages of the flush that owe the sender a notice (failure or
     * relayed): sent once the customer's connection is closed. */
    char **notice_ids;
    size_t notice_count, notice_alloc;

    /* The collection record, written at the end (odmrd_collect.c). */
    struct odmrd_collect *collect;
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

/* odmrd_collect.c: the session's collection record (queue_stats.h). */
/* The authorized ATRN turns around for sp->domains: start the record. */
void odmrd_collect_begin(ODMRD_SESSION *sp);
/* One message's outcome for sp->domains[domain]: QUEUE_RCPT_DELIVERED,
 * QUEUE_RCPT_FAILED (bounced), anything else deferred. */
void odmrd_collect_message(ODMRD_SESSION *sp, size_t domain, int outcome);
/* The reason the session (or a delivery) failed; the last one stays. */
void odmrd_collect_failure(ODMRD_SESSION *sp, const char *fmt, ...) ODMR_PRINTF(2, 3);
int odmrd_collect_pending(const ODMRD_SESSION *sp);
/* Write the record (one index transaction) and free it. */
void odmrd_collect_write(ODMRD_SESSION *sp);
void odmrd_collect_free(ODMRD_SESSION *sp);

/* odmrd_tls.c */
void *odmrd_tls_server_ctx(char **error_r);
void *odmrd_tls_client_ctx(char **error_r);
void odmrd_tls_free_ctx(void **ctxp);
/* After the handshake: SHA-256 fingerprint of a verified client
 * certificate ("AB:CD:..."), into buf; 0, or -1 when there is none or it
 * did not verify (reason in *why_r). */
int odmrd_tls_peer_fingerprint(STREAM *s, char *buf, size_t size, const char **why_r);

/* odmrd_limit.c (no session: unit-tested). Every function fails open: -1
 * with a malloc'd *error_r means "no limit could be checked", and the
 * caller logs it and carries on. */

/* Count the live sessions from addr (in dir/odmrd.sessions) and, when
 * fewer than limit (0: none), take a slot: 0 and *fd_r, whose fcntl lock
 * marks the slot as taken until the fd is closed or the process ends.
 * 1 when addr already has limit sessions (*count_r of them; nothing
 * taken). -1 and *error_r on any error. */
int odmrd_limit_session(const char *dir, const char *addr, long limit, int *fd_r,
                        long *count_r, char **error_r);

/* Failure counters in dir/odmrd.failures, per client address (user NULL)
 * or per user name and client address. GET reads the count, ADD counts one
 * more failure (a new window starts with the first one), CLEAR forgets
 * the counter. A count is 0 again once window seconds have passed since
 * the window's first failure. *count_r: the count after the operation.
 * 0, or -1 and *error_r. */
#define ODMRD_FAIL_GET 0
#define ODMRD_FAIL_ADD 1
#define ODMRD_FAIL_CLEAR 2
int odmrd_limit_failures(const char *dir, const char *addr, const char *user, int op,
                         long window, time_t now, long *count_r, char **error_r);

/* The server secret (dir/odmrd.secret, ODMRD_SECRET_LEN random bytes, mode
 * 0600), made at the first call. 0, or -1 and *error_r. */
int odmrd_limit_secret(const char *dir, unsigned char key[ODMRD_SECRET_LEN], char **error_r);

/* odmrd_wait.c: the waiting ATRN. How long this session's user may wait
 * for mail (odmrd_atrn_wait_maps, else odmrd_atrn_wait), in seconds. */
long odmrd_wait_time(ODMRD_SESSION *sp);
/* Wait up to secs (cut at the session deadline) for check(sp, ctx) to say
 * 1 (mail, and the caller holds what it needs) or -1 (error); it is called
 * at once, when mail for one of domains (ndomains of them; none: any
 * change of the queue index) was committed, and now and then. Ends early
 * when the customer sends something or closes. */
#define ODMRD_WAIT_MAIL 0
#define ODMRD_WAIT_TIMEOUT 1
#define ODMRD_WAIT_CLIENT 2
#define ODMRD_WAIT_ERROR 3
int odmrd_wait_mail(ODMRD_SESSION *sp, long secs, char **domains, size_t ndomains,
                    int (*check)(ODMRD_SESSION *, void *), void *ctx);

#endif
