# The whole chain on the built-in data: make pipeline (about 8 minutes on 2 CPU cores with AVX-512 BF16, tiny preset;
# about 15 in fp32 on a CPU without it).
# Every target is one documented command; ARGS adds flags to every stage, e.g. make pipeline ARGS="--max-steps 5".
CONFIG ?= tiny
OUT ?= checkpoints
ARGS ?=
PPO_ARGS ?=
GRPO_ARGS ?=
PY ?= python
EVAL_DATA ?= data/eval
STAGE ?= ppo

.PHONY: pipeline pretrain sft reward dpo ppo grpo lora generate report eval test

pipeline: pretrain sft reward dpo ppo grpo generate report

pretrain:
	$(PY) train_pretrain.py --config $(CONFIG) --out-dir $(OUT)/pretrain_$(CONFIG) $(ARGS)

sft:
	$(PY) train_sft.py --config $(CONFIG) --init-from $(OUT)/pretrain_$(CONFIG) --out-dir $(OUT)/sft_$(CONFIG) $(ARGS)

reward:
	$(PY) train_reward.py --config $(CONFIG) --init-from $(OUT)/sft_$(CONFIG) --out-dir $(OUT)/reward_$(CONFIG) $(ARGS)

dpo:
	$(PY) train_dpo.py --config $(CONFIG) --init-from $(OUT)/sft_$(CONFIG) --out-dir $(OUT)/dpo_$(CONFIG) $(ARGS)

ppo:
	$(PY) train_ppo.py --config $(CONFIG) --init-from $(OUT)/sft_$(CONFIG) --reward-model $(OUT)/reward_$(CONFIG) \
		--out-dir $(OUT)/ppo_$(CONFIG) $(ARGS) $(PPO_ARGS)

grpo:
	$(PY) train_grpo.py --config $(CONFIG) --init-from $(OUT)/sft_$(CONFIG) --out-dir $(OUT)/grpo_$(CONFIG) $(ARGS) $(GRPO_ARGS)

# SFT with LoRA adapters instead of every weight (not part of the pipeline; the report shows it when it is there)
lora:
	$(PY) train_sft.py --config $(CONFIG) --init-from $(OUT)/pretrain_$(CONFIG) --out-dir $(OUT)/sft_lora_$(CONFIG) \
		--lora-rank 8 $(ARGS)

generate:
	$(PY) generate.py --checkpoint $(OUT)/ppo_$(CONFIG) --template --greedy --max-new-tokens 24 --no-stream \
		--prompt "Where does Mira live?" "7加5等于多少？"

report:
	$(PY) pipeline_report.py $(OUT) --config $(CONFIG)

# standard benchmarks of one stage's checkpoint (not part of the pipeline: it needs task files in EVAL_DATA)
eval:
	$(PY) eval_benchmarks.py --checkpoint $(OUT)/$(STAGE)_$(CONFIG) --data-dir $(EVAL_DATA)

test:
	$(PY) -m pytest tests
