"""The environment stage: the flash-attn build, GPU slots, the run's environment record
and the backend probe, and what every Snakemake script shares (rules/environment.smk)."""
