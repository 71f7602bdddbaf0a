#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine (Debian + Python 3.11) and runs it:
# lint, format check, type check, then every test including the real-client integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v ocsptool >/dev/null 2>&1 || need_apt+=(gnutls-bin)  # GnuTLS, a second OCSP client
# PostgreSQL server binaries for the cluster, replica and drill tests (started by the tests)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_apt+=(postgresql)
fi
command -v runuser >/dev/null 2>&1 || need_apt+=(util-linux)
# the HA cluster (cluster up --ha, tests/test_ha.py): Patroni with its etcd client, and etcd
[ -x /usr/bin/patroni ] || need_apt+=(patroni)
/usr/bin/python3 -c 'import etcd' >/dev/null 2>&1 || need_apt+=(python3-etcd)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
# the cache tier: Varnish and its xkey module (surrogate-key purges)
command -v varnishd >/dev/null 2>&1 || need_apt+=(varnish)
ls /usr/lib/*/varnish/vmods/libvmod_xkey.so >/dev/null 2>&1 || need_apt+=(varnish-modules)
# promtool unit-tests the alert rules; headless Chromium loads the monitor's status page
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# the front that holds hostile connections (deploy/haproxy); strace proves key files unopened;
# systemd-analyze verifies the units in deploy/systemd
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# SoftHSM2: the PKCS#11 token the HSM tests create keys in (keys/pkcs11.py)
command -v softhsm2-util >/dev/null 2>&1 || need_apt+=(softhsm2)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${need_apt[*]}; install them (apt-get install -y ${need_apt[*]})" >&2
    exit 1
  fi
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
# optional: atheris for coverage-guided fuzzing of the decoders; without it that test is skipped
.venv/bin/pip install -q -e '.[fuzz]' || echo "atheris did not install: its fuzzing test will be skipped" >&2

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
