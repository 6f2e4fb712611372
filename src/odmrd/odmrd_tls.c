/*
 * odmrd_tls.c - OpenSSL contexts for odmrd(8).
 *
 * Server side (STARTTLS, RFC 3207): TLS 1.2 or newer, certificate chain
 * and key from tls_cert_file/tls_key_file. When tls_CAfile is set, a
 * client certificate is requested (not required); whether it verified is
 * read after the handshake, for SASL EXTERNAL.
 *
 * Client side (the reversed session, when TLS was not already on and the
 * customer offers STARTTLS): TLS 1.2 or newer, opportunistic like
 * Postfix's smtp_tls_security_level = may (no certificate check).
 */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config.h"
#include "log.h"
#include "odmrd.h"
#include "util.h"

static char *
tls_error(const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char buf[256];

    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    else
        str_copy(buf, "unknown error", sizeof(buf));
    ERR_clear_error();
    return x_asprintf("%s %s: %s", what, file ? file : "", buf);
}

/* Accept every client certificate during the handshake; whether it
 * verified is read afterwards with SSL_get_verify_result(). */
static int
accept_any_cert(int ok, X509_STORE_CTX *ctx)
{
    return 1;
}

void *
odmrd_tls_server_ctx(char **error_r)
{
    SSL_CTX *ctx;
    const char *cert = var_tls_cert_file, *key = var_tls_key_file;

    *error_r = NULL;
    if (cert == NULL || *cert == 0) {
        *error_r = x_strdup("tls_security_level needs tls_cert_file");
        return NULL;
    }
    if (key == NULL || *key == 0)
        key = cert;
    if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
        *error_r = tls_error("cannot create TLS context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION
                                 | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        *error_r = tls_error("cannot load certificate", cert);
        goto bad;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        *error_r = tls_error("cannot load private key", key);
        goto bad;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        *error_r = tls_error("private key does not match certificate", key);
        goto bad;
    }
    if (var_tls_CAfile != NULL && *var_tls_CAfile != 0) {
        STACK_OF(X509_NAME) *names;

        if (SSL_CTX_load_verify_locations(ctx, var_tls_CAfile, NULL) != 1) {
            *error_r = tls_error("cannot load CA file", var_tls_CAfile);
            goto bad;
        }
        if ((names = SSL_load_client_CA_file(var_tls_CAfile)) != NULL)
            SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any_cert);
        /* Required with SSL_VERIFY_PEER and no session cache to keep
         * OpenSSL from refusing resumption attempts noisily. */
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *) "odmrd", 5);
    }
    return ctx;

bad:
    SSL_CTX_free(ctx);
    return NULL;
}

void *
odmrd_tls_client_ctx(char **error_r)
{
    SSL_CTX *ctx;

    *error_r = NULL;
    if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
        *error_r = tls_error("cannot create TLS client context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    return ctx;
}

void
odmrd_tls_free_ctx(void **ctxp)
{
    if (*ctxp != NULL)
        SSL_CTX_free((SSL_CTX *) *ctxp);
    *ctxp = NULL;
}

int
odmrd_tls_peer_fingerprint(STREAM *s, char *buf, size_t size, const char **why_r)
{
    SSL *ssl = stream_tls_ssl(s);
    X509 *cert;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t pos = 0;

    *why_r = NULL;
    if (ssl == NULL) {
        *why_r = "TLS is not active";
        return -1;
    }
    if ((cert = SSL_get1_peer_certificate(ssl)) == NULL) {
        *why_r = "no client certificate";
        return -1;
    }
    if (SSL_get_verify_result(ssl) != X509_V_OK) {
        *why_r = X509_verify_cert_error_string(SSL_get_verify_result(ssl));
        X509_free(cert);
        return -1;
    }
    if (X509_digest(cert, EVP_sha256(), md, &mdlen) != 1) {
        X509_free(cert);
        *why_r = "cannot compute certificate fingerprint";
        return -1;
    }
    X509_free(cert);
    if (size < (size_t) mdlen * 3) {
        *why_r = "fingerprint buffer too small";
        return -1;
    }
    for (unsigned int i = 0; i < mdlen; i++) {
        static const char hex[] = "0123456789ABCDEF";

        buf[pos++] = hex[md[i] >> 4];
        buf[pos++] = hex[md[i] & 15];
        buf[pos++] = i + 1 < mdlen ? ':' : 0;
    }
    return 0;
}
