/* binding.c — see binding.h. */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include "binding.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* One method the engine can call: a declared method, or a property's generated setter or getter. */
typedef struct {
    const class_desc *cls;
    method_desc signature;
    const property_desc *property; /* accessors only */
    char name[64];                 /* accessors' generated names */
} binding;

typedef struct {
    const class_desc *desc;
    gd_string_name name;
    binding *bindings;
} registered_class;

#define MAX_CLASSES 4
static gdx_library library;
static registered_class registered[MAX_CLASSES];
static int registered_count;

/* -- values ------------------------------------------------------------------------------------- */

static gdx_variant_type kind_type(value_kind kind) {
    switch (kind) {
    case KIND_BOOL: return GDX_TYPE_BOOL;
    case KIND_INT: return GDX_TYPE_INT;
    case KIND_FLOAT: return GDX_TYPE_FLOAT;
    case KIND_STRING: return GDX_TYPE_STRING;
    case KIND_STRINGS: return GDX_TYPE_ARRAY;
    case KIND_DICTIONARY: return GDX_TYPE_DICTIONARY;
    default: return GDX_TYPE_NIL; /* void, or any Variant */
    }
}

static const char *type_name(gdx_variant_type type) {
    switch (type) {
    case GDX_TYPE_NIL: return "null";
    case GDX_TYPE_BOOL: return "a bool";
    case GDX_TYPE_INT: return "an int";
    case GDX_TYPE_FLOAT: return "a float";
    case GDX_TYPE_STRING: return "a String";
    case GDX_TYPE_STRING_NAME: return "a StringName";
    case GDX_TYPE_OBJECT: return "an Object";
    case GDX_TYPE_DICTIONARY: return "a Dictionary";
    case GDX_TYPE_ARRAY: return "an Array";
    case GDX_TYPE_PACKED_STRING_ARRAY: return "a PackedStringArray";
    default: return "another type";
    }
}

/* What an argument of this kind must be, for messages. */
static const char *kind_name(value_kind kind) {
    return kind == KIND_STRINGS ? "an Array of Strings" : type_name(kind_type(kind));
}

/* A Variant's text, malloc'd into *owned. */
static const char *text_from_variant(value *out, gdx_variant_type type, const gd_variant *variant, char **owned) {
    *owned = type == GDX_TYPE_NIL ? strdup("null") : gd_variant_to_utf8(variant);
    out->s = *owned;
    return *owned ? NULL : "too big for the memory left";
}

/* The Strings of an Array or PackedStringArray as a JSON array, malloc'd into *owned. */
static const char *strings_from_variant(value *out, const gd_variant *array, char **owned) {
    json_text json = {0};
    json_add(&json, "[");
    for (gdx_int i = 0;; i++) {
        gd_variant element; /* null past the end */
        gdx_bool valid = 0, out_of_bounds = 0;
        gd.variant_get_indexed(array, i, &element, &valid, &out_of_bounds);
        gdx_variant_type type = gd.variant_get_type(&element);
        bool string = type == GDX_TYPE_STRING || type == GDX_TYPE_STRING_NAME;
        char *text = valid && string ? gd_variant_to_utf8(&element) : NULL;
        gd_variant_free(&element);
        if (!valid) break; /* past the end */
        if (!text) {
            free(json_finish(&json));
            return string ? "too big for the memory left" : "an Array holding something other than Strings";
        }
        if (i > 0) json_add(&json, ",");
        json_add_string(&json, text);
        free(text);
    }
    json_add(&json, "]");
    *owned = json_finish(&json);
    out->s = *owned;
    return *owned ? NULL : "too big for the memory left";
}

/* Read an argument from a Variant. A string read is malloc'd into *owned. NULL on success, else why. */
static const char *value_from_variant(value *out, value_kind kind, const gd_variant *variant, char **owned) {
    gdx_variant_type type = gd.variant_get_type(variant);
    gd_variant *source = (gd_variant *)variant; /* the engine's converters take non-const pointers */
    switch (kind) {
    case KIND_BOOL:
        if (type != GDX_TYPE_BOOL) return type_name(type);
        gdx_bool raw;
        gd.bool_from_variant(&raw, source);
        out->b = raw;
        return NULL;
    case KIND_INT:
        if (type != GDX_TYPE_INT) return type_name(type);
        gd.int_from_variant(&out->i, source);
        return NULL;
    case KIND_FLOAT:
        if (type == GDX_TYPE_INT) {
            gd.int_from_variant(&out->i, source);
            out->f = (double)out->i;
        } else if (type == GDX_TYPE_FLOAT) {
            gd.float_from_variant(&out->f, source);
        } else {
            return type_name(type);
        }
        return NULL;
    case KIND_STRING:
        if (type != GDX_TYPE_STRING && type != GDX_TYPE_STRING_NAME) return type_name(type);
        return text_from_variant(out, type, variant, owned);
    case KIND_ANY: return text_from_variant(out, type, variant, owned);
    case KIND_STRINGS:
        if (type != GDX_TYPE_ARRAY && type != GDX_TYPE_PACKED_STRING_ARRAY) return type_name(type);
        return strings_from_variant(out, variant, owned);
    default:
        return "unexpected";
    }
}

/* Read an argument from a pointer to its raw value (the engine's ptrcall convention). */
static const char *value_from_raw(value *out, value_kind kind, const void *raw, char **owned) {
    switch (kind) {
    case KIND_BOOL: out->b = *(const gdx_bool *)raw; return NULL;
    case KIND_INT: out->i = *(const int64_t *)raw; return NULL;
    case KIND_FLOAT: out->f = *(const double *)raw; return NULL;
    case KIND_STRING:
        *owned = gd_string_to_utf8(raw);
        out->s = *owned;
        return *owned ? NULL : "too big for the memory left";
    case KIND_ANY: return value_from_variant(out, kind, raw, owned);
    case KIND_STRINGS: {
        gd_variant array;
        gd.variant_from_array(&array, (void *)raw); /* the converter takes a non-const pointer */
        const char *problem = strings_from_variant(out, &array, owned);
        gd_variant_free(&array);
        return problem;
    }
    default: return "unexpected";
    }
}

/* Write a result into an (initialized) Variant. */
static void value_to_variant(gd_variant *r_variant, value_kind kind, const value *result) {
    gd_variant_free(r_variant);
    switch (kind) {
    case KIND_BOOL: gd_variant_new_bool(r_variant, result->b); break;
    case KIND_INT: gd_variant_new_int(r_variant, result->i); break;
    case KIND_FLOAT: gd_variant_new_float(r_variant, result->f); break;
    default: gd_variant_new_string(r_variant, result->s ? result->s : ""); break;
    }
}

/* Write a result into an (initialized) raw value. */
static void value_to_raw(void *r_raw, value_kind kind, const value *result) {
    switch (kind) {
    case KIND_BOOL: *(gdx_bool *)r_raw = result->b; break;
    case KIND_INT: *(int64_t *)r_raw = result->i; break;
    case KIND_FLOAT: *(double *)r_raw = result->f; break;
    default:
        gd_string_free(r_raw);
        gd_string_new(r_raw, result->s ? result->s : "");
        break;
    }
}

/* -- properties --------------------------------------------------------------------------------- */

static void report(instance *self, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* A call the instance refused: its class reports it (an error print, and for an NPC its error signal). */
static void report(instance *self, const char *format, ...) {
    char message[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    self->cls->bad_call(self, message);
}

static void property_get(instance *self, const property_desc *p, value *result) {
    const char *field = (const char *)self + p->offset;
    switch (p->kind) {
    case KIND_BOOL: result->b = *(const bool *)field; break;
    case KIND_INT: result->i = *(const int64_t *)field; break;
    case KIND_FLOAT: result->f = *(const double *)field; break;
    default: result->s = *(char *const *)field; break;
    }
}

static void property_set(instance *self, const binding *b, const value *v) {
    const property_desc *p = b->property;
    char *field = (char *)self + p->offset;
    switch (p->kind) {
    case KIND_BOOL: *(bool *)field = v->b; break;
    case KIND_INT:
        if (v->i < p->min || v->i > p->max) {
            report(self, "%s.%s: %s must be in [%.0f, %.0f], not %lld", b->cls->name, b->name, p->name,
                   p->min, p->max, (long long)v->i);
            return;
        }
        *(int64_t *)field = v->i;
        break;
    case KIND_FLOAT:
        if (isnan(v->f) || v->f < p->min || v->f > p->max) {
            report(self, "%s.%s: %s must be in [%g, %g], not %g", b->cls->name, b->name, p->name, p->min,
                   p->max, v->f);
            return;
        }
        *(double *)field = v->f;
        break;
    default: {
        char *copy = strdup(v->s);
        if (!copy) {
            report(self, "%s.%s: out of memory", b->cls->name, b->name);
            return;
        }
        free(*(char **)field);
        *(char **)field = copy;
        break;
    }
    }
    if (p->changed) p->changed(self);
}

/* -- calls from the engine ---------------------------------------------------------------------- */

static void release(const class_desc *cls, instance *self) {
    for (int i = 0; i < cls->property_count; i++)
        if (cls->properties[i].kind == KIND_STRING) free(*(char **)((char *)self + cls->properties[i].offset));
    free(self);
}

/* Run a method if its arguments could be read; `problem[i]` says why argument i could not. */
static void invoke(const binding *b, instance *self, const value *args, const char *const *problem, value *result) {
    const method_desc *m = &b->signature;
    int refused = 0;
    while (refused < m->argc && !problem[refused]) refused++;
    self->depth++; /* reports and signals run handlers, which may free the instance */
    if (refused < m->argc) {
        report(self, "%s.%s: argument %d (%s) must be %s, not %s", b->cls->name, m->name, refused + 1,
               m->arg_names[refused], kind_name(m->args[refused]), problem[refused]);
    } else if (!b->property) {
        m->fn(self, args, result);
    } else if (m->argc == 1) {
        property_set(self, b, &args[0]);
    } else {
        property_get(self, b->property, result);
    }
    self->depth--;
}

/* After the result is written: memory of an instance the engine freed during the call can go now. */
static void settle(const binding *b, instance *self) {
    if (self->depth == 0 && self->freed) release(b->cls, self);
}

static void call_with_variants(void *userdata, void *instance_ptr, const gd_variant *const *args, gdx_int count,
                               gd_variant *r_return, gdx_call_error *r_error) {
    const binding *b = userdata;
    instance *self = instance_ptr;
    const method_desc *m = &b->signature;
    if (count != m->argc) {
        r_error->error = count < m->argc ? GDX_CALL_ERROR_TOO_FEW_ARGUMENTS : GDX_CALL_ERROR_TOO_MANY_ARGUMENTS;
        r_error->expected = m->argc;
        return;
    }
    value values[MAX_ARGS] = {{0}}, result = {0};
    char *owned[MAX_ARGS] = {NULL};
    const char *problem[MAX_ARGS] = {NULL};
    for (int i = 0; i < m->argc; i++) problem[i] = value_from_variant(&values[i], m->args[i], args[i], &owned[i]);
    if (self) invoke(b, self, values, problem, &result);
    if (m->result != KIND_VOID) value_to_variant(r_return, m->result, &result);
    for (int i = 0; i < m->argc; i++) free(owned[i]);
    if (self) settle(b, self);
}

static void call_with_pointers(void *userdata, void *instance_ptr, const void *const *args, void *r_return) {
    const binding *b = userdata;
    instance *self = instance_ptr;
    const method_desc *m = &b->signature;
    value values[MAX_ARGS] = {{0}}, result = {0};
    char *owned[MAX_ARGS] = {NULL};
    const char *problem[MAX_ARGS] = {NULL};
    for (int i = 0; i < m->argc; i++) problem[i] = value_from_raw(&values[i], m->args[i], args[i], &owned[i]);
    if (self) invoke(b, self, values, problem, &result);
    if (m->result != KIND_VOID) value_to_raw(r_return, m->result, &result);
    for (int i = 0; i < m->argc; i++) free(owned[i]);
    if (self) settle(b, self);
}

static void notification(void *instance_ptr, int32_t what, gdx_bool reversed) {
    (void)reversed;
    instance *self = instance_ptr;
    if (!self || !self->owner) return;
    self->depth++;
    self->cls->notify(self, what);
    self->depth--;
    if (self->depth == 0 && self->freed) release(self->cls, self);
}

/* -- instances ---------------------------------------------------------------------------------- */

/* The engine object, our instance attached. `postinitialize`: the engine left NOTIFICATION_POSTINITIALIZE
** to us (the 4.4 registration), to send once the instance is set, as godot-cpp does. */
static gdx_object create(registered_class *rc, bool postinitialize) {
    gdx_object owner = gd_construct(rc->desc->parent);
    instance *self = calloc(1, rc->desc->instance_size);
    if (self) {
        self->owner = owner;
        self->cls = rc->desc;
        rc->desc->init(self);
    } else {
        GD_ERROR("%s: out of memory; this node will do nothing", rc->desc->name);
    }
    gd.object_set_instance(owner, &rc->name, self);
    if (postinitialize) {
        gd_variant what;
        const gd_variant *args[1] = {&what};
        gd_variant_new_int(&what, GDX_NOTIFICATION_POSTINITIALIZE);
        gd_call(owner, "notification", args, 1, NULL);
        gd_variant_free(&what);
    }
    return owner;
}

static gdx_object create_instance2(void *userdata) { return create(userdata, false); }

static gdx_object create_instance4(void *userdata, gdx_bool notify_postinitialize) {
    return create(userdata, notify_postinitialize);
}

static void free_instance(void *userdata, void *instance_ptr) {
    (void)userdata;
    instance *self = instance_ptr;
    if (!self) return;
    self->cls->destroy(self);
    self->owner = NULL;
    if (self->depth > 0) {
        self->freed = true; /* a call of ours on it is still running: it releases the memory */
    } else {
        release(self->cls, self);
    }
}

/* -- registration ------------------------------------------------------------------------------- */

/* A gdx_property_info with the engine values it points to. */
typedef struct {
    gdx_property_info info;
    gd_string_name name, class_name;
    gd_string hint_string;
} property_info;

static void property_info_new(property_info *p, value_kind kind, const char *name, uint32_t hint,
                              const char *hint_string) {
    gd_string_name_new(&p->name, name);
    gd_string_name_new(&p->class_name, "");
    gd_string_new(&p->hint_string, hint_string ? hint_string : "");
    p->info = (gdx_property_info){kind_type(kind), &p->name, &p->class_name, hint, &p->hint_string,
                                  GDX_USAGE_DEFAULT | (kind == KIND_ANY ? GDX_USAGE_NIL_IS_VARIANT : 0)};
}

static void property_info_free(property_info *p) {
    gd_string_name_free(&p->name);
    gd_string_name_free(&p->class_name);
    gd_string_free(&p->hint_string);
}

static void register_method(registered_class *rc, binding *b) {
    const method_desc *m = &b->signature;
    property_info result, args[MAX_ARGS];
    gdx_property_info arg_infos[MAX_ARGS];
    gdx_argument_metadata metadata[MAX_ARGS] = {GDX_METADATA_NONE};
    gd_string_name name;
    property_info_new(&result, m->result, "", GDX_HINT_NONE, NULL);
    for (int i = 0; i < m->argc; i++) {
        property_info_new(&args[i], m->args[i], m->arg_names[i], GDX_HINT_NONE, NULL);
        arg_infos[i] = args[i].info;
    }
    gd_string_name_new(&name, m->name);
    gdx_method_info info = {
        .name = &name,
        .method_userdata = b,
        .call_func = call_with_variants,
        .ptrcall_func = call_with_pointers,
        .method_flags = GDX_METHOD_FLAGS_DEFAULT,
        .has_return_value = m->result != KIND_VOID,
        .return_value_info = &result.info,
        .return_value_metadata = GDX_METADATA_NONE,
        .argument_count = (uint32_t)m->argc,
        .arguments_info = arg_infos,
        .arguments_metadata = metadata,
    };
    gd.classdb_register_extension_class_method(library, &rc->name, &info);
    gd_string_name_free(&name);
    property_info_free(&result);
    for (int i = 0; i < m->argc; i++) property_info_free(&args[i]);
}

static void register_property(registered_class *rc, const property_desc *p, binding *setter, binding *getter) {
    property_info info;
    gd_string_name setter_name, getter_name;
    property_info_new(&info, p->kind, p->name, p->hint, p->hint_string);
    gd_string_name_new(&setter_name, setter->name);
    gd_string_name_new(&getter_name, getter->name);
    gd.classdb_register_extension_class_property(library, &rc->name, &info.info, &setter_name, &getter_name);
    gd_string_name_free(&setter_name);
    gd_string_name_free(&getter_name);
    property_info_free(&info);
}

static void register_signal(registered_class *rc, const signal_desc *s) {
    property_info args[2];
    gdx_property_info arg_infos[2];
    gd_string_name name;
    for (int i = 0; i < s->argc; i++) {
        property_info_new(&args[i], s->args[i], s->arg_names[i], GDX_HINT_NONE, NULL);
        arg_infos[i] = args[i].info;
    }
    gd_string_name_new(&name, s->name);
    gd.classdb_register_extension_class_signal(library, &rc->name, &name, s->argc ? arg_infos : NULL, s->argc);
    gd_string_name_free(&name);
    for (int i = 0; i < s->argc; i++) property_info_free(&args[i]);
}

/* Bindings of a class: its methods, then a setter and a getter for each property. */
static binding *make_bindings(const class_desc *cls) {
    binding *bindings = calloc((size_t)(cls->method_count + 2 * cls->property_count), sizeof *bindings);
    if (!bindings) return NULL;
    binding *b = bindings;
    for (int i = 0; i < cls->method_count; i++, b++) *b = (binding){.cls = cls, .signature = cls->methods[i]};
    for (int i = 0; i < cls->property_count; i++) {
        const property_desc *p = &cls->properties[i];
        for (int set = 1; set >= 0; set--, b++) {
            *b = (binding){.cls = cls, .property = p};
            snprintf(b->name, sizeof b->name, "%s_%s", set ? "set" : "get", p->name);
            b->signature = (method_desc){.name = b->name,
                                         .result = set ? KIND_VOID : p->kind,
                                         .argc = set,
                                         .args = {p->kind},
                                         .arg_names = {p->name}};
        }
    }
    return bindings;
}

bool classes_register(gdx_library lib, const class_desc *const *classes, int count) {
    library = lib;
    for (int c = 0; c < count && registered_count < MAX_CLASSES; c++) {
        const class_desc *cls = classes[c];
        registered_class *rc = &registered[registered_count];
        rc->desc = cls;
        rc->bindings = make_bindings(cls);
        if (!rc->bindings) return false;
        gd_string_name_new(&rc->name, cls->name);
        registered_count++;

        gd_string_name parent;
        gd_string_name_new(&parent, cls->parent);
        if (gd.register_class4) {
            gdx_class_info4 info = {
                .is_exposed = 1,
                .notification_func = notification,
                .create_instance_func = create_instance4,
                .free_instance_func = free_instance,
                .class_userdata = rc,
            };
            gd.register_class4(library, &rc->name, &parent, &info);
        } else {
            gdx_class_info2 info = {
                .is_exposed = 1,
                .notification_func = notification,
                .create_instance_func = create_instance2,
                .free_instance_func = free_instance,
                .class_userdata = rc,
            };
            gd.classdb_register_extension_class2(library, &rc->name, &parent, &info);
        }
        gd_string_name_free(&parent);

        binding *b = rc->bindings;
        for (int i = 0; i < cls->method_count; i++) register_method(rc, b++);
        for (int i = 0; i < cls->property_count; i++, b += 2) {
            register_method(rc, b);
            register_method(rc, b + 1);
            register_property(rc, &cls->properties[i], b, b + 1);
        }
        for (int i = 0; i < cls->signal_count; i++) register_signal(rc, &cls->signals[i]);
    }
    return registered_count == count;
}

void classes_unregister(void) {
    while (registered_count > 0) {
        registered_class *rc = &registered[--registered_count];
        gd.classdb_unregister_extension_class(library, &rc->name);
        gd_string_name_free(&rc->name);
        free(rc->bindings);
    }
}
