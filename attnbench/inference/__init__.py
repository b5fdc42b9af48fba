"""The inference benchmark: its plan, model, timed runs and agreement (rules/inference.smk)."""
