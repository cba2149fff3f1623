"""Check JSON documents against a JSON Schema (draft 2020-12) with the
jsonschema module: docs/trace.schema.json for every kind of trace
(tests/test_trace_schema.c), one of docs/schemas/ for the protocol and the
recorded runs (tests/test_against.c, tests/test_outside.c).

    validate_schema.py SCHEMA FILE... [--lines]

validates each FILE as one document, or each of its lines with --lines, and
prints one line per file. Exit 0 when every file is valid, 1 when one is not
(the first violation of each invalid file is printed: its path in the
document and the message), 3 if the jsonschema module is missing."""
import json
import sys

try:
    from jsonschema import Draft202012Validator
except ImportError:
    print("jsonschema is not installed (make deps puts it in .venv; or apt-get install python3-jsonschema)",
          file=sys.stderr)
    sys.exit(3)

args = [a for a in sys.argv[1:] if a != "--lines"]
if "-h" in args or "--help" in args or len(args) < 2:
    print(__doc__)
    sys.exit(0 if "-h" in args or "--help" in args else 2)
schema_path, paths = args[0], args[1:]
with open(schema_path) as f:
    schema = json.load(f)
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema)
bad = 0
for path in paths:
    with open(path) as f:
        docs = [json.loads(line) for line in f if line.strip()] if "--lines" in sys.argv else [json.load(f)]
    if not docs:
        print("%s: nothing to validate" % path, file=sys.stderr)
        bad += 1
        continue
    for i, d in enumerate(docs):
        err = next(iter(v.iter_errors(d)), None)
        if err is not None:
            print("%s: document %d violates %s at %s: %s" % (path, i + 1, schema_path, list(err.absolute_path),
                                                             err.message), file=sys.stderr)
            bad += 1
            break
    else:
        print("%s: %d document(s) valid against %s" % (path, len(docs), schema_path))
sys.exit(1 if bad else 0)
