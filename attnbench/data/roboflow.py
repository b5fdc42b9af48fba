"""Download a Roboflow dataset version through the real `roboflow` SDK, made safe to automate.

The SDK (1.7.3) sets no request timeouts, polls forever while a version is generating or
an export is being prepared, returns "success" without downloading when its target folder
exists, and leaves a partial zip behind on failure. Here every request gets a timeout,
polling stops after `max_wait_s`, the SDK downloads into a fresh hidden folder that is
renamed into place only once verified, and every failure becomes a one-line UserError
that names the fix. The API key comes from ROBOFLOW_API_KEY only and is redacted from
anything this module prints, logs or raises.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import requests

from attnbench.config import ROBOFLOW_KEY_ENV, ROBOFLOW_KEY_MISSING
from attnbench.data.layout import (
    check_layout,
    find_splits,
    list_images,
    move_tree,
    read_data_yaml,
    staging_dir,
    write_source_yaml,
)
from attnbench.errors import UserError

LOG = logging.getLogger(__name__)
T = TypeVar("T")

#: How long to wait, in all, for Roboflow to generate a version or prepare an export.
DEFAULT_MAX_WAIT_S = 600.0
_KEY_IN_URL = re.compile(r"(api_key=)[^&\s'\"]+")


class _StillPreparing(Exception):
    """Raised from inside the SDK's polling loop once the wait limit has passed."""


def redact(text: str, secret: str | None) -> str:
    """`text` with the key (plain or URL-quoted) and any `api_key=` value masked."""
    if secret:
        for form in {secret, quote(secret, safe="")}:
            text = text.replace(form, "***")
    return _KEY_IN_URL.sub(r"\1***", text)


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _server_message(exc: BaseException) -> str:
    """The human part of an SDK error: Roboflow's JSON `error.message` when present."""
    text = str(exc.args[0]) if exc.args else str(exc)
    try:
        body = json.loads(text)
    except (TypeError, ValueError):
        return _one_line(text)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return _one_line(str(error.get("message") or error))
        return _one_line(str(error))
    return _one_line(text)


def _not_ready(response: requests.Response, streamed: bool) -> bool:
    """Whether Roboflow answered "not ready yet" (export 202, or version generating)."""
    if response.status_code == 202:
        return True
    if streamed or response.status_code != 200:
        return False
    if "json" not in response.headers.get("content-type", ""):
        return False
    try:
        version = response.json().get("version")
    except (ValueError, AttributeError):
        return False
    return isinstance(version, dict) and bool(
        version.get("generating") or version.get("images", 0) == 0
    )


@contextlib.contextmanager
def request_limits(timeout_s: float, max_wait_s: float) -> Iterator[None]:
    """Bound the SDK's network use while inside: a default timeout on every `requests`
    call, and an end to "not ready" polling once `max_wait_s` has passed.

    It patches `requests.Session.request` (which every `requests.get/post` goes through)
    and restores it on exit, like torch's `sdpa_kernel` selection idiom.
    """
    original = requests.Session.request
    started = time.monotonic()

    def request(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any):
        if len(args) < 7 and kwargs.get("timeout") is None:  # timeout is the 8th parameter
            kwargs["timeout"] = timeout_s
        response = original(self, method, url, *args, **kwargs)
        if (
            _not_ready(response, bool(kwargs.get("stream")))
            and time.monotonic() - started >= max_wait_s
        ):
            response.close()
            raise _StillPreparing(f"still not ready after {max_wait_s:g} s")
        return response

    requests.Session.request = request  # type: ignore[method-assign]
    try:
        yield
    finally:
        requests.Session.request = original  # type: ignore[method-assign]


class _RedactingStream(io.TextIOBase):
    """A text stream that masks the key before passing text on (the SDK prints freely)."""

    def __init__(self, target: Any, secret: str) -> None:
        self._target = target
        self._secret = secret

    def write(self, text: str) -> int:
        self._target.write(redact(text, self._secret))
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def _guarded_output(secret: str) -> Iterator[None]:
    """Mask the key in everything printed or logged while inside.

    The SDK's prints and tqdm bars go to stderr through a redacting stream; every log
    record (urllib3 logs each URL, key included, at DEBUG) is redacted when created.
    """
    stream = _RedactingStream(sys.stderr, secret)
    make_record = logging.getLogRecordFactory()
    plain = logging.Formatter()

    def redacting_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.msg, record.args = redact(record.getMessage(), secret), None
        if record.exc_info:
            record.exc_text = redact(plain.formatException(record.exc_info), secret)
        return record

    logging.setLogRecordFactory(redacting_record)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    finally:
        logging.setLogRecordFactory(make_record)


def _is_read_timeout(exc: BaseException) -> bool:
    """requests reports a stall in the middle of a streamed body as a ConnectionError."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen or not isinstance(item, BaseException):
            continue
        seen.add(id(item))
        if isinstance(item, requests.exceptions.Timeout) or type(item).__name__ in (
            "ReadTimeoutError",
            "TimeoutError",
            "timeout",
        ):
            return True
        todo.extend([*item.args, item.__cause__, item.__context__])
    return False


def _api_url() -> str:
    import roboflow.config

    return str(roboflow.config.API_URL)


class _Steps:
    """Runs each SDK step and turns what it raises into a one-line UserError."""

    def __init__(self, key: str, timeout_s: float, max_wait_s: float) -> None:
        self.key = key
        self.timeout_s = timeout_s
        self.max_wait_s = max_wait_s

    def run(self, doing: str, call: Callable[[], T], refused: Callable[[str], str]) -> T:
        """`doing` says what was going on; `refused(server_message)` words an API refusal."""
        from roboflow.adapters.rfapi import RoboflowError

        try:
            return call()
        except _StillPreparing:
            message = (
                f"Roboflow was still preparing the dataset after {self.max_wait_s:g} s while "
                f"{doing} (the SDK would wait forever): retry later, or generate/export the "
                "version in the Roboflow app first"
            )
        except requests.exceptions.ChunkedEncodingError:
            message = (
                f"the connection dropped before the end of the zip while {doing} (truncated "
                "download): run the workflow again"
            )
        except requests.exceptions.ConnectionError as exc:
            if _is_read_timeout(exc):
                message = self._timeout_message(doing)
            else:
                message = (
                    f"cannot reach the Roboflow server at {_api_url()} while {doing}: check the "
                    "network (or use dataset.source: demo or local)"
                )
        except requests.exceptions.Timeout:
            message = self._timeout_message(doing)
        except zipfile.BadZipFile as exc:
            message = (
                f"the zip Roboflow sent is damaged ({_one_line(str(exc), 80)}) while {doing}: "
                "run the workflow again; if it persists, re-export the version in the Roboflow app"
            )
        except (RoboflowError, RuntimeError) as exc:
            message = refused(_server_message(exc))
        except Exception as exc:  # the SDK's own bugs, e.g. a download without Content-Length
            LOG.error("Roboflow SDK failure:\n%s", redact(traceback.format_exc(), self.key))
            raise RuntimeError(
                redact(
                    f"the Roboflow SDK failed while {doing}: {type(exc).__name__}: "
                    f"{_one_line(str(exc))}",
                    self.key,
                )
            ) from None
        raise UserError(redact(message, self.key))

    def _timeout_message(self, doing: str) -> str:
        return (
            f"the Roboflow server at {_api_url()} did not answer within {self.timeout_s:g} s while "
            f"{doing}: retry, or raise dataset.roboflow.timeout_s on a slow connection"
        )


def _key_refused(message: str) -> str:
    """The SDK raises the same RuntimeError for a bad key and for a failing server."""
    if "error validating the api key" in message.lower():
        return (
            f"the Roboflow server kept failing while checking the API key ({message}): "
            "retry later (status: https://status.roboflow.com)"
        )
    return (
        f"Roboflow rejected the API key in {ROBOFLOW_KEY_ENV} ({message}): "
        "copy it again from app.roboflow.com -> Settings -> API Keys"
    )


def _version_list(project: Any) -> str:
    """The project's version numbers, for the "version not found" message (best effort)."""
    try:
        ids = [str(v["id"]).rsplit("/", 1)[-1] for v in project.get_version_information()]
    except Exception:
        return ""
    return f" (versions available: {', '.join(ids)})" if ids else " (the project has no versions)"


def _verify(folder: Path, what: str) -> None:
    """The export must be a YOLO dataset with images; otherwise nothing is kept."""
    if not (folder / "data.yaml").is_file():
        raise UserError(
            f"the Roboflow export {what} has no data.yaml: use a YOLO export format "
            "such as yolov11 in dataset.roboflow.format"
        )
    check_layout(folder, f"the Roboflow export {what}")
    if not any(list_images(split / "images") for split in find_splits(folder).values()):
        raise UserError(
            f"the Roboflow export {what} contains no images: check the version in the Roboflow app"
        )


def download(
    workspace: str,
    project: str,
    version: int,
    fmt: str,
    out_dir: str | os.PathLike,
    timeout_s: float = 60.0,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
) -> Path:
    """Download workspace/project/version in format `fmt` into `out_dir`, atomically.

    `timeout_s` bounds each request (a silent server fails after it); `max_wait_s` bounds
    the SDK's "still generating / exporting" polling. Returns `out_dir`.
    """
    key = os.environ.get(ROBOFLOW_KEY_ENV, "").strip()
    if not key:  # rules/common.smk stops earlier, when the DAG is planned
        raise UserError(ROBOFLOW_KEY_MISSING)
    out_dir = Path(out_dir)
    what = f"{workspace}/{project}/{version} ({fmt})"
    steps = _Steps(key, timeout_s, max_wait_s)
    LOG.info("downloading Roboflow dataset %s from %s", what, _api_url())
    started = time.monotonic()
    try:
        with (
            staging_dir(out_dir) as staging,
            request_limits(timeout_s, max_wait_s),
            _guarded_output(key),
        ):
            from roboflow import Roboflow

            rf = steps.run("checking the API key", lambda: Roboflow(api_key=key), _key_refused)
            ws = steps.run(
                f"opening workspace {workspace!r}",
                lambda: rf.workspace(workspace),
                lambda msg: (
                    f"Roboflow workspace {workspace!r} was not found or this API key "
                    f"cannot read it ({msg}): check dataset.roboflow.workspace (the first part of "
                    "the dataset's URL) and the key"
                ),
            )
            pr = steps.run(
                f"opening project {workspace}/{project}",
                lambda: ws.project(project),
                lambda msg: (
                    f"Roboflow project {project!r} was not found in workspace "
                    f"{workspace!r} ({msg}): check dataset.roboflow.project"
                ),
            )
            ver = steps.run(
                f"opening version {version} of {workspace}/{project}",
                lambda: pr.version(version),
                lambda msg: (
                    f"Roboflow version {version} of {workspace}/{project} was not "
                    f"found{_version_list(pr)}: check dataset.roboflow.version"
                ),
            )
            target = staging / ".roboflow-download"  # must not exist, or the SDK skips the download
            steps.run(
                f"downloading {what}",
                lambda: ver.download(fmt, location=str(target), overwrite=False),
                lambda msg: (
                    f"Roboflow could not export {what} ({msg}): check "
                    "dataset.roboflow.format (a YOLO format such as yolov11)"
                ),
            )
            _verify(target, what)
            move_tree(target, staging)
            target.rmdir()
            data = read_data_yaml(staging / "data.yaml")
            write_source_yaml(staging, out_dir, data, f"data.yaml of the Roboflow export {what}")
    except UserError as exc:
        raise UserError(redact(str(exc), key)) from None
    LOG.info("downloaded %s in %.1f s into %s", what, time.monotonic() - started, out_dir)
    return out_dir
