/*
 * fuzz_queue_header.c - libFuzzer target: queue_env_parse(), the parser of
 * a queue file's header (src/lib/queue_file.c), which reads whatever lies
 * in the queue directory: a damaged or hostile file must be refused with
 * a reason, never crash, leak or be half-accepted.
 *
 * Input: the bytes of a queue file (header, blank line, anything).
 *
 * Checked on every input:
 *     0: *env holds a valid ID, a sender, at least one recipient, each with
 *        a status byte in QDFX found at its status_offset in the input, an
 *        address with a domain; content_offset is just past the blank line;
 *        *error_r untouched;
 *     -1: *error_r starts with "damaged: ", *env is empty;
 *     a second parse of the same bytes gives the same answer, and parsing
 *     with the ID the first parse found gives it again;
 *     queue_env_free() frees everything (ASan sees leaks and double frees).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
env_empty(const QUEUE_ENV *env)
{
    static const QUEUE_ENV zero;

    return memcmp(env, &zero, sizeof(zero)) == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *) data;
    QUEUE_ENV env, env2;
    char *err = NULL, *err2 = NULL;
    int ret, ret2;

    ret = queue_env_parse(buf, size, NULL, &env, &err);
    if (ret == 0) {
        const char *end = memmem(buf, size, "\n\n", 2);

        if (err != NULL || end == NULL || strlen(env.id) != QUEUE_ID_LEN
            || env.sender == NULL || env.rcpt_count == 0 || env.rcpt == NULL
            || env.content_offset != (off_t) (end - buf) + 2)
            abort();
        for (size_t i = 0; i < env.rcpt_count; i++) {
            const QUEUE_RCPT *r = env.rcpt + i;

            if (r->address == NULL || addr_domain(r->address) == NULL
                || strchr("QDFXSB", r->status) == NULL || r->status == 0
                || r->status_offset <= 0 || (size_t) r->status_offset >= size
                || buf[r->status_offset] != r->status)
                abort();
        }
        ret2 = queue_env_parse(buf, size, env.id, &env2, &err2);
        if (ret2 != 0 || env2.rcpt_count != env.rcpt_count || strcmp(env2.id, env.id) != 0
            || strcmp(env2.sender, env.sender) != 0)
            abort();
        queue_env_free(&env2);
    } else if (ret == -1) {
        if (err == NULL || strncmp(err, "damaged: ", 9) != 0 || !env_empty(&env))
            abort();
        ret2 = queue_env_parse(buf, size, NULL, &env2, &err2);
        if (ret2 != -1 || err2 == NULL || strcmp(err, err2) != 0)
            abort();
    } else {
        abort();
    }
    queue_env_free(&env);
    free(err);
    free(err2);
    return 0;
}
