#!/usr/bin/env bash
# Installs what `python -m bench --peers` compares queue_beanstalk with: Debian's
# redis-server binary, and RQ, dramatiq and Celery (with their Redis clients) in the
# project's venv. Nothing here starts a service: the benchmark starts a redis-server of
# its own on a free loopback port and stops it by its PID. `make test` never runs this.
#
# Usage: bash bench/peers_setup.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail

python=${1:-.venv/bin/python}
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

if ! command -v redis-server >/dev/null 2>&1; then
	echo "installing redis-server (Debian package)"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi

# Major versions pinned so that a run next year compares the same programs.
if ! "$python" -c "import rq, dramatiq, celery, redis" 2>/dev/null; then
	echo "installing rq, dramatiq, celery into $("$python" -c 'import sys; print(sys.prefix)')"
	"$python" -m pip install --quiet 'rq>=2,<3' 'dramatiq[redis]>=1.17,<3' 'celery[redis]>=5.4,<6'
fi
