#!/usr/bin/env bash
# Regenerates the config reference in README.md from `bioflex-train --help-config` (the key table
# in src/host/config.c is the single source). tests/cli_tests.sh fails when the README is stale.
#   bash tools/update_readme_config.sh [path/to/bioflex-train]
set -euo pipefail
cd "$(dirname "$0")/.."
train=${1:-build/bioflex-train}
python3 - "$train" <<'PY'
import subprocess, sys
ref = subprocess.run([sys.argv[1], "--help-config"], check=True, capture_output=True, text=True).stdout
ref = "\n".join(("#" + l if l.startswith("#") else l) for l in ref.strip().splitlines())
begin, end = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"
text = open("README.md").read()
head, rest = text.split(begin)
_, tail = rest.split(end)
open("README.md", "w").write(head + begin + "\n" + ref + "\n" + end + tail)
PY
