/*
** binding.h — a class is declared once, as tables of methods, properties and signals; this module
** registers it with the engine and turns the engine's two calling conventions (Variants, or pointers
** to raw values) into calls of plain C functions that take and return `value`s.
**
** Argument types are checked here. A wrong one (a null where a String is expected, a NaN budget) goes
** to the class's `bad_call` (which prints a Godot error and, for an NPC, emits its `error` signal) and
** the method returns its zero value; the game goes on.
*/
#ifndef LMPC_BINDING_H
#define LMPC_BINDING_H

#include <stdbool.h>
#include <stddef.h>

#include "godot.h"

typedef enum {
    KIND_VOID,
    KIND_BOOL,
    KIND_INT,
    KIND_FLOAT,
    KIND_STRING,
    KIND_ANY,        /* any Variant, received as its text (Godot's str(); null is "null") */
    KIND_STRINGS,    /* an Array (or PackedStringArray) of Strings, received as a JSON array of them */
    KIND_DICTIONARY, /* signal arguments only: a Dictionary the emitter builds */
} value_kind;

/* One argument or result. Argument strings belong to the binding layer for the length of the call;
** a result string is borrowed from the callee and copied before the call returns. */
typedef struct {
    bool b;
    int64_t i;
    double f;
    const char *s;
} value;

typedef struct class_desc class_desc;

/* What every instance struct starts with. */
typedef struct {
    gdx_object owner; /* the engine object (a Node) this instance extends; NULL once it is freed */
    const class_desc *cls;
    int depth;        /* calls of ours under way on this instance (a signal handler may free it) */
    bool freed;       /* the engine freed it during such a call: the memory goes when the call returns */
} instance;

#define MAX_ARGS 3

typedef struct {
    const char *name;
    value_kind result;
    int argc; /* at most MAX_ARGS */
    value_kind args[MAX_ARGS];
    const char *arg_names[MAX_ARGS];
    void (*fn)(void *self, const value *args, value *result);
} method_desc;

/* A property is a field of the instance struct with a generated set_<name>/get_<name> pair. Strings
** are malloc'd char * fields (NULL reads as ""), numbers are double or int64_t fields. */
typedef struct {
    const char *name;
    value_kind kind;
    size_t offset;
    double min, max; /* numbers outside [min, max] (and NaN) are refused */
    uint32_t hint;
    const char *hint_string;
    void (*changed)(void *self); /* optional: called after a new value is stored */
} property_desc;

typedef struct {
    const char *name;
    int argc; /* at most 2 */
    value_kind args[2];
    const char *arg_names[2];
} signal_desc;

struct class_desc {
    const char *name;
    const char *parent;
    size_t instance_size;
    const method_desc *methods;
    int method_count;
    const property_desc *properties;
    int property_count;
    const signal_desc *signals;
    int signal_count;
    void (*init)(void *self);                       /* defaults, on a zeroed instance */
    void (*destroy)(void *self);                    /* release what it holds; the fields must stay usable */
    void (*notify)(void *self, int what);           /* Godot notifications: ready, process, ... */
    void (*bad_call)(void *self, const char *message);
};

/* Register the classes (parents first) / unregister them (in reverse), with the library handle the
** engine gave the entry symbol. */
bool classes_register(gdx_library library, const class_desc *const *classes, int count);
void classes_unregister(void);

#endif /* LMPC_BINDING_H */
