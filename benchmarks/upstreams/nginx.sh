#!/bin/sh
# nginx in the foreground (one process, no daemon), for http mode benchmarks. Both watchdogs
# split fprocess on spaces and run it without a shell, hence this script.
#   nginx.sh             a fixed 200 on 127.0.0.1:$UPSTREAM_PORT (the upstream)
#   nginx.sh node        the same, each answer with Keep-Alive: timeout=5 as Node's server sends
#   nginx.sh proxy       a reverse proxy on 127.0.0.1:$PROXY_PORT to $UPSTREAM_PORT, with
#                        keep-alive upstream connections and unbuffered answers (the ceiling)
set -eu
keepalive=""
if [ "${1:-}" = node ]; then
    keepalive="keepalive_timeout 75s 5s;"  # the second figure is sent as Keep-Alive: timeout=5
fi
if [ "${1:-}" = proxy ]; then
    server="listen 127.0.0.1:${PROXY_PORT};
        location / {
            proxy_pass http://function;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
        }"
    upstream="upstream function { server 127.0.0.1:${UPSTREAM_PORT}; keepalive 64; }"
else
    server="listen 127.0.0.1:${UPSTREAM_PORT};
        location / { return 200 \"hello from nginx\\n\"; }"
    upstream=""
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/nginx.XXXXXX")
cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    $keepalive
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    $upstream
    server {
        $server
    }
}
CONF
exec /usr/sbin/nginx -e stderr -p "$dir" -c "$dir/nginx.conf"
