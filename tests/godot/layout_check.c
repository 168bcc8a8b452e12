/*
** layout_check.c — compile-time proof that the addon's own interface declarations
** (examples/godot/addons/lmpc/src/gdextension.h) match Godot's official gdextension_interface.h.
**
** The official header is not in this repository; point the compiler at a copy of it (godot-cpp's
** gdextension/ folder at a godot-4.2-stable or later tag, or Godot's core/extension/):
**     cc -std=c11 -fsyntax-only -I GODOT_HEADER_DIR -I examples/godot/addons/lmpc/src tests/godot/layout_check.c
** It compiles if and only if every size, offset and value the addon relies on agrees.
*/
#include <stddef.h>

#include "gdextension_interface.h"
#include "gdextension.h"

#define SAME_SIZE(official, ours) _Static_assert(sizeof(official) == sizeof(ours), #ours " size")
#define SAME_FIELD(official, ours, field) \
    _Static_assert(offsetof(official, field) == offsetof(ours, field), #ours "." #field " offset")
#define SAME_VALUE(official, ours) _Static_assert((int)(official) == (int)(ours), #ours " value")

SAME_SIZE(GDExtensionBool, gdx_bool);
SAME_SIZE(GDExtensionInt, gdx_int);

SAME_SIZE(GDExtensionPropertyInfo, gdx_property_info);
SAME_FIELD(GDExtensionPropertyInfo, gdx_property_info, type);
SAME_FIELD(GDExtensionPropertyInfo, gdx_property_info, name);
SAME_FIELD(GDExtensionPropertyInfo, gdx_property_info, class_name);
SAME_FIELD(GDExtensionPropertyInfo, gdx_property_info, hint);
SAME_FIELD(GDExtensionPropertyInfo, gdx_property_info, hint_string);
SAME_FIELD(GDExtensionPropertyInfo, gdx_property_info, usage);

SAME_SIZE(GDExtensionClassMethodInfo, gdx_method_info);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, name);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, method_userdata);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, call_func);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, ptrcall_func);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, method_flags);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, has_return_value);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, return_value_info);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, return_value_metadata);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, argument_count);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, arguments_info);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, arguments_metadata);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, default_argument_count);
SAME_FIELD(GDExtensionClassMethodInfo, gdx_method_info, default_arguments);

SAME_SIZE(GDExtensionClassCreationInfo2, gdx_class_info2);
SAME_FIELD(GDExtensionClassCreationInfo2, gdx_class_info2, is_exposed);
SAME_FIELD(GDExtensionClassCreationInfo2, gdx_class_info2, notification_func);
SAME_FIELD(GDExtensionClassCreationInfo2, gdx_class_info2, create_instance_func);
SAME_FIELD(GDExtensionClassCreationInfo2, gdx_class_info2, free_instance_func);
SAME_FIELD(GDExtensionClassCreationInfo2, gdx_class_info2, class_userdata);

SAME_SIZE(GDExtensionInitialization, gdx_initialization);
SAME_FIELD(GDExtensionInitialization, gdx_initialization, minimum_initialization_level);
SAME_FIELD(GDExtensionInitialization, gdx_initialization, userdata);
SAME_FIELD(GDExtensionInitialization, gdx_initialization, initialize);
SAME_FIELD(GDExtensionInitialization, gdx_initialization, deinitialize);

SAME_SIZE(GDExtensionGodotVersion, gdx_godot_version);
SAME_FIELD(GDExtensionGodotVersion, gdx_godot_version, string);
SAME_SIZE(GDExtensionCallError, gdx_call_error);
SAME_FIELD(GDExtensionCallError, gdx_call_error, argument);
SAME_FIELD(GDExtensionCallError, gdx_call_error, expected);

SAME_VALUE(GDEXTENSION_VARIANT_TYPE_NIL, GDX_TYPE_NIL);
SAME_VALUE(GDEXTENSION_VARIANT_TYPE_BOOL, GDX_TYPE_BOOL);
SAME_VALUE(GDEXTENSION_VARIANT_TYPE_INT, GDX_TYPE_INT);
SAME_VALUE(GDEXTENSION_VARIANT_TYPE_FLOAT, GDX_TYPE_FLOAT);
SAME_VALUE(GDEXTENSION_VARIANT_TYPE_STRING, GDX_TYPE_STRING);
SAME_VALUE(GDEXTENSION_VARIANT_TYPE_STRING_NAME, GDX_TYPE_STRING_NAME);
SAME_VALUE(GDEXTENSION_VARIANT_TYPE_OBJECT, GDX_TYPE_OBJECT);
SAME_VALUE(GDEXTENSION_VARIANT_TYPE_DICTIONARY, GDX_TYPE_DICTIONARY);
SAME_VALUE(GDEXTENSION_VARIANT_TYPE_ARRAY, GDX_TYPE_ARRAY);
SAME_VALUE(GDEXTENSION_VARIANT_TYPE_PACKED_STRING_ARRAY, GDX_TYPE_PACKED_STRING_ARRAY);
SAME_VALUE(GDEXTENSION_CALL_OK, GDX_CALL_OK);
SAME_VALUE(GDEXTENSION_CALL_ERROR_INVALID_METHOD, GDX_CALL_ERROR_INVALID_METHOD);
SAME_VALUE(GDEXTENSION_CALL_ERROR_INVALID_ARGUMENT, GDX_CALL_ERROR_INVALID_ARGUMENT);
SAME_VALUE(GDEXTENSION_CALL_ERROR_TOO_MANY_ARGUMENTS, GDX_CALL_ERROR_TOO_MANY_ARGUMENTS);
SAME_VALUE(GDEXTENSION_CALL_ERROR_TOO_FEW_ARGUMENTS, GDX_CALL_ERROR_TOO_FEW_ARGUMENTS);
SAME_VALUE(GDEXTENSION_METHOD_FLAGS_DEFAULT, GDX_METHOD_FLAGS_DEFAULT);
SAME_VALUE(GDEXTENSION_METHOD_ARGUMENT_METADATA_NONE, GDX_METADATA_NONE);
SAME_VALUE(GDEXTENSION_INITIALIZATION_CORE, GDX_INIT_CORE);
SAME_VALUE(GDEXTENSION_INITIALIZATION_SCENE, GDX_INIT_SCENE);
SAME_VALUE(GDEXTENSION_INITIALIZATION_EDITOR, GDX_INIT_EDITOR);
