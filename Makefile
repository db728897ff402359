# The two commands of the README: `make run` (export -> repository -> real server -> client ->
# benchmark, on CPU) and `make test`. Both build the virtual environment first when it is missing or
# older than the lock.
#
# Versions: requirements.lock is the one place that decides them: every distribution the set-up
# installs, direct and transitive, at one version with its hashes, for Linux x86_64 and Python 3.11.
# `make lock` re-resolves it after pyproject.toml changed (keeping every pin it can), `make upgrade`
# takes the newest releases pyproject.toml and constraints.txt allow; either way the change is a diff
# to review. `make try-latest` runs the fast tests against the newest releases in a scratch venv,
# without touching the lock (docs/environment.md).
#
# No command here runs Python with the checkout's root on sys.path: the root is the package
# `tritonize`, and its folders (kernels/, models/, client/...) would shadow distributions of the same
# name. Console scripts (.venv/bin/pytest, .venv/bin/tritonize) start from .venv/bin, and `-P` keeps
# the current folder off sys.path for the rest; the guard written into the venv covers a user's own
# `python` started here (checkout_guard.py).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
LOCK := requirements.lock
GPU_LOCK := requirements-gpu.lock
STAMP := $(VENV)/.tritonize-installed
UV := $(VENV)/bin/uv
# The guard's line in a venv's site-packages ($(1): the venv's python), run when its interpreter starts.
write_guard = $(1) -P -m tritonize.checkout_guard --install

# The lock's platform: the project's machines and CI.
LOCK_PLATFORM := --python-version 3.11 --python-platform x86_64-manylinux_2_36
# torch's CPU build (the lock pins torch==2.13.0+cpu) is not on PyPI. Where pip's configuration names
# a folder of wheels (find-links), as on the project's machines, uv is pointed there: uv does not read
# pip's configuration. Elsewhere it comes from PyTorch's CPU index; the lock's hashes still hold every
# file, from either index, to the one the lock was made from.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -P -m pip config get global.find-links 2>/dev/null))
ifneq ($(strip $(FIND_LINKS)),)
TORCH_SOURCE := $(foreach d,$(FIND_LINKS),--find-links $(d))
else
TORCH_SOURCE := --extra-index-url $(TORCH_INDEX) --index-strategy unsafe-best-match
endif
IN_VENV := --quiet --python $(VENV)/bin/python
UV_COMPILE := $(UV) pip compile --quiet --generate-hashes $(LOCK_PLATFORM) $(TORCH_SOURCE) \
	--custom-compile-command "make lock"

.PHONY: setup run test test-fast lock upgrade try-latest wheel-check kernel-compile-check
setup: $(STAMP)

# A fresh venv each time the lock changed: `uv pip sync` makes it exactly the lock, then tritonize
# itself is installed in place (editable, no build isolation: setuptools comes from the lock too).
$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -P -m venv $(VENV)
	@# uv, the installer, comes from the lock as well, checked against its hashes by pip.
	awk '/^uv==/{p=1} p{print; if ($$0 !~ /\\$$/) exit}' $(LOCK) > $(VENV)/uv-requirement.txt
	$(VENV)/bin/python -P -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
		-r $(VENV)/uv-requirement.txt
	$(UV) pip sync $(IN_VENV) $(TORCH_SOURCE) $(LOCK)
	$(UV) pip install $(IN_VENV) $(TORCH_SOURCE) --no-deps --no-build-isolation -e .
	$(call write_guard,$(VENV)/bin/python)
	touch $@

run: setup
	$(VENV)/bin/tritonize run

test: setup
	$(VENV)/bin/pytest

# The inner loop: the tests that start no tritonserver and build no built-in model (tests/conftest.py).
test-fast: setup
	$(VENV)/bin/pytest --fast -q

# Both Triton kernels, every autotune config, compiled for sm_80 and sm_90a on this machine (no GPU),
# gated on spills, shared memory and tensor-core use; the report goes to docs/results (docs/gpu.md).
kernel-compile-check: setup
	env -u TRITON_INTERPRET $(VENV)/bin/python -P -m tritonize.kernels.compile_sweep \
		--out docs/results/compile-check-$$(date +%F)

# The lock, from pyproject.toml (the dependencies, the test extra and the `setup` group: uv, pip and
# setuptools) and constraints.txt (what must hold: torch's CPU build, numpy<2, nvidia-pytriton).
# uv keeps the versions the lock has unless UPGRADE=--upgrade; the GPU lock follows the main one.
lock: $(UV)
	$(UV_COMPILE) $(UPGRADE) pyproject.toml --extra test --group setup -c constraints.txt -o $(LOCK)
	$(UV_COMPILE) $(UPGRADE) pyproject.toml --extra gpu -c constraints.txt -c $(LOCK) -o $(GPU_LOCK)

upgrade:
	$(MAKE) lock UPGRADE=--upgrade

$(UV):
	$(MAKE) setup

# The newest releases that pyproject.toml and constraints.txt allow, in a scratch venv, against the
# fast part of the suite (no server): a release that breaks the project is found here, not by a user.
# Not part of CI, which stays on the lock.
try-latest: $(UV)
	scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	$(PYTHON) -P -m venv "$$scratch/venv" && \
	$(UV) pip install --quiet --python "$$scratch/venv/bin/python" $(TORCH_SOURCE) -c constraints.txt -e ".[test]" --group setup && \
	$(call write_guard,"$$scratch/venv/bin/python") && \
	$(UV) pip list --quiet --python "$$scratch/venv/bin/python" --format freeze > "$$scratch/latest.txt" && \
	diff <(grep -o '^[a-z0-9._-]*==[^ ]*' $(LOCK) | sort -f) <(sort -f "$$scratch/latest.txt") | grep '^[<>]' || true; \
	"$$scratch/venv/bin/pytest" --fast -m "not locked_env" -q -p no:cacheprovider

# The built wheel, outside the checkout: built, installed with the lock as constraints into a fresh venv
# in WHEEL_CHECK_DIR, and the main job run there for one model from an empty folder.
WHEEL_CHECK_DIR ?= build/wheel-check
WHEEL_CHECK_MODELS ?= mlp
wheel-check: setup
	rm -rf $(WHEEL_CHECK_DIR) && mkdir -p $(WHEEL_CHECK_DIR)/dist $(WHEEL_CHECK_DIR)/work
	@# setuptools packs whatever its build folders hold, the files of modules since moved or removed too.
	rm -rf build/lib build/bdist.*
	$(VENV)/bin/python -P -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		-w $(WHEEL_CHECK_DIR)/dist .
	$(PYTHON) -P -m venv --without-pip $(WHEEL_CHECK_DIR)/venv
	$(UV) pip install --quiet --python $(WHEEL_CHECK_DIR)/venv/bin/python $(TORCH_SOURCE) -c $(LOCK) \
		$(WHEEL_CHECK_DIR)/dist/tritonize-*.whl
	cd $(WHEEL_CHECK_DIR)/work && ../venv/bin/tritonize run $(WHEEL_CHECK_MODELS)
