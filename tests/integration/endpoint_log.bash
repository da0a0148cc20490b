# endpoint_log.bash - sourced by tests that start a server in the background
# and read the endpoint it bound from its log (not a test itself: the .bash
# suffix keeps it out of ctest's *.sh glob).
#
# log_endpoint LOG PID SED_SCRIPT : poll LOG (written by background process
# PID) until `sed -n SED_SCRIPT` prints something, and print that; print
# nothing if PID exits first or 30 s pass. The log may not exist yet on the
# first polls: the background child opens it only after the fork, and under
# load (valgrind, CI) the parent often gets there first.
log_endpoint() {
    local log=$1 pid=$2 script=$3 ep="" alive=1
    for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || alive=0
        ep=$(sed -n "$script" "$log" 2>/dev/null || true)
        if [ -n "$ep" ] || [ "$alive" = 0 ]; then break; fi
        sleep 0.05
    done
    printf '%s' "$ep"
}
