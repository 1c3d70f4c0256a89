"""The worked arithmetic the reasoning and tool chains train on (issue 30): every line is true arithmetic, the written
digits make the answer, held-out operand pairs never reach training, and the tool conversation's result is the
calculator's."""
import json
import re

import pytest

import builtin_data
import tools
from builtin_data import arithmetic_conversation, arithmetic_items, worked_steps


def test_worked_steps_worked_examples():
    assert worked_steps("add", 478, 356) == ["8 + 6 = 14, write 4, carry 1.", "7 + 5 + 1 = 13, write 3, carry 1.",
                                            "4 + 3 + 1 = 8, write 8.", "So 478 + 356 = 834."]
    assert worked_steps("sub", 742, 356, "zh")[0] == "2不够减6，借1：12减6等于6，写6。"
    assert worked_steps("mul", 37, 6) == ["7 * 6 = 42, write 2, carry 4.", "3 * 6 + 4 = 22, write 22.", "So 37 * 6 = 222."]


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_every_line_is_true_and_the_written_digits_make_the_answer(op):
    for item in arithmetic_items("train", 300, ops=(op,)) + arithmetic_items("heldout", 100, ops=(op,)):
        lines = worked_steps(op, item["a"], item["b"], "en")  # the Chinese lines say the same numbers in words
        for line in lines[:-1]:
            for lhs, rhs in re.findall(r"(-?\d+(?: [-+*] -?\d+)*) = (-?\d+)", line):
                assert tools.calculate(lhs) == rhs, (item["expression"], line)
        written = [re.search(r"write (\d+)", line).group(1) for line in lines[:-1]]
        assert int("".join(reversed(written))) == int(item["answer"]), (item["expression"], lines)
        assert lines[-1] == f"So {item['expression']} = {item['answer']}."
        assert tools.calculate(item["expression"]) == item["answer"]
        assert builtin_data.check_answer_strictly(item["response"], item["answer"]) == 1.0
        zh = worked_steps(op, item["a"], item["b"], "zh")
        assert len(zh) == len(lines) and zh[-1].endswith(f"等于{item['answer']}。")


def test_operands_languages_and_held_out_pairs():
    train = arithmetic_items("train", 3000, ops=("add", "sub", "mul"))
    heldout = arithmetic_items("heldout", 600, ops=("add", "sub", "mul"))
    pairs = lambda items: {(i["op"], i["a"], i["b"]) for i in items}
    assert not pairs(train) & pairs(heldout)
    assert pairs(arithmetic_items("train", 3000, seed=1, ops=("add", "sub", "mul"))).isdisjoint(pairs(heldout))
    for i in train + heldout:
        if i["op"] == "mul":
            assert 10 <= i["a"] <= 99 and 2 <= i["b"] <= 9
        else:
            assert 100 <= i["a"] <= 999 and 100 <= i["b"] <= 999
        assert i["op"] != "sub" or i["a"] >= i["b"]
    assert {i["lang"] for i in train} == {"en", "zh"} and sum(i["lang"] == "zh" for i in train) == len(train) // 2
    assert arithmetic_items("train", 50) == arithmetic_items("train", 50)  # deterministic


def test_the_three_ways_as_conversations():
    item = arithmetic_items("train", 1)[0]
    direct, think, tool = (arithmetic_conversation(item, way) for way in ("direct", "think", "tool"))
    assert direct[-1] == {"role": "assistant", "content": item["response"]}
    assert think[-1]["reasoning_content"] == item["reasoning"] and think[-1]["content"] == item["response"]
    call = tool[1]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == tools.CALCULATOR_TOOL["function"]["name"]
    expression = json.loads(call["function"]["arguments"])["expression"]
    assert tool[2] == {"role": "tool", "tool_call_id": call["id"], "content": tools.calculate(expression)}
    assert tool[2]["content"] == item["answer"] and tool[3]["content"] == item["response"]
    with pytest.raises(ValueError, match="way must be"):
        arithmetic_conversation(item, "guess")


def test_the_scratchpad_says_what_is_left_and_the_answer_so_far_on_every_line():
    assert worked_steps("add", 478, 356, scratch=True) == [
        "8 + 6 = 14, write 4, carry 1. Left: 47 + 35. So far: 4.", "7 + 5 + 1 = 13, write 3, carry 1. Left: 4 + 3. So far: 34.",
        "4 + 3 + 1 = 8, write 8. So far: 834.", "So 478 + 356 = 834."]
    assert worked_steps("add", 45, 38, "zh", scratch=True)[0] == "5加8等于13，写3，进1。还剩4加3。已得3。"
    for item in arithmetic_items("train", 200, digits=(1, 2, 3)):
        a, b, lines = item["a"], item["b"], worked_steps(item["op"], item["a"], item["b"], scratch=True)
        plain = worked_steps(item["op"], a, b)
        width = len(plain) - 1
        for i, (line, original) in enumerate(zip(lines[:-1], plain)):
            assert line.startswith(original)  # the scratchpad only adds to the school method's line
            so_far = int(re.search(r"(?:So far: )(\d+)\.$", line).group(1))
            assert so_far == (int(item["answer"]) % 10 ** (i + 1) if i < width - 1 else int(item["answer"])), line
            if i < width - 1:
                assert f"Left: {str(a).zfill(width)[:width - i - 1]} " in line
    from data import arithmetic_records  # what SFT on arithmetic-scratch reads: these scratchpads
    records, items = arithmetic_records("arithmetic-scratch-1-2", "chat", "train", n=50), arithmetic_items("train", 50, digits=(1, 2))
    for record, item in zip(records, items, strict=True):
        assert record[1]["reasoning_content"] == "\n".join(worked_steps(item["op"], item["a"], item["b"], item["lang"], scratch=True))


def test_the_restated_trace_first_copies_the_operands_then_works_the_same_columns():
    """arithmetic-restate (issue 37): one line that copies the question's operands into the trace's own notation, then
    the school method's lines unchanged, so the columns read their digits from that line whatever the wording."""
    from data import arithmetic_records
    assert worked_steps("add", 478, 356, restate=True) == ["478 + 356:"] + worked_steps("add", 478, 356)
    assert worked_steps("sub", 742, 356, "zh", restate=True)[0] == "742减356："
    records = arithmetic_records("arithmetic-restate-phrased", "chat", "train", n=40)
    items = builtin_data.arithmetic_items("train", 40, phrasing="train", wrap=True)
    for record, it in zip(records, items, strict=True):
        user, assistant = record
        assert user["content"] == it["prompt"] and assistant["content"] == it["response"]
        first, *rest = assistant["reasoning_content"].split("\n")
        assert first == (f"{it['a']} {it['expression'].split()[1]} {it['b']}:" if it["lang"] == "en" else
                         f"{it['a']}{builtin_data.ARITHMETIC_OPS[it['op']][1]}{it['b']}：")
        assert "\n".join(rest) == it["reasoning"]  # the think way's lines, after the copy
    assert arithmetic_records("arithmetic-restate-phrased", "prompt", "heldout") == \
        arithmetic_records("arithmetic-think-phrased", "prompt", "heldout")  # the same held-out questions


def test_the_place_trace_reads_the_operands_by_place_and_names_every_column():
    """arithmetic-place (issue 36, the 2to3 chain): the operands lined up by place (ones first), each column line named
    by its place and otherwise the school method's line, the answer put together from the written places."""
    from data import arithmetic_records
    assert worked_steps("add", 784, 476, place=True) == [
        "784 and 476: ones 4 and 6, tens 8 and 7, hundreds 7 and 4.", "ones: 4 + 6 = 10, write 0, carry 1.",
        "tens: 8 + 7 + 1 = 16, write 6, carry 1.", "hundreds: 7 + 4 + 1 = 12, write 12.",
        "ones 0, tens 6, hundreds 12 make 1260.", "So 784 + 476 = 1260."]
    assert worked_steps("sub", 54, 8, "zh", place=True) == [
        "54和8：个位4和8，十位5和0。", "个位：4不够减8，借1：14减8等于6，写6。", "十位：5被借走1，剩4；4减0等于4，写4。",
        "个位6，十位4，合起来是46。", "所以54减8等于46。"]
    for item in arithmetic_items("train", 300, digits=(1, 2, 3)):
        op, a, b = item["op"], item["a"], item["b"]
        for lang in ("en", "zh"):
            lines, plain = worked_steps(op, a, b, lang, place=True), worked_steps(op, a, b, lang)
            columns = len(plain) - 1
            assert lines[0] == builtin_data.lined_up(a, b, lang)
            for name, line, original in zip(builtin_data.PLACE_NAMES[lang][:columns], lines[1:1 + columns], plain[:-1], strict=True):
                assert line == f"{name}{'：' if lang == 'zh' else ': '}{original}"
            values = [int(v) for v in re.findall(r"(?:s |位)(\d+)", lines[-2])]
            assert sum(v * 10 ** k for k, v in enumerate(values)) == int(item["answer"]) and len(values) == columns
            assert lines[-1] == plain[-1] and len(lines) == columns + 3
    record, item = arithmetic_records("arithmetic-place-1-2", "chat", "train", n=1)[0], arithmetic_items("train", 1, digits=(1, 2))[0]
    placed = "\n".join(worked_steps(item["op"], item["a"], item["b"], item["lang"], place=True))
    assert record[1]["reasoning_content"] == placed and record[1]["content"] == item["response"]
    traces = [r[1]["reasoning_content"] for r in arithmetic_records("arithmetic-place-1-2", "chat", "train", n=500)]
    assert not any("hundreds" in t or "百位" in t for t in traces)  # no third column reaches SFT


def test_place_texts_read_and_put_together_numbers_by_place_and_do_no_arithmetic():
    docs = builtin_data.place_texts()
    lines = [line for d in docs for line in d.splitlines()]
    assert not any(re.search(r"[+\-*=]|plus|minus|write|加|减|写", line) for line in lines)
    assert {len(n) for line in lines for n in re.findall(r"\d+", line)} >= {1, 2, 3, 4, 5}
    kinds = {"read": 0, "lined up": 0, "made": 0, "digit": 0}
    for line in lines:
        numbers = [int(n) for n in re.findall(r"\d+", line)]
        if line.endswith(("make %d." % numbers[-1], "合起来是%d。" % numbers[-1])):  # ones first, the number last
            kinds["made"] += 1
            assert sum(v * 10 ** k for k, v in enumerate(numbers[:-1])) == numbers[-1], line
        elif re.match(r"\d+(?: and |和)\d+[:：]", line):  # two numbers, then their digits in pairs, ones first
            kinds["lined up"] += 1
            x, y, pairs = numbers[0], numbers[1], numbers[2:]
            width = len(str(max(x, y)))
            assert pairs == [n // 10 ** k % 10 for k in range(width) for n in (x, y)], line
        elif re.match(r"\d+[:：]", line):  # the number first, then its digits ones first
            kinds["read"] += 1
            assert numbers[1:] == [int(c) for c in reversed(str(numbers[0]))], line
        else:
            kinds["digit"] += 1
            x, digit = numbers
            name = re.search(r"The (.+) digit|的(.+)是", line).group(1) or re.search(r"的(.+)是", line).group(1)
            lang = "en" if line.startswith("The") else "zh"
            assert digit == x // 10 ** builtin_data.PLACE_NAMES[lang].index(name) % 10, line
    assert min(kinds.values()) > 1000


def test_digit_counts_mix_per_operand_and_partial_credit_counts_digits_in_place():
    items = arithmetic_items("train", 400, digits=(1, 2))
    assert {(len(str(i["a"])), len(str(i["b"]))) for i in items if i["op"] == "add"} == {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert builtin_data.digit_credit("So 478 + 356 = 34.", "834") == pytest.approx(2 / 3)
    assert builtin_data.digit_credit("1834", "834") == 0.75 and builtin_data.digit_credit("834.", "834") == 1.0
    assert builtin_data.digit_credit("no number", "834") == 0.0


def test_number_texts_read_long_numbers_and_do_no_arithmetic():
    docs = builtin_data.number_texts()
    numbers = [n for d in docs for n in re.findall(r"\d+", d)]
    assert {len(n) for n in numbers} >= {1, 2, 3, 4} and not any(re.search(r"[+\-*=]|plus|minus|加|减", d) for d in docs)
    assert all(re.findall(r"\d+", line)[0] == re.findall(r"\d+", line)[-1] for d in docs for line in d.splitlines())


def test_phrased_sources_train_on_many_wordings_and_hold_some_out():
    """arithmetic-WAY-phrased (issue 37): training asks each sum in one of the training wordings, every one of them
    used; the held-out set asks only in wordings no training item has, on operand pairs no training item has; the
    one-way sources keep their single wording."""
    from data import arithmetic_records
    train = builtin_data.arithmetic_items("train", 2000, phrasing="train", wrap=True)
    heldout = builtin_data.arithmetic_items("heldout", 400, phrasing="heldout")

    def wording(item):  # the template the prompt was made from (inside any wrapper)
        return next(t for t in builtin_data.PHRASINGS[item["lang"], item["op"]] if t.format(a=item["a"], b=item["b"]) in item["prompt"])

    wrapped = [it for it in train if it["prompt"] != wording(it).format(a=it["a"], b=it["b"])]
    assert 0.3 < len(wrapped) / len(train) < 0.6  # about half get a greeting before or a request after
    assert all(it["prompt"] == wording(it).format(a=it["a"], b=it["b"]) for it in heldout)  # held out: bare

    used = {(it["lang"], it["op"], wording(it)) for it in train}
    assert used == {(lang, op, t) for (lang, op), ts in builtin_data.PHRASINGS.items() if op in ("add", "sub")
                    for t in builtin_data.phrasings(lang, op, "train")}
    held = {(it["lang"], it["op"], wording(it)) for it in heldout}
    assert held and not held & used and all(w in builtin_data.phrasings(lang, op, "heldout") for lang, op, w in held)
    assert not {(it["op"], it["a"], it["b"]) for it in train} & {(it["op"], it["a"], it["b"]) for it in heldout}
    for it in train[:50] + heldout[:50]:  # the wording changes, the sum and its answer do not
        assert str(it["a"]) in it["prompt"] and str(it["b"]) in it["prompt"]
        assert it["answer"] == tools.calculate(it["expression"])
    records = arithmetic_records("arithmetic-think-phrased", "chat", "train", n=40)
    assert {m["content"] for r in records for m in r if m["role"] == "user"} == {it["prompt"] for it in
                                                                                builtin_data.arithmetic_items("train", 40, phrasing="train", wrap=True)}
    one_way = arithmetic_records("arithmetic-think", "prompt", "heldout", n=20)
    assert all(r["prompt"][-1]["content"].startswith(("What is ",)) or "等于多少" in r["prompt"][-1]["content"] for r in one_way)


def test_reworded_source_asks_training_pairs_in_the_held_out_wordings_and_only_as_prompts():
    """arithmetic-WAY-reworded (issue 36's RL where the checker is the only teacher): GRPO prompts whose operand pairs
    are training pairs and whose wordings are the held-out ones no SFT source shows; its held-out set is -phrased's;
    as SFT conversations it is refused in one line."""
    from data import DataError, arithmetic_records
    prompts = arithmetic_records("arithmetic-think-reworded", "prompt", "train", n=300)
    items = builtin_data.arithmetic_items("train", 300, phrasing="heldout")
    held_out = {t for lang, op in builtin_data.PHRASINGS for t in builtin_data.phrasings(lang, op, "heldout")}
    for record, it in zip(prompts, items, strict=True):
        question = record["prompt"][-1]["content"]
        assert question == it["prompt"] and any(t.format(a=it["a"], b=it["b"]) == question for t in held_out)
        assert not builtin_data._held_out(it["op"], it["a"], it["b"]) and record["answer"] == it["answer"]
    assert len({(it["a"], it["b"]) for it in items}) > 250
    assert arithmetic_records("arithmetic-think-reworded", "prompt", "heldout") == \
        arithmetic_records("arithmetic-think-phrased", "prompt", "heldout")
    with pytest.raises(DataError, match="prompts for RL"):
        arithmetic_records("arithmetic-think-reworded", "chat", "train", n=10)


def test_reading_and_column_credit_check_each_step_against_the_question():
    """GRPO's --rewards restate and columns (the 2to3 chain's footholds): a program checks that the reasoning's first
    line copies both operands and that each column line works the right digits with the right carry or borrow; no
    trace is compared, so a true trace in any of the chains' notations scores 1 and each wrong step costs its share."""
    q, a = "What is 784 plus 476?", "1260"
    assert builtin_data.restate_credit("<think>\n784 + 476:\n4 + 6 = 10, write 0", q) == 1.0
    assert builtin_data.restate_credit("<think>\n74 + 476:\n4 + 6 = 10, write 0", q) == 0.5  # 784 read as 74
    assert builtin_data.restate_credit("<think>\n784 + 476.\n</think>\n\n1260", q) == 0.0  # no column: no credit
    assert builtin_data.restate_credit("<think>\n4 + 6 = 10, write 0", q) == 0.0 and builtin_data.restate_credit("", q) == 0.0
    for op, x, y in [("add", 784, 476), ("sub", 702, 476), ("add", 99, 5), ("sub", 1000, 1)]:
        for lang in ("en", "zh"):
            question = builtin_data.PHRASINGS[lang, op][0].format(a=x, b=y)
            answer = str(x + y if op == "add" else x - y)
            for kind in (dict(), dict(restate=True), dict(scratch=True, restate=True), dict(place=True)):
                trace = "<think>\n" + "\n".join(worked_steps(op, x, y, lang, **kind)) + "\n</think>\n\nok"
                assert builtin_data.column_credit(trace, question, answer) == 1.0, (question, kind)
    two = "<think>\n784 + 476:\n4 + 6 = 10, write 0, carry 1.\n8 + 7 = 15, write 15.\nSo 784 + 476 = 150.\n</think>"
    assert builtin_data.column_credit(two, q, a) == pytest.approx(1 / 3)  # the tens forgot the carry, no hundreds
    wrong_digits = "<think>\n4 + 6 = 10, write 0, carry 1.\n7 + 7 + 1 = 15, write 5, carry 1.\n8 + 4 + 1 = 13, write 13."
    assert builtin_data.column_credit(wrong_digits, q, a) == pytest.approx(1 / 3)  # the tens read from the hundreds
    assert builtin_data.column_credit(two, "Where does Mira live?", "Oakton") == 0.0


def test_reading_chores_write_the_question_without_working_it():
    """restate-chores / lineup-chores: a sum or difference of 1-5 digit numbers written with numbers and a sign (or
    lined up by place), never worked out, never a held-out operand pair."""
    for place in (False, True):
        chores = builtin_data.restate_chores(400, place=place)
        for c in chores:
            x, y = (int(n) for n in re.findall(r"\d+", c["prompt"].split("：")[-1].split(": ")[-1])[:2])
            assert not builtin_data._held_out("add" if "plus" in c["prompt"] or "加" in c["prompt"] else "sub", x, y)
            assert re.match(rf"{x}( [+-] |加|减|和| and ){y}", c["response"]), c
            assert not re.search(r"=|write|写|等于|So |所以", c["response"]), c
        assert {len(n) for c in chores for n in re.findall(r"\d+", c["response"])[:2]} >= {1, 2, 3, 4, 5}
    from data import DataError, load_datasets
    records, _, _ = load_datasets(["restate-chores", "lineup-chores"], "chat")
    assert any(" and " in r[1]["content"] for r in records) and any(" + " in r[1]["content"] for r in records)
    with pytest.raises(DataError, match="restate-chores: conversations"):
        load_datasets(["restate-chores"], "text")
    scratch, _, _ = load_datasets(["arithmetic-restate-scratch-1-2"], "chat")
    assert all(len(r[1]["reasoning_content"].splitlines()) <= 4 for r in scratch)  # the copy, two columns, "So ..."
