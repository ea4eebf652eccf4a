# Shared by the benchmark scripts (sourced): free ports, waiting for a port, the 720p input.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

make_input() {  # path: made once
  [ -f "$1" ] && return 0
  # 1280x720 25 fps H.264 (2 s GOP, ~2.6 Mbit/s) + AAC 128 kbit/s: the stream the peer figures were measured with.
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=25 \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 -c:v libx264 -preset veryfast -pix_fmt yuv420p \
    -b:v 2600k -maxrate 2600k -bufsize 5200k -g 50 -keyint_min 50 -x264-params sc_threshold=0 \
    -c:a aac -b:a 128k -f flv "$1"
}
