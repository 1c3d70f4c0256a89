# The whole chain on the built-in data: make pipeline (about 5 minutes on 2 CPU cores with AMX or AVX-512 BF16, tiny
# preset; about 15 in fp32 on a CPU without them: README's table).
# Every target is one documented command; ARGS adds flags to every stage, e.g. make pipeline ARGS="--max-steps 5".
# A stage whose run directory holds a finished run (done.json, written when a run ends by its own rule) is reused,
# so a second `make pipeline` trains nothing; one that was interrupted (a checkpoint, no done.json) is resumed.
# `make clean` removes the runs; to retrain one stage, delete its folder.
# SEEDS="1337 1 2" runs the chain once per seed into $(OUT)/seed_<seed>/ and reports mean +- spread over them.
CONFIG ?= tiny
OUT ?= checkpoints
ARGS ?=
PPO_ARGS ?=
GRPO_ARGS ?=
SEEDS ?=
PY ?= python
EVAL_DATA ?= data/eval
STAGE ?= ppo

RUN = $(OUT)/$(1)_$(CONFIG)
DONE = $(OUT)/$(1)_$(CONFIG)/done.json
# an interrupted run (a checkpoint but no done.json) continues where it stopped
RESUME = $(if $(wildcard $(@D)/ckpt_latest.pt),--resume)

.PHONY: pipeline chain pretrain sft reward dpo ppo grpo lora generate report eval test upgrade-check clean \
	reasoning reasoning-direct reasoning-think reasoning-tool reasoning-2to3 reasoning-reworded reasoning-restate tool-use \
	reward-hacking

ifeq ($(strip $(SEEDS)),)
pipeline: chain
else
pipeline:
	@for seed in $(SEEDS); do \
		echo "== seed $$seed: $(OUT)/seed_$$seed"; \
		$(MAKE) --no-print-directory chain SEEDS= OUT=$(OUT)/seed_$$seed ARGS="$(ARGS) --seed $$seed" || exit 1; \
	done
	$(PY) pipeline_report.py $(OUT) --config $(CONFIG)
endif

chain: pretrain sft reward dpo ppo grpo generate report

pretrain: $(call DONE,pretrain)
sft: $(call DONE,sft)
reward: $(call DONE,reward)
dpo: $(call DONE,dpo)
ppo: $(call DONE,ppo)
grpo: $(call DONE,grpo)
lora: $(call DONE,sft_lora)

# each stage's prerequisite is order-only (after |): a finished earlier stage is used as it is, never a reason to retrain
$(call DONE,pretrain):
	$(PY) train_pretrain.py --config $(CONFIG) --out-dir $(@D) $(RESUME) $(ARGS)

$(call DONE,sft): | $(call DONE,pretrain)
	$(PY) train_sft.py --config $(CONFIG) --init-from $(call RUN,pretrain) --out-dir $(@D) $(RESUME) $(ARGS)

$(call DONE,reward): | $(call DONE,sft)
	$(PY) train_reward.py --config $(CONFIG) --init-from $(call RUN,sft) --out-dir $(@D) $(RESUME) $(ARGS)

$(call DONE,dpo): | $(call DONE,sft)
	$(PY) train_dpo.py --config $(CONFIG) --init-from $(call RUN,sft) --out-dir $(@D) $(RESUME) $(ARGS)

$(call DONE,ppo): | $(call DONE,sft) $(call DONE,reward)
	$(PY) train_ppo.py --config $(CONFIG) --init-from $(call RUN,sft) --reward-model $(call RUN,reward) \
		--out-dir $(@D) $(RESUME) $(ARGS) $(PPO_ARGS)

$(call DONE,grpo): | $(call DONE,sft)
	$(PY) train_grpo.py --config $(CONFIG) --init-from $(call RUN,sft) --out-dir $(@D) $(RESUME) $(ARGS) $(GRPO_ARGS)

# SFT with LoRA adapters instead of every weight (not part of the pipeline; the report shows it when it is there)
$(call DONE,sft_lora): | $(call DONE,pretrain)
	$(PY) train_sft.py --config $(CONFIG) --init-from $(call RUN,pretrain) --out-dir $(@D) --lora-rank 8 $(RESUME) $(ARGS)

generate: ppo
	$(PY) generate.py --checkpoint $(call RUN,ppo) --template --greedy --max-new-tokens 24 --no-stream \
		--prompt "Where does Mira live?" "7加5等于多少？"

report:
	$(PY) pipeline_report.py $(OUT) --config $(CONFIG)

# Reasoning and tools: 3-digit sums and differences answered three ways (pretrain -> SFT -> GRPO each, the tiny preset,
# the same SFT steps and GRPO seconds); runs go to $(OUT)/reasoning/seed_<seed>/, a finished stage is reused.
# make reasoning SEEDS="1 2 3" runs all nine chains and prints the table (BENCHMARKS.md has it).
reasoning:
	$(PY) bench/reasoning_chains.py --seeds $(or $(SEEDS),1) --out $(OUT)/reasoning
REASONING_CHAIN = $(PY) bench/reasoning_chains.py --ways $(@:reasoning-%=%) --seeds $(or $(SEEDS),1) --out $(OUT)/reasoning
reasoning-direct:
	$(REASONING_CHAIN)
reasoning-think:
	$(REASONING_CHAIN)
reasoning-2to3:
	$(REASONING_CHAIN)
reasoning-reworded:
	$(REASONING_CHAIN)
reasoning-tool:
	$(REASONING_CHAIN)

# Sums asked in wordings SFT never showed (issue 37): pretraining -> SFT on the trace that first copies
# the operands; then the table of first / other training / held-out wordings (BENCHMARKS.md has it)
reasoning-restate:
	$(PY) bench/phrasings.py --chain --seeds $(or $(SEEDS),1) --out $(OUT)/restate

# Tools the model reads instead of memorising (issue 37): pretrain at 512 tokens -> SFT on --data tool-use, then the
# table: in-template vs held-out tool definitions and wordings, with distractors (BENCHMARKS.md has it)
tool-use:
	$(PY) bench/tool_use.py --seeds $(or $(SEEDS),1) --out $(OUT)/tool_use

# Reward hacking on purpose (Gao et al. 2022): PPO against a weak reward model with no KL penalty, beside the
# default PPO run, proxy reward and gold accuracy against KL to SFT; needs the sft and reward stages (make pipeline)
reward-hacking: | $(call DONE,sft) $(call DONE,reward)
	$(PY) bench/reward_hacking.py --runs $(OUT) --config $(CONFIG)

# standard benchmarks of one stage's checkpoint (not part of the pipeline: it needs task files in EVAL_DATA)
eval:
	$(PY) eval_benchmarks.py --checkpoint $(call RUN,$(STAGE)) --data-dir $(EVAL_DATA)

test:
	$(PY) -m pytest tests

# the newest versions the requirements allow, in a fresh venv, with the tests; constraints.txt rewritten only if they pass
upgrade-check:
	bash .ci/upgrade

# the runs `make` made (each stage's folder, and seed_* of SEEDS=), not the token cache or other runs in $(OUT)
clean:
	rm -rf $(foreach s,pretrain sft reward dpo ppo grpo sft_lora reward_weak ppo_hacking ppo_curve,$(call RUN,$(s))) \
		$(OUT)/seed_* $(OUT)/reasoning
