/*
** The C side of liblmpc.so: the exported lmpc_* functions of lmpc.h.
**
** cffi compiles this file together with its generated embedding code. Each public function checks its
** pointers, makes sure the embedded Python is running (booting it with the build-time defaults if the
** host did not), then calls the Python implementation (`_lmpc_py_*`, lmpc_runtime/capi.py), which never
** lets an exception through. Error messages live here, per thread, so lmpc_errmsg works even when Python
** could not start. Handles are small integers disguised as pointers: the library never dereferences
** them, so a stale or forged handle is an error code, not a crash.
*/
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lmpc.h"

/* Implemented in Python (declared to cffi with embedding_api). */
int _lmpc_py_boot(void);
int _lmpc_py_open(int threads, int has_seed, uint64_t seed, int max_npcs, int worker, double duty_cycle,
                  uint64_t *out);
int _lmpc_py_close(uint64_t rt);
int _lmpc_py_npc_load(uint64_t rt, const char *path, const char *npc_id, uint64_t *out);
int _lmpc_py_npc_load_async(uint64_t rt, const char *path, const char *npc_id, uint64_t *out);
int _lmpc_py_npc_unload(uint64_t npc);
int _lmpc_py_say(uint64_t npc, const char *text, int *reply_id);
int _lmpc_py_cancel(uint64_t npc);
int _lmpc_py_set_priority(uint64_t npc, double priority);
int _lmpc_py_set_fact(uint64_t npc, const char *key, const char *value);
int _lmpc_py_set_action_values(uint64_t npc, const char *action, const char *argument, const char *values_json);
int _lmpc_py_tick(uint64_t rt, int64_t budget_us);
int _lmpc_py_poll(uint64_t rt, lmpc_event *event, char *text, size_t text_cap);
int _lmpc_py_save_state(uint64_t npc, const char *path);
int _lmpc_py_load_state(uint64_t npc, const char *path);
int _lmpc_py_save_state_buffer(uint64_t npc, void *buffer, size_t capacity, size_t *len);
int _lmpc_py_load_state_buffer(uint64_t npc, const void *buffer, size_t len);

#define LMPC_BOOT_OK 1 /* what _lmpc_py_boot returns once Python and lmpc_runtime are up */

static __thread char error_message[2048];
static int boot_state = 0; /* 0: not yet; 1: running; -1: failed (for good: Python starts only once) */
static char boot_failure[2048];
static char boot_site[4096];

static int fail(int code, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(error_message, sizeof error_message, format, args);
    va_end(args);
    return code;
}

/* Called from Python to report why a call failed. */
static void lmpc_set_error(const char *message) {
    snprintf(error_message, sizeof error_message, "%s", message ? message : "");
}

/* Called from Python's start-up code: where LMPC's packages are installed. */
static const char *lmpc_boot_site(void) { return boot_site; }

static int is_file(const char *dir, const char *relative) {
    char path[4096];
    struct stat st;
    if (snprintf(path, sizeof path, "%s/%s", dir, relative) >= (int)sizeof path) return 0;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

CFFI_DLLEXPORT int lmpc_abi_version(void) { return LMPC_ABI_VERSION; }

CFFI_DLLEXPORT const char *lmpc_errmsg(void) { return error_message; }

static pthread_mutex_t boot_lock = PTHREAD_MUTEX_INITIALIZER;

static int boot_locked(const char *python_home, const char *site_packages);

CFFI_DLLEXPORT int lmpc_boot(const char *python_home, const char *site_packages) {
    pthread_mutex_lock(&boot_lock);
    int status = boot_locked(python_home, site_packages);
    pthread_mutex_unlock(&boot_lock);
    return status;
}

static int boot_locked(const char *python_home, const char *site_packages) {
    if (boot_state == 1) return LMPC_OK;
    if (boot_state == -1) return fail(LMPC_EBOOT, "%s", boot_failure);
    const char *home = python_home ? python_home : LMPC_DEFAULT_PYTHON_HOME;
    const char *site = site_packages ? site_packages : LMPC_DEFAULT_SITE_PACKAGES;
    /* Checked before Python starts: a Python that cannot find its standard library aborts the process. */
    if (!is_file(home, "lib/" LMPC_PYTHON_DIR "/os.py"))
        return fail(LMPC_EBOOT, "lmpc_boot: %s is not a Python home: no lib/" LMPC_PYTHON_DIR "/os.py in it", home);
    if (!is_dir(site)) return fail(LMPC_EBOOT, "lmpc_boot: site_packages %s is not a directory", site);
    if (snprintf(boot_site, sizeof boot_site, "%s", site) >= (int)sizeof boot_site)
        return fail(LMPC_EINVAL, "lmpc_boot: site_packages path is too long");
    setenv("PYTHONHOME", home, 1);
    /* On the path from the start: cffi imports its own backend before any start-up code runs. */
    const char *old_path = getenv("PYTHONPATH");
    char python_path[8192];
    snprintf(python_path, sizeof python_path, "%s%s%s", site, old_path && *old_path ? ":" : "",
             old_path ? old_path : "");
    setenv("PYTHONPATH", python_path, 1);
    /* The first call into Python starts the interpreter and runs the start-up code. */
    error_message[0] = '\0';
    if (_lmpc_py_boot() != LMPC_BOOT_OK) {
        boot_state = -1;
        snprintf(boot_failure, sizeof boot_failure, "lmpc_boot: the embedded Python failed to start: %s",
                 error_message[0] ? error_message : "see the standard error output");
        return fail(LMPC_EBOOT, "%s", boot_failure);
    }
    boot_state = 1;
    error_message[0] = '\0';
    return LMPC_OK;
}

#define BOOTED()                                            \
    do {                                                    \
        if (boot_state != 1) {                              \
            int status_ = lmpc_boot(NULL, NULL);            \
            if (status_ != LMPC_OK) return status_;         \
        }                                                   \
        error_message[0] = '\0';                            \
    } while (0)

#define HANDLE(p) ((uint64_t)(uintptr_t)(p))

CFFI_DLLEXPORT int lmpc_open(const lmpc_options *options, lmpc_runtime **out) {
    if (!out) return fail(LMPC_EINVAL, "lmpc_open: out is NULL");
    *out = NULL;
    BOOTED();
    lmpc_options o = {LMPC_ABI_VERSION, 0, 0, 0, 0, 0, 0.0};
    if (options) {
        if (options->abi_version != LMPC_ABI_VERSION)
            return fail(LMPC_EINVAL, "lmpc_open: options.abi_version is %d, this library is %d",
                        options->abi_version, LMPC_ABI_VERSION);
        o = *options;
    }
    uint64_t handle = 0;
    int status = _lmpc_py_open(o.threads ? o.threads : 2, o.has_seed, o.seed, o.max_npcs, o.worker,
                               o.duty_cycle != 0.0 ? o.duty_cycle : 0.5, &handle);
    if (status == LMPC_OK) *out = (lmpc_runtime *)(uintptr_t)handle;
    return status;
}

CFFI_DLLEXPORT int lmpc_close(lmpc_runtime *rt) {
    if (!rt) return LMPC_OK;
    BOOTED();
    return _lmpc_py_close(HANDLE(rt));
}

/* lmpc_npc_load and lmpc_npc_load_async: the same checks, then the one or the other Python side. */
static int npc_load(const char *function, int (*load)(uint64_t, const char *, const char *, uint64_t *),
                    lmpc_runtime *rt, const char *bundle_path, const char *npc_id, lmpc_npc **out) {
    if (!out) return fail(LMPC_EINVAL, "%s: out is NULL", function);
    *out = NULL;
    if (!rt) return fail(LMPC_EINVAL, "%s: runtime is NULL", function);
    if (!bundle_path) return fail(LMPC_EINVAL, "%s: bundle_path is NULL", function);
    BOOTED();
    uint64_t handle = 0;
    int status = load(HANDLE(rt), bundle_path, npc_id, &handle);
    if (status == LMPC_OK) *out = (lmpc_npc *)(uintptr_t)handle;
    return status;
}

CFFI_DLLEXPORT int lmpc_npc_load(lmpc_runtime *rt, const char *bundle_path, const char *npc_id, lmpc_npc **out) {
    return npc_load("lmpc_npc_load", _lmpc_py_npc_load, rt, bundle_path, npc_id, out);
}

CFFI_DLLEXPORT int lmpc_npc_load_async(lmpc_runtime *rt, const char *bundle_path, const char *npc_id,
                                       lmpc_npc **out) {
    return npc_load("lmpc_npc_load_async", _lmpc_py_npc_load_async, rt, bundle_path, npc_id, out);
}

CFFI_DLLEXPORT int lmpc_npc_unload(lmpc_npc *npc) {
    if (!npc) return LMPC_OK;
    BOOTED();
    return _lmpc_py_npc_unload(HANDLE(npc));
}

CFFI_DLLEXPORT int lmpc_say(lmpc_npc *npc, const char *text, int *reply_id) {
    if (reply_id) *reply_id = 0;
    if (!npc) return fail(LMPC_EINVAL, "lmpc_say: npc is NULL");
    if (!text) return fail(LMPC_EINVAL, "lmpc_say: text is NULL");
    BOOTED();
    int id = 0;
    int status = _lmpc_py_say(HANDLE(npc), text, &id);
    if (reply_id) *reply_id = id;
    return status;
}

CFFI_DLLEXPORT int lmpc_cancel(lmpc_npc *npc) {
    if (!npc) return fail(LMPC_EINVAL, "lmpc_cancel: npc is NULL");
    BOOTED();
    return _lmpc_py_cancel(HANDLE(npc));
}

CFFI_DLLEXPORT int lmpc_set_priority(lmpc_npc *npc, double priority) {
    if (!npc) return fail(LMPC_EINVAL, "lmpc_set_priority: npc is NULL");
    BOOTED();
    return _lmpc_py_set_priority(HANDLE(npc), priority);
}

CFFI_DLLEXPORT int lmpc_set_fact(lmpc_npc *npc, const char *key, const char *value) {
    if (!npc) return fail(LMPC_EINVAL, "lmpc_set_fact: npc is NULL");
    if (!key || !value) return fail(LMPC_EINVAL, "lmpc_set_fact: key and value must not be NULL");
    BOOTED();
    return _lmpc_py_set_fact(HANDLE(npc), key, value);
}

CFFI_DLLEXPORT int lmpc_set_action_values(lmpc_npc *npc, const char *action, const char *argument,
                                          const char *values_json) {
    if (!npc) return fail(LMPC_EINVAL, "lmpc_set_action_values: npc is NULL");
    if (!action || !argument || !values_json)
        return fail(LMPC_EINVAL, "lmpc_set_action_values: action, argument and values must not be NULL");
    BOOTED();
    return _lmpc_py_set_action_values(HANDLE(npc), action, argument, values_json);
}

CFFI_DLLEXPORT int lmpc_tick(lmpc_runtime *rt, int64_t budget_us) {
    if (!rt) return fail(LMPC_EINVAL, "lmpc_tick: runtime is NULL");
    BOOTED();
    return _lmpc_py_tick(HANDLE(rt), budget_us);
}

CFFI_DLLEXPORT int lmpc_poll(lmpc_runtime *rt, lmpc_event *event, char *text, size_t text_cap) {
    if (!rt) return fail(LMPC_EINVAL, "lmpc_poll: runtime is NULL");
    if (!event) return fail(LMPC_EINVAL, "lmpc_poll: event is NULL");
    if (!text && text_cap) return fail(LMPC_EINVAL, "lmpc_poll: text is NULL but text_cap is %zu", text_cap);
    memset(event, 0, sizeof *event);
    BOOTED();
    return _lmpc_py_poll(HANDLE(rt), event, text, text_cap);
}

CFFI_DLLEXPORT int lmpc_save_state(lmpc_npc *npc, const char *path) {
    if (!npc || !path) return fail(LMPC_EINVAL, "lmpc_save_state: npc and path must not be NULL");
    BOOTED();
    return _lmpc_py_save_state(HANDLE(npc), path);
}

CFFI_DLLEXPORT int lmpc_load_state(lmpc_npc *npc, const char *path) {
    if (!npc || !path) return fail(LMPC_EINVAL, "lmpc_load_state: npc and path must not be NULL");
    BOOTED();
    return _lmpc_py_load_state(HANDLE(npc), path);
}

CFFI_DLLEXPORT int lmpc_save_state_buffer(lmpc_npc *npc, void *buffer, size_t capacity, size_t *len) {
    if (len) *len = 0;
    if (!npc || !len) return fail(LMPC_EINVAL, "lmpc_save_state_buffer: npc and len must not be NULL");
    if (!buffer && capacity) return fail(LMPC_EINVAL, "lmpc_save_state_buffer: buffer is NULL but capacity is %zu", capacity);
    BOOTED();
    return _lmpc_py_save_state_buffer(HANDLE(npc), buffer, capacity, len);
}

CFFI_DLLEXPORT int lmpc_load_state_buffer(lmpc_npc *npc, const void *buffer, size_t len) {
    if (!npc || !buffer) return fail(LMPC_EINVAL, "lmpc_load_state_buffer: npc and buffer must not be NULL");
    BOOTED();
    return _lmpc_py_load_state_buffer(HANDLE(npc), buffer, len);
}
