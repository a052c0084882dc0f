#!/usr/bin/env bash
# docker/run.sh: migrate, seed and serve the demo with the release build,
# after printing how to use it. Called by `make run` (which first makes
# MariaDB and Redis answer and builds the release binary).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

app=./target/release/app
[ -x "$app" ] || { echo "run.sh: $app is missing: run 'make run' (it builds it)" >&2; exit 1; }

# The same settings the binary reads: environment first, then .env.
if [ -f .env ]; then
	while IFS='=' read -r name value; do
		case "$name" in APP_HOST | APP_PORT) [ -z "${!name:-}" ] && export "$name=${value%\"}" ;; esac
	done < <(grep -E '^(APP_HOST|APP_PORT)=' .env | tr -d '"')
fi
host="${APP_HOST:-127.0.0.1}"
port="${APP_PORT:-8080}"

"$app" migrate
"$app" seed
token="$("$app" token --user 1 2>/dev/null)"
base="http://$host:$port"

cat <<MSG

  Concert reservation service
  ---------------------------
  API         $base/api/v1/concerts
  Swagger UI  $base/swagger-ui/
  OpenAPI     $base/api-docs/openapi.json
  Demo token  (user 1, valid 24 h; more with: $app token --user N)
    $token

  Try it:
    curl -s $base/api/v1/concerts
    curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \\
         -d '{"amount":100000}' $base/api/v1/points/charge

  Ctrl-C stops the server.

MSG
exec "$app" serve
