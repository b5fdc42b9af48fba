"""Paired, interleaved timing in one process: the plan, the run and its statistics
(rules/timing.smk; the sweep's sweep_paired too)."""
