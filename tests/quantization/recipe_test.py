"""Tests for quantization.recipe: the record, its checks, and the export reading it."""

import json
import os
import subprocess
import sys

import pytest

from export import export_saved_model_lib
from export import export_tflite_lib
import export_fixtures
from export_test_utils import MODEL_NAME
from kc_keras.quantization import recipe as recipe_lib
from kc_keras.utils import records

FINGERPRINT = "f" * 64


def _recipe(**changes):
  values = dict(quantization="int8", weight_target="int8",
                activations="int8", logit_floor=-12.0,
                float_layers=("block0_conv0",), float_head=True,
                equalize_strength=0.5, source_checkpoint="/runs/a/ckpt-120",
                checkpoint="ckpt-5", hierarchy_fingerprint=FINGERPRINT)
  values.update(changes)
  return recipe_lib.QuantizationRecipe(**values)


def test_round_trip(tmp_path):
  recipe = _recipe()
  path = recipe_lib.write(recipe, str(tmp_path))
  assert os.path.basename(path) == recipe_lib.RECIPE_FILE
  assert recipe_lib.read(path) == recipe
  with open(path) as f:
    assert records.SEAL_KEY in json.load(f)
  assert recipe.export_settings() == dict(
      quantization="int8", logit_floor=-12.0, float_layers=["block0_conv0"],
      float_head=True)
  assert _recipe(logit_floor=None).export_settings()["logit_floor"] == "none"


def _write_record(tmp_path, record, seal=True):
  path = str(tmp_path / recipe_lib.RECIPE_FILE)
  with open(path, "w") as f:
    json.dump(records.seal(record) if seal else record, f)
  return path


@pytest.mark.parametrize("change, message", [
    (dict(version=2), "recipe version 2 is not 1"),
    (dict(quantization="int4"), "quantization='int4' is not one of"),
    (dict(float_head="yes"), "'float_head' = 'yes' has the wrong type"),
    (dict(extra=1), r"unknown fields \['extra'\]"),
])
def test_malformed_recipes_are_named(tmp_path, change, message):
  record = dict(recipe_lib.to_record(_recipe()), **change)
  path = _write_record(tmp_path, record)
  with pytest.raises(recipe_lib.RecipeError, match=message):
    recipe_lib.read(path)


def test_unreadable_and_edited_recipes_are_named(tmp_path):
  path = str(tmp_path / recipe_lib.RECIPE_FILE)
  with open(path, "w") as f:
    f.write("{not json")
  with pytest.raises(recipe_lib.RecipeError, match="not valid JSON"):
    recipe_lib.read(path)
  record = records.seal(recipe_lib.to_record(_recipe()))
  record["logit_floor"] = -2.0
  with open(path, "w") as f:
    json.dump(record, f)
  with pytest.raises(recipe_lib.RecipeError, match="changed after"):
    recipe_lib.read(path)


def test_check_bound_names_both_sides():
  recipe = _recipe()
  assert recipe_lib.check_bound(recipe, "r.json", "/x/ckpt-5",
                                FINGERPRINT) is recipe
  with pytest.raises(recipe_lib.RecipeError,
                     match="describes ckpt-5, not ckpt-4"):
    recipe_lib.check_bound(recipe, "r.json", "/x/ckpt-4", FINGERPRINT)
  with pytest.raises(recipe_lib.RecipeError, match="another run"):
    recipe_lib.check_bound(recipe, "r.json", "/x/ckpt-5", "0" * 64)


def test_resolve_takes_unset_settings_from_the_recipe():
  lines = []
  settings = recipe_lib.resolve_export_settings(
      _recipe(quantization="int8_float_head"), "r.json",
      {"float_head": True}, False, lines.append)
  assert settings == dict(quantization="int8_float_head", logit_floor=-12.0,
                          float_layers=["block0_conv0"], float_head=True)
  assert len(lines) == 1 and "quantization='int8_float_head'" in lines[0]
  # An equal value in another spelling is no contradiction.
  recipe_lib.resolve_export_settings(
      _recipe(), "r.json", {"logit_floor": "-12", "quantization": "int8"},
      False, lines.append)


@pytest.mark.parametrize("given, message", [
    ({"quantization": "dynamic"},
     "--quantization='dynamic' contradicts r.json .quantization='int8'"),
    ({"logit_floor": "-16"},
     "--logit_floor='-16' contradicts r.json .logit_floor=-12.0"),
    ({"float_layers": []}, "--float_layers=.. contradicts"),
])
def test_a_contradicting_flag_is_an_error_unless_overridden(given, message):
  with pytest.raises(recipe_lib.RecipeError,
                     match=message + ".*--override_recipe"):
    recipe_lib.resolve_export_settings(_recipe(), "r.json", given, False,
                                       lambda _: None)
  settings = recipe_lib.resolve_export_settings(_recipe(), "r.json", given,
                                                True, lambda _: None)
  for name, value in given.items():
    assert settings[name] == value


def _run_with_recipe(reference, params, directory, recipe_checkpoint):
  """A run dir of the reference network at ckpt-5 with a recipe bound to `recipe_checkpoint`."""
  prefix = export_fixtures.write_run_dir(reference.network, params,
                                         reference.hierarchy, directory, 5)
  recipe_lib.write(_recipe(checkpoint=recipe_checkpoint,
                           hierarchy_fingerprint=(
                               reference.hierarchy.fingerprint)), directory)
  return prefix


def test_export_carries_the_recipe_and_export_tflite_reads_it(
    reference, trained_run, tmp_path):
  params, _ = trained_run
  run = str(tmp_path / "run")
  _run_with_recipe(reference, params, run, "ckpt-5")
  export = export_saved_model_lib.export_saved_model(
      params, run, str(tmp_path / "export"), model_name=MODEL_NAME)
  copied = os.path.join(export.version_dir, export_saved_model_lib.ASSETS_EXTRA,
                        recipe_lib.RECIPE_FILE)
  assert recipe_lib.read(copied) == recipe_lib.read(
      os.path.join(run, recipe_lib.RECIPE_FILE))
  defaults = dict(quantization="none", logit_floor="default",
                  float_layers=[], float_head=True)
  lines = []
  settings = export_tflite_lib.resolve_settings(export.version_dir, defaults,
                                                {}, log=lines.append)
  assert settings == dict(quantization="int8", logit_floor=-12.0,
                          float_layers=["block0_conv0"], float_head=True)
  assert len(lines) == 1
  with pytest.raises(recipe_lib.RecipeError, match="'dynamic' contradicts"):
    export_tflite_lib.resolve_settings(export.version_dir, defaults,
                                       {"quantization": "dynamic"})
  # The binary says it in one line, before converting anything.
  output = str(tmp_path / "refused.tflite")
  root = os.path.dirname(os.path.dirname(export_tflite_lib.__file__))
  refused = subprocess.run(
      [sys.executable, "-m", "export.export_tflite",
       f"--saved_model_dir={export.version_dir}", f"--output={output}",
       "--quantization=dynamic"], capture_output=True, text=True,
      check=False, cwd=root,
      env=dict(os.environ, PYTHONPATH=os.pathsep.join(
          [root, os.environ.get("PYTHONPATH", "")])))
  assert refused.returncode == 1
  assert refused.stderr.strip().splitlines()[-1].startswith(
      "export_tflite: error: --quantization='dynamic' contradicts ")
  assert not os.path.exists(output)
  # An export without a recipe: the given flags over the defaults.
  plain = export_saved_model_lib.export_saved_model(
      params, trained_run[1], str(tmp_path / "plain"), model_name=MODEL_NAME)
  assert export_tflite_lib.resolve_settings(
      plain.version_dir, defaults, {"quantization": "fp16"}) == dict(
          defaults, quantization="fp16")


def test_export_refuses_a_recipe_of_another_checkpoint(reference, trained_run,
                                                       tmp_path):
  params, _ = trained_run
  run = str(tmp_path / "run")
  _run_with_recipe(reference, params, run, "ckpt-9")
  with pytest.raises(recipe_lib.RecipeError, match="describes ckpt-9, not "
                     "ckpt-5"):
    export_saved_model_lib.export_saved_model(
        params, run, str(tmp_path / "export"), model_name=MODEL_NAME)
  assert not os.path.exists(tmp_path / "export" / MODEL_NAME / "1")
