# Two commands from a fresh clone: `make demo` and `make test` (both run `make setup`).
# setup is idempotent: the venv, the pip install and the colcon build each rerun only when
# their inputs changed.

PYTHON      ?= python3.11
TORCH_SPEC  ?= torch==2.13.0
PYTEST_ARGS ?=

VENV  := .venv
PY    := $(VENV)/bin/python
WS    := ros2_ws
# Runs a command with the colcon-built fusion_msgs on the paths (see fusion_node/rosenv.py).
ROSRUN := $(PY) -m fusion_node.rosenv

# The pip stamp names TORCH_SPEC, so overriding it reinstalls.
DEPS_STAMP   := $(VENV)/.fusion-deps-$(shell printf '%s' '$(TORCH_SPEC)' | md5sum | cut -c1-8)
COLCON_STAMP := $(WS)/install/.fusion-built
WS_INPUTS    := $(wildcard $(WS)/src/fusion_msgs/msg/*.msg) $(WS)/src/fusion_msgs/CMakeLists.txt \
                $(WS)/src/fusion_msgs/package.xml $(WS)/cmake/prune_missing_include_dirs.cmake \
                package.xml setup.py setup.cfg $(wildcard launch/*.launch.py config/*.yaml)

.PHONY: setup demo test bench clean

setup: $(DEPS_STAMP) $(COLCON_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned in the same resolve: unpinned, pip would pull a multi-GB CUDA build.
$(DEPS_STAMP): setup.py pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" -e ".[all]"
	rm -f $(VENV)/.fusion-deps-*
	touch $@

# AMENT_PREFIX_PATH=venv: the ROS wheels installed their ament index there. The CMake
# include drops the wheels' dangling /opt/python include dirs (a real ROS install needs none).
$(COLCON_STAMP): $(WS_INPUTS) | $(DEPS_STAMP)
	cd $(WS) && AMENT_PREFIX_PATH="$(abspath $(VENV))" PATH="$(abspath $(VENV))/bin:$$PATH" \
	  colcon build --base-paths src --symlink-install \
	    --cmake-args -DCMAKE_PROJECT_INCLUDE="$(abspath $(WS))/cmake/prune_missing_include_dirs.cmake" \
	                 -DPython3_EXECUTABLE="$(abspath $(PY))" -DBUILD_TESTING=OFF
	touch $@

demo: setup
	$(ROSRUN) $(PY) -m fusion_node.demo

# Per-test timeout: pyproject.toml. pytest exits 5 when it collected no test: that fails
# here like any non-zero status.
test: setup
	$(ROSRUN) $(PY) -m pytest -ra $(PYTEST_ARGS)

bench: setup
	$(ROSRUN) $(VENV)/bin/fusion bench all

clean:
	rm -rf $(WS)/build $(WS)/install $(WS)/log
