#!/bin/sh
# The kernel matrix's test script (`cargo xtask vm-test`): runs inside each VM
# (busybox initramfs, as /init's child) or natively. It prints marked
# sections on stdout (the serial console) that xtask/src/vm.rs parses: the
# verdicts are computed there, from the agent's own JSON events.
# Environment: SHRIKE (agent), HELPER (shrike-test-helper), WORK (scratch
# directory), TRUE (a program to exec in the burst), BURST (execs in it),
# LOSS_BURST (execs while the agent is stopped, perf buffers of 2 pages),
# PAMTESTER (optional: pamtester, with the PAM service shrike-vmtest and the
# user vmuser, password vmtest-pass, in the root).
set -u
mark() { echo "=== VMTEST $*"; }
up() { cut -d' ' -f1 /proc/uptime; }

# Runs "$@" with /sys/kernel/btf hidden (an empty tmpfs over it, in a mount
# namespace of its own: natively the host's view is untouched), as on the
# gateway kernels built without BTF. It execs: call it in a subshell or in
# the background (the agent keeps the background job's pid).
nobtf() {
    if [ -d /sys/kernel/btf ]; then
        exec unshare -m --propagation private sh -c 'mount -t tmpfs nobtf /sys/kernel/btf && exec "$@"' nobtf "$@"
    fi
    exec "$@"
}

# Waits for the agent's "shrike ready" (loading and verifying ~120 programs
# under TCG takes a while); sets $ready.
wait_ready() {
    ready=no
    i=0
    while [ $i -lt 1800 ]; do
        if grep -q "shrike ready" "$2" 2>/dev/null; then ready=yes; break; fi
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
}

mark kernel "$(uname -r)" "$(uname -m)"
mark pam "${PAMTESTER:+yes}"
mark begin check
"$SHRIKE" check 2>&1
mark end check rc=$?
if [ -e /sys/kernel/btf/vmlinux ]; then mark btf yes; else mark btf no; fi
# The same verdict is due without BTF (Shrike needs no CO-RE).
mark begin check-nobtf
(nobtf "$SHRIKE" check 2>&1)
mark end check-nobtf rc=$?

# ringbuf: as the kernel has it; perf: forced, and with BTF hidden (the
# configuration of the old gateway kernels the perf transport is for).
for transport in ringbuf perf; do
    dir="$WORK/$transport"
    mkdir -p "$dir"
    hide=
    [ $transport = perf ] && hide=nobtf
    t0=$(up)
    $hide "$SHRIKE" events --transport "$transport" --state-dir "$dir/state" >"$dir/events.json" 2>"$dir/agent.log" &
    agent=$!
    wait_ready $agent "$dir/agent.log"
    t1=$(up)
    mark attach "$transport" ready=$ready t0=$t0 t1=$t1 btf_hidden=${hide:+yes}
    if [ $ready = yes ]; then
        # The loaded programs' sizes, from the agent's own fds.
        mark begin progs "$transport"
        "$HELPER" bpf-progs $agent 2>&1
        mark end progs "$transport"
        # Exec with hostile argv (newline, shell metacharacters, quotes,
        # non-UTF-8 byte, empty argument), exiting with 7.
        "$HELPER" exit 7 "vmtest-exec-$transport" "$(printf 'a\nb')" '$(id);`id`' "'\"\\" "$(printf '\377\001')" "" >/dev/null
        # fork + child exit code 9.
        "$HELPER" fork-exit 9 >/dev/null
        # connect refused and ok, IPv4 and IPv6; listen/accept.
        "$HELPER" connect-tcp 127.0.0.1 9 >/dev/null
        "$HELPER" connect-tcp ::1 9 >/dev/null
        "$HELPER" listen 127.0.0.1 47001 >/dev/null &
        l4=$!
        "$HELPER" listen ::1 47002 >/dev/null &
        l6=$!
        sleep 1
        "$HELPER" connect-tcp 127.0.0.1 47001 >/dev/null
        "$HELPER" connect-tcp ::1 47002 >/dev/null
        wait $l4 $l6
        # set*id: root drops to 4321.
        "$HELPER" setgid 4321 setuid 4321 >/dev/null
        # PAM logins through libpam: one success, one failure.
        if [ -n "${PAMTESTER:-}" ]; then
            echo vmtest-pass | "$PAMTESTER" shrike-vmtest vmuser authenticate >/dev/null 2>&1
            echo wrong-pass | "$PAMTESTER" shrike-vmtest vmuser authenticate >/dev/null 2>&1
        fi
        # A burst: every exec is either reported or counted lost.
        "$HELPER" spawn-many "$BURST" 2 "$TRUE" "vmtest-burst-$transport" >/dev/null
        sleep 2
    fi
    kill -INT $agent 2>/dev/null
    wait $agent
    mark agent-exit "$transport" rc=$?
    mark begin log "$transport"
    cat "$dir/agent.log"
    mark end log "$transport"
    mark begin events "$transport"
    cat "$dir/events.json"
    mark end events "$transport"
done

# Perf buffers made to overflow: 2 pages per CPU, the agent stopped
# (SIGSTOP) while a burst runs, so the kernel loses records; each loss must
# be counted (perf_lost), none silent.
dir="$WORK/perf-loss"
mkdir -p "$dir"
"$SHRIKE" events --transport perf --perf-pages 2 --state-dir "$dir/state" >"$dir/events.json" 2>"$dir/agent.log" &
agent=$!
wait_ready $agent "$dir/agent.log"
mark attach perf-loss ready=$ready
if [ $ready = yes ]; then
    kill -STOP $agent
    "$HELPER" spawn-many "$LOSS_BURST" 2 "$TRUE" vmtest-loss >/dev/null
    kill -CONT $agent
    sleep 2
fi
kill -INT $agent 2>/dev/null
wait $agent
mark agent-exit perf-loss rc=$?
mark begin log perf-loss
cat "$dir/agent.log"
mark end log perf-loss
mark begin events perf-loss
grep -e vmtest-loss -e '"kind":"stats"' "$dir/events.json"
mark end events perf-loss
mark done
