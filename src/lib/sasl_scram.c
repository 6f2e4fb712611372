/*
 * sasl_scram.c - SCRAM-SHA-256 (RFC 5802, RFC 7677), server and client;
 * see sasl.h.
 *
 * No channel binding: we never offer SCRAM-SHA-256-PLUS, so a client that
 * asks for it ("p=") is refused; "n" and "y" are accepted (RFC 5802
 * section 6). No SASLprep: names and passwords are used as bytes.
 *
 * In SMTP the server-final-message goes out as a 334 challenge and the
 * client answers with an empty line (RFC 4954 section 4).
 *
 * A user who does not exist, or whose secret cannot serve SCRAM, still
 * gets a server-first-message with a random salt and fails only at the
 * proof, so the exchange does not tell which users exist.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sasl.h"
#include "util.h"

#define SCRAM_NONCE_RANDOM 18           /* bytes: 24 base64 characters */
#define SCRAM_NAME_MAX 255

/*
 * Crypto helpers.
 */
static int
scram_hmac(const unsigned char *key, size_t keylen, const void *data, size_t len,
           unsigned char out[SASL_SCRAM_KEYLEN])
{
    unsigned int n = 0;

    return HMAC(EVP_sha256(), key, (int) keylen, data, len, out, &n) != NULL
        && n == SASL_SCRAM_KEYLEN ? 0 : -1;
}

static int
scram_hash(const unsigned char *data, size_t len, unsigned char out[SASL_SCRAM_KEYLEN])
{
    unsigned int n = 0;

    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1
        && n == SASL_SCRAM_KEYLEN ? 0 : -1;
}

/* SaltedPassword, ClientKey, StoredKey, ServerKey (RFC 5802 section 3). */
static int
scram_derive(const char *password, const unsigned char *salt, size_t salt_len, long iter,
             unsigned char client_key[SASL_SCRAM_KEYLEN],
             unsigned char stored_key[SASL_SCRAM_KEYLEN],
             unsigned char server_key[SASL_SCRAM_KEYLEN])
{
    unsigned char salted[SASL_SCRAM_KEYLEN];
    int rc = -1;

    if (iter < 1 || iter > SASL_SCRAM_ITER_MAX)
        return -1;
    if (PKCS5_PBKDF2_HMAC(password, (int) strlen(password), salt, (int) salt_len,
                          (int) iter, EVP_sha256(), sizeof(salted), salted) == 1
        && scram_hmac(salted, sizeof(salted), "Client Key", 10, client_key) == 0
        && scram_hash(client_key, SASL_SCRAM_KEYLEN, stored_key) == 0
        && scram_hmac(salted, sizeof(salted), "Server Key", 10, server_key) == 0)
        rc = 0;
    OPENSSL_cleanse(salted, sizeof(salted));
    return rc;
}

int
sasl_scram_keys(const char *password, const unsigned char *salt, size_t salt_len,
                long iter, unsigned char stored_key_r[SASL_SCRAM_KEYLEN],
                unsigned char server_key_r[SASL_SCRAM_KEYLEN])
{
    unsigned char client_key[SASL_SCRAM_KEYLEN];
    int rc;

    rc = scram_derive(password, salt, salt_len, iter, client_key, stored_key_r,
                      server_key_r);
    OPENSSL_cleanse(client_key, sizeof(client_key));
    return rc;
}

/*
 * Message syntax helpers.
 */

/* saslname: "=2C" for ',' and "=3D" for '='; any other '=' is an error.
 * Returns a malloc'd name or NULL. */
static char *
scram_name_decode(const char *p, size_t len)
{
    char *out, *o;

    if (len == 0 || len > SCRAM_NAME_MAX * 3)
        return NULL;
    o = out = x_malloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '=') {
            if (len - i >= 3 && p[i + 1] == '2' && p[i + 2] == 'C')
                *o++ = ',';
            else if (len - i >= 3 && p[i + 1] == '3' && p[i + 2] == 'D')
                *o++ = '=';
            else
                goto bad;
            i += 2;
        } else if (p[i] == ',' || p[i] == 0) {
            goto bad;
        } else {
            *o++ = p[i];
        }
    }
    *o = 0;
    if (o - out > SCRAM_NAME_MAX)
        goto bad;
    return out;

  bad:
    free(out);
    return NULL;
}

static char *
scram_name_encode(const char *name)
{
    size_t len = strlen(name);
    char *out = x_malloc(3 * len + 1), *o = out;

    for (const char *p = name; *p; p++) {
        if (*p == ',') {
            memcpy(o, "=2C", 3);
            o += 3;
        } else if (*p == '=') {
            memcpy(o, "=3D", 3);
            o += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return out;
}

/* printable except ',' (RFC 5802 section 7). */
static int
scram_nonce_valid(const char *p, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',')
            return 0;
    return 1;
}

/* An attribute "X=value" at *pp, up to the next ',' or the end: the value
 * pointer and length; *pp moves past the comma. 0 or -1. */
static int
scram_attr(const char **pp, char name, const char **val_r, size_t *len_r)
{
    const char *p = *pp;
    const char *end;

    if (p[0] != name || p[1] != '=')
        return -1;
    p += 2;
    end = strchr(p, ',');
    if (end == NULL)
        end = p + strlen(p);
    *val_r = p;
    *len_r = (size_t) (end - p);
    *pp = *end ? end + 1 : end;
    return 0;
}

static char *
scram_random_nonce(const char *test_nonce)
{
    unsigned char rnd[SCRAM_NONCE_RANDOM];

    if (test_nonce)
        return x_strdup(test_nonce);
    if (random_bytes(rnd, sizeof(rnd)) < 0)
        return NULL;
    /* base64 of 18 bytes has no padding and no ',' */
    return sasl_b64_encode(rnd, sizeof(rnd));
}

/*
 * Server.
 */
enum { SCRAM_S_FIRST, SCRAM_S_FINAL, SCRAM_S_ACK };

typedef struct scram_server {
    int state;
    char *gs2_header;           /* "n,," or "y,,a=..," as sent */
    char *client_first_bare;
    char *server_first;
    char *nonce;                /* client nonce + server nonce */
    long iter;
    unsigned char salt[SASL_SCRAM_SALT_MAX];
    size_t salt_len;
    unsigned char stored_key[SASL_SCRAM_KEYLEN];
    unsigned char server_key[SASL_SCRAM_KEYLEN];
    const char *fail_reason;    /* non-NULL: fail at the proof */
} SCRAM_SERVER;

/* Keys for this user: from a SCRAM secret, derived from a PLAIN one, or
 * random ones that will fail. SASL_OK or SASL_TEMPFAIL. */
static int
scram_server_keys(SASL_SERVER *s, SCRAM_SERVER *st, const char *user)
{
    SASL_SECRET secret;
    int status = sasl_server_secret(s, user, &secret);

    if (status == SASL_TEMPFAIL)
        return status;
    if (status == SASL_OK && secret.scheme == SASL_SCHEME_SCRAM_SHA_256) {
        st->iter = secret.iter;
        memcpy(st->salt, secret.salt, secret.salt_len);
        st->salt_len = secret.salt_len;
        memcpy(st->stored_key, secret.stored_key, SASL_SCRAM_KEYLEN);
        memcpy(st->server_key, secret.server_key, SASL_SCRAM_KEYLEN);
        sasl_secret_wipe(&secret);
        return SASL_OK;
    }
    /* No SCRAM secret (unknown user, or another scheme): the default
     * iteration count and a salt that must not give that away. A fresh
     * random salt at every attempt would (a real user's salt never
     * changes): with a server secret the salt is HMAC(secret, user), the
     * same at every attempt and unpredictable without the secret. */
    st->iter = SASL_SCRAM_ITER_DEFAULT;
    st->salt_len = SASL_SCRAM_SALT_DEFAULT;
    if (s->cfg.fake_salt_key != NULL && s->cfg.fake_salt_key_len > 0) {
        unsigned char mac[SASL_SCRAM_KEYLEN];
        char *msg = x_asprintf("SCRAM-SHA-256 fake salt%c%s", 0, user);
        size_t len = strlen("SCRAM-SHA-256 fake salt") + 1 + strlen(user);
        int ret = scram_hmac(s->cfg.fake_salt_key, s->cfg.fake_salt_key_len, msg, len, mac);

        free(msg);
        if (ret < 0) {
            sasl_secret_wipe(&secret);
            sasl_server_set_reason(s, "HMAC failed");
            return SASL_TEMPFAIL;
        }
        memcpy(st->salt, mac, st->salt_len);
        OPENSSL_cleanse(mac, sizeof(mac));
    } else if (random_bytes(st->salt, st->salt_len) < 0) {
        sasl_secret_wipe(&secret);
        sasl_server_set_reason(s, "no random bytes for the salt");
        return SASL_TEMPFAIL;
    }
    if (status == SASL_OK && secret.scheme == SASL_SCHEME_PLAIN) {
        status = sasl_scram_keys(secret.plain, st->salt, st->salt_len, st->iter,
                                 st->stored_key, st->server_key) == 0
            ? SASL_OK : SASL_TEMPFAIL;
        sasl_secret_wipe(&secret);
        if (status != SASL_OK)
            sasl_server_set_reason(s, "PBKDF2 failed");
        return status;
    }
    if (status == SASL_OK)
        sasl_server_reason_scheme(s, secret.scheme);
    sasl_secret_wipe(&secret);
    /* The reason stays in s->reason (or its buffer) until the proof. */
    st->fail_reason = s->reason;
    if (random_bytes(st->stored_key, SASL_SCRAM_KEYLEN) < 0
        || random_bytes(st->server_key, SASL_SCRAM_KEYLEN) < 0) {
        sasl_server_set_reason(s, "no random bytes");
        return SASL_TEMPFAIL;
    }
    return SASL_OK;
}

static int
scram_server_first(SASL_SERVER *s, SCRAM_SERVER *st, const SASL_BUF *in, SASL_BUF *out)
{
    const char *msg = (const char *) in->data, *p = msg, *val;
    char *authzid = NULL, *user, *snonce, *salt64;
    const char *cnonce;
    size_t len, cnonce_len;
    int status;

    if (memchr(in->data, 0, in->len) != NULL)
        goto bad;
    /* gs2-header: cbind-flag "," [authzid] "," */
    if (p[0] == 'p') {
        sasl_server_set_reason(s, "client requires channel binding (not offered)");
        return SASL_BADPROT;
    }
    if ((p[0] != 'n' && p[0] != 'y') || p[1] != ',')
        goto bad;
    p += 2;
    if (*p == 'a') {
        if (scram_attr(&p, 'a', &val, &len) < 0
            || (authzid = scram_name_decode(val, len)) == NULL)
            goto bad;
    } else if (*p == ',') {
        p++;
    } else {
        goto bad;
    }
    if (p[-1] != ',')
        goto bad_free;
    st->gs2_header = x_strndup(msg, (size_t) (p - msg));
    st->client_first_bare = x_strdup(p);
    if (*p == 'm') {
        sasl_server_set_reason(s, "unsupported mandatory SCRAM extension");
        free(authzid);
        return SASL_BADPROT;
    }
    if (scram_attr(&p, 'n', &val, &len) < 0
        || (user = scram_name_decode(val, len)) == NULL)
        goto bad_free;
    sasl_server_set_user(s, user);
    free(user);
    if (p[-1] != ',' || scram_attr(&p, 'r', &cnonce, &cnonce_len) < 0
        || !scram_nonce_valid(cnonce, cnonce_len))
        goto bad_free;
    /* Extensions after the nonce are allowed and ignored. */
    if (authzid && strcmp(authzid, s->user) != 0) {
        sasl_server_set_reason(s, "authorization identity differs from the user");
        free(authzid);
        return SASL_FAIL;
    }
    free(authzid);

    status = scram_server_keys(s, st, s->user);
    if (status != SASL_OK)
        return status;
    if ((snonce = scram_random_nonce(s->cfg.test_nonce)) == NULL) {
        sasl_server_set_reason(s, "no random bytes for the nonce");
        return SASL_TEMPFAIL;
    }
    st->nonce = x_asprintf("%.*s%s", (int) cnonce_len, cnonce, snonce);
    free(snonce);
    salt64 = sasl_b64_encode(st->salt, st->salt_len);
    st->server_first = x_asprintf("r=%s,s=%s,i=%ld", st->nonce, salt64, st->iter);
    free(salt64);
    sasl_buf_set(out, st->server_first, strlen(st->server_first));
    st->state = SCRAM_S_FINAL;
    return SASL_CONTINUE;

  bad_free:
    free(authzid);
  bad:
    sasl_server_set_reason(s, "malformed SCRAM client-first-message");
    return SASL_BADPROT;
}

static int
scram_server_final(SASL_SERVER *s, SCRAM_SERVER *st, const SASL_BUF *in, SASL_BUF *out)
{
    const char *msg = (const char *) in->data, *p = msg, *val, *proof_at, *scan;
    unsigned char proof[SASL_SCRAM_KEYLEN], sig[SASL_SCRAM_KEYLEN];
    unsigned char key[SASL_SCRAM_KEYLEN], stored[SASL_SCRAM_KEYLEN];
    unsigned char *cb = NULL, *dec = NULL;
    size_t len, cb_len, dec_len;
    char *auth_msg = NULL, *tmp, *v64;
    int status = SASL_BADPROT;

    if (memchr(in->data, 0, in->len) != NULL)
        goto bad;
    /* The proof is the last attribute. */
    for (proof_at = NULL, scan = msg; (scan = strstr(scan, ",p=")) != NULL; scan++)
        proof_at = scan;
    if (proof_at == NULL)
        goto bad;
    if (scram_attr(&p, 'c', &val, &len) < 0)
        goto bad;
    tmp = x_strndup(val, len);
    if (sasl_b64_decode(tmp, 1024, &cb, &cb_len) < 0) {
        free(tmp);
        goto bad;
    }
    free(tmp);
    /* Without channel binding, c= carries exactly the gs2-header. */
    if (cb_len != strlen(st->gs2_header) || memcmp(cb, st->gs2_header, cb_len) != 0) {
        free(cb);
        sasl_server_set_reason(s, "SCRAM channel binding data differs from the gs2 header");
        return SASL_BADPROT;
    }
    free(cb);
    if (p > proof_at + 1 || scram_attr(&p, 'r', &val, &len) < 0 || p > proof_at + 1)
        goto bad;
    if (len != strlen(st->nonce) || memcmp(val, st->nonce, len) != 0) {
        sasl_server_set_reason(s, "SCRAM nonce mismatch");
        return SASL_BADPROT;
    }
    tmp = x_strdup(proof_at + 3);
    if (strchr(tmp, ',') != NULL
        || sasl_b64_decode(tmp, SASL_SCRAM_KEYLEN, &dec, &dec_len) < 0
        || dec_len != SASL_SCRAM_KEYLEN) {
        free(tmp);
        free(dec);
        goto bad;
    }
    free(tmp);
    memcpy(proof, dec, sizeof(proof));
    free(dec);

    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    auth_msg = x_asprintf("%s,%s,%.*s", st->client_first_bare, st->server_first,
                          (int) (proof_at - msg), msg);
    if (scram_hmac(st->stored_key, SASL_SCRAM_KEYLEN, auth_msg, strlen(auth_msg), sig) < 0)
        goto tempfail;
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = proof[i] ^ sig[i];
    if (scram_hash(key, sizeof(key), stored) < 0)
        goto tempfail;
    if (st->fail_reason) {
        sasl_server_set_reason(s, st->fail_reason);
        status = SASL_FAIL;
    } else if (CRYPTO_memcmp(stored, st->stored_key, sizeof(stored)) != 0) {
        sasl_server_set_reason(s, "wrong password");
        status = SASL_FAIL;
    } else if (scram_hmac(st->server_key, SASL_SCRAM_KEYLEN, auth_msg, strlen(auth_msg),
                          sig) < 0) {
        goto tempfail;
    } else {
        v64 = sasl_b64_encode(sig, sizeof(sig));
        tmp = x_asprintf("v=%s", v64);
        free(v64);
        sasl_buf_set(out, tmp, strlen(tmp));
        free(tmp);
        st->state = SCRAM_S_ACK;
        status = SASL_CONTINUE;
    }
    goto done;

  tempfail:
    sasl_server_set_reason(s, "HMAC failed");
    status = SASL_TEMPFAIL;
    goto done;
  bad:
    sasl_server_set_reason(s, "malformed SCRAM client-final-message");
    status = SASL_BADPROT;
  done:
    free(auth_msg);
    OPENSSL_cleanse(proof, sizeof(proof));
    OPENSSL_cleanse(sig, sizeof(sig));
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(stored, sizeof(stored));
    return status;
}

static int
scram_server_step(SASL_SERVER *s, const SASL_BUF *in, SASL_BUF *out)
{
    SCRAM_SERVER *st = s->state;

    if (st == NULL)
        st = s->state = x_calloc(1, sizeof(*st));
    if (in == NULL)
        return SASL_CONTINUE;           /* empty challenge: send client-first */
    switch (st->state) {
    case SCRAM_S_FIRST:
        return scram_server_first(s, st, in, out);
    case SCRAM_S_FINAL:
        return scram_server_final(s, st, in, out);
    default:
        /* The client's empty answer to our server-final-message. */
        if (in->len != 0) {
            sasl_server_set_reason(s, "unexpected data after SCRAM server-final-message");
            return SASL_BADPROT;
        }
        return SASL_OK;
    }
}

static void
scram_server_free(SASL_SERVER *s)
{
    SCRAM_SERVER *st = s->state;

    if (st == NULL)
        return;
    free(st->gs2_header);
    free(st->client_first_bare);
    free(st->server_first);
    free(st->nonce);
    OPENSSL_cleanse(st, sizeof(*st));
    free(st);
    s->state = NULL;
}

/*
 * Client.
 */
enum { SCRAM_C_FIRST, SCRAM_C_SERVER_FIRST, SCRAM_C_SERVER_FINAL, SCRAM_C_DONE };

typedef struct scram_client {
    int state;
    char *cnonce;
    char *client_first_bare;
    unsigned char server_sig[SASL_SCRAM_KEYLEN];
    int verified;
} SCRAM_CLIENT;

static int
scram_client_first(SASL_CLIENT *c, SCRAM_CLIENT *st, SASL_BUF *out)
{
    char *name, *msg;

    if ((st->cnonce = scram_random_nonce(c->test_nonce)) == NULL)
        return SASL_FAIL;
    if (!scram_nonce_valid(st->cnonce, strlen(st->cnonce)))
        return SASL_BADPROT;
    name = scram_name_encode(c->user);
    st->client_first_bare = x_asprintf("n=%s,r=%s", name, st->cnonce);
    free(name);
    msg = x_asprintf("n,,%s", st->client_first_bare);
    sasl_buf_set(out, msg, strlen(msg));
    free(msg);
    st->state = SCRAM_C_SERVER_FIRST;
    return SASL_CONTINUE;
}

static int
scram_client_final(SASL_CLIENT *c, SCRAM_CLIENT *st, const SASL_BUF *in, SASL_BUF *out)
{
    const char *msg = (const char *) in->data, *p = msg, *nonce, *salt64, *iter_s;
    size_t nonce_len, salt64_len, iter_len;
    unsigned char ck[SASL_SCRAM_KEYLEN], sk[SASL_SCRAM_KEYLEN], stk[SASL_SCRAM_KEYLEN];
    unsigned char sig[SASL_SCRAM_KEYLEN];
    unsigned char *salt = NULL;
    size_t salt_len = 0;
    char *tmp, *without_proof = NULL, *auth_msg = NULL, *proof64;
    char iter_buf[16];
    long iter;
    int status = SASL_BADPROT;

    if (memchr(in->data, 0, in->len) != NULL || *p == 'm')
        return SASL_BADPROT;
    if (scram_attr(&p, 'r', &nonce, &nonce_len) < 0
        || scram_attr(&p, 's', &salt64, &salt64_len) < 0
        || scram_attr(&p, 'i', &iter_s, &iter_len) < 0)
        return SASL_BADPROT;
    /* The server's nonce must extend ours. */
    if (nonce_len <= strlen(st->cnonce) || !scram_nonce_valid(nonce, nonce_len)
        || memcmp(nonce, st->cnonce, strlen(st->cnonce)) != 0)
        return SASL_BADPROT;
    if (iter_len == 0 || iter_len >= sizeof(iter_buf))
        return SASL_BADPROT;
    memcpy(iter_buf, iter_s, iter_len);
    iter_buf[iter_len] = 0;
    /* A low count would make an observed proof cheap to crack; a huge one
     * would make us spin. */
    if (parse_long(iter_buf, SASL_SCRAM_ITER_MIN, SASL_SCRAM_ITER_MAX, &iter) < 0)
        return SASL_BADPROT;
    tmp = x_strndup(salt64, salt64_len);
    if (sasl_b64_decode(tmp, 1024, &salt, &salt_len) < 0 || salt_len == 0) {
        free(tmp);
        free(salt);
        return SASL_BADPROT;
    }
    free(tmp);
    if (scram_derive(c->password, salt, salt_len, iter, ck, stk, sk) < 0) {
        status = SASL_FAIL;
        goto done;
    }
    without_proof = x_asprintf("c=biws,r=%.*s", (int) nonce_len, nonce);
    auth_msg = x_asprintf("%s,%.*s,%s", st->client_first_bare, (int) in->len, msg,
                          without_proof);
    if (scram_hmac(stk, sizeof(stk), auth_msg, strlen(auth_msg), sig) < 0
        || scram_hmac(sk, sizeof(sk), auth_msg, strlen(auth_msg), st->server_sig) < 0) {
        status = SASL_FAIL;
        goto done;
    }
    for (size_t i = 0; i < sizeof(ck); i++)
        ck[i] ^= sig[i];                /* ClientProof */
    proof64 = sasl_b64_encode(ck, sizeof(ck));
    tmp = x_asprintf("%s,p=%s", without_proof, proof64);
    free(proof64);
    sasl_buf_set(out, tmp, strlen(tmp));
    free(tmp);
    st->state = SCRAM_C_SERVER_FINAL;
    status = SASL_CONTINUE;

  done:
    free(salt);
    free(without_proof);
    free(auth_msg);
    OPENSSL_cleanse(ck, sizeof(ck));
    OPENSSL_cleanse(sk, sizeof(sk));
    OPENSSL_cleanse(stk, sizeof(stk));
    OPENSSL_cleanse(sig, sizeof(sig));
    return status;
}

static int
scram_client_verify(SCRAM_CLIENT *st, const SASL_BUF *in, SASL_BUF *out)
{
    const char *msg = (const char *) in->data, *p = msg, *v;
    unsigned char *sig = NULL;
    size_t len, sig_len = 0;
    char *tmp;
    int ok;

    if (memchr(in->data, 0, in->len) != NULL)
        return SASL_BADPROT;
    if (strncmp(msg, "e=", 2) == 0)
        return SASL_FAIL;               /* the server refused us */
    if (scram_attr(&p, 'v', &v, &len) < 0)
        return SASL_BADPROT;
    tmp = x_strndup(v, len);
    if (sasl_b64_decode(tmp, SASL_SCRAM_KEYLEN, &sig, &sig_len) < 0
        || sig_len != SASL_SCRAM_KEYLEN) {
        free(tmp);
        free(sig);
        return SASL_BADPROT;
    }
    free(tmp);
    ok = CRYPTO_memcmp(sig, st->server_sig, SASL_SCRAM_KEYLEN) == 0;
    free(sig);
    if (!ok)
        return SASL_FAIL;
    st->verified = 1;
    st->state = SCRAM_C_DONE;
    sasl_buf_set(out, "", 0);           /* the empty response RFC 4954 wants */
    return SASL_CONTINUE;
}

static int
scram_client_step(SASL_CLIENT *c, const SASL_BUF *in, SASL_BUF *out)
{
    SCRAM_CLIENT *st = c->state;

    if (st == NULL)
        st = c->state = x_calloc(1, sizeof(*st));
    switch (st->state) {
    case SCRAM_C_FIRST:
        /* Without an initial response the server first sends an empty
         * challenge. */
        if (in != NULL && in->len != 0)
            return SASL_BADPROT;
        return scram_client_first(c, st, out);
    case SCRAM_C_SERVER_FIRST:
        return scram_client_final(c, st, in, out);
    case SCRAM_C_SERVER_FINAL:
        return scram_client_verify(st, in, out);
    default:
        return SASL_BADPROT;
    }
}

static int
scram_client_finish(const SASL_CLIENT *c)
{
    const SCRAM_CLIENT *st = c->state;

    return st != NULL && st->verified ? SASL_OK : SASL_FAIL;
}

static void
scram_client_free(SASL_CLIENT *c)
{
    SCRAM_CLIENT *st = c->state;

    if (st == NULL)
        return;
    free(st->cnonce);
    free(st->client_first_bare);
    OPENSSL_cleanse(st, sizeof(*st));
    free(st);
    c->state = NULL;
}

const SASL_MECH sasl_mech_scram_sha_256 = {
    .name = "SCRAM-SHA-256",
    .flags = 0,
    .server_step = scram_server_step,
    .server_free = scram_server_free,
    .client_step = scram_client_step,
    .client_finish = scram_client_finish,
    .client_free = scram_client_free,
};
