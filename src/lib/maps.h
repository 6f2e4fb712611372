/*
 * maps.h - Postfix lookup tables.
 *
 * A map list is what Postfix accepts in a *_maps parameter: one or more
 * "type:name" entries separated by commas and/or whitespace, searched in order;
 * the first table that has the key wins.
 *
 * hash: and btree: are read natively with libdb, exactly as Postfix reads
 * them: the file is "name.db"; keys are folded to lower case before the
 * lookup; keys and values are stored with a trailing NUL (postmap's default),
 * a key without the NUL is also tried; every lookup runs under a shared flock()
 * on the .db file (postmap takes an exclusive one while it rebuilds); before a
 * lookup the file is stat()ed and reopened when its inode, size or mtime
 * changed.
 *
 * Every other type (lmdb:, cdb:, texthash:, ldap:, mysql:, pgsql:, ...) is
 * looked up by running "postmap -c $postfix_config_directory -q KEY TYPE:NAME"
 * (var_postmap_path): exit 0 = found (value on stdout, trailing newline
 * removed), 1 = not found, anything else = temporary error. postmap's own
 * fatal errors also exit 1, so exit 1 with a "fatal:" or "panic:" line on
 * stderr is a temporary error too. The child's stderr goes to a pipe whose
 * text is put in the error string (never to our fd 2, which is a client
 * socket under spawn(8)). Postfix stops at the first table that fails, and
 * so do we: an error is never turned into "not found" by a later table.
 *
 * Three outcomes, always: MAP_FOUND, MAP_NOTFOUND, MAP_ERROR (temporary:
 * the caller answers 4xx, never "not found").
 */
#ifndef ODMR_MAPS_H
#define ODMR_MAPS_H

#define MAP_FOUND 1
#define MAP_NOTFOUND 0
#define MAP_ERROR (-1)

typedef struct maps MAPS;

/* Parse and open a map list. "" or NULL gives an empty list (every lookup
 * MAP_NOTFOUND). An unknown syntax ("foo" without a type) is an error:
 * NULL and *error_r (malloc'd). A hash:/btree: file that does not exist yet
 * is not an open error: lookups then return MAP_ERROR with a clear message. */
MAPS *maps_open(const char *list, char **error_r);

/* Look up key (case-folded internally; the caller's string is not changed).
 * MAP_FOUND: *value_r is a malloc'd string. MAP_ERROR: *error_r is a malloc'd
 * message naming the table. */
int maps_lookup(MAPS *maps, const char *key, char **value_r, char **error_r);

/* The list as given to maps_open (for log messages). */
const char *maps_title(const MAPS *maps);

void maps_close(MAPS **maps);

/* Deadline in seconds for one "postmap -q" child (default 10); the child is
 * killed and the lookup is MAP_ERROR when it runs longer. Tests lower it. */
extern int maps_postmap_timeout;

/* Split a value such as "cust1, cust7" into tokens separated by commas and/or
 * whitespace; calls fn for each; returns the count. */
int maps_split(const char *value, void (*fn)(const char *token, void *ctx), void *ctx);

/* Does the comma/space separated list contain name (case-insensitive)? */
int maps_list_contains(const char *value, const char *name);

#endif
