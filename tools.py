"""
Tools a model can call. The first: a calculator that is safe to hand to a model's output.

    python tools.py "3 + 4 * (2 - 1)"        # 7
    python tools.py "9**9**9"                 # error: '**' is not an operator here (+ - * / and parentheses)

calculate() never raises and never runs Python: it parses the expression itself (numbers, + - * /, unary minus,
parentheses) with exact fractions, and bounds everything a hostile or confused model could send: the length of the
text, the depth of the parentheses, the size of every number along the way. A bad expression returns an error text
for the model to read, as a tool response would, e.g. `calculate("1/0") -> "error: division by zero"`.

The rest reads a model's turn and answers its calls, the same way in generate.py, serve.py and GRPO's rollouts:
parse_assistant (reasoning, content, tool calls), run_tool_call (never raises), tool_turn_ids (the tool's turn as the
chat template renders it), final_answer (what a reward checks).
"""
import json
import re
import sys
from fractions import Fraction

MAX_CHARS = 200  # an arithmetic question's expression; a 10,000-character one is refused before parsing
MAX_DEPTH = 32  # nested parentheses (the parser recurses once per level)
MAX_DIGITS = 30  # digits of any number, given or computed (numerator and denominator): 9**9**9 cannot happen


class CalculatorError(ValueError):
    pass


def _tokens(text):
    """'3.5*(2-1)' -> ['3.5', '*', '(', '2', '-', '1', ')']: numbers and the five symbols, nothing else."""
    tokens, i = [], 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "+-*/()":
            if text.startswith("**", i):
                raise CalculatorError("'**' is not an operator here (+ - * / and parentheses)")
            tokens.append(c)
            i += 1
        elif c.isascii() and (c.isdigit() or c == "."):
            j = i
            while j < len(text) and text[j].isascii() and (text[j].isdigit() or text[j] == "."):
                j += 1
            number = text[i:j]
            if number.count(".") > 1 or number == ".":
                raise CalculatorError(f"'{number}' is not a number")
            tokens.append(number)
            i = j
        else:
            raise CalculatorError(f"unexpected character {c!r} at position {i + 1} (numbers, + - * / and parentheses)")
    return tokens


def _checked(value):
    """The value, if neither its numerator nor its denominator has more than MAX_DIGITS digits."""
    if len(str(abs(value.numerator))) > MAX_DIGITS or len(str(value.denominator)) > MAX_DIGITS:
        raise CalculatorError(f"a number in the calculation has more than {MAX_DIGITS} digits")
    return value


class _Parser:
    """Recursive descent over the grammar
        expression = term (('+' | '-') term)*
        term       = factor (('*' | '/') factor)*
        factor     = ('+' | '-') factor | number | '(' expression ')'
    so * and / bind tighter than + and -, and both associate to the left: 8 - 2 - 1 = 5, 8 / 2 / 2 = 2."""

    def __init__(self, tokens):
        self.tokens, self.i, self.depth = tokens, 0, 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self):
        token = self.peek()
        self.i += 1
        return token

    def expression(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            value = _checked(value + self.term() if self.take() == "+" else value - self.term())
        return value

    def term(self):
        value = self.factor()
        while self.peek() in ("*", "/"):
            if self.take() == "*":
                value = _checked(value * self.factor())
            else:
                divisor = self.factor()
                if divisor == 0:
                    raise CalculatorError("division by zero")
                value = _checked(value / divisor)
        return value

    def factor(self):
        token = self.take()
        if token in ("+", "-"):
            self.depth += 1  # unary signs nest like parentheses: "-" * 10000 would recurse as deep
            if self.depth > MAX_DEPTH:
                raise CalculatorError(f"more than {MAX_DEPTH} nested signs or parentheses")
            value = self.factor()
            self.depth -= 1
            return -value if token == "-" else value
        if token == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise CalculatorError(f"more than {MAX_DEPTH} nested signs or parentheses")
            value = self.expression()
            if self.take() != ")":
                raise CalculatorError("a '(' is never closed")
            self.depth -= 1
            return value
        if token is None:
            raise CalculatorError("the expression ends where a number was expected")
        if token in ")*/":
            raise CalculatorError(f"'{token}' where a number was expected")
        return _checked(Fraction(token))


def _format(value):
    """An integer as an integer; otherwise a decimal with up to 10 digits after the point, trailing zeros cut."""
    if value.denominator == 1:
        return str(value.numerator)
    text = f"{float(value):.10f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def calculate(expression):
    """The value of an arithmetic expression as text, or 'error: ...': never an exception.
    Example: calculate("3 + 4 * 2") -> "11"; calculate("7 / 2") -> "3.5"; calculate("1/0") -> "error: division by zero"."""
    if not isinstance(expression, str):
        return "error: the expression must be text"
    if len(expression) > MAX_CHARS:
        return f"error: the expression is longer than {MAX_CHARS} characters"
    try:
        parser = _Parser(_tokens(expression))
        value = parser.expression()
        if parser.peek() is not None:
            return f"error: unexpected '{parser.peek()}' after a complete expression"
        return _format(value)
    except CalculatorError as e:
        return f"error: {e}"


# The calculator as a tool a model is told about, in OpenAI's function-calling schema (what `tools=[...]` carries).
CALCULATOR_TOOL = {"type": "function", "function": {
    "name": "calculator", "description": "Compute an arithmetic expression with + - * / and parentheses, exactly.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description": "e.g. 478 + 356"}},
                   "required": ["expression"]}}}

TOOL_FUNCTIONS = {"calculator": lambda arguments: calculate(arguments.get("expression"))}  # name -> f(arguments dict)
AVAILABLE = {"calculator": CALCULATOR_TOOL}  # what --tools can name
MAX_RESULT_CHARS = 200  # a tool response longer than this is cut: it goes back into the model's context


def parse_assistant(text, final=True):
    """One assistant turn as the model wrote it (decoded with its special tokens) -> {"reasoning_content": str or
    None, "content": str, "tool_calls": [{"name", "arguments" (JSON text)}, both None when unreadable], "finished"}.
    Nothing the model wrote is dropped: a <tool_call> block that is not a call ({"name", "arguments"} JSON) stays in
    content as raw text (and is listed with name None, so a tool loop can answer it with an error), and so does an
    unclosed one once the turn is `final` (while streaming, not final, it may still close, so it is held back).
    Example: parse_assistant('<think>\\nAdd.\\n</think>\\n\\n<tool_call>\\n{"name": "calculator", "arguments":
    {"expression": "2+3"}}\\n</tool_call><|im_end|>') -> reasoning 'Add.', content '', one calculator call."""
    finished = "<|im_end|>" in text
    text = text.split("<|im_end|>")[0]
    reasoning = None
    if text.lstrip().startswith("<think>"):
        inside, closed, text = text.lstrip()[len("<think>"):].partition("</think>")
        reasoning = inside.strip("\n")
        if not closed:  # stopped while thinking: no answer yet
            return {"reasoning_content": reasoning, "content": "", "tool_calls": [], "finished": finished}
    content, *blocks = text.split("<tool_call>")
    if reasoning is not None:
        content = content.lstrip("\n")  # the template's blank line after </think>
    if blocks:
        content = content.rstrip("\n")  # the newline before a call that follows some text
    calls, kept = [], []  # kept: what is not a well-formed call, in the order written
    for block in blocks:
        body, closed, after = block.partition("</tool_call>")
        if not closed:
            if final:
                kept.append("<tool_call>" + block)
            continue
        try:
            call = json.loads(body)
            calls.append({"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)})
        except (json.JSONDecodeError, KeyError, TypeError):
            calls.append({"name": None, "arguments": None})
            kept.append(f"<tool_call>{body}</tool_call>")
        if after.strip():
            kept.append(after.strip("\n"))
    content = "\n".join(([content] if content else []) + kept)
    return {"reasoning_content": reasoning, "content": content, "tool_calls": calls, "finished": finished}


def run_tool_call(call, functions=None):
    """(result text, ok) of one parsed call: the tool's answer, or an error text for the model; never raises.
    functions: {name: f(arguments dict) -> text}, the tools that may be called (default TOOL_FUNCTIONS)."""
    functions = TOOL_FUNCTIONS if functions is None else functions
    if call.get("name") is None:
        return "error: the tool call is not JSON of the form {\"name\": ..., \"arguments\": {...}}", False
    if call["name"] not in functions:
        return f"error: there is no tool named {call['name'][:40]!r}", False
    try:
        arguments = json.loads(call["arguments"])
    except (json.JSONDecodeError, TypeError):
        return "error: the arguments are not valid JSON", False
    if not isinstance(arguments, dict):
        return "error: the arguments must be a JSON object", False
    result = functions[call["name"]](arguments)[:MAX_RESULT_CHARS]
    return result, not result.startswith("error:")


def tool_turn_ids(tokenizer, results):
    """The tokens that follow an assistant turn ending in tool calls: one tool message per result, then the next
    assistant header, exactly as the chat template renders that conversation (so the model sees in generation what it
    saw in training). These tokens are the tool's, not the model's: never trained on."""
    messages = [{"role": "tool", "content": r} for r in results]
    return tokenizer.encode("\n") + tokenizer.apply_chat_template(messages, add_generation_prompt=True)[0]


class CallConstraint:
    """Keeps the name and the argument names of a call the model writes to those of the tools offered, as vLLM's
    guided decoding and OpenAI's strict function calling do: where the turn so far ends inside `{"name": "...` or
    inside an argument's name, allowed(text) gives the token ids that continue toward an offered one (None elsewhere:
    the values, the text and everything else are the model's). A tiny model writes the names it trained on
    (`calc` where the list offers `math_eval`); with this it can only choose among those offered.
    Example: CallConstraint(tok, [CALCULATOR_TOOL]).allowed('<tool_call>\n{"name": "ca') -> ids of 'l', 'lc', ..."""
    START, ARGUMENTS = r'<tool_call>\n\{"name": ', r'"([^"]*)", "arguments": \{'  # the template's call, up to its keys
    PAIRS = r'(?:"[^"]*": (?:"[^"]*"|[^,}"]*), )*'  # the arguments written so far, each followed by ", "
    NAME = re.compile(START + r'("?)([^"]*)$')  # (the opening quote, the name so far)
    AFTER_NAME = re.compile(START + r'"([^"]*)"([^{]*)$')  # the glue between the name and the first key
    AFTER_KEY = re.compile(START + ARGUMENTS + PAIRS + r'"([^"]*)"(:?)$')  # a key written, its ": " not yet
    KEY = re.compile(START + ARGUMENTS + '(' + PAIRS + r')("?)([^"]*)$')  # (name, pairs, opening quote, key so far)

    def __init__(self, tokenizer, tool_list):
        fns = [t.get("function", t) for t in tool_list or []]
        self.params = {fn["name"]: list((fn.get("parameters") or {}).get("properties") or {}) for fn in fns}
        special = set(tokenizer.special_tokens.values())
        self.tokens = [(i, b) for i, b in tokenizer.vocab_bytes.items() if i not in special and b]

    def _continuing(self, targets):
        """Token ids whose bytes start one of the target strings (each: the rest of an allowed name and what follows),
        or hold all of it and go on (`": ` then ` "` is one token `": "`: what follows is free)."""
        encoded = [t.encode() for t in targets if t]
        return [i for i, b in self.tokens if any(t.startswith(b) or b.startswith(t) for t in encoded)] or None

    def allowed(self, text):
        if "<tool_call>" not in text or not self.params:
            return None
        tail = text[text.rindex("<tool_call>"):]
        if m := self.NAME.search(tail):
            quote, partial = m.groups()
            if not quote and partial:
                return None
            return self._continuing([("" if quote else '"') + n[len(partial):] + '", "arguments": {'
                                     for n in self.params if n.startswith(partial)])
        if (m := self.AFTER_NAME.search(tail)) and m.group(1) in self.params:
            glue = ', "arguments": {"'
            return self._continuing([glue[len(m.group(2)):]]) if glue.startswith(m.group(2)) else None
        if (m := self.AFTER_KEY.search(tail)) and m.group(1) in self.params and m.group(2) in self.params[m.group(1)]:
            return self._continuing([": "[len(m.group(3)):]])
        if (m := self.KEY.search(tail)) and m.group(1) in self.params:
            name, pairs, quote, partial = m.groups()
            if not quote and partial:
                return None
            used = set(re.findall(r'"([^"]*)": ', pairs))
            return self._continuing([("" if quote else '"') + p[len(partial):] + '": ' for p in self.params[name]
                                     if p not in used and p.startswith(partial)])
        return None


def final_answer(text):
    """The content of the last assistant turn in a completion that may hold tool turns (decoded with specials)."""
    return parse_assistant(text.split("<|im_start|>assistant\n")[-1])["content"]


if __name__ == "__main__":
    print(calculate(" ".join(sys.argv[1:])))
