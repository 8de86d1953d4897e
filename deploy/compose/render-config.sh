#!/bin/sh
# Renders an envsubst-style template: render-config.sh TEMPLATE OUTPUT
# Every ${NAME} (NAME in capitals, digits, underscores) is replaced by the environment variable
# NAME; a placeholder whose variable is unset is an error, so a half-filled config never
# reaches Envoy. Values are inserted as they are (no second pass, no escaping), like envsubst.
# POSIX sh and awk only: runs in the Envoy image (dash, mawk), under busybox and on any Linux host.
set -eu
template=$1
output=$2
tmp="$output.tmp.$$"
awk '
{
  line = $0
  out = ""
  while (match(line, /\$\{[A-Z_][A-Z0-9_]*\}/)) {
    name = substr(line, RSTART + 2, RLENGTH - 3)
    if (!(name in ENVIRON)) {
      printf "render-config.sh: %s:%d: ${%s} is not set\n", FILENAME, NR, name > "/dev/stderr"
      missing = 1
    }
    out = out substr(line, 1, RSTART - 1) ENVIRON[name]
    line = substr(line, RSTART + RLENGTH)
  }
  print out line
}
END { exit missing }
' "$template" >"$tmp" || { rm -f "$tmp"; exit 1; }
mv "$tmp" "$output"
echo "render-config.sh: wrote $output from $template"
