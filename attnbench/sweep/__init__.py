"""The sweep: its plan, cost estimate, points and max-batch probes (rules/sweep.smk)."""
