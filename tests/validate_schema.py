"""Check JSON documents against one of docs/schemas/ (tests/test_against.c,
tests/test_outside.c): validate_schema.py SCHEMA FILE [--lines] validates
FILE as one document, or each of its lines with --lines. Exit 0, 1 with the
first violation, 3 if the jsonschema module is missing."""
import json
import sys

try:
    from jsonschema import Draft202012Validator
except ImportError:
    print("jsonschema is not installed (apt-get install python3-jsonschema)", file=sys.stderr)
    sys.exit(3)

schema_path, path = sys.argv[1], sys.argv[2]
with open(schema_path) as f:
    schema = json.load(f)
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema)
with open(path) as f:
    docs = [json.loads(line) for line in f if line.strip()] if "--lines" in sys.argv else [json.load(f)]
if not docs:
    print("%s: nothing to validate" % path, file=sys.stderr)
    sys.exit(1)
for i, d in enumerate(docs):
    err = next(iter(v.iter_errors(d)), None)
    if err is not None:
        print("%s: document %d violates %s at %s: %s" % (path, i + 1, schema_path, list(err.absolute_path),
                                                         err.message), file=sys.stderr)
        sys.exit(1)
print("%s: %d document(s) valid against %s" % (path, len(docs), schema_path))
