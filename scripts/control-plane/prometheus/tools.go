//go:build tools

// Pins Prometheus's server command in go.mod; build.sh builds it with `go build`. Upstream's build, not Debian's:
// Debian's leaves out kubernetes_sd_configs, which the tests use to discover pods through the apiserver.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
