#!/bin/bash
# t_odmrd_kill.sh - odmrd killed in the middle of a flush, and two sessions
# racing for one domain, through the sandbox.
#
# kill -9: a customer (odmrd_robust.py stall) answers 250 to the final dot
# of messages 1..K-1 and nothing to message K's; odmrd is killed there.
# Then: every message without a 250 is still queued and indexed, every one
# with a 250 is gone or comes again (a duplicate is allowed, a loss is
# not), the domain lock is free (the next ATRN gets 250 at once, no 451),
# and that ATRN delivers the rest byte for byte. The same for the
# test_fault_point "mid-flush" (odmrd kills itself between the customer's
# 250 and its own bookkeeping) and for a kill before the customer's 220.
#
# race: two sessions of one user ATRN the same domain at the same moment:
# exactly one gets 250 and no message arrives twice. The loser waits up to
# 5 s for the domain's lock: 451 when the winner's session lasts longer (a
# 7 s greeting delay), 453 (nothing left) when it ends sooner (1 s).
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix ss cmp
require_bin odmrd odmr-enqueue odmr-store odmr-queue

sandbox_start

HELPER=$LIB_DIR/odmrd_robust.py
CUSTOMER=$LIB_DIR/odmr_customer.py
PW1=$ODMR_PASSWORD_cust1
export ROBUST_TIMEOUT=30
ORIG=$SANDBOX_DIR/orig
mkdir -p "$ORIG"
export ODMR_HOST ODMR_PORT

# put NAME...: one message per name for NAME@example.org, Subject NAME; the
# expected bytes at the customer (CRLF, unstuffed) in $ORIG/NAME.
put() {
    local n
    for n in "$@"; do
        {
            printf 'Subject: %s\nX-Name: %s\n\n' "$n" "$n"
            printf '.dot %s\n..two\n.\n' "$n"
            head -c 3000 /dev/zero | tr '\0' "${n:0:1}"
            printf '\nend of %s\n' "$n"
        } >"$ORIG/$n.txt"
        sed 's/$/\r/' "$ORIG/$n.txt" >"$ORIG/$n"
        "$BIN/odmr-enqueue" -c "$CONFIG_DIR" -f sender@sender.test -- "$n@example.org" \
            <"$ORIG/$n.txt" >/dev/null
    done
}

# subject_of FILE: the Subject of a received message.
subject_of() { tr -d '\r' <"$1" | sed -n 's/^Subject: //p' | head -1; }

# queued_id NAME: the queue id of NAME's message when its file is still in
# the queue and odmr-queue lists it as queued for example.org; "" otherwise.
queued_id() {
    local f id
    # (the content is kept in wire form: CRLF)
    f=$(grep -l -e "^X-Name: $1"$'\r'"\$" -e "^X-Name: $1\$" "$QUEUE_DIR"/msg/*/* 2>/dev/null |
        head -1 || true)
    [ -n "$f" ] || return 0
    id=$(basename "$f")
    if "$BIN/odmr-queue" -c "$CONFIG_DIR" list example.org 2>/dev/null |
        awk -v id="$id" '$1 == id { hit = 1; next } hit && /\(queued\)/ { print id; exit } { hit = 0 }' |
        grep -q .; then
        echo "$id"
    fi
}

# customer DIR ARGS...: odmr_customer.py as cust1 saving into DIR; output in $out.
customer() {
    local dir=$1
    shift
    out=$(/usr/bin/python3 "$CUSTOMER" --host "$ODMR_HOST" --port "$ODMR_PORT" --timeout 30 \
        --user cust1 --password "$PW1" --save-dir "$dir" "$@" 2>&1) || true
}

# received DIR: the subjects of the messages saved in DIR, one a line.
received() {
    local f
    for f in "$1"/*.msg; do
        [ -e "$f" ] && subject_of "$f"
    done
    return 0
}

# byte_exact DIR: every message in DIR equals its original. Prints mismatches.
byte_exact() {
    local f s bad=0
    for f in "$1"/*.msg; do
        [ -e "$f" ] || continue
        s=$(subject_of "$f")
        if ! cmp -s "$ORIG/$s" "$f"; then
            echo "differs: $f ($s)"
            bad=1
        fi
    done
    return $bad
}

# odmrd_pid_of_port PORT: the odmrd serving our connection from local PORT.
odmrd_pid_of_port() {
    local p
    for p in $(ss -Htnp state established "( sport = :$ODMR_PORT and dport = :$1 )" |
        grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
        if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = odmrd ]; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# lock_free: nobody holds the per-domain lock of example.org (a write lock
# on the whole lock file, taken here with F_OFD_SETLK and given back).
lock_free() {
    /usr/bin/python3 - "$QUEUE_DIR/lock/example.org" <<'EOF'
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
lk = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
try:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lk)
except OSError:
    sys.exit(1)
sys.exit(0)
EOF
}

# --- 1. kill -9 while the customer has not answered message K's final dot ----
N=6
K=3
names=()
for i in $(seq 1 $N); do names+=("kill$i"); done
put "${names[@]}"
R1=$SANDBOX_DIR/recv.kill
timeout 120 /usr/bin/python3 "$HELPER" stall cust1 "$PW1" example.org "$K" "$R1" >"$SANDBOX_DIR/stall.out" 2>&1 &
stall_pid=$!
if wait_for 30 grep -q "^stalled $K\$" "$SANDBOX_DIR/stall.out"; then
    port=$(sed -n 's/^port //p' "$SANDBOX_DIR/stall.out")
    pid=$(odmrd_pid_of_port "$port" || true)
    if [ -n "$pid" ]; then
        kill -9 "$pid"
        ok "odmrd [$pid] killed -9 while message $K's final dot waits for its reply"
    else
        fail "find odmrd by its connection" "no odmrd for local port $port"
        kill "$stall_pid" 2>/dev/null || true
    fi
else
    fail "customer stalls at message $K" "$(cat "$SANDBOX_DIR/stall.out")"
    kill "$stall_pid" 2>/dev/null || true
fi
wait "$stall_pid" || true
got250=$(for f in "$R1"/*.ok; do [ -e "$f" ] && subject_of "${f%.ok}.msg"; done | sort)
if grep -q '^end: killed while stalled' "$SANDBOX_DIR/stall.out" &&
    [ "$(echo "$got250" | grep -c .)" = $((K - 1)) ]; then
    ok "customer saw the connection die with $((K - 1)) messages answered 250"
else
    fail "customer saw the connection die" "$(cat "$SANDBOX_DIR/stall.out"); 250: $got250"
fi

missing=""
for i in $(seq $K $N); do
    [ -n "$(queued_id "kill$i")" ] || missing="$missing kill$i"
done
if [ -z "$missing" ]; then
    ok "messages $K..$N (no 250) still queued and indexed"
else
    fail "messages $K..$N (no 250) still queued and indexed" "missing:$missing"
fi
if lock_free; then ok "the kernel released the domain lock"; else fail "the kernel released the domain lock" "still held"; fi

# The next ATRN at once: 250 (not 451), and everything left arrives.
R2=$SANDBOX_DIR/recv.after-kill
customer "$R2" --domains example.org
if grep -q '^atrn: 250 ' <<<"$out" && grep -q '^quit: yes$' <<<"$out"; then
    ok "ATRN right after the kill: 250, flush ends with QUIT"
else
    fail "ATRN right after the kill: 250, flush ends with QUIT" "$out"
fi
after=$(received "$R2" | sort)
lost=""
for i in $(seq 1 $N); do
    if ! grep -qx "kill$i" <<<"$got250" && ! grep -qx "kill$i" <<<"$after"; then
        lost="$lost kill$i"
    fi
done
if [ -z "$lost" ]; then
    ok "nothing lost: every message got 250 before the kill or arrives now"
else
    fail "nothing lost" "lost:$lost (before: $got250; after: $after)"
fi
if [ "$(sort <<<"$after" | uniq -d)" = "" ]; then ok "no message twice in one flush"; else fail "no message twice in one flush" "$after"; fi
for i in $(seq $K $N); do
    grep -qx "kill$i" <<<"$after" || lost="$lost kill$i"
done
if [ -z "$lost" ]; then ok "messages $K..$N delivered by the next ATRN"; else fail "messages $K..$N delivered by the next ATRN" "$after"; fi
dups=$(comm -12 <(echo "$got250") <(echo "$after") | tr '\n' ' ')
echo "# delivered again after the kill (allowed): ${dups:-none}"
if msg=$(byte_exact "$R2") && msg2=$(byte_exact "$R1"); then
    ok "every delivered message byte for byte"
else
    fail "every delivered message byte for byte" "$msg $msg2"
fi
left=$("$BIN/odmr-queue" -c "$CONFIG_DIR" list example.org 2>&1 | grep -c '(queued)' || true)
customer "$SANDBOX_DIR/recv.empty" --domains example.org
if [ "$left" = 0 ] && grep -q '^atrn: 453 ' <<<"$out"; then
    ok "queue empty for the domain afterwards (ATRN 453)"
else
    fail "queue empty for the domain afterwards" "$left queued; $out"
fi

# --- 2. test_fault_point = mid-flush -------------------------------------------
put fault1 fault2 fault3
echo "test_fault_point = mid-flush" >>"$CONFIG_DIR/odmr.cf"
R3=$SANDBOX_DIR/recv.fault
customer "$R3" --domains example.org
sed -i '/^test_fault_point/d' "$CONFIG_DIR/odmr.cf"
# (With PIPELINING odmrd may already be sending message 2 when it reads the
# reply to message 1's dot: the customer then sees the end inside DATA.)
if grep -q '^atrn: 250 ' <<<"$out" && ! grep -q '^quit: yes$' <<<"$out" &&
    grep -qx 'DOT -> 250' "$R3/001.env" 2>/dev/null && [ ! -e "$R3/002.env" ]; then
    ok "mid-flush fault: odmrd dies after the customer's 250 to message 1"
else
    fail "mid-flush fault: odmrd dies after the customer's 250 to message 1" "$out"
fi
if log_wait 10 'spawn.*odmrd.*killed by signal 9'; then ok "spawn logs odmrd killed by signal 9"; else fail "spawn logs odmrd killed by signal 9" "no line"; fi
st=""
for n in fault1 fault2 fault3; do [ -n "$(queued_id $n)" ] && st="$st $n"; done
if [ "$st" = " fault2 fault3" ] || [ "$st" = " fault1 fault2 fault3" ]; then
    ok "mid-flush fault: unanswered messages queued and indexed ($st )"
else
    fail "mid-flush fault: unanswered messages queued and indexed" "queued:$st"
fi
R4=$SANDBOX_DIR/recv.after-fault
customer "$R4" --domains example.org
after=$(received "$R4" | sort | tr '\n' ' ')
if grep -q '^atrn: 250 ' <<<"$out" && grep -q '^quit: yes$' <<<"$out" &&
    { [ "$after" = "fault1 fault2 fault3 " ] || [ "$after" = "fault2 fault3 " ]; }; then
    ok "after the fault: ATRN 250 at once, the rest arrives (${after})"
else
    fail "after the fault: ATRN 250 at once, the rest arrives" "$after / $out"
fi
if msg=$(byte_exact "$R4") && msg2=$(byte_exact "$R3"); then ok "after the fault: byte for byte"; else fail "after the fault: byte for byte" "$msg $msg2"; fi

# --- 3. kill -9 before the customer's 220 -------------------------------------------
put early1 early2
R5=$SANDBOX_DIR/recv.early
timeout 120 /usr/bin/python3 "$CUSTOMER" --host "$ODMR_HOST" --port "$ODMR_PORT" --timeout 30 \
    --user cust1 --password "$PW1" --domains example.org --greeting-delay 20 --save-dir "$R5" \
    >"$SANDBOX_DIR/early.out" 2>&1 &
early_pid=$!
pid=""
if wait_for 15 grep -q '^atrn: 250' "$SANDBOX_DIR/early.out"; then
    port=$(ss -Htnp state established "( dport = :$ODMR_PORT )" | grep 'python3' | awk '{print $3}' | sed 's/.*://' | head -1)
    pid=$(odmrd_pid_of_port "$port" || true)
fi
if [ -n "$pid" ]; then
    kill -9 "$pid"
    ok "odmrd [$pid] killed -9 while waiting for the customer's 220"
else
    fail "odmrd killed before the 220" "no session found: $(cat "$SANDBOX_DIR/early.out")"
fi
kill "$early_pid" 2>/dev/null || true
wait "$early_pid" 2>/dev/null || true
customer "$SANDBOX_DIR/recv.early2" --domains example.org
after=$(received "$SANDBOX_DIR/recv.early2" | sort | tr '\n' ' ')
if grep -q '^atrn: 250 ' <<<"$out" && [ "$after" = "early1 early2 " ]; then
    ok "kill before the 220: next ATRN 250, both messages arrive"
else
    fail "kill before the 220: next ATRN 250, both messages arrive" "$after / $out"
fi

# --- 4. kill -9 in the middle of a large message's content --------------------------
# big1 is small and gets 250; big2 is 6 MB and the customer stops reading
# after its 354, so odmrd blocks in sendfile; big3 waits behind it.
put big1
{
    printf 'Subject: big2\nX-Name: big2\n\n'
    for _ in $(seq 1 6); do head -c 1048000 /dev/zero | tr '\0' 'b' | fold -w 998; echo; done
} >"$ORIG/big2.txt"
sed 's/$/\r/' "$ORIG/big2.txt" >"$ORIG/big2"
"$BIN/odmr-enqueue" -c "$CONFIG_DIR" -f sender@sender.test -- big2@example.org <"$ORIG/big2.txt" >/dev/null
put big3
R6=$SANDBOX_DIR/recv.big
timeout 120 /usr/bin/python3 "$HELPER" stall cust1 "$PW1" example.org 2 "$R6" data >"$SANDBOX_DIR/big.out" 2>&1 &
big_pid=$!
pid=""
if wait_for 30 grep -q '^stalled-data 2$' "$SANDBOX_DIR/big.out"; then
    port=$(sed -n 's/^port //p' "$SANDBOX_DIR/big.out")
    pid=$(odmrd_pid_of_port "$port" || true)
    # Until odmrd's send queue holds data it cannot get rid of.
    sendq() { ss -Htn state established "( sport = :$ODMR_PORT and dport = :$port )" | awk '{print $2}'; }
    blocked() { [ "$(sendq)" -gt 100000 ] 2>/dev/null; }
    if wait_for 10 blocked; then
        echo "# odmrd's send queue: $(sendq) bytes unsent"
        ok "odmrd blocked in the middle of big2's content"
    else
        fail "odmrd blocked in the middle of big2's content" "send queue $(sendq)"
    fi
fi
if [ -n "$pid" ]; then
    kill -9 "$pid"
    ok "odmrd [$pid] killed -9 in the middle of the content"
else
    fail "odmrd killed in the content" "no session: $(cat "$SANDBOX_DIR/big.out")"
fi
kill "$big_pid" 2>/dev/null || true
wait "$big_pid" 2>/dev/null || true
if [ -n "$(queued_id big2)" ] && [ -n "$(queued_id big3)" ] && [ -z "$(queued_id big1)" ]; then
    ok "cut content: big2 and big3 still queued and indexed, big1 (250) gone"
else
    fail "cut content: queue state" "big1=$(queued_id big1) big2=$(queued_id big2) big3=$(queued_id big3)"
fi
customer "$SANDBOX_DIR/recv.big2" --domains example.org
after=$(received "$SANDBOX_DIR/recv.big2" | sort | tr '\n' ' ')
if grep -q '^atrn: 250 ' <<<"$out" && grep -q '^quit: yes$' <<<"$out" && [ "$after" = "big2 big3 " ]; then
    ok "after the cut: ATRN 250, big2 and big3 arrive"
else
    fail "after the cut: ATRN 250, big2 and big3 arrive" "$after / $out"
fi
if msg=$(byte_exact "$SANDBOX_DIR/recv.big2"); then ok "after the cut: byte for byte (6 MB)"; else fail "after the cut: byte for byte" "$msg"; fi

# --- 5. two sessions racing for one domain ------------------------------------------
ROUNDS=5
all=""
for r in $(seq 1 $ROUNDS); do
    put "race${r}a" "race${r}b"
    dom=example.org
    [ "$r" = "$ROUNDS" ] && dom=-   # the last round: ATRN without domains
    delay=7 want="250 451 "
    if [ $((r % 2)) = 0 ]; then delay=1 want="250 453 "; fi
    out=$(timeout 120 /usr/bin/python3 "$HELPER" race cust1 "$PW1" "$dom" "$SANDBOX_DIR/race$r.1" \
        "$SANDBOX_DIR/race$r.2" "$delay" 2>&1 || true)
    codes=$(grep -o '^atrn[12]: [0-9]*' <<<"$out" | awk '{print $2}' | sort | tr '\n' ' ')
    if [ "$codes" = "$want" ]; then
        ok "race $r (ATRN ${dom/#-/without domains}, winner ${delay}s): ${want% }"
    else
        fail "race $r (winner ${delay}s): ${want% }" "$out"
    fi
    got=$( (received "$SANDBOX_DIR/race$r.1"; received "$SANDBOX_DIR/race$r.2") | sort | tr '\n' ' ')
    if [ "$got" = "race${r}a race${r}b " ]; then
        ok "race $r: both messages delivered once"
    else
        fail "race $r: both messages delivered once" "got: $got"
    fi
    all="$all$got"
done
if [ "$(tr ' ' '\n' <<<"$all" | grep . | sort | uniq -d)" = "" ]; then
    ok "races: no message delivered twice"
else
    fail "races: no message delivered twice" "$all"
fi
if odmr_log_grep 'domain example.org is being flushed by another session'; then
    ok "the loser's 451 is logged"
else
    fail "the loser's 451 is logged" "no line"
fi

if odmr_log_grep 'odmrd.*(fatal|panic):'; then
    fail "no fatal or panic" "$(grep -E 'odmrd.*(fatal|panic):' "$ODMR_LOG_FILE" | head -3)"
else
    ok "no fatal or panic"
fi

done_testing
