/*
 * fuzz_sasl_secret.c - libFuzzer target: sasl_secret_parse(), the parser of
 * auth_maps values ("{PLAIN}pw", "{CRAM-MD5}<64 hex>",
 * "{SCRAM-SHA-256}ITER:SALT$STOREDKEY:SERVERKEY").
 *
 * Input: the value up to the first NUL (maps hand over C strings); the
 * bytes after a NUL, if any, are a password to check against it.
 *
 * Checked: a failure gives a static reason (not a piece of the value)
 * and a wiped struct; a success has a known scheme with the fields that
 * scheme needs (PLAIN: the text after the tag; SCRAM: 1..1000000
 * iterations, 1..64 bytes of salt); sasl_secret_check() and
 * sasl_secret_verify() agree (SCRAM only up to 4096 iterations, to keep
 * each run short); sasl_secret_wipe() leaves nothing behind (LeakSanitizer).
 * Round trip: secrets made by sasl_secret_make() for the password parse
 * and verify (PLAIN and CRAM-MD5 always).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sasl.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
all_zero(const void *p, size_t n)
{
    const unsigned char *c = p;

    for (size_t i = 0; i < n; i++)
        if (c[i])
            return 0;
    return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *value = x_strndup((const char *) data, size);
    size_t vlen = strlen(value);
    char *password = vlen < size ? x_strndup((const char *) data + vlen + 1,
                                             size - vlen - 1) : x_strdup("pw");
    SASL_SECRET secret;
    const char *why = NULL;
    int rc;

    rc = sasl_secret_parse(value, &secret, &why);
    if (why == NULL)
        abort();
    if (rc < 0) {
        if (rc != -1 || *why == 0)
            abort();
        if (!all_zero(&secret, sizeof(secret)))
            abort();
        if (why >= value && why <= value + vlen)
            abort(); /* a static text, not a piece of the value */
        if (sasl_secret_verify(value, password, &why) != -1)
            abort();
    } else {
        if (rc != 0)
            abort();
        switch (secret.scheme) {
        case SASL_SCHEME_PLAIN:
            if (secret.plain == NULL || strcmp(secret.plain, strchr(value, '}') + 1) != 0)
                abort();
            break;
        case SASL_SCHEME_CRAM_MD5:
            if (secret.plain != NULL)
                abort();
            break;
        case SASL_SCHEME_SCRAM_SHA_256:
            if (secret.iter < 1 || secret.iter > SASL_SCRAM_ITER_MAX
                || secret.salt_len < 1 || secret.salt_len > SASL_SCRAM_SALT_MAX)
                abort();
            break;
        default:
            abort();
        }
        if (secret.scheme != SASL_SCHEME_SCRAM_SHA_256 || secret.iter <= 4096) {
            int ok = sasl_secret_check(&secret, password);

            if (ok != 0 && ok != 1)
                abort();
            if (sasl_secret_verify(value, password, &why) != ok)
                abort();
            if (secret.scheme == SASL_SCHEME_PLAIN
                && ok != (strcmp(secret.plain, password) == 0))
                abort();
        }
        sasl_secret_wipe(&secret);
        if (!all_zero(&secret, sizeof(secret)))
            abort();
    }

    /* Round trip for the password. */
    {
        static const int schemes[] = {SASL_SCHEME_PLAIN, SASL_SCHEME_CRAM_MD5};

        for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
            char *err = NULL, *made = sasl_secret_make(schemes[i], password, 0, NULL, 0, &err);

            if (made == NULL || err != NULL)
                abort();
            if (sasl_secret_verify(made, password, &why) != 1)
                abort();
            sasl_wipe_free(&made);
        }
    }
    sasl_secret_wipe(&secret); /* safe on a wiped struct */
    free(password);
    free(value);
    return 0;
}
