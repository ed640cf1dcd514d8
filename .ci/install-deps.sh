#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, run and test hostagent.
# Idempotent: packages already present are not fetched again. Needs root.
set -euo pipefail

PKGS=(
  python3-bpfcc python3-venv python3-dev gcc linux-headers-amd64 bpftool
  curl wrk openssl procps iproute2 util-linux
  nginx postgresql mariadb-server mariadb-client redis-server redis-tools
  dnsmasq-base docker.io busybox-static
  debootstrap mmdebstrap systemd-container rpm dpkg-dev fakeroot
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps Debian from starting the servers system-wide: tests start their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
fi
