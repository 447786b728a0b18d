"""The BUILD files are complete: every module and test has a target, and every target's deps
cover what its sources import from the repository (nested imports included), so that a test
passing under pytest cannot fail under `bazel test` for a missing runfile."""

import ast
import os
import pathlib
import textwrap

from absl.testing import absltest
from absl.testing import parameterized

# realpath: under `bazel test` this file is a runfiles symlink into the checkout, and the
# check must read the checkout's BUILD files, not the runfiles subset.
REPO_ROOT = pathlib.Path(os.path.realpath(__file__)).parents[1]

BUILD_FILE_NAMES = ("BUILD", "BUILD.bazel")
LIBRARY_ROOTS = ("kc_keras", "export")
TEST_ROOT = "tests"
# Macros whose source file is `<name>.py` rather than a `srcs` attribute.
NAME_IS_SOURCE_MACROS = ("kc_py_test",)
SKIPPED_DIR_NAMES = ("__pycache__",)
# Deps every `kc_py_test` gets from the macro (third_party/bazel_offline/pytest.bzl).
MACRO_COMMON_DEPS = {"kc_py_test": ("//tests:conftest",)}


class BuildFileError(ValueError):
  """A BUILD file that cannot be read as Starlark (names the file)."""


def _label_to_path(label: str, package: str) -> str:
  """Repository-relative path of a source label.

  Args:
    label: `"x.py"`, `":x.py"` or `"//pkg:x.py"`.
    package: the declaring BUILD file's directory, repository-relative ("" at the root).

  Returns:
    `package/x.py` (or `pkg/x.py` for an absolute label).
  """
  if label.startswith("//"):
    package, _, label = label[2:].partition(":")
  label = label.lstrip(":")
  return f"{package}/{label}" if package else label


def declared_sources(root: pathlib.Path) -> set:
  """Source files named by the rules of every BUILD file under `root`.

  A rule's sources are its `srcs` list of string labels; for the macros in
  `NAME_IS_SOURCE_MACROS` the source is `<name>.py`.

  Args:
    root: repository root.

  Returns:
    Set of repository-relative POSIX paths.

  Raises:
    BuildFileError: a BUILD file is not valid Starlark/Python syntax.
  """
  return set().union(*(srcs for srcs, _ in build_rules(root).values()))


def build_rules(root: pathlib.Path) -> dict:
  """Every rule of the BUILD files under `root` with its sources and deps.

  Args:
    root: repository root.

  Returns:
    `{"//pkg:name": (srcs, deps)}`: `srcs` a set of repository-relative paths (as in
    `declared_sources`), `deps` a tuple of absolute labels, the macro's common deps
    included.

  Raises:
    BuildFileError: a BUILD file is not valid Starlark/Python syntax.
  """
  rules = {}
  for _, package, call, attrs in _rule_calls(root):
    name = attrs.get("name")
    if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
      continue
    srcs = {_label_to_path(label, package)
            for label in _string_list(attrs.get("srcs"))}
    if call.func.id in NAME_IS_SOURCE_MACROS:
      srcs.add(_label_to_path(f"{name.value}.py", package))
    deps = list(MACRO_COMMON_DEPS.get(call.func.id, ()))
    deps.extend(_absolute_label(label, package)
                for label in _string_list(attrs.get("deps")))
    rules[f"//{package}:{name.value}"] = (srcs, tuple(deps))
  return rules


def imported_repo_files(root: pathlib.Path, source: str) -> set:
  """Repository modules that `source` imports anywhere in the file.

  Nested (function-level) imports count: they run when that code path runs, and
  Bazel's runfiles hold only what the deps declare. `kc_keras.*` and `export.*`
  resolve against the tree; a bare top-level name resolves to a helper module beside
  the file or at tests/ (pytest puts both on sys.path). Package `__init__.py` files
  are not required (Bazel writes empty ones).

  Args:
    root: repository root.
    source: repository-relative path of a .py file.

  Returns:
    Set of repository-relative paths of the imported modules' files.
  """
  tree = ast.parse((root / source).read_text(), filename=source)
  here = pathlib.PurePosixPath(source).parent.as_posix()
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
    else:
      continue
    for name in names:
      path = _module_file(root, name, here)
      if path and path != source:
        found.add(path)
  return found


def undeclared_imports(root: pathlib.Path) -> list:
  """`"target: file imports module"` for each import no dep of the target provides.

  Args:
    root: repository root.

  Returns:
    Sorted list of messages; empty when every target's transitive deps cover its
    sources' repository imports.
  """
  rules = build_rules(root)
  problems = set()
  for label, (srcs, _) in rules.items():
    provided = _transitive_sources(rules, label)
    for source in sorted(s for s in srcs if s.endswith(".py") and (root / s).is_file()):
      for module in imported_repo_files(root, source) - provided:
        problems.add(f"{label}: {source} imports {module}, which no dep provides")
  return sorted(problems)


def _transitive_sources(rules: dict, label: str) -> set:
  seen, stack, sources = set(), [label], set()
  while stack:
    current = stack.pop()
    if current in seen or current not in rules:
      continue
    seen.add(current)
    srcs, deps = rules[current]
    sources |= srcs
    stack.extend(deps)
  return sources


def _module_file(root: pathlib.Path, name: str, here: str):
  parts = name.split(".")
  if parts[0] in LIBRARY_ROOTS:
    candidate = "/".join(parts) + ".py"
    return candidate if (root / candidate).is_file() else None
  if len(parts) == 1:
    for directory in (here, TEST_ROOT):
      candidate = f"{directory}/{name}.py"
      if directory.startswith(TEST_ROOT) and (root / candidate).is_file():
        return candidate
  return None


def _string_list(node) -> list:
  """The string literals of a Starlark list attribute (a glob() or absent: [])."""
  if not isinstance(node, ast.List):
    return []
  return [elt.value for elt in node.elts
          if isinstance(elt, ast.Constant) and isinstance(elt.value, str)]


def _absolute_label(label: str, package: str) -> str:
  if label.startswith("//"):
    return label if ":" in label else f"{label}:{label.rsplit('/', 1)[-1]}"
  if label.startswith(":"):
    return f"//{package}{label}"
  return label  # External (@repo//...) or a bare file: not a rule of ours.


def _rule_calls(root: pathlib.Path):
  """Yields (BUILD file, package, call node, {attribute: value node}) per rule call."""
  for build_file in _build_files(root):
    package = build_file.parent.relative_to(root).as_posix()
    package = "" if package == "." else package
    try:
      tree = ast.parse(build_file.read_text(), filename=str(build_file))
    except SyntaxError as e:
      raise BuildFileError(f"{build_file}: cannot parse: {e}") from e
    for call in ast.walk(tree):
      if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
        yield build_file, package, call, {kw.arg: kw.value for kw in call.keywords if kw.arg}


def required_sources(root: pathlib.Path) -> set:
  """Files that must have a target: every .py under LIBRARY_ROOTS and TEST_ROOT.

  Under tests/ that is the test files and their helpers (conftest.py, test doubles),
  which Bazel must put in runfiles for pytest to find them.

  Args:
    root: repository root.

  Returns:
    Set of repository-relative POSIX paths.
  """
  required = set()
  for top in (*LIBRARY_ROOTS, TEST_ROOT):
    required.update(_relative_files(root, root / top, "*.py"))
  return required


def missing_targets(root: pathlib.Path) -> list:
  """Sorted paths in `required_sources(root)` that no BUILD file names."""
  return sorted(required_sources(root) - declared_sources(root))


def _build_files(root: pathlib.Path) -> list:
  files = []
  for top in (root, *(root / d for d in (*LIBRARY_ROOTS, TEST_ROOT))):
    for name in BUILD_FILE_NAMES:
      # The root's own BUILD only: its subtrees other than ours are not checked.
      pattern = name if top == root else f"**/{name}"
      files.extend(p for p in top.glob(pattern) if p.is_file())
  return sorted(set(files))


def _relative_files(root: pathlib.Path, top: pathlib.Path, pattern: str) -> set:
  return {
      p.relative_to(root).as_posix()
      for p in top.rglob(pattern)
      if p.is_file() and not set(p.relative_to(root).parts) & set(SKIPPED_DIR_NAMES)
  }


class BuildTargetsTest(parameterized.TestCase):

  def _tree(self, files: dict) -> pathlib.Path:
    root = pathlib.Path(self.create_tempdir().full_path)
    for rel, text in files.items():
      path = root / rel
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(textwrap.dedent(text))
    return root

  def test_repository_has_a_target_for_every_module_and_test(self):
    missing = missing_targets(REPO_ROOT)
    self.assertEqual(
        missing, [],
        msg=f"No Bazel target lists {missing}: add one to the BUILD file of its directory.",
    )

  def test_repository_check_sees_the_real_tree(self):
    # Guards against a vacuous pass (e.g. REPO_ROOT resolving to a runfiles subset).
    required = required_sources(REPO_ROOT)
    self.assertIn("kc_keras/train.py", required)
    self.assertIn("tests/build_targets_test.py", required)

  def test_complete_tree_has_nothing_missing(self):
    root = self._tree({
        "BUILD": "filegroup(name = 'cfg', srcs = glob(['*.yaml']))\n",
        "kc_keras/__init__.py": "",
        "kc_keras/a.py": "",
        "kc_keras/BUILD": """
            py_library(name = "kc_keras", srcs = ["__init__.py"])
            py_library(name = "a", srcs = [":a.py"], deps = [":kc_keras"])
        """,
        "kc_keras/sub/b.py": "",
        "kc_keras/sub/BUILD.bazel": "py_binary(name = 'b', srcs = ['//kc_keras/sub:b.py'])\n",
        "export/__init__.py": "",
        "export/BUILD": "py_library(name = 'export', srcs = ['__init__.py'])\n",
        "tests/x/foo_test.py": "",
        "tests/x/BUILD": """
            load("//third_party/bazel_offline:pytest.bzl", "kc_py_test")
            kc_py_test(name = "foo_test", deps = ["//kc_keras:a"])
        """,
        "tests/conftest.py": "",
        "tests/BUILD": "py_library(name = 'conftest', srcs = ['conftest.py'])\n",
    })
    self.assertEqual(missing_targets(root), [])
    self.assertEqual(
        required_sources(root),
        {"kc_keras/__init__.py", "kc_keras/a.py", "kc_keras/sub/b.py",
         "export/__init__.py", "tests/x/foo_test.py", "tests/conftest.py"},
    )

  @parameterized.named_parameters(
      ("new_module", "kc_keras/new_module.py", ""),
      ("module_in_new_package", "kc_keras/newpkg/mod.py", ""),
      ("exporter", "export/export_tflite.py", ""),
      ("test_file", "tests/x/bar_test.py", ""),
      ("test_at_tests_root", "tests/top_test.py", ""),
      ("test_helper", "tests/x/doubles.py", ""),
      ("conftest", "tests/x/conftest.py", ""),
  )
  def test_untargeted_file_is_reported(self, rel, text):
    root = self._tree({
        "kc_keras/a.py": "",
        "kc_keras/BUILD": "py_library(name = 'a', srcs = ['a.py'])\n",
        "tests/x/foo_test.py": "",
        "tests/x/BUILD": "kc_py_test(name = 'foo_test')\n",
        rel: text,
    })
    self.assertEqual(missing_targets(root), [rel])

  def test_same_basename_in_other_package_does_not_count(self):
    root = self._tree({
        "kc_keras/a.py": "",
        "kc_keras/sub/a.py": "",
        "kc_keras/BUILD": "py_library(name = 'a', srcs = ['a.py'])\n",
        "kc_keras/sub/BUILD": "py_library(name = 'other', srcs = [])\n",
    })
    self.assertEqual(missing_targets(root), ["kc_keras/sub/a.py"])

  def test_pycache_is_ignored(self):
    root = self._tree({
        "kc_keras/__pycache__/a.py": "",
        "kc_keras/BUILD": "",
    })
    self.assertEqual(missing_targets(root), [])

  def test_unparsable_build_file_names_the_file(self):
    root = self._tree({"kc_keras/BUILD": "py_library(name = 'a',\n"})
    with self.assertRaisesRegex(BuildFileError, r"kc_keras/BUILD"):
      declared_sources(root)


  def test_repository_targets_declare_what_they_import(self):
    problems = undeclared_imports(REPO_ROOT)
    self.assertEqual(problems, [], msg="Add the missing deps to these BUILD targets.")

  def test_nested_import_without_dep_is_reported(self):
    root = self._tree({
        "kc_keras/a.py": "",
        "kc_keras/b.py": "def f():\n  from kc_keras import a\n",
        "kc_keras/BUILD": """
            py_library(name = "a", srcs = ["a.py"])
            py_library(name = "b", srcs = ["b.py"])
        """,
    })
    self.assertEqual(undeclared_imports(root), [
        "//kc_keras:b: kc_keras/b.py imports kc_keras/a.py, which no dep provides"])

  def test_transitive_and_macro_deps_provide_imports(self):
    root = self._tree({
        "kc_keras/a.py": "",
        "kc_keras/b.py": "import kc_keras.a\n",
        "kc_keras/BUILD": """
            py_library(name = "a", srcs = ["a.py"])
            py_library(name = "b", srcs = ["b.py"], deps = [":a"])
        """,
        "tests/conftest.py": "import helper\n",
        "tests/helper.py": "",
        "tests/BUILD": """
            py_library(name = "conftest", srcs = ["conftest.py"], deps = [":helper"])
            py_library(name = "helper", srcs = ["helper.py"])
        """,
        "tests/x/foo_test.py": "import helper\nfrom kc_keras.a import thing\nimport numpy\n",
        "tests/x/BUILD": "kc_py_test(name = 'foo_test', deps = ['//kc_keras:b'])\n",
    })
    self.assertEqual(undeclared_imports(root), [])

  def test_helper_beside_the_test_needs_a_dep(self):
    root = self._tree({
        "tests/x/doubles.py": "",
        "tests/x/foo_test.py": "from doubles import Fake\n",
        "tests/x/BUILD": """
            py_library(name = "doubles", srcs = ["doubles.py"])
            kc_py_test(name = "foo_test")
        """,
    })
    self.assertEqual(undeclared_imports(root), [
        "//tests/x:foo_test: tests/x/foo_test.py imports tests/x/doubles.py, "
        "which no dep provides"])


if __name__ == "__main__":
  absltest.main()
