#!/usr/bin/env bash
# What the tests need on this machine, provisioned once for `make test` and `.ci/run` alike: Redis and PostgreSQL
# answering on loopback (a `test` database, trust auth for user postgres), Debian's headless Chromium, nftables, and
# a Docker engine's binaries (dockerd, containerd, runc: Debian's docker.io). The engine itself is not started here:
# the container tests start a private one and stop it (tests/dockerengine.py), so nothing of it outlives them.
# Starts what is installed but down; installs what is missing when it can (Debian, as root); otherwise says in one
# line what to install, and exits 1.
set -uo pipefail

say() { echo "provision: $*"; }
fail() { echo "provision: $*" >&2; exit 1; }
as_root_on_debian() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_updated=""
apt_install() {
  as_root_on_debian || return 1
  if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null 2>&1; apt_updated=1; fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q >/dev/null 2>&1; }

# --- Redis ---------------------------------------------------------------------------------------------------
if ! redis_up; then
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server ||
    fail "Redis is not running on 127.0.0.1:6379 and cannot be installed here: install redis-server (or set SOAK_TEST_REDIS_URL)"
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 ||
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
fi

# --- PostgreSQL ----------------------------------------------------------------------------------------------
if ! pg_up; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql ||
      fail "PostgreSQL is not running on 127.0.0.1:5432 and cannot be installed here: install postgresql (or set SOAK_TEST_PG_URL)"
    version="$(ls /etc/postgresql | head -n 1)"
    # Trust on loopback for the tests' user postgres, as on the CI machines.
    sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/; s/^(host\s+all\s+all\s+::1\/128\s+)\S+/\1trust/' \
      "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start >/dev/null 2>&1
fi

for _ in $(seq 1 30); do redis_up && pg_up && break; sleep 1; done
redis_up || fail "Redis did not come up on 127.0.0.1:6379"
pg_up || fail "PostgreSQL did not come up on 127.0.0.1:5432"
if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -Atc 'create database test' >/dev/null 2>&1 ||
    fail "PostgreSQL on 127.0.0.1:5432 has no database 'test' for user postgres (trust auth) and it cannot be created"
fi

# --- Chromium (the report and web UI tests look at what a person sees) ----------------------------------------
if ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium chromium-driver ||
    fail "Chromium is missing: install Debian's chromium and chromium-driver packages (test tools may not download browsers)"
fi

# --- nftables (network faults are real packet drops on loopback; without root the proxy cuts instead) ----------
if ! command -v nft >/dev/null 2>&1; then
  apt_install nftables || say "nftables is missing: network cuts fall back to the proxy (install nftables, run as root)"
fi

# --- Docker engine binaries (the embedded sut in containers; no registry is used, nothing is pulled) ----------
if ! command -v dockerd >/dev/null 2>&1; then
  # the engine alone (no git, no apparmor); the container tests start and stop a private dockerd themselves
  apt_install --no-install-recommends docker.io ||
    say "dockerd is missing: the container tests will say so (install Debian's docker.io, as root)"
fi

say "Redis, PostgreSQL, Chromium, nftables and the Docker engine's binaries ready"
