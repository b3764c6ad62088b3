# Shared by the bench scripts (sourced after WORK is set): process cleanup on exit,
# stopping one process, a free port, and waiting for a quiet machine (it is shared).
# Uses: WORK (a work directory), QUIET_WAIT (seconds), KEPT_MESSAGE (what KEEP_LOGS=1
# prints before the directory, default "work directory kept:"); fills PIDS with what to
# kill.

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    sleep 0.3
    for pid in "${PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP_LOGS:-0} == 1 ]]; then
        echo "${KEPT_MESSAGE:-work directory kept:} $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process this script started (SIGTERM, then SIGKILL after 5 s) and forgets it.
stop() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget "$pid"
}

# Removes one PID from PIDS (the process has exited).
forget() {
    local pid=$1 p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

free_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 20000))
        [[ -z $(ss -Htan "sport = :$p") ]] && { echo "$p"; return; }
    done
    echo "${0##*/}: no free port found" >&2
    return 1
}

# Percent of all cores busy over one second (whole machine, from /proc/stat): two numbers,
# not counting niced processes, and everything.
machine_busy() {
    local a b
    a=$(head -n 1 /proc/stat)
    sleep 1
    b=$(head -n 1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        n = split(a, x); split(b, y); t = 0
        for (i = 2; i <= n; i++) t += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6]); niced = y[3] - x[3]
        printf "%.0f %.0f", (t > 0 ? 100 * (t - idle - niced) / t : 0), (t > 0 ? 100 * (t - idle) / t : 0)
    }'
}

# On a shared machine: wait (up to QUIET_WAIT seconds) until others leave the cores alone
# (un-niced load <= 10 %); prints the load found last: "U % (N % with niced)".
wait_quiet() {
    local waited=0 busy all
    while :; do
        read -r busy all < <(machine_busy)
        ((busy <= 10 || waited >= QUIET_WAIT)) && break
        ((waited == 0)) && echo "  machine ${busy} % busy; waiting up to $QUIET_WAIT s for it to calm down ..." >&2
        sleep 4
        waited=$((waited + 5))
    done
    echo "$busy % ($all % with niced)"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
