/*
 * fuzz_fetch_parse.c - libFuzzer target: odmr-fetch's parsers of peer and
 * user text (src/odmr-fetch/fetch_util.c): EHLO reply keywords
 * (fetch_ehlo_has, fetch_ehlo_drop), the SASL mechanism choice from the
 * server's AUTH line (fetch_choose_mech), SHA-256 fingerprints and
 * addresses.
 *
 * Input: byte 0 selects flags (TLS active, certificate present); the rest,
 * cut at the first NUL, is the text.
 *
 * Checked on every input:
 *     fetch_ehlo_has: the result is 0 or 1; args only when found, and a
 *         substring of the input;
 *     fetch_choose_mech: NULL or one of the five names, offered by the
 *         text (case-insensitively); PLAIN/LOGIN never without TLS,
 *         EXTERNAL never without a certificate and TLS;
 *     fetch_fingerprint_parse: 0 only for exactly 32 hex bytes;
 *     fetch_parse_address: either host and port or a path (and no error),
 *         or an error and nothing else; no leaks (ASan).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fetch.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text, *args = NULL, *host, *port, *path, *error;
    const char *mech;
    unsigned char fp[32];
    int tls, cert, r;

    if (size < 1)
        return 0;
    tls = data[0] & 1;
    cert = (data[0] >> 1) & 1;
    text = x_strndup((const char *) data + 1, size - 1);

    r = fetch_ehlo_has(text, "AUTH", &args);
    if (r != 0 && r != 1)
        abort();
    if (r == 0 && args != NULL)
        abort();
    if (r == 1 && (args == NULL || strstr(text, args) == NULL))
        abort();
    x_free(&args);
    (void) fetch_ehlo_drop(text);

    mech = fetch_choose_mech("EXTERNAL SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN", text, tls, cert);
    if (mech != NULL) {
        if (strcasestr(text, mech) == NULL)
            abort();
        if (!tls && (strcmp(mech, "PLAIN") == 0 || strcmp(mech, "LOGIN") == 0))
            abort();
        if ((!tls || !cert) && strcmp(mech, "EXTERNAL") == 0)
            abort();
    }

    if (fetch_fingerprint_parse(text, fp) == 0) {
        size_t hex = 0;

        for (const char *p = text; *p; p++)
            if (*p != ':')
                hex++;
        if (hex != 64)
            abort();
    }

    r = fetch_parse_address(text, "25", &host, &port, &path, &error);
    if (r == 0) {
        if (error != NULL || (path == NULL) != (host != NULL && port != NULL))
            abort();
    } else if (error == NULL || host != NULL || port != NULL || path != NULL) {
        abort();
    }
    x_free(&host);
    x_free(&port);
    x_free(&path);
    x_free(&error);
    free(text);
    return 0;
}
