#!/usr/bin/env bash
# docker/run.sh: migrate, seed and serve the demo with the release build.
# Called by `make run` (which first makes MariaDB and Redis answer and
# builds the release binary). The server prints the URLs and demo tokens
# itself, once its port is bound.
#
# The binary: $APP_BIN if set, else `release/app` in cargo's target
# directory (CARGO_TARGET_DIR and cargo configuration honoured, as cargo
# itself resolves it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

app="${APP_BIN:-$(bash docker/target-dir.sh)/release/app}"
if [ ! -x "$app" ]; then
	echo "run.sh: no release binary at $app; build it with: cargo build --release -p concert-app" >&2
	exit 1
fi

"$app" migrate
"$app" seed
exec "$app" serve --banner
