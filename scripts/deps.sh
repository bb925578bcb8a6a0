#!/usr/bin/env bash
# deps.sh - installs the Debian packages lucent needs, only those missing.
# Run as root on Debian 12 (the project's machines); safe to run again.
set -euo pipefail
pkgs=(gcc clang make cmake pkg-config libc6-dev
      libcjson-dev libxxhash-dev libsqlite3-dev libcmocka-dev
      libmicrohttpd-dev libnats-dev nats-server
      sqlite3 python3 libjemalloc-dev python3-prometheus-client libclang-rt-14-dev
      libfaketime faketime)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing packages (${missing[*]}); run as root or install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
