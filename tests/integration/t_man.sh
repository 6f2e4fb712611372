#!/bin/bash
# The man pages in man/ are current (made from each program's header comment
# by scripts/srctoman) and render without troff warnings.
set -eu
. "$(dirname "$0")/lib.sh"
require_cmd groff
for src in "$REPO_DIR"/src/odmr*/; do
    p=$(basename "$src")
    [ -f "$src/$p.c" ] || continue
    page=$REPO_DIR/man/$p.8
    if [ ! -f "$page" ]; then
        fail "man: $p.8" "missing (make man)"
        continue
    fi
    if /usr/bin/python3 "$REPO_DIR/scripts/srctoman" "$src/$p.c" 8 | cmp -s - "$page"; then
        ok "man: $p.8 is current"
    else
        fail "man: $p.8 is current" "run make man"
    fi
    warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1 || true)
    if [ -z "$warnings" ]; then ok "man: $p.8 renders cleanly"; else fail "man: $p.8 renders" "$warnings"; fi
done
done_testing
