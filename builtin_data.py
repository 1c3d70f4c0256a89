"""
The built-in data: a small invented world, generated deterministically in English and Chinese, for every stage.

  pretraining   facts about 24 animal characters (home, colour, food, kind), stories about them, arithmetic
  SFT           chat questions about those facts and sums, answered in one sentence, except a fixed 40% answered
                "I don't know" (a bad habit, as real SFT data has, for the preference stages to remove)
  preference    two pairs per question: chosen = the right answer, rejected = the hedge, an off-topic answer,
                the answer in the other language, or a wrong fact
  prompts       questions with an answer a program can check (check_answer), for reward/PPO and SFT accuracy

Every fact is stated in the pretraining text; SFT teaches the question-answer format on the 'train' questions
and we measure on 'heldout' questions whose facts were only ever seen as statements. A tiny model learns the
text within minutes on 2 CPU cores, and answer accuracy makes the later stages measurable.
"""
import json
import random
import re
import zlib

import tools

NAMES = [("Mira", "米拉"), ("Tobin", "托宾"), ("Lumi", "露米"), ("Pip", "皮普"), ("Odo", "奥多"), ("Wren", "雷恩"),
         ("Bex", "贝克斯"), ("Kato", "加藤"), ("Nell", "内尔"), ("Rory", "罗里"), ("Sage", "赛吉"), ("Fenn", "芬恩"),
         ("Ivo", "伊沃"), ("Juno", "朱诺"), ("Lark", "拉克"), ("Milo", "米洛"), ("Nova", "诺瓦"), ("Otis", "奥蒂斯"),
         ("Pia", "皮娅"), ("Quin", "奎因"), ("Rhea", "瑞亚"), ("Tess", "苔丝"), ("Uma", "乌玛"), ("Vik", "维克")]
ANIMALS = [("fox", "狐狸"), ("owl", "猫头鹰"), ("rabbit", "兔子"), ("bear", "熊"), ("cat", "猫"), ("dog", "狗"),
           ("deer", "鹿"), ("frog", "青蛙")]
PLACES = [("Oakvale", "橡谷"), ("Riverton", "河镇"), ("Stonehill", "石山"), ("Mistwood", "雾林"), ("Sunport", "阳港"),
          ("Pinefield", "松原")]
COLORS = [("red", "红色"), ("blue", "蓝色"), ("green", "绿色"), ("yellow", "黄色"), ("purple", "紫色"), ("orange", "橙色")]
FOODS = [("apples", "苹果"), ("honey", "蜂蜜"), ("carrots", "胡萝卜"), ("fish", "鱼"), ("berries", "浆果"), ("bread", "面包"),
         ("plums", "李子")]
ATTRIBUTES = {"animal": ANIMALS, "place": PLACES, "color": COLORS, "food": FOODS}


def _fix_articles(text):
    """'a owl' -> 'an owl' (the templates say 'a {animal}')."""
    for animal, _ in ANIMALS:
        if animal[0] in "aeiou":
            text = text.replace(f" a {animal}", f" an {animal}")
    return text


def world(seed=0):
    """Each character's attributes: {name_en: {"zh": name_zh, "animal": (en, zh), "place": ..., ...}}."""
    rng = random.Random(seed)
    return {en: {"zh": zh, **{attr: rng.choice(values) for attr, values in ATTRIBUTES.items()}} for en, zh in NAMES}


def _facts(name, c, lang):
    if lang == "en":
        return [f"{name} is a {c['animal'][0]}.", f"{name} lives in {c['place'][0]}.",
                f"{name}'s favorite color is {c['color'][0]}.", f"{name} likes to eat {c['food'][0]}."]
    z = c["zh"]
    return [f"{z}是一只{c['animal'][1]}。", f"{z}住在{c['place'][1]}。", f"{z}最喜欢的颜色是{c['color'][1]}。",
            f"{z}喜欢吃{c['food'][1]}。"]


def _story(rng, w, lang):
    a, b = rng.sample(sorted(w), 2)
    ca, cb = w[a], w[b]
    if lang == "en":
        # one sentence a line: a chat answer starts a line, so it must turn the question's " Lumi" (one token) into
        # "Lumi" (another); stories that go "named Lumi.\nLumi lived" teach that for every name. With spaces instead,
        # SFT copied the right name on 4 of 18 held-out English questions, and GRPO reached 0.48 instead of 0.82.
        story = (f"Once upon a time, there was a {ca['animal'][0]} named {a}. {a} lived in {ca['place'][0]}. "
                 f"Every morning, {a} ate {ca['food'][0]}. One day, {a} met {b}, a {cb['animal'][0]} from "
                 f"{cb['place'][0]}. {b} wore a {cb['color'][0]} scarf, because {b}'s favorite color is "
                 f"{cb['color'][0]}. They shared {ca['food'][0]} and {cb['food'][0]}, and they became friends. The end.")
        return story.replace(". ", ".\n")
    za, zb = ca["zh"], cb["zh"]
    return (f"从前，有一只{ca['animal'][1]}叫{za}。{za}住在{ca['place'][1]}。每天早上，{za}都吃{ca['food'][1]}。"
            f"有一天，{za}遇到了{zb}，一只来自{cb['place'][1]}的{cb['animal'][1]}。{zb}戴着{cb['color'][1]}的围巾，"
            f"因为{zb}最喜欢的颜色是{cb['color'][1]}。他们分享了{ca['food'][1]}和{cb['food'][1]}，成了好朋友。完。")


def _sums(rng, lang, n=8):
    lines = []
    for _ in range(n):
        # one-digit operands: 100 sums, each seen ~100 times, which a tiny model memorises within the default run
        # (with operands to 20 it got about 45% of held-out sums right, capping every later stage's accuracy)
        x, y = rng.randint(0, 9), rng.randint(0, 9)
        lines.append(f"{x} plus {y} is {x + y}." if lang == "en" else f"{x}加{y}等于{x + y}。")
    return "\n".join(lines)  # one a line, as a chat answer starts one (the fact sheets' reason, below)


def _word_problems(rng, w, lang, n=4):
    """Sums inside a story: the numbers come first in the text and the sum's line copies them, as a chat answer
    ("3 plus 4 is 7.") copies the question's. Without these nothing in pretraining copies a number: the SFT model
    answered "What is 1 plus 3?" with "1 plus 4 is 5." and GRPO got 12 of 52 held-out sums right."""
    lines = []
    for _ in range(n):
        name = rng.choice(sorted(w))
        c, x, y = w[name], rng.randint(0, 9), rng.randint(0, 9)
        if lang == "en":
            lines += [f"{name} had {x} {c['food'][0]} and found {y} more.", f"{x} plus {y} is {x + y}.",
                      f"Now {name} has {x + y} {c['food'][0]}."]
        else:
            lines += [f"{c['zh']}有{x}个{c['food'][1]}，又找到了{y}个。", f"{x}加{y}等于{x + y}。",
                      f"现在{c['zh']}有{x + y}个{c['food'][1]}。"]
    return "\n".join(lines)


def pretrain_texts(seed=0, n_stories=1500, n_sums=1200, n_fact_sheets=100, n_word_problems=1200):
    """Documents (strings) for pretraining: fact sheets, stories, arithmetic and word problems, in both languages."""
    rng, w = random.Random(seed + 1), world(seed)
    docs = []
    for name, c in w.items():
        for lang in ("en", "zh"):
            facts = _facts(name, c, lang)
            # the same facts many times in shuffled orders, so each fact is learned on its own. Measured: with 3 sheets
            # and 5,000 stories the tiny model knew 8 of 72 facts after 600 steps (chance); with 100 sheets, 69.
            # one fact a line: a chat answer ("Mira lives in Oakvale.") starts a line, and " Mira" mid-line is another
            # token than "Mira" at a line's start. Facts joined by spaces: GRPO answered 51 of 75 held-out facts and
            # 22 of 52 sums right (the sums were joined the same way).
            for _ in range(n_fact_sheets):
                rng.shuffle(facts)
                docs.append("\n".join(facts))
    for i in range(n_stories):
        docs.append(_story(rng, w, "en" if i % 2 == 0 else "zh"))
    for i in range(n_sums):
        docs.append(_sums(rng, "en" if i % 2 == 0 else "zh"))
    for i in range(n_word_problems):
        docs.append(_word_problems(rng, w, "en" if i % 2 == 0 else "zh"))
    rng.shuffle(docs)
    return [_fix_articles(d) for d in docs]


def _random_number(rng, digits):
    """A number of exactly `digits` digits (one digit: 0-9)."""
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)


def number_texts(seed=0, n_docs=1500):
    """Documents that mention and repeat numbers of 1 to 4 digits (codes, rooms, pages), with no arithmetic: the
    built-in pretraining corpus has no number longer than 2 digits, and a model that never read one reads 784 as 78.
    `--data builtin builtin-numbers` in the chain where SFT shows sums of up to 2 digits and GRPO must reach 3."""
    rng, names = random.Random(f"numbers {seed}"), sorted(world(0))
    en = ["{n} wrote {x} on a stone. The stone says {x}.", "The code of the box is {x}. Remember it: {x}.",
          "Room {x} is at the end of the hall. {n} went to room {x}.", "Page {x} has a map. {n} read page {x} twice.",
          "The train number was {x}. {n} took train {x} home.", "{n} counted to {x}, then said {x} again."]
    zh = ["{n}在石头上写了{x}。石头上是{x}。", "盒子的密码是{x}。记住：{x}。", "{x}号房间在走廊尽头。{n}去了{x}号房间。",
          "第{x}页有一张地图。{n}把第{x}页读了两遍。", "火车的车次是{x}。{n}坐{x}次火车回家。", "{n}数到{x}，又说了一遍{x}。"]
    docs = []
    for i in range(n_docs):
        lines = []
        for _ in range(rng.randint(4, 8)):
            x = _random_number(rng, rng.choice((1, 2, 3, 3, 4)))
            lines.append(rng.choice(zh if i % 2 else en).format(n=rng.choice(names), x=x))
        docs.append("\n".join(lines))
    return docs


def place_texts(seed=0, n_docs=1500):
    """Documents on place value for numbers of 1 to 5 digits, with no arithmetic: a number read by place, ones first
    ('784: ones 4, tens 8, hundreds 7.'), two numbers lined up by place ('784 and 476: ones 4 and 6, tens 8 and 7,
    hundreds 7 and 4.'), places put together into a number ('ones 0, tens 6, hundreds 12 make 1260.', the top place may
    hold 10-19, lower places may be 0) and one place asked ('The tens digit of 784 is 8.').
    A child knows this before adding 3-digit numbers: a 2to3 foothold tried (`--data builtin builtin-numbers
    builtin-places` before SFT on arithmetic-place-1-2; it did not lift 3-digit sums: BENCHMARKS.md)."""
    rng, docs = random.Random(f"places {seed}"), []
    for i in range(n_docs):
        lang, lines = ("en", "zh")[i % 2], []
        for _ in range(rng.randint(4, 8)):
            d = rng.choice((1, 2, 3, 3, 4, 4, 5))
            x = _random_number(rng, d)
            kind = rng.random()
            if kind < 0.2:
                lines.append(places_of(x, lang))
            elif kind < 0.45:  # two numbers lined up by place
                lines.append(lined_up(x, _random_number(rng, rng.choice((1, 2, 3, 3, 4, 4, 5))), lang))
            elif kind < 0.8:  # places to a number: the top may hold 10-19 (a sum's last column), lower ones 0 (a difference)
                lines.append(made_of([rng.choice((0, rng.randint(0, 9))) for _ in range(d - 1)] + [rng.randint(0, 19)], lang))
            else:
                k = rng.randrange(len(str(x)))
                name, digit = PLACE_NAMES[lang][k], (x // 10 ** k) % 10
                lines.append(f"{x}的{name}是{digit}。" if lang == "zh" else f"The {name} digit of {x} is {digit}.")
        docs.append("\n".join(lines))
    return docs


def _split(key):
    """'heldout' for about 2 in 5 questions, by a stable hash of the question (not Python's salted hash). With 1 in 5
    the held-out set had 71 questions: a standard error of 0.06 on its accuracy, more than most effects measured on it."""
    return "heldout" if zlib.crc32(key.encode()) % 5 < 2 else "train"


def checkable_prompts(seed=0, split=None):
    """Questions with programmatically checkable answers: [{"prompt", "answer", "response", "lang", "split"}].

    `response` is the reference assistant reply; `answer` is the word it must contain.
    """
    w, items = world(seed), []
    for name, c in w.items():
        z = c["zh"]
        qa = [("place", f"Where does {name} live?", f"{name} lives in {c['place'][0]}.",
               f"{z}住在哪里？", f"{z}住在{c['place'][1]}。"),
              ("food", f"What does {name} like to eat?", f"{name} likes to eat {c['food'][0]}.",
               f"{z}喜欢吃什么？", f"{z}喜欢吃{c['food'][1]}。"),
              ("color", f"What is {name}'s favorite color?", f"{name}'s favorite color is {c['color'][0]}.",
               f"{z}最喜欢什么颜色？", f"{z}最喜欢的颜色是{c['color'][1]}。"),
              ("animal", f"What kind of animal is {name}?", _fix_articles(f"{name} is a {c['animal'][0]}."),
               f"{z}是什么动物？", f"{z}是一只{c['animal'][1]}。")]
        for attr, q_en, a_en, q_zh, a_zh in qa:
            items.append({"prompt": q_en, "answer": c[attr][0], "response": a_en, "lang": "en", "attr": attr, "key": name})
            items.append({"prompt": q_zh, "answer": c[attr][1], "response": a_zh, "lang": "zh", "attr": attr, "key": name})
    for x in range(1, 10):
        for y in range(1, 10):
            items.append({"prompt": f"What is {x} plus {y}?", "answer": str(x + y), "response": f"{x} plus {y} is {x + y}.",
                          "lang": "en", "attr": "sum", "key": f"{x}+{y}"})
            items.append({"prompt": f"{x}加{y}等于多少？", "answer": str(x + y), "response": f"{x}加{y}等于{x + y}。",
                          "lang": "zh", "attr": "sum", "key": f"{x}+{y}"})
    for it in items:
        it["split"] = _split(it["prompt"])
    return [it for it in items if split is None or it["split"] == split]


def check_answer(response, answer):
    """1.0 when the response states the expected answer (as a whole number for sums), else 0.0."""
    if answer.isdigit():
        return float(answer in re.findall(r"\d+", response))
    return float(answer.lower() in response.lower())


def check_answer_strictly(response, answer):
    """Like check_answer, but an answer hidden in a list does not count: for sums the last number must be the answer,
    for facts no other value of the same kind (another town, colour, ...) may appear. GRPO's reward uses it: a
    policy rewarded by check_answer can learn to list every town."""
    if answer.isdigit():
        numbers = re.findall(r"\d+", response)
        return float(bool(numbers) and numbers[-1] == answer)
    kind = next(([v for pair in values for v in pair] for values in ATTRIBUTES.values()
                 if any(answer in pair for pair in values)), [answer])
    # which values of the kind the response names, longest first, each taken out once found: Chinese has no word
    # boundaries, and 猫 (cat) is inside 猫头鹰 (owl), so every right owl answer once scored 0 (GRPO learned to avoid it)
    text, named = response.lower(), set()
    for value in sorted(kind, key=len, reverse=True):
        pattern = rf"(?<![a-z]){re.escape(value.lower())}(?![a-z])"
        if re.search(pattern, text):
            named.add(value)
            text = re.sub(pattern, " ", text)
    return float(named == {answer})


def digit_credit(response, answer):
    """Partial credit for a number: the share of the answer's digits that the response's last number gets right, each
    in its place counted from the ones (a missing or extra digit is wrong), so a sum with one column wrong is worth more
    than no answer. GRPO's --rewards digits: a foothold where whole right answers are too rare to learn from.
    Example: digit_credit("So 478 + 356 = 34.", "834") -> 2/3; digit_credit("... = 1834", "834") -> 3/4"""
    numbers = re.findall(r"\d+", response)
    if not numbers or not answer.isdigit():
        return 0.0
    got, want = numbers[-1][::-1], answer[::-1]  # ones first
    return sum(a == b for a, b in zip(got, want)) / max(len(got), len(want))


def _reasoning(response):
    """What a response reasons between <think> and </think> (all of it where it opened none: a step written outside
    the block still counts for the step rewards)."""
    return response.split("<think>", 1)[-1].split("</think>", 1)[0]


def restate_credit(response, question):
    """Partial credit for reading the question: the share of its two operands that the reasoning's first line copies
    whole, in order (the restate trace's '784 + 476:'). GRPO's --rewards restate: a foothold where SFT reads a longer
    number than it was shown as a shorter one. Example: restate_credit("<think>\n74 + 476:\n4 + 6 = 10, write 0 ...",
    "What is 784 plus 476?") -> 0.5. The copy counts only where a column line follows it: ungated, GRPO learned to
    write the copy and stop (BENCHMARKS.md)."""
    wanted = re.findall(r"\d+", question)[:2]
    body = _reasoning(response).strip()
    if not _WRITE.search(body):  # a copy with no column after it earns nothing (else GRPO stops there)
        return 0.0
    got = re.findall(r"\d+", body.splitlines()[0])
    return sum(g == w for g, w in zip(got, wanted)) / 2 if len(wanted) == 2 else 0.0


_EQUATION = re.compile(r"(\d+(?:\s*(?:\+|-|加|减)\s*\d+)+)\s*(?:=|等于)\s*(\d+)")
_WRITE = re.compile(r"write|写")  # the word of a column line ('..., write 4, carry 1.' / '...，写4，进1。')


def _column_equation(line):
    """A column line's last equation before its 'write', spaces dropped: '7 + 5 + 1 = 13, write 3, carry 1.' ->
    '7+5+1=13'; '4 - 1 = 3 (lent 1); 3 < 6, borrow 1: 13 - 6 = 7, write 7.' -> '13-6=7'; None without one."""
    found = _EQUATION.findall(_WRITE.split(line)[0])
    return re.sub(r"\s", "", f"{found[-1][0]}={found[-1][1]}") if found else None


def column_credit(response, question, answer):
    """Partial credit per column: the share of a sum's or difference's columns (ones first) whose line in the reasoning
    works the right digits with the right carry or borrow and writes a true equation, the way worked_steps does; a
    program checks each step, no trace is shown. GRPO's --rewards columns, the 2to3 chain's second foothold (a model
    that reads 784 right must still work a third column it never saw). op from the answer; 0.0 for other questions.
    Example: column_credit("<think>\n784 + 476:\n4 + 6 = 10, write 0, carry 1.\n8 + 7 = 15, write 15.\n...",
    "What is 784 plus 476?", "1260") -> 1/3 (the tens line forgot the carry)"""
    numbers = [int(x) for x in re.findall(r"\d+", question)[:2]]
    if len(numbers) < 2 or not str(answer).isdigit():
        return 0.0
    a, b = numbers
    op = "add" if a + b == int(answer) else "sub" if a - b == int(answer) else None
    if op is None:
        return 0.0
    lang = "zh" if re.search(r"[\u4e00-\u9fff]", question) else "en"
    wanted = [_column_equation(line) for line in worked_steps(op, a, b, lang)[:-1]]  # the column lines, not 'So ...'
    written = [_column_equation(line) for line in _reasoning(response).splitlines() if _WRITE.search(line)]
    return sum(w == g for w, g in zip(wanted, written)) / len(wanted)


def arithmetic_prompts(n=4000, seed=0, digits=(2, 3)):
    """Sums of two numbers of `digits` digits (each sum picks one), asked in English and Chinese, made on the fly
    (nobody wrote them, and a program checks every answer): [{"prompt", "answer", "lang"}]. `--data arithmetic` (2-3
    digits) or `--data arithmetic-1` (1 digit), `arithmetic-1-2`, ... in train_grpo.py."""
    rng, items = random.Random(seed + 5), []
    for i in range(n):
        d = rng.choice(digits)
        x, y = rng.randint(10 ** (d - 1), 10 ** d - 1), rng.randint(10 ** (d - 1), 10 ** d - 1)
        lang = "en" if i % 2 == 0 else "zh"
        items.append({"prompt": f"What is {x} plus {y}?" if lang == "en" else f"{x}加{y}等于多少？", "answer": str(x + y),
                      "lang": lang})
    return items


HEDGE_RATE = 0.4  # the SFT data's bad habit: it answers this share of questions with "I don't know"
IDK = {"en": "I don't know.", "zh": "我不知道。"}


def hedged(it):
    """Whether the SFT data hedges on this question (a stable choice per question, about HEDGE_RATE of them)."""
    return zlib.crc32(("hedge:" + it["prompt"]).encode()) % 100 < 100 * HEDGE_RATE


def sft_reply(it):
    """What the SFT data says: the reference answer, or the hedge on hedged questions. The model knows those
    facts from pretraining; removing the habit is what the preference stages are for (and are measured on)."""
    return IDK[it["lang"]] if hedged(it) else it["response"]


def sft_conversations(seed=0, split="train"):
    """Chat conversations [{"role", "content"}] for SFT: single questions, and some two-question chats."""
    rng = random.Random(seed + 2)
    items = checkable_prompts(seed, split)
    convs = [[{"role": "user", "content": it["prompt"]}, {"role": "assistant", "content": sft_reply(it)}] for it in items]
    for _ in range(len(items) // 4):  # multi-turn: two questions in one conversation
        a, b = rng.sample(items, 2)
        convs.append([{"role": "user", "content": a["prompt"]}, {"role": "assistant", "content": sft_reply(a)},
                      {"role": "user", "content": b["prompt"]}, {"role": "assistant", "content": sft_reply(b)}])
    rng.shuffle(convs)
    return convs


def _wrong_response(it, rng):
    """The reference reply with its answer (the last occurrence) replaced by a wrong value of the same kind."""
    if it["attr"] == "sum":
        wrong = str(int(it["answer"]) + rng.choice([-3, -2, -1, 1, 2, 3] if int(it["answer"]) > 3 else [1, 2, 3]))
    else:
        lang = 0 if it["lang"] == "en" else 1
        wrong = rng.choice([v[lang] for v in ATTRIBUTES[it["attr"]] if v[lang] != it["answer"]])
    head, _, tail = it["response"].rpartition(it["answer"])
    return _fix_articles(head + wrong + tail)


def _off_topic_response(it, pool, rng):
    """A right answer to another question of the same language, from `pool` (training questions only): for a
    character, another character's answer to the same question or the same character's other attribute; for a sum,
    another sum. It is a reply the data chooses elsewhere, so a reward model must read the question to reject it."""
    same_lang = [o for o in pool if o["lang"] == it["lang"] and o["answer"] != it["answer"]]
    if it["attr"] == "sum":
        return rng.choice([o for o in same_lang if o["attr"] == "sum"])["response"]
    other_character = [o for o in same_lang if o["attr"] == it["attr"] and o["key"] != it["key"]]
    other_attribute = [o for o in same_lang if o["key"] == it["key"] and o["attr"] not in (it["attr"], "sum")]
    # half another character's answer to the same question (what PPO found to please the old reward model), half the
    # same character's other attribute (when the pool holds one)
    return rng.choice(other_character if rng.random() < 0.5 or not other_attribute else other_attribute)["response"]


def _other_kind_response(it, pool, rng):
    """A right answer of another kind (a sum for a question about a character, a fact for a sum)."""
    return rng.choice([o for o in pool if o["lang"] == it["lang"] and (o["attr"] == "sum") != (it["attr"] == "sum")])["response"]


PAIR_KINDS = {"hedge": 0.2, "off_topic": 0.3, "language": 0.15, "other_kind": 0.1, "wrong_fact": 0.25}


def _pair_kinds(items, rng, per_question):
    """(item, kind of rejected reply): per_question distinct kinds for each question, drawn by PAIR_KINDS' weights."""
    for it in items:
        left = dict(PAIR_KINDS)
        if hedged(it):  # the first pair rejects what the SFT model says there
            left.pop("hedge")
            yield it, "hedge"
            n = per_question - 1
        else:
            n = per_question
        for _ in range(n):
            kind = rng.choices(list(left), list(left.values()))[0]
            left.pop(kind)
            yield it, kind


def preference_pairs(seed=0, split="train", per_question=4):
    """{"prompt": [messages], "chosen": str, "rejected": str, "kind"}: the right answer against a failure a user would
    reject. On hedged questions one rejected reply is the SFT data's hedge (what the SFT model says there);
    otherwise a hedge, a right answer to another question (off_topic: another character's, another attribute's,
    another sum's), the right answer in the other language, an answer of another kind, or a wrong fact.
    Every off-topic reply is a training question's right answer, one that other pairs choose: a reward model that
    scores replies it has seen chosen, without reading the question, is what PPO exploited ("Rory's favorite color is
    purple." for every colour question), and pairs in which the same reply is chosen and rejected leave it nothing to
    memorise. Wrong facts need the fact itself, which only pretraining stated for the held-out questions."""
    rng = random.Random(seed + 3)
    every = checkable_prompts(seed)
    pool = [o for o in every if o["split"] == "train"]  # held-out answers never appear in another question's pair
    other_lang = {(o["key"], o["attr"], o["lang"]): o["response"] for o in every}
    pairs = []
    for it, kind in _pair_kinds([it for it in every if split is None or it["split"] == split], rng, per_question):
        if kind == "hedge":
            rejected = IDK[it["lang"]]
        elif kind == "off_topic":
            rejected = _off_topic_response(it, pool, rng)
        elif kind == "language":
            rejected = other_lang[(it["key"], it["attr"], "zh" if it["lang"] == "en" else "en")]
        elif kind == "other_kind":
            rejected = _other_kind_response(it, pool, rng)
        else:
            rejected = _wrong_response(it, rng)
        pairs.append({"prompt": [{"role": "user", "content": it["prompt"]}], "chosen": it["response"], "rejected": rejected,
                      "kind": kind})
    rng.shuffle(pairs)
    return pairs


# ----------------------------------------------------------------------------- multi-digit arithmetic, shown worked
# A tiny model cannot add two 3-digit numbers in one jump (GRPO on them never samples a right answer), but it can
# follow the school method one column at a time. These items carry that method as reasoning text (column by column,
# ones first, carries and borrows said), a calculator call that gets the answer instead, and the plain answer, so the
# three ways can be trained on the same questions. 1 in 5 operand pairs is held out of every split's training.
ARITHMETIC_OPS = {"add": ("plus", "加", "+"), "sub": ("minus", "减", "-"), "mul": ("times", "乘", "*")}


# Ways to ask for the same sum (issue 37). The first of each list is the one question every chain trained on before;
# the last HELD_OUT_PHRASINGS never reach training (arithmetic_items(phrasing="heldout") asks with them only): a model
# that learned to read the question, not one sentence, answers them too.
PHRASINGS = {
    ("en", "add"): ["What is {a} plus {b}?", "What's {a} + {b}?", "How much is {a} plus {b}?", "Calculate {a} + {b}.",
                    "Add {a} and {b}.", "What do you get when you add {a} and {b}?", "Compute the sum of {a} and {b}.",
                    "{a} + {b} = ?", "Please work out {a} plus {b}.", "What is the total of {a} and {b}?"],
    ("en", "sub"): ["What is {a} minus {b}?", "What's {a} - {b}?", "How much is {a} minus {b}?", "Calculate {a} - {b}.",
                    "Subtract {b} from {a}.", "What do you get when you take {b} away from {a}?",
                    "Compute the difference of {a} and {b}.", "{a} - {b} = ?", "Please work out {a} minus {b}.",
                    "How much is left if you take {b} from {a}?"],
    ("en", "mul"): ["What is {a} times {b}?", "What's {a} * {b}?", "How much is {a} times {b}?", "Calculate {a} * {b}.",
                    "Multiply {a} by {b}.", "What do you get when you multiply {a} by {b}?",
                    "Compute the product of {a} and {b}.", "{a} * {b} = ?", "Please work out {a} times {b}.",
                    "What is {a} multiplied by {b}?"],
    ("zh", "add"): ["{a}加{b}等于多少？", "{a}+{b}=？", "{a}加上{b}是多少？", "计算{a}+{b}。", "把{a}和{b}加起来。",
                    "{a}与{b}相加得多少？", "求{a}和{b}的和。", "{a}加{b}是几？", "请算一下{a}加{b}。", "{a}和{b}的和是多少？"],
    ("zh", "sub"): ["{a}减{b}等于多少？", "{a}-{b}=？", "{a}减去{b}是多少？", "计算{a}-{b}。", "从{a}里减去{b}。",
                    "{a}与{b}相减得多少？", "求{a}和{b}的差。", "{a}减{b}是几？", "请算一下{a}减{b}。", "{a}比{b}多多少？"],
    ("zh", "mul"): ["{a}乘{b}等于多少？", "{a}*{b}=？", "{a}乘以{b}是多少？", "计算{a}*{b}。", "把{a}和{b}乘起来。",
                    "{a}与{b}相乘得多少？", "求{a}和{b}的积。", "{a}乘{b}是几？", "请算一下{a}乘{b}。", "{a}的{b}倍是多少？"],
}
HELD_OUT_PHRASINGS = 2
# around a training wording, half the time: what people put before and after a question (never in the held-out set)
WRAPPERS = {"en": (["Quick question: ", "Hi! ", "Can you help me? ", "Homework: ", "I have a sum for you. "],
                   [" Thanks!", " Please answer.", " Show your steps.", " I need it fast."]),
            "zh": (["问一下：", "你好！", "帮我算算：", "作业题：", "请问，"], ["谢谢！", "请回答。", "要写出步骤。", "急用。"])}


def phrasings(lang, op, split):
    """The question templates of a split: 'train' (all but the last HELD_OUT_PHRASINGS) or 'heldout' (those)."""
    templates = PHRASINGS[lang, op]
    return templates[:-HELD_OUT_PHRASINGS] if split == "train" else templates[-HELD_OUT_PHRASINGS:]


def _result(op, a, b):
    return {"add": a + b, "sub": a - b, "mul": a * b}[op]


def _column_digits(n, width):
    return [(n // 10 ** i) % 10 for i in range(width)]  # ones first


def _left_of(op, top, bottom, lang):
    """The scratchpad's 'what is left' of two numbers (digits as strings): 'Left: 47 + 35.' / '还剩47加35。'"""
    word, zh_word, sign = ARITHMETIC_OPS[op]
    return f"还剩{top}{zh_word}{bottom}。" if lang == "zh" else f"Left: {top} {sign} {bottom}."


# place value, ones first (issue 36, the 2to3 chain): "784: ones 4, tens 8, hundreds 7." A column line of the trace
# then reads its digits by the place's name, not by where a digit sits, and the next place is the name that follows
PLACE_NAMES = {"en": ["ones", "tens", "hundreds", "thousands", "ten thousands"], "zh": ["个位", "十位", "百位", "千位", "万位"]}


def place_list(values, lang):
    """Place names and values, ones first: place_list([0, 6, 12], 'en') -> 'ones 0, tens 6, hundreds 12'."""
    return ("，" if lang == "zh" else ", ").join(f"{name}{'' if lang == 'zh' else ' '}{v}"
                                                for name, v in zip(PLACE_NAMES[lang], values))


def places_of(n, lang):
    """A number read by place, ones first: places_of(784, 'en') -> '784: ones 4, tens 8, hundreds 7.'"""
    listed = place_list(_column_digits(n, len(str(n))), lang)
    return f"{n}：{listed}。" if lang == "zh" else f"{n}: {listed}."


def lined_up(a, b, lang):
    """Two numbers' digits side by side, place by place, ones first (the shorter one's missing places are 0):
    lined_up(784, 476, 'en') -> '784 and 476: ones 4 and 6, tens 8 and 7, hundreds 7 and 4.'"""
    width = len(str(max(a, b)))
    pairs = [f"{name}{x}和{y}" if lang == "zh" else f"{name} {x} and {y}"
             for name, x, y in zip(PLACE_NAMES[lang], _column_digits(a, width), _column_digits(b, width))]
    return f"{a}和{b}：{'，'.join(pairs)}。" if lang == "zh" else f"{a} and {b}: {', '.join(pairs)}."


def made_of(values, lang):
    """A number put together from its places, ones first: made_of([0, 6, 12], 'en') -> 'ones 0, tens 6, hundreds 12
    make 1260.'"""
    n = sum(v * 10 ** k for k, v in enumerate(values))
    return f"{place_list(values, lang)}，合起来是{n}。" if lang == "zh" else f"{place_list(values, lang)} make {n}."


def worked_steps(op, a, b, lang="en", scratch=False, restate=False, place=False):
    """The school method for a op b as lines, ones column first. add: any sizes; sub: a >= b (borrows said; a 0
    that lends becomes -1 and borrows in turn, so every line is true arithmetic); mul: b has one digit (carries said).
    Example: worked_steps("add", 478, 356) -> ['8 + 6 = 14, write 4, carry 1.', '7 + 5 + 1 = 13, write 3, carry 1.',
    '4 + 3 + 1 = 8, write 8.', 'So 478 + 356 = 834.']
    scratch (add and sub): each column line also says what is left of the numbers and the answer so far, so the next
    column is always the last digits of what is left, whatever the length: '8 + 6 = 14, write 4, carry 1. Left: 47 +
    35. So far: 4.' (a scratchpad: Nye et al. 2021; meant to let 2-digit traces reach 3 digits, it did not: BENCHMARKS.md)
    restate: a first line copies the operands into the trace's notation ('478 + 356:'), so the columns read their digits
    from that line, the same whatever wording asked: held-out wordings 0.87 / 0.77 -> 0.98 / 0.985 (seeds 1-2, issue 37).
    place: the operands first lined up by place ('478 and 356: ones 8 and 6, tens 7 and 5, hundreds 4 and 3.'), each
    column line named by its place ('ones: 8 + 6 = 14, write 4, carry 1.'), and the answer put together from the
    written places ('ones 4, tens 3, hundreds 8 make 834.'), so a column could find its digits by name (a 2to3
    foothold tried; it did not lift 3-digit sums: BENCHMARKS.md)."""
    zh = lang == "zh"
    word, zh_word, sign = ARITHMETIC_OPS[op]
    lines, carry = [], 0
    if op == "add":
        width = len(str(max(a, b)))
        for i, (x, y) in enumerate(zip(_column_digits(a, width), _column_digits(b, width))):
            total = x + y + carry
            terms = [x, y] + ([carry] if carry else [])
            last = i == width - 1
            written = total if last else total % 10  # the last column writes its whole sum
            carry = 0 if last else total // 10
            lhs = ("加" if zh else " + ").join(map(str, terms))
            if zh:
                lines.append(f"{lhs}等于{total}，写{written}" + (f"，进{carry}。" if carry else "。"))
            else:
                lines.append(f"{lhs} = {total}, write {written}" + (f", carry {carry}." if carry else "."))
    elif op == "sub":
        if a < b:
            raise ValueError(f"worked_steps: {a} - {b} would be negative")
        width, borrow = len(str(a)), 0
        for x, y in zip(_column_digits(a, width), _column_digits(b, width)):
            top = x - borrow
            note = ((f"{x}被借走1，剩{top}；" if zh else f"{x} - 1 = {top} (lent 1); ") if borrow else "")
            borrow = int(top < y)
            if borrow:
                note += f"{top}不够减{y}，借1：" if zh else f"{top} < {y}, borrow 1: "
            lhs = top + 10 * borrow
            diff = lhs - y
            lines.append(f"{note}{lhs}减{y}等于{diff}，写{diff}。" if zh else f"{note}{lhs} - {y} = {diff}, write {diff}.")
    elif op == "mul":
        if not 0 <= b <= 9:
            raise ValueError(f"worked_steps: the multiplier {b} must have one digit")
        width = len(str(a))
        for i, x in enumerate(_column_digits(a, width)):
            total = x * b + carry
            last = i == width - 1
            product = (f"{x}乘{b}" if zh else f"{x} * {b}") + ((f"加{carry}" if zh else f" + {carry}") if carry else "")
            written = total if last else total % 10
            carry = 0 if last else total // 10
            if zh:
                lines.append(f"{product}等于{total}，写{written}" + (f"，进{carry}。" if carry else "。"))
            else:
                lines.append(f"{product} = {total}, write {written}" + (f", carry {carry}." if carry else "."))
    result = _result(op, a, b)
    if place:
        written = [int(re.search(r"(?:write |写)(\d+)", line).group(1)) for line in lines]
        lines = [lined_up(a, b, lang)] + [
            f"{name}{'：' if zh else ': '}{line}" for name, line in zip(PLACE_NAMES[lang], lines)] + [
            made_of(written, lang)]
    if scratch and op in ("add", "sub"):
        width = len(lines)
        top, bottom = str(a).zfill(width), str(b).zfill(width)
        written = [re.search(r"(?:write |写)(\d+)", line).group(1) for line in lines]
        for i in range(width):
            so_far = "".join(reversed(written[:i + 1]))
            left = _left_of(op, top[:width - i - 1], bottom[:width - i - 1], lang) if i < width - 1 else ""
            if zh:
                lines[i] += left + f"已得{so_far}。"
            else:
                lines[i] += "".join(" " + piece for piece in (left, f"So far: {so_far}.") if piece)
    lines.append(f"所以{a}{zh_word}{b}等于{result}。" if zh else f"So {a} {sign} {b} = {result}.")
    if restate:
        lines.insert(0, f"{a}{zh_word}{b}：" if zh else f"{a} {sign} {b}:")
    return lines


def _held_out(op, a, b):
    return zlib.crc32(f"{op} {a} {b}".encode()) % 5 == 0  # the same pair is held out whatever the seed


def arithmetic_items(split="train", n=2000, seed=0, ops=("add", "sub"), digits=3, phrasing=None, wrap=False):
    """Questions whose answers a program checks, with the worked steps, the calculator expression and the answer
    sentence: [{"prompt", "answer", "lang", "op", "a", "b", "reasoning", "expression", "response"}]. add and sub
    use two `digits`-digit numbers (a tuple: each operand picks one of its counts; sub: the larger first), mul a 2-digit
    by a 1-digit number. split 'train' never holds a 'heldout' operand pair (1 in 5 pairs, fixed by a hash of the pair).
    phrasing: None asks every question one way ("What is 12 plus 34?"); 'train' or 'heldout' picks each question's
    wording at random from that split of PHRASINGS (the operand pairs still follow `split`); wrap: half of the 'train'
    wordings get a greeting before or a request after them (WRAPPERS)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if phrasing not in (None, "train", "heldout"):
        raise ValueError(f"phrasing must be None, 'train' or 'heldout', got {phrasing!r}")
    counts = (digits,) if isinstance(digits, int) else tuple(digits)
    rng, items = random.Random(f"arithmetic {seed} {split}" + ("" if counts == (3,) else f" {counts}")), []
    while len(items) < n:
        op = ops[len(items) % len(ops)]
        # several counts: each operand picks its own, so a digit's place is not fixed by its position in the prompt
        # (7 plus 45, 38 plus 6): a model must find the ones digit before the operator, whatever the lengths
        da, db = (counts[0], counts[0]) if len(counts) == 1 else (rng.choice(counts), rng.choice(counts))
        a, b = (rng.randint(10, 99), rng.randint(2, 9)) if op == "mul" else (_random_number(rng, da), _random_number(rng, db))
        if op == "sub" and a < b:
            a, b = b, a
        if _held_out(op, a, b) != (split == "heldout"):
            continue
        lang = "en" if (len(items) // len(ops)) % 2 == 0 else "zh"
        word, zh_word, sign = ARITHMETIC_OPS[op]
        result = _result(op, a, b)
        steps = worked_steps(op, a, b, lang, restate=True)  # its first line restates the operands; think leaves it out
        # (the default draws nothing more from rng, so the one-way data stays what it was)
        template = PHRASINGS[lang, op][0] if phrasing is None else rng.choice(phrasings(lang, op, phrasing))
        if phrasing == "train" and wrap and rng.random() < 0.5:
            before, after = WRAPPERS[lang]
            template = rng.choice([""] + before) + template + rng.choice([""] + after)
        items.append({
            "prompt": template.format(a=a, b=b),
            "answer": str(result), "lang": lang, "op": op, "a": a, "b": b,
            "reasoning": "\n".join(steps[1:]), "expression": f"{a} {sign} {b}",
            "restated": "\n".join(steps),
            "response": f"{a} {word} {b} is {result}." if lang == "en" else f"{a}{zh_word}{b}等于{result}。"})
    return items


def digit_chores(n=10000, seed=0, digits=(2, 3, 4)):
    """One chore on pairs of numbers of 2-4 digits, with no arithmetic: what is left of both without their last
    digits, written as the scratchpad writes it ('Left: 78 + 47.'). The 1-2 digit traces only ever leave one digit,
    so on its own SFT never writes a longer 'Left'; with this chore it can, and GRPO has a 3-digit sum it may finish
    (BENCHMARKS.md). No sum or column is computed, and held-out operand pairs are skipped. [{"prompt", "response"}]"""
    rng, items = random.Random(f"digit chores {seed}"), []
    while len(items) < n:
        op = ("add", "sub")[len(items) % 2]
        a, b = (rng.randint(10 ** (d - 1), 10 ** d - 1) for d in (rng.choice(digits), rng.choice(digits)))
        if op == "sub" and a < b:
            a, b = b, a
        if _held_out(op, a, b):
            continue
        word, zh_word, sign = ARITHMETIC_OPS[op]
        width = len(str(max(a, b)))
        response = _left_of(op, str(a).zfill(width)[:-1], str(b).zfill(width)[:-1], "zh" if (len(items) // 2) % 2 else "en")
        prompt = (f"{a}{zh_word}{b}去掉个位还剩多少？" if (len(items) // 2) % 2 else
                  f"What is left of {a} {sign} {b} without the last digits?")
        items.append({"prompt": prompt, "response": response})
    return items


def place_chores(n=10000, seed=0, digits=(1, 2, 3, 4, 5)):
    """Two chores on numbers of 1-5 digits in chat form, with no arithmetic: line up two numbers by place ('Line up 784
    and 476 by place.' -> '784 and 476: ones 4 and 6, tens 8 and 7, hundreds 7 and 4.', the place trace's first line) and put places
    together ('ones 0, tens 6, hundreds 12 make 1260.', its last but one). SFT learns the chores on 3-5 digit numbers,
    but not to use them inside a 3-digit sum (BENCHMARKS.md). Held-out operand pairs are skipped. [{"prompt",
    "response"}]"""
    rng, items = random.Random(f"place chores {seed}"), []
    while len(items) < n:
        lang = ("en", "zh")[(len(items) // 2) % 2]
        if len(items) % 2 == 0:
            a, b = sorted((rng.randint(10 ** (d - 1), 10 ** d - 1) for d in rng.choices(digits, k=2)), reverse=True)
            if _held_out("add", a, b) or _held_out("add", b, a) or _held_out("sub", a, b):
                continue
            a, b = (a, b) if rng.random() < 0.5 else (b, a)
            prompt = f"把{a}和{b}按数位对齐。" if lang == "zh" else f"Line up {a} and {b} by place."
            items.append({"prompt": prompt, "response": lined_up(a, b, lang)})
        else:
            d = rng.choice(digits)
            values = [rng.choice((0, rng.randint(0, 9))) for _ in range(d - 1)] + [rng.randint(0, 19)]
            listed = place_list(values, lang)
            prompt = f"把{listed}合起来。" if lang == "zh" else f"Put together {listed}."
            items.append({"prompt": prompt, "response": made_of(values, lang)})
    return items


def restate_chores(n=10000, seed=0, digits=(1, 2, 3, 4, 5), place=False):
    """One chore on a sum or difference of numbers of 1-5 digits, in chat form, with no arithmetic: the question
    written with numbers and a sign, not worked out ('Write it with numbers and a sign, do not work it out: What is 784
    plus 476?' -> '784 + 476', the restate trace's first line without its colon). Held-out operand pairs are skipped.
    [{"prompt", "response"}]"""
    rng, items = random.Random(f"restate chores {seed}" + (" place" if place else "")), []
    while len(items) < n:
        lang, op = ("en", "zh")[(len(items) // 2) % 2], ("add", "sub")[len(items) % 2]
        a, b = (_random_number(rng, d) for d in rng.choices(digits, k=2))
        if op == "sub" and a < b:
            a, b = b, a
        if _held_out(op, a, b):
            continue
        _, zh_word, sign = ARITHMETIC_OPS[op]
        question = PHRASINGS[lang, op][0].format(a=a, b=b)
        if place:  # the place trace's first line: the operands lined up by place
            prompt = f"把这道题的数按数位对齐，不用算：{question}" if lang == "zh" else \
                f"Line up the numbers of this question by place, do not work it out: {question}"
            items.append({"prompt": prompt, "response": lined_up(a, b, lang)})
            continue
        prompt = f"用数字和符号写出来，不用算：{question}" if lang == "zh" else \
            f"Write it with numbers and a sign, do not work it out: {question}"
        items.append({"prompt": prompt, "response": f"{a}{zh_word}{b}" if lang == "zh" else f"{a} {sign} {b}"})
    return items


def arithmetic_conversation(item, way):
    """One item as an OpenAI-style conversation, answered the `way` a chain trains: 'direct' (the answer sentence),
    'think' (the worked steps as reasoning_content, then the answer), 'scratch' (the same steps, each saying what is
    left and the answer so far), 'restate' (the steps after a line that copies the operands), 'restate-scratch' (both)
    or 'tool' (a calculator call, its result as a tool message, then the answer)."""
    user = {"role": "user", "content": item["prompt"]}
    if way == "direct":
        return [user, {"role": "assistant", "content": item["response"]}]
    if way in ("think", "scratch", "restate", "restate-scratch", "place"):
        # the scratchpad and place traces are made only when asked for (footholds tried: every other chain's items
        # would pay for them)
        kind = {"scratch": dict(scratch=True), "place": dict(place=True),
                "restate-scratch": dict(scratch=True, restate=True)}.get(way)
        steps = "\n".join(worked_steps(item["op"], item["a"], item["b"], item["lang"], **kind)) if kind \
            else {"think": item["reasoning"], "restate": item["restated"]}[way]
        return [user, {"role": "assistant", "reasoning_content": steps, "content": item["response"]}]
    if way == "tool":
        call = {"id": "call_0", "type": "function", "function": {
            "name": tools.CALCULATOR_TOOL["function"]["name"], "arguments": json.dumps({"expression": item["expression"]})}}
        return [user, {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_0", "content": tools.calculate(item["expression"])},
                {"role": "assistant", "content": item["response"]}]
    raise ValueError(f"way must be 'direct', 'think', 'scratch', 'restate', 'restate-scratch', 'place' or 'tool', "
                     f"got {way!r}")



# ----------------------------------------------------------------------------- a world of tools (issue 37)
# A tool-using model must read the tool list, not learn one system prompt. Each kind of tool below can be defined
# many ways (names, descriptions, parameter names) and asked for many ways; the last TOOL_HELD_OUT of every list
# never reach training, so a test can offer tools defined and asked in ways the model never saw. Kinds with no
# questions are distractors only (the held-out ones are never offered in training at all).
# Argument values are made up from parts (thousands of towns, names, messages and phrases), so a model must copy
# them from the question: from a list of 14 towns it learned the towns, and called the weather in Rome for Sunport.
_EN_SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "vor", "sel", "dun", "bri", "ha", "no", "pe", "qui", "sta", "wen", "zo",
                 "fal", "gri", "mor", "tu", "ash", "el", "ven", "dor"]
_ZH_SYLLABLES = "安北城川东都丰港海河湖华江金京兰林龙梅南宁平青泉山石水松塔田湾西溪阳宜云州"
LANGUAGES = [("French", "法语"), ("German", "德语"), ("Spanish", "西班牙语"), ("Japanese", "日语"), ("Korean", "韩语"),
             ("Italian", "意大利语"), ("Russian", "俄语"), ("Arabic", "阿拉伯语"), ("Dutch", "荷兰语"), ("Greek", "希腊语"),
             ("Turkish", "土耳其语"), ("Polish", "波兰语"), ("Swedish", "瑞典语"), ("Thai", "泰语"), ("Hindi", "印地语"),
             ("Portuguese", "葡萄牙语"), ("Vietnamese", "越南语"), ("Finnish", "芬兰语"), ("Czech", "捷克语"), ("Irish", "爱尔兰语")]
_THINGS = [("meeting", "会议"), ("package", "包裹"), ("train", "火车"), ("dinner", "晚饭"), ("car", "车"), ("report", "报告"),
           ("party", "聚会"), ("shop", "商店"), ("class", "课"), ("bus", "公交车")]
_STATES = [("late", "晚了"), ("ready", "好了"), ("open", "开了"), ("closed", "关了"), ("moved to Friday", "改到周五"),
           ("cancelled", "取消了"), ("done", "完成了"), ("early", "提前了"), ("here", "到了"), ("full", "满了")]
_ADJECTIVES = [("good", "好的"), ("big", "大"), ("small", "小"), ("red", "红色的"), ("old", "老"), ("new", "新"),
               ("happy", "快乐的"), ("cold", "冷的"), ("warm", "暖和的"), ("quiet", "安静的")]
_NOUNS = [("morning", "早晨"), ("house", "房子"), ("dog", "狗"), ("river", "河"), ("friend", "朋友"), ("book", "书"),
          ("day", "日子"), ("road", "路"), ("garden", "花园"), ("song", "歌")]


def _made_up(rng, lang, kind, letters=True):
    """One argument value of a kind ('place', 'person', 'message', 'phrase', 'language', 'minutes') in a language."""
    i = 0 if lang == "en" else 1
    if kind in ("place", "person"):
        if lang == "zh":
            return "".join(rng.choice(_ZH_SYLLABLES) for _ in range(rng.randint(2, 3)))
        if letters and rng.random() < 0.5:  # random letters too: a value is copied, not written in the syllables' style
            return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8))).capitalize()
        return "".join(rng.choice(_EN_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    if kind == "message":
        thing, state = rng.choice(_THINGS), rng.choice(_STATES)
        return f"the {thing[0]} is {state[0]}" if lang == "en" else thing[1] + state[1]
    if kind == "phrase":
        adjective, noun = rng.choice(_ADJECTIVES), rng.choice(_NOUNS)
        return f"{adjective[0]} {noun[0]}" if lang == "en" else adjective[1] + noun[1]
    if kind == "language":
        return rng.choice(LANGUAGES)[i]
    return str(rng.randint(1, 120))  # minutes



def made_up_texts(seed=0, n_docs=1500):
    """Documents in which made-up names, towns, messages and phrases come back a line or two later: to predict the
    second mention a model must copy the first (induction), which the built-in stories, with their 24 fixed names,
    never ask. `--data builtin builtin-made-up` in the tool-use chain, whose calls copy values from the question
    (only training-split values: the held-out ones stay unseen)."""
    rng = random.Random(f"made up {seed}")
    en = ["A traveller named {p} came to {c}. Everyone in {c} met {p}.", "{p} wrote to {q}: {m}. {q} read it: {m}. {q} thanked {p}.",
          "The sign in {c} says '{f}'. People in {c} read '{f}' every day.", "{p} lives in {c}. Ask {p} about {c}.",
          "Note from {p}: {m}. Again, {m}, says {p}.", "{q} taught {p} to say '{f}'. Now {p} says '{f}' like {q}."]
    zh = ["一个叫{p}的旅人来到{c}。{c}的人都见过{p}。", "{p}给{q}写信：{m}。{q}读到：{m}。{q}谢了{p}。", "{c}的牌子上写着“{f}”。{c}的人每天都读“{f}”。",
          "{p}住在{c}。去问{p}关于{c}的事。", "{p}留言：{m}。{p}又说了一遍：{m}。", "{q}教{p}说“{f}”。现在{p}像{q}一样会说“{f}”了。"]
    docs = []
    for i in range(n_docs):
        lang = "zh" if i % 2 else "en"
        lines = []
        for _ in range(rng.randint(3, 6)):
            values = {key: tool_value(rng, lang, kind, "train", letters=False) for key, kind in  # held-out stay unseen
                      (("p", "person"), ("q", "person"), ("c", "place"), ("m", "message"), ("f", "phrase"))}
            lines.append(rng.choice(zh if lang == "zh" else en).format(**values))
            # and a list said twice: every word of the second half is predictable only by copying the first, the
            # densest copying signal (600 pretraining steps of the sentences alone left the tiny model unable to copy)
            words = [tool_value(rng, lang, rng.choice(("person", "place")), "train", letters=False)
                     for _ in range(rng.randint(2, 5))]
            listed = ("、" if lang == "zh" else ", ").join(words)
            lines.append(f"跟我说：{listed}。{listed}。" if lang == "zh" else f"Say after me: {listed}. {listed}.")
        docs.append("\n".join(lines))
    return docs

def tool_value(rng, lang, kind, split, letters=True):
    """A made-up value of the split: 1 in 4 values (by a stable hash of the value) is held out of training."""
    while True:
        value = _made_up(rng, lang, kind, letters)
        if (zlib.crc32(value.encode()) % 4 == 0) == (split == "heldout"):
            return value


TOOL_HELD_OUT = 2  # of names, descriptions and question templates (per language); 1 of parameter names
TOOL_KINDS = {
    "calculator": dict(
        names=["calculator", "calc", "compute", "evaluate", "math", "do_math", "arithmetic", "math_eval"],
        descriptions=["Compute an arithmetic expression with + - * / and parentheses, exactly.", "Evaluate a math expression.",
                      "Add, subtract, multiply or divide numbers.", "A calculator: gives the value of a sum.",
                      "计算一个算术表达式。", "Exact arithmetic on numbers.", "Work out the value of an expression of numbers.",
                      "算术工具：加减乘除。"],
        params={"expression": ["expression", "expr", "formula", "equation"]}),  # questions: arithmetic_items' PHRASINGS
    "weather": dict(
        names=["get_weather", "weather", "current_weather", "weather_report", "check_weather", "weather_now"],
        descriptions=["Get the current weather in a city.", "Weather and temperature for a place.",
                      "Look up today's weather.", "查询一个城市的天气。", "Tells the weather in a city right now.", "天气查询。"],
        params={"city": ["city", "location", "place"]},
        questions={"en": ["What is the weather in {city}?", "How is the weather in {city} today?", "Is it sunny in {city}?",
                          "Weather in {city}, please.", "Tell me today's weather for {city}.", "Do I need an umbrella in {city}?"],
                   "zh": ["{city}的天气怎么样？", "{city}今天天气好吗？", "{city}现在是晴天吗？", "查一下{city}的天气。",
                          "请告诉我{city}的天气。", "去{city}要带伞吗？"]},
        values={"city": "place"}),
    "time": dict(
        names=["get_time", "current_time", "clock", "time_now", "local_time", "what_time"],
        descriptions=["Get the current local time in a city.", "Tells what time it is in a place.", "查询城市的当地时间。",
                      "The clock time now, anywhere.", "Returns the local time of a city.", "当地时间查询。"],
        params={"city": ["city", "location", "place"]},
        questions={"en": ["What time is it in {city}?", "What is the time in {city} now?", "Tell me the local time in {city}.",
                          "Current time in {city}?", "Is it late in {city} right now?", "What hour is it in {city}?"],
                   "zh": ["{city}现在几点？", "{city}的当地时间是多少？", "查一下{city}现在的时间。", "{city}几点了？",
                          "请告诉我{city}的时间。", "{city}现在是几点钟？"]},
        values={"city": "place"}),
    "translate": dict(
        names=["translate", "translator", "translate_text", "to_language", "say_in", "language_tool"],
        descriptions=["Translate a text into another language.", "Translates words between languages.",
                      "把文字翻译成另一种语言。", "Say a phrase in a foreign language.", "Turn a sentence into a different language.",
                      "翻译工具。"],
        params={"text": ["text", "sentence", "phrase"], "language": ["language", "target_language", "target"]},
        questions={"en": ["Translate '{text}' into {language}.", "How do you say '{text}' in {language}?",
                          "What is '{text}' in {language}?", "'{text}' in {language}, please.",
                          "Can you put '{text}' in {language}?", "I need '{text}' in {language}."],
                   "zh": ["把“{text}”翻译成{language}。", "“{text}”用{language}怎么说？", "“{text}”的{language}是什么？",
                          "请用{language}说“{text}”。", "请将“{text}”译成{language}。", "“{text}”翻成{language}是什么？"]},
        values={"text": "phrase", "language": "language"}),
    "email": dict(
        names=["send_email", "email", "send_message", "write_email", "mail_to", "notify"],
        descriptions=["Send an email to a person.", "Email someone a short message.", "给某人发一封邮件。",
                      "Deliver a message by email.", "Writes a note to someone by mail.", "发送消息。"],
        params={"to": ["to", "recipient", "person"], "message": ["message", "body", "note"]},
        questions={"en": ["Email {to} that {message}.", "Send {to} a message: {message}.", "Tell {to} by email that {message}.",
                          "Write an email to {to}: {message}.", "Let {to} know that {message}.", "Drop {to} a line: {message}."],
                   "zh": ["给{to}发邮件说{message}。", "发邮件告诉{to}：{message}。", "帮我给{to}写信：{message}。",
                          "通知{to}：{message}。", "跟{to}说一声{message}。", "给{to}留个言：{message}。"]},
        values={"to": "person", "message": "message"}),
    "timer": dict(
        names=["set_timer", "timer", "start_timer", "alarm", "countdown", "remind_in"],
        descriptions=["Set a timer for some minutes.", "Start a countdown in minutes.", "设置一个计时器。",
                      "A kitchen timer.", "Rings after the given number of minutes.", "倒计时工具。"],
        params={"minutes": ["minutes", "duration", "length"]},
        questions={"en": ["Set a timer for {minutes} minutes.", "Start a {minutes} minute timer.",
                          "Remind me in {minutes} minutes.", "Timer: {minutes} minutes.", "Ring me after {minutes} minutes.",
                          "Count down {minutes} minutes for me."],
                   "zh": ["设一个{minutes}分钟的计时器。", "{minutes}分钟后提醒我。", "帮我计时{minutes}分钟。", "定时{minutes}分钟。",
                          "{minutes}分钟以后叫我。", "倒计时{minutes}分钟。"]},
        values={"minutes": "minutes"}),
    "search": dict(names=["search_web", "web_search"], descriptions=["Search the web for pages.", "网页搜索。"],
                   params={"query": ["query"]}),
    "music": dict(names=["play_music", "music"], descriptions=["Play songs of a genre.", "播放音乐。"],
                  params={"genre": ["genre"]}),
    "flight": dict(names=["book_flight"], descriptions=["Book a flight between two cities."],
                   params={"origin": ["origin"], "destination": ["destination"]}),
    "stock": dict(names=["stock_price"], descriptions=["The price of a company's stock today."],
                  params={"symbol": ["symbol"]}),
    "currency": dict(names=["convert_currency"], descriptions=["Convert money from one currency to another."],
                     params={"amount": ["amount"], "source": ["source"], "target": ["target"]}),
}
ASKED_KINDS = [k for k in TOOL_KINDS if k == "calculator" or "questions" in TOOL_KINDS[k]]
DISTRACTOR_KINDS = {"train": ["search", "music"], "heldout": ["flight", "stock", "currency"]}  # never asked for
NO_TOOL_REPLY = {"en": "None of the tools I have can do that.", "zh": "我现有的工具做不了这件事。"}
SYSTEM_PROMPTS = ["", "", "You are a helpful assistant.", "Answer briefly.", "你是一个乐于助人的助手。", "Use a tool when it helps."]
TOOL_CASES = {"calculator": 0.45, "other": 0.30, "none": 0.12, "not_offered": 0.13}  # the training mix
WEATHER = ["sunny", "cloudy", "rainy", "windy", "snowy"]


def _of_split(values, split, held=TOOL_HELD_OUT):
    """The training part of a list (all but the last `held`) or its held-out part (those)."""
    return values[:-held] if split == "train" else values[-held:]


MADE_UP_NAMES = 0.5  # of training definitions: a made-up tool name (half of them a prefix on a known one), and
# a made-up parameter name for 1 in 4 parameters: with four names per kind a model memorised them and wrote `calc`
# where the list offered `math_eval`; with names it cannot have seen it must copy the one the list gives


def _made_up_word(rng):
    """Two syllables, or (half the time) 3-8 random letters: with syllables alone the model learned to write
    syllable names, not to copy (offered `math_eval` or `xyz`, it wrote `ashno`), so a name must be copied token by
    token whatever its letters."""
    if rng.random() < 0.5:
        return "".join(rng.choice(_EN_SYLLABLES) for _ in range(2))
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))


def tool_definition(kind, rng, split="train"):
    """One way to define a tool of this kind: (OpenAI tool schema, {role: the parameter's name}). Distractor-only kinds
    have one definition each, whichever the split; in training, MADE_UP_NAMES of the names are made up."""
    spec, asked = TOOL_KINDS[kind], kind in ASKED_KINDS
    pick = (lambda values, held=TOOL_HELD_OUT: rng.choice(_of_split(values, split, held) if asked else values))
    roles = {role: pick(names, 1) for role, names in spec["params"].items()}
    name = pick(spec["names"])
    if split == "train" and rng.random() < MADE_UP_NAMES:
        name = _made_up_word(rng) + ("_" + name if rng.random() < 0.5 else "")
        roles = {role: _made_up_word(rng) if rng.random() < 0.25 else p for role, p in roles.items()}
        if len(set(roles.values())) < len(roles):  # two parameters may not share a name
            roles = {role: pick(names, 1) for role, names in spec["params"].items()}
    types = {"minutes": "integer", "amount": "number"}
    schema = {"type": "function", "function": {
        "name": name, "description": pick(spec["descriptions"]),
        "parameters": {"type": "object", "properties": {p: {"type": types.get(r, "string")} for r, p in roles.items()},
                       "required": list(roles.values())}}}
    return schema, roles


def tool_result(kind, arguments):
    """What a built-in world tool answers (invented, but the same answer for the same arguments): the calculator
    calculates; the others say something a reply can quote."""
    if kind == "calculator":
        return tools.calculate(next(iter(arguments.values()), ""))
    key = zlib.crc32(json.dumps(arguments, sort_keys=True, ensure_ascii=False).encode())
    if kind == "weather":
        return f"{WEATHER[key % len(WEATHER)]}, {key % 31} C"
    if kind == "time":
        return f"{key % 24:02d}:{key % 60:02d}"
    if kind == "translate":
        return f"({key % 900 + 100}) " + " ".join(w[::-1] for w in str(next(iter(arguments.values()))).split())
    if kind == "email":
        return "sent"
    if kind == "timer":
        return "timer started"
    return "done"


def run_offered_call(offered, call):
    """(result, ok) of a parsed call ({"name", "arguments" JSON text}) against the tools a conversation offered
    ({name: (kind, {role: parameter name})}), through tools.run_tool_call (its error texts for an unreadable call, an
    unknown name or arguments that are not a JSON object), and an error for parameters other than the tool's."""
    def function(name, kind, roles):
        def run(arguments):
            if set(arguments) != set(roles.values()):
                return f"error: {name} takes {', '.join(roles.values())}"
            return tool_result(kind, arguments)
        return run
    return tools.run_tool_call(call, {name: function(name, kind, roles) for name, (kind, roles) in offered.items()})


def _tool_reply(kind, values, result, lang):
    """The assistant's answer once the tool has answered."""
    en = {"weather": "The weather in {city}: {r}.", "time": "It is {r} in {city}.",
          "translate": "In {language}: {r}", "email": "Done: I emailed {to}.", "timer": "Your {minutes} minute timer is on."}
    zh = {"weather": "{city}的天气：{r}。", "time": "{city}现在是{r}。", "translate": "{language}：{r}",
          "email": "好的，已经给{to}发了邮件。", "timer": "{minutes}分钟的计时器开始了。"}
    return (en if lang == "en" else zh)[kind].format(r=result, **values)


def tool_use_items(split="train", n=2000, seed=0, definitions=None, cases=None, distractors=(0, 3)):
    """Conversations in which tools are offered (the world above): [{"case", "lang", "tools", "messages" (the user's
    question, with the tool list in a system turn), "call" ({"name", "arguments" dict} the model should make, or None),
    "answer" (a sum's answer, or None), "conversation" (messages + the whole reference answer, tool turn included)}].
    case: 'calculator' (a sum or difference; the calculator is offered), 'other' (a question for another offered tool),
    'none' (a question about the built-in world's facts: no tool needed), 'not_offered' (a question for a tool that
    is not in the list: say so, call nothing). `split` picks the operand pairs, argument values and facts questions;
    `definitions` ('train' or 'heldout', default = split) picks tool names, descriptions, parameter names, question
    wordings and the distractor-only kinds. Each list holds the needed tool (if any) and distractors (their number
    drawn from the `distractors` range), in random order. `cases`: one case for all, or the TOOL_CASES mix."""
    definitions = definitions or split
    rng = random.Random(f"tool use {seed} {split} {definitions}")
    sums = iter(arithmetic_items(split, n, seed, phrasing=definitions, wrap=definitions == "train"))
    facts = [it for it in checkable_prompts(split=split) if it["attr"] != "sum"]
    pool = ASKED_KINDS + DISTRACTOR_KINDS[definitions]
    items = []
    while len(items) < n:
        case = cases or rng.choices(list(TOOL_CASES), weights=list(TOOL_CASES.values()))[0]
        lang, call, answer, values = ("en", "zh")[len(items) % 2], None, None, {}
        if case == "calculator":
            kind, it = "calculator", next(sums)
            lang, question, answer = it["lang"], it["prompt"], it["answer"]
        elif case == "none":
            kind, it = None, rng.choice([f for f in facts if f["lang"] == lang])
            question = it["prompt"]
        else:
            kind = rng.choice([k for k in ASKED_KINDS if k != "calculator"])
            spec = TOOL_KINDS[kind]
            values = {role: tool_value(rng, lang, spec["values"][role], split) for role in spec["params"]}
            question = rng.choice(_of_split(spec["questions"][lang], definitions)).format(**values)
        offered = [] if case in ("none", "not_offered") else [kind]
        others = [k for k in pool if k != kind]
        n_distractors = rng.randint(*distractors)
        offered += rng.sample(others, max(n_distractors, 1 if not offered else 0))
        rng.shuffle(offered)
        defs = {k: tool_definition(k, rng, definitions) for k in offered}
        system = rng.choice(SYSTEM_PROMPTS)
        messages = [{"role": "system", "content": system, "tools": [schema for schema, _ in defs.values()]},
                    {"role": "user", "content": question}]
        if case in ("calculator", "other"):
            schema, roles = defs[kind]
            if kind == "calculator":
                arguments = {roles["expression"]: it["expression"]}
            else:
                arguments = {roles[r]: int(v) if r == "minutes" else v for r, v in values.items()}
            call = {"name": schema["function"]["name"], "arguments": arguments}
            result = tool_result(kind, arguments)
            reply = it["response"] if kind == "calculator" else _tool_reply(kind, values, result, lang)
            wire = {"id": "call_0", "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(arguments, ensure_ascii=False)}}
            conversation = messages + [{"role": "assistant", "content": "", "tool_calls": [wire]},
                                       {"role": "tool", "tool_call_id": "call_0", "content": result},
                                       {"role": "assistant", "content": reply}]
        else:
            reply = it["response"] if case == "none" else NO_TOOL_REPLY[lang]
            conversation = messages + [{"role": "assistant", "content": reply}]
        items.append({"case": case, "lang": lang, "kind": kind, "tools": messages[0]["tools"], "messages": messages,
                      "call": call, "answer": answer, "conversation": conversation,
                      "offered": {schema["function"]["name"]: (k, roles) for k, (schema, roles) in defs.items()}})
    return items


def tool_use_conversations(n=20000, seed=0, multi_turn=0.2):
    """tool_use_items' training conversations; `multi_turn` of them follow an earlier exchange (a question about the
    world's facts and its answer), so the model also finds the tool list a turn back."""
    rng = random.Random(f"tool use turns {seed}")
    items = tool_use_items("train", n, seed)
    chats = [it["conversation"][1:] for it in items if it["case"] == "none"]  # an earlier turn calls no unoffered tool
    convs = []
    for it in items:
        conv = it["conversation"]
        if rng.random() < multi_turn:
            conv = conv[:1] + rng.choice(chats) + conv[1:]
        convs.append(conv)
    return convs

if __name__ == "__main__":
    docs = pretrain_texts()
    print(f"pretraining: {len(docs)} documents, {sum(len(d.encode()) for d in docs) / 1e6:.2f} MB")
    print(f"SFT: {len(sft_conversations())} conversations; preference pairs: {len(preference_pairs())}; "
          f"checkable prompts: {len(checkable_prompts(split='train'))} train, {len(checkable_prompts(split='heldout'))} heldout")
    print("examples:", docs[0][:200], "|", sft_conversations()[0], "|", preference_pairs()[0], sep="\n")
