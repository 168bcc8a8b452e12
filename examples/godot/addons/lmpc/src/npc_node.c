/* npc_node.c — the LmpcNpc class (see nodes.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "nodes.h"

/* Report a failure the Godot way (an error print naming this C function) and on the `error` signal.
** Returns false, for `return NPC_FAIL(...)`. */
#define NPC_FAIL(self, ...) npc_fail(self, __func__, __LINE__, __VA_ARGS__)

static bool npc_fail(npc_node *self, const char *function, int line, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

static bool npc_fail(npc_node *self, const char *function, int line, const char *format, ...) {
    char message[2048];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    gd.print_error(message, function, __FILE__, line, false);
    if (self->base.owner) gd_emit(self->base.owner, "error", message);
    return false;
}

static bool loaded(npc_node *self, const char *method) {
    if (self->npc && self->ready) return true;
    if (self->npc)
        return NPC_FAIL(self, "LmpcNpc.%s: the NPC is still loading (bundle_path \"%s\"): wait for its loaded signal",
                        method, self->bundle_path ? self->bundle_path : "");
    return NPC_FAIL(self, "LmpcNpc.%s: no NPC is loaded (bundle_path \"%s\"): it loads when the node is ready, "
                    "or with load_bundle()", method, self->bundle_path ? self->bundle_path : "");
}

/* -- loading ------------------------------------------------------------------------------------ */

static void npc_unload(npc_node *self) {
    if (!self->runtime) return;
    self->runtime->lmpc->npc_unload(self->npc);
    runtime_detach(self->runtime, self);
    self->npc = NULL;
    self->ready = false;
    self->progress = 0;
}

void npc_forget_runtime(npc_node *self) {
    self->runtime = NULL;
    self->npc = NULL;
    self->next = NULL;
    self->ready = false;
    self->progress = 0;
}

static bool npc_load(npc_node *self) {
    if (!self->bundle_path || !*self->bundle_path)
        return NPC_FAIL(self, "LmpcNpc.load_bundle: bundle_path is not set");
    runtime_node *runtime = runtime_active();
    if (!runtime)
        return NPC_FAIL(self, "LmpcNpc.load_bundle: no LmpcRuntime is in the scene tree "
                              "(add res://addons/lmpc/lmpc_runtime.tscn as an autoload)");
    const char *why = runtime_open(runtime);
    if (why) return NPC_FAIL(self, "LmpcNpc.load_bundle: the LMPC runtime could not start: %s", why);
    npc_unload(self);
    char *path = gd_globalize_path(self->bundle_path);
    if (!path) return NPC_FAIL(self, "LmpcNpc.load_bundle: out of memory");
    lmpc_npc *handle = NULL;
    int status = runtime->lmpc->npc_load_async(runtime->rt, path, NULL, &handle);
    free(path);
    if (status != LMPC_OK)
        return NPC_FAIL(self, "LmpcNpc.load_bundle: %s: %s", self->bundle_path, runtime->lmpc->errmsg());
    self->npc = handle;
    runtime_attach(runtime, self);
    runtime->idle = false; /* the load's events come through the runtime's frames */
    return true;
}

/* The end of the background load: ready to talk (with the priority set meanwhile), or failed. */
static void npc_on_loaded(npc_node *self, const lmpc_event *event, const char *text) {
    if (event->finish != 0) {
        runtime_detach(self->runtime, self); /* the handle is no longer valid */
        self->npc = NULL;
        self->progress = 0;
        NPC_FAIL(self, "LmpcNpc.load_bundle: %s: %s", self->bundle_path ? self->bundle_path : "", text);
        return;
    }
    self->ready = true;
    self->progress = 1;
    if (self->runtime->lmpc->set_priority(self->npc, self->priority) != LMPC_OK) {
        NPC_FAIL(self, "LmpcNpc.load_bundle: priority: %s", self->runtime->lmpc->errmsg());
        return;
    }
    gd_emit(self->base.owner, "loaded", NULL);
}

/* -- streaming ---------------------------------------------------------------------------------- */

static bool reply_append(npc_node *self, const char *text, size_t length) {
    if (self->reply_length + length + 1 > self->reply_capacity) {
        size_t capacity = 2 * (self->reply_length + length + 1);
        char *bigger = realloc(self->reply, capacity);
        if (!bigger) return false;
        self->reply = bigger;
        self->reply_capacity = capacity;
    }
    memcpy(self->reply + self->reply_length, text, length);
    self->reply_length += length;
    self->reply[self->reply_length] = '\0';
    return true;
}

static void add_argument(void *dictionary, const char *key, const char *value) {
    gd_dictionary_set_string(dictionary, key, value);
}

/* An action the reply asks the game to carry out: action_requested(name, args), args a Dictionary of
** Strings. The event's JSON is read from a copy, which the reading unescapes in place. */
static void npc_on_action(npc_node *self, const lmpc_event *event, const char *text) {
    char *copy = malloc(event->text_len + 1);
    if (!copy) {
        NPC_FAIL(self, "LmpcNpc: out of memory for the reply's action");
        return;
    }
    memcpy(copy, text, event->text_len + 1);
    gd_variant name, args;
    const char *action = NULL;
    gd_variant_new_dictionary(&args);
    if (json_read_action(copy, &action, add_argument, &args)) {
        const gd_variant *values[2] = {&name, &args};
        gd_variant_new_string(&name, action);
        gd_emit_variants(self->base.owner, "action_requested", values, 2);
        gd_variant_free(&name);
    } else {
        NPC_FAIL(self, "LmpcNpc: the reply's action is not one this addon can read: %.200s", text);
    }
    gd_variant_free(&args);
    free(copy);
}

void npc_on_event(npc_node *self, const lmpc_event *event, const char *text) {
    /* The emit comes last: a handler may free this NPC. */
    switch (event->kind) {
    case LMPC_EVENT_STARTED:
        self->reply_length = 0;
        gd_emit(self->base.owner, "reply_started", NULL);
        break;
    case LMPC_EVENT_TEXT:
        if (!reply_append(self, text, event->text_len)) {
            NPC_FAIL(self, "LmpcNpc: out of memory for the reply");
            break;
        }
        gd_emit(self->base.owner, "reply_updated", self->reply);
        break;
    case LMPC_EVENT_ERROR: NPC_FAIL(self, "LmpcNpc: the reply failed: %s", text); break;
    case LMPC_EVENT_DONE:
        self->reply_length = 0;
        gd_emit(self->base.owner, "reply_finished", text);
        break;
    case LMPC_EVENT_LOADING:
        self->progress = event->tokens / 100.0;
        gd_emit(self->base.owner, "loading", text);
        break;
    case LMPC_EVENT_LOADED: npc_on_loaded(self, event, text); break;
    case LMPC_EVENT_ACTION: npc_on_action(self, event, text); break;
    case LMPC_EVENT_EMOTION: gd_emit(self->base.owner, "emotion_changed", text); break;
    default: break; /* sentences and summaries are not surfaced as signals */
    }
}

/* -- methods ------------------------------------------------------------------------------------ */

static bool say(npc_node *self, const char *text) {
    if (!loaded(self, "say")) return false;
    if (self->runtime->lmpc->say(self->npc, text, NULL) != LMPC_OK)
        return NPC_FAIL(self, "LmpcNpc.say: %s", self->runtime->lmpc->errmsg());
    self->runtime->idle = false;
    return true;
}

static bool set_fact(npc_node *self, const char *key, const char *value) {
    if (!loaded(self, "set_fact")) return false;
    if (self->runtime->lmpc->set_fact(self->npc, key, value) != LMPC_OK)
        return NPC_FAIL(self, "LmpcNpc.set_fact: %s", self->runtime->lmpc->errmsg());
    return true;
}

static bool set_action_values(npc_node *self, const char *action, const char *argument, const char *values_json) {
    if (!loaded(self, "set_action_values")) return false;
    if (self->runtime->lmpc->set_action_values(self->npc, action, argument, values_json) != LMPC_OK)
        return NPC_FAIL(self, "LmpcNpc.set_action_values: %s", self->runtime->lmpc->errmsg());
    return true;
}

/* save_state and load_state, to or from a res://, user:// or disk path. */
static bool state(npc_node *self, bool save, const char *path) {
    const char *method = save ? "save_state" : "load_state";
    if (!loaded(self, method)) return false;
    char *global = gd_globalize_path(path);
    if (!global) return NPC_FAIL(self, "LmpcNpc.%s: out of memory", method);
    const struct lmpc_api *lmpc = self->runtime->lmpc;
    int status = save ? lmpc->save_state(self->npc, global) : lmpc->load_state(self->npc, global);
    free(global);
    if (status != LMPC_OK) return NPC_FAIL(self, "LmpcNpc.%s: %s: %s", method, path, lmpc->errmsg());
    return true;
}

static void npc_load_bundle(void *ptr, const value *args, value *result) {
    (void)args;
    result->b = npc_load(ptr);
}

static void npc_is_loaded(void *ptr, const value *args, value *result) {
    (void)args;
    result->b = ((npc_node *)ptr)->npc && ((npc_node *)ptr)->ready;
}

static void npc_is_loading(void *ptr, const value *args, value *result) {
    (void)args;
    result->b = ((npc_node *)ptr)->npc && !((npc_node *)ptr)->ready;
}

static void npc_load_progress(void *ptr, const value *args, value *result) {
    (void)args;
    result->f = ((npc_node *)ptr)->progress;
}

static void npc_say(void *ptr, const value *args, value *result) { result->b = say(ptr, args[0].s); }

static void npc_cancel(void *ptr, const value *args, value *result) {
    (void)args, (void)result;
    npc_node *self = ptr;
    if (self->npc && self->ready && self->runtime->lmpc->cancel(self->npc) != LMPC_OK)
        NPC_FAIL(self, "LmpcNpc.cancel: %s", self->runtime->lmpc->errmsg());
}

static void npc_set_fact(void *ptr, const value *args, value *result) {
    result->b = set_fact(ptr, args[0].s, args[1].s);
}

static void npc_set_action_values(void *ptr, const value *args, value *result) {
    result->b = set_action_values(ptr, args[0].s, args[1].s, args[2].s);
}

static void npc_save_state(void *ptr, const value *args, value *result) { result->b = state(ptr, true, args[0].s); }

static void npc_load_state(void *ptr, const value *args, value *result) { result->b = state(ptr, false, args[0].s); }

static void npc_priority_changed(void *ptr) {
    npc_node *self = ptr;
    if (self->npc && self->ready && self->runtime->lmpc->set_priority(self->npc, self->priority) != LMPC_OK)
        NPC_FAIL(self, "LmpcNpc.set_priority: %s", self->runtime->lmpc->errmsg());
}

/* -- the class ---------------------------------------------------------------------------------- */

static void npc_notify(void *ptr, int what) {
    /* Start loading when the node is ready in the game (never in the editor, which instantiates nodes too). */
    if (what == GDX_NOTIFICATION_READY && !gd_is_editor()) npc_load(ptr);
}

static void npc_init(void *ptr) { ((npc_node *)ptr)->priority = LMPC_PRIORITY_NORMAL; }

static void npc_destroy(void *ptr) {
    npc_node *self = ptr;
    npc_unload(self);
    free(self->reply);
    self->reply = NULL;
    self->reply_length = self->reply_capacity = 0;
}

static void npc_bad_call(void *ptr, const char *message) { NPC_FAIL(ptr, "%s", message); }

static const method_desc npc_methods[] = {
    {"load_bundle", KIND_BOOL, 0, {0}, {0}, npc_load_bundle},
    {"is_loaded", KIND_BOOL, 0, {0}, {0}, npc_is_loaded},
    {"is_loading", KIND_BOOL, 0, {0}, {0}, npc_is_loading},
    {"load_progress", KIND_FLOAT, 0, {0}, {0}, npc_load_progress},
    {"say", KIND_BOOL, 1, {KIND_STRING}, {"text"}, npc_say},
    {"cancel", KIND_VOID, 0, {0}, {0}, npc_cancel},
    {"set_fact", KIND_BOOL, 2, {KIND_STRING, KIND_ANY}, {"key", "value"}, npc_set_fact},
    {"set_action_values", KIND_BOOL, 3, {KIND_STRING, KIND_STRING, KIND_STRINGS}, {"action", "argument", "values"},
     npc_set_action_values},
    {"save_state", KIND_BOOL, 1, {KIND_STRING}, {"path"}, npc_save_state},
    {"load_state", KIND_BOOL, 1, {KIND_STRING}, {"path"}, npc_load_state},
};

static const property_desc npc_properties[] = {
    {"bundle_path", KIND_STRING, offsetof(npc_node, bundle_path), 0, 0, GDX_HINT_DIR, NULL, NULL},
    {"priority", KIND_FLOAT, offsetof(npc_node, priority), -1e6, 1e6, GDX_HINT_RANGE, "-10,10,1,or_greater,or_less",
     npc_priority_changed},
};

static const signal_desc npc_signals[] = {
    /* a stage of the background load begins; load_progress() says how far it is */
    {"loading", 1, {KIND_STRING}, {"stage"}},
    {"loaded", 0, {0}, {0}}, /* the NPC can talk */
    {"reply_started", 0, {0}, {0}},
    {"reply_updated", 1, {KIND_STRING}, {"text"}},  /* the whole reply so far */
    {"reply_finished", 1, {KIND_STRING}, {"text"}}, /* the final reply */
    /* The reply's typed tail (a sheet with actions or emotions), just before reply_finished. */
    {"action_requested", 2, {KIND_STRING, KIND_DICTIONARY}, {"name", "args"}}, /* args: String to String */
    {"emotion_changed", 1, {KIND_STRING}, {"label"}},
    {"error", 1, {KIND_STRING}, {"message"}},
};

const class_desc npc_class = {
    .name = "LmpcNpc",
    .parent = "Node",
    .instance_size = sizeof(npc_node),
    .methods = npc_methods,
    .method_count = sizeof npc_methods / sizeof npc_methods[0],
    .properties = npc_properties,
    .property_count = sizeof npc_properties / sizeof npc_properties[0],
    .signals = npc_signals,
    .signal_count = sizeof npc_signals / sizeof npc_signals[0],
    .init = npc_init,
    .destroy = npc_destroy,
    .notify = npc_notify,
    .bad_call = npc_bad_call,
};
