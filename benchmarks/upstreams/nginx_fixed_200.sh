#!/bin/sh
# nginx answering every request with a fixed 200 on 127.0.0.1:$UPSTREAM_PORT, in the foreground
# (one process, no daemon), for http mode benchmarks. Both watchdogs split fprocess on spaces
# and run it without a shell, hence this script.
set -eu
dir=$(mktemp -d "${TMPDIR:-/tmp}/nginx-upstream.XXXXXX")
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
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:${UPSTREAM_PORT};
        location / { return 200 "hello from nginx\n"; }
    }
}
CONF
exec /usr/sbin/nginx -e stderr -p "$dir" -c "$dir/nginx.conf"
