/*
** gdextension.h — the part of Godot 4's GDExtension interface this addon uses, declared here.
**
** The layouts and names follow the interface of Godot 4.2 (the addon's compatibility_minimum) and,
** where later versions renamed a function, of its newer form too; each declaration names the official
** type it mirrors. Godot builds made with deprecated=no lack the 4.2 names of renamed functions, so the
** addon asks for the newest name first and falls back to the 4.2 one (godot.c). Everything the engine
** hands over is opaque: a String, StringName or Variant is storage of the right size that only engine
** functions may touch.
*/
#ifndef LMPC_GDEXTENSION_H
#define LMPC_GDEXTENSION_H

#include <stddef.h>
#include <stdint.h>

typedef uint8_t gdx_bool;   /* GDExtensionBool */
typedef int64_t gdx_int;    /* GDExtensionInt */

/* Engine values live in storage we own but never read. A String or a StringName is one pointer
** (a reference-counted buffer); a Variant is 24 bytes (40 in double-precision builds). */
typedef struct { void *opaque; } gd_string;
typedef struct { void *opaque; } gd_string_name;
typedef struct { _Alignas(8) uint8_t opaque[40]; } gd_variant;

typedef void *gdx_object;   /* GDExtensionObjectPtr: an engine Object */
typedef void *gdx_library;  /* GDExtensionClassLibraryPtr */

/* GDExtensionVariantType (only the types this addon meets). */
typedef enum {
    GDX_TYPE_NIL = 0,
    GDX_TYPE_BOOL = 1,
    GDX_TYPE_INT = 2,
    GDX_TYPE_FLOAT = 3,
    GDX_TYPE_STRING = 4,
    GDX_TYPE_STRING_NAME = 21,
    GDX_TYPE_OBJECT = 24,
    GDX_TYPE_DICTIONARY = 27,
    GDX_TYPE_ARRAY = 28,
    GDX_TYPE_PACKED_STRING_ARRAY = 34,
} gdx_variant_type;

/* GDExtensionCallErrorType and GDExtensionCallError. */
typedef enum {
    GDX_CALL_OK = 0,
    GDX_CALL_ERROR_INVALID_METHOD = 1,
    GDX_CALL_ERROR_INVALID_ARGUMENT = 2,
    GDX_CALL_ERROR_TOO_MANY_ARGUMENTS = 3,
    GDX_CALL_ERROR_TOO_FEW_ARGUMENTS = 4,
} gdx_call_error_type;

typedef struct {
    gdx_call_error_type error;
    int32_t argument;
    int32_t expected;
} gdx_call_error;

/* PropertyHint and PropertyUsageFlags values (core/object/object.h). */
#define GDX_HINT_NONE 0
#define GDX_HINT_RANGE 1
#define GDX_HINT_DIR 14        /* a folder inside the project (res://) */
#define GDX_HINT_GLOBAL_DIR 16 /* a folder anywhere on disk */
#define GDX_USAGE_DEFAULT 6                  /* stored in scenes and shown in the inspector */
#define GDX_USAGE_NIL_IS_VARIANT (1u << 17) /* a NIL type means "any Variant" */

/* Notifications (Object and Node constants). */
#define GDX_NOTIFICATION_POSTINITIALIZE 0
#define GDX_NOTIFICATION_PREDELETE 1
#define GDX_NOTIFICATION_ENTER_TREE 10
#define GDX_NOTIFICATION_EXIT_TREE 11
#define GDX_NOTIFICATION_READY 13
#define GDX_NOTIFICATION_PROCESS 17

/* GDExtensionPropertyInfo. `class_name` and `hint_string` must point to valid (maybe empty) values. */
typedef struct {
    gdx_variant_type type;
    gd_string_name *name;
    gd_string_name *class_name;
    uint32_t hint;
    gd_string *hint_string;
    uint32_t usage;
} gdx_property_info;

/* GDExtensionClassMethodFlags (a normal method) and GDExtensionClassMethodArgumentMetadata (none). */
#define GDX_METHOD_FLAGS_DEFAULT 1
typedef enum { GDX_METADATA_NONE = 0 } gdx_argument_metadata;

/* GDExtensionClassMethodCall: arguments as Variants. */
typedef void (*gdx_method_call)(void *method_userdata, void *instance, const gd_variant *const *args,
                                gdx_int argument_count, gd_variant *r_return, gdx_call_error *r_error);
/* GDExtensionClassMethodPtrCall: arguments as pointers to the raw types (String *, double *, ...). */
typedef void (*gdx_method_ptrcall)(void *method_userdata, void *instance, const void *const *args, void *r_return);

/* GDExtensionClassMethodInfo. */
typedef struct {
    gd_string_name *name;
    void *method_userdata;
    gdx_method_call call_func;
    gdx_method_ptrcall ptrcall_func;
    uint32_t method_flags;
    gdx_bool has_return_value;
    gdx_property_info *return_value_info;
    gdx_argument_metadata return_value_metadata;
    uint32_t argument_count;
    gdx_property_info *arguments_info;
    gdx_argument_metadata *arguments_metadata;
    uint32_t default_argument_count;
    gd_variant **default_arguments;
} gdx_method_info;

/* GDExtensionClassCreationInfo2 (Godot 4.2), for classdb_register_extension_class2. Callbacks this addon
** does not need stay NULL. */
typedef struct {
    gdx_bool is_virtual;
    gdx_bool is_abstract;
    gdx_bool is_exposed;
    void *set_func;
    void *get_func;
    void *get_property_list_func;
    void *free_property_list_func;
    void *property_can_revert_func;
    void *property_get_revert_func;
    void *validate_property_func;
    void (*notification_func)(void *instance, int32_t what, gdx_bool reversed);
    void *to_string_func;
    void *reference_func;
    void *unreference_func;
    gdx_object (*create_instance_func)(void *class_userdata);
    void (*free_instance_func)(void *class_userdata, void *instance);
    void *recreate_instance_func;
    void *get_virtual_func;
    void *get_virtual_call_data_func;
    void *call_virtual_with_data_func;
    void *get_rid_func;
    void *class_userdata;
} gdx_class_info2;

/* GDExtensionClassCreationInfo4 (Godot 4.4), which 4.5 names Info5 and 4.7 Info6 with the same layout:
** for classdb_register_extension_class4, 5 and 6. The engine then constructs the base object without
** NOTIFICATION_POSTINITIALIZE and create_instance_func sends it when asked to. */
typedef struct {
    gdx_bool is_virtual;
    gdx_bool is_abstract;
    gdx_bool is_exposed;
    gdx_bool is_runtime;
    const gd_string *icon_path; /* NULL: no icon */
    void *set_func;
    void *get_func;
    void *get_property_list_func;
    void *free_property_list_func;
    void *property_can_revert_func;
    void *property_get_revert_func;
    void *validate_property_func;
    void (*notification_func)(void *instance, int32_t what, gdx_bool reversed);
    void *to_string_func;
    void *reference_func;
    void *unreference_func;
    gdx_object (*create_instance_func)(void *class_userdata, gdx_bool notify_postinitialize);
    void (*free_instance_func)(void *class_userdata, void *instance);
    void *recreate_instance_func;
    void *get_virtual_func;
    void *get_virtual_call_data_func;
    void *call_virtual_with_data_func;
    void *class_userdata;
} gdx_class_info4;

/* GDExtensionInitializationLevel and GDExtensionInitialization. */
typedef enum {
    GDX_INIT_CORE = 0,
    GDX_INIT_SERVERS = 1,
    GDX_INIT_SCENE = 2,
    GDX_INIT_EDITOR = 3,
} gdx_init_level;

typedef struct {
    gdx_init_level minimum_initialization_level;
    void *userdata;
    void (*initialize)(void *userdata, gdx_init_level level);
    void (*deinitialize)(void *userdata, gdx_init_level level);
} gdx_initialization;

/* GDExtensionGodotVersion (get_godot_version) and GDExtensionGodotVersion2 (get_godot_version2, 4.5). */
typedef struct {
    uint32_t major, minor, patch;
    const char *string;
} gdx_godot_version;

typedef struct {
    uint32_t major, minor, patch;
    uint32_t hex; /* 0xMMmmpp */
    const char *status, *build, *hash;
    uint64_t timestamp;
    const char *string;
} gdx_godot_version2;

/* GDExtensionInterfaceGetProcAddress: the engine's function table, looked up by name. */
typedef void (*gdx_function)(void);
typedef gdx_function (*gdx_get_proc_address)(const char *name);

/* What the engine's type-conversion and destructor lookups return. */
typedef void (*gdx_variant_from_type)(gd_variant *r_variant, void *value); /* r_variant uninitialized */
typedef void (*gdx_type_from_variant)(void *r_value, gd_variant *variant); /* r_value uninitialized; converts */
typedef void (*gdx_destructor)(void *value);

/* The engine functions this addon calls, under names every Godot 4.2+ build serves:
** X(name the engine knows it by, return type, (parameters)). */
#define GDX_INTERFACE(X)                                                                                     \
    X(print_error, void, (const char *description, const char *function, const char *file, int32_t line,     \
                          gdx_bool editor_notify))                                                           \
    X(print_warning, void, (const char *description, const char *function, const char *file, int32_t line,   \
                            gdx_bool editor_notify))                                                         \
    X(variant_destroy, void, (gd_variant *))                                                                 \
    X(variant_call, void, (gd_variant *self, const gd_string_name *method, const gd_variant *const *args,    \
                           gdx_int argument_count, gd_variant *r_return /* uninitialized */,                 \
                           gdx_call_error *r_error))                                                         \
    X(variant_get_type, gdx_variant_type, (const gd_variant *))                                              \
    X(variant_stringify, void, (const gd_variant *, gd_string *r_string /* uninitialized */))                \
    X(variant_construct, void, (gdx_variant_type, gd_variant *r_variant /* uninitialized */,                 \
                                const gd_variant *const *args, int32_t argument_count,                       \
                                gdx_call_error *r_error))                                                    \
    X(variant_set_keyed, void, (gd_variant *self, const gd_variant *key, const gd_variant *value,            \
                                gdx_bool *r_valid))                                                          \
    X(variant_get_indexed, void, (const gd_variant *self, gdx_int index,                                     \
                                  gd_variant *r_value /* uninitialized */, gdx_bool *r_valid,                \
                                  gdx_bool *r_out_of_bounds))                                                \
    X(get_variant_from_type_constructor, gdx_variant_from_type, (gdx_variant_type))                          \
    X(get_variant_to_type_constructor, gdx_type_from_variant, (gdx_variant_type))                            \
    X(variant_get_ptr_destructor, gdx_destructor, (gdx_variant_type))                                        \
    X(string_to_utf8_chars, gdx_int, (const gd_string *, char *r_utf8, gdx_int capacity))                    \
    X(string_name_new_with_utf8_chars, void, (gd_string_name *r_name, const char *utf8))                     \
    X(global_get_singleton, gdx_object, (const gd_string_name *name))                                        \
    X(object_set_instance, void, (gdx_object, const gd_string_name *class_name, void *instance))             \
    X(classdb_register_extension_class_method, void, (gdx_library, const gd_string_name *class_name,         \
                                                      const gdx_method_info *))                              \
    X(classdb_register_extension_class_property, void, (gdx_library, const gd_string_name *class_name,       \
                                                        const gdx_property_info *,                           \
                                                        const gd_string_name *setter,                        \
                                                        const gd_string_name *getter))                       \
    X(classdb_register_extension_class_signal, void, (gdx_library, const gd_string_name *class_name,         \
                                                      const gd_string_name *signal,                          \
                                                      const gdx_property_info *arguments, gdx_int count))    \
    X(classdb_unregister_extension_class, void, (gdx_library, const gd_string_name *class_name))

/* Functions Godot renamed after 4.2 (deprecated=no builds serve only the newer names), newest first,
** each with the version that introduced it. One of each group is fetched (godot.c). */
#define GDX_INTERFACE_RENAMED(X)                                                                             \
    X(get_godot_version2, void, (gdx_godot_version2 *)) /* 4.5 */                                            \
    X(get_godot_version, void, (gdx_godot_version *))   /* 4.1 */                                            \
    X(string_new_with_utf8_chars_and_len2, gdx_int, (gd_string *r_string, const char *utf8, gdx_int bytes)) \
    /* 4.3: returns an error code */                                                                         \
    X(string_new_with_utf8_chars_and_len, void, (gd_string *r_string, const char *utf8, gdx_int bytes))      \
    X(classdb_construct_object3, gdx_object, (const gd_string_name *class_name)) /* 4.7 */                   \
    X(classdb_construct_object2, gdx_object, (const gd_string_name *class_name)) /* 4.4 */                   \
    X(classdb_construct_object, gdx_object, (const gd_string_name *class_name))  /* 4.1 */                   \
    X(classdb_register_extension_class6, void, (gdx_library, const gd_string_name *class_name,               \
                                                const gd_string_name *parent, const gdx_class_info4 *))      \
    /* 4.7 */                                                                                                \
    X(classdb_register_extension_class5, void, (gdx_library, const gd_string_name *class_name,               \
                                                const gd_string_name *parent, const gdx_class_info4 *))      \
    /* 4.5 */                                                                                                \
    X(classdb_register_extension_class4, void, (gdx_library, const gd_string_name *class_name,               \
                                                const gd_string_name *parent, const gdx_class_info4 *))      \
    /* 4.4 */                                                                                                \
    X(classdb_register_extension_class2, void, (gdx_library, const gd_string_name *class_name,               \
                                                const gd_string_name *parent, const gdx_class_info2 *))      \
    /* 4.2 */

#endif /* LMPC_GDEXTENSION_H */
