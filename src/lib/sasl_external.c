/*
 * sasl_external.c - EXTERNAL (RFC 4422 appendix A), server and client;
 * see sasl.h.
 *
 * The identity comes from outside SASL: odmrd maps a verified TLS client
 * certificate to a user (tls_cert_user_maps) and passes it in the config.
 * The client's message is an authorization identity, which may only be
 * empty or that same user: we offer no proxy authorization.
 */
#include <stdlib.h>
#include <string.h>

#include "sasl.h"
#include "util.h"

static int
external_server_step(SASL_SERVER *s, const SASL_BUF *in, SASL_BUF *out)
{
    const char *identity = s->cfg.external_user;

    if (in == NULL)
        return SASL_CONTINUE;           /* empty challenge */
    sasl_server_set_user(s, identity);
    if (memchr(in->data, 0, in->len) != NULL) {
        sasl_server_set_reason(s, "malformed EXTERNAL response");
        return SASL_BADPROT;
    }
    if (in->len > 0 && strcmp((const char *) in->data, identity) != 0) {
        sasl_server_set_reason(s, "authorization identity differs from the certificate user");
        return SASL_FAIL;
    }
    return SASL_OK;
}

static int
external_client_step(SASL_CLIENT *c, const SASL_BUF *in, SASL_BUF *out)
{
    if (in != NULL && (c->steps != 2 || in->len != 0))
        return SASL_BADPROT;
    sasl_buf_set(out, c->user, strlen(c->user));
    return SASL_CONTINUE;
}

const SASL_MECH sasl_mech_external = {
    .name = "EXTERNAL",
    .flags = SASL_MECH_EXTERNAL,
    .server_step = external_server_step,
    .client_step = external_client_step,
};
