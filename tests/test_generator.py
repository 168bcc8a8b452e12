"""Generators and synthetic dialogue: the local runtime on the tiny model, and the OpenAI-compatible client
against a real HTTP server on 127.0.0.1."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from lmpc_export.generator import LocalGenerator, OpenAIChatGenerator
from lmpc_export.scenes import SceneSampler
from lmpc_export.synth import answer_messages, clean_line, synthesise
from lmpc_runtime.errors import ExportError
from lmpc_runtime.memory.recall import Recalled
from lmpc_runtime.persona import example_shots, system_prompt
from lmpc_runtime.sheet import load_sheet

from conftest import ORLANDO_SHEET

MESSAGES = [("system", "You are a blacksmith."), ("user", "What are you forging?")]


def test_the_local_generator_is_seeded_and_reuses_cached_prefixes(tiny_bundle):
    first = LocalGenerator.from_bundle(tiny_bundle, seed=3)
    text = first.chat(MESSAGES, max_tokens=12)
    assert isinstance(text, str) and text
    assert LocalGenerator.from_bundle(tiny_bundle, seed=3).chat(MESSAGES, max_tokens=12) == text
    before = first.prefilled
    first.chat(MESSAGES[:1] + [("user", "And tomorrow?")], max_tokens=4)
    shared = len(first.chat_format.turn("system", MESSAGES[0][1]))
    assert first.prefilled - before < 30 and shared > 5  # only the new player line was read again


def test_synthesise_with_the_tiny_model(tiny_bundle):
    sheet = load_sheet(ORLANDO_SHEET)
    ticks = []
    notes = lambda messages: Recalled([f"Recalled for: {messages[-1]}"], [])  # noqa: E731
    dialogues = synthesise(sheet, LocalGenerator.from_bundle(tiny_bundle, seed=1), count=3, notes=notes, seed=5,
                           progress=ticks.append)
    assert ticks == [1, 1, 1] and 1 <= len(dialogues) <= 3
    for d in dialogues:
        assert d.source == "generated" and d.context and 1 <= len(d.turns) <= 3
        assert d.memories == (f"Recalled for: {d.turns[-1][0]}",)


def test_scenes_are_seeded_and_include_the_sheets_people():
    sheet = load_sheet(ORLANDO_SHEET)
    draws = [SceneSampler(sheet, seed=9).draw() for _ in range(2)]
    assert draws[0] == draws[1]
    sampler = SceneSampler(sheet, seed=9)
    assert any(i.startswith("Marta Greyhand (") for i in sampler.interlocutors)
    assert len({sampler.draw() for _ in range(50)}) == 50
    assert "Orlando Marlo" in draws[0].describe(sheet.name)


def test_the_answer_prompt_is_the_runtime_prompt_plus_a_scene_line():
    sheet = load_sheet(ORLANDO_SHEET)
    scene = SceneSampler(sheet).draw()
    messages = answer_messages(sheet, scene, [("Hello.", "Good day.")], "Who are you?", ("A fact.",))
    shots = [m for pair in example_shots(sheet) for m in (("user", pair[0]), ("assistant", pair[1]))]
    assert messages[0] == ("system", system_prompt(sheet)) and messages[1: 1 + len(shots)] == shots
    assert [r for r, _ in messages[len(shots) + 1:]] == ["user", "assistant", "system", "system", "user"]


@pytest.mark.parametrize("raw, clean", [
    ('"Good day to you."', "Good day to you."),
    ("Orlando Marlo: Good day.\n\nNarration after.", "Good day."),
    ('He said "hello" twice.', 'He said "hello" twice.'),
])
def test_clean_line(raw, clean):
    assert clean_line(raw, ("Orlando Marlo",)) == clean


class _Server:
    """A real HTTP server on 127.0.0.1 answering /v1/chat/completions from a queue of (status, body)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, dict(self.headers), json.loads(body)))
                status, answer = outer.answers.pop(0)
                data = json.dumps(answer).encode() if not isinstance(answer, bytes) else answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(text):
    message = {"role": "assistant", "content": text}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


def test_the_openai_client_sends_the_chat_and_reads_the_answer(monkeypatch):
    monkeypatch.setenv("LMPC_TEST_KEY", "sk-test")
    with _Server([(200, _completion("  Iron, for the king's horses.  "))]) as server:
        gen = OpenAIChatGenerator(server.url, "big-model", api_key_env="LMPC_TEST_KEY", seed=4)
        assert gen.chat(MESSAGES, max_tokens=50, temperature=0.7) == "Iron, for the king's horses."
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert body == {"model": "big-model", "max_tokens": 50, "temperature": 0.7, "seed": 4,
                    "messages": [{"role": "system", "content": "You are a blacksmith."},
                                 {"role": "user", "content": "What are you forging?"}]}


def test_the_openai_client_retries_overload_but_not_bad_requests(monkeypatch):
    monkeypatch.setattr("lmpc_export.generator.time.sleep", lambda s: None)
    answers = [(503, {"error": "busy"}), (429, {"error": "slow down"}), (200, _completion("Done."))]
    with _Server(answers) as server:
        assert OpenAIChatGenerator(server.url, "m", api_key_env=None).chat(MESSAGES) == "Done."
    assert len(server.requests) == 3 and "Authorization" not in server.requests[0][1]
    with _Server([(400, {"error": "bad model"})]) as server:
        with pytest.raises(ExportError, match="HTTP 400"):
            OpenAIChatGenerator(server.url, "m", api_key_env=None).chat(MESSAGES)
    with _Server([(200, b"<html>not json</html>")]) as server:
        with pytest.raises(ExportError, match="not JSON"):
            OpenAIChatGenerator(server.url, "m", api_key_env=None).chat(MESSAGES)
    with _Server([(200, {"choices": []})]) as server:
        with pytest.raises(ExportError, match="unexpected answer"):
            OpenAIChatGenerator(server.url, "m", api_key_env=None).chat(MESSAGES)


def test_the_openai_client_reports_an_unreachable_server(monkeypatch):
    monkeypatch.setattr("lmpc_export.generator.time.sleep", lambda s: None)
    with _Server([]) as server:
        url = server.url
    with pytest.raises(ExportError, match="cannot reach"):
        OpenAIChatGenerator(url, "m", api_key_env=None, retries=1, timeout=2).chat(MESSAGES)
    with pytest.raises(ExportError, match="must start with http"):
        OpenAIChatGenerator("ftp://x", "m")
