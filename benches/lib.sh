# Shared by the benchmark scripts (sourced after they set $root, $smtp_sink
# and, for the Python fallback, $sink_kind): a local SMTP sink on a free
# loopback port, and the figures of a GNU `time -v` report.

sink_pid=
sink_out=
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}
start_sink() { # $1: output file; sets port, sink_pid, sink_out
    sink_out=$1
    port=$(free_port)
    if [[ ${sink_kind:-postfix} == postfix ]]; then
        local as_user=()
        [[ $(id -u) == 0 ]] && as_user=(-u nobody)
        "$smtp_sink" -c "${as_user[@]}" "127.0.0.1:$port" 1024 >"$sink_out" 2>&1 &
    else
        # The interpreter itself, not a wrapper (pyenv shims), so that $! is the sink.
        "$(python3 -c 'import sys; print(sys.executable)')" "$root/benches/sink.py" 127.0.0.1 "$port" >"$sink_out" 2>&1 &
    fi
    sink_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "the sink did not start on port $port: $(cat "$sink_out")" >&2
    exit 1
}
stop_sink() { # prints the number of messages the sink received
    sleep 0.3
    kill -TERM "$sink_pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
    sink_pid=
    tr '\r' '\n' <"$sink_out" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1
}

# Reads GNU time -v output: prints "wall_seconds cpu_seconds max_rss_kb".
time_figures() {
    awk -F': ' '
        /Elapsed \(wall clock\)/ { n = split($2, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i] }
        /User time/ { u = $2 } /System time/ { s = $2 } /Maximum resident/ { r = $2 }
        END { printf "%.3f %.3f %d\n", w, u + s, r }' "$1"
}
