//go:build tools

// Pins etcd's server command (the `etcd` binary) in go.mod; build.sh builds it with `go build`.
package tools

import _ "go.etcd.io/etcd/server/v3"
