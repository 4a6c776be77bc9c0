# Sourced by the benchmark scripts that chain several runs (fusion_fashion.sh, evolution_fashion.sh).
#
# logged_run SCRIPT NAME COMMAND...: run COMMAND with its output in $OUT/logs/NAME.log, append the
# command line to $OUT/commands.txt, say how long it took; on failure show the log's last lines
# and stop the calling script.
logged_run() {
    local script="$1" name="$2"
    shift 2
    printf '%q ' "$@" >> "$OUT/commands.txt"
    echo >> "$OUT/commands.txt"
    local started=$SECONDS
    if ! "$@" > "$OUT/logs/$name.log" 2>&1; then
        echo "$script: $name failed; see $OUT/logs/$name.log" >&2
        tail -3 "$OUT/logs/$name.log" >&2
        exit 1
    fi
    echo "$script: $name done in $((SECONDS - started)) s (total $SECONDS s)"
}
