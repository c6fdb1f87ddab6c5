# Two commands from a fresh clone: `make demo` and `make test` (both run `make setup`).
# setup is idempotent: the venv, the pip install and the colcon build each rerun only when
# their inputs changed.

PYTHON      ?= python3.11
TORCH_SPEC  ?= torch==2.13.0
PYTEST_ARGS ?=

# Which ROS 2 wheels the venv gets: kilted (default) or jazzy, as `make test ROS_DISTRO=jazzy`.
# Only a command-line value counts: a sourced ROS install's ROS_DISTRO names that install,
# not the wheels to put in the venv.
ifneq ($(origin ROS_DISTRO),command line)
ROS_DISTRO := kilted
endif
ifeq ($(filter $(ROS_DISTRO),kilted jazzy),)
$(error ROS_DISTRO=$(ROS_DISTRO): PyPI has ROS 2 wheels for kilted and jazzy only; on a ROS install, build the workspace with colcon (README, "On a robot"))
endif
# Kilted keeps the plain names; another distro gets its own venv and colcon dirs, so both
# can live side by side (fusion_node/rosenv.py finds the install that matches the venv).
SUFFIX := $(if $(filter kilted,$(ROS_DISTRO)),,-$(ROS_DISTRO))
EXTRAS := all$(SUFFIX)

VENV  := .venv$(SUFFIX)
PY    := $(VENV)/bin/python
WS    := ros2_ws
# Runs a command with the colcon-built fusion_msgs on the paths (see fusion_node/rosenv.py).
ROSRUN := $(PY) -m fusion_node.rosenv

# The pip stamp names TORCH_SPEC, so overriding it reinstalls.
DEPS_STAMP   := $(VENV)/.fusion-deps-$(shell printf '%s' '$(TORCH_SPEC)' | md5sum | cut -c1-8)
COLCON_STAMP := $(WS)/install$(SUFFIX)/.fusion-built
WS_INPUTS    := $(wildcard $(WS)/src/fusion_msgs/msg/*.msg) $(WS)/src/fusion_msgs/CMakeLists.txt \
                $(WS)/src/fusion_msgs/package.xml $(WS)/cmake/prune_missing_include_dirs.cmake \
                $(addprefix $(WS)/src/fusion_node/,package.xml setup.py setup.cfg) \
                $(wildcard launch/*.launch.py config/*.yaml config/contracts/*.yaml)

.PHONY: setup demo test lint bench clean

setup: $(DEPS_STAMP) $(COLCON_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned in the same resolve: unpinned, pip would pull a multi-GB CUDA build.
$(DEPS_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.fusion-deps-*
	touch $@

# AMENT_PREFIX_PATH=venv: the ROS wheels installed their ament index there. The CMake
# include drops the wheels' dangling /opt/python include dirs (a real ROS install needs none).
$(COLCON_STAMP): $(WS_INPUTS) | $(DEPS_STAMP)
	cd $(WS) && AMENT_PREFIX_PATH="$(abspath $(VENV))" PATH="$(abspath $(VENV))/bin:$$PATH" \
	  colcon --log-base log$(SUFFIX) build --base-paths src --symlink-install \
	    --build-base build$(SUFFIX) --install-base install$(SUFFIX) \
	    --cmake-args -DCMAKE_PROJECT_INCLUDE="$(abspath $(WS))/cmake/prune_missing_include_dirs.cmake" \
	                 -DPython3_EXECUTABLE="$(abspath $(PY))" -DBUILD_TESTING=OFF
	touch $@

demo: setup
	$(ROSRUN) $(PY) -m fusion_node.demo

# Per-test timeout: pyproject.toml. pytest exits 5 when it collected no test: that fails
# here like any non-zero status.
test: setup
	$(ROSRUN) $(PY) -m pytest -ra $(PYTEST_ARGS)

# ruff's rules and exceptions: pyproject.toml [tool.ruff].
lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(ROSRUN) $(VENV)/bin/fusion bench all

clean:
	rm -rf $(WS)/build$(SUFFIX) $(WS)/install$(SUFFIX) $(WS)/log$(SUFFIX)
