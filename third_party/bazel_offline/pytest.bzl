"""`kc_py_test`: one pytest file as Bazel py_test target(s), run by pytest's own entry point."""

load("@kc_local_env//:paths.bzl", "OMNIGLOT_DIR")

# pytest's `__main__` (copied from the venv by local_env.bzl) is the test's main, so a
# py_test is exactly `python -m pytest <file>` and no runner module lives in the repo.
_PYTEST_MAIN = "@kc_local_env//:pytest_main.py"

# Every test gets the pytest configuration (markers, addopts) and the shared fixtures.
_COMMON_DATA = ["//:pyproject.toml"]
_COMMON_DEPS = ["//tests:conftest"]

# The .pytest_cache would be written into read-only runfiles.
_PYTEST_ARGS = ["-p", "no:cacheprovider"]

_SLOW_CHOICES = ("none", "some", "all")

def kc_py_test(
        name,
        deps = [],
        data = [],
        size = "medium",
        slow_size = "large",
        slow = "none",
        omniglot = False,
        tags = [],
        **kwargs):
    """Declares the py_test(s) running pytest on `<name>.py`.

    Args:
      name: test file basename without `.py`; also the target name.
      deps: py_library targets the file imports.
      data: extra runtime files (e.g. //:official_configs).
      size: Bazel size of the fast target.
      slow_size: Bazel size of the target running @pytest.mark.slow tests.
      slow: "none" (no slow tests), "some" (`name` runs `-m "not slow"` and
        `name_slow`, tagged "slow", runs `-m slow`) or "all" (one target tagged "slow").
      omniglot: the file needs the shared Omniglot data: tag "omniglot" and pass its
        path as $KC_OMNIGLOT_DIR.
      tags: extra tags.
      **kwargs: passed to every py_test.

    Raises:
      Error (at load time) for a `slow` value outside none/some/all.
    """
    if slow not in _SLOW_CHOICES:
        fail("kc_py_test(%s): slow = %r, expected one of %s" % (name, slow, _SLOW_CHOICES))
    src = name + ".py"
    env = {}
    if omniglot:
        tags = tags + ["omniglot"]
        env["KC_OMNIGLOT_DIR"] = OMNIGLOT_DIR
    common = dict(
        srcs = [src, _PYTEST_MAIN],
        main = _PYTEST_MAIN,
        deps = deps + _COMMON_DEPS,
        data = data + _COMMON_DATA,
        env = env,
        python_version = "PY3",
        srcs_version = "PY3",
        legacy_create_init = False,
        **kwargs
    )
    file_args = ["$(rootpath :%s)" % src] + _PYTEST_ARGS
    if slow == "none":
        native.py_test(name = name, size = size, tags = tags, args = file_args, **common)
    elif slow == "all":
        native.py_test(name = name, size = slow_size, tags = tags + ["slow"], args = file_args, **common)
    else:
        # Bazel tokenizes `args` like a shell, hence the inner quotes.
        native.py_test(
            name = name,
            size = size,
            tags = tags,
            args = file_args + ["-m", "'not slow'"],
            **common
        )
        native.py_test(
            name = name + "_slow",
            size = slow_size,
            tags = tags + ["slow"],
            args = file_args + ["-m", "slow"],
            **common
        )
