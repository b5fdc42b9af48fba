"""What every Snakemake script shares: logging into the rule's log, and one-line errors."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOG = logging.getLogger("attnbench")


class UserError(RuntimeError):
    """A failure the user can fix; its message is one line that names the fix."""


@contextlib.contextmanager
def rule_logging(snakemake: Any) -> Iterator[logging.Logger]:
    """Send attnbench's log to the rule's `log:` file and stderr; log any traceback.

    A UserError ends the job with its one-line message; anything else keeps its
    full traceback in the log, then fails the job.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    log_files = list(getattr(snakemake, "log", []) or [])
    if log_files:
        Path(log_files[0]).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_files[0], mode="w"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    for handler in handlers:
        handler.setFormatter(fmt)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield LOG
    except UserError as exc:
        LOG.error("%s", exc)
        raise SystemExit(f"Error: {exc}") from None
    except BaseException:
        LOG.error("job failed:\n%s", traceback.format_exc())
        raise
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
