/*
 * sasl.h - SASL for SMTP AUTH (RFC 4954), server side and client side.
 *
 * Mechanisms: CRAM-MD5 (RFC 2195, mandatory for ODMR by RFC 2645),
 * SCRAM-SHA-256 (RFC 5802, RFC 7677; no channel binding, no -PLUS),
 * PLAIN (RFC 4616) and LOGIN (only under TLS), EXTERNAL (RFC 4422: the
 * identity of a verified TLS client certificate).
 *
 * Pure state machines: nothing here reads or writes a socket or logs a
 * secret. The caller moves base64 text between the wire and these
 * functions and turns each outcome into an SMTP reply with
 * sasl_status_reply().
 *
 * SERVER SIDE (odmrd)
 *     cfg = { .hostname, .tls_active, .mechanisms, .external_user,
 *             .lookup, .lookup_ctx };
 *     s = sasl_server_new("CRAM-MD5", &cfg, &status, &error);
 *         NULL: reply sasl_status_reply(status) (504, 538, 535) and log error.
 *     status = sasl_server_step(s, initial_response_or_NULL, &out);
 *     while (status == SASL_CONTINUE) {
 *         send "334 " out; read a line; status = sasl_server_step(s, line, &out);
 *     }
 *     SASL_OK: reply 235, the user is sasl_server_user(s).
 *     otherwise: reply sasl_status_reply(status), log sasl_server_reason(s)
 *     and the (cleaned) claimed user sasl_server_user(s), if any.
 *     sasl_server_free(&s);
 *
 * Input lines are base64 text as received (CR LF removed): "*" cancels
 * (SASL_CANCEL, 501), anything not strict base64 is SASL_BADPROT (501), so
 * is a line longer than the response limit. On the first step the
 * initial response of "AUTH MECH <ir>" may be given, "=" meaning an empty
 * one (RFC 4954); NULL means there was none.
 *
 * The server has no extra data with success in SMTP: SCRAM's
 * server-final-message "v=..." goes out as one more 334 challenge and the
 * client's empty response then gives SASL_OK (RFC 4954 section 4).
 *
 * CLIENT SIDE (test tools, odmr-fetch)
 *     c = sasl_client_new("SCRAM-SHA-256", user, password, &error);
 *     sasl_client_step(c, NULL, &out): out is the initial response for
 *         "AUTH MECH <out>" ("=" when empty), or NULL when the mechanism
 *         has none (CRAM-MD5, LOGIN): send "AUTH MECH" alone.
 *     on each "334 <text>": sasl_client_step(c, text, &out), send out
 *         (possibly the empty line). SASL_BADPROT/SASL_FAIL: the server's
 *         challenge was bad or the server failed to prove itself (SCRAM):
 *         send "*" and give up.
 *     on 235: sasl_client_finish(c) must be SASL_OK, else the server did
 *         not authenticate itself (SCRAM without a verified "v=").
 *     sasl_client_free(&c);
 *
 * SECRETS (auth_maps values, made by odmr-passwd)
 *     {PLAIN}password        any mechanism
 *     {CRAM-MD5}<64 hex>     CRAM-MD5, PLAIN, LOGIN: the HMAC-MD5 key
 *                            schedule of RFC 2104 section 4 as Dovecot
 *                            stores it: MD5 state (A,B,C,D, little-endian)
 *                            after the opad block, then after the ipad block
 *     {SCRAM-SHA-256}ITER:SALT$STOREDKEY:SERVERKEY   (RFC 5803 shape,
 *                            base64 fields) SCRAM-SHA-256, PLAIN, LOGIN
 * A secret that cannot serve the chosen mechanism fails like a wrong
 * password; sasl_server_reason() says why (for the log).
 *
 * Not done: SASLprep (names and passwords are compared as bytes; use
 * ASCII), security layers, channel binding.
 */
#ifndef ODMR_SASL_H
#define ODMR_SASL_H

#include <stddef.h>

/* Outcomes. The server's SMTP reply for each is sasl_status_reply(). */
#define SASL_OK         0   /* 235 2.7.0: authenticated */
#define SASL_CONTINUE   1   /* 334: send *b64_out_r */
#define SASL_FAIL       2   /* 535 5.7.8: bad credentials (any reason) */
#define SASL_BADPROT    3   /* 501 5.5.2: bad base64, malformed message */
#define SASL_CANCEL     4   /* 501 5.7.0: the client sent "*" */
#define SASL_TEMPFAIL   5   /* 454 4.7.0: secret lookup failed */
#define SASL_NOMECH     6   /* 504 5.5.4: unknown or disabled mechanism */
#define SASL_ENCRYPT    7   /* 538 5.7.11: plaintext mechanism without TLS */

/* The SMTP reply for a status, without CRLF, e.g.
 * "535 5.7.8 Authentication credentials invalid"; "334" for SASL_CONTINUE. */
const char *sasl_status_reply(int status);
/* A short name for logs: "ok", "continue", "failed", ... */
const char *sasl_status_name(int status);

/* Mechanisms implemented here, in order of preference. */
#define SASL_MECHS_ALL "SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN EXTERNAL"

/* Is name (case-insensitive) a mechanism implemented here? */
int sasl_mech_known(const char *name);

/* Check a sasl_mechanisms value: every name known. 0, or -1 and a
 * malloc'd *error_r naming the first unknown one. */
int sasl_mech_list_check(const char *list, char **error_r);

/*
 * Server.
 */
typedef struct sasl_server SASL_SERVER;

typedef struct sasl_server_config {
    const char *hostname;      /* for the CRAM-MD5 challenge; NULL: "localhost" */
    int tls_active;            /* PLAIN and LOGIN only when set */
    const char *mechanisms;    /* allowed mechanisms (sasl_mechanisms); NULL: all */
    const char *external_user; /* user mapped from a verified client
                                * certificate, or NULL: no EXTERNAL */
    /* Secret lookup: MAP_FOUND (*secret_r malloc'd; wiped and freed here),
     * MAP_NOTFOUND or MAP_ERROR (see maps.h). The callback logs its own
     * errors. */
    int (*lookup)(void *ctx, const char *user, char **secret_r);
    void *lookup_ctx;
    /* Longest base64 response line accepted; 0: var_auth_response_limit. */
    size_t response_limit;
    /* Key for the stable fake SCRAM salt of users without a SCRAM secret
     * (unknown users included): HMAC-SHA-256(key, user), so that two
     * attempts cannot tell an unknown user from a real one. NULL: a random
     * salt at every attempt (which gives unknown users away). */
    const unsigned char *fake_salt_key;
    size_t fake_salt_key_len;
    /* Tests only: the CRAM-MD5 challenge, or the server part of the SCRAM
     * nonce, instead of random ones. NULL in production. */
    const char *test_nonce;
} SASL_SERVER_CONFIG;

/* Start a server exchange. The cfg strings must outlive the session.
 * NULL when the mechanism cannot start: *status_r is SASL_NOMECH (unknown
 * or not in cfg->mechanisms), SASL_ENCRYPT (PLAIN/LOGIN without TLS) or
 * SASL_FAIL (EXTERNAL without an identity), and *error_r (malloc'd)
 * says why for the log. */
SASL_SERVER *sasl_server_new(const char *mech, const SASL_SERVER_CONFIG *cfg,
                             int *status_r, char **error_r);

/* One step; see the top of this file. b64_in: NULL on the first step when
 * there is no initial response. On SASL_CONTINUE *b64_out_r is the
 * malloc'd base64 challenge (possibly ""), else it is NULL. Once a step
 * returned anything but SASL_CONTINUE, later steps return SASL_BADPROT. */
int sasl_server_step(SASL_SERVER *s, const char *b64_in, char **b64_out_r);

/* After SASL_OK: the authenticated user. Before or after a failure: the
 * user name the client claimed (peer text: clean it before logging), or
 * NULL when none was seen yet. */
const char *sasl_server_user(const SASL_SERVER *s);

/* Why the last step failed, for the log ("unknown user", "wrong
 * password", "secret scheme CRAM-MD5 cannot serve SCRAM-SHA-256", ...);
 * never contains a secret. "" when there was no failure. */
const char *sasl_server_reason(const SASL_SERVER *s);

/* The mechanism name, upper case. */
const char *sasl_server_mech(const SASL_SERVER *s);

void sasl_server_free(SASL_SERVER **sp);

/* The mechanisms to advertise in EHLO's AUTH line, space separated
 * (malloc'd, possibly ""): those in cfg->mechanisms (all when NULL) that
 * are implemented, PLAIN and LOGIN only when cfg->tls_active, EXTERNAL
 * only when cfg->external_user is set. */
char *sasl_server_mech_list(const SASL_SERVER_CONFIG *cfg);

/*
 * Client.
 */
typedef struct sasl_client SASL_CLIENT;

/* user: the authentication identity (for EXTERNAL: the authorization
 * identity to request, NULL or "" for none); password: NULL for EXTERNAL.
 * NULL and *error_r (malloc'd) for an unknown mechanism or a missing
 * argument. Copies of user and password are kept and wiped on free. */
SASL_CLIENT *sasl_client_new(const char *mech, const char *user,
                             const char *password, char **error_r);

/* Tests only: the SCRAM client nonce instead of a random one. */
void sasl_client_set_test_nonce(SASL_CLIENT *c, const char *nonce);

/* b64_in NULL: start; *b64_out_r is the initial response ("=" for an empty
 * one) or NULL when the mechanism has none. Otherwise b64_in is the text
 * of a 334 reply and *b64_out_r the line to send. SASL_CONTINUE on
 * success; SASL_BADPROT for a malformed challenge, SASL_FAIL when the
 * server failed to prove itself (then *b64_out_r is NULL: send "*").
 * The output may carry the password (PLAIN, LOGIN): free it with
 * sasl_wipe_free(). */
int sasl_client_step(SASL_CLIENT *c, const char *b64_in, char **b64_out_r);

/* After the server's 235: SASL_OK when the exchange is complete (for
 * SCRAM: the server signature was verified), else SASL_FAIL. */
int sasl_client_finish(const SASL_CLIENT *c);

const char *sasl_client_mech(const SASL_CLIENT *c);

void sasl_client_free(SASL_CLIENT **cp);

/*
 * Secrets.
 */
#define SASL_SCHEME_PLAIN          1
#define SASL_SCHEME_CRAM_MD5       2
#define SASL_SCHEME_SCRAM_SHA_256  3

#define SASL_CRAM_CONTEXTLEN       32       /* opad state, ipad state */
#define SASL_SCRAM_KEYLEN          32       /* SHA-256 */
#define SASL_SCRAM_SALT_MAX        64
#define SASL_SCRAM_SALT_DEFAULT    16
#define SASL_SCRAM_ITER_MIN        4096     /* RFC 7677 section 4 */
#define SASL_SCRAM_ITER_MAX        1000000  /* bounds a client's work */
#define SASL_SCRAM_ITER_DEFAULT    4096

typedef struct sasl_secret {
    int scheme;                 /* SASL_SCHEME_* */
    char *plain;                /* PLAIN: malloc'd password */
    unsigned char cram[SASL_CRAM_CONTEXTLEN];
    long iter;                  /* SCRAM */
    unsigned char salt[SASL_SCRAM_SALT_MAX];
    size_t salt_len;
    unsigned char stored_key[SASL_SCRAM_KEYLEN];
    unsigned char server_key[SASL_SCRAM_KEYLEN];
} SASL_SECRET;

/* Scheme name ("PLAIN", case-insensitive) to SASL_SCHEME_*, or 0. */
int sasl_scheme_by_name(const char *name);
const char *sasl_scheme_name(int scheme);

/* Parse "{SCHEME}data". 0, or -1 with a static *why_r (no secret text). */
int sasl_secret_parse(const char *value, SASL_SECRET *secret, const char **why_r);
/* Wipe and free what the secret holds; safe on a zeroed struct. */
void sasl_secret_wipe(SASL_SECRET *secret);

/* Make an auth_maps value for a password. rounds: SCRAM iterations, 0 for
 * the default (ignored by the other schemes). salt: SCRAM salt, NULL for
 * a random one. NULL and a malloc'd *error_r on a bad argument. The
 * result is malloc'd; free it with sasl_wipe_free(). */
char *sasl_secret_make(int scheme, const char *password, long rounds,
                       const unsigned char *salt, size_t salt_len,
                       char **error_r);

/* Does password match the parsed secret? 1 yes, 0 no (constant time in
 * the comparison). */
int sasl_secret_check(const SASL_SECRET *secret, const char *password);

/* Same for an unparsed value: 1 match, 0 mismatch, -1 malformed (*why_r). */
int sasl_secret_verify(const char *value, const char *password, const char **why_r);

/* Free a string that may hold a secret, after wiping it; NULLs *sp. */
void sasl_wipe_free(char **sp);

/*
 * Base64 (RFC 4648 section 4, with padding). Strict: no whitespace, no
 * characters outside the alphabet, padding only at the end and only as
 * needed, unused bits zero.
 */
/* malloc'd, NUL-terminated. */
char *sasl_b64_encode(const unsigned char *in, size_t len);
/* 0: *out_r malloc'd (one extra NUL byte after *len_r bytes); -1: bad
 * input or more than max_out decoded bytes. */
int sasl_b64_decode(const char *in, size_t max_out, unsigned char **out_r,
                    size_t *len_r);

/*
 * Internal: the interface between the dispatcher (sasl.c) and one file per
 * mechanism (sasl_cram.c, sasl_scram.c, sasl_plain.c, sasl_external.c).
 * Nothing outside sasl*.c uses what follows.
 */
#define SASL_MECH_PLAINTEXT  (1 << 0)   /* needs TLS */
#define SASL_MECH_EXTERNAL   (1 << 1)   /* needs cfg->external_user */

/* A decoded message: len bytes plus a NUL (which may also occur inside). */
typedef struct sasl_buf {
    unsigned char *data;
    size_t len;
} SASL_BUF;

typedef struct sasl_mech {
    const char *name;
    int flags;
    /* in NULL: first step without initial response. On SASL_CONTINUE
     * (and on the client side) *out is set to malloc'd bytes, or left
     * NULL for "no initial response". */
    int (*server_step)(SASL_SERVER *s, const SASL_BUF *in, SASL_BUF *out);
    void (*server_free)(SASL_SERVER *s);
    int (*client_step)(SASL_CLIENT *c, const SASL_BUF *in, SASL_BUF *out);
    int (*client_finish)(const SASL_CLIENT *c);
    void (*client_free)(SASL_CLIENT *c);
} SASL_MECH;

struct sasl_server {
    const SASL_MECH *mech;
    SASL_SERVER_CONFIG cfg;
    int steps;              /* steps taken so far */
    int done;               /* a final status was returned */
    char *user;             /* claimed, then authenticated */
    const char *reason;     /* static text */
    char reason_buf[128];   /* for reasons with a scheme name */
    void *state;            /* the mechanism's */
};

struct sasl_client {
    const SASL_MECH *mech;
    char *user;
    char *password;
    char *test_nonce;
    int steps;
    void *state;
};

extern const SASL_MECH sasl_mech_cram_md5;
extern const SASL_MECH sasl_mech_scram_sha_256;
extern const SASL_MECH sasl_mech_plain;
extern const SASL_MECH sasl_mech_login;
extern const SASL_MECH sasl_mech_external;

/* Record the claimed user (copied). */
void sasl_server_set_user(SASL_SERVER *s, const char *user);
/* Record a failure reason (a static string). */
void sasl_server_set_reason(SASL_SERVER *s, const char *reason);
/* "secret scheme X cannot serve MECH" into reason_buf. */
void sasl_server_reason_scheme(SASL_SERVER *s, int scheme);
/* Look up and parse the user's secret: SASL_OK (secret filled),
 * SASL_FAIL (unknown user or malformed secret; reason set) or
 * SASL_TEMPFAIL (reason set). */
int sasl_server_secret(SASL_SERVER *s, const char *user, SASL_SECRET *secret);
/* A copy of len bytes into out (malloc'd). */
void sasl_buf_set(SASL_BUF *out, const void *data, size_t len);

/* CRAM-MD5 (sasl_cram.c): the Dovecot-style key schedule of a password,
 * and the HMAC-MD5 of a challenge from it. */
void sasl_cram_context(const char *password, unsigned char ctx_r[SASL_CRAM_CONTEXTLEN]);
void sasl_cram_digest(const unsigned char ctx[SASL_CRAM_CONTEXTLEN],
                      const unsigned char *challenge, size_t len,
                      unsigned char digest_r[16]);

/* SCRAM-SHA-256 keys (sasl_scram.c): 0, or -1 when the crypto library
 * fails. */
int sasl_scram_keys(const char *password, const unsigned char *salt, size_t salt_len,
                    long iter, unsigned char stored_key_r[SASL_SCRAM_KEYLEN],
                    unsigned char server_key_r[SASL_SCRAM_KEYLEN]);

#endif
