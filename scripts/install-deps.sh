#!/usr/bin/env bash
# Installs the Debian packages Strata builds against, if they are missing:
#   librocksdb-dev  RocksDB, linked instead of compiled from source (see .cargo/config.toml)
#   libclang-dev    libclang, which the RocksDB bindings' bindgen needs at build time
#   protobuf-compiler  protoc, which the etcd client crate's build script runs
#   etcd-server     etcd, which the metadata and operator tests start on loopback (tests only)
#   openssl         certificates for the operator tests' kube-apiserver (tests only)
#   kubernetes-client  kubectl, if the machine has none (operator tests drive it)
#   python3, python3-venv  for the S3-compatible server (moto) the offload tests run
set -euo pipefail
missing=()
[ -e /usr/lib/x86_64-linux-gnu/librocksdb.so ] || missing+=(librocksdb-dev)
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null || missing+=(libclang-dev)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v openssl >/dev/null || missing+=(openssl)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}" >&2
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
