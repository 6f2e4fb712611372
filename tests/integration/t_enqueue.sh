#!/bin/bash
# odmr-enqueue: the pipe(8) door and command-line injector. Exit codes
# (sysexits), content conversion to wire form, and Postfix's pipe(8)
# delivering through it in the sandbox.
set -eu
. "$(dirname "$0")/lib.sh"
require_root
require_cmd swaks postqueue postmap
require_bin odmr-enqueue odmr-queue
sandbox_start

ENQ=$BIN/odmr-enqueue
QTOOL=$BIN/odmr-queue

# enqueue EXPECTED_STATUS NAME ARGS... (message on stdin)
enqueue() {
    local want=$1 name=$2 rc=0
    shift 2
    "$ENQ" -c "$CONFIG_DIR" "$@" >/dev/null 2>"$SANDBOX_DIR/enq.err" || rc=$?
    if [ "$rc" = "$want" ]; then
        ok "enqueue: $name (exit $rc)"
    else
        fail "enqueue: $name" "exit $rc, expected $want: $(cat "$SANDBOX_DIR/enq.err")"
    fi
}

files_count() {
    find "$QUEUE_DIR/msg" -type f 2>/dev/null | wc -l
}

# A message with LF line ends, dot lines, and no newline at the very end.
printf 'Subject: by hand\n\n.dot line\n.\nlast line without newline' >"$SANDBOX_DIR/m1"
enqueue 0 "by hand as root" -f sender@sender.test -- hand@example.org <"$SANDBOX_DIR/m1"
f=$(grep -l 'Subject: by hand' -r "$QUEUE_DIR/msg" | head -n 1)
if [ -n "$f" ]; then
    want=$(printf 'Subject: by hand\r\n\r\n..dot line\r\n..\r\nlast line without newline\r\n.\r\n')
    # The content is everything after the header's empty line.
    got=$(awk 'found { print; next } /^$/ { found = 1 }' "$f")
    if [ "$got" = "$want" ]; then ok "enqueue: wire form"; else fail "enqueue: wire form" "got: $got"; fi
    owner=$(stat -c %U "$f")
    [ "$owner" = odmr ] && ok "enqueue: file owned by odmr" || fail "enqueue: file owner" "$owner"
    grep -q '^protocol pipe$' "$f" && ok "enqueue: protocol pipe" || fail "enqueue: protocol" ""
    id=$(basename "$f")
    "$QTOOL" -c "$CONFIG_DIR" list example.org | grep -q "$id" &&
        ok "enqueue: indexed" || fail "enqueue: indexed" "$id not listed"
else
    fail "enqueue: by hand" "no queue file"
fi

n=$(files_count)
enqueue 67 "domain not held" -f a@b.test -- x@not-held.test <<<x
enqueue 67 "one of two domains not held" -f a@b.test -- y@example.org x@not-held.test <<<x
enqueue 65 "bad recipient" -f a@b.test -- 'x y@example.org' <<<x
enqueue 65 "recipient without domain" -f a@b.test -- postmaster <<<x
enqueue 64 "no recipient" -f a@b.test <<<x
enqueue 64 "unknown option" -Z <<<x
head -c 5000 /dev/zero | tr '\0' 'a' >"$SANDBOX_DIR/big"
enqueue 65 "over message_size_limit" -o message_size_limit=1000 -f a@b.test -- big@example.org \
    <"$SANDBOX_DIR/big"
enqueue 75 "domain map unavailable" -o domain_maps=hash:/nonexistent/map \
    -f a@b.test -- t@example.org <<<x
[ "$(files_count)" = "$n" ] && ok "enqueue: failures stored nothing" ||
    fail "enqueue: failures stored nothing" "$n -> $(files_count)"
leftover=$(find "$QUEUE_DIR/incoming" -type f | wc -l)
[ "$leftover" = 0 ] && ok "enqueue: no temp files left" || fail "enqueue: temp files" "$leftover"

# Through Postfix's pipe(8): route example.net to the odmr-pipe service.
sed -i 's/^example.net .*/example.net odmr-pipe:/' "$CONFIG_DIR/transport"
postmap -c "$CONFIG_DIR" "hash:$CONFIG_DIR/transport"
postconf -c "$CONFIG_DIR" -e "odmr-pipe_destination_recipient_limit = 1"
postfix -c "$CONFIG_DIR" reload >/dev/null 2>&1
sleep 1
smtp_send sender@sender.test 'p1@example.net,p2@example.net' \
    --header 'Subject: via pipe' --body $'line one\n.starts with a dot\n' >/dev/null ||
    fail "pipe: submit" "swaks failed"
if wait_queue_empty 60 && log_grep 'relay=odmr-pipe.*status=sent'; then
    ok "pipe: delivered by pipe(8)"
else
    fail "pipe: delivered by pipe(8)" "see maillog"
fi
pipe_files=$(grep -l 'Subject: via pipe' -r "$QUEUE_DIR/msg" | wc -l)
[ "$pipe_files" = 2 ] && ok "pipe: one file per recipient (recipient limit 1)" ||
    fail "pipe: files" "$pipe_files"
if grep -l 'Subject: via pipe' -r "$QUEUE_DIR/msg" | xargs grep -q $'\r\n\\.\\.starts with a dot\r'; then
    ok "pipe: dot-stuffed content"
else
    fail "pipe: dot-stuffed content" ""
fi
"$QTOOL" -c "$CONFIG_DIR" summary | grep -q 'example.net' && ok "pipe: indexed under example.net" ||
    fail "pipe: indexed" "$("$QTOOL" -c "$CONFIG_DIR" summary)"
done_testing
