#!/usr/bin/env sh
# System packages the Makefile needs beyond Python: `run` needs npm (to build the UI); `test` also needs
# Chromium (browser end-to-end tests) and, optionally, nginx (`nginx -t` of deploy/nginx.conf) and redis-server
# (the Redis Cluster suite).
# As root with apt-get, missing packages are installed; otherwise the first missing one is named in one
# line, with the command that installs it, and the script fails. --check never installs anything.
#
#   deploy/install-system-deps.sh [--check] [run|test]      (default: test)
set -eu

check_only=0
if [ "${1:-}" = "--check" ]; then check_only=1; shift; fi
what="${1:-test}"
chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"

can_install() {
  [ "$check_only" = 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1
}

updated=0
apt_install() {
  if [ "$updated" = 0 ]; then apt-get update -qq; updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

missing() {  # what, how to get it
  echo "missing $1: $2" >&2
  exit 1
}

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
  missing "Python 3.11 or newer as python3" "install it (apt-get install python3), or run make PYTHON=python3.11 ..."
command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1 ||
  missing "Node.js 20.19+ or 22.12+ with npm, to build the UI" "install Node.js 22 LTS from https://nodejs.org/ (Debian 12's own nodejs is 18: too old for Vite)"
# Vite needs ^20.19.0 || >=22.12.0 (client/package-lock.json); an older one fails deep inside the build.
node_version=$(node --version 2>/dev/null | sed 's/^v//')
node_major=$(echo "$node_version" | cut -d. -f1)
node_minor=$(echo "$node_version" | cut -d. -f2)
case "$node_major.$node_minor" in
  *[!0-9.]* | .* | *.) node_ok=0 ;;
  *) if [ "$node_major" -gt 22 ] || { [ "$node_major" -eq 22 ] && [ "$node_minor" -ge 12 ]; } ||
        { [ "$node_major" -eq 20 ] && [ "$node_minor" -ge 19 ]; }; then node_ok=1; else node_ok=0; fi ;;
esac
[ "$node_ok" = 1 ] ||
  missing "Node.js 20.19+ or 22.12+ to build the UI (this one is ${node_version:-unknown})" "install Node.js 22 LTS from https://nodejs.org/"

[ "$what" = run ] && exit 0

if [ ! -x "$chromium" ]; then
  if can_install; then
    echo "installing chromium (browser end-to-end tests)..." >&2
    apt_install chromium
  fi
  [ -x "$chromium" ] ||
    missing "$chromium (browser end-to-end tests)" "sudo apt-get install -y chromium, or set CHROMIUM_PATH to a Chromium binary"
fi

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if can_install; then
    echo "installing nginx-light (nginx -t of deploy/nginx.conf)..." >&2
    apt_install nginx-light || echo "note: nginx-light did not install; the nginx tests will be skipped" >&2
  else
    echo "note: nginx is not installed, so the nginx tests are skipped (sudo apt-get install -y nginx-light)" >&2
  fi
fi

# redis-server 7 and redis-cli: the Redis Cluster suite (tests/conftest.py) starts a cluster from them
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  if can_install; then
    echo "installing redis-server (the tests' Redis Cluster)..." >&2
    apt_install redis-server || echo "note: redis-server did not install; the Redis Cluster tests will be skipped" >&2
  else
    echo "note: redis-server is not installed, so the Redis Cluster tests are skipped (sudo apt-get install -y redis-server)" >&2
  fi
fi
