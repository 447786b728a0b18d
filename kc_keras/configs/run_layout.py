"""Where a pipeline's stages live under its work directory: the one layout.

    <workdir>/<trunk>          the network the teachers start from (the
                               generalist, or a larger trunk)
    <workdir>/teachers         one teacher per vertical + teachers_manifest.json
    <workdir>/target_cache     the offline soft targets

The registered experiments default to these paths under `runs/<name>`
(where their pipeline puts them); a pipeline points them at its own
`--workdir`.
"""

TEACHERS = "teachers"
TARGET_CACHE = "target_cache"


def teacher_paths(workdir: str, trunk: str) -> dict:
  """The config override that puts a student's teachers under `workdir`.

  Args:
    workdir: the pipeline's work directory (or a placeholder such as
      '{workdir}' that the pipeline fills in).
    trunk: the trunk's directory name under `workdir`.

  Returns:
    `{'task': {'specialists': {'init_checkpoint': <workdir>/<trunk>},
    'distillation': {'teachers_dir': ..., 'cache_dir': ...}}}`.
  """
  return {"task": {
      "specialists": {"init_checkpoint": f"{workdir}/{trunk}"},
      "distillation": {"teachers_dir": f"{workdir}/{TEACHERS}",
                       "cache_dir": f"{workdir}/{TARGET_CACHE}"},
  }}
