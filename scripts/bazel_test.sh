#!/usr/bin/env bash
# Runs the test suite through Bazel, offline, from a fresh clone:
# installs Debian's bazel-bootstrap (Bazel 4.2.3) when missing, sets up .venv
# (scripts/setup_env.sh), then `bazel test //...`.
#   scripts/bazel_test.sh          fast tests (--test_tag_filters=-slow)
#   scripts/bazel_test.sh all      every test, slow ones included
#   scripts/bazel_test.sh build    only `bazel build //...` (what CI needs at least)
#   scripts/bazel_test.sh sample   one fast test file of each tests/ package (CI: the
#                                  whole suite already ran under pytest; this checks
#                                  that the BUILD deps and the runner work)
# Extra arguments after the first go to bazel. BAZEL_FLAGS (default: --config=lowcpu,
# one core) is prepended to them; set it empty on a dedicated machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bazel >/dev/null 2>&1 || ! bazel --version >/dev/null 2>&1; then
  echo "Installing bazel-bootstrap (Debian's Bazel 4.2.3)..."
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q bazel-bootstrap
fi
scripts/setup_env.sh

mode="${1:-fast}"
[ $# -gt 0 ] && shift
read -r -a flags <<< "${BAZEL_FLAGS---config=lowcpu}"
# A fast test file per package, chosen to import the modules of its package.
SAMPLE=(
  //tests:build_targets_test
  //tests/common:startup_test
  //tests/configs:experiments_test
  //tests/dataloaders:pipeline_test
  //tests/datasets/glyphs:filters_test
  //tests/distillation:target_cache_test
  //tests/losses:sigmoid_cross_entropy_test
  //tests/metrics:evaluation_test
  //tests/modeling:classifier_test
  //tests/quantization:grids_test
  //tests/training:train_test
  //tests/export:export_saved_model_lib_test
)
case "$mode" in
  sample) exec bazel test "${flags[@]}" --test_tag_filters=-slow "$@" "${SAMPLE[@]}" ;;
  fast)  exec bazel test "${flags[@]}" --test_tag_filters=-slow "$@" //... ;;
  all)   exec bazel test "${flags[@]}" "$@" //... ;;
  build) exec bazel build "${flags[@]}" "$@" //... ;;
  *) echo "usage: $0 [fast|sample|all|build] [bazel flags...]; got '$mode'" >&2; exit 2 ;;
esac
