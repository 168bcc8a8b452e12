/*
** fake_liblmpc.c — a liblmpc.so without a model, for tests/godot/harness.c's "actions" scenario: LMPC's
** C ABI (bindings/lmpc.h) whose replies are scripted by the lines said to them, so the addon meets the
** events a tiny random model never writes (actions) with texts the test chooses.
**
** Loading an NPC succeeds at once (one LOADED event). Every line said is answered at once: STARTED, TEXT
** "Then take it.", then for each line of what was said, "act JSON" gives an ACTION event whose text is
** JSON and "feel LABEL" an EMOTION event, then DONE. lmpc_set_action_values accepts the action give_item
** only, and keeps what it was given for fake_lmpc_action_values(). Single-threaded, like the addon.
*/
#define _POSIX_C_SOURCE 200809L /* strdup */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmpc.h"

#define EXPORT __attribute__((visibility("default")))
#define REPLY "Then take it."

struct lmpc_runtime {
    int open;
};

struct lmpc_npc {
    int replies;
};

static struct lmpc_runtime runtime;
static char message[512] = "";
static char action_values[1024] = "";

typedef struct {
    lmpc_event event;
    char *text;
} queued;

static queued queue[64];
static int queue_length;

static int fail(int status, const char *text) {
    snprintf(message, sizeof message, "%s", text);
    return status;
}

static int push(lmpc_npc *npc, int kind, int finish, const char *text, size_t length) {
    if (queue_length == 64) return fail(LMPC_ENOMEM, "fake: the event queue is full");
    queued *q = &queue[queue_length++];
    q->event = (lmpc_event){kind, finish, npc->replies, 0, npc, length};
    q->text = strndup(text, length);
    return LMPC_OK;
}

/* Drop the waiting events of `npc` (all of them for NULL). */
static void drop(lmpc_npc *npc) {
    int kept = 0;
    for (int i = 0; i < queue_length; i++) {
        if (npc && queue[i].event.npc != npc) {
            queue[kept++] = queue[i];
        } else {
            free(queue[i].text);
        }
    }
    queue_length = kept;
}

EXPORT int lmpc_abi_version(void) { return LMPC_ABI_VERSION; }

EXPORT const char *lmpc_errmsg(void) { return message; }

EXPORT int lmpc_boot(const char *python_home, const char *site_packages) {
    (void)python_home, (void)site_packages;
    return LMPC_OK;
}

EXPORT int lmpc_open(const lmpc_options *options, lmpc_runtime **out) {
    (void)options;
    if (runtime.open) return fail(LMPC_ESTATE, "fake: one runtime at a time");
    runtime.open = 1;
    *out = &runtime;
    return LMPC_OK;
}

EXPORT int lmpc_close(lmpc_runtime *rt) {
    if (rt) rt->open = 0;
    drop(NULL);
    return LMPC_OK;
}

EXPORT int lmpc_npc_load_async(lmpc_runtime *rt, const char *bundle_path, const char *npc_id, lmpc_npc **out) {
    (void)rt, (void)bundle_path, (void)npc_id;
    *out = calloc(1, sizeof **out);
    return push(*out, LMPC_EVENT_LOADED, 0, "", 0);
}

EXPORT int lmpc_npc_unload(lmpc_npc *npc) {
    drop(npc);
    free(npc);
    return LMPC_OK;
}

EXPORT int lmpc_say(lmpc_npc *npc, const char *text, int *reply_id) {
    npc->replies++;
    if (reply_id) *reply_id = npc->replies;
    push(npc, LMPC_EVENT_STARTED, 0, "", 0);
    push(npc, LMPC_EVENT_TEXT, 0, REPLY, strlen(REPLY));
    for (const char *line = text; *line;) {
        size_t length = strcspn(line, "\n");
        if (!strncmp(line, "act ", 4)) push(npc, LMPC_EVENT_ACTION, 0, line + 4, length - 4);
        if (!strncmp(line, "feel ", 5)) push(npc, LMPC_EVENT_EMOTION, 0, line + 5, length - 5);
        line += length + (line[length] == '\n');
    }
    return push(npc, LMPC_EVENT_DONE, LMPC_FINISH_END_OF_TURN, REPLY, strlen(REPLY));
}

EXPORT int lmpc_cancel(lmpc_npc *npc) {
    (void)npc;
    return LMPC_OK;
}

EXPORT int lmpc_set_priority(lmpc_npc *npc, double priority) {
    (void)npc, (void)priority;
    return LMPC_OK;
}

EXPORT int lmpc_set_fact(lmpc_npc *npc, const char *key, const char *value) {
    (void)npc, (void)key, (void)value;
    return LMPC_OK;
}

EXPORT int lmpc_set_action_values(lmpc_npc *npc, const char *action, const char *argument, const char *values_json) {
    (void)npc;
    if (strcmp(action, "give_item") != 0) {
        snprintf(message, sizeof message, "fake: no action \"%s\"", action);
        return LMPC_EINVAL;
    }
    snprintf(action_values, sizeof action_values, "%s %s %s", action, argument, values_json);
    return LMPC_OK;
}

/* What the last accepted lmpc_set_action_values was given: "ACTION ARGUMENT VALUES_JSON". */
EXPORT const char *fake_lmpc_action_values(void) { return action_values; }

EXPORT int lmpc_tick(lmpc_runtime *rt, int64_t budget_us) {
    (void)rt, (void)budget_us;
    return LMPC_DONE; /* the replies were written when the lines were said */
}

EXPORT int lmpc_poll(lmpc_runtime *rt, lmpc_event *event, char *text, size_t text_cap) {
    (void)rt;
    if (queue_length == 0) return LMPC_DONE;
    *event = queue[0].event;
    if (event->text_len + 1 > text_cap) return LMPC_ETOOSMALL;
    memcpy(text, queue[0].text, event->text_len + 1);
    free(queue[0].text);
    memmove(queue, queue + 1, (size_t)--queue_length * sizeof queue[0]);
    return LMPC_OK;
}

EXPORT int lmpc_save_state(lmpc_npc *npc, const char *path) {
    (void)npc, (void)path;
    return fail(LMPC_ESAVE, "fake: no state to save");
}

EXPORT int lmpc_load_state(lmpc_npc *npc, const char *path) {
    (void)npc, (void)path;
    return fail(LMPC_ESAVE, "fake: no state to load");
}
