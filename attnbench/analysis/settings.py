"""The `analysis` settings of the aggregate tables (baseline, alpha, TOST margin, thresholds).

Their defaults are the schema's, read through `attnbench.config`, never copied here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from attnbench import config


def _defaults(spec: Mapping[str, Any]) -> Any:
    """A schema node's default, with the defaults of an object's properties filled in."""
    value = copy.deepcopy(spec.get("default"))
    if spec.get("type") == "object" and "properties" in spec:
        value = dict(value or {})
        for key, sub in spec["properties"].items():
            if key not in value and ("default" in sub or sub.get("type") == "object"):
                value[key] = _defaults(sub)
    return value


@cache
def _schema_analysis() -> str:
    return json.dumps(_defaults(config.load_schema()["properties"]["analysis"]))


def analysis_defaults() -> dict[str, Any]:
    """The `analysis` defaults of the config schema, the one place they are written."""
    return json.loads(_schema_analysis())


def analysis_settings(params: Mapping[str, Any] | str) -> dict[str, Any]:
    """The `analysis` settings from the rule's params (JSON text or dict).

    Accepts the whole config or its `analysis` section; missing keys take the schema's
    defaults. Top-level `backends` and `seeds`, when given, come along (the design that
    `planned_order` is computed from).
    """
    value = json.loads(params) if isinstance(params, str) else dict(params)
    section = value.get("analysis", value)
    defaults = analysis_defaults()
    merged = {**defaults, **section}
    merged["thresholds"] = {**defaults["thresholds"], **(section.get("thresholds") or {})}
    out = {
        "baseline": merged["baseline"],
        "alpha": float(merged["alpha"]),
        "tost_margin": float(merged["tost_margin"]),
        "replica": bool(merged["replica"]),
        "order_seed": int(merged["order_seed"]),
        "thresholds": {k: float(v) for k, v in merged["thresholds"].items()},
    }
    for key in ("backends", "seeds"):
        if key in value and "analysis" in value:
            out[key] = list(value[key])
    return out
