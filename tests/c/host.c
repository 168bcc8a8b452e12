/* A C game host: boots LMPC, talks to an NPC frame by frame, saves it, loads a second NPC in the
** background and restores the save into it, and closes.
** Usage: host BUNDLE SAVE_FILE [LINE]. Prints the streamed reply between "reply: " and a newline, then
** "saved <bytes>", a "loading <percent> <stage>" line per stage of the background load, "loaded after
** <frames> frames", the reply after reloading, and "ok". Exit status 0 on success. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lmpc.h"

/* A call's status, or the end of the program if it is an error. */
static int check(int status, const char *call) {
    if (status < 0) {
        fprintf(stderr, "%s failed: %d %s\n", call, status, lmpc_errmsg());
        exit(1);
    }
    return status;
}
#define CHECK_STATUS(call) check((call), #call)
#define CHECK(call) ((void)CHECK_STATUS(call))

/* Tick frame by frame until reply `wanted` is done; stream its text to stdout. */
static void talk(lmpc_runtime *rt, int wanted) {
    char text[8192];
    lmpc_event ev;
    printf("reply: ");
    for (int frame = 0; frame < 100000; frame++) {
        CHECK(lmpc_tick(rt, 4000));
        int status;
        while ((status = lmpc_poll(rt, &ev, text, sizeof text)) == LMPC_OK) {
            if (ev.reply_id != wanted) continue;
            if (ev.kind == LMPC_EVENT_TEXT) fputs(text, stdout);
            if (ev.kind == LMPC_EVENT_ERROR) { fprintf(stderr, "error event: %s\n", text); exit(1); }
            if (ev.kind == LMPC_EVENT_DONE) {
                printf("\nfinal: %s\nfinish: %d tokens: %d\n", text, ev.finish, ev.tokens);
                return;
            }
        }
        CHECK(status);
    }
    fprintf(stderr, "no reply after 100000 frames\n");
    exit(1);
}

/* Tick frame by frame (a millisecond of game work between frames) until the background load of `npc`
** ends; it must succeed. */
static void wait_loaded(lmpc_runtime *rt, lmpc_npc *npc) {
    char text[1024];
    lmpc_event ev;
    for (int frame = 1; frame < 100000; frame++) {
        if (CHECK_STATUS(lmpc_tick(rt, 4000)) != LMPC_PENDING) {
            fprintf(stderr, "lmpc_tick said DONE while an NPC was loading\n");
            exit(1);
        }
        int status;
        while ((status = lmpc_poll(rt, &ev, text, sizeof text)) == LMPC_OK) {
            if (ev.npc != npc) continue;
            if (ev.kind == LMPC_EVENT_LOADING) printf("loading %d %s\n", ev.tokens, text);
            if (ev.kind == LMPC_EVENT_LOADED) {
                if (ev.finish != 0) { fprintf(stderr, "load failed: %s\n", text); exit(1); }
                printf("loaded after %d frames\n", frame);
                return;
            }
        }
        CHECK(status);
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    fprintf(stderr, "not loaded after 100000 frames\n");
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: host BUNDLE SAVE_FILE [LINE]\n"); return 2; }
    const char *line = argc > 3 ? argv[3] : "Who are you?";
    if (lmpc_abi_version() != LMPC_ABI_VERSION) { fprintf(stderr, "ABI mismatch\n"); return 1; }
    CHECK(lmpc_boot(NULL, NULL));

    lmpc_options options = {0};
    options.abi_version = LMPC_ABI_VERSION;
    options.threads = 2;
    options.has_seed = 1;
    options.seed = 42;
    lmpc_runtime *rt = NULL;
    CHECK(lmpc_open(&options, &rt));
    lmpc_npc *npc = NULL;
    CHECK(lmpc_npc_load(rt, argv[1], "orlando", &npc));
    CHECK(lmpc_set_priority(npc, LMPC_PRIORITY_FOCUS));
    CHECK(lmpc_set_fact(npc, "player.name", "Mira"));

    int reply = 0;
    CHECK(lmpc_say(npc, line, &reply));
    talk(rt, reply);

    /* Save to a file and to a buffer (asking for the size first). */
    CHECK(lmpc_save_state(npc, argv[2]));
    size_t needed = 0;
    if (lmpc_save_state_buffer(npc, NULL, 0, &needed) != LMPC_ETOOSMALL || needed == 0) {
        fprintf(stderr, "size query failed: %s\n", lmpc_errmsg());
        return 1;
    }
    char *buffer = malloc(needed);
    size_t written = 0;
    CHECK(lmpc_save_state_buffer(npc, buffer, needed, &written));
    printf("saved %zu\n", written);

    /* A fresh NPC of the same bundle, loaded while the frames go on, takes the saved state and goes on
    ** with the conversation. */
    CHECK(lmpc_npc_unload(npc));
    CHECK(lmpc_npc_load_async(rt, argv[1], "orlando-again", &npc));
    if (lmpc_say(npc, "Too early?", NULL) != LMPC_ESTATE) {
        fprintf(stderr, "say before the load ended did not return LMPC_ESTATE\n");
        return 1;
    }
    wait_loaded(rt, npc);
    CHECK(lmpc_load_state(npc, argv[2]));
    CHECK(lmpc_load_state_buffer(npc, buffer, written));
    free(buffer);
    CHECK(lmpc_say(npc, "And what do you want most?", &reply));
    talk(rt, reply);

    CHECK(lmpc_close(rt));
    CHECK(lmpc_close(NULL));
    printf("ok\n");
    return 0;
}
