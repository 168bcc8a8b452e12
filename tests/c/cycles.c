/* Opens and closes runtimes (two at a time) over and over, loading an NPC and starting a reply in each;
** prints the resident set size every 10 cycles so the test can check it stays bounded.
** Usage: cycles TINY_BUNDLE CYCLES. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmpc.h"

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return kb;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int cycles = atoi(argv[2]);
    char text[4096];
    lmpc_event ev;
    for (int i = 1; i <= cycles; i++) {
        lmpc_runtime *a = NULL, *b = NULL;
        lmpc_npc *npc = NULL;
        if (lmpc_open(NULL, &a) || lmpc_open(NULL, &b) || lmpc_npc_load(a, argv[1], NULL, &npc)) {
            fprintf(stderr, "cycle %d: %s\n", i, lmpc_errmsg());
            return 1;
        }
        /* Start a reply and cancel it at its first word: the model runs, and its state must be freed. */
        lmpc_say(npc, "Hello", NULL);
        for (int started = 0; !started;) {
            if (lmpc_tick(a, 10000) < 0) { fprintf(stderr, "tick: %s\n", lmpc_errmsg()); return 1; }
            while (lmpc_poll(a, &ev, text, sizeof text) == LMPC_OK) started |= ev.kind == LMPC_EVENT_STARTED;
        }
        lmpc_cancel(npc);
        lmpc_close(b);
        lmpc_close(a);
        if (i % 10 == 0) printf("cycle %d rss_kb %ld\n", i, rss_kb());
    }
    return 0;
}
