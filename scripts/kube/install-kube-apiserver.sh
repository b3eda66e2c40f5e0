#!/usr/bin/env bash
# Prints the path of a kube-apiserver binary for the operator's tests, building it first if
# this machine has none cached (about 8 minutes on 2 cores, once per machine).
#
# Source: Debian bookworm's `kubernetes` source package (1.20), built with Debian's Go 1.19
# from its vendored modules. Its vendored modern-go/reflect2 v1.0.1 breaks on Go >= 1.18
# (every map encode panics in reflect.mapiterinit, so the first custom-resource create fails
# with "unexpected EOF"); reflect2-go118.patch makes the three edits of reflect2 v1.0.2.
#
# The binary is cached outside the repository, keyed by the package version and the patch:
#   ${STRATA_TOOLS_CACHE:-$HOME/.cache/strata-tools}/kube-apiserver-<version>-<patch hash>/
# Progress goes to stderr; stdout is only the path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="1.20.5+really1.20.2"
patch="$here/reflect2-go118.patch"
key="$(sha256sum "$patch" | cut -c1-12)"
cache="${STRATA_TOOLS_CACHE:-$HOME/.cache/strata-tools}/kube-apiserver-$version-$key"
bin="$cache/kube-apiserver"
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
exec 3>&1 1>&2 # everything below is progress

if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
src_list=/etc/apt/sources.list.d/strata-deb-src.sources
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    echo "adding a deb-src entry for bookworm main ($src_list)"
    $sudo tee "$src_list" >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    $sudo apt-get update -qq
fi
need=()
[ -x /usr/lib/go-1.19/bin/go ] || need+=(golang-1.19-go)
command -v rsync >/dev/null || need+=(rsync)
command -v jq >/dev/null || need+=(jq)
command -v dpkg-source >/dev/null || need+=(dpkg-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing Debian packages: ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/strata-kube-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "fetching Debian's kubernetes $version source"
apt-get source -qq "kubernetes=$version-1.1+deb12u1" >/dev/null 2>&1 || apt-get source -qq kubernetes >/dev/null
cd "kubernetes-$version"
patch -p1 -s <"$patch"
echo "building kube-apiserver (about 8 minutes on 2 cores)"
export PATH="/usr/lib/go-1.19/bin:$PATH" GOPATH="$PWD/.gopath" GOFLAGS=-mod=vendor CGO_ENABLED=0
export GOCACHE="$work/gocache"
make WHAT=cmd/kube-apiserver >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
mkdir -p "$cache"
cp _output/bin/kube-apiserver "$cache/kube-apiserver.tmp"
mv "$cache/kube-apiserver.tmp" "$bin"
echo "kube-apiserver cached at $bin"
echo "$bin" >&3
