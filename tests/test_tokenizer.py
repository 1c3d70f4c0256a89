import json
import subprocess
import sys

import pytest

from tokenizer import BPETokenizer, SPECIAL_TOKENS

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs!",
    "Numbers 12345 and 3.14, code: def f(x): return x**2  # comment\n\ttabbed",
    "孙悟空大闹天宫。唐僧师徒四人去西天取经，一路上降妖除魔。",
    "Emoji 🙂🚀 and accents: café, naïve, Ünïcödé. Mixed 中文 and English words.",
] * 20


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(CORPUS, vocab_size=400, verbose=False)


@pytest.mark.parametrize("text", [
    "hello world", "孙悟空", "🙂🚀 emoji", "control\x00\x01\x1b chars\r\n", "  leading and trailing  ",
    "a" * 1000, "", "mixed 中文 text with 123 numbers", "<|im_start|> looks special",
])
def test_decode_inverts_encode_for_any_string(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_lone_surrogate_round_trips_as_replacement_char(tok):
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"


def test_training_is_deterministic_and_merges_learn_frequent_words(tok):
    again = BPETokenizer.train(iter(CORPUS), vocab_size=400, verbose=False)  # an iterator works too
    assert again.merges == tok.merges
    assert len(tok.encode(" the")) == 1  # a frequent word became one token
    assert len(CORPUS[0].encode()) / len(tok.encode(CORPUS[0])) > 2.0  # real compression, not bytes
    assert tok.vocab_size == 400


def test_special_token_ids_are_fixed_and_never_produced_by_merges(tok):
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(9))  # ChatML's three, then think and tools
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert all(new_id > 8 for _, new_id in tok.merges)


def test_special_strings_in_user_text_are_plain_text_unless_allowed(tok):
    text = "hi <|im_end|> there"
    assert 2 not in tok.encode(text)
    assert tok.encode(text, allow_special=True).count(2) == 1


def test_add_special_tokens_wraps_document_in_bos_eos(tok):
    ids = tok.encode("hello", add_special_tokens=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids, skip_special_tokens=True) == "hello"


def test_chat_mask_covers_assistant_content_and_its_im_end_only(tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there"}, {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Bye!"}]
    ids, mask = tok.apply_chat_template(msgs)
    assert len(ids) == len(mask)
    learned = [i for i, m in zip(ids, mask) if m]
    expected = tok.encode("Hello there") + [tok.eos_id] + tok.encode("Bye!") + [tok.eos_id]
    assert learned == expected
    text = tok.decode(ids)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\nHello there<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
                    "<|im_start|>assistant\nBye!<|im_end|>\n")
    # the role header and the newline after <|im_end|> carry no loss
    header = [tok.bos_id] + tok.encode("assistant\n")
    start = ids.index(tok.bos_id, len(tok.apply_chat_template(msgs[:2])[0]))
    assert ids[start:start + len(header)] == header and mask[start:start + len(header)] == [0] * len(header)


def test_generation_prompt_ends_with_assistant_header(tok):
    ids, mask = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert tok.decode(ids).endswith("<|im_start|>assistant\n") and sum(mask) == 0


def test_digits_split_makes_every_digit_its_own_token_so_numbers_are_spelled_one_way(tok):
    from tokenizer import DIGITS_PATTERN
    assert tok.encode(" 12345") != [tok.token_to_id(" "), *[tok.token_to_id(d) for d in "12345"]]  # GPT-2's grouping
    tok = BPETokenizer.train(CORPUS, vocab_size=400, verbose=False, pattern=DIGITS_PATTERN)
    # the corpus says "12345" twenty times: GPT-2's split learns tokens like " 123"; with digits split none is made
    pieces = [tok.decode([t]) for t in tok.encode("x 12345 + 3.14")]
    assert pieces[:7] == ["x", " ", "1", "2", "3", "4", "5"] and pieces[-4:] == ["3", ".", "1", "4"]
    assert all(not any(c.isdigit() for c in tok.vocab_bytes[i].decode("utf-8", "replace")) or len(tok.vocab_bytes[i]) == 1
               for i in range(tok.vocab_size) if i not in tok.id_to_special)


def test_tool_and_reasoning_turns_mask_what_the_model_writes_and_never_tool_output(tok):
    call = {"id": "c0", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "2 + 3"}'}}
    msgs = [{"role": "user", "content": "2+3?"},
            {"role": "assistant", "content": "", "reasoning_content": "Add.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c0", "content": "5"}, {"role": "assistant", "content": "It is 5."}]
    tools = [{"type": "function", "function": {"name": "calculator", "description": "Exact.", "parameters": {
        "type": "object", "properties": {"expression": {"type": "string"}}}}}]
    ids, mask = tok.apply_chat_template(msgs, tools=tools)
    assert tok.decode(ids) == (
        "<|im_start|>system\nTools:\ncalculator(expression): Exact.<|im_end|>\n"
        "<|im_start|>user\n2+3?<|im_end|>\n"
        '<|im_start|>assistant\n<think>\nAdd.\n</think>\n\n<tool_call>\n{"name": "calculator", "arguments": '
        '{"expression": "2 + 3"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>tool\n<tool_response>\n5\n</tool_response><|im_end|>\n<|im_start|>assistant\nIt is 5.<|im_end|>\n")
    learned = tok.decode([i for i, m in zip(ids, mask) if m])
    assert learned == ('<think>\nAdd.\n</think>\n\n<tool_call>\n{"name": "calculator", "arguments": {"expression": '
                       '"2 + 3"}}\n</tool_call><|im_end|>It is 5.<|im_end|>')  # reasoning and calls trained; "5" never
    # the tool list may also travel in the first system message (data.py carries it there): the same ids
    assert tok.apply_chat_template([{"role": "system", "content": "", "tools": tools}] + msgs)[0] == ids
    prompt = tok.decode(tok.apply_chat_template(msgs[:1], add_generation_prompt=True, enable_thinking=False)[0])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>")  # thinking off: an empty think block
    assert tok.encode("<think>") != [tok.token_to_id("<think>")]  # user text cannot open a think block


def test_template_errors_name_the_message(tok):
    with pytest.raises(ValueError, match="message 1: only assistant"):
        tok.apply_chat_template([{"role": "user", "content": "x"}, {"role": "user", "content": "y", "reasoning_content": "z"}])
    with pytest.raises(ValueError, match="message 0: each tool_calls entry needs function.name"):
        tok.apply_chat_template([{"role": "assistant", "content": None, "tool_calls": [{"function": {}}]}])
    old = BPETokenizer(special_tokens={"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2})
    with pytest.raises(ValueError, match="no <think> token"):
        old.apply_chat_template([{"role": "assistant", "content": "a", "reasoning_content": "b"}])


def test_chat_template_rejects_unknown_role(tok):
    with pytest.raises(ValueError, match="message 0"):
        tok.apply_chat_template([{"role": "robot", "content": "x"}])


def test_encode_batch_with_workers_matches_single_encode(tok):
    texts = CORPUS * 400  # > 1 MB of characters, so the process pool is used
    assert tok.encode_batch(texts, num_workers=2)[:8] == [tok.encode(t) for t in texts[:8]]


def test_save_load_round_trip_gives_identical_ids(tok, tmp_path):
    path = str(tmp_path / "tokenizer.json")
    tok.save(path)
    loaded = BPETokenizer.load(path)
    for text in CORPUS[:4]:
        assert loaded.encode(text) == tok.encode(text)
    assert json.load(open(path))["model"]["type"] == "BPE"  # plain HF-format JSON, no pickle


def test_train_rejects_vocab_smaller_than_bytes_plus_specials():
    with pytest.raises(ValueError, match="smaller than 256"):
        BPETokenizer.train(CORPUS, vocab_size=200, verbose=False)


def test_train_rejects_empty_corpus():
    with pytest.raises(ValueError, match="empty corpus"):
        BPETokenizer.train([], vocab_size=300, verbose=False)


def test_load_corrupt_tokenizer_json_names_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json: not valid JSON"):
        BPETokenizer.load(str(bad))
    bad.write_text(json.dumps({"model": {"type": "WordPiece"}}))
    with pytest.raises(ValueError, match="expected 'BPE'"):
        BPETokenizer.load(str(bad))


@pytest.mark.parametrize("field, value, message", [  # were Python's own words ("not enough values to unpack")
    ("merges", 5, "model.merges is int, expected a list"),
    ("merges", ["a"], r"merge 0 is 'a', expected \"a b\""),
    ("merges", [["a"]], r"merge 0 is \['a'\], expected"),
    ("vocab", ["a", "b"], "model.vocab should be an object mapping each token to its integer id"),
    ("vocab", None, r"no field 'vocab'"),
])
def test_load_damaged_model_fields_names_the_field(tok, tmp_path, field, value, message):
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    data = json.loads(path.read_text(encoding="utf-8"))
    if value is None:
        del data["model"][field]
    else:
        data["model"][field] = value
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        BPETokenizer.load(str(path))


def test_cli_train_and_stats(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(CORPUS))
    out = tmp_path / "tok.json"
    subprocess.run([sys.executable, "tokenizer.py", "train", "--input", str(corpus), "--vocab-size", "300",
                    "--out", str(out)], check=True, capture_output=True)
    r = subprocess.run([sys.executable, "tokenizer.py", "stats", "--tokenizer", str(out), "--input", str(corpus)],
                       check=True, capture_output=True, text=True)
    assert "bytes/token" in r.stdout and "round trip ok" in r.stdout


def test_cli_missing_file_is_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "tokenizer.py", "train", "--input", str(tmp_path / "nope.txt"),
                        "--vocab-size", "300", "--out", str(tmp_path / "t.json")], capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "nope.txt: file not found" in r.stderr
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(CORPUS))
    r = subprocess.run([sys.executable, "tokenizer.py", "train", "--input", str(corpus), "--vocab-size", "300",
                        "--out", str(corpus / "t.json")], capture_output=True, text=True)  # was "[Errno 17] File exists"
    assert r.returncode != 0 and r.stderr.strip() == f"error: {corpus}: a file is in the way of a folder", r.stderr


def test_cli_bytes_that_are_not_utf8_name_file_and_line(tmp_path):
    # read as the training scripts read --data: before, undecodable bytes (or a binary file) trained silently
    bad, out = tmp_path / "bad.txt", tmp_path / "t.json"
    bad.write_bytes(b"hello world\n\nsecond doc \xff\xfe\n")
    train = ["train", "--input", str(bad), "--vocab-size", "300", "--out", str(out)]
    r = subprocess.run([sys.executable, "tokenizer.py", *train], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and not out.exists()
    assert f"error: {bad}:3: bytes are not valid UTF-8" in r.stderr
    BPETokenizer.train(CORPUS, 300).save(str(out))
    r = subprocess.run([sys.executable, "tokenizer.py", "stats", "--tokenizer", str(out), "--input", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and f"error: {bad}:3: bytes are not valid UTF-8" in r.stderr


# ---------------------------------------------------------------- interop with Hugging Face `tokenizers`
INTEROP_TEXTS = ["The quick brown fox, 123 times!", "孙悟空大闹天宫。唐僧师徒四人", "café 🙂 naïve\n\ttabs  spaces"]


@pytest.mark.parametrize("digits", ["group", "split"])
def test_hf_tokenizers_loads_our_file_and_encodes_identically(tok, tmp_path, digits):
    tokenizers = pytest.importorskip("tokenizers", reason="optional: pip install tokenizers")
    from tokenizer import DIGITS_PATTERN
    if digits == "split":  # exported as a Split pre-tokenizer before ByteLevel; HF must split exactly as we do
        tok = BPETokenizer.train(CORPUS, vocab_size=400, verbose=False, pattern=DIGITS_PATTERN)
    path = str(tmp_path / "tokenizer.json")
    tok.save(path)
    assert BPETokenizer.load(path).pattern == tok.pattern
    hf = tokenizers.Tokenizer.from_file(path)
    for text in INTEROP_TEXTS + CORPUS[:4]:
        assert hf.encode(text).ids == tok.encode(text)
        assert hf.decode(tok.encode(text)) == text


def test_we_load_hf_trained_bytelevel_tokenizer_and_encode_identically(tmp_path):
    tokenizers = pytest.importorskip("tokenizers", reason="optional: pip install tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # as MiniMind trains its tokenizer
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(CORPUS, trainer)
    path = str(tmp_path / "hf_tokenizer.json")
    hf.save(path)
    ours = BPETokenizer.load(path)
    assert (ours.bos_id, ours.eos_id) == (1, 2)
    for text in INTEROP_TEXTS + CORPUS[:4]:
        assert ours.encode(text) == hf.encode(text).ids
        assert ours.decode(ours.encode(text)) == text


def test_max_cjk_chars_keeps_chinese_tokens_short_and_on_character_boundaries():
    facts = ["雷恩最喜欢的颜色是红色。", "托宾住在石山。", "露米是一只猫。"] * 50
    free = BPETokenizer.train(facts, 600, verbose=False)
    assert len(free.encode("雷恩最喜欢的颜色是红色")) == 1  # the problem: a whole repeated sentence becomes one token
    capped = BPETokenizer.train(facts + ["The cat sat on the mat."] * 50, 600, verbose=False, max_cjk_chars=2)
    for i in range(capped.vocab_size):
        if i in capped.id_to_special:
            continue
        data = capped.vocab_bytes[i]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # a piece of one character: a lead byte then continuation bytes, or continuation only
            assert all(0x80 <= b < 0xC0 for b in data[1:]) and len(data) < 4
            continue
        assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) <= 2, text
    assert all(1 <= len(capped.decode([t])) <= 2 for t in capped.encode("雷恩最喜欢"))  # whole characters, two at most
    assert capped.encode("The cat") == [capped.token_to_id("The"), capped.token_to_id(" cat")]  # English is unaffected
    assert capped.decode(capped.encode("雷恩最喜欢的颜色是红色。")) == "雷恩最喜欢的颜色是红色。"
