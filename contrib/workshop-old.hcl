# The Consul workshop's consul-template configuration (step 6), unchanged but for `source`,
# which points at the Jinja version of its template (templates/nginx-upstream.conf.j2).
# consul-template's older form (consul = "...", retry = "...") is still accepted; see
# workshop.hcl for the current form.
#
#   ctemplate -config /etc/consul-template/consul-template.hcl
consul = "127.0.0.1:8500"
retry = "10s"
max_stale = "10m"
log_level = "info"
pid_file = "/var/run/consul-template.pid"
template {
  source = "/etc/ctemplate/templates/nginx-upstream.conf.j2"
  destination = "/etc/nginx/conf.d/sample.conf"
  command = "systemctl reload nginx"
}
