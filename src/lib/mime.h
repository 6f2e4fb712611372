/*
 * mime.h - 8-bit to 7-bit MIME downgrade of a held message, for a customer
 * whose server does not announce 8BITMIME (RFC 6152 section 3).
 *
 * Input and output are the queue file's wire form of the content: CRLF
 * lines, dot-stuffed, ending with the line ".". The converter streams: it
 * reads the input with pread(2) through one fixed buffer and writes through
 * another, so memory does not grow with the message (about 170 KB in all,
 * whatever the size). It reads the headers and the body of each leaf part
 * twice (a look-ahead decides whether the part needs converting before its
 * headers go out).
 *
 * What changes, as Postfix's smtp(8) does it (global/mime_state.c with
 * MIME_OPT_DOWNGRADE), and where we differ:
 *  - A leaf part whose body holds a byte >= 0x80 is re-encoded as
 *    quoted-printable (RFC 2045 section 6.7): its Content-Transfer-Encoding
 *    header (with its continuation lines) is dropped and
 *    "Content-Transfer-Encoding: quoted-printable" is added as the last
 *    header of the part. Output lines are at most 76 characters (soft line
 *    breaks "="), trailing blanks and "=" encoded, CRLF kept as the hard
 *    line break. Postfix converts the parts that are *declared* 8bit or
 *    binary; we convert the parts that *hold* 8-bit bytes, declared or not,
 *    and leave every other part byte for byte as it was.
 *  - A multipart or message/rfc822 entity declared 8bit or binary is walked
 *    into and relabelled "Content-Transfer-Encoding: 7bit", as Postfix does.
 *  - message/global is a leaf (RFC 6532 section 3.5 allows it an encoding),
 *    as in Postfix.
 *  - A converted message-level entity (the message itself, or one inside
 *    message/rfc822) without MIME-Version gets "MIME-Version: 1.0"; a
 *    converted part without Content-Type gets "Content-Type: text/plain;
 *    charset=unknown-8bit" (RFC 1428): its default, us-ascii, would be a
 *    lie. Postfix adds neither. A Content-Type header is honoured with or
 *    without MIME-Version (Postfix and Python's email package do the same).
 *  - Everything else (headers, boundaries, preamble, epilogue, 7-bit parts)
 *    is copied unchanged. A QP continuation line that would start with "-"
 *    has it encoded as "=2D", so no soft line break can forge a boundary.
 *
 * When it cannot be done (MIME_DOWNGRADE_IMPOSSIBLE; the caller bounces
 * with 5.6.3): a byte >= 0x80 in any header (Postfix passes those through;
 * RFC 6152 forbids sending them, and only SMTPUTF8 could carry them); 8-bit
 * data in a part declared base64, quoted-printable, binary or an unknown
 * encoding, in message/partial or message/external-body (7bit only, RFC
 * 2046 section 5.2), in a multipart without a boundary parameter, or in a
 * multipart preamble, epilogue or boundary line (no encoding can label
 * them); and multipart/message nesting deeper than MIME_NESTING_MAX
 * (Postfix's mime_nesting_limit) when 8-bit data lies below it.
 */
#ifndef ODMR_MIME_H
#define ODMR_MIME_H

#include <sys/types.h>

/* mime_downgrade(): the message cannot be sent as 7-bit MIME. */
#define MIME_DOWNGRADE_IMPOSSIBLE 1

/* Multipart and message/rfc822 levels followed (Postfix's default
 * mime_nesting_limit); deeper containers are treated as leaf parts. */
#define MIME_NESTING_MAX 100

/* Does the content (wire form at fd, offset, length bytes) hold any byte
 * >= 0x80, in headers or body? Returns 1 or 0, or -1 with *error_r
 * (malloc'd) when reading fails or the file is shorter than length. */
int mime_has_8bit(int fd, off_t offset, long long length, char **error_r);

/* Convert the content (wire form at in_fd, offset, length bytes; in_fd
 * must allow pread(2)) into 7-bit MIME as described above, written to
 * out_fd in wire form (CRLF lines, dot-stuffed, ending with ".\r\n"), ready
 * to send as the DATA stream. The input ends at its "." line or at length
 * bytes, whichever comes first; a last line without CRLF is ended.
 * Returns 0 (converted; a message with nothing to convert comes out
 * unchanged), MIME_DOWNGRADE_IMPOSSIBLE with *error_r (malloc'd) saying
 * why, or -1 with *error_r on a read or write error (temporary). After a
 * non-zero return out_fd holds partial output, to be discarded. */
int mime_downgrade(int in_fd, off_t offset, long long length, int out_fd, char **error_r);

#endif
