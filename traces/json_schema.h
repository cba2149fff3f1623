// A JSON Schema (draft 2020-12) validator for the keywords docs/trace.schema.json
// uses, so that `trace validate` checks a trace against that very schema (it is
// compiled in) and not against a hand-written copy of its rules:
//   type, const, enum, required, properties, additionalProperties, items,
//   minItems, maxItems, minimum, maximum, exclusiveMinimum, exclusiveMaximum,
//   minLength, maxLength, pattern (POSIX extended), $ref (within the schema:
//   "#" and "#/..." pointers), allOf, anyOf, oneOf, not, if/then/else, and the
//   boolean schemas true and false; annotations ($schema, $id, $comment,
//   $defs, title, description, default, examples, deprecated) are skipped.
// A schema with any other keyword is refused (json_schema_supported), so
// that a keyword added to the schema cannot be silently ignored here.
// Types as the specification has them: an integer is any number without a
// fractional part (1.0 included), booleans are not numbers, and string
// lengths count code points.
#ifndef TRACES_JSON_SCHEMA_H
#define TRACES_JSON_SCHEMA_H

#include <cjson/cJSON.h>
#include <stddef.h>

// 0 when every keyword of `schema` (all its subschemas) is one this
// validator implements and each is well-formed; -1 with the first problem
// in err (its location in the schema and the keyword).
int json_schema_supported(const cJSON *schema, char *err, size_t errlen);

// 0 when `doc` is valid against `schema`; 1 with the first violation in err,
// "at PATH: MESSAGE" (PATH as steps[3].loss, "the top level" for the root);
// -1 when the schema cannot be used (see json_schema_supported; a $ref that
// does not resolve).
int json_schema_validate(const cJSON *schema, const cJSON *doc, char *err, size_t errlen);

#endif
