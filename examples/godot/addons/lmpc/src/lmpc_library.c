/* lmpc_library.c — see lmpc_library.h. */
#define _GNU_SOURCE /* dladdr */
#include "lmpc_library.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#define LIBRARY_NAME "liblmpc.so"

static struct lmpc_api api;
static int loaded;
static char failure[4096 + 256]; /* a path and a sentence */

/* liblmpc.so sits in the same folder as this addon's library (the .gdextension's [dependencies]
** put it there in exported games too). */
static int library_path(char *path, size_t size) {
    Dl_info self;
    if (!dladdr((void *)&lmpc_library, &self) || !self.dli_fname) return 0;
    const char *slash = strrchr(self.dli_fname, '/');
    int dir_length = slash ? (int)(slash - self.dli_fname) : 1;
    const char *dir = slash ? self.dli_fname : ".";
    return snprintf(path, size, "%.*s/%s", dir_length, dir, LIBRARY_NAME) < (int)size;
}

const struct lmpc_api *lmpc_library(const char **error) {
    if (loaded) return &api;
    char path[4096];
    if (!library_path(path, sizeof path)) {
        snprintf(failure, sizeof failure, "cannot tell where the LMPC addon's library is, to find " LIBRARY_NAME);
        *error = failure;
        return NULL;
    }
    /* Never closed: the embedded Python cannot be unloaded. RTLD_GLOBAL: see lmpc_library.h. */
    void *handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (!handle) {
        snprintf(failure, sizeof failure, "cannot load the LMPC library: %s", dlerror());
        *error = failure;
        return NULL;
    }
    struct lmpc_api found;
#define LMPC_LOOKUP(name)                                                                                   \
    *(void **)&found.name = dlsym(handle, "lmpc_" #name);                                                   \
    if (!found.name) {                                                                                      \
        snprintf(failure, sizeof failure, "%s has no lmpc_" #name ": it is not an LMPC library of ABI %d",  \
                 path, LMPC_ABI_VERSION);                                                                   \
        *error = failure;                                                                                   \
        return NULL;                                                                                        \
    }
    LMPC_FUNCTIONS(LMPC_LOOKUP)
#undef LMPC_LOOKUP
    if (found.abi_version() != LMPC_ABI_VERSION) {
        snprintf(failure, sizeof failure, "%s implements LMPC ABI %d, this addon was built for ABI %d", path,
                 found.abi_version(), LMPC_ABI_VERSION);
        *error = failure;
        return NULL;
    }
    api = found;
    loaded = 1;
    return &api;
}
