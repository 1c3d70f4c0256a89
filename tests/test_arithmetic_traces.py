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
