"""The tool-use data (issue 37): tools defined and asked many ways, held-out definitions and wordings that never reach
training, distractors, questions for no tool or an unoffered one; calls run against the offered definitions; the
bench's scoring."""
import json
import os
import re
import sys

import pytest

import builtin_data
import tools
from builtin_data import TOOL_KINDS, run_offered_call, tool_use_conversations, tool_use_items

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))


def _defined(conversations):
    """Every tool name, description and parameter name the conversations' tool lists hold."""
    names, descriptions, params = set(), set(), set()
    for conv in conversations:
        for t in conv[0]["tools"]:
            fn = t["function"]
            names.add(fn["name"])
            descriptions.add(fn["description"])
            params |= set(fn["parameters"]["properties"])
    return names, descriptions, params


def test_held_out_definitions_wordings_and_values_never_reach_training():
    train = tool_use_conversations(3000)
    users = {m["content"] for conv in train for m in conv if m["role"] == "user"}
    names, descriptions, params = _defined(train)
    for kind in builtin_data.ASKED_KINDS:
        spec = TOOL_KINDS[kind]
        held_names, held_descriptions = spec["names"][-2:], spec["descriptions"][-2:]
        assert not set(held_names) & names and not set(held_descriptions) & descriptions
        assert set(spec["names"][:-2]) <= names  # and every training definition is used
        for role, choices in spec["params"].items():
            assert choices[-1] not in params  # the held-out parameter name
        for lang, templates in spec.get("questions", {}).items():
            for template in templates[-2:]:  # a held-out wording: no training question is made from it
                pattern = re.compile(".+".join(re.escape(part) for part in re.split(r"\{\w+\}", template)))
                assert not any(pattern.fullmatch(u) for u in users), template
            assert any(re.compile(".+".join(re.escape(p) for p in re.split(r"\{\w+\}", templates[0]))).fullmatch(u)
                       for u in users)
    for kind in builtin_data.DISTRACTOR_KINDS["heldout"]:
        assert not set(TOOL_KINDS[kind]["names"]) & names
    held = tool_use_items("heldout", 400, definitions="heldout")
    held_names, _, _ = _defined([it["messages"] for it in held])
    assert held_names and not held_names & names
    arguments = {str(v) for it in tool_use_items("train", 3000) if it["case"] == "other" for v in it["call"]["arguments"].values()}
    held_arguments = {str(v) for it in tool_use_items("heldout", 1000, cases="other") for v in it["call"]["arguments"].values()}
    assert len(arguments) > 600 and len(held_arguments) > 300  # made up from parts: copied, not memorised
    assert not arguments & held_arguments  # held-out values (1 in 4, by a hash) are never an argument in training


def test_every_case_is_in_the_mix_with_the_right_call_or_none():
    items = tool_use_items("train", 600)
    cases = {it["case"] for it in items}
    assert cases == {"calculator", "other", "none", "not_offered"}
    for it in items:
        offered = it["offered"]
        assert 1 <= len(it["tools"]) <= 4 and len(offered) == len(it["tools"])
        if it["case"] in ("calculator", "other"):
            assert it["call"]["name"] in offered and offered[it["call"]["name"]][0] == it["kind"]
            wire = it["conversation"][2]["tool_calls"][0]["function"]
            assert json.loads(wire["arguments"]) == it["call"]["arguments"]
            result, ok = run_offered_call(offered, wire)  # the reference call runs against the offered definition
            assert ok and it["conversation"][3]["content"] == result
            if it["case"] == "calculator":
                assert result == it["answer"] and it["conversation"][-1]["content"].endswith(f"{it['answer']}。") or \
                    it["conversation"][-1]["content"].endswith(f"{it['answer']}.")
            else:  # the arguments are copied from the question
                assert all(str(v) in it["messages"][-1]["content"] for v in it["call"]["arguments"].values())
        else:
            assert it["call"] is None and len(it["conversation"]) == 3
            assert it["kind"] is None or it["kind"] not in {k for k, _ in offered.values()}
        if it["case"] == "not_offered":
            assert it["conversation"][-1]["content"] == builtin_data.NO_TOOL_REPLY[it["lang"]]
    heldout = tool_use_items("heldout", 200, definitions="heldout", cases="other", distractors=(1, 3))
    assert all(2 <= len(it["tools"]) <= 4 for it in heldout) and {it["case"] for it in heldout} == {"other"}


def test_calls_run_against_the_offered_definition_and_errors_are_texts():
    offered = {"add_up": ("calculator", {"expression": "formula"}), "sky": ("weather", {"city": "place"})}
    assert run_offered_call(offered, {"name": "add_up", "arguments": '{"formula": "2 + 3"}'}) == ("5", True)
    result, ok = run_offered_call(offered, {"name": "sky", "arguments": '{"place": "Paris"}'})
    assert ok and result == run_offered_call(offered, {"name": "sky", "arguments": '{"place": "Paris"}'})[0]
    assert run_offered_call(offered, {"name": "calculator", "arguments": '{"formula": "1"}'}) == \
        ("error: there is no tool named 'calculator'", False)
    assert run_offered_call(offered, {"name": "add_up", "arguments": '{"expression": "1"}'}) == \
        ("error: add_up takes formula", False)
    assert run_offered_call(offered, {"name": None, "arguments": None})[1] is False
    assert run_offered_call(offered, {"name": "add_up", "arguments": "[1]"})[1] is False


def test_the_tool_use_source_renders_five_tools_and_turns_in_the_chain_context():
    """data.py's --data tool-use gives SFT conversations (and refuses prompts in one line); its tool lists render
    one line each, so five tools and a few turns stay within the chain's 512 tokens (counted here in UTF-8 bytes,
    which bound the tokens of any byte-level tokenizer)."""
    from data import DataError, load_datasets
    train, val, _ = load_datasets(["tool-use"], "chat", max_records=50)
    assert len(train) == 50 and train[0][0]["role"] == "system" and train[0][0]["tools"]
    with pytest.raises(DataError, match="--data tool-use: conversations"):
        load_datasets(["tool-use"], "prompt")
    item = tool_use_items("heldout", 1, definitions="heldout", cases="calculator")[0]
    five = [builtin_data.tool_definition(k, __import__("random").Random(0), "heldout")[0]
            for k in ("calculator", "weather", "time", "translate", "email")]
    lines = "\n".join(f"{t['function']['name']}({', '.join(t['function']['parameters']['properties'])}): "
                      f"{t['function']['description']}" for t in five)
    assert len(lines.encode()) < 400  # ~0.7 tokens a byte with the chain's tokenizer: ~250 of the 512


def test_the_bench_scores_each_case():
    import tool_use
    calc = tool_use_items("heldout", 1, definitions="heldout", cases="calculator")[0]
    right = f"<tool_call>...</tool_call><|im_end|>\n<|im_start|>assistant\n{calc['answer']}<|im_end|>"
    assert tool_use.score(calc, right, []) == 1.0 and tool_use.score(calc, "1<|im_end|>", []) == 0.0
    other = tool_use_items("heldout", 1, definitions="heldout", cases="other")[0]
    call = {"name": other["call"]["name"], "arguments": json.dumps({k: str(v) for k, v in other["call"]["arguments"].items()})}
    assert tool_use.score(other, "", [(call, "ok", True)]) == 1.0
    assert tool_use.score(other, "", [({**call, "name": "nope"}, "error", False)]) == 0.0
    assert tool_use.score(other, "", [({**call, "arguments": "{}"}, "error", False)]) == 0.0
    assert tool_use.score(other, "I can't.", []) == 0.0
    none = tool_use_items("heldout", 1, definitions="heldout", cases="none")[0]
    assert tool_use.score(none, "Mira is a fox.", []) == 1.0 and tool_use.score(none, "", [(call, "x", True)]) == 0.0
    stages = tool_use.commands("/tmp/out", 2)
    assert [s for s, _, _ in stages] == ["pretrain", "copy", "sft"]
    assert all(argv[argv.index("--seq-len") + 1] == "512" for _, _, argv in stages)
    assert stages[0][2][stages[0][2].index("--data") + 1:][:2] == ["builtin", "builtin-made-up"]
    assert stages[1][2][stages[1][2].index("--data") + 1] == "builtin-made-up" and stages[1][2][stages[1][2].index("--init-from") + 1] == stages[0][1]
    assert stages[2][2][stages[2][2].index("--data") + 1] == "tool-use" and stages[2][2][stages[2][2].index("--init-from") + 1] == stages[1][1]


def test_generate_with_tools_runs_the_rows_own_tools(memorized):
    """run_call: each row's calls go to that row's tools (here: a calculator named otherwise and a dead one)."""
    from generate import GenerationConfig, load_generator
    from tiny_runs import TOOL_QUESTION
    gen = load_generator(memorized)
    prompt = gen.tokenizer.apply_chat_template([{"role": "user", "content": TOOL_QUESTION}], add_generation_prompt=True,
                                               tools=[tools.CALCULATOR_TOOL])[0]
    seen = []

    def run_call(row, call):
        seen.append((row, call["name"]))
        return ("834", True) if row == 0 else ("error: broken", False)
    _, _, calls = gen.generate_with_tools([prompt, prompt], GenerationConfig(greedy=True, max_new_tokens=120),
                                          max_tool_calls=1, run_call=run_call)
    assert sorted(seen) == [(0, "calculator"), (1, "calculator")]
    assert [r for _, r, _ in calls[0]] == ["834"] and [r for _, r, _ in calls[1]] == ["error: broken"]


def test_made_up_texts_repeat_each_made_up_value_and_hold_out_none():
    """builtin-made-up (pretraining for the tool-use chain): every made-up name comes back in the same line, so only
    copying predicts it; no held-out argument value is among them."""
    from data import DataError, load_datasets
    docs = builtin_data.made_up_texts(n_docs=200)
    held = {str(v) for it in tool_use_items("heldout", 500, cases="other") for v in it["call"]["arguments"].values()}
    for doc in docs:
        for line in doc.splitlines():
            words = set(re.findall(r"\b[A-Z][a-z]{3,}\b", line)) - {"People", "Everyone", "Again", "Note", "Now", "Ask", "The"}
            assert all(line.count(w) >= 2 for w in words), line
    said = {w for doc in docs for w in re.findall(r"[A-Z][a-z]+", doc)}  # whole made-up words
    assert said and not {v for v in held if re.fullmatch(r"[A-Z][a-z]+", v)} & said
    train, _, _ = load_datasets(["builtin-made-up"], "text")
    assert len(train) > 1000
    with pytest.raises(DataError, match="--data builtin-made-up: documents"):
        load_datasets(["builtin-made-up"], "chat")


def test_call_constraint_allows_only_what_continues_an_offered_name_or_parameter(memorized):
    from generate import load_generator
    tok = load_generator(memorized).tokenizer
    offered = [{"type": "function", "function": {"name": "math_eval", "parameters": {"properties": {"equation": {}}}}},
               {"type": "function", "function": {"name": "local_time", "parameters": {"properties": {"place": {}}}}}]
    c = tools.CallConstraint(tok, offered)

    def texts(prefix):
        return {tok.decode([i]) for i in c.allowed(prefix)}
    start = '<tool_call>\n{"name": '
    assert texts(start) == {'"'} or all('"math_eval", "arguments": {'.startswith(t) or '"local_time", "arguments": {'.startswith(t)
                                         for t in texts(start))
    assert all("math_eval".startswith(t) or "local_time".startswith(t) for t in texts(start + '"'))
    assert all("_eval".startswith(t) for t in texts(start + '"math'))
    assert all('"equation": '.startswith(t) for t in texts(start + '"math_eval", "arguments": {'))
    assert c.allowed(start + '"math_eval", "arguments": {"equation": "7') is None  # the value is the model's
    assert c.allowed(start + '"zz') is None and c.allowed("no call here") is None
    assert c.allowed(start + '"local_time", "arguments": {"place": "Oslo", ') is None  # every parameter used


def test_constrained_generation_calls_the_offered_name(memorized):
    """The memorized model writes calculator(expression); offered only calc(expression), constrained decoding makes
    its call name calc and its argument expression (what follows is free: this memorizer, pushed off the one sequence
    it knows, then writes a broken value, which parse_assistant keeps as content)."""
    from generate import GenerationConfig, load_generator
    from tiny_runs import TOOL_QUESTION
    gen = load_generator(memorized)
    offered = [{"type": "function", "function": {"name": "calc", "description": "Adds.",
                                                 "parameters": {"properties": {"expression": {"type": "string"}}}}}]
    prompt = gen.tokenizer.apply_chat_template([{"role": "user", "content": TOOL_QUESTION}], add_generation_prompt=True,
                                               tools=[tools.CALCULATOR_TOOL])[0]
    greedy = GenerationConfig(greedy=True, max_new_tokens=100)
    free = gen.generate_with_tools([prompt], greedy, max_tool_calls=1, run_call=lambda r, c: ("834", True))[0][0]
    kept = gen.generate_with_tools([prompt], greedy, max_tool_calls=1, run_call=lambda r, c: ("834", True),
                                   constraints=[tools.CallConstraint(gen.tokenizer, offered)])[0][0]
    assert gen.tokenizer.decode(free).startswith('<tool_call>\n{"name": "calculator", "arguments": {"expression": ')
    assert gen.tokenizer.decode(kept).startswith('<tool_call>\n{"name": "calc", "arguments": {"expression": ')
