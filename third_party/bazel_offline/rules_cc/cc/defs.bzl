"""Offline stand-in for @rules_cc//cc:defs.bzl: forwards to Bazel 4's native C++ rules.

@bazel_tools//tools/cpp loads these names even when no C++ is built; the real rules_cc
defines them the same way (thin wrappers over native rules) at the pinned commit.
"""

def cc_binary(**attrs):
    native.cc_binary(**attrs)

def cc_import(**attrs):
    native.cc_import(**attrs)

def cc_library(**attrs):
    native.cc_library(**attrs)

def cc_proto_library(**attrs):
    native.cc_proto_library(**attrs)

def cc_test(**attrs):
    native.cc_test(**attrs)

def cc_toolchain(**attrs):
    native.cc_toolchain(**attrs)

def cc_toolchain_suite(**attrs):
    native.cc_toolchain_suite(**attrs)

def objc_library(**attrs):
    native.objc_library(**attrs)
