/*
 * node/filter_text.h - the `filter_text` syntax of the Points API, parsed into a quiver.v1.Filter.
 *
 * Grammar (the contract is the file comment of proto/quiver/v1/points.proto):
 *   expr    := expr "or" expr | expr "and" expr | "not" expr | "(" expr ")"
 *            | field op literal
 *            | field ["not"] "in" "[" literal {"," literal} "]"
 *            | field "is" ["not"] "null" | field "is" ["not"] "empty"
 *            | "id" "in" "[" (integer | uuid-string) {"," ...} "]"
 *   op      := "=" | "!=" | "<" | "<=" | ">" | ">="
 *   field   := [A-Za-z_][A-Za-z0-9_]* | `backquoted name`
 *   literal := integer | decimal | 'string' | "string" | true | false
 * "not" binds tightest, then "and", then "or". Keywords (and, or, not, in, is, null, empty, true,
 * false, id) are case-insensitive and reserved: a payload field with such a name is written
 * backquoted (`id`, `not`). Field names are case-sensitive, 1..256 bytes of UTF-8; a backquoted
 * name may hold any byte but the backquote and NUL. Whitespace is space, tab, CR, LF, VT and FF.
 *
 * Literals:
 *   integer  [+-]?[0-9]+, must fit int64 (an `id in` list takes 0..2^64-1 instead);
 *   decimal  [+-]?(digits "." [digits] | "." digits | digits) [(e|E) [+-] digits], with a "." or
 *            an exponent (otherwise it is an integer); must be finite. Parsed with strtod, so a
 *            program that changes LC_NUMERIC away from "C" breaks decimals;
 *   string   '...' or "...": \\ \' and \" are the only escapes; valid UTF-8, no NUL byte;
 *   boolean  true / false.
 *
 * Mapping to the structured Filter (conditions are "leaf" below unless they are Condition.nested):
 *   a = 3          FieldMatch.integer             a = 'x' / "x"   FieldMatch.keyword
 *   a = true       FieldMatch.boolean             a = 2.5         FieldRange gte 2.5 lte 2.5
 *   a != v         must_not { the condition a = v } - so a point WITHOUT the field passes
 *   a < n, <=, >, >=   FieldRange lt / lte / gt / gte (n integer or decimal; a string or a
 *                  boolean is an error). Integers become doubles (exact up to 2^53).
 *   a in [..]      all strings: FieldMatch.keywords; all integers: FieldMatch.integers; anything
 *                  else (decimals, booleans, a mix): a nested Filter whose `should` holds one
 *                  condition per literal, each as for `a = v`.
 *   a not in [..]  FieldMatch.except_keywords / except_integers (a point without the field
 *                  passes); otherwise a Filter whose `must_not` holds one condition per literal
 *                  (none may hold: the same as must_not of the `should` form, one level flatter).
 *                  A list holds 1..1,024 literals.
 *   a is null      IsNull;      a is not null    must_not { IsNull }
 *   a is empty     IsEmpty;     a is not empty   must_not { IsEmpty }
 *   id in [..]     HasId; integers are PointId.num (0..2^64-1), strings must be UUIDs in the
 *                  8-4-4-4-12 hex form (upper case accepted, stored lower case). 1..1,024 ids.
 *
 * The tree is kept compact:
 *   - a chain of "and" is one Filter with several `must`; an operand that is itself a Filter
 *     without `should` (a parenthesised "and" chain, a `not`, a `!=`) is spliced into the
 *     chain's `must` / `must_not` instead of nested;
 *   - a chain of "or" is one Filter with several `should` and min_should unset (1); an operand
 *     that is a `should`-only Filter (a parenthesised "or" chain) is spliced likewise;
 *   - `not x` is a Filter whose must_not holds x; `not (a or b)` becomes must_not [a, b];
 *   - any other sub-expression becomes a Condition.nested; parentheses alone add nothing;
 *   - the returned Filter is the top expression's own Filter when it has one, otherwise a Filter
 *     whose `must` holds the single condition.
 *   Example: `label = 3 and price < 10.5 and color in ['red', 'blue']` gives one Filter with
 *   must [match label integer 3, range price lt 10.5, match color keywords [red, blue]];
 *   `a = 1 or b = 2 and c = 3` gives should [a, nested { must [b, c] }].
 *
 * Limits (common.proto): the Filter nests at most 16 levels (the returned Filter is level 1, each
 * Condition.nested adds one); at most 1,024 Condition messages in all, nested ones included;
 * parentheses and `not` nest at most 64 deep in the text; the text is at most 4,096 bytes.
 */
#ifndef QV_NODE_FILTER_TEXT_H
#define QV_NODE_FILTER_TEXT_H

#include "common/common.h"
#include "quiver/v1/common.pb-c.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QV_FILTER_TEXT_MAX_BYTES 4096

/* Parses `text` (len bytes, need not be NUL-terminated; NULL allowed when len is 0; at most 4,096
 * bytes) into a newly allocated Quiver__V1__Filter that the caller frees with
 * qv_filter_text_free (every part of it comes from malloc, so protobuf-c's free_unpacked with a
 * NULL allocator frees it too). Empty or all-blank text gives an empty Filter (passes every
 * point).
 *
 * Errors: QV_EINVAL for a syntax error, a value out of range or a limit exceeded (text over 4,096
 * bytes included), with a message that names the 0-based byte offset and the offending token,
 * e.g. "filter_text: at byte 8: expected a value after '<', found 'and'"; QV_ERESOURCE when out
 * of memory. On error *out is NULL and nothing is leaked; *err (may be NULL) is filled only on
 * error. Thread-safe: no global state. */
int qv_filter_text_parse(const char *text, size_t len, Quiver__V1__Filter **out, qv_status *err);

/* Frees a Filter from qv_filter_text_parse. NULL is ignored. */
void qv_filter_text_free(Quiver__V1__Filter *f);

#ifdef __cplusplus
}
#endif

#endif /* QV_NODE_FILTER_TEXT_H */
