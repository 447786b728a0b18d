"""Records read back from disk: named parse errors, file digests and seals."""

import hashlib
import json
from typing import Any, Dict, Type

SEAL_KEY = "record_sha256"
_HASH_CHUNK_BYTES = 1 << 20


def read_json(path: str, error: Type[Exception] = ValueError) -> Any:
  """Parses the JSON file `path`, naming it in every failure.

  Args:
    path: the file.
    error: the exception class raised (e.g. the caller's own error type).

  Returns:
    The parsed value.

  Raises:
    error: a missing, unreadable, truncated or non-JSON file, as one line
      naming `path` and what is wrong.
  """
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise error(f"{path}: cannot be read ({e})") from None
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise error(f"{path}: not valid JSON (truncated or edited?): {e.msg} at "
                f"line {e.lineno} column {e.colno}") from None


def file_sha256(path: str) -> str:
  """The sha256 hex digest of a file's bytes, read in chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_HASH_CHUNK_BYTES), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _digest(record: Dict) -> str:
  body = {k: v for k, v in record.items() if k != SEAL_KEY}
  text = json.dumps(body, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(record: Dict) -> Dict:
  """Returns a copy of `record` with its own digest under `SEAL_KEY`.

  The seal makes a hand edit of any field visible (`check_seal`); it is a
  consistency check against accidents and stale copies, not a signature.
  """
  out = dict(record)
  out[SEAL_KEY] = _digest(record)
  return out


def check_seal(record: Any, path: str,
               error: Type[Exception] = ValueError) -> Dict:
  """Checks that `record` (read from `path`) is an unedited `seal` output.

  Args:
    record: the parsed JSON.
    path: where it was read from, for the message.
    error: the exception class raised.

  Returns:
    `record`.

  Raises:
    error: not an object, no seal, or fields changed after it was written.
  """
  if not isinstance(record, dict):
    raise error(f"{path}: expected a JSON object, got "
                f"{type(record).__name__}")
  if SEAL_KEY not in record:
    raise error(f"{path}: no {SEAL_KEY!r} (written by an older version or "
                "by hand); write it again with the tool that made it")
  if record[SEAL_KEY] != _digest(record):
    raise error(f"{path}: its fields were changed after it was written "
                f"({SEAL_KEY} does not match); write it again with the tool "
                "that made it")
  return record


def missing_keys(record: Dict, keys, path: str,
                 error: Type[Exception] = ValueError) -> None:
  """Raises `error` naming the keys of `keys` that `record` lacks."""
  missing = [k for k in keys if k not in record]
  if missing:
    raise error(f"{path}: missing {missing}")
