"""
Tools a model can call. The first: a calculator that is safe to hand to a model's output.

    python tools.py "3 + 4 * (2 - 1)"        # 7
    python tools.py "9**9**9"                 # error: '**' is not an operator here (+ - * / and parentheses)

calculate() never raises and never runs Python: it parses the expression itself (numbers, + - * /, unary minus,
parentheses) with exact fractions, and bounds everything a hostile or confused model could send: the length of the
text, the depth of the parentheses, the size of every number along the way. A bad expression returns an error text
for the model to read, as a tool response would, e.g. `calculate("1/0") -> "error: division by zero"`.
"""
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


if __name__ == "__main__":
    print(calculate(" ".join(sys.argv[1:])))
