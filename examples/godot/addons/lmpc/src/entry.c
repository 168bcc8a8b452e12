/*
** entry.c — the entry symbol named in lmpc.gdextension. Godot calls it once when it loads the addon:
** it fetches the engine functions, then registers LmpcRuntime and LmpcNpc at the scene level.
*/
#include "nodes.h"

static gdx_library library;

static void initialize(void *userdata, gdx_init_level level) {
    (void)userdata;
    static const class_desc *const classes[] = {&runtime_class, &npc_class};
    if (level == GDX_INIT_SCENE && !classes_register(library, classes, 2))
        GD_ERROR("LMPC: out of memory while registering its classes");
}

static void deinitialize(void *userdata, gdx_init_level level) {
    (void)userdata;
    if (level == GDX_INIT_SCENE) classes_unregister();
}

__attribute__((visibility("default"))) gdx_bool lmpc_godot_init(gdx_get_proc_address get_proc_address,
                                                                 gdx_library lib, gdx_initialization *r_init) {
    const char *missing = NULL;
    if (!godot_bind(get_proc_address, &missing)) {
        if (gd.print_error) GD_ERROR("LMPC: this Godot has no interface function %s; LMPC needs Godot 4.2 or later", missing);
        return 0;
    }
    uint32_t major, minor;
    const char *version;
    gd_godot_version(&major, &minor, &version);
    if (major != 4 || minor < 2) {
        GD_ERROR("LMPC: needs Godot 4.2 or a later 4.x, not %s", version);
        return 0;
    }
    library = lib;
    r_init->minimum_initialization_level = GDX_INIT_SCENE;
    r_init->userdata = NULL;
    r_init->initialize = initialize;
    r_init->deinitialize = deinitialize;
    return 1;
}
