//go:build tools

// Pins KWOK's controller command in go.mod; build.sh builds it with `go build`.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
