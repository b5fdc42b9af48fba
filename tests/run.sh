#!/usr/bin/env bash
# Install everything the test suite needs, then run it. `.ci/run` calls this.
#   bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages for the browser test (Chromium) and the Slurm test (a
# single-node cluster). Best effort: those tests skip with a reason without them.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v slurmctld >/dev/null || missing+=(slurmctld slurmd slurm-client munge)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null) || echo "tests/run.sh: apt-get failed; those tests will skip"
  fi
fi

python -m pip install --quiet --disable-pip-version-check -e ".[test]"
exec python -m pytest "$@"
