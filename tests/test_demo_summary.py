"""`make demo` shows a short summary of the Dagster log: finished and failed steps, training loss."""
from orchestration.demo import TRAIN_REPORT_EVERY, summary_line

PREFIX = "2026-12-01 20:03:23 +0000 - dagster - DEBUG - __ASSET_JOB - 43112c18-cebc - 4150 - "


def test_summary_keeps_step_outcomes_and_sparse_training_loss():
    assert summary_line(PREFIX + 'trained_model - STEP_SUCCESS - Finished execution of step "trained_model" in 4m51s.\n') \
        == "  done: trained_model (4m51s)"
    assert summary_line(PREFIX + 'raw_takes - STEP_SUCCESS - Finished execution of step "raw_takes" in 129ms.\n') \
        == "  done: raw_takes (129ms)"
    failed = summary_line(PREFIX + 'mbench_scores - STEP_FAILURE - Execution of step "mbench_scores" failed.\n')
    assert failed.startswith("  FAILED: mbench_scores")
    info = "2026-12-01 20:04:29 +0000 - dagster - INFO - __ASSET_JOB - fcf4 - trained_model - step {}: loss=0.9588 lr=0.0004"
    assert summary_line(info.format(TRAIN_REPORT_EVERY)) == f"    training step {TRAIN_REPORT_EVERY}: loss=0.9588"
    assert summary_line(info.format(TRAIN_REPORT_EVERY + 10)) is None
    assert summary_line(PREFIX + "curated_shards - STEP_START - Started execution of step") is None
