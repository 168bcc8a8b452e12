/*
** lmpc.h — the whole public C interface of LMPC (Language Model non-Playable Characters).
**
** An engine written in C, C++, C#, Rust or anything with a C FFI talks to NPCs through these calls.
** liblmpc.so embeds a Python interpreter (cffi embedding mode) that runs the LMPC runtime; no Python
** object or exception ever crosses this interface.
**
** Conventions (in the style of SQLite and Lua):
**   - every function returns an int status: LMPC_OK (0), LMPC_PENDING or LMPC_DONE, or a negative
**     LMPC_E* error code; lmpc_errmsg() then says what went wrong;
**   - objects are opaque handles returned through out-pointers; destructors accept NULL;
**   - a handle that was closed or unloaded is never dereferenced: using it returns an error code;
**   - every pointer the library returns states how long it stays valid, next to the function;
**   - text is UTF-8 and NUL-terminated; invalid UTF-8 is refused with LMPC_EINVAL.
**
** Thread rules: a runtime belongs to the thread that opened it, and every call that takes that runtime
** or one of its NPCs must come from that thread (otherwise LMPC_ESTATE). Different runtimes may live on
** different threads. lmpc_abi_version, lmpc_boot and lmpc_errmsg may be called from any thread; error
** messages are kept per thread. With options.worker = 1 the model work runs on a thread of the runtime's
** own and lmpc_tick costs almost nothing; the calling rules stay the same.
**
** The one heavy call is lmpc_tick(): call it once per frame with the time the game can spare. Every
** other call returns at once, except lmpc_npc_load (about a second: it reads the model; at a loading
** screen), whose lmpc_npc_load_async twin loads in the background while the frames go on.
**
**     lmpc_runtime *rt; lmpc_npc *npc; lmpc_event ev; char text[4096];
**     if (lmpc_boot(NULL, NULL) != LMPC_OK) { puts(lmpc_errmsg()); return 1; }
**     lmpc_open(NULL, &rt);
**     lmpc_npc_load(rt, "build/orlando_marlo.lmpc", "orlando", &npc);
**     lmpc_say(npc, "Who are you?", NULL);
**     for (int done = 0; !done; ) {                      // the game's frame loop
**         lmpc_tick(rt, 4000);                            // 4 ms of model work at most
**         while (lmpc_poll(rt, &ev, text, sizeof text) == LMPC_OK) {
**             if (ev.kind == LMPC_EVENT_TEXT) fputs(text, stdout);
**             if (ev.kind == LMPC_EVENT_DONE) done = 1;
**         }
**     }
**     lmpc_close(rt);
*/
#ifndef LMPC_H
#define LMPC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LMPC_ABI_VERSION 1

/* Status codes. */
#define LMPC_OK          0   /* done as asked */
#define LMPC_PENDING     1   /* lmpc_tick: replies are still in progress */
#define LMPC_DONE        2   /* lmpc_tick: nothing left to do; lmpc_poll: no event waiting */
#define LMPC_ERROR      -1   /* a failure not covered below */
#define LMPC_EINVAL     -2   /* bad argument: NULL, invalid UTF-8, empty line, out of range */
#define LMPC_ENOTFOUND  -3   /* no such file, or an NPC handle that is not (or no longer) loaded */
#define LMPC_EBUNDLE    -4   /* bundle damaged, swapped, from a newer LMPC, or malformed */
#define LMPC_ESAVE      -5   /* save file damaged, truncated, from another model or a newer LMPC */
#define LMPC_ETOOSMALL  -6   /* the caller's buffer is too small; the size needed is reported */
#define LMPC_ESTATE     -7   /* wrong state: closed runtime handle, wrong thread */
#define LMPC_EMODEL     -8   /* the model failed to run (context overflow, onnxruntime error) */
#define LMPC_EBOOT      -9   /* the embedded Python could not be started */
#define LMPC_ENOMEM    -10   /* out of memory */
#define LMPC_EINTERNAL -11   /* a bug in LMPC: please report lmpc_errmsg() */

/* Event kinds (lmpc_event.kind). A reply produces STARTED, then TEXT (and SENTENCE) events, then DONE. */
#define LMPC_EVENT_STARTED  1   /* the first token of a reply is out */
#define LMPC_EVENT_TEXT     2   /* a fragment of streamed text */
#define LMPC_EVENT_SENTENCE 3   /* a complete sentence of the reply (e.g. for speech synthesis) */
#define LMPC_EVENT_DONE     4   /* the reply is finished; text is the whole final reply */
#define LMPC_EVENT_ERROR    5   /* a reply failed; text is the message; a DONE event follows */
#define LMPC_EVENT_SUMMARY  6   /* the NPC summarised older conversation (text is the summary) */
/* Events of lmpc_npc_load_async (reply_id 0): LOADING as each stage starts, then one LOADED. */
#define LMPC_EVENT_LOADING  7   /* text: the stage ("opening the model"); tokens: the percent done */
#define LMPC_EVENT_LOADED   8   /* finish 0: the NPC is ready; LMPC_FINISH_ERROR: it failed, text says
                                ** why; LMPC_FINISH_CANCELLED: unloaded first. Either way but 0, the
                                ** handle is no longer valid. */
/* The typed tail of a reply (a sheet that declares actions or emotions), just before its DONE. */
#define LMPC_EVENT_ACTION   9   /* text: JSON {"name": "give_item", "args": {"item": "father_letter"}};
                                ** the name, arguments and values are always ones the sheet declares and
                                ** the game's facts and registered values allow now */
#define LMPC_EVENT_EMOTION 10   /* text: the label, one of the sheet's emotions */

/* Why a reply finished (lmpc_event.finish, for LMPC_EVENT_DONE). */
#define LMPC_FINISH_END_OF_TURN 1   /* the model ended its turn */
#define LMPC_FINISH_LENGTH      2   /* the token limit; the text ends at a full sentence */
#define LMPC_FINISH_STOP_STRING 3
#define LMPC_FINISH_REPETITION  4   /* the model started repeating itself; the repeat was cut */
#define LMPC_FINISH_CANCELLED   5
#define LMPC_FINISH_FALLBACK    6   /* the model said nothing usable; text is a line from the sheet */
#define LMPC_FINISH_ERROR       7

/* Priorities (any finite number works; higher is served first). */
#define LMPC_PRIORITY_FOCUS    10.0   /* the NPC the player is talking to */
#define LMPC_PRIORITY_NORMAL    0.0
#define LMPC_PRIORITY_AMBIENT -10.0   /* background chatter */

typedef struct lmpc_runtime lmpc_runtime;   /* opaque */
typedef struct lmpc_npc lmpc_npc;           /* opaque */

typedef struct lmpc_options {
    int abi_version;      /* must be LMPC_ABI_VERSION: guards against a header/library mismatch */
    int threads;          /* CPU threads for the model; 0 = 2 */
    int has_seed;         /* 1: use `seed`, so every run gives the same replies; 0: a random seed */
    uint64_t seed;
    int max_npcs;         /* most NPCs loaded at once; 0 = no limit */
    int worker;           /* 1: model work on the runtime's own thread (lmpc_tick only drains) */
    double duty_cycle;    /* worker mode: most of the time the thread may work, in (0, 1]; 0 = 0.5 */
} lmpc_options;

typedef struct lmpc_event {
    int kind;             /* LMPC_EVENT_* */
    int finish;           /* LMPC_FINISH_* for LMPC_EVENT_DONE, else 0 */
    int reply_id;         /* as returned by lmpc_say */
    int tokens;           /* tokens the reply has produced so far; LOADING: the percent of the load done */
    lmpc_npc *npc;        /* the NPC it concerns (valid while that NPC stays loaded) */
    size_t text_len;      /* bytes of UTF-8 text, not counting the NUL */
} lmpc_event;

/* The ABI version this library implements (LMPC_ABI_VERSION of the header it was built with). */
int lmpc_abi_version(void);

/* The message of the last failed call on the calling thread ("" if none). Never NULL. The pointer stays
** valid until the next lmpc_ call on the same thread. */
const char *lmpc_errmsg(void);

/* Start the embedded Python: `python_home` is the Python installation (its lib/python3.X holds the
** standard library), `site_packages` the directory where LMPC and its dependencies are installed (a
** virtual environment's lib/python3.X/site-packages works). NULL for either uses the paths of the
** environment the library was built from. Both are checked before Python starts, so a wrong path gives
** LMPC_EBOOT and a message, never a crash. Any other call boots with the defaults if this was not called.
** Only the first successful call counts; later calls return LMPC_OK. */
int lmpc_boot(const char *python_home, const char *site_packages);

/* Open a runtime. `options` may be NULL for the defaults. On success *out is the handle. */
int lmpc_open(const lmpc_options *options, lmpc_runtime **out);

/* Close a runtime and unload its NPCs (their handles become invalid). NULL is fine. */
int lmpc_close(lmpc_runtime *rt);

/* Load an NPC bundle directory. `npc_id` names it in events (NULL: derived from the bundle). Heavy:
** reads and checks the model. LMPC_ENOTFOUND for a missing bundle, LMPC_EBUNDLE for a bad one. Bundles
** that carry an adapter on a shared base model (`lmpc build --runtime-adapter`) load the same way: NPCs on
** one base share its engine, and loading the second costs a fraction of the first. Their base directory
** (<base>.lmpcbase) must sit beside them, or the load fails with LMPC_ENOTFOUND. */
int lmpc_npc_load(lmpc_runtime *rt, const char *bundle_path, const char *npc_id, lmpc_npc **out);

/* The same without waiting: reads the bundle, opens the model and prefills the persona on a thread of the
** runtime's own, and returns a handle at once (a missing bundle directory, an unreadable manifest or a
** taken id fail here). Progress and the end come as LMPC_EVENT_LOADING and LMPC_EVENT_LOADED events;
** lmpc_tick returns LMPC_PENDING while a load is in progress. Until LOADED, every call on the handle
** but lmpc_npc_unload returns LMPC_ESTATE. In tick mode a frame whose lmpc_tick finds the persona being
** prefilled skips its model work; parsing a new tokenizer holds Python's lock for about 0.15 s, once. */
int lmpc_npc_load_async(lmpc_runtime *rt, const char *bundle_path, const char *npc_id, lmpc_npc **out);

/* Unload an NPC; a reply in progress ends with a DONE/CANCELLED event. NULL is fine. An NPC still
** loading is dropped when its load ends (LOADED with LMPC_FINISH_CANCELLED). */
int lmpc_npc_unload(lmpc_npc *npc);

/* Say a line to the NPC (queued; no model work). *reply_id (if not NULL) receives the id its events
** will carry. Lines said while the NPC is answering wait their turn. */
int lmpc_say(lmpc_npc *npc, const char *text, int *reply_id);

/* Stop the NPC's reply in progress and drop its waiting lines. */
int lmpc_cancel(lmpc_npc *npc);

/* The NPC's priority for this and later replies (see LMPC_PRIORITY_*). */
int lmpc_set_priority(lmpc_npc *npc, double priority);

/* Set a fact of the game's state for this NPC, e.g. ("quest.stage", "3") or ("player.name", "Mira").
** The value is read as JSON when it is a number, true, false or null, else taken as text. Lore and
** memories can require facts, so the NPC knows only what it should know by now. */
int lmpc_set_fact(lmpc_npc *npc, const char *key, const char *value);

/* The values an action's argument may take now, for an argument the sheet leaves to the game
** (`args.item = "game"`): `values_json` is a JSON array of strings, e.g. ["father_letter", "coin"]; the
** NPC can never name another. "[]" closes the action until values are registered again. LMPC_EINVAL
** for an unknown action or argument, an argument with a closed set, or a value that is not letters,
** digits, _ . - (at most 64 characters). */
int lmpc_set_action_values(lmpc_npc *npc, const char *action, const char *argument, const char *values_json);

/* The one heavy call: do model work for at most `budget_us` microseconds (a budget smaller than one
** step of the model still runs one step, so replies progress; 0 does nothing). Returns LMPC_PENDING
** while replies are in progress, LMPC_DONE when there is nothing to do. Drain events with lmpc_poll. */
int lmpc_tick(lmpc_runtime *rt, int64_t budget_us);

/* Take the oldest waiting event: LMPC_OK fills *event and copies its NUL-terminated text into
** `text` (capacity `text_cap` bytes); LMPC_DONE when no event waits; LMPC_ETOOSMALL when the text does
** not fit: event->text_len then says how many bytes it needs (plus one for the NUL) and the event stays
** queued for the next call. `text` may be NULL only with text_cap 0. */
int lmpc_poll(lmpc_runtime *rt, lmpc_event *event, char *text, size_t text_cap);

/* Save the NPC's whole state (conversation, memories, facts, random state) to a file, atomically: a
** crash leaves the old save or the new one, never a broken file. */
int lmpc_save_state(lmpc_npc *npc, const char *path);

/* Restore a state saved from an NPC of the same bundle and model. A damaged, truncated or foreign save
** returns LMPC_ESAVE and leaves the NPC as it was. */
int lmpc_load_state(lmpc_npc *npc, const char *path);

/* The same with a memory buffer: on LMPC_OK *len is the bytes written; on LMPC_ETOOSMALL *len is the
** bytes needed. `buffer` may be NULL only with capacity 0 (to ask for the size). */
int lmpc_save_state_buffer(lmpc_npc *npc, void *buffer, size_t capacity, size_t *len);
int lmpc_load_state_buffer(lmpc_npc *npc, const void *buffer, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* LMPC_H */
