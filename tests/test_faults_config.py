"""Bad configuration through the real CLI: `snakemake -n --configfile bad.yaml`."""

from __future__ import annotations

import pytest

from attnbench import config


@pytest.mark.parametrize(
    ("patch", "key"),
    [({"seeds": [0, 1.0]}, "seeds.1"), ({"train": {"epochs": 2.0}}, "train.epochs")],
)
def test_a_float_is_not_an_integer(patch, key) -> None:
    """Regression: JSON Schema took 1.0 as an integer, so `seeds: [0, 1.0]` passed and
    Snakemake then failed on a `seed1.0` folder with a MissingInputException."""
    with pytest.raises(config.ConfigError, match=rf"^config value {key} = .*\(expected integer\)"):
        config.validate(patch)
