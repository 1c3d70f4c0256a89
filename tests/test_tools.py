"""The calculator a model may call: right answers, and for anything else an error text, never an exception."""
import random
import subprocess
import sys
import time

import pytest

from tools import MAX_CHARS, calculate


@pytest.mark.parametrize("expression,value", [
    ("3 + 4 * 2", "11"), ("(1 + 2) * 3", "9"), ("8 - 2 - 1", "5"), ("8 / 2 / 2", "2"), ("7 / 2", "3.5"),
    ("-3 + 5", "2"), ("-(2 + 3)", "-5"), ("1 / 3", "0.3333333333"), ("0.1 + 0.2", "0.3"), ("456 + 789", "1245"),
    ("12 * 9 - 100 / 4", "83"), ("2.50", "2.5"), ("+4", "4"), ("1/3 - 1/3", "0"),
])
def test_arithmetic_is_exact_and_binds_as_usual(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("hostile,message", [
    ("__import__('os').system('ls')", "unexpected character '_'"),
    ("9**9**9", "'**' is not an operator"),
    ("1/0", "division by zero"),
    ("2 / (3 - 3)", "division by zero"),
    ("1" * 31, "more than 30 digits"),
    ("99999999999999999999 * 99999999999999999999", "more than 30 digits"),
    ("(" * 40 + "1" + ")" * 40, "more than 32 nested"),
    ("-" * 60 + "1", "more than 32 nested"),
    ("1 +" * 3000 + "1", f"longer than {MAX_CHARS} characters"),
    ("", "ends where a number was expected"),
    ("(1 + 2", "never closed"),
    ("1 + 2)", "unexpected ')'"),
    ("1..2", "'1..2' is not a number"),
    ("3 4", "unexpected '4'"),
    ("٣ + ٤", "unexpected character"),  # Arabic-Indic digits are digits to str.isdigit, not to us
])
def test_hostile_or_broken_input_gets_an_error_text(hostile, message):
    result = calculate(hostile)
    assert result.startswith("error: ") and message in result, result


def test_a_ten_thousand_character_expression_is_refused_at_once():
    start = time.perf_counter()
    assert calculate("9" * 10_000).startswith("error: the expression is longer than")
    assert time.perf_counter() - start < 0.1


def test_random_strings_of_calculator_characters_never_raise():
    rng = random.Random(0)
    alphabet = "0123456789.+-*/() x_"
    for _ in range(3000):
        result = calculate("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))))
        assert isinstance(result, str) and result


def test_not_text_is_an_error_text():
    assert calculate(None) == "error: the expression must be text"


def test_the_cli_prints_the_value():
    r = subprocess.run([sys.executable, "tools.py", "3 + 4 * (2 - 1)"], capture_output=True, text=True,
                       cwd=__file__.rsplit("/tests/", 1)[0])
    assert r.returncode == 0 and r.stdout == "7\n"


def test_nothing_the_model_writes_is_dropped_when_a_tool_call_does_not_parse():
    """A <tool_call> block that is not a call stays in content as raw text (and is listed with name None, for a tool
    loop to answer); an unclosed one too once the turn is final, but not while it may still close (streaming)."""
    from tools import parse_assistant
    broken = '<tool_call>\n{"name": "calculator", "arguments": {"eulcame"637 +'
    assert parse_assistant(broken)["content"] == broken and parse_assistant(broken)["tool_calls"] == []
    assert parse_assistant(broken, final=False)["content"] == ""
    turn = parse_assistant("Let me see.\n<tool_call>\n{not json}\n</tool_call> and more<|im_end|>")
    assert turn["content"] == "Let me see.\n<tool_call>\n{not json}\n</tool_call>\n and more"
    assert turn["tool_calls"] == [{"name": None, "arguments": None}]
    good = parse_assistant('<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+3"}}\n</tool_call><|im_end|>')
    assert good["content"] == "" and good["tool_calls"][0]["name"] == "calculator"
