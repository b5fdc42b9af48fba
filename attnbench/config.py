"""Load, validate and resolve the workflow configuration.

Kept free of heavy imports (no torch): the Snakefile imports it at parse time,
and `snakemake -n` must stay fast.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from attnbench import backend_records
from attnbench.errors import ConfigError

SCHEMA_FILE = "config.schema.yaml"
ROBOFLOW_KEY_ENV = "ROBOFLOW_API_KEY"
#: The one-line problem of a Roboflow download without a key (at parse time and in the job).
ROBOFLOW_KEY_MISSING = (
    f"{ROBOFLOW_KEY_ENV} is not set: set {ROBOFLOW_KEY_ENV} to your Roboflow API key "
    "(app.roboflow.com -> Settings -> API Keys), or use dataset.source: demo or local"
)


# A schema node `x-enum: backends` takes every backend record's name as its `enum`: the
# schema never spells the backends, so adding one is its record (attnbench.backend_records).
NAMED_ENUMS: dict[str, Callable[[], Iterable[str]]] = {"backends": backend_records.names}


def _fill_enums(node: Any) -> Any:
    if isinstance(node, dict):
        named = node.pop("x-enum", None)
        for value in node.values():
            _fill_enums(value)
        if named is not None:
            node["enum"] = list(NAMED_ENUMS[named]())
    elif isinstance(node, list):
        for value in node:
            _fill_enums(value)
    return node


def load_schema() -> dict[str, Any]:
    text = resources.files("attnbench.schemas").joinpath(SCHEMA_FILE).read_text()
    return _fill_enums(yaml.safe_load(text))


def _extend_with_defaults(validator_class):
    """A validator that fills `default` values, recursively, while it validates."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    # JSON Schema counts 1.0 as an integer; a seed of 1.0 would name a `seed1.0` folder
    # that no rule can make, so only real ints (never bools) pass as integers here.
    type_checker = validator_class.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return validators.extend(
        validator_class, {"properties": set_defaults}, type_checker=type_checker
    )


_DefaultFillingValidator = _extend_with_defaults(Draft202012Validator)
# The same type rules without filling defaults: to ask whether a value already fits.
_CheckingValidator = validators.extend(
    Draft202012Validator, type_checker=_DefaultFillingValidator.TYPE_CHECKER
)

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
_UNPARSED = object()


def _parse_string(text: str) -> Any:
    """What a command-line string spells: an int, a float, true/false, null, or YAML [..]/{..}.

    Snakemake's `--config key=value` turns list items and nested values into strings
    (`seeds=[0,1]` arrives as ["0", "1"]); anything else is left _UNPARSED.
    """
    stripped = text.strip()
    for parse in (int, float):
        with contextlib.suppress(ValueError):
            return parse(stripped)
    if stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    if stripped in ("null", "~"):
        return None
    if stripped[:1] in ("[", "{"):
        with contextlib.suppress(yaml.YAMLError):
            return yaml.safe_load(stripped)
    return _UNPARSED


def _fits_type(value: Any, schema: dict[str, Any]) -> bool:
    """Whether `value` has a type the schema allows (its `type`, or one of its `enum`)."""
    if "enum" in schema and "type" not in schema:
        return any(type(value) is type(v) and value == v for v in schema["enum"])
    types = schema.get("type")
    if types is None:
        return False
    checker = _CheckingValidator(schema)
    return any(checker.is_type(value, t) for t in ([types] if isinstance(types, str) else types))


def coerce(value: Any, schema: dict[str, Any]) -> Any:
    """Turn command-line strings into the type the schema asks for, where unambiguous.

    A string that is already valid stays a string; otherwise it is parsed (int, float,
    true/false, null, YAML list or mapping) and kept only if the result has an allowed
    type, so `epochs="0"` becomes 0 (and fails on `minimum`), while `seeds=["a"]` or
    `epochs="3.5"` stay strings and fail with the usual message naming key and value.
    """
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: coerce(v, props[k]) if k in props else v for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items")
        return [coerce(v, items) for v in value] if isinstance(items, dict) else value
    if not isinstance(value, str) or _CheckingValidator(schema).is_valid(value):
        return value
    parsed = _parse_string(value)
    if isinstance(parsed, (dict, list)) and _fits_type(parsed, schema):
        return coerce(parsed, schema)
    if parsed is not _UNPARSED and _fits_type(parsed, schema):
        return parsed
    return value


def _key_path(error: ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def _allowed(error: ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "enum":
        return "allowed: " + ", ".join(map(str, error.validator_value))
    if error.validator == "additionalProperties":
        allowed = sorted(error.parent.schema.get("properties", {})) if error.parent else []
        allowed = allowed or sorted(schema.get("properties", {}))
        return "allowed keys: " + ", ".join(allowed)
    if error.validator == "uniqueItems":
        return "remove the duplicate"
    if error.validator == "multipleOf":
        return f"use a multiple of {error.validator_value}"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return f"{error.validator} {error.validator_value}"
    if error.validator == "minItems":
        return f"list at least {error.validator_value} item(s)"
    if error.validator == "type":
        return f"expected {error.validator_value}"
    if error.validator == "pattern":
        return f"must match {error.validator_value}"
    return error.validator


def _format(error: ValidationError) -> str:
    key = _key_path(error)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        key = ".".join([*map(str, error.absolute_path), extra[0]]) if extra else key
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"config key '{key}' is unknown (allowed keys here: {allowed})"
    value = json.dumps(error.instance, default=str)
    if len(value) > 80:
        value = value[:77] + "..."
    return f"config value {key} = {value} is invalid: {error.message} ({_allowed(error)})"


def validate(config: dict[str, Any] | None) -> dict[str, Any]:
    """Validate `config` against the schema and return a copy with defaults filled.

    Raises ConfigError with a one-line message naming the key and the fix.
    """
    config = copy.deepcopy(config or {})
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    schema = load_schema()
    config = coerce(config, schema)  # `--config seeds=[0,1]` hands over ["0", "1"]
    validator = _DefaultFillingValidator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.path), e.path))
    if errors:
        # The deepest, most specific error first; one line only.
        best = min(errors, key=lambda e: -len(e.absolute_path))
        raise ConfigError(_format(best))
    _check_semantics(config)
    return config


def _check_semantics(config: dict[str, Any]) -> None:
    data = config["dataset"]
    if data["source"] == "local":
        local = data.get("local")
        if not local:
            raise ConfigError(
                "config value dataset.local is empty but dataset.source = local: "
                "set dataset.local to a folder or .zip in YOLO layout"
            )
        if not Path(local).expanduser().exists():
            raise ConfigError(
                f"config value dataset.local = {local!r} does not exist: "
                "point it at a folder or .zip holding data.yaml and train/valid images"
            )
    baseline = config["analysis"]["baseline"]
    if baseline not in config["backends"]:
        raise ConfigError(
            f"config value analysis.baseline = {baseline!r} is not in backends "
            f"({', '.join(config['backends'])}): add it to backends or pick one of them"
        )


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a YAML config file (malformed YAML is a ConfigError)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from exc
    return validate(raw)


# --------------------------------------------------------------------------- #
# Resolution of environment-dependent choices (done once, at parse time, so that
# the resolved values flow into rule params and invalidate what they should).


@dataclass(frozen=True)
class DatasetChoice:
    source: str  # roboflow | local | demo (never auto)
    name: str  # folder name under results/data/
    reason: str  # why this source, for the report


def resolve_dataset(config: dict[str, Any], environ: dict[str, str] | None = None) -> DatasetChoice:
    environ = os.environ if environ is None else environ
    data = config["dataset"]
    source = data["source"]
    has_key = bool(environ.get(ROBOFLOW_KEY_ENV, "").strip())  # as the download reads it
    if source == "auto":
        if has_key:
            source, reason = "roboflow", f"dataset.source = auto and {ROBOFLOW_KEY_ENV} is set"
        else:
            source = "demo"
            reason = (
                f"dataset.source = auto and {ROBOFLOW_KEY_ENV} is not set: "
                "fell back to the embedded synthetic demo"
            )
    else:
        reason = f"dataset.source = {source}"
    if source == "roboflow":
        rf = data["roboflow"]
        name = f"roboflow-{rf['workspace']}-{rf['project']}-v{rf['version']}"
    elif source == "local":
        local = Path(data["local"]).expanduser()
        stem = local.name[: -len(".zip")] if local.name.endswith(".zip") else local.name
        # The folder name becomes the {dataset} wildcard ([A-Za-z0-9._-]+): a download
        # named "weeds (1).zip" would otherwise match no rule (MissingInputException).
        name = "local-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-") or "dataset")
    else:
        name = "demo"
    return DatasetChoice(source=source, name=name, reason=reason)


def roboflow_key_problem(
    choice: DatasetChoice, fetched: bool = False, environ: dict[str, str] | None = None
) -> str | None:
    """The one-line problem when the Roboflow dataset must be downloaded without a key.

    Checked when Snakemake plans the DAG (rules/common.smk), so the line comes before any
    job runs rather than from fetch_dataset after others. `fetched`: the dataset is
    already in results/data/<name>/source, so nothing needs the key (a report or a
    re-analysis runs without it).
    """
    environ = os.environ if environ is None else environ
    if choice.source != "roboflow" or fetched or environ.get(ROBOFLOW_KEY_ENV, "").strip():
        return None
    return f"{ROBOFLOW_KEY_MISSING} ({choice.reason})"


def effective_train(config: dict[str, Any], choice: DatasetChoice) -> dict[str, Any]:
    """The training settings actually used: the demo overrides apply on the demo."""
    train = dict(config["train"])
    if choice.source == "demo":
        train.update(config["dataset"]["demo"]["train"])
    return train


PIP_ALTERNATIVE = "pip install -e . && snakemake --cores all"


def missing_conda(
    deployment_methods: Iterable[Any], which: Callable[[str], str | None] = shutil.which
) -> str | None:
    """The one-line problem when `--use-conda`/`--sdm conda` is asked for without conda.

    Snakemake 9 runs `conda` itself (mamba alone is not enough) and, without it, fails
    only later with "Error running conda info". `deployment_methods` is
    `workflow.deployment_settings.deployment_method` (a set of DeploymentMethod).
    """
    names = {str(getattr(m, "name", m)).lower() for m in deployment_methods}
    if "conda" not in names or which("conda"):
        return None
    mamba = " (mamba is, but Snakemake 9 calls conda itself)" if which("mamba") else ""
    return (
        f"--use-conda (--sdm conda) needs the `conda` command, which is not on PATH{mamba}: "
        "install Miniforge (conda-forge's installer) and run "
        "`snakemake --cores 1 --use-conda` again, or run without conda: "
        f"`{PIP_ALTERNATIVE}`"
    )


def cuda_hint() -> bool:
    """A cheap guess (no torch import) whether this host has an NVIDIA GPU.

    Used only to decide Snakemake resources; availability itself is decided by
    attnbench.backends.registry at run time and recorded, never guessed.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/gpus").exists() or shutil.which("nvidia-smi") is not None


def local_fingerprint(path: str | os.PathLike) -> str:
    """A digest of a local dataset's file names, sizes and mtimes (or the zip's).

    In fetch_dataset's params it makes Snakemake import the dataset again once any file
    changes; otherwise a rerun after fixing the dataset would validate the old copy.
    """
    root = Path(path).expanduser()
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        stat = file.stat()
        name = file.relative_to(root).as_posix() if file != root else root.name
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def canonical(value: Any) -> str:
    """A canonical JSON string for rule params (sorted keys, stable floats)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


KEYED_SEP = "__"  # `<name>__<key>`: a keyed param's name (attnbench.env.scriptutil.settings_param)


def keyed(name: str, settings: Mapping[str, Any]) -> dict[str, str]:
    """Rule params for a settings mapping, one per key: `<name>__<key>` = canonical {key: value}.

    `snakemake -n` prints a changed param's whole value, before and now; one param per key
    keeps that reason line to the keys that changed (a whole settings section is hundreds
    of characters, twice). Snakemake compares params as a set of values with the names
    ignored, so each value carries its key: a swap (imgsz 64, batch 32 -> 32, 64) still
    counts as a change. Use in a rule as `params: **cfg.keyed("train", TRAIN)`.
    """
    return {f"{name}{KEYED_SEP}{key}": canonical({key: value}) for key, value in settings.items()}


def digest(value: Any) -> str:
    """A short digest of a value's canonical JSON: a param that reruns a rule whenever the
    value changes, without printing the value in every dry run."""
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:16]
