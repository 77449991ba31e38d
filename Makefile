# aln-triton: `make run` runs the main job on a fresh machine, `make test` the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
# Debian packages: dicom3tools (dciodvfy, used by the tests), libopenjp2-7 (OpenJPEG for
# region decoding of JPEG 2000 through glymur), libpython3.11 (the Triton Python-backend stub),
# orthanc and orthanc-dicomweb (the PACS node of the tests and the demo; its service is not used:
# aln.pacs.orthanc starts its own on loopback), nginx (the gRPC balancer over replicas; likewise
# started by aln.deploy.balancer, never as a service), libjemalloc2 and libtcmalloc-minimal4 (the
# allocators `aln serve --allocator` can preload into tritonserver).
SYSTEM_PACKAGES := dicom3tools libopenjp2-7 libpython3.11 orthanc orthanc-dicomweb nginx \
	libjemalloc2 libtcmalloc-minimal4

.PHONY: install system-deps run demo-pacs test lint typecheck unit bench-crop clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	$(BIN)/python -c "import timm, torch, torchvision, onnxruntime, pydicom, glymur, tritonclient.grpc; print('installed: torch', torch.__version__, 'timm', timm.__version__)"
	touch $@

system-deps:
	@missing=""; \
	command -v dciodvfy >/dev/null || missing="$$missing dicom3tools"; \
	ldconfig -p | grep -q 'libopenjp2.so.7' || missing="$$missing libopenjp2-7"; \
	ldconfig -p | grep -q 'libpython3.11.so.1.0' || missing="$$missing libpython3.11"; \
	[ -x /usr/sbin/Orthanc ] || missing="$$missing orthanc"; \
	[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$$missing orthanc-dicomweb"; \
	[ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	ldconfig -p | grep -q 'libjemalloc.so.2' || missing="$$missing libjemalloc2"; \
	ldconfig -p | grep -q 'libtcmalloc_minimal.so.4' || missing="$$missing libtcmalloc-minimal4"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

run: install
	$(BIN)/aln demo $(ARGS)

# the demo with a PACS: Orthanc, a marks SR, the gateway, the result SR in Orthanc's web interface
demo-pacs: install
	$(BIN)/aln demo --pacs $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy sees the folders under their import names (aln.preprocessing lives in preprocessing/)
# through a tree of symlinks, so cross-module types are checked, not treated as Any.
TYPED_PACKAGES := preprocessing synthetic client model export serving training benchmarks pacs deploy
typecheck: install
	@rm -rf build/typecheck && mkdir -p build/typecheck/aln
	@ln -s $(CURDIR)/aln/__init__.py build/typecheck/aln/__init__.py
	@ln -s $(CURDIR)/aln/errors.py build/typecheck/aln/errors.py
	@for p in $(TYPED_PACKAGES); do ln -s $(CURDIR)/$$p build/typecheck/aln/$$p; done
	cd build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml $(addprefix -p aln.,$(TYPED_PACKAGES))

test: install lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

bench-crop: install
	$(BIN)/aln bench crop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
