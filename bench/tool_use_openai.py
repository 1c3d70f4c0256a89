"""
The tool-use model through serve.py and the official `openai` package, as issue 37's user tried it: the project's
calculator, a calculator the user defines (same name and parameter, its own description), each alone and beside a
weather tool written as OpenAI's documentation writes it; a weather question with only the weather tool; a facts
question with both tools (no call expected). The client runs every tool call itself and sends the result back.

    python bench/tool_use_openai.py --run checkpoints/tool_use/seed_1/sft_tool_use
    python bench/tool_use_openai.py --run RUN --n 20 --json out.json
    python bench/tool_use_openai.py --run RUN --free-calls    # the server lets the model write any name

Needs the optional openai package (pip install -r requirements-extras.txt). Held-out sums (operand pairs no training
split holds), asked the built-in way ("What is 784 plus 476?"); greedy (temperature 0).
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import builtin_data  # noqa: E402
import tools  # noqa: E402
from bench_serve import Server  # noqa: E402
from train_utils import cli  # noqa: E402

USER_CALCULATOR = {"type": "function", "function": {
    "name": "calculator", "description": "Use this to do math. Returns the result of the expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description": "a math expression"}},
                   "required": ["expression"]}}}
WEATHER = {"type": "function", "function": {  # OpenAI's function-calling guide's example
    "name": "get_weather", "description": "Get current temperature for a given location.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string",
                                                                 "description": "City and country e.g. Bogotá, Colombia"}},
                   "required": ["location"], "additionalProperties": False}}}
TOOL_SETS = {"project calculator": [tools.CALCULATOR_TOOL], "user's calculator": [USER_CALCULATOR],
             "project calculator + weather": [tools.CALCULATOR_TOOL, WEATHER],
             "user's calculator + weather": [WEATHER, USER_CALCULATOR]}


def answer(client, question, tool_list, max_tokens=120):
    """(final text, [calls]) of one question, the client running the calculator and a made-up weather service."""
    messages, calls = [{"role": "user", "content": question}], []
    for _ in range(3):
        reply = client.chat.completions.create(model="m", messages=messages, tools=tool_list, max_tokens=max_tokens,
                                               temperature=0).choices[0]
        if not reply.message.tool_calls:
            return reply.message.content or "", calls
        messages.append(reply.message.model_dump(exclude_none=True))
        for call in reply.message.tool_calls:
            calls.append((call.function.name, call.function.arguments))
            try:
                arguments = json.loads(call.function.arguments)
            except json.JSONDecodeError:
                arguments = {}
            if call.function.name == "calculator":
                result = tools.calculate(arguments.get("expression"))
            elif call.function.name == "get_weather":
                result = "sunny, 21 C"
            else:
                result = f"error: there is no tool named {call.function.name!r}"
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    return "", calls


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--n", type=int, default=20, help="held-out sums per tool set")
    p.add_argument("--json", default=None)
    p.add_argument("--free-calls", action="store_true", help="serve.py --free-calls: names not kept to the offered tools")
    args = p.parse_args(argv)
    try:
        import openai
    except ImportError:
        raise SystemExit("bench/tool_use_openai.py needs the openai package: pip install -r requirements-extras.txt")
    server = Server(args.run, max_batch=8, extra=["--free-calls"] if args.free_calls else [])
    results = {}
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        sums = builtin_data.arithmetic_items("heldout", args.n)
        for name, tool_list in TOOL_SETS.items():
            right = int(sum(builtin_data.check_answer_strictly(answer(client, it["prompt"], tool_list)[0], it["answer"])
                            for it in sums))
            results[name] = f"{right}/{len(sums)}"
            print(f"{name:<32} {right}/{len(sums)} held-out sums right", flush=True)
        for city in ("Paris", "Tokyo", "Bogotá"):
            text, calls = answer(client, f"What is the weather in {city}?", [WEATHER])
            results[f"weather in {city}"] = {"calls": calls, "answer": text}
            print(f"weather in {city}: calls {calls}, answer {text!r}")
        text, calls = answer(client, "Where does Mira live?", [WEATHER, USER_CALCULATOR])
        results["facts question, two tools"] = {"calls": calls, "answer": text}
        print(f"facts question with two tools: calls {calls}, answer {text!r}")
    finally:
        server.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    cli(main)
