// Package manifests, in miniature: istio's manifests/manifest.go from 1.10 on. istioctl embeds the
// charts and profiles with go:embed (no go-bindata, nothing to regenerate after a change).
package manifests

import "embed"

// FS holds the charts and profiles istioctl installs from.
//
//go:embed charts profiles
var FS embed.FS
