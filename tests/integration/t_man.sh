#!/bin/bash
# The man pages in man/ are current (made from each program's header comment
# by scripts/srctoman) and render without troff warnings.
set -eu
. "$(dirname "$0")/lib.sh"
require_cmd groff
for src in "$REPO_DIR"/src/odmr*/; do
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
done_testing
