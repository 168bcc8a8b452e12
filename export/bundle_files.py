"""The files the toolchain adds to a bundle beside what the runtime reads (the manifest names them as
attachments): the evaluation sets a bundle is scored on and the report of its last evaluation. One
module, so that building a bundle does not import the evaluation stack to learn four names."""

EVAL_SET = "eval_set.toml"  # held-out lines for APC (from <sheet>.eval.toml)
CALIBRATION_SET = "apc_calibration.toml"  # hand-labelled pairs for APC's estimators
ACTION_TEST = "action_test.toml"  # the held-out action test (from <sheet>.action_test.toml)
PERSONA_TEST = "persona_test.toml"  # the held-out persona test (from <sheet>.persona_test.toml)
REPORT_JSON = "eval_report.json"
REPORT_MD = "eval_report.md"
