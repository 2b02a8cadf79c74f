//go:build tools

// Keeps CoreDNS's main package in the module graph so `go mod tidy` records what it needs.
package tools

import _ "github.com/coredns/coredns"
