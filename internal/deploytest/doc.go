// Package deploytest runs the production topology of docker-compose.yml
// as real processes on loopback, with no Docker engine: three NATS nodes
// clustered from deploy/nats/nats.conf, the gateways and producers built by
// deploy/build.sh (the script the Dockerfile runs) and configured with the
// environment and arguments of their compose services, and HAProxy from
// Debian's package with deploy/haproxy/haproxy.cfg. Only addresses are
// changed. The test skips without haproxy unless ROOMCAST_CI is set.
//
// It also checks the observability files: deploy/grafana/roomcast.json
// against the exported series, and every query of it evaluated by Debian's
// Prometheus scraping gateways with clients, churn and a drain
// (TestPrometheusDashboard, which skips without prometheus unless
// ROOMCAST_CI is set).
package deploytest
