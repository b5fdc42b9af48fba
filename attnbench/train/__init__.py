"""The train stage: the run design and order, one training run with its recorder and
trackers (rules/train.smk)."""
