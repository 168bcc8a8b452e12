/*
** nodes.h — the two classes GDScript sees, and how they share one LMPC runtime.
**
** LmpcRuntime owns the LMPC runtime (lmpc_open ... lmpc_close) and is the only one that works per frame:
** each _process it calls lmpc_tick with `budget_ms`, drains the events and hands each to the LmpcNpc it
** concerns, which emits its signals. The first LmpcRuntime to enter the scene tree is the active one
** (normally an autoload); an LmpcNpc loads its bundle into the active runtime when it becomes ready, in
** the background (lmpc_npc_load_async): the frames go on, and its `loaded` signal says when it can talk.
** Everything runs on Godot's main thread, which is the thread the C ABI requires.
*/
#ifndef LMPC_NODES_H
#define LMPC_NODES_H

#include "binding.h"
#include "lmpc_library.h"

typedef struct npc_node npc_node;

typedef struct {
    instance base;
    /* properties */
    double budget_ms;     /* model work per frame */
    int64_t seed;         /* -1: a random seed each run */
    int64_t threads;      /* CPU threads for the model; 0: the library's default */
    bool worker;          /* model work on a thread of its own: _process only collects the events */
    char *python_home;    /* the embedded Python; empty: where liblmpc.so was built */
    char *site_packages;  /* where LMPC is installed; empty: likewise */
    /* state */
    const struct lmpc_api *lmpc; /* set once rt is open */
    lmpc_runtime *rt;            /* NULL until opened */
    bool threaded;               /* rt was opened in worker mode */
    npc_node *npcs;              /* the NPCs loaded into rt */
    bool tick_failing;           /* reported once per run of failures */
    bool idle;                   /* nothing to do until an NPC is told something (see runtime_process) */
    char *text;                  /* event text buffer, grown as needed */
    size_t text_capacity;
} runtime_node;

struct npc_node {
    instance base;
    /* properties */
    char *bundle_path; /* res://, user:// or a path on disk */
    double priority;   /* LMPC_PRIORITY_*: higher is served first */
    /* state */
    runtime_node *runtime; /* where it is loaded (or loading), or NULL */
    lmpc_npc *npc;         /* its handle there, or NULL */
    bool ready;            /* the background load of npc has ended well: it can talk */
    double progress;       /* of that load, 0 to 1 */
    npc_node *next;        /* in runtime->npcs */
    char *reply;           /* the reply streamed so far */
    size_t reply_length, reply_capacity;
};

extern const class_desc runtime_class;
extern const class_desc npc_class;

/* The LmpcRuntime NPCs load into, or NULL if none is in the tree. */
runtime_node *runtime_active(void);
/* Open the runtime's LMPC runtime if it is not open yet: NULL on success, else why (valid until the next
** call into LMPC). */
const char *runtime_open(runtime_node *runtime);
void runtime_attach(runtime_node *runtime, npc_node *npc);
void runtime_detach(runtime_node *runtime, npc_node *npc);

/* An event of this NPC's replies (text: the event's text). May free the NPC (its handlers run). */
void npc_on_event(npc_node *npc, const lmpc_event *event, const char *text);
/* The runtime it was loaded into closed: its handle is gone. */
void npc_forget_runtime(npc_node *npc);

#endif /* LMPC_NODES_H */
