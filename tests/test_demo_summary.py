"""`make demo` shows a short summary of the Dagster log: each finished or failed step with its key
figure, and the training progress as a bar."""
from orchestration.demo import TRAIN_REPORT_EVERY, DemoSummary

PREFIX = "2026-12-01 20:03:23 +0000 - dagster - DEBUG - __ASSET_JOB - 43112c18-cebc - 4150 - "
INFO = "2026-12-01 20:04:29 +0000 - dagster - INFO - __ASSET_JOB - fcf4-9a - "


def test_summary_keeps_step_outcomes_with_their_key_figure_and_a_training_bar():
    summary = DemoSummary(total_steps=4 * TRAIN_REPORT_EVERY)
    assert summary.line(INFO + "curated_samples - accepted 42, quarantined 0") is None
    assert summary.line(INFO + "curated_samples - [pipes] external process opened") is None  # not a figure
    assert summary.line(PREFIX + 'curated_samples - STEP_SUCCESS - Finished execution of step "curated_samples" in 2.7s.\n') \
        == "  done: curated_samples (2.7s): accepted 42, quarantined 0"
    assert summary.line(PREFIX + 'raw_takes - STEP_SUCCESS - Finished execution of step "raw_takes" in 129ms.\n') \
        == "  done: raw_takes (129ms)"
    failed = summary.line(PREFIX + 'mbench_scores - STEP_FAILURE - Execution of step "mbench_scores" failed.\n')
    assert failed.startswith("  FAILED: mbench_scores")
    step = INFO + "trained_model - step {}: loss=0.9588 lr=0.0004"
    assert summary.line(step.format(2 * TRAIN_REPORT_EVERY)) == \
        f"    training [##########..........] {2 * TRAIN_REPORT_EVERY}/{4 * TRAIN_REPORT_EVERY} loss=0.9588"
    assert summary.line(step.format(TRAIN_REPORT_EVERY + 10)) is None
    assert summary.line(PREFIX + "curated_shards - STEP_START - Started execution of step") is None
    long = INFO + "mbench_scores - MBench: " + "x" * 300
    summary.line(long)
    done = summary.line(PREFIX + 'mbench_scores - STEP_SUCCESS - Finished execution of step "mbench_scores" in 1m2s.\n')
    assert done.startswith("  done: mbench_scores (1m2s): MBench: xxx") and done.endswith("...") and len(done) < 160


def test_summary_shows_the_light_model_with_its_own_bar_and_figure():
    summary = DemoSummary(total_steps=4 * TRAIN_REPORT_EVERY, light_steps=2 * TRAIN_REPORT_EVERY)
    step = INFO + "light_model - step {}: loss=0.2113 lr=0.0005"
    assert summary.line(step.format(TRAIN_REPORT_EVERY)) == \
        f"    distilling [##########..........] {TRAIN_REPORT_EVERY}/{2 * TRAIN_REPORT_EVERY} loss=0.2113"
    summary.line(INFO + "teacher_samples - accepted 60, quarantined 4 in 41s")
    assert summary.line(PREFIX + 'teacher_samples - STEP_SUCCESS - Finished execution of step "teacher_samples" in 44s.\n') \
        == "  done: teacher_samples (44s): accepted 60, quarantined 4 in 41s"
    summary.line(INFO + "light_champion_alias - promoted version 1: no champion yet")
    assert summary.line(PREFIX + 'light_champion_alias - STEP_SUCCESS - Finished execution of step '
                        '"light_champion_alias" in 1.2s.\n') == \
        "  done: light_champion_alias (1.2s): promoted version 1: no champion yet"
