/* godot.c — see godot.h. */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include "godot.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct godot_interface gd;

bool godot_bind(gdx_get_proc_address get_proc_address, const char **missing) {
    /* A function pointer passes through void * here: the engine returns a generic one. */
#define GODOT_FETCH(name, ret, params)                              \
    gd.name = (ret(*) params)(void *)get_proc_address(#name);      \
    if (!gd.name) {                                                 \
        *missing = #name;                                           \
        return false;                                               \
    }
    GDX_INTERFACE(GODOT_FETCH)
#undef GODOT_FETCH
    /* Renamed functions: the newest name first, since deprecated=no builds lack the old ones; an engine
    ** that lacks a name answers NULL. Only what is needed is asked for. */
#define TRY(name) (*(void **)&gd.name = (void *)get_proc_address(#name))
    if (!TRY(get_godot_version2) && !TRY(get_godot_version)) {
        *missing = "get_godot_version2 or get_godot_version";
        return false;
    }
    if (!TRY(string_new_with_utf8_chars_and_len2) && !TRY(string_new_with_utf8_chars_and_len)) {
        *missing = "string_new_with_utf8_chars_and_len2 or string_new_with_utf8_chars_and_len";
        return false;
    }
    /* The 4.4 registration goes with construct_object2 or 3 (no postinitialize by the engine), the 4.2
    ** one with construct_object: never mixed. */
    if (TRY(classdb_register_extension_class6) || TRY(classdb_register_extension_class5) ||
        TRY(classdb_register_extension_class4)) {
        gd.register_class4 = gd.classdb_register_extension_class6   ? gd.classdb_register_extension_class6
                             : gd.classdb_register_extension_class5 ? gd.classdb_register_extension_class5
                                                                    : gd.classdb_register_extension_class4;
        if (!TRY(classdb_construct_object3) && !TRY(classdb_construct_object2)) {
            *missing = "classdb_construct_object3 or classdb_construct_object2";
            return false;
        }
    } else if (!TRY(classdb_register_extension_class2)) {
        *missing = "classdb_register_extension_class6, 5, 4 or 2";
        return false;
    } else if (!TRY(classdb_construct_object)) {
        *missing = "classdb_construct_object";
        return false;
    }
#undef TRY
    gd.variant_from_bool = gd.get_variant_from_type_constructor(GDX_TYPE_BOOL);
    gd.variant_from_int = gd.get_variant_from_type_constructor(GDX_TYPE_INT);
    gd.variant_from_float = gd.get_variant_from_type_constructor(GDX_TYPE_FLOAT);
    gd.variant_from_string = gd.get_variant_from_type_constructor(GDX_TYPE_STRING);
    gd.variant_from_string_name = gd.get_variant_from_type_constructor(GDX_TYPE_STRING_NAME);
    gd.variant_from_object = gd.get_variant_from_type_constructor(GDX_TYPE_OBJECT);
    gd.variant_from_array = gd.get_variant_from_type_constructor(GDX_TYPE_ARRAY);
    gd.bool_from_variant = gd.get_variant_to_type_constructor(GDX_TYPE_BOOL);
    gd.int_from_variant = gd.get_variant_to_type_constructor(GDX_TYPE_INT);
    gd.float_from_variant = gd.get_variant_to_type_constructor(GDX_TYPE_FLOAT);
    gd.string_from_variant = gd.get_variant_to_type_constructor(GDX_TYPE_STRING);
    gd.string_destroy = gd.variant_get_ptr_destructor(GDX_TYPE_STRING);
    gd.string_name_destroy = gd.variant_get_ptr_destructor(GDX_TYPE_STRING_NAME);
    *missing = NULL;
    return true;
}

void gd_string_name_new(gd_string_name *r_name, const char *utf8) { gd.string_name_new_with_utf8_chars(r_name, utf8); }

void gd_string_name_free(gd_string_name *name) { gd.string_name_destroy(name); }

void gd_string_new(gd_string *r_string, const char *utf8) {
    /* The 4.3 form also reports invalid UTF-8; our texts come from Godot or from LMPC, which checks it. */
    if (gd.string_new_with_utf8_chars_and_len2) {
        gd.string_new_with_utf8_chars_and_len2(r_string, utf8, (gdx_int)strlen(utf8));
    } else {
        gd.string_new_with_utf8_chars_and_len(r_string, utf8, (gdx_int)strlen(utf8));
    }
}

void gd_godot_version(uint32_t *major, uint32_t *minor, const char **text) {
    if (gd.get_godot_version2) {
        gdx_godot_version2 version;
        gd.get_godot_version2(&version);
        *major = version.major, *minor = version.minor, *text = version.string;
    } else {
        gdx_godot_version version;
        gd.get_godot_version(&version);
        *major = version.major, *minor = version.minor, *text = version.string;
    }
}

gdx_object gd_construct(const char *class_name) {
    gd_string_name name;
    gd_string_name_new(&name, class_name);
    gdx_object object = gd.classdb_construct_object3   ? gd.classdb_construct_object3(&name)
                        : gd.classdb_construct_object2 ? gd.classdb_construct_object2(&name)
                                                       : gd.classdb_construct_object(&name);
    gd_string_name_free(&name);
    return object;
}

void gd_string_free(gd_string *string) { gd.string_destroy(string); }

char *gd_string_to_utf8(const gd_string *string) {
    gdx_int length = gd.string_to_utf8_chars(string, NULL, 0); /* bytes, without a NUL */
    char *utf8 = malloc((size_t)length + 1);
    if (!utf8) return NULL;
    gd.string_to_utf8_chars(string, utf8, length);
    utf8[length] = '\0';
    return utf8;
}

char *gd_variant_to_utf8(const gd_variant *variant) {
    gd_string text;
    gd.variant_stringify(variant, &text);
    char *utf8 = gd_string_to_utf8(&text);
    gd_string_free(&text);
    return utf8;
}

void gd_variant_new_bool(gd_variant *r_variant, bool value) {
    gdx_bool raw = value;
    gd.variant_from_bool(r_variant, &raw);
}

void gd_variant_new_int(gd_variant *r_variant, int64_t value) { gd.variant_from_int(r_variant, &value); }

void gd_variant_new_float(gd_variant *r_variant, double value) { gd.variant_from_float(r_variant, &value); }

void gd_variant_new_string(gd_variant *r_variant, const char *utf8) {
    gd_string string;
    gd_string_new(&string, utf8);
    gd.variant_from_string(r_variant, &string);
    gd_string_free(&string);
}

void gd_variant_new_dictionary(gd_variant *r_variant) {
    gdx_call_error error;
    gd.variant_construct(GDX_TYPE_DICTIONARY, r_variant, NULL, 0, &error);
}

void gd_variant_free(gd_variant *variant) { gd.variant_destroy(variant); }

void gd_dictionary_set_string(gd_variant *dictionary, const char *key, const char *value) {
    gd_variant k, v;
    gdx_bool valid;
    gd_variant_new_string(&k, key);
    gd_variant_new_string(&v, value);
    gd.variant_set_keyed(dictionary, &k, &v, &valid); /* the dictionary holds copies */
    gd_variant_free(&v);
    gd_variant_free(&k);
}

bool gd_call(gdx_object object, const char *method, const gd_variant *const *args, int count,
             gd_variant *r_result) {
    gd_variant self, result;
    gd_string_name name;
    gdx_call_error error = {GDX_CALL_OK, 0, 0};
    gd.variant_from_object(&self, &object);
    gd_string_name_new(&name, method);
    gd.variant_call(&self, &name, args, count, &result, &error);
    gd_string_name_free(&name);
    gd_variant_free(&self);
    if (r_result && error.error == GDX_CALL_OK) {
        *r_result = result;
    } else {
        gd_variant_free(&result);
    }
    return error.error == GDX_CALL_OK;
}

void gd_emit(gdx_object object, const char *signal, const char *text) {
    gd_variant argument;
    const gd_variant *args[1] = {&argument};
    if (text) gd_variant_new_string(&argument, text);
    gd_emit_variants(object, signal, args, text ? 1 : 0);
    if (text) gd_variant_free(&argument);
}

void gd_emit_variants(gdx_object object, const char *signal, const gd_variant *const *args, int count) {
    gd_variant name;
    gd_string_name signal_name;
    gd_string_name_new(&signal_name, signal);
    gd.variant_from_string_name(&name, &signal_name);
    gd_string_name_free(&signal_name);
    const gd_variant *call_args[3] = {&name};
    for (int i = 0; i < count; i++) call_args[i + 1] = args[i];
    gd_call(object, "emit_signal", call_args, count + 1, NULL);
    gd_variant_free(&name);
}

static gdx_object singleton(const char *name) {
    gd_string_name string_name;
    gd_string_name_new(&string_name, name);
    gdx_object object = gd.global_get_singleton(&string_name);
    gd_string_name_free(&string_name);
    return object;
}

bool gd_is_editor(void) {
    gd_variant result;
    gdx_object engine = singleton("Engine");
    if (!engine || !gd_call(engine, "is_editor_hint", NULL, 0, &result)) return false;
    gdx_bool editor = 0;
    if (gd.variant_get_type(&result) == GDX_TYPE_BOOL) gd.bool_from_variant(&editor, &result);
    gd_variant_free(&result);
    return editor;
}

char *gd_globalize_path(const char *path) {
    if (strncmp(path, "res://", 6) != 0 && strncmp(path, "user://", 7) != 0) return strdup(path);
    gd_variant argument, result;
    const gd_variant *args[1] = {&argument};
    gdx_object settings = singleton("ProjectSettings");
    gd_variant_new_string(&argument, path);
    bool called = settings && gd_call(settings, "globalize_path", args, 1, &result);
    gd_variant_free(&argument);
    if (!called) return strdup(path);
    char *global = gd_variant_to_utf8(&result);
    gd_variant_free(&result);
    return global;
}

void gd_print(bool warning, const char *function, const char *file, int line, const char *format, ...) {
    char message[2048];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    (warning ? gd.print_warning : gd.print_error)(message, function, file, line, false);
}
