#include "json_schema.h"

#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Keywords that only annotate: skipped when validating.
static const char *const ANNOTATIONS[] = {"$schema", "$id", "$comment", "$defs", "title", "description",
                                          "default", "examples", "deprecated"};
// Keywords that validate.
static const char *const KEYWORDS[] = {"type", "const", "enum", "required", "properties", "additionalProperties",
                                       "items", "minItems", "maxItems", "minimum", "maximum", "exclusiveMinimum",
                                       "exclusiveMaximum", "minLength", "maxLength", "pattern", "$ref", "allOf",
                                       "anyOf", "oneOf", "not", "if", "then", "else"};
static const char *const TYPES[] = {"object", "array", "string", "number", "integer", "boolean", "null"};

static int in_list(const char *s, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s, list[i])) return 1;
    return 0;
}
#define IN(s, list) in_list((s), (list), sizeof(list) / sizeof *(list))

static void say(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

// ---------------------------------------------------------------------------
// The schema itself: every keyword known and well-formed.

static int is_schema(const cJSON *s) { return cJSON_IsObject(s) || cJSON_IsBool(s); }

static int check_schema(const cJSON *s, const char *where, char *err, size_t errlen) {
    if (cJSON_IsBool(s)) return 0;
    if (!cJSON_IsObject(s)) {
        say(err, errlen, "schema at %s: not an object or a boolean", where);
        return -1;
    }
    const cJSON *k;
    cJSON_ArrayForEach(k, s) {
        const char *key = k->string;
        char sub[768];
        snprintf(sub, sizeof sub, "%s/%s", where, key);
        if (!strcmp(key, "$defs")) {
            if (!cJSON_IsObject(k)) goto bad;
            const cJSON *d;
            cJSON_ArrayForEach(d, k) {
                char dw[1024];
                snprintf(dw, sizeof dw, "%s/%s", sub, d->string);
                if (check_schema(d, dw, err, errlen)) return -1;
            }
            continue;
        }
        if (IN(key, ANNOTATIONS)) continue;
        if (!IN(key, KEYWORDS)) {
            say(err, errlen, "schema at %s: the keyword \"%s\" is not one this validator implements "
                "(traces/json_schema.c)", where, key);
            return -1;
        }
        if (!strcmp(key, "type")) {
            if (cJSON_IsString(k)) {
                if (!IN(k->valuestring, TYPES)) goto bad;
            } else if (cJSON_IsArray(k)) {
                const cJSON *t;
                cJSON_ArrayForEach(t, k) if (!cJSON_IsString(t) || !IN(t->valuestring, TYPES)) goto bad;
            } else {
                goto bad;
            }
        } else if (!strcmp(key, "enum") || !strcmp(key, "required")) {
            if (!cJSON_IsArray(k)) goto bad;
            if (!strcmp(key, "required")) {
                const cJSON *t;
                cJSON_ArrayForEach(t, k) if (!cJSON_IsString(t)) goto bad;
            }
        } else if (!strcmp(key, "properties")) {
            if (!cJSON_IsObject(k)) goto bad;
            const cJSON *p;
            cJSON_ArrayForEach(p, k) {
                char pw[1024];
                snprintf(pw, sizeof pw, "%s/%s", sub, p->string);
                if (check_schema(p, pw, err, errlen)) return -1;
            }
        } else if (!strcmp(key, "additionalProperties") || !strcmp(key, "items") || !strcmp(key, "not") ||
                   !strcmp(key, "if") || !strcmp(key, "then") || !strcmp(key, "else")) {
            if (!is_schema(k) || check_schema(k, sub, err, errlen)) goto bad_or_deeper;
        } else if (!strcmp(key, "allOf") || !strcmp(key, "anyOf") || !strcmp(key, "oneOf")) {
            if (!cJSON_IsArray(k) || cJSON_GetArraySize(k) < 1) goto bad;
            int i = 0;
            const cJSON *a;
            cJSON_ArrayForEach(a, k) {
                char aw[1024];
                snprintf(aw, sizeof aw, "%s/%d", sub, i++);
                if (check_schema(a, aw, err, errlen)) return -1;
            }
        } else if (!strcmp(key, "minItems") || !strcmp(key, "maxItems") || !strcmp(key, "minLength") ||
                   !strcmp(key, "maxLength")) {
            if (!cJSON_IsNumber(k) || k->valuedouble < 0 || k->valuedouble != floor(k->valuedouble)) goto bad;
        } else if (!strcmp(key, "minimum") || !strcmp(key, "maximum") || !strcmp(key, "exclusiveMinimum") ||
                   !strcmp(key, "exclusiveMaximum")) {
            if (!cJSON_IsNumber(k)) goto bad;
        } else if (!strcmp(key, "pattern")) {
            regex_t re;
            if (!cJSON_IsString(k) || regcomp(&re, k->valuestring, REG_EXTENDED | REG_NOSUB)) goto bad;
            regfree(&re);
        } else if (!strcmp(key, "$ref")) {
            if (!cJSON_IsString(k) || k->valuestring[0] != '#') {
                say(err, errlen, "schema at %s: only references within the schema (\"#...\") are implemented", sub);
                return -1;
            }
        }
        continue;
    bad_or_deeper:
        if (is_schema(k)) return -1;   // the message is the deeper one's
    bad:
        say(err, errlen, "schema at %s: malformed \"%s\"", where, key);
        return -1;
    }
    return 0;
}

int json_schema_supported(const cJSON *schema, char *err, size_t errlen) {
    return check_schema(schema, "#", err, errlen);
}

// ---------------------------------------------------------------------------
// Validation.

typedef struct {
    const cJSON *root;   // the schema, for $ref
    char *err;
    size_t errlen;
    int broken;          // a $ref that does not resolve: the schema is unusable
    int depth;           // $ref nesting, against cycles
} Ctx;

// The path of the instance being checked: "steps[3].loss".
typedef struct Path {
    const struct Path *up;
    const char *key;     // an object member, or NULL for an array index
    int index;
} Path;

static void path_text(const Path *p, char *buf, size_t n) {
    if (!p || (!p->up && !p->key && p->index < 0)) {
        snprintf(buf, n, "the top level");
        return;
    }
    const Path *chain[64];
    int k = 0;
    for (const Path *q = p; q && k < 64; q = q->up)
        if (q->key || q->index >= 0) chain[k++] = q;
    size_t used = 0;
    buf[0] = '\0';
    while (k-- > 0 && used < n) {
        const Path *q = chain[k];
        int w;
        if (!q->key) w = snprintf(buf + used, n - used, "[%d]", q->index);
        else if (strpbrk(q->key, ".[]\" ") || !*q->key) w = snprintf(buf + used, n - used, "[\"%s\"]", q->key);
        else w = snprintf(buf + used, n - used, "%s%s", used ? "." : "", q->key);
        if (w < 0) break;
        used += (size_t)w;
    }
}

// A short JSON rendering of v for messages.
static void show(const cJSON *v, char *buf, size_t n) {
    char *text = cJSON_PrintUnformatted(v);
    if (!text) {
        snprintf(buf, n, "(a value)");
        return;
    }
    if (strlen(text) > 60)
        snprintf(buf, n, "%.50s... (%s)", text,
                 cJSON_IsObject(v) ? "an object" : cJSON_IsArray(v) ? "an array" : "a value");
    else
        snprintf(buf, n, "%s", text);
    free(text);
}

static int fail(Ctx *c, const Path *p, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(Ctx *c, const Path *p, const char *fmt, ...) {
    char where[512], what[512];
    path_text(p, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "at %s: %s", where, what);
    return 1;
}

static int is_integer(const cJSON *x) {
    return cJSON_IsNumber(x) && isfinite(x->valuedouble) && x->valuedouble == floor(x->valuedouble);
}

static int has_type(const cJSON *x, const char *t) {
    if (!strcmp(t, "object")) return cJSON_IsObject(x);
    if (!strcmp(t, "array")) return cJSON_IsArray(x);
    if (!strcmp(t, "string")) return cJSON_IsString(x);
    if (!strcmp(t, "number")) return cJSON_IsNumber(x);
    if (!strcmp(t, "integer")) return is_integer(x);
    if (!strcmp(t, "boolean")) return cJSON_IsBool(x);
    if (!strcmp(t, "null")) return cJSON_IsNull(x);
    return 0;
}

// JSON equality (numbers by value: 1 equals 1.0; true is not 1).
static int json_equal(const cJSON *a, const cJSON *b) {
    if (cJSON_IsNumber(a) || cJSON_IsNumber(b))
        return cJSON_IsNumber(a) && cJSON_IsNumber(b) && a->valuedouble == b->valuedouble;
    if (cJSON_IsBool(a) || cJSON_IsBool(b))
        return cJSON_IsBool(a) && cJSON_IsBool(b) && cJSON_IsTrue(a) == cJSON_IsTrue(b);
    if (cJSON_IsNull(a) || cJSON_IsNull(b)) return cJSON_IsNull(a) && cJSON_IsNull(b);
    if (cJSON_IsString(a) || cJSON_IsString(b))
        return cJSON_IsString(a) && cJSON_IsString(b) && !strcmp(a->valuestring, b->valuestring);
    if (cJSON_IsArray(a) || cJSON_IsArray(b)) {
        if (!cJSON_IsArray(a) || !cJSON_IsArray(b) || cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) return 0;
        for (const cJSON *x = a->child, *y = b->child; x && y; x = x->next, y = y->next)
            if (!json_equal(x, y)) return 0;
        return 1;
    }
    if (cJSON_IsObject(a) && cJSON_IsObject(b)) {
        if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) return 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, a) {
            const cJSON *y = cJSON_GetObjectItemCaseSensitive(b, x->string);
            if (!y || !json_equal(x, y)) return 0;
        }
        return 1;
    }
    return 0;
}

// Code points of a UTF-8 string (bytes that do not continue a sequence).
static long codepoints(const char *s) {
    long n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

// "#", "#/$defs/x": the schema a reference names (JSON pointer, ~0 and ~1 unescaped).
static const cJSON *resolve(const cJSON *root, const char *ref) {
    if (ref[0] != '#') return NULL;
    const cJSON *at = root;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        char tok[256];
        size_t n = 0;
        while (*p && *p != '/' && n + 1 < sizeof tok) {
            if (p[0] == '~' && p[1] == '0') tok[n++] = '~', p += 2;
            else if (p[0] == '~' && p[1] == '1') tok[n++] = '/', p += 2;
            else tok[n++] = *p++;
        }
        tok[n] = '\0';
        if (cJSON_IsObject(at)) at = cJSON_GetObjectItemCaseSensitive(at, tok);
        else if (cJSON_IsArray(at)) at = cJSON_GetArrayItem(at, atoi(tok));
        else return NULL;
        if (!at) return NULL;
    }
    return *p ? NULL : at;
}

// The validating keywords of a schema object (NULL: absent).
typedef struct {
    const cJSON *ref, *type, *cnst, *enm, *required, *props, *extra, *items, *minItems, *maxItems, *minimum,
        *maximum, *xminimum, *xmaximum, *minLength, *maxLength, *pattern, *allOf, *anyOf, *oneOf, *nt, *iff,
        *then, *els;
} Kw;

static int check(Ctx *c, const cJSON *s, const cJSON *x, const Path *p);

static int check_type(Ctx *c, const cJSON *t, const cJSON *x, const Path *p) {
    char v[128], names[128] = "";
    if (cJSON_IsString(t)) {
        if (has_type(x, t->valuestring)) return 0;
        show(x, v, sizeof v);
        return fail(c, p, "%s is not of type '%s'", v, t->valuestring);
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, t) {
        if (has_type(x, e->valuestring)) return 0;
        size_t n = strlen(names);
        snprintf(names + n, sizeof names - n, "%s'%s'", n ? ", " : "", e->valuestring);
    }
    show(x, v, sizeof v);
    return fail(c, p, "%s is not of type %s", v, names);
}

static int check_object(Ctx *c, const Kw *k, const cJSON *x, const Path *p) {
    const cJSON *r;
    if (k->required)
        cJSON_ArrayForEach(r, k->required) {
            if (!cJSON_GetObjectItemCaseSensitive(x, r->valuestring))
                return fail(c, p, "'%s' is a required property", r->valuestring);
        }
    if (!k->props && !k->extra) return 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, x) {
        Path q = {p, m->string ? m->string : "", -1};
        const cJSON *ps = k->props ? cJSON_GetObjectItemCaseSensitive(k->props, m->string) : NULL;
        if (ps) {
            if (check(c, ps, m, &q)) return 1;
        } else if (k->extra) {
            if (cJSON_IsFalse(k->extra)) return fail(c, p, "additional property '%s' is not allowed", m->string);
            if (check(c, k->extra, m, &q)) return 1;
        }
    }
    return 0;
}

static int check_array(Ctx *c, const Kw *k, const cJSON *x, const Path *p) {
    int n = cJSON_GetArraySize(x);
    if (k->minItems && n < k->minItems->valuedouble)
        return fail(c, p, "an array of %d items is too short (at least %.0f)", n, k->minItems->valuedouble);
    if (k->maxItems && n > k->maxItems->valuedouble)
        return fail(c, p, "an array of %d items is too long (at most %.0f)", n, k->maxItems->valuedouble);
    if (!k->items) return 0;
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, x) {
        Path q = {p, NULL, i++};
        if (check(c, k->items, e, &q)) return 1;
    }
    return 0;
}

static int check_number(Ctx *c, const Kw *k, const cJSON *x, const Path *p) {
    const double v = x->valuedouble;
    const char *what = NULL;
    const cJSON *b = NULL;
    if (k->minimum && !(v >= k->minimum->valuedouble)) b = k->minimum, what = "is less than the minimum of";
    else if (k->maximum && !(v <= k->maximum->valuedouble)) b = k->maximum, what = "is greater than the maximum of";
    else if (k->xminimum && !(v > k->xminimum->valuedouble)) b = k->xminimum, what = "is not greater than";
    else if (k->xmaximum && !(v < k->xmaximum->valuedouble)) b = k->xmaximum, what = "is not less than";
    if (!b) return 0;
    char t[128];
    show(x, t, sizeof t);
    return fail(c, p, "%s %s %.17g", t, what, b->valuedouble);
}

static int check_string(Ctx *c, const Kw *k, const cJSON *x, const Path *p) {
    char t[128];
    if (k->minLength || k->maxLength) {
        long n = codepoints(x->valuestring);
        if (k->minLength && n < k->minLength->valuedouble) {
            show(x, t, sizeof t);
            return fail(c, p, "%s is too short (at least %.0f characters)", t, k->minLength->valuedouble);
        }
        if (k->maxLength && n > k->maxLength->valuedouble) {
            show(x, t, sizeof t);
            return fail(c, p, "%s is too long (at most %.0f characters)", t, k->maxLength->valuedouble);
        }
    }
    if (k->pattern) {
        regex_t re;
        if (regcomp(&re, k->pattern->valuestring, REG_EXTENDED | REG_NOSUB)) {
            c->broken = 1;
            return fail(c, p, "the schema's pattern '%s' does not compile", k->pattern->valuestring);
        }
        int no = regexec(&re, x->valuestring, 0, NULL, 0);
        regfree(&re);
        if (no) {
            show(x, t, sizeof t);
            return fail(c, p, "%s does not match '%s'", t, k->pattern->valuestring);
        }
    }
    return 0;
}

// How many of the schemas of the array `list` x is valid against; -1 when
// the schema turned out unusable.
static int count_valid(Ctx *c, const cJSON *list, const cJSON *x, const Path *p) {
    int n = 0;
    const cJSON *a;
    cJSON_ArrayForEach(a, list) {
        if (!check(c, a, x, p)) n++;
        if (c->broken) return -1;
    }
    return n;
}

// The keywords of one schema object, found in one pass over its members.
static void keywords(const cJSON *s, Kw *k) {
    memset(k, 0, sizeof *k);
    const cJSON *m;
    cJSON_ArrayForEach(m, s) {
        const char *n = m->string;
        if (n[0] == '$') {
            if (!strcmp(n, "$ref")) k->ref = m;
            continue;
        }
        switch (n[0]) {
        case 'a':
            if (!strcmp(n, "additionalProperties")) k->extra = m;
            else if (!strcmp(n, "allOf")) k->allOf = m;
            else if (!strcmp(n, "anyOf")) k->anyOf = m;
            break;
        case 'c': if (!strcmp(n, "const")) k->cnst = m; break;
        case 'e':
            if (!strcmp(n, "enum")) k->enm = m;
            else if (!strcmp(n, "else")) k->els = m;
            else if (!strcmp(n, "exclusiveMinimum")) k->xminimum = m;
            else if (!strcmp(n, "exclusiveMaximum")) k->xmaximum = m;
            break;
        case 'i':
            if (!strcmp(n, "items")) k->items = m;
            else if (!strcmp(n, "if")) k->iff = m;
            break;
        case 'm':
            if (!strcmp(n, "minimum")) k->minimum = m;
            else if (!strcmp(n, "maximum")) k->maximum = m;
            else if (!strcmp(n, "minItems")) k->minItems = m;
            else if (!strcmp(n, "maxItems")) k->maxItems = m;
            else if (!strcmp(n, "minLength")) k->minLength = m;
            else if (!strcmp(n, "maxLength")) k->maxLength = m;
            break;
        case 'n': if (!strcmp(n, "not")) k->nt = m; break;
        case 'o': if (!strcmp(n, "oneOf")) k->oneOf = m; break;
        case 'p':
            if (!strcmp(n, "properties")) k->props = m;
            else if (!strcmp(n, "pattern")) k->pattern = m;
            break;
        case 'r': if (!strcmp(n, "required")) k->required = m; break;
        case 't':
            if (!strcmp(n, "type")) k->type = m;
            else if (!strcmp(n, "then")) k->then = m;
            break;
        default: break;
        }
    }
}

static int check(Ctx *c, const cJSON *s, const cJSON *x, const Path *p) {
    if (c->broken) return 1;
    if (cJSON_IsTrue(s)) return 0;
    if (cJSON_IsFalse(s)) return fail(c, p, "no value is allowed here");
    Kw k;
    keywords(s, &k);
    char v[128];
    if (k.ref) {
        const cJSON *t = resolve(c->root, k.ref->valuestring);
        if (!t || c->depth > 64) {
            c->broken = 1;
            return fail(c, p, "the schema's reference %s does not resolve", k.ref->valuestring);
        }
        c->depth++;
        int bad = check(c, t, x, p);
        c->depth--;
        if (bad) return 1;
    }
    if (k.type && check_type(c, k.type, x, p)) return 1;
    if (k.cnst && !json_equal(k.cnst, x)) {
        char want[128];
        show(x, v, sizeof v);
        show(k.cnst, want, sizeof want);
        return fail(c, p, "%s is not %s", v, want);
    }
    if (k.enm) {
        int found = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, k.enm) found |= json_equal(e, x);
        if (!found) {
            char list[256];
            show(x, v, sizeof v);
            show(k.enm, list, sizeof list);
            return fail(c, p, "%s is not one of %s", v, list);
        }
    }
    if (cJSON_IsObject(x) && check_object(c, &k, x, p)) return 1;
    if (cJSON_IsArray(x) && check_array(c, &k, x, p)) return 1;
    if (cJSON_IsNumber(x) && check_number(c, &k, x, p)) return 1;
    if (cJSON_IsString(x) && check_string(c, &k, x, p)) return 1;
    if (k.allOf) {
        const cJSON *a;
        cJSON_ArrayForEach(a, k.allOf) if (check(c, a, x, p)) return 1;
    }
    if (k.anyOf) {
        int n = count_valid(c, k.anyOf, x, p);
        if (n < 0) return 1;
        if (n == 0) {
            show(x, v, sizeof v);
            return fail(c, p, "%s is not valid under any of the given schemas (anyOf)", v);
        }
    }
    if (k.oneOf) {
        int n = count_valid(c, k.oneOf, x, p);
        if (n < 0) return 1;
        if (n != 1) {
            show(x, v, sizeof v);
            return fail(c, p, "%s is valid under %s of the given schemas (oneOf: exactly one)", v,
                        n ? "more than one" : "none");
        }
    }
    if (k.nt) {
        int bad = check(c, k.nt, x, p);
        if (c->broken) return 1;
        if (!bad) {
            char ns[160];
            show(x, v, sizeof v);
            show(k.nt, ns, sizeof ns);
            return fail(c, p, "%s should not be valid under %s", v, ns);
        }
    }
    if (k.iff) {
        int bad = check(c, k.iff, x, p);
        if (c->broken) return 1;
        const cJSON *branch = bad ? k.els : k.then;
        if (branch && check(c, branch, x, p)) return 1;
    }
    return 0;
}

int json_schema_validate(const cJSON *schema, const cJSON *doc, char *err, size_t errlen) {
    if (json_schema_supported(schema, err, errlen)) return -1;
    Ctx c = {.root = schema, .err = err, .errlen = errlen};
    Path top = {NULL, NULL, -1};
    int bad = check(&c, schema, doc, &top);
    if (c.broken) return -1;
    if (!bad && errlen) err[0] = '\0';
    return bad ? 1 : 0;
}
