#!/usr/bin/env bash
# Fetch the newest linux-source-7.x (>= 7.3) that Debian sid or experimental offers, through a private apt
# configuration (own sources list, lists and cache dirs; the system's apt is not touched), and unpack it.
# Prints, as its last line, the absolute path of the unpacked source tree. Re-uses a tree already unpacked.
set -euo pipefail
CACHE=${PVTCE_CACHE:-/var/cache/pvtce}
d="$CACHE/apt/sid"
mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$CACHE/src"
cat > "$d/sources.list" <<SL
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian experimental main
SL
: > "$d/status"
o=(-o "Dir::Etc::sourcelist=$d/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$d/lists"
   -o "Dir::Cache=$d/cache" -o "Dir::State::status=$d/status" -o Debug::NoLocking=1 -o APT::Architecture=amd64
   -o APT::Architectures=amd64)
# The package lists are refreshed once a day at most: a second run must not depend on the network.
if [ -z "$(find "$d/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
  apt-get "${o[@]}" update -qq >&2 || echo "fetch-kernel: apt update failed; using the lists already here" >&2
fi
# Newest linux-source-7.N with N >= 3, any suite.
best=""; bestver=""
for pkg in $(apt-cache "${o[@]}" pkgnames linux-source-7. 2>/dev/null | sort -u); do
  minor=${pkg#linux-source-7.}
  [[ $minor =~ ^[0-9]+$ ]] && ((minor >= 3)) || continue
  for v in $(apt-cache "${o[@]}" madison "$pkg" | awk '{print $3}'); do
    if [ -z "$bestver" ] || dpkg --compare-versions "$v" gt "$bestver"; then best=$pkg; bestver=$v; fi
  done
done
if [ -z "$best" ]; then
  # Offline: fall back to the newest tree already unpacked.
  t=$(ls -d "$CACHE"/src/linux-source-7.*/ 2>/dev/null | sort -V | tail -n1)
  [ -n "$t" ] || { echo "fetch-kernel: no linux-source-7.x (>= 7.3) in sid/experimental and none cached" >&2; exit 1; }
  echo "${t%/}"; exit 0
fi
tree="$CACHE/src/$best-${bestver//[~:]/_}"
if [ ! -f "$tree/.pvtce-unpacked" ]; then
  echo "fetch-kernel: $best $bestver" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get "${o[@]}" download "$best=$bestver" >&2)
  rm -rf "$tree"; mkdir -p "$tree"
  dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -xO --wildcards './usr/src/linux-source-*.tar.xz' | tar -xJ -C "$tree" --strip-components=1
  echo "$best $bestver" > "$tree/.pvtce-unpacked"
  rm -rf "$tmp"
fi
echo "$tree"
