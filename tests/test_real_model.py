"""Integration tests on the real exported SmolLM2 demo bundle (built once by `make bundle`, cached)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmpc_runtime import Runtime, SamplingConfig, read_bundle
from lmpc_runtime.reply import DONE, STARTED, TEXT

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def runtime():
    with Runtime(threads=2) as rt:
        yield rt


def test_a_reply_streams_and_ends_at_end_of_turn(runtime, real_bundle):
    npc = runtime.load_npc(real_bundle, seed=11, sampling=SamplingConfig(max_tokens=200))
    events = list(npc.ask("Good morning!"))
    kinds = [e.kind for e in events]
    assert kinds[0] == STARTED and kinds[-1] == DONE
    assert kinds.count(TEXT) > 5, "the reply should arrive as many fragments, not in one piece"
    assert events[-1].finish == "end_of_turn" and events[-1].text
    assert "".join(e.text for e in events if e.kind == TEXT).strip() == events[-1].text


def test_same_seed_same_reply(runtime, real_bundle):
    replies = []
    for _ in range(2):
        npc = runtime.load_npc(real_bundle, seed=5)
        replies.append([[e for e in npc.ask(line) if e.kind == DONE][0].text
                        for line in ("Who are you?", "And your father?")])
        runtime.unload_npc(npc.id)
    assert replies[0] == replies[1] and all(replies[0])


def test_parity_report_is_within_bounds(real_bundle):
    bundle = read_bundle(real_bundle)
    report = bundle.report
    assert bundle.model.layout == report["export"]["layout"] == "lmpc-gqa"
    parity = {p["variant"]: p for p in report["parity"]}
    assert set(parity) == {"fp32", "int8", "int8-b16", "int4"}, "every variant is measured and reported"
    assert parity["fp32"]["max_logit_diff"] < 0.05 and parity["fp32"]["top1_agreement"] >= 0.99
    shipped = parity[report["export"]["variant"]]
    assert shipped["top1_agreement"] >= 0.85 and shipped["max_logit_diff"] < 8
    assert shipped["positions"] >= 100


def test_npcs_decoding_together_say_what_each_says_alone(runtime, real_bundle):
    npc = runtime.load_npc(real_bundle)
    engine, chat = npc._engine, npc.chat
    lines = ["Who are you?", "What do you think of the church?", "Where were you born?"]
    prompts = [chat.turn("user", line) + chat.open_turn() for line in lines]

    def greedy_alone(prompt):
        seq = engine.new_sequence(npc.persona_tokens)
        out = [int(np.argmax(engine.extend(seq, prompt)))]
        for _ in range(15):
            out.append(int(np.argmax(engine.extend(seq, out[-1:]))))
        return out

    alone = [greedy_alone(p) for p in prompts]
    seqs = [engine.new_sequence(npc.persona_tokens) for _ in prompts]
    together = [[int(np.argmax(engine.extend(seq, p)))] for seq, p in zip(seqs, prompts)]
    for _ in range(15):
        logits = engine.step(seqs, [out[-1] for out in together])
        for out, row in zip(together, logits):
            out.append(int(np.argmax(row)))
    assert together == alone
    assert len(engine.prefixes) == 1, "the persona is computed once and shared"


def test_cli_ask_streams_a_reply(real_bundle):
    lmpc = str(Path(sys.executable).with_name("lmpc"))
    out = subprocess.run([lmpc, "ask", str(real_bundle), "Who are you?", "--seed", "1", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["text"] and result["tokens"] > 0 and result["decode_tok_s"] > 0


def test_replies_cut_by_the_token_limit_end_at_a_sentence_or_trail_off(runtime, real_bundle):
    import re

    npc = runtime.load_npc(real_bundle, seed=5, sampling=SamplingConfig(max_tokens=14))
    for line in ("Tell me everything about your family and your order.", "What do you think of the Archlector?"):
        events = list(npc.ask(line))
        done = events[-1]
        assert done.kind == DONE and done.text and re.search(r"\w", done.text)
        if done.finish == "length":
            assert re.search(r"([.!?…][\"'”’)\]]*|…)$", done.text), done.text
        assert "".join(e.text for e in events if e.kind == TEXT).strip() == done.text


def test_the_follower_leads_a_reply_along_the_writers_answer_and_the_bundle_turns_it_on(runtime, real_bundle):
    """The writer's answer recalled for the line is what a reply given a large bonus says; without the
    bonus the model words it its own way (on this line it does not start the same)."""
    line = "Tell me, what words are written under your family's arms?"
    followed, free = [], []
    for bonus, out in ((60.0, followed), (0.0, free)):
        npc = runtime.load_npc(real_bundle, seed=1, sampling=SamplingConfig(
            temperature=0, max_tokens=120, follow_bonus=bonus))
        reply = npc.start_reply(line)
        out.append(npc.chat.decode(reply.follower.answer) if reply.follower else None)
        out.append([e for e in npc.run_reply(reply) if e.kind == DONE][0].text)
        npc.end_reply(reply)
        runtime.unload_npc(npc.id)
    answer, said = followed
    assert answer and said.startswith(answer[:60]), (answer, said)
    assert free[0] is None and not free[1].startswith(answer[:60])
    assert read_bundle(real_bundle).sampling.follow_bonus > 0
