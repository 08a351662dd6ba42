#!/usr/bin/env bash
# The real-guest scenario's Debian software (issue 10), for L1 and L2, fetched through a private apt
# configuration (foreign architecture ppc64el, Debian 12 "bookworm"; the system's apt is not touched):
# - bookworm's unmodified qemu-system-ppc (qemu-system-ppc64), its firmware (vof.bin, slof.bin) and its
#   shared-library closure: an empty dpkg status plus `apt-get install --download-only` resolves the packages,
#   the binary's NEEDED entries (followed recursively) choose the files that go into L1;
# - bookworm's linux-image-*-powerpc64le: its vmlinux and its nvme modules (with what they depend on), for L2.
# The result is cached under $PVTCE_CACHE/realguest/<key>, keyed by the package versions; a second run with
# the same versions does nothing. The last line printed is that directory. Layout:
#   l1/         files for L1's root (the qemu binary, its libraries and firmware at their Debian paths)
#   l2/vmlinux  the Debian kernel;  l2/modules/  its nvme modules in load order (l2/modules/order)
#   VERSIONS    "qemu-system-ppc <version>" and "linux-image-<abi> <version>"
set -euo pipefail
CACHE=${PVTCE_CACHE:-/var/cache/pvtce}
log() { printf 'realguest: %s\n' "$*" >&2; }

d="$CACHE/apt/realguest"
mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
cat > "$d/sources.list" <<SL
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
SL
: > "$d/status"
o=(-o "Dir::Etc::sourcelist=$d/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$d/lists"
   -o "Dir::Cache=$d/cache" -o "Dir::State::status=$d/status" -o Debug::NoLocking=1 -o APT::Architecture=ppc64el
   -o APT::Architectures=ppc64el -o APT::Install-Recommends=0 -o APT::Sandbox::User=root)
# The package lists are refreshed once a day at most: a second run must not depend on the network.
if [ -z "$(find "$d/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
  apt-get "${o[@]}" update -qq >&2 || log "apt update failed; using the lists already here"
fi

cand() { apt-cache "${o[@]}" policy "$1" | awk '/Candidate:/ {print $2}'; }
qver=$(cand qemu-system-ppc)
# The metapackage names the current ABI's image package.
kpkg=$(apt-cache "${o[@]}" depends linux-image-powerpc64le | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
kver=$(cand "$kpkg")
if [ -z "$qver" ] || [ "$qver" = "(none)" ] || [ -z "$kpkg" ] || [ -z "$kver" ]; then
  t=$(ls -d "$CACHE"/realguest/*/ 2>/dev/null | sort -V | tail -n1)
  [ -n "$t" ] && [ -f "$t/.done" ] || { log "no qemu-system-ppc/linux-image-powerpc64le in the lists and none cached"; exit 1; }
  log "offline: using $t"; echo "${t%/}"; exit 0
fi
key="qemu-${qver//[~:+]/_}-${kpkg#linux-image-}-${kver//[~:+]/_}"
out="$CACHE/realguest/$key"
if [ -f "$out/.done" ]; then
  log "cached: qemu-system-ppc $qver, $kpkg $kver"
  echo "$out"; exit 0
fi
log "fetching qemu-system-ppc $qver and $kpkg $kver (ppc64el, bookworm)"
rm -rf "$out"; mkdir -p "$out/debs/partial" "$out/l1" "$out/l2/modules"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# 1. qemu-system-ppc and its whole dependency closure (the status is empty, so apt resolves all of it).
apt-get "${o[@]}" -o "Dir::Cache::archives=$out/debs" install --download-only -y -qq "qemu-system-ppc=$qver" >&2
mkdir -p "$tmp/q"
for deb in "$out"/debs/*.deb; do dpkg-deb -x "$deb" "$tmp/q"; done
# Debian 12 ships libraries in both /lib and /usr/lib: look in both, place each file where its package put it.
bin=usr/bin/qemu-system-ppc64
[ -x "$tmp/q/$bin" ] || { log "no $bin in the packages"; exit 1; }
# Each file is copied as a plain file (links followed inside the unpacked root, also absolute ones such as
# /lib64/ld64.so.2 -> /lib/powerpc64le-linux-gnu/ld64.so.2).
real() {
  local p=$1 l n=0
  while [ -L "$tmp/q/$p" ] && ((n++ < 16)); do
    l=$(readlink "$tmp/q/$p")
    case "$l" in /*) p=${l#/} ;; *) p=$(dirname "$p")/$l ;; esac
  done
  echo "$tmp/q/$p"
}
interp=$(readelf -l "$tmp/q/$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
want=("$bin" "${interp#/}")
seen=" "
queue=("$tmp/q/$bin")
while ((${#queue[@]})); do
  f=${queue[0]}; queue=("${queue[@]:1}")
  for lib in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [[ $seen == *" $lib "* ]] && continue
    seen+="$lib "
    p=""
    for dir in lib/powerpc64le-linux-gnu usr/lib/powerpc64le-linux-gnu lib64 usr/lib; do
      if [ -e "$tmp/q/$dir/$lib" ] || [ -L "$tmp/q/$dir/$lib" ]; then p="$dir/$lib"; break; fi
    done
    [ -n "$p" ] || { log "library $lib (NEEDED by $f) is in no fetched package"; exit 1; }
    want+=("$p"); queue+=("$(real "$p")")
  done
done
# Firmware: QEMU's own Open Firmware (x-vof) and SLOF, from qemu-system-data.
want+=(usr/share/qemu/vof.bin usr/share/qemu/slof.bin)
for f in "${want[@]}"; do
  mkdir -p "$out/l1/$(dirname "$f")"
  cp "$(real "$f")" "$out/l1/$f"
done
log "L1 files: ${#want[@]} ($(du -sh "$out/l1" | cut -f1))"

# 2. The Debian kernel: vmlinux and the nvme modules with their dependencies, in load order.
(cd "$tmp" && apt-get "${o[@]}" download "$kpkg=$kver" >&2)
mkdir -p "$tmp/k"
dpkg-deb -x "$tmp"/"$kpkg"_*.deb "$tmp/k"
vml=$(ls "$tmp"/k/boot/vmlinux-* | head -n1)
cp "$vml" "$out/l2/vmlinux"
mdir=$(ls -d "$tmp"/k/lib/modules/*/ | head -n1)
# The package has no modules.dep (the postinst makes it): make one; depmod reads any architecture's modules.
depmod -b "$tmp/k" "$(basename "$mdir")"
# modules.dep lines: "kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko ...".
order=()
add() {
  local m=$1 dep
  for dep in $(awk -v m="$m:" '$1 == m {for (i = 2; i <= NF; i++) print $i}' "$mdir/modules.dep"); do add "$dep"; done
  [[ " ${order[*]-} " == *" $m "* ]] || order+=("$m")
}
top=$(awk -F: '$1 ~ /\/nvme\.ko(\.xz)?$/ {print $1; exit}' "$mdir/modules.dep")
[ -n "$top" ] || { log "no nvme.ko in $kpkg"; exit 1; }
add "$top"
for m in "${order[@]}"; do
  case "$m" in
    *.xz) xz -dc "$mdir/$m" > "$out/l2/modules/$(basename "${m%.xz}")" ;;
    *) cp "$mdir/$m" "$out/l2/modules/" ;;
  esac
  basename "${m%.xz}" >> "$out/l2/modules/order"
done
log "L2 kernel $(basename "$vml"), modules: $(tr '\n' ' ' < "$out/l2/modules/order")"

printf 'qemu-system-ppc %s\n%s %s\n' "$qver" "$kpkg" "$kver" > "$out/VERSIONS"
rm -rf "$out/debs"
touch "$out/.done"
echo "$out"
