/*
 * sasl.c - SASL dispatcher, base64 and auth_maps secrets; see sasl.h.
 *
 * The dispatcher owns everything the mechanisms share: the base64 layer,
 * "*" cancellation, the response size limit, the TLS rule for plaintext
 * mechanisms, and the secret lookup. A mechanism file only sees decoded
 * bytes, so a malformed line never reaches mechanism code.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "config.h"
#include "maps.h"
#include "sasl.h"
#include "util.h"

static const SASL_MECH *const sasl_mechs[] = {
    &sasl_mech_scram_sha_256,
    &sasl_mech_cram_md5,
    &sasl_mech_plain,
    &sasl_mech_login,
    &sasl_mech_external,
};

/* Status names and replies, indexed by status. */
static const char *const sasl_status_names[] = {
    [SASL_OK] = "ok",
    [SASL_CONTINUE] = "continue",
    [SASL_FAIL] = "failed",
    [SASL_BADPROT] = "protocol error",
    [SASL_CANCEL] = "cancelled",
    [SASL_TEMPFAIL] = "temporary failure",
    [SASL_NOMECH] = "unknown mechanism",
    [SASL_ENCRYPT] = "encryption required",
};

static const char *const sasl_status_replies[] = {
    [SASL_OK] = "235 2.7.0 Authentication successful",
    [SASL_CONTINUE] = "334",
    [SASL_FAIL] = "535 5.7.8 Authentication credentials invalid",
    [SASL_BADPROT] = "501 5.5.2 Cannot decode response",
    [SASL_CANCEL] = "501 5.7.0 Authentication aborted",
    [SASL_TEMPFAIL] = "454 4.7.0 Temporary authentication failure",
    [SASL_NOMECH] = "504 5.5.4 Unrecognized authentication type",
    [SASL_ENCRYPT] = "538 5.7.11 Encryption required for requested authentication mechanism",
};

const char *
sasl_status_reply(int status)
{
    if (status < 0 || (size_t) status >= ODMR_ARRAY_LEN(sasl_status_replies))
        return "454 4.7.0 Temporary authentication failure";
    return sasl_status_replies[status];
}

const char *
sasl_status_name(int status)
{
    if (status < 0 || (size_t) status >= ODMR_ARRAY_LEN(sasl_status_names))
        return "unknown";
    return sasl_status_names[status];
}

static const SASL_MECH *
sasl_mech_find(const char *name)
{
    for (size_t i = 0; i < ODMR_ARRAY_LEN(sasl_mechs); i++)
        if (str_casecmp(name, sasl_mechs[i]->name) == 0)
            return sasl_mechs[i];
    return NULL;
}

int
sasl_mech_known(const char *name)
{
    return name != NULL && sasl_mech_find(name) != NULL;
}

/* Walk a space/comma separated list; fn returns nonzero to stop. */
static int
sasl_list_walk(const char *list, int (*fn)(const char *name, void *ctx), void *ctx)
{
    const char *p = list;

    while (p && *p) {
        char name[64];
        size_t n;

        p += strspn(p, " \t,");
        n = strcspn(p, " \t,");
        if (n == 0)
            break;
        if (n >= sizeof(name))
            n = sizeof(name) - 1;       /* too long to be known: fails lookup */
        memcpy(name, p, n);
        name[n] = 0;
        p += strcspn(p, " \t,");
        if (fn(name, ctx))
            return 1;
    }
    return 0;
}

static int
sasl_list_find_unknown(const char *name, void *ctx)
{
    char **bad = ctx;

    if (sasl_mech_known(name))
        return 0;
    *bad = x_strdup(name);
    return 1;
}

int
sasl_mech_list_check(const char *list, char **error_r)
{
    char *bad = NULL;

    if (sasl_list_walk(list, sasl_list_find_unknown, &bad)) {
        *error_r = x_asprintf("unknown SASL mechanism \"%s\" (known: %s)", bad,
                              SASL_MECHS_ALL);
        free(bad);
        return -1;
    }
    return 0;
}

struct list_match {
    const char *want;
    int found;
};

static int
sasl_list_match(const char *name, void *ctx)
{
    struct list_match *m = ctx;

    if (str_casecmp(name, m->want) == 0)
        m->found = 1;
    return m->found;
}

/* Is the mechanism allowed by a sasl_mechanisms value (NULL: all)? */
static int
sasl_mech_allowed(const char *list, const char *name)
{
    struct list_match m = { name, 0 };

    if (list == NULL)
        return 1;
    (void) sasl_list_walk(list, sasl_list_match, &m);
    return m.found;
}

/* Can this mechanism be offered/used with this configuration? */
static int
sasl_mech_usable(const SASL_MECH *mech, const SASL_SERVER_CONFIG *cfg)
{
    if (!sasl_mech_allowed(cfg->mechanisms, mech->name))
        return 0;
    if ((mech->flags & SASL_MECH_PLAINTEXT) && !cfg->tls_active)
        return 0;
    if ((mech->flags & SASL_MECH_EXTERNAL) && cfg->external_user == NULL)
        return 0;
    return 1;
}

char *
sasl_server_mech_list(const SASL_SERVER_CONFIG *cfg)
{
    char buf[256];
    size_t len = 0;

    buf[0] = 0;
    for (size_t i = 0; i < ODMR_ARRAY_LEN(sasl_mechs); i++) {
        const SASL_MECH *mech = sasl_mechs[i];
        size_t n = strlen(mech->name);

        if (!sasl_mech_usable(mech, cfg))
            continue;
        /* The names are ours and short: the buffer always fits them all. */
        if (len + n + 2 > sizeof(buf))
            break;
        if (len > 0)
            buf[len++] = ' ';
        memcpy(buf + len, mech->name, n + 1);
        len += n;
    }
    return x_strdup(buf);
}

/*
 * Server.
 */
SASL_SERVER *
sasl_server_new(const char *mech_name, const SASL_SERVER_CONFIG *cfg,
                int *status_r, char **error_r)
{
    const SASL_MECH *mech = mech_name ? sasl_mech_find(mech_name) : NULL;
    SASL_SERVER *s;

    *error_r = NULL;
    if (mech == NULL || !sasl_mech_allowed(cfg->mechanisms, mech->name)) {
        *status_r = SASL_NOMECH;
        *error_r = x_strdup(mech ? "mechanism disabled by sasl_mechanisms"
                            : "unknown mechanism");
        return NULL;
    }
    if ((mech->flags & SASL_MECH_PLAINTEXT) && !cfg->tls_active) {
        *status_r = SASL_ENCRYPT;
        *error_r = x_asprintf("%s refused without TLS", mech->name);
        return NULL;
    }
    if ((mech->flags & SASL_MECH_EXTERNAL) && cfg->external_user == NULL) {
        *status_r = SASL_FAIL;
        *error_r = x_strdup("EXTERNAL without a verified client certificate identity");
        return NULL;
    }
    if (cfg->lookup == NULL && !(mech->flags & SASL_MECH_EXTERNAL)) {
        *status_r = SASL_TEMPFAIL;
        *error_r = x_strdup("no secret lookup configured");
        return NULL;
    }
    s = x_calloc(1, sizeof(*s));
    s->mech = mech;
    s->cfg = *cfg;
    if (s->cfg.hostname == NULL || *s->cfg.hostname == 0)
        s->cfg.hostname = "localhost";
    if (s->cfg.response_limit == 0)
        s->cfg.response_limit = var_auth_response_limit > 0
            ? (size_t) var_auth_response_limit : 12288;
    s->reason = "";
    *status_r = SASL_CONTINUE;
    return s;
}

/* Finish a step with a final status (no more steps allowed). */
static int
sasl_server_final(SASL_SERVER *s, int status)
{
    s->done = 1;
    return status;
}

int
sasl_server_step(SASL_SERVER *s, const char *b64_in, char **b64_out_r)
{
    SASL_BUF in = { NULL, 0 }, out = { NULL, 0 };
    int first = (s->steps++ == 0);
    int status;

    *b64_out_r = NULL;
    if (s->done) {
        sasl_server_set_reason(s, "step after the end of the exchange");
        return SASL_BADPROT;
    }
    if (b64_in == NULL && !first) {
        sasl_server_set_reason(s, "missing response");
        return sasl_server_final(s, SASL_BADPROT);
    }
    if (b64_in != NULL) {
        if (strcmp(b64_in, "*") == 0) {
            sasl_server_set_reason(s, "cancelled by the client");
            return sasl_server_final(s, SASL_CANCEL);
        }
        if (strlen(b64_in) > s->cfg.response_limit) {
            sasl_server_set_reason(s, "response longer than auth_response_limit");
            return sasl_server_final(s, SASL_BADPROT);
        }
        /* RFC 4954: "=" is an empty initial response; later an empty
         * line is an empty response. */
        if (first && strcmp(b64_in, "=") == 0)
            b64_in = "";
        else if (first && *b64_in == 0) {
            sasl_server_set_reason(s, "empty initial response (use \"=\")");
            return sasl_server_final(s, SASL_BADPROT);
        }
        if (sasl_b64_decode(b64_in, s->cfg.response_limit, &in.data, &in.len) < 0) {
            sasl_server_set_reason(s, "malformed base64 response");
            return sasl_server_final(s, SASL_BADPROT);
        }
    }
    status = s->mech->server_step(s, b64_in ? &in : NULL, &out);
    if (in.data) {
        OPENSSL_cleanse(in.data, in.len);
        free(in.data);
    }
    if (status == SASL_CONTINUE) {
        *b64_out_r = sasl_b64_encode(out.data ? out.data : (const unsigned char *) "",
                                     out.len);
    } else {
        s->done = 1;
        if (status == SASL_OK)
            s->reason = "";
    }
    if (out.data) {
        OPENSSL_cleanse(out.data, out.len);
        free(out.data);
    }
    return status;
}

const char *
sasl_server_user(const SASL_SERVER *s)
{
    return s->user;
}

const char *
sasl_server_reason(const SASL_SERVER *s)
{
    return s->reason ? s->reason : "";
}

const char *
sasl_server_mech(const SASL_SERVER *s)
{
    return s->mech->name;
}

void
sasl_server_free(SASL_SERVER **sp)
{
    SASL_SERVER *s = *sp;

    if (s == NULL)
        return;
    if (s->mech->server_free)
        s->mech->server_free(s);
    free(s->user);
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
    *sp = NULL;
}

void
sasl_server_set_user(SASL_SERVER *s, const char *user)
{
    free(s->user);
    s->user = x_strdup(user);
}

void
sasl_server_set_reason(SASL_SERVER *s, const char *reason)
{
    s->reason = reason;
}

void
sasl_server_reason_scheme(SASL_SERVER *s, int scheme)
{
    (void) str_format(s->reason_buf, sizeof(s->reason_buf),
                      "secret scheme %s cannot serve %s",
                      sasl_scheme_name(scheme), s->mech->name);
    s->reason = s->reason_buf;
}

int
sasl_server_secret(SASL_SERVER *s, const char *user, SASL_SECRET *secret)
{
    char *value = NULL;
    const char *why;
    int rc;

    memset(secret, 0, sizeof(*secret));
    rc = s->cfg.lookup(s->cfg.lookup_ctx, user, &value);
    if (rc == MAP_ERROR) {
        sasl_server_set_reason(s, "auth_maps lookup error");
        return SASL_TEMPFAIL;
    }
    if (rc != MAP_FOUND || value == NULL) {
        sasl_server_set_reason(s, "unknown user");
        return SASL_FAIL;
    }
    rc = sasl_secret_parse(value, secret, &why);
    sasl_wipe_free(&value);
    if (rc < 0) {
        (void) str_format(s->reason_buf, sizeof(s->reason_buf),
                          "malformed auth_maps secret: %s", why);
        s->reason = s->reason_buf;
        return SASL_FAIL;
    }
    return SASL_OK;
}

void
sasl_buf_set(SASL_BUF *out, const void *data, size_t len)
{
    out->data = x_malloc(len + 1);
    if (len)
        memcpy(out->data, data, len);
    out->data[len] = 0;
    out->len = len;
}

/*
 * Client.
 */
SASL_CLIENT *
sasl_client_new(const char *mech_name, const char *user, const char *password,
                char **error_r)
{
    const SASL_MECH *mech = mech_name ? sasl_mech_find(mech_name) : NULL;
    SASL_CLIENT *c;

    *error_r = NULL;
    if (mech == NULL) {
        *error_r = x_asprintf("unknown SASL mechanism \"%s\"", mech_name ? mech_name : "");
        return NULL;
    }
    if (!(mech->flags & SASL_MECH_EXTERNAL)
        && (user == NULL || *user == 0 || password == NULL)) {
        *error_r = x_asprintf("%s needs a user name and a password", mech->name);
        return NULL;
    }
    c = x_calloc(1, sizeof(*c));
    c->mech = mech;
    c->user = x_strdup(user ? user : "");
    c->password = x_strdup(password ? password : "");
    return c;
}

void
sasl_client_set_test_nonce(SASL_CLIENT *c, const char *nonce)
{
    free(c->test_nonce);
    c->test_nonce = nonce ? x_strdup(nonce) : NULL;
}

int
sasl_client_step(SASL_CLIENT *c, const char *b64_in, char **b64_out_r)
{
    SASL_BUF in = { NULL, 0 }, out = { NULL, 0 };
    int status;

    *b64_out_r = NULL;
    if (b64_in == NULL && c->steps > 0)
        return SASL_BADPROT;
    c->steps++;
    if (b64_in != NULL
        && sasl_b64_decode(b64_in, (size_t) 1 << 16, &in.data, &in.len) < 0)
        return SASL_BADPROT;
    status = c->mech->client_step(c, b64_in ? &in : NULL, &out);
    if (in.data) {
        OPENSSL_cleanse(in.data, in.len);
        free(in.data);
    }
    if (status == SASL_CONTINUE && out.data != NULL) {
        /* RFC 4954: an empty initial response is sent as "=". */
        if (b64_in == NULL && out.len == 0)
            *b64_out_r = x_strdup("=");
        else
            *b64_out_r = sasl_b64_encode(out.data, out.len);
    }
    if (out.data) {
        OPENSSL_cleanse(out.data, out.len);
        free(out.data);
    }
    return status;
}

int
sasl_client_finish(const SASL_CLIENT *c)
{
    if (c->mech->client_finish)
        return c->mech->client_finish(c);
    return c->steps > 0 ? SASL_OK : SASL_FAIL;
}

const char *
sasl_client_mech(const SASL_CLIENT *c)
{
    return c->mech->name;
}

void
sasl_client_free(SASL_CLIENT **cp)
{
    SASL_CLIENT *c = *cp;

    if (c == NULL)
        return;
    if (c->mech->client_free)
        c->mech->client_free(c);
    sasl_wipe_free(&c->user);
    sasl_wipe_free(&c->password);
    free(c->test_nonce);
    free(c);
    *cp = NULL;
}

/*
 * Secrets.
 */
static const char *const sasl_scheme_names[] = {
    [SASL_SCHEME_PLAIN] = "PLAIN",
    [SASL_SCHEME_CRAM_MD5] = "CRAM-MD5",
    [SASL_SCHEME_SCRAM_SHA_256] = "SCRAM-SHA-256",
};

int
sasl_scheme_by_name(const char *name)
{
    for (size_t i = 1; i < ODMR_ARRAY_LEN(sasl_scheme_names); i++)
        if (str_casecmp(name, sasl_scheme_names[i]) == 0)
            return (int) i;
    return 0;
}

const char *
sasl_scheme_name(int scheme)
{
    if (scheme < 1 || (size_t) scheme >= ODMR_ARRAY_LEN(sasl_scheme_names))
        return "unknown";
    return sasl_scheme_names[scheme];
}

static int
hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Exactly 2*len hex digits into out. */
static int
hex_decode(const char *hex, size_t hexlen, unsigned char *out, size_t len)
{
    if (hexlen != 2 * len)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char) (hi << 4 | lo);
    }
    return 0;
}

/* Decode a base64 field of exactly want bytes (want 0: 1..max bytes). */
static int
b64_field(const char *p, size_t n, unsigned char *out, size_t want, size_t max,
          size_t *len_r)
{
    char *tmp = x_strndup(p, n);
    unsigned char *dec;
    size_t len;
    int rc = -1;

    if (sasl_b64_decode(tmp, want ? want : max, &dec, &len) == 0) {
        if ((want && len == want) || (!want && len > 0)) {
            memcpy(out, dec, len);
            if (len_r)
                *len_r = len;
            rc = 0;
        }
        OPENSSL_cleanse(dec, len);
        free(dec);
    }
    free(tmp);
    return rc;
}

/* "ITER:SALT$STOREDKEY:SERVERKEY" */
static int
sasl_secret_parse_scram(const char *data, SASL_SECRET *secret, const char **why_r)
{
    const char *colon1 = strchr(data, ':');
    const char *dollar = colon1 ? strchr(colon1 + 1, '$') : NULL;
    const char *colon2 = dollar ? strchr(dollar + 1, ':') : NULL;
    char iter[16];
    size_t n;

    if (colon2 == NULL) {
        *why_r = "SCRAM-SHA-256 secret is not ITER:SALT$STOREDKEY:SERVERKEY";
        return -1;
    }
    n = (size_t) (colon1 - data);
    if (n == 0 || n >= sizeof(iter)) {
        *why_r = "bad SCRAM-SHA-256 iteration count";
        return -1;
    }
    memcpy(iter, data, n);
    iter[n] = 0;
    if (parse_long(iter, 1, SASL_SCRAM_ITER_MAX, &secret->iter) < 0) {
        *why_r = "bad SCRAM-SHA-256 iteration count";
        return -1;
    }
    if (b64_field(colon1 + 1, (size_t) (dollar - colon1 - 1), secret->salt, 0,
                  SASL_SCRAM_SALT_MAX, &secret->salt_len) < 0) {
        *why_r = "bad SCRAM-SHA-256 salt";
        return -1;
    }
    if (b64_field(dollar + 1, (size_t) (colon2 - dollar - 1), secret->stored_key,
                  SASL_SCRAM_KEYLEN, SASL_SCRAM_KEYLEN, NULL) < 0
        || b64_field(colon2 + 1, strlen(colon2 + 1), secret->server_key,
                     SASL_SCRAM_KEYLEN, SASL_SCRAM_KEYLEN, NULL) < 0) {
        *why_r = "bad SCRAM-SHA-256 key";
        return -1;
    }
    return 0;
}

int
sasl_secret_parse(const char *value, SASL_SECRET *secret, const char **why_r)
{
    const char *close;
    char name[32];
    size_t n;
    int rc = 0;

    memset(secret, 0, sizeof(*secret));
    *why_r = "";
    if (value[0] != '{' || (close = strchr(value, '}')) == NULL) {
        *why_r = "secret has no {SCHEME} tag";
        return -1;
    }
    n = (size_t) (close - value - 1);
    if (n == 0 || n >= sizeof(name)) {
        *why_r = "unknown secret scheme";
        return -1;
    }
    memcpy(name, value + 1, n);
    name[n] = 0;
    secret->scheme = sasl_scheme_by_name(name);
    switch (secret->scheme) {
    case SASL_SCHEME_PLAIN:
        secret->plain = x_strdup(close + 1);
        break;
    case SASL_SCHEME_CRAM_MD5:
        if (hex_decode(close + 1, strlen(close + 1), secret->cram,
                       SASL_CRAM_CONTEXTLEN) < 0) {
            *why_r = "CRAM-MD5 secret is not 64 hex digits";
            rc = -1;
        }
        break;
    case SASL_SCHEME_SCRAM_SHA_256:
        rc = sasl_secret_parse_scram(close + 1, secret, why_r);
        break;
    default:
        *why_r = "unknown secret scheme";
        rc = -1;
        break;
    }
    if (rc < 0)
        sasl_secret_wipe(secret);
    return rc;
}

void
sasl_secret_wipe(SASL_SECRET *secret)
{
    sasl_wipe_free(&secret->plain);
    OPENSSL_cleanse(secret, sizeof(*secret));
}

static void
hex_encode(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = 0;
}

char *
sasl_secret_make(int scheme, const char *password, long rounds,
                 const unsigned char *salt, size_t salt_len, char **error_r)
{
    unsigned char ctx[SASL_CRAM_CONTEXTLEN];
    unsigned char rnd[SASL_SCRAM_SALT_DEFAULT];
    unsigned char stored[SASL_SCRAM_KEYLEN], server[SASL_SCRAM_KEYLEN];
    char hex[2 * SASL_CRAM_CONTEXTLEN + 1];
    char *salt64, *stored64, *server64, *result;

    *error_r = NULL;
    switch (scheme) {
    case SASL_SCHEME_PLAIN:
        return x_asprintf("{PLAIN}%s", password);
    case SASL_SCHEME_CRAM_MD5:
        sasl_cram_context(password, ctx);
        hex_encode(ctx, sizeof(ctx), hex);
        result = x_asprintf("{CRAM-MD5}%s", hex);
        OPENSSL_cleanse(ctx, sizeof(ctx));
        OPENSSL_cleanse(hex, sizeof(hex));
        return result;
    case SASL_SCHEME_SCRAM_SHA_256:
        if (rounds == 0)
            rounds = SASL_SCRAM_ITER_DEFAULT;
        if (rounds < SASL_SCRAM_ITER_MIN || rounds > SASL_SCRAM_ITER_MAX) {
            *error_r = x_asprintf("SCRAM-SHA-256 iterations must be %d..%d",
                                  SASL_SCRAM_ITER_MIN, SASL_SCRAM_ITER_MAX);
            return NULL;
        }
        if (salt == NULL) {
            if (random_bytes(rnd, sizeof(rnd)) < 0) {
                *error_r = x_strdup("cannot get random bytes for the salt");
                return NULL;
            }
            salt = rnd;
            salt_len = sizeof(rnd);
        } else if (salt_len == 0 || salt_len > SASL_SCRAM_SALT_MAX) {
            *error_r = x_strdup("bad salt length");
            return NULL;
        }
        if (sasl_scram_keys(password, salt, salt_len, rounds, stored, server) < 0) {
            *error_r = x_strdup("PBKDF2 failed");
            return NULL;
        }
        salt64 = sasl_b64_encode(salt, salt_len);
        stored64 = sasl_b64_encode(stored, sizeof(stored));
        server64 = sasl_b64_encode(server, sizeof(server));
        result = x_asprintf("{SCRAM-SHA-256}%ld:%s$%s:%s", rounds, salt64,
                            stored64, server64);
        free(salt64);
        sasl_wipe_free(&stored64);
        sasl_wipe_free(&server64);
        OPENSSL_cleanse(stored, sizeof(stored));
        OPENSSL_cleanse(server, sizeof(server));
        return result;
    default:
        *error_r = x_strdup("unknown scheme");
        return NULL;
    }
}

int
sasl_secret_check(const SASL_SECRET *secret, const char *password)
{
    unsigned char ctx[SASL_CRAM_CONTEXTLEN];
    unsigned char stored[SASL_SCRAM_KEYLEN], server[SASL_SCRAM_KEYLEN];
    unsigned char d1[32], d2[32];       /* SHA-256 */
    unsigned int n1, n2;
    int ok = 0;

    switch (secret->scheme) {
    case SASL_SCHEME_PLAIN:
        /* Compare fixed-size digests so the time depends neither on the
         * lengths nor on where the strings differ. */
        if (EVP_Digest(password, strlen(password), d1, &n1, EVP_sha256(), NULL) == 1
            && EVP_Digest(secret->plain, strlen(secret->plain), d2, &n2,
                          EVP_sha256(), NULL) == 1)
            ok = CRYPTO_memcmp(d1, d2, sizeof(d1)) == 0;
        OPENSSL_cleanse(d1, sizeof(d1));
        OPENSSL_cleanse(d2, sizeof(d2));
        break;
    case SASL_SCHEME_CRAM_MD5:
        sasl_cram_context(password, ctx);
        ok = CRYPTO_memcmp(ctx, secret->cram, sizeof(ctx)) == 0;
        OPENSSL_cleanse(ctx, sizeof(ctx));
        break;
    case SASL_SCHEME_SCRAM_SHA_256:
        if (sasl_scram_keys(password, secret->salt, secret->salt_len, secret->iter,
                            stored, server) == 0)
            ok = CRYPTO_memcmp(stored, secret->stored_key, sizeof(stored)) == 0;
        OPENSSL_cleanse(stored, sizeof(stored));
        OPENSSL_cleanse(server, sizeof(server));
        break;
    }
    return ok;
}

int
sasl_secret_verify(const char *value, const char *password, const char **why_r)
{
    SASL_SECRET secret;
    int ok;

    if (sasl_secret_parse(value, &secret, why_r) < 0)
        return -1;
    ok = sasl_secret_check(&secret, password);
    sasl_secret_wipe(&secret);
    return ok;
}

void
sasl_wipe_free(char **sp)
{
    if (*sp) {
        OPENSSL_cleanse(*sp, strlen(*sp));
        free(*sp);
        *sp = NULL;
    }
}

/*
 * Base64.
 */
static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *
sasl_b64_encode(const unsigned char *in, size_t len)
{
    char *out = x_malloc((len + 2) / 3 * 4 + 1);
    char *p = out;
    size_t i;

    for (i = 0; i + 2 < len; i += 3) {
        unsigned v = (unsigned) in[i] << 16 | (unsigned) in[i + 1] << 8 | in[i + 2];

        *p++ = b64_alphabet[v >> 18 & 63];
        *p++ = b64_alphabet[v >> 12 & 63];
        *p++ = b64_alphabet[v >> 6 & 63];
        *p++ = b64_alphabet[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned) in[i] << 16 | (i + 1 < len ? (unsigned) in[i + 1] << 8 : 0);

        *p++ = b64_alphabet[v >> 18 & 63];
        *p++ = b64_alphabet[v >> 12 & 63];
        *p++ = i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=';
        *p++ = '=';
    }
    *p = 0;
    return out;
}

static int
b64_value(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int
sasl_b64_decode(const char *in, size_t max_out, unsigned char **out_r, size_t *len_r)
{
    size_t inlen = strlen(in), pad = 0, outlen;
    unsigned char *out;
    size_t o = 0;

    *out_r = NULL;
    *len_r = 0;
    if (inlen % 4 != 0)
        return -1;
    if (inlen > 0 && in[inlen - 1] == '=')
        pad = (inlen > 1 && in[inlen - 2] == '=') ? 2 : 1;
    outlen = inlen / 4 * 3 - pad;
    if (outlen > max_out)
        return -1;
    out = x_malloc(outlen + 1);
    for (size_t i = 0; i < inlen; i += 4) {
        int v[4];
        int last = (i + 4 == inlen);

        for (int k = 0; k < 4; k++) {
            /* '=' is allowed only in the padding positions of the last
             * group, which b64_value() rejects elsewhere. */
            if (last && k >= 4 - (int) pad)
                v[k] = 0;
            else if ((v[k] = b64_value((unsigned char) in[i + k])) < 0)
                goto bad;
        }
        unsigned w = (unsigned) v[0] << 18 | (unsigned) v[1] << 12
            | (unsigned) v[2] << 6 | (unsigned) v[3];

        out[o++] = (unsigned char) (w >> 16);
        if (!last || pad < 2)
            out[o++] = (unsigned char) (w >> 8);
        if (!last || pad < 1)
            out[o++] = (unsigned char) w;
        /* Canonical form only: the bits the padding hides must be zero. */
        if (last && ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff))))
            goto bad;
    }
    out[o] = 0;
    *out_r = out;
    *len_r = o;
    return 0;

  bad:
    OPENSSL_cleanse(out, outlen + 1);
    free(out);
    return -1;
}
