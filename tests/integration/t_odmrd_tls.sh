#!/bin/bash
# t_odmrd_tls.sh - odmrd with TLS through the sandbox: tls_security_level =
# encrypt (no AUTH before STARTTLS), SASL EXTERNAL from a client certificate
# signed by the sandbox's test CA and mapped by tls_cert_user_maps, an
# unmapped or unverified certificate, SCRAM-SHA-256, and STARTTLS injection
# (bytes pipelined after STARTTLS are thrown away).
set -eu
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd postfix openssl postmap
require_bin odmrd odmr-enqueue odmr-store

sandbox_start

CUSTOMER=$LIB_DIR/odmr_customer.py
PW1=$ODMR_PASSWORD_cust1
TLS=$SANDBOX_DIR/tls

customer() {
    out=$(/usr/bin/python3 "$CUSTOMER" --host "$ODMR_HOST" --port "$ODMR_PORT" --timeout 30 \
        --user cust1 --password "$PW1" "$@" 2>&1) || true
}
has() { grep -q -- "$2" <<<"$1"; }

# Client certificates: one signed by the test CA, one self-signed.
(
    cd "$TLS"
    openssl req -newkey rsa:2048 -nodes -subj /CN=cust1 -keyout c1.key -out c1.csr 2>/dev/null
    openssl x509 -req -in c1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -out c1.pem 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=cust1 -days 2 -keyout self.key \
        -out self.pem 2>/dev/null
)
fp() { openssl x509 -in "$1" -noout -fingerprint -sha256 | cut -d= -f2; }
{
    echo "$(fp "$TLS/c1.pem") cust1"
    echo "$(fp "$TLS/self.pem") cust1"
} >"$CONFIG_DIR/odmr_certs"
postmap -c "$CONFIG_DIR" "hash:$CONFIG_DIR/odmr_certs"
cat >>"$CONFIG_DIR/odmr.cf" <<EOF
tls_CAfile = $TLS/ca.pem
tls_cert_user_maps = hash:$CONFIG_DIR/odmr_certs
EOF

printf 'Subject: tls\n\nover tls\n' |
    "$BIN/odmr-enqueue" -c "$CONFIG_DIR" -f s@sender.test -- t1@example.org t2@example.net >/dev/null

# EXTERNAL with a verified, mapped certificate.
customer --starttls --cafile "$TLS_CA_FILE" --cert "$TLS/c1.pem" --key "$TLS/c1.key" \
    --mech EXTERNAL --domains example.org
if has "$out" '^auth: 235 ' && has "$out" '^messages: 1$'; then
    ok "EXTERNAL with a CA-signed mapped certificate"
else
    fail "EXTERNAL with a CA-signed mapped certificate" "$out"
fi
if odmr_log_grep 'sasl_method=EXTERNAL, sasl_username=cust1'; then ok "EXTERNAL logged"; else fail "EXTERNAL logged" "no line"; fi

# A self-signed certificate does not verify: no EXTERNAL, even though mapped.
customer --starttls --cert "$TLS/self.pem" --key "$TLS/self.key" --mech EXTERNAL
if has "$out" '^auth: 535 '; then ok "unverified certificate: EXTERNAL 535"; else fail "unverified certificate: EXTERNAL 535" "$out"; fi
# No certificate at all.
customer --starttls --mech EXTERNAL
if has "$out" '^auth: 535 '; then ok "no certificate: EXTERNAL 535"; else fail "no certificate: EXTERNAL 535" "$out"; fi

# SCRAM-SHA-256, with the server's signature checked by the customer.
customer --mech SCRAM-SHA-256 --domains example.net
if has "$out" '^scram: server signature ok' && has "$out" '^auth: 235 ' && has "$out" '^messages: 1$'; then
    ok "SCRAM-SHA-256"
else
    fail "SCRAM-SHA-256" "$out"
fi

# STARTTLS injection: a command sent in the same packet as STARTTLS must
# not be executed after the handshake.
inj=$(/usr/bin/python3 - "$ODMR_HOST" "$ODMR_PORT" <<'EOF'
import socket, ssl, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
f = s.makefile("rb")
def reply(fh):
    out = []
    while True:
        l = fh.readline().decode().rstrip("\r\n")
        out.append(l)
        if len(l) < 4 or l[3] != "-":
            return out
reply(f)
s.sendall(b"EHLO x\r\n"); reply(f)
s.sendall(b"STARTTLS\r\nNOOP\r\n"); print(reply(f)[-1])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s); g = t.makefile("rb")
t.sendall(b"QUIT\r\n"); print(reply(g)[-1])
EOF
) || true
if [ "$(sed -n 2p <<<"$inj")" = "221 2.0.0 Bye" ]; then
    ok "STARTTLS: pipelined plaintext is discarded"
else
    fail "STARTTLS: pipelined plaintext is discarded" "$inj"
fi

# tls_security_level = encrypt: no AUTH before STARTTLS.
sed -i 's/^tls_security_level = .*/tls_security_level = encrypt/' "$CONFIG_DIR/odmr.cf"
customer --mech none --before-auth "AUTH CRAM-MD5"
if ! has "$out" '^ehlo: .*AUTH' && has "$out" '^cmd: AUTH -> 530 5.7.0 Must issue a STARTTLS command first'; then
    ok "encrypt: AUTH neither offered nor accepted before TLS"
else
    fail "encrypt: AUTH neither offered nor accepted before TLS" "$out"
fi
customer --starttls --mech CRAM-MD5
if has "$out" '^auth: 235 '; then ok "encrypt: AUTH after STARTTLS"; else fail "encrypt: AUTH after STARTTLS" "$out"; fi

# The TLS context is made at the first STARTTLS: a certificate that
# cannot be used then gives 454 and the session goes on in plain text.
sed -i 's/^tls_security_level = .*/tls_security_level = may/' "$CONFIG_DIR/odmr.cf"
cp "$SANDBOX_DIR/tls/server.pem" "$SANDBOX_DIR/tls/server.pem.good"
echo "not a certificate" >"$SANDBOX_DIR/tls/server.pem"
bad=$(/usr/bin/python3 - "$ODMR_PORT" <<'EOF2'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
f = s.makefile("rb")
def reply(f):
    lines = []
    while True:
        l = f.readline().decode().rstrip()
        lines.append(l)
        if l[3:4] != "-":
            return lines
reply(f)
s.sendall(b"EHLO x\r\n"); reply(f)
s.sendall(b"STARTTLS\r\n"); print(reply(f)[-1])
s.sendall(b"NOOP\r\n"); print(reply(f)[-1])
EOF2
) || true
cp "$SANDBOX_DIR/tls/server.pem.good" "$SANDBOX_DIR/tls/server.pem"
if [ "$(sed -n 1p <<<"$bad" | cut -c1-9)" = "454 4.7.0" ] && [ "$(sed -n 2p <<<"$bad" | cut -c1-3)" = 250 ] &&
    odmr_log_grep 'warning: .*cannot start TLS'; then
    ok "STARTTLS with a broken certificate: 454, session goes on"
else
    fail "STARTTLS with a broken certificate" "$bad"
fi
# An unreadable certificate is found at start. At level may (the default,
# whose snakeoil key user odmr may not be allowed to read) TLS is turned off
# with a warning and the port keeps working; at encrypt it is a
# configuration error: the client gets 421 instead of the greeting.
mv "$SANDBOX_DIR/tls/server.pem" "$SANDBOX_DIR/tls/server.pem.moved"
may=$( (exec 3<>"/dev/tcp/127.0.0.1/$ODMR_PORT" && printf 'EHLO x\r\nQUIT\r\n' >&3 &&
    timeout 10 cat <&3) 2>/dev/null | tr -d '\r' || true)
sed -i 's/^tls_security_level = .*/tls_security_level = encrypt/' "$CONFIG_DIR/odmr.cf"
gone=$( (exec 3<>"/dev/tcp/127.0.0.1/$ODMR_PORT" && timeout 5 head -n 1 <&3) 2>/dev/null || true)
sed -i 's/^tls_security_level = .*/tls_security_level = may/' "$CONFIG_DIR/odmr.cf"
mv "$SANDBOX_DIR/tls/server.pem.moved" "$SANDBOX_DIR/tls/server.pem"
if grep -q '^220 ' <<<"$may" && grep -q '^250 ENHANCEDSTATUSCODES' <<<"$may" &&
    ! grep -q STARTTLS <<<"$may" && grep -q '^221 ' <<<"$may" &&
    odmr_log_grep 'warning: .*tls_cert_file .*TLS is off \(tls_security_level = may\)'; then
    ok "unreadable tls_cert_file at level may: a warning, no STARTTLS, the session goes on"
else
    fail "unreadable tls_cert_file at level may" "got '$may'"
fi
if [ "${gone:0:9}" = "421 4.3.0" ] && odmr_log_grep 'fatal: .*tls_cert_file'; then
    ok "unreadable tls_cert_file at level encrypt: fatal at start naming the parameter, 421"
else
    fail "unreadable tls_cert_file at level encrypt" "got '$gone'"
fi

if grep -E 'odmrd.*(fatal|panic):' "$ODMR_LOG_FILE" | grep -vq 'tls_cert_file'; then
    fail "no other fatal or panic" "$(grep -E 'odmrd.*(fatal|panic):' "$ODMR_LOG_FILE" | head -3)"
else
    ok "no other fatal or panic"
fi

done_testing
