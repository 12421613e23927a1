"""Every figure in the published results and benchmarks tables matches the committed JSON it came from.

The tables live in docs/results/README.md (results at a glance, `make run`), docs/results/glue.md
(GLUE), docs/results/precision-auto.md and docs/results/fast-cpu.md; each is parsed from its page and each row is found by its
label (the first cell), so rows can be reworded around their labels, reordered or moved. A row that
shows figures but that no check here recognises fails: a new figure needs its JSON (docs/results)
and a line here. Figures compare at the page's own precision (tests/readme_tables.py). The README's
few headline results are rows of docs/results, copied. The benchmark pages:
tests/test_benchmark_figures.py.
"""

from __future__ import annotations

import re
import statistics

import pytest

from tests.conftest import REPO
from tests.readme_tables import agrees, assert_figures, check_rows, find_row, load, numbers, section, tables

pytestmark = pytest.mark.fast

README = REPO / "README.md"
RESULTS = REPO / "docs" / "results"
BENCHMARKS = REPO / "docs" / "benchmarks"
RESULTS_PAGE = RESULTS / "README.md"

# --- Results -----------------------------------------------------------------------------------


def gap_group(head: str, folder: str = "") -> dict:
    """A head's group of a published GAP results table (docs/results/gap.json, or FOLDER/gap.json)."""
    groups = {g["group"]["head"]: g for g in load(RESULTS / folder / "gap.json")["groups"]}
    return groups[head]


def textclass(folded: bool) -> dict:
    """The BBC aggregate group of the folded (or truncated) features, from docs/results/textclass.json."""
    result = load(RESULTS / "textclass.json")
    [group] = [g for g in result["groups"] if result["fold_by_features_dir"][g["group"]["features_dir"]] == folded]
    assert len(group["seeds"]) == 3
    return group


def bbc_test_texts() -> int:
    """Texts every BBC evaluation scored (the test split)."""
    counts = {load(path)["counts"]["texts"] for path in (RESULTS / "textclass").glob("*.json")}
    assert len(counts) == 1
    return counts.pop()


def percent_mean_std(group: dict, key: str) -> list[float]:
    return [100 * group["metrics"][key]["mean"], 100 * group["metrics"][key]["std"]]


def sweep_results(name: str = "gap-subset") -> tuple[dict, dict, dict]:
    """A published GAP sweep: its final step, its report summary and its wall times (docs/results/sweep/<name>)."""
    folder = RESULTS / "sweep" / name
    return load(folder / "final" / "final.json"), load(folder / "sweep.json"), load(folder / "wall_times.json")


def mean_std(group: dict, key: str) -> list[float]:
    return [group["metrics"][key]["mean"], group["metrics"][key]["std"]]


def minutes_seconds(seconds: float) -> list[float]:
    return list(divmod(seconds, 60))


def add_full_sweep_check(checks: dict, pattern: str, name: str, params: list[str], targets: list[float]) -> None:
    """The row of a sweep of all of GAP (docs/results/sweep/<name>): validation baseline -> best, the best
    settings ``params``, its 3 seeds' gap-test mean and ensemble, the issue's ``targets``, the wall time; its
    label names the trial and pruned counts, the best head and learning rate."""
    final, sweep, walls = sweep_results(name)
    test, best = final["test"], sweep["best"]
    assert (final["seeds"], test["runs"]) == ([1, 2, 3], 3) and sweep["baseline"]["baseline"]
    assert final["study"] == sweep["study"] and final["best"]["trial_number"] == best["trial_number"]

    def check(row):
        assert_figures(row["result"], [
            sweep["baseline"]["value"], best["value"], *(best["params"][p] for p in params),
            *mean_std(test, "f1_overall"), test["metrics"]["bias_f_over_m"]["mean"], test["metrics"]["log_loss"]["mean"],
            test["ensemble"]["f1_overall"], test["ensemble"]["bias_f_over_m"], test["ensemble"]["log_loss"],
            *targets, *minutes_seconds(walls["wall_seconds"])], row["what"])
        assert (f"{sweep['trials']} trials" in row["what"] and f"{sweep['pruned']} pruned" in row["what"]
                and best["params"]["head"] in row["result"]
                and f"lr {best['params']['lr']:.1e}".replace("e-0", "e-") in row["result"])

    checks[pattern] = check


def test_results_table_matches_docs_results_json():
    rows = next(t for t in tables(section(RESULTS_PAGE.read_text(encoding="utf-8"), "At a glance")) if "result" in t[0])
    multiply, concat, segment = (gap_group(h) for h in ("multiply", "concat", "segment"))
    squad_v1 = load(RESULTS / "squad" / "squad-12201fa1221c.json")
    squad_v2 = load(RESULTS / "squad" / "squad-2c7798437484.json")
    walls = load(RESULTS / "wall_times.json")["commands"]
    race = {g["group"]["head"]: g for g in load(RESULTS / "race.json")["groups"]}
    race_walls = load(RESULTS / "race" / "wall_times.json")

    checks = {
        r"^GAP test, multiply head .*mean ± std": lambda row: assert_figures(row["result"], [
            *mean_std(multiply, "f1_overall"), multiply["metrics"]["bias_f_over_m"]["mean"],
            multiply["metrics"]["log_loss"]["mean"], multiply["metrics"]["accuracy"]["mean"]], row["what"]),
        r"^GAP test, concat / segment heads": lambda row: assert_figures(row["result"], [
            *mean_std(concat, "f1_overall"), *mean_std(segment, "f1_overall"),
            concat["metrics"]["log_loss"]["mean"], segment["metrics"]["log_loss"]["mean"]], row["what"]),
        r"^GAP test, multiply, the 3 seeds' probabilities averaged": lambda row: assert_figures(row["result"], [
            multiply["ensemble"]["f1_overall"], multiply["ensemble"]["bias_f_over_m"],
            multiply["ensemble"]["log_loss"]], row["what"]),
        r"^GAP, all 3 heads x 3 seeds": lambda row: assert_figures(
            row["result"], minutes_seconds(walls["gap_results"]["wall_seconds"]), row["what"]),
        r"^SQuAD dev-v1\.1": lambda row: assert_figures(row["result"], [
            squad_v1["metrics"]["exact_match"], squad_v1["metrics"]["f1"],
            squad_v1["train_metrics"]["wall_seconds"] / 60, walls["squad_v1_subset"]["wall_seconds"] / 60], row["what"]),
        r"^SQuAD dev-v2\.0": lambda row: assert_figures(row["result"], [
            squad_v2["metrics"]["f1"], squad_v2["config"]["null_score_diff_threshold"],
            squad_v2["metrics"]["best_f1"], squad_v2["metrics"]["best_f1_thresh"]], row["what"]),
        r"^BBC news topics, text classification": lambda row: assert_figures(row["result"], [
            *percent_mean_std(textclass(True), "accuracy"), *percent_mean_std(textclass(True), "macro_f1"),
            bbc_test_texts()], row["what"]),
        r"^RACE test subset": lambda row: assert_figures(row["result"], [
            *mean_std(race["mc"], "accuracy"), *mean_std(race["duma"], "accuracy"), 25,
            race["mc"]["metrics"]["log_loss"]["mean"], race["duma"]["metrics"]["log_loss"]["mean"], 4], row["what"]),
        r"^RACE, the 3 seeds' probabilities averaged": lambda row: assert_figures(row["result"], [
            race["mc"]["ensemble"]["accuracy"], race["duma"]["ensemble"]["accuracy"]], row["what"]),
        r"^RACE, both heads x 3 seeds": lambda row: assert_figures(
            row["result"], minutes_seconds(race_walls["race_results"]["wall_seconds"]), row["what"]),
        r"^BBC, truncated": lambda row: assert_figures(row["result"], [
            *percent_mean_std(textclass(False), "accuracy"), *percent_mean_std(textclass(False), "macro_f1")],
            row["what"]),
    }
    # The base-size MPNet (docs/results/gap-mpnet.json): its seeds' mean, the issue's targets beside it
    # (F1 86, bias 0.98, log loss 0.45), its ensemble and its wall time.
    mpnet = load(RESULTS / "gap-mpnet.json")
    [mpnet_group] = mpnet["groups"]
    mpnet_walls = load(RESULTS / "gap-mpnet" / "wall_times.json")
    checks[r"^GAP test with the base-size all-mpnet-base-v2 .*mean"] = lambda row: assert_figures(row["result"], [
        *mean_std(mpnet_group, "f1_overall"), mpnet_group["metrics"]["bias_f_over_m"]["mean"],
        mpnet_group["metrics"]["log_loss"]["mean"], mpnet_group["metrics"]["accuracy"]["mean"], 86, 0.98, 0.45],
        row["what"])
    if len(mpnet_group["seeds"]) > 1:
        checks[r"^GAP test, MPNet, the seeds' probabilities averaged"] = lambda row: assert_figures(row["result"], [
            mpnet_group["ensemble"]["f1_overall"], mpnet_group["ensemble"]["bias_f_over_m"],
            mpnet_group["ensemble"]["log_loss"]], row["what"])
    checks[r"^GAP with MPNet, .* fine-tunes \+ evaluations"] = lambda row: assert_figures(
        row["result"], minutes_seconds(mpnet_walls["wall_seconds"]), row["what"])
    mpnet_row = find_row(rows, "what", r"^GAP test with the base-size all-mpnet-base-v2")
    assert f"{len(mpnet_group['seeds'])} seed" in mpnet_row["what"]
    assert mpnet_group["group"]["head"] == "multiply" and "multiply head" in mpnet_row["what"]
    # MPNet on BBC, truncated (docs/results/textclass-mpnet.json): its seeds, next to MiniLM's truncated mean.
    [bbc_mpnet] = load(RESULTS / "textclass-mpnet.json")["groups"]
    bbc_walls = load(RESULTS / "textclass-mpnet" / "wall_times.json")
    shown = (lambda key: [100 * bbc_mpnet["metrics"][key]["mean"]] if bbc_mpnet["runs"] == 1
             else percent_mean_std(bbc_mpnet, key))
    checks[r"^BBC news topics with the base-size MPNet"] = lambda row: assert_figures(row["result"], [
        *shown("accuracy"), *shown("macro_f1"), bbc_test_texts(), *percent_mean_std(textclass(False), "accuracy"),
        *minutes_seconds(bbc_walls["wall_seconds"])], row["what"])
    bbc_row = find_row(rows, "what", r"^BBC news topics with the base-size MPNet")
    assert f"{bbc_mpnet['runs']} seed" in bbc_row["what"] and sorted(bbc_mpnet["seeds"]) == [p["seed"] for p in bbc_walls["parts"]]
    for path in (RESULTS / "textclass-mpnet").glob("textclass-*.json"):
        run = load(path)
        assert run["train_config"]["model_dir"].endswith("all-mpnet-base-v2") and run["train_config"]["lr"] == 3e-5
        assert run["inputs"]["features_config"]["fold"] is False and run["inputs"]["features_config"]["max_seq_length"] == 128
        assert run["counts"]["texts"] == bbc_test_texts()
    for path in (RESULTS / "gap-mpnet").glob("gap-*.json"):
        run = load(path)
        assert run["train_config"]["model_dir"].endswith("all-mpnet-base-v2") and run["metrics"]["total"] == 2000
    add_full_sweep_check(checks, r"^GAP sweep, all of GAP", "gap-full", ["epochs"], [82, 0.50])
    add_full_sweep_check(checks, r"^GAP sweep with the base-size MPNet", "gap-mpnet", ["epochs", "global_batch_size"],
                         [86, 0.98, 0.45])
    for path in (RESULTS / "sweep" / "gap-mpnet" / "final").glob("gap-*.json"):
        run = load(path)
        assert run["train_config"]["model_dir"].endswith("all-mpnet-base-v2") and run["metrics"]["total"] == 2000
    final, sweep, sweep_walls = sweep_results()
    test = final["test"]
    checks[r"^GAP sweep on a documented subset"] = lambda row: assert_figures(row["result"], [
        sweep["best"]["value"], *mean_std(test, "f1_overall"), test["metrics"]["bias_f_over_m"]["mean"],
        test["metrics"]["log_loss"]["mean"], test["ensemble"]["f1_overall"], test["ensemble"]["bias_f_over_m"],
        test["ensemble"]["log_loss"], *minutes_seconds(sweep_walls["wall_seconds"])], row["what"])
    check_rows(rows, "what", checks, ["result"], "docs/results At a glance")
    # The subset sweep's label: 4 finished trials, the best retrained with seeds 1-3, the baseline on top.
    assert (sweep["trials"], final["trials"], final["seeds"], test["runs"]) == (4, 4, [1, 2, 3], 3)
    assert sweep["best"]["baseline"] and sweep["best"]["trial_number"] == final["best"]["trial_number"]
    # The dev-v1.1 row's claim "all 10,570 questions" is what that evaluation scored.
    assert "10,570" in find_row(rows, "what", r"^SQuAD dev-v1\.1")["what"] and squad_v1["counts"]["questions"] == 10570
    assert squad_v1["config"]["articles_scored"] == squad_v1["config"]["articles_in_file"] == 48
    assert len(multiply["seeds"]) == len(concat["seeds"]) == len(segment["seeds"]) == 3
    # The RACE row's labels are the evaluated runs' settings: 3 seeds a head, 130 test questions, 96 train, 128 tokens.
    assert race["mc"]["seeds"] == race["duma"]["seeds"] == [1, 2, 3]
    for path in (RESULTS / "race").glob("race-*.json"):
        run = load(path)
        assert run["counts"]["questions"] == 130 and run["inputs"]["features_config"]["every_nth"] == 38
        assert run["train_config"]["data_info"]["max_questions"] == 96 and run["train_config"]["max_seq_length"] == 128


def test_readme_results_are_rows_of_docs_results():
    """The README's headline results are rows of docs/results' table (checked above), figure for figure."""
    [shown] = tables(section(README.read_text(encoding="utf-8"), "Results"))
    published = tables(section(RESULTS_PAGE.read_text(encoding="utf-8"), "At a glance"))
    rows = next(table for table in published if "result" in table[0])
    assert shown, "the README's Results table has no rows"
    for row in shown:
        source = find_row(rows, "what", "^" + re.escape(row["what"]) + "$")
        assert row["result"] == source["result"], f"README result {row['what']!r} differs from docs/results"


def test_make_run_table_matches_docs_results_make_run_json():
    text = section(RESULTS_PAGE.read_text(encoding="utf-8"), "`make run`: the embedded defaults")
    rows = next(t for t in tables(text) if "figure" in t[0])
    folder = RESULTS / "make-run"
    walls = load(folder / "wall_times.json")
    gap = load(folder / walls["evaluations"]["gap"])
    squad = load(folder / walls["evaluations"]["squad"])
    ours = {r["task"]: r for r in load(BENCHMARKS / "train_throughput-cpu.json")["cpu"] if r["runner"] == "ours"}
    again = walls["again_with_nothing_changed"]

    checks = {
        r"^GAP test, multiply head, 1 epoch": lambda row: assert_figures(row["figure"], [
            gap["metrics"][k] for k in ("f1_overall", "bias_f_over_m", "log_loss", "accuracy")], row["what"]),
        r"^SQuAD dev, 1-article subset": lambda row: assert_figures(row["figure"], [
            squad["metrics"]["exact_match"], squad["metrics"]["f1"]], row["what"]),
        r"^wall time, fresh": lambda row: assert_figures(row["figure"], [
            *divmod(walls["fresh_make_run_seconds"], 60), gap["train_metrics"]["wall_seconds"] / 60,
            gap["train_metrics"]["throughput"]["sequences_per_second"]], row["what"]),
        r"^wall time, again": lambda row: assert_figures(row["figure"], [
            again["luigi_fullrun_seconds"], again["make_run_seconds"]], row["what"]),
        r"^training speed": lambda row: assert_figures(row["figure"], [
            ours["gap"]["batch"], ours["gap"]["sequences_per_second"], ours["squad"]["sequences_per_second"]],
            row["what"]),
    }
    check_rows(rows, "what", checks, ["figure"], "docs/results make run")
    # The labels' settings are those of the evaluated runs.
    assert (gap["train_config"]["head"], gap["train_config"]["epochs"]) == ("multiply", 1)
    assert gap["inputs"]["data"]["path"].endswith("gap-test.tsv") and gap["metrics"]["total"] == 2000
    assert squad["train_config"]["epochs"] == 2 and squad["config"]["articles_scored"] == 1
    assert again["tasks_run"] == 0


def test_precision_auto_tables_match_their_json():
    """docs/results/precision-auto.md: the bf16 rows (attention dropout the model's, and 0) are the
    committed bf16 evaluations."""
    page = (RESULTS / "precision-auto.md").read_text(encoding="utf-8")
    gap_table, squad_table, dropout_table = tables(page)
    runs = {"model": ("gap-bf16", "squad-bf16/squad-1b17070409e7.json"),
            "0": ("gap-bf16-attn0", "squad-bf16-attn0/squad-790e20a4e328.json")}
    bf16 = {"model": (find_row(gap_table, "precision", r"^bf16"), find_row(squad_table, "precision", r"^bf16"))}
    for dropout, (gap_folder, squad_file) in runs.items():
        group, squad = gap_group("multiply", gap_folder), load(RESULTS / squad_file)
        where = f"precision-auto, attention dropout {dropout}"
        row = find_row(dropout_table, "attention dropout", rf"^{'the model' if dropout == 'model' else '0$'}")
        assert_figures(row["GAP F1 (3 seeds)"], mean_std(group, "f1_overall"), where)
        assert_figures(row["GAP bias F/M"], mean_std(group, "bias_f_over_m"), where)
        assert_figures(row["GAP log loss"], mean_std(group, "log_loss"), where)
        assert_figures(row["SQuAD EM"], [squad["metrics"]["exact_match"]], where)
        assert_figures(row["SQuAD F1"], [squad["metrics"]["f1"]], where)
        assert_figures(row["SQuAD training"], [squad["train_metrics"]["throughput"]["sequences_per_second"]], where)
        assert squad["train_metrics"]["precision_choice"]["chosen"] == "bf16"
        assert (squad["train_config"].get("attention_dropout") is None) == (dropout == "model")
        if dropout in bf16:
            gap_row, squad_row = bf16[dropout]
            assert_figures(gap_row["F1"], mean_std(group, "f1_overall"), where)
            assert_figures(gap_row["bias F/M"], mean_std(group, "bias_f_over_m"), where)
            assert_figures(gap_row["log loss"], mean_std(group, "log_loss"), where)
            assert_figures(squad_row["EM"], [squad["metrics"]["exact_match"]], where)
            assert_figures(squad_row["F1"], [squad["metrics"]["f1"]], where)
            assert_figures(squad_row["final train loss"], [squad["train_metrics"]["final_train_loss"]], where)


# GAP seed groups of docs/results/fast-cpu.md: (fast CPU training, seeds) -> their gap.json folders.
FAST_CPU_GAP = {("off", "1-3"): ["gap-bf16"], ("on", "1-3"): ["fast-cpu/gap-seeds-1-3"],
                ("off", "4-6"): ["fast-cpu/gap-off-seeds-4-6"], ("on", "4-6"): ["fast-cpu/gap-seeds-4-6"],
                ("off", "1-6"): ["gap-bf16", "fast-cpu/gap-off-seeds-4-6"],
                ("on", "1-6"): ["fast-cpu/gap-seeds-1-3", "fast-cpu/gap-seeds-4-6"]}


def test_fast_cpu_tables_match_their_json():
    """docs/results/fast-cpu.md: each GAP row is the mean ± std of its seeds' runs (and its group's
    ensemble), each SQuAD row an evaluation's JSON; runs labelled on were trained with fast_cpu, the
    others without it (the runs from before the setting do not record it)."""
    gap_table, squad_table = tables((RESULTS / "fast-cpu.md").read_text(encoding="utf-8"))
    seen = set()
    for row in gap_table:
        key = (re.match(r"\w+", row["fast CPU training"]).group(), row["seeds"])
        seen.add(key)
        folders, where = FAST_CPU_GAP[key], f"fast-cpu GAP {key}"
        results = [load(RESULTS / folder / "gap.json") for folder in folders]
        runs = [run for result in results for run in result["runs"]]
        first, last = (int(n) for n in key[1].split("-"))
        assert sorted(run["seed"] for run in runs) == list(range(first, last + 1)), where
        for column, metric in (("F1", "f1_overall"), ("bias F/M", "bias_f_over_m"), ("log loss", "log_loss"),
                               ("accuracy", "accuracy")):
            values = [run["metrics"][metric] for run in runs]
            assert_figures(row[column], [statistics.mean(values), statistics.stdev(values)], where)
        ensemble = row["ensemble F1 / bias / log loss"]
        if len(results) == 1:
            shown = results[0]["groups"][0]["ensemble"]
            assert_figures(ensemble, [shown[k] for k in ("f1_overall", "bias_f_over_m", "log_loss")], where)
        else:
            assert not numbers(ensemble), where
        for folder in folders:
            for path in (RESULTS / folder).glob("gap-*.json"):
                recorded = load(path)["train_config"].get("fast_cpu")
                assert recorded is (True if key[0] == "on" else False if folder != "gap-bf16" else None), path
    assert seen == set(FAST_CPU_GAP), "fast-cpu.md's GAP table and FAST_CPU_GAP cover different groups"
    squad_runs = {"off": "squad-bf16/squad-1b17070409e7.json", "on": "fast-cpu/squad/squad-1b17070409e7.json"}
    for setting, path in squad_runs.items():
        row, squad = find_row(squad_table, "fast CPU training", rf"^{setting}\b"), load(RESULTS / path)
        train = squad["train_metrics"]
        assert_figures(row["EM"], [squad["metrics"]["exact_match"]], path)
        assert_figures(row["F1"], [squad["metrics"]["f1"]], path)
        assert_figures(row["final train loss"], [train["final_train_loss"]], path)
        assert_figures(row["training"], [train["throughput"]["sequences_per_second"],
                                         *divmod(train["throughput"]["train_seconds"], 60)], path)
        assert squad["train_config"].get("fast_cpu") is (True if setting == "on" else None)
        assert train["precision_choice"]["chosen"] == "bf16"
    assert len(squad_table) == len(squad_runs)


# --- the checker itself ------------------------------------------------------------------------


@pytest.mark.parametrize("cell, expected", [
    ("F1 **75.3 ± 0.1**, bias F/M 0.966", ["75.3", "0.1", "0.966"]),
    ("EM 50.3 / F1 63.1 (27 min training)", ["50.3", "63.1", "27"]),
    ("F1 33.1 at threshold 0; best F1 50.3 at threshold -11.9", ["33.1", "0", "50.3", "-11.9"]),
    ("dev-v2.0, 10,570 questions, 2.32x, 1,680 MB", ["10570", "2.32", "1680"]),
])
def test_numbers_are_read_as_shown(cell, expected):
    assert numbers(cell.replace("**", "")) == expected


def test_rounding_is_the_page_precision():
    assert agrees("75.3", 75.3242) and agrees("0.735", 0.7345) and agrees("5,467".replace(",", ""), 5467.4)
    assert not agrees("75.3", 75.36) and not agrees("12.6", 19.3)


# --- GLUE ---------------------------------------------------------------------------------------


def test_glue_table_matches_docs_results_glue_json():
    """Every row of docs/results/glue.md's GLUE table is a row of the table regenerated from
    docs/results/glue/glue.json, and the wall-time table's figures are docs/results/glue/wall_times.json's."""
    from tasks.glue.table import format_markdown

    text = (RESULTS / "glue.md").read_text(encoding="utf-8")
    table = load(RESULTS / "glue" / "glue.json")
    regenerated = format_markdown(table, table["model"], table.get("not_run")).splitlines()
    shown = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| row |")
             and not line.startswith("| what |")]
    glue_rows = [line for line in shown if line.count("|") > 6]
    assert len(glue_rows) >= 4, "docs/results/glue.md shows the GLUE table's mean, max and reference rows"
    for line in glue_rows:
        assert line in regenerated, f"docs/results/glue.md GLUE row not in the table from glue.json: {line}"
    walls = load(RESULTS / "glue" / "wall_times.json")
    [timing] = [t for t in tables(text) if "what" in t[0]]
    row = find_row(timing, "what", r"^GlueResults, 6 tasks")
    assert_figures(row["figure"], [*divmod(walls["total_wall_seconds"], 60)], row["what"])
    # The command as written, re-run on a fresh clone: its wall time, and its table equal to the published
    # one (classification figures exactly; STS-B's regression within 0.01 points).
    row = find_row(timing, "what", r"^GlueResults as written")
    assert_figures(row["figure"], [*divmod(walls["as_written"]["wall_seconds"], 60), 0.01], row["what"])
    again = load(RESULTS / "glue" / "as-written" / "glue.json")
    assert [(r["task"], r["seed"]) for r in again["runs"]] == [(r["task"], r["seed"]) for r in table["runs"]]
    for ours, published in zip(again["runs"], table["runs"]):
        tolerance = 0.01 if ours["task"] == "stsb" else 0.0
        assert ours["scores"] == pytest.approx(published["scores"], abs=tolerance), ours["task"]
        assert ours["coverage"] == published["coverage"]
