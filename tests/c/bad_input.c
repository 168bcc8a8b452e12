/* Bad input from C: every case must come back as the right status code with a message, never a crash.
** Usage: bad_input TINY_BUNDLE. Prints one line per case: "<name> <status> <message>". */
#include <stdio.h>
#include <string.h>

#include "lmpc.h"

static int failures = 0;

static void expect(const char *name, int status, int wanted) {
    printf("%s %d %s\n", name, status, lmpc_errmsg());
    if (status != wanted) {
        fprintf(stderr, "FAIL %s: got %d, wanted %d (%s)\n", name, status, wanted, lmpc_errmsg());
        failures++;
    } else if (wanted < 0 && lmpc_errmsg()[0] == '\0') {
        fprintf(stderr, "FAIL %s: no message\n", name);
        failures++;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    lmpc_runtime *rt = NULL;
    lmpc_npc *npc = NULL;
    lmpc_event ev;
    char text[16];
    int id;

    expect("boot-bad-home", lmpc_boot("/nonexistent/python", NULL), LMPC_EBOOT);
    expect("boot", lmpc_boot(NULL, NULL), LMPC_OK);
    expect("open-null-out", lmpc_open(NULL, NULL), LMPC_EINVAL);
    lmpc_options old = {0};
    old.abi_version = 999;
    expect("open-wrong-abi", lmpc_open(&old, &rt), LMPC_EINVAL);
    expect("open", lmpc_open(NULL, &rt), LMPC_OK);

    expect("load-missing-bundle", lmpc_npc_load(rt, "/nonexistent/npc.lmpc", NULL, &npc), LMPC_ENOTFOUND);
    expect("load-null-path", lmpc_npc_load(rt, NULL, NULL, &npc), LMPC_EINVAL);
    expect("load-null-runtime", lmpc_npc_load(NULL, argv[1], NULL, &npc), LMPC_EINVAL);
    expect("load-bad-utf8-id", lmpc_npc_load(rt, argv[1], "\xff\xfe", &npc), LMPC_EINVAL);
    expect("load", lmpc_npc_load(rt, argv[1], "tiny", &npc), LMPC_OK);
    lmpc_npc *twin = NULL;
    expect("load-same-id", lmpc_npc_load(rt, argv[1], "tiny", &twin), LMPC_EINVAL);

    expect("say-null-npc", lmpc_say(NULL, "hi", &id), LMPC_EINVAL);
    expect("say-null-text", lmpc_say(npc, NULL, &id), LMPC_EINVAL);
    expect("say-bad-utf8", lmpc_say(npc, "caf\xc3(", &id), LMPC_EINVAL);
    expect("say-empty", lmpc_say(npc, "   ", &id), LMPC_EINVAL);
    expect("say-forged-npc", lmpc_say((lmpc_npc *)(uintptr_t)0xdeadbeef, "hi", &id), LMPC_ENOTFOUND);
    expect("priority-nan", lmpc_set_priority(npc, 0.0 / 0.0), LMPC_EINVAL);
    expect("fact-null", lmpc_set_fact(npc, NULL, "x"), LMPC_EINVAL);
    expect("action-values-null", lmpc_set_action_values(npc, "follow", "target", NULL), LMPC_EINVAL);
    expect("action-values-null-npc", lmpc_set_action_values(NULL, "follow", "target", "[]"), LMPC_EINVAL);
    expect("action-values-not-json", lmpc_set_action_values(npc, "follow", "target", "[oops"), LMPC_EINVAL);
    expect("action-values-unknown", lmpc_set_action_values(npc, "follow", "target", "[\"player\"]"), LMPC_EINVAL);
    expect("tick-forged-runtime", lmpc_tick((lmpc_runtime *)(uintptr_t)12345, 1000), LMPC_ESTATE);
    expect("poll-null-event", lmpc_poll(rt, NULL, text, sizeof text), LMPC_EINVAL);
    expect("poll-null-text", lmpc_poll(rt, &ev, NULL, 5), LMPC_EINVAL);
    expect("load-state-missing", lmpc_load_state(npc, "/nonexistent/save.lmpcsave"), LMPC_ESAVE);
    expect("load-state-garbage", lmpc_load_state_buffer(npc, "not a save", 10), LMPC_ESAVE);
    size_t len = 0;
    expect("save-buffer-too-small", lmpc_save_state_buffer(npc, text, 4, &len), LMPC_ETOOSMALL);
    if (len <= 4) { fprintf(stderr, "FAIL save-buffer-too-small: needed size %zu\n", len); failures++; }

    /* A buffer too small for an event: the event waits, and is delivered whole with a bigger buffer. */
    expect("say", lmpc_say(npc, "Tell me a long story about the river.", &id), LMPC_OK);
    int status = LMPC_PENDING, small = 0, done = 0;
    char big[8192];
    for (int frame = 0; frame < 20000 && !done; frame++) {
        lmpc_tick(rt, 5000);
        while ((status = lmpc_poll(rt, &ev, text, sizeof text)) != LMPC_DONE) {
            if (status == LMPC_ETOOSMALL) {
                small++;
                if (ev.text_len < sizeof text) { fprintf(stderr, "FAIL too-small with text_len %zu\n", ev.text_len); failures++; }
                status = lmpc_poll(rt, &ev, big, sizeof big);
                if (status != LMPC_OK || strlen(big) != ev.text_len) { fprintf(stderr, "FAIL redelivery\n"); failures++; break; }
            }
            if (ev.kind == LMPC_EVENT_DONE) done = 1;
        }
    }
    printf("poll-too-small %d\n", small);
    if (!small || !done) { fprintf(stderr, "FAIL no too-small event or no end (%d, %d)\n", small, done); failures++; }

    expect("unload", lmpc_npc_unload(npc), LMPC_OK);
    expect("say-after-unload", lmpc_say(npc, "hi", &id), LMPC_ENOTFOUND);
    expect("unload-twice", lmpc_npc_unload(npc), LMPC_ENOTFOUND);
    expect("unload-null", lmpc_npc_unload(NULL), LMPC_OK);
    expect("close", lmpc_close(rt), LMPC_OK);
    expect("tick-after-close", lmpc_tick(rt, 1000), LMPC_ESTATE);
    expect("poll-after-close", lmpc_poll(rt, &ev, text, sizeof text), LMPC_ESTATE);
    expect("close-twice", lmpc_close(rt), LMPC_ESTATE);
    expect("close-null", lmpc_close(NULL), LMPC_OK);
    printf(failures ? "FAILED %d\n" : "all good\n", failures);
    return failures != 0;
}
