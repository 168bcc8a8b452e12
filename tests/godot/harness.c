/*
** harness.c — a stand-in for Godot 4 that loads the LMPC GDExtension the way the engine does and
** exercises it: no Godot 4 binary can be installed on these machines.
**
** It dlopens the built extension (RTLD_NOW | RTLD_DEEPBIND, like Godot on Linux), calls its entry
** symbol with a get_proc_address that serves recording implementations of every interface function the
** extension asks for, then plays the engine's part: registers what the extension declares (checking
** classes, methods, properties and signals), instantiates nodes, sends notifications (enter tree, ready,
** process every frame), calls methods through both calling conventions (Variants and raw pointers),
** and records emitted signals and printed errors. Strings, StringNames and Variants are counted, so a
** leak or a double free by the extension shows as a failure.
**
** Usage: harness EXTENSION.so SCENARIO [BUNDLE]
**   registration   classes, methods, properties, signals, defaults, bad values, editor mode
**   nolib          liblmpc.so missing: every use reports an error, nothing crashes; a second runtime
**   nohome BUNDLE  a python_home that is not a Python installation
**   bad BUNDLE     bad input with a working library (BUNDLE: the tiny test bundle), handlers that free
**                  nodes while signals are emitted
**   talk BUNDLE    a conversation with a real NPC: streaming, facts, save and load, cancel
**   typed BUNDLE   an NPC whose sheet declares emotions and an action: emotion_changed ends every reply,
**                  and the game's action values reach the runtime
**   actions        with tests/godot/fake_liblmpc.c as liblmpc.so: scripted actions and emotions reach
**                  their signals exactly, and the values the game gives reach lmpc_set_action_values
** $HARNESS_GODOT=4.7 plays a Godot 4.7 built with deprecated=no (only the newest names of renamed
** interface functions); by default it plays Godot 4.2 (only their 4.2 names).
** res:// maps to $HARNESS_RES_DIR (default: the working directory), user:// to $HARNESS_USER_DIR.
** Exit status 0 when every check passed; each failure is printed as "FAIL line N: ...".
*/
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "gdextension.h"

/* ---- checks ------------------------------------------------------------------------------------ */

static int checks, failures;

#define CHECK(condition) check((condition), __LINE__, #condition)
static bool check(bool ok, int line, const char *what) {
    checks++;
    if (!ok) {
        failures++;
        printf("FAIL line %d: %s\n", line, what);
        fflush(stdout);
    }
    return ok;
}

/* ---- fake values: Strings, StringNames and Variants -------------------------------------------- */

/* A String or StringName slot holds a malloc'd UTF-8 copy; `live_texts` counts those not yet freed. */
static long live_texts;

static char *text_new(const char *utf8, size_t length) {
    char *text = malloc(length + 1);
    memcpy(text, utf8, length);
    text[length] = '\0';
    live_texts++;
    return text;
}

static void text_free(char *text) {
    if (!text) return;
    live_texts--;
    free(text);
}

#define POISON 0xdead /* the type of a destroyed Variant */

typedef struct fake_container fake_container;

typedef struct {
    uint32_t type;
    union {
        bool b;
        int64_t i;
        double f;
        char *text;                /* STRING, STRING_NAME */
        void *object;              /* OBJECT */
        fake_container *container; /* DICTIONARY, ARRAY, PACKED_STRING_ARRAY */
    };
} fake_variant;
_Static_assert(sizeof(fake_variant) <= 24, "a Variant is 24 bytes in Godot");

/* The storage of an Array or a Dictionary, shared by every Variant that holds it: like Godot's, copying
** such a Variant adds a reference, and the last one destroyed frees the elements. `live_containers`
** counts those not yet freed. */
#define CONTAINER_SIZE 32
struct fake_container {
    int references;
    int count;
    fake_variant keys[CONTAINER_SIZE]; /* dictionaries only (NIL in arrays) */
    fake_variant values[CONTAINER_SIZE];
};
static long live_containers;

static bool is_container(uint32_t type) {
    return type == GDX_TYPE_DICTIONARY || type == GDX_TYPE_ARRAY || type == GDX_TYPE_PACKED_STRING_ARRAY;
}

static const char *text_of(const void *slot) { return *(char *const *)slot; }

static fake_variant v_nil(void) { return (fake_variant){.type = GDX_TYPE_NIL}; }
static fake_variant v_bool(bool b) { return (fake_variant){.type = GDX_TYPE_BOOL, .b = b}; }
static fake_variant v_int(int64_t i) { return (fake_variant){.type = GDX_TYPE_INT, .i = i}; }
static fake_variant v_float(double f) { return (fake_variant){.type = GDX_TYPE_FLOAT, .f = f}; }
static fake_variant v_string(const char *s) {
    return (fake_variant){.type = GDX_TYPE_STRING, .text = text_new(s, strlen(s))};
}
/* An empty Array, PackedStringArray or Dictionary. */
static fake_variant v_container(uint32_t type) {
    fake_container *c = calloc(1, sizeof *c);
    c->references = 1;
    live_containers++;
    return (fake_variant){.type = type, .container = c};
}
/* An Array or PackedStringArray of these Strings. */
static fake_variant v_strings(uint32_t type, int count, const char *const *strings) {
    fake_variant array = v_container(type);
    for (int i = 0; i < count; i++) array.container->values[i] = v_string(strings[i]);
    array.container->count = count;
    return array;
}

/* A copy, as Variant's copy constructor makes: a String's text is copied, a container shared. */
static fake_variant v_copy(const fake_variant *v) {
    fake_variant copy = *v;
    if (v->type == GDX_TYPE_STRING || v->type == GDX_TYPE_STRING_NAME) copy.text = text_new(v->text, strlen(v->text));
    if (is_container(v->type)) v->container->references++;
    return copy;
}

static int double_destroys;

static void fake_variant_destroy(gd_variant *variant) {
    fake_variant *v = (fake_variant *)variant;
    if (v->type == POISON) double_destroys++;
    if (v->type == GDX_TYPE_STRING || v->type == GDX_TYPE_STRING_NAME) text_free(v->text);
    if (is_container(v->type) && --v->container->references == 0) {
        for (int i = 0; i < v->container->count; i++) {
            fake_variant_destroy((gd_variant *)&v->container->keys[i]);
            fake_variant_destroy((gd_variant *)&v->container->values[i]);
        }
        free(v->container);
        live_containers--;
    }
    v->type = POISON;
}

static void stringify(const fake_variant *v, char *out, size_t size);

/* A value inside an Array or a Dictionary, as Godot prints it: a String quoted, its quotes and
** backslashes escaped. */
static void stringify_element(const fake_variant *v, char *out, size_t size) {
    if (v->type != GDX_TYPE_STRING) {
        stringify(v, out, size);
        return;
    }
    size_t n = 0;
    out[n++] = '"';
    for (const char *c = v->text; *c && n + 3 < size; c++) {
        if (*c == '"' || *c == '\\') out[n++] = '\\';
        out[n++] = *c;
    }
    out[n++] = '"';
    out[n] = '\0';
}

/* Godot's str(): an Array as ["a", "b"], a Dictionary as { "key": "value" }. */
static void stringify(const fake_variant *v, char *out, size_t size) {
    switch (v->type) {
    case GDX_TYPE_NIL: snprintf(out, size, "<null>"); break;
    case GDX_TYPE_BOOL: snprintf(out, size, "%s", v->b ? "true" : "false"); break;
    case GDX_TYPE_INT: snprintf(out, size, "%lld", (long long)v->i); break;
    case GDX_TYPE_FLOAT: snprintf(out, size, "%.14g", v->f); break;
    case GDX_TYPE_STRING:
    case GDX_TYPE_STRING_NAME: snprintf(out, size, "%s", v->text); break;
    case GDX_TYPE_DICTIONARY:
    case GDX_TYPE_ARRAY:
    case GDX_TYPE_PACKED_STRING_ARRAY: {
        bool dictionary = v->type == GDX_TYPE_DICTIONARY;
        size_t n = (size_t)snprintf(out, size, "%s", dictionary ? "{ " : "[");
        for (int i = 0; i < v->container->count && n < size; i++) {
            char key[512], value[2048];
            stringify_element(&v->container->keys[i], key, sizeof key);
            stringify_element(&v->container->values[i], value, sizeof value);
            n += (size_t)snprintf(out + n, size - n, "%s%s%s%s", i ? ", " : "", dictionary ? key : "",
                                  dictionary ? ": " : "", value);
        }
        if (n < size) snprintf(out + n, size - n, "%s", dictionary ? " }" : "]");
        break;
    }
    default: snprintf(out, size, "<Object>"); break;
    }
}

static void fake_variant_stringify(const gd_variant *variant, gd_string *r_string) {
    char text[8192];
    stringify((const fake_variant *)variant, text, sizeof text);
    *(char **)r_string = text_new(text, strlen(text));
}

static gdx_variant_type fake_variant_get_type(const gd_variant *variant) {
    return (gdx_variant_type)((const fake_variant *)variant)->type;
}

static void from_bool(gd_variant *r, void *p) { *(fake_variant *)r = v_bool(*(gdx_bool *)p); }
static void from_int(gd_variant *r, void *p) { *(fake_variant *)r = v_int(*(int64_t *)p); }
static void from_float(gd_variant *r, void *p) { *(fake_variant *)r = v_float(*(double *)p); }
static void from_string(gd_variant *r, void *p) { *(fake_variant *)r = v_string(text_of(p)); }
static void from_string_name(gd_variant *r, void *p) {
    *(fake_variant *)r = v_string(text_of(p));
    ((fake_variant *)r)->type = GDX_TYPE_STRING_NAME;
}
static void from_object(gd_variant *r, void *p) {
    *(fake_variant *)r = (fake_variant){.type = GDX_TYPE_OBJECT, .object = *(void **)p};
}
/* An Array's own storage is one pointer to its shared data, as in Godot. */
static void from_array(gd_variant *r, void *p) {
    *(fake_variant *)r = v_copy(&(fake_variant){.type = GDX_TYPE_ARRAY, .container = *(fake_container **)p});
}

static gdx_variant_from_type fake_get_variant_from_type_constructor(gdx_variant_type type) {
    switch (type) {
    case GDX_TYPE_BOOL: return from_bool;
    case GDX_TYPE_INT: return from_int;
    case GDX_TYPE_FLOAT: return from_float;
    case GDX_TYPE_STRING: return from_string;
    case GDX_TYPE_STRING_NAME: return from_string_name;
    case GDX_TYPE_OBJECT: return from_object;
    case GDX_TYPE_ARRAY: return from_array;
    default: return NULL;
    }
}

/* Like Godot, these convert (an int Variant read as a float is a float). */
static void to_bool(void *r, gd_variant *variant) {
    const fake_variant *v = (const fake_variant *)variant;
    *(gdx_bool *)r = v->type == GDX_TYPE_BOOL ? v->b : v->type == GDX_TYPE_INT ? v->i != 0 : 0;
}
static void to_int(void *r, gd_variant *variant) {
    const fake_variant *v = (const fake_variant *)variant;
    *(int64_t *)r = v->type == GDX_TYPE_INT ? v->i : v->type == GDX_TYPE_FLOAT ? (int64_t)v->f : 0;
}
static void to_float(void *r, gd_variant *variant) {
    const fake_variant *v = (const fake_variant *)variant;
    *(double *)r = v->type == GDX_TYPE_FLOAT ? v->f : v->type == GDX_TYPE_INT ? (double)v->i : 0.0;
}
static void to_string(void *r, gd_variant *variant) { fake_variant_stringify(variant, r); }

static gdx_type_from_variant fake_get_variant_to_type_constructor(gdx_variant_type type) {
    switch (type) {
    case GDX_TYPE_BOOL: return to_bool;
    case GDX_TYPE_INT: return to_int;
    case GDX_TYPE_FLOAT: return to_float;
    case GDX_TYPE_STRING: return to_string;
    default: return NULL;
    }
}

static void destroy_text_slot(void *slot) { text_free(*(char **)slot); }

static gdx_destructor fake_variant_get_ptr_destructor(gdx_variant_type type) {
    return type == GDX_TYPE_STRING || type == GDX_TYPE_STRING_NAME ? destroy_text_slot : NULL;
}

/* Only what the addon builds: an empty Dictionary or Array. */
static void fake_variant_construct(gdx_variant_type type, gd_variant *r_variant, const gd_variant *const *args,
                                   int32_t count, gdx_call_error *r_error) {
    (void)args;
    *r_error = (gdx_call_error){GDX_CALL_OK, 0, 0};
    if ((type == GDX_TYPE_DICTIONARY || type == GDX_TYPE_ARRAY) && count == 0) {
        *(fake_variant *)r_variant = v_container(type);
        return;
    }
    printf("FAIL: unexpected construction of a Variant of type %d from %d arguments\n", type, count);
    failures++;
    *(fake_variant *)r_variant = v_nil();
    r_error->error = GDX_CALL_ERROR_INVALID_METHOD;
}

static bool same_key(const fake_variant *a, const fake_variant *b) {
    if (a->type != b->type) return false;
    switch (a->type) {
    case GDX_TYPE_STRING:
    case GDX_TYPE_STRING_NAME: return !strcmp(a->text, b->text);
    case GDX_TYPE_INT: return a->i == b->i;
    default: return false;
    }
}

/* dictionary[key] = value (Variant::set_keyed): copies of both; false for a Variant that is no Dictionary. */
static void fake_variant_set_keyed(gd_variant *self, const gd_variant *key, const gd_variant *value,
                                   gdx_bool *r_valid) {
    fake_variant *dictionary = (fake_variant *)self;
    const fake_variant *k = (const fake_variant *)key, *v = (const fake_variant *)value;
    *r_valid = dictionary->type == GDX_TYPE_DICTIONARY;
    if (!*r_valid) return;
    fake_container *c = dictionary->container;
    for (int i = 0; i < c->count; i++) {
        if (same_key(&c->keys[i], k)) {
            fake_variant_destroy((gd_variant *)&c->values[i]);
            c->values[i] = v_copy(v);
            return;
        }
    }
    if (!CHECK(c->count < CONTAINER_SIZE)) return;
    c->keys[c->count] = v_copy(k);
    c->values[c->count++] = v_copy(v);
}

/* array[index] (Variant::get_indexed): a negative index counts from the end; r_value is always set (null
** when the index is out of bounds or the Variant has none). */
static void fake_variant_get_indexed(const gd_variant *self, gdx_int index, gd_variant *r_value, gdx_bool *r_valid,
                                     gdx_bool *r_out_of_bounds) {
    const fake_variant *array = (const fake_variant *)self;
    bool indexed = array->type == GDX_TYPE_ARRAY || array->type == GDX_TYPE_PACKED_STRING_ARRAY;
    int count = indexed ? array->container->count : 0;
    if (index < 0) index += count;
    *r_out_of_bounds = indexed && (index < 0 || index >= count);
    *r_valid = indexed && !*r_out_of_bounds;
    *(fake_variant *)r_value = *r_valid ? v_copy(&array->container->values[index]) : v_nil();
}

static void fake_string_new_with_utf8_chars_and_len(gd_string *r, const char *utf8, gdx_int bytes) {
    *(char **)r = text_new(utf8, (size_t)bytes);
}

static gdx_int fake_string_to_utf8_chars(const gd_string *s, char *r_utf8, gdx_int capacity) {
    gdx_int length = (gdx_int)strlen(text_of(s));
    if (r_utf8) memcpy(r_utf8, text_of(s), (size_t)(length < capacity ? length : capacity));
    return length;
}

static void fake_string_name_new_with_utf8_chars(gd_string_name *r, const char *utf8) {
    *(char **)r = text_new(utf8, strlen(utf8));
}

/* ---- the engine's records: classes, objects, signals, errors ----------------------------------- */

typedef struct {
    char name[64];
    gdx_variant_type type;
    uint32_t hint, usage;
    char hint_string[128];
} fake_info;

typedef struct {
    char name[64];
    gdx_method_call call;
    gdx_method_ptrcall ptrcall;
    void *userdata;
    bool has_return;
    fake_info result;
    int argc;
    fake_info args[4];
} fake_method;

typedef struct {
    fake_info info;
    char setter[64], getter[64];
} fake_property;

typedef struct {
    char name[64];
    int argc;
    fake_info args[2];
} fake_signal;

/* What a class registration gave, whichever layout it came in. */
typedef struct {
    bool is_virtual, is_abstract, is_exposed;
    void (*notification_func)(void *instance, int32_t what, gdx_bool reversed);
    gdx_object (*create_instance_func)(void *class_userdata);                       /* 4.2 */
    gdx_object (*create_instance4_func)(void *class_userdata, gdx_bool postinitialize); /* 4.4+ */
    void (*free_instance_func)(void *class_userdata, void *instance);
    void *class_userdata;
} fake_class_info;

typedef struct {
    char name[64], parent[64];
    fake_class_info info;
    fake_method methods[32];
    int method_count;
    fake_property properties[16];
    int property_count;
    fake_signal signals[8];
    int signal_count;
    bool unregistered;
} fake_class;

static fake_class classes[8];
static int class_count;

typedef struct fake_object {
    const char *engine_class; /* "Node", or a singleton's class */
    fake_class *extension;
    void *instance;
    bool processing;
    int postinitialized; /* NOTIFICATION_POSTINITIALIZE deliveries */
    int locks;           /* calls and signal emissions under way on it: the engine refuses to free it then */
    bool in_tree, queued;
    const char *label;   /* for the output */
} fake_object;

static fake_object engine_singleton = {.engine_class = "Engine", .label = "Engine"};
static fake_object settings_singleton = {.engine_class = "ProjectSettings", .label = "ProjectSettings"};
static bool editor_hint;
static long live_objects;

typedef struct {
    fake_object *object;
    char signal[64];
    char *text;   /* the first argument's text (str()), or NULL for none */
    char *second; /* the second argument's, or NULL */
    int frame;
} emission;

static emission emissions[20000];
static int emission_count;
static int frame_number;

static char *errors[1000];
static int error_count;
static int warning_count;

static const char gdx_library_token[] = "the library handle Godot passes";

static fake_class *find_class(const char *name) {
    for (int i = 0; i < class_count; i++)
        if (!strcmp(classes[i].name, name)) return &classes[i];
    return NULL;
}

static fake_method *find_method(fake_class *cls, const char *name) {
    for (int i = 0; cls && i < cls->method_count; i++)
        if (!strcmp(cls->methods[i].name, name)) return &cls->methods[i];
    return NULL;
}

static fake_property *find_property(fake_class *cls, const char *name) {
    for (int i = 0; cls && i < cls->property_count; i++)
        if (!strcmp(cls->properties[i].info.name, name)) return &cls->properties[i];
    return NULL;
}

static fake_signal *find_signal(fake_class *cls, const char *name) {
    for (int i = 0; cls && i < cls->signal_count; i++)
        if (!strcmp(cls->signals[i].name, name)) return &cls->signals[i];
    return NULL;
}

/* A PropertyInfo the engine copies: every pointer in it must be a valid value. */
static fake_info copy_info(const gdx_property_info *p) {
    fake_info info = {.type = p->type, .hint = p->hint, .usage = p->usage};
    CHECK(p->name && p->class_name && p->hint_string);
    snprintf(info.name, sizeof info.name, "%s", text_of(p->name));
    snprintf(info.hint_string, sizeof info.hint_string, "%s", text_of(p->hint_string));
    CHECK(strlen(text_of(p->class_name)) == 0); /* no Object-typed values here */
    return info;
}

/* ---- interface functions: ClassDB ---------------------------------------------------------------- */

static void register_class(gdx_library library, const gd_string_name *name, const gd_string_name *parent,
                           fake_class_info info) {
    CHECK(library == (gdx_library)gdx_library_token);
    CHECK(class_count < 8 && !find_class(text_of(name)));
    CHECK(!strcmp(text_of(parent), "Node") || find_class(text_of(parent)));
    if (class_count >= 8) return;
    fake_class *cls = &classes[class_count++];
    snprintf(cls->name, sizeof cls->name, "%s", text_of(name));
    snprintf(cls->parent, sizeof cls->parent, "%s", text_of(parent));
    cls->info = info;
}

static void fake_classdb_register_extension_class2(gdx_library library, const gd_string_name *name,
                                                   const gd_string_name *parent, const gdx_class_info2 *info) {
    register_class(library, name, parent,
                   (fake_class_info){info->is_virtual, info->is_abstract, info->is_exposed, info->notification_func,
                                     info->create_instance_func, NULL, info->free_instance_func,
                                     info->class_userdata});
}

static void fake_classdb_register_extension_class6(gdx_library library, const gd_string_name *name,
                                                   const gd_string_name *parent, const gdx_class_info4 *info) {
    CHECK(!info->is_runtime && !info->icon_path);
    register_class(library, name, parent,
                   (fake_class_info){info->is_virtual, info->is_abstract, info->is_exposed, info->notification_func,
                                     NULL, info->create_instance_func, info->free_instance_func,
                                     info->class_userdata});
}

static void fake_register_method(gdx_library library, const gd_string_name *class_name, const gdx_method_info *m) {
    fake_class *cls = find_class(text_of(class_name));
    CHECK(library == (gdx_library)gdx_library_token && cls && cls->method_count < 32);
    if (!cls || cls->method_count >= 32) return;
    CHECK(!find_method(cls, text_of(m->name)));
    CHECK(m->call_func && m->ptrcall_func);
    CHECK(m->argument_count <= 4 && m->default_argument_count == 0);
    fake_method *fm = &cls->methods[cls->method_count++];
    snprintf(fm->name, sizeof fm->name, "%s", text_of(m->name));
    fm->call = m->call_func;
    fm->ptrcall = m->ptrcall_func;
    fm->userdata = m->method_userdata;
    fm->has_return = m->has_return_value;
    if (m->has_return_value) fm->result = copy_info(m->return_value_info);
    fm->argc = (int)m->argument_count;
    for (int i = 0; i < fm->argc; i++) fm->args[i] = copy_info(&m->arguments_info[i]);
}

static void fake_register_property(gdx_library library, const gd_string_name *class_name, const gdx_property_info *p,
                                   const gd_string_name *setter, const gd_string_name *getter) {
    fake_class *cls = find_class(text_of(class_name));
    CHECK(library == (gdx_library)gdx_library_token && cls && cls->property_count < 16);
    if (!cls || cls->property_count >= 16) return;
    fake_property *fp = &cls->properties[cls->property_count++];
    fp->info = copy_info(p);
    snprintf(fp->setter, sizeof fp->setter, "%s", text_of(setter));
    snprintf(fp->getter, sizeof fp->getter, "%s", text_of(getter));
    /* As ClassDB::add_property checks: the accessors are registered methods of matching types. */
    fake_method *set = find_method(cls, fp->setter), *get = find_method(cls, fp->getter);
    CHECK(set && set->argc == 1 && !set->has_return && set->args[0].type == fp->info.type);
    CHECK(get && get->argc == 0 && get->has_return && get->result.type == fp->info.type);
}

static void fake_register_signal(gdx_library library, const gd_string_name *class_name, const gd_string_name *name,
                                 const gdx_property_info *args, gdx_int count) {
    fake_class *cls = find_class(text_of(class_name));
    CHECK(library == (gdx_library)gdx_library_token && cls && cls->signal_count < 8 && count <= 2);
    if (!cls || cls->signal_count >= 8 || count > 2) return;
    fake_signal *s = &cls->signals[cls->signal_count++];
    snprintf(s->name, sizeof s->name, "%s", text_of(name));
    s->argc = (int)count;
    for (int i = 0; i < count; i++) s->args[i] = copy_info(&args[i]);
}

static void fake_unregister_class(gdx_library library, const gd_string_name *name) {
    fake_class *cls = find_class(text_of(name));
    CHECK(library == (gdx_library)gdx_library_token && cls && !cls->unregistered);
    if (!cls) return;
    for (int i = 0; i < class_count; i++) /* inheritors first */
        if (!strcmp(classes[i].parent, cls->name)) CHECK(classes[i].unregistered);
    cls->unregistered = true;
}

static fake_object *construct(const gd_string_name *class_name) {
    CHECK(!strcmp(text_of(class_name), "Node"));
    fake_object *object = calloc(1, sizeof *object);
    object->engine_class = "Node";
    live_objects++;
    return object;
}

/* 4.2: the engine sends NOTIFICATION_POSTINITIALIZE itself (before the extension's instance is set). */
static gdx_object fake_classdb_construct_object(const gd_string_name *class_name) {
    fake_object *object = construct(class_name);
    object->postinitialized++;
    return object;
}

/* 4.4+: the extension's create_instance sends it, once its instance is set. */
static gdx_object fake_classdb_construct_object3(const gd_string_name *class_name) { return construct(class_name); }

static void fake_object_set_instance(gdx_object object, const gd_string_name *class_name, void *instance) {
    fake_object *o = object;
    fake_class *cls = find_class(text_of(class_name));
    CHECK(cls && !strcmp(cls->parent, o->engine_class) && !o->extension);
    o->extension = cls;
    o->instance = instance;
}

static gdx_object fake_global_get_singleton(const gd_string_name *name) {
    if (!strcmp(text_of(name), "Engine")) return &engine_singleton;
    if (!strcmp(text_of(name), "ProjectSettings")) return &settings_singleton;
    return NULL;
}

/* ---- interface functions: calls into the engine --------------------------------------------------- */

static void (*on_emit)(fake_object *object, const char *signal); /* a scenario's "signal handler" */

static char *argument_text(const fake_variant *v) {
    if (v->type == GDX_TYPE_STRING) return strdup(v->text);
    char text[8192];
    stringify(v, text, sizeof text);
    return strdup(text);
}

static void record_emission(fake_object *o, const fake_variant *const *args, gdx_int count) {
    CHECK(count >= 1 && args[0]->type == GDX_TYPE_STRING_NAME);
    const char *signal = args[0]->text;
    fake_signal *s = find_signal(o->extension, signal);
    CHECK(s && s->argc == count - 1); /* declared, with this many arguments */
    for (int i = 1; s && i < count && i <= s->argc; i++) CHECK(args[i]->type == s->args[i - 1].type); /* of its types */
    CHECK(emission_count < 20000);
    if (emission_count >= 20000) return;
    emission *e = &emissions[emission_count++];
    e->object = o;
    e->frame = frame_number;
    snprintf(e->signal, sizeof e->signal, "%s", signal);
    e->text = count >= 2 ? argument_text(args[1]) : NULL;
    e->second = count >= 3 ? argument_text(args[2]) : NULL;
    o->locks++; /* as Object::emit_signalp does while the handlers run */
    if (on_emit) on_emit(o, signal);
    o->locks--;
}

static const char *globalize(const char *path, char *out, size_t size) {
    const char *res = getenv("HARNESS_RES_DIR"), *user = getenv("HARNESS_USER_DIR");
    if (!strncmp(path, "res://", 6)) snprintf(out, size, "%s/%s", res ? res : ".", path + 6);
    else if (!strncmp(path, "user://", 7)) snprintf(out, size, "%s/%s", user ? user : "/tmp", path + 7);
    else snprintf(out, size, "%s", path);
    return out;
}

static void fake_variant_call(gd_variant *self, const gd_string_name *method, const gd_variant *const *args,
                              gdx_int count, gd_variant *r_return, gdx_call_error *r_error) {
    const fake_variant *target = (const fake_variant *)self;
    const fake_variant *const *argv = (const fake_variant *const *)args;
    fake_variant *result = (fake_variant *)r_return;
    const char *name = text_of(method);
    *result = v_nil();
    *r_error = (gdx_call_error){GDX_CALL_OK, 0, 0};
    CHECK(target->type == GDX_TYPE_OBJECT && target->object);
    fake_object *o = target->object;
    if (o == &engine_singleton && !strcmp(name, "is_editor_hint") && count == 0) {
        *result = v_bool(editor_hint);
    } else if (o == &settings_singleton && !strcmp(name, "globalize_path") && count == 1) {
        char path[4096];
        CHECK(argv[0]->type == GDX_TYPE_STRING);
        *result = v_string(globalize(argv[0]->text, path, sizeof path));
    } else if (o->extension && !strcmp(name, "set_process") && count == 1 && argv[0]->type == GDX_TYPE_BOOL) {
        o->processing = argv[0]->b;
    } else if (o->extension && !strcmp(name, "notification") && count == 1 && argv[0]->type == GDX_TYPE_INT) {
        CHECK(o->instance != NULL); /* object_set_instance came first */
        if (argv[0]->i == GDX_NOTIFICATION_POSTINITIALIZE) o->postinitialized++;
        o->extension->info.notification_func(o->instance, (int32_t)argv[0]->i, 0);
    } else if (o->extension && !strcmp(name, "emit_signal")) {
        record_emission(o, argv, count);
    } else {
        printf("FAIL: unexpected engine call %s.%s\n", o->engine_class, name);
        failures++;
        r_error->error = GDX_CALL_ERROR_INVALID_METHOD;
    }
}

static void fake_print(const char *kind, const char *description, const char *function, const char *file,
                       int32_t line) {
    printf("%s: %s\n   at: %s (%s:%d)\n", kind, description, function, file, line);
    fflush(stdout);
}

static void fake_print_error(const char *description, const char *function, const char *file, int32_t line,
                             gdx_bool notify) {
    (void)notify;
    fake_print("ERROR", description, function, file, line);
    if (error_count < 1000) errors[error_count++] = strdup(description);
}

static void fake_print_warning(const char *description, const char *function, const char *file, int32_t line,
                               gdx_bool notify) {
    (void)notify;
    fake_print("WARNING", description, function, file, line);
    warning_count++;
}

static void fake_get_godot_version(gdx_godot_version *r) {
    *r = (gdx_godot_version){4, 2, 2, "4.2.2.stable (LMPC harness)"};
}

static void fake_get_godot_version2(gdx_godot_version2 *r) {
    *r = (gdx_godot_version2){4, 7, 0, 0x040700, "stable", "lmpc_harness", "", 0,
                              "4.7.stable.lmpc_harness (deprecated=no)"};
}

static gdx_int fake_string_new_with_utf8_chars_and_len2(gd_string *r, const char *utf8, gdx_int bytes) {
    *(char **)r = text_new(utf8, (size_t)bytes);
    return 0;
}

/* ---- get_proc_address ------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    gdx_function function;
    int requests;
} served;

#define SERVE(name) {#name, (gdx_function)(void *)fake_##name, 0}
#define SERVE_AS(name, function) {#name, (gdx_function)(void *)function, 0}
static served common_interface[] = {
    SERVE(print_error),
    SERVE(print_warning),
    SERVE(variant_destroy),
    SERVE(variant_call),
    SERVE(variant_get_type),
    SERVE(variant_stringify),
    SERVE(variant_construct),
    SERVE(variant_set_keyed),
    SERVE(variant_get_indexed),
    SERVE(get_variant_from_type_constructor),
    SERVE(get_variant_to_type_constructor),
    SERVE(variant_get_ptr_destructor),
    SERVE(string_to_utf8_chars),
    SERVE(string_name_new_with_utf8_chars),
    SERVE(global_get_singleton),
    SERVE_AS(object_set_instance, fake_object_set_instance),
    SERVE_AS(classdb_register_extension_class_method, fake_register_method),
    SERVE_AS(classdb_register_extension_class_property, fake_register_property),
    SERVE_AS(classdb_register_extension_class_signal, fake_register_signal),
    SERVE_AS(classdb_unregister_extension_class, fake_unregister_class),
};

/* Godot 4.2 serves the functions later renamed under their 4.2 names only; a 4.7 build made with
** deprecated=no serves only their newest names. */
static served godot42_interface[] = {
    SERVE(get_godot_version),
    SERVE(string_new_with_utf8_chars_and_len),
    SERVE(classdb_construct_object),
    SERVE(classdb_register_extension_class2),
};
static served godot47_interface[] = {
    SERVE(get_godot_version2),
    SERVE(string_new_with_utf8_chars_and_len2),
    SERVE(classdb_construct_object3),
    SERVE(classdb_register_extension_class6),
};

/* Names of these functions in Godot versions between the two: asking for them is fine (NULL here). */
static const char *const other_names[] = {"classdb_register_extension_class5", "classdb_register_extension_class4",
                                          "classdb_construct_object2"};

static bool godot47; /* HARNESS_GODOT=4.7: play the deprecated=no 4.7 build */
#define COUNT(array) (int)(sizeof array / sizeof array[0])
static int unknown_requests;

static served *find_served(served *table, int count, const char *name) {
    for (int i = 0; i < count; i++)
        if (!strcmp(table[i].name, name)) return &table[i];
    return NULL;
}

static gdx_function fake_get_proc_address(const char *name) {
    served *engine = godot47 ? godot47_interface : godot42_interface;
    served *f = find_served(common_interface, COUNT(common_interface), name);
    if (!f) f = find_served(engine, COUNT(godot42_interface), name);
    if (f) {
        f->requests++;
        return f->function;
    }
    bool known = find_served(godot47 ? godot42_interface : godot47_interface, COUNT(godot42_interface), name);
    for (int i = 0; i < COUNT(other_names); i++) known = known || !strcmp(other_names[i], name);
    if (!known) {
        printf("FAIL: the extension asked for %s, which no Godot 4 interface has\n", name);
        unknown_requests++;
    }
    return NULL;
}

/* ---- playing the engine ----------------------------------------------------------------------- */

static void *extension;
static gdx_initialization init;

static bool load_extension(const char *path) {
    /* Godot opens extensions with RTLD_DEEPBIND on Linux, except in sanitizer builds (which refuse it). */
#if defined(__SANITIZE_ADDRESS__)
    extension = dlopen(path, RTLD_NOW);
#else
    extension = dlopen(path, RTLD_NOW | RTLD_DEEPBIND);
#endif
    if (!CHECK(extension != NULL)) {
        printf("dlopen: %s\n", dlerror());
        return false;
    }
    gdx_bool (*entry)(gdx_get_proc_address, gdx_library, gdx_initialization *);
    *(void **)&entry = dlsym(extension, "lmpc_godot_init");
    if (!CHECK(entry != NULL)) return false;
    if (!CHECK(entry(fake_get_proc_address, (gdx_library)gdx_library_token, &init))) return false;
    CHECK(init.minimum_initialization_level == GDX_INIT_SCENE && init.initialize && init.deinitialize);
    for (int level = GDX_INIT_CORE; level <= GDX_INIT_SCENE; level++) {
        if (level == GDX_INIT_SCENE) CHECK(class_count == 0); /* Node classes register at the scene level */
        init.initialize(init.userdata, (gdx_init_level)level);
    }
    return true;
}

static void unload_extension(void) {
    for (int level = GDX_INIT_SCENE; level >= GDX_INIT_CORE; level--) init.deinitialize(init.userdata, (gdx_init_level)level);
    for (int i = 0; i < class_count; i++) CHECK(classes[i].unregistered);
    dlclose(extension);
}

static fake_object *instantiate(const char *class_name, const char *label) {
    fake_class *cls = find_class(class_name);
    if (!CHECK(cls != NULL)) exit(1);
    /* Godot 4.4+ asks the extension to send NOTIFICATION_POSTINITIALIZE (ClassDB::instantiate does). */
    fake_object *o = cls->info.create_instance4_func ? cls->info.create_instance4_func(cls->info.class_userdata, 1)
                                                     : cls->info.create_instance_func(cls->info.class_userdata);
    CHECK(o && o->extension == cls && o->instance);
    CHECK(o && o->postinitialized == 1); /* exactly once, by the engine (4.2) or the extension (4.4+) */
    o->label = label;
    return o;
}

static void notify(fake_object *o, int what) { o->extension->info.notification_func(o->instance, what, 0); }

static void exit_tree(fake_object *o) {
    o->in_tree = false;
    notify(o, GDX_NOTIFICATION_EXIT_TREE);
}

/* GDScript's free(). Like Godot (Object::callp), it refuses an object that is locked: one emitting a signal
** or running a method call. Otherwise: NOTIFICATION_PREDELETE (reversed: the extension hears it before
** Node, whose own PREDELETE handling removes the node from the tree, so EXIT_TREE comes next), then the
** extension's free_instance. */
static int refused_frees;

static bool destroy(fake_object *o) {
    if (o->locks > 0) {
        fake_print("ERROR", "Object is locked and can't be freed.", "Object::callp", "core/object/object.cpp", 0);
        refused_frees++;
        return false;
    }
    o->extension->info.notification_func(o->instance, GDX_NOTIFICATION_PREDELETE, 1);
    if (o->in_tree) exit_tree(o);
    o->extension->info.free_instance_func(o->extension->info.class_userdata, o->instance);
    free(o);
    live_objects--;
    return true;
}

/* queue_free(): freed at the end of the frame, when nothing is locked. */
static fake_object *free_queue[64];
static int queued_count;

static void queue_free(fake_object *o) {
    if (o->queued || !CHECK(queued_count < 64)) return;
    o->queued = true;
    free_queue[queued_count++] = o;
}

static void flush_free_queue(void) {
    for (int i = 0; i < queued_count; i++) CHECK(destroy(free_queue[i]));
    queued_count = 0;
}

static void enter_tree(fake_object *o) {
    o->in_tree = true;
    notify(o, GDX_NOTIFICATION_ENTER_TREE);
    notify(o, GDX_NOTIFICATION_READY);
}

static double seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + now.tv_nsec / 1e9;
}

/* One frame: _process for every node that asked for it (as SceneTree::process does), then a wait for
** the rest of the frame at 60 frames per second, as vsync would. */
static double process_seconds; /* time spent in the nodes' _process, all frames */
static double longest_process; /* the most one frame spent in it */

static void frame(fake_object *const *nodes, int count) {
    double start = seconds();
    frame_number++;
    for (int i = 0; i < count; i++)
        if (nodes[i] && nodes[i]->processing) notify(nodes[i], GDX_NOTIFICATION_PROCESS);
    flush_free_queue(); /* as SceneTree does after processing */
    process_seconds += seconds() - start;
    if (seconds() - start > longest_process) longest_process = seconds() - start;
    double rest = 1.0 / 60 - (seconds() - start);
    if (rest > 0) nanosleep(&(struct timespec){0, (long)(rest * 1e9)}, NULL);
}

/* A method call with Variants (GDScript's dynamic calls). The result must be destroyed by the caller. */
static fake_variant call_v(fake_object *o, const char *method, int count, fake_variant *args, gdx_call_error *error) {
    fake_method *m = find_method(o->extension, method);
    fake_variant result = v_nil();
    gdx_call_error ignored;
    if (!error) error = &ignored;
    *error = (gdx_call_error){GDX_CALL_OK, 0, 0};
    const gd_variant *argv[4];
    for (int i = 0; i < count; i++) argv[i] = (const gd_variant *)&args[i];
    if (!CHECK(m != NULL)) return result;
    o->locks++; /* Object::callp locks the object for the call */
    m->call(m->userdata, o->instance, argv, count, (gd_variant *)&result, error);
    o->locks--;
    return result;
}

/* The same with the arguments' Variants destroyed, and the result as a bool. */
static bool call_bool(fake_object *o, const char *method, int count, fake_variant *args) {
    fake_variant result = call_v(o, method, count, args, NULL);
    for (int i = 0; i < count; i++) fake_variant_destroy((gd_variant *)&args[i]);
    CHECK(result.type == GDX_TYPE_BOOL);
    return result.type == GDX_TYPE_BOOL && result.b;
}

/* A method call with pointers to raw values (typed GDScript, other extensions). */
static void call_p(fake_object *o, const char *method, const void **args, void *result) {
    fake_method *m = find_method(o->extension, method);
    if (!CHECK(m != NULL)) return;
    o->locks++;
    m->ptrcall(m->userdata, o->instance, args, result);
    o->locks--;
}

static int count_signals(fake_object *o, const char *signal, int since) {
    int n = 0;
    for (int i = since; i < emission_count; i++)
        if (emissions[i].object == o && !strcmp(emissions[i].signal, signal)) n++;
    return n;
}

static const emission *last_signal(fake_object *o, const char *signal) {
    for (int i = emission_count - 1; i >= 0; i--)
        if (emissions[i].object == o && !strcmp(emissions[i].signal, signal)) return &emissions[i];
    return NULL;
}

/* A failure reported both ways: an error print containing `needle`, and the NPC's `error` signal. */
static bool reported(fake_object *npc, int errors_before, int emissions_before, const char *needle) {
    const emission *e = last_signal(npc, "error");
    return error_count > errors_before && strstr(errors[error_count - 1], needle) &&
           count_signals(npc, "error", emissions_before) == 1 && e && strstr(e->text, needle);
}

#define EXPECT_REPORTED(npc, needle, ...)                                                                     \
    do {                                                                                                      \
        int errors_before_ = error_count, emissions_before_ = emission_count;                                 \
        __VA_ARGS__;                                                                                          \
        if (!CHECK(reported(npc, errors_before_, emissions_before_, needle)))                                 \
            printf("  expected an error with \"%s\"; last error: %s\n", needle,                               \
                   error_count ? errors[error_count - 1] : "(none)");                                         \
    } while (0)

/* Drive frames until `npc` emits `signal` (loaded, or error for a failed load), or `limit` frames pass;
** returns the frames it took, or 0. */
static int run_until_signal(fake_object *const *nodes, int count, fake_object *npc, const char *signal, int limit) {
    int before = count_signals(npc, signal, 0);
    for (int i = 1; i <= limit; i++) {
        frame(nodes, count);
        if (count_signals(npc, signal, 0) > before) return i;
    }
    return 0;
}

/* Drive frames until `npc` emits reply_finished (or `limit` frames pass). */
static bool run_until_finished(fake_object *const *nodes, int count, fake_object *npc, int limit) {
    return run_until_signal(nodes, count, npc, "reply_finished", limit) > 0;
}

/* The streamed updates since `since`: each is the whole reply so far, so each extends the last. */
static void check_stream(fake_object *npc, int since, int *updates, int *frames_with_updates) {
    const char *previous = "";
    int last_frame = -1;
    *updates = *frames_with_updates = 0;
    bool started = false;
    for (int i = since; i < emission_count; i++) {
        const emission *e = &emissions[i];
        if (e->object != npc) continue;
        if (!strcmp(e->signal, "reply_started")) started = true;
        if (strcmp(e->signal, "reply_updated") != 0) continue;
        CHECK(started); /* reply_started comes first */
        CHECK(strncmp(e->text, previous, strlen(previous)) == 0 && strlen(e->text) > strlen(previous));
        previous = e->text;
        (*updates)++;
        if (e->frame != last_frame) (*frames_with_updates)++;
        last_frame = e->frame;
    }
}

/* ---- scenarios --------------------------------------------------------------------------------- */

static void expect_method(const char *class_name, const char *name, gdx_variant_type result, int argc,
                          gdx_variant_type arg0, gdx_variant_type arg1) {
    fake_method *m = find_method(find_class(class_name), name);
    if (!CHECK(m != NULL)) {
        printf("  missing %s.%s\n", class_name, name);
        return;
    }
    CHECK(m->argc == argc);
    CHECK(result == GDX_TYPE_NIL ? !m->has_return : m->has_return && m->result.type == result);
    if (argc > 0) CHECK(m->args[0].type == arg0);
    if (argc > 1) CHECK(m->args[1].type == arg1);
}

static void expect_property(const char *class_name, const char *name, gdx_variant_type type, uint32_t hint) {
    fake_property *p = find_property(find_class(class_name), name);
    if (!CHECK(p != NULL)) {
        printf("  missing property %s.%s\n", class_name, name);
        return;
    }
    CHECK(p->info.type == type && p->info.hint == hint && p->info.usage == GDX_USAGE_DEFAULT);
}

static void expect_signal(const char *name, int argc, const char *arg0, gdx_variant_type type0, const char *arg1,
                          gdx_variant_type type1) {
    fake_signal *s = find_signal(find_class("LmpcNpc"), name);
    if (!CHECK(s != NULL)) return;
    CHECK(s->argc == argc);
    if (argc > 0) CHECK(s->args[0].type == type0 && !strcmp(s->args[0].name, arg0));
    if (argc > 1) CHECK(s->args[1].type == type1 && !strcmp(s->args[1].name, arg1));
}

static double get_float(fake_object *o, const char *getter) {
    fake_variant v = call_v(o, getter, 0, NULL, NULL);
    CHECK(v.type == GDX_TYPE_FLOAT);
    return v.f;
}

static int64_t get_int(fake_object *o, const char *getter) {
    fake_variant v = call_v(o, getter, 0, NULL, NULL);
    CHECK(v.type == GDX_TYPE_INT);
    return v.i;
}

static void set_v(fake_object *o, const char *setter, fake_variant value) {
    fake_variant result = call_v(o, setter, 1, &value, NULL);
    CHECK(result.type == GDX_TYPE_NIL); /* setters return nothing */
    fake_variant_destroy((gd_variant *)&value);
}

static void set_string(fake_object *o, const char *setter, const char *text) {
    char *slot = text_new(text, strlen(text)); /* a String, passed by pointer */
    const void *args[1] = {&slot};
    call_p(o, setter, args, NULL);
    text_free(slot);
}

static void scenario_registration(void) {
    CHECK(class_count == 2);
    fake_class *runtime = find_class("LmpcRuntime"), *npc = find_class("LmpcNpc");
    if (!CHECK(runtime && npc)) return;
    for (int i = 0; i < class_count; i++) {
        fake_class_info *info = &classes[i].info;
        CHECK(!strcmp(classes[i].parent, "Node"));
        CHECK(info->is_exposed && !info->is_virtual && !info->is_abstract);
        CHECK((godot47 ? info->create_instance4_func != NULL : info->create_instance_func != NULL) &&
              info->free_instance_func && info->notification_func);
    }
    expect_method("LmpcNpc", "say", GDX_TYPE_BOOL, 1, GDX_TYPE_STRING, 0);
    expect_method("LmpcNpc", "cancel", GDX_TYPE_NIL, 0, 0, 0);
    expect_method("LmpcNpc", "set_fact", GDX_TYPE_BOOL, 2, GDX_TYPE_STRING, GDX_TYPE_NIL);
    CHECK(find_method(npc, "set_fact")->args[1].usage & GDX_USAGE_NIL_IS_VARIANT); /* any Variant */
    expect_method("LmpcNpc", "set_action_values", GDX_TYPE_BOOL, 3, GDX_TYPE_STRING, GDX_TYPE_STRING);
    CHECK(find_method(npc, "set_action_values")->args[2].type == GDX_TYPE_ARRAY);
    expect_method("LmpcNpc", "save_state", GDX_TYPE_BOOL, 1, GDX_TYPE_STRING, 0);
    expect_method("LmpcNpc", "load_state", GDX_TYPE_BOOL, 1, GDX_TYPE_STRING, 0);
    expect_method("LmpcNpc", "load_bundle", GDX_TYPE_BOOL, 0, 0, 0);
    expect_method("LmpcNpc", "is_loaded", GDX_TYPE_BOOL, 0, 0, 0);
    expect_method("LmpcNpc", "is_loading", GDX_TYPE_BOOL, 0, 0, 0);
    expect_method("LmpcNpc", "load_progress", GDX_TYPE_FLOAT, 0, 0, 0);
    expect_property("LmpcNpc", "bundle_path", GDX_TYPE_STRING, GDX_HINT_DIR);
    expect_property("LmpcNpc", "priority", GDX_TYPE_FLOAT, GDX_HINT_RANGE);
    expect_property("LmpcRuntime", "budget_ms", GDX_TYPE_FLOAT, GDX_HINT_RANGE);
    expect_property("LmpcRuntime", "seed", GDX_TYPE_INT, GDX_HINT_NONE);
    expect_property("LmpcRuntime", "threads", GDX_TYPE_INT, GDX_HINT_RANGE);
    expect_property("LmpcRuntime", "worker", GDX_TYPE_BOOL, GDX_HINT_NONE);
    expect_property("LmpcRuntime", "python_home", GDX_TYPE_STRING, GDX_HINT_GLOBAL_DIR);
    expect_property("LmpcRuntime", "site_packages", GDX_TYPE_STRING, GDX_HINT_GLOBAL_DIR);
    CHECK(npc->method_count == 10 + 2 * npc->property_count && npc->property_count == 2);
    CHECK(runtime->method_count == 2 * runtime->property_count && runtime->property_count == 6);
    expect_signal("loading", 1, "stage", GDX_TYPE_STRING, NULL, 0);
    expect_signal("loaded", 0, NULL, 0, NULL, 0);
    expect_signal("reply_started", 0, NULL, 0, NULL, 0);
    expect_signal("reply_updated", 1, "text", GDX_TYPE_STRING, NULL, 0);
    expect_signal("reply_finished", 1, "text", GDX_TYPE_STRING, NULL, 0);
    expect_signal("action_requested", 2, "name", GDX_TYPE_STRING, "args", GDX_TYPE_DICTIONARY);
    expect_signal("emotion_changed", 1, "label", GDX_TYPE_STRING, NULL, 0);
    expect_signal("error", 1, "message", GDX_TYPE_STRING, NULL, 0);
    CHECK(npc->signal_count == 8 && runtime->signal_count == 0);
    for (int c = 0; c < class_count; c++) { /* for the test to compare with what the demo's GDScript uses */
        printf("class %s:", classes[c].name);
        for (int i = 0; i < classes[c].method_count; i++) printf(" %s()", classes[c].methods[i].name);
        for (int i = 0; i < classes[c].property_count; i++) printf(" %s", classes[c].properties[i].info.name);
        for (int i = 0; i < classes[c].signal_count; i++) printf(" %s!", classes[c].signals[i].name);
        printf("\n");
    }

    /* Defaults, read both ways. */
    fake_object *rt = instantiate("LmpcRuntime", "runtime"), *orlando = instantiate("LmpcNpc", "orlando");
    CHECK(get_float(rt, "get_budget_ms") == 4.0 && get_int(rt, "get_seed") == -1 && get_int(rt, "get_threads") == 0);
    CHECK(!call_bool(rt, "get_worker", 0, NULL));
    set_v(rt, "set_worker", v_bool(true));
    gdx_bool worker = 0;
    call_p(rt, "get_worker", NULL, &worker);
    CHECK(worker == 1);
    double budget = 0;
    call_p(rt, "get_budget_ms", NULL, &budget);
    CHECK(budget == 4.0);
    char *path = text_new("junk", 4); /* a ptrcall result is an initialized String the callee replaces */
    call_p(orlando, "get_bundle_path", NULL, &path);
    CHECK(!strcmp(path, ""));
    CHECK(get_float(orlando, "get_priority") == 0.0);

    /* Values set one way read back the other; an int is a fine float. */
    set_v(rt, "set_budget_ms", v_float(8.5));
    call_p(rt, "get_budget_ms", NULL, &budget);
    CHECK(budget == 8.5);
    set_v(rt, "set_budget_ms", v_int(3));
    CHECK(get_float(rt, "get_budget_ms") == 3.0);
    set_string(orlando, "set_bundle_path", "res://npcs/orlando_marlo.lmpc");
    call_p(orlando, "get_bundle_path", NULL, &path);
    CHECK(!strcmp(path, "res://npcs/orlando_marlo.lmpc"));
    fake_variant got = call_v(orlando, "get_bundle_path", 0, NULL, NULL);
    CHECK(got.type == GDX_TYPE_STRING && !strcmp(got.text, "res://npcs/orlando_marlo.lmpc"));
    fake_variant_destroy((gd_variant *)&got);
    text_free(path);
    double focus = 10.0;
    const void *priority_args[1] = {&focus};
    call_p(orlando, "set_priority", priority_args, NULL);
    CHECK(get_float(orlando, "get_priority") == 10.0);

    /* Bad values: an error print, and the value stays. For the NPC, also its error signal. */
    int errors_before = error_count;
    set_v(rt, "set_budget_ms", v_float(-1));
    set_v(rt, "set_budget_ms", v_float(NAN));
    set_v(rt, "set_budget_ms", v_string("fast"));
    set_v(rt, "set_threads", v_int(1000));
    set_v(rt, "set_seed", v_float(2.5));
    CHECK(error_count == errors_before + 5 && strstr(errors[errors_before], "budget_ms must be in [0, 1000]"));
    CHECK(get_float(rt, "get_budget_ms") == 3.0 && get_int(rt, "get_threads") == 0 && get_int(rt, "get_seed") == -1);
    EXPECT_REPORTED(orlando, "argument 1 (priority) must be a float, not a String",
                    set_v(orlando, "set_priority", v_string("high")));
    EXPECT_REPORTED(orlando, "argument 1 (bundle_path) must be a String, not null",
                    set_v(orlando, "set_bundle_path", v_nil()));
    CHECK(get_float(orlando, "get_priority") == 10.0);

    /* The values of an action: an Array or PackedStringArray of Strings, by either calling convention. */
    const char *coins[] = {"father_letter", "coin"};
    fake_variant values[3] = {v_string("give_item"), v_string("item"), v_int(3)};
    EXPECT_REPORTED(orlando, "LmpcNpc.set_action_values: argument 3 (values) must be an Array of Strings, not an int",
                    CHECK(!call_bool(orlando, "set_action_values", 3, values)));
    values[0] = v_string("give_item"), values[1] = v_string("item"), values[2] = v_strings(GDX_TYPE_ARRAY, 2, coins);
    fake_container *mixed = values[2].container;
    mixed->values[mixed->count++] = v_int(7);
    EXPECT_REPORTED(orlando, "argument 3 (values) must be an Array of Strings, not an Array holding something other",
                    CHECK(!call_bool(orlando, "set_action_values", 3, values)));
    values[0] = v_string("give_item"), values[1] = v_string("item");
    values[2] = v_strings(GDX_TYPE_PACKED_STRING_ARRAY, 2, coins);
    EXPECT_REPORTED(orlando, "LmpcNpc.set_action_values: no NPC is loaded",
                    CHECK(!call_bool(orlando, "set_action_values", 3, values)));
    fake_variant native = v_strings(GDX_TYPE_ARRAY, 2, coins); /* its storage passes as a raw Array */
    char *action = text_new("give_item", 9), *argument = text_new("item", 4);
    const void *raw_values[3] = {&action, &argument, &native.container};
    gdx_bool accepted = 1;
    EXPECT_REPORTED(orlando, "LmpcNpc.set_action_values: no NPC is loaded",
                    call_p(orlando, "set_action_values", raw_values, &accepted));
    CHECK(accepted == 0 && native.container->references == 1); /* the addon's copy of it was released */
    fake_variant_destroy((gd_variant *)&native);
    text_free(action);
    text_free(argument);

    /* Wrong argument counts are the engine's call errors, as for any method. */
    gdx_call_error error;
    fake_variant result = call_v(orlando, "say", 0, NULL, &error);
    CHECK(error.error == GDX_CALL_ERROR_TOO_FEW_ARGUMENTS && error.expected == 1 && result.type == GDX_TYPE_NIL);
    fake_variant two[2] = {v_string("a"), v_string("b")};
    call_v(orlando, "say", 2, two, &error);
    CHECK(error.error == GDX_CALL_ERROR_TOO_MANY_ARGUMENTS);
    fake_variant_destroy((gd_variant *)&two[0]);
    fake_variant_destroy((gd_variant *)&two[1]);

    /* In the editor nothing loads or ticks (with no liblmpc.so beside the addon, trying would print). */
    editor_hint = true;
    errors_before = error_count;
    enter_tree(rt);
    enter_tree(orlando);
    CHECK(!rt->processing && error_count == errors_before);
    CHECK(!call_bool(orlando, "is_loaded", 0, NULL));
    exit_tree(rt);
    editor_hint = false;
    destroy(orlando);
    destroy(rt);
}

static void scenario_nolib(void) {
    fake_object *npc = instantiate("LmpcNpc", "npc");
    set_string(npc, "set_bundle_path", "res://npcs/orlando_marlo.lmpc");
    EXPECT_REPORTED(npc, "no LmpcRuntime is in the scene tree", enter_tree(npc));

    fake_object *rt = instantiate("LmpcRuntime", "runtime");
    int errors_before = error_count;
    enter_tree(rt);
    CHECK(rt->processing); /* it asked for _process */
    CHECK(error_count == errors_before + 1 && strstr(errors[errors_before], "cannot load the LMPC library") &&
          strstr(errors[errors_before], "liblmpc.so"));
    EXPECT_REPORTED(npc, "cannot load the LMPC library", CHECK(!call_bool(npc, "load_bundle", 0, NULL)));
    fake_variant line = v_string("Hello?");
    EXPECT_REPORTED(npc, "no NPC is loaded", CHECK(!call_bool(npc, "say", 1, &line)));
    fake_object *nodes[] = {rt, npc};
    int emissions_before = emission_count;
    for (int i = 0; i < 10; i++) frame(nodes, 2);
    CHECK(emission_count == emissions_before);
    CHECK(!call_bool(npc, "is_loaded", 0, NULL));

    /* A second runtime is told it is idle and does nothing. */
    fake_object *second = instantiate("LmpcRuntime", "second");
    int warnings_before = warning_count;
    errors_before = error_count;
    enter_tree(second);
    CHECK(warning_count == warnings_before + 1 && error_count == errors_before && !second->processing);
    destroy(second); /* leaves the tree first */

    destroy(npc);
    destroy(rt); /* leaves the tree first */
}

/* A python_home that is not one: the library says so before starting Python, and nothing crashes. */
static void scenario_nohome(const char *bundle) {
    fake_object *rt = instantiate("LmpcRuntime", "runtime");
    set_string(rt, "set_python_home", "/nonexistent/python");
    int errors_before = error_count;
    enter_tree(rt);
    CHECK(error_count == errors_before + 1 && strstr(errors[errors_before], "/nonexistent/python"));
    fake_object *npc = instantiate("LmpcNpc", "npc");
    set_string(npc, "set_bundle_path", bundle);
    EXPECT_REPORTED(npc, "lmpc_boot: /nonexistent/python is not a Python home", enter_tree(npc));
    destroy(npc);
    destroy(rt); /* leaves the tree first */
}

/* Signal handlers that free nodes while the extension is emitting (GDScript may call free()). */
static fake_object *free_on_update, *free_on_finish, *free_on_error;

/* A handler of the NPC's own signal cannot free() it (the engine refuses: it is emitting), so it does
** what GDScript must, queue_free(). Freeing another object, here the runtime, is allowed at once. */
static void handler_frees_nodes(fake_object *object, const char *signal) {
    if (object == free_on_error && !strcmp(signal, "error")) {
        free_on_error = NULL;
        queue_free(object);
    } else if (object == free_on_update && !strcmp(signal, "reply_updated")) {
        free_on_update = NULL;
        CHECK(!destroy(object) && refused_frees == 1); /* refused, as Godot refuses it */
        refused_frees = 0;
        queue_free(object);
    } else if (free_on_finish && !strcmp(signal, "reply_finished")) {
        fake_object *victim = free_on_finish;
        free_on_finish = NULL;
        destroy(victim);
    }
}

static void scenario_bad(const char *bundle, const char *damaged) {
    fake_object *rt = instantiate("LmpcRuntime", "runtime");
    set_v(rt, "set_seed", v_int(5));
    fake_object *npc = instantiate("LmpcNpc", "npc");
    fake_object *nodes[3] = {rt, npc, NULL};

    set_string(npc, "set_bundle_path", bundle);
    EXPECT_REPORTED(npc, "no LmpcRuntime is in the scene tree", enter_tree(npc));
    int errors_before = error_count;
    enter_tree(rt); /* boots the embedded Python */
    CHECK(rt->processing && error_count == errors_before);

    set_string(npc, "set_bundle_path", "");
    EXPECT_REPORTED(npc, "bundle_path is not set", CHECK(!call_bool(npc, "load_bundle", 0, NULL)));
    fake_variant args[2];
    args[0] = v_string("Hello?");
    EXPECT_REPORTED(npc, "LmpcNpc.say: no NPC is loaded", CHECK(!call_bool(npc, "say", 1, args)));
    args[0] = v_string("quest.stage"), args[1] = v_int(2);
    EXPECT_REPORTED(npc, "LmpcNpc.set_fact: no NPC is loaded", CHECK(!call_bool(npc, "set_fact", 2, args)));
    args[0] = v_string("user://x.save");
    EXPECT_REPORTED(npc, "LmpcNpc.save_state: no NPC is loaded", CHECK(!call_bool(npc, "save_state", 1, args)));

    set_string(npc, "set_bundle_path", "res://missing.lmpc");
    EXPECT_REPORTED(npc, "res://missing.lmpc", CHECK(!call_bool(npc, "load_bundle", 0, NULL)));

    /* A damaged bundle starts loading, then fails in the background: the error signal, nothing loaded. */
    if (damaged) {
        set_string(npc, "set_bundle_path", damaged);
        CHECK(call_bool(npc, "load_bundle", 0, NULL) && !call_bool(npc, "is_loaded", 0, NULL));
        int emissions_before = emission_count;
        errors_before = error_count;
        CHECK(run_until_signal(nodes, 2, npc, "error", 6000) > 0);
        CHECK(reported(npc, errors_before, emissions_before, "sha256 does not match"));
        CHECK(!call_bool(npc, "is_loaded", 0, NULL) && !call_bool(npc, "is_loading", 0, NULL));
        CHECK(get_float(npc, "load_progress") == 0.0);
        CHECK(count_signals(npc, "loaded", 0) == 0);
    }

    set_string(npc, "set_bundle_path", bundle);
    errors_before = error_count;
    CHECK(call_bool(npc, "load_bundle", 0, NULL) && !call_bool(npc, "is_loaded", 0, NULL));
    CHECK(call_bool(npc, "is_loading", 0, NULL));
    args[0] = v_string("Too early?");
    EXPECT_REPORTED(npc, "LmpcNpc.say: the NPC is still loading", CHECK(!call_bool(npc, "say", 1, args)));
    CHECK(run_until_signal(nodes, 2, npc, "loaded", 6000) > 0);
    CHECK(call_bool(npc, "is_loaded", 0, NULL) && !call_bool(npc, "is_loading", 0, NULL));
    CHECK(get_float(npc, "load_progress") == 1.0);
    CHECK(error_count == errors_before + 1); /* the one for saying too early */

    args[0] = v_nil();
    EXPECT_REPORTED(npc, "argument 1 (text) must be a String, not null", CHECK(!call_bool(npc, "say", 1, args)));
    args[0] = v_string("");
    EXPECT_REPORTED(npc, "LmpcNpc.say: ", CHECK(!call_bool(npc, "say", 1, args)));
    args[0] = v_nil(), args[1] = v_int(3);
    EXPECT_REPORTED(npc, "argument 1 (key) must be a String, not null", CHECK(!call_bool(npc, "set_fact", 2, args)));
    args[0] = v_string("user://no-such.save");
    EXPECT_REPORTED(npc, "LmpcNpc.load_state: user://no-such.save", CHECK(!call_bool(npc, "load_state", 1, args)));
    errors_before = error_count;
    call_v(npc, "cancel", 0, NULL, NULL); /* nothing to cancel: fine */
    CHECK(error_count == errors_before);

    /* A handler frees the NPC on its error signal, inside the call that failed: for a bad argument, and
    ** for a call the NPC refuses. */
    on_emit = handler_frees_nodes;
    for (int refusal = 0; refusal < 2; refusal++) {
        fake_object *doomed = instantiate("LmpcNpc", "doomed");
        free_on_error = doomed;
        args[0] = refusal ? v_string("Hello?") : v_nil();
        CHECK(!call_bool(doomed, "say", 1, args));
        CHECK(free_on_error == NULL && doomed->queued); /* the handler ran */
        frame(NULL, 0);                                  /* frees it */
    }
    on_emit = NULL;

    /* The tiny model streams (random) text. */
    int since = emission_count;
    args[0] = v_string("Hello there.");
    CHECK(call_bool(npc, "say", 1, args));
    CHECK(run_until_finished(nodes, 2, npc, 6000));
    int updates, frames;
    check_stream(npc, since, &updates, &frames);
    CHECK(count_signals(npc, "reply_started", since) == 1 && updates >= 1);
    printf("tiny reply: %d updates over %d frames\n", updates, frames);

    /* A handler frees the NPC at its first update; the runtime goes on; events of the freed NPC vanish. */
    fake_object *other = instantiate("LmpcNpc", "other");
    set_string(other, "set_bundle_path", bundle);
    enter_tree(other);
    nodes[2] = other;
    CHECK(run_until_signal(nodes, 3, other, "loaded", 6000) > 0);
    args[0] = v_string("Who are you?");
    CHECK(call_bool(npc, "say", 1, args));
    args[0] = v_string("And you?");
    CHECK(call_bool(other, "say", 1, args));
    free_on_update = npc;
    on_emit = handler_frees_nodes;
    nodes[1] = NULL;
    /* Which reply streams first depends on how each frame's time budget falls: wait for both events. */
    int before = count_signals(other, "reply_finished", 0);
    for (int i = 0; i < 6000 && (free_on_update || count_signals(other, "reply_finished", 0) == before); i++)
        frame(nodes, 3);
    CHECK(free_on_update == NULL); /* the handler ran */
    CHECK(count_signals(other, "reply_finished", 0) > before);

    /* A handler frees the runtime itself while it dispatches; the NPC loses its runtime, not its mind. */
    args[0] = v_string("Tell me more.");
    CHECK(call_bool(other, "say", 1, args));
    free_on_finish = rt;
    for (int i = 0; i < 6000 && free_on_finish; i++) frame(nodes, 3);
    CHECK(free_on_finish == NULL);
    nodes[0] = NULL;
    on_emit = NULL;
    CHECK(!call_bool(other, "is_loaded", 0, NULL));
    args[0] = v_string("Still there?");
    EXPECT_REPORTED(other, "no NPC is loaded", CHECK(!call_bool(other, "say", 1, args)));
    destroy(other);
}

static void scenario_talk(const char *bundle) {
    fake_object *rt = instantiate("LmpcRuntime", "runtime");
    set_v(rt, "set_seed", v_int(7));
    set_v(rt, "set_threads", v_int(2));
    set_v(rt, "set_budget_ms", v_float(4.0));
    enter_tree(rt);
    fake_object *orlando = instantiate("LmpcNpc", "orlando");
    set_string(orlando, "set_bundle_path", bundle);
    set_v(orlando, "set_priority", v_float(10));
    int errors_before = error_count, since = emission_count;
    double start = seconds();
    enter_tree(orlando); /* starts loading the bundle when ready; the frames go on meanwhile */
    fake_object *nodes[] = {rt, orlando};
    double ready_call = seconds() - start;
    longest_process = 0;
    int load_frames = run_until_signal(nodes, 2, orlando, "loaded", 20000);
    CHECK(load_frames > 0 && call_bool(orlando, "is_loaded", 0, NULL) && error_count == errors_before);
    printf("loaded in %.1f s over %d frames (the ready notification took %.3f s, the longest frame's _process "
           "%.0f ms); stages:", seconds() - start, load_frames, ready_call, 1000 * longest_process);
    for (int i = since; i < emission_count; i++)
        if (emissions[i].object == orlando && !strcmp(emissions[i].signal, "loading")) printf(" %s;", emissions[i].text);
    printf("\n");

    fake_variant args[2] = {v_string("player.name"), v_string("Mira")};
    bool fact = call_bool(orlando, "set_fact", 2, args);
    printf("set_fact: %s\n", fact ? "ok" : errors[error_count - 1]);

    /* The first reply, streamed frame by frame. */
    since = emission_count;
    int start_frame = frame_number;
    args[0] = v_string("Who are you?");
    CHECK(call_bool(orlando, "say", 1, args));
    start = seconds();
    CHECK(run_until_finished(nodes, 2, orlando, 20000));
    double elapsed = seconds() - start;
    int updates, frames;
    check_stream(orlando, since, &updates, &frames);
    const emission *finished = last_signal(orlando, "reply_finished"), *update = last_signal(orlando, "reply_updated");
    CHECK(count_signals(orlando, "reply_started", since) == 1 && updates >= 3 && frames >= 3);
    CHECK(finished && strlen(finished->text) > 0 && update);
    printf("streamed: %d updates over %d frames (%d frames in all, %.1f s, %.0f ms per frame)\n", updates, frames,
           frame_number - start_frame, elapsed, 1000 * elapsed / (frame_number - start_frame));
    printf("last update: %s\n", update ? update->text : "");
    printf("reply: %s\n", finished ? finished->text : "");

    /* Save and load (user:// is a folder of the test's). */
    args[0] = v_string("user://orlando.save");
    bool saved = call_bool(orlando, "save_state", 1, args);
    char path[4096];
    struct stat st;
    if (saved) {
        CHECK(stat(globalize("user://orlando.save", path, sizeof path), &st) == 0 && st.st_size > 0);
        args[0] = v_string("user://orlando.save");
        CHECK(call_bool(orlando, "load_state", 1, args));
        printf("save_state: ok, %lld bytes\n", (long long)st.st_size);
    } else {
        printf("save_state: %s\n", errors[error_count - 1]);
    }

    /* A second line, cancelled after a few updates: reply_finished still comes, so awaits resume. */
    since = emission_count;
    args[0] = v_string("What do you want most in life?");
    CHECK(call_bool(orlando, "say", 1, args));
    for (int i = 0; i < 20000 && count_signals(orlando, "reply_updated", since) < 3; i++) frame(nodes, 2);
    call_v(orlando, "cancel", 0, NULL, NULL);
    CHECK(run_until_finished(nodes, 2, orlando, 100));
    check_stream(orlando, since, &updates, &frames);
    printf("cancelled after %d updates: %s\n", updates, last_signal(orlando, "reply_finished")->text);

    /* What the runtime costs a frame when nobody is talking. */
    double before = process_seconds;
    for (int i = 0; i < 120; i++) frame(nodes, 2);
    printf("idle frames: %.0f us of _process each\n", 1e6 * (process_seconds - before) / 120);

    destroy(orlando);
    destroy(rt); /* leaves the tree first */
}

/* The last emission of `signal` by `npc` since `since`, or NULL. */
static const emission *tail_signal(fake_object *npc, int since, const char *signal) {
    const emission *found = NULL;
    for (int i = since; i < emission_count; i++)
        if (emissions[i].object == npc && !strcmp(emissions[i].signal, signal)) found = &emissions[i];
    return found;
}

static int index_of(const emission *e) { return e ? (int)(e - emissions) : -1; }

/* A reply's typed tail since `since` comes after its last update and before its one reply_finished, the
** action (if any) before the emotion. */
static void check_tail_order(fake_object *npc, int since) {
    int update = index_of(tail_signal(npc, since, "reply_updated"));
    int action = index_of(tail_signal(npc, since, "action_requested"));
    int emotion = index_of(tail_signal(npc, since, "emotion_changed"));
    int finished = index_of(tail_signal(npc, since, "reply_finished"));
    CHECK(finished > update && count_signals(npc, "reply_finished", since) == 1);
    if (action >= 0) CHECK(action > update && action < finished && (emotion < 0 || action < emotion));
    if (emotion >= 0) CHECK(emotion > update && emotion < finished);
}

/* A sheet with emotions and an action whose values the game gives (a copy of the tiny bundle): every
** reply ends with emotion_changed, and the runtime checks the game's values against the sheet. */
static void scenario_typed(const char *bundle) {
    fake_object *rt = instantiate("LmpcRuntime", "runtime"), *npc = instantiate("LmpcNpc", "npc");
    fake_object *nodes[] = {rt, npc};
    set_v(rt, "set_seed", v_int(5));
    enter_tree(rt);
    set_string(npc, "set_bundle_path", bundle);
    enter_tree(npc);
    CHECK(run_until_signal(nodes, 2, npc, "loaded", 6000) > 0);

    /* The values the game gives reach the runtime, which checks them against the sheet. */
    const char *items[] = {"father_letter", "coin"}, *spaced[] = {"a coin"};
    int errors_before = error_count;
    fake_variant args[3] = {v_string("give_item"), v_string("item"), v_strings(GDX_TYPE_ARRAY, 2, items)};
    CHECK(call_bool(npc, "set_action_values", 3, args) && error_count == errors_before);
    args[0] = v_string("wave"), args[1] = v_string("item"), args[2] = v_strings(GDX_TYPE_ARRAY, 2, items);
    EXPECT_REPORTED(npc, "LmpcNpc.set_action_values: ", CHECK(!call_bool(npc, "set_action_values", 3, args)));
    printf("unknown action: %s\n", errors[error_count - 1]);
    args[0] = v_string("give_item"), args[1] = v_string("item");
    args[2] = v_strings(GDX_TYPE_PACKED_STRING_ARRAY, 1, spaced);
    EXPECT_REPORTED(npc, "LmpcNpc.set_action_values: ", CHECK(!call_bool(npc, "set_action_values", 3, args)));
    printf("bad value: %s\n", errors[error_count - 1]);

    /* Every reply ends with one emotion, just before reply_finished. */
    const char *lines[] = {"Hello there.", "Will you give me your father's letter?"};
    for (int i = 0; i < 2; i++) {
        int since = emission_count;
        args[0] = v_string(lines[i]);
        CHECK(call_bool(npc, "say", 1, args));
        CHECK(run_until_finished(nodes, 2, npc, 6000));
        check_tail_order(npc, since);
        const emission *emotion = tail_signal(npc, since, "emotion_changed");
        const emission *action = tail_signal(npc, since, "action_requested");
        CHECK(count_signals(npc, "emotion_changed", since) == 1 && emotion &&
              (!strcmp(emotion->text, "calm") || !strcmp(emotion->text, "sad")));
        CHECK(count_signals(npc, "action_requested", since) <= 1); /* the tiny model rarely means one */
        if (action)
            CHECK(!strcmp(action->text, "give_item") && (!strcmp(action->second, "{ \"item\": \"father_letter\" }") ||
                                                        !strcmp(action->second, "{ \"item\": \"coin\" }")));
        printf("reply %d: emotion %s, action %s\n", i + 1, emotion ? emotion->text : "(none)",
               action ? action->second : "(none)");
    }
    destroy(npc);
    destroy(rt);
}

/* With the fake liblmpc.so beside the extension: what lmpc_set_action_values was last given. */
static const char *fake_action_values(void *fake) {
    const char *(*values)(void);
    *(void **)&values = dlsym(fake, "fake_lmpc_action_values");
    return CHECK(values != NULL) ? values() : "";
}

/* With tests/godot/fake_liblmpc.c beside the extension as liblmpc.so: actions a model would rarely write,
** and texts no model can, reach the signals exactly (or the error signal). */
static void scenario_actions(const char *extension_path) {
    char path[4096];
    const char *slash = strrchr(extension_path, '/');
    snprintf(path, sizeof path, "%.*s/liblmpc.so", slash ? (int)(slash - extension_path) : 1,
             slash ? extension_path : ".");
    fake_object *rt = instantiate("LmpcRuntime", "runtime"), *npc = instantiate("LmpcNpc", "npc");
    fake_object *nodes[] = {rt, npc};
    enter_tree(rt);
    void *fake = dlopen(path, RTLD_NOW | RTLD_NOLOAD); /* the library the runtime opened */
    if (!CHECK(fake != NULL)) return;
    set_string(npc, "set_bundle_path", "res://npcs/scripted.lmpc");
    enter_tree(npc);
    CHECK(run_until_signal(nodes, 2, npc, "loaded", 10) > 0);

    /* The game's values reach lmpc_set_action_values as a JSON array of Strings, escaped. */
    const char *items[] = {"father_letter", "coin"}, *odd[] = {"say \"hi\"", "back\\slash", "caf\xc3\xa9\n"};
    fake_variant args[3] = {v_string("give_item"), v_string("item"), v_strings(GDX_TYPE_ARRAY, 2, items)};
    CHECK(call_bool(npc, "set_action_values", 3, args));
    CHECK(!strcmp(fake_action_values(fake), "give_item item [\"father_letter\",\"coin\"]"));
    args[0] = v_string("give_item"), args[1] = v_string("item"), args[2] = v_strings(GDX_TYPE_PACKED_STRING_ARRAY, 3, odd);
    CHECK(call_bool(npc, "set_action_values", 3, args));
    CHECK(!strcmp(fake_action_values(fake), "give_item item [\"say \\\"hi\\\"\",\"back\\\\slash\",\"caf\xc3\xa9\\u000a\"]"));
    args[0] = v_string("give_item"), args[1] = v_string("item"), args[2] = v_container(GDX_TYPE_ARRAY);
    CHECK(call_bool(npc, "set_action_values", 3, args));
    CHECK(!strcmp(fake_action_values(fake), "give_item item []")); /* closes the action */
    fake_variant native = v_strings(GDX_TYPE_ARRAY, 1, items);
    char *action = text_new("give_item", 9), *argument = text_new("item", 4);
    const void *raw[3] = {&action, &argument, &native.container};
    gdx_bool accepted = 0;
    call_p(npc, "set_action_values", raw, &accepted);
    CHECK(accepted == 1 && !strcmp(fake_action_values(fake), "give_item item [\"father_letter\"]"));
    fake_variant_destroy((gd_variant *)&native);
    text_free(action);
    text_free(argument);
    args[0] = v_string("wave"), args[1] = v_string("item"), args[2] = v_strings(GDX_TYPE_ARRAY, 2, items);
    EXPECT_REPORTED(npc, "LmpcNpc.set_action_values: fake: no action \"wave\"",
                    CHECK(!call_bool(npc, "set_action_values", 3, args)));

    /* Each scripted tail reaches its signals: the action's arguments as a Dictionary of Strings. */
    static const struct {
        const char *line, *name, *args, *emotion;
    } tails[] = {
        {"act {\"name\": \"give_item\", \"args\": {\"item\": \"father_letter\"}}\nfeel sad", "give_item",
         "{ \"item\": \"father_letter\" }", "sad"},
        {"act {\"name\": \"wave\", \"args\": {}}", "wave", "{  }", NULL},
        {"feel calm", NULL, NULL, "calm"},
        {"act {\"args\": {\"note\": \"\\\"hi\\\" \\\\ caf\\u00e9 \\ud83d\\ude00\\n\", \"to\": \"mira\"}, \"name\": \"sign\"}",
         "sign", "{ \"note\": \"\\\"hi\\\" \\\\ caf\xc3\xa9 \xf0\x9f\x98\x80\n\", \"to\": \"mira\" }", NULL},
        {"act {\"name\": \"give_item\", \"args\": {\"item\": \"coin\", \"item\": \"father_letter\"}}", "give_item",
         "{ \"item\": \"father_letter\" }", NULL}, /* a key said twice: the last value, as in Godot */
    };
    for (int i = 0; i < (int)(sizeof tails / sizeof tails[0]); i++) {
        int since = emission_count, errors_before = error_count;
        args[0] = v_string(tails[i].line);
        CHECK(call_bool(npc, "say", 1, args));
        CHECK(run_until_finished(nodes, 2, npc, 10));
        check_tail_order(npc, since);
        const emission *requested = tail_signal(npc, since, "action_requested");
        const emission *felt = tail_signal(npc, since, "emotion_changed");
        CHECK(count_signals(npc, "action_requested", since) == (tails[i].name ? 1 : 0));
        CHECK(count_signals(npc, "emotion_changed", since) == (tails[i].emotion ? 1 : 0));
        if (tails[i].name && CHECK(requested != NULL)) {
            CHECK(!strcmp(requested->text, tails[i].name));
            if (!CHECK(!strcmp(requested->second, tails[i].args))) printf("  args: %s\n", requested->second);
        }
        if (tails[i].emotion && CHECK(felt != NULL)) CHECK(!strcmp(felt->text, tails[i].emotion));
        CHECK(error_count == errors_before);
    }

    /* An action the addon cannot read: the error signal instead, and the reply still finishes. */
    static const char *const unreadable[] = {
        "act {\"name\": \"give_item\", \"args\": {\"item\": 3}}",
        "act {\"name\": \"give_item\", \"args\": {\"item\": {\"a\": \"b\"}}}",
        "act {\"name\": \"give_item\"}",
        "act {\"name\": \"give_item\", \"args\": {}, \"id\": \"7\"}",
        "act {\"name\": \"give_item\", \"args\": {}} and more",
        "act {\"name\": \"give_item\", \"args\": {\"item\": \"\\u0000\"}}",
        "act {\"name\": \"give_item\", \"args\": {\"item\": \"\\ud83d\"}}",
        "act {\"name\": \"give_item\", \"args\": {\"item\": \"\\q\"}}",
        "act {\"name\": \"give_item\", \"args\": {\"item\": \"unterminated",
        "act [\"give_item\"]",
        "act ",
    };
    for (int i = 0; i < (int)(sizeof unreadable / sizeof unreadable[0]); i++) {
        int since = emission_count, errors_before = error_count;
        args[0] = v_string(unreadable[i]);
        CHECK(call_bool(npc, "say", 1, args));
        CHECK(run_until_finished(nodes, 2, npc, 10));
        CHECK(count_signals(npc, "action_requested", since) == 0 && count_signals(npc, "reply_finished", since) == 1);
        if (!CHECK(reported(npc, errors_before, since, "the reply's action is not one this addon can read")))
            printf("  not refused: %s\n", unreadable[i]);
    }
    dlclose(fake);
    destroy(npc);
    destroy(rt);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 3) {
        fprintf(stderr, "usage: harness EXTENSION.so registration|nolib|nohome BUNDLE|bad BUNDLE [DAMAGED]|talk BUNDLE|"
                        "typed BUNDLE|actions\n");
        return 2;
    }
    const char *scenario = argv[2], *bundle = argc > 3 ? argv[3] : NULL;
    const char *version = getenv("HARNESS_GODOT");
    godot47 = version && !strcmp(version, "4.7");
    printf("playing Godot %s\n", godot47 ? "4.7 built with deprecated=no" : "4.2");
    if (!load_extension(argv[1])) return 1;
    /* Each function this engine serves was fetched once. */
    for (int i = 0; i < COUNT(common_interface); i++) CHECK(common_interface[i].requests == 1);
    served *engine = godot47 ? godot47_interface : godot42_interface;
    for (int i = 0; i < COUNT(godot42_interface); i++) {
        if (!CHECK(engine[i].requests == 1)) printf("  %s was fetched %d times\n", engine[i].name, engine[i].requests);
    }
    CHECK(unknown_requests == 0);

    if (!strcmp(scenario, "registration")) scenario_registration();
    else if (!strcmp(scenario, "nolib")) scenario_nolib();
    else if (!strcmp(scenario, "nohome") && bundle) scenario_nohome(bundle);
    else if (!strcmp(scenario, "bad") && bundle) scenario_bad(bundle, argc > 4 ? argv[4] : NULL);
    else if (!strcmp(scenario, "talk") && bundle) scenario_talk(bundle);
    else if (!strcmp(scenario, "typed") && bundle) scenario_typed(bundle);
    else if (!strcmp(scenario, "actions")) scenario_actions(argv[1]);
    else {
        fprintf(stderr, "unknown scenario %s\n", scenario);
        return 2;
    }

    flush_free_queue();
    unload_extension();
    CHECK(refused_frees == 0); /* no scenario frees an object the engine would refuse to */
    CHECK(live_objects == 0);
    CHECK(live_texts == 0); /* every String, StringName and Variant the extension made was released */
    CHECK(double_destroys == 0);
    CHECK(live_containers == 0); /* and every Array and Dictionary */
    if (live_texts) printf("  %ld Strings/StringNames/Variants leaked\n", live_texts);
    printf("%d errors, %d warnings printed; %d signals emitted\n", error_count, warning_count, emission_count);
    printf("%s: %d checks, %d failed\n", failures ? "FAILED" : "passed", checks, failures);
    return failures ? 1 : 0;
}
