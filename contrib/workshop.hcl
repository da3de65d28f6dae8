# The Consul workshop's load balancer (steps 6-7) in consul-template's current configuration
# form, as /etc/ctemplate/ctemplate.hcl for contrib/ctemplate.service (see contrib/SYSTEMD.md).
#
# The template reads three optional environment variables (set them in /etc/default/ctemplate):
# APP_SERVICE (default "production.application"), NGINX_LISTEN ("80"), NGINX_SERVER_NAME ("_").

consul {
  address = "127.0.0.1:8500"

  # The workshop's `retry = "10s"` waited 10s after every failed request. This retries at
  # once, then backs off exponentially to at most 10s between attempts, forever: the daemon
  # rides out a Consul restart and keeps the last good file meanwhile.
  retry {
    enabled     = true
    attempts    = 0
    backoff     = "250ms"
    max_backoff = "10s"
  }
}

# Answers up to 10 minutes stale may come from any Consul server, not only the leader.
max_stale = "10m"
log_level = "info"

# /health (200 while every file follows Consul, else 503 saying why) and /metrics (Prometheus),
# on loopback only: `curl -s 127.0.0.1:9110/health`.
status_address = "127.0.0.1:9110"

template {
  source      = "/etc/ctemplate/templates/nginx-upstream.conf.j2"
  # Included only from /etc/nginx/sites-available/backend-apps (contrib/nginx-site.conf).
  destination = "/etc/nginx/ctemplate/backend_apps.conf"
  perms       = "0644"

  # Before the new file replaces the old one: `nginx -t` on a copy of the whole nginx
  # configuration that includes the new file in place of the old. If nginx rejects it, the
  # old file stays, nginx is not reloaded, and the error (with nginx's message) is logged.
  check_command = "/usr/local/lib/ctemplate/nginx-check-staged /etc/nginx/nginx.conf"

  # After the file changed.
  command         = "systemctl reload nginx"
  command_timeout = "30s"

  # Uncomment to turn bursts of changes (a deploy restarting every instance) into one
  # reload: render once nothing changed for 2s, or after 10s at the latest.
  # wait {
  #   min = "2s"
  #   max = "10s"
  # }
}
