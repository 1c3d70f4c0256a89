"""GRPO: group-relative advantages, the four loss normalisations as TRL names them, the checked rewards, and the
loop end to end (TRL's metric names, exact resume, one-line errors)."""
import json
import os
import re

import pytest
import torch

import builtin_data
import train_grpo
from conftest import FAST, torchrun


def test_advantages_are_each_answer_against_its_own_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # two prompts, G = 4
    advantages, std = train_grpo.group_advantages(rewards, 4, scale=False)
    assert advantages.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0])
    assert std.tolist() == pytest.approx([0.5, 0.0])  # the second group all right: no signal from it
    scaled, _ = train_grpo.group_advantages(rewards, 4)
    assert scaled[:4].tolist() == pytest.approx([0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001], rel=1e-4)


def loss_args(loss_type, epsilon_high=0.2, beta=0.0):
    import argparse
    return argparse.Namespace(loss_type=loss_type, epsilon=0.2, epsilon_high=epsilon_high, beta=beta)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "cispo"])
def test_each_loss_type_normalises_as_trl_and_micro_batches_add_up(loss_type):
    torch.manual_seed(0)
    N, T = 6, 5
    logprobs = torch.randn(N, T).clamp(max=0).requires_grad_()
    advantages = torch.randn(N)
    mask = (torch.arange(T)[None, :] < torch.tensor([5, 3, 4, 1, 2, 5])[:, None]).float()
    args = loss_args(loss_type, epsilon_high=5.0 if loss_type == "cispo" else 0.2)
    normalizer = {"grpo": N, "dr_grpo": N * T}.get(loss_type, mask.sum())
    whole, _ = train_grpo.grpo_loss(logprobs, logprobs.detach(), advantages, mask, args, normalizer)
    # first iteration: ratio 1, so the per-token loss is -A (or -A log pi for cispo)
    per_token = -advantages[:, None] * (logprobs.detach() if loss_type == "cispo" else torch.ones(N, T))
    expected = {"grpo": ((per_token * mask).sum(-1) / mask.sum(-1)).mean(),  # per answer, then over answers
                "dr_grpo": (per_token * mask).sum() / (N * T),              # by the longest possible answers
                "dapo": (per_token * mask).sum() / mask.sum(),               # per token over the batch
                "cispo": (per_token * mask).sum() / mask.sum()}[loss_type]
    assert whole.item() == pytest.approx(expected.item(), rel=1e-5)
    parts = sum(train_grpo.grpo_loss(logprobs[s], logprobs[s].detach(), advantages[s], mask[s], args, normalizer)[0]
                for s in (slice(0, 2), slice(2, 6)))
    assert parts.item() == pytest.approx(whole.item(), rel=1e-5)


def test_the_clip_stops_the_gradient_only_where_the_ratio_left_the_trust_region_in_the_advantage_s_direction():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
    logprobs = torch.log(torch.tensor([[0.5, 0.8, 0.8, 0.2]])).requires_grad_()  # ratios 1, 1.6, 1.6, 0.4
    mask = torch.ones(1, 4)
    for advantage, clipped_tokens in ((1.0, [1, 2]), (-1.0, [3])):
        logprobs.grad = None
        loss, clipped = train_grpo.grpo_loss(logprobs, old, torch.tensor([advantage]), mask, loss_args("dapo"), 4)
        loss.backward()
        assert clipped.item() == len(clipped_tokens)
        assert [i for i in range(4) if logprobs.grad[0, i] == 0] == clipped_tokens
    logprobs.grad = None  # cispo clips the weight, not the gradient: every token still learns
    loss, _ = train_grpo.grpo_loss(logprobs, old, torch.tensor([1.0]), mask, loss_args("cispo", epsilon_high=1.2), 4)
    loss.backward()
    assert (logprobs.grad != 0).all()


def test_the_kl_term_is_zero_at_the_reference_and_positive_away_from_it():
    logprobs = torch.log(torch.tensor([[0.5, 0.25]]))
    args = loss_args("dapo", beta=1.0)
    zero = torch.zeros(1)  # no advantage: only the KL term is left
    at_ref, _ = train_grpo.grpo_loss(logprobs, logprobs, zero, torch.ones(1, 2), args, 2, ref_logprobs=logprobs)
    away, _ = train_grpo.grpo_loss(logprobs, logprobs, zero, torch.ones(1, 2), args, 2, ref_logprobs=logprobs - 0.5)
    assert at_ref.item() == 0 and away.item() == pytest.approx(torch.exp(torch.tensor(-0.5)).item() + 0.5 - 1, rel=1e-5)


def test_checked_rewards_do_not_pay_for_an_answer_hidden_in_a_list():
    assert builtin_data.check_answer_strictly("Mira lives in Oakvale.", "Oakvale") == 1.0
    assert builtin_data.check_answer_strictly("Mira lives in Oakvale or Riverton.", "Oakvale") == 0.0
    assert builtin_data.check_answer("Mira lives in Oakvale or Riverton.", "Oakvale") == 1.0  # the lenient one would
    assert builtin_data.check_answer_strictly("345 plus 12 is 357.", "357") == 1.0
    assert builtin_data.check_answer_strictly("357, 358, 359", "357") == 0.0
    assert builtin_data.check_answer_strictly("米拉住在橡谷。", "橡谷") == 1.0
    # no word boundaries in Chinese: 猫 (cat) is inside 猫头鹰 (owl); a right owl answer once scored 0
    assert builtin_data.check_answer_strictly("朱诺是一只猫头鹰。", "猫头鹰") == 1.0
    assert builtin_data.check_answer_strictly("朱诺是一只猫头鹰。", "猫") == 0.0
    assert builtin_data.check_answer_strictly("朱诺是一只猫。", "猫头鹰") == 0.0
    assert train_grpo.format_reward("Mira lives in Oakvale.", True) == 1.0
    assert train_grpo.format_reward("Mira lives in Oakvale. Pip too.", True) == 0.0
    assert train_grpo.format_reward("Mira lives in Oakvale.", False) == 0.0  # never finished its turn


def test_arithmetic_prompts_are_made_on_the_fly_with_their_sums():
    items = builtin_data.arithmetic_prompts(n=50)
    assert {it["lang"] for it in items} == {"en", "zh"}
    for it in items:
        x, y = map(int, __import__("re").findall(r"\d+", it["prompt"]))
        assert 10 <= x < 1000 and 10 <= y < 1000 and it["answer"] == str(x + y)


@pytest.mark.parametrize("spec,low,high", [("arithmetic", 10, 999), ("arithmetic-1", 1, 9), ("arithmetic-1-2", 1, 99)])
def test_data_arithmetic_names_the_digits_of_its_numbers(spec, low, high):
    from data import DataError, load_datasets
    train, val, _ = load_datasets([spec], "prompt")
    numbers = [int(n) for r in train + val for n in re.findall(r"\d+", r["prompt"][0]["content"])]
    assert min(numbers) == low and max(numbers) == high and len(val) == 200  # 5% of 4,000 held out
    with pytest.raises(DataError, match="prompts with answers"):
        load_datasets([spec], "chat")


def rows(d):
    return [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]


GRPO = FAST + ["--prompts-per-step", "2", "--num-generations", "4", "--max-new-tokens", "6", "--eval-batch", "4",
               "--micro-batch", "3"]


def test_grpo_run_logs_trl_s_metrics_and_resumes_exactly(stage_dirs, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = GRPO + ["--init-from", stage_dirs["sft"], "--eval-interval", "2", "--lr-decay-steps", "4", "--beta", "0.04",
                     "--num-iterations", "2"]
    train_grpo.main(common + ["--max-steps", "4", "--out-dir", a])
    train_grpo.main(common + ["--max-steps", "2", "--out-dir", b])
    train_grpo.main(common + ["--max-steps", "4", "--out-dir", b, "--resume"])
    trained = [r for r in rows(a) if "reward" in r]
    assert len(trained) == 4
    assert {"loss", "reward", "reward_std", "frac_reward_zero_std", "completions/mean_length", "kl", "clip_ratio",
            "entropy", "rewards/correct/mean", "rewards/format/mean", "accuracy"} <= set(trained[0])
    assert {"val_reward", "val_accuracy", "val_strict_accuracy"} <= set(rows(a)[0])
    key = lambda d: {r["step"]: (r["loss"], r["reward"]) for r in rows(d) if "reward" in r}  # noqa: E731
    assert key(a) == key(b)


def test_micro_batches_hold_every_answer_once_shortest_first():
    mask = torch.zeros(5, 10)
    for row, last in enumerate([9, 2, 6, 4, 7]):
        mask[row, 1:last + 1] = 1  # row 0 ends at column 9, row 1 at column 2, ...
    groups = [g.tolist() for g in train_grpo.micro_batches(mask, 2)]
    assert groups == [[1, 3], [2, 4], [0]]


def test_micro_batches_of_answers_sorted_by_length_give_the_whole_batch_s_update(stage_dirs, tmp_path):
    """The loop trains in micro-batches of answers of similar lengths (less padding): 8 answers 3 at a time take
    the same steps as all 8 at once."""
    common = GRPO + ["--init-from", stage_dirs["sft"], "--max-steps", "3", "--eval-interval", "3"]
    for mb in ("3", "8"):
        train_grpo.main(common + ["--micro-batch", mb, "--out-dir", str(tmp_path / mb)])
    losses = [[r[k] for r in rows(tmp_path / mb) if "loss" in r for k in ("loss", "grad_norm")] for mb in ("3", "8")]
    assert len(losses[0]) == 6 and losses[0][1] > 0.1 and losses[0] == pytest.approx(losses[1], rel=1e-4, abs=1e-6)


def test_answers_whose_group_scored_the_same_are_not_run_and_the_update_is_unchanged(stage_dirs, tmp_path, monkeypatch):
    """Without a KL term an answer with advantage 0 adds nothing to the gradient: the loop runs only the others and
    takes the same steps as when it runs every answer (and every answer runs when there is a KL term)."""
    assert train_grpo.answers_to_run(torch.tensor([0.5, 0.0, -0.5]), every=False).tolist() == [0, 2]
    assert train_grpo.answers_to_run(torch.tensor([0.5, 0.0, -0.5]), every=True).tolist() == [0, 1, 2]
    run_rows = []
    real = train_grpo.answer_logprobs
    monkeypatch.setattr(train_grpo, "answer_logprobs", lambda model, x, *a: run_rows.append(len(x)) or real(model, x, *a))
    common = GRPO + ["--init-from", stage_dirs["sft"], "--max-steps", "4", "--eval-interval", "4", "--eval-batch", "1"]
    train_grpo.main(common + ["--out-dir", str(tmp_path / "skip")])
    skipped_run = sum(run_rows)
    monkeypatch.setattr(train_grpo, "answers_to_run", lambda advantages, every: torch.arange(len(advantages)))
    run_rows.clear()
    train_grpo.main(common + ["--out-dir", str(tmp_path / "every")])
    every_run = sum(run_rows)
    steps = [[r[k] for r in rows(tmp_path / d) if "loss" in r for k in ("loss", "grad_norm")] for d in ("skip", "every")]
    zero_std = [r["frac_reward_zero_std"] for r in rows(tmp_path / "every") if "loss" in r]
    assert len(steps[0]) == 8 and max(steps[0]) > 0.1 and 0 < sum(zero_std) < 4  # some groups scored alike, some not
    assert 1.0 in zero_std  # and a step where every group did, so no answer ran
    assert steps[0] == pytest.approx(steps[1], rel=1e-4, abs=1e-6)
    # the weights too: a step where no answer runs still moves AdamW by its moments, as a zero gradient does
    weights = [torch.load(tmp_path / d / "ckpt_latest.pt", weights_only=True)["model"] for d in ("skip", "every")]
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in weights[1])
    assert skipped_run < every_run


def test_the_loss_plot_is_drawn_at_most_every_30_s_and_at_the_last_eval(stage_dirs, tmp_path, monkeypatch):
    """Drawing the plot costs ~0.5 s: with an eval at every step of a short run it is drawn at the first eval and at
    the last (with what the run logged), not at the evals between."""
    drawn = []
    monkeypatch.setattr(train_grpo.tu, "plot_metrics", lambda dirs, path, keys: drawn.append(len(rows(dirs[0]))))
    out = str(tmp_path / "plotted")
    flags = [f for f in GRPO if f != "--no-plot"]
    train_grpo.main(flags + ["--init-from", stage_dirs["sft"], "--max-steps", "3", "--eval-interval", "1", "--out-dir", out])
    assert len(drawn) == 2 and drawn[-1] == len(rows(out))  # step 0 and step 3, the last with every row logged


def test_compiled_sampling_gives_the_rollouts_of_eager_sampling(stage_dirs, tmp_path, capsys, monkeypatch):
    """--compile-sampling: the same greedy held-out answers and the same first batch of sampled answers (the sampler
    and its seeded RNG sit outside the compiled step), with the compiled step really used."""
    made = []

    class Recorded(train_grpo.TextGenerator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(train_grpo, "TextGenerator", Recorded)
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile-sampling"])):
        out = str(tmp_path / name)
        train_grpo.main(GRPO + ["--init-from", stage_dirs["sft"], "--max-steps", "2", "--eval-interval", "2",
                                "--out-dir", out, *extra])
        runs[name] = rows(out)
    assert "torch.compile failed" not in capsys.readouterr().err
    assert [g.step is not None and g.step_ran for g in made] == [False, True]
    first = {name: (r[0]["val_reward"], [x for x in r if "reward" in x][0]["reward"]) for name, r in runs.items()}
    assert first["compiled"] == first["eager"]


def test_grpo_on_arithmetic_and_each_loss_type(stage_dirs, tmp_path):
    for loss_type in ("dr_grpo", "dapo", "cispo"):
        out = str(tmp_path / loss_type)
        train_grpo.main(GRPO + ["--init-from", stage_dirs["sft"], "--data", "arithmetic", "--max-steps", "1",
                                "--eval-interval", "1", "--loss-type", loss_type, "--out-dir", out])
        config = json.load(open(os.path.join(out, "config.json")))["args"]
        assert config["scale_rewards"] == ("none" if loss_type == "dr_grpo" else "group")
        assert config["epsilon_high"] == (5.0 if loss_type == "cispo" else 0.2)
        assert any("reward" in r for r in rows(out))


def test_grpo_runs_with_a_likelihood_reward_model_as_its_only_reward(stage_dirs, tmp_path):
    """--rewards model: each sampled answer's reward is the reward model's (head + the reply's likelihood, which
    needs where each reply starts)."""
    out = str(tmp_path / "rm")
    train_grpo.main(GRPO + ["--init-from", stage_dirs["sft"], "--rewards", "model", "--reward-model", stage_dirs["reward"],
                            "--max-steps", "1", "--eval-interval", "1", "--out-dir", out])
    trained = [r for r in rows(out) if "reward" in r]
    assert "rewards/model/mean" in trained[0] and trained[0]["reward"] == pytest.approx(trained[0]["rewards/model/mean"])


def test_grpo_partial_credit_rewards_add_up_with_their_default_weights(stage_dirs, tmp_path):
    """--rewards digits restate columns (the footholds measured for 3-digit sums): each answer's reward is
    builtin_data.digit_credit + 0.25 x restate_credit + 0.5 x column_credit, each logged."""
    out = str(tmp_path / "digits")
    train_grpo.main(GRPO + ["--init-from", stage_dirs["sft"], "--data", "arithmetic-think-1-2", "--rewards", "digits",
                            "restate", "columns", "--max-steps", "1", "--eval-interval", "1", "--out-dir", out])
    trained = [r for r in rows(out) if "reward" in r][0]
    parts = [trained[f"rewards/{name}/mean"] for name in ("digits", "restate", "columns")]
    assert all(0 <= p <= 1 for p in parts) and trained["reward"] == pytest.approx(parts[0] + 0.25 * parts[1] + 0.5 * parts[2])


def test_grpo_inspect_shows_one_group_with_rewards_and_advantages(stage_dirs, tmp_path, capsys):
    train_grpo.main(GRPO + ["--init-from", stage_dirs["sft"], "--out-dir", str(tmp_path / "i"), "--inspect"])
    out = capsys.readouterr().out
    assert "group std" in out and out.count("\n") >= 4 + 2 and "exiting (--inspect)" in out


@pytest.mark.parametrize("flags,message", [
    (["--num-generations", "1"], "--num-generations must be at least 2, got 1"),
    (["--rewards", "correct", "format", "--reward-weights", "1"], "--reward-weights: 1 weights for 2 --rewards"),
    (["--rewards", "model"], "--rewards model needs --reward-model DIR"),
    (["--epsilon", "0"], "--epsilon must be above 0, got 0.0"),
])
def test_bad_grpo_flags_are_one_line_errors(stage_dirs, flags, message):
    with pytest.raises(ValueError, match=message):
        train_grpo.parse_args(["--init-from", stage_dirs["sft"], *flags])


def test_grpo_runs_under_torchrun_with_two_processes(stage_dirs, tmp_path):
    out = str(tmp_path / "ddp")
    torchrun("train_grpo.py", [*GRPO, "--init-from", stage_dirs["sft"], "--max-steps", "2", "--eval-interval", "2",
                               "--num-threads", "1", "--device", "cpu", "--out-dir", out])
    trained = [r for r in rows(out) if "reward" in r]
    assert [r["step"] for r in trained] == [1, 2] and all(0 <= r["frac_reward_zero_std"] <= 1 for r in trained)
    assert os.path.isfile(os.path.join(out, "ckpt_latest.pt"))


def test_tool_rollouts_run_the_calculator_and_train_only_the_model_s_tokens(memorized, tmp_path):
    from tiny_runs import TOOL_QUESTION
    prompts = tmp_path / "q.jsonl"
    prompts.write_text(json.dumps({"prompt": TOOL_QUESTION, "answer": "834"}) + "\n")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = ["--dtype", "float32", "--no-plot", "--seq-len", "256", "--init-from", memorized, "--data", str(prompts),
              "--val-data", str(prompts), "--tools", "calculator", "--prompts-per-step", "1", "--num-generations", "4",
              "--max-new-tokens", "120", "--eval-batch", "1", "--eval-interval", "2", "--temperature", "0.3",
              "--warmup-steps", "1", "--log-interval", "1", "--lr", "1e-5"]
    train_grpo.main(common + ["--max-steps", "3", "--out-dir", a])
    train_grpo.main(common + ["--max-steps", "2", "--out-dir", b])
    train_grpo.main(common + ["--max-steps", "3", "--out-dir", b, "--resume"])
    trained = [r for r in rows(a) if "reward" in r]
    assert all(r["tools/call_frequency"] == 1.0 and r["tools/failure_frequency"] == 0.0 for r in trained)
    assert all(r["rewards/correct/mean"] == 1.0 for r in trained)  # the answer after the tool's reply is right
    # the calculator's turn (tool message + next header, 20+ tokens) is not the model's: not in the length
    call_and_answer = 80
    assert all(r["completions/mean_length"] < call_and_answer for r in trained)
    evals = [r for r in rows(a) if "val_reward" in r]
    assert evals[0]["val_accuracy"] == 1.0 and evals[0]["val_tool_calls"] == 1.0
    key = lambda d: {r["step"]: (r["loss"], r["reward"], r["tools/call_frequency"]) for r in rows(d) if "reward" in r}  # noqa: E731
    assert key(a) == key(b)  # resumes exactly, tool turns included


def test_tool_rollout_masks_exactly_the_tool_tokens():
    from data import response_targets, rollout_sequences
    prompt, response, by_model = [[1, 5, 6]], [[7, 8, 2, 9, 9, 1, 3, 2]], [[1, 1, 1, 0, 0, 0, 1, 1]]
    ids, lengths, prompt_lengths, responses = rollout_sequences(prompt, response, eos_id=2, pad_id=0, cut=False)
    assert responses == response  # not cut at the first <|im_end|>: a tool rollout has several turns
    _, y, mask = response_targets(ids, lengths, prompt_lengths, by_model)
    assert [t for t, m in zip(y[0].tolist(), mask[0].tolist()) if m] == [7, 8, 2, 3, 2]


def test_tool_rollouts_run_under_torchrun_with_two_processes(memorized, tmp_path):
    from tiny_runs import TOOL_QUESTION
    prompts = tmp_path / "q.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": TOOL_QUESTION, "answer": "834"}) + "\n" for _ in range(4)))
    out = str(tmp_path / "ddp")
    torchrun("train_grpo.py", ["--dtype", "float32", "--no-plot", "--seq-len", "256", "--init-from", memorized,
                               "--data", str(prompts), "--tools", "calculator", "--prompts-per-step", "1",
                               "--num-generations", "2", "--max-new-tokens", "120", "--eval-batch", "1",
                               "--temperature", "0.3", "--max-steps", "2", "--eval-interval", "2", "--num-threads", "1",
                               "--device", "cpu", "--out-dir", out])
    trained = [r for r in rows(out) if "reward" in r]
    assert [r["step"] for r in trained] == [1, 2] and all(r["tools/call_frequency"] > 0 for r in trained)
