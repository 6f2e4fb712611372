/*
 * fetch.h - odmr-fetch(1) internals: the ODMR client (fetch_client.c), the
 * relay of the reversed session to the local MTA (fetch_relay.c), TLS
 * contexts (fetch_tls.c), EHLO-reply filtering and the password file
 * (fetch_util.c).
 */
#ifndef ODMR_FETCH_H
#define ODMR_FETCH_H

#include <signal.h>
#include <stddef.h>

#include "smtp.h"
#include "stream.h"

/* Exit codes: one per outcome (see the man page in odmr-fetch.c). */
#define FETCH_EXIT_DELIVERED 0 /* session done, the local MTA took every message */
#define FETCH_EXIT_NOMAIL 1    /* ATRN 453: nothing waiting */
#define FETCH_EXIT_AUTH 2      /* authentication failed (535, 530, no mechanism) */
#define FETCH_EXIT_REFUSED 3   /* ATRN 450: a domain is not ours */
#define FETCH_EXIT_BUSY 4      /* 451 (busy or lookup failure), other 4xx */
#define FETCH_EXIT_NETWORK 5   /* connect, TLS, timeout, lost connection */
#define FETCH_EXIT_LOCAL 6     /* local MTA down, failed or refused some mail */
#define FETCH_EXIT_PROTOCOL 7  /* the provider said something unexpected */
#define FETCH_EXIT_PASSWORD 77 /* (EX_NOPERM) password file unsafe or unreadable */

/* --tls levels */
#define FETCH_TLS_NONE 0    /* never STARTTLS */
#define FETCH_TLS_MAY 1     /* STARTTLS when offered, no certificate check */
#define FETCH_TLS_ENCRYPT 2 /* STARTTLS required, no certificate check */
#define FETCH_TLS_VERIFY 3  /* STARTTLS required, certificate verified (default) */

typedef struct fetch_options {
    char *server_host;      /* provider host name or address */
    char *server_port;      /* "366" */
    char *user;
    char *password;         /* from the password file; wiped at exit */
    char *domains;          /* comma list for ATRN, or NULL: bare ATRN */
    int tls_level;
    char *tls_ca_file;      /* NULL: system CAs */
    char *tls_fingerprint;  /* SHA-256 of the server certificate, hex */
    char *tls_servername;   /* name to verify; NULL: server_host */
    char *tls_cert_file;    /* client certificate for EXTERNAL */
    char *tls_key_file;
    char *mechanisms;       /* allowed SASL mechanisms, in order */
    char *helo_name;
    /* local MTA */
    int local_lmtp;         /* speak LMTP to it */
    char *local_host;       /* NULL when local_path is set */
    char *local_port;
    char *local_path;       /* unix socket */
    /* timeouts, seconds */
    long connect_timeout;
    long command_timeout;   /* every provider reply but ATRN's */
    long atrn_timeout;      /* the reply to ATRN */
    long local_timeout;     /* every local MTA reply but the final dot's */
    long data_timeout;      /* the local MTA's reply to the final dot, and
                             * the provider's next line while in DATA */
    long max_sessions;      /* LMTP split sessions in one run */
    size_t line_max;        /* longest command line from the provider */
    int follow;             /* --follow: the next ATRN as soon as a session ends */
    long follow_pause;      /* --follow: least time from one ATRN answered 453
                             * to the next (a provider that does not wait) */
    long retry_max;         /* --follow: longest pause after a failure */
} FETCH_OPTIONS;

/* What one reversed session did. */
typedef struct fetch_relay_result {
    unsigned long messages;   /* DATA transactions completed by the local MTA (2xx) */
    unsigned long refused;    /* MAIL/RCPT/DATA/dot 4xx or 5xx from the local MTA */
    unsigned long recipients; /* recipients accepted by the local MTA */
    unsigned long split;      /* LMTP: recipients put off with our 452 */
    int local_failed;         /* local MTA unreachable or failed mid-session */
    int provider_failed;      /* provider lost/timed out before QUIT */
    char reason[256];         /* why, for the log line; "" when fine */
} FETCH_RELAY_RESULT;

/* The ODMR client session. Returns a FETCH_EXIT_* code and logs one line;
 * *relay_r tells what the reversed session did (zeroes when there was
 * none). */
int fetch_session(const FETCH_OPTIONS *opt, FETCH_RELAY_RESULT *relay_r);

/* --follow: set by the SIGTERM/SIGINT handler. While a session waits for
 * the reply to ATRN, fetch_atrn_fd is its socket (else -1), which the
 * handler shuts down so that the wait ends at once. */
extern volatile sig_atomic_t fetch_stop;
extern volatile sig_atomic_t fetch_atrn_fd;

/* Relay the reversed session on provider stream p to the local MTA. */
void fetch_relay(STREAM *p, const FETCH_OPTIONS *opt, FETCH_RELAY_RESULT *res);

/* ---- fetch_util.c: pure helpers (unit-tested) ------------------------------ */

/* Extensions of an EHLO reply line ("250-AUTH SCRAM-SHA-256 CRAM-MD5"
 * without the code): the keyword a relayed EHLO reply must not carry
 * toward the provider: STARTTLS, CHUNKING, BINARYMIME, AUTH, XCLIENT,
 * XFORWARD (we do not relay them). 1 drop, 0 keep. text is the line
 * after "250-" / "250 ". */
int fetch_ehlo_drop(const char *text);

/* Does the EHLO reply (SMTP_REPLY text, lines joined by "\n") offer
 * keyword (case-insensitive, first word of a line other than the first)?
 * When args_r is given, it receives the rest of that line (malloc'd). */
int fetch_ehlo_has(const char *text, const char *keyword, char **args_r);

/* Choose a SASL mechanism: the first of 'wanted' (space or comma list, in
 * our order of preference) that the server offers in 'offered' (its AUTH
 * line) and that is allowed: PLAIN and LOGIN only when tls_active,
 * EXTERNAL only when have_cert. Returns a pointer into a static
 * upper-case name, or NULL. */
const char *fetch_choose_mech(const char *wanted, const char *offered, int tls_active,
                              int have_cert);

/* Parse a SHA-256 fingerprint given as 64 hex digits, with or without
 * ':' between bytes, any case. 0 and out filled, or -1. */
int fetch_fingerprint_parse(const char *text, unsigned char out[32]);

/* "host:port", "[v6]:port", "host" (default_port), "unix:/path".
 * Fills *host_r and *port_r, or *path_r (malloc'd). 0 or -1 with *error_r. */
int fetch_parse_address(const char *text, const char *default_port, char **host_r,
                        char **port_r, char **path_r, char **error_r);

/* Read a password file: regular file, owned by the effective uid, no
 * permission for group or others; the first line without its end. 0 with
 * a malloc'd *password_r, or -1 with *error_r (never the password). */
int fetch_password_file(const char *path, char **password_r, char **error_r);

/* Connect to host:port (TCP) or path (unix socket), waiting at most
 * timeout_ms. Returns the fd, or -1 with *error_r. peer_r (size bytes)
 * receives "host[addr]:port" or the path. */
int fetch_connect(const char *host, const char *port, const char *path, int timeout_ms,
                  char *peer_r, size_t size, char **error_r);

#endif
