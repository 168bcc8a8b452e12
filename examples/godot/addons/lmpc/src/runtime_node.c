/* runtime_node.c — the LmpcRuntime class (see nodes.h). */
#include <stdint.h>
#include <stdlib.h>

#include "nodes.h"

static runtime_node *active; /* the one NPCs load into */

runtime_node *runtime_active(void) { return active; }

static const char *or_null(const char *text) { return text && *text ? text : NULL; }

const char *runtime_open(runtime_node *self) {
    if (self->rt) return NULL;
    const char *why = NULL;
    const struct lmpc_api *lmpc = lmpc_library(&why);
    if (!lmpc) return why;
    if (lmpc->boot(or_null(self->python_home), or_null(self->site_packages)) != LMPC_OK) return lmpc->errmsg();
    lmpc_options options = {
        .abi_version = LMPC_ABI_VERSION,
        .threads = (int)self->threads,
        .has_seed = self->seed >= 0,
        .seed = self->seed >= 0 ? (uint64_t)self->seed : 0,
        .worker = self->worker,
    };
    if (lmpc->open(&options, &self->rt) != LMPC_OK) return lmpc->errmsg();
    self->lmpc = lmpc;
    self->threaded = self->worker;
    return NULL;
}

static void runtime_close(runtime_node *self) {
    while (self->npcs) {
        npc_node *npc = self->npcs;
        self->npcs = npc->next;
        npc_forget_runtime(npc);
    }
    if (self->rt) self->lmpc->close(self->rt); /* unloads its NPCs */
    self->rt = NULL;
}

void runtime_attach(runtime_node *self, npc_node *npc) {
    npc->runtime = self;
    npc->next = self->npcs;
    self->npcs = npc;
}

void runtime_detach(runtime_node *self, npc_node *npc) {
    for (npc_node **link = &self->npcs; *link; link = &(*link)->next) {
        if (*link == npc) {
            *link = npc->next;
            break;
        }
    }
    npc->runtime = NULL;
    npc->next = NULL;
}

static npc_node *npc_of(runtime_node *self, lmpc_npc *handle) {
    for (npc_node *npc = self->npcs; npc; npc = npc->next)
        if (npc->npc == handle) return npc;
    return NULL; /* unloaded since */
}

/* Hand every waiting event to its NPC. Signal handlers run inside; they may free NPCs, load new ones, or
** free or remove this runtime (which closes rt and ends the loop). */
static void dispatch(runtime_node *self) {
    lmpc_event event;
    while (self->rt) {
        int status = self->lmpc->poll(self->rt, &event, self->text, self->text_capacity);
        if (status == LMPC_DONE) return;
        if (status == LMPC_ETOOSMALL) {
            char *bigger = realloc(self->text, event.text_len + 1);
            if (!bigger) {
                GD_ERROR("LmpcRuntime: out of memory for an event of %zu bytes", event.text_len);
                return;
            }
            self->text = bigger;
            self->text_capacity = event.text_len + 1;
            continue;
        }
        if (status != LMPC_OK) {
            GD_ERROR("LmpcRuntime: lmpc_poll failed: %s", self->lmpc->errmsg());
            return;
        }
        npc_node *npc = npc_of(self, event.npc);
        if (npc) npc_on_event(npc, &event, self->text);
    }
}

static void runtime_process(runtime_node *self) {
    if (!self->rt || self->idle) return;
    int status = self->lmpc->tick(self->rt, (int64_t)(self->budget_ms * 1000.0));
    if (status < 0 && !self->tick_failing) GD_ERROR("LmpcRuntime: lmpc_tick failed: %s", self->lmpc->errmsg());
    self->tick_failing = status < 0;
    /* In tick mode all work happens in lmpc_tick: once it has none left and its events are out, the frames
    ** can skip LMPC until a line is said. A worker's state is seen late, so worker mode keeps asking. */
    self->idle = status == LMPC_DONE && !self->threaded;
    dispatch(self);
}

/* In the game (not the editor): tick every frame, and start Python and the runtime now, while the game
** loads, rather than when the first NPC needs them. */
static void runtime_ready(runtime_node *self) {
    gd_variant on;
    const gd_variant *args[1] = {&on};
    gd_variant_new_bool(&on, true);
    gd_call(self->base.owner, "set_process", args, 1, NULL);
    gd_variant_free(&on);
    const char *why = runtime_open(self);
    if (why) GD_ERROR("LmpcRuntime: the LMPC runtime could not start: %s", why);
}

static void runtime_notify(void *ptr, int what) {
    runtime_node *self = ptr;
    switch (what) {
    case GDX_NOTIFICATION_ENTER_TREE:
        if (!active) {
            active = self;
        } else if (active != self) {
            GD_WARNING("LmpcRuntime: another LmpcRuntime is already active; this one stays idle");
        }
        break;
    case GDX_NOTIFICATION_READY:
        if (active == self && !gd_is_editor()) runtime_ready(self);
        break;
    case GDX_NOTIFICATION_PROCESS: runtime_process(self); break;
    case GDX_NOTIFICATION_EXIT_TREE:
        if (active == self) {
            runtime_close(self);
            active = NULL;
        }
        break;
    default: break;
    }
}

static void runtime_init(void *ptr) {
    runtime_node *self = ptr;
    self->budget_ms = 4.0;
    self->seed = -1;
}

static void runtime_destroy(void *ptr) {
    runtime_node *self = ptr;
    runtime_close(self);
    if (active == self) active = NULL;
    free(self->text);
    self->text = NULL;
    self->text_capacity = 0;
}

static void runtime_bad_call(void *ptr, const char *message) {
    (void)ptr;
    GD_ERROR("%s", message);
}

static const property_desc runtime_properties[] = {
    {"budget_ms", KIND_FLOAT, offsetof(runtime_node, budget_ms), 0, 1000, GDX_HINT_RANGE,
     "0,33,0.1,or_greater,suffix:ms", NULL},
    {"seed", KIND_INT, offsetof(runtime_node, seed), -1, (double)INT64_MAX, GDX_HINT_NONE, NULL, NULL},
    {"threads", KIND_INT, offsetof(runtime_node, threads), 0, 256, GDX_HINT_RANGE, "0,64,1", NULL},
    {"worker", KIND_BOOL, offsetof(runtime_node, worker), 0, 1, GDX_HINT_NONE, NULL, NULL},
    {"python_home", KIND_STRING, offsetof(runtime_node, python_home), 0, 0, GDX_HINT_GLOBAL_DIR, NULL, NULL},
    {"site_packages", KIND_STRING, offsetof(runtime_node, site_packages), 0, 0, GDX_HINT_GLOBAL_DIR, NULL, NULL},
};

const class_desc runtime_class = {
    .name = "LmpcRuntime",
    .parent = "Node",
    .instance_size = sizeof(runtime_node),
    .properties = runtime_properties,
    .property_count = sizeof runtime_properties / sizeof runtime_properties[0],
    .init = runtime_init,
    .destroy = runtime_destroy,
    .notify = runtime_notify,
    .bad_call = runtime_bad_call,
};
