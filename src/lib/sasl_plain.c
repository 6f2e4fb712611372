/*
 * sasl_plain.c - PLAIN (RFC 4616) and LOGIN (the de facto mechanism of
 * draft-murchison-sasl-login), server and client; see sasl.h.
 *
 * Both carry the password itself, so the dispatcher refuses them without
 * TLS (538). Any secret scheme can check a plaintext password.
 */
#include <stdlib.h>
#include <string.h>

#include "sasl.h"
#include "util.h"

#define PLAIN_FIELD_MAX 255             /* RFC 4616 section 2 */

/* Check user and password against auth_maps: a final status. */
static int
plain_verify(SASL_SERVER *s, const char *user, const char *password)
{
    SASL_SECRET secret;
    int status;

    sasl_server_set_user(s, user);
    status = sasl_server_secret(s, user, &secret);
    if (status != SASL_OK)
        return status;
    if (!sasl_secret_check(&secret, password)) {
        sasl_server_set_reason(s, "wrong password");
        status = SASL_FAIL;
    }
    sasl_secret_wipe(&secret);
    return status;
}

/* A field with no NUL inside, 1..max bytes. */
static int
plain_field_ok(const unsigned char *p, size_t len)
{
    return len > 0 && len <= PLAIN_FIELD_MAX && memchr(p, 0, len) == NULL;
}

/*
 * PLAIN: [authzid] NUL authcid NUL passwd
 */
static int
plain_server_step(SASL_SERVER *s, const SASL_BUF *in, SASL_BUF *out)
{
    const char *authzid, *authcid, *passwd;
    const unsigned char *nul1, *nul2;
    size_t zlen, clen, plen;

    if (in == NULL)
        return SASL_CONTINUE;           /* empty challenge */
    nul1 = memchr(in->data, 0, in->len);
    nul2 = nul1 ? memchr(nul1 + 1, 0, in->len - (size_t) (nul1 + 1 - in->data)) : NULL;
    if (nul2 == NULL) {
        sasl_server_set_reason(s, "malformed PLAIN response");
        return SASL_BADPROT;
    }
    authzid = (const char *) in->data;
    authcid = (const char *) nul1 + 1;
    passwd = (const char *) nul2 + 1;
    zlen = (size_t) (nul1 - in->data);
    clen = (size_t) (nul2 - nul1 - 1);
    plen = in->len - (size_t) (nul2 + 1 - in->data);
    if (zlen > PLAIN_FIELD_MAX || !plain_field_ok((const unsigned char *) authcid, clen)
        || !plain_field_ok((const unsigned char *) passwd, plen)) {
        sasl_server_set_reason(s, "malformed PLAIN response");
        return SASL_BADPROT;
    }
    sasl_server_set_user(s, authcid);
    /* We have no proxy authorization: the authzid may only repeat the user. */
    if (zlen > 0 && strcmp(authzid, authcid) != 0) {
        sasl_server_set_reason(s, "authorization identity differs from the user");
        return SASL_FAIL;
    }
    return plain_verify(s, authcid, passwd);
}

static int
plain_client_step(SASL_CLIENT *c, const SASL_BUF *in, SASL_BUF *out)
{
    size_t ulen = strlen(c->user), plen = strlen(c->password);

    /* The initial response, or the answer to the empty challenge a server
     * sends when there was none. */
    if (in != NULL && (c->steps != 2 || in->len != 0))
        return SASL_BADPROT;
    out->len = 1 + ulen + 1 + plen;
    out->data = x_malloc(out->len + 1);
    out->data[0] = 0;
    memcpy(out->data + 1, c->user, ulen);
    out->data[1 + ulen] = 0;
    memcpy(out->data + 2 + ulen, c->password, plen);
    out->data[out->len] = 0;
    return SASL_CONTINUE;
}

const SASL_MECH sasl_mech_plain = {
    .name = "PLAIN",
    .flags = SASL_MECH_PLAINTEXT,
    .server_step = plain_server_step,
    .client_step = plain_client_step,
};

/*
 * LOGIN: "Username:" -> user, "Password:" -> password. Some clients send
 * the user name as an initial response.
 */
typedef struct login_server {
    char *user;
} LOGIN_SERVER;

static int
login_server_step(SASL_SERVER *s, const SASL_BUF *in, SASL_BUF *out)
{
    static const char ask_user[] = "Username:", ask_pass[] = "Password:";
    LOGIN_SERVER *st = s->state;
    char *password;
    int status;

    if (st == NULL)
        st = s->state = x_calloc(1, sizeof(*st));
    if (in == NULL) {
        sasl_buf_set(out, ask_user, strlen(ask_user));
        return SASL_CONTINUE;
    }
    if (!plain_field_ok(in->data, in->len)) {
        sasl_server_set_reason(s, "malformed LOGIN response");
        return SASL_BADPROT;
    }
    if (st->user == NULL) {
        st->user = x_strdup((const char *) in->data);
        sasl_server_set_user(s, st->user);
        sasl_buf_set(out, ask_pass, strlen(ask_pass));
        return SASL_CONTINUE;
    }
    password = x_strdup((const char *) in->data);
    status = plain_verify(s, st->user, password);
    sasl_wipe_free(&password);
    return status;
}

static void
login_server_free(SASL_SERVER *s)
{
    LOGIN_SERVER *st = s->state;

    if (st) {
        free(st->user);
        free(st);
        s->state = NULL;
    }
}

static int
login_client_step(SASL_CLIENT *c, const SASL_BUF *in, SASL_BUF *out)
{
    const char *answer;

    if (in == NULL)
        return SASL_CONTINUE;           /* no initial response */
    /* Servers word the prompts differently: go by their order. */
    switch (c->steps) {
    case 2:
        answer = c->user;
        break;
    case 3:
        answer = c->password;
        break;
    default:
        return SASL_BADPROT;
    }
    sasl_buf_set(out, answer, strlen(answer));
    return SASL_CONTINUE;
}

const SASL_MECH sasl_mech_login = {
    .name = "LOGIN",
    .flags = SASL_MECH_PLAINTEXT,
    .server_step = login_server_step,
    .server_free = login_server_free,
    .client_step = login_client_step,
};
