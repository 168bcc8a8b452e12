/*
** json.h — the two small JSON texts the addon exchanges with LMPC: an action's object, read from an
** LMPC_EVENT_ACTION, and an array of strings, written for lmpc_set_action_values. Nothing more general:
** anything but the expected shape is refused.
*/
#ifndef LMPC_JSON_H
#define LMPC_JSON_H

#include <stdbool.h>
#include <stddef.h>

/* Read {"name": "give_item", "args": {"item": "father_letter"}} (the keys in any order, both required,
** every value a string, escapes decoded) in place: its strings are unescaped where they lie in `text`.
** `on_argument` hears each argument in order, as it is read; *r_name is the action's name. False if the
** text is anything else (a NUL escaped into a string too); arguments heard before the fault are void. */
bool json_read_action(char *text, const char **r_name,
                      void (*on_argument)(void *context, const char *key, const char *value), void *context);

/* A JSON text built piece by piece in a malloc'd buffer. Start from {0}. */
typedef struct {
    char *text;
    size_t length, capacity;
    bool failed; /* out of memory: further pieces are dropped */
} json_text;

void json_add(json_text *json, const char *raw);          /* as it is: punctuation */
void json_add_string(json_text *json, const char *utf8); /* quoted and escaped */
/* The text (the caller frees it), or NULL if memory ran out or nothing was added. */
char *json_finish(json_text *json);

#endif /* LMPC_JSON_H */
