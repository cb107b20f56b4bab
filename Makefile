# pcsim: everything installs from nothing into .venv (CPU build of torch, pinned).
PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
# The CPU wheel of torch; a plain `pip install torch` could fetch a multi-GB CUDA build.
TORCH_PIN   ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP       := $(VENV)/.installed
export BRIAN2_CACHE_DIR := $(CURDIR)/build/brian2-cache
export CYTHON_CACHE_DIR := $(CURDIR)/build/cython-cache
export MPLBACKEND := Agg

.PHONY: install test test-fast lint demo check-zoo notebooks clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and alone, so nothing later can pull a CUDA build; fall back to the CPU index
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_PIN)" \
	  || $(PIP) install --quiet "$(TORCH_PIN)" --index-url $(TORCH_INDEX)
	$(PIP) install --quiet -e ".[dev]" "$(TORCH_PIN)"
	$(PY) -c "import torch, brian2, transformers, einops, torch_geometric, nbclient, jupytext, ipykernel, pcsim; print('pcsim installed; torch', torch.__version__, '/ brian2', brian2.__version__)"
	touch $(STAMP)

# Two worker processes (one torch thread each): the suite is CPU-bound and the machine has 2 cores.
# Tests of one file stay on one worker (they may share a module fixture or an output folder).
PYTEST_WORKERS ?= 2

# --durations: the slowest tests in every log, where the 15-minute budget of the suite is watched.
test: install
	$(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile --durations=15 tests

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" tests

lint: install
	$(VENV)/bin/ruff check pcsim tests models
	$(VENV)/bin/lint-imports

# Z-IL, Fa-Z-IL and unlevelled Z-IL against torch autograd on every model of the zoo at full size (Table 1)
check-zoo: install
	$(VENV)/bin/pcsim check --all --threads 1

# The newcomer's tour (about a minute): Z-IL vs autograd on the zoo at small sizes, continuous time with scipy
# and Brian2, BP and Z-IL training on digits; figures and summary.md in out/
demo: install
	$(VENV)/bin/pcsim demo --out out

# Every notebook (notebooks/*.py, jupytext percent format) executed in a kernel on .venv's Python, at full
# size, into notebooks/*.ipynb beside it, outputs and figures included (a few minutes; NOTEBOOKS=quickstart runs one)
NOTEBOOKS ?=
notebooks: install
	$(PY) notebooks/_execute.py $(NOTEBOOKS)

clean:
	rm -rf $(VENV) build .pytest_cache

# BP (on the module and on the traced graph), Z-IL, Fa-Z-IL and IL per weight update on every zoo model
# (image models at batch 32; at least 3 runs per rule, IL at a larger T skipped when its estimate is over a
# third of the budget): benchmarks/results/rules_cpu.{json,md} (about an hour);
# the LSTM and GRU traced with fused recurrent layers (rows "MODEL, fused layers") into the same file;
# the wavefront alone on the big models at batch 128: benchmarks/results/rules_cpu_wavefront.{json,md};
# compile=True (IL, Fa-Z-IL wavefront) against the eager rules: rules_cpu_il_compiled, rules_cpu_wavefront_compiled;
# Brian2 backend throughput against scipy RK45 and torch Euler: benchmarks/results/brian2_throughput.{json,md}
.PHONY: bench
bench: install
	$(PY) benchmarks/bench_rules.py --threads 1 --budget-s 90 --reps 20 \
		--models mlp residual_mlp tied_autoencoder cnn rnn lstm gru transformer
	$(PY) benchmarks/bench_rules.py --threads 1 --budget-s 90 --reps 20 --batch 32 --append \
		--models alexnet resnet18 densenet_block
	$(PY) benchmarks/bench_rules.py --threads 1 --budget-s 90 --reps 20 --fused --append --models lstm gru
	$(PY) benchmarks/bench_rules.py --threads 1 --reps 20 --models alexnet resnet18 densenet_block transformer \
		--rules bp bp-graph fa-zil-wavefront --out benchmarks/results/rules_cpu_wavefront
	$(PY) benchmarks/bench_rules.py --threads 1 --budget-s 90 --reps 20 --models mlp residual_mlp tied_autoencoder cnn \
		--rules bp il-T5 il-T5-compiled il-T20 il-T20-compiled il-T100 il-T100-compiled \
		--out benchmarks/results/rules_cpu_il_compiled
	$(PY) benchmarks/bench_rules.py --threads 1 --budget-s 90 --reps 20 \
		--models lstm gru mlp residual_mlp tied_autoencoder cnn rnn transformer \
		--rules bp fa-zil-wavefront fa-zil-wavefront-compiled --out benchmarks/results/rules_cpu_wavefront_compiled
	$(PY) benchmarks/bench_rules.py --threads 1 --budget-s 90 --reps 10 --append --models alexnet resnet18 densenet_block \
		--rules bp fa-zil-wavefront fa-zil-wavefront-compiled --out benchmarks/results/rules_cpu_wavefront_compiled
	$(PY) benchmarks/brian2_throughput.py

# pcsim against its peers (issue 21), not part of `make test`: JPC (jax 0.5, diffrax 0.7) and PCX 0.6.3 (which
# pins jax < 0.5) each in a venv under build/, with the CPU torch and pcsim (--no-deps) beside them; pcsim and
# the peer are interleaved in one process per venv. JPC is not on the package index: export its public
# repository (thebuckleylab/jpc on GitHub, `git archive`) into $(JPC_SRC) first, and its commit into
# $(JPC_SRC)/COMMIT. Writes benchmarks/results/peers.{json,md} (about 5 minutes at 10 repetitions).
JPC_SRC      ?= build/jpc-src
PEERS_PYTHON ?= python3.11
PEERS_REPS   ?= 10
PEERS_DEPS   := "$(TORCH_PIN)" "numpy>=1.24,<2.4" "scipy>=1.10" "tqdm>=4.60" "matplotlib>=3.7" "scikit-learn>=1.3" "mlxtend>=0.23" \
                "torchode>=1.0" "threadpoolctl>=3"  # pcsim's runtime dependencies but brian2 (pyproject.toml)
.PHONY: peers
peers: install
	@test -f $(JPC_SRC)/pyproject.toml || { echo "no JPC source in $(JPC_SRC): git archive thebuckleylab/jpc there"; exit 1; }
	for v in build/peers-jpc build/peers-pcx; do \
	  test -x $$v/bin/python || $(PEERS_PYTHON) -m venv $$v || exit 1; \
	  $$v/bin/python -c "import torch" 2>/dev/null || $$v/bin/pip install --quiet "$(TORCH_PIN)" \
	    || $$v/bin/pip install --quiet "$(TORCH_PIN)" --index-url $(TORCH_INDEX) || exit 1; \
	  $$v/bin/pip install --quiet --no-deps -e . || exit 1; \
	done
	build/peers-jpc/bin/pip install --quiet $(PEERS_DEPS) "jax[cpu]>=0.5,<=0.5.2" "diffrax==0.7.*" equinox optax jaxtyping ./$(JPC_SRC)
	build/peers-pcx/bin/pip install --quiet $(PEERS_DEPS) "pcx==0.6.3" "jax[cpu]"
	$(PY) benchmarks/bench_peers.py --reps $(PEERS_REPS)
