/*
** godot.h — the engine functions (fetched once by name at start-up) and small helpers over Strings,
** Variants and objects, so the classes read as plain C.
**
** Ownership: every gd_string, gd_string_name and gd_variant made here must be released with the
** matching _free (the engine counts references behind them). Text crosses as NUL-terminated UTF-8.
*/
#ifndef LMPC_GODOT_H
#define LMPC_GODOT_H

#include <stdbool.h>

#include "gdextension.h"

#define GODOT_FIELD(name, ret, params) ret(*name) params;

struct godot_interface {
    GDX_INTERFACE(GODOT_FIELD)
    GDX_INTERFACE_RENAMED(GODOT_FIELD) /* NULL where this Godot lacks the name */
    /* The class registration in use: classdb_register_extension_class6, 5 or 4 (NULL: the engine has
    ** none of them, and classdb_register_extension_class2 is used). */
    void (*register_class4)(gdx_library, const gd_string_name *, const gd_string_name *, const gdx_class_info4 *);
    /* Conversions and destructors, looked up once through the functions above. */
    gdx_variant_from_type variant_from_bool, variant_from_int, variant_from_float, variant_from_string,
        variant_from_string_name, variant_from_object, variant_from_array;
    gdx_type_from_variant bool_from_variant, int_from_variant, float_from_variant, string_from_variant;
    gdx_destructor string_destroy, string_name_destroy;
};

extern struct godot_interface gd;

/* Fetch every engine function this addon uses. False (with the missing name) if the engine lacks one. */
bool godot_bind(gdx_get_proc_address get_proc_address, const char **missing);

/* The running Godot's version (major, minor) and its full text. */
void gd_godot_version(uint32_t *major, uint32_t *minor, const char **text);
/* A new engine object of a built-in class, to be given an instance with object_set_instance. */
gdx_object gd_construct(const char *class_name);

void gd_string_name_new(gd_string_name *r_name, const char *utf8);
void gd_string_name_free(gd_string_name *name);
void gd_string_new(gd_string *r_string, const char *utf8);
void gd_string_free(gd_string *string);
/* A malloc'd UTF-8 copy of a String (free() it); NULL only when out of memory. */
char *gd_string_to_utf8(const gd_string *string);
/* The same for a Variant of any type, as Godot's str() writes it. */
char *gd_variant_to_utf8(const gd_variant *variant);

void gd_variant_new_bool(gd_variant *r_variant, bool value);
void gd_variant_new_int(gd_variant *r_variant, int64_t value);
void gd_variant_new_float(gd_variant *r_variant, double value);
void gd_variant_new_string(gd_variant *r_variant, const char *utf8);
void gd_variant_new_dictionary(gd_variant *r_variant); /* an empty one */
void gd_variant_free(gd_variant *variant);
/* dictionary[key] = value, both Strings. */
void gd_dictionary_set_string(gd_variant *dictionary, const char *key, const char *value);

/* Call a method of an engine object by name (object.method(args...)). On success *r_result (if not
** NULL) holds the result, to be freed by the caller. False if the call failed. */
bool gd_call(gdx_object object, const char *method, const gd_variant *const *args, int count,
             gd_variant *r_result);
/* object.emit_signal(signal) or object.emit_signal(signal, text) when text is not NULL. */
void gd_emit(gdx_object object, const char *signal, const char *text);
/* object.emit_signal(signal, args...), with at most 2 arguments. */
void gd_emit_variants(gdx_object object, const char *signal, const gd_variant *const *args, int count);

/* Engine.is_editor_hint(): true while the scene runs inside the editor rather than the game. */
bool gd_is_editor(void);
/* ProjectSettings.globalize_path(path): res:// and user:// paths as paths on disk (malloc'd). */
char *gd_globalize_path(const char *path);

/* Godot's own error and warning output (the debugger's Errors tab and the terminal). */
#define GD_ERROR(...) gd_print(false, __func__, __FILE__, __LINE__, __VA_ARGS__)
#define GD_WARNING(...) gd_print(true, __func__, __FILE__, __LINE__, __VA_ARGS__)
void gd_print(bool warning, const char *function, const char *file, int line, const char *format, ...)
    __attribute__((format(printf, 5, 6)));

#endif /* LMPC_GODOT_H */
