/*
** lmpc_library.h — LMPC's C ABI (bindings/lmpc.h), loaded at run time from liblmpc.so beside this addon.
**
** Why dlopen and not a link-time dependency: Godot opens extensions with RTLD_DEEPBIND and without
** RTLD_GLOBAL, so a liblmpc.so pulled in as a dependency would bring libpython into a private symbol
** scope, and the Python extension modules the embedded interpreter imports later (numpy, onnxruntime,
** tokenizers), which expect libpython's symbols to be global, would fail to load. Opening liblmpc.so
** ourselves with RTLD_GLOBAL makes it and libpython global. It also lets a missing or mismatched library
** become an error message on the nodes instead of Godot refusing to load the whole addon.
*/
#ifndef LMPC_LIBRARY_H
#define LMPC_LIBRARY_H

#include "lmpc.h"

/* The lmpc_* functions the addon calls, without their prefix: lmpc->say(...) calls lmpc_say. */
#define LMPC_FUNCTIONS(X)                                                                              \
    X(abi_version) X(errmsg) X(boot) X(open) X(close) X(npc_load_async) X(npc_unload) X(say) X(cancel) \
    X(set_priority) X(set_fact) X(set_action_values) X(tick) X(poll) X(save_state) X(load_state)

#define LMPC_FIELD(name) __typeof__(lmpc_##name) *name;
struct lmpc_api {
    LMPC_FUNCTIONS(LMPC_FIELD)
};
#undef LMPC_FIELD

/* The loaded library (loaded on the first call), or NULL with *error saying why (a static message). */
const struct lmpc_api *lmpc_library(const char **error);

#endif /* LMPC_LIBRARY_H */
