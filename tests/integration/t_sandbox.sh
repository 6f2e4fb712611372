#!/bin/bash
# t_sandbox.sh - the private Postfix instance (scripts/odmr-sandbox) itself:
# loopback-only ports, routing of customer domains to the odmr transport,
# relay refusal, env output, stop/restart, two sandboxes at once.
# Works before the odmr programs exist (mail to odmr-store is then deferred).
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix postconf postqueue swaks ss openssl

sandbox_start
ok "sandbox starts"

# Both ports listen, on 127.0.0.1 only.
for port in "$SMTP_PORT" "$ODMR_PORT"; do
    addrs=$(listen_addrs "$port" | sort -u | tr '\n' ' ')
    if [ "$addrs" = "127.0.0.1:$port " ]; then
        ok "port $port listens on 127.0.0.1 only"
    else
        fail "port $port listens on 127.0.0.1 only" "listening on: '$addrs'"
    fi
done

# env output parses under set -u and has what the tests need.
# shellcheck disable=SC2154 # the variables come from the eval
if out=$(
    set -u
    eval "$("$SANDBOX_SCRIPT" env "$SANDBOX_DIR")"
    [ "$SMTP_HOST" = 127.0.0.1 ] && [ "$ODMR_HOST" = 127.0.0.1 ]
    case "$SMTP_PORT$ODMR_PORT" in *[!0-9]*) exit 1 ;; esac
    [ "$ODMR_USERS" = "cust1 cust2" ]
    [ "$ODMR_DOMAINS_cust1" = "example.org,example.net" ]
    [ "$ODMR_DOMAINS_cust2" = "example.com" ]
    [ ${#ODMR_PASSWORD_cust1} -ge 16 ] && [ ${#ODMR_PASSWORD_cust2} -ge 16 ]
    [ "$ODMR_PASSWORD_cust1" != "$ODMR_PASSWORD_cust2" ]
    [ "$CONFIG_DIR" = "$SANDBOX_DIR/etc" ] && [ -d "$QUEUE_DIR" ]
    [ -n "$LOG_FILE" ] && [ -n "$ODMR_LOG_FILE" ] && [ -s "$TLS_CA_FILE" ]
    echo good
) && [ "$out" = good ]; then
    ok "env output parses"
else
    fail "env output parses" "missing or bad variables"
fi

# The instance is private: its directories are under the sandbox.
qd=$(postconf -c "$CONFIG_DIR" -h queue_directory)
dd=$(postconf -c "$CONFIG_DIR" -h data_directory)
ml=$(postconf -c "$CONFIG_DIR" -h maillog_file)
if [ "$qd" = "$SANDBOX_DIR/spool" ] && [ "$dd" = "$SANDBOX_DIR/data" ] &&
    [ "$ml" = "$SANDBOX_DIR/maillog" ]; then
    ok "queue, data and log under the sandbox"
else
    fail "queue, data and log under the sandbox" "queue=$qd data=$dd log=$ml"
fi

chk=$(postfix -c "$CONFIG_DIR" check 2>&1) || true
if [ -z "$chk" ]; then
    ok "postfix check is clean"
else
    fail "postfix check is clean" "$chk"
fi

# Hold queue: owned by odmr, mode 0700; odmr.cf points at it.
if [ "$(stat -c '%U %a' "$QUEUE_DIR")" = "odmr 700" ] &&
    grep -qx "queue_directory = $QUEUE_DIR" "$CONFIG_DIR/odmr.cf" &&
    grep -qx "domain_maps = hash:$CONFIG_DIR/odmr_domains" "$CONFIG_DIR/odmr.cf" &&
    grep -qx "auth_maps = hash:$CONFIG_DIR/odmr_passwd" "$CONFIG_DIR/odmr.cf"; then
    ok "hold queue and odmr.cf"
else
    fail "hold queue and odmr.cf" "$(stat -c '%U %a' "$QUEUE_DIR"); $(cat "$CONFIG_DIR/odmr.cf")"
fi

# Maps: what postmap finds is what the sandbox promised.
if [ "$(postmap -c "$CONFIG_DIR" -q example.net "hash:$CONFIG_DIR/odmr_domains")" = cust1 ] &&
    [ "$(postmap -c "$CONFIG_DIR" -q EXAMPLE.COM "hash:$CONFIG_DIR/odmr_domains")" = cust2 ] &&
    [ "$(postmap -c "$CONFIG_DIR" -q cust1 "hash:$CONFIG_DIR/odmr_passwd")" = "{PLAIN}$ODMR_PASSWORD_cust1" ] &&
    [ "$(postmap -c "$CONFIG_DIR" -q example.org "hash:$CONFIG_DIR/transport")" = "odmr:unix:private/odmr-store" ]; then
    ok "domain, auth and transport maps"
else
    fail "domain, auth and transport maps" "unexpected postmap -q results"
fi

# TLS: the server certificate verifies against the test CA; odmr can read the key.
if openssl verify -CAfile "$TLS_CA_FILE" "$SANDBOX_DIR/tls/server.pem" >/dev/null 2>&1 &&
    [ "$(stat -c %U "$SANDBOX_DIR/tls/server.key")" = odmr ] &&
    grep -qx "tls_cert_file = $SANDBOX_DIR/tls/server.pem" "$CONFIG_DIR/odmr.cf"; then
    ok "test CA and server certificate"
else
    fail "test CA and server certificate" "openssl verify or odmr.cf"
fi

# Mail for every customer domain is accepted and routed to odmr-store.
for rcpt in user1@example.org user2@example.net user3@example.com; do
    out=$(smtp_send sender@sender.test "$rcpt") || true
    if grep -q '^<-  250 .*queued as' <<<"$out"; then
        ok "SMTP accepts $rcpt"
    else
        fail "SMTP accepts $rcpt" "$(grep '^<\*\*' <<<"$out" | head -1)"
    fi
    if log_wait 30 "to=<$rcpt>, relay=[^ ]*\[private/odmr-store\]"; then
        ok "$rcpt routed to private/odmr-store"
    else
        fail "$rcpt routed to private/odmr-store" "no lmtp log line in 30 s"
    fi
done

# Anything else is refused: other domains and subdomains of customers.
for rcpt in someone@gmail.com user@sub.example.org user@example.org.evil.test; do
    out=$(smtp_send sender@sender.test "$rcpt") || true
    if grep -q "^<\*\* *554 5.7.1 <$rcpt>: Relay access denied" <<<"$out"; then
        ok "SMTP refuses $rcpt"
    else
        fail "SMTP refuses $rcpt" "$(grep -E '^<(-|\*\*) ' <<<"$out" | tail -3 | tr '\n' ' ')"
    fi
done

# The sink domain delivers locally (DSNs can be looked at there).
out=$(smtp_send sender@sender.test "postmaster@$SINK_DOMAIN") || true
# shellcheck disable=SC2016 # $1 is for the inner shell
if grep -q '^<-  250 .*queued as' <<<"$out" &&
    wait_for 20 sh -c 'ls "$1"/new/* >/dev/null 2>&1' sh "$SINK_MAILDIR"; then
    ok "sink domain delivers to $SINK_MAILDIR"
else
    fail "sink domain delivers to $SINK_MAILDIR" "no message in the maildir"
fi

# The sandbox's sendmail (odmr.cf sendmail_path) works for user odmr.
sm=$(sed -n 's/^sendmail_path = //p' "$CONFIG_DIR/odmr.cf")
before=$(find "$SINK_MAILDIR/new" -type f 2>/dev/null | wc -l)
# shellcheck disable=SC2016 # $1 and $2 are for the inner shell
if [ -n "$sm" ] && printf 'Subject: dsn test\n\nhello\n' |
    setpriv --reuid odmr --regid odmr --clear-groups "$sm" -f '' -- "dsn@$SINK_DOMAIN" &&
    wait_for 20 sh -c '[ "$(find "$1/new" -type f | wc -l)" -gt "$2" ]' sh "$SINK_MAILDIR" "$before"; then
    ok "sendmail_path submits as user odmr"
else
    fail "sendmail_path submits as user odmr" "nothing delivered to $SINK_MAILDIR"
fi

# A second sandbox at other ports runs beside the first.
D2=$(mktemp -d "${TMPDIR:-/tmp}/odmr-test2.XXXXXX")
if "$SANDBOX_SCRIPT" start "$D2" --build "$BUILD_DIR" --free-ports >/dev/null 2>&1 &&
    p1=$(sed -n 's/^SMTP_PORT=//p' "$D2/sandbox.env") &&
    p2=$(sed -n 's/^ODMR_PORT=//p' "$D2/sandbox.env") &&
    [ "$p1" != "$SMTP_PORT" ] && [ "$p2" != "$ODMR_PORT" ] &&
    out=$(swaks --server "127.0.0.1:$p1" --from a@sender.test --to b@example.com 2>&1) &&
    grep -q '^<-  250 .*queued as' <<<"$out" &&
    "$SANDBOX_SCRIPT" status "$SANDBOX_DIR" >/dev/null; then
    ok "two sandboxes at once"
else
    fail "two sandboxes at once" "second sandbox on $p1/$p2 did not work"
fi
"$SANDBOX_SCRIPT" stop "$D2" >/dev/null 2>&1 || true
rm -rf "$D2"

# free-port: distinct ports, below the kernel's ephemeral range (where no
# outgoing connection can take one), used by no socket.
read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range
ports=$("$SANDBOX_SCRIPT" free-port 20)
bad=''
for p in $ports; do
    { [ "$p" -ge 20000 ] && [ "$p" -lt "$eph_lo" ]; } || bad="$bad $p(range)"
    [ -z "$(ss -Htan "sport = :$p")" ] || bad="$bad $p(used)"
done
if [ "$(wc -w <<<"$ports")" = 20 ] && [ "$(tr ' ' '\n' <<<"$ports" | sort -u | wc -l)" = 20 ] &&
    [ -z "$bad" ]; then
    ok "free-port: 20 distinct unused ports below $eph_lo"
else
    fail "free-port: 20 distinct unused ports below $eph_lo" "got: $ports; bad:$bad"
fi

# A port taken between the choice and master's bind (here: every port of
# the pool bound by another process without listening, which ss does not
# show) makes --free-ports choose again; once the ports are let go, the
# next attempt starts.
D5=$(mktemp -d "${TMPDIR:-/tmp}/odmr-test5.XXXXXX")
/usr/bin/python3 - "$D5/start.out" "$eph_lo" >"$D5/blocker.out" 2>&1 <<'PY' &
import os, resource, socket, sys, time
out, top = sys.argv[1], int(sys.argv[2])
# Hold every port of the pool, in as many processes as the descriptor
# limit asks; the children keep theirs until the parent's pipe closes.
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if hard == resource.RLIM_INFINITY or hard > 40000:
    hard = 40000
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
chunk = hard - 64
ports = list(range(20000, top))
release_r, release_w = os.pipe()
held = []
def bind_all(part):
    n = 0
    for port in part:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            held.append(s)
            n += 1
        except OSError:
            s.close()
    return n
children = []
for i in range(chunk, len(ports), chunk):
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(release_w)
        bind_all(ports[i:i + chunk])
        os.write(ready_w, b"x")
        os.read(release_r, 1)
        os._exit(0)
    os.read(ready_r, 1)
    children.append(pid)
print("held", bind_all(ports[:chunk]), "in", 1 + len(children), "processes", flush=True)
open(out + ".ready", "w").close()
deadline = time.time() + 60
while time.time() < deadline:
    try:
        if "choosing again" in open(out).read():
            break
    except FileNotFoundError:
        pass
    time.sleep(0.05)
for s in held:
    s.close()
os.close(release_w)
for pid in children:
    os.waitpid(pid, 0)
print("released", flush=True)
PY
blocker=$!
bg_track "$blocker"
wait_for 30 test -e "$D5/start.out.ready" || true
if "$SANDBOX_SCRIPT" start "$D5" --build "$BUILD_DIR" --free-ports >"$D5/start.out" 2>&1 &&
    grep -q 'choosing again' "$D5/start.out" &&
    p5=$(sed -n 's/^SMTP_PORT=//p' "$D5/sandbox.env") &&
    swaks --server "127.0.0.1:$p5" --quit-after CONNECT >/dev/null 2>&1; then
    ok "--free-ports chooses again when master cannot bind ($(grep -c 'choosing again' "$D5/start.out") retries)"
else
    fail "--free-ports chooses again when master cannot bind" \
        "$(cat "$D5/blocker.out" "$D5/start.out")"
fi
wait "$blocker" 2>/dev/null || true
bg_untrack "$blocker"
"$SANDBOX_SCRIPT" stop "$D5" >/dev/null 2>&1 || true
rm -rf "$D5"

# A busy port is refused with a clear message.
D3=$(mktemp -d "${TMPDIR:-/tmp}/odmr-test3.XXXXXX")
if out=$(SANDBOX_SMTP_PORT=$SMTP_PORT SANDBOX_ODMR_PORT=$(free_port) \
    "$SANDBOX_SCRIPT" start "$D3" --build "$BUILD_DIR" 2>&1); then
    fail "busy port refused" "started on a busy port"
    "$SANDBOX_SCRIPT" stop "$D3" >/dev/null 2>&1 || true
elif grep -q "port $SMTP_PORT is already in use" <<<"$out"; then
    ok "busy port refused"
else
    fail "busy port refused" "unexpected message: $out"
fi
rm -rf "$D3"

# A sandbox directory that user postfix cannot reach (its parent made by
# mktemp -d, mode 0700) is refused before Postfix starts, naming the
# directory in the way; with the parent opened up the same path works.
D4=$(mktemp -d "${TMPDIR:-/tmp}/odmr-test4.XXXXXX")
if out=$(SANDBOX_SMTP_PORT=$(free_port) SANDBOX_ODMR_PORT=$(free_port) \
    "$SANDBOX_SCRIPT" start "$D4/sb" --build "$BUILD_DIR" 2>&1); then
    fail "unreachable directory refused" "started in $D4/sb"
    "$SANDBOX_SCRIPT" stop "$D4/sb" >/dev/null 2>&1 || true
elif grep -q "user postfix cannot reach $D4/sb: $D4 is mode 700" <<<"$out" &&
    ! grep -q 'port taken' <<<"$out"; then
    ok "unreachable directory refused"
else
    fail "unreachable directory refused" "unexpected message: $out"
fi
chmod 0711 "$D4"
if SANDBOX_SMTP_PORT=$(free_port) SANDBOX_ODMR_PORT=$(free_port) \
    "$SANDBOX_SCRIPT" start "$D4/sb" --build "$BUILD_DIR" >/dev/null 2>&1 &&
    "$SANDBOX_SCRIPT" stop "$D4/sb" >/dev/null 2>&1; then
    ok "the same directory works once reachable"
else
    fail "the same directory works once reachable" "start or stop failed"
    "$SANDBOX_SCRIPT" stop "$D4/sb" >/dev/null 2>&1 || true
fi
rm -rf "$D4"

# status, stop, start again (passwords kept), stop.
if "$SANDBOX_SCRIPT" status "$SANDBOX_DIR" | grep -q '^running'; then
    ok "status says running"
else
    fail "status says running" "$("$SANDBOX_SCRIPT" status "$SANDBOX_DIR" || true)"
fi
old_pw=$ODMR_PASSWORD_cust1
if "$SANDBOX_SCRIPT" stop "$SANDBOX_DIR" >/dev/null &&
    ! "$SANDBOX_SCRIPT" status "$SANDBOX_DIR" >/dev/null &&
    [ -z "$(listen_addrs "$SMTP_PORT")" ] && [ -z "$(listen_addrs "$ODMR_PORT")" ]; then
    ok "stop closes both ports"
else
    fail "stop closes both ports" "still running or listening"
fi
if SANDBOX_SMTP_PORT=$SMTP_PORT SANDBOX_ODMR_PORT=$ODMR_PORT \
    "$SANDBOX_SCRIPT" start "$SANDBOX_DIR" --build "$BUILD_DIR" >/dev/null &&
    eval "$("$SANDBOX_SCRIPT" env "$SANDBOX_DIR")" &&
    [ "$ODMR_PASSWORD_cust1" = "$old_pw" ] &&
    "$SANDBOX_SCRIPT" stop "$SANDBOX_DIR" >/dev/null &&
    ! "$SANDBOX_SCRIPT" status "$SANDBOX_DIR" >/dev/null; then
    ok "restart keeps passwords, stop again"
else
    fail "restart keeps passwords, stop again" "second start/stop failed"
fi

done_testing
