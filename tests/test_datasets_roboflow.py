"""Roboflow downloads through the real SDK against a loopback fake of the API.

Nothing inside `roboflow` is mocked: the SDK's own requests reach tests/roboflow_server.py.
Every failure must be one line, must not contain the key, and must leave no out_dir.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from attnbench.data import demo, fetch
from attnbench.data import roboflow as rf
from attnbench.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from roboflow_server import FakeRoboflow, zip_files, zip_folder  # noqa: E402

KEY = "testkey123"


@pytest.fixture(scope="module")
def dataset_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return zip_folder(demo.generate(tmp_path_factory.mktemp("export") / "ds", 3, 2, 64, seed=9))


@pytest.fixture(autouse=True)
def sdk_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The key in the environment; no user config or .env file can leak in."""
    monkeypatch.setenv("ROBOFLOW_API_KEY", KEY)
    monkeypatch.setenv("ROBOFLOW_CONFIG_DIR", str(tmp_path / "absent" / "config.json"))
    monkeypatch.delenv("ROBOFLOW_REGION", raising=False)
    monkeypatch.chdir(tmp_path)


def _download(server: FakeRoboflow, out: Path, **kwargs: Any) -> Path:
    args = {
        "workspace": server.workspace,
        "project": server.project,
        "version": server.version,
        "fmt": server.fmt,
        "timeout_s": 1.0,
        "max_wait_s": 0.0,
    }
    args.update(kwargs)
    return rf.download(
        args.pop("workspace"),
        args.pop("project"),
        args.pop("version"),
        args.pop("fmt"),
        out,
        **args,
    )


def _assert_no_trace(out: Path) -> None:
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def _assert_secret_kept(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err + caplog.text


def test_download_through_the_sdk(
    dataset_zip: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "data" / "source"
    with FakeRoboflow(zip_bytes=dataset_zip) as server:
        assert _download(server, out) == out
    routes = [line.rsplit("-> ", 1)[1] for line in server.log]
    assert routes[0] == "auth" and routes[-1] == "download"
    assert {"workspace", "project", "version", "export"} <= set(routes)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve()) and data["names"] == {0: "crop", 1: "weed"}
    assert len(list((out / "train" / "images").glob("*.jpg"))) == 3
    assert len(list((out / "valid" / "labels").glob("*.txt"))) == 2
    assert not (out / "roboflow.zip").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["source"]
    assert requests.Session.request.__name__ == "request"
    assert requests.Session.request.__qualname__ == "Session.request"  # the patch is gone
    _assert_secret_kept(capsys, caplog)


def test_format_not_yet_exported_goes_through_export(dataset_zip: bytes, tmp_path: Path) -> None:
    with FakeRoboflow(zip_bytes=dataset_zip, exported=False) as server:
        _download(server, tmp_path / "source", max_wait_s=60)
    assert sum(line.endswith("-> export") for line in server.log) >= 2  # export() then download()
    assert (tmp_path / "source" / "data.yaml").is_file()


def test_existing_out_dir_is_replaced_only_on_success(dataset_zip: bytes, tmp_path: Path) -> None:
    out = tmp_path / "source"
    (out / "old").mkdir(parents=True)
    with FakeRoboflow(zip_bytes=dataset_zip) as server:
        _download(server, out)
    assert not (out / "old").exists() and (out / "data.yaml").is_file()


def test_fetch_dispatches_roboflow_specs(dataset_zip: bytes, tmp_path: Path) -> None:
    with FakeRoboflow(zip_bytes=dataset_zip):
        spec = {
            "source": "roboflow",
            "name": "roboflow-acme-weeds-v3",
            "roboflow": {
                "workspace": "acme",
                "project": "weeds",
                "version": 3,
                "format": "yolov11",
            },
        }
        fetch(spec, tmp_path / "source", timeout_s=2)
    assert (tmp_path / "source" / "train" / "images").is_dir()


def test_no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ROBOFLOW_API_KEY")
    out = tmp_path / "source"
    with FakeRoboflow() as server, pytest.raises(UserError) as exc:
        _download(server, out)
    message = str(exc.value)
    assert "set ROBOFLOW_API_KEY" in message and "dataset.source: demo or local" in message
    assert "\n" not in message and server.log == []
    _assert_no_trace(out)


FAILURES = {
    "bad key": ({}, {}, "wrongkey9", ["rejected the API key", "This API key does not exist"]),
    "unknown workspace": ({}, {"workspace": "nobody"}, KEY, ["workspace 'nobody' was not found"]),
    "unknown project": (
        {},
        {"project": "nope"},
        KEY,
        ["project 'nope' was not found in workspace 'acme'"],
    ),
    "unknown version": (
        {},
        {"version": 9},
        KEY,
        ["version 9 of acme/weeds was not found", "available: 3"],
    ),
    "unknown format": (
        {},
        {"fmt": "nosuchformat"},
        KEY,
        ["could not export", "dataset.roboflow.format"],
    ),
    "bad zip": (
        {"zip_bytes": b"<html>gateway error</html>"},
        {},
        KEY,
        ["zip Roboflow sent is damaged"],
    ),
    "truncated zip": ({"truncate": True}, {}, KEY, ["truncated download"]),
    "zip without data.yaml": (
        {"zip_bytes": zip_files({"train/images/a.jpg": b"x", "README.txt": b"hi"})},
        {},
        KEY,
        ["has no data.yaml", "yolov11"],
    ),
    "zip without images": (
        {
            "zip_bytes": zip_files(
                {"data.yaml": b"names: [a]\n", "train/images/": b"", "valid/images/": b""}
            )
        },
        {},
        KEY,
        ["contains no images"],
    ),
    "zip without valid split": (
        {"zip_bytes": zip_files({"data.yaml": b"names: [a]\n", "train/images/a.jpg": b"x"})},
        {},
        KEY,
        ["no valid/images"],
    ),
    "version generating forever": ({"generating": True}, {}, KEY, ["still preparing", "after 0 s"]),
    "export pending forever": (
        {"exported": False, "export_pending": True},
        {},
        KEY,
        ["still preparing", "would wait forever"],
    ),
    "hang at auth": (
        {"hang": "auth"},
        {},
        KEY,
        ["did not answer within 1 s", "checking the API key"],
    ),
    "hang at project": (
        {"hang": "project"},
        {},
        KEY,
        ["did not answer within 1 s", "opening project"],
    ),
    "hang inside the zip": (
        {"hang": "download-body"},
        {},
        KEY,
        ["did not answer within 1 s", "downloading"],
    ),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failures_are_one_line_and_leave_nothing(
    case: str,
    dataset_zip: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server_args, call_args, key, expected = FAILURES[case]
    monkeypatch.setenv("ROBOFLOW_API_KEY", key)
    out = tmp_path / "data" / "source"
    started = time.monotonic()
    server = FakeRoboflow(**{"zip_bytes": dataset_zip, **server_args})
    with server, pytest.raises(UserError) as exc:
        _download(server, out, **call_args)
    assert time.monotonic() - started < 5, "a failure must not wait for long"
    message = str(exc.value)
    assert "\n" not in message, message
    for part in expected:
        assert part in message, message
    assert key not in message
    assert (
        exc.value.__cause__ is None and exc.value.__suppress_context__
    )  # no chained URL with the key
    _assert_no_trace(out)
    assert requests.Session.request.__qualname__ == "Session.request"
    _assert_secret_kept(capsys, caplog)


def test_server_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "source"
    with FakeRoboflow() as server:
        server.close_port()
        with pytest.raises(UserError) as exc:
            _download(server, out)
    message = str(exc.value)
    assert "cannot reach the Roboflow server at http://127.0.0.1:" in message
    assert "\n" not in message and KEY not in message
    _assert_no_trace(out)
    _assert_secret_kept(capsys, caplog)


def test_server_error_at_the_key_check_is_not_called_a_bad_key(tmp_path: Path) -> None:
    """The SDK retries a 5xx key check 5 times, 1 s apart (so this test takes 5 s)."""
    out = tmp_path / "source"
    with FakeRoboflow(auth_status=500) as server, pytest.raises(UserError) as exc:
        _download(server, out)
    message = str(exc.value)
    assert "server kept failing while checking the API key" in message and "rejected" not in message
    assert "\n" not in message
    _assert_no_trace(out)


def test_sdk_crash_is_reported_without_the_key(
    dataset_zip: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SDK needs Content-Length (int(None) otherwise): an SDK bug, not a user error."""
    out = tmp_path / "source"
    server = FakeRoboflow(zip_bytes=dataset_zip, content_length=False)
    with server, pytest.raises(RuntimeError) as exc:
        _download(server, out)
    assert not isinstance(exc.value, UserError)
    assert "Roboflow SDK failed while downloading" in str(exc.value)
    assert "TypeError" in str(exc.value) and "TypeError" in caplog.text  # traceback logged
    _assert_no_trace(out)
    _assert_secret_kept(capsys, caplog)


def test_request_limits_sets_default_timeout_and_restores() -> None:
    original = requests.Session.request
    seen: dict[str, Any] = {}

    def fake_original(self: requests.Session, method: str, url: str, **kwargs: Any) -> Any:
        seen.update(kwargs)
        response = requests.Response()
        response.status_code = 200
        return response

    requests.Session.request = fake_original  # type: ignore[method-assign]
    try:
        with rf.request_limits(timeout_s=3.5, max_wait_s=10):
            requests.get("http://127.0.0.1:9/x")
            assert seen["timeout"] == 3.5
            requests.get("http://127.0.0.1:9/x", timeout=7)
            assert seen["timeout"] == 7  # an explicit timeout is kept
        assert requests.Session.request is fake_original
    finally:
        requests.Session.request = original  # type: ignore[method-assign]


def test_redact() -> None:
    text = "GET /a?api_key=abcDEF123&x=1 failed for abcDEF123 (abc%2FDEF)"
    assert rf.redact(text, "abcDEF123") == "GET /a?api_key=***&x=1 failed for *** (abc%2FDEF)"
    assert rf.redact("url /w?api_key=other", None) == "url /w?api_key=***"
    assert rf.redact("k=a/b c", "a/b") == "k=*** c"
    assert rf.redact("k=a%2Fb", "a/b") == "k=***"
