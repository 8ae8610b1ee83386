#!/bin/sh
# mqtt-lite: a line-based publish/subscribe broker in busybox sh, for a fleet demo.
#   PUB <topic> <message>   stores the message as the topic's retained value
#   GET <topic>             answers with the retained value
# Clients speak to it over TCP (nc); each connection is one session of this script.
SPOOL=${BROKER_SPOOL:-/var/lib/broker}

session() {
    while read -r verb topic rest; do
        case "$topic" in *[!A-Za-z0-9_/-]*|"") echo "ERR bad topic"; continue ;; esac
        file="$SPOOL/$(echo "$topic" | tr / _)"
        case "$verb" in
            PUB) echo "$rest" > "$file" && echo "OK" ;;
            GET) if [ -f "$file" ]; then echo "MSG $topic $(cat "$file")"; else echo "NONE $topic"; fi ;;
            *) echo "ERR unknown verb $verb" ;;
        esac
    done
}

case "$1" in
    --session) session ;;
    --selftest)
        SPOOL=$(mktemp -d)
        out=$(printf 'PUB sensors/temp 21.5\nGET sensors/temp\n' | session | tail -n 1)
        rm -rf "$SPOOL"
        [ "$out" = "MSG sensors/temp 21.5" ] && echo "broker selftest ok" ;;
    *)
        mkdir -p "$SPOOL"
        echo "mqtt-lite listening on ${BROKER_PORT:-1883}"
        exec nc -ll -p "${BROKER_PORT:-1883}" -e "$0" --session ;;
esac
