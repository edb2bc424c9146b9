/*
 * sdk/c/json_internal.h - libquiver's JSON <-> quiver.v1.Payload codec (private to the SDK and to
 * quiverctl, which links libquiver; applications use the qv_payload_json_* and qv_point_json_*
 * calls of quiver.h instead).
 *
 * The parser is strict RFC 8259 for one JSON object: UTF-8 is validated, escapes (\uXXXX with
 * surrogate pairs included) decoded, insignificant whitespace only between tokens, nothing but
 * whitespace after the object. On top of JSON it applies the payload rules of common.proto:
 *   null -> null_value; "..." -> string_value; a number without fraction or exponent that fits
 *   int64 -> integer_value; any other number -> double_value (must be finite: 1e999 is an error);
 *   true/false -> bool_value; [...] -> list_value (lists nest at most 8 levels, 10,000 values
 *   each); {...} inside the payload -> error ("nested objects are not payload values").
 *   At most 256 keys, each 1..256 bytes; a repeated key is an error. "\u0000" is refused in keys
 *   and strings (protobuf-c strings are NUL-terminated).
 * Every error is QV_EINVAL with a message "bad payload JSON at byte N: <why>", N counting from 0
 * at the first byte of `text`. The serialised-size limit (64 KiB) is left to the server.
 *
 * Both calls are thread-safe (numbers are converted in the "C" locale whatever the process's
 * LC_NUMERIC says).
 */
#ifndef QV_SDK_JSON_INTERNAL_H
#define QV_SDK_JSON_INTERNAL_H

#include "common/common.h"
#include "quiver/v1/common.pb-c.h"

#include <stddef.h>

/* Payload limits of common.proto, checked by the parser. */
#define QV__SDK_JSON_MAX_KEYS      256
#define QV__SDK_JSON_MAX_KEY_BYTES 256
#define QV__SDK_JSON_MAX_LIST      10000
#define QV__SDK_JSON_MAX_DEPTH     8

/* Parses the JSON object in text[0..len) (need not be NUL-terminated) into a new Payload whose
 * entries keep the keys' order in the text. On success *out owns a tree allocated with malloc
 * exactly as protobuf-c's unpacker would build it: release it with
 * quiver__v1__payload__free_unpacked(*out, NULL). On failure *out is NULL and *err (may be NULL)
 * says what and where: QV_EINVAL for bad input, QV_ERESOURCE when memory ran out. */
int qv__sdk_json_parse_payload(const char *text, size_t len, Quiver__V1__Payload **out,
                               qv_status *err);

/* Writes `payload` as one line of compact JSON text ({"a":1,"b":[true,null]}; {} for NULL or an
 * empty payload): keys in the payload's order, integers exact, doubles in the shortest form that
 * reads back to the same double (always with a '.' or an exponent, so they read back as doubles),
 * strings escaped (invalid UTF-8 from a misbehaving peer becomes U+FFFD, so the text always
 * parses). A Value with no member set, and a non-finite double (which the server never stores),
 * are written as null. On success *out is a NUL-terminated malloc'd string the caller frees with
 * free(), and *out_len (may be NULL) its length. On failure *out is NULL; errors: QV_ERESOURCE
 * (memory), QV_EINTERNAL (lists nested deeper than 64 levels: not a payload the server sends). */
int qv__sdk_json_format_payload(const Quiver__V1__Payload *payload, char **out, size_t *out_len,
                                qv_status *err);

#endif /* QV_SDK_JSON_INTERNAL_H */
