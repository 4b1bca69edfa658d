#!/usr/bin/env bash
# Makes sure the services the tests talk to are up: PostgreSQL (started if it is down) and
# Debian's chromium + chromedriver for the dashboard's browser test, and Debian's r-cran-janeaustenr
# (Jane Austen's novels, the held-out text of data.source/heldout_source `austen`), installed if missing.
set -euo pipefail
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  fi
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
      || echo "warning: could not install chromium; the dashboard browser test will fail" >&2
  fi
fi
if [ ! -f /usr/lib/R/site-library/janeaustenr/data/Rdata.rdb ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends r-cran-janeaustenr) \
      >/dev/null 2>&1 || echo "warning: could not install r-cran-janeaustenr; the 'austen' data source will fail" >&2
  fi
fi
