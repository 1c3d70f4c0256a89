import gzip
import json
import os
import re

import numpy as np
import pytest

import builtin_data
from data import (DataError, EpochSampler, LanguageModelingDataset, load_datasets, parse_source, read_records)


def write(path, lines):
    path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n", encoding="utf-8")
    return str(path)


CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


@pytest.mark.parametrize("record,kind,expected", [
    ({"text": "doc"}, "text", "doc"),
    ({"conversations": CHAT}, "chat", CHAT),
    ({"messages": CHAT}, "chat", CHAT),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}, "chat", CHAT),
    ({"messages": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}, "chat", CHAT),  # was refused
    ({"instruction": "hi", "input": "", "output": "hello"}, "chat", CHAT),
    ({"instruction": "hi", "input": "there", "output": "hello"}, "chat",
     [{"role": "user", "content": "hi\nthere"}, {"role": "assistant", "content": "hello"}]),
    ({"chosen": CHAT, "rejected": [CHAT[0], {"role": "assistant", "content": "go away"}]}, "pair",
     {"prompt": CHAT[:1], "chosen": "hello", "rejected": "go away"}),
    ({"prompt": "hi", "chosen": "hello", "rejected": "go away"}, "pair",
     {"prompt": CHAT[:1], "chosen": "hello", "rejected": "go away"}),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}, "pair",
     {"prompt": CHAT[:1], "chosen": "hello", "rejected": "go away"}),
    ({"conversations": [{"from": "human", "value": "hi"}], "chosen": {"from": "gpt", "value": "hello"},
      "rejected": {"from": "gpt", "value": "go away"}}, "pair", {"prompt": CHAT[:1], "chosen": "hello", "rejected": "go away"}),
    ({"prompt": "hi", "answer": "4"}, "prompt", {"prompt": CHAT[:1], "answer": "4"}),
    ({"conversations": CHAT}, "prompt", {"prompt": CHAT[:1], "answer": None}),
])
def test_each_format_is_detected_and_normalised(tmp_path, record, kind, expected):
    assert read_records(write(tmp_path / "d.jsonl", [record]), kind) == [expected]


def test_text_files_split_into_documents_on_blank_lines(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("first doc\nline two\n\nsecond doc\n\n\nthird")
    assert read_records(str(p), "text") == ["first doc\nline two", "second doc", "third"]


def test_alpaca_json_array_and_gzipped_jsonl(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps([{"instruction": "hi", "input": "", "output": "hello"}] * 3))
    assert len(read_records(str(p), "chat")) == 3
    g = tmp_path / "h.jsonl.gz"
    with gzip.open(g, "wt") as f:
        f.write(json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}) + "\n")
    assert read_records(str(g), "pair")[0]["rejected"] == "c"


@pytest.mark.parametrize("lines,message", [
    ([{"text": "ok"}, "{broken"], r"d.jsonl:2: invalid JSON"),
    ([{"instruction": "x", "output": "y"}, {"instruction": "x"}], r"d.jsonl:2: missing field 'output'"),
    ([{"text": "ok"}, {"text": 5}], r"d.jsonl:2: field 'text' should be str, got int"),
    ([{"messages": [{"role": "robot", "content": "x"}]}], r"d.jsonl:1: field 'messages\[0\].role' is 'robot'"),
    ([{"messages": [{"from": "human"}]}], r"d.jsonl:1: field 'messages\[0\]' should be an object with 'from' and 'value'"),
    ([{"foo": 1}], r"d.jsonl:1: cannot tell the format from fields \['foo'\]"),
    ([{"prompt": "a", "chosen": "b"}], r"d.jsonl:1: missing field 'rejected'"),
    ([{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b", "rejected": "b"}],
     r"d.jsonl:2: fields 'chosen' and 'rejected' are the same reply"),  # was trained on as a tie
])
def test_bad_records_name_file_line_and_field(tmp_path, lines, message):
    kind = "pair" if "chosen" in str(lines) else "chat" if "instruction" in str(lines) or "messages" in str(lines) else "text"
    with pytest.raises(DataError, match=message):
        read_records(write(tmp_path / "d.jsonl", lines), kind)



def test_a_damaged_gzip_file_is_named(tmp_path):
    good = gzip.compress(b'{"text": "hello"}\n' * 50)
    for name, raw in [("plain.jsonl.gz", b'{"text": "hello"}\n'), ("cut.jsonl.gz", good[:len(good) // 2])]:
        (tmp_path / name).write_bytes(raw)  # was "Not a gzipped file (b'{\"')" without the file, and an EOFError traceback
        with pytest.raises(DataError, match=f"{name}: not a readable gzip file"):
            read_records(str(tmp_path / name), "text")


def test_a_json_file_holding_one_object_says_so(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": [{"text": "hello"}]}, indent=2))  # was "d.json:1: invalid JSON (Expecting ...)"
    with pytest.raises(DataError, match=r"d.json: one JSON object with keys \['data'\], not records"):
        read_records(str(path), "text")
    for name in ("d.json", "d.jsonl"):  # also when the first line opens the array: {"data": [
        path = tmp_path / name
        path.write_text('{"data": [\n  {"text": "hello"}\n]}\n')
        with pytest.raises(DataError, match=rf"{name}: one JSON object with keys \['data'\], not records"):
            read_records(str(path), "text")
    path.write_text(json.dumps({"text": "one record"}))  # one record on one line is still JSON Lines
    assert read_records(str(path), "text") == ["one record"]

def test_wrong_kind_for_stage_is_explained(tmp_path):
    with pytest.raises(DataError, match="holds text records; this stage needs chat"):
        read_records(write(tmp_path / "d.jsonl", [{"text": "x"}]), "chat")
    path = write(tmp_path / "a.jsonl", [{"instruction": "x", "output": "y"}])
    with pytest.raises(DataError, match="--format pair holds pair records; this stage needs chat"):  # was: missing field 'prompt'
        read_records(path, "chat", fmt="pair")
    with pytest.raises(DataError, match="--format nope: unknown; one of text, "):  # was: a.jsonl:1: unknown format
        read_records(path, "chat", fmt="nope")


def test_a_bad_item_of_a_json_array_is_named_by_the_line_it_starts_on(tmp_path):
    p = tmp_path / "alpaca.json"
    good = {"instruction": "hi", "input": "", "output": "hello"}
    p.write_text(json.dumps([good, good, {"instruction": "x"}], indent=1))  # the third item starts on line 12
    with pytest.raises(DataError, match=r"alpaca.json:12: missing field 'output'"):
        read_records(str(p), "chat")


def test_a_folder_given_as_data_says_so(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: a folder, not a file"):
        read_records(str(tmp_path), "text")


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd")
def test_a_pipe_is_read_like_a_file():
    for raw in (b'{"text": "from a pipe"}\n', b'[{"text": "from a pipe"}]'):  # JSON Lines, or a JSON array
        r, w = os.pipe()  # what --data <(head big.jsonl) passes: /dev/fd/N, not a regular file ("file not found" before)
        os.write(w, raw)
        os.close(w)
        try:
            assert read_records(f"/dev/fd/{r}", "text") == ["from a pipe"]
        finally:
            os.close(r)


def test_empty_and_undecodable_files(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="e.jsonl: file is empty"):
        read_records(str(empty), "text")
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"fine\nstill fine\n\xff\xfe broken")
    with pytest.raises(DataError, match=r"b.txt:3: bytes are not valid UTF-8"):
        read_records(str(bad), "text")
    with pytest.raises(DataError, match="missing.txt: file not found"):
        read_records(str(tmp_path / "missing.txt"), "text")


def test_skip_bad_lines_counts_and_lists_them(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"text": "a"}, "{bad", {"text": 3}, {"text": "b"}])
    train, val, stats = load_datasets([path], "text", val_split=0.0, skip_bad_lines=True)
    src = stats["sources"][path]
    assert train == ["a", "b"] and src["skipped"] == 2 and src["raw_records"] == 4
    assert src["skipped_lines"][0].startswith(f"{path}:2:")


def test_sampling_ratio_max_samples_and_split_are_deterministic_and_disjoint(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"text": f"doc {i}"} for i in range(100)])
    a = load_datasets([f"{path}:0.5"], "text", seed=1, val_split=0.1)
    b = load_datasets([f"{path}:0.5"], "text", seed=1, val_split=0.1)
    assert a[0] == b[0] and a[1] == b[1]
    assert len(a[0]) == 45 and len(a[1]) == 5 and not set(a[0]) & set(a[1])
    assert len(load_datasets([f"{path}:1.0:10"], "text", val_split=0.0)[0]) == 10
    assert load_datasets([f"{path}:0.5"], "text", seed=2, val_split=0.1)[0] != a[0]


def test_source_sampled_to_zero_warns(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"text": "x"}] * 3)
    other = write(tmp_path / "o.jsonl", [{"text": "y"}] * 10)
    _, _, stats = load_datasets([f"{path}:0.1", other], "text")
    assert any("sampled to 0" in w for w in stats["warnings"])


def test_parse_source(tmp_path):
    assert (parse_source("a.jsonl").ratio, parse_source("a.jsonl:0.25").ratio) == (1.0, 0.25)
    assert parse_source("dir/a.jsonl:1:50").max_samples == 50
    with pytest.raises(DataError, match="ratio must be in"):
        parse_source("a.jsonl:2")
    real = tmp_path / "c.txt"
    real.write_text("x")
    for suffix in ("half", "-1", "0.5:x"):  # was "file not found" for the whole spec
        with pytest.raises(DataError, match=f"expected path\\[:ratio\\[:max_samples\\]\\], got '{suffix}' after the path"):
            parse_source(f"{real}:{suffix}")
    with pytest.raises(DataError, match="expected path"):
        parse_source(f"{real}:0.5:10:3")


def test_language_modeling_blocks_and_mask(tmp_path):
    tokens = np.array([1, 10, 11, 2, 1, 12, 13, 14, 2, 1, 15], dtype=np.uint16)
    path = tmp_path / "t.bin"
    tokens.tofile(path)
    ds = LanguageModelingDataset(str(path), "uint16", seq_len=4, bos_id=1)
    assert len(ds) == 2
    x, y, mask = ds[0]
    assert x.tolist() == [1, 10, 11, 2] and y.tolist() == [10, 11, 2, 1]
    assert mask.tolist() == [1, 1, 1, 0]  # predicting the next document's <|im_start|> carries no loss


def test_epoch_sampler_is_a_deterministic_permutation_per_epoch():
    s = EpochSampler(10, seed=3)
    first = s.take(0, 10)
    assert sorted(first) == list(range(10)) and EpochSampler(10, 3).take(0, 10) == first
    assert sorted(s.take(10, 10)) == list(range(10)) and s.take(10, 10) != first
    assert s.take(5, 3) == first[5:8]


def test_builtin_stories_teach_copying_a_name_to_the_start_of_a_line():
    # a chat answer starts a line: the question's " Lumi" must become the token "Lumi" (see builtin_data._story)
    texts = builtin_data.pretrain_texts()
    for name, _ in builtin_data.NAMES:
        assert any(f"named {name}.\n{name} lived" in t for t in texts), name
        assert any(f" met {name}, " in t and f"\n{name} wore" in t for t in texts), name


def test_builtin_facts_sums_and_word_problems_start_their_lines_as_chat_answers_do():
    # a chat answer starts a line ("Mira lives in Oakvale.", "3 plus 4 is 7."), so the pretraining text states facts
    # and sums one a line, and word problems copy a number read earlier to the start of a sum's line
    texts = builtin_data.pretrain_texts()
    assert any(t.startswith("Mira ") and "\nMira " in t and " Mira " not in t for t in texts)  # a fact sheet
    assert any("\n3 plus 4 is 7.\n" in t for t in texts) and any("\n3加4等于7。" in t for t in texts)
    problem = next(t for t in texts if " and found " in t)
    first = problem.splitlines()[:2]  # "Bex had 5 fish and found 4 more." then "5 plus 4 is 9."
    x, y = first[0].split(" had ")[1].split()[0], first[0].split(" found ")[1].split()[0]
    assert first[1] == f"{x} plus {y} is {int(x) + int(y)}."


def test_builtin_data_is_deterministic_bilingual_and_checkable():
    assert builtin_data.pretrain_texts() == builtin_data.pretrain_texts()
    texts = builtin_data.pretrain_texts()
    assert any("lives in" in t for t in texts) and any("住在" in t for t in texts)
    train, held = builtin_data.checkable_prompts(split="train"), builtin_data.checkable_prompts(split="heldout")
    assert held and not {p["prompt"] for p in train} & {p["prompt"] for p in held}
    for item in held:
        assert builtin_data.check_answer(item["response"], item["answer"]) == 1.0
    assert builtin_data.check_answer("3 plus 4 is 71.", "7") == 0.0
    pairs = builtin_data.preference_pairs()
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    # the SFT data hedges on a stable ~40% of questions: the habit the preference stages are measured on removing
    items = builtin_data.checkable_prompts()
    assert 0.3 < sum(map(builtin_data.hedged, items)) / len(items) < 0.5
    replies = {c[1]["content"] for c in builtin_data.sft_conversations()}
    assert "I don't know." in replies and "我不知道。" in replies
    # every kind of rejected reply is what its name says
    right = {it["response"] for it in items}
    by_prompt = {it["prompt"]: it for it in items}
    by_response = {it["response"]: it for it in items}
    for p in pairs:
        it = by_prompt[p["prompt"][0]["content"]]
        if p["kind"] == "hedge":
            assert p["rejected"] == builtin_data.IDK[it["lang"]]
        elif p["kind"] == "language":
            assert p["rejected"] in right and any("\u4e00" <= ch <= "\u9fff" for ch in p["rejected"]) == (it["lang"] == "en")
        elif p["kind"] in ("off_topic", "other_kind"):  # the right answer to another question, of the same kind or not
            other = by_response[p["rejected"]]
            same_kind = (other["attr"] == "sum") == (it["attr"] == "sum")
            assert other["lang"] == it["lang"] and other["answer"] != it["answer"] and same_kind == (p["kind"] == "off_topic")
        else:
            assert p["kind"] == "wrong_fact" and p["rejected"] not in right
    assert {p["kind"] for p in pairs} == {"hedge", "language", "off_topic", "other_kind", "wrong_fact"}


def test_off_topic_replies_are_chosen_elsewhere_and_never_a_held_out_answer():
    """A reward model must read the question: each off-topic reply is a training question's right answer (chosen in
    that question's own pairs), and no held-out question's answer is chosen or off-topic in a training pair."""
    train = builtin_data.preference_pairs(split="train")
    chosen = {p["chosen"] for p in train}
    off_topic = [p["rejected"] for p in train if p["kind"] in ("off_topic", "other_kind")]
    assert off_topic and set(off_topic) <= chosen
    held_out = {it["response"] for it in builtin_data.checkable_prompts(split="heldout")}
    assert not held_out & (chosen | set(off_topic))
    # the same off-topic kinds reach the held-out pairs, which the reward model is measured on
    held = builtin_data.preference_pairs(split="heldout")
    assert {p["kind"] for p in held} == {"hedge", "language", "off_topic", "other_kind", "wrong_fact"}


def test_builtin_world_is_the_same_for_every_stage_and_training_seed():
    """Pretraining text, SFT conversations and the regression suite describe one world whatever --seed is."""
    place = builtin_data.world()["Mira"]["place"][0]
    texts, _, _ = load_datasets(["builtin"], "text", seed=5, val_split=0.0)
    assert any(f"Mira lives in {place}." in t for t in texts)
    assert not any(f"Mira lives in {p}." in t for t in texts for p, _ in builtin_data.PLACES if p != place)
    convs, _, _ = load_datasets(["builtin"], "chat", seed=99, val_split=0.0)
    world = builtin_data.world()
    asked = [(c[0]["content"][len("Where does "):-len(" live?")], c[1]["content"]) for c in convs
             if c[0]["content"].startswith("Where does ")]
    assert asked and all(world[name]["place"][0] in answer for name, answer in asked if answer != "I don't know.")


# ----------------------------------------------------------------------------- reasoning and tools
CALL = {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\": \"2 + 3\"}"}}
TOOLS = [{"type": "function", "function": {"name": "calculator", "parameters": {"properties": {"expression": {}}}}}]


def test_openai_messages_keep_tool_calls_reasoning_tool_turns_and_tools(tmp_path):
    path = write(tmp_path / "tools.jsonl", [json.dumps({"tools": TOOLS, "messages": [
        {"role": "user", "content": "2+3?"},
        {"role": "assistant", "content": None, "reasoning_content": "Add them.", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
        {"role": "assistant", "content": "5."}]})])
    (msgs,) = read_records(path, "chat")
    assert msgs[0] == {"role": "system", "content": "", "tools": TOOLS}  # the tools travel in a system turn
    assert msgs[2] == {"role": "assistant", "content": "", "reasoning_content": "Add them.", "tool_calls": [CALL]}
    assert msgs[3] == {"role": "tool", "content": "5", "tool_call_id": "call_1"}
    (prompt,) = read_records(path, "prompt")  # as a prompt: everything before the last assistant turn
    assert [m["role"] for m in prompt["prompt"]] == ["system", "user", "assistant", "tool"]


def test_minimind_r1_reasoning_inline_becomes_reasoning_content(tmp_path):
    path = write(tmp_path / "r1_mix_1024.jsonl", [
        json.dumps({"conversations": [{"role": "user", "content": "1+1?"},
                                      {"role": "assistant", "content": "<think>\n1 and 1 make 2.\n</think>\n<answer>\n2\n</answer>"}]},
                   ensure_ascii=False),
        json.dumps({"conversations": [{"role": "user", "content": "天空是什么颜色？"},
                                      {"role": "assistant", "content": "<think>想一想。</think>\n\n蓝色。"}]}, ensure_ascii=False)])
    first, second = read_records(path, "chat")
    assert first[1] == {"role": "assistant", "reasoning_content": "1 and 1 make 2.", "content": "2"}
    assert second[1] == {"role": "assistant", "reasoning_content": "想一想。", "content": "蓝色。"}


@pytest.mark.parametrize("message, error", [
    ({"role": "assistant", "content": "<think>never closed"}, "messages[1].content' has <think> without a closing"),
    ({"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "calculator", "arguments": "{2+"}}]},
     "messages[1].tool_calls[0].function.arguments' is not valid JSON"),
    ({"role": "assistant", "content": None, "tool_calls": [{"function": {"arguments": "{}"}}]},
     "messages[1].tool_calls[0].function.name' should be str"),
    ({"role": "assistant", "content": "x", "reasoning_content": 3}, "messages[1].reasoning_content' should be str"),
    ({"role": "robot", "content": "x"}, "expected system/user/assistant/tool"),
])
def test_bad_tool_and_reasoning_records_name_file_line_and_field(tmp_path, message, error):
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    bad = json.dumps({"messages": [{"role": "user", "content": "hi"}, message]})
    path = write(tmp_path / "bad.jsonl", [good, bad])
    with pytest.raises(DataError, match=re.escape(error)) as e:
        read_records(path, "chat")
    assert "bad.jsonl:2: field 'messages[1]" in str(e.value) and "\n" not in str(e.value)


def test_arithmetic_sources_give_conversations_and_held_out_prompts_for_each_way():
    from data import arithmetic_records, heldout_prompts
    think = arithmetic_records("arithmetic-think", "chat", "train", n=4)
    assert [m["role"] for m in think[0]] == ["user", "assistant"] and think[0][1]["reasoning_content"][0].isdigit()
    assert think[0][1]["content"].endswith(".") and think[0][1]["reasoning_content"].splitlines()[-1].startswith("So ")
    tool = arithmetic_records("arithmetic-tool", "chat", "train", n=2)[0]
    assert tool[0]["tools"][0]["function"]["name"] == "calculator" and tool[2]["tool_calls"]
    held = heldout_prompts(["arithmetic-tool"])
    assert len(held) == 200 and held[0]["prompt"][0]["role"] == "system" and held[0]["answer"].isdigit()
    train_questions = {r["prompt"][-1]["content"] for r in arithmetic_records("arithmetic-direct", "prompt", "train")}
    assert not train_questions & {r["prompt"][-1]["content"] for r in held}  # no held-out question is trained on
    with pytest.raises(DataError, match="arithmetic-think: conversations .* this stage needs text"):
        load_datasets(["arithmetic-think"], "text")


def test_arithmetic_sources_can_name_their_digit_counts_and_keep_other_sizes_out():
    """arithmetic-think-1-2: worked traces for numbers of 1 or 2 digits only (an SFT set from which no 3-digit trace
    can reach a model that GRPO then trains on 3-digit prompts); the plain source stays 3 digits, as before."""
    from data import arithmetic_records, heldout_prompts
    small = arithmetic_records("arithmetic-think-1-2", "chat", "train", n=400)
    numbers = [int(n) for c in small for n in re.findall(r"\d+", c[0]["content"])]
    assert max(numbers) <= 99 and min(numbers) <= 9  # both sizes, none of 3 digits
    assert all(len(c[1]["reasoning_content"].splitlines()) <= 3 for c in small)  # at most two columns, then "So ..."
    three = [int(n) for r in heldout_prompts(["arithmetic-think"]) for n in re.findall(r"\d+", r["prompt"][-1]["content"])]
    assert min(three) >= 100
    assert arithmetic_records("arithmetic-think", "chat", "train", n=3) == arithmetic_records("arithmetic-think-3", "chat", "train", n=3)


def test_the_2to3_chain_s_extra_sources_teach_no_three_digit_sum():
    """digit-chores (what is left of two numbers without their last digits) and builtin-numbers (numbers of 1-4
    digits repeated in sentences) hold 3-digit numbers but no sum, difference or column, and only where they belong."""
    from data import load_datasets
    chores, _, _ = load_datasets(["digit-chores"], "chat")
    assert all(c[1]["content"].startswith(("Left: ", "还剩")) and "=" not in c[1]["content"] for c in chores)
    assert any(len(n) == 3 for c in chores for n in re.findall(r"\d+", c[0]["content"]))
    numbers, _, _ = load_datasets(["builtin-numbers"], "text")
    assert numbers and not any("plus" in d or "=" in d for d in numbers)
    with pytest.raises(DataError, match="digit-chores: conversations"):
        load_datasets(["digit-chores"], "text")
    with pytest.raises(DataError, match="builtin-numbers: documents"):
        load_datasets(["builtin-numbers"], "chat")
    places, _, _ = load_datasets(["builtin-places"], "text")
    assert places and not any("plus" in d or "=" in d or "加" in d for d in places)
    with pytest.raises(DataError, match="builtin-places: documents"):
        load_datasets(["builtin-places"], "chat")
    chores, _, _ = load_datasets(["place-chores"], "chat")
    assert all(re.search(r"(?: make |合起来是)\d+[.。]$|^\d+(?: and |和)\d+[:：]", c[1]["content"]) for c in chores)
    assert not any(re.search(r"[+=]|write|plus|写|加", c[1]["content"]) for c in chores)
    assert {len(n) for c in chores for n in re.findall(r"\d+", c[0]["content"])} >= {1, 2, 3, 4, 5}
    with pytest.raises(DataError, match="place-chores: conversations"):
        load_datasets(["place-chores"], "text")
