#!/bin/sh
# nginx as a reverse proxy on 127.0.0.1:$PROXY_PORT to http://127.0.0.1:$UPSTREAM_PORT, with
# keep-alive upstream connections and unbuffered answers, in the foreground with one worker:
# what a C proxy does on this machine, the ceiling for http mode's figures.
set -eu
dir=$(mktemp -d "${TMPDIR:-/tmp}/nginx-proxy.XXXXXX")
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
    upstream function { server 127.0.0.1:${UPSTREAM_PORT}; keepalive 64; }
    server {
        listen 127.0.0.1:${PROXY_PORT};
        location / {
            proxy_pass http://function;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
exec /usr/sbin/nginx -e stderr -p "$dir" -c "$dir/nginx.conf"
