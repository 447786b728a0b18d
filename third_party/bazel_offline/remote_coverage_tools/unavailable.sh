#!/bin/sh
# Offline stand-in for Bazel's coverage tools.
echo "bazel coverage needs the real @remote_coverage_tools (network); see README.md, section Bazel." >&2
exit 1
