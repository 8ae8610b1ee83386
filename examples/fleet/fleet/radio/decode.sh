#!/bin/sh
# radio-decode: turns hex frames from a 433 MHz receiver ("<id><temp*10><humidity>", e.g.
# "2a00d73c") into readings. Reads frames from the arguments or, without any, from stdin.
decode() {
    frame=$1
    case "$frame" in
        [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) ;;
        *) echo "bad frame: $frame" >&2; return 1 ;;
    esac
    id=$((0x$(echo "$frame" | cut -c1-2)))
    tenths=$((0x$(echo "$frame" | cut -c3-6)))
    humidity=$((0x$(echo "$frame" | cut -c7-8)))
    echo "sensor=$id temperature=$((tenths / 10)).$((tenths % 10)) humidity=$humidity"
}

if [ $# -gt 0 ]; then
    for f in "$@"; do decode "$f" || exit 1; done
else
    while read -r f; do decode "$f" || exit 1; done
fi
