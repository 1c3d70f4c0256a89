"""eval_benchmarks.py: each task file format is read as lm-evaluation-harness reads it, and every score matches a
plain full-forward computation on a tiny model; bad files give one-line errors naming file:line."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import eval_benchmarks as eb
from model import MiniGPT, MiniGPTConfig
from tokenizer import BPETokenizer
from train_utils import save_checkpoint, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LEN = 48  # short, so long passages are truncated and wikitext needs several windows

PASSAGE = ("The river runs through the old town and under seven stone bridges . The oldest bridge was built "
           "by the monks who lived on the hill , and it still carries carts every market day .")
FILES = {
    "hellaswag_val.jsonl": [
        {"activity_label": "Baking cookies", "ctx": "A man mixes flour and sugar in a bowl. he",
         "endings": ["puts the tray in the oven [title] Wait ten minutes.", "rides a horse.", "sings to the bowl.",
                     "eats   the spoon."], "label": 0},
        {"activity_label": "Fishing", "ctx_a": "A boy sits by the lake.", "ctx_b": "he",
         "endings": ["throws a line into the water.", "paints the sky.", "reads a letter.", "flies away."], "label": "0"}],
    "arc_easy.jsonl": [
        {"query": "Question: Which part of a plant takes in water?", "choices": ["roots", "flowers", "seeds"], "gold": 0},
        {"question": "What do bees make?", "choices": {"text": ["honey", "milk", "silk", "wool"], "label": ["A", "B", "C", "D"]},
         "answerKey": "A"}],
    "arc_challenge.jsonl": [
        {"query": "Question: What gas do plants give off in sunlight?", "choices": ["oxygen", "helium", "neon", "argon"], "gold": 0},
        {"id": "Mercury_1", "question": {"stem": "Which tool measures mass?", "choices": [
            {"text": "a ruler", "label": "A"}, {"text": "a balance", "label": "B"}, {"text": "a clock", "label": "C"}]},
         "answerKey": "B"}],
    "boolq.jsonl": [
        {"query": f"Passage: {PASSAGE}\nQuestion: is the oldest bridge still used?", "choices": ["no", "yes"], "gold": 1},
        {"passage": "Cats sleep most of the day.", "question": "do cats sleep a lot", "answer": True}],
    "piqa_valid.jsonl": [
        {"goal": "How do I dry wet shoes?", "sol1": "Stuff them with newspaper.", "sol2": "Fill them with water."},
        {"goal": "Keep bread fresh", "sol1": "Leave it in the sun.", "sol2": "Store it in a sealed bag."}],
    "winogrande_dev.jsonl": [
        {"sentence": "Sarah was a better cook than Maria so _ made dinner.", "option1": "Sarah", "option2": "Maria", "answer": "1"},
        {"sentence": "The trophy did not fit in the case because the _ was too big.", "option1": "trophy", "option2": "case",
         "answer": "1"}],
    "town_quiz.jsonl": [  # any llm-foundry multiple-choice file is a custom task
        {"query": "How many arches does the Stone Bridge have?", "choices": ["seven", "two"], "gold": 0},
        {"query": "What did the River Mill grind?", "choices": ["stone", "flour"], "gold": 1}],
    "lambada_openai.jsonl": [{"text": "She opened the door and saw her old friend standing in the rain"},
                             {"text": "He looked at the map and pointed at the river"}],
}
PIQA_LABELS = "0\n1\n"
WIKITEXT = (" = Stone Bridge = \n \n The Stone Bridge is a bridge in the old town . It was built in 1 @,@ 200 by monks "
            "who lived on the hill ; it has seven arches . \n \n = = History = = \n \n The bridge carried carts "
            "every market day for eight hundred years , and it is still used . In 1 @,@ 850 a flood took two arches , "
            "and the town rebuilt them in brick ; the new arches are lower than the old ones . \n \n"
            " = River Mill = \n \n The River Mill is a water @-@ powered mill . It ground flour for the town from 1 @,@ 400 "
            "until the railway came ; its wheel turned day and night , and the miller 's family lived above the stones , "
            "where the noise of the wheel never stopped . Today it is a museum with a shop and a small garden . \n")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_bench(tmp_path_factory)


def make_bench(tmp_path_factory):
    """A tiny random MiniGPT run directory and a data folder with every task file in its original format."""
    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    corpus = [PASSAGE, WIKITEXT] + [json.dumps(r) for rows in FILES.values() for r in rows]
    tok = BPETokenizer.train(corpus, 300, verbose=False)
    cfg = MiniGPTConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=MAX_LEN)
    model = MiniGPT(cfg).eval()
    run = root / "run"
    run.mkdir()
    tok.save(str(run / "tokenizer.json"))
    write_json(str(run / "config.json"), {"stage": "test", "model": cfg.to_dict()})
    save_checkpoint(str(run / "ckpt_best.pt"), {"model": model.state_dict(), "model_config": cfg.to_dict()})
    data = root / "eval"
    data.mkdir()
    for name, rows in FILES.items():
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "piqa_valid-labels.lst").write_text(PIQA_LABELS)
    (data / "wikitext2_test_sample.raw").write_text(WIKITEXT)
    return {"run": str(run), "data": str(data), "model": model, "tok": tok}


def reference_ll(model, tok, context, continuation):
    """The harness's loglikelihood written out plainly (with add_bos_token=True): split the tokens as it does, keep
    the last MAX_LEN + 1, one full forward pass, sum the continuation's log-probs."""
    context_ids = [tok.bos_id] + tok.encode(context) if context else [tok.bos_id]
    continuation_ids = ([tok.bos_id] + tok.encode(context + continuation))[len(context_ids):] if context \
        else tok.encode(continuation)
    full = (context_ids + continuation_ids)[-(MAX_LEN + 1):]
    with torch.no_grad():
        logprobs = model(torch.tensor([full[:-1]])).logits[0].log_softmax(-1)
    n = len(continuation_ids)
    return sum(logprobs[len(full) - 1 - n + k, t].item() for k, t in enumerate(continuation_ids))


def items_of(bench, task):
    return eb.load_task(eb.find_task_file(bench["data"], task), task)


def test_hellaswag_is_preprocessed_as_the_harness_does(bench):
    first, second = items_of(bench, "hellaswag")
    # ctx_b ("he") is capitalised as the harness does, also when only the joined ctx is given
    assert first.pairs[0] == ("Baking cookies: A man mixes flour and sugar in a bowl. He", " puts the tray in the oven. Wait ten minutes.")
    assert first.pairs[3][1] == " eats  the spoon."  # one double space collapsed, as the harness's single replace does
    assert second.pairs[0] == ("Fishing: A boy sits by the lake. He", " throws a line into the water.")  # ctx_b capitalised
    assert second.gold == 0


def test_arc_boolq_and_piqa_contexts_end_with_answer(bench):
    arc = items_of(bench, "arc_easy")
    assert arc[0].pairs == [("Question: Which part of a plant takes in water?\nAnswer:", " " + c) for c in ["roots", "flowers", "seeds"]]
    assert arc[1].pairs[0] == ("Question: What do bees make?\nAnswer:", " honey") and arc[1].gold == 0  # Hugging Face layout
    ai2 = items_of(bench, "arc_challenge")[1]  # AI2's original layout
    assert ai2.pairs[1] == ("Question: Which tool measures mass?\nAnswer:", " a balance") and ai2.gold == 1
    boolq = items_of(bench, "boolq")
    assert boolq[0].pairs == [(f"{PASSAGE}\nQuestion: is the oldest bridge still used?\nAnswer:", " no"),
                              (f"{PASSAGE}\nQuestion: is the oldest bridge still used?\nAnswer:", " yes")]
    assert boolq[1].pairs[1] == ("Cats sleep most of the day.\nQuestion: do cats sleep a lot?\nAnswer:", " yes") and boolq[1].gold == 1
    piqa = items_of(bench, "piqa")
    assert piqa[1].pairs[1] == ("Question: Keep bread fresh\nAnswer:", " Store it in a sealed bag.")
    assert [i.gold for i in piqa] == [0, 1]  # from piqa_valid-labels.lst


def test_winogrande_scores_the_shared_suffix_after_each_filled_in_option(bench):
    item = items_of(bench, "winogrande")[0]
    assert item.pairs == [("Sarah was a better cook than Maria so Sarah", " made dinner."),
                          ("Sarah was a better cook than Maria so Maria", " made dinner.")]
    assert item.gold == 0


def test_lambada_predicts_the_last_word(bench):
    assert items_of(bench, "lambada")[0].pairs == [("She opened the door and saw her old friend standing in the", " rain")]


def test_wikitext_is_split_into_articles_and_detokenized(bench):
    pages = [i.pairs[0][1] for i in items_of(bench, "wikitext2")]
    assert len(pages) == 2 and pages[0].startswith(" = Stone Bridge = ") and pages[1].startswith(" = River Mill = ")
    text = eb.wikitext_detokenize(pages[0])
    assert "in 1,200 by monks" in text and "hill; it" in text and "== History ==" in text and "arches.\n" in text
    assert "water-powered" in eb.wikitext_detokenize(pages[1])


def test_rolling_windows_score_every_token_once_with_the_most_context_that_fits():
    tokens = list(range(10, 20))
    assert eb.rolling_windows(tokens, 1, 4) == [([1], [10, 11, 12, 13]), ([13], [14, 15, 16, 17]), ([15, 16, 17], [18, 19])]
    # a stride of 2: after the first window each step adds 2 tokens, read with the 3 before them
    assert eb.rolling_windows(tokens, 1, 4, stride=2) == [([1], [10, 11, 12, 13]), ([11, 12, 13], [14, 15]),
                                                          ([13, 14, 15], [16, 17]), ([15, 16, 17], [18, 19])]
    for stride in (1, 2, 3, 4):
        windows = eb.rolling_windows(tokens, 1, 4, stride)
        assert [t for _, cont in windows for t in cont] == tokens  # every token once, in order
        assert all(len(c) + len(x) - 1 <= 4 for c, x in windows)  # what the model reads fits its window


@pytest.mark.parametrize("task", ["hellaswag", "arc_easy", "arc_challenge", "boolq", "piqa", "winogrande", "lambada", "town_quiz"])
@pytest.mark.parametrize("share_context", [True, False], ids=["shared-context", "one-pass-each"])
def test_scores_match_a_plain_full_forward_reference(bench, task, share_context):
    items = items_of(bench, task)
    result = eb.evaluate_task(eb.our_scorer(bench["run"]), task, items, batch_size=3, share_context=share_context, progress=False)
    reference = [[reference_ll(bench["model"], bench["tok"], c, x) for c, x in item.pairs] for item in items]
    for got, want in zip(result["lls"], reference):
        assert got == pytest.approx(want, abs=1e-4)
    if task == "lambada":
        assert result["metrics"]["perplexity"][0] == pytest.approx(math.exp(-sum(r[0] for r in reference) / len(items)), rel=1e-4)
        return
    acc = sum(max(range(len(r)), key=r.__getitem__) == item.gold for r, item in zip(reference, items)) / len(items)
    assert result["metrics"]["acc"][0] == acc
    if task not in eb.NO_ACC_NORM:
        norm = [[ll / len(choice) for ll, choice in zip(r, item.choices)] for r, item in zip(reference, items)]
        acc_norm = sum(max(range(len(n)), key=n.__getitem__) == item.gold for n, item in zip(norm, items)) / len(items)
        assert result["metrics"]["acc_norm"][0] == acc_norm
    assert result["chance"]["acc"] == pytest.approx(sum(1 / len(i.pairs) for i in items) / len(items))


def test_boolq_passage_longer_than_the_window_is_cut_from_the_left(bench):
    scorer = eb.our_scorer(bench["run"])
    context, continuation = items_of(bench, "boolq")[0].pairs[1]
    context_ids, continuation_ids = scorer.fit(*scorer.encode_pair(context, continuation))
    assert len(scorer.encode(context)) > MAX_LEN  # the test passage really is too long
    assert len(context_ids) + len(continuation_ids) == MAX_LEN + 1 and continuation_ids == scorer.encode(context + continuation)[-len(continuation_ids):]


def test_wikitext_bits_per_byte_sums_every_token_over_the_pages_bytes(bench):
    items = items_of(bench, "wikitext2")
    result = eb.evaluate_task(eb.our_scorer(bench["run"]), "wikitext2", items, batch_size=2, progress=False)
    model, tok = bench["model"], bench["tok"]
    total = 0.0
    for item in items:  # disjoint blocks of MAX_LEN predicted tokens, each read with the MAX_LEN tokens before its end
        seq = [tok.bos_id] + tok.encode(eb.wikitext_detokenize(item.pairs[0][1]))
        assert len(seq) > 2 * MAX_LEN + 1  # three windows, the last one partial
        for start in range(0, len(seq) - 1, MAX_LEN):
            end = min(start + MAX_LEN, len(seq) - 1)
            window = seq[max(0, end - MAX_LEN):end]
            with torch.no_grad():
                logprobs = model(torch.tensor([window])).logits[0].log_softmax(-1)
            predicted = seq[start + 1:end + 1]
            total += sum(logprobs[len(window) - len(predicted) + k, t].item() for k, t in enumerate(predicted))
    n_bytes = sum(len(i.pairs[0][1].encode()) for i in items)
    assert result["metrics"]["bits_per_byte"][0] == pytest.approx(-total / n_bytes / math.log(2), rel=1e-5)
    n_words = sum(len(i.pairs[0][1].split()) + 2 for i in items)  # re.split(r"\s+") also counts the empty ends
    assert result["metrics"]["word_perplexity"][0] == pytest.approx(math.exp(-total / n_words), rel=1e-4)


def test_shared_context_runs_fewer_tokens_than_one_pass_per_choice(bench):
    items = items_of(bench, "boolq")
    shared, each = eb.our_scorer(bench["run"]), eb.our_scorer(bench["run"])
    eb.evaluate_task(shared, "boolq", items, share_context=True, progress=False)
    eb.evaluate_task(each, "boolq", items, share_context=False, progress=False)
    assert shared.tokens < 0.6 * each.tokens


def test_custom_task_is_scored_as_space_then_choice_after_the_query(bench):
    items = items_of(bench, "town_quiz")
    assert items[1].pairs == [("What did the River Mill grind?", " stone"), ("What did the River Mill grind?", " flour")]
    assert eb.custom_tasks(bench["data"]) == ["town_quiz"]  # the known tasks' files are not picked up twice


def test_a_smaller_wikitext_stride_gives_more_context_and_a_different_score(bench):
    items = items_of(bench, "wikitext2")
    disjoint = eb.evaluate_task(eb.our_scorer(bench["run"]), "wikitext2", items, progress=False)
    strided = eb.evaluate_task(eb.our_scorer(bench["run"]), "wikitext2", items, progress=False, stride=MAX_LEN // 4)
    assert strided["tokens"] > 3 * disjoint["tokens"]
    assert strided["metrics"]["bits_per_byte"][0] != pytest.approx(disjoint["metrics"]["bits_per_byte"][0], rel=1e-6)


def test_cli_prints_the_table_and_writes_results_next_to_the_checkpoint(bench, capsys):
    report = eb.main(["--checkpoint", bench["run"], "--data-dir", bench["data"], "--batch-size", "4"])
    table = capsys.readouterr().out
    assert "chance" in table and "stderr" in table and "tokens/s" in table
    assert "town_quiz" in report["results"]
    for task in eb.TASKS:
        assert task in table and task in report["results"]
    saved = [f for f in os.listdir(bench["run"]) if f.startswith("benchmark_results_")]
    assert len(saved) == 1
    with open(os.path.join(bench["run"], saved[0])) as f:
        assert json.load(f)["results"]["winogrande"]["metrics"]["acc"]["chance"] == 0.5


def test_cli_tasks_and_limit_pick_a_subset(bench, tmp_path):
    out = str(tmp_path / "r.json")
    report = eb.main(["--checkpoint", bench["run"], "--data-dir", bench["data"], "--tasks", "piqa", "lambada",
                      "--limit", "1", "--out", out])
    assert set(report["results"]) == {"piqa", "lambada"} and report["results"]["piqa"]["n"] == 1
    assert os.path.isfile(out)


def test_a_named_task_without_its_file_says_which_names_were_looked_for(bench, tmp_path):
    with pytest.raises(FileNotFoundError, match="no file for task hellaswag .looked for hellaswag_val.jsonl"):
        eb.main(["--checkpoint", bench["run"], "--data-dir", str(tmp_path), "--tasks", "hellaswag"])


BAD = [
    ("hellaswag", "hellaswag_val.jsonl", [FILES["hellaswag_val.jsonl"][0], {"activity_label": "x", "ctx": "y", "label": 0}],
     r"hellaswag_val.jsonl:2: missing field 'endings'"),
    ("hellaswag", "hellaswag_val.jsonl", [{**FILES["hellaswag_val.jsonl"][0], "label": 7}],
     r"hellaswag_val.jsonl:1: field 'label' is 7, expected an index 0..3"),
    ("winogrande", "winogrande_dev.jsonl", [{**FILES["winogrande_dev.jsonl"][0], "answer": "3"}],
     r"winogrande_dev.jsonl:1: field 'answer' is '3'"),
    ("arc_easy", "arc_easy.jsonl", [{"query": "Question: ?", "choices": "abc", "gold": 0}],
     r"arc_easy.jsonl:1: field 'choices' should be a non-empty list of strings"),
    ("boolq", "boolq.jsonl", [{"query": "Passage: p\nQuestion: q?", "choices": ["no", "yes"], "gold": "yes"}],
     r"boolq.jsonl:1: field 'gold' is 'yes', expected an index 0..1"),
    ("lambada", "lambada_openai.jsonl", ['{"text": "a b"}', '{"text": "broken'], r"lambada_openai.jsonl:2: invalid JSON"),
    ("arc_challenge", "arc_challenge.jsonl", [{"question": {"stem": "q", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "Z"}],
     r"arc_challenge.jsonl:1: field 'answerKey' is 'Z', not one of \['A'\]"),
    ("boolq", "boolq.jsonl", [{"passage": "p", "question": "q", "answer": "yes"}], r"boolq.jsonl:1: field 'answer' should be bool, got str"),
]


@pytest.mark.parametrize("task,name,rows,message", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_task_files_name_the_file_line_and_field(tmp_path, task, name, rows, message):
    (tmp_path / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    with pytest.raises(eb.DataError, match=message):
        eb.load_task(str(tmp_path / name), task)


def test_piqa_label_file_with_a_bad_label_names_its_line(tmp_path):
    (tmp_path / "piqa_valid.jsonl").write_text(json.dumps(FILES["piqa_valid.jsonl"][0]) + "\n")
    (tmp_path / "piqa_valid-labels.lst").write_text("2\n")
    with pytest.raises(eb.DataError, match=r"piqa_valid-labels.lst:1: field 'label' is 2"):
        eb.load_task(str(tmp_path / "piqa_valid.jsonl"), "piqa")


def test_a_folder_without_task_files_says_what_names_it_expects(bench, tmp_path):
    with pytest.raises(FileNotFoundError, match="no task files .expected names such as wikitext2_test_sample.raw"):
        eb.main(["--checkpoint", bench["run"], "--data-dir", str(tmp_path)])


def test_the_command_line_reports_a_bad_file_in_one_line(bench, tmp_path):
    (tmp_path / "winogrande_dev.jsonl").write_text('{"sentence": "no blank here", "option1": "a", "option2": "b", "answer": "1"}\n')
    r = subprocess.run([sys.executable, "eval_benchmarks.py", "--checkpoint", bench["run"], "--data-dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path}/winogrande_dev.jsonl:1: field 'sentence' has no '_' blank"]
    (tmp_path / "winogrande_dev.jsonl").unlink()
    r = subprocess.run([sys.executable, "eval_benchmarks.py", "--checkpoint", bench["run"], "--data-dir", bench["data"],
                        "--tasks", "piqa", "--limit", "1", "--out", str(tmp_path / "winogrande_dev.jsonl.gone" / "r.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0  # --out's folder is made
    (tmp_path / "a_file").write_text("")
    r = subprocess.run([sys.executable, "eval_benchmarks.py", "--checkpoint", bench["run"], "--data-dir", bench["data"],
                        "--tasks", "piqa", "--limit", "1", "--out", str(tmp_path / "a_file" / "r.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)  # a file in --out's way: was a traceback
    assert r.returncode != 0 and r.stderr.strip() == f"error: {tmp_path / 'a_file'}: a file is in the way of a folder", r.stderr


def test_an_exported_model_scores_identically_through_transformers(bench, tmp_path):
    pytest.importorskip("transformers", reason="optional: pip install -r requirements-extras.txt")
    pytest.importorskip("safetensors", reason="optional: pip install -r requirements-extras.txt")
    from export_hf import export
    hf_dir = export(bench["run"], str(tmp_path / "hf"))
    ours, theirs = eb.our_scorer(bench["run"]), eb.hf_scorer(hf_dir)
    for task in [*eb.TASKS, "town_quiz"]:
        items = items_of(bench, task)
        a = eb.evaluate_task(ours, task, items, batch_size=3, progress=False)
        b = eb.evaluate_task(theirs, task, items, batch_size=3, progress=False)
        for x, y in zip(a["lls"], b["lls"]):
            assert x == pytest.approx(y, abs=1e-4), task
        for name, (value, _) in a["metrics"].items():
            assert value == pytest.approx(b["metrics"][name][0], rel=1e-4), (task, name)
    with pytest.raises(FileNotFoundError, match="no config.json; --hf takes a Hugging Face model folder"):
        eb.hf_scorer(str(tmp_path))  # not a model folder: transformers' own message is a paragraph on tokenizers


def test_download_fetches_missing_files_and_unpacks_zip_members(bench, tmp_path, monkeypatch):
    import zipfile
    source = tmp_path / "source"
    source.mkdir()
    (source / "hs.jsonl").write_text(json.dumps(FILES["hellaswag_val.jsonl"][1]) + "\n")
    with zipfile.ZipFile(source / "wg.zip", "w") as z:
        z.writestr("winogrande_1.1/dev.jsonl", json.dumps(FILES["winogrande_dev.jsonl"][0]) + "\n")
    monkeypatch.setattr(eb, "DOWNLOADS", {
        "hellaswag": [((source / "hs.jsonl").as_uri(), None, "hellaswag_val.jsonl")],
        "winogrande": [((source / "wg.zip").as_uri(), "winogrande_1.1/dev.jsonl", "winogrande_dev.jsonl")],
        "piqa": [((source / "missing.jsonl").as_uri(), None, "piqa_valid.jsonl")]})
    data = tmp_path / "eval"
    eb.download(["hellaswag", "winogrande"], str(data))
    assert sorted(os.listdir(data)) == ["hellaswag_val.jsonl", "winogrande_dev.jsonl"]
    assert eb.load_task(str(data / "winogrande_dev.jsonl"), "winogrande")[0].gold == 0
    with pytest.raises(FileNotFoundError, match="could not download piqa_valid.jsonl for piqa .*place it in"):
        eb.download(["piqa"], str(data))


def test_nothing_is_fetched_without_download(bench, monkeypatch, tmp_path):
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("network used")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    eb.main(["--checkpoint", bench["run"], "--data-dir", bench["data"], "--tasks", "lambada", "--out", str(tmp_path / "r.json")])


def test_wikitext_with_crlf_line_endings_reads_as_the_lf_copy(bench, tmp_path):
    """A CRLF copy of wiki.test.raw was one page (n=1) with the \\r in the text and the counts."""
    (tmp_path / "wiki.test.raw").write_bytes(WIKITEXT.replace("\n", "\r\n").encode())
    crlf = [i.pairs[0][1] for i in eb.load_task(str(tmp_path / "wiki.test.raw"), "wikitext2")]
    lf = [i.pairs[0][1] for i in items_of(bench, "wikitext2")]
    assert crlf == lf and len(lf) == 2 and not any("\r" in page for page in crlf)


def test_wikitext_pages_are_joined_as_the_official_document_level_loader_does(bench):
    pages = [i.pairs[0][1] for i in items_of(bench, "wikitext2")]
    assert pages[0].startswith(" = Stone Bridge = \n \n The Stone Bridge") and pages[0].endswith("lower than the old ones . \n ")
    assert pages[1].startswith(" = River Mill = ") and pages[1].endswith("a small garden . \n")  # the file's last newline


def test_an_answer_longer_than_the_context_is_counted_and_warned_about(bench, tmp_path, capsys):
    rows = [{"goal": "How do I fold a map?", "sol1": " ".join(["fold it along the lines again"] * 20), "sol2": "Crumple it."}]
    (tmp_path / "piqa_valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "piqa_valid-labels.lst").write_text("0\n")
    result = eb.evaluate_task(eb.our_scorer(bench["run"]), "piqa", eb.load_task(str(tmp_path / "piqa_valid.jsonl"), "piqa"),
                              progress=False)
    assert result["answers_longer_than_context"] == 1
    assert f"piqa: 1 of 1 items have an answer longer than the model's {MAX_LEN}-token context" in capsys.readouterr().out


@pytest.fixture(scope="module")
def harness(bench, tmp_path_factory):
    """lm-evaluation-harness's HFLM on the bench model exported to a Hugging Face folder, for each add_bos_token."""
    pytest.importorskip("lm_eval", reason="optional: pip install -r requirements-extras.txt")
    pytest.importorskip("safetensors", reason="optional: pip install -r requirements-extras.txt")
    from lm_eval.models.huggingface import HFLM

    from export_hf import export
    hf_dir = export(bench["run"], str(tmp_path_factory.mktemp("hf")))
    return {bos: HFLM(pretrained=hf_dir, device="cpu", batch_size=4, add_bos_token=bos) for bos in (True, False)}


def harness_requests(kind, arguments):
    from lm_eval.api.instance import Instance
    return [Instance(request_type=kind, doc={}, arguments=args, idx=0) for args in arguments]


@pytest.mark.parametrize("task", ["hellaswag", "arc_easy", "arc_challenge", "boolq", "piqa", "winogrande", "lambada", "town_quiz"])
def test_loglikelihoods_equal_lm_evaluation_harness_with_add_bos_token(bench, harness, task):
    """Our rule (every context starts with <|im_start|>, as training documents do) is the harness's add_bos_token=True,
    which is also its default on an export_hf.py folder: the same log-likelihood for every (context, answer)."""
    items = items_of(bench, task)
    ours = eb.evaluate_task(eb.our_scorer(bench["run"]), task, items, batch_size=3, progress=False)["lls"]
    pairs = [p for item in items for p in item.pairs]
    theirs = iter(ll for ll, _ in harness[True].loglikelihood(harness_requests("loglikelihood", pairs), disable_tqdm=True))
    for item, lls in zip(items, ours):
        assert lls == pytest.approx([next(theirs) for _ in item.pairs], abs=1e-4)


def test_wikitext_page_loglikelihoods_equal_lm_evaluation_harness_rolling(bench, harness):
    """WikiText: each page's tokens after the <|im_start|> prefix, in disjoint windows. The harness does exactly that
    with add_bos_token=False; with True it puts a second <|im_start|> in the page and scores p(BOS | BOS) as well."""
    items = items_of(bench, "wikitext2")
    ours = eb.evaluate_task(eb.our_scorer(bench["run"]), "wikitext2", items, progress=False)["lls"]
    pages = [(eb.wikitext_detokenize(item.pairs[0][1]),) for item in items]
    theirs = harness[False].loglikelihood_rolling(harness_requests("loglikelihood_rolling", pages), disable_tqdm=True)
    assert ours == pytest.approx(theirs, abs=1e-3)
