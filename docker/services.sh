#!/usr/bin/env bash
# docker/services.sh: make DATABASE_URL (MariaDB/MySQL) and REDIS_URL (Redis)
# answer, for local development and tests.
#
# For each service, in order:
#   a. something already answers at the URL: reuse it;
#   b. the host is local and the server is installed: start it;
#   c. the host is local, the server is not installed, we are root and have
#      apt-get: install the Debian packages, then start as in b;
#   d. the host is local and docker exists: print the compose command, and run
#      it if a docker engine answers;
#   e. wait for it to answer; if it does not, explain the three ways to fix it
#      and exit 1.
# Running it again is harmless: whatever answers is reused.
#
# Usage: docker/services.sh [--mysql-only | --redis-only] [--quiet]
# Environment: DATABASE_URL, REDIS_URL (read from the repository's .env when
# not already set), SERVICES_WAIT_SECONDS (default 30).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_CMD="docker compose -f docker/compose.yml up -d"
WAIT_SECONDS="${SERVICES_WAIT_SECONDS:-30}"
GRACE_SECONDS=5 # wait when we started nothing ourselves
LOG_DIR="${TMPDIR:-/tmp}/concert-services-$(id -u)"

usage() {
	cat <<'EOF'
Usage: docker/services.sh [--mysql-only | --redis-only] [--quiet]

Makes DATABASE_URL (default mysql://root@127.0.0.1:3306/concert) and
REDIS_URL (default redis://127.0.0.1:6379) answer: reuses running servers,
otherwise starts (or, as root, installs and starts) local ones.
EOF
}

do_mysql=1
do_redis=1
quiet=0
while (($#)); do
	case "$1" in
	--mysql-only) do_redis=0 ;;
	--redis-only) do_mysql=0 ;;
	-q | --quiet) quiet=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "services.sh: unknown option: $1" >&2
		usage >&2
		exit 2
		;;
	esac
	shift
done
if ((!do_mysql && !do_redis)); then
	echo "services.sh: --mysql-only and --redis-only exclude each other" >&2
	exit 2
fi

say() { ((quiet)) || printf '%s\n' "$*"; }
warn() { printf '%s\n' "$*" >&2; }

# Output of long-running helpers (apt-get, docker): shown, unless --quiet.
run_noisy() {
	if ((quiet)); then
		"$@" >>"$LOG_DIR/services.log" 2>&1
	else
		"$@"
	fi
}

mkdir -p "$LOG_DIR"

# --- configuration -----------------------------------------------------------

# Read DATABASE_URL / REDIS_URL from $ROOT/.env without overriding the
# environment. The file is parsed, not sourced: other lines are ignored.
load_dotenv() {
	local file="$ROOT/.env" line name value keep_db=0 keep_redis=0
	[[ -f $file ]] || return 0
	[[ -n ${DATABASE_URL+x} ]] && keep_db=1
	[[ -n ${REDIS_URL+x} ]] && keep_redis=1
	while IFS= read -r line || [[ -n $line ]]; do
		line="${line%$'\r'}"
		[[ $line =~ ^[[:space:]]*(export[[:space:]]+)?(DATABASE_URL|REDIS_URL)[[:space:]]*=[[:space:]]*(.*)$ ]] || continue
		name="${BASH_REMATCH[2]}"
		value="${BASH_REMATCH[3]}"
		if [[ $value =~ ^\"(.*)\"[[:space:]]*$ || $value =~ ^\'(.*)\'[[:space:]]*$ ]]; then
			value="${BASH_REMATCH[1]}"
		else
			value="${value%%[[:space:]]#*}"             # unquoted: drop " # comment"
			value="${value%"${value##*[![:space:]]}"}" # and trailing blanks
		fi
		case "$name" in
		DATABASE_URL) ((keep_db)) || DATABASE_URL="$value" ;;
		REDIS_URL) ((keep_redis)) || REDIS_URL="$value" ;;
		esac
	done <"$file"
}

load_dotenv
DATABASE_URL="${DATABASE_URL:-mysql://root@127.0.0.1:3306/concert}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

urldecode() { printf '%b' "${1//%/\\x}"; }

# parse_url URL DEFAULT_PORT: sets URL_USER URL_PASS URL_HOST URL_PORT.
# Accepts scheme://[user[:pass]@]host[:port][/path][?query], host may be [v6].
parse_url() {
	local rest="${1#*://}" auth="" hostport port=""
	if [[ $rest == *@* ]]; then
		auth="${rest%@*}" # up to the last '@' (a password may contain '@')
		rest="${rest##*@}"
	fi
	hostport="${rest%%[/?#]*}"
	URL_USER="$(urldecode "${auth%%:*}")"
	URL_PASS=""
	[[ $auth == *:* ]] && URL_PASS="$(urldecode "${auth#*:}")"
	if [[ $hostport == \[* ]]; then # [::1]:3306
		URL_HOST="${hostport#\[}"
		URL_HOST="${URL_HOST%%\]*}"
		port="${hostport##*\]}"
		port="${port#:}"
	else
		URL_HOST="${hostport%%:*}"
		[[ $hostport == *:* ]] && port="${hostport##*:}"
	fi
	URL_PORT="${port:-$2}"
	[[ -n $URL_HOST && $URL_PORT =~ ^[0-9]+$ ]]
}

# The URL as printed: password masked.
redact() { sed -E 's#^([^:/]+://[^:/@]*:).*@#\1***@#' <<<"$1"; }

is_local() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 ]]; }

show_addr() { if [[ $1 == *:* ]]; then printf '[%s]:%s' "$1" "$2"; else printf '%s:%s' "$1" "$2"; fi; }

is_root() { ((EUID == 0)); }

first_executable() {
	local f
	for f in "$@"; do
		if [[ $f == /* ]]; then
			[[ -x $f ]] && { printf '%s\n' "$f"; return 0; }
		else
			command -v "$f" 2>/dev/null && return 0
		fi
	done
	return 1
}

# --- probes ------------------------------------------------------------------

# mysql_answers HOST PORT USER PASS: a MySQL/MariaDB server answers (it may
# still refuse the credentials: see mysql_login_ok).
mysql_answers() {
	local admin greeting
	if admin="$(first_executable mariadb-admin mysqladmin)"; then
		# --protocol=TCP: "-h localhost" would otherwise use the unix socket.
		# ping exits 0 whenever the server answers, even with "Access denied".
		(
			unset MYSQL_PWD
			[[ -n $4 ]] && export MYSQL_PWD="$4"
			timeout 5 "$admin" --no-defaults --protocol=TCP --connect-timeout=2 \
				-h "$1" -P "$2" -u "$3" ping
		) >/dev/null 2>&1
	else
		# No client: the server speaks first. Its greeting packet starts with a
		# 3-byte length, sequence number 0, then protocol version 10 (0x0a).
		greeting="$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && head -c 5 <&3' _ "$1" "$2" 2>/dev/null |
			od -An -tx1 | tr -d ' \n')" || return 1
		[[ ${greeting:6:4} == 000a ]]
	fi
}

mysql_probe_name() {
	local admin
	if admin="$(first_executable mariadb-admin mysqladmin)"; then
		echo "${admin##*/} ping"
	else
		echo "handshake probe over /dev/tcp"
	fi
}

# mysql_login_ok HOST PORT USER PASS: 0 logged in, 1 refused, 2 no client.
mysql_login_ok() {
	local client
	client="$(first_executable mariadb mysql)" || return 2
	(
		unset MYSQL_PWD
		[[ -n $4 ]] && export MYSQL_PWD="$4"
		timeout 10 "$client" --no-defaults --protocol=TCP --connect-timeout=3 \
			-h "$1" -P "$2" -u "$3" -e 'SELECT 1'
	) >/dev/null 2>"$LOG_DIR/mysql-login.err" && return 0
	return 1
}

# redis_reply HOST PORT USER PASS: prints the server's answer to PING
# ("PONG", or an error such as "NOAUTH ..."); nothing when nothing answers.
redis_reply() {
	if command -v redis-cli >/dev/null 2>&1; then
		(
			unset REDISCLI_AUTH
			args=(-h "$1" -p "$2")
			if [[ -n $4 ]]; then
				export REDISCLI_AUTH="$4" # not on the command line: no warning, not in ps
				[[ -n $3 ]] && args+=(--user "$3")
			fi
			timeout 5 redis-cli "${args[@]}" ping 2>/dev/null | head -n 1
		) || true
	else
		# No client: speak RESP over bash's /dev/tcp. AUTH as an array command
		# so a password with blanks survives; then PING, expecting "+PONG".
		timeout 3 bash -c '
			export LC_ALL=C
			exec 3<>"/dev/tcp/$1/$2" || exit 1
			if [[ -n $4 ]]; then
				if [[ -n $3 ]]; then
					printf "*3\r\n\$4\r\nAUTH\r\n\$%d\r\n%s\r\n\$%d\r\n%s\r\n" "${#3}" "$3" "${#4}" "$4" >&3
				else
					printf "*2\r\n\$4\r\nAUTH\r\n\$%d\r\n%s\r\n" "${#4}" "$4" >&3
				fi
				IFS= read -r line <&3 || exit 1
				line="${line%$'\''\r'\''}"
				[[ $line == +OK ]] || { printf "%s\n" "${line#-}"; exit 0; }
			fi
			printf "PING\r\n" >&3
			IFS= read -r line <&3 || exit 1
			line="${line%$'\''\r'\''}"
			# Only RESP simple strings / errors count as Redis.
			[[ $line == [+-]* ]] && printf "%s\n" "${line#[+-]}"
		' _ "$1" "$2" "$3" "$4" 2>/dev/null || true
	fi
}

redis_probe_name() {
	if command -v redis-cli >/dev/null 2>&1; then echo "redis-cli ping"; else echo "PING over /dev/tcp"; fi
}

REDIS_REPLY=""
redis_answers() {
	REDIS_REPLY="$(redis_reply "$@")"
	[[ -n $REDIS_REPLY ]]
}

# wait_for SECONDS COMMAND...: poll COMMAND every 0.5 s until it succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	while :; do
		"$@" && return 0
		((SECONDS >= deadline)) && return 1
		sleep 0.5
	done
}

# --- installing and starting ---------------------------------------------------

apt_updated=0
apt_install() {
	if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
		TRIED+=("install $*: not possible (needs root and apt-get)")
		return 1
	fi
	say "$LABEL: installing $* with apt-get"
	TRIED+=("apt-get install $*")
	if ((!apt_updated)); then
		run_noisy env DEBIAN_FRONTEND=noninteractive apt-get update || {
			TRIED+=("(apt-get update failed)")
			return 1
		}
		apt_updated=1
	fi
	run_noisy env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" || {
		TRIED+=("(apt-get install failed)")
		return 1
	}
}

mariadb_binary() { first_executable /usr/sbin/mariadbd /usr/sbin/mysqld mariadbd mysqld; }

# start_mariadb PORT: start the system MariaDB (its data dir is /var/lib/mysql).
start_mariadb() {
	local port="$1" bin installdb safe log="$LOG_DIR/mariadbd.log"
	bin="$(mariadb_binary)" || return 1
	if ! is_root && [[ ! -w /var/lib/mysql ]]; then
		TRIED+=("not root: cannot start $bin on /var/lib/mysql")
		return 1
	fi
	if [[ ! -d /var/lib/mysql/mysql ]]; then
		installdb="$(first_executable mariadb-install-db mysql_install_db)" || {
			TRIED+=("no mariadb-install-db to initialise /var/lib/mysql")
			return 1
		}
		say "$LABEL: initialising /var/lib/mysql with $installdb"
		TRIED+=("$installdb --user=mysql --datadir=/var/lib/mysql")
		"$installdb" --user=mysql --datadir=/var/lib/mysql >>"$LOG_DIR/mariadb-install-db.log" 2>&1 || {
			TRIED+=("(failed, see $LOG_DIR/mariadb-install-db.log)")
			return 1
		}
	fi
	if is_root; then
		install -d -o mysql -g mysql -m 0755 /run/mysqld
	fi
	if is_root && command -v start-stop-daemon >/dev/null 2>&1; then
		# --oknodo: a mariadbd that already runs is not an error (idempotent).
		local ssd=(start-stop-daemon --start --oknodo --background --exec "$bin")
		start-stop-daemon --help 2>&1 | grep -q -- '--output' && ssd+=(--output "$log")
		TRIED+=("start-stop-daemon --start --exec $bin")
		local out
		if out="$("${ssd[@]}" -- --user=mysql --port="$port" 2>&1)"; then
			printf '%s\n' "$out" >>"$log"
			# Only one mariadbd runs per data dir: one on another port stays as it is.
			[[ $out == *"already running"* ]] && TRIED+=("(a $bin already runs, maybe on another port: left alone)")
			return 0
		fi
		printf '%s\n' "$out" >>"$log"
	fi
	if safe="$(first_executable mariadbd-safe mysqld_safe)"; then
		TRIED+=("$safe in the background")
		nohup "$safe" --user=mysql --port="$port" </dev/null >>"$log" 2>&1 &
		return 0
	fi
	if is_root && command -v service >/dev/null 2>&1; then
		TRIED+=("service mariadb start")
		service mariadb start >>"$log" 2>&1 || service mysql start >>"$log" 2>&1
		return
	fi
	return 1
}

# On Debian, root@localhost authenticates with unix_socket only, so the
# password-less TCP login of the default DATABASE_URL fails. On a local dev
# box, when we are root and the URL says root without a password, allow it
# (keeping socket login), and say so.
ensure_mysql_login() {
	local host="$1" port="$2" user="$3" pass="$4" client rc=0
	mysql_login_ok "$host" "$port" "$user" "$pass" || rc=$?
	((rc != 1)) && return 0 # logged in, or no client to tell
	if [[ $user == root && -z $pass ]] && is_local "$host" && is_root &&
		client="$(first_executable mariadb mysql)"; then
		say "$LABEL: root cannot log in over TCP without a password; running via the socket (dev box only):"
		say "$LABEL:   ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket"
		"$client" -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;" ||
			warn "$LABEL: ALTER USER failed"
		mysql_login_ok "$host" "$port" "$user" "$pass" && return 0
		# With skip-name-resolve, 127.0.0.1 and ::1 do not match 'localhost'.
		say "$LABEL:   CREATE USER 'root'@'127.0.0.1' and 'root'@'::1' with an empty password, ALL PRIVILEGES"
		"$client" -u root -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
			GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
			CREATE USER IF NOT EXISTS 'root'@'::1' IDENTIFIED BY '';
			GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;
			FLUSH PRIVILEGES;" || warn "$LABEL: CREATE USER failed"
		mysql_login_ok "$host" "$port" "$user" "$pass" && return 0
	fi
	warn "$LABEL: the server at $(show_addr "$host" "$port") answers but refuses the login in $(redact "$DATABASE_URL"):"
	warn "$LABEL:   $(tail -n 1 "$LOG_DIR/mysql-login.err" 2>/dev/null)"
	if [[ $user == root && -z $pass ]] && is_local "$host"; then
		warn "$LABEL: to allow it on a local dev box run:"
		warn "$LABEL:   sudo mariadb -e \"ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;\""
	fi
	return 1
}

start_redis() {
	local port="$1"
	command -v redis-server >/dev/null 2>&1 || return 1
	TRIED+=("redis-server --daemonize yes --port $port")
	# "-::1": bind ::1 too when IPv6 exists ("-" makes it optional).
	redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" \
		--save "" --appendonly no --dir "$LOG_DIR" \
		--logfile "$LOG_DIR/redis-$port.log" --pidfile "$LOG_DIR/redis-$port.pid"
}

# try_docker SERVICE PORT DEFAULT_PORT: print the compose command; run it when a
# docker engine answers and compose publishes the port the URL asks for.
try_docker() {
	local svc="$1" port="$2" default="$3" compose
	command -v docker >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || return 1
	say "$LABEL: to run it in Docker: $COMPOSE_CMD"
	if [[ $port != "$default" ]]; then
		TRIED+=("docker: compose publishes port $default, not $port")
		return 1
	fi
	if ! timeout 15 docker info >/dev/null 2>&1; then
		TRIED+=("docker: no engine answers 'docker info'")
		return 1
	fi
	if docker compose version >/dev/null 2>&1; then
		compose=(docker compose)
	elif command -v docker-compose >/dev/null 2>&1; then
		compose=(docker-compose)
	else
		TRIED+=("docker: neither 'docker compose' nor docker-compose is installed")
		return 1
	fi
	TRIED+=("${compose[*]} -f docker/compose.yml up -d $svc")
	(cd "$ROOT" && run_noisy "${compose[@]}" -f docker/compose.yml up -d "$svc")
}

fail() { # VAR_NAME URL HOST PORT
	warn ""
	warn "$LABEL: ERROR: nothing usable answers at $(redact "$2") ($(show_addr "$3" "$4"))."
	local t
	for t in ${TRIED[@]+"${TRIED[@]}"}; do warn "$LABEL:   tried: $t"; done
	warn "$LABEL: Fix it one of three ways:"
	warn "$LABEL:   1. run this script as root (sudo docker/services.sh) so it can install and start the Debian packages;"
	warn "$LABEL:   2. start the containers: $COMPOSE_CMD"
	warn "$LABEL:   3. point $1 (environment or .env) at a running server."
	warn "$LABEL: Logs: $LOG_DIR"
}

# --- the two services ----------------------------------------------------------

ensure_mysql() {
	LABEL=mysql
	TRIED=()
	local url="$DATABASE_URL" host port user pass started="" waited="$GRACE_SECONDS"
	parse_url "$url" 3306 || {
		warn "mysql: ERROR: cannot parse DATABASE_URL=$(redact "$url") (want mysql://user[:pass]@host[:port]/db)"
		return 1
	}
	host="$URL_HOST" port="$URL_PORT" user="${URL_USER:-root}" pass="$URL_PASS"

	# a. reuse
	if mysql_answers "$host" "$port" "$user" "$pass"; then
		ensure_mysql_login "$host" "$port" "$user" "$pass" || return 1
		say "mysql: reusing $(show_addr "$host" "$port")"
		return 0
	fi
	TRIED+=("$(mysql_probe_name) at $(show_addr "$host" "$port"): no answer")

	if is_local "$host"; then
		# c. install, b. start
		if ! mariadb_binary >/dev/null; then
			apt_install mariadb-server mariadb-client || true
		fi
		if mariadb_binary >/dev/null && start_mariadb "$port"; then
			started="$(mariadb_binary)"
		# d. docker
		elif try_docker mariadb "$port" 3306; then
			started="docker compose service mariadb"
		fi
	else
		TRIED+=("$host is not local: nothing to start here")
	fi

	# e. wait
	[[ -n $started ]] && waited="$WAIT_SECONDS"
	if wait_for "$waited" mysql_answers "$host" "$port" "$user" "$pass"; then
		ensure_mysql_login "$host" "$port" "$user" "$pass" || return 1
		say "mysql: started $started on $port"
		return 0
	fi
	TRIED+=("waited ${waited} s for it to answer")
	fail DATABASE_URL "$url" "$host" "$port"
	return 1
}

ensure_redis() {
	LABEL=redis
	TRIED=()
	local url="$REDIS_URL" host port user pass started="" waited="$GRACE_SECONDS"
	parse_url "$url" 6379 || {
		warn "redis: ERROR: cannot parse REDIS_URL=$(redact "$url") (want redis://[user:pass@]host[:port][/db])"
		return 1
	}
	host="$URL_HOST" port="$URL_PORT" user="$URL_USER" pass="$URL_PASS"

	# a. reuse
	if redis_answers "$host" "$port" "$user" "$pass"; then
		if [[ $REDIS_REPLY != PONG ]]; then
			warn "redis: the server at $(show_addr "$host" "$port") answers PING with: $REDIS_REPLY"
			warn "redis: fix the credentials in REDIS_URL=$(redact "$url")"
			return 1
		fi
		say "redis: reusing $(show_addr "$host" "$port")"
		return 0
	fi
	TRIED+=("$(redis_probe_name) at $(show_addr "$host" "$port"): no answer")

	if is_local "$host"; then
		if ! command -v redis-server >/dev/null 2>&1; then
			apt_install redis-server redis-tools || true
		fi
		if start_redis "$port"; then
			started=redis-server
		elif try_docker redis "$port" 6379; then
			started="docker compose service redis"
		fi
	else
		TRIED+=("$host is not local: nothing to start here")
	fi

	[[ -n $started ]] && waited="$WAIT_SECONDS"
	if wait_for "$waited" redis_answers "$host" "$port" "$user" "$pass" && [[ $REDIS_REPLY == PONG ]]; then
		say "redis: started $started on $port"
		return 0
	fi
	TRIED+=("waited ${waited} s for PONG${REDIS_REPLY:+ (last reply: $REDIS_REPLY)}")
	fail REDIS_URL "$url" "$host" "$port"
	return 1
}

status=0
if ((do_mysql)); then ensure_mysql || status=1; fi
if ((do_redis)); then ensure_redis || status=1; fi
exit "$status"
