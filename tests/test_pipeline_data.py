"""DataFile: official downloads verified by checksum, user copies, and clear errors offline."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import luigi
import pytest

from pipeline import data as data_module
from pipeline.data import ChecksumError, DataFile, OfficialFile
from tests.conftest import luigi_config

pytestmark = pytest.mark.fast


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server over tmp_path/www; yields (base_url, www_dir)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", www
    server.shutdown()


# Tests below set gap_test="" to clear a configured copy: CI runs with luigi.offline.cfg, which
# points gap_test at ../shared/data, and a configured copy wins over data_dir.


def fake_official(monkeypatch, url: str, content: bytes, algorithm="sha256"):
    checksum = f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"
    monkeypatch.setitem(data_module.OFFICIAL, "gap-test", OfficialFile(url, checksum))


def build(task):
    return luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")


def test_download_is_verified_and_atomic(tmp_path, served, monkeypatch):
    base, www = served
    (www / "gap-test.tsv").write_bytes(b"ID\tText\n")
    fake_official(monkeypatch, base + "gap-test.tsv", b"ID\tText\n")
    with luigi_config("inputs", gap_test="", data_dir=tmp_path / "data"):
        result = build(DataFile(name="gap-test"))
        assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS
        assert (tmp_path / "data" / "gap-test.tsv").read_bytes() == b"ID\tText\n"
        assert DataFile(name="gap-test").complete()


def test_wrong_checksum_download_is_an_error_and_leaves_nothing(tmp_path, served, monkeypatch):
    base, www = served
    (www / "gap-test.tsv").write_bytes(b"tampered")
    fake_official(monkeypatch, base + "gap-test.tsv", b"the real bytes", algorithm="md5")
    spec = data_module.OFFICIAL["gap-test"]
    with pytest.raises(ChecksumError, match="md5"):
        data_module.download(spec, tmp_path / "data" / "gap-test.tsv", timeout_s=10)
    assert list((tmp_path / "data").iterdir()) == []


def test_wrong_local_copy_is_not_complete_and_fails(tmp_path, monkeypatch):
    fake_official(monkeypatch, "http://127.0.0.1:9/gap-test.tsv", b"official")
    (tmp_path / "gap-test.tsv").write_bytes(b"something else")
    with luigi_config("inputs", gap_test="", data_dir=tmp_path):
        task = DataFile(name="gap-test")
        assert not task.complete()
        with pytest.raises(ChecksumError, match="remove the file to download it again"):
            task.run()
        assert (tmp_path / "gap-test.tsv").read_bytes() == b"something else"  # never replaced silently


def test_no_network_and_no_copy_says_where_to_put_the_file(tmp_path, monkeypatch):
    fake_official(monkeypatch, "http://127.0.0.1:9/gap-test.tsv", b"official")  # port 9: refused
    spec = data_module.OFFICIAL["gap-test"]
    with pytest.raises(RuntimeError, match=r"put the file at .*gap-test\.tsv"):
        data_module.download(spec, tmp_path / "gap-test.tsv", timeout_s=5)
    with luigi_config("inputs", gap_test="", data_dir=tmp_path, download_timeout_s=5):
        result = build(DataFile(name="gap-test"))
    assert result.status == luigi.execution_summary.LuigiStatusCode.FAILED


def test_configured_copy_is_used_as_is(tmp_path):
    own = tmp_path / "my-gap-test.tsv"
    with luigi_config("inputs", gap_test=own):
        task = DataFile(name="gap-test")
        assert not task.complete()
        with pytest.raises(FileNotFoundError, match="no such file"):
            task.run()
        own.write_text("ID\tText\n")
        assert task.complete() and task.output().path == str(own)
