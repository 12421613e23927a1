"""Data acquisition: the official SQuAD and GAP files, checksum-verified, or the user's own copies.

    luigi --module pipeline DataFile --name squad-dev-v1.1 --local-scheduler

Where ``[inputs]`` in luigi.cfg gives a path for a file, that file is used as it is (your own
copy; it is hashed into every artifact built from it). Otherwise the file is looked for in
``[inputs] data_dir``; if it is there its checksum must match the official one, and if it is not
it is downloaded from the official URL (to a ``.part`` file, verified, then renamed). A wrong
checksum is an error, and so is having neither network nor a local copy: the message says where
to put the file.

Checksums: sha256 where we hashed a verified copy (dev-v1.1, whose md5 matches the published
one, and the three GAP files); for train-v1.1, train-v2.0 and dev-v2.0 the md5 published with
NVIDIA's BERT download script (no copy was at hand to take a sha256 from).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import luigi

from pipeline.artifacts import content_hash  # memoised, so repeated complete() checks stay cheap
from prep.artifact import file_digest

_SQUAD = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
_GAP = "https://raw.githubusercontent.com/google-research-datasets/gap-coreference/master/"


@dataclass(frozen=True)
class OfficialFile:
    url: str
    checksum: str  # "sha256:<hex>" or "md5:<hex>"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


OFFICIAL = {
    "squad-train-v1.1": OfficialFile(_SQUAD + "train-v1.1.json", "md5:981b29407e0affa3b1b156f72073b945"),
    "squad-dev-v1.1": OfficialFile(_SQUAD + "dev-v1.1.json",
                                   "sha256:95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"),
    "squad-train-v2.0": OfficialFile(_SQUAD + "train-v2.0.json", "md5:62108c273c268d70893182d5cf8df740"),
    "squad-dev-v2.0": OfficialFile(_SQUAD + "dev-v2.0.json", "md5:246adae8b7002f8679c027697b0b7cf8"),
    "gap-development": OfficialFile(_GAP + "gap-development.tsv",
                                    "sha256:b9a01434fcf58d8c2f9bc762480c27e58ce466cf1ffe8b09cfecbc7a20d2d634"),
    "gap-validation": OfficialFile(_GAP + "gap-validation.tsv",
                                   "sha256:2d784f66b390404f554704b9aef6dcde8845e79dda9886b8391cf7e9a24fdb98"),
    "gap-test": OfficialFile(_GAP + "gap-test.tsv",
                             "sha256:1c35e36d5b14f6313ec3f6cd67b275de282595dd59e59390e00cfff9897a6819"),
}


class inputs(luigi.Config):  # noqa: N801 - the [inputs] section of luigi.cfg
    data_dir = luigi.Parameter(default="data", description="where official files are looked for / downloaded")
    squad_train_v1_1 = luigi.OptionalParameter(default=None, description="your own train-v1.1.json")
    squad_dev_v1_1 = luigi.OptionalParameter(default=None)
    squad_train_v2_0 = luigi.OptionalParameter(default=None)
    squad_dev_v2_0 = luigi.OptionalParameter(default=None)
    gap_development = luigi.OptionalParameter(default=None)
    gap_validation = luigi.OptionalParameter(default=None)
    gap_test = luigi.OptionalParameter(default=None)
    download_timeout_s = luigi.FloatParameter(default=60.0)


class ChecksumError(ValueError):
    pass


def verify(path: Path, checksum: str) -> None:
    algorithm, expected = checksum.split(":", 1)
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(f"{path}: {algorithm} {actual} != official {expected}; "
                            "remove the file to download it again, or point [inputs] at your own copy")


def download(spec: OfficialFile, dest: Path, timeout_s: float) -> None:
    """Fetch ``spec.url`` into ``dest`` through a ``.part`` file, verified before the rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".part-{os.getpid()}")
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout_s) as response, open(part, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as err:
        part.unlink(missing_ok=True)
        raise RuntimeError(
            f"could not download {spec.url} ({err}); with no network, put the file at {dest} "
            f"or set its path in luigi.cfg's [inputs] section (offline here: LUIGI_CONFIG_PATH=luigi.offline.cfg)"
        ) from err
    try:
        verify(part, spec.checksum)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)


def configured_path(name: str) -> Path | None:
    value = getattr(inputs(), name.replace("-", "_").replace(".", "_"))
    return Path(value) if value else None


class DataFile(luigi.Task):
    name = luigi.ChoiceParameter(choices=tuple(OFFICIAL))

    @property
    def spec(self) -> OfficialFile:
        return OFFICIAL[self.name]

    @property
    def path(self) -> Path:
        return configured_path(self.name) or Path(inputs().data_dir) / self.spec.filename

    def output(self):
        return luigi.LocalTarget(str(self.path))

    def complete(self):
        if configured_path(self.name):
            return self.path.is_file()  # the user's own copy: used as it is
        if not self.path.is_file():
            return False
        algorithm, expected = self.spec.checksum.split(":", 1)
        return content_hash(self.path, algorithm) == expected

    def run(self):
        own = configured_path(self.name)
        if own is not None:
            raise FileNotFoundError(f"[inputs] {self.name.replace('-', '_').replace('.', '_')} = {own}: no such file")
        if self.path.is_file():
            verify(self.path, self.spec.checksum)  # raises: a wrong local copy is never replaced silently
            return
        self.set_status_message(f"downloading {self.spec.url}")
        download(self.spec, self.path, inputs().download_timeout_s)
