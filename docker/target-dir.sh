#!/usr/bin/env bash
# docker/target-dir.sh: prints cargo's target directory for this workspace,
# the way cargo resolves it (CARGO_TARGET_DIR, .cargo/config.toml
# build.target-dir, else ./target).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="$(${CARGO:-cargo} metadata --format-version 1 --no-deps 2>/dev/null |
	sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
echo "${dir:-${CARGO_TARGET_DIR:-$PWD/target}}"
