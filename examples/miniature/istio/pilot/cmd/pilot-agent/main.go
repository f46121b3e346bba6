// pilot-agent, in miniature: it reports its version, or runs envoy the way the
// real agent starts the sidecar proxy.
package main

import (
	"fmt"
	"os"
	"os/exec"

	"@VERSION_PKG@"
)

// `pilot-agent version` of a build stamped for the release (BUILDINFO) prints
// version.BuildInfo{Version:"@VERSION@", GitRevision:"<istio commit>", ...}.

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println(version.Info.LongForm())
		return
	}
	envoy := os.Getenv("ENVOY_BINARY")
	if envoy == "" {
		envoy = "/usr/local/bin/envoy"
	}
	cmd := exec.Command(envoy, os.Args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "pilot-agent:", err)
		os.Exit(1)
	}
}
