# Two entry points (see README): `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# a second venv without torch: the runtime's tests run where a Jetson's stream runs
RUNTIME_VENV ?= .venv-runtime
RUNTIME_BIN := $(RUNTIME_VENV)/bin
# tritonclient pins protobuf<7 (onnx here brings 7): its own venv, whose model_config_pb2 is
# the schema `adedge triton-repo` checks every config.pbtxt against (ADEDGE_TRITON_PYTHON)
TRITON_VENV ?= .venv-triton
TRITON_BIN := $(TRITON_VENV)/bin
# nvidia-pytriton carries a real tritonserver (Python backend only) and pins numpy<2: its own
# venv, with onnxruntime for the tests' Python-backend stand-in of onnxruntime_onnx
PYTRITON_VENV ?= .venv-pytriton
PYTRITON_BIN := $(PYTRITON_VENV)/bin
DEMO_TEXTURE ?= brick
DEMO_DATA ?= texture:$(DEMO_TEXTURE)
DEMO_EPOCHS ?= 10
DEMO_SCENE ?= synthetic:texture=$(DEMO_TEXTURE),motion=conveyor,size=128,frames=200,defect_every=4
# OpenCV's sample video, extracted without installing opencv-doc (adedge.paths.find_vtest looks there)
VTEST := /tmp/usr/share/doc/opencv-doc/examples/data/vtest.avi

.PHONY: demo test test-all test-runtime install triton-venv pytriton-venv system-deps lint bench clean

$(BIN)/.installed: pyproject.toml setup.py $(wildcard cpp_ext/*.cpp cpp_ext/*.hpp)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the CPU wheel; an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# The package and the torch-free test tools only; the install must not have pulled torch.
$(RUNTIME_BIN)/.installed: pyproject.toml setup.py $(wildcard cpp_ext/*.cpp cpp_ext/*.hpp)
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_BIN)/pip install --quiet --upgrade pip
	$(RUNTIME_BIN)/pip install --quiet -e '.[test-runtime]'
	@if $(RUNTIME_BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "$(RUNTIME_VENV) has torch: the torch-free tests would prove nothing"; exit 1; fi
	touch $@

$(TRITON_BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_BIN)/pip install --quiet --upgrade pip
	$(TRITON_BIN)/pip install --quiet 'tritonclient[grpc]==2.73.0'
	touch $@

triton-venv: $(TRITON_BIN)/.installed

$(PYTRITON_BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PYTRITON_VENV)
	$(PYTRITON_BIN)/pip install --quiet --upgrade pip
	$(PYTRITON_BIN)/pip install --quiet nvidia-pytriton==0.7.0 onnxruntime==1.19.2
	touch $@

pytriton-venv: $(PYTRITON_BIN)/.installed

# apt-get download needs no root, only package lists (`apt-get update` once, as root).
$(VTEST):
	@tmp=$$(mktemp -d) && cd $$tmp && \
	  if apt-get download -qq opencv-doc >/dev/null 2>&1 || \
	     { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download -qq opencv-doc >/dev/null 2>&1; }; then \
	    dpkg-deb --fsys-tarfile opencv-doc_*.deb | tar -x -C /tmp ./usr/share/doc/opencv-doc/examples/data/vtest.avi && \
	    echo "vtest.avi: extracted to $(VTEST)"; \
	  else echo "vtest.avi: not fetched (apt-get download opencv-doc failed); its tests skip"; fi; \
	  rm -rf $$tmp

# Fashion-MNIST from Debian (real data for tests and the paper's protocol), OpenCV's sample
# video vtest.avi (real video for the stream tests and `adedge bench --papers`), the
# mosquitto MQTT broker (the service's tests start their own on 127.0.0.1)
# and a C++17 compiler for the optional kernels (cpp_ext/); needs root or sudo.
system-deps: $(VTEST)

	@if ! command -v g++ >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq g++; \
	  else echo "no g++: the C++ kernels are skipped, the numpy twins run"; fi; fi
	@if [ -x /usr/sbin/mosquitto ]; then echo "mosquitto: present"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq mosquitto; \
	elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq mosquitto; \
	else echo "no root: the service's MQTT tests will skip (apt-get install mosquitto)"; fi
	@# the Triton tests' Python-backend stub links libpython3.11.so.1.0: the Python's own
	@# (a shared build) or Debian's libpython3.11
	@if ldconfig -p | grep -q 'libpython3.11.so.1.0' || \
	  [ -e "$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')/libpython3.11.so.1.0" ]; then \
	  echo "libpython3.11: present"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libpython3.11; \
	elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq libpython3.11; \
	else echo "no root and no libpython3.11: the Triton tests will fail (apt-get install libpython3.11)"; fi
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then echo "chromium: present"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium chromium-driver; \
	elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium chromium-driver; \
	else echo "no root: the console's browser tests will skip (apt-get install chromium chromium-driver)"; fi
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  echo "dataset-fashion-mnist: present"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v sudo >/dev/null; then \
	  sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; \
	else echo "no root: Fashion-MNIST tests will skip (apt-get install dataset-fashion-mnist)"; fi

# The benchmarks run timed but short (one round for a slow call), so CI output shows each case's
# backends side by side; nothing asserts a time. `make bench` times them properly.
SHORT_BENCH := --benchmark-max-time=0.1 --benchmark-min-rounds=1 \
  --benchmark-columns=min,median,rounds --benchmark-sort=name
# modules with torch-free tests (marked runtime); the others import torch and are not collected
RUNTIME_TESTS = $(shell grep -rl --include='test_*.py' "pytest.mark.runtime" tests benchmarks | sort)

# What CI runs (.ci/run): every test that proves behaviour, the papers' 32 px cases as a
# benchmark smoke test, then the torch-free tests again in a venv without torch.
test: system-deps install $(RUNTIME_BIN)/.installed $(TRITON_BIN)/.installed $(PYTRITON_BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow" tests benchmarks $(SHORT_BENCH)
	$(RUNTIME_BIN)/python -m pytest -q -m "runtime and not slow" $(RUNTIME_TESTS) $(SHORT_BENCH)

# Everything: also the papers' geometries (CBiGAN 512 px as 64 tiles, IGD 256 px with 225
# patches) and every paper-size benchmark case (`slow`).
test-all: system-deps install $(TRITON_BIN)/.installed
	$(BIN)/python -m pytest -q tests benchmarks $(SHORT_BENCH)

# Only the torch-free tests, in the venv without torch.
test-runtime: system-deps $(RUNTIME_BIN)/.installed
	$(RUNTIME_BIN)/python -m pytest -q -m "runtime and not slow" $(RUNTIME_TESTS) $(SHORT_BENCH)

# The demo is a texture inspection: CBiGAN in its tiled texture mode (64 px tiles, max over
# them) trained on the top half of scikit-image's brick photograph, its epoch picked on
# held-out normal frames with synthetic defects (selection=pseudo), then run on a synthetic
# conveyor of the same brick at its own scale with a defect every 4th frame.
demo: install
	rm -rf runs/demo-cbigan demo
	$(BIN)/adedge train --method cbigan --data $(DEMO_DATA) --preset small \
	  --epochs $(DEMO_EPOCHS) --set selection=pseudo --out runs/demo-cbigan
	$(BIN)/adedge export --method cbigan --checkpoint runs/demo-cbigan --out models/demo-cbigan
	$(BIN)/adedge eval --model models/demo-cbigan --data $(DEMO_DATA) --out demo/eval.json
	$(BIN)/adedge stream --model models/demo-cbigan --source $(DEMO_SCENE) --quiet --headless \
	  --jsonl demo/events.jsonl --save-video demo/annotated.avi --snapshots demo/snapshots \
	  --summary-json demo/summary.json
	@echo
	@echo "demo outputs:"
	@echo "  demo/annotated.avi       every frame, score bar, defects outlined (yellow)"
	@echo "  demo/snapshots/          one annotated picture per alarm"
	@echo "  demo/events.jsonl        one record per frame and per alarm, regions with area and box"
	@echo "  demo/summary.json        frames, alarms, latency, caught and false alarms"
	@echo "  demo/eval.json, eval-roc.png, eval-histogram.png   AUROC and operating points on the labelled test split"
	@echo "  models/demo-cbigan/      the bundle: adedge stream --model models/demo-cbigan --source camera0"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python -m pytest -q benchmarks --benchmark-only

clean:
	rm -rf runs/demo-cbigan models/demo-cbigan demo
