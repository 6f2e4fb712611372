#!/bin/bash
# The man pages in man/ are current (made from each program's header comment
# by scripts/srctoman) and render without troff or man warnings; the
# hand-written ones (odmr.cf.5, postfix-odmr-setup.8) render cleanly too, and
# odmr.cf(5) lists exactly the parameters of src/lib/config.c's table with
# their defaults.
set -eu
. "$(dirname "$0")/lib.sh"
require_cmd groff
for src in "$REPO_DIR"/src/odmr*/ "$REPO_DIR"/src/check_*/; do
    p=$(basename "$src")
    [ -f "$src/$p.c" ] || continue
    # The Makefile's USER_PROGS (section 1); the rest are section 8.
    s=8
    if grep -Eq "^USER_PROGS :=.* $p( |\$)" "$REPO_DIR/Makefile"; then s=1; fi
    page=$REPO_DIR/man/$p.$s
    if [ ! -f "$page" ]; then
        fail "man: $p.$s" "missing (make man)"
        continue
    fi
    if /usr/bin/python3 "$REPO_DIR/scripts/srctoman" "$src/$p.c" "$s" | cmp -s - "$page"; then
        ok "man: $p.$s is current"
    else
        fail "man: $p.$s is current" "run make man"
    fi
    warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1 || true)
    if [ -z "$warnings" ]; then ok "man: $p.$s renders cleanly"; else fail "man: $p.$s renders" "$warnings"; fi
done
for page in "$REPO_DIR"/man/*.5 "$REPO_DIR"/man/postfix-odmr-setup.8; do
    p=$(basename "$page")
    warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1 || true)
    if [ -z "$warnings" ]; then ok "man: $p renders cleanly"; else fail "man: $p renders" "$warnings"; fi
done
if command -v man >/dev/null 2>&1; then
    for page in "$REPO_DIR"/man/*.[58]; do
        p=$(basename "$page")
        warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null || true)
        if [ -z "$warnings" ]; then ok "man --warnings -l $p"; else fail "man --warnings -l $p" "$warnings"; fi
    done
fi
py_checks "man" odmr_cf_man_check.py "$REPO_DIR/src/lib/config.c" "$REPO_DIR/man/odmr.cf.5"
done_testing
