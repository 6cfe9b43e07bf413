# sglang-ascend-fia: `make test`, `make demo`, `make bench`. Each creates .venv on first use and
# installs what it needs; re-running is cheap (a stamp file records the last install).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SGLANG_VERSION := 0.5.23
# Test-only helpers (sgl_kernel stand-in, torchvision fix, test-bed plugin, model builders).
TESTBED_PATH := $(CURDIR)/tests/support/pythonpath:$(CURDIR)/tests/support
RUN := PYTHONPATH=$(TESTBED_PATH) SGLANG_USE_CPU_ENGINE=1 TORCHDYNAMO_DISABLE=1 \
       HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY)

.PHONY: install test lint demo bench doctor npu-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) requirements/cpu-testbed.txt requirements/dev.txt pyproject.toml
	$(PY) -m pip install --quiet -r requirements/cpu-testbed.txt -r requirements/dev.txt
	# sglang's declared dependencies are CUDA-only; the CPU set is installed above.
	$(PY) -m pip install --quiet --no-deps sglang==$(SGLANG_VERSION)
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	# The layer contract in pyproject.toml [tool.importlinter] (docs/architecture.md).
	$(VENV)/bin/lint-imports --no-cache

# Two workers by default: an engine test spends most of its time in single-threaded imports and
# process start-up, so two run side by side on CI's 2 cores (TEST_WORKERS=0 runs in one process).
# --dist loadfile keeps each module (and its module-scoped engine fixture) on one worker.
TEST_WORKERS ?= 2
test: $(STAMP) lint
	$(RUN) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=30 $(PYTEST_ARGS)

demo: $(STAMP)
	$(RUN) -m demo.run

bench: $(STAMP)
	$(RUN) -m bench.run
	$(RUN) -m bench.report

doctor: $(STAMP)
	$(RUN) -m sglang_ascend_fia.cli doctor

# On an Ascend machine, with the Python that has sglang, torch_npu and this plugin installed (not
# .venv's CPU test bed): verify-ops, then the GSM8K suite, then one JSON report to send back
# (docs/npu-owner-guide.md, "The NPU acceptance check"). Exit status 2 where it cannot run.
NPU_PYTHON ?= python3
NPU_REPORT ?= npu-report.json
npu-check:
	$(NPU_PYTHON) tools/npu_check.py --report $(NPU_REPORT)

clean:
	rm -rf $(VENV) .cache dist build bench-results.json npu-report.json npu-report-files
