/* json.c — see json.h. */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* -- reading ------------------------------------------------------------------------------------ */

static char *skip_space(char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* Four hex digits, or -1 (it stops at the first other character, so never reads past a NUL). */
static long hex4(const char *p) {
    long value = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (digit < 0) return -1;
        value = value * 16 + digit;
    }
    return value;
}

static char *put_utf8(char *w, long c) {
    if (c < 0x80) {
        *w++ = (char)c;
    } else if (c < 0x800) {
        *w++ = (char)(0xC0 | c >> 6);
        *w++ = (char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        *w++ = (char)(0xE0 | c >> 12);
        *w++ = (char)(0x80 | (c >> 6 & 0x3F));
        *w++ = (char)(0x80 | (c & 0x3F));
    } else {
        *w++ = (char)(0xF0 | c >> 18);
        *w++ = (char)(0x80 | (c >> 12 & 0x3F));
        *w++ = (char)(0x80 | (c >> 6 & 0x3F));
        *w++ = (char)(0x80 | (c & 0x3F));
    }
    return w;
}

/* The JSON string at *p, unescaped in place from its opening quote on (an escape is never shorter than
** what it stands for, so the writing stays behind the reading); *p moves past its closing quote. NULL if
** it is not a string. */
static const char *read_string(char **p) {
    char *r = *p, *w = *p;
    if (*r++ != '"') return NULL;
    for (;;) {
        unsigned char c = (unsigned char)*r++;
        if (c == '"') break;
        if (c < 0x20) return NULL; /* the end of the text, or a control character JSON must escape */
        if (c != '\\') {
            *w++ = (char)c;
            continue;
        }
        long code;
        switch (*r++) {
        case '"': code = '"'; break;
        case '\\': code = '\\'; break;
        case '/': code = '/'; break;
        case 'b': code = '\b'; break;
        case 'f': code = '\f'; break;
        case 'n': code = '\n'; break;
        case 'r': code = '\r'; break;
        case 't': code = '\t'; break;
        case 'u':
            code = hex4(r);
            if (code <= 0 || (code >= 0xDC00 && code <= 0xDFFF)) return NULL; /* NUL, or half a pair */
            r += 4;
            if (code >= 0xD800 && code <= 0xDBFF) { /* a character beyond U+FFFF, as a surrogate pair */
                long low = r[0] == '\\' && r[1] == 'u' ? hex4(r + 2) : -1;
                if (low < 0xDC00 || low > 0xDFFF) return NULL;
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                r += 6;
            }
            break;
        default: return NULL;
        }
        w = put_utf8(w, code);
    }
    const char *start = *p;
    *w = '\0';
    *p = r;
    return start;
}

/* Reads the value of member `key` at *p (moving *p past it); false if it is not what `key` takes. */
typedef bool (*member_reader)(void *context, const char *key, char **p);

/* The object at *p, each member's value read by `read_member`; *p moves past it. */
static bool read_object(char **p, member_reader read_member, void *context) {
    char *r = skip_space(*p);
    if (*r++ != '{') return false;
    r = skip_space(r);
    if (*r != '}') {
        for (;;) {
            const char *key = read_string(&r);
            if (!key) return false;
            r = skip_space(r);
            if (*r++ != ':') return false;
            r = skip_space(r);
            if (!read_member(context, key, &r)) return false;
            r = skip_space(r);
            if (*r == '}') break;
            if (*r++ != ',') return false;
            r = skip_space(r);
        }
    }
    *p = r + 1;
    return true;
}

typedef struct {
    const char *name;
    bool has_args;
    void (*on_argument)(void *context, const char *key, const char *value);
    void *context;
} action_reader;

static bool read_argument(void *context, const char *key, char **p) {
    action_reader *action = context;
    const char *value = read_string(p);
    if (value) action->on_argument(action->context, key, value);
    return value != NULL;
}

static bool read_action_member(void *context, const char *key, char **p) {
    action_reader *action = context;
    if (!strcmp(key, "name") && !action->name) return (action->name = read_string(p)) != NULL;
    if (!strcmp(key, "args") && !action->has_args) return action->has_args = read_object(p, read_argument, action);
    return false; /* another key, or one of these twice */
}

bool json_read_action(char *text, const char **r_name,
                      void (*on_argument)(void *context, const char *key, const char *value), void *context) {
    action_reader action = {NULL, false, on_argument, context};
    char *p = text;
    if (!read_object(&p, read_action_member, &action) || *skip_space(p) || !action.name || !action.has_args)
        return false;
    *r_name = action.name;
    return true;
}

/* -- writing ------------------------------------------------------------------------------------ */

static void append(json_text *json, const char *bytes, size_t length) {
    if (json->failed) return;
    if (json->length + length + 1 > json->capacity) {
        size_t capacity = 2 * (json->length + length + 1);
        char *bigger = realloc(json->text, capacity);
        if (!bigger) {
            json->failed = true;
            return;
        }
        json->text = bigger;
        json->capacity = capacity;
    }
    memcpy(json->text + json->length, bytes, length);
    json->length += length;
    json->text[json->length] = '\0';
}

void json_add(json_text *json, const char *raw) { append(json, raw, strlen(raw)); }

void json_add_string(json_text *json, const char *utf8) {
    append(json, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)utf8; *c; c++) {
        char escaped[8];
        if (*c == '"' || *c == '\\') {
            snprintf(escaped, sizeof escaped, "\\%c", *c);
        } else if (*c < 0x20) {
            snprintf(escaped, sizeof escaped, "\\u%04x", *c);
        } else {
            append(json, (const char *)c, 1); /* UTF-8 passes as it is */
            continue;
        }
        json_add(json, escaped);
    }
    append(json, "\"", 1);
}

char *json_finish(json_text *json) {
    if (!json->failed) return json->text;
    free(json->text);
    return NULL;
}
