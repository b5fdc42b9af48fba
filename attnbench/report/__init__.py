"""The report stage: the HTML report's views, words and figures (rules/report.smk; the
plots, sweep_plots and infer_plots rules)."""
