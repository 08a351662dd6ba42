#!/usr/bin/env bash
# Install everything pvtce needs on a fresh Debian 12 (bookworm) x86_64 machine. Idempotent: each step checks
# first. Newer Debian suites (sid/experimental, for the kernel source) and foreign-architecture packages
# (busybox-static:ppc64el) are reached through a private apt configuration under $PVTCE_CACHE/apt, never by
# changing the system's sources.
set -euo pipefail
CACHE=${PVTCE_CACHE:-/var/cache/pvtce}
mkdir -p "$CACHE"
log() { printf 'setup: %s\n' "$*"; }

PKGS=(qemu-system-ppc gcc-powerpc64le-linux-gnu binutils-powerpc64le-linux-gnu linux-libc-dev-ppc64el-cross
      libc6-dev-ppc64el-cross clang-19 lld-19 llvm-19 libclang-19-dev bc bison flex libssl-dev libelf-dev cpio
      xz-utils kmod python3 rsync file qemu-user)
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

# Rust: the kernel and every module must be built by the same rustc; rust-src for the kernel's core build.
rustup component list --installed | grep -q '^rust-src' || { log "rustup component add rust-src"; rustup component add rust-src; }
rustup target list --installed | grep -q '^powerpc64le-unknown-linux-gnu$' || { log "rustup target add powerpc64le"; rustup target add powerpc64le-unknown-linux-gnu; }
if ! command -v bindgen >/dev/null || ! bindgen --version | grep -q '0\.7[0-9]'; then
  log "cargo install bindgen-cli"
  LIBCLANG_PATH=/usr/lib/llvm-19/lib cargo install --locked bindgen-cli --version 0.73.2 -q
fi

# Private apt configuration for suites and architectures the system does not use.
papt() {
  local name=$1 arch=$2; shift 2
  local d="$CACHE/apt/$name"
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  echo "-o Dir::Etc::sourcelist=$d/sources.list -o Dir::Etc::sourceparts=- -o Dir::State::Lists=$d/lists \
-o Dir::Cache=$d/cache -o Dir::State::status=$d/status -o APT::Architecture=$arch -o APT::Architectures=$arch \
-o Debug::NoLocking=1"
  : > "$d/status"
  printf '%s\n' "$@" > "$d/sources.list"
}

# busybox-static for ppc64el (bookworm), extracted, not installed.
if [ ! -x "$CACHE/busybox-ppc64el/bin/busybox" ]; then
  log "busybox-static:ppc64el"
  o=$(papt bb ppc64el "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main")
  # shellcheck disable=SC2086
  apt-get $o update -qq
  tmp=$(mktemp -d); (cd "$tmp" && apt-get $o download busybox-static >/dev/null)
  rm -rf "$CACHE/busybox-ppc64el"; mkdir -p "$CACHE/busybox-ppc64el"
  dpkg-deb -x "$tmp"/busybox-static_*.deb "$CACHE/busybox-ppc64el"
  dpkg-deb -f "$tmp"/busybox-static_*.deb Version > "$CACHE/busybox-ppc64el/VERSION"
  rm -rf "$tmp"
fi
log "busybox-static ppc64el $(cat "$CACHE/busybox-ppc64el/VERSION")"
