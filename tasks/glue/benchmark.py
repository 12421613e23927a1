"""The GLUE tasks as data: files, columns, label sets, official metrics, and the published reference rows.

One :class:`GlueTask` per task of the benchmark (Wang et al., ICLR 2019), laid out as the official
``download_glue_data.py`` writes them (``<glue_dir>/<Folder>/{train,dev}.tsv``; MNLI has
``dev_matched.tsv`` / ``dev_mismatched.tsv``; CoLA has no header). Columns are named by the header
where there is one, by position for CoLA. Every task's official metric(s) are listed as
``(metric, dev split)`` pairs: a task with two counts as their mean in GLUE's averages.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.spec import OfficialFile

GLUE_ZIP = "https://dl.fbaipublicfiles.com/glue/data/{}.zip"
# MRPC is not shipped as a GLUE zip: download_glue_data.py builds train.tsv / dev.tsv from SentEval's
# msr_paraphrase files and GLUE's dev ids. Its files are used from [inputs] glue_dir / data_dir only.
MRPC_SOURCE = "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt"

METRIC_NAMES = {"mcc": "Matthews corr.", "accuracy": "accuracy", "f1": "F1", "pearson": "Pearson",
                "spearman": "Spearman"}


@dataclass(frozen=True)
class GlueTask:
    name: str  # cola, sst2, ...: the name in --tasks
    folder: str  # CoLA, SST-2, ...: the official folder
    text: str | int  # a header's column name, or a position (no header)
    label: str | int
    labels: tuple[str, ...]  # the ordered label set; () for regression (STS-B)
    metrics: tuple[tuple[str, str], ...]  # (metric, dev split): the official metric(s), in the table's order
    text_pair: str | int | None = None
    header: bool = True
    dev_splits: tuple[str, ...] = ("dev",)
    download: str | None = None  # the official zip's name (GLUE_ZIP), or None: no archive to fetch
    positive_label: str = "1"  # F1's positive class (MRPC, QQP)
    # The test files (no label; a header everywhere, CoLA's too): the index column the GLUE server's
    # submission file keys on, and the sentence column where it is not the train file's ``text``.
    test_index: str = "index"
    test_text: str | None = None

    @property
    def test_columns(self) -> tuple[str, str, str | None]:
        """``(index, text, text pair)`` column names of the task's test.tsv."""
        return self.test_index, self.test_text or str(self.text), None if self.text_pair is None else str(self.text_pair)

    def submission_name(self, split: str) -> str:
        """The GLUE server's file for the test file ``split`` (its stem): ``CoLA``, ``MNLI-m``, ``MNLI-mm``,
        ``AX`` (MNLI's model on diagnostic.tsv); the file is ``<name>.tsv``."""
        if self.name == "mnli":
            split = split.lower()
            return "AX" if split in ("diagnostic", "ax") else "MNLI-mm" if "mismatched" in split else "MNLI-m"
        return self.folder

    @property
    def regression(self) -> bool:
        return not self.labels

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", *self.dev_splits)

    def member(self, split: str) -> str:
        return f"{self.folder}/{split}.tsv"

    def data_name(self, split: str) -> str:
        """The official file's name in the DataFile registry: ``glue-cola-train``, ``glue-mnli-dev_matched``."""
        return f"glue-{self.name}-{split}"

    def metric_keys(self) -> tuple[str, ...]:
        """The official metrics' keys in the table: ``mcc``, ``f1``, ``accuracy_matched`` (MNLI's dev_matched)."""
        return tuple(metric if split == "dev" else f"{metric}_{split.replace('dev_', '')}"
                     for metric, split in self.metrics)

    def metric_label(self) -> str:
        """``F1 / accuracy`` for MRPC: the column header's metric line."""
        names = [METRIC_NAMES[metric] for metric, _ in self.metrics]
        if len({split for _, split in self.metrics}) > 1:  # MNLI: matched / mismatched accuracy
            names = [f"{split.replace('dev_', '')} {METRIC_NAMES[metric]}" for metric, split in self.metrics]
        return " / ".join(names)


TASKS: dict[str, GlueTask] = {task.name: task for task in (
    GlueTask("cola", "CoLA", text=3, label=1, labels=("0", "1"), metrics=(("mcc", "dev"),), header=False,
             download="CoLA", test_text="sentence"),
    GlueTask("sst2", "SST-2", text="sentence", label="label", labels=("0", "1"), metrics=(("accuracy", "dev"),),
             download="SST-2"),
    GlueTask("mrpc", "MRPC", text="#1 String", text_pair="#2 String", label="Quality", labels=("0", "1"),
             metrics=(("f1", "dev"), ("accuracy", "dev"))),
    GlueTask("stsb", "STS-B", text="sentence1", text_pair="sentence2", label="score", labels=(),
             metrics=(("pearson", "dev"), ("spearman", "dev")), download="STS-B"),
    GlueTask("qqp", "QQP", text="question1", text_pair="question2", label="is_duplicate", labels=("0", "1"),
             metrics=(("accuracy", "dev"), ("f1", "dev")), download="QQP-clean", test_index="id"),
    GlueTask("mnli", "MNLI", text="sentence1", text_pair="sentence2", label="gold_label",
             labels=("contradiction", "entailment", "neutral"),
             metrics=(("accuracy", "dev_matched"), ("accuracy", "dev_mismatched")),
             dev_splits=("dev_matched", "dev_mismatched"), download="MNLI"),
    GlueTask("qnli", "QNLI", text="question", text_pair="sentence", label="label",
             labels=("entailment", "not_entailment"), metrics=(("accuracy", "dev"),), download="QNLIv2"),
    GlueTask("rte", "RTE", text="sentence1", text_pair="sentence2", label="label",
             labels=("entailment", "not_entailment"), metrics=(("accuracy", "dev"),), download="RTE"),
    GlueTask("wnli", "WNLI", text="sentence1", text_pair="sentence2", label="label", labels=("0", "1"),
             metrics=(("accuracy", "dev"),), download="WNLI"),
)}
# The table's column order: GLUE's own (the BERT paper's Table 1 lists the same tasks).
ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
# GLUE's leaderboard average leaves WNLI out in the BERT paper (its adversarial dev set).
NOT_IN_BERT_AVERAGE = ("wnli",)

# sha256 of the official files (../shared/data/glue/README.md lists where each copy was checked).
SHA256 = {
    "cola-train": "cb368ebeb9f27d7ad03720d27ddc95687a311bdb100781a2fe59a5f5b1bc0624",
    "cola-dev": "8c013e21dc39957cac37378d87bebe225b694a0d5fe13eded66c2856628833fd",
    "sst2-train": "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
    "sst2-dev": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
    "mrpc-train": "69abcedee3cf738c6ce58d772e43e1b7cdf5b4edee4aceda459c0d9f4e5599f3",
    "mrpc-dev": "9e8f284788040f7c9ecde2e1b3c07237c756f926bd9ef8548ef5d34b56f69f17",
    "stsb-train": "41c4d978b6162abdcada7e49a982211954cca5459c228db478af333124b257a2",
    "stsb-dev": "fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59",
    "rte-train": "41e3a9b063433392343fad9e962cf2f58b681c78d8f71592f4186f0837246c5c",
    "rte-dev": "80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb",
    "wnli-train": "9a88e9d54b6861cc796a088e9acf4f5f65064a9ef65ae6fa7a688b28391e5c9a",
    "wnli-dev": "cba00490596dd14be8cf53b4f53bb744abe3a7b89f81ab210528d80225338ed5",
    "qnli-train": "3bb7026735a0d4cd439dc1ca6ea162e0c1cc8f962f52df9cc50ee8f8278e0c0e",
    "qnli-dev": "ac19409dcb04631eaaa094bdebdcf621086bc352503dfb6a1a648b614986f4fd",
}


def official_files() -> dict[str, OfficialFile]:
    """Every GLUE file whose sha256 is known, as a member of its official zip (or a local-only file)."""
    files = {}
    for key, sha in SHA256.items():
        task, split = key.split("-", 1)
        spec = TASKS[task]
        url = GLUE_ZIP.format(spec.download) if spec.download else MRPC_SOURCE
        files[spec.data_name(split)] = OfficialFile(
            url=url, checksum=f"sha256:{sha}", member=spec.member(split),
            folder_key="glue_dir", local_path=f"glue/{spec.member(split)}", downloadable=spec.download is not None)
    return files


def parse_tasks(text: str | list | tuple) -> list[str]:
    """``"cola,sst2"`` (or a list) -> ``["cola", "sst2"]``, checked against the GLUE tasks."""
    names = [name.strip().lower() for name in (text.split(",") if isinstance(text, str) else text) if name.strip()]
    unknown = [name for name in names if name not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown GLUE task(s) {unknown or names!r}; choose from {', '.join(ORDER)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a GLUE task is listed twice: {names}")
    return sorted(names, key=ORDER.index)


# The reference rows of the write-up (../shared/seeds/004_a1501fe4b16aa330.txt), per task and metric, in
# percent, as printed there. bert_paper: BERT-base in Devlin et al. 2019, Table 1 (GLUE *test* server
# scores, one figure per task where two exist); bert_HF: Hugging Face's run_glue README (dev sets).
REFERENCE_ROWS = {
    "BERT-base, Hugging Face run_glue (dev)": {
        "cola": {"mcc": 56.53}, "sst2": {"accuracy": 92.32}, "mrpc": {"f1": 88.85, "accuracy": 84.07},
        "stsb": {"pearson": 88.64, "spearman": 88.48}, "qqp": {"accuracy": 90.71, "f1": 87.49},
        "mnli": {"accuracy_matched": 83.91, "accuracy_mismatched": 84.10}, "qnli": {"accuracy": 90.66},
        "rte": {"accuracy": 65.70}, "wnli": {"accuracy": 56.34},
    },
    "BERT-base, BERT paper (GLUE test)": {
        "cola": {"mcc": 52.1}, "sst2": {"accuracy": 93.5}, "mrpc": {"f1": 88.9}, "stsb": {"spearman": 85.8},
        "qqp": {"f1": 71.2}, "mnli": {"accuracy_matched": 84.6, "accuracy_mismatched": 83.4},
        "qnli": {"accuracy": 90.5},
        "rte": {"accuracy": 66.4},
    },
}
