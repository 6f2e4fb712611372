/*
 * fuzz_smtp_cmd.c - libFuzzer target: smtp_cmd_split, then smtp_path_parse
 * on the arguments (as MAIL FROM and RCPT TO), with the invariants the
 * callers rely on checked after every accepted input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_path(const SMTP_PATH *path, const char *copy, size_t copy_len)
{
    if (strlen(path->addr) > SMTP_ADDR_MAX || path->nparam < 0
        || path->nparam > SMTP_PARAM_MAX)
        abort();
    for (int i = 0; i < path->nparam; i++) {
        const SMTP_PARAM *p = &path->param[i];

        if (p->name[0] == 0 || strlen(p->name) >= sizeof(p->name))
            abort();
        for (const char *n = p->name; *n; n++)
            if (!((*n >= 'A' && *n <= 'Z') || (*n >= '0' && *n <= '9') || *n == '-'))
                abort();
        /* values live inside the caller's copy */
        if (p->value && (p->value < copy || p->value >= copy + copy_len + 1
                         || p->value + strlen(p->value) > copy + copy_len))
            abort();
        if (smtp_path_param(path, p->name) == NULL)
            abort();
    }
}

static void
try_path(const char *args, const char *keyword, int allow_null)
{
    size_t len = strlen(args);
    char *copy = malloc(len + 1);
    SMTP_PATH path;
    const char *why = NULL;

    memcpy(copy, args, len + 1);
    if (smtp_path_parse(copy, keyword, allow_null, &path, &why) == 0) {
        check_path(&path, copy, len);
        if (!allow_null && path.addr[0] == 0)
            abort();
    } else if (why == NULL || strncmp(why, "5.", 2) != 0) {
        abort();
    }
    free(copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size + 1);
    SMTP_CMD cmd;

    memcpy(line, data, size);
    line[size] = 0;
    if (smtp_cmd_split(line, size, &cmd) == 0) {
        size_t vlen = strlen(cmd.verb);

        if (vlen > SMTP_VERB_MAX || (vlen == 0 && size > 0))
            abort();
        for (size_t i = 0; i < vlen; i++)
            if (!((cmd.verb[i] >= 'A' && cmd.verb[i] <= 'Z')
                  || (cmd.verb[i] >= '0' && cmd.verb[i] <= '9')))
                abort();
        if (cmd.args < line || cmd.args > line + size)
            abort();
        try_path(cmd.args, "FROM", 1);
        try_path(cmd.args, "TO", 0);
    }
    /* The raw input too: path_parse must cope with any NUL-terminated text. */
    try_path(line, "FROM", 1);
    try_path(line, "TO", 0);
    free(line);
    return 0;
}
