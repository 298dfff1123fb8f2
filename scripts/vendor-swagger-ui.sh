#!/usr/bin/env bash
# Refreshes assets/swagger-ui from the npm package swagger-ui-dist, which `/docs` serves
# compiled into the binary (no CDN at run time, nothing downloaded at build time).
#
#   scripts/vendor-swagger-ui.sh            # the version pinned below
#   scripts/vendor-swagger-ui.sh 5.36.0     # another version; update VERSION in the README
set -euo pipefail
cd "$(dirname "$0")/.."

version="${1:-5.35.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "swagger-ui-dist@$version" >/dev/null && tar xzf swagger-ui-dist-*.tgz)
dest=assets/swagger-ui
for file in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE; do
  cp "$work/package/$file" "$dest/$file"
done
# Source maps are not shipped: drop the reference so browsers do not ask for them.
sed -i '/sourceMappingURL=/d' "$dest/swagger-ui.css" "$dest/swagger-ui-bundle.js"
sed -i "s/^version: .*/version: $version/" "$dest/README.md"
(cd "$dest" && sha256sum swagger-ui-bundle.js swagger-ui.css)
