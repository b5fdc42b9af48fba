"""The analysis stage: the aggregate tables and their statistics, for the study, the sweep
and inference (rules/analysis.smk; sweep_aggregate, infer_aggregate)."""
