"""serve.py: the OpenAI-compatible API (our HTTP calls and the official openai package), continuous batching that
gives every request what generate.py gives it alone, 4xx answers in OpenAI's schema to bad input, and the chat page
in a real browser (headless Chromium through Playwright; skipped where there is none)."""
import concurrent.futures
import contextlib
import json
import os
import queue
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

import serve
from generate import GenerationConfig


@pytest.fixture(scope="module")
def server(stage_dirs):
    """serve.py on the shared chain's pretrained model (its 6-step SFT model ends most answers at once, which tests
    nothing of streaming or batching), on a free loopback port, for the whole module."""
    generator = serve.load_for_serving(stage_dirs["pretrain"])
    httpd, engine = serve.make_server(generator, port=0, model_name="sft_tiny", quiet=True, max_batch=16)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "engine": engine, "generator": generator}
    httpd.shutdown()
    httpd.server_close()


def call(server, path, body=None, headers=None, raw=None):
    """(HTTP status, parsed JSON) of a GET (no body) or POST."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server["url"] + path, data=data, headers={"Content-Type": "application/json",
                                                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def ask(question, **kw):
    return {"messages": [{"role": "user", "content": question}], "max_tokens": 16, "temperature": 0, **kw}


QUESTIONS = ["Where does Mira live?", "What is 3 plus 4?", "What colour does Pip like?", "米拉住在哪里？",
             "Who is Tobin?", "What is 9 plus 9?", "What does Nell eat?", "Hello!"]


def test_chat_completion_is_generate_py_s_greedy_answer_in_openai_s_schema(server):
    status, body = call(server, "/v1/chat/completions", ask("Where does Mira live?"))
    assert status == 200 and body["object"] == "chat.completion" and body["model"] == "sft_tiny"
    choice = body["choices"][0]
    expected = server["generator"].generate("Where does Mira live?", GenerationConfig(max_new_tokens=16, greedy=True),
                                            chat=True)
    assert choice["message"] == {"role": "assistant", "content": expected} and choice["finish_reason"] in ("stop", "length")
    prompt_tokens = len(server["generator"].encode_prompt("Where does Mira live?", chat=True))
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    assert body["usage"]["total_tokens"] == prompt_tokens + body["usage"]["completion_tokens"] > prompt_tokens


def test_completion_continues_plain_text_as_generate_py_does(server):
    status, body = call(server, "/v1/completions", {"prompt": ["Once upon a time", "Mira"], "max_tokens": 12,
                                                    "temperature": 0})
    assert status == 200 and body["object"] == "text_completion"
    cfg = GenerationConfig(max_new_tokens=12, greedy=True)
    assert [c["text"] for c in body["choices"]] == server["generator"].generate(["Once upon a time", "Mira"], cfg)


def stream(server, body):
    """The data: payloads of a streamed response, [DONE] last."""
    request = urllib.request.Request(server["url"] + "/v1/chat/completions", data=json.dumps({**body, "stream": True}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        return [block[len("data: "):] for block in r.read().decode().split("\n\n") if block.startswith("data: ")]


def test_streamed_chat_is_the_same_text_in_chunks_ending_with_done(server):
    events = stream(server, ask("What is 3 plus 4?", stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == call(server, "/v1/chat/completions", ask("What is 3 plus 4?"))[1]["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_requests_arriving_together_are_decoded_in_one_batch_with_the_same_answers(server):
    """Continuous batching: 8 requests at once share decode steps, and each gets the answer it gets alone."""
    alone = [call(server, "/v1/chat/completions", ask(q))[1]["choices"][0]["message"]["content"] for q in QUESTIONS]
    largest = server["engine"].served["largest_batch"]
    with concurrent.futures.ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda q: call(server, "/v1/chat/completions", ask(q))[1], QUESTIONS))
    assert [r["choices"][0]["message"]["content"] for r in together] == alone
    assert server["engine"].served["largest_batch"] > max(largest, 1)


def test_n_choices_and_seeds_and_stop_strings(server):
    body = ask("Where does Mira live?", n=3, temperature=1.0, seed=7, max_tokens=12)
    first, again = call(server, "/v1/chat/completions", body)[1], call(server, "/v1/chat/completions", body)[1]
    texts = [c["message"]["content"] for c in first["choices"]]
    assert [c["index"] for c in first["choices"]] == [0, 1, 2] and texts == [c["message"]["content"] for c in again["choices"]]
    sampled = {"prompt": "Once upon a time", "max_tokens": 24, "temperature": 1.0}
    sampled["seed"], full, cut = stoppable(lambda seed: call(server, "/v1/completions", {**sampled, "seed": seed})[1]
                                           ["choices"][0]["text"])
    stopped = call(server, "/v1/completions", {**sampled, "stop": ["never there", full[cut]]})[1]["choices"][0]
    assert stopped["text"] == full[:cut] and stopped["finish_reason"] == "stop"


def stoppable(complete):
    """(seed, text, cut) for the first seed from 3 whose seeded, so repeatable, continuation complete(seed) has a
    stop_inside position (the barely trained test model sometimes ends at once)."""
    return next((seed, text, cut) for seed in range(3, 40)
                for text in [complete(seed)] for cut in [stop_inside(text)] if cut is not None)


def stop_inside(text):
    """The first position, past the start, of a character seen there for the first time; ASCII, so that no
    half-decoded UTF-8 (shown as U+FFFD while it streams) can match it earlier. The barely trained test model
    writes bytes that are not always whole characters."""
    return next((i for i in range(2, len(text)) if text[i].isascii() and text[i].strip() and text[i] not in text[:i]), None)


@pytest.mark.parametrize("body,status,param,message", [
    (b'{"messages": [', 400, None, "not valid JSON"),
    ({"messages": "hi"}, 400, "messages", "must be a non-empty array"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role", 'is "wizard"; expected system'),
    (ask("hi", max_tokens=0), 400, "max_tokens", "'max_tokens' must be at least 1, got 0"),
    (ask("hi", max_tokens="ten"), 400, "max_tokens", "'max_tokens' must be an integer"),
    (ask("hi", temperature=3), 400, "temperature", "in [0, 2]"),
    (ask("hi", n=100), 400, "n", "in 1..8"),
    (ask("hi", logprobs=True), 400, "logprobs", "not supported"),
    (ask("hi", functions=[]), 400, "functions", "unrecognized request argument supplied: functions"),
    (ask("word " * 400), 400, "messages", "this model's context is 256 tokens and the prompt is"),
    ([1, 2], 400, None, "must be a JSON object"),
])
def test_bad_requests_get_a_4xx_in_openai_s_error_schema_and_the_server_keeps_serving(server, body, status, param, message):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, answer = call(server, "/v1/chat/completions", raw=raw)
    assert got == status and set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["param"] == param and message in answer["error"]["message"], answer
    assert call(server, "/v1/chat/completions", ask("hi", max_tokens=2))[0] == 200


def test_a_body_over_the_limit_and_unknown_routes(server):
    status, answer = call(server, "/v1/chat/completions", raw=b" " * (300 * 1024))
    assert status == 413 and "the limit is 262,144" in answer["error"]["message"]
    assert call(server, "/v1/embeddings", {"input": "x"})[0] == 404
    assert call(server, "/v1/chat/completions", ask("hi", max_tokens=2))[0] == 200


def test_max_tokens_beyond_the_context_is_capped_and_said(server):
    status, body = call(server, "/v1/chat/completions", ask("Where does Mira live?", max_tokens=5000))
    assert status == 200 and "max_tokens 5000 capped to" in body["warnings"][0]


def test_models_and_health(server):
    assert call(server, "/v1/models") == (200, {"object": "list", "data": [
        {"id": "sft_tiny", "object": "model", "created": int(serve.START), "owned_by": "mini-llm", "context_length": 256}]})
    status, health = call(server, "/health")
    assert status == 200 and health["status"] == "ok" and {"active", "waiting", "sequences", "tokens"} <= set(health)


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server):
    host, port = server["url"].rsplit(":", 1)[0][len("http://"):], int(server["url"].rsplit(":", 1)[1])
    body = json.dumps(ask("Tell me a long story.", max_tokens=200, temperature=1.0, stream=True)).encode()
    with socket.create_connection((host, port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    deadline = time.time() + 20
    while time.time() < deadline and (call(server, "/health")[1]["active"] or call(server, "/health")[1]["waiting"]):
        time.sleep(0.05)
    assert call(server, "/health")[1]["active"] == 0


def test_api_key_is_checked_as_a_bearer_token(stage_dirs):
    httpd, _ = serve.make_server(serve.load_for_serving(stage_dirs["sft"]), port=0, api_key="sk-test", quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    keyed = {"url": f"http://127.0.0.1:{httpd.server_address[1]}"}
    try:
        status, answer = call(keyed, "/v1/chat/completions", ask("hi", max_tokens=2))
        assert status == 401 and answer["error"]["code"] == "invalid_api_key"
        assert call(keyed, "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert call(keyed, "/v1/chat/completions", ask("hi", max_tokens=2), {"Authorization": "Bearer sk-test"})[0] == 200
        assert call(keyed, "/health")[0] == 200  # the health check needs no key
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_command_line_refuses_bad_flags_in_one_line(tmp_path):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "serve.py", "--checkpoint", str(tmp_path / "none")], cwd=root,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'none'}: checkpoint directory not found"
    r = subprocess.run([sys.executable, "serve.py", "--checkpoint", ".", "--max-batch", "0"], cwd=root,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--max-batch must be at least 1, got 0" in r.stderr


# ----------------------------------------------------------------------------- real clients
def test_the_official_openai_package_talks_to_it(server):
    openai = pytest.importorskip("openai", reason="optional: pip install -r requirements-extras.txt")
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Where does Mira live?"}]
    plain = client.chat.completions.create(model="sft_tiny", messages=messages, max_tokens=16, temperature=0)
    expected = call(server, "/v1/chat/completions", ask("Where does Mira live?"))[1]["choices"][0]["message"]["content"]
    assert plain.choices[0].message.content == expected and plain.usage.completion_tokens > 0
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="sft_tiny", messages=messages, max_tokens=16, temperature=0, stream=True) if c.choices]
    assert "".join(pieces) == expected
    several = client.chat.completions.create(model="sft_tiny", messages=messages, max_tokens=8, temperature=1, n=3, seed=1)
    assert len(several.choices) == 3 and {c.index for c in several.choices} == {0, 1, 2}
    sampled = dict(model="sft_tiny", prompt="Once upon a time", max_tokens=24, temperature=1.0)
    sampled["seed"], text, stop = stoppable(lambda seed: client.completions.create(**sampled, seed=seed).choices[0].text)
    cut = client.completions.create(**sampled, stop=[text[stop]])
    assert cut.choices[0].text == text[:stop] and cut.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError, match="context_length_exceeded|this model's context"):
        client.chat.completions.create(model="sft_tiny", messages=[{"role": "user", "content": "word " * 400}])
    assert [m.id for m in client.models.list().data] == ["sft_tiny"]


def browser_path():
    return next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p), None)


@contextlib.contextmanager
def chat_page(server, model_name):
    """The chat page in headless Chromium, loaded and showing the model's name."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="optional: pip install playwright (and apt install chromium)")
    if browser_path() is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server["url"] + "/")
            page.wait_for_function(f"document.getElementById('model').textContent === '{model_name}'", timeout=20000)
            yield page
        finally:
            browser.close()


def test_the_chat_page_streams_a_reply_in_a_real_browser(server):
    with chat_page(server, "sft_tiny") as page:
        page.fill("#temperature", "0")
        page.fill("#max_tokens", "16")
        page.fill("#message", "Where does Mira live?")
        page.press("#message", "Enter")
        page.wait_for_function("document.getElementById('stats').textContent.includes('tokens/s')", timeout=30000)
        replies = page.locator(".turn.assistant").all_text_contents()
        expected = call(server, "/v1/chat/completions", ask("Where does Mira live?"))[1]["choices"][0]["message"]["content"]
        assert replies == [expected]
        page.fill("#message", "And what is 3 plus 4?")  # a second turn: the page sends the whole conversation
        page.press("#message", "Enter")
        page.wait_for_function("document.querySelectorAll('.turn.assistant').length === 2 && "
                               "!document.getElementById('send').disabled", timeout=30000)
        assert page.locator(".turn.user").all_text_contents() == ["Where does Mira live?", "And what is 3 plus 4?"]


def test_an_exported_hugging_face_folder_is_served_like_its_run_directory(stage_dirs, server, tmp_path):
    pytest.importorskip("safetensors", reason="optional: pip install -r requirements-extras.txt")
    from export_hf import export
    hf_dir = export(stage_dirs["pretrain"], str(tmp_path / "hf"))  # the model `server` serves
    httpd, _ = serve.make_server(serve.load_for_serving(hf_dir), port=0, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        exported = {"url": f"http://127.0.0.1:{httpd.server_address[1]}"}
        for question in QUESTIONS[:3]:
            assert call(exported, "/v1/chat/completions", ask(question))[1]["choices"] == \
                call(server, "/v1/chat/completions", ask(question))[1]["choices"]
    finally:
        httpd.shutdown()
        httpd.server_close()


@torch.no_grad()
def test_sequences_joining_and_leaving_mid_flight_decode_exactly_as_alone():
    """The batching itself, step by step on a random model: a short prompt, then longer ones joining later (the cache
    shifts right), one cancelled and one finishing early (the cache shifts left). Each sequence samples the tokens
    generate.py samples for it alone with the same seed."""
    from model import MiniGPT, MiniGPTConfig
    from tokenizer import BPETokenizer
    torch.manual_seed(0)
    tok = BPETokenizer.train(["the quick brown fox jumps over the lazy dog"] * 5, 300, verbose=False)
    model = MiniGPT(MiniGPTConfig(vocab_size=tok.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64))
    for p in model.parameters():
        p.mul_(5)  # at init scale the logits are near 0 and the argmax hardly depends on context: now it does
    generator = serve.TextGenerator(model, tok)
    engine = serve.Engine(generator, start=False)
    prompts = {"a": [5, 9, 13], "b": list(range(20, 31)), "c": [40, 41, 42, 43, 44, 45], "d": list(range(3, 25)),
               "e": [7]}
    new_tokens = {"a": 20, "b": 12, "c": 30, "d": 6, "e": 25}
    events = queue.Queue()
    seqs = {k: serve.Sequence(p, GenerationConfig(max_new_tokens=new_tokens[k], greedy=True, stop_on_eos=False), i, events)
            for i, (k, p) in enumerate(prompts.items())}
    schedule = {0: "a", 3: "b", 4: "c", 7: "d", 9: "e"}  # step -> the sequence that joins before it
    for step in range(60):
        if step in schedule:
            engine.join(seqs[schedule[step]])
        if step == 11:
            seqs["c"].cancelled = True  # its client went away
        if engine.rows:
            engine.step()
    assert not engine.rows and engine.cache is None and engine.served["largest_batch"] >= 4
    for k, seq in seqs.items():
        alone = generator.generate_ids([prompts[k]], seq.cfg)[0]
        if k == "c":
            assert seq.finish_reason == "cancelled" and seq.ids == alone[:len(seq.ids)] and 0 < len(seq.ids) < 30
        else:
            assert seq.ids == alone and seq.finish_reason == "length", k


# ----------------------------------------------------------------------------- tools and reasoning
@pytest.fixture(scope="module")
def tool_server(memorized):
    """serve.py on the model that learned a calculator call, a worked sum and a quick answer by heart."""
    generator = serve.load_for_serving(memorized)
    httpd, engine = serve.make_server(generator, port=0, model_name="tools_tiny", quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "engine": engine, "generator": generator}
    httpd.shutdown()
    httpd.server_close()


def test_the_openai_client_runs_a_whole_tool_loop(tool_server):
    openai = pytest.importorskip("openai", reason="optional: pip install -r requirements-extras.txt")
    import tools
    from tiny_runs import TOOL_ANSWER, TOOL_QUESTION
    client = openai.OpenAI(base_url=tool_server["url"] + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": TOOL_QUESTION}]
    first = client.chat.completions.create(model="tools_tiny", messages=messages, tools=[tools.CALCULATOR_TOOL],
                                           max_tokens=120, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "calculator" and call.id.startswith("call_")
    result = tools.calculate(json.loads(call.function.arguments)["expression"])  # the client runs the tool
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": result}]
    final = client.chat.completions.create(model="tools_tiny", messages=messages, tools=[tools.CALCULATOR_TOOL],
                                           max_tokens=60, temperature=0)
    assert final.choices[0].message.content == TOOL_ANSWER and final.choices[0].finish_reason == "stop"
    # streamed: the call arrives as delta.tool_calls with its index, and the stream ends with finish_reason tool_calls
    chunks = list(client.chat.completions.create(model="tools_tiny", messages=messages[:1], tools=[tools.CALCULATOR_TOOL],
                                                 max_tokens=120, temperature=0, stream=True))
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(deltas) == 1 and deltas[0][0].index == 0 and deltas[0][0].function.arguments == call.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # tool_choice: a named function forces the call; none offers no tools
    forced = client.chat.completions.create(model="tools_tiny", messages=messages[:1], tools=[tools.CALCULATOR_TOOL],
                                            tool_choice={"type": "function", "function": {"name": "calculator"}},
                                            max_tokens=120, temperature=0)
    assert forced.choices[0].message.tool_calls[0].function.arguments == call.function.arguments


def test_reasoning_comes_back_as_reasoning_content_and_can_be_turned_off(tool_server):
    from tiny_runs import QUICK_ANSWER, QUICK_QUESTION, THINK_ANSWER, THINK_QUESTION, THINK_STEPS
    status, body = call(tool_server, "/v1/chat/completions", ask(THINK_QUESTION, max_tokens=120))
    assert status == 200 and body["choices"][0]["message"] == {"role": "assistant", "content": THINK_ANSWER,
                                                                "reasoning_content": THINK_STEPS}
    events = [json.loads(e) for e in stream(tool_server, ask(THINK_QUESTION, max_tokens=120))[:-1]]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == THINK_STEPS
    assert "".join(d.get("content", "") for d in deltas) == THINK_ANSWER
    off = ask(QUICK_QUESTION, max_tokens=60, chat_template_kwargs={"enable_thinking": False})
    assert call(tool_server, "/v1/chat/completions", off)[1]["choices"][0]["message"] == {"role": "assistant",
                                                                                         "content": QUICK_ANSWER}


@pytest.mark.parametrize("extra, param, message", [
    ({"tools": [{"type": "function"}]}, "tools", "'tools' must be"),
    ({"tool_choice": "required"}, "tool_choice", "needs 'tools'"),
    ({"tools": [{"type": "function", "function": {"name": "calculator"}}],
      "tool_choice": {"type": "function", "function": {"name": "search"}}}, "tool_choice", "one of ['calculator']"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": 3}}]}]},
     "messages[0].tool_calls", "tool_calls must be"),
])
def test_bad_tool_requests_are_400s_naming_the_field(tool_server, extra, param, message):
    status, body = call(tool_server, "/v1/chat/completions", {**ask("hi"), **extra})
    assert status == 400 and body["error"]["param"] == param and message in body["error"]["message"]


def test_a_tool_call_that_does_not_parse_comes_back_as_content_streamed_or_not(tool_server):
    """tool_choice forces the turn to open a call; 3 tokens later it stops (length) inside it: what the model wrote is
    the content, as vLLM returns it, with finish_reason length, and the stream sends the same text."""
    from tiny_runs import TOOL_QUESTION
    body = ask(TOOL_QUESTION, max_tokens=3, tools=[{"type": "function", "function": {"name": "calculator"}}],
               tool_choice="required")
    status, reply = call(tool_server, "/v1/chat/completions", body)
    message, finish = reply["choices"][0]["message"], reply["choices"][0]["finish_reason"]
    assert status == 200 and finish == "length" and "tool_calls" not in message
    assert message["content"].startswith('<tool_call>\n{"name": "') and len(message["content"]) > len('<tool_call>\n{"name": "')
    events = [json.loads(e) for e in stream(tool_server, body)[:-1]]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == message["content"]
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "length"


def test_a_tool_message_must_answer_an_earlier_call(tool_server):
    lone = {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "5"}], "max_tokens": 4}
    status, body = call(tool_server, "/v1/chat/completions", lone)
    assert status == 400 and body["error"]["param"] == "messages[1].tool_call_id" and "answers no tool call" in body["error"]["message"]
    asked = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}]}
    wrong = {**lone, "messages": [lone["messages"][0], asked, {"role": "tool", "tool_call_id": "call_2", "content": "5"}]}
    assert call(tool_server, "/v1/chat/completions", wrong)[0] == 400
    right = {**lone, "messages": [lone["messages"][0], asked, {"role": "tool", "tool_call_id": "call_1", "content": "5"}]}
    assert call(tool_server, "/v1/chat/completions", right)[0] == 200


def test_the_chat_page_shows_tool_calls_and_folded_reasoning_in_a_real_browser(tool_server):
    from tiny_runs import THINK_ANSWER, THINK_QUESTION, THINK_STEPS, TOOL_ANSWER, TOOL_QUESTION
    with chat_page(tool_server, "tools_tiny") as page:
        page.fill("#temperature", "0")
        page.fill("#max_tokens", "120")
        page.check("#calculator")
        page.fill("#message", TOOL_QUESTION)
        page.press("#message", "Enter")  # the page runs the call and asks again, as a client does
        page.wait_for_function("!document.getElementById('send').disabled && "
                               "document.querySelectorAll('.turn.assistant .content').length === 2", timeout=30000)
        assert page.locator(".tool-call").all_text_contents() == ['calculator({"expression": "478 + 356"}) → 834']
        assert page.locator(".turn.assistant .content").all_text_contents()[-1] == TOOL_ANSWER
        page.click("#reset")
        page.uncheck("#calculator")
        page.fill("#message", THINK_QUESTION)
        page.press("#message", "Enter")
        page.wait_for_function("!document.getElementById('send').disabled && "
                               "document.querySelector('.turn.assistant .content').textContent.length > 0", timeout=30000)
        assert page.locator(".turn.assistant .content").all_text_contents() == [THINK_ANSWER]
        reasoning = page.locator("details.reasoning")
        assert reasoning.get_attribute("open") is None  # folded until clicked
        assert reasoning.locator(".reasoning-text").text_content() == THINK_STEPS


def test_the_chat_page_says_when_it_cannot_run_a_tool_the_model_calls(tool_server):
    """The model calls a tool the page has no code for (a weather tool: faked replies from /v1/chat/completions, so
    the call is certain): the page shows the call with an error saying so, sends that back as the tool's result, and
    shows the model's next answer; it does not send the call to the calculator."""
    replies = iter([
        {"tool_calls": [{"index": 0, "id": "call_w", "type": "function",
                         "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
        {"content": "I cannot look up the weather."}])
    sent, calculator = [], []

    def fake_model(route):
        sent.append(json.loads(route.request.post_data))
        delta = next(replies)
        chunk = {"id": "x", "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "finish_reason": "tool_calls" if "tool_calls" in delta else "stop"}]}
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"},
                      body=f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n")

    with chat_page(tool_server, "tools_tiny") as page:
        page.route("**/v1/chat/completions", fake_model)
        page.on("request", lambda r: calculator.append(r.url) if "/tools/calculator" in r.url else None)
        page.check("#calculator")
        page.fill("#message", "What is the weather in Paris?")
        page.press("#message", "Enter")
        page.wait_for_function("!document.getElementById('send').disabled && "
                               "document.querySelectorAll('.turn.assistant .content').length === 2", timeout=30000)
        assert page.locator(".tool-call").all_text_contents() == [
            'weather({"city": "Paris"}) → error: this page has no implementation of the tool \'weather\'']
        assert page.locator(".turn.assistant .content").all_text_contents()[-1] == "I cannot look up the weather."
    assert not calculator and sent[1]["messages"][-1] == {
        "role": "tool", "tool_call_id": "call_w", "content": "error: this page has no implementation of the tool 'weather'"}


def test_the_pages_calculator_endpoint_is_the_safe_calculator(tool_server):
    assert call(tool_server, "/tools/calculator", {"expression": "478 + 356"}) == (200, {"result": "834"})
    assert call(tool_server, "/tools/calculator", {"expression": "__import__('os')"})[1]["result"].startswith("error:")


def test_call_names_are_kept_to_the_requests_tools_unless_free_calls(tool_server):
    """Offered calc(expression) instead of the calculator it learned, the memorized model (off its one known
    sequence) writes `calcumen...`; the server keeps its call's name and argument name to the offered ones
    (tools.CallConstraint), and returns what follows as it came; with --free-calls (constrain_calls=False) it does not."""
    from tiny_runs import TOOL_QUESTION
    calc = {"type": "function", "function": {"name": "calc", "description": "Adds.",
                                             "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}
    body = ask(TOOL_QUESTION, max_tokens=60, tools=[calc])

    def written(reply):
        message = reply["choices"][0]["message"]
        return message["content"] or json.dumps(message["tool_calls"])
    status, kept = call(tool_server, "/v1/chat/completions", body)
    assert status == 200 and written(kept).startswith('<tool_call>\n{"name": "calc", "arguments": {"expression": ')
    httpd, _ = serve.make_server(tool_server["generator"], port=0, quiet=True, constrain_calls=False)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        status, free = call({"url": f"http://127.0.0.1:{httpd.server_address[1]}"}, "/v1/chat/completions", body)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert status == 200 and not written(free).startswith('<tool_call>\n{"name": "calc",')
    assert serve.parse_args(["--checkpoint", "x", "--free-calls"]).free_calls and not serve.parse_args(["--checkpoint", "x"]).free_calls
