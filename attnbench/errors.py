"""The failures a user can fix, at the bottom of the package: every stage raises them.

Both say what was wrong and what to do, in one line. `UserError` ends a job with that
line (`attnbench.env.scriptutil.rule_logging`); `ConfigError` stops Snakemake at parse time.
"""

from __future__ import annotations


class UserError(RuntimeError):
    """A failure the user can fix; its message is one line that names the fix."""


class ConfigError(ValueError):
    """A user-fixable configuration problem; the message is one line."""
